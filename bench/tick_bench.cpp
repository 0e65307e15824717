// The trivially copyable path on one core, as a user's code calls it:
// Connection::send(tick) / recv(tick) and Queue<Tick>::put / get. Uses only
// API that predates the codec, so the same file builds against an older
// tree and the two binaries run interleaved (the codec must leave these
// figures unchanged):
//
//   BM_PipeTick_OneCore_SendRecv/24   16 sends then 16 receives, per message
//   BM_QueueTick_OneCore_PutGet/24    16 puts then 16 gets, per message
#include <benchmark/benchmark.h>

#include <cstdint>

#include "bench_support.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/queue.hpp"

SHMBUS_BENCH_REFERENCES();

namespace shmbus::bench {
namespace {

struct Tick {
  std::uint64_t seq;
  double bid;
  double ask;
};
static_assert(sizeof(Tick) == 24);

void BM_PipeTick_OneCore_SendRecv(benchmark::State& state) {
  pin_this_thread(bench_cpus().parent);
  PipeOptions o;
  o.wait.strategy = WaitStrategy::busy_poll;
  auto [a, b] = Pipe(o);
  Tick t{1, 1.5, 1.6}, r{};
  while (state.KeepRunningBatch(16)) {
    for (int i = 0; i < 16; ++i) {
      ++t.seq;
      if (a.send(t) != SendResult::ok) state.SkipWithError("send failed");
    }
    for (int i = 0; i < 16; ++i)
      if (b.recv(r) != RecvResult::ok) state.SkipWithError("recv failed");
  }
  benchmark::DoNotOptimize(r);
  state.SetItemsProcessed(state.iterations());
}

void BM_QueueTick_OneCore_PutGet(benchmark::State& state) {
  pin_this_thread(bench_cpus().parent);
  const std::string name = bench_name("tick");
  QueueOptions o;
  o.capacity = 64;
  o.policy.strategy = WaitStrategy::busy_poll;
  auto q = Queue<Tick>::create(name, o);
  Tick t{1, 1.5, 1.6}, r{};
  while (state.KeepRunningBatch(16)) {
    for (int i = 0; i < 16; ++i) {
      ++t.seq;
      if (q.put(t) != QueueResult::ok) state.SkipWithError("put failed");
    }
    for (int i = 0; i < 16; ++i)
      if (q.get(r) != QueueResult::ok) state.SkipWithError("get failed");
  }
  benchmark::DoNotOptimize(r);
  Queue<Tick>::unlink(name);
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_PipeTick_OneCore_SendRecv)->Arg(24);
BENCHMARK(BM_QueueTick_OneCore_PutGet)->Arg(24);

}  // namespace shmbus::bench

BENCHMARK_MAIN();
