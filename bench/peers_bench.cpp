// The peer transports shmbus is compared with, as two-process round trips
// (64 B, percentiles per round trip) and streams, on the pinned pair from
// bench_cpus(), beside the floor and the raw futex in the same binary run:
//
//   BM_LinuxPipe_Block_RTT/64    two pipe(2)s, write + blocking read
//   BM_LinuxPipe_Stream/N        one pipe, the child reads until EOF
//   BM_SocketPair_Block_RTT/64   AF_UNIX SOCK_STREAM socketpair
//   BM_SocketPair_Stream/N
//   BM_EventFd_Block_RTT         two eventfds (no payload)
//   BM_PosixMq_Block_RTT/64      two POSIX message queues
//   BM_BoostIpcMq_Block_RTT/64   two boost::interprocess::message_queue
//   BM_BoostLockfree_Busy_RTT/64 two boost::lockfree::spsc_queue in shared
//                                memory, both sides busy-polling
//   BM_BoostLockfree_Stream/N    one spsc_queue, producer -> consumer
//   BM_ZeroMQ_Block_RTT/64       ZMQ_PAIR over ipc:// (when libzmq is found)
//   BM_PyMpPipe_Block_RTT/64     Python multiprocessing Pipe / Queue: a
//   BM_PyMpQueue_Block_RTT/64    /usr/bin/python3 child measures its own
//                                round trips (SHMBUS_BENCH_PY_ITERS, 2000)
//
// The parent measures; the forked child (PinnedChild) echoes or consumes.
// Every round trip also measures the raw futex (the floor for the busy
// Boost.Lockfree one) right before and after itself (ReferenceBeside).
// Stream figures end when the producer's last write returns: at most one
// buffer's worth (64 KiB pipe, 1024 queue slots) is still in flight.
#include <fcntl.h>
#include <mqueue.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "shmbus/detail/futex.hpp"
#include "shmbus/shared_memory.hpp"

#ifdef SHMBUS_HAVE_ZMQ
#include "zmq_peer.hpp"
#endif

SHMBUS_BENCH_REFERENCES();

namespace {

using shmbus::bench::bench_cpus;
using shmbus::bench::bench_name;
using shmbus::bench::LatencyRecorder;
using shmbus::bench::pin_this_thread;
using shmbus::bench::PinnedChild;
using shmbus::bench::read_full;
using shmbus::bench::Reference;
using shmbus::bench::ReferenceBeside;
using shmbus::bench::ticks;
using shmbus::bench::write_full;

// Two byte streams: `to_child` (parent writes), `to_parent` (child writes).
// Each side holds its own ends; the child sees EOF when the parent closes.
struct Duplex {
  int parent_w, parent_r, child_r, child_w;
};

Duplex make_pipes() {
  int a[2], b[2];
  if (::pipe(a) != 0 || ::pipe(b) != 0) std::abort();
  return {a[1], b[0], a[0], b[1]};
}

Duplex make_socketpair() {
  int s[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, s) != 0) std::abort();
  // One socket per side, used for both directions.
  return {s[0], s[0], s[1], s[1]};
}

void close_child_ends(const Duplex& d) {
  ::close(d.child_r);
  if (d.child_w != d.child_r) ::close(d.child_w);
}
void close_parent_ends(const Duplex& d) {
  ::close(d.parent_w);
  if (d.parent_r != d.parent_w) ::close(d.parent_r);
}

void fd_rtt(benchmark::State& state, Duplex d) {
  ReferenceBeside beside(state, Reference::futex);
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto& cpus = bench_cpus();
  PinnedChild child(cpus.child, [d, n] {
    close_parent_ends(d);
    std::vector<char> buf(n);
    while (read_full(d.child_r, buf.data(), n) && write_full(d.child_w, buf.data(), n)) {
    }
  });
  close_child_ends(d);
  pin_this_thread(cpus.parent);
  std::vector<char> out(n, 'x'), in(n);
  LatencyRecorder rec;
  bool ok = true;
  for (int i = 0; i < shmbus::bench::kBlockWarmUp && ok; ++i) {
    ok = write_full(d.parent_w, out.data(), n) && read_full(d.parent_r, in.data(), n);
  }
  for (auto _ : state) {
    if (!ok) break;
    const std::uint64_t t0 = ticks();
    if (!write_full(d.parent_w, out.data(), n) || !read_full(d.parent_r, in.data(), n)) {
      ok = false;
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  close_parent_ends(d);  // the child reads EOF and returns
  if (!child.join() || !ok) state.SkipWithError("echo child failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void fd_stream(benchmark::State& state, Duplex d) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto& cpus = bench_cpus();
  PinnedChild child(cpus.child, [d, n] {
    close_parent_ends(d);
    std::vector<char> buf(64 * 1024);
    std::uint64_t total = 0;
    for (;;) {
      ssize_t r = ::read(d.child_r, buf.data(), buf.size());
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      total += static_cast<std::uint64_t>(r);
    }
    (void)write_full(d.child_w, &total, sizeof total);
  });
  close_child_ends(d);
  pin_this_thread(cpus.parent);
  std::vector<char> out(n, 'x');
  bool ok = true;
  for (auto _ : state) {
    if (!write_full(d.parent_w, out.data(), n)) {
      ok = false;
      break;
    }
  }
  // Half-close so the child sees EOF, then read its byte count.
  if (d.parent_w == d.parent_r) {
    ::shutdown(d.parent_w, SHUT_WR);
  } else {
    ::close(d.parent_w);
  }
  std::uint64_t total = 0;
  ok = read_full(d.parent_r, &total, sizeof total) && ok;
  ::close(d.parent_r);
  if (!child.join() || !ok || total != static_cast<std::uint64_t>(state.iterations()) * n) {
    state.SkipWithError("stream consumer failed or lost bytes");
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_LinuxPipe_Block_RTT(benchmark::State& state) { fd_rtt(state, make_pipes()); }
void BM_LinuxPipe_Stream(benchmark::State& state) { fd_stream(state, make_pipes()); }
void BM_SocketPair_Block_RTT(benchmark::State& state) { fd_rtt(state, make_socketpair()); }
void BM_SocketPair_Stream(benchmark::State& state) { fd_stream(state, make_socketpair()); }

void BM_EventFd_Block_RTT(benchmark::State& state) {
  ReferenceBeside beside(state, Reference::futex);
  constexpr std::uint64_t kStop = std::uint64_t{1} << 40;
  const int ping = ::eventfd(0, 0);
  const int pong = ::eventfd(0, 0);
  if (ping < 0 || pong < 0) {
    state.SkipWithError("eventfd failed");
    return;
  }
  const auto& cpus = bench_cpus();
  PinnedChild child(cpus.child, [ping, pong] {
    std::uint64_t v = 0;
    const std::uint64_t one = 1;
    while (read_full(ping, &v, sizeof v) && v < kStop && write_full(pong, &one, sizeof one)) {
    }
  });
  pin_this_thread(cpus.parent);
  LatencyRecorder rec;
  const std::uint64_t one = 1;
  std::uint64_t v = 0;
  bool ok = true;
  for (int i = 0; i < shmbus::bench::kBlockWarmUp && ok; ++i) {
    ok = write_full(ping, &one, sizeof one) && read_full(pong, &v, sizeof v);
  }
  for (auto _ : state) {
    if (!ok) break;
    const std::uint64_t t0 = ticks();
    if (!write_full(ping, &one, sizeof one) || !read_full(pong, &v, sizeof v)) {
      ok = false;
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  (void)write_full(ping, &kStop, sizeof kStop);
  if (!child.join() || !ok) state.SkipWithError("eventfd child failed");
  ::close(ping);
  ::close(pong);
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_PosixMq_Block_RTT(benchmark::State& state) {
  ReferenceBeside beside(state, Reference::futex);
  const auto n = static_cast<std::size_t>(state.range(0));
  mq_attr attr{};
  attr.mq_maxmsg = 8;
  attr.mq_msgsize = static_cast<long>(std::max<std::size_t>(n, 8));
  const std::string base = "/" + bench_name("mq");
  const mqd_t ping = ::mq_open((base + "-ping").c_str(), O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
  const mqd_t pong = ::mq_open((base + "-pong").c_str(), O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
  ::mq_unlink((base + "-ping").c_str());  // both sides hold descriptors; the names can go
  ::mq_unlink((base + "-pong").c_str());
  if (ping == static_cast<mqd_t>(-1) || pong == static_cast<mqd_t>(-1)) {
    state.SkipWithError((std::string("mq_open: ") + std::strerror(errno)).c_str());
    return;
  }
  const auto& cpus = bench_cpus();
  const auto cap = static_cast<std::size_t>(attr.mq_msgsize);
  PinnedChild child(cpus.child, [ping, pong, cap] {
    std::vector<char> buf(cap);
    for (;;) {
      ssize_t r = ::mq_receive(ping, buf.data(), cap, nullptr);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 1) return;  // a 1-byte message says stop
      if (::mq_send(pong, buf.data(), static_cast<std::size_t>(r), 0) != 0) return;
    }
  });
  pin_this_thread(cpus.parent);
  std::vector<char> out(n, 'x'), in(cap);
  LatencyRecorder rec;
  bool ok = true;
  for (int i = 0; i < shmbus::bench::kBlockWarmUp && ok; ++i) {
    ok = ::mq_send(ping, out.data(), n, 0) == 0 &&
         ::mq_receive(pong, in.data(), cap, nullptr) == static_cast<ssize_t>(n);
  }
  for (auto _ : state) {
    if (!ok) break;
    const std::uint64_t t0 = ticks();
    if (::mq_send(ping, out.data(), n, 0) != 0 ||
        ::mq_receive(pong, in.data(), cap, nullptr) != static_cast<ssize_t>(n)) {
      ok = false;
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  (void)::mq_send(ping, "s", 1, 0);
  if (!child.join() || !ok) state.SkipWithError("mq child failed");
  ::mq_close(ping);
  ::mq_close(pong);
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_BoostIpcMq_Block_RTT(benchmark::State& state) {
  ReferenceBeside beside(state, Reference::futex);
  namespace bip = boost::interprocess;
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::string base = bench_name("bipmq");
  try {
    // Created before the fork: the child uses the inherited mappings.
    bip::message_queue ping(bip::create_only, (base + "-ping").c_str(), 8, n);
    bip::message_queue pong(bip::create_only, (base + "-pong").c_str(), 8, n);
    bip::message_queue::remove((base + "-ping").c_str());
    bip::message_queue::remove((base + "-pong").c_str());
    const auto& cpus = bench_cpus();
    PinnedChild child(cpus.child, [&ping, &pong, n] {
      std::vector<char> buf(n);
      for (;;) {
        bip::message_queue::size_type got = 0;
        unsigned prio = 0;
        ping.receive(buf.data(), n, got, prio);
        if (got <= 1) return;
        pong.send(buf.data(), got, 0);
      }
    });
    pin_this_thread(cpus.parent);
    std::vector<char> out(n, 'x'), in(n);
    LatencyRecorder rec;
    for (int i = 0; i < shmbus::bench::kBlockWarmUp; ++i) {
      ping.send(out.data(), n, 0);
      bip::message_queue::size_type got = 0;
      unsigned prio = 0;
      pong.receive(in.data(), n, got, prio);
    }
    for (auto _ : state) {
      const std::uint64_t t0 = ticks();
      ping.send(out.data(), n, 0);
      bip::message_queue::size_type got = 0;
      unsigned prio = 0;
      pong.receive(in.data(), n, got, prio);
      rec.add_ticks(ticks() - t0);
    }
    ping.send("s", 1, 0);
    if (!child.join()) state.SkipWithError("message_queue child failed");
    rec.report(state);
    state.SetItemsProcessed(state.iterations());
  } catch (const bip::interprocess_exception& e) {
    state.SkipWithError(e.what());
  }
}

// A message of N bytes whose first 8 carry a sequence number.
template <std::size_t N>
struct Msg {
  std::uint64_t seq;
  std::array<char, N - sizeof(std::uint64_t)> pad;
};
constexpr std::uint64_t kStopSeq = ~std::uint64_t{0};

template <std::size_t N>
using LockfreeQueue = boost::lockfree::spsc_queue<Msg<N>, boost::lockfree::capacity<1024>>;

template <std::size_t N>
void BM_BoostLockfree_Busy_RTT(benchmark::State& state) {
  ReferenceBeside beside(state, Reference::floor);
  struct Shared {
    LockfreeQueue<N> ping;
    LockfreeQueue<N> pong;
  };
  auto shm = shmbus::SharedMemory::create(bench_name("lfrtt"), sizeof(Shared));
  shm.unlink();
  auto* s = new (shm.buf().data()) Shared{};  // fixed-capacity: no pointers inside
  const auto& cpus = bench_cpus();
  PinnedChild child(cpus.child, [s] {
    Msg<N> m{};
    for (;;) {
      while (!s->ping.pop(m)) shmbus::detail::cpu_relax();
      if (m.seq == kStopSeq) return;
      while (!s->pong.push(m)) shmbus::detail::cpu_relax();
    }
  });
  pin_this_thread(cpus.parent);
  LatencyRecorder rec;
  Msg<N> out{}, in{};
  std::uint64_t seq = 0;
  bool ok = true;
  for (int i = 0; i < shmbus::bench::kBusyWarmUp; ++i) {
    out.seq = seq++;
    while (!s->ping.push(out)) shmbus::detail::cpu_relax();
    while (!s->pong.pop(in)) shmbus::detail::cpu_relax();
  }
  for (auto _ : state) {
    out.seq = seq++;
    const std::uint64_t t0 = ticks();
    while (!s->ping.push(out)) shmbus::detail::cpu_relax();
    while (!s->pong.pop(in)) shmbus::detail::cpu_relax();
    rec.add_ticks(ticks() - t0);
    ok = ok && in.seq == out.seq;
  }
  out.seq = kStopSeq;
  while (!s->ping.push(out)) shmbus::detail::cpu_relax();
  if (!child.join() || !ok) state.SkipWithError("lockfree echo failed");
  s->~Shared();
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

template <std::size_t N>
void BM_BoostLockfree_Stream(benchmark::State& state) {
  struct Shared {
    LockfreeQueue<N> q;
    alignas(64) std::atomic<std::uint64_t> received;  // consumer-owned, 0 until the end
    alignas(64) std::atomic<std::uint32_t> bad;       // consumer-owned: a sequence gap
  };
  auto shm = shmbus::SharedMemory::create(bench_name("lfstream"), sizeof(Shared));
  shm.unlink();
  auto* s = new (shm.buf().data()) Shared{};
  const auto& cpus = bench_cpus();
  PinnedChild child(cpus.child, [s] {
    Msg<N> m{};
    std::uint64_t expect = 0;
    for (;;) {
      while (!s->q.pop(m)) shmbus::detail::cpu_relax();
      if (m.seq == kStopSeq) break;
      if (m.seq != expect) s->bad.store(1, std::memory_order_relaxed);  // read after the join
      expect = m.seq + 1;
    }
    // release: [lfstream.done] pairs with the parent's acquire load below.
    s->received.store(expect + 1, std::memory_order_release);
  });
  pin_this_thread(cpus.parent);
  Msg<N> out{};
  std::uint64_t seq = 0;
  for (auto _ : state) {
    out.seq = seq++;
    while (!s->q.push(out)) shmbus::detail::cpu_relax();
  }
  out.seq = kStopSeq;
  while (!s->q.push(out)) shmbus::detail::cpu_relax();
  // acquire: [lfstream.done] the consumer's count of what it saw.
  while (s->received.load(std::memory_order_acquire) == 0) shmbus::detail::cpu_relax();
  const bool ok = child.join();
  if (!ok || s->bad.load(std::memory_order_relaxed) != 0 ||
      s->received.load(std::memory_order_relaxed) != seq + 1) {
    state.SkipWithError("lockfree stream lost or reordered messages");
  }
  s->~Shared();
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(N));
}

#ifdef SHMBUS_HAVE_ZMQ
void BM_ZeroMQ_Block_RTT(benchmark::State& state) {
  shmbus::bench::zeromq_round_trip(state, ZMQ_PAIR, ZMQ_PAIR);
}
#endif

void BM_PyMpPipe_Block_RTT(benchmark::State& state) {
  shmbus::bench::python_round_trip(state, "pipe");
}
void BM_PyMpQueue_Block_RTT(benchmark::State& state) {
  shmbus::bench::python_round_trip(state, "queue");
}

template <std::size_t N>
void register_lockfree() {
  benchmark::RegisterBenchmark("BM_BoostLockfree_Stream", BM_BoostLockfree_Stream<N>)
      ->Arg(static_cast<std::int64_t>(N))
      ->UseRealTime();
}

// Registered in this order: fast kernel peers first, Python last.
[[maybe_unused]] const bool registered = [] {
  auto rtt = [](const char* name, void (*fn)(benchmark::State&)) {
    return benchmark::RegisterBenchmark(name, fn)->UseRealTime();
  };
  rtt("BM_LinuxPipe_Block_RTT", BM_LinuxPipe_Block_RTT)->Arg(64);
  rtt("BM_LinuxPipe_Stream", BM_LinuxPipe_Stream)->Arg(64)->Arg(4096);
  rtt("BM_SocketPair_Block_RTT", BM_SocketPair_Block_RTT)->Arg(64);
  rtt("BM_SocketPair_Stream", BM_SocketPair_Stream)->Arg(64)->Arg(4096);
  rtt("BM_EventFd_Block_RTT", BM_EventFd_Block_RTT);
  rtt("BM_PosixMq_Block_RTT", BM_PosixMq_Block_RTT)->Arg(64);
  rtt("BM_BoostIpcMq_Block_RTT", BM_BoostIpcMq_Block_RTT)->Arg(64);
  rtt("BM_BoostLockfree_Busy_RTT", BM_BoostLockfree_Busy_RTT<64>)->Arg(64);
  register_lockfree<8>();
  register_lockfree<64>();
  register_lockfree<256>();
  register_lockfree<1024>();
#ifdef SHMBUS_HAVE_ZMQ
  rtt("BM_ZeroMQ_Block_RTT", BM_ZeroMQ_Block_RTT)->Arg(64);
#endif
  const std::int64_t py = shmbus::bench::python_iterations();
  benchmark::RegisterBenchmark("BM_PyMpPipe_Block_RTT", BM_PyMpPipe_Block_RTT)
      ->Arg(64)
      ->Iterations(py)
      ->UseManualTime();
  benchmark::RegisterBenchmark("BM_PyMpQueue_Block_RTT", BM_PyMpQueue_Block_RTT)
      ->Arg(64)
      ->Iterations(py)
      ->UseManualTime();
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
