// Death of a participant (SIGKILL) at the worst moment: a Lock holder, an
// RLock holder, a Barrier party. The survivors never hang.
#include <gtest/gtest.h>

#include <csignal>
#include <set>
#include <vector>

#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using test::SegmentGuard;
using test::unique_name;
using namespace std::chrono_literals;

// A separately started holder acquires the lock and is killed holding it.
void kill_holder(const std::string& lock_name, const std::string& ready_name) {
  auto ready = Event::create(ready_name);
  pid_t holder = test::spawn_helper("sync_peer", {"lock-hold", lock_name, ready_name});
  ASSERT_TRUE(ready.wait_for(10s));
  ::kill(holder, SIGKILL);
  auto st = test::wait_child(holder);
  EXPECT_EQ(st.signal, SIGKILL);
}

TEST(SyncKill, HolderKilledGivesNextAcquirerOwnerDied) {
  SegmentGuard g(unique_name("lock"));
  SegmentGuard gr(unique_name("ready"));
  auto lock = Lock::create(g.name());
  kill_holder(g.name(), gr.name());
  EXPECT_TRUE(lock.locked());
  EXPECT_EQ(lock.try_acquire(), LockResult::timeout);  // try_ never checks liveness
  EXPECT_EQ(lock.acquire_for(10s), LockResult::owner_died);
  EXPECT_TRUE(lock.owner_died());
  lock.make_consistent();
  EXPECT_FALSE(lock.owner_died());
  lock.release();
  EXPECT_EQ(lock.acquire_for(1s), LockResult::acquired);
  lock.release();
}

TEST(SyncKill, BlockedWaiterInOtherProcessRecoversFromKilledHolder) {
  SegmentGuard g(unique_name("lock"));
  SegmentGuard gr(unique_name("ready"));
  auto lock = Lock::create(g.name());
  auto ready = Event::create(gr.name());
  pid_t holder = test::spawn_helper("sync_peer", {"lock-hold", g.name(), gr.name()});
  ASSERT_TRUE(ready.wait_for(10s));
  pid_t waiter = test::fork_child([&] {
    auto mine = Lock::open(g.name());
    mine.set_wait_policy({WaitStrategy::blocking, {}});
    LockResult r = mine.acquire();  // sleeps until the holder is found dead
    if (r != LockResult::owner_died) return 1;
    mine.make_consistent();
    mine.release();
    return 0;
  });
  ASSERT_TRUE(test::poll_until([&] { return lock.info().waiters; }));
  ::kill(holder, SIGKILL);
  EXPECT_EQ(test::wait_child(holder).signal, SIGKILL);
  auto st = test::wait_child(waiter);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  EXPECT_EQ(lock.acquire_for(1s), LockResult::acquired);
  lock.release();
}

TEST(SyncKill, NotMadeConsistentBecomesNotRecoverable) {
  SegmentGuard g(unique_name("lock"));
  SegmentGuard gr(unique_name("ready"));
  auto lock = Lock::create(g.name());
  kill_holder(g.name(), gr.name());
  ASSERT_EQ(lock.acquire_for(10s), LockResult::owner_died);
  lock.release();  // without make_consistent()
  EXPECT_EQ(lock.acquire_for(100ms), LockResult::not_recoverable);
  EXPECT_EQ(lock.try_acquire(), LockResult::not_recoverable);
  EXPECT_TRUE(lock.info().not_recoverable);
  EXPECT_THROW(lock.lock(), Error);
  lock.release();  // a stray release does not make it usable again
  EXPECT_EQ(lock.try_acquire(), LockResult::not_recoverable);
}

TEST(SyncKill, RLockHolderKilledInForkedChild) {
  SegmentGuard g(unique_name("rlock"));
  SegmentGuard gr(unique_name("ready"));
  auto r = RLock::create(g.name());
  auto ready = Event::create(gr.name());
  pid_t holder = test::fork_child([&] {
    if (!holds(r.acquire()) || !holds(r.acquire())) return 1;
    ready.set();
    for (;;) ::pause();
  });
  ASSERT_TRUE(ready.wait_for(10s));
  ::kill(holder, SIGKILL);
  EXPECT_EQ(test::wait_child(holder).signal, SIGKILL);
  ASSERT_EQ(r.acquire_for(10s), LockResult::owner_died);
  EXPECT_EQ(r.depth(), 1u);  // the dead holder's depth is not inherited
  r.make_consistent();
  r.release();
  EXPECT_FALSE(r.locked());
}

TEST(SyncKill, PartyKilledAtBarrierBreaksItForTheRest) {
  SegmentGuard g(unique_name("meet"));
  SegmentGuard gr(unique_name("ready"));
  auto b = Barrier::create(g.name(), 3);
  auto ready = Event::create(gr.name());
  pid_t doomed = test::spawn_helper("sync_peer", {"barrier-hang", g.name(), gr.name()});
  ASSERT_TRUE(ready.wait_for(10s));  // registered as a party, never arrives
  pid_t other = test::spawn_helper("sync_peer", {"barrier", g.name()});
  ASSERT_TRUE(test::poll_until([&] { return b.n_waiting() == 1; }));
  ::kill(doomed, SIGKILL);
  EXPECT_EQ(test::wait_child(doomed).signal, SIGKILL);
  EXPECT_TRUE(b.wait_for(10s).broken);  // not a hang, not a timeout
  auto st = test::wait_child(other);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 100);  // the helper saw broken
  EXPECT_TRUE(b.broken());
}

TEST(SyncKill, PartyKilledWhileWaitingBreaksBarrier) {
  SegmentGuard g(unique_name("meet"));
  auto b = Barrier::create(g.name(), 3);
  pid_t waiting = test::fork_child([&] {
    auto mine = Barrier::open(g.name());
    (void)mine.wait();
    return 0;
  });
  ASSERT_TRUE(test::poll_until([&] { return b.n_waiting() == 1; }));
  ::kill(waiting, SIGKILL);
  EXPECT_EQ(test::wait_child(waiting).signal, SIGKILL);
  auto start = Clock::now();
  EXPECT_TRUE(b.wait_for(10s).broken);
  EXPECT_LT(Clock::now() - start, 9s);  // broken by the death, not by the timeout
}

}  // namespace
}  // namespace shmbus
