// futex_wait_any(): several words at once, woken by futex_wake on any of
// them, at once when one already differs, and at its deadline.
#include "shmbus/detail/futex.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <thread>

#include "test_support.hpp"

namespace shmbus::detail {
namespace {

using namespace std::chrono_literals;

TEST(FutexWaitAny, AWakeOnAnyWordEndsTheSleep) {
  std::array<std::atomic<std::uint32_t>, 3> words{};
  const std::array<FutexWaiter, 3> waiters{{{&words[0], 0}, {&words[1], 0}, {&words[2], 0}}};
  std::atomic<bool> back{false};
  std::atomic<pid_t> tid{0};
  std::thread sleeper([&] {
    tid = ::gettid();
    const auto deadline = Clock::now() + 10s;
    FutexResult r = FutexResult::woken;
    // Spurious returns are allowed: sleep again until the word changed.
    while (words[2].load() == 0 && Clock::now() < deadline) r = futex_wait_any(waiters, &deadline);
    back = r != FutexResult::timed_out;
  });
  // Wake it once it sleeps, so the wake-up (not the value check) ends it.
  EXPECT_TRUE(
      test::poll_until([&] { return tid.load() != 0 && test::thread_sleeping(tid.load()); }));
  words[2].store(1);
  futex_wake(words[2]);
  sleeper.join();
  EXPECT_TRUE(back.load());
}

TEST(FutexWaitAny, AWordThatAlreadyDiffersReturnsAtOnce) {
  std::array<std::atomic<std::uint32_t>, 2> words{};
  words[1].store(7);
  const std::array<FutexWaiter, 2> waiters{{{&words[0], 0}, {&words[1], 0}}};
  const auto deadline = Clock::now() + 10s;
  EXPECT_EQ(futex_wait_any(waiters, &deadline), FutexResult::value_changed);
}

TEST(FutexWaitAny, TimesOutAtTheDeadline) {
  std::atomic<std::uint32_t> word{0};
  const std::array<FutexWaiter, 1> waiters{{{&word, 0}}};
  const auto deadline = Clock::now() + 20ms;
  EXPECT_EQ(futex_wait_any(waiters, &deadline), FutexResult::timed_out);
  EXPECT_GE(Clock::now(), deadline);
}

// [wait.epoch]: the sleepers word's strikes and repair, one step at a time.
TEST(SleeperWord, StrikesLeadToARepairThatATicketOfTheOldEpochCannotUndo) {
  std::atomic<std::uint32_t> sleepers{0};
  std::atomic<std::uint32_t> seq{0};
  const std::uint32_t dead = sleeper_enter(sleepers);  // never leaves
  const std::uint32_t live = sleeper_enter(sleepers);
  EXPECT_EQ(sleeper_count(sleepers.load()), 2u);
  for (std::uint32_t k = 1; k < kSleeperStrikes; ++k) {
    EXPECT_FALSE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  }
  // A wake that reached someone clears the strikes.
  EXPECT_FALSE(sleepers_after_wake(sleepers, sleepers.load(), 1, &seq, seq));
  EXPECT_EQ(sleepers.load() & kSleeperStrikeMask, 0u);
  for (std::uint32_t k = 1; k < kSleeperStrikes; ++k) {
    EXPECT_FALSE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  }
  EXPECT_EQ(seq.load(), 0u);
  EXPECT_TRUE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  EXPECT_EQ(sleepers.load(), kSleeperEpochOne);  // new epoch, nobody counted, no strikes
  EXPECT_EQ(seq.load(), 1u);                     // bumped: a sleeper of the old epoch wakes
  EXPECT_FALSE(sleeper_still_counted(sleepers, live));
  sleeper_leave(sleepers, live);  // a no-op: its count went with the repair
  EXPECT_EQ(sleeper_count(sleepers.load()), 0u);
  const std::uint32_t again = sleeper_enter(sleepers);
  EXPECT_TRUE(sleeper_still_counted(sleepers, again));
  sleeper_leave(sleepers, dead);  // still a no-op
  EXPECT_EQ(sleeper_count(sleepers.load()), 1u);
  sleeper_leave(sleepers, again);
  EXPECT_EQ(sleepers.load(), kSleeperEpochOne);
}

TEST(SleeperWord, AStrikeFromAWordThatMovedIsSkipped) {
  std::atomic<std::uint32_t> sleepers{0};
  std::atomic<std::uint32_t> seq{0};
  const std::uint32_t t = sleeper_enter(sleepers);
  const std::uint32_t seen = sleepers.load();
  (void)sleeper_enter(sleepers);  // a sleeper came after the notifier's load
  for (std::uint32_t k = 0; k < 2 * kSleeperStrikes; ++k) {
    EXPECT_FALSE(sleepers_after_wake(sleepers, seen, 0, &seq, seq));
  }
  EXPECT_EQ(sleepers.load(), 2u);  // no strike, no repair
  EXPECT_EQ(seq.load(), 0u);
  sleeper_leave(sleepers, t);
  EXPECT_EQ(sleepers.load(), 1u);
}

// One repair of `sleepers`, as a notifier that keeps finding a counted
// sleeper that never wakes makes it: kSleeperStrikes wakes for nobody.
void repair_once(std::atomic<std::uint32_t>& sleepers, std::atomic<std::uint32_t>& seq) {
  const std::uint32_t dead = sleeper_enter(sleepers);
  (void)dead;
  for (std::uint32_t k = 1; k < kSleeperStrikes; ++k)
    ASSERT_FALSE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  ASSERT_TRUE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
}

// [wait.epoch] A sleeper woken and preempted before its leave while the
// word is repaired 4096 times (format 1's 12-bit epoch came round again
// then) must not take a live sleeper's count away.
TEST(SleeperWord, AStaleTicketCannotTakeALiveCountAway4096RepairsLater) {
  std::atomic<std::uint32_t> sleepers{0};
  std::atomic<std::uint32_t> seq{0};
  const std::uint32_t stale = sleeper_enter(sleepers);
  for (int k = 0; k < 4096; ++k) repair_once(sleepers, seq);
  const std::uint32_t live = sleeper_enter(sleepers);
  ASSERT_EQ(sleeper_count(sleepers.load()), 1u);
  sleeper_leave(sleepers, stale);
  EXPECT_EQ(sleeper_count(sleepers.load()), 1u) << "a stale leave took the live sleeper's count";
  EXPECT_TRUE(sleeper_still_counted(sleepers, live));
  sleeper_leave(sleepers, live);
  EXPECT_EQ(sleeper_count(sleepers.load()), 0u);
}

// The epoch at its last value: the repair wraps it to 0 without a carry
// into anything, and a ticket of the last epoch stays stale across it.
TEST(SleeperWord, TheEpochWrapsToZeroAndATicketOfTheLastEpochStaysStale) {
  std::atomic<std::uint32_t> sleepers{kSleeperEpochMask};  // last epoch, nobody counted
  std::atomic<std::uint32_t> seq{0};
  const std::uint32_t stale = sleeper_enter(sleepers);
  EXPECT_EQ(stale, kSleeperEpochMask);
  const std::uint32_t other = sleeper_enter(sleepers);
  for (std::uint32_t k = 1; k < kSleeperStrikes; ++k)
    EXPECT_FALSE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  EXPECT_TRUE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  EXPECT_EQ(sleepers.load(), 0u);  // epoch 0, no strikes, nobody counted
  EXPECT_EQ(seq.load(), 1u);       // the repair's bump
  const std::uint32_t live = sleeper_enter(sleepers);
  sleeper_leave(sleepers, stale);
  sleeper_leave(sleepers, other);
  EXPECT_EQ(sleepers.load(), 1u);
  EXPECT_TRUE(sleeper_still_counted(sleepers, live));
  EXPECT_FALSE(sleeper_still_counted(sleepers, stale));
  sleeper_leave(sleepers, live);
  EXPECT_EQ(sleepers.load(), 0u);
}

// [wait.saturated] At 4095 sleepers the count stays put (no carry into the
// strikes), nobody's leave takes it below that, and the repair after the
// last sleeper went clears it.
TEST(SleeperWord, ACountAtItsLimitSaturatesUntilTheRepair) {
  std::atomic<std::uint32_t> sleepers{kSleeperCountMask - 1};
  std::atomic<std::uint32_t> seq{0};
  const std::uint32_t last = sleeper_enter(sleepers);  // the 4095th
  EXPECT_EQ(sleepers.load(), kSleeperCountMask);
  const std::uint32_t over = sleeper_enter(sleepers);  // not counted
  EXPECT_EQ(sleepers.load(), kSleeperCountMask) << "the count carried into the strikes";
  EXPECT_TRUE(sleeper_still_counted(sleepers, over));  // same epoch: it may sleep
  sleeper_leave(sleepers, over);
  sleeper_leave(sleepers, last);
  EXPECT_EQ(sleepers.load(), kSleeperCountMask);  // saturated: every notify wakes
  // A wake that reached someone is no strike; wakes for nobody are.
  EXPECT_FALSE(sleepers_after_wake(sleepers, sleepers.load(), 1, &seq, seq));
  EXPECT_EQ(sleepers.load(), kSleeperCountMask);
  for (std::uint32_t k = 1; k < kSleeperStrikes; ++k)
    EXPECT_FALSE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  EXPECT_TRUE(sleepers_after_wake(sleepers, sleepers.load(), 0, &seq, seq));
  EXPECT_EQ(sleepers.load(), kSleeperEpochOne);
}

}  // namespace
}  // namespace shmbus::detail
