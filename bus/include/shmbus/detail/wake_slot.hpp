// detail::WakeSlot — per-thread futex words that pipe senders wake instead
// of a ring's header word, so that a blocking shmbus::wait() over many pipe
// ends sleeps on one word ([ring.redirect]).
//
// Why: futex_waitv(2) looks up every shared futex word's key on every call
// (get_futex_key: a page-table walk, on a paravirtualised guest a
// hypercall), about 0.5 us a word; epoll pays its registration once. A
// wait over 64 pipe ends that names one word instead of 64 pays once.
//
// The table: one POSIX shared-memory object per user,
// /dev/shm/shmbus-wake-slots.<euid> (outside the "shmbus." names of
// objects, so the garbage collector and bus-inspector never list it), of
// kWakeSlotCount lines:
//
//   0      WakeTableHeader: magic, version, slot count, slot size
//   64     slot 1: owner (ProcessId::pack(), 0: free), futex word
//   128    slot 2 ...
//
// Made whole under a private name and linked into place (link(2) is
// atomic), so nobody ever maps a half-made table; mode 0600, and a table
// that is not owned by this euid or that group or others may write is not
// used (waits sleep on ring words). Never unlinked. A pipe between two
// users' processes falls back to ring words: a sender that cannot open
// the waiter's table wakes the header word, which the waiter does not
// sleep on; its first such sleep runs to its slice's end, and then the
// waiter stops redirecting (self-healing, below).
//
// Self-healing: a waiter and a sender may use different tables (the table
// was unlinked and made again while old processes keep the old mapping; a
// private /dev/shm; a sender that cannot open it, another user's). The
// sender then wakes a word the waiter does not sleep on, and every message
// would wait for the waiter's 10 ms liveness slice. So when a redirected
// sleep ran to its slice's end with a pipe end ready (a missed wake-up,
// detail::pipe_missed_wakeups()) and the slot's word never moved
// (slot_never_woken(): nobody woke it, not even late), the wait calls
// stop_redirecting(): from then on this process's waits sleep on the ring
// words, as without a table. One 10 ms stall, then the old behaviour (and
// its futex_waitv cost per end).
//
// Who may call what: a thread claims one slot for itself on its first
// redirecting wait (CAS owner 0 -> its process, or a dead process's ->
// its own), keeps it in a thread_local and frees it when it ends; a forked
// child claims its own. Any thread of any process may wake any slot.
// Everything read from the table is untrusted: a table of the wrong size,
// magic or version is not used (waits sleep on ring words as before), and
// an owner or word that somebody overwrote costs at most a spurious
// wake-up (a slot that two threads believe theirs is woken for both).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "shmbus/detail/futex.hpp"

namespace shmbus::detail {

inline constexpr std::uint32_t kWakeSlotCount = 1024;
inline constexpr std::uint64_t kWakeTableMagic = 0x4B4157534D485321ULL;  // "!SHMSWAK"
inline constexpr std::uint32_t kWakeTableVersion = 1;

struct alignas(64) WakeTableHeader {
  std::uint64_t magic;       // kWakeTableMagic
  std::uint32_t version;     // kWakeTableVersion
  std::uint32_t slot_count;  // kWakeSlotCount
  std::uint32_t slot_size;   // sizeof(WakeSlot)
};

struct alignas(64) WakeSlot {
  std::atomic<std::uint64_t> owner;  // ProcessId::pack() of the claimant, 0: free
  std::atomic<std::uint32_t> word;   // [ring.redirect] futex word, bumped by every wake
};

struct WakeTable {
  WakeTableHeader header;
  WakeSlot slots[kWakeSlotCount];  // slot id k (1-based) is slots[k - 1]
};
static_assert(sizeof(WakeSlot) == 64);
static_assert(offsetof(WakeTable, slots) == 64);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// This thread's slot: its id (1..kWakeSlotCount) and futex word; id 0
// when none can be had (no table, every slot taken), then the caller
// sleeps on ring words. Claims one on the first call (setup: may open and
// map the table, read /proc); after that a thread_local read.
struct ThreadWakeSlot {
  std::uint32_t id = 0;
  std::atomic<std::uint32_t>* word = nullptr;
};
[[nodiscard]] ThreadWakeSlot this_thread_wake_slot() noexcept;

// A sender that found a redirecting consumer's mark: bumps slot `id`'s
// word and wakes it. False when this process cannot (no table, an id out
// of range): the caller wakes the ring word instead. The first call in a
// process maps the table.
[[nodiscard]] bool wake_slot(std::uint32_t id) noexcept;

// Whether the slot word a redirected sleep compared (`slept`: its value
// read before the arms) still reads that value: nobody woke the slot. A
// missed wake-up with a moved word is a wake that came just after the
// slice ended, no sign of another table: keep redirecting.
[[nodiscard]] inline bool slot_never_woken(const FutexWaiter& slept) noexcept {
  // relaxed: our own slot word, read as a hint.
  return static_cast<const std::atomic<std::uint32_t>*>(slept.word)
             ->load(std::memory_order_relaxed) == slept.expected;
}

// A redirected wait in this process missed a wake-up: from now on waits
// here do not redirect (this_thread_wake_slot() returns id 0). Senders
// still wake slots that rings name.
void stop_redirecting() noexcept;

// For tests: wakes delivered through a slot by this process (relaxed).
[[nodiscard]] std::uint64_t wake_slot_wakes() noexcept;
// For tests: use the table at /dev/shm/<os_name> from now on ("": this
// user's default one) (forgets the mapped one and every thread's claim,
// and redirects again after stop_redirecting(); call before other threads
// wait).
void use_wake_table_for_testing(const std::string& os_name);
// For tests: `hook` runs in the thread that opens the table, under the
// lock that guards the mapping (null: none).
void set_wake_table_open_hook_for_testing(void (*hook)());

}  // namespace shmbus::detail
