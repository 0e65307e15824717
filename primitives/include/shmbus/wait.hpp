// How a shmbus call waits when it has to: the per-object wait strategy and
// the clock every timed call uses.
//
//   busy_poll  spins on the shared word, never makes a system call; lowest
//              latency, burns its core while it waits.
//   adaptive   (default) spins for `spin` (with the CPU's pause hint), then
//              sleeps on a futex. Keeps busy-poll latency for replies that
//              come within the spin budget, costs no CPU when idle.
//   blocking   sleeps on the futex at once.
//
// Timed calls (`_for`, `_until`) measure on the monotonic clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace shmbus {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux

enum class WaitStrategy : std::uint8_t { busy_poll = 0, adaptive = 1, blocking = 2 };

// "busy_poll", "adaptive", "blocking".
[[nodiscard]] constexpr std::string_view to_string(WaitStrategy s) noexcept {
  switch (s) {
    case WaitStrategy::busy_poll:
      return "busy_poll";
    case WaitStrategy::adaptive:
      return "adaptive";
    case WaitStrategy::blocking:
      return "blocking";
  }
  return "unknown";
}

namespace detail {
// `start + timeout`, saturated: no timeout, or one past what the clock can
// hold, is time_point::max() (forever); zero or negative is `start`.
[[nodiscard]] inline Clock::time_point deadline_from(
    Clock::time_point start, std::optional<Clock::duration> timeout) noexcept {
  if (!timeout) return Clock::time_point::max();
  if (*timeout <= Clock::duration::zero()) return start;
  return *timeout >= Clock::time_point::max() - start ? Clock::time_point::max() : start + *timeout;
}

// Now + `timeout` for every `_for` call, saturated: a timeout past what the
// clock can hold (hours::max(), nanoseconds::max(), a huge double) waits
// forever instead of overflowing into the past; zero, negative or NaN is
// now. Any duration type, floating-point ones (0.5s) included.
template <class Rep, class Period>
[[nodiscard]] Clock::time_point deadline_after(
    std::chrono::duration<Rep, Period> timeout) noexcept {
  const Clock::time_point now = Clock::now();
  const double t = std::chrono::duration<double>(timeout).count();
  if (!(t > 0)) return now;
  // A second's margin covers the rounding of the double comparison.
  const double room = std::chrono::duration<double>(Clock::time_point::max() - now).count() - 1.0;
  if (t >= room) return Clock::time_point::max();
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}
}  // namespace detail

struct WaitPolicy {
  WaitStrategy strategy = WaitStrategy::adaptive;
  // adaptive only: how long to spin before sleeping.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
};

}  // namespace shmbus
