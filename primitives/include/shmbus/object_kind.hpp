// ObjectKind — what a shmbus segment holds. Stored in every segment header
// so that opening a Lock by a Queue's name is a clear error, not a crash.
// Values are part of the segment format: append only, never renumber.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace shmbus {

enum class ObjectKind : std::uint32_t {
  shared_memory = 1,
  lock = 2,
  rlock = 3,
  semaphore = 4,
  bounded_semaphore = 5,
  event = 6,
  condition = 7,
  barrier = 8,
  value = 9,
  array = 10,
  pipe = 11,
  queue = 12,
  simple_queue = 13,
  joinable_queue = 14,
  bus_registry = 15,
  topic = 16,
  listener = 17,
  // Container stores (shmbus::containers): LMDB files, not segments, so
  // never in a segment header; a Bus registers them under these kinds.
  dict = 18,
  list = 19,
  namespace_ = 20,
  // A running bus-bridge's status (shmbus::bridge, bridge/status.hpp).
  bridge = 21,
};

// "shared_memory", "queue", ...; "unknown" for a value shmbus never writes.
[[nodiscard]] std::string_view to_string(ObjectKind kind) noexcept;
[[nodiscard]] std::optional<ObjectKind> kind_from_u32(std::uint32_t raw) noexcept;

}  // namespace shmbus
