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
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>

#include "shmbus/wait.hpp"

namespace shmbus::detail {

enum class FutexResult : std::uint8_t { woken, value_changed, timed_out, interrupted };

// Sleeps while *word == expected, until woken or `deadline` (monotonic;
// nullptr = no deadline). Spurious returns are possible: re-check state.
FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       const Clock::time_point* deadline) noexcept;

// Wakes up to `count` processes sleeping on `word`; returns how many woke.
int futex_wake(const std::atomic<std::uint32_t>& word, int count = INT_MAX) noexcept;

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

// Lives in shared memory; zero-initialised is the valid initial state.
struct WaitChannel {
  std::atomic<std::uint32_t> seq;       // futex word; bumped by notify() when someone sleeps
  std::atomic<std::uint32_t> sleepers;  // processes between their increment and wake-up
};
static_assert(sizeof(WaitChannel) == 8);

// Wakes up to `count` sleepers if there are any. No system call and no
// shared write when nobody sleeps. See [wait.sleepers] above.
inline void notify(WaitChannel& ch, int count = INT_MAX) noexcept {
  // [wait.sleepers] seq_cst: ordered after the caller's seq_cst publication.
  if (ch.sleepers.load(std::memory_order_seq_cst) == 0) return;
  // seq_cst RMW: a waiter that read the old seq fails its futex value check.
  ch.seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(ch.seq, count);
}

// The sleeping half of wait_until(): counts itself in `sleepers`, sleeps
// on the futex until ready() or the deadline. `woke()` runs after every
// return from futex_wait, before ready() is checked again (a caller's hook,
// e.g. releasing a wake token).
template <class Ready, class Woke>
bool sleep_until(WaitChannel& ch, Ready&& ready, const Clock::time_point* deadline,
                 Woke&& woke) noexcept {
  for (;;) {
    // [wait.sleepers] seq_cst: pairs with the load in notify().
    ch.sleepers.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t seq = ch.seq.load(std::memory_order_seq_cst);
    if (ready()) {
      ch.sleepers.fetch_sub(1, std::memory_order_relaxed);  // relaxed: a count only
      return true;
    }
    const FutexResult r = futex_wait(ch.seq, seq, deadline);
    ch.sleepers.fetch_sub(1, std::memory_order_relaxed);  // relaxed: a count only
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
