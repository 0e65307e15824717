// Lock, RLock and the robust futex mutex core. Format and protocol:
// detail/sync_state.hpp ([mutex.word]).
#include "shmbus/lock.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "shmbus/error.hpp"

namespace shmbus {
namespace detail {

SelfIds self_ids() noexcept {
  // this_process() is cached and refreshed after fork (no system call).
  const ProcessId id = this_process();
  return SelfIds{static_cast<std::uint32_t>(id.pid) & kPidMask, id.pack()};
}

std::uint64_t thread_token() noexcept {
  static thread_local char anchor;
  return reinterpret_cast<std::uintptr_t>(&anchor);
}

namespace {

// Whether the holder named by a held word is still running. The full
// identity in `owner` is used when it matches the word's pid; in the short
// window between a holder's CAS and its owner store (or when it died in that
// window) only the pid is known, and a live process with that pid counts as
// the owner. A pid reused within that window is the one case mistaken.
bool owner_alive(const MutexState& m, std::uint32_t word) noexcept {
  const auto pid = static_cast<pid_t>(word & kPidMask);
  // relaxed: advisory identity, cross-checked against the word's pid.
  const ProcessId owner = ProcessId::unpack(m.owner.load(std::memory_order_relaxed));
  if (owner.pid == pid) return is_alive(owner);
  // Start time 0: any process with that pid (is_alive() also keeps a pid
  // whose /proc it cannot read, for want of descriptors, alive).
  return is_alive(ProcessId{pid, 0});
}

// Takes a held word whose owner is dead: the new word names us, keeps
// kWaiters (others may sleep) and marks the state inconsistent.
bool take_over(MutexState& m, std::uint32_t word) noexcept {
  const SelfIds& self = self_ids();
  // [mutex.word] acquire: whatever the dead holder published is visible.
  if (!m.word.compare_exchange_strong(word, self.pid | kWaiters | kInconsistent,
                                      std::memory_order_acquire, std::memory_order_relaxed)) {
    return false;
  }
  // relaxed: advisory, see mutex_try_acquire_fast().
  m.owner.store(self.packed, std::memory_order_relaxed);
  return true;
}

}  // namespace

LockResult mutex_acquire_slow(MutexState& m, const Clock::time_point* deadline,
                              const WaitPolicy& policy) noexcept {
  const SelfIds& self = self_ids();
  const auto start = Clock::now();
  auto next_owner_check = start + kOwnerCheckPeriod;
  bool slept = false;
  unsigned spins = 0;
  for (;;) {
    // relaxed: a hint; the CAS below carries the ordering.
    std::uint32_t w = m.word.load(std::memory_order_relaxed);
    if ((w & kNotRecoverable) != 0) return LockResult::not_recoverable;
    if ((w & kPidMask) == 0) {
      // Free. After sleeping, keep kWaiters set: others may still sleep
      // (the classic "locked, maybe waiters" state of Drepper's mutex).
      const std::uint32_t desired = self.pid | (w & kWaiters) | (slept ? kWaiters : 0);
      // [mutex.word] acquire: pairs with the release exchange of the holder.
      if (m.word.compare_exchange_weak(w, desired, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        fault_point(FaultPoint::lock_taken);
        // relaxed: advisory, see mutex_try_acquire_fast().
        m.owner.store(self.packed, std::memory_order_relaxed);
        return LockResult::acquired;
      }
      continue;
    }
    // Held by someone. Spin first (adaptive, busy_poll), then sleep.
    const bool spinning = policy.strategy == WaitStrategy::busy_poll ||
                          (policy.strategy == WaitStrategy::adaptive && !slept);
    if (spinning) {
      cpu_relax();
      if ((++spins & 63) != 0) continue;
      const auto now = Clock::now();
      if (deadline != nullptr && now >= *deadline) return LockResult::timeout;
      if (now >= next_owner_check) {
        next_owner_check = now + kOwnerCheckPeriod;
        if (!owner_alive(m, w) && take_over(m, w)) return LockResult::owner_died;
      }
      if (policy.strategy == WaitStrategy::busy_poll || now - start < policy.spin) continue;
      slept = true;  // spin budget spent: sleep from now on
      continue;
    }
    slept = true;
    if ((w & kWaiters) == 0) {
      // relaxed: only announces a sleeper; the futex value check orders it.
      if (!m.word.compare_exchange_weak(w, w | kWaiters, std::memory_order_relaxed)) continue;
      w |= kWaiters;
    }
    const auto now = Clock::now();
    if (deadline != nullptr && now >= *deadline) return LockResult::timeout;
    Clock::time_point wake_at = std::max(now, next_owner_check);
    if (deadline != nullptr && *deadline < wake_at) wake_at = *deadline;
    // Shared futex (never PRIVATE): the word is in a segment other processes
    // map. Bounded so that a dead owner is noticed.
    const FutexResult r = futex_wait(m.word, w, &wake_at);
    if (r == FutexResult::timed_out || Clock::now() >= next_owner_check) {
      next_owner_check = Clock::now() + kOwnerCheckPeriod;
      // relaxed: re-read to name the current holder; take_over's CAS orders.
      const std::uint32_t cur = m.word.load(std::memory_order_relaxed);
      if ((cur & kPidMask) != 0 && (cur & kNotRecoverable) == 0 && !owner_alive(m, cur) &&
          take_over(m, cur)) {
        return LockResult::owner_died;
      }
    }
  }
}

void mutex_release_slow(MutexState& m, std::uint32_t word) noexcept {
  // Not recoverable stays so: nobody holds it, and release must not reset it.
  if ((word & kNotRecoverable) != 0) return;
  // Released while inconsistent: the state behind the lock was never
  // repaired, so nobody may have it again (ENOTRECOVERABLE).
  // [mutex.word] release: pairs with the acquire loads of later acquirers.
  m.word.exchange(kNotRecoverable, std::memory_order_release);
  // Shared futex (never PRIVATE); wake everyone so they see the state.
  futex_wake(m.word);
}

void cells_took_over(CellsHeader& h) noexcept {
  // relaxed (all): under the lock we now hold. The dead holder's
  // [cells.writing] mark is visible: it was stored before its bytes in its
  // program order, and it is dead (see Cells::begin_write()).
  h.views.store(0, std::memory_order_relaxed);  // its Views died with it
  const std::uint64_t writing = h.writing.load(std::memory_order_relaxed);
  if (writing == 0) return;
  const std::uint64_t torn = h.torn.load(std::memory_order_relaxed);
  // Two different parts torn: say all of it (one field holds one part).
  h.torn.store(torn == 0 || torn == writing ? writing : kCellsAll, std::memory_order_relaxed);
  h.writing.store(0, std::memory_order_relaxed);
}

void cells_released(CellsHeader& h) noexcept {
  // relaxed (all): under the lock we still hold. Nothing is being written
  // once the lock is released (writes and Views are under it, and a
  // Condition wait takes its holder's mark out first): a mark or a View
  // count still standing was left by a corrupted header or an older build,
  // and would make a later death outside a write read as torn.
  if ((h.writing.load(std::memory_order_relaxed) | h.views.load(std::memory_order_relaxed)) != 0) {
    h.writing.store(0, std::memory_order_relaxed);
    h.views.store(0, std::memory_order_relaxed);
  }
}

namespace {

template <class Init>
Segment create_mutex_segment(SegmentName name, ObjectKind kind, const SegmentOptions& options,
                             Init&& extra) {
  return Segment::make(
      name, kind, type_tag<MutexState>(), sizeof(MutexState),
      [&](std::span<std::byte> payload) {
        auto* s = new (payload.data()) MutexState{};
        extra(*s);
      },
      options);
}

MutexState* mutex_of(Segment& seg) {
  if (seg.payload_size() < sizeof(MutexState)) {
    throw Error(Errc::truncated, seg.name(), "payload smaller than a mutex");
  }
  return reinterpret_cast<MutexState*>(seg.payload());
}

}  // namespace
}  // namespace detail

LockInfo read_lock_info(const std::byte* payload, std::size_t size) noexcept {
  LockInfo info;
  if (payload == nullptr || size < sizeof(detail::MutexState)) return info;
  const auto& m = *reinterpret_cast<const detail::MutexState*>(payload);
  // relaxed: a statistics snapshot, no data depends on it.
  const std::uint32_t w = m.word.load(std::memory_order_relaxed);
  info.not_recoverable = (w & detail::kNotRecoverable) != 0;
  info.locked = !info.not_recoverable && (w & detail::kPidMask) != 0;
  info.waiters = (w & detail::kWaiters) != 0;
  info.inconsistent = (w & detail::kInconsistent) != 0;
  if (info.locked) {
    // relaxed: snapshot.
    const ProcessId o = ProcessId::unpack(m.owner.load(std::memory_order_relaxed));
    if (o.pid == static_cast<pid_t>(w & detail::kPidMask)) info.owner = o;
    info.depth = m.depth.load(std::memory_order_relaxed);  // relaxed: snapshot
  }
  return info;
}

// ---- Lock ----

Lock::Lock() : Lock(make(std::nullopt, {})) {}

Lock Lock::create(std::string_view name, const SegmentOptions& options) {
  return make(name, options);
}

Lock Lock::make(detail::SegmentName name, const SegmentOptions& options) {
  auto seg =
      detail::create_mutex_segment(name, ObjectKind::lock, options, [](detail::MutexState&) {});
  auto* s = detail::mutex_of(seg);
  return Lock(std::move(seg), s, std::string(name.value_or("")));
}

Lock Lock::open(std::string_view name, const SegmentOptions& options) {
  auto seg = detail::Segment::open(name, ObjectKind::lock, detail::type_tag<detail::MutexState>(),
                                   options);
  auto* s = detail::mutex_of(seg);
  return Lock(std::move(seg), s, std::string(name));
}

LockResult Lock::try_acquire() noexcept {
  if (detail::mutex_try_acquire_fast(*state_)) return LockResult::acquired;
  // relaxed: a hint for the result only.
  if ((state_->word.load(std::memory_order_relaxed) & detail::kNotRecoverable) != 0) {
    return LockResult::not_recoverable;
  }
  return LockResult::timeout;
}

LockResult Lock::acquire_until_(const Clock::time_point* deadline) noexcept {
  if (detail::mutex_try_acquire_fast(*state_)) return LockResult::acquired;
  return detail::mutex_acquire_slow(*state_, deadline, policy_);
}

void Lock::lock() {
  if (acquire() == LockResult::not_recoverable) {
    throw Error(Errc::peer_dead, name_,
                "lock not recoverable: an owner died and the state was not made consistent");
  }
}

void Lock::make_consistent() noexcept {
  // relaxed: only the holder clears kInconsistent; RMW keeps others' kWaiters.
  state_->word.fetch_and(~detail::kInconsistent, std::memory_order_relaxed);
}

bool Lock::owner_died() const noexcept {
  // relaxed: the holder reads the flag it alone clears.
  return (state_->word.load(std::memory_order_relaxed) & detail::kInconsistent) != 0;
}

bool Lock::locked() const noexcept { return info().locked; }

LockInfo Lock::info() const noexcept {
  return read_lock_info(reinterpret_cast<const std::byte*>(state_), sizeof(*state_));
}

// ---- RLock ----

RLock::RLock() : RLock(make(std::nullopt, {})) {}

RLock RLock::create(std::string_view name, const SegmentOptions& options) {
  return make(name, options);
}

RLock RLock::make(detail::SegmentName name, const SegmentOptions& options) {
  auto seg =
      detail::create_mutex_segment(name, ObjectKind::rlock, options, [](detail::MutexState&) {});
  auto* s = detail::mutex_of(seg);
  return RLock(std::move(seg), s, std::string(name.value_or("")));
}

RLock RLock::open(std::string_view name, const SegmentOptions& options) {
  auto seg = detail::Segment::open(name, ObjectKind::rlock, detail::type_tag<detail::MutexState>(),
                                   options);
  auto* s = detail::mutex_of(seg);
  return RLock(std::move(seg), s, std::string(name));
}

bool RLock::is_owned() const noexcept {
  // relaxed: owner_thread equals our token only if this thread stored it
  // while holding (and the word's pid says this process holds it).
  return detail::mutex_held_by_self(*state_) &&
         state_->owner_thread.load(std::memory_order_relaxed) == detail::thread_token();
}

std::uint32_t RLock::depth() const noexcept {
  // relaxed: holder-written, read by the holder.
  return is_owned() ? state_->depth.load(std::memory_order_relaxed) : 0;
}

namespace {
LockResult rlock_took(detail::MutexState& m, LockResult r) noexcept {
  if (holds(r)) {
    // relaxed: holder-written fields, published to the next holder by the
    // [mutex.word] release/acquire pair.
    m.owner_thread.store(detail::thread_token(), std::memory_order_relaxed);
    m.depth.store(1, std::memory_order_relaxed);
  }
  return r;
}
}  // namespace

LockResult RLock::try_acquire() noexcept {
  if (is_owned()) {
    // relaxed: holder-only field.
    state_->depth.fetch_add(1, std::memory_order_relaxed);
    return LockResult::acquired;
  }
  if (detail::mutex_try_acquire_fast(*state_)) return rlock_took(*state_, LockResult::acquired);
  // relaxed: a hint for the result only.
  if ((state_->word.load(std::memory_order_relaxed) & detail::kNotRecoverable) != 0) {
    return LockResult::not_recoverable;
  }
  return LockResult::timeout;
}

LockResult RLock::acquire_until_(const Clock::time_point* deadline) noexcept {
  if (is_owned()) {
    // relaxed: holder-only field.
    state_->depth.fetch_add(1, std::memory_order_relaxed);
    return LockResult::acquired;
  }
  if (detail::mutex_try_acquire_fast(*state_)) return rlock_took(*state_, LockResult::acquired);
  const LockResult r = rlock_took(*state_, detail::mutex_acquire_slow(*state_, deadline, policy_));
  if (r == LockResult::owner_died && cells_ != nullptr) {
    // A Value's or Array's lock: the cells are all it protects (lock.hpp).
    detail::cells_took_over(*cells_);
    make_consistent();
  }
  return r;
}

void RLock::release() {
  if (!is_owned()) {
    throw Error(Errc::not_owner, name_, "release() by a thread that does not hold the RLock");
  }
  release_held_();
}

void RLock::release_owned_() noexcept {
  if (is_owned()) release_held_();
}

void RLock::release_held_() noexcept {
  // relaxed: holder-only fields.
  const std::uint32_t d = state_->depth.load(std::memory_order_relaxed);
  if (d > 1) {
    state_->depth.store(d - 1, std::memory_order_relaxed);
    return;
  }
  if (cells_ != nullptr) detail::cells_released(*cells_);
  state_->depth.store(0, std::memory_order_relaxed);
  state_->owner_thread.store(0, std::memory_order_relaxed);
  detail::mutex_release(*state_);
}

RLock::Held RLock::release_all_() noexcept {
  Held held;
  // relaxed (all): holder-only fields, published to the next holder by
  // the [mutex.word] release/acquire pair.
  held.depth = state_->depth.load(std::memory_order_relaxed);
  if (cells_ != nullptr) {
    held.writing = cells_->writing.exchange(0, std::memory_order_relaxed);
    held.views = cells_->views.exchange(0, std::memory_order_relaxed);
  }
  state_->depth.store(0, std::memory_order_relaxed);
  state_->owner_thread.store(0, std::memory_order_relaxed);
  detail::mutex_release(*state_);
  return held;
}

LockResult RLock::reacquire_(const Held& held) noexcept {
  LockResult r = acquire();  // a takeover has turned a dead holder's mark into torn
  if (holds(r)) {
    // relaxed (all): holder-only fields, as above.
    state_->depth.store(held.depth == 0 ? 1 : held.depth, std::memory_order_relaxed);
    if (cells_ != nullptr) {
      cells_->views.store(held.views, std::memory_order_relaxed);
      cells_->writing.store(held.writing, std::memory_order_relaxed);
    }
  }
  return r;
}

void RLock::lock() {
  if (acquire() == LockResult::not_recoverable) {
    throw Error(Errc::peer_dead, name_,
                "lock not recoverable: an owner died and the state was not made consistent");
  }
}

void RLock::make_consistent() noexcept {
  // relaxed: only the holder clears kInconsistent; RMW keeps others' kWaiters.
  if (is_owned()) state_->word.fetch_and(~detail::kInconsistent, std::memory_order_relaxed);
}

bool RLock::owner_died() const noexcept {
  // relaxed: snapshot of a flag only the holder clears.
  return (state_->word.load(std::memory_order_relaxed) & detail::kInconsistent) != 0;
}

bool RLock::locked() const noexcept { return info().locked; }

LockInfo RLock::info() const noexcept {
  return read_lock_info(reinterpret_cast<const std::byte*>(state_), sizeof(*state_));
}

}  // namespace shmbus
