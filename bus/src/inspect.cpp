#include "shmbus/inspect.hpp"

namespace shmbus {

ObjectStats object_stats(const SegmentView& view) {
  ObjectStats stats;
  if (!view.info().kind) return stats;
  switch (*view.info().kind) {
    default:
      break;
  }
  return stats;
}

}  // namespace shmbus
