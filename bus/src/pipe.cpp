// Pipe and Connection: setup (create, open, take an end), the send and
// receive paths, waiting with peer-liveness checks, and statistics.
#include "shmbus/pipe.hpp"

#include <immintrin.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <limits>
#include <mutex>
#include <new>
#include <optional>
#include <thread>

#include "shmbus/detail/exit_actions.hpp"
#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/fd_bridge.hpp"
#include "shmbus/detail/futex.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/wake_slot.hpp"
#include "shmbus/segment_info.hpp"

namespace shmbus {

namespace detail {
std::atomic<std::uint64_t> g_fork_generation{0};
constinit thread_local bool t_sent = false;
constinit thread_local std::uint64_t t_send_epoch = 0;

namespace {
std::atomic<std::uint64_t> g_missed_wakeups{0};
}  // namespace

std::uint64_t pipe_missed_wakeups() noexcept {
  // relaxed: a count for tests, read after the waits it counts.
  return g_missed_wakeups.load(std::memory_order_relaxed);
}
void count_missed_wakeup() noexcept {
  // relaxed: a count for tests only.
  g_missed_wakeups.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace detail

namespace {

using detail::PipeControl;

// How often a waiter checks the peer's liveness (a /proc read): never on
// the fast path; every this long while it spins or sleeps.
constexpr auto kLivenessInterval = std::chrono::milliseconds(10);

// A wait for data that ended within this many polls (a pause each, tens of
// ns) found a sender that is just ahead: a stream, if the thread sent
// nothing meanwhile (see PipeOptions::coalesce).
constexpr unsigned kShortWaitPolls = 8;

// [pipe.fork] Every Connection that has (or had) fast paths, linked through
// its fork_prev_ / fork_next_. Held across fork() (locked in the prepare
// handler), so a child inherits it consistent and unlocked, and finds
// every Connection its parent had. Intrusive: linking allocates nothing,
// so no Connection can be missing for want of memory.
struct ForkList {
  std::mutex m;
  Connection* head = nullptr;  // under m
};
// Never destroyed: Connections in static storage untrack during static
// destruction.
ForkList& fork_list() {
  static auto* list = new ForkList;
  return *list;
}

void on_fork_prepare() noexcept { fork_list().m.lock(); }

void on_fork_child() noexcept {
  // relaxed: the child is single-threaded here; only it reads its copy.
  detail::g_fork_generation.fetch_add(1, std::memory_order_relaxed);
  detail::fork_child_stop_fast();
  fork_list().m.unlock();
}

// Forks this process made: an end it never used may since belong to a child.
std::atomic<std::uint64_t> g_forks_made{0};
void on_fork_parent() noexcept {
  // relaxed: a count read by this process's own close().
  g_forks_made.fetch_add(1, std::memory_order_relaxed);
  fork_list().m.unlock();
}

void register_atfork() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)fork_list();
    ::pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child);
  });
}

bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

void validate_options(std::string_view name, const PipeOptions& o) {
  if (!is_pow2(o.capacity) || o.capacity < detail::kMinRingCapacity ||
      o.capacity > detail::kMaxRingCapacity) {
    throw Error(
        Errc::invalid_argument, std::string(name),
        "ring capacity " + std::to_string(o.capacity) + " is not a power of two in 4 KiB .. 1 GiB");
  }
  if (o.max_message == 0 || o.max_message > (std::uint64_t{1} << 62)) {
    throw Error(Errc::invalid_argument, std::string(name),
                "max_message " + std::to_string(o.max_message) + " is not in 1 .. 2^62");
  }
  if (static_cast<unsigned>(o.wait.strategy) > 2 || o.wait.spin.count() < 0) {
    throw Error(Errc::invalid_argument, std::string(name), "bad wait policy");
  }
}

// A private copy of the set-once config of an opened pipe: read from
// shared memory exactly once, so a peer that rewrites the config after it
// was validated cannot change the geometry this process uses.
detail::PipeConfig copy_config(const PipeControl& c) noexcept {
  detail::PipeConfig k;
  std::memcpy(&k, &c.config, sizeof k);
  return k;
}

// Checks a copy of an opened pipe's config (untrusted bytes).
void validate_config(const std::string& name, const detail::PipeConfig& k,
                     std::size_t payload_size) {
  auto bad = [&](const std::string& what) { throw Error(Errc::corrupted, name, "pipe " + what); };
  if (k.format != detail::kPipeFormat) {
    throw Error(Errc::wrong_version, name,
                "pipe format " + std::to_string(k.format) + ", expected " +
                    std::to_string(detail::kPipeFormat));
  }
  if (k.duplex > 1) bad("duplex flag " + std::to_string(k.duplex));
  if (!is_pow2(k.capacity) || k.capacity < detail::kMinRingCapacity ||
      k.capacity > detail::kMaxRingCapacity) {
    bad("capacity " + std::to_string(k.capacity));
  }
  if (payload_size != detail::pipe_payload_size(k.capacity, k.duplex != 0)) {
    bad("payload size " + std::to_string(payload_size) + " does not match its rings");
  }
  if (k.max_message == 0 || k.max_message > (std::uint64_t{1} << 62)) bad("max_message");
  if (k.strategy > 2) bad("wait strategy " + std::to_string(k.strategy));
  if (k.spin_ns > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    bad("spin budget " + std::to_string(k.spin_ns) + " ns");
  }
  if ((k.flags & ~detail::kPipeNoStatistics) != 0) bad("flags " + std::to_string(k.flags));
}

detail::PipeConfig config_of(const PipeOptions& o) noexcept {
  detail::PipeConfig k{};
  k.format = detail::kPipeFormat;
  k.duplex = o.duplex ? 1 : 0;
  k.capacity = o.capacity;
  k.max_message = o.max_message;
  k.strategy = static_cast<std::uint32_t>(o.wait.strategy);
  k.flags = o.statistics ? 0 : detail::kPipeNoStatistics;
  k.spin_ns = static_cast<std::uint64_t>(o.wait.spin.count());
  return k;
}

std::shared_ptr<detail::Segment> create_segment(detail::SegmentName name, const PipeOptions& o,
                                                std::uint64_t owner0, std::uint64_t owner1) {
  validate_options(name.value_or("anonymous pipe"), o);
  const std::size_t size = detail::pipe_payload_size(o.capacity, o.duplex);
  auto init = [&](std::span<std::byte> payload) {
    auto* c = new (payload.data()) PipeControl{};
    c->config = config_of(o);
    // relaxed: published by the segment's ready store ([segment.ready]).
    c->ends[0].owner.store(owner0, std::memory_order_relaxed);
    c->ends[1].owner.store(owner1, std::memory_order_relaxed);
  };
  return std::make_shared<detail::Segment>(
      detail::Segment::make(name, ObjectKind::pipe, detail::kBytesTag, size, init, o.segment));
}

// A named pipe, or an anonymous one (nullopt) in unnamed memory.
std::pair<Connection, Connection> make_ends(detail::SegmentName name, const PipeOptions& o) {
  register_atfork();
  const std::uint64_t me = this_process().pack();
  auto seg = create_segment(name, o, me, me);
  // Both ends are held by the creator until a process uses one of them
  // (a forked child takes the end it uses from its parent).
  const detail::PipeConfig k = config_of(o);
  std::pair<Connection, Connection> ends{Connection(seg, k, 0, false),
                                         Connection(seg, k, 1, false)};
  ends.first.set_coalesce(o.coalesce);
  ends.second.set_coalesce(o.coalesce);
  return ends;
}

}  // namespace

std::string_view to_string(SendResult r) noexcept {
  switch (r) {
    case SendResult::ok:
      return "ok";
    case SendResult::full:
      return "full";
    case SendResult::timeout:
      return "timeout";
    case SendResult::too_large:
      return "too_large";
    case SendResult::closed:
      return "closed";
    case SendResult::broken:
      return "broken";
    case SendResult::peer_dead:
      return "peer_dead";
    case SendResult::corrupted:
      return "corrupted";
  }
  return "unknown";
}

std::string_view to_string(RecvResult r) noexcept {
  switch (r) {
    case RecvResult::ok:
      return "ok";
    case RecvResult::empty:
      return "empty";
    case RecvResult::timeout:
      return "timeout";
    case RecvResult::eof:
      return "eof";
    case RecvResult::peer_dead:
      return "peer_dead";
    case RecvResult::too_small:
      return "too_small";
    case RecvResult::too_large:
      return "too_large";
    case RecvResult::size_mismatch:
      return "size_mismatch";
    case RecvResult::closed:
      return "closed";
    case RecvResult::corrupted:
      return "corrupted";
    case RecvResult::decode_error:
      return "decode_error";
  }
  return "unknown";
}

std::pair<Connection, Connection> Pipe(std::string_view name, const PipeOptions& options) {
  return make_ends(name, options);
}
std::pair<Connection, Connection> Pipe(std::string_view name, bool duplex) {
  PipeOptions o;
  o.duplex = duplex;
  return make_ends(name, o);
}
std::pair<Connection, Connection> Pipe(const PipeOptions& options) {
  return make_ends(std::nullopt, options);
}
std::pair<Connection, Connection> Pipe(bool duplex) {
  PipeOptions o;
  o.duplex = duplex;
  return Pipe(o);
}

bool unlink_pipe(std::string_view name) { return detail::Segment::unlink(name); }

// --- Connection: setup -------------------------------------------------------

Connection::Connection(std::shared_ptr<detail::Segment> segment, const detail::PipeConfig& k,
                       int end, bool taken)
    : segment_(std::move(segment)), end_(end) {
  register_atfork();
  detail::add_exit_action(this, close_at_exit);
  // `k` is this process's validated copy of the config: the geometry below
  // never comes from control_->config, which a peer could rewrite.
  control_ = reinterpret_cast<PipeControl*>(segment_->payload());
  const bool duplex = k.duplex != 0;
  const std::size_t cap = k.capacity;
  policy_.strategy = static_cast<WaitStrategy>(k.strategy);
  policy_.spin = std::chrono::nanoseconds(static_cast<std::int64_t>(k.spin_ns));
  recv_policy_ = policy_;  // a Listener's accept() may set its own (take_end())
  max_message_ = k.max_message;
  can_recv_ = end == 0 || duplex;
  can_send_ = end == 1 || duplex;
  const bool notify = policy_.strategy != WaitStrategy::busy_poll;
  // [ring.sleep] An adaptive sender publishes without a fence when this
  // process can take part in [fence.asym]; a blocking one exchanges (its
  // receiver sleeps on every message and should not pay a membarrier each).
  detail::RingWake wake = detail::RingWake::none;
  if (policy_.strategy == WaitStrategy::blocking)
    wake = detail::RingWake::exchange;
  else if (notify)
    wake = detail::asymmetric_fence_register() ? detail::RingWake::checked
                                               : detail::RingWake::exchange;
  std::byte* rings = segment_->payload() + detail::kPipeControlSize;
  if (can_recv_) {
    const int r = end;  // end e receives from ring e
    rx_ = detail::RingConsumer(&control_->rings[r], rings + cap * static_cast<std::size_t>(r), cap,
                               notify);
    rx_.set_statistics((k.flags & detail::kPipeNoStatistics) == 0);
  }
  if (can_send_) {
    const int r = duplex ? 1 - end : 0;  // and sends into ring 1 - e
    tx_ = detail::RingProducer(&control_->rings[r], rings + cap * static_cast<std::size_t>(r), cap,
                               wake);
    tx_.set_statistics((k.flags & detail::kPipeNoStatistics) == 0);
    fast_send_limit_ = std::min<std::uint64_t>(max_message_, tx_.max_payload());
  }
  active_ = taken;
  closed_ = false;
  peer_closed_flag_ = &control_->ends[1 - end].closed;
  fork_gen_ = detail::fork_generation();
  // relaxed: see on_fork_parent().
  forks_at_create_ = g_forks_made.load(std::memory_order_relaxed);
  track_for_fork();  // before its first use: [pipe.fork]
  update_fast();
}

namespace {
// A PipeEnd from a cast (PipeEnd(7)) is neither end.
void check_end(std::string_view name, PipeEnd end) {
  if (end != PipeEnd::first && end != PipeEnd::second) {
    throw Error(Errc::invalid_argument, std::string(name),
                "no such pipe end (PipeEnd::first or second)");
  }
}
}  // namespace

Connection Connection::create(std::string_view name, PipeEnd end, const PipeOptions& options) {
  check_end(name, end);
  register_atfork();
  const std::uint64_t me = this_process().pack();
  const bool first = end == PipeEnd::first;
  auto seg = create_segment(name, options, first ? me : 0, first ? 0 : me);
  Connection c(std::move(seg), config_of(options), first ? 0 : 1, true);
  c.set_coalesce(options.coalesce);
  return c;
}

Connection Connection::open(std::string_view name, PipeEnd end, const SegmentOptions& options) {
  return take_end(name, end, options, nullptr);
}

Connection Connection::take_end(std::string_view name, PipeEnd end, const SegmentOptions& options,
                                const WaitPolicy* recv_wait) {
  check_end(name, end);
  register_atfork();
  auto seg = std::make_shared<detail::Segment>(
      detail::Segment::open(name, ObjectKind::pipe, detail::kBytesTag, options));
  const std::string object(name);
  if (seg->payload_size() < detail::kPipeControlSize) {
    throw Error(Errc::corrupted, object, "pipe payload smaller than its control block");
  }
  auto* c = reinterpret_cast<PipeControl*>(seg->payload());
  const detail::PipeConfig k = copy_config(*c);  // read once: see copy_config()
  validate_config(object, k, seg->payload_size());
  const int e = end == PipeEnd::first ? 0 : 1;
  const std::uint64_t me = this_process().pack();
  std::uint64_t expected = 0;
  // [pipe.recv_wait] relaxed: published by the owner CAS below (release),
  // before which the peer does not read it. Written only while the end
  // looks free: a taker that loses the CAS below to a second one racing
  // for the same end (never the case for a Listener's pipe) may have
  // changed how its peer's sends wake the winner, never whether data
  // arrives.
  // relaxed load: the CAS below decides who takes the end.
  if (recv_wait != nullptr && c->ends[e].owner.load(std::memory_order_relaxed) == 0) {
    c->ends[e].recv_wait.store(1 + static_cast<std::uint32_t>(recv_wait->strategy),
                               std::memory_order_relaxed);
  }
  // [pipe.owner] acq_rel CAS: takes the end exactly once; pairs with the
  // peer's acquire load when it checks our liveness.
  if (!c->ends[e].owner.compare_exchange_strong(expected, me, std::memory_order_acq_rel)) {
    const ProcessId holder = ProcessId::unpack(expected);
    throw Error(Errc::already_exists, object,
                std::string("end ") + (e == 0 ? "first" : "second") + " is already taken by pid " +
                    std::to_string(holder.pid) + (is_alive(holder) ? "" : " (dead)"));
  }
  Connection conn(std::move(seg), k, e, true);
  if (recv_wait != nullptr) conn.recv_policy_ = *recv_wait;
  return conn;
}

void Connection::follow_peer_recv_wait() noexcept {
  if (!can_send_ || control_ == nullptr) return;
  // [pipe.recv_wait] relaxed: read after the acquire load that saw the
  // peer's owner CAS (ListenerAccess::peer_taken()). Untrusted.
  const std::uint32_t v = control_->ends[1 - end_].recv_wait.load(std::memory_order_relaxed);
  if (v == 0 || v > 3) return;
  const auto wanted = static_cast<WaitStrategy>(v - 1);
  const detail::RingWake now = tx_.wake();
  // As the constructor picks for a pipe of that strategy, never weaker
  // than this pipe's own: a blocking receiver is woken by an exchange, an
  // adaptive one by a checked commit (or an exchange where this process
  // cannot take part in [fence.asym]).
  if (wanted == WaitStrategy::blocking && now != detail::RingWake::exchange) {
    tx_.set_wake(detail::RingWake::exchange);
  } else if (wanted == WaitStrategy::adaptive && now == detail::RingWake::none) {
    tx_.set_wake(detail::asymmetric_fence_register() ? detail::RingWake::checked
                                                     : detail::RingWake::exchange);
  }
}

Connection::Connection(Connection&& o) noexcept
    : segment_(std::move(o.segment_)),
      control_(std::exchange(o.control_, nullptr)),
      tx_(std::exchange(o.tx_, {})),
      rx_(std::exchange(o.rx_, {})),
      policy_(o.policy_),
      recv_policy_(o.recv_policy_),
      max_message_(o.max_message_),
      fast_send_limit_(std::exchange(o.fast_send_limit_, 0)),
      peer_closed_flag_(std::exchange(o.peer_closed_flag_, &detail::g_no_peer_closed)),
      coalesce_(o.coalesce_),
      copy_choice_(o.copy_choice_),
      sends_after_wait_(o.sends_after_wait_),
      short_wait_(o.short_wait_),
      fork_gen_(o.fork_gen_),
      forks_at_create_(o.forks_at_create_),
      end_(o.end_),
      can_send_(std::exchange(o.can_send_, false)),
      can_recv_(std::exchange(o.can_recv_, false)),
      active_(std::exchange(o.active_, false)),
      closed_(std::exchange(o.closed_, true)),
      peeked_(std::exchange(o.peeked_, false)),
      peer_death_counted_(o.peer_death_counted_),
      remove_name_at_close_(std::exchange(o.remove_name_at_close_, false)),
      peer_owner_seen_(o.peer_owner_seen_),
      next_liveness_ns_(o.next_liveness_ns_),
      fd_bridge_(std::move(o.fd_bridge_)) {
  if (control_ != nullptr) track_for_fork();  // before its first use: [pipe.fork]
  update_fast();
  o.update_fast();
  if (control_ != nullptr) detail::add_exit_action(this, close_at_exit);
}

Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    close();
    segment_ = std::move(o.segment_);
    control_ = std::exchange(o.control_, nullptr);
    tx_ = std::exchange(o.tx_, {});
    rx_ = std::exchange(o.rx_, {});
    policy_ = o.policy_;
    recv_policy_ = o.recv_policy_;
    max_message_ = o.max_message_;
    fast_send_limit_ = std::exchange(o.fast_send_limit_, 0);
    peer_closed_flag_ = std::exchange(o.peer_closed_flag_, &detail::g_no_peer_closed);
    coalesce_ = o.coalesce_;
    copy_choice_ = o.copy_choice_;
    sends_after_wait_ = o.sends_after_wait_;
    short_wait_ = o.short_wait_;
    fork_gen_ = o.fork_gen_;
    forks_at_create_ = o.forks_at_create_;
    end_ = o.end_;
    can_send_ = std::exchange(o.can_send_, false);
    can_recv_ = std::exchange(o.can_recv_, false);
    active_ = std::exchange(o.active_, false);
    closed_ = std::exchange(o.closed_, true);
    peeked_ = std::exchange(o.peeked_, false);
    peer_death_counted_ = o.peer_death_counted_;
    remove_name_at_close_ = std::exchange(o.remove_name_at_close_, false);
    peer_owner_seen_ = o.peer_owner_seen_;
    next_liveness_ns_ = o.next_liveness_ns_;
    fd_bridge_ = std::move(o.fd_bridge_);
    if (control_ != nullptr) track_for_fork();  // before its first use: [pipe.fork]
    update_fast();
    o.update_fast();
    if (control_ != nullptr) detail::add_exit_action(this, close_at_exit);
  }
  return *this;
}

void Connection::close_at_exit(void* self) noexcept { static_cast<Connection*>(self)->close(); }

Connection::~Connection() {
  close();
  detail::remove_exit_action(this);
  untrack_for_fork();
}

void Connection::track_for_fork() noexcept {
  if (fork_tracked_) return;
  // register_atfork() ran when this end (or the one it moved from) was made.
  ForkList& list = fork_list();
  std::scoped_lock g(list.m);
  fork_prev_ = nullptr;
  fork_next_ = list.head;
  if (list.head != nullptr) list.head->fork_prev_ = this;
  list.head = this;
  fork_tracked_ = true;
}

void Connection::untrack_for_fork() noexcept {
  if (!fork_tracked_) return;
  ForkList& list = fork_list();
  std::scoped_lock g(list.m);
  (fork_prev_ != nullptr ? fork_prev_->fork_next_ : list.head) = fork_next_;
  if (fork_next_ != nullptr) fork_next_->fork_prev_ = fork_prev_;
  fork_prev_ = fork_next_ = nullptr;
  fork_tracked_ = false;
}

void detail::fork_child_stop_fast() noexcept {
  // Under the list's mutex (taken by on_fork_prepare()); the child has one
  // thread. Only the flags: everything else stays as the parent left it,
  // and take_over() decides whether this child may use the end.
  for (Connection* c = fork_list().head; c != nullptr; c = c->fork_next_) {
    c->fast_send_end_ = 0;
    c->fast_recv_ = false;
    c->tx_.allow_fast(false);
    c->rx_.allow_fast(false);
  }
}

const std::string& Connection::name() const noexcept {
  static const std::string none;
  return segment_ ? segment_->name() : none;
}

std::size_t Connection::max_frame_payload() const noexcept {
  // From the ring this end set up (the validated config), never from the
  // shared config a peer could rewrite.
  if (can_send_) return tx_.max_payload();
  if (can_recv_) return detail::max_frame_payload(rx_.capacity());
  return 0;
}

bool Connection::take_over() noexcept {
  if (closed_ || control_ == nullptr) return false;
  const ProcessId me = this_process();
  const std::uint64_t word = me.pack();
  auto& owner = control_->ends[end_].owner;
  // [pipe.owner] acquire: pairs with the CAS of whoever took the end.
  std::uint64_t cur = owner.load(std::memory_order_acquire);
  while (cur != word) {
    // The end passes from a parent to the forked child that uses it.
    const bool may = cur == 0 || ProcessId::unpack(cur).pid == ::getppid();
    if (!may) return false;
    // [pipe.owner] acq_rel: see Connection::open().
    if (owner.compare_exchange_weak(cur, word, std::memory_order_acq_rel)) break;
  }
  if (fork_gen_ != detail::fork_generation()) {
    try {
      segment_->attach();  // count this process in the segment's table
    } catch (...) {        // a full table only affects the resource tracker
    }
    // [ring.sleep] A checked sender's process must be registered for the
    // receiver's heavy fence; the registration belongs to the parent's
    // address space.
    if (can_send_ && tx_.wake() == detail::RingWake::checked &&
        !detail::asymmetric_fence_register())
      tx_.use_exchange();
    fork_gen_ = detail::fork_generation();
  }
  active_ = true;
  update_fast();
  return true;
}

void Connection::close() noexcept {
  if (closed_ || control_ == nullptr) {
    closed_ = true;
    update_fast();
    return;
  }
  // The end is closed for the peer when this process holds it: it took or
  // used it, or it made the end and has not forked since (after a fork the
  // child may take an end its parent never used: closing the parent's copy
  // then leaves the child's alone, as with multiprocessing's handles).
  // relaxed: see on_fork_parent().
  const bool unforked = g_forks_made.load(std::memory_order_relaxed) == forks_at_create_;
  // [pipe.owner] acquire: see take_over().
  const std::uint64_t owner = control_->ends[end_].owner.load(std::memory_order_acquire);
  // An owner word of 0 after this process took the end is a stray write
  // (an end is never given back): the end is still ours to close.
  const bool mine = (active_ || unforked) && fork_gen_ == detail::fork_generation() &&
                    (owner == this_process().pack() || (owner == 0 && active_));
  if (mine) {
    if (can_send_) tx_.flush();
    if (can_recv_) rx_.publish_read();
    detail::fault_point(detail::FaultPoint::close_begun);
    // [pipe.closed] seq_cst: after every frame this end committed; pairs
    // with the peer's load in peer_closed() (and orders the wakes below:
    // [ring.sleep] for a receiver asleep on a header, [wait.sleepers] for
    // a sender asleep for room).
    control_->ends[end_].closed.store(1, std::memory_order_seq_cst);
    if (can_send_) tx_.wake_consumer();
    if (can_recv_) detail::notify(rx_.control()->space);
    if (remove_name_at_close_) remove_name_if_peer_gone();
  }
  closed_ = true;
  update_fast();
}

void Connection::remove_name_if_peer_gone() noexcept {
  // [pipe.closed] Both ends store their flag seq_cst before this load: of
  // two ends closing at once, at least one sees the other closed.
  if (!peer_closed() && !peer_dead()) return;  // the peer removes it
  try {
    // Only if the name is still our pipe ([segment.unlink]): Client()'s
    // names never repeat (pid, start time, counter), but a pipe made under
    // any other name scheme could be made again under ours.
    (void)segment_->unlink_own_name();
  } catch (...) {  // gone already (the peer removed it too)
  }
}

// --- waiting -------------------------------------------------------------------

bool Connection::peer_dead() noexcept {
  // [pipe.owner] acquire: pairs with the CAS that took the peer's end.
  std::uint64_t w = control_->ends[1 - end_].owner.load(std::memory_order_acquire);
  // An end once taken is never given back: a 0 after we saw an owner is a
  // peer's stray write, and the owner we saw is the one to watch.
  if (w == 0) w = peer_owner_seen_;
  if (w == 0) return false;  // not taken yet: the peer may still come
  peer_owner_seen_ = w;
  if (is_alive(ProcessId::unpack(w))) return false;
  if (peer_death_counted_) return true;
  peer_death_counted_ = true;
  auto& line = control_->ends[end_];
  // [ring.stats] relaxed: single-writer counter.
  line.peer_deaths.store(line.peer_deaths.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
  return true;
}

bool Connection::peer_dead_by_now() noexcept {
  if (peer_death_counted_) return true;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // vDSO: no system call
  const std::int64_t now = std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  if (now < next_liveness_ns_) return false;
  next_liveness_ns_ =
      now + std::chrono::duration_cast<std::chrono::nanoseconds>(kLivenessInterval).count();
  return peer_dead();
}

namespace {

// Spins (busy / adaptive), then sleeps in slices so the peer's liveness
// is checked every kLivenessInterval. `ready` loads seq_cst. `sleep(slice)`
// sleeps once, until woken or the slice's end, and returns nullopt instead
// when its own last-moment check finds the wait over (see sleep_on()).
template <class Ready, class Dead, class Slept, class Sleep>
detail::WaitOutcome wait_loop(const WaitPolicy& policy, const Clock::time_point* deadline,
                              Ready&& ready, Dead&& dead, Slept&& slept, Sleep&& sleep) noexcept {
  using detail::WaitOutcome;
  if (policy.strategy != WaitStrategy::blocking) {
    // No clock read before the first spins: a stream's receiver that
    // catches up with its sender waits only a moment, and a clock read
    // (tens of ns under a hypervisor) would cost it on every catch-up.
    // The spin budget therefore starts at the first check (256 spins in).
    Clock::time_point start{};
    Clock::time_point next_check{};
    for (unsigned i = 1;; ++i) {
      detail::cpu_relax();
      if (ready()) return WaitOutcome::ready;
      if ((i & 255) == 0) {  // a vDSO clock read now and then, no system call
        const auto now = Clock::now();
        if (i == 256) {
          start = now;
          next_check = now + kLivenessInterval;
        }
        if (deadline != nullptr && now >= *deadline)
          return ready() ? WaitOutcome::ready : WaitOutcome::timeout;
        if (policy.strategy == WaitStrategy::adaptive && now - start >= policy.spin) break;
        if (now >= next_check) {
          next_check = now + kLivenessInterval;
          if (dead()) return WaitOutcome::dead_peer;
        }
      }
    }
  }
  slept();
  // Sleep in slices; the peer's liveness (a /proc read, a few system
  // calls) is checked only when a slice passes without a wake-up, so a
  // blocking round trip costs no more than the futex itself. This is
  // detail::wait_until()'s blocking loop, written out to see whether a
  // sleep ended by its notifier or by the slice's end.
  auto slice_end = [&] {
    const auto e = Clock::now() + kLivenessInterval;
    return deadline != nullptr && *deadline < e ? *deadline : e;
  };
  auto slice = slice_end();
  for (;;) {
    const std::optional<detail::FutexResult> r = sleep(slice);
    if (!r) return WaitOutcome::ready;
    const bool timed_out = *r == detail::FutexResult::timed_out;
    if (ready()) {
      // Ready although the sleep ran to the slice's end: the notifier's
      // wake-up never came (see detail::pipe_missed_wakeups()).
      if (timed_out && (deadline == nullptr || slice != *deadline)) detail::count_missed_wakeup();
      return WaitOutcome::ready;
    }
    // A wake-up for someone else (or a signal) before the slice's end: sleep on.
    if (!timed_out && Clock::now() < slice) continue;
    if (deadline != nullptr && Clock::now() >= *deadline) return WaitOutcome::timeout;
    if (dead()) return WaitOutcome::dead_peer;
    slice = slice_end();
  }
}

// A wait_loop sleep on a WaitChannel ([wait.sleepers] in futex.hpp).
template <class Ready>
std::optional<detail::FutexResult> sleep_on(detail::WaitChannel& ch, Ready& ready,
                                            const Clock::time_point& slice) noexcept {
  // [wait.sleepers] pairs with the load in notify(); the predicate
  // re-check below loads seq_cst too (futex.hpp contract). [wait.epoch]:
  // the ticket's count is wiped if this process dies asleep.
  std::uint32_t seq = 0;
  const std::uint32_t ticket = detail::sleeper_enter(ch, seq);
  std::optional<detail::FutexResult> r;
  if (!ready()) r = detail::futex_wait(ch.seq, seq, &slice);
  detail::sleeper_leave(ch.sleepers, ticket);
  return r;
}

}  // namespace

Connection::WaitOutcome Connection::wait_data(const Deadline* deadline) noexcept {
  auto* ctl = rx_.control();
  const bool sent = detail::t_sent || detail::t_send_epoch != sends_after_wait_;
  if (short_wait_ && !sent && coalesce_.count() > 0 &&
      recv_policy_.strategy != WaitStrategy::blocking) {
    // Stream coalescing (PipeOptions::coalesce): let the sender get ahead
    // without polling the line it is writing.
    auto until = Clock::now() + coalesce_;
    if (deadline != nullptr && *deadline < until) until = *deadline;
    while (Clock::now() < until) detail::cpu_relax();
  }
  unsigned polls = 0;
  auto ready = [&] {
    ++polls;
    // Only the header is polled. Asking for the next line too (a read
    // prefetch, so a frame's tail would cross with its header) takes back
    // the line the sender already claimed for writing, which it must then
    // claim again. 64 B busy round trip on the 2-vCPU EPYC VM, builds with
    // three code alignments: with the prefetch 1.17-2.31x the cache-line
    // floor in all 24 runs; without it 0.89-1.33x, under 1.15x in 23 of 33
    // (it flips between about 1.0x and 1.3x from run to run, even for one
    // binary; cause not found). Streams unchanged.
    return rx_.has_data() || peer_closed();
  };
  bool slept = false;
  const WaitOutcome r = wait_loop(
      recv_policy_, deadline, ready, [&] { return peer_dead(); },
      [&] {
        slept = true;
        // [ring.stats] relaxed: single-writer counter.
        ctl->consumer.blocked_recvs.store(
            ctl->consumer.blocked_recvs.load(std::memory_order_relaxed) + 1,
            std::memory_order_relaxed);
      },
      [&](const Clock::time_point& slice) -> std::optional<detail::FutexResult> {
        // [ring.sleep]: mark the header word, then check the close (seq_cst,
        // after the mark: pairs with the closer's store and wake_consumer()).
        if (!rx_.arm_sleep() || peer_closed()) return std::nullopt;
        return rx_.sleep(&slice);
      });
  if (slept) rx_.disarm_sleep();  // woken by the close, timed out, or a dead peer
  short_wait_ = polls <= kShortWaitPolls;
  if (detail::t_sent) {  // take the flag (see t_sent)
    detail::t_sent = false;
    ++detail::t_send_epoch;
  }
  sends_after_wait_ = detail::t_send_epoch;
  return r;
}

Connection::WaitOutcome Connection::wait_room(std::size_t payload,
                                              const Deadline* deadline) noexcept {
  auto* ctl = tx_.control();
  auto ready = [&] { return tx_.has_room(payload) || peer_closed(); };
  const WaitOutcome r = wait_loop(
      policy_, deadline, ready, [&] { return peer_dead(); },
      [&] {
        // [ring.stats] relaxed: single-writer counter.
        ctl->producer.blocked_sends.store(
            ctl->producer.blocked_sends.load(std::memory_order_relaxed) + 1,
            std::memory_order_relaxed);
      },
      [&](const Clock::time_point& slice) { return sleep_on(ctl->space, ready, slice); });
  return r;
}

// --- sending -------------------------------------------------------------------

SendResult Connection::send_bytes_slow(std::span<const std::byte> data) noexcept {
  if (fast_send(data.data(), data.size())) return SendResult::ok;
  return send_bytes_impl(data, nullptr, true);
}

RecvResult Connection::recv_bytes_into_slow(std::span<std::byte> buffer, std::size_t offset,
                                            std::size_t& size) noexcept {
  if (offset <= buffer.size() &&
      rx_.try_recv<false>(buffer.data() + offset, buffer.size() - offset, size))
    return RecvResult::ok;
  return recv_impl(buffer, offset, size, nullptr, true);
}

SendResult Connection::send_bytes_impl(std::span<const std::byte> data, const Deadline* deadline,
                                       bool wait) noexcept {
  if (!can_send_ || closed_ || !ensure_owner()) return SendResult::closed;
  const std::size_t n = data.size();
  if (n > max_message_) return SendResult::too_large;
  if (n > tx_.max_payload()) {
    if (!wait) return SendResult::full;
    return send_fragmented(data, deadline);
  }
  std::span<std::byte> out;
  SendResult r = SendResult::ok;
  std::byte* p = tx_.try_reserve(n);
  if (p == nullptr) {
    if (!wait) {
      if (tx_.corrupted()) return SendResult::corrupted;
      tx_.flush();  // a pending batch must become visible, or full lasts forever
      return SendResult::full;
    }
    r = reserve_impl(n, out, deadline);
    if (r != SendResult::ok) return r;
    p = out.data();
  }
  detail::fault_point(detail::FaultPoint::send_reserved);
  // relaxed would do for the check, seq_cst costs nothing more on a load.
  if (peer_closed()) return SendResult::broken;
  if (n != 0) std::memcpy(p, data.data(), n);
  detail::fault_point(detail::FaultPoint::send_written);
  tx_.commit(n);
  detail::t_sent = true;
  return SendResult::ok;
}

SendResult Connection::reserve(std::size_t size, std::span<std::byte>& out) noexcept {
  return reserve_impl(size, out, nullptr);
}

SendResult Connection::reserve_impl(std::size_t size, std::span<std::byte>& out,
                                    const Deadline* deadline) noexcept {
  if (!can_send_ || closed_ || !ensure_owner()) return SendResult::closed;
  if (size > tx_.max_payload()) return SendResult::too_large;
  for (;;) {
    if (std::byte* p = tx_.try_reserve(size)) {
      out = {p, size};
      return SendResult::ok;
    }
    if (tx_.corrupted()) return SendResult::corrupted;
    if (peer_closed()) return SendResult::broken;
    tx_.flush();  // a pending batch must be visible before we wait for room
    switch (wait_room(size, deadline)) {
      case WaitOutcome::ready:
        break;
      case WaitOutcome::dead_peer:
        return SendResult::peer_dead;
      default:
        return SendResult::timeout;
    }
  }
}

SendResult Connection::commit(std::size_t size) noexcept {
  // A receive-only, closed or moved-from end has no ring to write (or one
  // that is no longer its own); without a reservation, or above it, the
  // frame would overwrite bytes the consumer has not read yet.
  if (!can_send_ || closed_) return SendResult::closed;
  if (!tx_.can_commit(size)) return SendResult::too_large;
  tx_.commit(size);
  detail::t_sent = true;
  return SendResult::ok;
}

namespace {
// Fragments smaller than this are always copied through the cache; a
// connection whose frames are smaller never times its messages.
constexpr std::size_t kStreamingCopyMin = 16 << 10;

// Copies a fragment of a message larger than one frame into the ring, in
// the mode CopyChoice picked: memcpy, or non-temporal stores, which go to
// memory instead of this core's cache, so that the receiving core reads
// them from there rather than snooping them out of this core's cache line
// by line (see copy_choice.hpp for when each wins).
void copy_to_ring(std::byte* dst, const std::byte* src, std::size_t n,
                  detail::CopyMode mode) noexcept {
  if (mode == detail::CopyMode::cached || n < kStreamingCopyMin) {
    std::memcpy(dst, src, n);
    return;
  }
  // Align the destination to 16 bytes with an ordinary copy first.
  const std::size_t lead = (16 - (reinterpret_cast<std::uintptr_t>(dst) & 15)) & 15;
  std::memcpy(dst, src, lead);
  dst += lead;
  src += lead;
  n -= lead;
  auto* d = reinterpret_cast<__m128i*>(dst);
  const std::size_t blocks = n / 16;
  for (std::size_t i = 0; i < blocks; ++i) {
    _mm_stream_si128(d + i, _mm_loadu_si128(reinterpret_cast<const __m128i*>(src) + i));
  }
  std::memcpy(dst + blocks * 16, src + blocks * 16, n - blocks * 16);
  // The streaming stores are weakly ordered: fence them before the frame's
  // header publishes them ([ring.publish] covers ordinary stores only).
  _mm_sfence();
}
}  // namespace

SendResult Connection::send_fragmented(std::span<const std::byte> data,
                                       const Deadline* deadline) noexcept {
  const std::size_t chunk = tx_.max_payload();
  const std::uint64_t total = data.size();
  std::size_t sent = 0;
  std::uint64_t frames = 0;
  bool first = true;
  // Only a ring with frames large enough for streaming stores has a choice.
  const bool choosing = chunk >= kStreamingCopyMin;
  const detail::CopyMode mode = choosing ? copy_choice_.next() : detail::CopyMode::cached;
  const auto start = choosing ? Clock::now() : Clock::time_point{};
  while (first || sent < total) {
    const std::size_t head = first ? sizeof(std::uint64_t) : 0;
    const std::size_t len = std::min<std::size_t>(chunk - head, total - sent);
    std::byte* p = nullptr;
    for (;;) {
      if (peer_closed()) return SendResult::broken;
      p = tx_.try_reserve(head + len);
      if (p != nullptr) {
        detail::fault_point(detail::FaultPoint::send_reserved);
        break;
      }
      if (tx_.corrupted()) return SendResult::corrupted;
      tx_.flush();
      const WaitOutcome w = wait_room(head + len, deadline);
      if (w == WaitOutcome::timeout) {
        // A half-sent message cannot be taken back, and whatever this end
        // sent next would read as its continuation: the sending direction
        // stays failed (later sends: corrupted).
        if (!first) tx_.mark_corrupted();
        return SendResult::timeout;
      }
      if (w == WaitOutcome::dead_peer) return SendResult::peer_dead;
    }
    if (first) std::memcpy(p, &total, sizeof total);
    copy_to_ring(p + head, data.data() + sent, len, mode);
    sent += len;
    const bool last = sent == total;
    detail::fault_point(detail::FaultPoint::send_written);
    tx_.commit(head + len, detail::kFrameFragment | (last ? detail::kFrameLast : 0));
    ++frames;
    first = false;
  }
  tx_.uncount_fragments(frames - 1);
  if (choosing) {
    copy_choice_.record(mode, total,
                        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start));
  }
  detail::t_sent = true;
  return SendResult::ok;
}

void Connection::begin_batch() noexcept {
  if (can_send_) tx_.begin_batch();
}
void Connection::end_batch() noexcept {
  if (can_send_) tx_.end_batch();
}

// --- receiving -----------------------------------------------------------------

RecvResult Connection::next_frame(detail::Frame& frame, const Deadline* deadline,
                                  bool wait) noexcept {
  if (!can_recv_ || closed_ || !ensure_owner()) return RecvResult::closed;
  // A frame peek() left peeked is consumed (or peeked again) from here on:
  // release() must not free it a second time.
  peeked_ = false;
  update_fast();
  const auto got = [] {
    detail::fault_point(detail::FaultPoint::recv_peeked);
    return RecvResult::ok;
  };
  // A peer that closed or died writes nothing more: what it committed
  // before is visible now and is delivered first, then `after`.
  const auto drain = [&](RecvResult after) {
    const auto p = rx_.peek(frame);
    if (p == detail::PeekResult::ok) return got();
    return p == detail::PeekResult::corrupted ? RecvResult::corrupted : after;
  };
  for (;;) {
    switch (rx_.peek(frame)) {
      case detail::PeekResult::ok:
        return got();
      case detail::PeekResult::corrupted:
        return RecvResult::corrupted;
      case detail::PeekResult::empty:
        break;
    }
    if (peer_closed()) return drain(RecvResult::eof);
    if (!wait) {
      // A call that never waits learns of a death too (within one
      // liveness interval), as recv() and poll() do.
      if (peer_dead_by_now()) return drain(RecvResult::peer_dead);
      if (fd_bridge_ != nullptr) [[unlikely]]
        rearm_fileno();
      return RecvResult::empty;
    }
    switch (wait_data(deadline)) {
      case WaitOutcome::ready:
        continue;
      case WaitOutcome::timeout:
        return RecvResult::timeout;
      default:
        return drain(RecvResult::peer_dead);
    }
  }
}

namespace {
// The total length of the message whose first frame is `f`, validated: a
// first fragment (not marked last) announces more bytes than it carries.
bool message_length(const detail::Frame& f, std::uint64_t max_message,
                    std::uint64_t& total) noexcept {
  if (!f.fragment) {
    total = f.length;
    return true;
  }
  if (f.last || f.length < sizeof(std::uint64_t)) return false;
  std::memcpy(&total, f.data, sizeof total);
  return total <= max_message && total > f.length - sizeof(std::uint64_t);
}
}  // namespace

RecvResult Connection::next_fragment(detail::Frame& f, std::uint64_t got, std::uint64_t total,
                                     const Deadline* deadline) noexcept {
  const RecvResult r = next_frame(f, deadline, true);
  if (r == RecvResult::timeout) {
    // The rest of this message can no longer be told apart from the start
    // of the next one: the receiving direction stays failed.
    rx_.mark_corrupted();
    return r;
  }
  if (r != RecvResult::ok) return r;
  const bool last = got + f.length == total;
  if (!f.fragment || f.length == 0 || f.length > total - got || f.last != last) {
    rx_.mark_corrupted();
    return RecvResult::corrupted;
  }
  return RecvResult::ok;
}

RecvResult Connection::recv_impl(std::span<std::byte> buffer, std::size_t offset, std::size_t& size,
                                 const Deadline* deadline, bool wait) noexcept {
  detail::Frame f;
  RecvResult r = next_frame(f, deadline, wait);
  if (r != RecvResult::ok) return r;
  const std::size_t room = offset <= buffer.size() ? buffer.size() - offset : 0;
  if (!f.fragment) {
    size = f.length;
    if (room < f.length) return RecvResult::too_small;
    if (f.length != 0) std::memcpy(buffer.data() + offset, f.data, f.length);
    rx_.release(true);
    return RecvResult::ok;
  }
  std::uint64_t total = 0;
  if (!message_length(f, max_message_, total)) {
    rx_.mark_corrupted();
    return RecvResult::corrupted;
  }
  size = static_cast<std::size_t>(total);
  if (room < total) return RecvResult::too_small;
  std::byte* out = buffer.data() + offset;
  std::uint64_t got = f.length - sizeof(std::uint64_t);
  std::memcpy(out, f.data + sizeof(std::uint64_t), got);
  rx_.release(false);
  while (got < total) {
    r = next_fragment(f, got, total, deadline);
    if (r != RecvResult::ok) return r;
    std::memcpy(out + got, f.data, f.length);
    got += f.length;
    rx_.release(got == total);
  }
  return RecvResult::ok;
}

RecvResult Connection::recv_growing(void* out, std::byte* (*grow)(void*, std::size_t),
                                    std::size_t maxlength, const Deadline* deadline, bool wait) {
  detail::Frame f;
  RecvResult r = next_frame(f, deadline, wait);
  if (r != RecvResult::ok) return r;
  std::uint64_t total = 0;
  if (!message_length(f, max_message_, total)) {
    rx_.mark_corrupted();
    return RecvResult::corrupted;
  }
  if (total > maxlength) return RecvResult::too_large;
  if (!f.fragment) {
    std::byte* p = grow(out, f.length);
    if (f.length != 0) std::memcpy(p, f.data, f.length);
    rx_.release(true);
    return RecvResult::ok;
  }
  // The buffer grows with the bytes that actually arrive (amortised by the
  // container), never to the total a peer announces up front.
  std::uint64_t got = f.length - sizeof(std::uint64_t);
  try {
    std::memcpy(grow(out, static_cast<std::size_t>(got)), f.data + sizeof(std::uint64_t), got);
    rx_.release(false);
    while (got < total) {
      r = next_fragment(f, got, total, deadline);
      if (r != RecvResult::ok) return r;
      std::byte* p = grow(out, static_cast<std::size_t>(got + f.length));
      std::memcpy(p + got, f.data, f.length);
      got += f.length;
      rx_.release(got == total);
    }
  } catch (...) {
    rx_.mark_corrupted();  // part of a message was consumed: the rest would not parse
    throw;
  }
  return RecvResult::ok;
}

RecvResult Connection::recv_value(void* out, std::size_t size, const Deadline* deadline,
                                  bool wait) noexcept {
  detail::Frame f;
  RecvResult r = next_frame(f, deadline, wait);
  if (r != RecvResult::ok) return r;
  if (f.fragment || f.length != size) return RecvResult::size_mismatch;
  std::memcpy(out, f.data, size);
  rx_.release(true);
  return RecvResult::ok;
}

RecvResult Connection::recv_bytes(std::vector<std::byte>& out, std::size_t maxlength,
                                  const Deadline* deadline) {
  auto grow = [](void* v, std::size_t n) {
    auto& vec = *static_cast<std::vector<std::byte>*>(v);
    vec.resize(n);
    return vec.data();
  };
  return recv_growing(&out, grow, maxlength, deadline);
}

namespace {
std::byte* grow_string(void* v, std::size_t n) {
  auto& str = *static_cast<std::string*>(v);
  str.resize(n);
  return reinterpret_cast<std::byte*>(str.data());
}
}  // namespace

RecvResult Connection::recv(std::string& out, const Deadline* deadline) {
  return recv_growing(&out, grow_string, SIZE_MAX, deadline);
}

RecvResult Connection::try_recv(std::string& out) {
  return recv_growing(&out, grow_string, SIZE_MAX, nullptr, false);
}

void Connection::throw_unless_ok(RecvResult r, const char* what) const {
  switch (r) {
    case RecvResult::ok:
      return;
    case RecvResult::eof:
      throw Error(Errc::closed, name(), std::string(what) + ": end of file (peer closed)");
    case RecvResult::peer_dead:
      throw Error(Errc::peer_dead, name(), std::string(what) + ": end of file (peer died)");
    case RecvResult::too_large:
    case RecvResult::too_small:
    case RecvResult::size_mismatch:
      throw Error(Errc::too_large, name(), std::string(what) + ": " + std::string(to_string(r)));
    case RecvResult::closed:
      throw Error(Errc::closed, name(), std::string(what) + ": this end is closed");
    case RecvResult::corrupted:
      throw Error(Errc::corrupted, name(),
                  std::string(what) + ": a frame header failed validation");
    default:
      throw Error(Errc::system, name(), std::string(what) + ": " + std::string(to_string(r)));
  }
}

void Connection::throw_decode_error(std::string_view type) const {
  throw Error(Errc::decode_error, name(),
              "recv: expected " + std::string(type) + ": " + detail::last_decode_error());
}

RecvResult Connection::recv_message(std::span<const std::byte>& msg, bool& in_place,
                                    const Deadline* deadline, bool wait, Clock::duration grace) {
  detail::Frame f;
  const RecvResult r = next_frame(f, deadline, wait);
  if (r != RecvResult::ok) return r;
  if (!f.fragment) {
    msg = {f.data, f.length};
    in_place = true;
    return r;
  }
  Deadline bounded{};
  if (grace > Clock::duration::zero()) {
    bounded = Clock::now() + grace;
    if (deadline != nullptr) bounded = std::max(bounded, *deadline);
    deadline = &bounded;
  }
  thread_local std::vector<std::byte> gathered;
  const RecvResult g = recv_bytes(gathered, SIZE_MAX, deadline);
  if (g == RecvResult::ok) msg = gathered;
  in_place = false;
  return g;
}

std::vector<std::byte> Connection::recv_bytes(std::size_t maxlength) {
  std::vector<std::byte> out;
  throw_unless_ok(recv_bytes(out, maxlength, nullptr), "recv_bytes");
  return out;
}

std::string Connection::recv_string() {
  std::string out;
  throw_unless_ok(recv(out, nullptr), "recv_string");
  return out;
}

bool Connection::poll(std::chrono::nanoseconds timeout) noexcept {
  if (!can_recv_ || closed_ || !ensure_owner()) return false;
  if (peeked_ || rx_.has_data() || peer_closed()) return true;
  // A dead peer makes the end ready (recv() then drains and reports it).
  if (timeout <= std::chrono::nanoseconds::zero()) {
    if (peer_dead_by_now()) return true;
    if (fd_bridge_ != nullptr) [[unlikely]]
      rearm_fileno();
    return false;
  }
  if (peer_death_counted_) return true;
  const Deadline d = deadline_after(timeout);  // saturated: poll(nanoseconds::max()) waits
  return wait_data(&d) != WaitOutcome::timeout;
}

// --- fileno() ------------------------------------------------------------------------

namespace {
// FdBridge::Sleep::check for a pipe end: its peer closed or died.
bool peer_gone(const void* ctx) noexcept {
  const auto& line = *static_cast<const detail::PipeEndLine*>(ctx);
  // seq_cst: as peer_closed(); acquire for the owner: as peer_dead().
  if (line.closed.load(std::memory_order_seq_cst) != 0) return true;
  const std::uint64_t w = line.owner.load(std::memory_order_acquire);
  return w != 0 && !is_alive(ProcessId::unpack(w));
}
}  // namespace

int Connection::fileno() {
  if (!can_recv_ || closed_ || control_ == nullptr || !ensure_owner()) {
    throw Error(Errc::invalid_argument, control_ != nullptr ? name() : std::string("fileno"),
                "fileno: this end cannot receive here (closed, moved from, send-only, or "
                "another process's)");
  }
  // A forked child's copy belongs to the parent's thread: start afresh.
  if (fd_bridge_ == nullptr || !fd_bridge_->owned_here()) {
    fd_bridge_ = std::make_unique<detail::FdBridge>(name().c_str());
    rearm_fileno();
  }
  return fd_bridge_->fd();
}

void Connection::rearm_fileno() noexcept {
  detail::FdBridge& b = *fd_bridge_;
  if (!b.owned_here() || b.sleeping()) return;  // armed, nothing came yet
  b.clear();
  // [ring.sleep] mark the header word as a sleeping recv() does (the mark
  // and fence in this, the receiving, thread: the bridge thread never
  // touches the ring's consumer state), then the close check after it.
  if (peeked_ || !rx_.arm_sleep()) {
    b.signal();  // a frame is there
    return;
  }
  if (peer_closed()) {
    rx_.disarm_sleep();
    b.signal();
    return;
  }
  detail::FdBridge::Sleep s;
  s.word = {&rx_.sleep_word(), static_cast<std::uint32_t>(detail::kHeaderWaiting)};
  s.check = &peer_gone;
  s.ctx = &control_->ends[1 - end_];
  // A busy-poll sender never wakes anyone, and after an unordered arm (no
  // membarrier) a checked one may not: nap then, as recv() does.
  s.slice = rx_.fenced() && recv_policy_.strategy != WaitStrategy::busy_poll
                ? std::chrono::microseconds(kLivenessInterval)
                : detail::kUnfencedNap;
  b.sleep_on(s);
}

// --- waiting on several ends ------------------------------------------------------

namespace detail {
// What shmbus::wait() needs of a Connection's insides.
struct ConnectionWait {
  static bool can_wait(Connection& c) noexcept {
    return c.can_recv_ && !c.closed_ && c.control_ != nullptr && c.ensure_owner();
  }
  // What poll() checks: recv() would not wait.
  static bool ready(Connection& c) noexcept {
    return c.peeked_ || c.rx_.has_data() || c.peer_closed();
  }
  static bool peer_dead(Connection& c) noexcept { return c.peer_dead(); }
  static bool peer_closed(const Connection& c) noexcept { return c.peer_closed(); }
  static RingConsumer& ring(Connection& c) noexcept { return c.rx_; }
  static WaitStrategy strategy(const Connection& c) noexcept { return c.recv_policy_.strategy; }
};
}  // namespace detail

std::vector<Connection*> wait(std::span<Connection* const> ends,
                              std::optional<Clock::duration> timeout) {
  std::vector<Connection*> ready;
  wait(ends, ready, timeout);
  return ready;
}

void wait(std::span<Connection* const> ends, std::vector<Connection*>& out,
          std::optional<Clock::duration> timeout) {
  using W = detail::ConnectionWait;
  out.clear();
  if (ends.size() > detail::kMaxFutexWaiters) {
    throw Error(
        Errc::invalid_argument, "wait",
        std::to_string(ends.size()) + " ends, at most " + std::to_string(detail::kMaxFutexWaiters));
  }
  bool any_busy = false;
  bool any_blocking = false;
  for (Connection* c : ends) {
    if (c == nullptr || !W::can_wait(*c)) {
      throw Error(Errc::invalid_argument, c != nullptr ? c->name() : std::string("wait"),
                  "cannot receive here (closed, moved from, a send-only end, or another "
                  "process's)");
    }
    any_busy = any_busy || W::strategy(*c) == WaitStrategy::busy_poll;
    any_blocking = any_blocking || W::strategy(*c) == WaitStrategy::blocking;
  }
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = detail::deadline_from(start, timeout);
  if (ends.empty()) {  // as Python's wait([], timeout): a sleep
    if (!timeout) throw Error(Errc::invalid_argument, "wait", "no ends and no timeout");
    std::this_thread::sleep_until(deadline);
    return;
  }
  const auto collect = [&](bool with_dead) {
    for (Connection* c : ends) {
      if (W::ready(*c) || (with_dead && W::peer_dead(*c))) out.push_back(c);
    }
    return !out.empty();
  };
  if (collect(false)) return;
  Clock::time_point next_check = start + kLivenessInterval;
  // Spin as the ends would (see wait_loop()); a busy-poll end's sender
  // wakes nobody, so with one in the set spin until the deadline.
  if (!any_blocking || any_busy) {
    const auto spin = WaitPolicy{}.spin;
    for (unsigned i = 1;; ++i) {
      detail::cpu_relax();
      if (collect(false)) return;
      if ((i & 255) != 0) continue;
      const auto now = Clock::now();
      if (now >= deadline) return;
      if (!any_busy && now - start >= spin) break;
      if (now >= next_check) {
        next_check = now + kLivenessInterval;
        if (collect(true)) return;
      }
    }
  }
  // Sleep on every ring's header word at once ([ring.sleep], as recv()'s
  // sleep arms one), in slices that end for the liveness check; two ends
  // or more on the thread's wake slot instead, which their senders wake
  // ([ring.redirect], as shmbus::wait() over Waitables).
  std::array<detail::FutexWaiter, detail::kMaxFutexWaiters> words{};
  const detail::ThreadWakeSlot slot =
      ends.size() >= 2 ? detail::this_thread_wake_slot() : detail::ThreadWakeSlot{};
  std::size_t armed = 0;   // ends marked in this pass (ends[0, armed))
  std::size_t marked = 0;  // ends marked in any pass: all are disarmed at the end
  for (;;) {
    // Mark every ring, then one heavy fence for all that need one
    // (arm_sleep() in two steps; re-marking a marked word needs none).
    bool all_armed = true;
    bool fence = false;
    armed = 0;
    // [ring.redirect] seq_cst: read before the marks below; pairs with the
    // fetch_add in wake_slot().
    if (slot.id != 0) words[0] = {slot.word, slot.word->load(std::memory_order_seq_cst)};
    for (Connection* c : ends) {
      auto& ring = W::ring(*c);
      if (!ring.mark_asleep(slot.id)) {
        all_armed = false;  // a frame is there
        break;
      }
      if (slot.id == 0) {
        words[armed] = {&ring.sleep_word(), static_cast<std::uint32_t>(detail::kHeaderWaiting)};
      }
      ++armed;
      marked = std::max(marked, armed);
      fence = ring.needs_fence() || fence;
    }
    if (all_armed && fence) {
      const bool done = detail::asymmetric_heavy_fence();
      for (std::size_t i = 0; i < armed; ++i) {
        if (W::ring(*ends[i]).needs_fence()) W::ring(*ends[i]).order_sleep(done);
      }
    }
    bool fenced = true;
    for (std::size_t i = 0; all_armed && i < armed; ++i) {
      fenced = fenced && W::ring(*ends[i]).fenced();
      // seq_cst, after the mark: pairs with the closer's store and wake.
      if (W::peer_closed(*ends[i])) all_armed = false;
      // [fence.asym] The check after the heavy fence: a checked producer's
      // header store that the fence ordered is seen here (has_data's
      // seq_cst load). Sleeping on ring words, futex_waitv's compare of
      // each word is that check; on the slot word nothing reads the
      // headers, so read them here.
      if (slot.id != 0 && W::ring(*ends[i]).has_data()) all_armed = false;
    }
    bool missed = false;
    if (all_armed) {
      const auto now = Clock::now();
      Clock::time_point slice = std::min(deadline, now + kLivenessInterval);
      if (!fenced) slice = std::min(slice, now + detail::kUnfencedNap);
      detail::fault_point(detail::FaultPoint::sleeper_counted);
      const detail::FutexResult r =
          detail::futex_wait_any({words.data(), slot.id != 0 ? 1 : armed}, &slice);
      missed = r == detail::FutexResult::timed_out && fenced && slice != deadline;
    }
    // An end ready although the sleep ran to its slice's end: its sender's
    // wake-up never came (detail::pipe_missed_wakeups(), as WaitAny::full
    // counts). On the slot word: the sender woke another table's slot or
    // none; stop redirecting in this process (detail/wake_slot.hpp).
    for (std::size_t i = 0; missed && i < armed; ++i) {
      if (W::ready(*ends[i])) {
        detail::count_missed_wakeup();
        if (slot.id != 0 && detail::slot_never_woken(words[0])) detail::stop_redirecting();
        missed = false;
      }
    }
    if (collect(false)) break;
    const auto now = Clock::now();
    if (now >= deadline) break;
    if (now >= next_check) {
      next_check = now + kLivenessInterval;
      if (collect(true)) break;
    }
  }
  // Every end marked in any pass, not only in the last (which may have
  // stopped early at a frame): a mark left behind would make its sender
  // wake our slot (or word) for nobody.
  for (std::size_t i = 0; i < marked; ++i) W::ring(*ends[i]).disarm_sleep();
}

RecvResult Connection::peek(std::span<const std::byte>& out, const Deadline* deadline) noexcept {
  detail::Frame f;
  RecvResult r = next_frame(f, deadline, true);
  if (r != RecvResult::ok) return r;
  if (f.fragment) return RecvResult::too_large;
  out = {f.data, f.length};
  peeked_ = true;
  update_fast();
  return RecvResult::ok;
}

void Connection::release() noexcept {
  if (!peeked_) return;
  peeked_ = false;
  update_fast();
  rx_.release(true);
}

// --- statistics ------------------------------------------------------------------

PipeStats pipe_stats(const SegmentView& view) {
  const auto& info = view.info();
  if (info.kind != ObjectKind::pipe) {
    throw Error(Errc::wrong_kind, info.name, "not a pipe");
  }
  auto payload = view.payload();
  if (payload.size() < detail::kPipeControlSize) {
    throw Error(Errc::corrupted, info.name, "pipe payload smaller than its control block");
  }
  const auto* c = reinterpret_cast<const PipeControl*>(payload.data());
  const detail::PipeConfig k = copy_config(*c);  // read once: see copy_config()
  validate_config(info.name, k, payload.size());
  PipeStats s;
  s.duplex = k.duplex != 0;
  s.statistics = (k.flags & detail::kPipeNoStatistics) == 0;
  s.max_message = k.max_message;
  s.strategy = static_cast<WaitStrategy>(k.strategy);
  for (int r = 0; r < (s.duplex ? 2 : 1); ++r) {
    const auto& ring = c->rings[r];
    auto& o = s.rings[static_cast<std::size_t>(r)];
    // relaxed (all below): counters for display; no data is read through them.
    o.capacity = k.capacity;
    o.messages_sent = ring.producer.messages_sent.load(std::memory_order_relaxed);
    o.bytes_sent = ring.producer.bytes_sent.load(std::memory_order_relaxed);
    o.blocked_sends = ring.producer.blocked_sends.load(std::memory_order_relaxed);
    o.messages_received = ring.consumer.messages_received.load(std::memory_order_relaxed);
    o.bytes_received = ring.consumer.bytes_received.load(std::memory_order_relaxed);
    o.blocked_recvs = ring.consumer.blocked_recvs.load(std::memory_order_relaxed);
    std::uint64_t wp = ring.producer.write_pos.load(std::memory_order_relaxed);
    // [ring.stats] the sender publishes every stats_interval() bytes; the
    // frames it wrote since are counted from their headers.
    const std::byte* data =
        payload.data() + detail::kPipeControlSize + k.capacity * static_cast<std::uint64_t>(r);
    const detail::RingTail tail =
        detail::ring_tail(data, k.capacity, wp, detail::stats_interval(k.capacity) + 64);
    wp = tail.pos;
    if (s.statistics) {
      o.messages_sent += tail.messages;
      o.bytes_sent += tail.bytes;
    }
    const std::uint64_t rp = ring.consumer.read_pos.load(std::memory_order_relaxed);
    o.depth_bytes = wp >= rp ? std::min<std::uint64_t>(wp - rp, o.capacity) : 0;
  }
  for (int e = 0; e < 2; ++e) {
    auto& o = s.ends[static_cast<std::size_t>(e)];
    const auto& line = c->ends[e];
    // relaxed: identities and flags for display only.
    const std::uint64_t w = line.owner.load(std::memory_order_relaxed);
    o.owner = ProcessId::unpack(w);
    o.owner_alive = w != 0 && is_alive(o.owner);
    o.closed = line.closed.load(std::memory_order_relaxed) != 0;
    o.peer_deaths = line.peer_deaths.load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace shmbus
