// Pipe between real processes: checksummed delivery of many random-size
// messages, messages larger than the ring, the users' duplex and
// half-duplex scenarios, EOF after the peer exits or is SIGKILLed (no
// committed message lost), blocking waits, and opening by name from an
// unrelated process.
//
// The delivery run sends 200,000 messages (20,000 under sanitizers);
// SHMBUS_SOAK=1 makes it the 10 million.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/pipe.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::SegmentGuard;
using test::unique_name;
using test::wait_child;

// Message i: 8-byte index, then bytes derived from i; its size is drawn
// log-uniformly from 1 B .. 64 KiB (the index is cut to fit tiny ones).
std::size_t size_of(std::uint64_t i) {
  std::uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL;
  x ^= x >> 29;
  const unsigned bits = static_cast<unsigned>(x % 17);  // 2^0 .. 2^16
  const std::uint64_t hi = std::uint64_t{1} << bits;
  return static_cast<std::size_t>(std::max<std::uint64_t>(1, (x >> 8) % hi + 1));
}

void fill(std::uint64_t i, std::byte* p, std::size_t n) {
  std::byte head[8];
  std::memcpy(head, &i, 8);
  for (std::size_t k = 0; k < n; ++k) {
    p[k] = k < 8 ? head[k] : static_cast<std::byte>((i * 7 + k * 13) & 0xff);
  }
}

bool check(std::uint64_t i, const std::byte* p, std::size_t n) {
  if (n != size_of(i)) return false;
  std::byte head[8];
  std::memcpy(head, &i, 8);
  for (std::size_t k = 0; k < n; ++k) {
    const std::byte want = k < 8 ? head[k] : static_cast<std::byte>((i * 7 + k * 13) & 0xff);
    if (p[k] != want) return false;
  }
  return true;
}

Errc code_of_recv(Connection& c) {
  try {
    (void)c.recv<int>();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no shmbus::Error thrown";
  return Errc::system;
}

std::uint64_t delivery_count() {
  const char* soak = std::getenv("SHMBUS_SOAK");
  if (soak != nullptr && std::string(soak) == "1") return 10'000'000;
#ifdef SHMBUS_SANITIZED
  return 20'000;
#else
  return 200'000;
#endif
}

void deliver_random_sizes(std::size_t capacity) {
  const std::uint64_t count = delivery_count();
  PipeOptions o;
  o.capacity = capacity;
  auto [a, b] = Pipe(o);
  const pid_t child = fork_child([&b = b, count] {
    std::vector<std::byte> buf(1 << 16);
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::size_t n = size_of(i);
      fill(i, buf.data(), n);
      if (b.send_bytes({buf.data(), n}) != SendResult::ok) return 1;
    }
    b.close();
    return 0;
  });
  std::vector<std::byte> buf(1 << 16);
  std::uint64_t got = 0;
  std::size_t n = 0;
  RecvResult r;
  while ((r = a.recv_bytes_into(buf, 0, n)) == RecvResult::ok) {
    ASSERT_TRUE(check(got, buf.data(), n)) << "message " << got << " size " << n;
    ++got;
  }
  EXPECT_EQ(r, RecvResult::eof);
  EXPECT_EQ(got, count);
  const auto st = wait_child(child, 600s);
  EXPECT_TRUE(st.exited && st.code == 0);
}

// 64 KiB ring (16 KiB frames): the larger messages fragment, every
// fragment copied through the cache.
TEST(PipeProcess, OrderedChecksummedDeliveryOfRandomSizes) { deliver_random_sizes(1 << 16); }

// 128 KiB ring (32 KiB frames): messages above one frame fragment into
// pieces large enough for detail::CopyChoice, which copies some through
// the cache and some around it (non-temporal stores) as it explores.
TEST(PipeProcess, OrderedChecksummedDeliveryWithEitherCopyOfFragments) {
  deliver_random_sizes(1 << 17);
}

// Fragments of at least 16 KiB are copied through the cache or with
// non-temporal stores (detail::CopyChoice tries both on its first two
// messages): odd sizes and an unaligned source cover the streaming copy's
// head, body and tail.
TEST(PipeProcess, LargeFragmentsOfABigRingArriveIntact) {
  PipeOptions o;
  o.capacity = 256 << 10;  // 64 KiB frames
  auto [a, b] = Pipe(o);
  const std::vector<std::size_t> sizes{(1 << 20) + 13, 777'777, 3 * 65536 + 7, 1 << 20};
  auto byte_at = [](std::size_t i, std::size_t k) {
    return static_cast<std::byte>((k * 7 + i * 13 + (k >> 9)) & 0xff);
  };
  const pid_t child = fork_child([&b = b, &sizes, &byte_at] {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::vector<std::byte> m(sizes[i] + 1);
      for (std::size_t k = 0; k < sizes[i]; ++k) m[k + 1] = byte_at(i, k);
      if (b.send_bytes({m.data() + 1, sizes[i]}) != SendResult::ok) return 1;  // unaligned
    }
    b.close();
    return 0;
  });
  std::vector<std::byte> buf((2 << 20) + 3);
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::size_t n = 0;
    ASSERT_EQ(a.recv_bytes_into(buf, 3, n), RecvResult::ok) << i;
    ASSERT_EQ(n, sizes[i]);
    for (std::size_t k = 0; k < n; ++k) ASSERT_EQ(buf[k + 3], byte_at(i, k)) << i << ":" << k;
  }
  std::size_t n = 0;
  EXPECT_EQ(a.recv_bytes_into(buf, 0, n), RecvResult::eof);
  const auto st = wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0);
}

TEST(PipeProcess, MessagesLargerThanTheRingCrossProcesses) {
  PipeOptions o;
  o.capacity = 4096;
  auto [a, b] = Pipe(o);
  const std::vector<std::size_t> sizes{100'000, 1 << 20, 5, 3 << 20};
  const pid_t child = fork_child([&b = b, &sizes] {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::vector<std::byte> m(sizes[i]);
      for (std::size_t k = 0; k < m.size(); ++k) m[k] = static_cast<std::byte>((k * 3 + i) & 0xff);
      if (b.send_bytes(m) != SendResult::ok) return 1;
    }
    return 0;
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    auto m = a.recv_bytes();
    ASSERT_EQ(m.size(), sizes[i]);
    for (std::size_t k = 0; k < m.size(); ++k) {
      ASSERT_EQ(m[k], static_cast<std::byte>((k * 3 + i) & 0xff)) << i << ":" << k;
    }
  }
  std::byte x[1];
  std::size_t n = 0;
  EXPECT_EQ(a.recv_bytes_into(x, 0, n), RecvResult::peer_dead);  // exited without close()
  const auto st = wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0);
}

// multiprocessing: parent_conn, child_conn = Pipe(); the child receives a
// greeting and answers.
TEST(PipeProcess, DuplexParentChildExchange) {
  auto [parent_conn, child_conn] = Pipe();
  const pid_t child = fork_child([&c = child_conn] {
    if (c.recv_string() != "Hello from Parent!") return 1;
    return c.send("Hello from Child!") == SendResult::ok ? 0 : 2;
  });
  ASSERT_EQ(parent_conn.send("Hello from Parent!"), SendResult::ok);
  EXPECT_EQ(parent_conn.recv_string(), "Hello from Child!");
  const auto st = wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0);
}

// multiprocessing: recv_conn, send_conn = Pipe(duplex=False); a sender
// process and a receiver process.
TEST(PipeProcess, HalfDuplexSenderAndReceiverProcesses) {
  auto [recv_conn, send_conn] = Pipe(false);
  const pid_t sender = fork_child([&c = send_conn] {
    const auto r = c.send("Hello from sender!");
    c.close();
    return r == SendResult::ok ? 0 : 1;
  });
  const pid_t receiver = fork_child([&c = recv_conn] {
    if (c.recv_string() != "Hello from sender!") return 1;
    int x = 0;
    return c.recv(x) == RecvResult::eof ? 0 : 2;  // the sender closed
  });
  const auto s1 = wait_child(sender);
  const auto s2 = wait_child(receiver);
  EXPECT_TRUE(s1.exited && s1.code == 0);
  EXPECT_TRUE(s2.exited && s2.code == 0) << s2.code;
}

// [pipe.fork] Ends inherited across fork() leave the inlined paths the
// parent had on: a child's first use goes through take_over(), which
// passes an end its parent used to that child and refuses it to a
// grandchild (the parent holds it). The grandchild finds a message waiting
// on its receiving end and room on its sending end, so a fast path left on
// would have received or sent; it must get `closed` from both.
TEST(PipeProcess, InheritedEndsGoThroughTakeOverNotTheParentsFastPath) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send(1), SendResult::ok);  // the parent uses both ends: fast paths on
  ASSERT_EQ(b.recv<int>(), 1);
  ASSERT_EQ(a.send(7), SendResult::ok);  // waits in b's ring
  const pid_t child = fork_child([&a = a, &b = b] {
    const pid_t grandchild = fork_child([&a, &b] {
      int v = 0;
      if (b.recv(v) != RecvResult::closed) return 1;
      return a.send(2) == SendResult::closed ? 0 : 2;
    });
    const auto st = wait_child(grandchild);
    if (!st.exited || st.code != 0) return 10 + (st.exited ? st.code : 50);
    return a.send(3) == SendResult::ok ? 0 : 3;  // the parent's child takes `a` over
  });
  const auto st = wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
  int v = 0;
  ASSERT_EQ(b.recv_for(v, 10s), RecvResult::ok);
  EXPECT_EQ(v, 7);  // not taken by the grandchild
  ASSERT_EQ(b.recv_for(v, 10s), RecvResult::ok);
  EXPECT_EQ(v, 3);  // the child's, with nothing from the grandchild before it
}

TEST(PipeProcess, EofAfterThePeerClosesAndExits) {
  auto [a, b] = Pipe();
  const pid_t child = fork_child([&b = b] {
    for (int i = 0; i < 100; ++i) {
      if (b.send(i) != SendResult::ok) return 1;
    }
    b.close();
    return 0;
  });
  for (int i = 0; i < 100; ++i) ASSERT_EQ(a.recv<int>(), i);
  int x = 0;
  EXPECT_EQ(a.recv(x), RecvResult::eof);
  EXPECT_TRUE(wait_child(child).exited);
}

TEST(PipeProcess, SigkilledPeerLosesNoCommittedMessage) {
  for (auto strategy : {WaitStrategy::busy_poll, WaitStrategy::adaptive, WaitStrategy::blocking}) {
    PipeOptions o;
    o.wait.strategy = strategy;
    auto [a, b] = Pipe(o);
    const pid_t child = fork_child([&b = b] {
      for (std::uint32_t i = 0; i < 1000; ++i) {
        if (b.send(i) != SendResult::ok) return 1;
      }
      ::kill(::getpid(), SIGKILL);
      return 2;
    });
    // The child is dead (reaped) before we read anything: every message it
    // committed must still come out, then peer_dead.
    const auto st = wait_child(child);
    EXPECT_EQ(st.signal, SIGKILL);
    for (std::uint32_t i = 0; i < 1000; ++i) ASSERT_EQ(a.recv<std::uint32_t>(), i);
    std::uint32_t x = 0;
    EXPECT_EQ(a.recv(x), RecvResult::peer_dead);
    EXPECT_EQ(code_of_recv(a), Errc::peer_dead);
  }
}

TEST(PipeProcess, KilledWhileStreamingEndsInOrderWithPeerDead) {
  auto [a, b] = Pipe();
  const pid_t child = fork_child([&b = b] {
    for (std::uint64_t i = 0;; ++i) {
      if (b.send(i) != SendResult::ok) return 1;
    }
  });
  for (std::uint64_t i = 0; i < 10000; ++i) ASSERT_EQ(a.recv<std::uint64_t>(), i);
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_child(child).signal, SIGKILL);
  std::uint64_t next = 10000, x = 0;
  RecvResult r;
  while ((r = a.recv(x)) == RecvResult::ok) {
    ASSERT_EQ(x, next);
    ++next;
  }
  EXPECT_EQ(r, RecvResult::peer_dead);
}

TEST(PipeProcess, BlockedReceiverSeesPeerDeathWithoutAnyMessage) {
  PipeOptions o;
  o.wait.strategy = WaitStrategy::blocking;
  SegmentGuard g(unique_name("pipe-death"));
  auto [a, b] = Pipe(g.name(), o);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t child = fork_child([&b = b, &go] {
    (void)b.poll();  // takes the end, receives nothing
    char c;
    return ::read(go[0], &c, 1) == 1 ? 0 : 1;  // then waits to be killed
  });
  ASSERT_TRUE(test::poll_until([&] {
    auto s = pipe_stats(SegmentView::open(g.name()));
    return s.ends[1].owner.pid == child;
  }));
  RecvResult r = RecvResult::ok;
  std::thread receiver([&a = a, &r] {
    int x = 0;
    r = a.recv_for(x, 10s);
  });
  // Kill only once the receiver sleeps (end 0 receives ring 0).
  const bool blocked = test::poll_until(
      [&] { return pipe_stats(SegmentView::open(g.name())).rings[0].blocked_recvs >= 1; });
  ::kill(child, SIGKILL);
  receiver.join();
  EXPECT_TRUE(blocked);
  EXPECT_EQ(r, RecvResult::peer_dead);
  wait_child(child);
  ::close(go[0]);
  ::close(go[1]);
}

TEST(PipeProcess, BlockingPingPongAcrossProcesses) {
  PipeOptions o;
  o.wait.strategy = WaitStrategy::blocking;
  auto [a, b] = Pipe(o);
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  const pid_t child = fork_child([&b = b, missed] {
    int x = 0;
    while (b.recv(x) == RecvResult::ok) {
      if (b.send(x * 2) != SendResult::ok) return 1;
    }
    // Every sleep was ended by the parent's wake-up, none by a slice.
    return detail::pipe_missed_wakeups() == missed ? 0 : 2;
  });
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(a.send(i), SendResult::ok);
    ASSERT_EQ(a.recv<int>(), i * 2);
  }
  a.close();
  const auto st = wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
  EXPECT_EQ(detail::pipe_missed_wakeups(), missed);
}

// The adaptive sender publishes without a fence and the sleeping receiver
// pays membarrier ([ring.sleep]): across fork (the child registers again on
// first use of its inherited end) every wake-up must arrive. Each round
// sends only once the child sleeps, so every round takes the sleep path.
TEST(PipeProcess, AdaptiveReceiverAsleepIsWokenAcrossProcesses) {
  PipeOptions o;
  o.wait.strategy = WaitStrategy::adaptive;
  o.wait.spin = std::chrono::nanoseconds::zero();
  auto [a, b] = Pipe(o);
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  const pid_t child = fork_child([&b = b, missed] {
    int x = 0;
    while (b.recv(x) == RecvResult::ok) {
      if (b.send(x + 1) != SendResult::ok) return 1;
    }
    return detail::pipe_missed_wakeups() == missed ? 0 : 2;
  });
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(test::poll_until([&] { return test::process_sleeping(child); }));
    ASSERT_EQ(a.send(i), SendResult::ok);
    ASSERT_EQ(a.recv<int>(), i + 1);
  }
  a.close();
  const auto st = wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
  EXPECT_EQ(detail::pipe_missed_wakeups(), missed);
}

TEST(PipeProcess, UnrelatedProcessTakesAnEndByName) {
  SegmentGuard g(unique_name("pipe-peer"));
  auto mine = Connection::create(g.name(), PipeEnd::first);
  const pid_t peer = test::spawn_helper("pipe_peer", {g.name(), "second", "3"});
  // With deadlines: a helper that cannot take its end fails the test, not hangs it.
  const auto deadline = Clock::now() + 30s;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(mine.send("abc" + std::to_string(i)), SendResult::ok);
    std::string reply;
    ASSERT_EQ(mine.recv(reply, &deadline), RecvResult::ok) << i;
    EXPECT_EQ(reply, std::to_string(i) + "cba");
  }
  int x = 0;
  EXPECT_EQ(mine.recv_for(x, 30s), RecvResult::eof);  // the helper closed
  const auto st = wait_child(peer);
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
  // The end stays taken by the (now dead) helper: a second taker fails.
  const pid_t again = test::spawn_helper("pipe_peer", {g.name(), "second", "1"});
  const auto st2 = wait_child(again);
  EXPECT_TRUE(st2.exited && st2.code == 5) << st2.code;  // 5: Errc::already_exists
}

}  // namespace
}  // namespace shmbus
