#include "shmbus/resource_tracker.hpp"

#include <algorithm>
#include <map>

#include "shmbus/detail/segment.hpp"
#include "shmbus/error.hpp"
#include "shmbus/segment_info.hpp"

namespace shmbus {

namespace {
// True when `name` is an object of a bus ("<bus>.<object>") whose registry a
// live process other than this one has attached. Such an object lives as
// long as its bus, whoever created it: a queue whose producers exited still
// holds what they put. This process is left out so that Bus's sweep at open,
// made once it has attached, still clears what killed users left.
bool kept_by_its_bus(const std::string& name, std::map<std::string, bool>& buses) {
  const auto dot = name.find('.');
  if (dot == std::string::npos) return false;
  const std::string bus = name.substr(0, dot);
  if (auto it = buses.find(bus); it != buses.end()) return it->second;
  bool held = false;
  try {
    const SegmentInfo registry = inspect_segment(bus);
    const ProcessId me = this_process();
    held = registry.kind == ObjectKind::bus_registry &&
           std::any_of(registry.attached.begin(), registry.attached.end(),
                       [&](const AttachedProcess& p) { return p.alive && !(p.id == me); });
  } catch (const Error&) {
    // No registry, or an invalid one: the object has no bus to outlive.
  }
  buses.emplace(bus, held);
  return held;
}

// Why `info` is garbage, or empty if it is not. `buses` caches
// kept_by_its_bus() for one look at /dev/shm.
std::string garbage_reason(const SegmentInfo& info, const GcOptions& options,
                           std::map<std::string, bool>& buses) {
  if (info.state == "initialising") {
    const std::uint64_t now = detail::unix_time_ns();
    const std::uint64_t age_ns = now > info.modified_unix_ns ? now - info.modified_unix_ns : 0;
    const auto stuck_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.stuck_after).count());
    if (info.creator.pid != 0 && !info.creator_alive) return "creator died while initialising";
    if (info.creator.pid == 0 && age_ns > stuck_ns) return "stuck initialising, creator unknown";
    return {};
  }
  if (info.abandoned() && !kept_by_its_bus(info.name, buses)) {
    return info.attached.empty() ? "creator dead and nothing attached"
                                 : "every attached process is dead";
  }
  return {};
}

}  // namespace

bool remove_segment(const std::string& name) { return detail::Segment::unlink(name); }

std::vector<GcAction> collect_garbage(const GcOptions& options) {
  std::vector<GcAction> actions;
  std::map<std::string, bool> buses;  // bus name -> kept_by_its_bus
  for (const auto& name : list_segments()) {
    if (!name.starts_with(options.prefix)) continue;
    std::string reason;
    SegmentInfo seen;
    try {
      seen = inspect_segment(name);
      reason = garbage_reason(seen, options, buses);
    } catch (const Error& e) {
      if (e.code() == Errc::not_found) continue;     // removed meanwhile
      if (e.code() == Errc::invalid_name) continue;  // not a name we create
      if (options.include_invalid) reason = "invalid: " + e.reason();
    }
    if (reason.empty()) continue;
    GcAction action{name, reason, false};
    if (!options.dry_run) {
      try {
        // Look again just before unlinking: the name may have been removed
        // and created afresh by someone else, or a process may have
        // attached since. Unlink only the very segment judged garbage.
        // (A window of a few microseconds remains: unlink() takes a name,
        // not a file.)
        if (!seen.name.empty()) {
          const SegmentInfo again = inspect_segment(name);
          std::map<std::string, bool> buses_now;
          if (again.created_unix_ns != seen.created_unix_ns || !(again.creator == seen.creator) ||
              garbage_reason(again, options, buses_now).empty()) {
            continue;
          }
        }
        action.removed = remove_segment(name);
      } catch (const Error&) {
      }
    }
    actions.push_back(std::move(action));
  }
  return actions;
}

}  // namespace shmbus
