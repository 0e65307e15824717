// ZeroMQ round trips as a peer row (header-only: only the suites that link
// libzmq include it; bench_support itself does not depend on ZeroMQ).
#pragma once

#include <zmq.h>

#include <string>
#include <vector>

#include "bench_support.hpp"

namespace shmbus::bench {

// state.range(0)-byte round trips over ipc:// between a bound socket of
// type `here` (this process, timed) and a connected one of type `there` (a
// pinned echo child): ZMQ_PAIR/ZMQ_PAIR, ZMQ_REQ/ZMQ_REP, ... Each process
// makes its own context after the fork (contexts are not fork-safe); the
// I/O thread is pinned beside its process. The raw futex is measured beside.
inline void zeromq_round_trip(benchmark::State& state, int here, int there) {
  ReferenceBeside beside(state, Reference::futex);
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::string path = "/tmp/" + bench_name("zmq") + ".ipc";
  const std::string endpoint = "ipc://" + path;
  const auto& cpus = bench_cpus();
  auto make_ctx = [](int cpu) {
    void* ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_THREAD_AFFINITY_CPU_ADD, cpu);
    return ctx;
  };
  auto close = [](void* ctx, void* sock, int linger) {
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sock);
    zmq_ctx_term(ctx);
  };
  PinnedChild child(cpus.child, [&] {
    void* ctx = make_ctx(cpus.child);
    void* sock = zmq_socket(ctx, there);
    int ivl = 5;
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    if (zmq_connect(sock, endpoint.c_str()) != 0) std::_Exit(2);
    std::vector<char> buf(n);
    for (;;) {
      int r = zmq_recv(sock, buf.data(), n, 0);
      if (r < 0 && zmq_errno() == EINTR) continue;
      if (r <= 1) break;  // the one-byte stop message
      if (zmq_send(sock, buf.data(), static_cast<std::size_t>(r), 0) < 0) break;
    }
    close(ctx, sock, 0);
  });
  pin_this_thread(cpus.parent);
  void* ctx = make_ctx(cpus.parent);
  void* sock = zmq_socket(ctx, here);
  bool ok = n > 1 && zmq_bind(sock, endpoint.c_str()) == 0;
  std::vector<char> out(n, 'x'), in(n);
  // Warm-up: the connection is up before the first timed round trip.
  for (int i = 0; i < kBlockWarmUp && ok; ++i) {
    ok = zmq_send(sock, out.data(), n, 0) >= 0 && zmq_recv(sock, in.data(), n, 0) >= 0;
  }
  LatencyRecorder rec;
  for (auto _ : state) {
    if (!ok) break;
    const std::uint64_t t0 = ticks();
    if (zmq_send(sock, out.data(), n, 0) < 0 ||
        zmq_recv(sock, in.data(), n, 0) != static_cast<int>(n)) {
      ok = false;
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  zmq_send(sock, "s", 1, 0);
  close(ctx, sock, 1000);
  ::unlink(path.c_str());
  if (!child.join() || !ok) state.SkipWithError("zeromq exchange failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

}  // namespace shmbus::bench
