// Shared-memory formats and the robust futex mutex core behind Lock, RLock,
// Condition, Barrier and Value/Array. Internal: users see lock.hpp etc.
//
// Robust mutex word (label [mutex.word]), one 32-bit futex word:
//
//   bit 31      kWaiters        someone may sleep in FUTEX_WAIT on the word
//   bit 30      kInconsistent   taken over from a dead owner, not yet made
//                               consistent (EOWNERDEAD state)
//   bit 29      kNotRecoverable released while inconsistent: every later
//                               acquire fails (ENOTRECOVERABLE state)
//   bits 0..21  owner pid       0 = unlocked
//
// Uncontended acquire is one CAS 0 -> pid (acquire), uncontended release
// one exchange -> 0 (release); FUTEX_WAKE only when the old word had
// kWaiters. The full owner identity (pid + start time) is stored next to
// the word right after the CAS, so a reused pid is not mistaken for the
// owner; see owner_alive() in lock.cpp for the short window before it is
// written.
//
// Dead owners are found with bounded futex waits: a contended waiter sleeps
// at most kOwnerCheckPeriod at a time and then asks is_alive(owner). The
// kernel's robust-futex list (set_robust_list) was not used: glibc owns the
// one list head per thread for its own robust pthread mutexes, and a second
// user of it would corrupt that list. The cost is that a dead owner is
// noticed after up to kOwnerCheckPeriod, and one /proc read per waiter per
// period while a lock is held for long.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/futex.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {
enum class LockResult : std::uint8_t;
}

namespace shmbus::detail {

inline constexpr std::uint32_t kWaiters = 1u << 31;
inline constexpr std::uint32_t kInconsistent = 1u << 30;
inline constexpr std::uint32_t kNotRecoverable = 1u << 29;
inline constexpr std::uint32_t kPidMask = (1u << 22) - 1;
inline constexpr auto kOwnerCheckPeriod = std::chrono::milliseconds(10);

// This process as the lock layer names it: cached, refreshed in a forked
// child by a pthread_atfork handler (getpid() is a system call on current
// glibc, and the fast path makes none).
struct SelfIds {
  std::uint32_t pid;     // fits kPidMask (PID_MAX_LIMIT is 2^22)
  std::uint64_t packed;  // ProcessId::pack() of this process
};
[[nodiscard]] SelfIds self_ids() noexcept;
// A token naming the calling thread within this process (the address of a
// thread_local), for RLock recursion; combined with the pid it is unique.
[[nodiscard]] std::uint64_t thread_token() noexcept;

// Robust mutex, format v1 (one cache line).
//
//   0   word          futex word, [mutex.word]              (atomic)
//   8   owner         ProcessId::pack() of the holder, 0 while free or being set
//   16  owner_thread  RLock: thread_token() of the holder   (holder-written)
//   24  depth         RLock: recursion depth               (holder-written)
struct MutexState {
  alignas(64) std::atomic<std::uint32_t> word;
  std::uint32_t reserved0;
  std::atomic<std::uint64_t> owner;
  std::atomic<std::uint64_t> owner_thread;
  std::atomic<std::uint32_t> depth;
};
static_assert(sizeof(MutexState) == 64);
static_assert(offsetof(MutexState, owner) == 8);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// Fast paths inline; the contended path lives in lock.cpp.
LockResult mutex_acquire_slow(MutexState& m, const Clock::time_point* deadline,
                              const WaitPolicy& policy) noexcept;
void mutex_release_slow(MutexState& m, std::uint32_t word) noexcept;

[[nodiscard]] inline bool mutex_try_acquire_fast(MutexState& m) noexcept {
  const SelfIds& self = self_ids();
  std::uint32_t expected = 0;
  // [mutex.word] acquire: pairs with the release exchange in mutex_release();
  // everything the previous holder wrote is visible from here on.
  if (m.word.compare_exchange_strong(expected, self.pid, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
    fault_point(FaultPoint::lock_taken);
    // relaxed: advisory; readers cross-check it against the pid in the word.
    m.owner.store(self.packed, std::memory_order_relaxed);
    return true;
  }
  return false;
}

inline void mutex_release(MutexState& m) noexcept {
  // relaxed: the holder reads its own flag bits; only the holder changes
  // kInconsistent, others only add kWaiters.
  const std::uint32_t w = m.word.load(std::memory_order_relaxed);
  // relaxed: advisory, see mutex_try_acquire_fast().
  m.owner.store(0, std::memory_order_relaxed);
  fault_point(FaultPoint::lock_releasing);
  if ((w & (kInconsistent | kNotRecoverable)) != 0) {
    mutex_release_slow(m, w);
    return;
  }
  // [mutex.word] release: pairs with the acquire CAS of the next holder.
  const std::uint32_t old = m.word.exchange(0, std::memory_order_release);
  // Shared futex (never PRIVATE): the word is in a segment other processes map.
  if ((old & kWaiters) != 0) futex_wake(m.word, 1);
}

// Whether the pid in a held word names the calling process.
[[nodiscard]] inline bool mutex_held_by_self(const MutexState& m) noexcept {
  // relaxed: only this process can have written its own pid into the word.
  return (m.word.load(std::memory_order_relaxed) & kPidMask) == self_ids().pid;
}

// Event, format v1.
//   0  flag  1 = set        (seq_cst, [wait.sleepers])
//   64 ch    WaitChannel
struct EventState {
  alignas(64) std::atomic<std::uint32_t> flag;
  alignas(64) WaitChannel ch;
};
static_assert(sizeof(EventState) == 128);

// Semaphore / BoundedSemaphore, format v1.
//   0  value  tokens available (seq_cst, [sem.value] and [wait.sleepers])
//   4  bound  BoundedSemaphore: the initial value (set once before ready); 0 otherwise
//   64 ch     WaitChannel
struct SemaphoreState {
  alignas(64) std::atomic<std::uint32_t> value;
  std::uint32_t bound;
  alignas(64) WaitChannel ch;
};
static_assert(sizeof(SemaphoreState) == 128);

// Condition, format 2 (detail/segment.hpp).
//   0   seq        futex word, bumped by every notify, under the lock ([cond.seq])
//   4   sleepers   waiters between registering and waking up ([wait.epoch] word:
//                  count, strikes, epoch; see futex.hpp)
//   64  lock_kind  ObjectKind of the lock (lock or rlock)   (set once before ready)
//   68  name_len   length of lock_name                      (set once before ready)
//   72  lock_name  the lock's user-visible name, not NUL-terminated
inline constexpr std::size_t kConditionNameMax = 256;
struct ConditionState {
  alignas(64) std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> sleepers;
  alignas(64) std::uint32_t lock_kind;
  std::uint32_t name_len;
  char lock_name[kConditionNameMax];
};
static_assert(offsetof(ConditionState, lock_kind) == 64);

// Barrier, format 2 (detail/segment.hpp).
//   0    guard     robust mutex over count, broken, outcome
//   64   gen       generation, bumped when one ends ([barrier.gen])
//   68   sleepers  waiters between registering and waking up ([wait.epoch] word)
//   72   parties   set once before ready
//   76   count     arrivals in this generation         (under guard)
//   80   broken    1 until reset()                     (under guard; read lock-free)
//   84   wake      futex word the waiters sleep on: bumped after a gen bump
//                  when someone is counted, and by a [wait.epoch] repair
//                  (format 1 slept on gen, which a repair must not bump)
//   128  outcome   per generation % 64: 1 tripped, 2 broken (under guard, before gen bump)
//   192  members   ProcessId::pack() of registered parties (CAS 0 <-> id)
inline constexpr std::uint32_t kBarrierMembers = 64;
struct BarrierState {
  MutexState guard;
  alignas(64) std::atomic<std::uint32_t> gen;
  std::atomic<std::uint32_t> sleepers;
  std::uint32_t parties;
  std::atomic<std::uint32_t> count;
  std::atomic<std::uint32_t> broken;
  std::atomic<std::uint32_t> wake;
  alignas(64) std::atomic<std::uint8_t> outcome[64];
  alignas(64) std::atomic<std::uint64_t> members[kBarrierMembers];
};
static_assert(offsetof(BarrierState, gen) == 64);
static_assert(offsetof(BarrierState, wake) == 84);
static_assert(offsetof(BarrierState, outcome) == 128);
static_assert(offsetof(BarrierState, members) == 192);

// Value / Array header, format v1; the elements follow at kCellsOffset.
//   0    lock       RLock state (used by Value/Array, unused by Raw*)
//   64   count      number of elements          (set once before ready)
//   72   elem_size  sizeof(T)                   (set once before ready)
//   80   writing    what the lock holder is writing, [cells.writing]: 0
//                   nothing, i + 1 element i, kCellsAll every element (a
//                   View); set before the bytes, cleared after (under lock)
//   88   torn       what a holder that died writing may have left part old,
//                   part new (same encoding; under lock): set by the process
//                   that takes the lock over, cleared by a write of what it
//                   names or by clear_torn()
//   96   views      Views the holder has open (under lock): they may end in
//                   any order, and `writing` stays set until the last ends
//   128  elements
// `writing`, `torn` and `views` sit in bytes every creator of format v1 zeroed, so
// an object made by an older build reads as "nothing torn" (no version
// bump: no field moved or changed meaning). Lock-free T never uses them.
inline constexpr std::uint64_t kCellsAll = ~std::uint64_t{0};
struct CellsHeader {
  MutexState lock;
  alignas(64) std::uint64_t count;
  std::uint64_t elem_size;
  std::atomic<std::uint64_t> writing;
  std::atomic<std::uint64_t> torn;
  std::atomic<std::uint64_t> views;
};
inline constexpr std::size_t kCellsOffset = 128;
static_assert(offsetof(CellsHeader, writing) == 80);
static_assert(offsetof(CellsHeader, torn) == 88);
static_assert(offsetof(CellsHeader, views) == 96);
static_assert(sizeof(CellsHeader) <= kCellsOffset);

// Called by the process whose acquire of a Value's or Array's lock took it
// over from a dead holder (RLock, lock.cpp), before it makes the lock
// consistent: what the holder was writing becomes what is torn.
void cells_took_over(CellsHeader& h) noexcept;
// Called by a holder's last release of such a lock: clears a mark or View
// count still standing (none can be meant then).
void cells_released(CellsHeader& h) noexcept;

}  // namespace shmbus::detail
