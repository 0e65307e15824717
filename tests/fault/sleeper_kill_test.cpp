// A waiter SIGKILLed while counted as a sleeper ([wait.epoch] in
// detail/futex.hpp): asleep in the kernel, held between its count and its
// futex_wait, or holding a fileno() registration. After at most
// kSleeperStrikes notifies for nobody the count is repaired, and from then
// on a set/release/put/notify makes no system call again (counted with
// detail::futex_wake_calls()). A live sleeper held across the repair is
// still woken by the next notify.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/futex.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using detail::futex_wake_calls;
using detail::kSleeperStrikes;
using test::SegmentGuard;
using test::unique_name;
using namespace std::chrono_literals;

constexpr WaitPolicy kBlocking{WaitStrategy::blocking, {}};

// A child that dies by SIGKILL at FaultPoint::sleeper_counted: counted in
// `sleepers`, its futex word read, not yet asleep.
void die_when_counted(detail::FaultPoint p) noexcept {
  if (p == detail::FaultPoint::sleeper_counted) ::raise(SIGKILL);
}

// Kills `child` once `counted()` says it is counted and it sleeps in the
// kernel, and reaps it.
void kill_when_asleep(pid_t child, const std::function<bool()>& counted) {
  ASSERT_TRUE(test::poll_until([&] { return counted() && test::process_sleeping(child); }));
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
}

// The survivor's half: the dead sleeper is still counted; `notify_once()`
// (a set/release/put that finds nobody alive to wake) repairs the count
// within kSleeperStrikes calls, and after that makes no FUTEX_WAKE at all.
void expect_repaired(const std::function<std::uint32_t()>& counted,
                     const std::function<void()>& notify_once) {
  ASSERT_EQ(counted(), 1u) << "the dead sleeper is not counted: nothing to repair";
  const std::uint64_t before = futex_wake_calls();
  for (std::uint32_t k = 0; k < kSleeperStrikes; ++k) notify_once();
  EXPECT_EQ(counted(), 0u);
  // The strikes, then the repair's own wake of everyone.
  EXPECT_EQ(futex_wake_calls() - before, kSleeperStrikes + 1);
  const std::uint64_t repaired = futex_wake_calls();
  for (int k = 0; k < 100; ++k) notify_once();
  EXPECT_EQ(futex_wake_calls(), repaired) << "a notify after the repair made a system call";
}

std::uint32_t event_sleepers(const SegmentView& v) {
  return read_event_info(v.payload().data(), v.payload().size())->sleepers;
}
std::uint32_t semaphore_sleepers(const SegmentView& v) {
  return read_semaphore_info(v.payload().data(), v.payload().size())->sleepers;
}

// expect_repaired() for an Event (notified by set) and a Semaphore
// (notified by release).
void expect_event_repaired(Event& e, const SegmentView& view) {
  expect_repaired([&] { return event_sleepers(view); },
                  [&] {
                    e.set();
                    e.clear();
                  });
}
void expect_semaphore_repaired(Semaphore& s, const SegmentView& view) {
  expect_repaired([&] { return semaphore_sleepers(view); },
                  [&] {
                    ASSERT_TRUE(s.release());
                    ASSERT_TRUE(s.try_acquire());
                  });
}

TEST(SleeperKill, EventWaiterKilledAsleepCostsSetNothingAfterTheRepair) {
  SegmentGuard g(unique_name("ev"));
  auto e = Event::create(g.name());
  auto view = SegmentView::open(g.name());
  const pid_t child = test::fork_child([&] {
    auto mine = Event::open(g.name());
    mine.set_wait_policy(kBlocking);
    (void)mine.wait();
    return 1;  // never: nobody sets it before the kill
  });
  kill_when_asleep(child, [&] { return event_sleepers(view) == 1; });
  expect_event_repaired(e, view);
}

TEST(SleeperKill, EventWaiterKilledBetweenCountAndSleepIsRepaired) {
  SegmentGuard g(unique_name("ev"));
  auto e = Event::create(g.name());
  auto view = SegmentView::open(g.name());
  const pid_t child = test::fork_child([&] {
    auto mine = Event::open(g.name());
    mine.set_wait_policy(kBlocking);
    detail::set_fault_hook(&die_when_counted);
    (void)mine.wait();
    return 1;
  });
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  expect_event_repaired(e, view);
}

TEST(SleeperKill, SemaphoreWaiterKilledAsleepCostsReleaseNothingAfterTheRepair) {
  SegmentGuard g(unique_name("sem"));
  auto s = Semaphore::create(g.name(), 0);
  auto view = SegmentView::open(g.name());
  const pid_t child = test::fork_child([&] {
    auto mine = Semaphore::open(g.name());
    mine.set_wait_policy(kBlocking);
    (void)mine.acquire();
    return 1;
  });
  kill_when_asleep(child, [&] { return semaphore_sleepers(view) == 1; });
  expect_semaphore_repaired(s, view);
}

QueueOptions blocking_queue() {
  QueueOptions o;
  o.capacity = 8;
  o.policy = kBlocking;
  // One sleep, no liveness slices: a kill "while asleep" must not land
  // between two slices (when the sleeper is briefly uncounted).
  o.liveness_interval = std::chrono::hours(1);
  return o;
}

void put_and_take(Queue<std::uint64_t>& q) {
  ASSERT_EQ(q.put(7), QueueResult::ok);
  std::uint64_t v = 0;
  ASSERT_EQ(q.try_get(v), QueueResult::ok);
}

// A consumer asleep in get() in a child; `die`: killed by its own hook at
// sleeper_counted.
pid_t fork_consumer(const std::string& name, bool die) {
  return test::fork_child([&] {
    auto mine = Queue<std::uint64_t>::open(name, blocking_queue());
    if (die) detail::set_fault_hook(&die_when_counted);
    std::uint64_t v = 0;
    (void)mine.get(v);
    return 1;
  });
}
void expect_queue_repaired(Queue<std::uint64_t>& q) {
  expect_repaired([&] { return static_cast<std::uint32_t>(q.stats().consumers_waiting); },
                  [&] { put_and_take(q); });
}

TEST(SleeperKill, QueueConsumerKilledAsleepCostsPutNothingAfterTheRepair) {
  SegmentGuard g(unique_name("q"));
  auto q = Queue<std::uint64_t>::create(g.name(), blocking_queue());
  const pid_t child = fork_consumer(g.name(), false);
  kill_when_asleep(child, [&] { return q.stats().consumers_waiting == 1; });
  expect_queue_repaired(q);
}

TEST(SleeperKill, QueueConsumerKilledBetweenCountAndSleepIsRepaired) {
  SegmentGuard g(unique_name("q"));
  auto q = Queue<std::uint64_t>::create(g.name(), blocking_queue());
  const pid_t child = fork_consumer(g.name(), true);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  expect_queue_repaired(q);
}

// A process holding a fileno() of an empty queue: its bridge thread counts
// itself a consumer asleep. Killed, its registration is repaired as well.
TEST(SleeperKill, QueueFilenoHolderKilledCostsPutNothingAfterTheRepair) {
  SegmentGuard g(unique_name("q"));
  auto q = Queue<std::uint64_t>::create(g.name(), blocking_queue());
  const pid_t child = test::fork_child([&] {
    auto mine = Queue<std::uint64_t>::open(g.name(), blocking_queue());
    (void)mine.fileno();
    for (;;) ::pause();
    return 1;
  });
  // The bridge thread counted (the main thread sleeps in pause()).
  ASSERT_TRUE(test::poll_until([&] { return q.stats().consumers_waiting == 1; }));
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  expect_queue_repaired(q);
}

// A waiter killed inside shmbus::wait() over an Event and a Semaphore,
// between its arms and its futex_waitv (it sleeps in 10 ms slices, so a
// kill "while asleep" could land between two of them).
TEST(SleeperKill, WaitAnyWaiterKilledWhileArmedIsRepaired) {
  SegmentGuard g(unique_name("ev"));
  SegmentGuard gs(unique_name("sem"));
  auto e = Event::create(g.name());
  auto sem = Semaphore::create(gs.name(), 0);
  auto view = SegmentView::open(g.name());
  auto sem_view = SegmentView::open(gs.name());
  const pid_t child = test::fork_child([&] {
    auto mine = Event::open(g.name());
    auto my_sem = Semaphore::open(gs.name());
    mine.set_wait_policy(kBlocking);
    my_sem.set_wait_policy(kBlocking);
    detail::set_fault_hook(&die_when_counted);
    (void)wait({Waitable(mine), Waitable(my_sem)});
    return 1;
  });
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  expect_semaphore_repaired(sem, sem_view);
  expect_event_repaired(e, view);
}

TEST(SleeperKill, ConditionWaiterKilledAsleepCostsNotifyNothingAfterTheRepair) {
  SegmentGuard gl(unique_name("lk"));
  SegmentGuard g(unique_name("cond"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  auto view = SegmentView::open(g.name());
  auto sleepers = [&] {
    return read_condition_info(view.payload().data(), view.payload().size())->sleepers;
  };
  const pid_t child = test::fork_child([&] {
    auto mine = Condition::open(g.name());
    mine.set_wait_policy(kBlocking);
    (void)mine.acquire();
    (void)mine.wait();
    return 1;
  });
  kill_when_asleep(child, [&] { return sleepers() == 1; });
  expect_repaired(sleepers, [&] {
    (void)c.acquire();
    c.notify();
    c.release();
  });
}

// A Barrier party killed counted asleep: the generations that end after it
// (the dead party's arrival trips one, the next break: the dead party, then
// the survivor's 50 ms timeouts) repair the count, and later generations
// wake nobody.
TEST(SleeperKill, BarrierPartyKilledCountedIsRepairedByTheGenerationsAfter) {
  SegmentGuard g(unique_name("bar"));
  auto b = Barrier::create(g.name(), 2);
  auto view = SegmentView::open(g.name());
  auto sleepers = [&] {
    const auto* st = reinterpret_cast<const detail::BarrierState*>(view.payload().data());
    return detail::sleeper_count(st->sleepers.load());
  };
  // Held at sleeper_counted: a Barrier waiter sleeps in 10 ms slices, so a
  // kill "while asleep" could land between two of them.
  const pid_t child = test::fork_child([&] {
    auto mine = Barrier::open(g.name());
    detail::set_fault_hook(&die_when_counted);
    (void)mine.wait();
    return 1;
  });
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  // Each round ends one generation with a wake for nobody until the repair.
  for (std::uint32_t round = 0; round < kSleeperStrikes + 1 && sleepers() != 0; ++round) {
    (void)b.wait_for(50ms);
    b.reset();
  }
  EXPECT_EQ(sleepers(), 0u);
  const std::uint64_t repaired = futex_wake_calls();
  for (int round = 0; round < 2; ++round) {
    EXPECT_TRUE(b.wait_for(50ms).broken);  // nobody else comes
    b.reset();
  }
  EXPECT_EQ(futex_wake_calls(), repaired) << "a generation's end after the repair made a wake";
}

// A Lock's waiter bit needs no repair: a release clears the whole word, so
// a dead waiter costs the next release one wake, and nothing after that.
TEST(SleeperKill, LockWaiterKilledAsleepCostsOneReleaseOneWake) {
  SegmentGuard g(unique_name("lk"));
  auto lock = Lock::create(g.name());
  ASSERT_EQ(lock.acquire(), LockResult::acquired);
  const pid_t child = test::fork_child([&] {
    auto mine = Lock::open(g.name());
    mine.set_wait_policy(kBlocking);
    (void)mine.acquire();
    return 1;
  });
  kill_when_asleep(child, [&] { return lock.info().waiters; });
  const std::uint64_t before = futex_wake_calls();
  lock.release();
  EXPECT_EQ(futex_wake_calls() - before, 1u);
  for (int k = 0; k < 100; ++k) {
    ASSERT_EQ(lock.acquire(), LockResult::acquired);
    lock.release();
  }
  EXPECT_EQ(futex_wake_calls() - before, 1u);
}

// A live sleeper held between its count and its futex_wait while the
// repair wipes the counts: its futex_wait finds the word bumped, it counts
// itself again in the new epoch (its stale decrement is a no-op), and the
// next set() wakes it.
std::atomic<int> g_hold{0};  // 0: not there yet, 1: held, 2: released
thread_local bool t_hold_me = false;
void hold_when_counted(detail::FaultPoint p) noexcept {
  if (p != detail::FaultPoint::sleeper_counted || !t_hold_me) return;
  t_hold_me = false;  // only the first time
  g_hold.store(1, std::memory_order_seq_cst);
  while (g_hold.load(std::memory_order_seq_cst) != 2) std::this_thread::yield();
}

TEST(SleeperKill, LiveSleeperHeldAcrossTheRepairIsStillWoken) {
  SegmentGuard g(unique_name("ev"));
  auto e = Event::create(g.name());
  e.set_wait_policy(kBlocking);
  auto view = SegmentView::open(g.name());
  const pid_t child = test::fork_child([&] {
    auto mine = Event::open(g.name());
    mine.set_wait_policy(kBlocking);
    (void)mine.wait();
    return 1;
  });
  kill_when_asleep(child, [&] { return event_sleepers(view) == 1; });

  g_hold.store(0);
  detail::set_fault_hook(&hold_when_counted);
  std::atomic<pid_t> tid{0};
  std::atomic<bool> woken{false};
  std::thread live([&] {
    tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
    t_hold_me = true;
    woken.store(e.wait_for(30s));
  });
  struct Join {  // on every way out, a failed assertion's included
    std::thread& t;
    Event& e;
    ~Join() {
      g_hold.store(2);
      e.set();
      t.join();
      detail::set_fault_hook(nullptr);
    }
  } join{live, e};
  ASSERT_TRUE(test::poll_until([&] { return g_hold.load() == 1; }));
  EXPECT_EQ(event_sleepers(view), 2u);  // the dead one and the held one
  for (std::uint32_t k = 0; k < kSleeperStrikes; ++k) {
    e.set();
    e.clear();
  }
  EXPECT_EQ(event_sleepers(view), 0u);  // repaired: the held one too was uncounted
  g_hold.store(2);
  // It counts itself again and sleeps: one sleeper, this epoch's.
  ASSERT_TRUE(test::poll_until(
      [&] { return event_sleepers(view) == 1 && test::thread_sleeping(tid.load()); }));
  e.set();
  ASSERT_TRUE(test::poll_until([&] { return woken.load(); }));
  ASSERT_TRUE(test::poll_until([&] { return event_sleepers(view) == 0; }));
}

// A Condition waiter spinning (busy_poll, adaptive) is not counted: a
// notify that it sees costs no futex_wake and leaves no strike (format 1
// counted it before its spin, so each such notify was a wake for nobody,
// and every 4th a repair that woke every waiter).
TEST(SleeperKill, ConditionNotifySeenBySpinnersMakesNoWakeAndNoStrike) {
  SegmentGuard gl(unique_name("lk"));
  SegmentGuard g(unique_name("cond"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  auto view = SegmentView::open(g.name());
  auto word = [&] {
    return reinterpret_cast<const detail::ConditionState*>(view.payload().data())->sleepers.load();
  };
  for (int round = 0; round < 2 * static_cast<int>(kSleeperStrikes); ++round) {
    std::atomic<bool> waiting{false};
    std::atomic<bool> woken{false};
    std::thread spinner([&] {
      auto mine = Condition::open(g.name());
      mine.set_wait_policy(WaitPolicy{WaitStrategy::busy_poll, {}});
      (void)mine.acquire();
      waiting.store(true);
      woken.store(mine.wait_for(30s));
      mine.release();
    });
    ASSERT_TRUE(test::poll_until([&] { return waiting.load(); }));
    // The spinner held the lock until its wait released it: it spins now.
    ASSERT_EQ(c.acquire(), LockResult::acquired);
    EXPECT_EQ(detail::sleeper_count(word()), 0u) << "a spinner counted itself a sleeper";
    const std::uint64_t before = futex_wake_calls();
    c.notify();
    EXPECT_EQ(futex_wake_calls(), before) << "a notify for a spinner made a system call";
    c.release();
    spinner.join();
    EXPECT_TRUE(woken.load());
    EXPECT_EQ(word() & detail::kSleeperStrikeMask, 0u) << "round " << round;
  }
  EXPECT_EQ(word(), 0u);  // never repaired: still epoch 0
}

// Holding several threads, each at its own point, once.
std::atomic<int> g_at[3];  // per slot: 0 not there yet, 1 held, 2 released
thread_local int t_slot = -1;
thread_local detail::FaultPoint t_point{};
void hold_in_slot(detail::FaultPoint p) noexcept {
  if (t_slot < 0 || p != t_point) return;
  const int i = std::exchange(t_slot, -1);
  g_at[i].store(1, std::memory_order_seq_cst);
  while (g_at[i].load(std::memory_order_seq_cst) != 2) std::this_thread::yield();
}
void hold_me_at(int slot, detail::FaultPoint p) noexcept {
  t_slot = slot;
  t_point = p;
}

// A Barrier waiter of the next generation, counted and about to sleep
// when the end of the previous generation repairs the count (its wake,
// for a party held counted and not yet asleep, is the 4th for nobody): it
// finds the wake word bumped, counts itself again and sleeps counted, so
// the last arrival wakes it at once (format 1: asleep uncounted on gen
// until its 10 ms owner-check slice, not woken by the arrival).
TEST(SleeperKill, BarrierWaiterWipedByARepairCountsAgainBeforeItSleeps) {
  SegmentGuard g(unique_name("bar"));
  auto b = Barrier::create(g.name(), 2);
  auto view = SegmentView::open(g.name());
  auto word = [&] {
    return reinterpret_cast<const detail::BarrierState*>(view.payload().data())->sleepers.load();
  };
  for (auto& a : g_at) a.store(0);
  detail::set_fault_hook(&hold_in_slot);
  struct Unhook {
    ~Unhook() {
      for (auto& a : g_at) a.store(2);
      detail::set_fault_hook(nullptr);
    }
  } unhook;
  // A generation ended while its first party X is held counted, not yet
  // asleep: a wake for nobody, a strike. `end_held` holds the last
  // arriver between its gen bump and its wake ([slot 1]).
  auto first_party = [&](std::atomic<bool>& tripped) {
    return std::thread([&] {
      auto mine = Barrier::open(g.name());
      hold_me_at(0, detail::FaultPoint::sleeper_counted);
      tripped.store(!mine.wait_for(30s).broken);
    });
  };
  for (std::uint32_t k = 1; k < kSleeperStrikes; ++k) {
    g_at[0].store(0);
    std::atomic<bool> tripped{false};
    std::thread x = first_party(tripped);
    ASSERT_TRUE(test::poll_until([&] { return g_at[0].load() == 1; }));
    EXPECT_FALSE(b.wait_for(30s).broken);  // the last arrival: its wake finds nobody
    g_at[0].store(2);
    x.join();
    EXPECT_TRUE(tripped.load());
    ASSERT_EQ(word() & detail::kSleeperStrikeMask, k * detail::kSleeperStrikeOne);
  }
  ASSERT_EQ(detail::sleeper_count(word()), 0u);
  // The 4th: X held counted, the last arriver A held after its gen bump,
  // W arrives in the next generation and is held counted too.
  for (auto& a : g_at) a.store(0);
  std::atomic<bool> x_tripped{false}, a_tripped{false}, w_tripped{false}, w_done{false};
  std::atomic<pid_t> w_tid{0};
  std::thread x = first_party(x_tripped);
  ASSERT_TRUE(test::poll_until([&] { return g_at[0].load() == 1; }));
  std::thread a([&] {
    auto mine = Barrier::open(g.name());
    hold_me_at(1, detail::FaultPoint::generation_ended);
    a_tripped.store(!mine.wait_for(30s).broken);
  });
  ASSERT_TRUE(test::poll_until([&] { return g_at[1].load() == 1; }));
  std::thread w([&] {
    w_tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
    auto mine = Barrier::open(g.name());
    hold_me_at(2, detail::FaultPoint::sleeper_counted);
    w_tripped.store(!mine.wait_for(30s).broken);
    w_done.store(true);
  });
  struct Join {
    std::thread &x, &a, &w;
    ~Join() {
      for (auto& s : g_at) s.store(2);
      x.join();
      a.join();
      w.join();
    }
  } join{x, a, w};
  ASSERT_TRUE(test::poll_until([&] { return g_at[2].load() == 1; }));
  EXPECT_EQ(detail::sleeper_count(word()), 2u);  // X and W
  const std::uint32_t epoch = word() & detail::kSleeperEpochMask;
  g_at[1].store(2);  // A wakes X's generation: nobody asleep, the 4th strike
  ASSERT_TRUE(test::poll_until([&] { return a_tripped.load(); }));
  EXPECT_EQ(word(), epoch + detail::kSleeperEpochOne);  // repaired: W's count is gone
  g_at[0].store(2);
  ASSERT_TRUE(test::poll_until([&] { return x_tripped.load(); }));
  g_at[2].store(2);
  // W counts itself again before it sleeps.
  ASSERT_TRUE(test::poll_until([&] { return test::thread_sleeping(w_tid.load()); }));
  EXPECT_EQ(detail::sleeper_count(word()), 1u) << "W sleeps uncounted";
  const std::uint64_t before = futex_wake_calls();
  EXPECT_FALSE(b.wait_for(30s).broken);  // the last arrival of W's generation
  EXPECT_EQ(futex_wake_calls() - before, 1u) << "the last arrival did not wake W";
  ASSERT_TRUE(test::poll_until([&] { return w_done.load(); }));
  EXPECT_TRUE(w_tripped.load());
}

}  // namespace
}  // namespace shmbus
