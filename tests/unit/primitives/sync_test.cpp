// Semaphore, BoundedSemaphore, Event, Condition, Barrier, Value and Array:
// single-process semantics, threads, and forked processes that inherit
// handles.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using test::SegmentGuard;
using test::unique_name;
using namespace std::chrono_literals;

using test::code_of;

void expect_ok(pid_t pid) {
  auto st = test::wait_child(pid);
  EXPECT_TRUE(st.exited) << "signal " << st.signal << " timed_out " << st.timed_out;
  EXPECT_EQ(st.code, 0);
}

// ---- Semaphore ----

TEST(Semaphore, CountsTokens) {
  SegmentGuard g(unique_name("sem"));
  auto s = Semaphore::create(g.name(), 2);
  EXPECT_EQ(s.get_value(), 2u);
  EXPECT_TRUE(s.try_acquire());
  EXPECT_TRUE(s.acquire_for(1ms));
  EXPECT_FALSE(s.try_acquire());
  EXPECT_FALSE(s.acquire_for(10ms));
  EXPECT_EQ(s.get_value(), 0u);
  EXPECT_TRUE(s.release(3));
  EXPECT_EQ(s.get_value(), 3u);
  EXPECT_FALSE(s.release(Semaphore::kMaxValue));  // would overflow: refused
  EXPECT_EQ(s.get_value(), 3u);
  EXPECT_EQ(code_of([&] { (void)Semaphore::create(unique_name("big"), 0x80000000u); }),
            Errc::invalid_argument);
}

TEST(Semaphore, ReleaseWakesWaiterInOtherProcess) {
  SegmentGuard g(unique_name("sem"));
  auto s = Semaphore::create(g.name(), 0);
  s.set_wait_policy({WaitStrategy::blocking, {}});
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    kids.push_back(test::fork_child([&] { return s.acquire_for(10s) ? 0 : 1; }));
  }
  EXPECT_TRUE(s.release(3));
  for (pid_t k : kids) expect_ok(k);
  EXPECT_EQ(s.get_value(), 0u);
}

TEST(Semaphore, ThreadsNeverExceedTokens) {
  SegmentGuard g(unique_name("sem"));
  auto s = Semaphore::create(g.name(), 2);
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        s.acquire();
        int now = inside.fetch_add(1) + 1;
        int m = max_inside.load();
        while (now > m && !max_inside.compare_exchange_weak(m, now)) {
        }
        inside.fetch_sub(1);
        s.release();
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_LE(max_inside.load(), 2);
  EXPECT_EQ(s.get_value(), 2u);
}

TEST(BoundedSemaphore, ReleaseAboveInitialValueIsValueError) {
  SegmentGuard g(unique_name("bsem"));
  auto s = BoundedSemaphore::create(g.name(), 2);
  EXPECT_EQ(s.bound(), 2u);
  EXPECT_EQ(code_of([&] { s.release(); }), Errc::value_error);
  EXPECT_TRUE(s.try_acquire());
  s.release();
  EXPECT_FALSE(s.try_release());
  EXPECT_EQ(s.get_value(), 2u);
  auto other = BoundedSemaphore::open(g.name());
  EXPECT_TRUE(other.try_acquire());
  EXPECT_EQ(s.get_value(), 1u);
  EXPECT_EQ(code_of([&] { (void)Semaphore::open(g.name()); }), Errc::wrong_kind);
}

TEST(Semaphore, UntilFormsAndInfo) {
  SegmentGuard g(unique_name("sem"));
  auto s = Semaphore::create(g.name(), 1);
  EXPECT_TRUE(s.acquire_until(Clock::now() + 1s));
  EXPECT_FALSE(s.acquire_until(Clock::now() + 5ms));
  EXPECT_FALSE(s.acquire_until(Clock::now() - 1s));  // past deadline: a try
  s.release();
  auto view = SegmentView::open(g.name());
  auto info = read_semaphore_info(view.payload().data(), view.payload().size());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->value, 1u);
  EXPECT_EQ(info->bound, 0u);
  EXPECT_EQ(info->sleepers, 0u);
}

// ---- Event ----

TEST(Event, SetClearIsSet) {
  SegmentGuard g(unique_name("ev"));
  auto e = Event::create(g.name());
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait_for(5ms));
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.wait());
  EXPECT_TRUE(e.wait_for(0ms));
  e.set();  // idempotent
  e.clear();
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait_until(Clock::now() + 2ms));
}

TEST(Event, InfoSeesSetAndSleepers) {
  SegmentGuard g(unique_name("ev"));
  auto e = Event::create(g.name());
  e.set_wait_policy({WaitStrategy::blocking, {}});
  auto view = SegmentView::open(g.name());
  std::thread waiter([&] { EXPECT_TRUE(e.wait_for(10s)); });
  ASSERT_TRUE(test::poll_until([&] {
    return read_event_info(view.payload().data(), view.payload().size())->sleepers == 1;
  }));
  EXPECT_FALSE(read_event_info(view.payload().data(), view.payload().size())->is_set);
  e.set();
  waiter.join();
  EXPECT_TRUE(read_event_info(view.payload().data(), view.payload().size())->is_set);
}

TEST(Event, SetWakesEveryWaitingProcess) {
  SegmentGuard g(unique_name("ev"));
  SegmentGuard gc(unique_name("count"));
  auto e = Event::create(g.name());
  auto waiting = Semaphore::create(gc.name(), 0);
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    kids.push_back(test::fork_child([&, k] {
      if (k == 0) e.set_wait_policy({WaitStrategy::blocking, {}});
      waiting.release();
      return e.wait_for(10s) ? 0 : 1;
    }));
  }
  for (int k = 0; k < 3; ++k) ASSERT_TRUE(waiting.acquire_for(10s));
  e.set();
  for (pid_t k : kids) expect_ok(k);
}

TEST(Event, PublishesDataWrittenBeforeSet) {
  SegmentGuard g(unique_name("ev"));
  auto e = Event::create(g.name());
  long payload = 0;  // plain: visible only through the event's ordering
  std::thread consumer([&] {
    ASSERT_TRUE(e.wait_for(10s));
    EXPECT_EQ(payload, 42);
  });
  payload = 42;
  e.set();
  consumer.join();
}

// ---- Condition ----

// Runs `wake` from another thread once the calling thread sleeps in the
// kernel (so the wake cannot come before the wait under test).
std::thread wake_when_asleep(std::function<void()> wake) {
  const pid_t waiter = static_cast<pid_t>(::gettid());
  return std::thread([waiter, wake = std::move(wake)] {
    (void)test::poll_until([&] { return test::thread_sleeping(waiter); }, 5s);
    wake();
  });
}

// detail::deadline_after, behind every `_for`: saturated at the clock's
// end for anything it cannot hold (unsigned and floating durations too),
// now for zero, negative, -inf and NaN, and exactly now + d otherwise.
TEST(Deadlines, DeadlineAfterSaturatesAndTakesZeroNegativeAndNanAsNow) {
  using Seconds = std::chrono::duration<double>;
  const double inf = std::numeric_limits<double>::infinity();
  const auto end = Clock::time_point::max();
  EXPECT_EQ(detail::deadline_after(std::chrono::hours::max()), end);
  EXPECT_EQ(detail::deadline_after(std::chrono::nanoseconds::max()), end);
  EXPECT_EQ(detail::deadline_after(std::chrono::duration<unsigned long long>::max()), end);
  EXPECT_EQ(detail::deadline_after(Seconds(inf)), end);
  EXPECT_EQ(detail::deadline_after(Seconds(1e300)), end);
  for (const double now_like : {0.0, -1.0, -1e300, -inf, std::nan("")}) {
    const auto before = Clock::now();
    const auto d = detail::deadline_after(Seconds(now_like));
    EXPECT_GE(d, before) << now_like;
    EXPECT_LE(d, Clock::now()) << now_like;
  }
  const auto before = Clock::now();
  const auto d = detail::deadline_after(std::chrono::milliseconds(1500));
  EXPECT_GE(d - before, 1500ms);
  EXPECT_LE(d - Clock::now(), 1500ms);
}

// Every `_for` takes any duration, as the README's "wait_for(1s)" suggests:
// a huge one (hours::max(), as Python's timeout=None-like "forever") waits
// instead of overflowing now + d into the past and returning at once, and
// a floating one (0.5s, duration<double>) compiles and times out.
TEST(Deadlines, TimedWaitsTakeHugeAndFloatingDurations) {
  const WaitPolicy blocking{WaitStrategy::blocking, {}};
  Event e;
  e.set_wait_policy(blocking);
  std::thread t1 = wake_when_asleep([&] { e.set(); });
  EXPECT_TRUE(e.wait_for(std::chrono::hours::max()));
  t1.join();
  Semaphore s{0};
  s.set_wait_policy(blocking);
  std::thread t2 = wake_when_asleep([&] { (void)s.release(); });
  EXPECT_TRUE(s.acquire_for(std::chrono::seconds::max()));
  t2.join();
  Lock l;
  l.set_wait_policy(blocking);
  ASSERT_EQ(l.acquire(), LockResult::acquired);
  std::thread t3 = wake_when_asleep([&] { l.release(); });
  EXPECT_EQ(l.acquire_for(std::chrono::nanoseconds::max()), LockResult::acquired);
  t3.join();
  l.release();
  Barrier b{2};
  std::thread t4 = wake_when_asleep([&] { (void)b.wait_for(5s); });
  EXPECT_TRUE(b.wait_for(std::chrono::hours::max()));
  t4.join();
  Condition c;
  c.set_wait_policy(blocking);
  std::atomic<bool> ready{false};
  std::thread t5 = wake_when_asleep([&] {
    c.lock();
    ready = true;
    c.notify_all();
    c.unlock();
  });
  c.lock();
  EXPECT_TRUE(c.wait_for([&] { return ready.load(); }, std::chrono::hours::max()));
  c.unlock();
  t5.join();

  const std::chrono::duration<double> tenth_ms(0.0001);
  Event never;
  EXPECT_FALSE(never.wait_for(tenth_ms));
  EXPECT_FALSE(s.acquire_for(tenth_ms));
  EXPECT_EQ(l.acquire_for(tenth_ms), LockResult::acquired);
  l.release();
  c.lock();
  EXPECT_FALSE(c.wait_for(tenth_ms));
  EXPECT_FALSE(c.wait_for([] { return false; }, tenth_ms));
  c.unlock();
  Barrier lone{2};
  EXPECT_FALSE(lone.wait_for(tenth_ms));
}

TEST(Condition, WaitForTimesOutWithoutNotify) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("cond.lock"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  std::unique_lock ul(c);
  EXPECT_FALSE(c.wait_for(10ms));
  EXPECT_FALSE(c.wait_for([] { return false; }, 10ms));
  EXPECT_TRUE(c.wait_for([] { return true; }, 0ms));
  EXPECT_TRUE(c.get_lock()->locked());  // re-acquired after the wait
}

// Python's cond.acquire(False) and cond.acquire(timeout=t): Condition had
// only the blocking acquire() and try_lock().
TEST(Condition, TryAcquireAndAcquireForAsPythonsAcquireWithTimeout) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("cond.lock"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  EXPECT_EQ(c.try_acquire(), LockResult::acquired);
  EXPECT_EQ(c.try_acquire(), LockResult::timeout);  // a Lock: not reentrant
  EXPECT_EQ(c.acquire_for(10ms), LockResult::timeout);
  EXPECT_EQ(c.acquire_until(Clock::now()), LockResult::timeout);
  c.release();
  EXPECT_EQ(c.acquire_for(0.5s), LockResult::acquired);
  EXPECT_FALSE(c.wait_for(1ms));
  c.release();
  auto r = Condition(RLock());  // reentrant by its owner
  EXPECT_EQ(r.acquire_for(1s), LockResult::acquired);
  EXPECT_EQ(r.try_acquire(), LockResult::acquired);
  r.release();
  r.release();
}

// A drop-in TimedLockable, as Lock and RLock: std::unique_lock with a
// timeout, and the owner-died repair calls of the lock.
TEST(Condition, IsATimedLockableWithTheLocksRepairCalls) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("cond.lock"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  {
    std::unique_lock ul(c, 1s);  // try_lock_for
    ASSERT_TRUE(ul.owns_lock());
    EXPECT_TRUE(c.locked());
    EXPECT_FALSE(c.try_lock_for(10ms));
    EXPECT_FALSE(c.try_lock_until(std::chrono::steady_clock::now() + 10ms));
  }
  EXPECT_FALSE(c.locked());
  EXPECT_TRUE(c.try_lock_until(std::chrono::system_clock::now() + 1s));
  c.unlock();
  const pid_t holder = test::fork_child([&] {
    auto mine = Condition::open(g.name());
    mine.lock();
    ::raise(SIGKILL);
    return 2;
  });
  ASSERT_EQ(test::wait_child(holder).signal, SIGKILL);
  ASSERT_EQ(c.acquire_for(5s), LockResult::owner_died);
  EXPECT_TRUE(c.owner_died());
  c.make_consistent();
  EXPECT_FALSE(c.owner_died());
  c.release();
  EXPECT_TRUE(c.try_lock_for(1s));
  c.unlock();
}
TEST(Condition, DefaultRLockAndOpenFindsSameLock) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(g.name() + ".lock");
  auto c = Condition::create(g.name());
  ASSERT_NE(c.get_rlock(), nullptr);
  auto d = Condition::open(g.name());
  EXPECT_EQ(d.lock_name(), g.name() + ".lock");
  ASSERT_NE(d.get_rlock(), nullptr);
  std::unique_lock ul(c);
  EXPECT_TRUE(d.get_rlock()->locked());
}

TEST(Condition, NotifyAllWakesPatientsInForkedProcesses) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("lock"));
  SegmentGuard gv(unique_name("ready"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  auto ready = Value<int>::create(gv.name(), 0);
  auto waiting = Value<int>::create(unique_name("waiting"), 0);
  SegmentGuard gw(waiting.name());
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    kids.push_back(test::fork_child([&] {
      c.attach();
      std::unique_lock ul(c);
      waiting.fetch_add(1);
      return c.wait_for([&] { return ready.get() != 0; }, 10s) ? 0 : 1;
    }));
  }
  ASSERT_TRUE(test::poll_until([&] { return waiting.get() == 3; }));
  {
    std::unique_lock ul(c);
    ready.set(1);
    c.notify_all();
  }
  for (pid_t k : kids) expect_ok(k);
}

TEST(Condition, NotifyOneWakesAtLeastOneAndNotifyAllTheRest) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("lock"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  c.set_wait_policy({WaitStrategy::blocking, {}});
  int woken = 0;    // under the lock
  int waiting = 0;  // under the lock
  int tokens = 0;   // under the lock
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&] {
      // One handle shared by the threads (see lock_test.cpp on TSan).
      std::unique_lock ul(c);
      ++waiting;
      c.wait([&] { return tokens > 0; });
      --tokens;
      ++woken;
    });
  }
  auto count = [&](int& v) {
    std::unique_lock ul(c);
    return v;
  };
  ASSERT_TRUE(test::poll_until([&] { return count(waiting) == 3; }));
  {
    std::unique_lock ul(c);
    tokens = 1;
    c.notify(1);
  }
  ASSERT_TRUE(test::poll_until([&] { return count(woken) == 1; }));
  {
    std::unique_lock ul(c);
    tokens = 2;
    c.notify_all();
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(woken, 3);
}

TEST(Condition, WaitReleasesRLockFullyAndRestoresDepth) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("rlock"));
  auto rl = RLock::create(gl.name());
  auto c = Condition::create(g.name(), rl);
  auto* lock = c.get_rlock();
  ASSERT_EQ(lock->acquire(), LockResult::acquired);
  ASSERT_EQ(lock->acquire(), LockResult::acquired);
  bool flag = false;  // under the lock
  std::thread notifier([&] {
    std::unique_lock ul(c);  // only possible if the waiter dropped depth 2
    flag = true;
    c.notify();
  });
  EXPECT_TRUE(c.wait_for([&] { return flag; }, 10s));
  EXPECT_EQ(lock->depth(), 2u);
  lock->release();
  lock->release();
  notifier.join();
}

TEST(Condition, OpenRejectsCorruptLockName) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("lock"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  {
    // Damage the recorded name length the way a buggy peer could.
    auto shm_fd = ::open(test::shm_path(g.name()).c_str(), O_RDWR);
    ASSERT_GE(shm_fd, 0);
    std::uint32_t bad = 100000;
    ASSERT_EQ(::pwrite(shm_fd, &bad, 4, 4096 + 68), 4);
    ::close(shm_fd);
  }
  EXPECT_EQ(code_of([&] { (void)Condition::open(g.name()); }), Errc::corrupted);
}

TEST(Condition, WaitWithoutHoldingTheLockReturnsAtOnce) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(g.name() + ".lock");
  auto c = Condition::create(g.name());
  EXPECT_FALSE(c.wait_for(10s));  // not held: refused, not a 10 s wait
  EXPECT_FALSE(c.get_rlock()->locked());
}

TEST(Condition, InfoReadsSleepersAndLockName) {
  SegmentGuard g(unique_name("cond"));
  SegmentGuard gl(unique_name("lock"));
  auto lock = Lock::create(gl.name());
  auto c = Condition::create(g.name(), lock);
  c.set_wait_policy({WaitStrategy::blocking, {}});
  auto view = SegmentView::open(g.name());
  std::thread waiter([&] {
    std::unique_lock ul(c);
    EXPECT_TRUE(c.wait_for(10s));
  });
  ASSERT_TRUE(test::poll_until([&] {
    auto info = read_condition_info(view.payload().data(), view.payload().size());
    return info && info->sleepers == 1;
  }));
  auto info = read_condition_info(view.payload().data(), view.payload().size());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->lock_name, gl.name());
  EXPECT_EQ(info->lock_kind, ObjectKind::lock);
  {
    std::unique_lock ul(c);
    c.notify();
  }
  waiter.join();
  EXPECT_FALSE(read_condition_info(view.payload().data(), 10).has_value());
}

// ---- Barrier ----

TEST(Barrier, ThreeForkedWorkersMeetWithDistinctIndexes) {
  SegmentGuard g(unique_name("bar"));
  SegmentGuard gv(unique_name("actions"));
  auto actions = Value<int>::create(gv.name(), 0);
  auto b = Barrier::create(g.name(), 3);
  EXPECT_EQ(b.parties(), 3u);
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    kids.push_back(test::fork_child([&] {
      auto mine = Barrier::open(g.name(), [&] { actions.fetch_add(1); });
      auto r = mine.wait_for(10s);
      if (!r) return 100;
      auto r2 = mine.wait_for(10s);  // a second generation
      if (!r2) return 101;
      return static_cast<int>(r.index);
    }));
  }
  std::multiset<int> idx;
  for (pid_t k : kids) {
    auto st = test::wait_child(k);
    ASSERT_TRUE(st.exited);
    idx.insert(st.code);
  }
  EXPECT_EQ(idx, (std::multiset<int>{0, 1, 2}));
  EXPECT_EQ(actions.get(), 2);  // once per generation
  EXPECT_FALSE(b.broken());
  EXPECT_EQ(b.n_waiting(), 0u);
}

TEST(Barrier, TimeoutBreaksItForEveryone) {
  SegmentGuard g(unique_name("bar"));
  auto b = Barrier::create(g.name(), 3);
  pid_t child = test::fork_child([&] {
    auto mine = Barrier::open(g.name());
    return mine.wait_for(10s).broken ? 0 : 1;  // broken by the parent's timeout
  });
  ASSERT_TRUE(test::poll_until([&] { return b.n_waiting() == 1; }));
  EXPECT_TRUE(b.wait_for(20ms).broken);
  expect_ok(child);
  EXPECT_TRUE(b.broken());
  EXPECT_TRUE(b.wait_for(10s).broken);  // stays broken
  b.reset();
  EXPECT_FALSE(b.broken());
  EXPECT_EQ(b.n_waiting(), 0u);
}

TEST(Barrier, AbortWakesWaitersAndResetRestores) {
  SegmentGuard g(unique_name("bar"));
  auto b = Barrier::create(g.name(), 2);
  std::thread waiter([&] { EXPECT_TRUE(b.wait().broken); });
  ASSERT_TRUE(test::poll_until([&] { return b.n_waiting() == 1; }));
  b.abort();
  waiter.join();
  EXPECT_TRUE(b.broken());
  b.reset();
  std::thread second([&] { EXPECT_FALSE(b.wait_for(10s).broken); });
  EXPECT_FALSE(b.wait_for(10s).broken);
  second.join();
}

TEST(Barrier, ThrowingActionBreaksIt) {
  SegmentGuard g(unique_name("bar"));
  auto b = Barrier::create(g.name(), 1, [] { throw 1; });
  EXPECT_TRUE(b.wait().broken);
  EXPECT_TRUE(b.broken());
  EXPECT_EQ(code_of([&] { (void)Barrier::create(unique_name("zero"), 0); }),
            Errc::invalid_argument);
}

TEST(Barrier, InfoCountsWaitersAndRegisteredParties) {
  SegmentGuard g(unique_name("bar"));
  auto b = Barrier::create(g.name(), 2);
  auto view = SegmentView::open(g.name());
  auto info = read_barrier_info(view.payload().data(), view.payload().size());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->parties, 2u);
  EXPECT_EQ(info->registered, 0u);  // the creator is not a party until it waits
  std::thread waiter([&] { EXPECT_FALSE(b.wait_for(10s).broken); });
  ASSERT_TRUE(test::poll_until([&] { return b.n_waiting() == 1; }));
  info = read_barrier_info(view.payload().data(), view.payload().size());
  EXPECT_EQ(info->n_waiting, 1u);
  EXPECT_EQ(info->registered, 1u);
  auto second = b.wait_until(Clock::now() + 10s);
  waiter.join();
  EXPECT_FALSE(second.broken);
  info = read_barrier_info(view.payload().data(), view.payload().size());
  EXPECT_EQ(info->generation, 1u);
  EXPECT_EQ(info->n_waiting, 0u);
}

// ---- Value / Array ----

TEST(Value, WorkersIncrementUnderLockExactTotal) {
  SegmentGuard g(unique_name("val"));
  auto v = Value<long>::create(g.name(), 0);
  std::vector<pid_t> kids;
  for (int k = 0; k < 4; ++k) {
    kids.push_back(test::fork_child([&] {
      v.attach();
      for (int i = 0; i < 2000; ++i) {
        std::scoped_lock sl(v.get_lock());
        v.set(v.get() + 1);
      }
      return 0;
    }));
  }
  for (pid_t k : kids) expect_ok(k);
  EXPECT_EQ(v.get(), 8000);
}

TEST(Value, AtomicRmwAcrossThreads) {
  SegmentGuard g(unique_name("val"));
  auto v = Value<std::uint64_t>::create(g.name(), 5);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) v.fetch_add(1);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(v.get(), 4005u);
  EXPECT_EQ(v.exchange(7), 4005u);
  std::uint64_t expected = 7;
  EXPECT_TRUE(v.compare_exchange(expected, 9));
  EXPECT_EQ(v.get(), 9u);
}

struct Big {
  double xs[8];
  long id;
};

TEST(Value, NonLockFreeTypeUsesItsLockAndRawValueWorks) {
  static_assert(!detail::kAtomicCells<Big>);
  SegmentGuard g(unique_name("big"));
  auto v = Value<Big>::create(g.name(), Big{{1, 2, 3, 4, 5, 6, 7, 8}, 9});
  {
    std::scoped_lock sl(v.get_lock());  // RLock: get() inside still works
    Big b = v.get();
    b.id += 1;
    v.set(b);
  }
  auto w = Value<Big>::open(g.name());
  EXPECT_EQ(w.get().id, 10);
  EXPECT_EQ(w.get().xs[7], 8);
  SegmentGuard gr(unique_name("raw"));
  auto r = RawValue<int>::create(gr.name(), 3);
  r.set(r.get() * 2);
  EXPECT_EQ(RawValue<int>::open(gr.name()).get(), 6);
}

TEST(Value, WrongTypeAndKindAreClearErrors) {
  SegmentGuard g(unique_name("val"));
  auto v = Value<int>::create(g.name(), 1);
  EXPECT_EQ(code_of([&] { (void)Value<double>::open(g.name()); }), Errc::wrong_type);
  EXPECT_EQ(code_of([&] { (void)Array<int>::open(g.name()); }), Errc::wrong_kind);
  EXPECT_EQ(code_of([&] { (void)Lock::open(g.name()); }), Errc::wrong_kind);
}

TEST(Array, GetSetBoundsAndSharing) {
  SegmentGuard g(unique_name("arr"));
  auto a = Array<double>::create(g.name(), 4, 1.5);
  EXPECT_EQ(a.size(), 4u);
  EXPECT_EQ(a.get(3), 1.5);
  a.set(2, 7.0);
  EXPECT_EQ(code_of([&] { (void)a.get(4); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { a.set(9, 0); }), Errc::invalid_argument);
  pid_t child = test::fork_child([&] {
    auto b = Array<double>::open(g.name());
    if (b.get(2) != 7.0) return 1;
    b.fetch_add(0, 1.0);
    return 0;
  });
  expect_ok(child);
  EXPECT_EQ(a.get(0), 2.5);
  SegmentGuard gr(unique_name("rawarr"));
  auto r = RawArray<int>::create(gr.name(), 3, 0);
  r.set(1, 5);
  EXPECT_EQ(r.get(1), 5);
  EXPECT_EQ(code_of([&] { (void)Array<int>::create(unique_name("empty"), 0); }),
            Errc::invalid_argument);
}

TEST(Array, OpenRejectsCorruptCount) {
  SegmentGuard g(unique_name("arr"));
  auto a = Array<int>::create(g.name(), 4);
  auto fd = ::open(test::shm_path(g.name()).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::uint64_t bad = 1u << 30;
  ASSERT_EQ(::pwrite(fd, &bad, 8, 4096 + 64), 8);
  ::close(fd);
  EXPECT_EQ(code_of([&] { (void)Array<int>::open(g.name()); }), Errc::corrupted);
}

// A View destroyed by a forked child (which does not hold the lock)
// leaves the parent's lock alone instead of throwing from a destructor.
TEST(Array, ViewDestroyedByAForkedChildLeavesTheLockAlone) {
  SegmentGuard g(unique_name("kpvfk"));
  auto a = Array<Big>::create(g.name(), 2);
  {
    auto view = a.view();
    const pid_t child = test::fork_child([&] {
      { auto moved = std::move(view); }
      return 0;
    });
    EXPECT_EQ(test::wait_child(child).code, 0);
    EXPECT_TRUE(a.get_lock().is_owned());
  }
  EXPECT_FALSE(a.get_lock().locked());
}

}  // namespace
}  // namespace shmbus
