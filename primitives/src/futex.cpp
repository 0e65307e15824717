#include "shmbus/detail/futex.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <string_view>

namespace shmbus::detail {

namespace {
// `word`: the address of a 32-bit futex word; the kernel reads it, we never do here.
long futex(const void* word, int op, std::uint32_t val, const timespec* ts,
           std::uint32_t val3) noexcept {
  // Shared futex (no FUTEX_PRIVATE_FLAG): the word is in a segment other
  // processes map at other addresses, and the kernel keys it by page.
  return ::syscall(SYS_futex, const_cast<void*>(word), op, val, ts, nullptr, val3);
}

// An absolute CLOCK_MONOTONIC time (the clock steady_clock reads).
timespec monotonic(const Clock::time_point& t) noexcept {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  if (ns < 0) ns = 0;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

FutexResult result_of(long rc) noexcept {
  if (rc >= 0) return FutexResult::woken;
  switch (errno) {
    case EAGAIN:
      return FutexResult::value_changed;
    case ETIMEDOUT:
      return FutexResult::timed_out;
    default:
      return FutexResult::interrupted;
  }
}

FutexResult wait_on(const void* word, std::uint32_t expected,
                    const Clock::time_point* deadline) noexcept {
  // FUTEX_WAIT_BITSET takes an absolute time on CLOCK_MONOTONIC (no
  // FUTEX_CLOCK_REALTIME).
  const timespec ts = deadline != nullptr ? monotonic(*deadline) : timespec{};
  return result_of(futex(word, FUTEX_WAIT_BITSET, expected, deadline != nullptr ? &ts : nullptr,
                         FUTEX_BITSET_MATCH_ANY));
}

thread_local std::uint64_t t_wake_calls = 0;  // futex_wake_calls()

int wake_on(const void* word, int count) noexcept {
  ++t_wake_calls;
  long rc = futex(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, 0);
  return rc < 0 ? 0 : static_cast<int>(rc);
}

// The low half of a 64-bit word is its first four bytes.
static_assert(std::endian::native == std::endian::little);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 && alignof(std::atomic<std::uint64_t>) == 8);
}  // namespace

FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       const Clock::time_point* deadline) noexcept {
  return wait_on(&word, expected, deadline);
}
int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  return wake_on(&word, count);
}
FutexResult futex_wait(const std::atomic<std::uint64_t>& word, std::uint32_t expected_low,
                       const Clock::time_point* deadline) noexcept {
  return wait_on(&word, expected_low, deadline);
}
int futex_wake(const std::atomic<std::uint64_t>& word, int count) noexcept {
  return wake_on(&word, count);
}

std::uint64_t futex_wake_calls() noexcept { return t_wake_calls; }

bool sleepers_after_wake(std::atomic<std::uint32_t>& sleepers, std::uint32_t seen, int woke,
                         std::atomic<std::uint32_t>* bump,
                         const std::atomic<std::uint32_t>& futex_word) noexcept {
  // [wait.epoch] Each step is one CAS from the word we acted on: if the word
  // moved meanwhile (a sleeper came or went, another notifier struck), we
  // skip this strike; strikes are a heuristic, the epoch is what is exact.
  // relaxed (strike CASes): nothing is published with a strike.
  std::uint32_t w = seen;
  if (woke > 0) {
    (void)sleepers.compare_exchange_strong(w, seen & ~kSleeperStrikeMask,
                                           std::memory_order_relaxed);
    return false;
  }
  const std::uint32_t strikes = (seen & kSleeperStrikeMask) / kSleeperStrikeOne + 1;
  if (strikes < kSleeperStrikes) {
    (void)sleepers.compare_exchange_strong(w, seen + kSleeperStrikeOne, std::memory_order_relaxed);
    return false;
  }
  // The repair. seq_cst CAS: in the total order with every sleeper's
  // increment and epoch re-read ([wait.epoch] in futex.hpp).
  const std::uint32_t fresh = (seen & kSleeperEpochMask) + kSleeperEpochOne;
  if (!sleepers.compare_exchange_strong(w, fresh, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
    return false;
  // seq_cst RMW: a live sleeper that read the futex word before our CAS
  // (still counted then) fails its futex value check or is woken below.
  if (bump != nullptr) bump->fetch_add(1, std::memory_order_seq_cst);
  (void)futex_wake(futex_word, INT_MAX);
  return true;
}

FutexResult futex_wait_any(std::span<const FutexWaiter> words,
                           const Clock::time_point* deadline) noexcept {
  // relaxed: a process-local flag; a second ENOSYS is harmless.
  static std::atomic<bool> unsupported{false};
  std::array<futex_waitv, kMaxFutexWaiters> v{};
  const std::size_t n = std::min(words.size(), v.size());
  for (std::size_t i = 0; i < n; ++i) {
    v[i].val = words[i].expected;
    v[i].uaddr = reinterpret_cast<std::uintptr_t>(words[i].word);
    v[i].flags = FUTEX_32;  // shared: no FUTEX_PRIVATE_FLAG (see futex() above)
  }
  if (!unsupported.load(std::memory_order_relaxed)) {
    const timespec ts = deadline != nullptr ? monotonic(*deadline) : timespec{};
    const long rc = ::syscall(SYS_futex_waitv, v.data(), static_cast<unsigned>(n), 0U,
                              deadline != nullptr ? &ts : nullptr, CLOCK_MONOTONIC);
    if (rc >= 0 || errno != ENOSYS) return result_of(rc);
    unsupported.store(true, std::memory_order_relaxed);
  }
  Clock::time_point nap = Clock::now() + std::chrono::microseconds(200);
  if (deadline != nullptr && *deadline < nap) nap = *deadline;
  const timespec ts = monotonic(nap);
  (void)::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
  return FutexResult::timed_out;
}

namespace {
// The pid that registered: a forked child (another address space, another
// pid) registers again. relaxed: a process-local cache; registering twice
// is harmless.
std::atomic<pid_t> g_registered_pid{0};
}  // namespace

bool asymmetric_fence_register() noexcept {
  // SHMBUS_NO_MEMBARRIER (set, not "0"): this process never registers, so
  // no other process's membarrier interrupts it; its senders pay a fence.
  if (const char* off = std::getenv("SHMBUS_NO_MEMBARRIER");
      off != nullptr && *off != '\0' && std::string_view(off) != "0")
    return false;
  const pid_t pid = ::getpid();
  if (g_registered_pid.load(std::memory_order_relaxed) == pid) return true;
  if (::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) != 0) return false;
  g_registered_pid.store(pid, std::memory_order_relaxed);
  return true;
}

bool asymmetric_heavy_fence() noexcept {
  return ::syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0;
}

}  // namespace shmbus::detail
