#include "shmbus/inspect.hpp"

#include "shmbus/bus.hpp"
#include "shmbus/queue.hpp"

namespace shmbus {

namespace {

void bus_registry_stats(const SegmentView& view, ObjectStats& stats) {
  if (view.payload().size() < sizeof(detail::Registry)) {
    stats.problems.push_back("registry payload too small");
    return;
  }
  const auto* reg = reinterpret_cast<const detail::Registry*>(view.payload().data());
  if (reg->entry_count != detail::kRegistryEntries) {
    stats.problems.push_back("registry entry count " + std::to_string(reg->entry_count) +
                             ", expected " + std::to_string(detail::kRegistryEntries));
    return;
  }
  stats.gauges.emplace_back("objects", static_cast<std::int64_t>(Bus::list_objects(view).size()));
  // [registry.lifecycle] a snapshot only: we never take part in the handshake.
  const std::uint64_t closer = reg->closing.load(std::memory_order_seq_cst);
  if (closer != 0 && !is_alive(ProcessId::unpack(closer))) {
    stats.problems.push_back("closing token held by dead process " +
                             std::to_string(ProcessId::unpack(closer).pid));
  }
}

}  // namespace

ObjectStats object_stats(const SegmentView& view) {
  ObjectStats stats;
  if (!view.info().kind || view.payload().empty()) return stats;
  switch (*view.info().kind) {
    case ObjectKind::bus_registry:
      bus_registry_stats(view, stats);
      break;
    case ObjectKind::queue:
    case ObjectKind::simple_queue:
    case ObjectKind::joinable_queue:
      detail::queue_object_stats(view, stats);
      break;
    default:
      break;
  }
  return stats;
}

}  // namespace shmbus
