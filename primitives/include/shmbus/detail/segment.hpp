// detail::Segment — a named, validated, mapped shmbus segment.
//
// Every shmbus object lives in one: a POSIX shared-memory object named
// "shmbus.<name>" (so /dev/shm shows what is ours), created exclusively and
// mapped through Boost.Interprocess, or, for an anonymous object (one
// constructed without a name, as Python's Queue()), unnamed memory from
// memfd_create() mapped MAP_SHARED: nothing in /dev/shm, inherited by
// fork(), gone when the last process unmaps it. Its first 4 KiB are a
// SegmentHeader; the object's payload follows, page aligned.
//
// Who may call what: create() and open() are setup calls (they throw
// shmbus::Error); payload() and header() are plain accessors. A Segment is
// movable, not copyable; destroying it detaches this process from the
// attachment table and unmaps, but never unlinks.
//
// Memory ordering: the creator writes every header field and initialises
// the payload, then stores state = ready with release [segment.ready];
// openers load state with acquire before they read anything else.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "shmbus/detail/type_tag.hpp"
#include "shmbus/object_kind.hpp"
#include "shmbus/process_id.hpp"

namespace shmbus {

// Options for creating or opening any shmbus object.
struct SegmentOptions {
  unsigned permissions = 0600;  // mode of a created object
  // How long open() waits for a creator to publish `ready`.
  std::chrono::milliseconds open_timeout{1000};
  // Attachment table capacity of a created object (1..kMaxAttachSlots).
  std::uint32_t max_attached = 0;  // 0: the maximum
  // Whether open()/create() records this process in the attachment table.
  bool attach = true;
  // The resource tracker: a named object created outside a Bus is unlinked
  // when the process that created it ends cleanly (exit(), or a Process
  // child's callable returning), unless another live process has it
  // attached. false keeps it, as Python 3.13's SharedMemory(track=False).
  // A creator killed by a signal leaves it to collect_garbage() (see
  // resource_tracker.hpp). Ignored by open() and for anonymous objects.
  bool track = true;
};

inline constexpr std::string_view kNamePrefix = "shmbus.";
inline constexpr std::size_t kMaxNameLength = 200;

// Throws Errc::invalid_name unless `name` is 1..200 of [A-Za-z0-9._-]
// and does not start with '.'.
void validate_name(std::string_view name);

namespace detail {

inline constexpr std::uint64_t kMagic = 0x0153554248534D53ULL;  // "SMSHBUS\1"
// Format 2: the [wait.epoch] sleepers word (detail/futex.hpp) that nearly
// every kind holds (Event, Semaphore, Condition, Barrier, the queues, a
// pipe's and a topic's channels, the pool) was re-cut from 16/4/12 bits to
// 12/2/18, and a Barrier's waiters sleep on a word of their own. One
// number for every kind: most kinds have no format word of their own, and
// a build of format 1 mapping a format 2 segment would misread that word.
inline constexpr std::uint32_t kFormatVersion = 2;
inline constexpr std::size_t kHeaderSize = 4096;
inline constexpr std::size_t kTypeNameSize = 64;

enum class SegmentState : std::uint32_t { initialising = 0, ready = 1, closed = 2 };

// Segment header (the same in formats 1 and 2). Offsets only: every process maps the segment
// at a different address.
//
//   0    magic, version, kind, type fingerprint, sizes   (set once before ready)
//   64   creator pid/start, created time, type name      (set once before ready)
//   192  state                                           (atomic, [segment.ready])
//   256  attached[kMaxAttachSlots]                       (atomic ProcessId::pack())
//   4096 payload
struct SegmentHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t kind;  // ObjectKind
  std::uint64_t type_fingerprint;
  std::uint64_t total_size;       // == file size
  std::uint64_t payload_offset;   // == kHeaderSize
  std::uint64_t payload_size;     // total_size - payload_offset
  std::uint32_t attach_capacity;  // slots in use by this segment, <= kMaxAttachSlots
  std::uint32_t reserved0;
  // Nonzero: the segment holds data its users have not handed on yet (a
  // bridge's outbox with unacknowledged messages, its inboxes' sequence
  // records): collect_garbage() leaves it when every process it records is
  // dead, unless GcOptions::force. Written by the owner (set_keep), 0 at
  // creation.
  std::atomic<std::uint64_t> keep;
  alignas(64) std::uint64_t creator;  // ProcessId::pack() of the creator
  std::uint64_t created_unix_ns;
  char type_name[kTypeNameSize];                 // NUL-terminated, possibly truncated
  alignas(64) std::atomic<std::uint32_t> state;  // SegmentState
  alignas(64) std::atomic<std::uint64_t> attached[(kHeaderSize - 256) / 8];
};
inline constexpr std::uint32_t kMaxAttachSlots = (kHeaderSize - 256) / 8;
static_assert(sizeof(SegmentHeader) == kHeaderSize);
static_assert(offsetof(SegmentHeader, creator) == 64);
static_assert(offsetof(SegmentHeader, state) == 192);
static_assert(offsetof(SegmentHeader, attached) == 256);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Where an object is made: a name, or nullopt for an anonymous object.
using SegmentName = std::optional<std::string_view>;

class Segment {
 public:
  using Init = std::function<void(std::span<std::byte> payload)>;

  // Creates "shmbus.<name>" exclusively (Errc::already_exists otherwise),
  // sizes it to header + payload_size, runs `init` on the zeroed payload,
  // then publishes ready. If `init` throws, the object is unlinked.
  static Segment create(std::string_view name, ObjectKind kind, TypeTag type,
                        std::size_t payload_size, const Init& init,
                        const SegmentOptions& options = {});

  // The same segment in unnamed memory (memfd_create, MAP_SHARED): no name
  // to collide or leak; a forked child shares it; name() is empty.
  static Segment create_anonymous(ObjectKind kind, TypeTag type, std::size_t payload_size,
                                  const Init& init, const SegmentOptions& options = {});
  // create() for a name, create_anonymous() for nullopt.
  static Segment make(SegmentName name, ObjectKind kind, TypeTag type, std::size_t payload_size,
                      const Init& init, const SegmentOptions& options = {});

  // Opens and validates an existing segment: waits up to
  // options.open_timeout for ready, then checks magic, version, kind, type
  // and sizes, throwing the matching Errc naming what differs.
  static Segment open(std::string_view name, ObjectKind kind, TypeTag type,
                      const SegmentOptions& options = {});

  // Removes the name; mappings stay valid. False if it did not exist.
  // [segment.unlink] Every removal holds flock(LOCK_EX) on the file it
  // removes and first checks that the name still names that file, so a
  // removal never takes away a file created under the name after the
  // remover looked (a file is only created where no name is: O_EXCL).
  // The lock is held for a few system calls; a holder killed drops it.
  static bool unlink(std::string_view name);
  // The same, only while the name still names the segment made by
  // `creator` (ProcessId::pack()) at `created_unix_ns`: what a remover
  // that judged a segment by its identity (dead listener, garbage,
  // a closed connection's pipe) removes, and nothing created since. A
  // segment still initialising matches on what its creator wrote so far
  // (0 for a field not written: inspect_segment() reports the same).
  static bool unlink_if_same(std::string_view name, std::uint64_t creator,
                             std::uint64_t created_unix_ns);
  // unlink_if_same() of this segment's own name and identity: a closing
  // owner removes its name, never a segment made under it by another
  // since (a server that took over a name this one had left). False for
  // an anonymous segment.
  [[nodiscard]] bool unlink_own_name() const;

  Segment() noexcept;
  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  [[nodiscard]] bool valid() const noexcept { return base_ != nullptr; }
  // Empty for an anonymous segment.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] bool anonymous() const noexcept { return valid() && name_.empty(); }
  [[nodiscard]] SegmentHeader& header() const noexcept {
    return *reinterpret_cast<SegmentHeader*>(base_);
  }
  [[nodiscard]] std::byte* payload() const noexcept { return base_ + kHeaderSize; }
  // SegmentHeader::keep. release: the data it guards was written before
  // (gc only reads the flag; the order matters to nobody else).
  void set_keep(bool on) const noexcept {
    header().keep.store(on ? 1 : 0, std::memory_order_release);
  }
  // 0 once closed or moved from (size_ is 0 then, not a header's worth).
  [[nodiscard]] std::size_t payload_size() const noexcept {
    return base_ != nullptr ? size_ - kHeaderSize : 0;
  }
  [[nodiscard]] std::span<std::byte> payload_span() const noexcept {
    if (base_ == nullptr) return {};
    return {payload(), payload_size()};
  }

  // Records the calling process in the attachment table, once per process
  // (a forked child that inherited the mapping calls this to be counted).
  // Reuses a slot of a dead process when the table is full; throws
  // Errc::attach_table_full when every slot holds a live one.
  void attach();
  // Removes the calling process's entry, if any.
  void detach() noexcept;
  // Whether this handle holds the calling process's entry.
  [[nodiscard]] bool attached_here() const noexcept;

  // Unmaps now (the destructor does the same).
  void close() noexcept;

  // Another handle on the same mapping (same address), not attached: how a
  // Condition holds the very Lock it was given, named or anonymous.
  [[nodiscard]] Segment share() const;

 private:
  struct Mapping;
  Segment(std::string name, std::shared_ptr<Mapping> mapping);
  // Writes the header, runs `init`, attaches and publishes ready.
  static void initialise(Segment& seg, ObjectKind kind, TypeTag type, std::uint32_t capacity,
                         const Init& init, const SegmentOptions& options);

  std::string name_;
  std::shared_ptr<Mapping> mapping_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  pid_t attached_pid_ = 0;  // this process's entry, if it made one
};

// The OS-level name ("shmbus.<name>") of a user-visible name.
[[nodiscard]] std::string os_name(std::string_view name);

// CLOCK_REALTIME in nanoseconds since 1970, for creation times and ages.
[[nodiscard]] std::uint64_t unix_time_ns() noexcept;

}  // namespace detail
}  // namespace shmbus
