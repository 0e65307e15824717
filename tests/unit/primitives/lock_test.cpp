// Lock and RLock: single-process semantics, threads, and forked processes
// that inherit the handle. Owner death is in tests/fault/.
#include "shmbus/lock.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "shmbus/error.hpp"
#include "shmbus/event.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/semaphore.hpp"
#include "shmbus/shared_memory.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using test::SegmentGuard;
using test::unique_name;
using namespace std::chrono_literals;

using test::code_of;

TEST(Lock, AcquireReleaseUncontended) {
  SegmentGuard g(unique_name("lock"));
  auto lock = Lock::create(g.name());
  EXPECT_FALSE(lock.locked());
  EXPECT_EQ(lock.acquire(), LockResult::acquired);
  EXPECT_TRUE(lock.locked());
  auto info = lock.info();
  ASSERT_TRUE(info.owner.has_value());
  EXPECT_EQ(*info.owner, this_process());
  EXPECT_EQ(lock.try_acquire(), LockResult::timeout);
  lock.release();
  EXPECT_FALSE(lock.locked());
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

TEST(Lock, WorksWithScopedAndUniqueLock) {
  SegmentGuard g(unique_name("lock"));
  auto lock = Lock::create(g.name());
  {
    std::scoped_lock sl(lock);
    EXPECT_TRUE(lock.locked());
  }
  EXPECT_FALSE(lock.locked());
  {
    std::unique_lock ul(lock, 10ms);
    EXPECT_TRUE(ul.owns_lock());
  }
  EXPECT_FALSE(lock.locked());
}

TEST(Lock, OpenByNameSharesState) {
  SegmentGuard g(unique_name("lock"));
  auto a = Lock::create(g.name());
  auto b = Lock::open(g.name());
  ASSERT_EQ(a.acquire(), LockResult::acquired);
  EXPECT_TRUE(b.locked());
  EXPECT_EQ(b.try_acquire(), LockResult::timeout);
  a.release();
  EXPECT_EQ(b.try_acquire(), LockResult::acquired);
  b.release();
}

TEST(Lock, OpenWrongKindOrMissingIsClearError) {
  SegmentGuard g(unique_name("lock"));
  auto sem = Semaphore::create(g.name(), 1);
  EXPECT_EQ(code_of([&] { (void)Lock::open(g.name()); }), Errc::wrong_kind);
  EXPECT_EQ(code_of([&] { (void)RLock::open(g.name()); }), Errc::wrong_kind);
  EXPECT_EQ(code_of([&] { (void)Lock::open(unique_name("missing")); }), Errc::not_found);
  EXPECT_EQ(code_of([&] { (void)Lock::create(g.name()); }), Errc::already_exists);
}

TEST(Lock, TimedAcquireTimesOutWhileAnotherProcessHolds) {
  SegmentGuard g(unique_name("lock"));
  SegmentGuard ge(unique_name("held"));
  SegmentGuard gr(unique_name("release"));
  auto lock = Lock::create(g.name());
  auto held = Event::create(ge.name());
  auto release = Event::create(gr.name());
  pid_t child = test::fork_child([&] {
    lock.attach();
    if (lock.acquire() != LockResult::acquired) return 1;
    held.set();
    if (!release.wait_for(10s)) return 2;
    lock.release();
    return 0;
  });
  ASSERT_TRUE(held.wait_for(10s));
  EXPECT_EQ(lock.try_acquire(), LockResult::timeout);
  EXPECT_EQ(lock.acquire_for(20ms), LockResult::timeout);
  EXPECT_FALSE(lock.try_lock_for(5ms));
  release.set();
  EXPECT_EQ(lock.acquire_for(10s), LockResult::acquired);
  lock.release();
  auto st = test::wait_child(child);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
}

TEST(Lock, UntilFormsUseTheMonotonicClock) {
  SegmentGuard g(unique_name("lock"));
  auto lock = Lock::create(g.name());
  EXPECT_EQ(lock.acquire_until(Clock::now() + 1s), LockResult::acquired);
  std::thread other([&] {
    EXPECT_EQ(lock.acquire_until(Clock::now() + 5ms), LockResult::timeout);
    EXPECT_FALSE(lock.try_lock_until(Clock::now() + 5ms));
    EXPECT_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + 5ms));
  });
  other.join();
  lock.release();
  EXPECT_TRUE(lock.try_lock_until(Clock::now() + 1s));
  lock.unlock();
}

TEST(Lock, BlockedAcquirerInOtherProcessGetsItOnRelease) {
  SegmentGuard g(unique_name("lock"));
  SegmentGuard ge(unique_name("go"));
  auto lock = Lock::create(g.name());
  lock.set_wait_policy({WaitStrategy::blocking, {}});
  auto go = Event::create(ge.name());
  ASSERT_EQ(lock.acquire(), LockResult::acquired);
  pid_t child = test::fork_child([&] {
    go.set();
    return lock.acquire_for(10s) == LockResult::acquired ? 0 : 1;
  });
  ASSERT_TRUE(go.wait_for(10s));
  // Wait until the child sleeps on the word (kWaiters set), then release.
  ASSERT_TRUE(test::poll_until([&] { return lock.info().waiters; }));
  lock.release();
  auto st = test::wait_child(child);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
}

TEST(Lock, MutualExclusionAcrossThreads) {
  SegmentGuard g(unique_name("lock"));
  auto lock = Lock::create(g.name());
  long counter = 0;  // plain memory: a data race unless the lock excludes
  // Threads share one handle (one mapping): ThreadSanitizer keys
  // synchronisation by address, so two mappings in one process would hide
  // the lock's ordering from it (the lock itself works either way).
  lock.set_wait_policy({WaitStrategy::blocking, {}});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        std::scoped_lock sl(lock);
        ++counter;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter, 8000);
}

TEST(Lock, MutualExclusionAcrossForkedProcesses) {
  SegmentGuard g(unique_name("lock"));
  SegmentGuard gs(unique_name("counter"));
  auto lock = Lock::create(g.name());
  auto shm = SharedMemory::create(gs.name(), sizeof(long));
  auto* counter = reinterpret_cast<volatile long*>(shm.buf().data());
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    kids.push_back(test::fork_child([&] {
      lock.attach();
      for (int i = 0; i < 3000; ++i) {
        std::scoped_lock sl(lock);
        *counter = *counter + 1;
      }
      return 0;
    }));
  }
  for (pid_t k : kids) {
    auto st = test::wait_child(k);
    EXPECT_TRUE(st.exited);
    EXPECT_EQ(st.code, 0);
  }
  EXPECT_EQ(*counter, 9000);
  EXPECT_FALSE(lock.locked());
}

TEST(Lock, ReadOnlyInfoFromSegmentView) {
  SegmentGuard g(unique_name("lock"));
  auto lock = Lock::create(g.name());
  ASSERT_EQ(lock.acquire(), LockResult::acquired);
  auto view = SegmentView::open(g.name());
  auto payload = view.payload();
  auto info = read_lock_info(payload.data(), payload.size());
  EXPECT_TRUE(info.locked);
  ASSERT_TRUE(info.owner.has_value());
  EXPECT_EQ(info.owner->pid, ::getpid());
  lock.release();
  info = read_lock_info(payload.data(), payload.size());
  EXPECT_FALSE(info.locked);
  EXPECT_FALSE(read_lock_info(payload.data(), 3).locked);  // too small: nothing
}

TEST(RLock, RecursionCountsDepth) {
  SegmentGuard g(unique_name("rlock"));
  auto r = RLock::create(g.name());
  EXPECT_EQ(r.acquire(), LockResult::acquired);
  EXPECT_EQ(r.acquire(), LockResult::acquired);
  EXPECT_EQ(r.try_acquire(), LockResult::acquired);
  EXPECT_EQ(r.depth(), 3u);
  EXPECT_TRUE(r.is_owned());
  r.release();
  r.release();
  EXPECT_TRUE(r.locked());
  r.release();
  EXPECT_FALSE(r.locked());
  EXPECT_EQ(r.depth(), 0u);
}

TEST(RLock, ReleaseByNonOwnerThreadIsNotOwner) {
  SegmentGuard g(unique_name("rlock"));
  auto r = RLock::create(g.name());
  EXPECT_EQ(code_of([&] { r.release(); }), Errc::not_owner);
  ASSERT_EQ(r.acquire(), LockResult::acquired);
  Errc seen = Errc::system;
  bool other_try = true;
  std::thread t([&] {
    seen = code_of([&] { r.release(); });
    other_try = r.try_lock();
  });
  t.join();
  EXPECT_EQ(seen, Errc::not_owner);
  EXPECT_FALSE(other_try);
  EXPECT_TRUE(r.is_owned());
  r.release();
}

TEST(RLock, ReleaseByAnotherProcessIsNotOwner) {
  SegmentGuard g(unique_name("rlock"));
  auto r = RLock::create(g.name());
  ASSERT_EQ(r.acquire(), LockResult::acquired);
  pid_t child = test::fork_child([&] {
    auto other = RLock::open(g.name());
    if (other.is_owned()) return 1;  // same thread token, other pid: not ours
    try {
      other.release();
    } catch (const Error& e) {
      return e.code() == Errc::not_owner ? 0 : 2;
    }
    return 3;
  });
  auto st = test::wait_child(child);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  EXPECT_TRUE(r.is_owned());
  r.release();
}

TEST(RLock, ExcludesOtherThreads) {
  SegmentGuard g(unique_name("rlock"));
  auto r = RLock::create(g.name());
  long counter = 0;
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        std::scoped_lock a(r);
        std::scoped_lock b(r);  // recursive
        ++counter;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter, 3000);
}

}  // namespace
}  // namespace shmbus
