// The bus registry segment, format v1: the list of objects created in one
// Bus. Lives in the segment named after the bus; objects live in their own
// segments named "<bus>.<object>".
//
// Memory ordering:
//   [registry.entry] an entry is claimed by CAS of `owner` 0 -> claimer,
//   filled with plain writes, then published by `published.store(1,
//   release)`; readers load `published` with acquire, copy the fields, and
//   load it again (a seqlock read: a removal between the loads is seen).
//   [registry.lifecycle] closing the bus is a Dekker handshake: a closer
//   detaches, takes the `closing` token (CAS 0 -> its ProcessId) and reads
//   the attachment table; an opener attaches, then reads `closing`. All
//   seq_cst, so at least one sees the other: the closer finds the opener
//   (and gives the token back without unlinking), or the opener finds the
//   token (and waits for the unlink, then creates the bus afresh).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmbus::detail {

inline constexpr std::size_t kRegistryObjectName = 128;
inline constexpr std::size_t kRegistryTypeName = 64;
inline constexpr std::uint32_t kRegistryEntries = 255;

// One registered object, 256 bytes.
//   0   owner (atomic: ProcessId of the claimer; 0 = free)
//   8   published (atomic: 1 once the fields below are written)
//   16  kind, capacity, type fingerprint, created time
//   40  object[128], type_name[64]       (set before published)
struct RegistryEntry {
  std::atomic<std::uint64_t> owner;
  std::atomic<std::uint32_t> published;
  std::uint32_t kind;
  std::uint64_t capacity;
  std::uint64_t type_fingerprint;
  std::uint64_t created_unix_ns;
  char object[kRegistryObjectName];
  char type_name[kRegistryTypeName];
  char reserved[24];
};
static_assert(sizeof(RegistryEntry) == 256);
static_assert(offsetof(RegistryEntry, object) == 40);

// The registry payload: a small header line, then the entries.
struct Registry {
  // ProcessId of the process unlinking the bus; 0 while open. [registry.lifecycle]
  alignas(64) std::atomic<std::uint64_t> closing;
  std::uint32_t entry_count;  // == kRegistryEntries, set once before ready
  alignas(64) RegistryEntry entries[kRegistryEntries];
};
static_assert(offsetof(Registry, entries) == 64);

}  // namespace shmbus::detail
