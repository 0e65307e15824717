// shmbus::wait over any mix (wait_any.hpp): pipe ends, queues, Events,
// Semaphores, Process sentinels and raw descriptors; a sleeper woken by
// each kind (with and without a descriptor in the set), more objects than
// futex_waitv takes, closed and broken objects, a waiter killed while armed.
#include "shmbus/wait_any.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/segment_info.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using Positions = std::vector<std::size_t>;

// A Linux pipe, closed on scope exit.
struct Fds {
  int r = -1;
  int w = -1;
  Fds() { EXPECT_EQ(::pipe(&r), 0); }
  ~Fds() {
    ::close(r);
    ::close(w);
  }
  void poke() const { EXPECT_EQ(::write(w, "x", 1), 1); }
  void drain() const {
    char c;
    EXPECT_EQ(::read(r, &c, 1), 1);
  }
};

// One of each kind, named uniquely and unlinked at the end.
struct Mix {
  test::SegmentGuard guard;
  std::pair<Connection, Connection> pipe;
  Queue<std::int32_t> queue;
  Event event;
  Semaphore sem;
  Fds fds;
  static QueueOptions queue_options(WaitStrategy strategy) {
    QueueOptions qo;
    qo.capacity = 8;
    qo.policy.strategy = strategy;
    return qo;
  }
  explicit Mix(WaitStrategy strategy)
      : queue(Queue<std::int32_t>::create(guard.add(test::unique_name("wa-q")),
                                          queue_options(strategy))) {
    PipeOptions po;
    po.wait.strategy = strategy;
    pipe = Pipe(po);
    event = Event::create(guard.add(test::unique_name("wa-e")));
    event.set_wait_policy({.strategy = strategy});
    sem = Semaphore::create(guard.add(test::unique_name("wa-s")), 0);
    sem.set_wait_policy({.strategy = strategy});
  }
};

TEST(WaitAny, ReturnsTheReadyPositionsOfAMixInOrder) {
  Mix m(WaitStrategy::adaptive);
  const std::array<Waitable, 5> set{m.pipe.first, m.queue, m.event, m.sem, Waitable::fd(m.fds.r)};
  EXPECT_TRUE(wait(set, 0ms).empty());
  m.fds.poke();
  ASSERT_EQ(m.queue.put(7), QueueResult::ok);
  EXPECT_EQ(wait(set, 1s), (Positions{1, 4}));
  m.event.set();
  ASSERT_TRUE(m.sem.release());
  ASSERT_EQ(m.pipe.second.send(std::int32_t{1}), SendResult::ok);
  Positions ready{9, 9, 9};
  wait(set, ready, 1s);  // into a vector it clears and reuses
  EXPECT_EQ(ready, (Positions{0, 1, 2, 3, 4}));
  std::int32_t v = 0;
  ASSERT_EQ(m.pipe.first.recv(v), RecvResult::ok);
  ASSERT_EQ(m.queue.get(v), QueueResult::ok);
  m.event.clear();
  ASSERT_TRUE(m.sem.try_acquire());
  m.fds.drain();
  wait(set, ready, 0ms);
  EXPECT_TRUE(ready.empty());
  // A braced list of objects works too, and the Waitable knows its object.
  EXPECT_TRUE(wait({m.pipe.first, m.queue}, 0ms).empty());
  EXPECT_TRUE(set[1].refers_to(&m.queue));
  EXPECT_FALSE(set[1].refers_to(&m.event));
}

// Descriptors are polled after the objects in a pass; positions still come
// in the list's order, whichever kind comes first in it, and a joined
// Process (no descriptor left) is ready among them.
TEST(WaitAny, DescriptorsListedBeforeObjectsStillComeInOrder) {
  Mix m(WaitStrategy::adaptive);
  Fds second;
  Process done([] {});
  done.start();
  done.join();
  const std::array<Waitable, 6> set{Waitable::fd(m.fds.r), m.queue, Waitable::fd(second.r),
                                    m.pipe.first,          done,    m.event};
  EXPECT_EQ(wait(set, 0ms), (Positions{4}));
  m.fds.poke();
  second.poke();
  ASSERT_EQ(m.queue.put(7), QueueResult::ok);
  ASSERT_EQ(m.pipe.second.send(std::int32_t{1}), SendResult::ok);
  EXPECT_EQ(wait(set, 1s), (Positions{0, 1, 2, 3, 4}));
  m.event.set();
  m.fds.drain();
  EXPECT_EQ(wait(set, 1s), (Positions{1, 2, 3, 4, 5}));
}

// A set of 16 or more answers from its hinted end through that end's
// inlined-receive flag; an end holding a peeked frame has the flag off and
// is still ready (its frame is there), in the hinted look and the spin.
TEST(WaitAny, AHintedEndWithAPeekedFrameStaysReady) {
  constexpr std::size_t kEnds = 16;
  std::vector<std::pair<Connection, Connection>> pipes;
  std::vector<Waitable> set;
  for (std::size_t i = 0; i < kEnds; ++i) pipes.push_back(Pipe());
  for (auto& p : pipes) set.emplace_back(p.first);
  ASSERT_EQ(pipes[5].second.send(std::int32_t{1}), SendResult::ok);
  Positions ready;
  wait(set, ready, 1s);
  ASSERT_EQ(ready, (Positions{5}));  // a whole pass; 5 is now the hint
  std::span<const std::byte> frame;
  ASSERT_EQ(pipes[5].first.peek(frame), RecvResult::ok);
  for (int call = 0; call < 20; ++call) {
    wait(set, ready, 1s);
    ASSERT_EQ(ready, (Positions{5})) << "call " << call;
  }
  pipes[5].first.release();
  wait(set, ready, 0ms);
  EXPECT_TRUE(ready.empty());
  ASSERT_EQ(pipes[5].second.send(std::int32_t{2}), SendResult::ok);
  wait(set, ready, 1s);
  EXPECT_EQ(ready, (Positions{5}));
}

std::atomic<int> g_sleeps{0};
void count_sleeps(detail::FaultPoint p) noexcept {
  if (p == detail::FaultPoint::sleeper_counted) g_sleeps.fetch_add(1, std::memory_order_relaxed);
}

// A busy-poll sender wakes nobody, so a waiter asleep on a set holding its
// end would see its message only when a nap ends: such a set spins until
// something is ready, whatever else it holds (a blocking Event, a blocking
// pipe end), in both forms of wait().
TEST(WaitAny, ASetHoldingABusyPollObjectSpinsAndNeverSleeps) {
  for (const bool pipe_only : {false, true}) {
    SCOPED_TRACE(pipe_only ? "wait(ends)" : "wait(waitables)");
    PipeOptions busy, blocking;
    busy.wait.strategy = WaitStrategy::busy_poll;
    blocking.wait.strategy = WaitStrategy::blocking;
    auto [rx, tx] = Pipe(busy);
    auto [other_rx, other_tx] = Pipe(blocking);
    Event ev;
    ev.set_wait_policy({.strategy = WaitStrategy::blocking});
    g_sleeps.store(0);
    detail::set_fault_hook(count_sleeps);
    std::atomic<bool> waiting{false};
    std::atomic<int> found{-1};
    std::thread waiter([&] {
      waiting.store(true);
      if (pipe_only) {
        const std::array<Connection*, 2> ends{&rx, &other_rx};
        const auto r = wait(ends, 30s);
        found.store(r.size() == 1 && r[0] == &rx ? 1 : 0);
      } else {
        found.store(wait({Waitable(rx), Waitable(ev), Waitable(other_rx)}, 30s) == Positions{0});
      }
    });
    // Far longer than an adaptive spin (the set's, without the busy end),
    // so a set that would sleep has reached its sleep.
    const auto since = Clock::now();
    EXPECT_TRUE(test::poll_until(
        [&] { return waiting.load() && Clock::now() - since > 100 * WaitPolicy{}.spin; }));
    ASSERT_EQ(tx.send(std::int32_t{1}), SendResult::ok);
    waiter.join();
    detail::set_fault_hook(nullptr);
    EXPECT_EQ(found.load(), 1);
    EXPECT_EQ(g_sleeps.load(), 0) << "the waiter slept on a set a busy-poll sender cannot wake";
  }
}

TEST(WaitAny, EveryQueueFlavourIsWaitable) {
  test::SegmentGuard guard;
  auto sq = SimpleQueue<std::int32_t>::create(guard.add(test::unique_name("wa-sq")));
  auto jq = JoinableQueue<std::int32_t>::create(guard.add(test::unique_name("wa-jq")));
  auto bq = BytesQueue::create(guard.add(test::unique_name("wa-bq")));
  const std::array<Waitable, 4> set{sq, jq, bq, Waitable::writable(bq)};
  EXPECT_EQ(wait(set, 0ms), (Positions{3}));
  ASSERT_EQ(sq.put(1), QueueResult::ok);
  ASSERT_EQ(bq.put(std::as_bytes(std::span("x"))), QueueResult::ok);
  EXPECT_EQ(wait(set, 1s), (Positions{0, 2, 3}));
  ASSERT_EQ(jq.put(2), QueueResult::ok);
  EXPECT_EQ(wait(set, 1s), (Positions{0, 1, 2, 3}));
}

TEST(WaitAny, AWritableQueueIsReadyWhileItHasRoom) {
  Mix m(WaitStrategy::adaptive);
  const std::array<Waitable, 1> set{Waitable::writable(m.queue)};
  EXPECT_EQ(wait(set, 0ms), (Positions{0}));
  while (m.queue.try_put(1) == QueueResult::ok) {
  }
  EXPECT_TRUE(wait(set, 0ms).empty());
  pid_t child = test::fork_child([&] {
    std::int32_t v = 0;
    return m.queue.get(v) == QueueResult::ok ? 0 : 1;
  });
  EXPECT_EQ(wait(set, 10s), (Positions{0}));
  EXPECT_EQ(test::wait_child(child).code, 0);
}

// Which kind a child makes ready, one after the other, each only once the
// parent sleeps in wait() (busy-poll: while it spins).
enum class Kind { pipe, queue, event, semaphore, fd, process };

struct SleepCase {
  WaitStrategy strategy;
  bool with_fd;  // a descriptor in the set: the watcher thread is involved
};

class WaitAnySleeping : public ::testing::TestWithParam<SleepCase> {};

TEST_P(WaitAnySleeping, EachKindWakesTheWaiter) {
  const SleepCase c = GetParam();
  Mix m(c.strategy);
  Fds go;    // the parent tells the child which step to take
  Fds done;  // the Process below exits when poked
  Process worker([&] {
    done.drain();
    return 0;
  });
  worker.start();
  const pid_t parent = ::getpid();
  std::vector<Kind> steps{Kind::pipe, Kind::queue, Kind::event, Kind::semaphore};
  if (c.with_fd) steps.push_back(Kind::fd);
  pid_t child = test::fork_child([&] {
    for (Kind k : steps) {
      char step = 0;
      if (::read(go.r, &step, 1) != 1) return 1;
      if (c.strategy != WaitStrategy::busy_poll &&
          !test::poll_until([&] { return test::process_sleeping(parent); }))
        return 2;
      switch (k) {
        case Kind::pipe:
          if (m.pipe.second.send(std::int32_t{1}) != SendResult::ok) return 3;
          break;
        case Kind::queue:
          if (m.queue.put(2) != QueueResult::ok) return 4;
          break;
        case Kind::event:
          m.event.set();
          break;
        case Kind::semaphore:
          if (!m.sem.release()) return 5;
          break;
        case Kind::fd:
          m.fds.poke();
          break;
        case Kind::process:
          break;
      }
    }
    // Keep the pipe's sending end alive (a dead peer is ready) until told.
    char step = 0;
    return ::read(go.r, &step, 1) == 1 ? 0 : 6;
  });
  std::vector<Waitable> set{m.pipe.first, m.queue, m.event, m.sem};
  if (c.with_fd) {
    set.push_back(Waitable::fd(m.fds.r));
    set.push_back(worker);
  }
  Positions ready;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    go.poke();
    wait(set, ready, 10s);
    ASSERT_EQ(ready, (Positions{i})) << "step " << i;
    std::int32_t v = 0;
    switch (steps[i]) {
      case Kind::pipe:
        ASSERT_EQ(m.pipe.first.recv(v), RecvResult::ok);
        break;
      case Kind::queue:
        ASSERT_EQ(m.queue.get(v), QueueResult::ok);
        break;
      case Kind::event:
        m.event.clear();
        break;
      case Kind::semaphore:
        ASSERT_TRUE(m.sem.try_acquire());
        break;
      default:
        m.fds.drain();
        break;
    }
  }
  if (c.with_fd) {  // the Process's exit, while the parent sleeps
    pid_t poker = test::fork_child([&] {
      if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 1;
      done.poke();
      return 0;
    });
    wait(set, ready, 10s);
    EXPECT_EQ(ready, (Positions{5}));
    EXPECT_EQ(test::wait_child(poker).code, 0);
  } else {
    done.poke();
  }
  worker.join();
  go.poke();
  EXPECT_EQ(test::wait_child(child).code, 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, WaitAnySleeping,
                         ::testing::Values(SleepCase{WaitStrategy::blocking, false},
                                           SleepCase{WaitStrategy::adaptive, false},
                                           SleepCase{WaitStrategy::busy_poll, false},
                                           SleepCase{WaitStrategy::blocking, true},
                                           SleepCase{WaitStrategy::adaptive, true}),
                         [](const auto& p) {
                           return std::string(to_string(p.param.strategy)) +
                                  (p.param.with_fd ? "_fd" : "");
                         });

// 200 Events: futex_waitv takes 128 words, so wait() sleeps on windows of
// them; a set on any one of them is still seen.
TEST(WaitAny, MoreObjectsThanFutexWaitvTakesStillWake) {
  test::SegmentGuard guard;
  std::deque<Event> events;
  std::vector<Waitable> set;
  for (int i = 0; i < 200; ++i) {
    events.push_back(Event::create(guard.add(test::unique_name("wa-many"))));
    events.back().set_wait_policy({.strategy = WaitStrategy::blocking});
    set.emplace_back(events.back());
  }
  const pid_t parent = ::getpid();
  for (std::size_t target : {199UL, 3UL, 130UL}) {
    pid_t child = test::fork_child([&] {
      if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 1;
      events[target].set();
      return 0;
    });
    EXPECT_EQ(wait(set, 10s), (Positions{target}));
    events[target].clear();
    EXPECT_EQ(test::wait_child(child).code, 0);
  }
}

// [wait.hint] A set of 16 or more whose object found ready last time is
// ready again gets that object alone, without a pass over the others, but
// never more than 15 calls in a row: another object that became ready (or
// whose peer closed, which only a whole pass sees) is reported within 16
// calls, together with everything else ready then, in order.
TEST(WaitAny, AnObjectReadyAgainAndAgainLeavesTheOthersSeenWithinSixteenCalls) {
  constexpr std::size_t kEnds = 20;
  for (const auto strategy : {WaitStrategy::busy_poll, WaitStrategy::blocking}) {
    PipeOptions po;
    po.wait.strategy = strategy;
    std::vector<std::pair<Connection, Connection>> pipes;
    std::vector<Waitable> set;
    for (std::size_t i = 0; i < kEnds; ++i) pipes.push_back(Pipe(po));
    for (auto& p : pipes) set.emplace_back(p.first);
    // End 3 stays ready (its message is never taken).
    ASSERT_EQ(pipes[3].second.send(std::int32_t{1}), SendResult::ok);
    Positions ready;
    wait(set, ready, 1s);
    EXPECT_EQ(ready, (Positions{3}));  // a whole pass; 3 is now the hint
    ASSERT_EQ(pipes[11].second.send(std::int32_t{2}), SendResult::ok);
    pipes[17].second.close();  // ready through its peer's close only
    bool seen = false;
    for (int call = 0; call < 16 && !seen; ++call) {
      wait(set, ready, 1s);
      ASSERT_FALSE(ready.empty());
      seen = ready != Positions{3};
      if (seen) {
        EXPECT_EQ(ready, (Positions{3, 11, 17}));
      }
    }
    EXPECT_TRUE(seen) << "end 11 and 17 were not reported within 16 calls";
    // The hinted end closed, then moved over by an empty one, between two
    // calls: looked at safely, reported ready (its recv says why) within
    // 16 calls, while end 11 stays ready too.
    auto reported = [&](std::size_t pos) {
      for (int call = 0; call < 16; ++call) {
        wait(set, ready, 1s);
        if (std::find(ready.begin(), ready.end(), pos) != ready.end()) return true;
      }
      return false;
    };
    wait(set, ready, 1s);
    pipes[3].first.close();
    EXPECT_TRUE(reported(3));
    pipes[3].first = Connection{};
    EXPECT_TRUE(reported(3));
  }
}

TEST(WaitAny, ClosedMovedFromAndDeadObjectsAreReadyNeverAHang) {
  Mix m(WaitStrategy::blocking);
  Connection closed_end = std::move(m.pipe.first);  // m.pipe.first: moved from
  closed_end.close();
  m.queue.close();
  const std::array<Waitable, 3> set{closed_end, m.pipe.first, m.queue};
  EXPECT_EQ(wait(set, 10s), (Positions{0, 1, 2}));
  std::int32_t v = 0;
  EXPECT_EQ(m.queue.get(v), QueueResult::closed);

  // A peer killed between messages: ready within the liveness interval.
  auto [a, b] = Pipe();
  pid_t child = test::fork_child([&]() -> int {
    (void)b.send(std::int32_t{1});  // takes its end
    for (;;) ::pause();
  });
  ASSERT_EQ(wait({a}, 10s), (Positions{0}));
  ASSERT_EQ(a.recv(v), RecvResult::ok);
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  EXPECT_EQ(wait({a, m.event}, 10s), (Positions{0}));
  EXPECT_EQ(a.recv(v), RecvResult::peer_dead);
}

// A peer that scribbles over the ring: the end is ready, and its recv()
// says corrupted (never a hang in wait()).
TEST(WaitAny, ACorruptedRingIsReadyWithItsError) {
  test::SegmentGuard guard(test::unique_name("wa-bad"));
  PipeOptions po;
  po.wait.strategy = WaitStrategy::blocking;
  auto ends = Pipe(guard.name(), po);
  const std::string path = test::shm_path(guard.name());
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  const auto size = static_cast<std::size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto view = SegmentView::open(guard.name());
  // The payload runs to the end of the segment: find it in our mapping.
  const std::size_t payload_at = size - view.payload().size();
  auto* payload = static_cast<std::byte*>(map) + payload_at;
  ASSERT_EQ(std::memcmp(payload, view.payload().data(), 256), 0);
  // Ring 0 (into end first) starts right after the control block; its
  // first header word is where end first polls.
  const pid_t parent = ::getpid();
  pid_t child = test::fork_child([&] {
    if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 1;
    auto* header =
        reinterpret_cast<std::atomic<std::uint64_t>*>(payload + detail::kPipeControlSize);
    header->store(0xDEADBEEF0BADF00DULL);  // not a frame, and no wake either
    return 0;
  });
  EXPECT_EQ(wait({ends.first}, 10s), (Positions{0}));  // seen at the liveness slice at worst
  EXPECT_EQ(test::wait_child(child).code, 0);
  std::int32_t v = 0;
  EXPECT_EQ(ends.first.recv(v), RecvResult::corrupted);
  EXPECT_EQ(wait({ends.first}, 10s), (Positions{0}));  // and stays ready
  ::munmap(map, size);
  ::close(fd);
}

TEST(WaitAny, ThingsThatCannotBeWaitedOnAreRefused) {
  auto [r, w] = Pipe(false);
  EXPECT_EQ(test::code_of([&] { (void)Waitable(w); }), Errc::invalid_argument);
  Process never([] { return 0; });
  EXPECT_EQ(test::code_of([&] { (void)Waitable(never); }), Errc::invalid_argument);
  EXPECT_EQ(test::code_of([&] { (void)Waitable::fd(-1); }), Errc::invalid_argument);
  EXPECT_EQ(test::code_of([&] { (void)wait(std::span<const Waitable>{}); }),
            Errc::invalid_argument);
  EXPECT_TRUE(wait(std::span<const Waitable>{}, 1ms).empty());
}

// A process killed while asleep in wait() leaves its mark on the pipe's
// ring; the sender's next message takes it (one wake for nobody) and every
// later one finds the ring as if nobody had ever waited.
TEST(WaitAny, AWaiterKilledWhileArmedLeavesTheSendersFastPath) {
  test::SegmentGuard guard(test::unique_name("wa-kill"));
  PipeOptions po;
  po.wait.strategy = WaitStrategy::adaptive;
  auto ends = Pipe(guard.name(), po);
  Connection& tx = ends.second;
  pid_t child = test::fork_child([&] {
    (void)wait({ends.first}, 60s);  // sleeps, armed
    return 0;
  });
  ASSERT_TRUE(test::poll_until([&] { return test::process_sleeping(child); }));
  auto view = SegmentView::open(guard.name());
  const auto* ctl = reinterpret_cast<const detail::PipeControl*>(view.payload().data());
  // End first receives from ring 0.
  const auto& asleep = ctl->rings[0].consumer_asleep;
  EXPECT_NE(asleep.load(), 0U);  // armed
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  ASSERT_EQ(tx.send(std::int32_t{1}), SendResult::ok);
  EXPECT_EQ(asleep.load(), 0U);  // the token is taken: no more wakes
  ASSERT_EQ(tx.send(std::int32_t{2}), SendResult::ok);
  EXPECT_EQ(asleep.load(), 0U);
  // (The killed child took end first: this process cannot receive on it.)
  EXPECT_EQ(pipe_stats(view).rings[0].messages_sent, 2U);
}

}  // namespace
}  // namespace shmbus
