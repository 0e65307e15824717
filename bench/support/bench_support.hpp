// Shared pieces of the shmbus benchmarks: core pinning, a TSC latency
// recorder that reports p50/p99/p99.9/max counters, a forked child pinned
// to the other core, and the two reference benchmarks every suite runs in
// the same binary so its figures read as ratios:
//
//   BM_Floor_CacheLine_RTT  one cache line bounced between two processes
//                           (a line in each of 16 pages in turn: the cost
//                           of a line depends on its page)
//   BM_Futex_Raw_RTT        a bare futex ping-pong between two processes
//
// A suite calls SHMBUS_BENCH_REFERENCES() once (file scope) to register them.
//
// The host moves this VM's vCPUs, so the floor can change several-fold from
// one minute to the next, even within one suite's run. Each round-trip
// benchmark therefore also measures its own reference right before and right
// after itself (ReferenceBeside): its counters then read as a ratio to a
// floor (or futex) taken beside it, not a minute before.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/types.h>
#include <x86intrin.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "shmbus/connection.hpp"
#include "shmbus/wait.hpp"

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
  // The median of the samples so far in ns; 0 when there are none.
  double p50_ns();

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

// The timed loop of a round-trip benchmark: `warm` untimed round trips,
// then one timed per iteration. `once` makes one round trip and says
// whether it worked; a failure skips the benchmark with `what`. Sets the
// percentile counters and the items processed (one per round trip).
template <class F>
void timed_round_trips(benchmark::State& state, int warm, const char* what, F&& once) {
  LatencyRecorder rec;
  for (int i = 0; i < warm && once(); ++i) {
  }
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    if (!once()) {
      state.SkipWithError(what);
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

// A unique segment name for a benchmark ("bench-<pid>-<stem>-<n>").
std::string bench_name(const std::string& stem);

// All `n` bytes through a pipe or socket descriptor, retrying on EINTR and
// short transfers; false on EOF or error.
bool read_full(int fd, void* data, std::size_t n);
bool write_full(int fd, const void* data, std::size_t n);

void BM_Floor_CacheLine_RTT(benchmark::State& state);
void BM_Futex_Raw_RTT(benchmark::State& state);

// The two references measured now, outside Google Benchmark's loop: each
// forks a child pinned to bench_cpus().child, pins the caller to
// bench_cpus().parent, makes the untimed warm-up round trips, then
// `round_trips` timed ones, and returns their p50 in ns (0 if the child
// failed). Same loop as BM_Floor_CacheLine_RTT / BM_Futex_Raw_RTT.
double floor_p50_ns(int round_trips = 20000);  // about 10 ms at 200-450 ns
double futex_p50_ns(int round_trips = 300);    // about 6-35 ms at 20-110 us

// Which reference a round trip is read against: the floor for busy-poll and
// adaptive round trips, the raw futex for blocking ones.
enum class Reference { floor, futex };
inline Reference reference_for(WaitStrategy s) noexcept {
  return s == WaitStrategy::blocking ? Reference::futex : Reference::floor;
}

// Measures `ref` once when constructed and once when destroyed, and then
// sets on `state`, next to the benchmark's own p50_ns (which must be set by
// then, e.g. by LatencyRecorder::report):
//
//   floor_ns / futex_ns        mean of the two reference p50s
//   x_floor / x_futex          p50_ns / that mean
//   floor_drift / futex_drift  after / before (1 = the host held still)
//
// Construct it first in the benchmark function, before the echo child is
// forked, so it is destroyed after that child was joined: a busy-polling
// echo child on the same cpu would otherwise share it with the reference's
// child. Nothing is set when the benchmark failed or a reference did.
class ReferenceBeside {
 public:
  ReferenceBeside(benchmark::State& state, Reference ref);
  ReferenceBeside(const ReferenceBeside&) = delete;
  ReferenceBeside& operator=(const ReferenceBeside&) = delete;
  ~ReferenceBeside();

 private:
  double measure() const noexcept;

  benchmark::State& state_;
  Reference ref_;
  double before_ns_ = 0;
};

// Python's multiprocessing as a peer: runs `SHMBUS_BENCH_PYTHON
// bench/support/<script> args...`, which makes state.max_iterations
// operations of its own and prints "p50_ns p99_ns p999_ns max_ns total_ns
// n". One Google Benchmark run of that fixed count, whose manual time is
// the script's total (register with UseManualTime() and
// Iterations(python_iterations())): real_time reads per operation, and
// the percentiles become counters. A failed script skips the benchmark.
void python_peer(benchmark::State& state, const std::string& script,
                 const std::vector<std::string>& args);
// SHMBUS_BENCH_PY_ITERS, else 2000.
std::int64_t python_iterations();
// py_mp_rtt.py's round trips of `kind` (pipe, queue, pipe_dict, listener,
// manager) with state.range(0) bytes on bench_cpus(), the raw futex beside.
void python_round_trip(benchmark::State& state, const char* kind);

// A pipe round trip of state.range(0) bytes with `options`: an echo child
// on bench_cpus().child, the timed loop here (BM_Pipe_*_RTT and the rows
// other suites put beside their own), with its reference beside.
void pipe_round_trip(benchmark::State& state, const PipeOptions& options);

// --- Paired benchmarks ---------------------------------------------------------
//
// The host moves this VM's vCPUs within seconds (floor ~100 ns near, ~400
// ns far), so a ratio between two benchmarks of one run compares two
// placements. A paired benchmark (BM_Paired_<Subject>Vs<Peer>_...) runs a
// subject and its peer in one timed loop, in the same two processes on the
// same pinned cpus, alternating short blocks of each: a block pair sees one
// placement, and the ratio that counts is the median of the per-pair ratios.
//
// A PairedLeg is one side: `block` operations per block, run by the parent
// (run()) and answered in lockstep by the one echo child (echo()), which
// goes through the legs in the same order, so nothing is signalled on the
// measured path beyond what the leg itself sends.
class PairedLeg {
 public:
  explicit PairedLeg(int block) : block_(block) {}
  PairedLeg(const PairedLeg&) = delete;
  PairedLeg& operator=(const PairedLeg&) = delete;
  virtual ~PairedLeg() = default;
  // Parent: one block (block() operations, each finished: answered, or for
  // a stream received); false on failure.
  virtual bool run() noexcept = 0;
  // Child: answers one block; false when the parent stopped the leg (or it
  // failed): the child then returns.
  virtual bool echo() noexcept = 0;
  // Parent: tells a child waiting in echo() to return false (close, stop).
  virtual void stop() noexcept = 0;
  [[nodiscard]] int block() const noexcept { return block_; }
  // True when run() timed each operation (op_done()): the block then reads
  // as the median of those times, else as its total over block().
  [[nodiscard]] bool per_op() const noexcept { return per_op_; }
  void begin_block() noexcept { ops_ = 0; }
  // The median of this block's operation times in ticks (0 if none).
  [[nodiscard]] std::uint64_t op_median_ticks() noexcept;

 protected:
  // A blocking leg calls this after each operation begun at tick t0: a
  // wake-up's tens of microseconds dwarf the rdtsc, and one preemption of
  // a few milliseconds (this VM's other tenants) would otherwise be most of
  // its block's mean.
  void op_done(std::uint64_t t0) noexcept {
    if (ops_ < op_ticks_.size()) op_ticks_[ops_++] = ticks() - t0;
  }
  // Makes run() time each operation (call in the constructor).
  void time_each_op() {
    per_op_ = true;
    op_ticks_.resize(static_cast<std::size_t>(block_));
  }

 private:
  int block_;
  bool per_op_ = false;
  std::vector<std::uint64_t> op_ticks_;
  std::size_t ops_ = 0;
};

// The cache-line floor's round trip as a leg: `block` round trips, one line
// of kFloorPages pages in turn, as BM_Floor_CacheLine_RTT bounces.
class FloorLeg final : public PairedLeg {
 public:
  explicit FloorLeg(int block = 256);
  ~FloorLeg() override;
  bool run() noexcept override;
  bool echo() noexcept override;
  void stop() noexcept override;

 private:
  std::byte* base_ = nullptr;  // kFloorPages pages, anonymous shared memory
  std::uint64_t trips_ = 0;    // round trips made (parent) / answered (child)
};

// A busy pipe's round trip of `size` bytes as a leg (BM_Pipe_Busy_RTT's
// loop): the parent sends and waits for the echo, `block` times.
class PipeRttLeg final : public PairedLeg {
 public:
  PipeRttLeg(const PipeOptions& options, std::size_t size, int block = 256);
  bool run() noexcept override;
  bool echo() noexcept override;
  void stop() noexcept override { a_.close(); }

 private:
  Connection a_, b_;  // the parent's end, the child's end
  std::vector<std::byte> msg_, buf_;
};

// Block pairs a paired row measures (its iterations, fixed: a loaded host
// stretches a busy block from 0.5 ms to tens, and a time limit then stopped
// after a handful of pairs). On a quiet host about 0.2 s for busy round
// trips (256 a block), 0.3 s for streams (8192 messages), 0.2 s for
// blocking round trips (32).
inline constexpr int kPairedRttPairs = 400;
inline constexpr int kPairedStreamPairs = 200;
inline constexpr int kPairedBlockingPairs = 100;

// A block pair is read as far placement when the floor's round trip in it
// took longer than this (near ~50-130 ns, far ~300-460 ns on this VM).
inline constexpr double kFarFloorNs = 200;

// The timed loop of a paired benchmark: each iteration runs one block of
// `subject` and one of `peer` (in turn first), then one of `floor` when it
// is a leg of its own, after a few untimed warm-up cycles; the echo child
// runs their echo() in the same order until one returns false. Counters
// (ns per operation: a block's time over its operations, or their median
// where the leg times each, per_op()):
//   subject_ns, peer_ns          mean over the blocks
//   subject_p50_ns, peer_p50_ns  median over the blocks
//   ratio                        median over block pairs of subject / peer
//   ratio_p10, ratio_p90, ratio_min, ratio_max
//   floor_ns                     median of the floor's round trip (placement)
//   near_share                   share of pairs whose floor read near
//   near_ratio, far_ratio        median ratio over near / far pairs (when any)
//   pairs                        block pairs measured
// `floor` may be `peer` (the floor is then the peer's blocks), or null: the
// floor is then measured before and after (floor_ns their mean,
// floor_drift after / before) and every pair takes that placement.
// Nothing is set when a leg failed (the benchmark is skipped with `what`).
void paired_blocks(benchmark::State& state, const char* what, PairedLeg& subject, PairedLeg& peer,
                   PairedLeg* floor);

// Registers the two reference benchmarks under their plain names.
bool register_references();

}  // namespace shmbus::bench

#define SHMBUS_BENCH_REFERENCES()                               \
  [[maybe_unused]] static const bool shmbus_bench_references_ = \
      ::shmbus::bench::register_references()
