// Shared pieces of the shmbus benchmarks: core pinning, a TSC latency
// recorder that reports p50/p99/p99.9/max counters, a forked child pinned
// to the other core, and the two reference benchmarks every suite runs in
// the same binary so its figures read as ratios:
//
//   BM_Floor_CacheLine_RTT  one cache line bounced between two processes
//   BM_Futex_Raw_RTT        a bare futex ping-pong between two processes
//
// A suite calls SHMBUS_BENCH_REFERENCES() once (file scope) to register them.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/types.h>
#include <x86intrin.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace shmbus::bench {

struct CpuPair {
  int parent = 0;  // the measuring side
  int child = 1;   // the echoing / consuming side
  std::string why;
};

// SHMBUS_BENCH_CPUS="a,b" if set; else the topology layer's near pair
// (Topology::pick_pair: distinct cores sharing an L3 where there is one),
// else 0 and 1. `why` says which and why in one sentence; the reference
// registration copies it into the JSON context (shmbus_cpus, _why).
const CpuPair& bench_cpus();

// Pins the calling thread to one CPU; false if the kernel refused.
bool pin_this_thread(int cpu);

// TSC ticks (rdtsc, invariant TSC assumed) and their length in ns,
// calibrated once against the monotonic clock.
inline std::uint64_t ticks() noexcept { return __rdtsc(); }
double ns_per_tick();

// Records one latency per round trip, reports percentile counters.
class LatencyRecorder {
 public:
  explicit LatencyRecorder(std::size_t reserve = 1 << 20) { samples_.reserve(reserve); }
  void add_ticks(std::uint64_t t) {
    if (samples_.size() < samples_.capacity()) samples_.push_back(t);
  }
  // Sets p50_ns, p99_ns, p999_ns, max_ns on `state`.
  void report(benchmark::State& state);

 private:
  std::vector<std::uint64_t> samples_;
};

// A child process forked, pinned to `cpu`, running `body` to completion;
// the destructor waits for it (killing it after a deadline, reported as a
// benchmark error). `body` must return when the parent says stop.
class PinnedChild {
 public:
  PinnedChild(int cpu, std::function<void()> body);
  PinnedChild(const PinnedChild&) = delete;
  PinnedChild& operator=(const PinnedChild&) = delete;
  ~PinnedChild();
  // Waits for the child; true if it exited 0.
  bool join();
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Untimed round trips a latency benchmark makes before its timed loop, so
// that the forked child is running, pinned and has touched its pages: a
// busy-poll one makes kBusyWarmUp, a blocking one kBlockWarmUp. Without
// them, the first round trips of a short run (quick mode) are the child's
// start-up, and Google Benchmark may settle on a run of ten such.
inline constexpr int kBusyWarmUp = 1000;
inline constexpr int kBlockWarmUp = 20;

// A unique segment name for a benchmark ("bench-<pid>-<stem>-<n>").
std::string bench_name(const std::string& stem);

void BM_Floor_CacheLine_RTT(benchmark::State& state);
void BM_Futex_Raw_RTT(benchmark::State& state);

// Registers the two reference benchmarks under their plain names.
bool register_references();

}  // namespace shmbus::bench

#define SHMBUS_BENCH_REFERENCES()                               \
  [[maybe_unused]] static const bool shmbus_bench_references_ = \
      ::shmbus::bench::register_references()
