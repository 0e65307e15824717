// Two pinned processes: the topology picks a producer/consumer pair of
// distinct cores (sharing an L3 where the machine has one), and two
// shmbus::Process children run on them, passing 100000 numbers through one
// cache line of shared memory. The parent joins both and prints their exit
// codes.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <new>
#include <string>

#include "shmbus/shmbus.hpp"

int main() {
  using namespace std::chrono_literals;
  const shmbus::Topology& topo = shmbus::Topology::current();
  const shmbus::CpuPlacement pair = topo.pick_pair();
  std::printf("%s", topo.describe().c_str());
  std::printf("pair: %s\n", pair.why.c_str());

  // One cache line: the producer stores 1..N, the consumer waits for each.
  struct alignas(64) Line {
    std::atomic<std::uint64_t> value;
  };
  constexpr std::uint64_t kCount = 100000;
  const std::string name = "example-pinned-" + std::to_string(::getpid());
  auto shm = shmbus::SharedMemory::create(name, sizeof(Line));
  shm.unlink();  // both children inherit the mapping; the name is not needed
  auto* line = new (shm.buf().data()) Line{};

  shmbus::Process producer(
      [line] {
        for (std::uint64_t i = 1; i <= kCount; ++i) {
          // acquire: [example.ack] pairs with the consumer's release store.
          while (line->value.load(std::memory_order_acquire) != 2 * i - 2) {
          }
          // release: [example.put] publishes i to the consumer.
          line->value.store(2 * i - 1, std::memory_order_release);
        }
      },
      {.name = "producer", .daemon = true, .cpus = {pair.producer}});
  shmbus::Process consumer(
      [line] {
        for (std::uint64_t i = 1; i <= kCount; ++i) {
          // acquire: [example.put] pairs with the producer's release store.
          while (line->value.load(std::memory_order_acquire) != 2 * i - 1) {
          }
          // release: [example.ack] hands the line back to the producer.
          line->value.store(2 * i, std::memory_order_release);
        }
        return shmbus::this_thread_cpus().size() == 1 ? 0 : 1;
      },
      {.name = "consumer", .daemon = true, .cpus = {pair.consumer}});
  const auto t0 = std::chrono::steady_clock::now();
  producer.start();
  consumer.start();
  const bool done = producer.join_for(20s) && consumer.join_for(20s);
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  if (!done) {
    std::printf("timed out\n");
    return 1;  // the destructors kill the daemon children
  }
  std::printf("%s on cpu %d: exit %d; %s on cpu %d: exit %d; %llu hand-offs in %lld us\n",
              producer.name().c_str(), pair.producer, *producer.exitcode(), consumer.name().c_str(),
              pair.consumer, *consumer.exitcode(), static_cast<unsigned long long>(kCount),
              static_cast<long long>(us));
  return *producer.exitcode() == 0 && *consumer.exitcode() == 0 ? 0 : 1;
}
