#include "bench_support.hpp"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "shmbus/detail/futex.hpp"
#include "shmbus/error.hpp"
#include "shmbus/shared_memory.hpp"
#include "shmbus/topology.hpp"

namespace shmbus::bench {

const CpuPair& bench_cpus() {
  static const CpuPair pair = [] {
    CpuPair p;
    if (const char* env = std::getenv("SHMBUS_BENCH_CPUS")) {
      if (std::sscanf(env, "%d,%d", &p.parent, &p.child) == 2) {
        p.why = "cpus " + std::to_string(p.parent) + " and " + std::to_string(p.child) +
                " from SHMBUS_BENCH_CPUS";
        return p;
      }
    }
    try {
      const CpuPlacement pick = Topology::current().pick_pair(Placement::near);
      p.parent = pick.producer;
      p.child = pick.consumer;
      p.why = pick.why;
    } catch (const Error& e) {
      long n = ::sysconf(_SC_NPROCESSORS_ONLN);
      p.parent = 0;
      p.child = n > 1 ? 1 : 0;
      p.why = std::string("cpus 0 and ") + std::to_string(p.child) +
              ": the topology layer failed (" + e.what() + ")";
    }
    return p;
  }();
  return pair;
}

bool pin_this_thread(int cpu) {
  try {
    shmbus::pin_this_thread(cpu);
    return true;
  } catch (const Error&) {
    return false;
  }
}

double ns_per_tick() {
  static const double value = [] {
    auto t0 = std::chrono::steady_clock::now();
    std::uint64_t c0 = ticks();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto t1 = std::chrono::steady_clock::now();
    std::uint64_t c1 = ticks();
    double ns =
        static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    return ns / static_cast<double>(c1 - c0);
  }();
  return value;
}

void LatencyRecorder::report(benchmark::State& state) {
  if (samples_.empty()) return;
  std::sort(samples_.begin(), samples_.end());
  const double k = ns_per_tick();
  auto at = [&](double q) {
    std::size_t i = static_cast<std::size_t>(q * static_cast<double>(samples_.size() - 1));
    return static_cast<double>(samples_[i]) * k;
  };
  state.counters["p50_ns"] = at(0.50);
  state.counters["p99_ns"] = at(0.99);
  state.counters["p999_ns"] = at(0.999);
  state.counters["max_ns"] = static_cast<double>(samples_.back()) * k;
}

PinnedChild::PinnedChild(int cpu, std::function<void()> body) {
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    pin_this_thread(cpu);
    body();
    ::_exit(0);
  }
}

bool PinnedChild::join() {
  if (pid_ <= 0) return false;
  int status = 0;
  for (int i = 0; i < 10000; ++i) {  // 10 s at most
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return false;
}

PinnedChild::~PinnedChild() {
  if (pid_ > 0) join();
}

std::string bench_name(const std::string& stem) {
  static int counter = 0;
  return "bench-" + std::to_string(::getpid()) + "-" + stem + "-" + std::to_string(counter++);
}

namespace {

// One cache line: the parent writes odd values, the child answers with the
// next even value. Value 0 = not started, UINT64_MAX = stop.
struct alignas(64) PingLine {
  std::atomic<std::uint64_t> value;
};
constexpr std::uint64_t kStop = ~std::uint64_t{0};

}  // namespace

void BM_Floor_CacheLine_RTT(benchmark::State& state) {
  const auto& cpus = bench_cpus();
  auto shm = SharedMemory::create(bench_name("floor"), sizeof(PingLine));
  shm.unlink();
  auto* line = new (shm.buf().data()) PingLine{};
  PinnedChild child(cpus.child, [line] {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t v;
      // acquire: pairs with the parent's release store of the ping.
      while ((v = line->value.load(std::memory_order_acquire)) == seen) detail::cpu_relax();
      if (v == kStop) return;
      seen = v + 1;
      // release: pairs with the parent's acquire load of the pong.
      line->value.store(seen, std::memory_order_release);
    }
  });
  pin_this_thread(cpus.parent);
  LatencyRecorder rec;
  std::uint64_t v = 1;
  for (int i = 0; i < kBusyWarmUp; ++i, v += 2) {
    line->value.store(v, std::memory_order_release);
    while (line->value.load(std::memory_order_acquire) != v + 1) detail::cpu_relax();
  }
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    line->value.store(v, std::memory_order_release);
    while (line->value.load(std::memory_order_acquire) != v + 1) detail::cpu_relax();
    rec.add_ticks(ticks() - t0);
    v += 2;
  }
  line->value.store(kStop, std::memory_order_release);
  if (!child.join()) state.SkipWithError("floor child failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_Futex_Raw_RTT(benchmark::State& state) {
  // Two futex words: the parent bumps `ping` and wakes; the child sleeps on
  // `ping`, bumps `pong` and wakes; the parent sleeps on `pong`. Both always
  // sleep (no spinning): the bare kernel wake-up cost.
  struct Words {
    alignas(64) std::atomic<std::uint32_t> ping;
    alignas(64) std::atomic<std::uint32_t> pong;
    alignas(64) std::atomic<std::uint32_t> stop;
  };
  const auto& cpus = bench_cpus();
  auto shm = SharedMemory::create(bench_name("futex"), sizeof(Words));
  shm.unlink();
  auto* w = new (shm.buf().data()) Words{};
  PinnedChild child(cpus.child, [w] {
    std::uint32_t seen = 0;
    for (;;) {
      // acquire: pairs with the parent's release increment of ping.
      std::uint32_t v = w->ping.load(std::memory_order_acquire);
      if (v == seen) {
        detail::futex_wait(w->ping, seen, nullptr);
        continue;
      }
      if (w->stop.load(std::memory_order_acquire) != 0) return;
      seen = v;
      w->pong.fetch_add(1, std::memory_order_release);
      detail::futex_wake(w->pong, 1);
    }
  });
  pin_this_thread(cpus.parent);
  LatencyRecorder rec;
  std::uint32_t n = 0;
  for (int i = 0; i < kBlockWarmUp; ++i) {
    w->ping.fetch_add(1, std::memory_order_release);
    detail::futex_wake(w->ping, 1);
    ++n;
    while (w->pong.load(std::memory_order_acquire) != n) {
      detail::futex_wait(w->pong, n - 1, nullptr);
    }
  }
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    w->ping.fetch_add(1, std::memory_order_release);
    detail::futex_wake(w->ping, 1);
    ++n;
    // acquire: pairs with the child's release increment of pong.
    while (w->pong.load(std::memory_order_acquire) != n) {
      detail::futex_wait(w->pong, n - 1, nullptr);
    }
    rec.add_ticks(ticks() - t0);
  }
  w->stop.store(1, std::memory_order_release);
  w->ping.fetch_add(1, std::memory_order_release);
  detail::futex_wake(w->ping, 1);
  if (!child.join()) state.SkipWithError("futex child failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

bool register_references() {
  // The pair and the reason travel in the JSON's "context" for the report.
  const CpuPair& cpus = bench_cpus();
  benchmark::AddCustomContext("shmbus_cpus",
                              std::to_string(cpus.parent) + "," + std::to_string(cpus.child));
  benchmark::AddCustomContext("shmbus_cpus_why", cpus.why);
  benchmark::RegisterBenchmark("BM_Floor_CacheLine_RTT", BM_Floor_CacheLine_RTT)->UseRealTime();
  benchmark::RegisterBenchmark("BM_Futex_Raw_RTT", BM_Futex_Raw_RTT)->UseRealTime();
  return true;
}

}  // namespace shmbus::bench
