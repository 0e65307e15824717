// Topic: one publisher, many subscribers over a ring of seqlocked slots.
// The format and its invariants are in detail/topic_format.hpp.
//
// [topic.seqlock] The publisher writes message s into its slot as: seq =
// writing(s) (relaxed), a release fence, the bytes and the length, seq =
// done(s) (release). A subscriber loads seq (acquire) == done(r), copies,
// an acquire fence, then loads seq again (relaxed): equal means the copy
// is whole. The fences are the C++ model's seqlock (Boehm, "Can seqlocks
// get along with programming language memory models?", 2012): if the
// copy saw any byte of a later message, the writer's release fence
// synchronises with the reader's acquire fence, so the re-load sees
// writing() or later and the copy is discarded. The payload bytes are
// plain memory (as every seqlock's that copies with memcpy); on x86-64
// both fences compile to nothing but a compiler barrier, so the hot paths
// cost what they did.
#include "shmbus/topic.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/spsc_ring.hpp"
#include "shmbus/error.hpp"

namespace shmbus {

namespace detail {
std::atomic<std::uint64_t> g_topic_fork_epoch{0};
}  // namespace detail

namespace {

using detail::TopicControl;
using detail::TopicPolicy;
using detail::TopicSubscriberLine;

// How often a waiter checks a peer's liveness (a /proc read).
constexpr auto kLivenessInterval = std::chrono::milliseconds(10);
// An owner word a publisher writes while it evicts a dead subscriber: no
// claimer takes a record holding it.
constexpr std::uint64_t kEvicting = ~std::uint64_t{0};

// [detail::g_topic_fork_epoch] In a child a handle was inherited and
// takes its role over on first use; in a parent, close() leaves alone a
// handle not used since a fork (a child may hold its role now).
void on_fork() noexcept {
  // relaxed: each process reads only its own copy.
  detail::g_topic_fork_epoch.fetch_add(1, std::memory_order_relaxed);
}
void register_atfork() {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(nullptr, on_fork, on_fork); });
}
std::uint64_t fork_epoch() noexcept { return detail::topic_fork_epoch(); }

// A handle's first use after a fork ([topic.owner] / [topic.sub]): in a
// parent whose process still holds the role, it stays; in the child, the
// role word passes from the parent's word (`held`) to this process with a
// CAS (also from 0 when `take_free`). False when another process holds it.
bool take_role(std::atomic<std::uint64_t>& owner, std::uint64_t& held, std::uint64_t& epoch,
               detail::Segment& segment, bool take_free) noexcept {
  const std::uint64_t me = this_process().pack();
  // acquire: pairs with the CAS of whoever took the role.
  std::uint64_t cur = owner.load(std::memory_order_acquire);
  while (cur != me) {
    if (cur != held && !(take_free && cur == 0)) return false;
    // acq_rel: one taker; pairs with the acquire loads of liveness checks.
    if (owner.compare_exchange_weak(cur, me, std::memory_order_acq_rel)) {
      try {
        segment.attach();  // count this process in the segment's table
      } catch (...) {      // a full table only affects the resource tracker
      }
      break;
    }
  }
  held = me;
  epoch = fork_epoch();
  return true;
}

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

detail::TopicConfig config_of(std::string_view name, const TopicOptions& o) {
  auto bad = [&](const std::string& what) {
    throw Error(Errc::invalid_argument, std::string(name), what);
  };
  if (!is_pow2(o.slots) || o.slots < 2 || o.slots > detail::kTopicMaxSlots)
    bad("slots " + std::to_string(o.slots) + " is not a power of two in 2 .. 2^24");
  if (o.max_message == 0 || o.max_message > detail::kTopicMaxMessage)
    bad("max_message " + std::to_string(o.max_message) + " is not in 1 .. 16 MiB");
  if (o.history > o.slots)
    bad("history " + std::to_string(o.history) + " exceeds slots " + std::to_string(o.slots));
  if (o.max_subscribers == 0 || o.max_subscribers > detail::kTopicMaxSubscribers)
    bad("max_subscribers " + std::to_string(o.max_subscribers) + " is not in 1 .. 1024");
  if (static_cast<unsigned>(o.wait.strategy) > 2 || o.wait.spin.count() < 0) bad("bad wait policy");
  detail::TopicConfig k{};
  k.format = detail::kTopicFormat;
  k.slots = o.slots;
  k.max_message = o.max_message;
  k.slot_stride = detail::topic_slot_stride(o.max_message);
  k.history = o.history == 0 ? o.slots : o.history;
  k.max_subscribers = o.max_subscribers;
  k.strategy = static_cast<std::uint32_t>(o.wait.strategy);
  k.spin_ns = static_cast<std::uint64_t>(o.wait.spin.count());
  if (detail::topic_payload_size(k) > (std::uint64_t{1} << 40)) bad("ring larger than 1 TiB");
  return k;
}

// Checks a private copy of a topic's config (untrusted bytes), read once
// so that a peer rewriting it later cannot change this process's geometry.
detail::TopicConfig checked_config(const std::string& name, std::span<const std::byte> payload) {
  auto bad = [&](const std::string& what) { throw Error(Errc::corrupted, name, "topic " + what); };
  if (payload.size() < sizeof(TopicControl)) bad("payload smaller than its control block");
  detail::TopicConfig k;
  std::memcpy(&k, payload.data(), sizeof k);
  if (k.format != detail::kTopicFormat) {
    throw Error(Errc::wrong_version, name,
                "topic format " + std::to_string(k.format) + ", expected " +
                    std::to_string(detail::kTopicFormat));
  }
  if (!is_pow2(k.slots) || k.slots < 2 || k.slots > detail::kTopicMaxSlots)
    bad("slots " + std::to_string(k.slots));
  if (k.max_message == 0 || k.max_message > detail::kTopicMaxMessage)
    bad("max_message " + std::to_string(k.max_message));
  if (k.slot_stride != detail::topic_slot_stride(k.max_message))
    bad("slot stride " + std::to_string(k.slot_stride));
  if (k.history > k.slots) bad("history " + std::to_string(k.history));
  if (k.max_subscribers == 0 || k.max_subscribers > detail::kTopicMaxSubscribers)
    bad("max_subscribers " + std::to_string(k.max_subscribers));
  if (k.strategy > 2) bad("wait strategy " + std::to_string(k.strategy));
  if (k.spin_ns > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    bad("spin budget");
  if (payload.size() != detail::topic_payload_size(k))
    bad("payload size " + std::to_string(payload.size()) + " does not match its ring");
  return k;
}

WaitPolicy policy_of(const detail::TopicConfig& k) noexcept {
  return WaitPolicy{static_cast<WaitStrategy>(k.strategy),
                    std::chrono::nanoseconds(static_cast<std::int64_t>(k.spin_ns))};
}

// A record whose position may hold the publisher back: reliable and held.
bool holds_back(const TopicSubscriberLine& l) noexcept {
  // [topic.join] seq_cst: pairs with the subscriber's policy exchange.
  if (l.policy.load(std::memory_order_seq_cst) != static_cast<std::uint32_t>(TopicPolicy::reliable))
    return false;
  // [topic.sub] acquire: pairs with the record's claim.
  const std::uint64_t o = l.owner.load(std::memory_order_acquire);
  return o != 0 && o != kEvicting;
}

// [topic.reliable] Calls f(i) for each record i < n marked in the
// reliable set, in index order, until f returns false (then false). The
// seq_cst loads pair with a joiner's seq_cst mark (see Topic::subscribe()).
// Bits from n on (untrusted memory) are ignored.
template <class F>
bool for_each_marked(const detail::TopicReliableSet& set, std::uint32_t n, F&& f) noexcept {
  for (std::uint32_t w = 0; w * 64 < n; ++w) {
    std::uint64_t bits = set.words[w].load(std::memory_order_seq_cst);
    if (n - w * 64 < 64) bits &= (std::uint64_t{1} << (n - w * 64)) - 1;
    for (; bits != 0; bits &= bits - 1) {
      if (!f(w * 64 + static_cast<std::uint32_t>(std::countr_zero(bits)))) return false;
    }
  }
  return true;
}
// [topic.reliable] seq_cst: marked before the record's policy becomes
// reliable (the join handshake's first step, see Topic::subscribe()).
void mark_reliable(TopicControl& c, std::uint32_t i) noexcept {
  (void)c.reliable.words[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_seq_cst);
}
// [topic.reliable] seq_cst: after the record's policy stopped being
// reliable, before its owner word is given back. An RMW even when the bit
// looks clear: a plain load need not see a dead predecessor's mark (its
// fetch_or does not happen before our claim of its record).
void unmark_reliable(TopicControl& c, std::uint32_t i) noexcept {
  (void)c.reliable.words[i / 64].fetch_and(~(std::uint64_t{1} << (i % 64)),
                                           std::memory_order_seq_cst);
}

TopicSubscriberLine* subscriber_lines(std::byte* payload) noexcept {
  return reinterpret_cast<TopicSubscriberLine*>(payload + sizeof(TopicControl));
}

}  // namespace

std::string_view to_string(PublishResult r) noexcept {
  switch (r) {
    case PublishResult::ok:
      return "ok";
    case PublishResult::full:
      return "full";
    case PublishResult::timeout:
      return "timeout";
    case PublishResult::too_large:
      return "too_large";
    case PublishResult::closed:
      return "closed";
    case PublishResult::corrupted:
      return "corrupted";
  }
  return "unknown";
}

std::string_view to_string(ReceiveResult r) noexcept {
  switch (r) {
    case ReceiveResult::ok:
      return "ok";
    case ReceiveResult::empty:
      return "empty";
    case ReceiveResult::timeout:
      return "timeout";
    case ReceiveResult::eof:
      return "eof";
    case ReceiveResult::publisher_dead:
      return "publisher_dead";
    case ReceiveResult::too_small:
      return "too_small";
    case ReceiveResult::size_mismatch:
      return "size_mismatch";
    case ReceiveResult::evicted:
      return "evicted";
    case ReceiveResult::closed:
      return "closed";
    case ReceiveResult::corrupted:
      return "corrupted";
    case ReceiveResult::decode_error:
      return "decode_error";
  }
  return "unknown";
}

std::string_view to_string(SubscriberPolicy p) noexcept {
  return p == SubscriberPolicy::reliable ? "reliable" : "lossy";
}

// --- Topic -------------------------------------------------------------------

Topic Topic::create_tagged(std::string_view name, const TopicOptions& options,
                           detail::TypeTag type) {
  register_atfork();
  const detail::TopicConfig k = config_of(name, options);
  auto init = [&](std::span<std::byte> payload) {
    auto* c = new (payload.data()) TopicControl{};
    c->config = k;
    for (std::uint32_t i = 0; i < k.max_subscribers; ++i)
      new (payload.data() + sizeof(TopicControl) + std::size_t{i} * 64) TopicSubscriberLine{};
  };
  auto seg = std::make_shared<detail::Segment>(detail::Segment::create(
      name, ObjectKind::topic, type, detail::topic_payload_size(k), init, options.segment));
  return Topic(std::move(seg), k);
}

Topic Topic::open_tagged(std::string_view name, const SegmentOptions& options,
                         detail::TypeTag type) {
  register_atfork();
  auto seg = std::make_shared<detail::Segment>(
      detail::Segment::open(name, ObjectKind::topic, type, options));
  const detail::TopicConfig k = checked_config(std::string(name), seg->payload_span());
  return Topic(std::move(seg), k);
}

bool Topic::unlink(std::string_view name) { return detail::Segment::unlink(name); }

const std::string& Topic::name() const noexcept {
  static const std::string none;
  return segment_ ? segment_->name() : none;
}

Publisher Topic::publisher() {
  if (!segment_) throw Error(Errc::closed, "", "topic handle is empty");
  auto* c = reinterpret_cast<TopicControl*>(segment_->payload());
  const std::uint64_t me = this_process().pack();
  auto& owner = c->publisher.owner;
  // [topic.owner] acquire: pairs with the CAS of whoever holds the role.
  std::uint64_t cur = owner.load(std::memory_order_acquire);
  for (;;) {
    const bool dead = cur != 0 && cur != me && !is_alive(ProcessId::unpack(cur));
    if (cur != 0 && !dead) {
      const ProcessId holder = ProcessId::unpack(cur);
      throw Error(Errc::already_exists, name(),
                  "topic already has a live publisher (pid " + std::to_string(holder.pid) +
                      "); one publisher at a time keeps publish free of atomic "
                      "read-modify-writes and gives every subscriber one order");
    }
    // [topic.owner] acq_rel: takes the role once; a dead holder's word is
    // replaced only by the taker whose CAS finds it.
    if (owner.compare_exchange_strong(cur, me, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      if (dead) {
        // relaxed: a statistic written by the role's holder only.
        c->publisher.takeovers.fetch_add(1, std::memory_order_relaxed);
      }
      break;
    }
  }
  return Publisher(segment_, config_);
}

Subscriber Topic::subscribe(const SubscribeOptions& options) {
  if (!segment_) throw Error(Errc::closed, "", "topic handle is empty");
  if (options.history > config_.history) {
    throw Error(Errc::invalid_argument, name(),
                "history " + std::to_string(options.history) + " exceeds the topic's history " +
                    std::to_string(config_.history));
  }
  auto* c = reinterpret_cast<TopicControl*>(segment_->payload());
  TopicSubscriberLine* lines = subscriber_lines(segment_->payload());
  const std::uint64_t me = this_process().pack();
  std::uint32_t index = config_.max_subscribers;
  // Two passes: free records first, then records of dead processes.
  for (int pass = 0; pass < 2 && index == config_.max_subscribers; ++pass) {
    for (std::uint32_t i = 0; i < config_.max_subscribers; ++i) {
      auto& o = lines[i].owner;
      // [topic.sub] acquire: pairs with the claim/close of the record.
      std::uint64_t cur = o.load(std::memory_order_acquire);
      if (cur == kEvicting) continue;
      if (pass == 0 ? cur != 0 : (cur == 0 || is_alive(ProcessId::unpack(cur)))) continue;
      // [topic.sub] acq_rel: one claimer per record.
      if (o.compare_exchange_strong(cur, me, std::memory_order_acq_rel)) {
        index = i;
        break;
      }
    }
  }
  if (index == config_.max_subscribers) {
    throw Error(Errc::attach_table_full, name(),
                "subscriber table full: all " + std::to_string(config_.max_subscribers) +
                    " records (TopicOptions::max_subscribers) hold live subscribers");
  }
  auto& line = lines[index];
  // [topic.join] acquire: the position to start from, before we are seen.
  const std::uint64_t w1 = c->publisher.write_seq.load(std::memory_order_acquire);
  const std::uint64_t start = w1 >= options.history ? w1 - options.history : 0;
  // relaxed (these stores): made visible by the policy exchange below.
  line.read_seq.store(start, std::memory_order_relaxed);
  line.evicted.store(0, std::memory_order_relaxed);
  line.received.store(0, std::memory_order_relaxed);
  line.lapped.store(0, std::memory_order_relaxed);
  line.missed.store(0, std::memory_order_relaxed);
  const bool reliable = options.policy == SubscriberPolicy::reliable;
  const auto pol = reliable ? TopicPolicy::reliable : TopicPolicy::lossy;
  // [topic.reliable] marked before the policy says reliable (seq_cst, as
  // the exchange below): a publisher scans only marked records.
  if (reliable) mark_reliable(*c, index);
  detail::fault_point(detail::FaultPoint::subscribe_claimed);
  // [topic.join] seq_cst exchange, then a seq_cst load of write_seq: pairs
  // with the publisher's seq_cst exchange of write_seq before it scans.
  // Either its scan sees this record (its mark, then its policy), or our
  // load sees a write_seq at least the one its scan used, and it
  // overwrites nothing from there on.
  (void)line.policy.exchange(static_cast<std::uint32_t>(pol), std::memory_order_seq_cst);
  // A dead predecessor's mark (its record was reliable), now that the
  // policy is not.
  if (!reliable) unmark_reliable(*c, index);
  const std::uint64_t joined =
      std::max(start, c->publisher.write_seq.load(std::memory_order_seq_cst));
  line.joined_at.store(joined, std::memory_order_relaxed);  // relaxed: for inspection
  // Without history the stream starts where it is owed: what was published
  // between our two loads is neither delivered nor counted.
  const std::uint64_t first = options.history == 0 ? joined : start;
  if (first != start) {
    // The record must say where we start: the publisher counts a reliable
    // record from the exchange above, and a read_seq left at `start` would
    // hold it back for messages we never read. When it published a ring's
    // worth between our two loads of write_seq, it would wait for us while
    // we wait for message `joined` (the TSan-only hang of issue 19: the
    // subscriber's wait publishes its position only when it moved).
    // [topic.consume] seq_cst: as publish_read(); precedes notify()'s
    // load of sleepers ([wait.sleepers]).
    line.read_seq.store(first, std::memory_order_seq_cst);
    detail::notify(c->wake.space);
  }
  return Subscriber(segment_, config_, index, options.policy, first, joined);
}

// --- Publisher ---------------------------------------------------------------

Publisher::Publisher(std::shared_ptr<detail::Segment> segment, const detail::TopicConfig& k)
    : segment_(std::move(segment)) {
  control_ = reinterpret_cast<TopicControl*>(segment_->payload());
  subs_ = subscriber_lines(segment_->payload());
  slots_ = segment_->payload() + detail::topic_slots_offset(k.max_subscribers);
  mask_ = k.slots - 1;
  stride_ = k.slot_stride;
  max_message_ = k.max_message;
  max_subscribers_ = k.max_subscribers;
  policy_ = policy_of(k);
  owner_word_ = this_process().pack();
  fork_epoch_ = fork_epoch();
  // relaxed: the role is ours (taken by the CAS in Topic::publisher()).
  pos_ = control_->publisher.write_seq.load(std::memory_order_relaxed);
  // A predecessor may have died between publishing a slot (done) and
  // advancing write_seq: move past what it committed.
  for (std::uint64_t i = 0; i <= mask_; ++i) {
    // acquire: pairs with the predecessor's [topic.seqlock] release.
    if (slot_at(pos_).seq.load(std::memory_order_acquire) != detail::topic_done(pos_)) break;
    ++pos_;
  }
  control_->publisher.write_seq.store(pos_, std::memory_order_release);  // [topic.join]
  // [topic.closed] seq_cst: a new publisher reopens the stream.
  control_->publisher.closed.store(0, std::memory_order_seq_cst);
  // [topic.ask] relaxed: as in ask_room(); a predecessor that asked and
  // died (or an older build's count) asks nothing of this publisher.
  control_->wake.room_asked.store(0, std::memory_order_relaxed);
  (void)scan();
  update_fast();
}

Publisher& Publisher::operator=(Publisher&& o) noexcept {
  if (this != &o) {
    close();
    std::destroy_at(this);
    std::construct_at(this, std::move(o));
  }
  return *this;
}

Publisher::~Publisher() { close(); }

bool Publisher::take_over() noexcept {
  // The role passes from a parent to the forked child that uses it (or a
  // free role is taken back).
  return take_role(control_->publisher.owner, owner_word_, fork_epoch_, *segment_, true);
}

bool Publisher::scan() noexcept {
  // [topic.join] seq_cst exchange of our own word: the publisher's side of
  // the join handshake (see Topic::subscribe()).
  (void)control_->publisher.write_seq.exchange(pos_, std::memory_order_seq_cst);
  std::uint64_t min = pos_;
  bool stale = false;
  // [topic.reliable] only the marked records: with no reliable subscriber
  // a full ring reads no subscriber's line (a word or two of marks).
  (void)for_each_marked(control_->reliable, max_subscribers_, [&](std::uint32_t i) {
    auto& l = subs_[i];
    if (!holds_back(l)) {
      stale = true;  // a join or close under way, or a dead one's mark
      return true;
    }
    // [topic.consume] seq_cst: pairs with the subscriber's store of its
    // position before notify(space) ([wait.sleepers]).
    const std::uint64_t r = l.read_seq.load(std::memory_order_seq_cst);
    if (r > pos_) return true;  // untrusted: a position ahead of us holds nothing back
    // A position more than a ring behind waits for the subscriber to skip.
    min = std::min(min, std::max(r, pos_ - std::min<std::uint64_t>(pos_, mask_ + 1)));
    return true;
  });
  cached_min_ = min;
  if (stale) [[unlikely]]
    free_stale_marks();
  const bool room = pos_ < cached_min_ + mask_ + 1;
  if (room && asking_) [[unlikely]] {
    asking_ = false;
    // [topic.ask] relaxed: as in ask_room(); the episode is over.
    control_->wake.room_asked.store(0, std::memory_order_relaxed);
  }
  return room;
}

void Publisher::free_stale_marks() noexcept {
  // A mark on a record that is not reliable: a live subscriber between its
  // mark and its policy (it goes on), or one killed there, whose record
  // evict_dead() frees. Checked once a liveness interval (a /proc read).
  const std::int64_t now = now_ns();
  if (now < next_mark_check_ns_) return;
  next_mark_check_ns_ = now + std::chrono::nanoseconds(kLivenessInterval).count();
  (void)evict_dead();
}

bool Publisher::evict_dead() noexcept {
  bool any = false;
  // [topic.reliable] every reliable record is marked; a marked record of a
  // dead owner is freed whatever its policy (killed mid-join or mid-close).
  (void)for_each_marked(control_->reliable, max_subscribers_, [&](std::uint32_t i) {
    auto& l = subs_[i];
    // [topic.sub] acquire: see scan().
    std::uint64_t o = l.owner.load(std::memory_order_acquire);
    if (o == 0 || o == kEvicting || is_alive(ProcessId::unpack(o))) return true;
    // [topic.evict] acq_rel: only one evicter (or a claimer of the dead
    // record) wins the word.
    if (!l.owner.compare_exchange_strong(o, kEvicting, std::memory_order_acq_rel)) return true;
    // [topic.join] seq_cst: not reliable before the mark goes.
    const bool was_reliable = l.policy.exchange(static_cast<std::uint32_t>(TopicPolicy::free),
                                                std::memory_order_seq_cst) ==
                              static_cast<std::uint32_t>(TopicPolicy::reliable);
    unmark_reliable(*control_, i);
    if (was_reliable) {
      l.evicted.store(1, std::memory_order_relaxed);  // relaxed: for inspection
      // relaxed: a statistic of the role's holder.
      control_->publisher.evictions.fetch_add(1, std::memory_order_relaxed);
    }
    // [topic.sub] release: the record is free again, cleared.
    l.owner.store(0, std::memory_order_release);
    any = true;
    return true;
  });
  return any;
}

void Publisher::ask_room() noexcept {
  if (asking_) return;  // one store per episode, not one per try
  asking_ = true;
  // [topic.ask] relaxed: only the publisher role writes it; a hint that
  // subscribers read relaxed (the data is ordered by [topic.consume]).
  control_->wake.room_asked.store(1, std::memory_order_relaxed);
}

PublishResult Publisher::wait_room(const Clock::time_point* deadline) noexcept {
  // relaxed: a statistic of the role's holder.
  control_->publisher.blocked.fetch_add(1, std::memory_order_relaxed);
  std::int64_t next_check = now_ns() + std::chrono::nanoseconds(kLivenessInterval).count();
  const auto spin_start = Clock::now();
  for (;;) {
    if (scan()) return PublishResult::ok;
    const auto now = Clock::now();
    if (deadline != nullptr && now >= *deadline) {
      ask_room();  // the caller's next try finds what was read meanwhile
      return PublishResult::timeout;
    }
    if (now_ns() >= next_check) {
      if (evict_dead()) continue;
      ask_room();  // a long wait: each message read is room from now on
      next_check = now_ns() + std::chrono::nanoseconds(kLivenessInterval).count();
    }
    const bool spin =
        policy_.strategy == WaitStrategy::busy_poll ||
        (policy_.strategy == WaitStrategy::adaptive && now - spin_start < policy_.spin);
    if (spin) {
      for (int k = 0; k < 64; ++k) detail::cpu_relax();
      continue;
    }
    // Sleep until the slowest reliable subscriber has freed a quarter of
    // the ring ([topic.room]), or one slot once we asked for room (the
    // subscribers then hand back each message: [topic.ask]), at most a
    // liveness slice (a dead one never notifies). seq_cst: stored before
    // sleep_until() counts us among the sleepers, so a subscriber that
    // sees us counted sees this need.
    control_->wake.room_needed.store(pos_ - mask_ + (asking_ ? 0 : (mask_ + 1) / 4),
                                     std::memory_order_seq_cst);
    Clock::time_point until = now + kLivenessInterval;
    if (deadline != nullptr && *deadline < until) until = *deadline;
    (void)detail::sleep_until(
        control_->wake.space, [&] { return scan(); }, &until, [] {});
  }
}

PublishResult Publisher::acquire(std::size_t n, const Clock::time_point* deadline, bool try_only,
                                 std::byte*& p) noexcept {
  if (control_ == nullptr) return last_error_ = PublishResult::closed;
  if (corrupted_) [[unlikely]]
    return last_error_ = PublishResult::corrupted;
  if (n > max_message_) return last_error_ = PublishResult::too_large;
  if (fork_epoch_ != fork_epoch()) [[unlikely]] {
    if (!take_over()) return last_error_ = PublishResult::closed;
  }
  if (!has_loan_) {
    if (pos_ >= cached_min_ + mask_ + 1 && !scan()) [[unlikely]] {
      if (try_only) {
        ask_room();  // the caller's next try finds what was read meanwhile
        return last_error_ = PublishResult::full;
      }
      if (const PublishResult r = wait_room(deadline); r != PublishResult::ok)
        return last_error_ = r;
    }
    auto& slot = slot_at(pos_);
    // [topic.seqlock] relaxed, then a release fence: writing() is ordered
    // before every byte written below; pairs with the acquire fence in
    // Subscriber::intact().
    slot.seq.store(detail::topic_writing(pos_), std::memory_order_relaxed);
    detail::topic_seqlock_release_fence();
    has_loan_ = true;
    update_fast();
  }
  loaned_ = n;
  p = reinterpret_cast<std::byte*>(&slot_at(pos_)) + detail::kTopicSlotHeader;
  return PublishResult::ok;
}

PublishResult Publisher::commit() noexcept {
  if (control_ == nullptr || !has_loan_) return last_error_ = PublishResult::closed;
  auto& slot = slot_at(pos_);
  // relaxed: published by the release store of seq below.
  slot.length.store(loaned_, std::memory_order_relaxed);
  // [topic.seqlock] release: the bytes and length become visible with
  // done(pos); pairs with the subscriber's acquire in state().
  slot.seq.store(detail::topic_done(pos_), std::memory_order_release);
  has_loan_ = false;
  update_fast();
  ++pos_;
  publish_position();
  return PublishResult::ok;
}

void Publisher::wake_generation(std::uint64_t w) noexcept {
  auto& word = control_->wake.data;
  // [topic.wake] seq_cst exchange: the next generation, count 0. A joiner
  // that raced with it sleeps on a generation that is over (its futex_wait
  // fails) or is queued already and woken below: one call for all of them.
  (void)word.exchange(detail::topic_generation(w) + std::uint64_t{1}, std::memory_order_seq_cst);
  (void)detail::futex_wake(word);  // shared futex (low half): the word is in a shared segment
}

PublishResult Publisher::copy_in(std::span<const std::byte> msg, const Clock::time_point* deadline,
                                 bool try_only) noexcept {
  if (fast_publish(msg.data(), msg.size())) return PublishResult::ok;
  std::byte* p = nullptr;
  if (const PublishResult r = acquire(msg.size(), deadline, try_only, p); r != PublishResult::ok)
    return r;
  detail::copy_payload(p, msg.data(), msg.size());
  return commit();
}

PublishResult Publisher::publish_for(std::span<const std::byte> msg,
                                     Clock::duration timeout) noexcept {
  const Clock::time_point deadline = detail::deadline_after(timeout);
  return copy_in(msg, &deadline, false);
}
PublishResult Publisher::try_publish(std::span<const std::byte> msg) noexcept {
  return copy_in(msg, nullptr, true);
}

std::span<std::byte> Publisher::loan(std::size_t n) noexcept {
  std::byte* p = nullptr;
  if (acquire(n, nullptr, false, p) != PublishResult::ok) return {};
  return {p, n};
}
std::span<std::byte> Publisher::loan_for(std::size_t n, Clock::duration timeout) noexcept {
  const Clock::time_point deadline = detail::deadline_after(timeout);
  std::byte* p = nullptr;
  if (acquire(n, &deadline, false, p) != PublishResult::ok) return {};
  return {p, n};
}
std::span<std::byte> Publisher::try_loan(std::size_t n) noexcept {
  std::byte* p = nullptr;
  if (acquire(n, nullptr, true, p) != PublishResult::ok) return {};
  return {p, n};
}
PublishResult Publisher::publish() noexcept { return commit(); }

void Publisher::close() noexcept {
  if (control_ == nullptr) return;
  const std::uint64_t me = this_process().pack();
  auto& owner = control_->publisher.owner;
  // [topic.owner] acquire: see Topic::publisher().
  if (owner.load(std::memory_order_acquire) == me && fork_epoch_ == fork_epoch()) {
    // A loan never published stays marked writing(pos_): subscribers at
    // pos_ see nothing there (eof below), lapped ones see it overwritten,
    // and the next publisher writes message pos_ into it again.
    // [topic.closed] seq_cst: after every message published; pairs with
    // the subscriber's load in ended() and is the state ready() sees.
    control_->publisher.closed.store(1, std::memory_order_seq_cst);
    // [topic.ask] relaxed: as in ask_room(); nobody is held back now.
    if (asking_) control_->wake.room_asked.store(0, std::memory_order_relaxed);
    wake_subscribers();
    std::uint64_t expected = me;
    // [topic.owner] release: the role is free for the next publisher.
    (void)owner.compare_exchange_strong(expected, 0, std::memory_order_release,
                                        std::memory_order_relaxed);
  }
  has_loan_ = false;
  control_ = nullptr;
  segment_.reset();
}

// --- Subscriber --------------------------------------------------------------

Subscriber::Subscriber(std::shared_ptr<detail::Segment> segment, const detail::TopicConfig& k,
                       std::uint32_t index, SubscriberPolicy policy, std::uint64_t start,
                       std::uint64_t joined)
    : segment_(std::move(segment)) {
  control_ = reinterpret_cast<TopicControl*>(segment_->payload());
  subs_ = subscriber_lines(segment_->payload());
  slots_ = segment_->payload() + detail::topic_slots_offset(k.max_subscribers);
  mask_ = k.slots - 1;
  slots_count_ = k.slots;
  stride_ = k.slot_stride;
  max_message_ = k.max_message;
  max_subscribers_ = k.max_subscribers;
  policy_ = policy_of(k);
  index_ = index;
  policy_kind_ = policy;
  pos_ = start;
  published_ = start;
  joined_ = joined;
  owner_word_ = this_process().pack();
  fork_epoch_ = fork_epoch();
}

Subscriber& Subscriber::operator=(Subscriber&& o) noexcept {
  if (this != &o) {
    close();
    std::destroy_at(this);
    std::construct_at(this, std::move(o));
  }
  return *this;
}

Subscriber::~Subscriber() { close(); }

bool Subscriber::take_over() noexcept {
  // A record freed meanwhile was evicted or closed: not ours to take.
  return take_role(line().owner, owner_word_, fork_epoch_, *segment_, false);
}

bool Subscriber::ready() const noexcept {
  if (control_ == nullptr) return true;
  std::uint64_t seen = 0;
  return state(seen) != SlotState::empty ||
         // [topic.wake] seq_cst: pairs with the publisher's stores.
         control_->publisher.write_seq.load(std::memory_order_seq_cst) > pos_ ||
         control_->publisher.closed.load(std::memory_order_seq_cst) != 0;
}

const std::atomic<std::uint64_t>* Subscriber::wait_word() const noexcept {
  return control_ == nullptr ? nullptr : &control_->wake.data;
}

std::uint64_t Subscriber::lag() const noexcept {
  if (control_ == nullptr) return 0;
  // relaxed: a snapshot for display.
  const std::uint64_t w = control_->publisher.write_seq.load(std::memory_order_relaxed);
  return w > pos_ ? w - pos_ : 0;
}

void Subscriber::skip_lapped(std::uint64_t seen) noexcept {
  // The slot holds message m > pos_ (or it is being written): the
  // messages from pos_ on that the ring no longer holds are lost.
  const std::uint64_t m = (seen - 2) >> 1;
  std::uint64_t next = 0;
  if (policy_kind_ == SubscriberPolicy::lossy) {
    // [topic.join] acquire: how far the publisher got (untrusted: at least
    // past m, which we saw).
    std::uint64_t w = control_->publisher.write_seq.load(std::memory_order_acquire);
    w = std::max(w, m + 1);
    const std::uint64_t half = slots_count_ / 2;
    next = w > half ? w - half : 0;
  } else {
    next = m + 1 > slots_count_ ? m + 1 - slots_count_ : 0;
  }
  next = std::max(next, pos_ + 1);
  if (next > joined_) {
    ++lapped_;
    missed_ += next - std::max(pos_, joined_);
    // [topic.stats] relaxed: single-writer counters for inspection.
    line().lapped.store(lapped_, std::memory_order_relaxed);
    line().missed.store(missed_, std::memory_order_relaxed);
  }
  pos_ = next;
  publish_read();
}

void Subscriber::publish_read() noexcept {
  if (pos_ == published_) return;
  published_ = pos_;
  auto& l = line();
  // [topic.stats] relaxed: single-writer counter for inspection.
  l.received.store(received_, std::memory_order_relaxed);
  if (policy_kind_ == SubscriberPolicy::reliable && policy_.strategy != WaitStrategy::busy_poll) {
    // [topic.consume] seq_cst: pairs with the publisher's load in scan()
    // and precedes notify()'s load of sleepers ([wait.sleepers]).
    l.read_seq.store(pos_, std::memory_order_seq_cst);
    notify_publisher();
  } else {
    // [topic.consume] release: every read of the freed slots happens
    // before the publisher's load sees this position.
    l.read_seq.store(pos_, std::memory_order_release);
  }
}

void Subscriber::notify_publisher() const noexcept {
  auto& w = control_->wake;
  // [wait.sleepers] seq_cst, after our seq_cst store of read_seq: no
  // sleeping publisher, nothing to do.
  // The count field: the word keeps its epoch ([wait.epoch]) once repaired.
  if (detail::sleeper_count(w.space.sleepers.load(std::memory_order_seq_cst)) == 0) return;
  // [topic.room] seq_cst: the need a sleeping publisher stored before it
  // counted itself among the sleepers (so at least that one's).
  const std::uint64_t need = w.room_needed.load(std::memory_order_seq_cst);
  if (pos_ < need) return;
  // Wake it only if no reliable record is still short of the need: the
  // last to get there wakes it. seq_cst loads after our seq_cst store: of
  // two subscribers crossing at once, the later in the total order sees
  // the other's store, so one of them always wakes it.
  // [topic.reliable] the marked records only (ours among them).
  const bool all_there =
      for_each_marked(control_->reliable, max_subscribers_, [&](std::uint32_t i) {
        const auto& l = subs_[i];
        // [topic.consume] seq_cst: as scan(); a record behind (or a dead
        // one, which the publisher evicts at its liveness slice) wakes it
        // later.
        return !holds_back(l) || l.read_seq.load(std::memory_order_seq_cst) >= need;
      });
  if (all_there) detail::notify(w.space);
}

bool Subscriber::overwritten(std::uint64_t seen) noexcept {
  peeked_ = false;
  if (seen < 2 || (((seen - 2) >> 1) & mask_) != (pos_ & mask_) ||
      seen <= detail::topic_writing(pos_)) {
    corrupted_ = true;  // a done message never goes back
    return false;
  }
  skip_lapped(seen);
  return false;
}

// [topic.seqlock] A lossy copy may race with the publisher overwriting the
// slot; the re-check discards such a copy. ThreadSanitizer would report
// that benign race, so its builds copy without instrumentation.
__attribute__((no_sanitize("thread"))) void Subscriber::copy_racy(std::byte* dst,
                                                                  const std::byte* src,
                                                                  std::size_t n) noexcept {
  const volatile std::byte* s = src;
  for (std::size_t i = 0; i < n; ++i) dst[i] = s[i];
}

std::optional<ReceiveResult> Subscriber::ended() noexcept {
  const auto& p = control_->publisher;
  // [topic.closed] seq_cst: pairs with the publisher's store in close();
  // everything it published before is visible, so an empty slot now is
  // the end of the stream.
  if (p.closed.load(std::memory_order_seq_cst) != 0) {
    std::uint64_t seen = 0;
    if (state(seen) == SlotState::empty) return ReceiveResult::eof;
    return std::nullopt;
  }
  const std::int64_t now = now_ns();
  if (now < next_liveness_ns_) return std::nullopt;
  next_liveness_ns_ = now + std::chrono::nanoseconds(kLivenessInterval).count();
  if (line().evicted.load(std::memory_order_relaxed) != 0 ||
      line().owner.load(std::memory_order_acquire) != owner_word_)  // [topic.sub]
    return ReceiveResult::evicted;
  // [topic.owner] acquire: pairs with the CAS that took the role.
  const std::uint64_t o = p.owner.load(std::memory_order_acquire);
  if (o == 0 || is_alive(ProcessId::unpack(o))) return std::nullopt;
  std::uint64_t seen = 0;
  if (state(seen) == SlotState::empty) return ReceiveResult::publisher_dead;
  return std::nullopt;
}

std::uint32_t Subscriber::join_wake() const noexcept {
  auto& word = control_->wake.data;
  // relaxed: the CAS below re-reads it.
  std::uint64_t w = word.load(std::memory_order_relaxed);
  // [topic.wake] seq_cst CAS: the join precedes the caller's ready()
  // re-check in the total order; pairs with the publisher's load in
  // wake_subscribers(). A count at its limit stays (it only says "wake").
  while (!word.compare_exchange_weak(
      w, detail::topic_sleepers(w) == 0xffffffffU ? w : w + detail::kTopicSleeper,
      std::memory_order_seq_cst, std::memory_order_relaxed)) {
  }
  return detail::topic_generation(w);
}

void Subscriber::leave_wake(std::uint32_t generation) const noexcept {
  auto& word = control_->wake.data;
  // relaxed (load and CAS): taking our one back only spares the publisher
  // a call; a publisher that still counts us wakes for nothing. A new
  // generation counts us no more: nothing to take back.
  std::uint64_t w = word.load(std::memory_order_relaxed);
  while (detail::topic_generation(w) == generation && detail::topic_sleepers(w) != 0 &&
         !word.compare_exchange_weak(w, w - detail::kTopicSleeper, std::memory_order_relaxed)) {
  }
}

void Subscriber::sleep_for_data(Clock::time_point until) noexcept {
  detail::fault_point(detail::FaultPoint::sleep_joining);
  const std::uint32_t generation = join_wake();
  // [topic.wake] the re-check (seq_cst loads) after the join: a publication
  // before the join is seen here, one after it wakes the generation.
  if (!ready()) {
    // Shared futex (not PRIVATE) on the word's low half: the word lives in
    // a segment every process maps.
    (void)detail::futex_wait(control_->wake.data, generation, &until);
  }
  leave_wake(generation);  // a no-op once the publisher woke the generation
}

bool Subscriber::peer_gone() const noexcept {
  if (control_ == nullptr) return true;
  // relaxed: a flag the evicter sets before it frees the owner word below.
  if (line().evicted.load(std::memory_order_relaxed) != 0 ||
      line().owner.load(std::memory_order_acquire) != owner_word_)  // [topic.sub]
    return true;
  // [topic.owner] acquire: pairs with the CAS that took the role.
  const std::uint64_t o = control_->publisher.owner.load(std::memory_order_acquire);
  return o != 0 && !is_alive(ProcessId::unpack(o));
}

namespace {
// FdBridge::Sleep::check for a subscriber (ctx: its TopicControl): the
// publisher died or closed while the generation stayed the same.
bool publisher_gone(const void* ctx) noexcept {
  const auto* c = static_cast<const TopicControl*>(ctx);
  // [topic.closed] seq_cst: as ended(); [topic.owner] acquire as there.
  if (c->publisher.closed.load(std::memory_order_seq_cst) != 0) return true;
  const std::uint64_t o = c->publisher.owner.load(std::memory_order_acquire);
  return o != 0 && !is_alive(ProcessId::unpack(o));
}
}  // namespace

int Subscriber::fileno() {
  if (control_ == nullptr) throw Error(Errc::closed, "fileno", "subscriber is closed");
  if (fd_bridge_ == nullptr || !fd_bridge_->owned_here()) {
    fd_bridge_ = std::make_unique<detail::FdBridge>(segment_->name().c_str());
    rearm_fileno();
  }
  return fd_bridge_->fd();
}

void Subscriber::rearm_fileno() noexcept {
  detail::FdBridge& b = *fd_bridge_;
  if (!b.owned_here() || b.sleeping()) return;  // armed, nothing came yet
  b.clear();
  detail::FdBridge::Sleep sl;
  // [topic.wake] join, then re-check (seq_cst): a publication before the
  // join is seen by ready(), one after it wakes the generation the thread
  // sleeps on. A dead publisher is the thread's check, at its 10 ms
  // slices; the count it leaves behind then costs the next publisher one
  // wake-up (which starts a new generation).
  const std::uint32_t generation = join_wake();
  if (ready()) {
    leave_wake(generation);
    b.signal();
    return;
  }
  sl.word = {&control_->wake.data, generation};
  sl.check = &publisher_gone;
  sl.ctx = control_;
  b.sleep_on(sl);
}

ReceiveResult Subscriber::wait_data(const Clock::time_point* deadline) noexcept {
  publish_read();  // a reliable subscriber's publisher may wait for this room
  // One batch of slot polls first, then ready() (the publisher's line too)
  // and the clock between batches. Measured (busy 64 B round trip, this
  // VM, load 9-12, interleaved runs): the first batch took it from 170-180
  // to 140 ns between near cores (the pipe 120-140); a spin on the slot
  // alone with no clock read for 256 polls, as the pipe's receiver waits,
  // round-tripped slower between far cores (611-721 ns against 591-651,
  // the pipe 520-591), as the README's earlier slot-only variant did.
  std::uint64_t seen = 0;
  if (policy_.strategy != WaitStrategy::blocking) {
    // First a batch of polls of the slot alone: a reply already on its way
    // (a round trip between near cores) is seen without the clock reads.
    for (int k = 0; k < 32; ++k) {
      detail::cpu_relax();
      if (state(seen) != SlotState::empty) return ReceiveResult::ok;
    }
  }
  const auto start = Clock::now();
  for (;;) {
    if (ready() && state(seen) != SlotState::empty) return ReceiveResult::ok;
    if (auto end = ended()) return *end;
    const auto now = Clock::now();
    if (deadline != nullptr && now >= *deadline) return ReceiveResult::timeout;
    const bool spin = policy_.strategy == WaitStrategy::busy_poll ||
                      (policy_.strategy == WaitStrategy::adaptive && now - start < policy_.spin);
    if (spin) {
      for (int k = 0; k < 32; ++k) {
        detail::cpu_relax();
        if (state(seen) != SlotState::empty) return ReceiveResult::ok;
      }
      continue;
    }
    Clock::time_point until = now + kLivenessInterval;
    if (deadline != nullptr && *deadline < until) until = *deadline;
    sleep_for_data(until);
  }
}

ReceiveResult Subscriber::next(std::span<const std::byte>& msg, const Clock::time_point* deadline,
                               bool try_only) noexcept {
  if (control_ == nullptr) return ReceiveResult::closed;
  if (fork_epoch_ != fork_epoch()) [[unlikely]] {
    if (!take_over()) return ReceiveResult::closed;
  }
  for (;;) {
    std::uint64_t seen = 0;
    switch (state(seen)) {
      case SlotState::ready: {
        // relaxed: ordered by the acquire of seq in state(); checked
        // against our own copy of max_message (untrusted).
        const std::uint64_t len = slot_at(pos_).length.load(std::memory_order_relaxed);
        if (len > max_message_) {
          if (!intact()) continue;  // overwritten: a torn length
          corrupted_ = true;
          return ReceiveResult::corrupted;
        }
        msg = {reinterpret_cast<const std::byte*>(&slot_at(pos_)) + detail::kTopicSlotHeader,
               static_cast<std::size_t>(len)};
        return ReceiveResult::ok;
      }
      case SlotState::lapped:
        skip_lapped(seen);
        continue;
      case SlotState::corrupted:
        corrupted_ = true;
        return ReceiveResult::corrupted;
      case SlotState::empty:
        break;
    }
    if (try_only) {
      publish_read();
      if (auto end = ended()) return *end;
      if (fd_bridge_ != nullptr) [[unlikely]]
        rearm_fileno();
      return ReceiveResult::empty;
    }
    if (const ReceiveResult r = wait_data(deadline); r != ReceiveResult::ok) return r;
  }
}

ReceiveResult Subscriber::recv_for(std::span<std::byte> buf, std::size_t& n,
                                   Clock::duration timeout) noexcept {
  const Clock::time_point deadline = detail::deadline_after(timeout);
  return read_copy(buf.data(), buf.size(), n, false, &deadline, false);
}
ReceiveResult Subscriber::try_recv(std::span<std::byte> buf, std::size_t& n) noexcept {
  return read_copy(buf.data(), buf.size(), n, false, nullptr, true);
}

ReceiveResult Subscriber::read_copy(std::byte* dst, std::size_t cap, std::size_t& n, bool exact,
                                    const Clock::time_point* deadline, bool try_only) noexcept {
  std::span<const std::byte> msg;
  for (;;) {
    const ReceiveResult r = next(msg, deadline, try_only);
    if (r != ReceiveResult::ok) return r;
    n = msg.size();
    if (exact ? msg.size() != cap : msg.size() > cap) {
      if (!intact()) continue;  // a torn length: overwritten, try the next
      return exact ? ReceiveResult::size_mismatch : ReceiveResult::too_small;
    }
    copy_out(dst, msg.data(), msg.size());
    if (!intact()) continue;  // overwritten mid-copy: counted, try the next
    advance();
    return ReceiveResult::ok;
  }
}

std::span<std::byte> Subscriber::receive_buffer(std::size_t size) {
  thread_local std::vector<std::byte> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return {buffer.data(), size};
}

ReceiveResult Subscriber::recv(std::vector<std::byte>& out) noexcept {
  return recv_vector(out, nullptr);
}
ReceiveResult Subscriber::recv_for(std::vector<std::byte>& out, Clock::duration timeout) noexcept {
  const Clock::time_point deadline = detail::deadline_after(timeout);
  return recv_vector(out, &deadline);
}

ReceiveResult Subscriber::recv_vector(std::vector<std::byte>& out,
                                      const Clock::time_point* deadline) noexcept {
  try {
    return recv_resizable(out, deadline, false);
  } catch (...) {  // std::bad_alloc: the message stays
    return ReceiveResult::too_small;
  }
}

ReceiveResult Subscriber::peek(std::span<const std::byte>& msg) noexcept {
  const ReceiveResult r = next(msg, nullptr, false);
  peeked_ = r == ReceiveResult::ok;
  return r;
}
ReceiveResult Subscriber::peek_for(std::span<const std::byte>& msg,
                                   Clock::duration timeout) noexcept {
  const Clock::time_point deadline = detail::deadline_after(timeout);
  const ReceiveResult r = next(msg, &deadline, false);
  peeked_ = r == ReceiveResult::ok;
  return r;
}
ReceiveResult Subscriber::try_peek(std::span<const std::byte>& msg) noexcept {
  const ReceiveResult r = next(msg, nullptr, true);
  peeked_ = r == ReceiveResult::ok;
  return r;
}

bool Subscriber::release() noexcept {
  if (control_ == nullptr || !peeked_) return false;
  if (!intact()) return false;
  advance();
  return true;
}

void Subscriber::close() noexcept {
  if (control_ == nullptr) return;
  fd_bridge_.reset();  // its thread sleeps on our segment: stop it before unmapping
  auto& l = line();
  const std::uint64_t me = this_process().pack();
  // [topic.sub] acquire: see Topic::subscribe().
  if (l.owner.load(std::memory_order_acquire) == me && fork_epoch_ == fork_epoch()) {
    publish_read();
    // [topic.join] seq_cst: the publisher stops counting this record
    // before it can be claimed again.
    l.policy.store(static_cast<std::uint32_t>(TopicPolicy::free), std::memory_order_seq_cst);
    unmark_reliable(*control_, index_);  // [topic.reliable] after the policy, before the owner
    std::uint64_t expected = me;
    // [topic.sub] release: the record is free.
    (void)l.owner.compare_exchange_strong(expected, 0, std::memory_order_release,
                                          std::memory_order_relaxed);
    // A publisher waiting for this subscriber may go on.
    detail::notify(control_->wake.space);
  }
  control_ = nullptr;
  segment_.reset();
}

// --- statistics --------------------------------------------------------------

TopicStats topic_stats(const SegmentView& view) {
  const auto& info = view.info();
  if (info.kind != ObjectKind::topic) throw Error(Errc::wrong_kind, info.name, "not a topic");
  const auto payload = view.payload();
  const detail::TopicConfig k = checked_config(info.name, payload);
  const auto* c = reinterpret_cast<const TopicControl*>(payload.data());
  TopicStats s;
  s.slots = k.slots;
  s.max_message = k.max_message;
  s.history = k.history;
  s.max_subscribers = k.max_subscribers;
  s.strategy = static_cast<WaitStrategy>(k.strategy);
  // relaxed (all below): a snapshot for display; no data is read through it.
  const std::uint64_t owner = c->publisher.owner.load(std::memory_order_relaxed);
  s.publisher = ProcessId::unpack(owner == kEvicting ? 0 : owner);
  s.publisher_alive = owner != 0 && is_alive(s.publisher);
  s.closed = c->publisher.closed.load(std::memory_order_relaxed) != 0;
  s.published = c->publisher.write_seq.load(std::memory_order_relaxed);
  s.takeovers = c->publisher.takeovers.load(std::memory_order_relaxed);
  s.evictions = c->publisher.evictions.load(std::memory_order_relaxed);
  s.blocked_publishes = c->publisher.blocked.load(std::memory_order_relaxed);
  (void)for_each_marked(c->reliable, k.max_subscribers, [&](std::uint32_t) {
    ++s.reliable_marked;
    return true;
  });
  const auto* lines =
      reinterpret_cast<const TopicSubscriberLine*>(payload.data() + sizeof(TopicControl));
  for (std::uint32_t i = 0; i < k.max_subscribers; ++i) {
    const auto& l = lines[i];
    const std::uint64_t o = l.owner.load(std::memory_order_relaxed);
    const std::uint32_t pol = l.policy.load(std::memory_order_relaxed);
    if (o == 0 || o == kEvicting || pol == 0 || pol > 2) continue;
    TopicSubscriberStats t;
    t.index = i;
    t.owner = ProcessId::unpack(o);
    t.alive = is_alive(t.owner);
    t.policy = pol == static_cast<std::uint32_t>(TopicPolicy::reliable) ? SubscriberPolicy::reliable
                                                                        : SubscriberPolicy::lossy;
    t.position = l.read_seq.load(std::memory_order_relaxed);
    t.lag = s.published > t.position ? s.published - t.position : 0;
    t.received = l.received.load(std::memory_order_relaxed);
    t.lapped = l.lapped.load(std::memory_order_relaxed);
    t.missed = l.missed.load(std::memory_order_relaxed);
    s.subscribers.push_back(t);
  }
  return s;
}

}  // namespace shmbus
