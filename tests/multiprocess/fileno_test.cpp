// fileno() on Connection, queues, Event and Semaphore: a descriptor that
// polls readable while the object is ready (woken by another process),
// re-armed by this handle's non-blocking call that finds it not ready; one
// eventfd write per empty -> non-empty transition; a process killed holding
// a descriptor leaves the sender's fast path as it was.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/wait_any.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;

bool readable(int fd, std::chrono::milliseconds timeout = 0ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && (p.revents & POLLIN) != 0;
}

// How many times the descriptor was signalled since it was last cleared
// (the eventfd's counter), without clearing it... by reading and writing back.
std::uint64_t signals(int fd) {
  std::uint64_t v = 0;
  if (::read(fd, &v, sizeof v) != sizeof v) return 0;
  EXPECT_EQ(::write(fd, &v, sizeof v), static_cast<ssize_t>(sizeof v));
  return v;
}

// The parent sleeps in poll() on `fd`; a child does `make_ready` once it
// sees the parent asleep. Returns whether the descriptor turned readable.
bool woken_by_child(int fd, const std::function<bool()>& make_ready) {
  const pid_t parent = ::getpid();
  const pid_t child = test::fork_child([&] {
    if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 1;
    return make_ready() ? 0 : 2;
  });
  const bool r = readable(fd, 10'000ms);
  EXPECT_EQ(test::wait_child(child).code, 0);
  return r;
}

TEST(Fileno, APipeEndPollsReadableWhileAMessageIsThere) {
  for (WaitStrategy st :
       {WaitStrategy::adaptive, WaitStrategy::blocking, WaitStrategy::busy_poll}) {
    SCOPED_TRACE(std::string(to_string(st)));
    PipeOptions o;
    o.wait.strategy = st;
    auto [rx, tx] = Pipe(o);
    const int fd = rx.fileno();
    EXPECT_EQ(rx.fileno(), fd);  // one per end
    EXPECT_FALSE(readable(fd));
    // The sender is a child that stays alive (a dead sender makes the end
    // ready) until told to close its end.
    int go[2];
    ASSERT_EQ(::pipe(go), 0);
    const pid_t parent = ::getpid();
    const pid_t child = test::fork_child([&] {
      if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 1;
      if (tx.send(std::int32_t{1}) != SendResult::ok || tx.send(std::int32_t{2}) != SendResult::ok)
        return 2;
      char c = 0;
      if (::read(go[0], &c, 1) != 1) return 3;
      if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 4;
      tx.close();  // end of file makes it readable too
      return 0;
    });
    ASSERT_TRUE(readable(fd, 10'000ms));
    std::int32_t v = 0;
    ASSERT_EQ(rx.recv(v), RecvResult::ok);
    EXPECT_TRUE(readable(fd));  // level: not re-armed until a call finds nothing
    ASSERT_EQ(rx.recv(v), RecvResult::ok);
    EXPECT_EQ(v, 2);
    ASSERT_FALSE(rx.poll());  // finds nothing: re-arms
    EXPECT_FALSE(readable(fd));
    ASSERT_EQ(::write(go[1], "g", 1), 1);
    EXPECT_TRUE(readable(fd, 10'000ms));
    EXPECT_EQ(rx.recv(v), RecvResult::eof);
    EXPECT_EQ(test::wait_child(child).code, 0);
    ::close(go[0]);
    ::close(go[1]);
  }
}

TEST(Fileno, ManyMessagesMakeOneSignal) {
  auto [rx, tx] = Pipe();
  const int fd = rx.fileno();
  for (std::int32_t i = 0; i < 100; ++i) ASSERT_EQ(tx.send(i), SendResult::ok);
  ASSERT_TRUE(readable(fd, 10'000ms));
  EXPECT_EQ(signals(fd), 1U);  // one eventfd write for the transition, not one per message
  std::int32_t v = 0;
  while (rx.poll()) ASSERT_EQ(rx.recv(v), RecvResult::ok);
  EXPECT_FALSE(readable(fd));
  ASSERT_EQ(tx.send(std::int32_t{7}), SendResult::ok);
  ASSERT_TRUE(readable(fd, 10'000ms));
  EXPECT_EQ(signals(fd), 1U);
}

// Holds the descriptor's thread at FaultPoint::fd_firing (claimed the
// wake-up, descriptor not yet signalled) until released, or until a 10 s
// deadline when nobody releases it (then g_firing_timed_out).
std::atomic<int> g_firing{0};  // 1: held, 2: released
std::atomic<bool> g_firing_timed_out{false};
void hold_firing(detail::FaultPoint p) noexcept {
  if (p != detail::FaultPoint::fd_firing || g_firing.load() != 0) return;
  g_firing.store(1);
  if (!test::poll_until([] { return g_firing.load() == 2; })) g_firing_timed_out.store(true);
}
struct FiringHoldGuard {
  FiringHoldGuard() {
    g_firing.store(0);
    g_firing_timed_out.store(false);
    detail::set_fault_hook(&hold_firing);
  }
  ~FiringHoldGuard() {
    g_firing.store(2);
    detail::set_fault_hook(nullptr);
  }
};

// The owner that took the message before the thread signalled (the thread
// preempted between its claim and its write, typically by the owner it
// woke on their shared cpu) waits for the signal asleep, not spinning (a
// spin would hold the cpu the thread needs until the scheduler's tick),
// then clears and re-arms: no stale readable descriptor is left behind,
// and the next message signals it again.
TEST(Fileno, ARearmWhileTheThreadSignalsSleepsUntilItHasSignalled) {
  auto [rx, tx] = Pipe();
  const int fd = rx.fileno();
  FiringHoldGuard guard;
  ASSERT_EQ(tx.send(std::int32_t{1}), SendResult::ok);
  ASSERT_TRUE(test::poll_until([] { return g_firing.load() == 1; }));  // thread held
  std::int32_t v = 0;
  ASSERT_TRUE(rx.poll());
  ASSERT_EQ(rx.recv(v), RecvResult::ok);
  std::atomic<pid_t> tid{0};
  std::atomic<int> polled{-1};
  std::thread owner([&] {
    tid.store(static_cast<pid_t>(::gettid()));
    polled.store(rx.poll() ? 1 : 0);  // re-arms once the thread has signalled
  });
  const bool slept =
      test::poll_until([&] { return tid.load() != 0 && test::thread_sleeping(tid.load()); });
  g_firing.store(2);
  owner.join();
  EXPECT_TRUE(slept) << "poll() spun while the descriptor's thread was held";
  EXPECT_FALSE(g_firing_timed_out.load());
  EXPECT_EQ(polled.load(), 0);
  EXPECT_FALSE(readable(fd));  // the late signal was cleared by the re-arm
  ASSERT_EQ(tx.send(std::int32_t{2}), SendResult::ok);
  ASSERT_TRUE(readable(fd, 10'000ms));
  ASSERT_TRUE(rx.poll());
  ASSERT_EQ(rx.recv(v), RecvResult::ok);
  EXPECT_EQ(v, 2);
}

// README: edge-triggered epoll gets one edge per turn to readable, as long
// as each edge is drained until a call finds nothing.
TEST(Fileno, EdgeTriggeredEpollGetsAnEdgeAfterEachDrain) {
  auto [rx, tx] = Pipe();
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, rx.fileno(), &ev), 0);
  std::int32_t v = 0;
  for (std::int32_t round = 0; round < 3; ++round) {
    for (std::int32_t i = 0; i < 3; ++i) ASSERT_EQ(tx.send(round * 3 + i), SendResult::ok);
    ASSERT_EQ(::epoll_wait(ep, &ev, 1, 10'000), 1) << "round " << round;
    while (rx.poll()) ASSERT_EQ(rx.recv(v), RecvResult::ok);  // the last poll() re-arms
    EXPECT_EQ(v, round * 3 + 2);
    EXPECT_EQ(::epoll_wait(ep, &ev, 1, 0), 0);  // drained: no edge until the next message
  }
  ::close(ep);
}

TEST(Fileno, AQueueEventAndSemaphorePollReadableWhileReady) {
  test::SegmentGuard guard;
  auto q = Queue<std::int32_t>::create(guard.add(test::unique_name("fn-q")));
  auto e = Event::create(guard.add(test::unique_name("fn-e")));
  auto s = Semaphore::create(guard.add(test::unique_name("fn-s")), 0);

  const int qfd = q.fileno();
  EXPECT_FALSE(readable(qfd));
  ASSERT_TRUE(woken_by_child(qfd, [&] { return q.put(5) == QueueResult::ok; }));
  std::int32_t v = 0;
  ASSERT_EQ(q.try_get(v), QueueResult::ok);
  EXPECT_TRUE(readable(qfd));
  ASSERT_EQ(q.try_get(v), QueueResult::empty);
  EXPECT_FALSE(readable(qfd));
  for (int i = 0; i < 50; ++i) ASSERT_EQ(q.put(i), QueueResult::ok);
  ASSERT_TRUE(readable(qfd, 10'000ms));
  EXPECT_EQ(signals(qfd), 1U);

  const int efd = e.fileno();
  EXPECT_FALSE(readable(efd));
  ASSERT_TRUE(woken_by_child(efd, [&] {
    e.set();
    return true;
  }));
  e.clear();
  EXPECT_FALSE(readable(efd));

  const int sfd = s.fileno();
  EXPECT_FALSE(readable(sfd));
  ASSERT_TRUE(woken_by_child(sfd, [&] { return s.release(); }));
  EXPECT_TRUE(s.try_acquire());
  EXPECT_TRUE(readable(sfd));
  EXPECT_FALSE(s.try_acquire());
  EXPECT_FALSE(readable(sfd));
}

TEST(Fileno, AProcessKilledHoldingADescriptorLeavesTheSendersFastPath) {
  test::SegmentGuard guard(test::unique_name("fn-kill"));
  auto ends = Pipe(guard.name());
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = test::fork_child([&]() -> int {
    (void)ends.first.fileno();  // registers: the bridge thread sleeps on the ring
    if (::write(ready[1], "r", 1) != 1) return 1;
    for (;;) ::pause();
  });
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  auto view = SegmentView::open(guard.name());
  const auto& asleep =
      reinterpret_cast<const detail::PipeControl*>(view.payload().data())->rings[0].consumer_asleep;
  EXPECT_NE(asleep.load(), 0U);
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  ASSERT_EQ(ends.second.send(std::int32_t{1}), SendResult::ok);
  EXPECT_EQ(asleep.load(), 0U);  // taken by that send: later sends wake nobody
  ASSERT_EQ(ends.second.send(std::int32_t{2}), SendResult::ok);
  EXPECT_EQ(asleep.load(), 0U);
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(Fileno, EndsThatCannotReceiveAreRefused) {
  auto [r, w] = Pipe(false);
  EXPECT_EQ(test::code_of([&] { (void)w.fileno(); }), Errc::invalid_argument);
  r.close();
  EXPECT_EQ(test::code_of([&] { (void)r.fileno(); }), Errc::invalid_argument);
}

}  // namespace
}  // namespace shmbus
