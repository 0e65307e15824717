// Dict<std::string, double> get and set with 10,000 keys: one process, and
// with a writer in another process setting random keys all the time. Peers
// in the same binary: a std::map in Boost.Interprocess managed shared memory
// under its interprocess_mutex (fast, not crash-safe: a process killed
// holding the mutex or inside the allocator stops every other), and
// Python's Manager().dict() (a server process, one proxy call per op).
// Names: BM_<Store>_<Local|Contended>_<Get|Set>/<keys>; p50_ns etc. per op.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <array>
#include <atomic>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "shmbus/dict.hpp"

namespace {

namespace bip = boost::interprocess;
using shmbus::bench::bench_cpus;
using shmbus::bench::LatencyRecorder;
using shmbus::bench::PinnedChild;
using shmbus::bench::ticks;

std::string key_of(std::uint64_t i) { return "key" + std::to_string(i); }

// A stop flag the parent and its forked writer share.
struct StopFlag {
  std::atomic<bool>* flag;
  StopFlag() {
    void* p = ::mmap(nullptr, 64, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    flag = new (p) std::atomic<bool>(false);
  }
  ~StopFlag() { ::munmap(flag, 64); }
};

// The keys each measured op touches, drawn before the timed loop.
std::vector<std::string> random_keys(std::size_t n, std::size_t keys) {
  std::mt19937_64 rng(42);
  std::vector<std::string> out(n);
  for (auto& k : out) k = key_of(rng() % keys);
  return out;
}

template <class Op>
void timed(benchmark::State& state, std::size_t keys, Op&& op) {
  auto ks = random_keys(1 << 16, keys);
  LatencyRecorder rec;
  std::size_t i = 0;
  double sink = 0;
  for (auto _ : state) {
    const std::string& k = ks[i++ & (ks.size() - 1)];
    std::uint64_t t0 = ticks();
    sink += op(k);
    rec.add_ticks(ticks() - t0);
  }
  benchmark::DoNotOptimize(sink);
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

// ---- shmbus::Dict -------------------------------------------------------

void BM_Dict(benchmark::State& state, bool contended, bool set) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  const std::string name = shmbus::bench::bench_name("dict");
  shmbus::Dict<std::string, double>::unlink(name);
  shmbus::Dict<std::string, double> d = shmbus::Dict<std::string, double>::create(name);
  {
    std::vector<std::pair<std::string, double>> all;
    for (std::size_t i = 0; i < keys; ++i) all.emplace_back(key_of(i), double(i));
    d.update(all);
  }
  shmbus::bench::pin_this_thread(bench_cpus().parent);
  StopFlag stop;
  std::unique_ptr<PinnedChild> writer;
  if (contended)
    writer = std::make_unique<PinnedChild>(bench_cpus().child, [&] {
      auto mine = shmbus::Dict<std::string, double>::open(name);
      std::mt19937_64 rng(7);
      while (!stop.flag->load(std::memory_order_relaxed)) mine.set(key_of(rng() % keys), 1.0);
    });
  if (set)
    timed(state, keys, [&](const std::string& k) {
      d.set(k, 2.0);
      return 0.0;
    });
  else
    timed(state, keys, [&](const std::string& k) { return *d.get(k); });
  stop.flag->store(true);
  if (writer) writer->join();
  shmbus::Dict<std::string, double>::unlink(name);
}
void BM_Dict_Local_Get(benchmark::State& s) { BM_Dict(s, false, false); }
void BM_Dict_Local_Set(benchmark::State& s) { BM_Dict(s, false, true); }
void BM_Dict_Contended_Get(benchmark::State& s) { BM_Dict(s, true, false); }
void BM_Dict_Contended_Set(benchmark::State& s) { BM_Dict(s, true, true); }

// ---- std::map in Boost.Interprocess managed shared memory ----------------

using Key = std::array<char, 16>;
using Alloc =
    bip::allocator<std::pair<const Key, double>, bip::managed_shared_memory::segment_manager>;
using ShmMap = bip::map<Key, double, std::less<Key>, Alloc>;
Key bkey(const std::string& s) {
  Key k{};
  s.copy(k.data(), k.size());
  return k;
}

void BM_BoostMap(benchmark::State& state, bool contended, bool set) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  const std::string name = shmbus::bench::bench_name("bipmap");
  bip::shared_memory_object::remove(name.c_str());
  bip::managed_shared_memory seg(bip::create_only, name.c_str(), 16 << 20);
  auto* mu = seg.construct<bip::interprocess_mutex>("mu")();
  auto* m = seg.construct<ShmMap>("map")(seg.get_segment_manager());
  for (std::size_t i = 0; i < keys; ++i) m->emplace(bkey(key_of(i)), double(i));
  shmbus::bench::pin_this_thread(bench_cpus().parent);
  StopFlag stop;
  std::unique_ptr<PinnedChild> writer;
  if (contended)
    writer = std::make_unique<PinnedChild>(bench_cpus().child, [&] {
      bip::managed_shared_memory s(bip::open_only, name.c_str());
      auto* cm = s.find<ShmMap>("map").first;
      auto* cmu = s.find<bip::interprocess_mutex>("mu").first;
      std::mt19937_64 rng(7);
      while (!stop.flag->load(std::memory_order_relaxed)) {
        Key k = bkey(key_of(rng() % keys));
        bip::scoped_lock<bip::interprocess_mutex> g(*cmu);
        (*cm)[k] = 1.0;
      }
    });
  if (set)
    timed(state, keys, [&](const std::string& k) {
      Key bk = bkey(k);
      bip::scoped_lock<bip::interprocess_mutex> g(*mu);
      (*m)[bk] = 2.0;
      return 0.0;
    });
  else
    timed(state, keys, [&](const std::string& k) {
      Key bk = bkey(k);
      bip::scoped_lock<bip::interprocess_mutex> g(*mu);
      return m->find(bk)->second;
    });
  stop.flag->store(true);
  if (writer) writer->join();
  bip::shared_memory_object::remove(name.c_str());
}
void BM_BoostMap_Local_Get(benchmark::State& s) { BM_BoostMap(s, false, false); }
void BM_BoostMap_Local_Set(benchmark::State& s) { BM_BoostMap(s, false, true); }
void BM_BoostMap_Contended_Get(benchmark::State& s) { BM_BoostMap(s, true, false); }
void BM_BoostMap_Contended_Set(benchmark::State& s) { BM_BoostMap(s, true, true); }

// ---- Python Manager().dict() --------------------------------------------

void py_dict(benchmark::State& state, const char* mode) {
  const auto& cpus = bench_cpus();
  shmbus::bench::python_peer(
      state, "py_mp_dict.py",
      {mode, std::to_string(state.max_iterations), std::to_string(state.range(0)),
       std::to_string(cpus.parent), std::to_string(cpus.child)});
}
void BM_PyMpManagerDict_Local_Get(benchmark::State& s) { py_dict(s, "get"); }
void BM_PyMpManagerDict_Local_Set(benchmark::State& s) { py_dict(s, "set"); }

[[maybe_unused]] const bool registered = [] {
  using Fn = void (*)(benchmark::State&);
  for (auto [name, fn] : {std::pair<const char*, Fn>{"BM_Dict_Local_Get", BM_Dict_Local_Get},
                          {"BM_Dict_Local_Set", BM_Dict_Local_Set},
                          {"BM_Dict_Contended_Get", BM_Dict_Contended_Get},
                          {"BM_Dict_Contended_Set", BM_Dict_Contended_Set},
                          {"BM_BoostMap_Local_Get", BM_BoostMap_Local_Get},
                          {"BM_BoostMap_Local_Set", BM_BoostMap_Local_Set},
                          {"BM_BoostMap_Contended_Get", BM_BoostMap_Contended_Get},
                          {"BM_BoostMap_Contended_Set", BM_BoostMap_Contended_Set}})
    benchmark::RegisterBenchmark(name, fn)->Arg(10000)->UseRealTime();
  const std::int64_t py = shmbus::bench::python_iterations();
  benchmark::RegisterBenchmark("BM_PyMpManagerDict_Local_Get", BM_PyMpManagerDict_Local_Get)
      ->Arg(10000)
      ->Iterations(py)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_PyMpManagerDict_Local_Set", BM_PyMpManagerDict_Local_Set)
      ->Arg(10000)
      ->Iterations(py)
      ->UseManualTime();
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
