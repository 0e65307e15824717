// Lost wake-up hunts: two forked processes pass a turn back and forth many
// times through each primitive, under each wait strategy. A lost wake-up
// shows as a round that misses its (generous) deadline.
#include <gtest/gtest.h>

#include <mutex>

#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using test::SegmentGuard;
using test::unique_name;
using namespace std::chrono_literals;

class PingPong : public ::testing::TestWithParam<WaitStrategy> {
 protected:
  WaitPolicy policy() const { return WaitPolicy{GetParam(), std::chrono::microseconds(20)}; }
  // Busy-polling peers on a small shared machine get descheduled while
  // they spin: fewer rounds keep the run short.
  int rounds() const { return GetParam() == WaitStrategy::busy_poll ? 100 : 1000; }
};

void expect_ok(pid_t pid) {
  auto st = test::wait_child(pid, 60s);
  EXPECT_TRUE(st.exited) << "signal " << st.signal << " timed_out " << st.timed_out;
  EXPECT_EQ(st.code, 0);
}

TEST_P(PingPong, Semaphore) {
  const int kRounds = rounds();
  SegmentGuard ga(unique_name("ping"));
  SegmentGuard gb(unique_name("pong"));
  auto ping = Semaphore::create(ga.name(), 0);
  auto pong = Semaphore::create(gb.name(), 0);
  ping.set_wait_policy(policy());
  pong.set_wait_policy(policy());
  pid_t child = test::fork_child([&] {
    for (int i = 0; i < kRounds; ++i) {
      if (!ping.acquire_for(10s)) return 1;
      pong.release();
    }
    return 0;
  });
  for (int i = 0; i < kRounds; ++i) {
    ping.release();
    ASSERT_TRUE(pong.acquire_for(10s)) << "round " << i;
  }
  expect_ok(child);
}

TEST_P(PingPong, Event) {
  const int kRounds = rounds();
  SegmentGuard ga(unique_name("ping"));
  SegmentGuard gb(unique_name("pong"));
  auto ping = Event::create(ga.name());
  auto pong = Event::create(gb.name());
  ping.set_wait_policy(policy());
  pong.set_wait_policy(policy());
  pid_t child = test::fork_child([&] {
    for (int i = 0; i < kRounds; ++i) {
      if (!ping.wait_for(10s)) return 1;
      ping.clear();
      pong.set();
    }
    return 0;
  });
  for (int i = 0; i < kRounds; ++i) {
    ping.set();
    ASSERT_TRUE(pong.wait_for(10s)) << "round " << i;
    pong.clear();
  }
  expect_ok(child);
}

TEST_P(PingPong, ConditionWithSharedTurn) {
  const int kRounds = rounds();
  SegmentGuard gl(unique_name("lock"));
  SegmentGuard gc(unique_name("cond"));
  SegmentGuard gt(unique_name("turn"));
  auto lock = Lock::create(gl.name());
  auto cond = Condition::create(gc.name(), lock);
  cond.set_wait_policy(policy());
  auto turn = RawValue<int>::create(gt.name(), 0);  // under the lock
  auto pass = [&](int mine, int next) {
    std::unique_lock g(cond);
    if (!cond.wait_for([&] { return turn.get() == mine; }, 10s)) return false;
    turn.set(next);
    cond.notify();
    return true;
  };
  pid_t child = test::fork_child([&] {
    cond.attach();
    for (int i = 0; i < kRounds; ++i) {
      if (!pass(1, 0)) return 1;
    }
    return 0;
  });
  for (int i = 0; i < kRounds; ++i) ASSERT_TRUE(pass(0, 1)) << "round " << i;
  expect_ok(child);
}

TEST_P(PingPong, LockHandOff) {
  const int kRounds = rounds();
  // A Lock may be released by any process: two locks pass a turn.
  SegmentGuard ga(unique_name("ping"));
  SegmentGuard gb(unique_name("pong"));
  auto ping = Lock::create(ga.name());
  auto pong = Lock::create(gb.name());
  ping.set_wait_policy(policy());
  pong.set_wait_policy(policy());
  ASSERT_EQ(ping.acquire(), LockResult::acquired);
  ASSERT_EQ(pong.acquire(), LockResult::acquired);
  pid_t child = test::fork_child([&] {
    for (int i = 0; i < kRounds; ++i) {
      if (ping.acquire_for(10s) != LockResult::acquired) return 1;
      pong.release();
    }
    return 0;
  });
  for (int i = 0; i < kRounds; ++i) {
    ping.release();
    ASSERT_EQ(pong.acquire_for(10s), LockResult::acquired) << "round " << i;
  }
  expect_ok(child);
}

TEST_P(PingPong, BarrierOfTwo) {
  const int kRounds = rounds();
  SegmentGuard g(unique_name("bar"));
  auto b = Barrier::create(g.name(), 2);
  pid_t child = test::fork_child([&] {
    b.attach();
    for (int i = 0; i < kRounds; ++i) {
      if (b.wait_for(10s).broken) return 1;
    }
    return 0;
  });
  for (int i = 0; i < kRounds; ++i) ASSERT_FALSE(b.wait_for(10s).broken) << "round " << i;
  expect_ok(child);
}

INSTANTIATE_TEST_SUITE_P(Strategies, PingPong,
                         ::testing::Values(WaitStrategy::blocking, WaitStrategy::adaptive,
                                           WaitStrategy::busy_poll),
                         [](const auto& p) { return std::string(to_string(p.param)); });

}  // namespace
}  // namespace shmbus
