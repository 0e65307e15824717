// shmbus::wait over many pipe ends sleeps on the thread's wake slot
// ([ring.redirect], detail/wake_slot.hpp): senders wake the slot, not the
// ring's header word. Checked without timing: a wake-up that went to the
// wrong word shows as a sleep that ran to its slice's end
// (detail::pipe_missed_wakeups()), and detail::wake_slot_wakes() counts
// the wakes that went through a slot.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include "shmbus/detail/fork_wiped.hpp"
#include "shmbus/detail/futex.hpp"
#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/detail/wake_slot.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/wait_any.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using Positions = std::vector<std::size_t>;

struct BlockingPipes {
  std::deque<std::pair<Connection, Connection>> pipes;
  std::vector<Waitable> set;  // every pipe's first end
  explicit BlockingPipes(std::size_t n) {
    PipeOptions po;
    po.wait.strategy = WaitStrategy::blocking;
    for (std::size_t i = 0; i < n; ++i) pipes.push_back(Pipe(po));
    for (auto& p : pipes) set.emplace_back(p.first);
  }
};

// The round the waiter is in, and the last round whose wait() was armed
// and about to sleep (the sleeper_counted fault point, in the waiter).
std::atomic<int> g_round{-1};
std::atomic<int> g_armed{-1};
void on_armed(detail::FaultPoint p) noexcept {
  if (p != detail::FaultPoint::sleeper_counted) return;
  g_armed.store(g_round.load());
  g_armed.notify_all();
}

// Round trips between this thread (the waiter) and a sender thread over
// p's ends: in round r the sender sends r on end target(r) once the
// waiter is armed (sleeps or is about to), and the waiter must get that
// end. A failure on either side stops both (EXPECT and a flag: an ASSERT
// in the sender's lambda would only leave the lambda, and the waiter would
// wait 10 s a round). `connections`: the pipe-only wait() over Connection
// pointers.
template <class Target>
void threaded_round_trips(BlockingPipes& p, int rounds, Target target, bool connections) {
  std::vector<Connection*> ends;
  std::vector<Connection*> ready_ends;
  for (auto& pp : p.pipes) ends.push_back(&pp.first);
  std::atomic<bool> stop{false};
  g_round = -1;
  g_armed = -1;
  detail::set_fault_hook(&on_armed);
  std::thread sender([&] {
    for (int r = 0; r < rounds && !stop; ++r) {
      for (int a = g_armed.load(); a != r && !stop; a = g_armed.load()) g_armed.wait(a);
      if (stop) break;
      const SendResult sent = p.pipes[target(r)].second.send(std::int32_t{r});
      EXPECT_EQ(sent, SendResult::ok) << "round " << r;
      if (sent != SendResult::ok) stop = true;
    }
  });
  Positions ready;
  for (int r = 0; r < rounds && !stop; ++r) {
    g_round = r;
    bool right = false;
    if (connections) {
      wait(ends, ready_ends, 10s);
      right = ready_ends == std::vector<Connection*>{ends[target(r)]};
      EXPECT_TRUE(right) << "round " << r << ": " << ready_ends.size() << " ready";
    } else {
      wait(p.set, ready, 10s);
      right = ready == Positions{target(r)};
      EXPECT_TRUE(right) << "round " << r << ": " << ready.size() << " ready";
    }
    std::int32_t v = -1;
    if (!right || p.pipes[target(r)].first.recv(v) != RecvResult::ok || v != r) {
      ADD_FAILURE() << "round " << r << ": received " << v;
      break;
    }
  }
  stop = true;  // releases a sender still waiting for an arm
  g_armed = -2;
  g_armed.notify_all();
  sender.join();
  detail::set_fault_hook(nullptr);
}

// A round trip over n blocking ends: the waiter arms every end (sleeps or
// is about to), then the sender sends on one; the wake-up must come
// through the slot, every time.
void round_trips_through_the_slot(std::size_t n, int rounds, bool connections = false) {
  BlockingPipes p(n);
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  const std::uint64_t slot_wakes = detail::wake_slot_wakes();
  threaded_round_trips(
      p, rounds, [n](int r) { return (static_cast<std::size_t>(r) * 37 + 5) % n; }, connections);
  EXPECT_EQ(detail::pipe_missed_wakeups() - missed, 0U);
  EXPECT_EQ(detail::wake_slot_wakes() - slot_wakes, static_cast<std::uint64_t>(rounds));
}

TEST(WaitWakeSlot, SixtyFourBlockingEndsAreWokenThroughTheThreadsSlot) {
  round_trips_through_the_slot(64, 200);
}

TEST(WaitWakeSlot, MoreEndsThanFutexWaitvTakesAreWokenThroughTheSlotWithoutWindows) {
  round_trips_through_the_slot(130, 200);
}

TEST(WaitWakeSlot, ThePipeOnlyWaitOverManyEndsIsWokenThroughTheSlotToo) {
  round_trips_through_the_slot(100, 200, true);
}

// Blocking round trips with a child process, whose sends race the
// parent's arms freely: no wake-up is lost (none waits for its slice).
TEST(WaitWakeSlot, ChildRoundTripsOverManyEndsLoseNoWakeup) {
  constexpr std::size_t kEnds = 130;
  constexpr int kRounds = 300;
  BlockingPipes p(kEnds);
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  pid_t child = test::fork_child([&] {
    for (int r = 0; r < kRounds; ++r) {
      Connection& end = p.pipes[(static_cast<std::size_t>(r) * 11) % kEnds].second;
      std::int32_t ack = -1;
      if (end.send(std::int32_t{r}) != SendResult::ok) return 1;
      if (end.recv(ack) != RecvResult::ok || ack != r) return 2;
    }
    return detail::pipe_missed_wakeups() == missed ? 0 : 3;  // the count is inherited
  });
  Positions ready;
  for (int r = 0; r < kRounds; ++r) {
    const std::size_t at = (static_cast<std::size_t>(r) * 11) % kEnds;
    wait(p.set, ready, 10s);
    ASSERT_EQ(ready, (Positions{at})) << "round " << r;
    std::int32_t v = -1;
    ASSERT_EQ(p.pipes[at].first.recv(v), RecvResult::ok);
    ASSERT_EQ(p.pipes[at].first.send(v), SendResult::ok);
  }
  EXPECT_EQ(test::wait_child(child).code, 0);
  EXPECT_EQ(detail::pipe_missed_wakeups() - missed, 0U);
}

// The same over the pipe-only wait(span<Connection*>) with adaptive ends:
// their senders store headers without an exchange ([fence.asym]), so the
// waiter must read every ring after its heavy fence before it sleeps on
// the slot word; a frame it missed would show as a sleep to the slice's
// end (a missed wake-up).
TEST(WaitWakeSlot, ChildRoundTripsOverManyAdaptiveEndsThroughThePipeOnlyWaitLoseNoWakeup) {
  constexpr std::size_t kEnds = 120;
  constexpr int kRounds = 400;
  std::deque<std::pair<Connection, Connection>> pipes;
  for (std::size_t i = 0; i < kEnds; ++i) pipes.push_back(Pipe());  // adaptive
  std::vector<Connection*> ends;
  for (auto& pp : pipes) ends.push_back(&pp.first);
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  const auto at = [](int r) { return (static_cast<std::size_t>(r) * 11) % kEnds; };
  pid_t child = test::fork_child([&] {
    for (int r = 0; r < kRounds; ++r) {
      Connection& end = pipes[at(r)].second;
      // A varying pause, so the sends fall at every point of the
      // waiter's spin, arm and fence.
      for (int k = (r * 7919) % 20000; k > 0; --k) detail::cpu_relax();
      std::int32_t ack = -1;
      if (end.send(std::int32_t{r}) != SendResult::ok) return 1;
      if (end.recv(ack) != RecvResult::ok || ack != r) return 2;
    }
    return 0;
  });
  std::vector<Connection*> ready;
  for (int r = 0; r < kRounds; ++r) {
    wait(ends, ready, 10s);
    ASSERT_EQ(ready, (std::vector<Connection*>{ends[at(r)]})) << "round " << r;
    std::int32_t v = -1;
    ASSERT_EQ(pipes[at(r)].first.recv(v), RecvResult::ok);
    ASSERT_EQ(pipes[at(r)].first.send(v), SendResult::ok);
  }
  EXPECT_EQ(test::wait_child(child).code, 0);
  EXPECT_EQ(detail::pipe_missed_wakeups() - missed, 0U);
}

// Pipes (redirected to the slot) beside a queue, an Event and a Process
// sentinel (their own words, the watcher's): each kind still wakes.
TEST(WaitWakeSlot, PipesBesideAQueueAnEventAndAProcessEachWake) {
  test::SegmentGuard guard;
  BlockingPipes p(3);
  QueueOptions qo;
  qo.capacity = 8;
  qo.policy.strategy = WaitStrategy::blocking;
  auto queue = Queue<std::int32_t>::create(guard.add(test::unique_name("ws-q")), qo);
  auto event = Event::create(guard.add(test::unique_name("ws-e")));
  event.set_wait_policy({.strategy = WaitStrategy::blocking});
  int done[2];
  ASSERT_EQ(::pipe(done), 0);
  Process worker([&] {
    char c;
    return ::read(done[0], &c, 1) == 1 ? 0 : 1;
  });
  worker.start();
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t parent = ::getpid();
  pid_t child = test::fork_child([&] {
    for (int step = 0; step < 4; ++step) {
      char c = 0;
      if (::read(go[0], &c, 1) != 1) return 1;
      if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 2;
      switch (step) {
        case 0:
          if (p.pipes[1].second.send(std::int32_t{1}) != SendResult::ok) return 3;
          break;
        case 1:
          if (queue.put(2) != QueueResult::ok) return 4;
          break;
        case 2:
          event.set();
          break;
        default:
          if (::write(done[1], "x", 1) != 1) return 5;
          break;
      }
    }
    char c = 0;  // keep the pipes' sending ends alive until told
    return ::read(go[0], &c, 1) == 1 ? 0 : 6;
  });
  std::vector<Waitable> set = p.set;  // positions 0..2
  set.emplace_back(queue);            // 3
  set.emplace_back(event);            // 4
  set.emplace_back(worker);           // 5
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  Positions ready;
  const std::array<std::size_t, 4> expect{1, 3, 4, 5};
  for (std::size_t step = 0; step < expect.size(); ++step) {
    ASSERT_EQ(::write(go[1], "g", 1), 1);
    wait(set, ready, 10s);
    ASSERT_EQ(ready, (Positions{expect[step]})) << "step " << step;
    std::int32_t v = 0;
    if (step == 0) {
      ASSERT_EQ(p.pipes[1].first.recv(v), RecvResult::ok);
    } else if (step == 1) {
      ASSERT_EQ(queue.get(v), QueueResult::ok);
    }
    if (step == 2) event.clear();
  }
  worker.join();
  ASSERT_EQ(::write(go[1], "g", 1), 1);
  EXPECT_EQ(test::wait_child(child).code, 0);
  EXPECT_EQ(detail::pipe_missed_wakeups() - missed, 0U);
  for (int fd : {done[0], done[1], go[0], go[1]}) ::close(fd);
}

// The table at `name` in /dev/shm, made by the test, removed at the end.
struct TestTable {
  std::string name;
  std::string path = "/dev/shm/" + name;
  explicit TestTable(const std::string& suffix = "")
      : name("shmbus-test-wake-" + std::to_string(::getpid()) + suffix) {
    ::unlink(path.c_str());
  }
  ~TestTable() {
    detail::use_wake_table_for_testing("");
    ::unlink(path.c_str());
  }
  void write(std::size_t size, std::uint64_t magic) const {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    detail::WakeTableHeader h{};
    h.magic = magic;
    h.version = detail::kWakeTableVersion;
    h.slot_count = detail::kWakeSlotCount;
    h.slot_size = sizeof(detail::WakeSlot);
    if (size >= sizeof h) {
      ASSERT_EQ(::pwrite(fd, &h, sizeof h, 0), static_cast<ssize_t>(sizeof h));
    }
    ::close(fd);
  }
};

// Blocking round trips between threads over 8 ends; how many went
// through a slot.
std::uint64_t slot_wakes_of_round_trips() {
  BlockingPipes p(8);
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  const std::uint64_t slot_wakes = detail::wake_slot_wakes();
  threaded_round_trips(
      p, 20, [](int r) { return static_cast<std::size_t>(r) % 8; }, false);
  EXPECT_EQ(detail::pipe_missed_wakeups() - missed, 0U);
  return detail::wake_slot_wakes() - slot_wakes;
}

TEST(WaitWakeSlot, ATruncatedOrCorruptedTableIsNotUsedAndWaitsStillWake) {
  TestTable t;
  t.write(100, detail::kWakeTableMagic);  // truncated
  detail::use_wake_table_for_testing(t.name);
  EXPECT_EQ(slot_wakes_of_round_trips(), 0U);
  t.write(sizeof(detail::WakeTable), 0x1234);  // the right size, a wrong magic
  detail::use_wake_table_for_testing(t.name);
  EXPECT_EQ(slot_wakes_of_round_trips(), 0U);
  t.write(sizeof(detail::WakeTable) + 4096, detail::kWakeTableMagic);  // too long
  detail::use_wake_table_for_testing(t.name);
  EXPECT_EQ(slot_wakes_of_round_trips(), 0U);
}

// A table that others may write (mode 0666: made by another user, or
// chmodded) is not used; the same table at 0600 is.
TEST(WaitWakeSlot, ATableThatOthersMayWriteIsNotUsed) {
  TestTable t;
  t.write(sizeof(detail::WakeTable), detail::kWakeTableMagic);
  ASSERT_EQ(::chmod(t.path.c_str(), 0666), 0);
  detail::use_wake_table_for_testing(t.name);
  EXPECT_EQ(slot_wakes_of_round_trips(), 0U);
  ASSERT_EQ(::chmod(t.path.c_str(), 0600), 0);
  detail::use_wake_table_for_testing(t.name);
  EXPECT_EQ(slot_wakes_of_round_trips(), 20U);
}

// The default table is this user's, made 0600.
TEST(WaitWakeSlot, TheDefaultTableIsThisUsersAndPrivate) {
  detail::use_wake_table_for_testing("");
  ASSERT_NE(detail::this_thread_wake_slot().id, 0U);
  struct stat st {};
  const std::string path = "/dev/shm/shmbus-wake-slots." + std::to_string(::geteuid());
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_mode & 0777, 0600U);
}

// A table whose slots somebody scribbled over while in use (owners and
// words): the waits still wake (at worst a spurious wake-up).
TEST(WaitWakeSlot, SlotsOverwrittenWhileInUseCostNoWakeup) {
  TestTable t;
  detail::use_wake_table_for_testing(t.name);  // made by the first wait
  EXPECT_EQ(slot_wakes_of_round_trips(), 20U);
  const int fd = ::open(t.path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* at = ::mmap(nullptr, sizeof(detail::WakeTable), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(at, MAP_FAILED);
  std::memset(static_cast<std::byte*>(at) + sizeof(detail::WakeTableHeader), 0x5A,
              sizeof(detail::WakeTable) - sizeof(detail::WakeTableHeader));
  EXPECT_EQ(slot_wakes_of_round_trips(), 20U);
  ::munmap(at, sizeof(detail::WakeTable));
}

// A sender that wakes another table than the waiter's (here: a child
// that switched tables after the fork; in life a table unlinked and made
// again, a private /dev/shm, another user's sender): the first redirected
// sleep runs to its slice's end (one missed wake-up), then the waiter's
// process stops redirecting and every later wait is woken on ring words.
void waits_heal_when_the_sender_uses_another_table(bool connections) {
  TestTable a("a");
  TestTable b("b");
  detail::use_wake_table_for_testing(a.name);
  ASSERT_NE(detail::this_thread_wake_slot().id, 0U);  // maps table a, claims a slot
  constexpr int kRounds = 10;
  BlockingPipes p(4);
  std::vector<Connection*> ends;
  for (auto& pp : p.pipes) ends.push_back(&pp.first);
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  const pid_t parent = ::getpid();
  pid_t child = test::fork_child([&] {
    detail::use_wake_table_for_testing(b.name);
    for (int r = 0; r < kRounds; ++r) {
      Connection& end = p.pipes[static_cast<std::size_t>(r) % 4].second;
      // Send only once the parent sleeps in its wait: the wake-up is needed.
      if (!test::poll_until([&] { return test::process_sleeping(parent); })) return 1;
      std::int32_t ack = -1;
      if (end.send(std::int32_t{r}) != SendResult::ok) return 2;
      if (end.recv(ack) != RecvResult::ok || ack != r) return 3;
    }
    return 0;
  });
  Positions ready;
  std::vector<Connection*> ready_ends;
  for (int r = 0; r < kRounds; ++r) {
    const std::size_t at = static_cast<std::size_t>(r) % 4;
    if (connections) {
      wait(ends, ready_ends, 10s);
      ASSERT_EQ(ready_ends, (std::vector<Connection*>{ends[at]})) << "round " << r;
    } else {
      wait(p.set, ready, 10s);
      ASSERT_EQ(ready, (Positions{at})) << "round " << r;
    }
    std::int32_t v = -1;
    ASSERT_EQ(p.pipes[at].first.recv(v), RecvResult::ok);
    ASSERT_EQ(p.pipes[at].first.send(v), SendResult::ok);
  }
  EXPECT_EQ(test::wait_child(child).code, 0);
  EXPECT_LE(detail::pipe_missed_wakeups() - missed, 1U);
  EXPECT_EQ(detail::this_thread_wake_slot().id, 0U);  // no longer redirecting
}

TEST(WaitWakeSlot, AWaiterWhoseSenderWakesAnotherTableStopsRedirectingAfterOneMiss) {
  waits_heal_when_the_sender_uses_another_table(false);
}

TEST(WaitWakeSlot, ThePipeOnlyWaitStopsRedirectingAfterOneMissToo) {
  waits_heal_when_the_sender_uses_another_table(true);
}

// A fork while another thread opens the table (under the lock that guards
// the mapping): the child's first wake must not find that lock held.
// The opener is held in the lock until the fork has begun (this test's
// atfork prepare handler, which runs before the library's) and then, at
// most 200 ms, until it is done: without the library's atfork handlers
// the fork happens while the lock is held.
std::atomic<bool> g_forking{false};
std::atomic<bool> g_forked{false};
std::atomic<bool> g_opener_in{false};
std::atomic<pid_t> g_opener_pid{0};
void hold_opener() {
  if (::getpid() != g_opener_pid.load()) return;  // the child: no hold
  g_opener_in = true;
  g_opener_in.notify_all();
  for (bool f = g_forking.load(); !f; f = g_forking.load()) g_forking.wait(f);
  (void)test::poll_until([] { return g_forked.load(); }, 200ms);
}

TEST(WaitWakeSlot, AForkWhileAnotherThreadOpensTheTableLeavesTheChildAbleToWake) {
  TestTable t;
  detail::use_wake_table_for_testing(t.name);  // registers the library's handlers
  static bool registered = false;
  if (!registered) {
    registered = true;
    ::pthread_atfork([] { g_forking = true, g_forking.notify_all(); }, [] { g_forked = true; },
                     nullptr);
  }
  g_forking = false;
  g_forked = false;
  g_opener_in = false;
  g_opener_pid = ::getpid();
  detail::set_wake_table_open_hook_for_testing(&hold_opener);
  std::thread opener([] { EXPECT_TRUE(detail::wake_slot(1)); });
  for (bool in = g_opener_in.load(); !in; in = g_opener_in.load()) g_opener_in.wait(in);
  pid_t child = test::fork_child([] { return detail::wake_slot(1) ? 0 : 1; });
  opener.join();
  g_forking = false;  // later forks in this process hold nobody
  g_opener_pid = 0;
  detail::set_wake_table_open_hook_for_testing(nullptr);
  const test::ChildStatus st = test::wait_child(child, 5s);
  EXPECT_FALSE(st.timed_out) << "the child hung on the table's lock";
  EXPECT_EQ(st.code, 0);
}

// A child made by _Fork() (no atfork handlers: the same fork generation)
// holds a copy of its parent's claim; when it lets that claim go (here:
// a table switch; in life its thread's exit) the parent's slot stays the
// parent's.
TEST(WaitWakeSlot, AnUnderscoreForkChildDoesNotFreeItsParentsSlot) {
  ASSERT_TRUE(detail::fork_wiping_works()) << "MADV_WIPEONFORK refused here";
  TestTable t;
  detail::use_wake_table_for_testing(t.name);
  const std::uint32_t id = detail::this_thread_wake_slot().id;
  ASSERT_NE(id, 0U);
  const pid_t child = ::_Fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // no gtest assertions here: exit codes
    detail::use_wake_table_for_testing(t.name);
    ::_exit(detail::this_thread_wake_slot().id != 0 ? 0 : 1);  // lets the copy go, claims its own
  }
  EXPECT_EQ(test::wait_child(child, 10s).code, 0);
  const int fd = ::open(t.path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* at = ::mmap(nullptr, sizeof(detail::WakeTable), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(at, MAP_FAILED);
  EXPECT_EQ(static_cast<detail::WakeTable*>(at)->slots[id - 1].owner.load(), this_process().pack());
  ::munmap(at, sizeof(detail::WakeTable));
}

// A waiter killed while armed leaves its ring naming its slot. The
// sender's next message wakes that slot (nobody sleeps there); the slot's
// owner being dead, another thread may reclaim it (here the only one not
// held by a live process), and that thread's waits wake through it.
TEST(WaitWakeSlot, AKilledWaitersSlotIsReclaimedAndItsStaleRedirectIsHarmless) {
  TestTable t;
  detail::use_wake_table_for_testing(t.name);
  test::SegmentGuard guard(test::unique_name("ws-kill"));
  PipeOptions po;
  po.wait.strategy = WaitStrategy::blocking;
  auto a = Pipe(guard.name(), po);
  auto b = Pipe(po);
  pid_t child = test::fork_child([&] {
    (void)wait({a.first, b.first}, 60s);  // sleeps on its slot, both rings naming it
    return 0;
  });
  ASSERT_TRUE(test::poll_until([&] { return test::process_sleeping(child); }));
  auto view = SegmentView::open(guard.name());
  const auto* ctl = reinterpret_cast<const detail::PipeControl*>(view.payload().data());
  const std::uint32_t dead_slot = ctl->rings[0].wake_slot.load();  // end first: ring 0
  ASSERT_GE(dead_slot, 1U);
  ASSERT_LE(dead_slot, detail::kWakeSlotCount);
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);

  const std::uint64_t wakes = detail::wake_slot_wakes();
  ASSERT_EQ(a.second.send(std::int32_t{1}), SendResult::ok);
  EXPECT_EQ(detail::wake_slot_wakes() - wakes, 1U);  // the dead waiter's slot, nobody there
  ASSERT_EQ(a.second.send(std::int32_t{2}), SendResult::ok);
  EXPECT_EQ(detail::wake_slot_wakes() - wakes, 1U);  // the mark is taken: no more wakes

  // Every other slot held by a live process (this one).
  const int fd = ::open(t.path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* at = ::mmap(nullptr, sizeof(detail::WakeTable), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(at, MAP_FAILED);
  auto* table = static_cast<detail::WakeTable*>(at);
  for (std::uint32_t i = 0; i < detail::kWakeSlotCount; ++i) {
    if (i + 1 != dead_slot) table->slots[i].owner.store(this_process().pack());
  }
  std::thread([&] {
    EXPECT_EQ(detail::this_thread_wake_slot().id, dead_slot);
    EXPECT_EQ(slot_wakes_of_round_trips(), 20U);
  }).join();
  EXPECT_EQ(table->slots[dead_slot - 1].owner.load(), 0U);  // freed when that thread ended
  ::munmap(at, sizeof(detail::WakeTable));
}

}  // namespace
}  // namespace shmbus
