// libFuzzer target: arbitrary bytes as a ring's shared state (control
// block and contents) handed to the reader. The reader must report
// `corrupted` or deliver frames inside the ring, never read out of bounds
// (ASan checks every access: the ring sits in an exactly-sized buffer).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "shmbus/detail/spsc_ring.hpp"

using namespace shmbus::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  // First byte picks the capacity (4 KiB .. 64 KiB); the rest fills the
  // control block, then the ring (zero beyond the input).
  const std::size_t capacity = std::size_t{4096} << (data[0] % 5);
  ++data;
  --size;
  auto* mem = static_cast<std::byte*>(std::aligned_alloc(64, sizeof(RingControl) + capacity));
  std::memset(mem, 0, sizeof(RingControl) + capacity);
  std::memcpy(mem, data,
              size < sizeof(RingControl) + capacity ? size : sizeof(RingControl) + capacity);
  auto* control = reinterpret_cast<RingControl*>(mem);
  std::byte* ring = mem + sizeof(RingControl);

  RingConsumer consumer(control, ring, capacity, /*notify=*/false);
  std::uint64_t sum = 0;
  // The one-frame fast path first: it must take only frames inside the
  // ring, copied into a buffer ASan bounds exactly.
  {
    const std::size_t room = capacity / 4;
    auto* buf = static_cast<std::byte*>(std::malloc(room));
    std::size_t n = 0;
    for (int i = 0; i < 64; ++i) {
      // The typed receive first (recv<T>: a length of exactly `exact`).
      const std::size_t exact = i % 3 == 0 ? 8 : i % 3 == 1 ? 64 : 24;
      if (consumer.try_recv<true>(buf, exact, n)) {
        if (n != exact) std::abort();
      } else if (!consumer.try_recv<false>(buf, room, n)) {
        break;
      }
      if (n > room) std::abort();
      for (std::size_t k = 0; k < n; ++k) sum += static_cast<std::uint8_t>(buf[k]);
    }
    std::free(buf);
  }
  for (int i = 0; i < 4096; ++i) {
    Frame f;
    const PeekResult r = consumer.peek(f);
    if (r != PeekResult::ok) break;
    // The frame must lie inside the ring.
    if (f.data < ring || f.data + f.length > ring + capacity) std::abort();
    for (std::uint32_t k = 0; k < f.length; ++k) sum += static_cast<std::uint8_t>(f.data[k]);
    consumer.release();
  }
  // The producer reads the consumer's published position: it must not
  // trust it either.
  RingProducer producer(control, ring, capacity, RingWake::none);
  for (int i = 0; i < 64; ++i) {
    const std::size_t len = static_cast<std::size_t>(i) * 37 % producer.max_payload();
    if (i % 2 == 1) {  // the fast path, which must refuse what try_reserve() refuses
      static const std::byte src[256] = {};
      if (len <= sizeof src && producer.try_send(src, len)) continue;
    }
    std::byte* p = producer.try_reserve(len);
    if (p == nullptr) break;
    if (p < ring || p + len > ring + capacity) std::abort();
    std::memset(p, 0xab, len);
    producer.commit(len);
  }
  std::free(mem);
  return static_cast<int>(sum & 0);
}
