// detail::PipeControl — the shared-memory format of a Pipe segment, and
// the process-wide fork generation a Connection uses to notice that it was
// inherited across fork().
//
// A pipe has two ends. End e receives from ring e and sends into ring
// 1 - e; a half-duplex pipe has ring 0 only, so end 0 is receive-only and
// end 1 send-only (multiprocessing.Pipe(duplex=False) order).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmbus/detail/spsc_ring.hpp"

namespace shmbus::detail {

// 2: a receiver sleeps on the header word it polls ([ring.sleep]); a
// format 1 peer would not wake it. 3: an adaptive sender publishes with a
// plain store and checks RingControl::consumer_asleep; a format 2 peer
// would neither raise that flag nor pay the heavy fence. 4: the flag holds
// the sleep token of the word the receiver sleeps on (sleep_token()); a
// format 3 sender could take a token meant for a later word and wake the
// wrong one. 5: an end's holder may wait for data with its own strategy
// (PipeEndLine::recv_wait, a Listener's accept()); a format 4 sender
// would not read it and leave such a receiver asleep. 6: a receiver in
// shmbus::wait() may name a wake slot (RingControl::wake_slot,
// [ring.redirect]) and sleep on it instead of its header word; a format 5
// sender would wake the word and leave it asleep until its liveness slice.
inline constexpr std::uint32_t kPipeFormat = 6;
inline constexpr std::size_t kPipeControlSize = 4096;  // ring data starts here, page aligned

// Set once before the segment is ready; read-only afterwards.
struct PipeConfig {
  std::uint32_t format;       // kPipeFormat
  std::uint32_t duplex;       // 1: two rings, 0: one ring
  std::uint64_t capacity;     // bytes per ring, a power of two
  std::uint64_t max_message;  // largest message, fragments included
  std::uint32_t strategy;     // WaitStrategy, the same for both ends
  std::uint32_t flags;        // kPipeNoStatistics; other bits 0
  std::uint64_t spin_ns;      // adaptive spin budget
};

// PipeConfig::flags: the ends keep no message/byte counters (0, the
// default, keeps them; segments made before the flag existed read as 0).
inline constexpr std::uint32_t kPipeNoStatistics = 1;

// One end's line: written only by the process that holds the end (owner
// by a CAS when the end is taken; recv_wait by the taker just before it).
struct alignas(64) PipeEndLine {
  std::atomic<std::uint64_t> owner;        // ProcessId::pack(), 0 = not taken   [pipe.owner]
  std::atomic<std::uint32_t> closed;       // 1 once the end is closed          [pipe.closed]
  std::atomic<std::uint32_t> peer_deaths;  // times this end saw its peer dead   [ring.stats]
  // [pipe.recv_wait] 1 + the WaitStrategy this end's holder waits for data
  // with when it differs from config.strategy (a Listener's accept() with
  // ListenerOptions::wait), 0: config.strategy. Written before the owner
  // CAS; the peer reads it once it saw the end taken and makes its sends
  // wake such a holder (untrusted: anything but 1..3 is ignored).
  std::atomic<std::uint32_t> recv_wait;
};
static_assert(offsetof(PipeEndLine, recv_wait) == 16);

// Pipe control block, format 6, at the start of the payload.
//
//   0     config           (set once before ready)
//   64    end 0 line       (end 0's holder)
//   128   end 1 line       (end 1's holder)
//   192   ring 0 control   (192 bytes: see RingControl)
//   384   ring 1 control   (duplex only)
//   4096  ring 0 data, then ring 1 data (capacity bytes each)
struct PipeControl {
  alignas(64) PipeConfig config;
  PipeEndLine ends[2];
  RingControl rings[2];
};
static_assert(std::is_standard_layout_v<PipeControl>);
static_assert(offsetof(PipeControl, ends) == 64);
static_assert(offsetof(PipeControl, rings) == 192);
static_assert(sizeof(PipeControl) <= kPipeControlSize);

[[nodiscard]] constexpr std::size_t pipe_payload_size(std::size_t capacity, bool duplex) noexcept {
  return kPipeControlSize + capacity * (duplex ? 2 : 1);
}

// How a Connection's wait for data or room ended.
enum class WaitOutcome : std::uint8_t { ready, timeout, dead_peer };

// Sleeps of this process's pipe waits that ran to the end of their
// liveness slice although their condition was already true when they
// returned: a wake-up that never came (the slice, not the notifier, ended
// the sleep). Process-wide, relaxed; for tests (a lost wake-up costs a
// slice, which no timing-free test could see otherwise).
[[nodiscard]] std::uint64_t pipe_missed_wakeups() noexcept;
// Counts one such sleep (shmbus::wait()'s sleeps count too).
void count_missed_wakeup() noexcept;

// Incremented in every child created by fork() (pthread_atfork); a
// Connection that sees a new value was inherited and re-takes its end.
extern std::atomic<std::uint64_t> g_fork_generation;
[[nodiscard]] inline std::uint64_t fork_generation() noexcept {
  // relaxed: only this process writes it, in its own fork child handler.
  return g_fork_generation.load(std::memory_order_relaxed);
}

}  // namespace shmbus::detail
