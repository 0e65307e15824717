#include "bench_support.hpp"

#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>

#include "shmbus/detail/futex.hpp"
#include "shmbus/error.hpp"
#include "shmbus/pipe.hpp"
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

double LatencyRecorder::p50_ns() {
  if (samples_.empty()) return 0;
  auto mid = samples_.begin() + static_cast<std::ptrdiff_t>((samples_.size() - 1) / 2);
  std::nth_element(samples_.begin(), mid, samples_.end());
  return static_cast<double>(*mid) * ns_per_tick();
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

bool read_full(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_full(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

std::string bench_name(const std::string& stem) {
  static int counter = 0;
  return "bench-" + std::to_string(::getpid()) + "-" + stem + "-" + std::to_string(counter++);
}

namespace {

// One cache line: the parent writes odd values, the child answers with the
// next even value; UINT64_MAX = stop.
struct alignas(64) PingLine {
  std::atomic<std::uint64_t> value;
};
constexpr std::uint64_t kStop = ~std::uint64_t{0};
// The floor bounces one line per round trip, taking the lines of this many
// pages in turn. Which line costs what depends on its page: on the 2-vCPU
// EPYC VM one line's round trip read 400-410 ns in some pages and 440-450
// ns in others, the same page alike on a second pass. A one-page floor
// was a draw from that spread, while a pipe's frames cross its ring's many
// pages: the floor now takes the median over lines in 16 pages.
constexpr std::size_t kFloorPages = 16;
constexpr std::size_t kPageSize = 4096;
// Round trip i bounces the line of page i % kFloorPages with value 2i+1
// (floor_session and FloorLeg).
PingLine* floor_line(std::byte* base, std::uint64_t i) noexcept {
  return std::launder(reinterpret_cast<PingLine*>(base + (i % kFloorPages) * kPageSize));
}

// The floor's loop, shared by BM_Floor_CacheLine_RTT and floor_p50_ns():
// forks the echoing child, pins the caller, makes kBusyWarmUp untimed round
// trips, then calls `timed(round_trip)`, where round_trip() makes one timed
// round trip and returns its ticks; stops the child. False if the child
// failed.
template <class Timed>
bool floor_session(Timed timed) {
  const auto& cpus = bench_cpus();
  auto shm = SharedMemory::create(bench_name("floor"), kFloorPages * kPageSize);
  shm.unlink();
  std::byte* base = shm.buf().data();
  for (std::size_t p = 0; p < kFloorPages; ++p) new (base + p * kPageSize) PingLine{};
  auto line = [base](std::uint64_t i) { return floor_line(base, i); };
  PinnedChild child(cpus.child, [&line] {
    for (std::uint64_t i = 0;; ++i) {
      PingLine* l = line(i);
      std::uint64_t v;
      // acquire: [floor.ping] pairs with the parent's release store of the ping.
      while ((v = l->value.load(std::memory_order_acquire)) != 2 * i + 1) {
        if (v == kStop) return;
        detail::cpu_relax();
      }
      // release: [floor.pong] pairs with the parent's acquire load of the pong.
      l->value.store(2 * i + 2, std::memory_order_release);
    }
  });
  pin_this_thread(cpus.parent);
  std::uint64_t trips = 0;
  auto round_trip = [&line, &trips]() noexcept {
    PingLine* l = line(trips);
    const std::uint64_t v = 2 * trips + 1;
    const std::uint64_t t0 = ticks();
    // release: [floor.ping]; acquire: [floor.pong].
    l->value.store(v, std::memory_order_release);
    while (l->value.load(std::memory_order_acquire) != v + 1) detail::cpu_relax();
    const std::uint64_t t = ticks() - t0;
    ++trips;
    return t;
  };
  for (int i = 0; i < kBusyWarmUp; ++i) (void)round_trip();
  timed(round_trip);
  // release: [floor.ping] the stop value, on the line the child polls.
  line(trips)->value.store(kStop, std::memory_order_release);
  return child.join();
}

// Two futex words: the parent bumps `ping` and wakes; the child sleeps on
// `ping`, bumps `pong` and wakes; the parent sleeps on `pong`. Both always
// sleep (no spinning): the bare kernel wake-up cost. Shared by
// BM_Futex_Raw_RTT and futex_p50_ns() like floor_session (kBlockWarmUp
// untimed round trips first).
template <class Timed>
bool futex_session(Timed timed) {
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
      // acquire: [futex.ping] pairs with the parent's release increment of ping.
      std::uint32_t v = w->ping.load(std::memory_order_acquire);
      if (v == seen) {
        detail::futex_wait(w->ping, seen, nullptr);
        continue;
      }
      // acquire: [futex.stop] pairs with the parent's release store of stop.
      if (w->stop.load(std::memory_order_acquire) != 0) return;
      seen = v;
      // release: [futex.pong] pairs with the parent's acquire load of pong.
      w->pong.fetch_add(1, std::memory_order_release);
      detail::futex_wake(w->pong, 1);
    }
  });
  pin_this_thread(cpus.parent);
  std::uint32_t n = 0;
  auto round_trip = [w, &n]() noexcept {
    const std::uint64_t t0 = ticks();
    // release: [futex.ping].
    w->ping.fetch_add(1, std::memory_order_release);
    detail::futex_wake(w->ping, 1);
    ++n;
    // acquire: [futex.pong].
    while (w->pong.load(std::memory_order_acquire) != n) {
      detail::futex_wait(w->pong, n - 1, nullptr);
    }
    return ticks() - t0;
  };
  for (int i = 0; i < kBlockWarmUp; ++i) (void)round_trip();
  timed(round_trip);
  // release: [futex.stop] before the last ping wakes the child.
  w->stop.store(1, std::memory_order_release);
  w->ping.fetch_add(1, std::memory_order_release);
  detail::futex_wake(w->ping, 1);
  return child.join();
}

template <class Session>
void reference_benchmark(benchmark::State& state, Session session, const char* failed) {
  LatencyRecorder rec;
  const bool ok = session([&](auto& round_trip) {
    for (auto _ : state) rec.add_ticks(round_trip());
  });
  if (!ok) state.SkipWithError(failed);
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

template <class Session>
double reference_p50_ns(Session session, int round_trips) {
  LatencyRecorder rec(static_cast<std::size_t>(std::max(round_trips, 1)));
  const bool ok = session([&](auto& round_trip) {
    for (int i = 0; i < round_trips; ++i) rec.add_ticks(round_trip());
  });
  return ok ? rec.p50_ns() : 0.0;
}

}  // namespace

void BM_Floor_CacheLine_RTT(benchmark::State& state) {
  reference_benchmark(
      state, [](auto timed) { return floor_session(timed); }, "floor child failed");
}

void BM_Futex_Raw_RTT(benchmark::State& state) {
  reference_benchmark(
      state, [](auto timed) { return futex_session(timed); }, "futex child failed");
}

double floor_p50_ns(int round_trips) {
  return reference_p50_ns([](auto timed) { return floor_session(timed); }, round_trips);
}

double futex_p50_ns(int round_trips) {
  return reference_p50_ns([](auto timed) { return futex_session(timed); }, round_trips);
}

ReferenceBeside::ReferenceBeside(benchmark::State& state, Reference ref)
    : state_(state), ref_(ref), before_ns_(measure()) {}

ReferenceBeside::~ReferenceBeside() {
  if (state_.error_occurred() || before_ns_ <= 0) return;
  const auto p50 = state_.counters.find("p50_ns");
  if (p50 == state_.counters.end() || !(p50->second.value > 0)) return;
  const double after_ns = measure();
  if (!(after_ns > 0)) return;
  const double ref_ns = (before_ns_ + after_ns) / 2;
  const std::string name = ref_ == Reference::floor ? "floor" : "futex";
  state_.counters[name + "_ns"] = ref_ns;
  state_.counters["x_" + name] = p50->second.value / ref_ns;
  state_.counters[name + "_drift"] = after_ns / before_ns_;
}

double ReferenceBeside::measure() const noexcept {
  try {
    return ref_ == Reference::floor ? floor_p50_ns() : futex_p50_ns();
  } catch (...) {  // a shared-memory or allocation failure: no reference
    return 0;
  }
}

std::int64_t python_iterations() {
  if (const char* env = std::getenv("SHMBUS_BENCH_PY_ITERS")) {
    const long v = std::atol(env);
    if (v > 0) return v;
  }
  return 2000;
}

void python_peer(benchmark::State& state, const std::string& script,
                 const std::vector<std::string>& args) {
  std::string cmd =
      std::string(SHMBUS_BENCH_PYTHON) + " " + SHMBUS_BENCH_SUPPORT_DIR + "/" + script;
  for (const auto& a : args) cmd += " " + a;
  bool ran = false;
  for (auto _ : state) {
    if (ran) {
      state.SetIterationTime(0);
      continue;
    }
    ran = true;
    FILE* f = ::popen(cmd.c_str(), "r");
    double p50 = 0, p99 = 0, p999 = 0, mx = 0, total = 0, n = 0;
    const int got =
        f ? std::fscanf(f, "%lf %lf %lf %lf %lf %lf", &p50, &p99, &p999, &mx, &total, &n) : 0;
    const int rc = f ? ::pclose(f) : -1;
    if (got != 6 || rc != 0) {
      state.SkipWithError(("python peer failed: " + cmd).c_str());
      break;
    }
    state.SetIterationTime(total / 1e9);
    state.counters["p50_ns"] = p50;
    state.counters["p99_ns"] = p99;
    state.counters["p999_ns"] = p999;
    state.counters["max_ns"] = mx;
  }
  state.SetItemsProcessed(state.iterations());
}

void python_round_trip(benchmark::State& state, const char* kind) {
  ReferenceBeside beside(state, Reference::futex);
  const auto& cpus = bench_cpus();
  python_peer(state, "py_mp_rtt.py",
              {kind, std::to_string(state.max_iterations), std::to_string(state.range(0)),
               std::to_string(cpus.parent), std::to_string(cpus.child)});
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

// --- Paired benchmarks ---------------------------------------------------------

std::uint64_t PairedLeg::op_median_ticks() noexcept {
  if (ops_ == 0) return 0;
  const auto mid = op_ticks_.begin() + static_cast<std::ptrdiff_t>((ops_ - 1) / 2);
  std::nth_element(op_ticks_.begin(), mid, op_ticks_.begin() + static_cast<std::ptrdiff_t>(ops_));
  return *mid;
}

FloorLeg::FloorLeg(int block) : PairedLeg(block) {
  // Anonymous shared memory: forked into the echo child, no name to remove.
  void* p = ::mmap(nullptr, kFloorPages * kPageSize, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error(Errc::system, "floor leg", "mmap failed");
  base_ = static_cast<std::byte*>(p);
  for (std::size_t i = 0; i < kFloorPages; ++i) new (base_ + i * kPageSize) PingLine{};
}

FloorLeg::~FloorLeg() { ::munmap(base_, kFloorPages * kPageSize); }

bool FloorLeg::run() noexcept {
  for (int k = 0; k < block(); ++k, ++trips_) {
    PingLine* l = floor_line(base_, trips_);
    const std::uint64_t v = 2 * trips_ + 1;
    // release: [floor.ping]; acquire: [floor.pong] (floor_session's pair).
    l->value.store(v, std::memory_order_release);
    while (l->value.load(std::memory_order_acquire) != v + 1) detail::cpu_relax();
  }
  return true;
}

bool FloorLeg::echo() noexcept {
  for (int k = 0; k < block(); ++k, ++trips_) {
    PingLine* l = floor_line(base_, trips_);
    std::uint64_t v;
    // acquire: [floor.ping] pairs with the parent's release store of the ping.
    while ((v = l->value.load(std::memory_order_acquire)) != 2 * trips_ + 1) {
      if (v == kStop) return false;
      detail::cpu_relax();
    }
    // release: [floor.pong] pairs with the parent's acquire load of the pong.
    l->value.store(2 * trips_ + 2, std::memory_order_release);
  }
  return true;
}

void FloorLeg::stop() noexcept {
  // release: [floor.ping] the stop value, on the line the child polls next
  // (it has answered every round trip the parent made).
  floor_line(base_, trips_)->value.store(kStop, std::memory_order_release);
}

PipeRttLeg::PipeRttLeg(const PipeOptions& options, std::size_t size, int block)
    : PairedLeg(block), msg_(size, std::byte{0x5a}), buf_(size) {
  auto [a, b] = Pipe(options);
  a_ = std::move(a);
  b_ = std::move(b);
}

bool PipeRttLeg::run() noexcept {
  std::size_t n = 0;
  for (int k = 0; k < block(); ++k) {
    if (a_.send_bytes(msg_) != SendResult::ok || a_.recv_bytes_into(buf_, 0, n) != RecvResult::ok)
      return false;
  }
  return true;
}

bool PipeRttLeg::echo() noexcept {
  std::size_t n = 0;
  for (int k = 0; k < block(); ++k) {
    if (b_.recv_bytes_into(buf_, 0, n) != RecvResult::ok ||
        b_.send_bytes({buf_.data(), n}) != SendResult::ok)
      return false;
  }
  return true;
}

namespace {

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

double mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / static_cast<double>(v.size());
}

// Untimed cycles before the timed loop: the child running and pinned, its
// pages touched (kBusyWarmUp round trips at the usual 256 a block).
constexpr int kPairedWarmUpCycles = 4;

}  // namespace

void paired_blocks(benchmark::State& state, const char* what, PairedLeg& subject, PairedLeg& peer,
                   PairedLeg* floor) {
  const bool floor_leg = floor != nullptr && floor != &subject && floor != &peer;
  // Cycle c runs subject, peer on even c and peer, subject on odd c, then
  // the floor when it is a leg of its own: each side follows the other as
  // often, so what a block inherits from the one before (a cpu that had
  // not gone idle, a line still in flight) does not favour one side.
  auto cycle = [&subject, &peer, floor, floor_leg](std::uint64_t c) {
    std::array<PairedLeg*, 3> order{&subject, &peer, floor_leg ? floor : nullptr};
    if (c % 2 == 1) std::swap(order[0], order[1]);
    return order;
  };
  const auto& cpus = bench_cpus();
  // Without a floor in the cycle, its round trip before and after the
  // child's run gives the placement (as ReferenceBeside does).
  const double floor_before = floor == nullptr ? floor_p50_ns() : 0;
  PinnedChild child(cpus.child, [&cycle] {
    for (std::uint64_t c = 0;; ++c) {
      for (PairedLeg* leg : cycle(c)) {
        if (leg != nullptr && !leg->echo()) return;
      }
    }
  });
  pin_this_thread(cpus.parent);
  bool ok = true;
  std::uint64_t c = 0;
  for (; c < kPairedWarmUpCycles && ok; ++c) {
    for (PairedLeg* leg : cycle(c)) ok = ok && (leg == nullptr || leg->run());
  }
  // Per block pair: ns per operation of each leg.
  std::vector<double> subject_ns, peer_ns, floor_ns;
  const double k = ns_per_tick();
  for (auto _ : state) {
    for (PairedLeg* leg : cycle(c)) {
      if (leg == nullptr || !ok) continue;
      leg->begin_block();
      const std::uint64_t t0 = ticks();
      ok = leg->run();
      const std::uint64_t t = ticks() - t0;
      (leg == &subject ? subject_ns
       : leg == &peer  ? peer_ns
                       : floor_ns)
          .push_back(leg->per_op() ? static_cast<double>(leg->op_median_ticks()) * k
                                   : static_cast<double>(t) * k / leg->block());
    }
    ++c;
    if (!ok) break;
  }
  subject.stop();
  peer.stop();
  if (floor_leg) floor->stop();
  if (!child.join() || !ok) {
    state.SkipWithError(what);
    return;
  }
  if (floor == nullptr) {
    const double floor_after = floor_p50_ns();
    floor_ns.assign(subject_ns.size(), (floor_before + floor_after) / 2);
    state.counters["floor_drift"] = floor_before > 0 ? floor_after / floor_before : 0;
  }
  const std::vector<double>& placement = floor == &subject ? subject_ns
                                         : floor == &peer  ? peer_ns
                                                           : floor_ns;
  std::vector<double> ratio, near, far;
  for (std::size_t i = 0; i < subject_ns.size() && i < peer_ns.size(); ++i) {
    const double r = subject_ns[i] / peer_ns[i];
    ratio.push_back(r);
    (placement[i] > kFarFloorNs ? far : near).push_back(r);
  }
  state.counters["subject_ns"] = mean(subject_ns);
  state.counters["peer_ns"] = mean(peer_ns);
  state.counters["subject_p50_ns"] = quantile(subject_ns, 0.5);
  state.counters["peer_p50_ns"] = quantile(peer_ns, 0.5);
  state.counters["ratio"] = quantile(ratio, 0.5);
  state.counters["ratio_p10"] = quantile(ratio, 0.1);
  state.counters["ratio_p90"] = quantile(ratio, 0.9);
  state.counters["ratio_min"] = quantile(ratio, 0);
  state.counters["ratio_max"] = quantile(ratio, 1);
  state.counters["floor_ns"] = quantile(placement, 0.5);
  state.counters["near_share"] = static_cast<double>(near.size()) /
                                 static_cast<double>(std::max<std::size_t>(ratio.size(), 1));
  if (!near.empty()) state.counters["near_ratio"] = quantile(near, 0.5);
  if (!far.empty()) state.counters["far_ratio"] = quantile(far, 0.5);
  state.counters["pairs"] = static_cast<double>(ratio.size());
}

void pipe_round_trip(benchmark::State& state, const PipeOptions& options) {
  const WaitStrategy strategy = options.wait.strategy;
  ReferenceBeside beside(state, reference_for(strategy));
  const auto& cpus = bench_cpus();
  const auto size = static_cast<std::size_t>(state.range(0));
  auto [a, b] = Pipe(options);
  PinnedChild child(cpus.child, [&b = b, size] {
    std::vector<std::byte> buf(size);
    std::size_t n = 0;
    while (b.recv_bytes_into(buf, 0, n) == RecvResult::ok) {
      if (b.send_bytes({buf.data(), n}) != SendResult::ok) return;
    }
  });
  pin_this_thread(cpus.parent);
  std::vector<std::byte> msg(size, std::byte{0x5a}), buf(size);
  std::size_t n = 0;
  const int warm = strategy == WaitStrategy::blocking ? kBlockWarmUp : kBusyWarmUp;
  timed_round_trips(state, warm, "pipe round trip failed", [&] {
    return a.send_bytes(msg) == SendResult::ok && a.recv_bytes_into(buf, 0, n) == RecvResult::ok;
  });
  a.close();
  if (!child.join()) state.SkipWithError("echo child failed");
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
}

}  // namespace shmbus::bench
