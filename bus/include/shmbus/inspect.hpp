// Object-level inspection: the live statistics of any shmbus object, read
// from a read-only SegmentView without writing to it or blocking anyone.
// bus-inspector shows these; `watch` turns the counters into rates.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shmbus/segment_info.hpp"

namespace shmbus {

struct ObjectStats {
  // Monotonic counters ("messages_in", "bytes_out", ...): watch shows rates.
  std::vector<std::pair<std::string, std::uint64_t>> counters;
  // Instantaneous values ("depth", "waiters", "owner_pid", ...).
  std::vector<std::pair<std::string, std::int64_t>> gauges;
  // What looks wrong ("lock held by dead process 123"), for doctor.
  std::vector<std::string> problems;
};

// Statistics of the object in `view`, by its kind. Kinds without
// statistics give an empty result. A payload that fails validation gives
// a problem entry, never a crash.
[[nodiscard]] ObjectStats object_stats(const SegmentView& view);

}  // namespace shmbus
