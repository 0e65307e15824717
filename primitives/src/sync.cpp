// Semaphore, BoundedSemaphore, Event, Condition and Barrier. Formats:
// detail/sync_state.hpp. Waiting: the WaitChannel protocol of
// detail/futex.hpp ([wait.sleepers]) unless said otherwise.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <utility>

#include "shmbus/barrier.hpp"
#include "shmbus/condition.hpp"
#include "shmbus/detail/exit_actions.hpp"
#include "shmbus/error.hpp"
#include "shmbus/event.hpp"
#include "shmbus/semaphore.hpp"

namespace shmbus {

namespace {

template <class State>
State* state_of(detail::Segment& seg) {
  if (seg.payload_size() < sizeof(State)) {
    throw Error(Errc::truncated, seg.name(), "payload smaller than its state block");
  }
  return reinterpret_cast<State*>(seg.payload());
}

}  // namespace

// ---- Semaphore ----

Semaphore Semaphore::make(detail::SegmentName name, ObjectKind kind, std::uint32_t value,
                          const SegmentOptions& options) {
  if (value > Semaphore::kMaxValue) {
    throw Error(Errc::invalid_argument, std::string(name.value_or("")),
                "semaphore value above 2^31-1");
  }
  const std::uint32_t bound = kind == ObjectKind::bounded_semaphore ? value : 0;
  auto seg = detail::Segment::make(
      name, kind, detail::type_tag<detail::SemaphoreState>(), sizeof(detail::SemaphoreState),
      [&](std::span<std::byte> p) {
        auto* s = new (p.data()) detail::SemaphoreState{};
        // relaxed: before ready; the segment's [segment.ready] release publishes it.
        s->value.store(value, std::memory_order_relaxed);
        s->bound = bound;
      },
      options);
  auto* s = state_of<detail::SemaphoreState>(seg);
  return Semaphore(std::move(seg), s);
}

Semaphore::Semaphore(std::uint32_t value)
    : Semaphore(make(std::nullopt, ObjectKind::semaphore, value, {})) {}

Semaphore Semaphore::create(std::string_view name, std::uint32_t value,
                            const SegmentOptions& options) {
  return make(name, ObjectKind::semaphore, value, options);
}

Semaphore Semaphore::open(std::string_view name, const SegmentOptions& options) {
  auto seg = detail::Segment::open(name, ObjectKind::semaphore,
                                   detail::type_tag<detail::SemaphoreState>(), options);
  auto* s = state_of<detail::SemaphoreState>(seg);
  return Semaphore(std::move(seg), s);
}

bool Semaphore::try_acquire() noexcept {
  if (take_one()) return true;
  if (fd_bridge_ != nullptr) [[unlikely]]
    rearm_fileno();
  return false;
}

void Semaphore::rearm_fileno() noexcept {
  detail::rearm_on_channel(*fd_bridge_, state_->ch, [this] {
    // [wait.sleepers] seq_cst: the predicate, re-checked after the count.
    return state_->value.load(std::memory_order_seq_cst) != 0;
  });
}

int Semaphore::fileno() {
  if (state_ == nullptr) throw Error(Errc::invalid_argument, "fileno", "a default Semaphore");
  if (fd_bridge_ == nullptr || !fd_bridge_->owned_here()) {
    fd_bridge_ = std::make_unique<detail::FdBridge>(name().c_str());
    rearm_fileno();
  }
  return fd_bridge_->fd();
}

bool Semaphore::take_one() noexcept {
  // [sem.value] seq_cst (acquire at least: pairs with release()'s RMW; seq_cst
  // for the [wait.sleepers] predicate contract).
  std::uint32_t v = state_->value.load(std::memory_order_seq_cst);
  while (v > 0 && v <= kMaxValue) {
    if (state_->value.compare_exchange_weak(v, v - 1, std::memory_order_seq_cst)) return true;
  }
  return false;
}

bool Semaphore::acquire_until_(const Clock::time_point* deadline) noexcept {
  return detail::wait_until(
      state_->ch, [this] { return take_one(); }, policy_, deadline);
}

bool Semaphore::release(std::uint32_t n) noexcept {
  if (n == 0) return true;
  // [sem.value] seq_cst: publishes the tokens (release for the data written
  // before, seq_cst for [wait.sleepers]); a CAS so the count never passes kMaxValue.
  std::uint32_t v = state_->value.load(std::memory_order_relaxed);  // relaxed: CAS re-checks
  do {
    if (v > kMaxValue || n > kMaxValue - v) return false;
  } while (!state_->value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst,
                                                std::memory_order_relaxed));
  detail::notify(state_->ch, static_cast<int>(std::min<std::uint32_t>(n, 0x7fffffff)));
  return true;
}

std::uint32_t Semaphore::get_value() const noexcept {
  // relaxed: a snapshot for the caller; no data depends on it.
  return state_->value.load(std::memory_order_relaxed);
}

BoundedSemaphore::BoundedSemaphore(std::uint32_t value)
    : Semaphore(make(std::nullopt, ObjectKind::bounded_semaphore, value, {})) {}

BoundedSemaphore BoundedSemaphore::create(std::string_view name, std::uint32_t value,
                                          const SegmentOptions& options) {
  return BoundedSemaphore(make(name, ObjectKind::bounded_semaphore, value, options));
}

BoundedSemaphore BoundedSemaphore::open(std::string_view name, const SegmentOptions& options) {
  auto seg = detail::Segment::open(name, ObjectKind::bounded_semaphore,
                                   detail::type_tag<detail::SemaphoreState>(), options);
  auto* s = state_of<detail::SemaphoreState>(seg);
  if (s->bound > kMaxValue) throw Error(Errc::corrupted, std::string(name), "bound above 2^31-1");
  return BoundedSemaphore(Semaphore(std::move(seg), s));
}

bool BoundedSemaphore::try_release(std::uint32_t n) noexcept {
  if (n == 0) return true;
  const std::uint32_t bound = state_->bound;                        // set once before ready
  std::uint32_t v = state_->value.load(std::memory_order_relaxed);  // relaxed: CAS re-checks
  do {
    if (v > bound || n > bound - v) return false;
    // [sem.value] seq_cst, as Semaphore::release().
  } while (!state_->value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst,
                                                std::memory_order_relaxed));
  detail::notify(state_->ch, static_cast<int>(n));
  return true;
}

void BoundedSemaphore::release(std::uint32_t n) {
  if (!try_release(n)) {
    throw Error(Errc::value_error, name(), "BoundedSemaphore released too many times");
  }
}

// ---- Event ----

Event::Event() : Event(make(std::nullopt, {})) {}

Event Event::create(std::string_view name, const SegmentOptions& options) {
  return make(name, options);
}

Event Event::make(detail::SegmentName name, const SegmentOptions& options) {
  auto seg = detail::Segment::make(
      name, ObjectKind::event, detail::type_tag<detail::EventState>(), sizeof(detail::EventState),
      [](std::span<std::byte> p) { new (p.data()) detail::EventState{}; }, options);
  auto* s = state_of<detail::EventState>(seg);
  return Event(std::move(seg), s);
}

Event Event::open(std::string_view name, const SegmentOptions& options) {
  auto seg = detail::Segment::open(name, ObjectKind::event, detail::type_tag<detail::EventState>(),
                                   options);
  auto* s = state_of<detail::EventState>(seg);
  return Event(std::move(seg), s);
}

void Event::set() noexcept {
  // [event.flag] seq_cst: publishes what was written before set() (pairs with
  // the seq_cst loads in is_set()/wait) and orders before notify()'s
  // sleeper load ([wait.sleepers]). An RMW, so that a set() racing a clear()
  // is one of the two in a single order.
  if (state_->flag.exchange(1, std::memory_order_seq_cst) == 1) return;
  detail::notify(state_->ch);
}

void Event::clear() noexcept {
  // [event.flag] seq_cst: one total order with set().
  state_->flag.store(0, std::memory_order_seq_cst);
  (void)try_wait();  // re-arms fileno()
}

bool Event::try_wait() const noexcept {
  if (is_set()) return true;
  if (fd_bridge_ != nullptr) [[unlikely]]
    detail::rearm_on_channel(*fd_bridge_, state_->ch, [this] { return is_set(); });
  return false;
}

int Event::fileno() {
  if (state_ == nullptr) throw Error(Errc::invalid_argument, "fileno", "a default Event");
  if (fd_bridge_ == nullptr || !fd_bridge_->owned_here()) {
    fd_bridge_ = std::make_unique<detail::FdBridge>(name().c_str());
    (void)try_wait();
  }
  return fd_bridge_->fd();
}

bool Event::is_set() const noexcept {
  // [event.flag] seq_cst: pairs with set().
  return state_->flag.load(std::memory_order_seq_cst) != 0;
}

bool Event::wait_until_(const Clock::time_point* deadline) noexcept {
  return detail::wait_until(
      state_->ch, [this] { return is_set(); }, policy_, deadline);
}

// ---- Condition ----

namespace {
detail::Segment create_condition(detail::SegmentName name, ObjectKind lock_kind,
                                 const std::string& lock_name, const SegmentOptions& options) {
  if (name && lock_name.empty()) {
    throw Error(Errc::invalid_argument, std::string(*name),
                "a named Condition needs a named lock (open() opens it by name)");
  }
  if (lock_name.size() > detail::kConditionNameMax) {
    throw Error(Errc::invalid_name, std::string(name.value_or("")),
                "lock name too long for a Condition");
  }
  return detail::Segment::make(
      name, ObjectKind::condition, detail::type_tag<detail::ConditionState>(),
      sizeof(detail::ConditionState),
      [&](std::span<std::byte> p) {
        auto* s = new (p.data()) detail::ConditionState{};
        s->lock_kind = static_cast<std::uint32_t>(lock_kind);
        s->name_len = static_cast<std::uint32_t>(lock_name.size());
        std::memcpy(s->lock_name, lock_name.data(), lock_name.size());
      },
      options);
}
}  // namespace

Condition::Condition(detail::Segment segment, std::optional<Lock> lock, std::optional<RLock> rlock,
                     std::string lock_name)
    : segment_(std::move(segment)),
      state_(state_of<detail::ConditionState>(segment_)),
      lock_(std::move(lock)),
      rlock_(std::move(rlock)),
      lock_name_(std::move(lock_name)) {}

Condition::Condition() : Condition(RLock()) {}

Condition::Condition(const Lock& lock)
    : Condition(create_condition(std::nullopt, ObjectKind::lock, lock.name(), {}), lock.share(),
                std::nullopt, lock.name()) {}

Condition::Condition(const RLock& lock)
    : Condition(create_condition(std::nullopt, ObjectKind::rlock, lock.name(), {}), std::nullopt,
                lock.share(), lock.name()) {}

Condition Condition::create(std::string_view name, const Lock& lock,
                            const SegmentOptions& options) {
  auto seg = create_condition(name, ObjectKind::lock, lock.name(), options);
  return Condition(std::move(seg), Lock::open(lock.name(), options), std::nullopt, lock.name());
}

Condition Condition::create(std::string_view name, const RLock& lock,
                            const SegmentOptions& options) {
  auto seg = create_condition(name, ObjectKind::rlock, lock.name(), options);
  return Condition(std::move(seg), std::nullopt, RLock::open(lock.name(), options), lock.name());
}

Condition Condition::create(std::string_view name, const SegmentOptions& options) {
  validate_name(name);
  const std::string lock_name = std::string(name) + ".lock";
  auto lock = RLock::create(lock_name, options);
  try {
    auto seg = create_condition(name, ObjectKind::rlock, lock_name, options);
    return Condition(std::move(seg), std::nullopt, std::move(lock), lock_name);
  } catch (...) {
    RLock::unlink(lock_name);
    throw;
  }
}

Condition Condition::open(std::string_view name, const SegmentOptions& options) {
  auto seg = detail::Segment::open(name, ObjectKind::condition,
                                   detail::type_tag<detail::ConditionState>(), options);
  auto* s = state_of<detail::ConditionState>(seg);
  // Untrusted: the name and kind come from shared memory.
  const std::uint32_t len = s->name_len;
  if (len == 0 || len > detail::kConditionNameMax) {
    throw Error(Errc::corrupted, std::string(name), "recorded lock name length out of range");
  }
  std::string lock_name(s->lock_name, len);
  try {
    validate_name(lock_name);
  } catch (const Error&) {
    throw Error(Errc::corrupted, std::string(name), "recorded lock name is not a valid name");
  }
  if (s->lock_kind == static_cast<std::uint32_t>(ObjectKind::lock)) {
    return Condition(std::move(seg), Lock::open(lock_name, options), std::nullopt, lock_name);
  }
  if (s->lock_kind == static_cast<std::uint32_t>(ObjectKind::rlock)) {
    return Condition(std::move(seg), std::nullopt, RLock::open(lock_name, options), lock_name);
  }
  throw Error(Errc::corrupted, std::string(name), "recorded lock kind is neither lock nor rlock");
}

LockResult Condition::acquire() noexcept { return lock_ ? lock_->acquire() : rlock_->acquire(); }
LockResult Condition::try_acquire() noexcept {
  return lock_ ? lock_->try_acquire() : rlock_->try_acquire();
}
LockResult Condition::acquire_until(Clock::time_point deadline) noexcept {
  return lock_ ? lock_->acquire_until(deadline) : rlock_->acquire_until(deadline);
}
void Condition::release() {
  if (lock_) {
    lock_->release();
  } else {
    rlock_->release();
  }
}
void Condition::lock() {
  if (lock_) {
    lock_->lock();
  } else {
    rlock_->lock();
  }
}
bool Condition::try_lock() noexcept { return lock_ ? lock_->try_lock() : rlock_->try_lock(); }
void Condition::make_consistent() noexcept {
  if (lock_) {
    lock_->make_consistent();
  } else {
    rlock_->make_consistent();
  }
}
bool Condition::owner_died() const noexcept {
  return lock_ ? lock_->owner_died() : rlock_->owner_died();
}
bool Condition::locked() const noexcept { return lock_ ? lock_->locked() : rlock_->locked(); }

void Condition::attach() {
  segment_.attach();
  if (lock_) lock_->attach();
  if (rlock_) rlock_->attach();
}

void Condition::set_wait_policy(const WaitPolicy& policy) noexcept {
  policy_ = policy;
  if (lock_) lock_->set_wait_policy(policy);
  if (rlock_) rlock_->set_wait_policy(policy);
}

bool Condition::wait_until_(const Clock::time_point* deadline) noexcept {
  // Waiting without holding the lock is a caller error that would release
  // someone else's lock: refuse it (returns false at once).
  if (lock_ ? !detail::mutex_held_by_self(*lock_->state_) : !rlock_->is_owned()) return false;
  // Under the lock: read the word before releasing it.
  // [cond.seq] seq_cst: every notify() after our release (it takes the
  // lock) bumps seq after this load, so we see a changed value.
  const std::uint32_t seq = state_->seq.load(std::memory_order_seq_cst);
  RLock::Held held;
  if (lock_) {
    lock_->release();
  } else {
    held = rlock_->release_all_();
  }
  // [cond.seq] seq_cst: pairs with notify()'s bump.
  auto notified = [&] { return state_->seq.load(std::memory_order_seq_cst) != seq; };
  // Spin first when adaptive / busy_poll, uncounted: a spinner counted
  // would turn each notify it sees into a wake for nobody, a strike.
  bool done = false;
  if (policy_.strategy != WaitStrategy::blocking) {
    const auto start = Clock::now();
    for (unsigned i = 1; !(done = notified()); ++i) {
      detail::cpu_relax();
      if ((i & 63) == 0) {
        const auto now = Clock::now();
        if (deadline != nullptr && now >= *deadline) break;
        if (policy_.strategy == WaitStrategy::adaptive && now - start >= policy_.spin) break;
      }
    }
  }
  bool timed_out = false;
  if (!done && (deadline == nullptr || Clock::now() < *deadline)) {
    // [cond.sleepers] counted, then seq re-read (a Dekker pair with
    // notify()'s bump, then its sleepers load: either it sees us counted
    // and wakes, or we see its bump). [wait.epoch]: a repair between the
    // count and the re-read wiped the count: count again.
    std::uint32_t ticket = 0;
    for (;;) {
      ticket = detail::sleeper_enter(state_->sleepers);
      done = notified();
      if (done || detail::sleeper_still_counted(state_->sleepers, ticket)) break;
    }
    if (!done) {
      detail::fault_point(detail::FaultPoint::sleeper_counted);
      // Shared futex (never PRIVATE): the word is in a segment other processes map.
      const detail::FutexResult r = detail::futex_wait(state_->seq, seq, deadline);
      timed_out = r == detail::FutexResult::timed_out && !notified();
    }
    detail::sleeper_leave(state_->sleepers, ticket);
  } else if (!done) {
    timed_out = true;
  }
  if (lock_) {
    (void)lock_->acquire();
  } else {
    (void)rlock_->reacquire_(held);
  }
  return !timed_out;
}

void Condition::notify(int n) noexcept {
  if (n <= 0) return;
  // [cond.seq] seq_cst, every time (a waiter counts itself only after its
  // spin, outside the lock): a spinner sees it, a waiter that read the old
  // value fails its futex check. One RMW on the line that the sleepers
  // load below reads anyway.
  state_->seq.fetch_add(1, std::memory_order_seq_cst);
  // [cond.sleepers] seq_cst: after the bump; a waiter that counted itself
  // before it is seen, one that counts after it sees the bump.
  const std::uint32_t seen = state_->sleepers.load(std::memory_order_seq_cst);
  if (detail::sleeper_count(seen) == 0) return;
  // Shared futex (never PRIVATE). [wait.epoch] a wake for nobody is a
  // strike; the repair (a dead waiter left its count) wipes the counts and
  // wakes every waiter, so this one notify may wake more than n: each of
  // them read seq under the lock before this bump and so would see it
  // changed anyway; a waiter that counts after our load made the repair's
  // CAS fail, or counts in the new epoch. No second bump is needed (nullptr).
  detail::note_wake(state_->sleepers, seen, detail::futex_wake(state_->seq, n), nullptr,
                    state_->seq);
}

void Condition::notify_all() noexcept { notify(0x7fffffff); }

// ---- Barrier ----

namespace {
constexpr std::uint8_t kTripped = 1;
constexpr std::uint8_t kBroken = 2;
constexpr std::uint32_t kMaxParties = 1u << 20;
}  // namespace

Barrier::Barrier(detail::Segment segment, std::function<void()> action)
    : segment_(std::move(segment)),
      state_(state_of<detail::BarrierState>(segment_)),
      action_(std::move(action)) {
  if (state_->parties == 0 || state_->parties > kMaxParties) {
    throw Error(Errc::corrupted, segment_.name(), "barrier parties out of range");
  }
}

Barrier::Barrier(Barrier&& o) noexcept
    : segment_(std::move(o.segment_)),
      state_(o.state_),
      action_(std::move(o.action_)),
      registered_as_(o.registered_as_.exchange(0, std::memory_order_relaxed)),
      party_slot_(std::exchange(o.party_slot_, nullptr)) {
  o.state_ = nullptr;
}

Barrier& Barrier::operator=(Barrier&& o) noexcept {
  if (this != &o) {
    deregister_self();
    segment_ = std::move(o.segment_);
    state_ = o.state_;
    action_ = std::move(o.action_);
    registered_as_.store(o.registered_as_.exchange(0, std::memory_order_relaxed),
                         std::memory_order_relaxed);  // relaxed: moves are single-threaded
    party_slot_ = std::exchange(o.party_slot_, nullptr);
    o.state_ = nullptr;
  }
  return *this;
}

Barrier::~Barrier() { deregister_self(); }

Barrier::Barrier(std::uint32_t parties, std::function<void()> action)
    : Barrier(make(std::nullopt, parties, {}), std::move(action)) {}

Barrier Barrier::create(std::string_view name, std::uint32_t parties, std::function<void()> action,
                        const SegmentOptions& options) {
  return Barrier(make(name, parties, options), std::move(action));
}

detail::Segment Barrier::make(detail::SegmentName name, std::uint32_t parties,
                              const SegmentOptions& options) {
  if (parties == 0 || parties > kMaxParties) {
    throw Error(Errc::invalid_argument, std::string(name.value_or("")), "parties must be 1..2^20");
  }
  return detail::Segment::make(
      name, ObjectKind::barrier, detail::type_tag<detail::BarrierState>(),
      sizeof(detail::BarrierState),
      [&](std::span<std::byte> p) {
        auto* s = new (p.data()) detail::BarrierState{};
        s->parties = parties;
      },
      options);
}

Barrier Barrier::open(std::string_view name, std::function<void()> action,
                      const SegmentOptions& options) {
  auto seg = detail::Segment::open(name, ObjectKind::barrier,
                                   detail::type_tag<detail::BarrierState>(), options);
  Barrier b(std::move(seg), std::move(action));
  b.register_self();
  return b;
}

void Barrier::attach() {
  segment_.attach();
  register_self();
}

namespace {
// Serialises (de)registration by threads sharing a handle: a rare path.
std::mutex g_barrier_registration;

// At a clean exit the party leaves as a destroyed handle would, so the
// next set of parties does not find it dead (detail/exit_actions.hpp).
void leave_party_slot(void* slot) noexcept {
  std::uint64_t expected = detail::self_ids().packed;
  // relaxed: see Barrier::register_self().
  static_cast<std::atomic<std::uint64_t>*>(slot)->compare_exchange_strong(
      expected, 0, std::memory_order_relaxed);
}
}  // namespace

void Barrier::register_self() noexcept {
  const std::uint64_t me = detail::self_ids().packed;
  // relaxed: a process-local hint; the mutex below orders the real work.
  if (registered_as_.load(std::memory_order_relaxed) == me) return;
  std::scoped_lock guard(g_barrier_registration);
  if (registered_as_.load(std::memory_order_relaxed) == me) return;
  for (auto& slot : state_->members) {
    // relaxed: slots are claimed by CAS; liveness checks need no ordering.
    if (slot.load(std::memory_order_relaxed) == me) {
      registered_as_.store(me, std::memory_order_relaxed);
      return;
    }
  }
  for (auto& slot : state_->members) {
    std::uint64_t expected = 0;
    // relaxed: a slot's only content is the id itself.
    if (slot.compare_exchange_strong(expected, me, std::memory_order_relaxed)) {
      registered_as_.store(me, std::memory_order_relaxed);
      party_slot_ = &slot;
      detail::add_exit_action(&slot, leave_party_slot);
      return;
    }
  }
  // Table full: this process is not watched (documented).
}

void Barrier::deregister_self() noexcept {
  if (state_ == nullptr) return;
  std::scoped_lock guard(g_barrier_registration);
  // In any process (a forked child's copy of the registry names the
  // parent's slot too): the mapping may go away with this handle.
  if (party_slot_ != nullptr) detail::remove_exit_action(std::exchange(party_slot_, nullptr));
  const std::uint64_t mine = registered_as_.load(std::memory_order_relaxed);
  // Only in the process that registered (not in a forked child of it).
  if (mine == 0 || mine != detail::self_ids().packed) return;
  for (auto& slot : state_->members) {
    std::uint64_t expected = mine;
    // relaxed: see register_self().
    if (slot.compare_exchange_strong(expected, 0, std::memory_order_relaxed)) break;
  }
  registered_as_.store(0, std::memory_order_relaxed);
}

bool Barrier::any_member_dead() noexcept {
  bool dead = false;
  for (auto& slot : state_->members) {
    // relaxed: see register_self().
    std::uint64_t id = slot.load(std::memory_order_relaxed);
    if (id == 0) continue;
    if (!is_alive(ProcessId::unpack(id))) {
      // Clear it so that a reset() barrier does not break again for it.
      slot.compare_exchange_strong(id, 0, std::memory_order_relaxed);
      dead = true;
    }
  }
  return dead;
}

bool Barrier::lock_guard() noexcept {
  // The guard is only held for a few stores; an owner that died holding it
  // may have left count/outcome half-written, so the barrier is broken.
  LockResult r = detail::mutex_try_acquire_fast(state_->guard)
                     ? LockResult::acquired
                     : detail::mutex_acquire_slow(state_->guard, nullptr, WaitPolicy{});
  if (r == LockResult::owner_died) {
    state_->guard.word.fetch_and(~detail::kInconsistent, std::memory_order_relaxed);
    return false;
  }
  return r == LockResult::acquired;
}

void Barrier::break_generation(std::uint32_t gen, bool mark_broken) noexcept {
  // Under the guard. relaxed loads/stores of guarded fields: the guard orders them.
  const std::uint32_t g = state_->gen.load(std::memory_order_relaxed);
  if (g == gen) {
    state_->outcome[g & 63].store(kBroken, std::memory_order_relaxed);
    state_->count.store(0, std::memory_order_relaxed);
    // [barrier.gen] seq_cst: publishes the outcome (pairs with the waiters'
    // seq_cst gen load) and orders before the sleeper load ([wait.sleepers]).
    state_->gen.store(g + 1, std::memory_order_seq_cst);
    wake_generation();
    // Only a generation that has not tripped yet can break: a waiter whose
    // deadline passed just as the last party arrived has succeeded.
    if (mark_broken) state_->broken.store(1, std::memory_order_relaxed);
  }
}

void Barrier::wake_generation() noexcept {
  // [wait.sleepers] seq_cst: after the seq_cst gen bump.
  const std::uint32_t seen = state_->sleepers.load(std::memory_order_seq_cst);
  if (detail::sleeper_count(seen) == 0) return;
  // seq_cst RMW: a waiter that read the old wake word fails its futex check.
  state_->wake.fetch_add(1, std::memory_order_seq_cst);
  // Shared futex (never PRIVATE). [wait.epoch]: the waiters sleep on
  // `wake`, not gen, so the repair may bump it: a waiter of any generation
  // counted just before the repair and not yet asleep finds it changed,
  // and one whose epoch re-read sees the repair counts itself again.
  detail::note_wake(state_->sleepers, seen, detail::futex_wake(state_->wake), &state_->wake,
                    state_->wake);
}

BarrierResult Barrier::wait_until_(const Clock::time_point* deadline) noexcept {
  register_self();
  if (!lock_guard()) {
    break_generation(state_->gen.load(std::memory_order_relaxed), true);
    detail::mutex_release(state_->guard);
    return {true, 0};
  }
  // relaxed: guarded fields.
  if (state_->broken.load(std::memory_order_relaxed) != 0) {
    detail::mutex_release(state_->guard);
    return {true, 0};
  }
  const std::uint32_t gen = state_->gen.load(std::memory_order_relaxed);
  const std::uint32_t index = state_->count.load(std::memory_order_relaxed);
  if (index + 1 >= state_->parties) {
    bool ok = true;
    if (action_) {
      try {
        action_();
      } catch (...) {
        ok = false;
      }
    }
    if (!ok) {
      break_generation(gen, true);
      detail::mutex_release(state_->guard);
      return {true, 0};
    }
    state_->outcome[gen & 63].store(kTripped, std::memory_order_relaxed);
    state_->count.store(0, std::memory_order_relaxed);
    // [barrier.gen] seq_cst: as in break_generation().
    state_->gen.store(gen + 1, std::memory_order_seq_cst);
    detail::mutex_release(state_->guard);
    detail::fault_point(detail::FaultPoint::generation_ended);
    wake_generation();
    return {false, index};
  }
  state_->count.store(index + 1, std::memory_order_relaxed);
  detail::mutex_release(state_->guard);

  auto next_check = Clock::now() + detail::kOwnerCheckPeriod;
  const auto spin_until = Clock::now() + std::chrono::microseconds(50);
  unsigned spins = 0;
  for (;;) {
    // [barrier.gen] seq_cst: pairs with the bump by the last arriver/breaker.
    if (state_->gen.load(std::memory_order_seq_cst) != gen) break;
    auto now = Clock::now();
    if (now < spin_until && ++spins < 100000) {
      detail::cpu_relax();
      continue;
    }
    if (deadline != nullptr && now >= *deadline) {
      (void)lock_guard();  // an owner-died guard is ours all the same
      break_generation(gen, true);
      detail::mutex_release(state_->guard);
      break;
    }
    if (now >= next_check) {
      next_check = now + detail::kOwnerCheckPeriod;
      if (any_member_dead()) {
        (void)lock_guard();
        break_generation(gen, true);
        detail::mutex_release(state_->guard);
        break;
      }
    }
    // [wait.sleepers] seq_cst: pairs with the sleeper load after a gen
    // bump. Then the wake word, then gen: a waker that missed our count
    // stored gen before we read it. [wait.epoch]: the epoch re-read last;
    // a repair before it wiped our count (we loop and count again at
    // once), a repair after it bumps `wake` after our read of it.
    const std::uint32_t ticket = detail::sleeper_enter(state_->sleepers);
    const std::uint32_t wake = state_->wake.load(std::memory_order_seq_cst);
    if (state_->gen.load(std::memory_order_seq_cst) == gen &&
        detail::sleeper_still_counted(state_->sleepers, ticket)) {
      detail::fault_point(detail::FaultPoint::sleeper_counted);
      Clock::time_point wake_at = next_check;
      if (deadline != nullptr && *deadline < wake_at) wake_at = *deadline;
      // Shared futex (never PRIVATE); bounded to watch the parties.
      (void)detail::futex_wait(state_->wake, wake, &wake_at);
    }
    detail::sleeper_leave(state_->sleepers, ticket);
  }
  // [barrier.gen] the seq_cst gen load above made the outcome visible.
  const std::uint8_t outcome = state_->outcome[gen & 63].load(std::memory_order_relaxed);
  if (outcome == kTripped) return {false, index};
  return {true, 0};
}

void Barrier::abort() noexcept {
  (void)lock_guard();
  break_generation(state_->gen.load(std::memory_order_relaxed), true);
  detail::mutex_release(state_->guard);
}

void Barrier::reset() noexcept {
  (void)lock_guard();
  // relaxed: guarded fields.
  if (state_->count.load(std::memory_order_relaxed) != 0) {
    break_generation(state_->gen.load(std::memory_order_relaxed), false);
  }
  state_->broken.store(0, std::memory_order_relaxed);
  // Forget members that died (one killed holding the guard broke the round
  // without this sweep): the next round must not break again for them.
  (void)any_member_dead();
  detail::mutex_release(state_->guard);
}

std::uint32_t Barrier::n_waiting() const noexcept {
  // relaxed: a snapshot.
  if (state_->broken.load(std::memory_order_relaxed) != 0) return 0;
  return state_->count.load(std::memory_order_relaxed);
}

bool Barrier::broken() const noexcept {
  // relaxed: a snapshot.
  return state_->broken.load(std::memory_order_relaxed) != 0;
}

// ---- read-only statistics ----

std::optional<SemaphoreInfo> read_semaphore_info(const std::byte* payload,
                                                 std::size_t size) noexcept {
  if (payload == nullptr || size < sizeof(detail::SemaphoreState)) return std::nullopt;
  const auto& s = *reinterpret_cast<const detail::SemaphoreState*>(payload);
  // relaxed: a statistics snapshot, no data depends on it.
  return SemaphoreInfo{s.value.load(std::memory_order_relaxed), s.bound,
                       detail::sleeper_count(s.ch.sleepers.load(std::memory_order_relaxed))};
}

std::optional<EventInfo> read_event_info(const std::byte* payload, std::size_t size) noexcept {
  if (payload == nullptr || size < sizeof(detail::EventState)) return std::nullopt;
  const auto& s = *reinterpret_cast<const detail::EventState*>(payload);
  // relaxed: a statistics snapshot.
  return EventInfo{s.flag.load(std::memory_order_relaxed) != 0,
                   detail::sleeper_count(s.ch.sleepers.load(std::memory_order_relaxed))};
}

std::optional<ConditionInfo> read_condition_info(const std::byte* payload, std::size_t size) {
  if (payload == nullptr || size < sizeof(detail::ConditionState)) return std::nullopt;
  const auto& s = *reinterpret_cast<const detail::ConditionState*>(payload);
  const std::uint32_t len = s.name_len;  // untrusted: checked before use
  const auto kind = kind_from_u32(s.lock_kind);
  if (len == 0 || len > detail::kConditionNameMax || !kind) return std::nullopt;
  // relaxed: a statistics snapshot.
  return ConditionInfo{detail::sleeper_count(s.sleepers.load(std::memory_order_relaxed)), *kind,
                       std::string(s.lock_name, len)};
}

std::optional<BarrierInfo> read_barrier_info(const std::byte* payload, std::size_t size) noexcept {
  if (payload == nullptr || size < sizeof(detail::BarrierState)) return std::nullopt;
  const auto& s = *reinterpret_cast<const detail::BarrierState*>(payload);
  BarrierInfo info;
  // relaxed: a statistics snapshot.
  info.parties = s.parties;
  info.broken = s.broken.load(std::memory_order_relaxed) != 0;
  info.n_waiting = info.broken ? 0 : s.count.load(std::memory_order_relaxed);
  info.generation = s.gen.load(std::memory_order_relaxed);
  for (const auto& m : s.members) info.registered += m.load(std::memory_order_relaxed) != 0;
  return info;
}

}  // namespace shmbus
