// What the codec costs (shmbus/codec.hpp), each row beside its trivially
// copyable counterpart in the same binary:
//
//   BM_QueueString_Stream/N    Queue<std::string> of 16..N-byte strings (sizes
//                              cycle), one producer process, one consumer
//   BM_QueuePod_Stream/64      the same queue code with a 64 B trivially
//                              copyable struct (the reference of the row above)
//   BM_PipeStruct_Busy_RTT/0   {string, vector<double>(8), int} (MSGPACK_DEFINE)
//                              echoed through a busy-poll pipe
//   BM_PipeStruct_Block_RTT/0  the same, blocking
//   BM_PipeStructFrac_Busy_RTT/0  the struct with prices that are not whole
//                              numbers (float64s on the wire; the row above
//                              carries 1..8, positive fixints)
//   BM_PipePod_Busy_RTT/64, BM_PipePod_Block_RTT/64   a 64 B trivially
//                              copyable message the same way
//   BM_PyMpPipeDict_Block_RTT/0  Python multiprocessing.Pipe sending the
//                              equivalent dict (pickled): the peer
//   BM_Codec_OneCore_EncodeDecode/0  encode + decode of the struct, one thread
//   BM_CodecTree_OneCore_EncodeDecode/0  the same through msgpack-cxx's object
//                              tree (unpack, then convert: the decoder before
//                              detail/codec_reader.hpp), for the ratio
//
// Round trips carry ReferenceBeside counters (x_floor / x_futex).
#include <benchmark/benchmark.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "codec_types.hpp"
#include "shmbus/codec.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/queue.hpp"

SHMBUS_BENCH_REFERENCES();

namespace shmbus::bench {
namespace {

// --- queue streams ---------------------------------------------------------------

template <class T, class Make>
void queue_stream(benchmark::State& state, Make make) {
  const auto& cpus = bench_cpus();
  const std::string name = bench_name("codecq");
  QueueOptions o;
  o.capacity = 1024;
  o.policy.strategy = WaitStrategy::busy_poll;
  auto q = Queue<T>::create(name, o);
  const std::int64_t total = state.max_iterations;
  PinnedChild producer(cpus.child, [&] {
    Queue<T> mine(name, o);
    for (std::int64_t i = 0; i < total; ++i)
      if (mine.put(make(i)) != QueueResult::ok) return;
  });
  pin_this_thread(cpus.parent);
  T out{};
  for (auto _ : state) {
    if (q.get(out) != QueueResult::ok) {
      state.SkipWithError("get failed");
      break;
    }
  }
  benchmark::DoNotOptimize(out);
  if (!producer.join()) state.SkipWithError("producer failed");
  Queue<T>::unlink(name);
  state.SetItemsProcessed(state.iterations());
}

void BM_QueueString_Stream(benchmark::State& state) {
  const auto top = static_cast<std::size_t>(state.range(0));
  std::vector<std::string> texts;
  for (std::size_t n = 16; n <= top; n += 8) texts.emplace_back(n, 'x');
  queue_stream<std::string>(state, [&](std::int64_t i) -> const std::string& {
    return texts[static_cast<std::size_t>(i) % texts.size()];
  });
}

void BM_QueuePod_Stream(benchmark::State& state) {
  queue_stream<Pod64>(state, [](std::int64_t i) {
    Pod64 p{};
    p.words[0] = static_cast<std::uint64_t>(i);
    return p;
  });
}

// --- pipe round trips ------------------------------------------------------------

template <class T>
void pipe_rtt(benchmark::State& state, WaitStrategy strategy, const T& msg) {
  ReferenceBeside beside(state, reference_for(strategy));
  const auto& cpus = bench_cpus();
  PipeOptions o;
  o.wait.strategy = strategy;
  auto [a, b] = Pipe(o);
  PinnedChild child(cpus.child, [&b = b] {
    T v{};
    while (b.recv(v) == RecvResult::ok)
      if (b.send(v) != SendResult::ok) return;
  });
  pin_this_thread(cpus.parent);
  T back{};
  const int warm = strategy == WaitStrategy::blocking ? kBlockWarmUp : kBusyWarmUp;
  for (int i = 0; i < warm; ++i)
    if (a.send(msg) != SendResult::ok || a.recv(back) != RecvResult::ok) break;
  LatencyRecorder rec;
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    if (a.send(msg) != SendResult::ok || a.recv(back) != RecvResult::ok) {
      state.SkipWithError("round trip failed");
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  benchmark::DoNotOptimize(back);
  a.close();
  if (!child.join()) state.SkipWithError("echo child failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void BM_PipeStruct_Busy_RTT(benchmark::State& state) {
  pipe_rtt(state, WaitStrategy::busy_poll, make_quote());
}
void BM_PipeStructFrac_Busy_RTT(benchmark::State& state) {
  pipe_rtt(state, WaitStrategy::busy_poll, make_fractional_quote());
}
void BM_PipeStruct_Block_RTT(benchmark::State& state) {
  pipe_rtt(state, WaitStrategy::blocking, make_quote());
}
void BM_PipePod_Busy_RTT(benchmark::State& state) {
  pipe_rtt(state, WaitStrategy::busy_poll, Pod64{});
}
void BM_PipePod_Block_RTT(benchmark::State& state) {
  pipe_rtt(state, WaitStrategy::blocking, Pod64{});
}

void BM_PyMpPipeDict_Block_RTT(benchmark::State& state) { python_round_trip(state, "pipe_dict"); }

void BM_Codec_OneCore_EncodeDecode(benchmark::State& state) {
  pin_this_thread(bench_cpus().parent);
  const Quote q = make_quote();
  Quote back;
  for (auto _ : state) {
    const auto m = detail::encode_message(q);
    if (!detail::decode_message(m, back)) state.SkipWithError("decode failed");
  }
  benchmark::DoNotOptimize(back);
  state.SetItemsProcessed(state.iterations());
}

void BM_CodecTree_OneCore_EncodeDecode(benchmark::State& state) {
  pin_this_thread(bench_cpus().parent);
  const Quote q = make_quote();
  Quote back;
  msgpack::zone& zone = detail::decode_zone();
  for (auto _ : state) {
    const auto m = detail::encode_message(q);
    msgpack::object o;
    if (!detail::unpack_bounded(m, zone, o)) state.SkipWithError("decode failed");
    o.convert(back);
    zone.clear();
  }
  benchmark::DoNotOptimize(back);
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_QueuePod_Stream)->Arg(64)->UseRealTime()->MinTime(0.25);
BENCHMARK(BM_QueueString_Stream)->Arg(64)->UseRealTime()->MinTime(0.25);
BENCHMARK(BM_PipePod_Busy_RTT)->Arg(64)->UseRealTime();
BENCHMARK(BM_PipeStruct_Busy_RTT)->Arg(0)->UseRealTime();
BENCHMARK(BM_PipeStructFrac_Busy_RTT)->Arg(0)->UseRealTime();
BENCHMARK(BM_PipePod_Block_RTT)->Arg(64)->UseRealTime();
BENCHMARK(BM_PipeStruct_Block_RTT)->Arg(0)->UseRealTime();
BENCHMARK(BM_PyMpPipeDict_Block_RTT)->Arg(0)->UseManualTime()->Iterations(python_iterations());
BENCHMARK(BM_Codec_OneCore_EncodeDecode)->Arg(0);
BENCHMARK(BM_CodecTree_OneCore_EncodeDecode)->Arg(0);

}  // namespace shmbus::bench

BENCHMARK_MAIN();
