// The resource tracker: finds shmbus segments nobody can use any more and
// unlinks them, after multiprocessing's resource_tracker.
//
// A segment is garbage when every process it records — its creator and
// each entry of its attachment table — is dead (pid gone, a zombie, or the
// pid reused by another process), or when it has been stuck initialising
// for `stuck_after` with its creator dead or unknown. A segment any live
// process has attached is never removed, and neither is a ready object of a
// bus ("<bus>.<object>") while a live process other than the caller has
// that bus open: objects live as long as their bus (see bus.hpp).
//
// shmbus runs this as a sweep, not as a daemon: Bus sweeps its own objects
// when it opens and closes, and `bus-inspector gc` sweeps the host on
// demand. Container stores of a bus (Dict/List/Namespace files, see
// store_files.hpp) are swept when no process has them open and their bus
// is closed. Beside it, each process unlinks the named objects it created
// outside a Bus when it ends cleanly (exit(), or a Process child whose
// callable returns), unless created with SegmentOptions::track = false or
// attached by another live process (detail/tracked.hpp); a creator killed
// by a signal leaves them to this sweep. A sweep reads headers read-only (see segment_info.hpp) and
// unlinks by name; it never blocks a live process.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace shmbus {

struct GcOptions {
  bool dry_run = false;
  // Also remove files named like shmbus objects whose header is invalid
  // (corrupted, truncated, wrong version). Off by default: doctor reports them.
  bool include_invalid = false;
  std::chrono::seconds stuck_after{10};
  // Also remove abandoned segments their owner marked as holding data not
  // yet handed on (SegmentInfo::keep: a killed bridge's outbox with
  // unacknowledged messages, its inboxes); off: they wait for the owner's
  // restart.
  bool force = false;
  // Only names starting with this prefix (e.g. a bus's "orders.").
  std::string prefix;
};

struct GcAction {
  std::string name;
  std::string reason;    // "every attached process is dead", ...
  bool removed = false;  // false in a dry run or if it vanished meanwhile
};

// Sweeps /dev/shm once; returns what it removed (or would remove).
std::vector<GcAction> collect_garbage(const GcOptions& options = {});

// Unlinks one shmbus object by name, whatever its state. False if absent.
bool remove_segment(const std::string& name);

}  // namespace shmbus
