// Service / ServiceClient across real processes: calls in flight from
// several clients, several responses, errors, cancellation, a server's
// death answered at once and a restarted server, a dead client, and a
// flooding client that does not starve another.
#include "shmbus/service.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/event.hpp"
#include "shmbus/inspect.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;
using Lengths = Service<std::string, std::size_t>;
using LengthsClient = ServiceClient<std::string, std::size_t>;

TEST(Service, ManyClientsWithCallsInFlight) {
  SegmentGuard g(unique_name("svc"));
  Lengths server(g.name());
  constexpr int kClients = 4, kCalls = 40, kInFlight = 8;
  std::vector<pid_t> kids;
  for (int c = 0; c < kClients; ++c) {
    kids.push_back(test::fork_child([&, c] {
      LengthsClient client(g.name(), 10s);
      for (int i = 0; i < kCalls; i += kInFlight) {
        std::vector<PendingCall<std::string, std::size_t>> calls;
        for (int k = 0; k < kInFlight; ++k)
          calls.push_back(client.call_async(std::string(static_cast<std::size_t>(c + i + k), 'x')));
        for (int k = kInFlight - 1; k >= 0; --k)  // collected out of order
          if (calls[static_cast<std::size_t>(k)].get_for(10s) !=
              static_cast<std::size_t>(c + i + k))
            return 1;
      }
      return 0;
    }));
  }
  for (int n = 0; n < kClients * kCalls; ++n) {
    auto req = server.take_for(10s);
    ASSERT_TRUE(req.has_value()) << n;
    EXPECT_TRUE(req->respond(req->value().size()));
  }
  for (pid_t k : kids) EXPECT_EQ(test::wait_child(k).code, 0);
}

// Frames are written straight into the ring and read in place; one larger
// than a ring frame still goes in fragments (gathered, then decoded), and a
// string request decoded into the memory of the last one reads exactly as
// sent (a short one after a long one, an empty one).
TEST(Service, FramesOfEverySizeInPlaceOrFragmented) {
  SegmentGuard g(unique_name("svcf"));
  Service<std::string, std::vector<int>> server(g.name());
  const std::vector<std::size_t> sizes{0, 1, 40, 100000, 3, 0, 5000, 2, 70000, 1};
  const pid_t kid = test::fork_child([&] {
    // A 4 KiB ring: frames of at most 1 KiB, so the large ones fragment.
    ServiceClient<std::string, std::vector<int>> client(g.name(), 10s,
                                                        PipeOptions{.capacity = 4096});
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::string req(sizes[i], static_cast<char>('a' + i));
      const std::vector<int> resp = client.call(req, 10s);
      if (resp.size() != sizes[i] / 2) return 1;
      for (int x : resp)
        if (x != static_cast<int>(i) * 1000) return 2;
    }
    return 0;
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    auto req = server.take_for(10s);
    ASSERT_TRUE(req.has_value()) << i;
    EXPECT_EQ(req->value(), std::string(sizes[i], static_cast<char>('a' + i))) << i;
    EXPECT_TRUE(req->respond(std::vector<int>(sizes[i] / 2, static_cast<int>(i) * 1000)));
  }
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

// call(request, out, timeout) decodes the response into the caller's value:
// a string with room keeps its memory (no allocation per call); a response
// that is not a Resp is Error(decode_error).
TEST(Service, CallIntoTheCallersValueKeepsItsMemory) {
  SegmentGuard g(unique_name("svci"));
  Service<std::string, std::string> server(g.name());
  const pid_t kid = test::fork_child([&] {
    ServiceClient<std::string, std::string> client(g.name(), 10s);
    std::string out;
    out.reserve(1000);
    const char* memory = out.data();
    for (std::size_t i = 0; i < 3; ++i) {
      client.call(std::string(100 + i, 'a'), out, 10s);
      if (out != std::string(100 + i, 'b')) return 1;
      if (out.data() != memory) return 2;
    }
    return 0;
  });
  for (int i = 0; i < 3; ++i) {
    auto req = server.take_for(10s);
    ASSERT_TRUE(req.has_value()) << i;
    EXPECT_TRUE(req->respond(std::string(req->value().size(), 'b')));
  }
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

// take_for(hours::max()) waits for a request: the duration_cast to
// nanoseconds overflowed, and the take returned nullopt at once.
TEST(Service, TakeForAHugeTimeoutWaitsForARequest) {
  SegmentGuard g(unique_name("svch"));
  Lengths server(g.name());
  const pid_t server_pid = ::getpid();
  const pid_t kid = test::fork_child([&] {
    LengthsClient client(g.name(), 10s);
    (void)test::poll_until([&] { return test::process_sleeping(server_pid); });
    return client.call("abc", 10s) == 3 ? 0 : 1;
  });
  auto req = server.take_for(std::chrono::hours::max());
  ASSERT_TRUE(req.has_value());
  EXPECT_TRUE(req->respond(req->value().size()));
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

TEST(Service, CallIntoWithAResponseOfAnotherTypeIsADecodeError) {
  SegmentGuard g(unique_name("svcd"));
  Service<int, std::string> server(g.name());  // answers a string to an int call
  const pid_t kid = test::fork_child([&] {
    ServiceClient<int, int> client(g.name(), 10s);
    int out = 0;
    try {
      client.call(1, out, 10s);
      return 1;
    } catch (const Error& e) {
      if (e.code() != Errc::decode_error) return 2;
      if (std::string(e.what()).find("expected int") == std::string::npos) return 3;
    }
    return 0;
  });
  auto req = server.take_for(10s);
  ASSERT_TRUE(req.has_value());
  EXPECT_TRUE(req->respond("not an int"));
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

struct OneField {  // not trivially copyable: encoded field by field
  std::string name;
  MSGPACK_DEFINE(name)
};
struct TwoFields {
  std::string name;
  int b = 0;
  MSGPACK_DEFINE(name, b)
};

// A struct response that omits a field (an older server) leaves that field
// as a fresh value has it, not as the caller's value had it.
TEST(Service, CallIntoAStructLeavesNoFieldOfTheLastValue) {
  SegmentGuard g(unique_name("svcs"));
  Service<int, OneField> server(g.name());
  const pid_t kid = test::fork_child([&] {
    ServiceClient<int, TwoFields> client(g.name(), 10s);
    TwoFields out{"old", 99};
    client.call(0, out, 10s);
    return out.name == "new" && out.b == 0 ? 0 : 1;
  });
  auto req = server.take_for(10s);
  ASSERT_TRUE(req.has_value());
  EXPECT_TRUE(req->respond(OneField{"new"}));
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

// A string request is decoded into the memory of the last request from
// that client once it is gone (no allocation per request), and a request
// that outlives its Service gives its memory back safely (to its client's
// record, which it keeps alive, and whose connection closes with it: ASan
// checks).
TEST(Service, RequestReusesTheLastRequestsMemoryAndMayOutliveTheService) {
  SegmentGuard g(unique_name("svcr"));
  std::optional<ServiceRequest<std::string, std::string>> kept;
  const pid_t kid = test::fork_child([&] {
    ServiceClient<std::string, std::string> client(g.name(), 10s);
    if (client.call(std::string(1000, 'a'), 10s) != "a") return 1;
    if (client.call(std::string(100, 'b'), 10s) != "b") return 2;
    try {
      (void)client.call("c", 10s);  // taken, kept, never answered
      return 3;
    } catch (const ServerGone& e) {
      return e.maybe_executed() ? 0 : 4;
    }
  });
  {
    Service<std::string, std::string> server(g.name());
    const char* memory = nullptr;
    {
      auto a = server.take_for(10s);
      ASSERT_TRUE(a.has_value());
      EXPECT_EQ(a->value(), std::string(1000, 'a'));
      memory = a->value().data();
      EXPECT_TRUE(a->respond("a"));
    }
    auto b = server.take_for(10s);
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->value(), std::string(100, 'b'));
    EXPECT_EQ(b->value().data(), memory);  // the first request's memory
    EXPECT_TRUE(b->respond("b"));
    b.reset();
    kept = server.take_for(10s);
    ASSERT_TRUE(kept.has_value());
    EXPECT_EQ(kept->value(), "c");
  }              // the Service is gone; the kept request holds its client's record
  kept.reset();  // gives its memory back, then the record closes: ServerGone
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

TEST(Service, SeveralResponsesErrorsAndCancellation) {
  SegmentGuard g(unique_name("svcm"));
  Service<int, int> server(g.name());
  const pid_t kid = test::fork_child([&] {
    ServiceClient<int, int> client(g.name(), 10s);
    auto stream = client.call_async(3);
    for (int i = 0; i < 3; ++i)
      if (stream.next_for(10s) != i) return 1;
    if (stream.next_for(10s).has_value()) return 2;  // the last one came with i == 2
    try {
      (void)client.call(-1, 10s);
      return 3;
    } catch (const Error& e) {
      if (e.code() != Errc::task_failed) return 4;
    }
    auto dropped = client.call_async(100);
    dropped.cancel();
    return client.call(7, 10s) == 7 ? 0 : 5;  // the connection still works
  });
  for (;;) {
    auto req = server.take_for(10s);
    ASSERT_TRUE(req.has_value());
    if (req->value() == 3) {
      for (int i = 0; i < 3; ++i) req->respond(i, i == 2);
    } else if (req->value() < 0) {
      req->fail("negative");
    } else if (req->value() == 100) {
      continue;  // the cancelled call, if it was taken before its cancel came
    } else {
      req->respond(req->value());
      break;
    }
  }
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

// Whether a server of `name` accepts a client within the poll's deadline.
bool server_accepts(const std::string& name) {
  return test::poll_until([&] {
    try {
      LengthsClient probe(name, 50ms);
      return true;
    } catch (const Error&) {
      return false;
    }
  });
}

// Whether a call ended with ServerGone, and if so what it says.
template <class Call>
std::optional<bool> maybe_executed_at_death(Call& call) {
  try {
    (void)call.get_for(30s);
  } catch (const ServerGone& e) {
    return e.maybe_executed();
  } catch (const Error&) {
  }
  return std::nullopt;
}

TEST(Service, ServerDeathEndsEveryPendingCallAtOnceAndARestartServes) {
  SegmentGuard g(unique_name("svck"));
  test::SharedBlock<std::atomic<int>> taken;
  test::SharedBlock<std::atomic<int>> die;
  auto dying_server = [&] {
    return test::fork_child([&] {
      Lengths server(g.name());
      auto req = server.take_for(10s);  // takes one request, answers none
      taken->store(1);
      if (!test::poll_until([&] { return die->load() == 1; })) return 1;
      ::raise(SIGKILL);
      return 0;
    });
  };
  pid_t server = dying_server();
  ASSERT_TRUE(server_accepts(g.name()));
  LengthsClient client(g.name(), 10s);
  std::vector<PendingCall<std::string, std::size_t>> calls;
  for (int i = 0; i < 3; ++i) calls.push_back(client.call_async("abc"));
  ASSERT_TRUE(test::poll_until([&] { return taken->load() == 1; }));
  // The inspector's view: one request read, one call open (the probe's
  // connection, if still listed, has read nothing).
  const auto conns = listener_connections(g.name());
  EXPECT_EQ(std::count_if(
                conns.begin(), conns.end(),
                [](const ListenerConnection& c) { return c.taken == 1u && c.calls_open == 1u; }),
            1);
  die->store(1);
  EXPECT_EQ(test::wait_child(server).signal, SIGKILL);
  // The first request was taken (it may have run); the other two were
  // still in the pipe: not executed, safe to send again.
  const bool expected[] = {true, false, false};
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const auto start = Clock::now();
    EXPECT_EQ(maybe_executed_at_death(calls[i]), expected[i]) << i;
    EXPECT_LT(Clock::now() - start, 20s);  // answered by the death, not the timeout
  }
  // A server restarted under the name serves the same client's next call.
  const pid_t again = test::fork_child([&] {
    Lengths s(g.name());
    auto req = s.take_for(10s);
    return req && req->respond(req->value().size()) ? 0 : 1;
  });
  std::size_t n = 0;
  ASSERT_TRUE(test::poll_until([&] {
    try {
      n = client.call("hello", 10s);
      return true;
    } catch (const Error& e) {
      // Not up yet: no listener, still the dead one's, or being replaced.
      if (e.code() != Errc::not_found && e.code() != Errc::peer_dead && e.code() != Errc::closed)
        throw;
      return false;
    }
  }));
  EXPECT_EQ(n, 5u);
  EXPECT_EQ(test::wait_child(again).code, 0);
}

TEST(Service, CallToAServerThatClosedIsServerGoneAndNotExecuted) {
  SegmentGuard g(unique_name("svcc"));
  test::SharedBlock<std::atomic<int>> close;
  const pid_t server = test::fork_child([&] {
    Lengths s(g.name());
    const auto give_up = Clock::now() + 30s;
    while (close->load() == 0) {  // accepts the clients below; takes no request
      if (s.take_for(10ms) || Clock::now() > give_up) return 1;
    }
    return 0;
  });  // its Service closes as it returns
  ASSERT_TRUE(server_accepts(g.name()));
  LengthsClient client(g.name(), 10s);
  close->store(1);
  EXPECT_EQ(test::wait_child(server).code, 0);
  std::optional<bool> maybe;
  try {
    (void)client.call("never sent", 10s);
  } catch (const ServerGone& e) {
    maybe = e.maybe_executed();
  }
  EXPECT_EQ(maybe, false);
}

TEST(Service, DeadClientIsDropped) {
  SegmentGuard g(unique_name("svcd"));
  Lengths server(g.name());
  const pid_t kid = test::fork_child([&] {
    LengthsClient client(g.name(), 10s);
    (void)client.call_async("x");
    ::raise(SIGKILL);
    return 0;
  });
  auto req = server.take_for(10s);
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(test::wait_child(kid).signal, SIGKILL);
  EXPECT_FALSE(server.take_for(50ms).has_value());  // sees the death, drops it
  EXPECT_EQ(server.clients(), 0u);
  EXPECT_FALSE(req->respond(1));
}

std::atomic<int> g_fragments_written{0};
void stop_at_second_fragment(detail::FaultPoint p) noexcept {
  if (p == detail::FaultPoint::send_written && g_fragments_written.fetch_add(1) == 1)
    ::raise(SIGSTOP);
}

// A client stopped half way through a request larger than a ring frame
// (its first fragment published, the second written): a take waits for the
// rest at most respond_timeout, then drops that client; it never waits on
// it for good.
TEST(Service, AClientStoppedHalfWayThroughARequestIsDroppedNotWaitedFor) {
  SegmentGuard g(unique_name("svch"));
  Lengths server(g.name(), {.respond_timeout = 50ms});
  const pid_t kid = test::fork_child([&] {
    // A 4 KiB ring: frames of at most 1 KiB, so the request fragments.
    LengthsClient client(g.name(), 10s, PipeOptions{.capacity = 4096});
    detail::set_fault_hook(stop_at_second_fragment);
    (void)client.call_async(std::string(100000, 'x'));
    return 0;
  });
  std::atomic<bool> stopped{false}, done{false};
  std::atomic<int> taken{0};
  std::thread serving([&] {
    // Takes until one more take has returned after the client stopped.
    for (bool last = false; !last;) {
      last = stopped.load();
      if (server.take_for(20ms)) taken.fetch_add(1);
    }
    done.store(true);
  });
  EXPECT_TRUE(test::poll_until(
      [&] {
        int status = 0;
        if (::waitpid(kid, &status, WNOHANG | WUNTRACED) == kid && WIFSTOPPED(status))
          stopped.store(true);
        return stopped.load();
      },
      30s));
  stopped.store(true);  // also when it never stopped: end the loop
  const bool returned = test::poll_until([&] { return done.load(); }, 30s);
  ::kill(kid, SIGKILL);  // a take still gathering (the bug) sees a death and returns
  serving.join();
  EXPECT_TRUE(returned) << "a take waited for the rest of a stopped client's request";
  EXPECT_EQ(taken.load(), 0);
  EXPECT_EQ(server.clients(), 0u) << "the stopped client was not dropped";
  EXPECT_EQ(test::wait_child(kid).signal, SIGKILL);
}

// A client that floods requests gets one taken per turn, like any other.
TEST(Service, FloodingClientDoesNotStarveAnother) {
  SegmentGuard g(unique_name("svcf"));
  Service<int, int> server(g.name());
  const pid_t flood = test::fork_child([&] {
    ServiceClient<int, int> c(g.name(), 10s);
    std::vector<PendingCall<int, int>> calls;
    for (int i = 0; i < 200; ++i) calls.push_back(c.call_async(1));  // client 1
    for (auto& p : calls) (void)p.get_for(30s);
    return 0;
  });
  // Let the flood queue up before the second client comes.
  int from_flood = 0;
  while (from_flood < 5) {
    auto req = server.take_for(10s);
    ASSERT_TRUE(req.has_value());
    from_flood += req->value() == 1;
    req->respond(0);
  }
  const pid_t other = test::fork_child([&] {
    ServiceClient<int, int> c(g.name(), 10s);
    for (int i = 0; i < 10; ++i)
      if (c.call(2, 30s) != 0) return 1;
    return 0;
  });
  int flood_while_other = 0, other_served = 0;
  while (other_served < 10) {
    auto req = server.take_for(10s);
    ASSERT_TRUE(req.has_value());
    if (req->value() == 2) {
      ++other_served;
    } else if (other_served > 0) {
      ++flood_while_other;
    }
    req->respond(0);
  }
  // Round robin: one flood request per turn while the other is served.
  EXPECT_LE(flood_while_other, 10);
  EXPECT_EQ(test::wait_child(other).code, 0);
  while (auto req = server.take_for(200ms)) req->respond(0);
  EXPECT_EQ(test::wait_child(flood).code, 0);
}

TEST(Service, SharedServersOneDiesItsClientsMoveToTheOther) {
  SegmentGuard g(unique_name("svc2"));
  const ServiceOptions shared{.listener = {.shared = true}};
  Event a_ready, connected, a_killed;
  const pid_t a = test::fork_child([&] {
    Service<int, int> server(g.name(), shared);
    a_ready.set();
    for (;;)
      if (auto req = server.take_for(10s)) req->respond(::getpid());
    return 0;
  });
  ASSERT_TRUE(a_ready.wait_for(10s));
  const pid_t client = test::fork_child([&] {
    ServiceClient<int, int> c(g.name(), 10s);  // accepted by `a`: the only server yet
    if (c.call(0, 10s) != a) return 1;
    connected.set();
    if (!a_killed.wait_for(10s)) return 2;
    if (test::code_of([&] { (void)c.call(1, 10s); }) != Errc::peer_dead) return 3;
    return c.call(2, 10s) == ::getppid() ? 0 : 4;  // connected again: the other server
  });
  ASSERT_TRUE(connected.wait_for(10s));
  Service<int, int> b(g.name(), shared);  // joins while `a` serves
  ::kill(a, SIGKILL);
  ASSERT_EQ(test::wait_child(a).signal, SIGKILL);
  a_killed.set();
  auto req = b.take_for(10s);
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->value(), 2);
  req->respond(::getpid());
  EXPECT_EQ(test::wait_child(client).code, 0);
}

// A raw frame: the 16-byte header and a value.
std::vector<std::byte> frame(std::uint64_t id, detail::FrameKind kind, int value) {
  const detail::ServiceHeader h{id, static_cast<std::uint32_t>(kind), 0};
  std::vector<std::byte> f(sizeof h + sizeof value);
  std::memcpy(f.data(), &h, sizeof h);
  std::memcpy(f.data() + sizeof h, &value, sizeof value);
  return f;
}

TEST(Service, ClientReusingAnOpenIdIsDropped) {
  SegmentGuard g(unique_name("svcr"));
  Service<int, int> server(g.name());
  const pid_t kid = test::fork_child([&] {
    Connection c = Client(g.name(), 10s);
    for (int i = 0; i < 2; ++i)
      if (c.send_bytes(frame(7, detail::FrameKind::request, i)) != SendResult::ok) return 1;
    std::vector<std::byte> in;
    return c.recv_bytes(in, SIZE_MAX) == RecvResult::eof ? 0 : 2;  // dropped, unanswered
  });
  auto first = server.take_for(10s);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->value(), 0);
  EXPECT_FALSE(server.take_for(50ms).has_value());  // id 7 again while open: dropped
  EXPECT_FALSE(first->respond(1));
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

TEST(Service, CallReturnsByItsDeadlineUnderAFloodOfOtherFrames) {
  SegmentGuard g(unique_name("svcj"));
  Listener hostile(g.name());
  Event stop;
  const pid_t kid = test::fork_child([&] {
    auto c = hostile.accept_for(10s);
    if (!c) return 1;
    for (std::uint64_t id = 1000; !stop.is_set(); ++id)  // responses to calls never made
      (void)c->try_send_bytes(frame(id, detail::FrameKind::last, 0));
    return 0;
  });
  ServiceClient<int, int> client(g.name(), 10s);
  auto call = client.call_async(1);
  EXPECT_THROW(
      {
        try {
          (void)call.get_for(20ms);
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), Errc::timed_out);
          throw;
        }
      },
      Error);
  stop.set();
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

}  // namespace
}  // namespace shmbus
