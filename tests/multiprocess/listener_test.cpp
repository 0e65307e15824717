// Listener / Client across real processes: many clients at once and over
// time, EOF and death, timeouts, a dead or closed listener, bad names.
#include "shmbus/listener.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/event.hpp"
#include "shmbus/inspect.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/value.hpp"
#include "shmbus/wait_any.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

// Names in /dev/shm of `listener`'s connection pipes.
int pipes_left(const std::string& listener) {
  const std::string prefix = "shmbus." + listener + ".conn-";
  int n = 0;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) n += std::string(e->d_name).starts_with(prefix);
    ::closedir(d);
  }
  return n;
}

// A client process: connects, sends `id`, expects id * 10 back.
pid_t client(const std::string& name, int id) {
  return test::fork_child([name, id] {
    Connection c = Client(name, 10s);
    if (c.send(id) != SendResult::ok) return 1;
    int reply = 0;
    if (c.recv_for(reply, 10s) != RecvResult::ok || reply != id * 10) return 2;
    c.close();
    return 0;
  });
}

void serve(Listener& listener, int clients) {
  for (int i = 0; i < clients; ++i) {
    auto c = listener.accept_for(10s);
    ASSERT_TRUE(c.has_value());
    int id = 0;
    ASSERT_EQ(c->recv_for(id, 10s), RecvResult::ok);
    ASSERT_EQ(c->send(id * 10), SendResult::ok);
    int none = 0;
    EXPECT_EQ(c->recv_for(none, 10s), RecvResult::eof);  // the client closed
  }
}

TEST(Listener, AcceptsSeveralClientsAtOnceAndOverTime) {
  SegmentGuard g(unique_name("lst"));
  Listener listener(g.name());
  for (int wave = 0; wave < 2; ++wave) {
    std::vector<pid_t> kids;
    for (int i = 0; i < 4; ++i) kids.push_back(client(g.name(), wave * 10 + i));
    serve(listener, 4);
    for (pid_t k : kids) EXPECT_EQ(test::wait_child(k).code, 0);
  }
  EXPECT_EQ(pipes_left(g.name()), 0);  // a closed connection leaves nothing
}

std::int64_t gauge_of(const ObjectStats& s, const std::string& name) {
  for (const auto& [k, v] : s.gauges)
    if (k == name) return v;
  return -1;
}

TEST(Listener, OpenConnectionsAreListedAndAClosedOneLeavesNothing) {
  SegmentGuard g(unique_name("lsti"));
  Listener listener(g.name());
  Event sent;
  const pid_t kid = test::fork_child([&] {
    Connection c = Client(g.name(), 10s);
    for (int i = 0; i < 3; ++i)
      if (c.send(i) != SendResult::ok) return 1;
    sent.set();
    int reply = 0;  // held open until the server has looked
    if (c.recv_for(reply, 10s) != RecvResult::ok) return 2;
    return 0;  // closes
  });
  auto c = listener.accept_for(10s);
  ASSERT_TRUE(c.has_value());
  int v = 0;
  ASSERT_EQ(c->recv_for(v, 10s), RecvResult::ok);
  ASSERT_EQ(c->recv_for(v, 10s), RecvResult::ok);
  ASSERT_TRUE(sent.wait_for(10s));

  EXPECT_EQ(pipes_left(g.name()), 1);  // named while open
  const auto conns = listener_connections(g.name());
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(conns[0].client.pid, kid);
  EXPECT_EQ(conns[0].server.pid, ::getpid());
  EXPECT_TRUE(conns[0].client_alive);
  EXPECT_TRUE(conns[0].server_alive);
  // Sends are counted exactly; a receiver publishes its count lazily.
  EXPECT_EQ(conns[0].to_server + conns[0].queued_to_server, 3u);
  EXPECT_LE(conns[0].to_server, 2u);
  const ObjectStats stats = object_stats(SegmentView::open(g.name()));
  EXPECT_EQ(gauge_of(stats, "servers"), 1);
  EXPECT_EQ(gauge_of(stats, "connections"), 1);
  EXPECT_EQ(gauge_of(stats, "conn0.client_pid"), kid);

  ASSERT_EQ(c->send(0), SendResult::ok);
  EXPECT_EQ(c->recv_for(v, 10s), RecvResult::ok);
  EXPECT_EQ(c->recv_for(v, 10s), RecvResult::eof);  // the client closed
  EXPECT_EQ(test::wait_child(kid).code, 0);
  EXPECT_EQ(pipes_left(g.name()), 1);  // the server's end is still open
  c->close();
  EXPECT_EQ(pipes_left(g.name()), 0);  // the last end to close removed it
  EXPECT_TRUE(listener_connections(g.name()).empty());
}

// The client held between its two reads (FaultPoint::connect_checking):
// it lets the server accept, which sends and dies before the client checks
// that it lives.
Event* g_checking = nullptr;
pid_t g_server = 0;
int g_server_status = 0;
void reap_server_before_check(detail::FaultPoint p) noexcept {
  if (p != detail::FaultPoint::connect_checking || g_server == 0) return;
  g_checking->set();
  (void)::waitpid(std::exchange(g_server, 0), &g_server_status, 0);
}

TEST(Listener, ClientOutlivingAKilledServerRemovesTheConnectionAtClose) {
  SegmentGuard g(unique_name("lstv"));
  Event listening;
  Event checking;
  const pid_t server = test::fork_child([&] {
    Listener listener(g.name());
    listening.set();
    if (!checking.wait_for(10s)) return 1;
    auto c = listener.accept_for(10s);
    if (!c) return 1;
    (void)c->send(7);
    ::raise(SIGKILL);
    return 0;
  });
  ASSERT_TRUE(listening.wait_for(10s));
  g_checking = &checking;
  g_server = server;
  detail::set_fault_hook(&reap_server_before_check);
  std::optional<Connection> c;
  EXPECT_NO_THROW(c.emplace(Client(g.name(), 10s)));  // accepted, though dead by now
  detail::set_fault_hook(nullptr);
  ASSERT_EQ(g_server, 0);
  EXPECT_TRUE(WIFSIGNALED(g_server_status) && WTERMSIG(g_server_status) == SIGKILL);
  ASSERT_TRUE(c.has_value());
  int v = 0;
  ASSERT_EQ(c->recv_for(v, 10s), RecvResult::ok);  // what it sent is not lost
  EXPECT_EQ(v, 7);
  EXPECT_EQ(c->recv_for(v, 10s), RecvResult::peer_dead);
  EXPECT_EQ(pipes_left(g.name()), 1);
  c->close();
  EXPECT_EQ(pipes_left(g.name()), 0);
}

TEST(Listener, DeadClientReadsAsPeerDead) {
  SegmentGuard g(unique_name("lstd"));
  Listener listener(g.name());
  const pid_t kid = test::fork_child([&] {
    Connection c = Client(g.name(), 10s);
    (void)c.send(1);
    ::raise(SIGKILL);
    return 0;
  });
  auto c = listener.accept_for(10s);
  ASSERT_TRUE(c.has_value());
  int v = 0;
  EXPECT_EQ(c->recv_for(v, 10s), RecvResult::ok);
  EXPECT_EQ(test::wait_child(kid).signal, SIGKILL);
  EXPECT_EQ(c->recv_for(v, 10s), RecvResult::peer_dead);
  EXPECT_EQ(pipes_left(g.name()), 1);
  c->close();  // the dead client cannot: the server's close removes the name
  EXPECT_EQ(pipes_left(g.name()), 0);
}

TEST(Listener, ClientThatGaveUpIsSkipped) {
  SegmentGuard g(unique_name("lstt"));
  Listener listener(g.name());
  EXPECT_EQ(test::code_of([&] { (void)Client(g.name(), 30ms); }), Errc::timed_out);
  EXPECT_EQ(pipes_left(g.name()), 0);  // its pipe went with it
  EXPECT_EQ(listener.pending(), 1u);   // its request stays until accept() skips it
  EXPECT_FALSE(listener.accept_for(20ms).has_value());
  EXPECT_EQ(listener.pending(), 0u);
}

TEST(Listener, AcceptForReturnsNothingByItsDeadline) {
  SegmentGuard g(unique_name("lsta"));
  Listener listener(g.name());
  EXPECT_FALSE(listener.accept_for(20ms).has_value());
}

TEST(Listener, ClientOfADeadListenerFailsInsteadOfWaiting) {
  SegmentGuard g(unique_name("lstk"));
  const pid_t owner = test::fork_child([&] {
    Listener listener(g.name());
    ::raise(SIGKILL);
    return 0;
  });
  ASSERT_EQ(test::wait_child(owner).signal, SIGKILL);
  EXPECT_EQ(test::code_of([&] { (void)Client(g.name()); }), Errc::peer_dead);
  EXPECT_EQ(pipes_left(g.name()), 0);
}

TEST(Listener, ClosedListenerRefusesAcceptAndClients) {
  SegmentGuard g(unique_name("lstc"));
  Listener listener(g.name());
  listener.close();
  EXPECT_EQ(test::code_of([&] { (void)listener.accept(); }), Errc::closed);
  EXPECT_EQ(test::code_of([&] { (void)Client(g.name(), 1s); }), Errc::not_found);
}

TEST(Listener, SharedNameOutlivesItsCreatorAndTheLastCloseRemovesIt) {
  SegmentGuard g(unique_name("lsts"));
  Event listening;
  const pid_t creator = test::fork_child([&] {
    Listener first(g.name(), {.shared = true});
    listening.set();
    for (;;) ::pause();  // killed below
    return 0;
  });
  ASSERT_TRUE(listening.wait_for(10s));
  Listener second(g.name(), {.shared = true});                                    // joins
  EXPECT_EQ(test::code_of([&] { Listener l(g.name()); }), Errc::already_exists);  // not shared
  ::kill(creator, SIGKILL);
  ASSERT_EQ(test::wait_child(creator).signal, SIGKILL);
  EXPECT_EQ(test::code_of([&] { Listener l(g.name()); }), Errc::already_exists);  // `second` lives
  const pid_t kid = client(g.name(), 3);  // its liveness check finds `second`
  serve(second, 1);
  EXPECT_EQ(test::wait_child(kid).code, 0);
  second.close();  // the last live server: the name goes
  EXPECT_EQ(test::code_of([&] { (void)Client(g.name(), 1s); }), Errc::not_found);
}

TEST(Listener, SharedServerThatClosedIsNotCountedWhileItsProcessLives) {
  SegmentGuard g(unique_name("lsty"));
  Listener creator(g.name(), {.shared = true});
  Event joined, leave;
  const pid_t other = test::fork_child([&] {
    Listener theirs(g.name(), {.shared = true});
    joined.set();
    auto c = theirs.accept_for(10s);  // the client below: `creator` has left
    if (!c) return 1;
    int id = 0;
    if (c->recv_for(id, 10s) != RecvResult::ok || c->send(id * 10) != SendResult::ok) return 2;
    if (!leave.wait_for(10s)) return 3;
    theirs.close();  // the last server (its creator's process lives on, but left)
    return 0;
  });
  ASSERT_TRUE(joined.wait_for(10s));
  creator.close();  // leaves; `other` goes on
  const pid_t kid = client(g.name(), 8);
  EXPECT_EQ(test::wait_child(kid).code, 0);
  leave.set();
  EXPECT_EQ(test::wait_child(other).code, 0);
  EXPECT_EQ(test::code_of([&] { (void)Client(g.name(), 1s); }), Errc::not_found);  // name gone
}

TEST(Listener, SharedServersAcceptEachClientOnce) {
  SegmentGuard g(unique_name("lsto"));
  constexpr int kClients = 8;
  Listener mine(g.name(), {.shared = true});
  Value<int> served{0};
  // One server in a child, one here; each client is answered exactly once
  // (its own pipe carries one reply), and together they answer all.
  const auto serve_until_all = [&](Listener& l) {
    int here = 0;
    while (served.get() < kClients) {
      auto c = l.accept_for(10ms);
      if (!c) continue;
      int id = 0;
      if (c->recv_for(id, 10s) != RecvResult::ok || c->send(id * 10) != SendResult::ok) return -1;
      served.fetch_add(1);
      ++here;
    }
    return here;
  };
  Event joined;
  const pid_t other = test::fork_child([&] {
    Listener theirs(g.name(), {.shared = true});
    joined.set();
    return serve_until_all(theirs) >= 0 ? 0 : 1;
  });
  ASSERT_TRUE(joined.wait_for(10s));
  std::vector<pid_t> kids;
  for (int i = 0; i < kClients; ++i) kids.push_back(client(g.name(), i));
  EXPECT_GE(serve_until_all(mine), 0);
  for (pid_t k : kids) EXPECT_EQ(test::wait_child(k).code, 0);
  EXPECT_EQ(test::wait_child(other).code, 0);
  EXPECT_EQ(served.get(), kClients);
}

TEST(Listener, MovedFromListenerLeavesTheNameToItsSuccessor) {
  SegmentGuard g(unique_name("lstm"));
  std::optional<Listener> first(std::in_place, g.name());
  Listener moved = std::move(*first);
  first.reset();  // a moved-from Listener closes nothing
  const pid_t kid = client(g.name(), 5);
  serve(moved, 1);
  EXPECT_EQ(test::wait_child(kid).code, 0);
  Listener assigned(unique_name("lstm2"));
  assigned = std::move(moved);  // closes what it had, takes the name
  const pid_t again = client(g.name(), 6);
  serve(assigned, 1);
  EXPECT_EQ(test::wait_child(again).code, 0);
}

TEST(Listener, WaitSeesAClientBesideOtherObjects) {
  SegmentGuard g(unique_name("lstw"));
  Listener listener(g.name());
  Event other;
  EXPECT_TRUE(wait({listener, other}, 1ms).empty());  // nobody yet
  const pid_t kid = client(g.name(), 4);
  EXPECT_EQ(wait({other, listener}, 10s), std::vector<std::size_t>{1});
  serve(listener, 1);
  EXPECT_EQ(test::wait_child(kid).code, 0);
  listener.close();
  EXPECT_EQ(wait({listener}, 10s), std::vector<std::size_t>{0});  // closed: accept() won't wait
}

TEST(Listener, FilenoPollsReadableWhileAClientWaits) {
  SegmentGuard g(unique_name("lstf"));
  Listener listener(g.name());
  pollfd p{listener.fileno(), POLLIN, 0};
  ASSERT_GE(p.fd, 0);
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  const pid_t kid = client(g.name(), 6);
  EXPECT_EQ(::poll(&p, 1, 10'000), 1);
  serve(listener, 1);
  EXPECT_EQ(test::wait_child(kid).code, 0);
  EXPECT_FALSE(listener.try_accept().has_value());  // drained: level-triggered off again
  p.revents = 0;
  EXPECT_EQ(::poll(&p, 1, 0), 0);
}

TEST(Listener, BadNamesAreClearErrors) {
  SegmentGuard g(unique_name("lstq"));
  auto q = Queue<int>::create(g.name());
  EXPECT_EQ(test::code_of([&] { (void)Client(g.name(), 1s); }), Errc::wrong_kind);
  EXPECT_EQ(test::code_of([&] { (void)Client(unique_name("absent"), 1s); }), Errc::not_found);
  EXPECT_EQ(test::code_of([&] { Listener l(std::string(kMaxListenerName + 1, 'x')); }),
            Errc::invalid_name);
  EXPECT_EQ(test::code_of([&] { Listener l(g.name()); }), Errc::wrong_kind);  // a queue
}

// A connection's pipe is named with the client's pid and start time
// ("<pid>-<start, hex>-<n, hex>"): a later client with a dead client's pid
// makes other names, so it never loses its pipe to the dead one's cleanup.
TEST(Listener, PipeNamesCarryTheClientsPidAndStartTime) {
  SegmentGuard g(unique_name("lstn"));
  Listener listener(g.name());
  Event looked;
  const pid_t kid = test::fork_child([&] {
    Connection c = Client(g.name(), 10s);
    return looked.wait_for(10s) ? 0 : 1;  // held open until the server has looked
  });
  auto served = listener.accept_for(10s);
  ASSERT_TRUE(served.has_value());
  const auto conns = listener_connections(g.name());
  const std::optional<ProcessId> client = lookup_process(kid);  // while the client lives
  looked.set();
  ASSERT_EQ(conns.size(), 1u);
  ASSERT_TRUE(client.has_value());
  char expect[64];
  std::snprintf(expect, sizeof expect, "%d-%llx-", static_cast<int>(kid),
                static_cast<unsigned long long>(client->start_time));
  EXPECT_TRUE(conns[0].pipe.starts_with(g.name() + ".conn-" + expect)) << conns[0].pipe;
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

// Two servers take over a dead listener's name at once; one is held after
// it judged the old backlog dead, before it unlinks it
// (FaultPoint::unlink_checked, holding the flock of that backlog). The other
// must not slip a new backlog under the name in between (which the held one
// would then remove, leaving a live listener without a name): it waits for
// the lock on the old file. Either may then make the new backlog; the other
// finds that live listener and fails with already_exists, and the winner
// keeps its name (a client reaches it).
TEST(Listener, TwoServersTakingOverADeadNameNeverLeaveOneWithoutItsName) {
  SegmentGuard g(unique_name("lsto"));
  const pid_t owner = test::fork_child([&] {
    Listener listener(g.name());
    ::raise(SIGKILL);
    return 0;
  });
  ASSERT_EQ(test::wait_child(owner).signal, SIGKILL);
  test::hold_reset();
  detail::set_fault_hook(&test::hold_hook);
  struct Taker {
    std::optional<Listener> listener;
    std::atomic<int> error{-1};  // -1 not done, 0 listening, else the Errc it failed with
    std::atomic<pid_t> tid{0};
    void run(std::string_view name, bool held) {
      tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
      if (held) test::hold_me_at(detail::FaultPoint::unlink_checked);
      try {
        listener.emplace(name);
        error.store(0);
      } catch (const Error& e) {
        error.store(static_cast<int>(e.code()));
      }
    }
  } first, second;
  std::thread a([&] { first.run(g.name(), true); });
  std::thread b;
  test::HoldJoin join{a, b};
  ASSERT_TRUE(test::poll_until([&] { return test::hold_state() == 1; }));
  b = std::thread([&] { second.run(g.name(), false); });
  // The second waits for the lock the first holds (or, without it, is done).
  ASSERT_TRUE(test::poll_until([&] {
    return second.error.load() != -1 ||
           (second.tid.load() != 0 && test::thread_sleeping(second.tid.load()));
  }));
  test::hold_release();
  a.join();
  b.join();
  const int errs[2] = {first.error.load(), second.error.load()};
  ASSERT_EQ(std::count(std::begin(errs), std::end(errs), 0), 1)
      << "first " << errs[0] << ", second " << errs[1]
      << ": both listen (one without its name) or neither does";
  EXPECT_EQ(std::count(std::begin(errs), std::end(errs), static_cast<int>(Errc::already_exists)), 1)
      << "first " << errs[0] << ", second " << errs[1];
  Listener& winner = first.error.load() == 0 ? *first.listener : *second.listener;
  // The name is the winner's: a client reaches it.
  const pid_t kid = test::fork_child([&] {
    Connection c = Client(g.name(), 10s);
    return c.send(7) == SendResult::ok ? 0 : 1;
  });
  auto c = winner.accept_for(10s);
  ASSERT_TRUE(c.has_value());
  int v = 0;
  EXPECT_EQ(c->recv_for(v, 10s), RecvResult::ok);
  EXPECT_EQ(v, 7);
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

// ListenerOptions::wait: the server's ends of accepted connections wait by
// the listener's policy, whatever the client's pipe says, and the client's
// sends wake them: a blocking recv() on a busy-poll client's connection
// (it would spin by the pipe's strategy), asleep when the client sends,
// gets every message with no sleep running to its slice's end (a missed
// wake-up). A policy that is not one is refused when the listener is made.
TEST(Listener, AcceptedEndsWaitByTheListenersPolicyAndTheClientsSendsWakeThem) {
  SegmentGuard g(unique_name("lw"));
  EXPECT_EQ(test::code_of([&] {
              Listener bad(g.name(),
                           {.wait = WaitPolicy{.strategy = static_cast<WaitStrategy>(7)}});
            }),
            Errc::invalid_argument);
  Listener listener(g.name(), {.wait = WaitPolicy{.strategy = WaitStrategy::blocking}});
  const pid_t parent = ::getpid();
  const pid_t kid = test::fork_child([&] {
    Connection c =
        Client(g.name(), 10s, PipeOptions{.wait = {.strategy = WaitStrategy::busy_poll}});
    for (std::int32_t i = 1; i <= 5; ++i) {
      // The server's receive is asleep (a spinning one never is: fails).
      if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 1;
      if (c.send(i) != SendResult::ok) return 2;
    }
    return 0;
  });
  auto c = listener.accept_for(10s);
  ASSERT_TRUE(c.has_value());
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  for (std::int32_t i = 1; i <= 5; ++i) {
    std::int32_t v = 0;
    ASSERT_EQ(c->recv_for(v, 30s), RecvResult::ok) << i;
    EXPECT_EQ(v, i);
  }
  // One send landing just as a 10 ms slice ends counts too; sends that do
  // not wake the receiver miss all five.
  EXPECT_LE(detail::pipe_missed_wakeups() - missed, 1u)
      << "sends did not wake the sleeping receiver";
  EXPECT_EQ(test::wait_child(kid).code, 0);
}

}  // namespace
}  // namespace shmbus
