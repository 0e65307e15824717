// SharedMemory — a named block of bytes shared between processes, after
// Python's multiprocessing.shared_memory.SharedMemory.
//
//   shmbus::SharedMemory scratch{4096};                 // anonymous: shared by fork()
//   auto shm = shmbus::SharedMemory::create("frame", 1 << 20);
//   std::memcpy(shm.buf().data(), pixels, n);          // process A
//   auto view = shmbus::SharedMemory::open("frame");   // process B
//
// The bytes carry no synchronisation of their own: pair them with a Lock,
// an Event or a channel. Any thread may use a SharedMemory; creation,
// opening and unlink() are setup calls that throw shmbus::Error.
// Destroying the object unmaps it; only unlink() removes the name.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "shmbus/detail/segment.hpp"

namespace shmbus {

class SharedMemory;
namespace detail {
// Marks `shm` as holding data not yet handed on, or clears the mark:
// collect_garbage() keeps a marked segment whose processes all died
// (SegmentHeader::keep; the bridge's outboxes and inboxes).
void set_keep(const SharedMemory& shm, bool on) noexcept;
}  // namespace detail

class SharedMemory {
 public:
  // An anonymous block of `size` zeroed bytes (size >= 1) in unnamed memory
  // that fork()ed children share; nothing in /dev/shm, nothing to unlink.
  explicit SharedMemory(std::size_t size);

  // New block of `size` zeroed bytes (size >= 1); Errc::already_exists if taken.
  static SharedMemory create(std::string_view name, std::size_t size,
                             const SegmentOptions& options = {});
  // Existing block; Errc::not_found if none, Errc::wrong_kind if the name
  // holds another shmbus object.
  static SharedMemory open(std::string_view name, const SegmentOptions& options = {});
  // Opens the block if it exists, else creates it with `size` bytes.
  // Errc::invalid_argument if an existing block's size differs.
  static SharedMemory open_or_create(std::string_view name, std::size_t size,
                                     const SegmentOptions& options = {});

  [[nodiscard]] std::span<std::byte> buf() const noexcept { return segment_.payload_span(); }
  [[nodiscard]] std::size_t size() const noexcept { return segment_.payload_size(); }
  [[nodiscard]] const std::string& name() const noexcept { return segment_.name(); }

  // Unmaps now; buf() is empty afterwards. The destructor does the same.
  void close() noexcept { segment_.close(); }
  // Removes the name so no new process can open it; mappings stay valid.
  // Nothing to do for an anonymous block.
  void unlink() {
    if (!segment_.name().empty()) detail::Segment::unlink(segment_.name());
  }

 private:
  friend void detail::set_keep(const SharedMemory& shm, bool on) noexcept;
  explicit SharedMemory(detail::Segment segment) : segment_(std::move(segment)) {}
  detail::Segment segment_;
};

inline void detail::set_keep(const SharedMemory& shm, bool on) noexcept {
  shm.segment_.set_keep(on);
}

}  // namespace shmbus
