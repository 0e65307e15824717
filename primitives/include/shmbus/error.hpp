// shmbus::Error — the one exception type of shmbus's setup paths.
//
// Creating, opening, attaching and validating an object may throw Error;
// hot paths (send, put, acquire, wait) are noexcept and report through
// return values instead. Boost.Interprocess and system errors are caught
// and converted where they arise, so a user catches this one type.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace shmbus {

enum class Errc : std::uint8_t {
  invalid_name,       // name has characters outside [A-Za-z0-9._-] or bad length
  not_found,          // no object of that name
  already_exists,     // exclusive create found one
  wrong_kind,         // the segment holds another kind of object
  wrong_type,         // payload type fingerprint differs
  wrong_version,      // segment format version differs
  truncated,          // file smaller or larger than its header says
  corrupted,          // magic or a header field is not what shmbus writes
  not_ready,          // creator never published `ready` in time
  permission_denied,  // the OS refused access
  attach_table_full,  // every attachment slot holds a live process
  invalid_argument,   // a caller passed a bad size, count or option
  closed,             // the object or end was closed
  peer_dead,          // the other side died
  too_large,          // a message above the configured maximum
  not_owner,          // release of a lock by a process that does not hold it
  value_error,        // e.g. BoundedSemaphore released above its bound
  broken_barrier,     // Barrier broken by timeout, abort or a dead party
  task_failed,        // a Pool task threw in its worker
  system,             // any other OS error (errno in the message)
  decode_error,       // a message did not decode as the type asked for (shmbus/codec.hpp)
  timed_out,          // a call that throws on timeout gave up (IMapIterator::next(timeout))
};

// A short stable word for each code ("not_found"), for messages and JSON.
[[nodiscard]] std::string_view to_string(Errc code) noexcept;

class Error : public std::runtime_error {
 public:
  // `object` is the user-visible name ("orders"); `reason` says what
  // differed ("format version 3, expected 1").
  Error(Errc code, std::string object, std::string reason);

  [[nodiscard]] Errc code() const noexcept { return code_; }
  [[nodiscard]] const std::string& object() const noexcept { return object_; }
  [[nodiscard]] const std::string& reason() const noexcept { return reason_; }

 private:
  Errc code_;
  std::string object_;
  std::string reason_;
};

}  // namespace shmbus
