// ProcessId — a process named so that a reused pid is not mistaken for the
// process that once held it: pid plus the kernel's start time of that pid.
//
// Used by segment attachment tables, lock owners and the resource tracker.
// Reading another process's start time reads /proc: a setup-path cost.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace shmbus {

struct ProcessId {
  pid_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks after boot (/proc/PID/stat field 22)

  friend bool operator==(const ProcessId&, const ProcessId&) = default;

  // Packed into one 64-bit word for lock-free tables: pid in the low 22 bits
  // (Linux's PID_MAX_LIMIT is 2^22), start time above. 0 means "nobody".
  [[nodiscard]] std::uint64_t pack() const noexcept;
  [[nodiscard]] static ProcessId unpack(std::uint64_t word) noexcept;
};

// The calling process. Cached, so it costs no system call: fit for hot
// paths. Refreshed in a child by fork() itself (an atfork handler), and in
// a child of _Fork() or clone() by its first call (the cache is in a
// wipe-on-fork page: detail/fork_wiped.hpp).
[[nodiscard]] ProcessId this_process() noexcept;

// The identity of a running process, or nullopt if it has exited (a zombie
// that has not been reaped counts as exited once every thread has stopped:
// a process whose main thread exited while another runs is running).
[[nodiscard]] std::optional<ProcessId> lookup_process(pid_t pid) noexcept;

// True while the very process `id` names is running (not a zombie, and its
// pid not reused by another process). Only a definite answer from the kernel
// makes it false: if /proc cannot be read (EMFILE, hidepid), a pid that
// exists counts as alive, so nobody repairs or unlinks what it still uses.
[[nodiscard]] bool is_alive(const ProcessId& id) noexcept;

}  // namespace shmbus
