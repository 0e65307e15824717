// detail::CopyChoice — how a sender copies the fragments of a message
// larger than one frame into the ring: through its cache (memcpy) or
// around it (non-temporal stores), whichever has been moving messages
// faster on this connection.
//
// Which one wins depends on where the two processes run, not on the
// message. On the 2-vCPU EPYC VM, one binary, minutes apart: cpus "near"
// (cache-line round trip ~110 ns), a 1 MiB stream ran at 0.86-0.93x one
// core's memcpy rate through the cache and 0.48-0.49x with non-temporal
// stores (the receiver then reads memory instead of a shared cache); cpus
// "far" (~420 ns), 0.35-0.47x through the cache and 0.60-0.63x around it. The
// host moves vCPUs, so the choice is measured rather than configured:
// each choosable message is timed from its first reservation to its last
// commit (waiting for the receiver counts), the cheaper mode's running
// average wins, and every kExploreEvery-th message tries the other mode so
// that a change of placement is noticed.
//
// One sender thread owns it; nothing here is shared.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace shmbus::detail {

enum class CopyMode : std::uint8_t { cached, streaming };

class CopyChoice {
 public:
  // One message in this many tries the mode that is not winning.
  static constexpr std::uint32_t kExploreEvery = 64;
  // A sample counts for at most this factor above or below the running
  // average (a sender preempted mid-message must not bury its mode).
  static constexpr double kClamp = 4.0;

  // The mode for the next message: each mode once first (cached, then
  // streaming), then the cheaper one, but the other every kExploreEvery-th.
  [[nodiscard]] CopyMode next() noexcept {
    if (samples_[0] == 0) return CopyMode::cached;
    if (samples_[1] == 0) return CopyMode::streaming;
    const CopyMode best = cost_[1] < cost_[0] ? CopyMode::streaming : CopyMode::cached;
    if (++messages_ % kExploreEvery == 0) return other(best);
    return best;
  }

  // A message of `bytes` took `elapsed` in mode `m`.
  void record(CopyMode m, std::size_t bytes, std::chrono::nanoseconds elapsed) noexcept {
    if (bytes == 0) return;
    const auto i = static_cast<std::size_t>(m);
    double c = static_cast<double>(elapsed.count()) / static_cast<double>(bytes);
    if (samples_[i] == 0) {
      cost_[i] = c;
    } else {
      if (c > cost_[i] * kClamp) c = cost_[i] * kClamp;
      if (c < cost_[i] / kClamp) c = cost_[i] / kClamp;
      cost_[i] += (c - cost_[i]) / 4;  // running average over ~4 samples
    }
    ++samples_[i];
  }

  // Running average, ns per byte (0 before the first sample).
  [[nodiscard]] double cost(CopyMode m) const noexcept {
    return cost_[static_cast<std::size_t>(m)];
  }

 private:
  static CopyMode other(CopyMode m) noexcept {
    return m == CopyMode::cached ? CopyMode::streaming : CopyMode::cached;
  }

  std::array<double, 2> cost_{};
  std::array<std::uint64_t, 2> samples_{};
  std::uint32_t messages_ = 0;
};

}  // namespace shmbus::detail
