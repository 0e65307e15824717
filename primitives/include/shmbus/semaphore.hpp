// Semaphore and BoundedSemaphore — process-shared counting semaphores after
// Python's multiprocessing.Semaphore / BoundedSemaphore, in their own
// segment.
//
//   shmbus::Semaphore sem{2};                       // anonymous, as Semaphore(2)
//   { std::scoped_lock guard(sem); /* ... */ }      // `with sem:`
//   auto slots = shmbus::Semaphore::create("slots", 4);   // named
//   if (slots.acquire_for(10ms)) { /* ... */ slots.release(); }
//
// Who may call what: any thread of any process that opened the semaphore
// (or inherited it across fork() and attach()ed). create/open throw
// shmbus::Error; acquire/release are noexcept hot paths, except that
// BoundedSemaphore::release() throws Errc::value_error above the bound.
//
// Memory ordering: everything a process wrote before release() is visible
// to the process whose acquire() takes that token.
//
// Fast path: acquire with a token available is one CAS; release with
// nobody asleep is one RMW and one load, no system call. A waiter spins for
// its WaitPolicy's budget, then sleeps on a shared futex; release() issues
// FUTEX_WAKE only when a sleeper is counted. The value is a 32-bit count
// (at most 2^31 - 1).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "shmbus/detail/fd_bridge.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// Live statistics of a Semaphore or BoundedSemaphore, read without writing
// or blocking (e.g. from a SegmentView's payload); nullopt if too small.
struct SemaphoreInfo {
  std::uint32_t value = 0;
  std::uint32_t bound = 0;     // BoundedSemaphore's bound, 0 for a Semaphore
  std::uint32_t sleepers = 0;  // waiters counted asleep (a dead one until the repair, [wait.epoch])
};
[[nodiscard]] std::optional<SemaphoreInfo> read_semaphore_info(const std::byte* payload,
                                                               std::size_t size) noexcept;

namespace detail {
struct WaitAccess;  // shmbus::wait over any mix of objects (bus: wait_any.hpp)
}  // namespace detail

class Semaphore {
 public:
  static constexpr std::uint32_t kMaxValue = 0x7fffffff;

  // Errc::invalid_argument if value > kMaxValue.
  static Semaphore create(std::string_view name, std::uint32_t value = 1,
                          const SegmentOptions& options = {});
  static Semaphore open(std::string_view name, const SegmentOptions& options = {});
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // An anonymous semaphore, as Python's Semaphore(value): unnamed memory
  // that fork()ed children share. Errc::invalid_argument if value > kMaxValue.
  explicit Semaphore(std::uint32_t value = 1);

  void acquire() noexcept { (void)acquire_until_(nullptr); }
  [[nodiscard]] bool try_acquire() noexcept;
  template <class Rep, class Period>
  [[nodiscard]] bool acquire_for(std::chrono::duration<Rep, Period> d) noexcept {
    const auto deadline = detail::deadline_after(d);
    return acquire_until_(&deadline);
  }
  [[nodiscard]] bool acquire_until(Clock::time_point deadline) noexcept {
    return acquire_until_(&deadline);
  }
  // Adds n tokens; false (and no change) if that would pass kMaxValue.
  bool release(std::uint32_t n = 1) noexcept;

  [[nodiscard]] std::uint32_t get_value() const noexcept;

  // Lockable, so std::scoped_lock / std::unique_lock work (Python's `with`).
  void lock() noexcept { acquire(); }
  [[nodiscard]] bool try_lock() noexcept { return try_acquire(); }
  void unlock() noexcept { (void)release(); }

  // A file descriptor (an eventfd of this process) that polls readable
  // while a token may be there, for poll, epoll, Boost.Asio, libuv.
  // Level-triggered, re-armed by this handle: it stays readable until
  // try_acquire() here fails, then turns readable at the next release().
  // The first call starts one thread in this process that sleeps on the
  // semaphore as acquire() would (shmbus/wait_any.hpp); release() then
  // wakes it as it wakes any waiter. Throws Error(system) if the eventfd or
  // the thread cannot be made.
  [[nodiscard]] int fileno();

  void attach() { segment_.attach(); }
  void set_wait_policy(const WaitPolicy& policy) noexcept { policy_ = policy; }
  [[nodiscard]] const std::string& name() const noexcept { return segment_.name(); }

 protected:
  friend class BoundedSemaphore;
  friend struct detail::WaitAccess;
  Semaphore(detail::Segment segment, detail::SemaphoreState* state)
      : segment_(std::move(segment)), state_(state) {}
  static Semaphore make(detail::SegmentName name, ObjectKind kind, std::uint32_t value,
                        const SegmentOptions& options);
  bool acquire_until_(const Clock::time_point* deadline) noexcept;
  bool take_one() noexcept;  // try_acquire() without re-arming fileno()
  void rearm_fileno() noexcept;

  detail::Segment segment_;
  detail::SemaphoreState* state_ = nullptr;
  WaitPolicy policy_{};
  std::unique_ptr<detail::FdBridge> fd_bridge_;  // fileno(); null until asked for
};

// A Semaphore whose value may never exceed its initial value.
class BoundedSemaphore : public Semaphore {
 public:
  static BoundedSemaphore create(std::string_view name, std::uint32_t value = 1,
                                 const SegmentOptions& options = {});
  static BoundedSemaphore open(std::string_view name, const SegmentOptions& options = {});

  // An anonymous bounded semaphore, as Python's BoundedSemaphore(value).
  explicit BoundedSemaphore(std::uint32_t value = 1);

  // Throws Error(Errc::value_error) if the value would exceed the bound.
  void release(std::uint32_t n = 1);
  // Lockable: unlock() past the bound is a caller error and does nothing.
  void unlock() noexcept { (void)try_release(); }
  // As release(), but reports the bound with false instead of throwing.
  [[nodiscard]] bool try_release(std::uint32_t n = 1) noexcept;
  [[nodiscard]] std::uint32_t bound() const noexcept { return state_->bound; }

 private:
  explicit BoundedSemaphore(Semaphore&& made) : Semaphore(std::move(made)) {}
};

}  // namespace shmbus
