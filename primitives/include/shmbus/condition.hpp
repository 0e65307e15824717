// Condition — a process-shared condition variable after Python's
// multiprocessing.Condition, over a Lock or an RLock that lives in its own
// segment. A named Condition's segment records the lock's name and kind,
// so open() opens the same lock.
//
//   shmbus::Condition cond;                        // anonymous, over a new RLock
//   bool ready = false;                            // in shared memory in real use
//   {                                              // a patient
//     std::unique_lock g(cond);
//     if (!cond.wait_for([&] { return ready; }, 1s)) { /* timed out */ }
//   }
//   {                                              // the doctor
//     std::unique_lock g(cond);
//     ready = true;
//     cond.notify_all();
//   }
//   auto lock = shmbus::Lock::create("ward.lock");          // named, unrelated processes
//   auto ward = shmbus::Condition::create("ward", lock);    // the doctor
//   auto same = shmbus::Condition::open("ward");            // a patient
//
// Who may call what: wait* and notify* must be called holding the lock
// (cond.acquire()/lock(), or get_lock()); notify without it is a caller
// error (wake-ups may then be lost, as with any condition variable); a
// wait by a thread (RLock) or process (Lock) that does not hold the lock
// returns false at once.
// create/open throw shmbus::Error.
//
// Memory ordering: the lock's: everything written under the lock before
// notify()/release() is visible to a waiter once wait() has re-acquired it.
//
// No lost wake-ups: a waiter reads the condition's futex word while still
// holding the lock; notify() (under the lock) bumps the word, so a notify
// between the waiter's release and its sleep makes the sleep return at
// once ([cond.seq]). A waiter spins (adaptive, busy_poll) before counting
// itself a sleeper. notify(n) wakes at least min(n, waiters) and, in a race
// with waiters still spinning or just going to sleep, those too: use the
// predicate forms. FUTEX_WAKE is issued only when a sleeper is counted; a
// notify with nobody waiting is one atomic increment and one load.
//
// If re-acquiring the lock in wait() finds its owner dead, wait() returns
// with the lock held in the owner-died state (see owner_died() on the lock
// and lock.hpp for make_consistent()).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/lock.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// Live statistics of a Condition, read without writing or blocking (e.g.
// from a SegmentView's payload); nullopt if too small or the recorded lock
// name is out of range.
struct ConditionInfo {
  std::uint32_t sleepers = 0;  // waiters counted asleep (a dead one until the repair, [wait.epoch])
  ObjectKind lock_kind = ObjectKind::lock;
  std::string lock_name;
};
[[nodiscard]] std::optional<ConditionInfo> read_condition_info(const std::byte* payload,
                                                               std::size_t size);

class Condition {
 public:
  // An anonymous condition, as Python's Condition(): over a new anonymous
  // RLock, or over the given Lock or RLock (this very lock, named or not).
  Condition();
  explicit Condition(const Lock& lock);
  explicit Condition(const RLock& lock);

  // Over an existing named Lock or RLock (opened again by its name);
  // Errc::invalid_argument for an anonymous lock (open() could not find it).
  static Condition create(std::string_view name, const Lock& lock,
                          const SegmentOptions& options = {});
  static Condition create(std::string_view name, const RLock& lock,
                          const SegmentOptions& options = {});
  // Over a new RLock named "<name>.lock" (Python's default).
  static Condition create(std::string_view name, const SegmentOptions& options = {});
  // Errc::corrupted if the recorded lock name or kind is invalid.
  static Condition open(std::string_view name, const SegmentOptions& options = {});
  // Unlinks the condition only (not its lock).
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // The underlying lock: Lockable, so std::unique_lock<Condition> works.
  [[nodiscard]] LockResult acquire() noexcept;
  // Python's acquire(False) and acquire(timeout=...): the lock's own.
  [[nodiscard]] LockResult try_acquire() noexcept;
  template <class Rep, class Period>
  [[nodiscard]] LockResult acquire_for(std::chrono::duration<Rep, Period> d) noexcept {
    return acquire_until(detail::deadline_after(d));
  }
  [[nodiscard]] LockResult acquire_until(Clock::time_point deadline) noexcept;
  void release();
  // Lockable / TimedLockable, as Lock and RLock: std::unique_lock<Condition>
  // with a timeout works. lock() throws Error(Errc::peer_dead) when the
  // lock is not recoverable; owner_died is a success (see owner_died()).
  void lock();
  void unlock() { release(); }
  [[nodiscard]] bool try_lock() noexcept;
  template <class Rep, class Period>
  [[nodiscard]] bool try_lock_for(std::chrono::duration<Rep, Period> d) noexcept {
    return holds(acquire_for(d));
  }
  template <class Clk, class Dur>
  [[nodiscard]] bool try_lock_until(std::chrono::time_point<Clk, Dur> t) noexcept {
    return holds(acquire_for(t - Clk::now()));
  }
  // The lock's: after owner_died, mark the protected state repaired; whether
  // the lock is held in the owner-died state; whether it is held.
  void make_consistent() noexcept;
  [[nodiscard]] bool owner_died() const noexcept;
  [[nodiscard]] bool locked() const noexcept;

  // Waits (the lock held) until notified or the deadline; false on timeout.
  // Spurious returns are possible: prefer the predicate forms.
  bool wait() noexcept { return wait_until_(nullptr); }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) noexcept {
    const auto deadline = detail::deadline_after(d);
    return wait_until_(&deadline);
  }
  bool wait_until(Clock::time_point deadline) noexcept { return wait_until_(&deadline); }

  // Waits until pred() (evaluated under the lock) holds; returns pred().
  template <class Pred>
  bool wait(Pred pred) {
    while (!pred()) wait_until_(nullptr);
    return true;
  }
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> d) {
    return wait_until(pred, detail::deadline_after(d));
  }
  template <class Pred>
  bool wait_until(Pred pred, Clock::time_point deadline) {
    while (!pred()) {
      if (!wait_until_(&deadline)) return pred();
    }
    return true;
  }

  void notify(int n = 1) noexcept;
  void notify_all() noexcept;

  // Which lock: exactly one of these is non-null.
  [[nodiscard]] Lock* get_lock() noexcept { return lock_ ? &*lock_ : nullptr; }
  [[nodiscard]] RLock* get_rlock() noexcept { return rlock_ ? &*rlock_ : nullptr; }
  [[nodiscard]] const std::string& lock_name() const noexcept { return lock_name_; }

  // Attaches this process to the condition's and the lock's segments.
  void attach();
  void set_wait_policy(const WaitPolicy& policy) noexcept;
  [[nodiscard]] const std::string& name() const noexcept { return segment_.name(); }

 private:
  Condition(detail::Segment segment, std::optional<Lock> lock, std::optional<RLock> rlock,
            std::string lock_name);
  bool wait_until_(const Clock::time_point* deadline) noexcept;

  detail::Segment segment_;
  detail::ConditionState* state_ = nullptr;
  std::optional<Lock> lock_;
  std::optional<RLock> rlock_;
  std::string lock_name_;
  WaitPolicy policy_{};
};

}  // namespace shmbus
