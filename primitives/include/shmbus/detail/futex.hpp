// The futex layer: raw wait/wake on 32-bit words in shared memory, and
// WaitChannel, an event count that lets a waiter sleep until a predicate on
// shared state holds while the notifier makes no system call unless someone
// sleeps.
//
// Every futex word here lives in a segment that several processes map, so
// no call ever uses FUTEX_PRIVATE_FLAG: a private futex is keyed by the
// virtual address and would never wake another process.
//
// WaitChannel contract (label [wait.sleepers]):
//   notifier: publish the new state with a memory_order_seq_cst store (or
//             RMW), then call notify(). notify() loads `sleepers` seq_cst.
//   waiter:   wait_until() increments `sleepers` seq_cst, reads `seq`, and
//             re-checks the predicate (whose loads must be seq_cst) before
//             sleeping on `seq`.
// In the single total order of seq_cst operations either the waiter's
// increment precedes the notifier's load (the notifier sees a sleeper,
// bumps `seq` and wakes), or the notifier's state store precedes the
// waiter's re-check (the waiter sees the state and does not sleep). No
// fence is needed, which keeps ThreadSanitizer exact.
//
// Dead sleepers (label [wait.epoch]). A process killed between its
// increment and its decrement (asleep, or anywhere between the two, or a
// process holding a fileno() whose bridge thread counts itself) would stay
// counted forever, and every later notify would make a futex_wake for
// nobody. So the `sleepers` word is not a bare count but
//
//   bits 0..11   count     sleepers counted in this epoch (saturates at 4095)
//   bits 12..13  strikes   notifies in a row whose futex_wake woke nobody
//   bits 14..31  epoch     bumped by every repair (wraps after 2^18)
//
// and a sleeper's increment returns a ticket (the word before it: its
// epoch). Leaving is a CAS that takes one off the count only while the
// epoch is still the ticket's. The epoch has 18 bits so that a ticket goes
// stale for good: a sleeper woken and preempted before its leave would
// take a live sleeper's count away only if exactly a multiple of 2^18
// repairs (each at least kSleeperStrikes + 1 futex_wake calls, over a
// million system calls) happened in between; with 12 bits (format 1) 4096
// repairs were enough.
//
// The count saturates ([wait.saturated]): a sleeper that finds 4095
// counted does not add itself (no carry into the strikes) and its ticket
// says so; while saturated nobody's leave takes one off either, so the
// count cannot reach 0 while an uncounted sleeper sleeps, and every notify
// wakes (as for a dead sleeper). Once every sleeper is gone the wakes find
// nobody, and after kSleeperStrikes of them the repair starts a new epoch
// at 0: saturation costs at most that many wakes for nobody, like a death. A notifier that counted
// sleepers but woke nobody adds a strike (a live sleeper between its increment and its futex_wait,
// or one woken and not yet gone, also makes one; a wake that reaches someone clears them). At
// kSleeperStrikes strikes it repairs: one CAS to {epoch + 1, no strikes, count 0}, then a bump of
// the futex word and a wake of everyone. Every live sleeper wakes (or finds the word changed), its
// decrement is a no-op, it re-checks its predicate and counts itself again in the new epoch; the
// dead stay uncounted. A sleeper re-reads the epoch after it reads the futex word: unchanged, the
// repair's CAS follows that read in the total order, so the repair's bump
// follows its futex word read and its futex_wait cannot sleep through the
// repair; changed, its count was wiped by the CAS (which compared the whole
// word, its increment included) and it counts itself again. So:
//   - no new shared write on the fast path: a notify with no sleeper
//     counted still loads one word and returns; strikes are written only
//     after a futex_wake (a system call) that woke nobody;
//   - a dead sleeper costs at most kSleeperStrikes wakes for nobody, then
//     nothing; the repair costs every live sleeper one extra wake-up.
// The same word and rules serve Condition and Barrier (sync_state.hpp),
// whose futex words the repair must not bump (a Condition's seq is only
// bumped under its lock; a Barrier's gen is its generation): see there.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>

#include "shmbus/detail/fault.hpp"
#include "shmbus/wait.hpp"

namespace shmbus::detail {

enum class FutexResult : std::uint8_t { woken, value_changed, timed_out, interrupted };

// Sleeps while *word == expected, until woken or `deadline` (monotonic;
// nullptr = no deadline). Spurious returns are possible: re-check state.
FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       const Clock::time_point* deadline) noexcept;

// Wakes up to `count` processes sleeping on `word`; returns how many woke.
int futex_wake(const std::atomic<std::uint32_t>& word, int count = INT_MAX) noexcept;

// FUTEX_WAKE system calls the calling thread has made (every futex_wake
// above counts one): what the tests read to prove a path makes none.
[[nodiscard]] std::uint64_t futex_wake_calls() noexcept;

// The same on the low 32 bits of a 64-bit word (its first four bytes: x86
// and every Linux target shmbus builds for are little endian), for a
// sleeper that waits on a word other processes publish with 64-bit stores.
FutexResult futex_wait(const std::atomic<std::uint64_t>& word, std::uint32_t expected_low,
                       const Clock::time_point* deadline) noexcept;
int futex_wake(const std::atomic<std::uint64_t>& word, int count = INT_MAX) noexcept;

// One word of futex_wait_any(): sleep while the 32 bits at `word` (a 64-bit
// word's low half: its first four bytes) read `expected`.
struct FutexWaiter {
  const void* word;
  std::uint32_t expected;
};
// Sleeps until any of `words` is woken (futex_wake on it) or already reads
// another value, or until `deadline`: futex_waitv(2), Linux 5.16, shared
// futexes, at most 128 words. Where the kernel (or a seccomp filter) lacks
// it, naps 200 us instead and returns timed_out: the caller re-checks its
// state either way, so a wake-up then costs up to a nap.
FutexResult futex_wait_any(std::span<const FutexWaiter> words,
                           const Clock::time_point* deadline) noexcept;
inline constexpr std::size_t kMaxFutexWaiters = 128;

// Asymmetric fences ([fence.asym]): a Dekker handshake between a hot side
// that must stay free of fences and a cold side that may pay for both.
//   hot:  store A; asymmetric_light_fence(); load B
//   cold: store B; asymmetric_heavy_fence(); load A
// At least one side sees the other's store, provided every process that
// runs a hot side called asymmetric_fence_register() first. The heavy
// fence is membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED): it makes each cpu
// that runs a registered process execute a full barrier (an IPI, about a
// microsecond here), so the hot side's fence is only a compiler barrier.
//
// Registers this process (again after a fork: the registration belongs to
// the address space). False where the kernel or a seccomp filter lacks
// membarrier, or when the environment sets SHMBUS_NO_MEMBARRIER (a process
// that must not be interrupted by other processes' heavy fences): such a
// process must use real fences on its hot side.
bool asymmetric_fence_register() noexcept;
// False when the heavy fence is unavailable (the caller must then not rely
// on hot sides that skipped their fence).
bool asymmetric_heavy_fence() noexcept;
inline void asymmetric_light_fence() noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

inline void cpu_relax() noexcept { __builtin_ia32_pause(); }

// Asks for the cache line at `p` with intent to write (PREFETCHW): a later
// store or locked RMW finds it owned instead of fetching it then. GCC turns
// __builtin_prefetch(p, 1) into a plain read prefetch unless built with
// -mprfchw, and a read prefetch only brings the line in shared.
inline void prefetch_for_write(const void* p) noexcept {
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
}

// --- the sleepers word ([wait.epoch]) -------------------------------------
// Segment format 2 (detail/segment.hpp): format 1 had a 16-bit count, 4
// strike bits and a 12-bit epoch in the same word.
inline constexpr std::uint32_t kSleeperCountMask = 0xfffu;  // also the saturated count
inline constexpr std::uint32_t kSleeperStrikeOne = 1u << 12;
inline constexpr std::uint32_t kSleeperStrikeMask = 0x3u << 12;
inline constexpr std::uint32_t kSleeperEpochOne = 1u << 14;
inline constexpr std::uint32_t kSleeperEpochMask = ~(kSleeperEpochOne - 1);
// A repair at the kSleeperStrikes-th strike: strikes 0..3 fit the 2 bits.
inline constexpr std::uint32_t kSleeperStrikes = 4;
static_assert((kSleeperStrikes - 1) * kSleeperStrikeOne <= kSleeperStrikeMask);
static_assert((kSleeperCountMask | kSleeperStrikeMask | kSleeperEpochMask) == ~0u);

[[nodiscard]] inline std::uint32_t sleeper_count(std::uint32_t word) noexcept {
  return word & kSleeperCountMask;
}

// Counts the caller a sleeper; returns its ticket (for sleeper_leave()).
// At the saturated count it adds nothing ([wait.saturated]) and its ticket
// (count bits all ones) leaves nothing. Out of the fast path: only a
// caller about to sleep counts itself.
// [wait.sleepers] seq_cst: pairs with the load in notify(). (A saturated
// count needs no RMW: a notifier that sees it wakes in any case.)
[[nodiscard]] inline std::uint32_t sleeper_enter(std::atomic<std::uint32_t>& sleepers) noexcept {
  std::uint32_t w = sleepers.load(std::memory_order_seq_cst);
  while (sleeper_count(w) != kSleeperCountMask &&
         !sleepers.compare_exchange_weak(w, w + 1, std::memory_order_seq_cst,
                                         std::memory_order_seq_cst)) {
  }
  return w;
}
// [wait.epoch] after the futex word's read: false when a repair wiped the
// count taken with `ticket` (count again before sleeping).
[[nodiscard]] inline bool sleeper_still_counted(const std::atomic<std::uint32_t>& sleepers,
                                                std::uint32_t ticket) noexcept {
  // seq_cst: ordered after the futex word's seq_cst read ([wait.epoch]).
  return ((sleepers.load(std::memory_order_seq_cst) ^ ticket) & kSleeperEpochMask) == 0;
}
// Uncounts a sleeper counted with `ticket`, unless a repair already did.
inline void sleeper_leave(std::atomic<std::uint32_t>& sleepers, std::uint32_t ticket) noexcept {
  // relaxed: a count only; the CAS keeps strikes and epoch as they are.
  // [wait.saturated] a saturated count stays until the repair.
  std::uint32_t w = sleepers.load(std::memory_order_relaxed);
  while (((w ^ ticket) & kSleeperEpochMask) == 0 && sleeper_count(w) != 0 &&
         sleeper_count(w) != kSleeperCountMask &&
         !sleepers.compare_exchange_weak(w, w - 1, std::memory_order_relaxed)) {
  }
}

// After a futex_wake that followed a load of `seen` (count > 0) from
// `sleepers`: `woke` is what it returned. A strike, or strikes cleared, or
// ([wait.epoch]) the repair: a new epoch with no sleeper counted, then
// `bump` (the futex word, when the repair may change it; else nullptr)
// incremented and everyone on `futex_word` woken. Returns true when it
// repaired. Out of line: only after a system call.
bool sleepers_after_wake(std::atomic<std::uint32_t>& sleepers, std::uint32_t seen, int woke,
                         std::atomic<std::uint32_t>* bump,
                         const std::atomic<std::uint32_t>& futex_word) noexcept;
inline void note_wake(std::atomic<std::uint32_t>& sleepers, std::uint32_t seen, int woke,
                      std::atomic<std::uint32_t>* bump,
                      const std::atomic<std::uint32_t>& futex_word) noexcept {
  if (woke == 0 || (seen & kSleeperStrikeMask) != 0) [[unlikely]]
    (void)sleepers_after_wake(sleepers, seen, woke, bump, futex_word);
}

// Lives in shared memory; zero-initialised is the valid initial state.
struct WaitChannel {
  std::atomic<std::uint32_t> seq;       // futex word; bumped by notify() when someone sleeps
  std::atomic<std::uint32_t> sleepers;  // [wait.epoch] word: count, strikes, epoch
};
static_assert(sizeof(WaitChannel) == 8);

// Counts the caller a sleeper of `ch` and reads the futex word it sleeps
// on into `seq`; returns the ticket ([wait.sleepers], [wait.epoch]).
[[nodiscard]] inline std::uint32_t sleeper_enter(WaitChannel& ch, std::uint32_t& seq) noexcept {
  for (;;) {
    const std::uint32_t ticket = sleeper_enter(ch.sleepers);
    seq = ch.seq.load(std::memory_order_seq_cst);  // [wait.sleepers] seq_cst
    if (sleeper_still_counted(ch.sleepers, ticket)) return ticket;
  }
}

// Wakes up to `count` sleepers if there are any. No system call and no
// shared write when nobody sleeps. See [wait.sleepers] above.
inline void notify(WaitChannel& ch, int count = INT_MAX) noexcept {
  // [wait.sleepers] seq_cst: ordered after the caller's seq_cst publication.
  const std::uint32_t seen = ch.sleepers.load(std::memory_order_seq_cst);
  if (sleeper_count(seen) == 0) return;
  // seq_cst RMW: a waiter that read the old seq fails its futex value check.
  ch.seq.fetch_add(1, std::memory_order_seq_cst);
  note_wake(ch.sleepers, seen, futex_wake(ch.seq, count), &ch.seq, ch.seq);  // [wait.epoch]
}

// The sleeping half of wait_until(): counts itself in `sleepers`, sleeps
// on the futex until ready() or the deadline. `woke()` runs after every
// return from futex_wait, before ready() is checked again (a caller's hook,
// e.g. releasing a wake token).
template <class Ready, class Woke>
bool sleep_until(WaitChannel& ch, Ready&& ready, const Clock::time_point* deadline,
                 Woke&& woke) noexcept {
  for (;;) {
    std::uint32_t seq = 0;
    const std::uint32_t ticket = sleeper_enter(ch, seq);
    if (ready()) {
      sleeper_leave(ch.sleepers, ticket);
      return true;
    }
    fault_point(FaultPoint::sleeper_counted);
    const FutexResult r = futex_wait(ch.seq, seq, deadline);
    sleeper_leave(ch.sleepers, ticket);
    woke();
    if (ready()) return true;
    if (r == FutexResult::timed_out) return false;
    if (deadline != nullptr && Clock::now() >= *deadline) return ready();
  }
}

// Waits until ready() returns true or the deadline passes (nullptr: never).
// Returns ready()'s last answer. ready() must load shared state seq_cst.
template <class Ready>
bool wait_until(WaitChannel& ch, Ready&& ready, const WaitPolicy& policy,
                const Clock::time_point* deadline) noexcept {
  if (ready()) return true;
  if (policy.strategy != WaitStrategy::blocking) {
    const bool bounded = policy.strategy == WaitStrategy::adaptive;
    const auto start = Clock::now();
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if (ready()) return true;
      if ((i & 63) == 0) {  // a clock read (vDSO, no system call) every 64 spins
        const auto now = Clock::now();
        if (deadline != nullptr && now >= *deadline) return ready();
        if (bounded && now - start >= policy.spin) break;
      }
    }
  }
  return sleep_until(ch, ready, deadline, [] {});
}

}  // namespace shmbus::detail
