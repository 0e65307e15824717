// Pool: what a task costs through shmbus::Pool, beside Python's
// multiprocessing.Pool (the API it mirrors), on the pinned pair from
// bench_cpus():
//
//   BM_Pool_Apply_RTT          apply(f, x) of a trivial f, one worker pinned to
//                              the child cpu, the caller on the parent cpu: the
//                              task out, the run, the result back (p50/p99 per
//                              call; read against the floor measured beside it)
//   BM_PyMpPool_Apply_RTT      Python's Pool(1).apply(f, (x,)) the same way
//   BM_Pool_Map/N              map(f, N items), one worker pinned to each cpu
//                              of the pair: items/s
//   BM_PyMpPool_Map/N          Python's pool.map(f, range(N)) the same way
//   BM_Pool_MapStrings/N       map(upper, N strings of 15..63 B) through the
//                              codec (strings out and back), as BM_Pool_Map
//   BM_PyMpPool_MapStrings/N   Python's pool.map(str.upper, the same strings)
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "shmbus/pool.hpp"

SHMBUS_BENCH_REFERENCES();

namespace shmbus::bench {
namespace {

std::int64_t square(std::int64_t x) { return x * x; }

std::string upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

// N strings of 15..63 characters ("s<i>" padded with 'x').
std::vector<std::string> bench_strings(std::size_t n) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::string s = "s" + std::to_string(i);
    s.resize(std::max<std::size_t>(s.size(), 15 + i % 49), 'x');
    out.push_back(std::move(s));
  }
  return out;
}

void BM_Pool_Apply_RTT(benchmark::State& state) {
  ReferenceBeside beside(state, Reference::floor);
  const auto& cpus = bench_cpus();
  Pool pool({.processes = 1, .cpus = {cpus.child}, .pin = true});
  pin_this_thread(cpus.parent);
  LatencyRecorder rec;
  std::int64_t x = 3;
  for (int i = 0; i < kBusyWarmUp; ++i) x = pool.apply(square, x) & 0xff;
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    x = pool.apply(square, x) & 0xff;
    rec.add_ticks(ticks() - t0);
  }
  benchmark::DoNotOptimize(x);
  pool.close();
  pool.join();
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_Pool_Map(benchmark::State& state) {
  const auto& cpus = bench_cpus();
  Pool pool({.cpus = {cpus.parent, cpus.child}, .pin = true});
  pin_this_thread(cpus.parent);
  std::vector<std::int64_t> xs(static_cast<std::size_t>(state.range(0)));
  std::iota(xs.begin(), xs.end(), 0);
  for (int i = 0; i < 20; ++i) benchmark::DoNotOptimize(pool.map(square, xs));
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(square, xs));
  pool.close();
  pool.join();
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_Pool_MapStrings(benchmark::State& state) {
  const auto& cpus = bench_cpus();
  Pool pool({.cpus = {cpus.parent, cpus.child}, .pin = true});
  pin_this_thread(cpus.parent);
  const auto xs = bench_strings(static_cast<std::size_t>(state.range(0)));
  for (int i = 0; i < 20; ++i) benchmark::DoNotOptimize(pool.map(upper, xs));
  for (auto _ : state) benchmark::DoNotOptimize(pool.map(upper, xs));
  pool.close();
  pool.join();
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_PyMpPool_Apply_RTT(benchmark::State& state) {
  ReferenceBeside beside(state, Reference::floor);
  const auto& cpus = bench_cpus();
  python_peer(state, "py_mp_pool.py",
              {"apply", std::to_string(state.max_iterations), std::to_string(cpus.parent),
               std::to_string(cpus.child)});
}

void BM_PyMpPool_Map(benchmark::State& state) {
  const auto& cpus = bench_cpus();
  python_peer(state, "py_mp_pool.py",
              {"map", std::to_string(state.max_iterations), std::to_string(state.range(0)),
               std::to_string(cpus.parent),
               std::to_string(cpus.parent) + "," + std::to_string(cpus.child)});
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_PyMpPool_MapStrings(benchmark::State& state) {
  const auto& cpus = bench_cpus();
  python_peer(state, "py_mp_pool.py",
              {"map_strings", std::to_string(state.max_iterations), std::to_string(state.range(0)),
               std::to_string(cpus.parent),
               std::to_string(cpus.parent) + "," + std::to_string(cpus.child)});
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

[[maybe_unused]] const bool registered = [] {
  benchmark::RegisterBenchmark("BM_Pool_Apply_RTT", BM_Pool_Apply_RTT)->UseRealTime();
  benchmark::RegisterBenchmark("BM_Pool_Map", BM_Pool_Map)->Arg(10000)->UseRealTime();
  benchmark::RegisterBenchmark("BM_Pool_MapStrings", BM_Pool_MapStrings)->Arg(10000)->UseRealTime();
  const std::int64_t py = python_iterations();
  benchmark::RegisterBenchmark("BM_PyMpPool_Apply_RTT", BM_PyMpPool_Apply_RTT)
      ->Iterations(py)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_PyMpPool_Map", BM_PyMpPool_Map)
      ->Arg(10000)
      ->Iterations(std::max<std::int64_t>(1, py / 100))
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_PyMpPool_MapStrings", BM_PyMpPool_MapStrings)
      ->Arg(10000)
      ->Iterations(std::max<std::int64_t>(1, py / 100))
      ->UseManualTime();
  return true;
}();

}  // namespace
}  // namespace shmbus::bench

BENCHMARK_MAIN();
