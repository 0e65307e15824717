// The bridge (shmbus::bridge, bus-bridge's engine) against raw ZeroMQ with
// CURVE, both over TCP loopback, in the same run; Python's
// multiprocessing.connection Listener/Client with an authkey as a peer row.
//
//   BM_Bridge_Queue_Stream/64          Queue<64 B> on bus A -> Forwarder (thread)
//                                      -> CURVE tcp -> Forwarder (thread) -> Queue on
//                                      bus B, acknowledged; producer and consumer
//                                      threads: delivered items/s
//   BM_ZeroMQ_CurvePushPull_Stream/64  raw PUSH -> PULL with CURVE: items/s
//   BM_Bridge_Topic_Stream/64          Topic<64 B> on bus A, the bridge's reliable
//                                      subscription -> CURVE tcp -> republished on
//                                      bus B's topic, a reliable subscriber there:
//                                      received items/s (nothing dropped)
//   BM_ZeroMQ_CurvePubSub_Stream/64    raw PUB -> SUB with CURVE: received items/s
//                                      (PUB drops at its high-water mark)
//   BM_Bridge_Connection_RTT/64        remote Connection (Client <-> accepted,
//                                      an echo thread): round trip percentiles
//   BM_ZeroMQ_Curve_RTT/64             raw DEALER <-> ROUTER with CURVE, echo thread
//   BM_PyMpListenerTcp_Block_RTT/64       Python Listener/Client(authkey) over TCP,
//                                      parent and a forked echo child
//
// Threads, not processes: the bridge's two ends run in this process as two
// bus-bridge processes would (each Forwarder owns its own sockets); the
// threads are not pinned (ZeroMQ adds an I/O thread per context), so read
// the rows as ratios of the same run.
#include <zmq.h>

#include <array>
#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "shmbus/bridge/forwarder.hpp"
#include "shmbus/bridge/remote.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/shared_memory.hpp"
#include "shmbus/topic.hpp"

namespace {

namespace sb = shmbus::bridge;
using namespace std::chrono_literals;
using shmbus::bench::bench_name;
using shmbus::bench::LatencyRecorder;
using shmbus::bench::ticks;

struct Msg64 {
  std::uint64_t seq;
  std::array<std::byte, 56> pad;
};
static_assert(sizeof(Msg64) == 64);

struct Keys {
  sb::KeyPair server = sb::KeyPair::generate();
  sb::KeyPair client = sb::KeyPair::generate();
};

// A connected pair: the client on a helper thread while this one accepts.
struct Pair {
  std::optional<sb::Listener> listener;
  sb::Connection client;
  sb::Connection server;
};
void connect_pair(Pair& p, const Keys& k) {
  p.listener.emplace(
      "tcp://127.0.0.1:0",
      sb::ListenerOptions{.key = k.server, .allowed_clients = {k.client.public_key}});
  std::thread t([&] {
    p.client = sb::Client(p.listener->endpoint(),
                          {.key = k.client, .server_key = k.server.public_key}, 10s);
  });
  p.server = p.listener->accept();
  t.join();
}

// The measured part of a stream row: 1000 warm-up receives (the link is
// up), then one per iteration, each within 10 s (`recv_one` says whether it
// got one); then `stop_all` and the items/s.
template <class Recv, class Stop>
void measure_stream(benchmark::State& state, Recv recv_one, Stop stop_all) {
  for (int i = 0; i < 1000; ++i) (void)recv_one();
  bool ok = true;
  for (auto _ : state)
    if (!recv_one()) {
      ok = false;
      break;
    }
  stop_all();
  if (!ok) state.SkipWithError("a message did not arrive in 10 s");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * 64);
}

void BM_Bridge_Queue_Stream(benchmark::State& state) {
  const auto n = static_cast<std::uint64_t>(state.max_iterations);
  const std::string u = bench_name("bridge");
  const std::string bus_a = u + "-a";
  const std::string bus_b = u + "-b";
  auto src = shmbus::Queue<Msg64>::create(bus_a + ".orders", {.capacity = 4096});
  auto dst = shmbus::Queue<Msg64>::create(bus_b + ".orders", {.capacity = 4096});
  Keys k;
  Pair p;
  connect_pair(p, k);
  sb::Forwarder fa{{.name = u + "-fa", .bus = bus_a, .queues = {"orders"}, .window = 1024}};
  sb::Forwarder fb{{.name = u + "-fb", .bus = bus_b}};
  std::atomic<bool> stop{false};
  std::thread ta([&] { (void)fa.run(p.client, stop); });
  std::thread tb([&] { (void)fb.run(p.server, stop); });
  std::thread producer([&] {
    Msg64 m{};
    for (std::uint64_t i = 0; i < n + 1000; ++i) {
      m.seq = i;
      if (src.put(m) != shmbus::QueueResult::ok) return;
    }
  });
  Msg64 m{};
  measure_stream(
      state, [&] { return dst.get_for(m, 10s) == shmbus::QueueResult::ok; },
      [&] {
        stop = true;
        producer.join();
        ta.join();
        tb.join();
      });
  shmbus::SharedMemory::open(u + "-fa.out.orders").unlink();  // the bridges' state
  shmbus::SharedMemory::open(u + "-fb.in." + u + "-fa.orders").unlink();
  src.close();
  shmbus::Queue<Msg64>::unlink(bus_a + ".orders");
  shmbus::Queue<Msg64>::unlink(bus_b + ".orders");
}

void BM_Bridge_Topic_Stream(benchmark::State& state) {
  const std::string u = bench_name("btopic");
  const std::string bus_a = u + "-a";
  const std::string bus_b = u + "-b";
  auto src = shmbus::Topic::create<Msg64>(bus_a + ".ticks", {.slots = 4096});
  auto dst = shmbus::Topic::create<Msg64>(bus_b + ".ticks", {.slots = 4096});
  shmbus::Subscriber sub = dst.subscribe({.policy = shmbus::SubscriberPolicy::reliable});
  Keys k;
  Pair p;
  connect_pair(p, k);
  sb::Forwarder fa{{.name = u + "-fa",
                    .bus = bus_a,
                    .topics = {{"ticks", shmbus::SubscriberPolicy::reliable}},
                    .window = 1024}};
  sb::Forwarder fb{{.name = u + "-fb", .bus = bus_b}};
  std::atomic<bool> stop{false};
  std::thread ta([&] { (void)fa.run(p.client, stop); });
  std::thread tb([&] { (void)fb.run(p.server, stop); });
  std::thread producer([&] {
    shmbus::Publisher pub = src.publisher();
    Msg64 m{};
    // Reliable end to end: publish_for waits for the bridge; until stop.
    for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      m.seq = i;
      (void)pub.publish_for(m, 100ms);
    }
  });
  Msg64 m{};
  std::size_t len = 0;
  auto buf = std::as_writable_bytes(std::span(&m, 1));
  measure_stream(
      state, [&] { return sub.recv_for(buf, len, 10s) == shmbus::ReceiveResult::ok; },
      [&] {
        stop = true;
        producer.join();
        ta.join();
        tb.join();
      });
  shmbus::SharedMemory::open(u + "-fb.tin." + u + "-fa.ticks").unlink();  // the bridge's state
  shmbus::Topic::unlink(bus_a + ".ticks");
  shmbus::Topic::unlink(bus_b + ".ticks");
}

// Raw ZeroMQ sockets with CURVE (no ZAP handler: ZeroMQ then admits any
// client key, which only makes the peer cheaper).
struct RawCurve {
  void* ctx = zmq_ctx_new();
  void* server = nullptr;
  void* client = nullptr;
  RawCurve(int server_type, int client_type, const Keys& k, const std::string& endpoint) {
    server = zmq_socket(ctx, server_type);
    client = zmq_socket(ctx, client_type);
    const int one = 1;
    const int hwm = 10000;
    for (void* s : {server, client}) {
      zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
      zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    zmq_setsockopt(server, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(server, ZMQ_CURVE_SECRETKEY, k.server.secret_key.c_str(), 41);
    zmq_setsockopt(client, ZMQ_CURVE_SERVERKEY, k.server.public_key.c_str(), 41);
    zmq_setsockopt(client, ZMQ_CURVE_PUBLICKEY, k.client.public_key.c_str(), 41);
    zmq_setsockopt(client, ZMQ_CURVE_SECRETKEY, k.client.secret_key.c_str(), 41);
    zmq_bind(server, endpoint.c_str());
    std::array<char, 256> last{};
    std::size_t len = last.size();
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, last.data(), &len);
    zmq_connect(client, last.data());
  }
  ~RawCurve() {
    const int zero = 0;
    for (void* s : {server, client}) {
      zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
      zmq_close(s);
    }
    zmq_ctx_term(ctx);
  }
};

void BM_ZeroMQ_CurvePushPull_Stream(benchmark::State& state) {
  const auto n = static_cast<std::uint64_t>(state.max_iterations);
  Keys k;
  RawCurve z(ZMQ_PULL, ZMQ_PUSH, k, "tcp://127.0.0.1:*");
  std::thread producer([&] {
    Msg64 m{};
    for (std::uint64_t i = 0; i < n + 1000; ++i) {
      m.seq = i;
      if (zmq_send(z.client, &m, sizeof m, 0) < 0) return;
    }
  });
  Msg64 m{};
  for (int i = 0; i < 1000; ++i) (void)zmq_recv(z.server, &m, sizeof m, 0);
  for (auto _ : state) benchmark::DoNotOptimize(zmq_recv(z.server, &m, sizeof m, 0));
  producer.join();
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * 64);
}

void BM_ZeroMQ_CurvePubSub_Stream(benchmark::State& state) {
  Keys k;
  RawCurve z(ZMQ_PUB, ZMQ_SUB, k, "tcp://127.0.0.1:*");
  zmq_setsockopt(z.client, ZMQ_SUBSCRIBE, "", 0);
  const int timeout_ms = 10000;
  zmq_setsockopt(z.client, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    Msg64 m{};
    for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      m.seq = i;
      if (zmq_send(z.server, &m, sizeof m, 0) < 0) return;
    }
  });
  Msg64 m{};
  measure_stream(
      state, [&] { return zmq_recv(z.client, &m, sizeof m, 0) >= 0; },
      [&] {
        stop = true;
        producer.join();
      });
}

void BM_Bridge_Connection_RTT(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Keys k;
  Pair p;
  connect_pair(p, k);
  std::thread echo([&] {
    std::vector<std::byte> b;
    while (p.server.recv_bytes(b) == shmbus::RecvResult::ok)
      if (p.server.send_bytes(b) != shmbus::SendResult::ok) return;
  });
  std::vector<std::byte> out(size, std::byte{1});
  std::vector<std::byte> in;
  for (int i = 0; i < 100; ++i) {
    (void)p.client.send_bytes(out);
    (void)p.client.recv_bytes(in);
  }
  LatencyRecorder rec;
  for (auto _ : state) {
    const auto t0 = ticks();
    if (p.client.send_bytes(out) != shmbus::SendResult::ok ||
        p.client.recv_bytes(in) != shmbus::RecvResult::ok) {
      state.SkipWithError("round trip failed");
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  p.client.close();  // the echo thread reads eof and ends
  echo.join();
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_ZeroMQ_Curve_RTT(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Keys k;
  RawCurve z(ZMQ_ROUTER, ZMQ_DEALER, k, "tcp://127.0.0.1:*");
  std::thread echo([&] {
    std::array<char, 256> id{};
    std::vector<char> b(size + 1);
    for (;;) {
      const int idn = zmq_recv(z.server, id.data(), id.size(), 0);
      const int n = zmq_recv(z.server, b.data(), b.size(), 0);
      if (idn < 0 || n < 0 || n == 0) return;  // an empty message stops it
      zmq_send(z.server, id.data(), static_cast<std::size_t>(idn), ZMQ_SNDMORE);
      zmq_send(z.server, b.data(), static_cast<std::size_t>(n), 0);
    }
  });
  std::vector<char> out(size, 'x');
  std::vector<char> in(size + 1);
  for (int i = 0; i < 100; ++i) {
    zmq_send(z.client, out.data(), out.size(), 0);
    zmq_recv(z.client, in.data(), in.size(), 0);
  }
  LatencyRecorder rec;
  for (auto _ : state) {
    const auto t0 = ticks();
    zmq_send(z.client, out.data(), out.size(), 0);
    zmq_recv(z.client, in.data(), in.size(), 0);
    rec.add_ticks(ticks() - t0);
  }
  zmq_send(z.client, "", 0, 0);
  echo.join();
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_PyMpListenerTcp_Block_RTT(benchmark::State& state) {
  shmbus::bench::python_round_trip(state, "listener_tcp");
}

}  // namespace

BENCHMARK(BM_Bridge_Queue_Stream)->Arg(64)->Iterations(200000)->UseRealTime();
BENCHMARK(BM_ZeroMQ_CurvePushPull_Stream)->Arg(64)->Iterations(200000)->UseRealTime();
BENCHMARK(BM_Bridge_Topic_Stream)->Arg(64)->Iterations(200000)->UseRealTime();
BENCHMARK(BM_ZeroMQ_CurvePubSub_Stream)->Arg(64)->Iterations(200000)->UseRealTime();
BENCHMARK(BM_Bridge_Connection_RTT)->Arg(64)->Iterations(20000)->UseRealTime();
BENCHMARK(BM_ZeroMQ_Curve_RTT)->Arg(64)->Iterations(20000)->UseRealTime();
BENCHMARK(BM_PyMpListenerTcp_Block_RTT)
    ->Arg(64)
    ->Iterations(shmbus::bench::python_iterations())
    ->UseManualTime();

BENCHMARK_MAIN();
