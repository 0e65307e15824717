// Lock and RLock — process-shared, robust mutexes after Python's
// multiprocessing.Lock / RLock, on a futex word in their own segment.
//
//   shmbus::Lock mine;                                 // anonymous, as Lock()
//   auto lock = shmbus::Lock::create("orders.lock");   // process A
//   auto same = shmbus::Lock::open("orders.lock");     // process B
//   { std::scoped_lock g(same); /* ... */ }            // Lockable
//   if (same.acquire_for(5ms) == shmbus::LockResult::owner_died) {
//     repair(); same.make_consistent();
//   }
//
// Who may call what: any thread of any process that opened (or inherited
// across fork(), then attach()ed) the lock. create/open/unlink are setup
// calls and throw shmbus::Error; acquire/release and friends are hot paths.
//
// Memory ordering: everything a holder wrote before release() is visible to
// the next holder after its acquire returns acquired or owner_died.
//
// Fast path: an uncontended acquire is one CAS and a plain store, an
// uncontended release one exchange; no system call. FUTEX_WAKE is issued
// only when the word says a waiter sleeps.
//
// Robustness (EOWNERDEAD semantics, as pthread robust mutexes): if the
// holder dies, the next blocking or timed acquire gets the lock with
// LockResult::owner_died (detected by bounded futex waits of
// detail::kOwnerCheckPeriod = 10 ms and is_alive(pid + start time); see
// detail/sync_state.hpp for why not the kernel's robust list). The holder
// then repairs the protected state and calls make_consistent(). Releasing
// without make_consistent() makes the lock not recoverable: every later
// acquire returns LockResult::not_recoverable (and lock() throws
// Errc::peer_dead). try_acquire() never blocks and makes no system call, so
// it does not check for a dead owner: it reports timeout.
//
// The lock of a Value or Array (get_lock()) differs in one point: the
// cells are all the state it protects, so whichever acquire takes it over
// from a dead holder (lock() and std::scoped_lock included) repairs it at
// once: it records what the holder was writing as possibly torn (see
// value.hpp: reads then report it) and makes the lock consistent. It still
// returns owner_died (acquire()) so that code guarding its own invariants
// across several cells knows. A Lock or RLock of your own is never
// repaired for you: as Python code expects of a robust lock, only the
// caller knows how to repair what it protects.
//
// Lock has no owner check on release (as Python's Lock, any process may
// release it); releasing an unlocked Lock does nothing. RLock is owned by
// one thread of one process, counts depth, and release() by anyone else
// throws Error(Errc::not_owner).
//
// Threads of one process should share one handle: a second open() in the
// same process maps the segment again at another address, which works but
// hides the ordering from ThreadSanitizer (it keys synchronisation by
// address). The same holds for every primitive here.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {
namespace detail {
class CellsGuard;
}

enum class LockResult : std::uint8_t {
  acquired,         // the lock is held
  owner_died,       // held; the previous holder died holding it (EOWNERDEAD)
  timeout,          // not held: deadline passed, or try_ would have blocked
  not_recoverable,  // not held: a repaired lock was released inconsistent
};

// True for the two results that mean "you hold it now".
[[nodiscard]] constexpr bool holds(LockResult r) noexcept {
  return r == LockResult::acquired || r == LockResult::owner_died;
}

// Live statistics of a lock, read without writing or blocking.
struct LockInfo {
  bool locked = false;
  bool waiters = false;
  bool inconsistent = false;
  bool not_recoverable = false;
  std::optional<ProcessId> owner;  // when locked and known
  std::uint32_t depth = 0;         // RLock only
};
// Reads a Lock's or RLock's payload (e.g. from SegmentView) read-only.
[[nodiscard]] LockInfo read_lock_info(const std::byte* payload, std::size_t size) noexcept;

class Lock {
 public:
  static Lock create(std::string_view name, const SegmentOptions& options = {});
  static Lock open(std::string_view name, const SegmentOptions& options = {});
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // An anonymous lock, as Python's Lock(): unnamed memory that fork()ed
  // children share; nothing in /dev/shm.
  Lock();

  // Blocking acquire: acquired, owner_died or not_recoverable.
  [[nodiscard]] LockResult acquire() noexcept { return acquire_until_(nullptr); }
  [[nodiscard]] LockResult try_acquire() noexcept;
  template <class Rep, class Period>
  [[nodiscard]] LockResult acquire_for(std::chrono::duration<Rep, Period> d) noexcept {
    const auto deadline = detail::deadline_after(d);
    return acquire_until_(&deadline);
  }
  [[nodiscard]] LockResult acquire_until(Clock::time_point deadline) noexcept {
    return acquire_until_(&deadline);
  }
  void release() noexcept { detail::mutex_release(*state_); }

  // Lockable / TimedLockable. lock() throws Error(Errc::peer_dead) when the
  // lock is not recoverable; owner_died is a success (see owner_died()).
  void lock();
  [[nodiscard]] bool try_lock() noexcept { return holds(try_acquire()); }
  template <class Rep, class Period>
  [[nodiscard]] bool try_lock_for(std::chrono::duration<Rep, Period> d) noexcept {
    return holds(acquire_for(d));
  }
  template <class Clk, class Dur>
  [[nodiscard]] bool try_lock_until(std::chrono::time_point<Clk, Dur> t) noexcept {
    return holds(acquire_for(t - Clk::now()));
  }
  void unlock() noexcept { release(); }

  // While holding after owner_died: mark the protected state repaired.
  void make_consistent() noexcept;
  // Whether the lock is held in the owner-died state (not yet consistent).
  [[nodiscard]] bool owner_died() const noexcept;
  [[nodiscard]] bool locked() const noexcept;
  [[nodiscard]] LockInfo info() const noexcept;

  // Records this process in the attachment table (a forked child that
  // inherited the handle calls this once).
  void attach() { segment_.attach(); }
  void set_wait_policy(const WaitPolicy& policy) noexcept { policy_ = policy; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  friend class Condition;
  template <class T>
  friend class Value;
  Lock(detail::Segment segment, detail::MutexState* state, std::string name)
      : segment_(std::move(segment)), state_(state), name_(std::move(name)) {}
  static Lock make(detail::SegmentName name, const SegmentOptions& options);
  // Another handle on this very lock (same mapping).
  [[nodiscard]] Lock share() const { return Lock(segment_.share(), state_, name_); }
  LockResult acquire_until_(const Clock::time_point* deadline) noexcept;

  detail::Segment segment_;
  detail::MutexState* state_ = nullptr;
  std::string name_;
  WaitPolicy policy_{};
};

class RLock {
 public:
  static RLock create(std::string_view name, const SegmentOptions& options = {});
  static RLock open(std::string_view name, const SegmentOptions& options = {});
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // An anonymous recursive lock, as Python's RLock().
  RLock();

  // As Lock; acquiring again from the holding thread only counts depth.
  [[nodiscard]] LockResult acquire() noexcept { return acquire_until_(nullptr); }
  [[nodiscard]] LockResult try_acquire() noexcept;
  template <class Rep, class Period>
  [[nodiscard]] LockResult acquire_for(std::chrono::duration<Rep, Period> d) noexcept {
    const auto deadline = detail::deadline_after(d);
    return acquire_until_(&deadline);
  }
  [[nodiscard]] LockResult acquire_until(Clock::time_point deadline) noexcept {
    return acquire_until_(&deadline);
  }
  // Throws Error(Errc::not_owner) unless the calling thread holds it.
  void release();

  void lock();
  [[nodiscard]] bool try_lock() noexcept { return holds(try_acquire()); }
  template <class Rep, class Period>
  [[nodiscard]] bool try_lock_for(std::chrono::duration<Rep, Period> d) noexcept {
    return holds(acquire_for(d));
  }
  template <class Clk, class Dur>
  [[nodiscard]] bool try_lock_until(std::chrono::time_point<Clk, Dur> t) noexcept {
    return holds(acquire_for(t - Clk::now()));
  }
  void unlock() { release(); }

  void make_consistent() noexcept;
  [[nodiscard]] bool owner_died() const noexcept;
  [[nodiscard]] bool locked() const noexcept;
  // Whether the calling thread holds it.
  [[nodiscard]] bool is_owned() const noexcept;
  // Recursion depth of the calling thread (0 if it does not hold it).
  [[nodiscard]] std::uint32_t depth() const noexcept;
  [[nodiscard]] LockInfo info() const noexcept;

  void attach() { segment_.attach(); }
  void set_wait_policy(const WaitPolicy& policy) noexcept { policy_ = policy; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  friend class Condition;
  template <class T>
  friend class Value;
  template <class T>
  friend class Array;
  friend class detail::CellsGuard;
  RLock(detail::Segment segment, detail::MutexState* state, std::string name)
      : segment_(std::move(segment)), state_(state), name_(std::move(name)) {}
  static RLock make(detail::SegmentName name, const SegmentOptions& options);
  // Another handle on this lock (a Condition's): a Value's or Array's lock
  // keeps its repair on takeover.
  [[nodiscard]] RLock share() const {
    RLock r(segment_.share(), state_, name_);
    r.cells_ = cells_;
    return r;
  }
  // A view over a mutex embedded in another object's segment.
  // With `cells`, the lock of a Value or Array: repaired on takeover.
  static RLock view(detail::MutexState* state, std::string name,
                    detail::CellsHeader* cells = nullptr) {
    RLock r({}, state, std::move(name));
    r.cells_ = cells;
    return r;
  }
  LockResult acquire_until_(const Clock::time_point* deadline) noexcept;
  // A Value/Array View's unlock, from a destructor: release() once when
  // the calling thread holds the lock, else nothing.
  void release_owned_() noexcept;
  void release_held_() noexcept;  // the calling thread holds it
  // Condition support: drop the lock entirely, returning what reacquire_()
  // puts back: the depth and, for a Value's or Array's lock, the holder's
  // [cells.writing] mark and open Views (taken out of shared memory while
  // others hold the lock: their Views would end with them, and a death of
  // theirs outside a write would read as ours).
  struct Held {
    std::uint32_t depth = 0;
    std::uint64_t writing = 0;
    std::uint64_t views = 0;
  };
  Held release_all_() noexcept;
  LockResult reacquire_(const Held& held) noexcept;

  detail::Segment segment_;
  detail::MutexState* state_ = nullptr;
  detail::CellsHeader* cells_ = nullptr;  // a Value's or Array's lock
  std::string name_;
  WaitPolicy policy_{};
};

}  // namespace shmbus
