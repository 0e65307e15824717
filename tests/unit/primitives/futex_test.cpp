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

}  // namespace
}  // namespace shmbus::detail
