// shmbus::wait over any mix of objects. See wait_any.hpp.
#include "shmbus/wait_any.hpp"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "shmbus/detail/futex.hpp"
#include "shmbus/detail/spsc_ring.hpp"
#include "shmbus/detail/wake_slot.hpp"
#include "shmbus/error.hpp"

namespace shmbus {
namespace detail {

// How wait() treats one kind of object. Every member is noexcept and makes
// no system call unless said.
struct WaitOps {
  // Ready now: seq_cst loads (the predicate of [wait.sleepers]).
  bool (*ready)(void* o) noexcept;
  // The spin's check between clock reads: its hot word only (a pipe end's
  // header, not its peer's close, which ready() sees at the next whole
  // pass). Safe on an object in any state (closed, moved from): the
  // [wait.hint] paths call it without a ready() first in that call.
  bool (*quick)(void* o) noexcept;
  // The liveness check, every kLivenessInterval of waiting (may read /proc):
  // true when a dead peer makes the object ready.
  bool (*dead)(void* o) noexcept;
  // Prepares to sleep on the object's futex word: false when it turned out
  // ready (then nothing is armed). `needs_fence`: order(done) must follow
  // one asymmetric_heavy_fence() before sleeping. `ticket`: what disarm()
  // needs (a WaitChannel's sleeper ticket, [wait.epoch] in futex.hpp).
  bool (*arm)(void* o, FutexWaiter& w, bool& needs_fence, std::uint32_t& ticket) noexcept;
  void (*order)(void* o, bool fence_done) noexcept;
  // False when an arm could not be ordered (sleep only in short naps).
  bool (*fenced)(void* o) noexcept;
  // Undoes arm() after the sleep, whatever ended it.
  void (*disarm)(void* o, std::uint32_t ticket) noexcept;
  WaitStrategy (*strategy)(void* o) noexcept;
};

struct WaitAccess {
  // --- Connection: its receiving ring, as ConnectionWait in pipe.cpp ---------
  static Connection& conn(void* o) noexcept { return *static_cast<Connection*>(o); }
  static bool conn_usable(Connection& c) noexcept {
    return c.can_recv_ && !c.closed_ && c.control_ != nullptr && c.ensure_owner();
  }
  // fast_recv_ true (update_fast(): the state the inlined recv() finds
  // folded into its ring's limit) implies conn_usable()
  // and no frame peeked: can_recv_, active_, not closed (so control_ set)
  // and this process's end ([pipe.fork]: a fork child's copy has it false
  // until take_over()). So the common case reads one flag and the header.
  static bool conn_ready(void* o) noexcept {
    Connection& c = conn(o);
    // A peer seen dead stays ready (as poll()): recv() drains, then reports it.
    if (c.fast_recv_ready()) [[likely]]
      return c.rx_.has_data() || c.peer_closed() || c.peer_death_counted_;
    // An end that cannot receive here (closed, moved from, another
    // process's) is ready: its recv() says why.
    return !conn_usable(c) || c.peeked_ || c.rx_.has_data() || c.peer_closed() ||
           c.peer_death_counted_;
  }
  [[gnu::always_inline]] static bool conn_quick(void* o) noexcept {
    Connection& c = conn(o);
    if (c.fast_recv_ready()) [[likely]]
      return c.rx_.has_data();
    // Not usable (closed since, moved from): false here, ready() reports it.
    return conn_usable(c) && (c.peeked_ || c.rx_.has_data());
  }
  static bool conn_dead(void* o) noexcept { return conn_usable(conn(o)) && conn(o).peer_dead(); }
  static bool conn_arm(void* o, FutexWaiter& w, bool& needs_fence, std::uint32_t&) noexcept {
    Connection& c = conn(o);
    // [ring.sleep] mark the header word we poll, as recv()'s sleep does.
    if (!conn_usable(c) || !c.rx_.mark_asleep()) return false;
    w = {&c.rx_.sleep_word(), static_cast<std::uint32_t>(kHeaderWaiting)};
    needs_fence = c.rx_.needs_fence();
    return true;
  }
  // conn_arm() for a wait that sleeps on the thread's wake slot `slot`
  // ([ring.redirect]): the sender wakes the slot instead of the word.
  static bool conn_arm_redirected(void* o, std::uint32_t slot, bool& needs_fence) noexcept {
    Connection& c = conn(o);
    if (!conn_usable(c) || !c.rx_.mark_asleep(slot)) return false;
    needs_fence = c.rx_.needs_fence();
    return true;
  }
  static void conn_order(void* o, bool done) noexcept { conn(o).rx_.order_sleep(done); }
  static bool conn_fenced(void* o) noexcept { return conn(o).rx_.fenced(); }
  static void conn_disarm(void* o, std::uint32_t) noexcept { conn(o).rx_.disarm_sleep(); }
  static WaitStrategy conn_strategy(void* o) noexcept { return conn(o).recv_policy_.strategy; }

  // --- a WaitChannel and its predicate ([wait.sleepers] in futex.hpp) --------
  static bool channel_arm(WaitChannel& ch, FutexWaiter& w, std::uint32_t& ticket) noexcept {
    // [wait.sleepers] pairs with the load in notify(); the caller re-checks
    // every predicate (seq_cst) after all arms, before sleeping.
    std::uint32_t seq = 0;
    ticket = sleeper_enter(ch, seq);
    w = {&ch.seq, seq};
    return true;
  }
  static void channel_disarm(WaitChannel& ch, std::uint32_t ticket) noexcept {
    sleeper_leave(ch.sleepers, ticket);  // [wait.epoch]
  }

  // --- Event / Semaphore -------------------------------------------------------
  static Event& event(void* o) noexcept { return *static_cast<Event*>(o); }
  static bool event_ready(void* o) noexcept {
    const auto* s = event(o).state_;
    // [wait.sleepers] seq_cst: pairs with set()'s seq_cst store.
    return s == nullptr || s->flag.load(std::memory_order_seq_cst) != 0;
  }
  static bool event_arm(void* o, FutexWaiter& w, bool&, std::uint32_t& ticket) noexcept {
    auto* s = event(o).state_;
    return s != nullptr && channel_arm(s->ch, w, ticket);
  }
  static void event_disarm(void* o, std::uint32_t ticket) noexcept {
    channel_disarm(event(o).state_->ch, ticket);
  }
  static WaitStrategy event_strategy(void* o) noexcept { return event(o).policy_.strategy; }

  static Semaphore& sem(void* o) noexcept { return *static_cast<Semaphore*>(o); }
  static bool sem_ready(void* o) noexcept {
    const auto* s = sem(o).state_;
    // [wait.sleepers] seq_cst: pairs with release()'s seq_cst RMW.
    return s == nullptr || s->value.load(std::memory_order_seq_cst) != 0;
  }
  static bool sem_arm(void* o, FutexWaiter& w, bool&, std::uint32_t& ticket) noexcept {
    auto* s = sem(o).state_;
    return s != nullptr && channel_arm(s->ch, w, ticket);
  }
  static void sem_disarm(void* o, std::uint32_t ticket) noexcept {
    channel_disarm(sem(o).state_->ch, ticket);
  }
  static WaitStrategy sem_strategy(void* o) noexcept { return sem(o).policy_.strategy; }

  // --- queues (QueueCore), readable or writable ---------------------------------
  template <bool kPut>
  static bool queue_ready(void* o) noexcept {
    return static_cast<QueueCore*>(o)->ready(kPut);
  }
  template <bool kPut>
  static bool queue_dead(void* o) noexcept {
    return static_cast<QueueCore*>(o)->repair_head(kPut) && queue_ready<kPut>(o);
  }
  template <bool kPut>
  static bool queue_arm(void* o, FutexWaiter& w, bool&, std::uint32_t& ticket) noexcept {
    auto* q = static_cast<QueueCore*>(o);
    return q->ready(kPut) ? false : channel_arm(q->wait_channel(kPut), w, ticket);
  }
  template <bool kPut>
  static void queue_disarm(void* o, std::uint32_t ticket) noexcept {
    auto* q = static_cast<QueueCore*>(o);
    channel_disarm(q->wait_channel(kPut), ticket);
    // [queue.token] seq_cst: a sleeper releases the token on every return
    // from its sleep (queue_core.hpp); a wake meant for a get() (put())
    // that came to us is passed on by the wait()'s caller's own get (put),
    // or at worst by a sleeper's liveness slice.
    q->wake_token(kPut).exchange(0, std::memory_order_seq_cst);
  }
  static WaitStrategy queue_strategy(void* o) noexcept {
    return static_cast<QueueCore*>(o)->policy().strategy;
  }

  // --- Subscriber: the topic's shared wake word ([topic.wake]) -----------------
  static Subscriber& sub(void* o) noexcept { return *static_cast<Subscriber*>(o); }
  static bool sub_ready(void* o) noexcept { return sub(o).ready(); }
  static bool sub_dead(void* o) noexcept { return sub(o).peer_gone(); }
  static bool sub_arm(void* o, FutexWaiter& w, bool&, std::uint32_t&) noexcept {
    Subscriber& s = sub(o);
    if (s.control_ == nullptr) return false;  // a closed handle is ready (sub_ready)
    // [topic.wake] join; the caller's seq_cst re-check follows.
    s.wake_generation_ = s.join_wake();
    w = {&s.control_->wake.data, s.wake_generation_};  // the word's low half
    return true;
  }
  // Takes the join back (a no-op once the publisher woke the generation).
  static void sub_disarm(void* o, std::uint32_t) noexcept {
    Subscriber& s = sub(o);
    if (s.control_ != nullptr) s.leave_wake(s.wake_generation_);
  }
  static WaitStrategy sub_strategy(void* o) noexcept { return sub(o).policy_.strategy; }

  static bool none_dead(void*) noexcept { return false; }
  static void no_order(void*, bool) noexcept {}
  static bool always_fenced(void*) noexcept { return true; }
};

namespace {
using A = WaitAccess;
constexpr WaitOps kConnectionOps{A::conn_ready, A::conn_quick,  A::conn_dead,   A::conn_arm,
                                 A::conn_order, A::conn_fenced, A::conn_disarm, A::conn_strategy};
constexpr WaitOps kEventOps{A::event_ready, A::event_ready,   A::none_dead,    A::event_arm,
                            A::no_order,    A::always_fenced, A::event_disarm, A::event_strategy};
constexpr WaitOps kSemaphoreOps{A::sem_ready, A::sem_ready,     A::none_dead,  A::sem_arm,
                                A::no_order,  A::always_fenced, A::sem_disarm, A::sem_strategy};
constexpr WaitOps kQueueGetOps{A::queue_ready<false>,  A::queue_ready<false>, A::queue_dead<false>,
                               A::queue_arm<false>,    A::no_order,           A::always_fenced,
                               A::queue_disarm<false>, A::queue_strategy};
constexpr WaitOps kQueuePutOps{A::queue_ready<true>,  A::queue_ready<true>, A::queue_dead<true>,
                               A::queue_arm<true>,    A::no_order,          A::always_fenced,
                               A::queue_disarm<true>, A::queue_strategy};
constexpr WaitOps kSubscriberOps{A::sub_ready, A::sub_ready,     A::sub_dead,   A::sub_arm,
                                 A::no_order,  A::always_fenced, A::sub_disarm, A::sub_strategy};
}  // namespace

const WaitOps& queue_ops(bool writable) noexcept { return writable ? kQueuePutOps : kQueueGetOps; }
QueueCore& queue_core_of(QueueHandle& q) noexcept { return q.core_; }

namespace {

constexpr auto kLivenessInterval = std::chrono::milliseconds(10);  // as pipe.cpp's
// Over kMaxSleepWords objects, a sleep covers a window of them for this long.
constexpr auto kWindowNap = std::chrono::microseconds(200);
// Words one futex_waitv takes for objects: one is kept for the watcher.
constexpr std::size_t kMaxSleepWords = kMaxFutexWaiters - 1;
// [wait.hint] (wait() below): sets of at least kHintMin objects look at the
// object found ready last time first, and answer from it alone at most
// kHintStreak - 1 calls in a row; the spin looks at it every step and at
// the next kSpinChunk objects every kChunkEvery-th step (a step that reads
// five objects' words is slower to see the reply than one that reads the
// hinted one's: measured in docs/performance.md).
constexpr std::size_t kHintMin = 16;
constexpr unsigned kHintStreak = 16;
constexpr std::size_t kSpinChunk = 4;
constexpr unsigned kChunkEvery = 8;
constexpr auto kHintSpin = std::chrono::microseconds(20);

// The descriptor watcher of one waiting thread (see wait_any.hpp): sleeps
// in ppoll on the descriptors of the current wait's list and bumps `fired`
// (a futex word the waiter sleeps on beside the objects' words) when one
// of them fires. Started by the thread's first wait with a descriptor,
// joined when the thread ends.
class FdWatcher {
 public:
  FdWatcher() : owner_(::getpid()) {
    efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd_ < 0)
      throw Error(Errc::system, "wait", std::string("eventfd: ") + std::strerror(errno));
    if (const int rc = ::pthread_create(&thread_, nullptr, &FdWatcher::run, this); rc != 0) {
      ::close(efd_);
      throw Error(Errc::system, "wait", std::string("pthread_create: ") + std::strerror(rc));
    }
  }
  FdWatcher(const FdWatcher&) = delete;
  FdWatcher& operator=(const FdWatcher&) = delete;
  ~FdWatcher() {
    // A forked child inherits this object but not the thread: leave both.
    if (::getpid() != owner_) return;
    {
      std::scoped_lock g(m_);
      quit_ = true;
    }
    kick();
    (void)::pthread_join(thread_, nullptr);
    ::close(efd_);
  }

  // Watches `fds` (copied) until stop() or one fires; returns the word to
  // sleep on and the value it reads now.
  FutexWaiter start(std::span<const pollfd> fds) noexcept {
    // relaxed: the futex call compares the word itself; a stale value only
    // makes the sleep return at once.
    const std::uint32_t seen = fired_.load(std::memory_order_relaxed);
    {
      std::scoped_lock g(m_);
      request_.assign(fds.begin(), fds.end());  // capacity kept: no allocation once grown
      active_ = true;
      ++generation_;
    }
    kick();
    return {&fired_, seen};
  }
  void stop() noexcept {
    {
      std::scoped_lock g(m_);
      if (!active_) return;  // it fired, or never started
      active_ = false;
      ++generation_;
    }
    kick();
  }

 private:
  void kick() noexcept {
    const std::uint64_t one = 1;
    (void)!::write(efd_, &one, sizeof one);
  }

  static void* run(void* self) noexcept {
    static_cast<FdWatcher*>(self)->loop();
    return nullptr;
  }

  void loop() noexcept {
    std::vector<pollfd> mine;
    std::uint64_t gen = 0;
    bool active = false;
    for (;;) {
      {
        std::scoped_lock g(m_);
        if (quit_) return;
        active = active_;
        gen = generation_;
        mine.clear();
        mine.push_back({efd_, POLLIN, 0});
        if (active) mine.insert(mine.end(), request_.begin(), request_.end());
      }
      const int n = ::ppoll(mine.data(), mine.size(), nullptr, nullptr);
      if (n < 0) continue;  // EINTR: look again
      if ((mine[0].revents & POLLIN) != 0) {
        std::uint64_t v = 0;
        (void)!::read(efd_, &v, sizeof v);  // drained: a new request, a stop or quit
      }
      if (!active) continue;
      const bool fired =
          std::any_of(mine.begin() + 1, mine.end(), [](const pollfd& p) { return p.revents != 0; });
      if (!fired) continue;
      {
        std::scoped_lock g(m_);
        if (generation_ != gen) continue;  // the waiter moved on meanwhile
        active_ = false;                   // a level-triggered fd would fire again at once
      }
      // seq_cst RMW: the waiter's futex_waitv compares this word.
      fired_.fetch_add(1, std::memory_order_seq_cst);
      (void)futex_wake(fired_, 1);
    }
  }

  pid_t owner_;
  pthread_t thread_{};
  int efd_ = -1;
  std::mutex m_;
  std::vector<pollfd> request_;   // under m_
  std::uint64_t generation_ = 0;  // under m_: bumped by every start and stop
  bool active_ = false;           // under m_: request_ is being watched
  bool quit_ = false;             // under m_
  // Futex word (process-local memory; a shared futex on it works, and
  // futex_wait_any never takes the PRIVATE flag).
  std::atomic<std::uint32_t> fired_{0};
};

FdWatcher& watcher() {
  thread_local std::unique_ptr<FdWatcher> w;
  thread_local pid_t pid = 0;
  if (w == nullptr || pid != ::getpid()) {
    if (w != nullptr) (void)w.release();  // a forked child's copy: the thread is not ours
    w = std::make_unique<FdWatcher>();
    pid = ::getpid();
  }
  return *w;
}

// Scratch of one waiting thread, reused by every wait (no allocation once
// grown).
struct Scratch {
  std::vector<pollfd> fds;
  std::vector<std::size_t> fd_index;   // fds[i] is items[fd_index[i]]
  std::vector<std::size_t> armed;      // items armed for this sleep
  std::vector<std::uint32_t> tickets;  // armed[k]'s ticket (WaitOps::arm)
};

// [wait.hint] the last set this thread waited on and the position found
// ready last in it; `streak`: calls in a row answered from the hint alone.
// Apart from Scratch and trivially destructible, so that the hinted call
// reads it without a thread_local's first-use guard.
struct Hint {
  const Waitable* set = nullptr;  // null: no hint (set only for kHintMin objects or more)
  std::size_t size = 0;
  std::size_t at = 0;
  unsigned streak = 0;
  std::size_t cursor = 0;  // where the spin's next chunk starts
  bool spins = false;      // the last whole pass's set spins (see full())
  bool set_spins = false;  // ... for `set`
};
constinit thread_local Hint t_hint;

}  // namespace
}  // namespace detail

// --- Waitable --------------------------------------------------------------------

Waitable::Waitable(Connection& c) : ops_(&detail::kConnectionOps), obj_(&c), view_of_(&c) {
  if (!c.readable() && !c.closed()) {
    throw Error(Errc::invalid_argument, c.name(), "wait: this end only sends");
  }
}
Waitable::Waitable(Event& e) noexcept : ops_(&detail::kEventOps), obj_(&e), view_of_(&e) {}
Waitable::Waitable(Semaphore& s) noexcept : ops_(&detail::kSemaphoreOps), obj_(&s), view_of_(&s) {}
Waitable::Waitable(Subscriber& s) noexcept
    : ops_(&detail::kSubscriberOps), obj_(&s), view_of_(&s) {}
Waitable::Waitable(const Process& p) : view_of_(&p), fd_(p.sentinel()), events_(POLLIN) {
  if (p.pid() == 0) throw Error(Errc::invalid_argument, p.name(), "wait: process not started");
  // fd_ < 0 once joined (the pidfd is closed then): ready at once.
}
Waitable Waitable::fd(int fd, short events) {
  if (fd < 0) throw Error(Errc::invalid_argument, "wait", "negative file descriptor");
  Waitable w(nullptr, nullptr, nullptr);
  w.fd_ = fd;
  w.events_ = events;
  return w;
}

// --- wait() ------------------------------------------------------------------------

std::vector<std::size_t> wait(std::span<const Waitable> items,
                              std::optional<Clock::duration> timeout) {
  std::vector<std::size_t> ready;
  wait(items, ready, timeout);
  return ready;
}
std::vector<std::size_t> wait(std::initializer_list<Waitable> items,
                              std::optional<Clock::duration> timeout) {
  return wait(std::span<const Waitable>(items.begin(), items.size()), timeout);
}
void wait(std::initializer_list<Waitable> items, std::vector<std::size_t>& ready,
          std::optional<Clock::duration> timeout) {
  wait(std::span<const Waitable>(items.begin(), items.size()), ready, timeout);
}

namespace detail {
struct WaitAny {
  std::span<const Waitable> items;
  std::vector<std::size_t>& out;
  Scratch& s;
  Hint& h;

  // wait() below its first look at the hinted object ([wait.hint]).
  static void rest(std::span<const Waitable> items, std::vector<std::size_t>& out,
                   std::optional<Clock::duration> timeout, bool hinted);
  // The whole pass and what follows it.
  static void full(std::span<const Waitable> items, std::vector<std::size_t>& out,
                   std::optional<Clock::duration> timeout, Scratch& s, Hint& h, bool hinted);

  // Pipe ends, the usual objects, are checked directly (inlined); the
  // other kinds through their WaitOps.
  static bool quick_of(const Waitable& w) noexcept {
    if (w.ops_ == &kConnectionOps) return WaitAccess::conn_quick(w.obj_);
    return w.ops_ != nullptr && w.ops_->quick(w.obj_);
  }
  static bool ready_of(const Waitable& w) noexcept {
    if (w.ops_ == &kConnectionOps) return WaitAccess::conn_ready(w.obj_);
    return w.ops_->ready(w.obj_);
  }
  static WaitStrategy strategy_of(const Waitable& w) noexcept {
    if (w.ops_ == &kConnectionOps) return WaitAccess::conn_strategy(w.obj_);
    return w.ops_->strategy(w.obj_);
  }

  const WaitOps* ops(std::size_t i) const noexcept { return items[i].ops_; }
  void* obj(std::size_t i) const noexcept { return items[i].obj_; }

  // The shmbus objects that are ready (and, with `with_dead`, those a dead
  // peer makes ready) into out, in order. No system call without with_dead.
  // The spin's step between clock reads ([wait.hint]): the hinted object's
  // hot word, then the hot words of the next kSpinChunk objects after the
  // cursor; the ready ones among those.
  // `with_chunk` false: the hinted object alone (a hinted spin looks at
  // the chunk every kChunkEvery-th step only, so the step it waits in for
  // the reply is about as short as a plain recv's spin).
  bool collect_quick(bool hinted, bool with_chunk = true) noexcept {
    if (hinted && quick_at(h.at)) {
      out.push_back(h.at);
      return true;
    }
    if (!with_chunk) return false;
    const std::size_t n = items.size();
    const std::size_t chunk = std::min(n, kSpinChunk);
    std::size_t i = h.cursor < n ? h.cursor : 0;
    bool wrapped = false;
    for (std::size_t k = 0; k < chunk; ++k) {
      if (quick_at(i)) out.push_back(i);
      if (++i == n) {
        i = 0;
        wrapped = true;
      }
    }
    h.cursor = i;
    if (out.empty()) return false;
    if (wrapped) std::sort(out.begin(), out.end());  // positions in order
    return true;
  }
  bool quick_at(std::size_t i) const noexcept { return quick_of(items[i]); }
  bool collect_objects(bool with_dead) noexcept {
    for (std::size_t i = 0; i < items.size(); ++i) {
      const WaitOps* o = ops(i);
      if (o == nullptr) continue;
      if (ready_of(items[i]) || (with_dead && o->dead(obj(i)))) out.push_back(i);
    }
    return !out.empty();
  }
  // The descriptors that are ready now (one ppoll with a zero timeout)
  // added to the objects already in out, keeping positions in order; true
  // when out holds any.
  bool collect_fds() noexcept {
    if (s.fds.empty()) return !out.empty();
    for (auto& p : s.fds) p.revents = 0;
    const timespec zero{};
    if (::ppoll(s.fds.data(), s.fds.size(), &zero, nullptr) <= 0) return !out.empty();
    const std::size_t objects = out.size();
    for (std::size_t k = 0; k < s.fds.size(); ++k) {
      if (s.fds[k].revents != 0) out.push_back(s.fd_index[k]);
    }
    if (objects != 0) std::sort(out.begin(), out.end());  // in place: no allocation
    return !out.empty();
  }
  bool collect(bool with_dead) noexcept {
    (void)collect_objects(with_dead);
    return collect_fds();
  }
};
}  // namespace detail

void wait(std::span<const Waitable> items, std::vector<std::size_t>& out,
          std::optional<Clock::duration> timeout) {
  out.clear();
  detail::Hint& h = detail::t_hint;
  // [wait.hint] A set of kHintMin objects or more that this thread waited
  // on last time, whose object found ready then is ready again: return it
  // alone, without a pass over the others, at most kHintStreak - 1 times
  // in a row (then a whole pass: every ready object is reported within
  // kHintStreak calls). A set moved or reused at the same address only
  // makes the hint point at another of its objects. (h.at < h.size: it
  // was recorded with that size.) This first look is all a call answered
  // from the hint runs: the rest is out of line (WaitAny::rest()).
  const bool hinted = items.size() >= detail::kHintMin && h.set == items.data() &&
                      h.size == items.size() && items[h.at].ops_ != nullptr;
  if (hinted && h.streak + 1 < detail::kHintStreak && detail::WaitAny::quick_of(items[h.at]))
      [[likely]] {
    ++h.streak;
    out.push_back(h.at);
    return;
  }
  detail::WaitAny::rest(items, out, timeout, hinted);
}

namespace detail {
void WaitAny::rest(std::span<const Waitable> items, std::vector<std::size_t>& out,
                   std::optional<Clock::duration> timeout, bool hinted) {
  thread_local Scratch scratch;
  Scratch& s = scratch;
  Hint& h = t_hint;
  // Such a set that spun last time (no blocking object) first spins on
  // hot words only (the hint, then a rotating chunk of the others) for up
  // to kHintSpin before the whole pass: a whole pass reads every object's
  // state and the reply a round trip waits for usually comes sooner.
  std::optional<Clock::duration> left = timeout;  // for the whole pass below
  if (hinted && h.streak + 1 < kHintStreak && h.set_spins &&
      (!timeout || *timeout > Clock::duration::zero())) {
    WaitAny wa{items, out, s, h};
    // The clock is first read after 64 steps (a few hundred ns): a reply
    // that comes sooner costs no clock read at all.
    // What the spin took comes off the timeout of the whole pass (all
    // but its first 64 steps: the call returns within a few hundred ns
    // of its timeout).
    Clock::time_point first{}, until{};
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if (wa.collect_quick(true, i % kChunkEvery == 0)) {
        ++h.streak;
        return;
      }
      if ((i & 63) != 0) continue;
      const Clock::time_point now = Clock::now();
      if (i == 64) {
        first = now;
        until = now + kHintSpin;
        until = std::min(until, deadline_from(now, timeout));
      } else if (now >= until) {
        if (timeout) left = std::max(Clock::duration::zero(), *timeout - (now - first));
        break;
      }
    }
  }
  h.streak = 0;
  full(items, out, left, s, h, hinted);
  if (!out.empty() && items.size() >= kHintMin) {
    h.set = items.data();
    h.size = items.size();
    h.at = out.front();
    h.set_spins = h.spins;
  }
}
}  // namespace detail

namespace detail {
void WaitAny::full(std::span<const Waitable> items, std::vector<std::size_t>& out,
                   std::optional<Clock::duration> timeout, Scratch& s, Hint& h, bool hinted) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = detail::deadline_from(start, timeout);
  if (items.empty()) {  // as Python's wait([], timeout): a sleep
    if (!timeout) throw Error(Errc::invalid_argument, "wait", "nothing to wait for and no timeout");
    std::this_thread::sleep_until(deadline);
    return;
  }
  s.fds.clear();
  s.fd_index.clear();
  // The first pass (collect(false)) and the set's strategies in one loop:
  // bit (1 << strategy) of `strategies` is set when an object waits so.
  unsigned strategies = 0;
  std::size_t descriptors = 0;  // items that are not shmbus objects
  static_assert(static_cast<unsigned>(WaitStrategy::busy_poll) < 32 &&
                static_cast<unsigned>(WaitStrategy::adaptive) < 32 &&
                static_cast<unsigned>(WaitStrategy::blocking) < 32);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Waitable& w = items[i];
    if (w.ops_ == nullptr) {
      ++descriptors;
      if (w.fd_ < 0) {
        out.push_back(i);  // a joined Process: it has exited
      } else {
        s.fds.push_back({w.fd_, w.events_, 0});
        s.fd_index.push_back(i);
      }
      continue;
    }
    strategies |= 1U << static_cast<unsigned>(strategy_of(w));
    if (ready_of(w)) out.push_back(i);
  }
  const auto has = [strategies](WaitStrategy st) {
    return (strategies & (1U << static_cast<unsigned>(st))) != 0;
  };
  // A busy-poll object's notifier wakes nobody: a set holding one spins
  // until something is ready or the deadline (as that object's own wait
  // would), whatever else it holds; else it spins like an adaptive object
  // (none if one blocks), then sleeps.
  const bool spin_all_along = has(WaitStrategy::busy_poll);
  h.spins = spin_all_along || (!has(WaitStrategy::blocking) && strategies != 0);
  const std::size_t objects = items.size() - descriptors;
  detail::WaitAny wa{items, out, s, h};
  if (wa.collect_fds()) return;

  Clock::time_point next_check = start + detail::kLivenessInterval;
  // Spin as the objects would (pipe.cpp's wait_loop()); descriptors are
  // polled only at each clock read (a system call).
  if (h.spins) {
    const auto spin = WaitPolicy{}.spin;
    for (unsigned i = 1;; ++i) {
      detail::cpu_relax();
      if (wa.collect_quick(hinted, !hinted || i % detail::kChunkEvery == 0)) return;
      if ((i & 1023) != 0) continue;
      if (wa.collect(false)) return;
      const auto now = Clock::now();
      if (now >= deadline) return;
      if (!spin_all_along && now - start >= spin) break;
      if (now >= next_check) {
        next_check = now + detail::kLivenessInterval;
        if (wa.collect(true)) return;
      }
    }
  }

  // Sleep: arm (a window of) the objects, one heavy fence for those that
  // need it, re-check, then one futex_waitv on their words (and the
  // watcher's word when there are descriptors). [ring.redirect] Two pipe
  // ends or more share one word: the thread's wake slot, which their
  // senders wake instead of their header words (futex_waitv's cost grows
  // with its words: detail/wake_slot.hpp). Without a slot (no table, all
  // taken) each end's own word, as before.
  std::array<detail::FutexWaiter, detail::kMaxFutexWaiters> words{};
  std::size_t pipes = 0;
  for (const Waitable& w : items) pipes += w.ops_ == &kConnectionOps ? 1 : 0;
  const detail::ThreadWakeSlot slot =
      pipes >= 2 ? detail::this_thread_wake_slot() : detail::ThreadWakeSlot{};
  const bool redirect = slot.id != 0;
  // Objects with a word of their own, and the words left for them.
  const std::size_t own_words = objects - (redirect ? pipes : 0);
  const bool windowed = own_words > detail::kMaxSleepWords - (redirect ? 1 : 0);
  std::size_t window = 0;  // first object position of this sleep's window
  detail::FdWatcher* fdw = s.fds.empty() ? nullptr : &detail::watcher();
  for (;;) {
    s.armed.clear();
    s.tickets.clear();
    std::size_t n = 0;
    bool ready_now = false;
    bool fence = false;
    if (redirect) {
      // [ring.redirect] seq_cst: read before the arms below, so a sender
      // that saw one of them bumps the word past this value (pairs with
      // the fetch_add in wake_slot()): futex_waitv returns or is woken.
      words[n++] = {slot.word, slot.word->load(std::memory_order_seq_cst)};
      for (std::size_t i = 0; i < items.size() && !ready_now; ++i) {
        if (wa.ops(i) != &kConnectionOps) continue;
        bool needs = false;
        if (!WaitAccess::conn_arm_redirected(wa.obj(i), slot.id, needs)) {
          ready_now = true;
          break;
        }
        s.armed.push_back(i);
        s.tickets.push_back(0);
        fence = fence || needs;
      }
    }
    std::size_t scanned = 0;  // positions from `window` looked at
    for (; !ready_now && scanned < items.size() && n < detail::kMaxSleepWords; ++scanned) {
      const std::size_t i = (window + scanned) % items.size();
      const detail::WaitOps* o = wa.ops(i);
      if (o == nullptr || (redirect && o == &kConnectionOps)) continue;
      bool needs = false;
      std::uint32_t ticket = 0;
      if (!o->arm(wa.obj(i), words[n], needs, ticket)) {
        ready_now = true;
        break;
      }
      s.armed.push_back(i);
      s.tickets.push_back(ticket);
      ++n;
      fence = fence || needs;
    }
    window = windowed ? (window + scanned) % items.size() : 0;
    if (!ready_now && fence) {
      const bool done = detail::asymmetric_heavy_fence();
      for (std::size_t i : s.armed) wa.ops(i)->order(wa.obj(i), done);
    }
    bool fenced = true;
    if (!ready_now) {
      // seq_cst re-check after every arm: a publication before an arm is
      // seen here, one after it wakes the word ([wait.sleepers], [ring.sleep]).
      for (std::size_t i = 0; i < items.size() && !ready_now; ++i) {
        const detail::WaitOps* o = wa.ops(i);
        ready_now = o != nullptr && ready_of(items[i]);
      }
      for (std::size_t i : s.armed) fenced = fenced && wa.ops(i)->fenced(wa.obj(i));
    }
    bool missed = false;
    if (!ready_now) {
      detail::fault_point(detail::FaultPoint::sleeper_counted);
      if (fdw != nullptr) words[n++] = fdw->start(s.fds);
      const auto now = Clock::now();
      Clock::time_point slice = std::min(deadline, now + detail::kLivenessInterval);
      const bool nap = !fenced || windowed;  // may miss a wake-up by design
      if (!fenced) slice = std::min(slice, now + detail::kUnfencedNap);
      if (windowed) slice = std::min(slice, now + detail::kWindowNap);
      const FutexResult r = detail::futex_wait_any({words.data(), n}, &slice);
      if (fdw != nullptr) fdw->stop();
      missed = r == FutexResult::timed_out && !nap && slice != deadline;
    }
    for (std::size_t k = 0; k < s.armed.size(); ++k)
      wa.ops(s.armed[k])->disarm(wa.obj(s.armed[k]), s.tickets[k]);
    // A pipe end ready although the sleep ran to its slice's end: its
    // sender's wake-up never came (detail::pipe_missed_wakeups(), as
    // recv() counts). Pipe ends only: a queue's wake-up may go to another
    // waiter by design ([queue.token]). Pipe ends on the slot word: the
    // sender woke another table's slot or none; stop redirecting in this
    // process (detail/wake_slot.hpp).
    for (std::size_t k = 0; missed && k < s.armed.size(); ++k) {
      const std::size_t i = s.armed[k];
      if (wa.ops(i) == &kConnectionOps && wa.ops(i)->ready(wa.obj(i))) {
        detail::count_missed_wakeup();
        if (redirect && detail::slot_never_woken(words[0])) detail::stop_redirecting();
        missed = false;
      }
    }
    if (wa.collect(false)) return;
    const auto now = Clock::now();
    if (now >= deadline) return;
    if (now >= next_check) {
      next_check = now + detail::kLivenessInterval;
      if (wa.collect(true)) return;
    }
  }
}
}  // namespace detail

}  // namespace shmbus
