#include "shmbus/resource_tracker.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include "shmbus/detail/exit_actions.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/tracked.hpp"
#include "shmbus/error.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/store_files.hpp"

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
  if (info.abandoned() && (!info.keep || options.force) && !kept_by_its_bus(info.name, buses)) {
    std::string why = info.attached.empty() ? "creator dead and nothing attached"
                                            : "every attached process is dead";
    if (info.keep) why += "; it held data not yet handed on (--force)";
    return why;
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
        // attached since. Unlink only the very segment judged garbage:
        // unlink_if_same() checks its identity under the lock every
        // remover takes ([segment.unlink]), so nothing created since goes.
        if (!seen.name.empty()) {
          const SegmentInfo again = inspect_segment(name);
          std::map<std::string, bool> buses_now;
          if (again.created_unix_ns != seen.created_unix_ns || !(again.creator == seen.creator) ||
              garbage_reason(again, options, buses_now).empty()) {
            continue;
          }
          action.removed =
              detail::Segment::unlink_if_same(name, seen.creator.pack(), seen.created_unix_ns);
        } else {
          action.removed = remove_segment(name);  // invalid: no identity to check
        }
      } catch (const Error&) {
      }
    }
    actions.push_back(std::move(action));
  }
  // Container stores of a bus ("<bus>.<object>"): garbage when no process
  // has them open and their bus is not held by another live process (they
  // live as long as their bus, like its segments). A store outside a bus
  // is the user's to unlink, as a file: never swept.
  for (const auto& name : list_stores()) {
    if (!name.starts_with(options.prefix) || name.find('.') == std::string::npos) continue;
    if (!store_holders(name).empty() || kept_by_its_bus(name, buses)) continue;
    GcAction action{name, "store of a bus: no process has it open and its bus is closed", false};
    if (!options.dry_run && store_holders(name).empty()) action.removed = remove_store(name);
    actions.push_back(std::move(action));
  }
  return actions;
}

namespace detail {

namespace {

struct Tracked {
  std::string name;
  std::uint64_t creator = 0;  // ProcessId::pack() of the creator (this process)
  std::uint64_t created_unix_ns = 0;
};

struct TrackedSet {
  std::mutex m;
  std::vector<Tracked> objects;  // under m
};

// Never destroyed: the exit action runs at exit(), after statics may have gone.
TrackedSet& tracked() {
  static auto* t = new TrackedSet;
  return *t;
}

// The exit action: unlinks each object this very process created (a
// forked child inherits the list: its entries name the parent) that is
// still the same object and that no other live process has attached. A
// process that attaches between the look and the unlink keeps its mapping
// but loses the name (a window of microseconds).
void unlink_tracked(void* set) noexcept {
  auto& t = *static_cast<TrackedSet*>(set);
  std::vector<Tracked> objects;
  {
    // Taken out first: unlinking below untracks (takes the mutex again).
    std::unique_lock lock(t.m, std::try_to_lock);
    if (!lock.owns_lock()) return;
    objects.swap(t.objects);
  }
  const ProcessId me = this_process();
  for (const Tracked& o : objects) {
    const ProcessId creator = ProcessId::unpack(o.creator);
    if (!(creator == me)) continue;
    try {
      const SegmentInfo info = inspect_segment(o.name);
      if (!(info.creator == creator) || info.created_unix_ns != o.created_unix_ns) continue;
      const bool in_use =
          std::any_of(info.attached.begin(), info.attached.end(),
                      [&](const AttachedProcess& p) { return p.alive && !(p.id == me); });
      if (!in_use) (void)detail::Segment::unlink_if_same(o.name, o.creator, o.created_unix_ns);
    } catch (...) {
      // Gone already, or not ours to judge: leave it.
    }
  }
}

}  // namespace

void track_created(std::string_view name, std::uint64_t creator,
                   std::uint64_t created_unix_ns) noexcept {
  try {
    TrackedSet& t = tracked();
    {
      std::scoped_lock lock(t.m);
      t.objects.push_back({std::string(name), creator, created_unix_ns});
    }
    add_exit_action(&t, unlink_tracked);
  } catch (...) {
    // Out of memory: untracked, left to collect_garbage().
  }
}

void untrack(std::string_view name) noexcept {
  TrackedSet& t = tracked();
  std::scoped_lock lock(t.m);
  std::erase_if(t.objects, [&](const Tracked& o) {
    return o.name == name ||
           (o.name.size() > name.size() && o.name.starts_with(name) && o.name[name.size()] == '.');
  });
}

}  // namespace detail
}  // namespace shmbus
