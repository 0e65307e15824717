// Dict<std::string, double> get and set with 10,000 keys: one process, and
// with a writer in another process setting random keys all the time. Peers
// in the same binary: a std::map in Boost.Interprocess managed shared memory
// under its interprocess_mutex (fast, not crash-safe: a process killed
// holding the mutex or inside the allocator stops every other), and
// Python's Manager().dict() (a server process, one proxy call per op).
// Names: BM_<Store>_<Local|Contended>_<Get|Set>/<keys>; p50_ns etc. per op.
// Readers scale: BM_Dict_ReadersBesideWriter_Get/<readers>, the measured
// reader plus readers-1 reader processes getting random keys beside one
// writer process (10,000 keys); its items_per_second is one reader's rate,
// `others_per_s` the other readers' rate each, `cpus_shared` 1 when there
// were fewer CPUs than processes (the rows then measure the scheduler).
#include <benchmark/benchmark.h>
#include <sched.h>
#include <sys/mman.h>

#include <array>
#include <atomic>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <chrono>
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

// A new store `name` holding key_of(0..keys-1).
shmbus::Dict<std::string, double> filled_dict(const std::string& name, std::size_t keys) {
  shmbus::Dict<std::string, double>::unlink(name);
  auto d = shmbus::Dict<std::string, double>::create(name);
  std::vector<std::pair<std::string, double>> all;
  for (std::size_t i = 0; i < keys; ++i) all.emplace_back(key_of(i), double(i));
  d.update(all);
  return d;
}

void BM_Dict(benchmark::State& state, bool contended, bool set) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  const std::string name = shmbus::bench::bench_name("dict");
  shmbus::Dict<std::string, double> d = filled_dict(name, keys);
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

// Readers beside one writer (see the header comment).
void BM_Dict_ReadersBesideWriter_Get(benchmark::State& state) {
  constexpr std::size_t keys = 10000;
  const auto readers = static_cast<int>(state.range(0));
  const std::string name = shmbus::bench::bench_name("dict-readers");
  shmbus::Dict<std::string, double> d = filled_dict(name, keys);
  // CPUs: the measured reader, the writer, then the others round the rest.
  std::vector<int> cpus;
  {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set) && c != bench_cpus().parent && c != bench_cpus().child)
          cpus.push_back(c);
  }
  const bool shared = static_cast<int>(cpus.size()) < readers - 1;
  if (cpus.empty()) cpus.push_back(bench_cpus().child);
  shmbus::bench::pin_this_thread(bench_cpus().parent);
  StopFlag stop;
  // The other readers' op counts, one cache line each.
  auto* counts = static_cast<std::atomic<std::uint64_t>*>(
      ::mmap(nullptr, 64 * 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  std::vector<std::unique_ptr<PinnedChild>> children;
  children.push_back(std::make_unique<PinnedChild>(bench_cpus().child, [&] {
    auto mine = shmbus::Dict<std::string, double>::open(name);
    std::mt19937_64 rng(7);
    while (!stop.flag->load(std::memory_order_relaxed)) mine.set(key_of(rng() % keys), 1.0);
  }));
  for (int r = 1; r < readers; ++r)
    children.push_back(
        std::make_unique<PinnedChild>(cpus[static_cast<std::size_t>(r - 1) % cpus.size()], [&, r] {
          auto mine = shmbus::Dict<std::string, double>::open(name);
          auto ks = random_keys(1 << 12, keys);
          double sink = 0;
          std::uint64_t n = 0;
          auto* mine_count = new (&counts[8 * (r - 1)]) std::atomic<std::uint64_t>(0);
          while (!stop.flag->load(std::memory_order_relaxed)) {
            sink += *mine.get(ks[n++ & (ks.size() - 1)]);
            if ((n & 63) == 0) mine_count->store(n, std::memory_order_relaxed);  // relaxed: a tally
          }
          benchmark::DoNotOptimize(sink);
        }));
  auto others = [&] {
    std::uint64_t sum = 0;
    for (int r = 1; r < readers; ++r) sum += counts[8 * (r - 1)].load(std::memory_order_relaxed);
    return sum;
  };
  const std::uint64_t others0 = others();
  const auto t0 = std::chrono::steady_clock::now();
  timed(state, keys, [&](const std::string& k) { return *d.get(k); });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::uint64_t others1 = others();
  stop.flag->store(true);
  for (auto& c : children) c->join();
  if (readers > 1)
    state.counters["others_per_s"] =
        static_cast<double>(others1 - others0) / secs / static_cast<double>(readers - 1);
  state.counters["cpus_shared"] = shared ? 1 : 0;
  ::munmap(counts, 64 * 8);
  shmbus::Dict<std::string, double>::unlink(name);
}
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
  benchmark::RegisterBenchmark("BM_Dict_ReadersBesideWriter_Get", BM_Dict_ReadersBesideWriter_Get)
      ->Arg(1)
      ->Arg(2)
      ->Arg(4)
      ->UseRealTime();
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
