// Read-only inspection of shmbus segments, for bus-inspector, the resource
// tracker and tests. Nothing here attaches to, locks or writes a segment,
// so inspecting never blocks or slows the processes that use it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/object_kind.hpp"
#include "shmbus/process_id.hpp"

namespace shmbus {

struct AttachedProcess {
  ProcessId id;
  bool alive = false;
};

struct SegmentInfo {
  std::string name;  // user-visible name, without the prefix
  std::optional<ObjectKind> kind;
  std::uint32_t raw_kind = 0;
  std::string type_name;
  std::uint64_t total_size = 0;  // bytes, header included
  std::uint64_t payload_size = 0;
  std::string state;  // "initialising", "ready", "closed"
  ProcessId creator;
  bool creator_alive = false;
  std::uint64_t created_unix_ns = 0;
  std::uint64_t modified_unix_ns = 0;  // the file's mtime: when it was created or resized
  std::vector<AttachedProcess> attached;
  // The owner marked it as holding data not yet handed on (a bridge's
  // outbox or inbox): gc keeps it even when abandoned, unless forced.
  bool keep = false;
  // True when every recorded process (creator and attached) is dead.
  [[nodiscard]] bool abandoned() const noexcept;
};

// A type's name as the compiler spelled it for the segment's fingerprint
// (GCC: "std::__cxx11::basic_string<char>") in the form people write it
// ("std::string"). SegmentInfo::type_name and BusObject::type_name are
// already in this form.
[[nodiscard]] std::string readable_type_name(std::string_view spelled);

// Names (without prefix) of every shmbus object in /dev/shm, sorted.
[[nodiscard]] std::vector<std::string> list_segments();

// Reads and validates the header of `name` read-only. Throws shmbus::Error
// (not_found, corrupted, wrong_version, truncated, ...) for a file that is
// not a valid segment; an `initialising` segment is returned as such.
[[nodiscard]] SegmentInfo inspect_segment(const std::string& name);

// A read-only mapping of a whole segment, for object-specific inspection
// (ring depths, counters): each object kind offers a function that reads
// its own stats from payload(). Validates the header as inspect_segment().
class SegmentView {
 public:
  static SegmentView open(const std::string& name);

  SegmentView(SegmentView&&) noexcept;
  SegmentView& operator=(SegmentView&&) noexcept;
  ~SegmentView();

  [[nodiscard]] const SegmentInfo& info() const noexcept { return info_; }
  // The payload bytes as mapped (PROT_READ): atomic loads are fine,
  // writes fault. Empty while the segment is still initialising.
  [[nodiscard]] std::span<const std::byte> payload() const noexcept { return payload_; }

 private:
  SegmentView() = default;
  SegmentInfo info_;
  void* base_ = nullptr;
  std::size_t size_ = 0;
  std::span<const std::byte> payload_;
};

}  // namespace shmbus
