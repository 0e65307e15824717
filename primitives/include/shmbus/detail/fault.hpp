// detail::fault_point — deterministic kill points for the fault tests.
//
// A test installs a hook (set_fault_hook) in the one process it wants to
// die, or to hold, at an exact step of an operation; the hook typically
// raise(SIGKILL)s when its point comes, so that every repair path runs in
// every build instead of only when a random kill happens to land there
// (tests/fault). Unset, as it always is outside tests, a point costs one
// relaxed load of a constinit pointer and a predicted branch.
#pragma once

#include <atomic>
#include <cstdint>

namespace shmbus::detail {

enum class FaultPoint : std::uint8_t {
  // Queue family (detail/queue_core.hpp).
  put_claimed,    // slot WRITING, before the payload is written
  put_written,    // payload written, before FULL is published
  put_published,  // FULL published, before the counter is updated
  get_claimed,    // slot READING, before the payload is copied
  get_copied,     // payload copied, before the slot is released
  get_released,   // slot released, before the counter is updated
  get_passing,    // a get found the head slot claimed by another getter
                  // (READING), before it moves the read position past it
                  // (the slow branch only; [queue.giveback])
  wait_returned,  // a sleeper back from futex_wait, before it releases the
                  // [queue.token] (a woken process killed holding the token)
  // Pipe (Connection's out-of-line paths: try_send*, the timed and
  // fragmented sends, every recv* but the inlined fast recv, close()).
  send_reserved,  // room reserved, nothing written
  send_written,   // payload written, frame not published
  recv_peeked,    // frame read, ring space not released
  close_begun,    // close(): batches flushed, end not yet marked closed
  // Lock / RLock (and a Condition's lock).
  lock_taken,      // acquire: the word names us, owner identity not yet written
  lock_releasing,  // release: owner identity cleared, word still held
  // Value / Array of a T that is not lock-free.
  cells_writing,  // [cells.writing] marked under the lock, the bytes not yet
                  // written (set(), a[i] = ..., a View just made)
  // Topic.
  subscribe_claimed,  // subscribe(): record claimed, start position read,
                      // the publisher not yet told (policy still free)
  sleep_joining,      // a subscriber found nothing, before it counts itself
                      // among the sleepers ([topic.wake])
  // Listener.
  connect_checking,  // Client(): its request read as not yet taken, before it
                     // checks that the listener lives
  // Segment::unlink / unlink_if_same: the file locked and judged the one
  // the name names, not yet unlinked ([segment.unlink]).
  unlink_checked,
  // Barrier.
  generation_ended,  // the last arriver: gen bumped and the guard released,
                     // its waiters not yet woken
  // Every WaitChannel sleeper (futex.hpp's sleep_until), shmbus::wait()
  // (both forms: for pipe ends, "armed" stands for "counted") and a Barrier
  // waiter.
  sleeper_counted,  // counted in `sleepers`, futex word read, not yet asleep
  // A fileno() descriptor's thread (detail/fd_bridge.hpp).
  fd_firing,  // the armed word changed: state kFiring, descriptor not yet signalled
  // The bridge (bridge/src/forwarder.cpp).
  bridge_taken,    // a forwarded message is in the outbox and out of the queue,
                   // the outbox's next sequence not yet advanced
  bridge_applied,  // a received message is in the local queue, the inbox's
                   // applied sequence not yet stored
};
inline constexpr int kFaultPoints = static_cast<int>(FaultPoint::bridge_applied) + 1;

using FaultHook = void (*)(FaultPoint) noexcept;

// relaxed (both): a test sets the hook before it forks the process it
// targets, or in that process before the operation.
inline constinit std::atomic<FaultHook> g_fault_hook{nullptr};
inline void set_fault_hook(FaultHook hook) noexcept {
  g_fault_hook.store(hook, std::memory_order_relaxed);
}
inline void fault_point(FaultPoint p) noexcept {
  if (FaultHook h = g_fault_hook.load(std::memory_order_relaxed); h != nullptr) [[unlikely]]
    h(p);
}

}  // namespace shmbus::detail
