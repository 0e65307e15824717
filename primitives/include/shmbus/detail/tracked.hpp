// detail::track_created / untrack — the resource tracker's list of named
// objects this process created (SegmentOptions::track), unlinked at its
// clean exit through an exit action (detail/exit_actions.hpp) unless a live
// process other than it has them attached. See resource_tracker.hpp.
//
// Who may call what: any thread; both take a process-wide mutex and never
// throw (out of memory, an object is simply not tracked).
#pragma once

#include <cstdint>
#include <string_view>

namespace shmbus::detail {

// Segment::create() records what it made: the name and the header's
// creator and creation time, so a name removed and created afresh by
// someone else is never taken for ours.
void track_created(std::string_view name, std::uint64_t creator,
                   std::uint64_t created_unix_ns) noexcept;
// The object's lifetime belongs to someone else now (a Bus), and so does
// that of the objects made under its name ("<name>.lock" of a Condition).
void untrack(std::string_view name) noexcept;

}  // namespace shmbus::detail
