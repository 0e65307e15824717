// Forwarder: acknowledged forwarding of queues between two buses
// (forwarder.hpp). Wire frames, outbox and inbox formats are below.
#include "shmbus/bridge/forwarder.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <tuple>

#include "shmbus/detail/queue_core.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/error.hpp"
#include "shmbus/shared_memory.hpp"
#include "status_format.hpp"

namespace shmbus::bridge {

namespace {

using shmbus::detail::QueueCore;

// ---- wire ------------------------------------------------------------------
// Every bridge message is a 16-byte header, then (DATA, HELLO) a body.
//   HELLO     body: msgpack (bridge name, [(queue, kind, fingerprint,
//             type name, epoch), ...], [(topic, fingerprint, type name,
//             epoch, slots, max message, policy, the source message number
//             the sender's subscription started at), ...]); the receiver opens
//             its queues and topics. Channel indices: the queues, then the
//             topics.
//   HELLO_OK  the receiver is ready for DATA of every channel of the hello
//   DATA      channel (index in the sender's hello), seq, body: the message
//             (a topic's: the source topic's message number, 8 bytes, first)
//   ACK       channel, seq: every message up to seq is in the peer's queue
//   PING      keeps the link and the peer's silence timer alive
enum class Kind : std::uint8_t { hello = 1, hello_ok = 2, data = 3, ack = 4, ping = 5 };
struct WireHeader {
  Kind kind;
  std::uint8_t pad[3];
  std::uint32_t channel;
  std::uint64_t seq;
};
static_assert(sizeof(WireHeader) == 16);

using HelloChannel =
    std::tuple<std::string, std::uint32_t, std::uint64_t, std::string, std::uint64_t>;
using HelloTopic = std::tuple<std::string, std::uint64_t, std::string, std::uint64_t, std::uint32_t,
                              std::uint64_t, std::uint32_t, std::uint64_t>;
using Hello = std::tuple<std::string, std::vector<HelloChannel>, std::vector<HelloTopic>>;

// ---- outbox: "<name>.out.<queue>", format v2 ---------------------------------
//   0    magic, version, window, slot_bytes, epoch, fingerprint (set at creation)
//   64   next_seq, acked, take_interrupted        (written by the bridge alone)
//   128  entries[window], each entry_stride bytes: seq(8) length(8)
//        position(8) payload
// Entry of sequence s is entries[s % window]. Invariants a restart checks:
// acked < next_seq; every s in (acked, next_seq) has entry.seq == s and a
// length <= slot_bytes (the message held until the peer acks it).
// Take of s: entry.length = kTaking, entry.position = kNoPosition,
// entry.seq = s; the queue's held get (QueueCore::get_held) copies into
// the payload and writes the length and the message's queue position
// itself before it releases the slot ([outbox.commit]: the release is the
// commit point), next_seq = s + 1. A SIGKILL before the release leaves the
// message claimed by the dead bridge: the queue's recovery gives it back
// (FULL at its position), so a restart drops entry s if the position is
// unset or the queue still holds that position; else the message left the
// queue and entry s holds it (next_seq = s + 1).
constexpr std::uint64_t kOutboxMagic = 0x3258424F42534253ULL;    // "SBSBOBX2"
constexpr std::uint64_t kOutboxMagicV1 = 0x3158424F42534253ULL;  // "SBSBOBX1": no positions
constexpr std::uint64_t kInboxMagic = 0x3158424E49534253ULL;     // "SBSINBX1"
constexpr std::uint64_t kTaking = ~std::uint64_t{0};
constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};

struct OutboxHeader {
  std::uint64_t magic;
  std::uint64_t window;
  std::uint64_t slot_bytes;
  std::uint64_t entry_stride;
  std::uint64_t epoch;
  std::uint64_t fingerprint;
  alignas(64) std::atomic<std::uint64_t> next_seq;
  std::atomic<std::uint64_t> acked;
  std::atomic<std::uint64_t> take_interrupted;
};
static_assert(sizeof(OutboxHeader) == 128);
struct OutboxEntry {
  std::atomic<std::uint64_t> seq;
  // Written by the queue's held get itself (its out-parameters), after its
  // copy and before it releases the slot: so a message is either in the
  // outbox with its length and position, or still claimed by the dead
  // bridge in the queue, whose recovery gives it back. Accessed through
  // std::atomic_ref everywhere else.
  std::uint64_t length;
  std::uint64_t position;
};
static_assert(std::is_same_v<std::uint64_t, std::size_t>);

// ---- inbox: "<name>.in.<peer>.<queue>", format v1 ---------------------------
//   epoch     the sender's outbox epoch these sequences belong to
//   applied   every sequence <= applied is in the local queue
//   applying  the sequence being put now (0: none)
// Apply of s: applying = s, put, applied = s ([inbox.commit]), applying = 0.
struct InboxHeader {
  std::uint64_t magic;
  std::atomic<std::uint64_t> epoch;
  std::atomic<std::uint64_t> applied;
  std::atomic<std::uint64_t> applying;
  std::atomic<std::uint64_t> apply_uncertain;
  std::atomic<std::uint64_t> duplicates;
};

// ---- topic inbox: "<name>.tin.<peer>.<topic>", format v1 --------------------
// The inbox above (magic kTopicInboxMagic), then what the source topic's
// message numbers say: the next one expected and the holes counted.
// Written by the receiving bridge alone.
constexpr std::uint64_t kTopicInboxMagic = 0x3158424E49504F54ULL;  // "TOPINBX1"
struct TopicInboxHeader {
  InboxHeader inbox;
  std::atomic<std::uint64_t> source_next;  // the next source number expected, + 1 (0: none)
  std::atomic<std::uint64_t> gaps;
};
constexpr std::size_t kSourcePosBytes = 8;  // a topic DATA body's prefix

constexpr std::size_t kMaxOutboxBytes = std::size_t{64} << 20;
constexpr std::size_t kMaxPending = std::size_t{1} << 16;

std::string full_name(const std::string& bus, const std::string& queue) {
  return bus.empty() ? queue : bus + "." + queue;
}

// What the segment header says about a queue: its kind and payload type.
struct QueueIdentity {
  ObjectKind kind{};
  std::uint64_t fingerprint = 0;
  std::string type_name;
};
QueueIdentity read_identity(const std::string& name, bool topic = false) {
  const std::string path = "/dev/shm/" + shmbus::detail::os_name(name);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw Error(Errc::not_found, name,
                topic ? "no such topic on this bus" : "no such queue on this bus");
  std::vector<std::byte> h(shmbus::detail::kHeaderSize);
  const ssize_t n = ::pread(fd, h.data(), h.size(), 0);
  ::close(fd);
  using shmbus::detail::SegmentHeader;
  auto field = [&](std::size_t off, std::size_t size, void* out) {
    std::memcpy(out, h.data() + off, size);
  };
  std::uint64_t magic = 0;
  std::uint32_t kind = 0;
  QueueIdentity id;
  if (n != static_cast<ssize_t>(h.size()))
    throw Error(Errc::truncated, name, "shorter than a segment header");
  field(offsetof(SegmentHeader, magic), 8, &magic);
  field(offsetof(SegmentHeader, kind), 4, &kind);
  field(offsetof(SegmentHeader, type_fingerprint), 8, &id.fingerprint);
  if (magic != shmbus::detail::kMagic) throw Error(Errc::corrupted, name, "not a shmbus segment");
  const auto k = kind_from_u32(kind);
  if (topic && k != ObjectKind::topic)
    throw Error(Errc::wrong_kind, name, "forwarded as a topic; this is not one");
  if (!topic && (!k || (*k != ObjectKind::queue && *k != ObjectKind::simple_queue &&
                        *k != ObjectKind::joinable_queue)))
    throw Error(Errc::wrong_kind, name, "the bridge forwards queues; this is not one");
  id.kind = *k;
  const char* tn = reinterpret_cast<const char*>(h.data() + offsetof(SegmentHeader, type_name));
  id.type_name.assign(tn, strnlen(tn, shmbus::detail::kTypeNameSize));
  return id;
}

QueueCore open_queue(const std::string& name, const QueueIdentity& id) {
  return QueueCore::open(name, id.kind, shmbus::detail::TypeTag{id.fingerprint, id.type_name},
                         QueueOptions{});
}

SegmentOptions state_segment_options() {
  SegmentOptions o;
  o.track = false;  // survives the bridge's exit: it holds unacknowledged messages
  return o;
}

struct OutChannel {
  std::string queue;
  QueueIdentity id;
  QueueCore core;
  std::optional<SharedMemory> shm;
  OutboxHeader* hdr = nullptr;
  std::byte* entries = nullptr;
  std::uint64_t sent = 0;
  std::uint64_t retransmitted = 0;
  Clock::time_point last_progress{};
  bool waiting_on_fd = false;
  bool kept = false;  // the outbox's gc mark (SegmentHeader::keep) as last set

  void set_keep(bool on) {
    if (kept == on) return;
    shmbus::detail::set_keep(*shm, on);
    kept = on;
  }

  OutboxEntry& entry(std::uint64_t seq) const noexcept {
    return *reinterpret_cast<OutboxEntry*>(entries + (seq % hdr->window) * hdr->entry_stride);
  }
  std::byte* payload(std::uint64_t seq) const noexcept {
    return reinterpret_cast<std::byte*>(&entry(seq)) + sizeof(OutboxEntry);
  }
  static std::atomic_ref<std::uint64_t> length_of(OutboxEntry& e) noexcept {
    return std::atomic_ref<std::uint64_t>(e.length);
  }
  static std::atomic_ref<std::uint64_t> position_of(OutboxEntry& e) noexcept {
    return std::atomic_ref<std::uint64_t>(e.position);
  }
  std::uint64_t in_flight() const noexcept {
    // relaxed: only this bridge process writes the outbox
    return hdr->next_seq.load(std::memory_order_relaxed) - 1 -
           hdr->acked.load(std::memory_order_relaxed);
  }
};

// A local topic forwarded: the bridge's subscription, and the messages sent
// and not yet acknowledged (in memory: a topic is not durable).
struct TopicOut {
  TopicForward cfg;
  QueueIdentity id;
  Topic topic;
  Subscriber sub;
  std::uint64_t epoch = 0;  // this process's: the peer's inbox restarts with it
  std::uint64_t start = 0;  // the source message number the subscription started at
  std::uint64_t next_seq = 1;
  std::uint64_t acked = 0;
  std::deque<std::vector<std::byte>> held;  // acked+1 .. next_seq-1: [source no.][message]
  std::uint64_t sent = 0;
  std::uint64_t retransmitted = 0;
  std::uint64_t resubscribed = 0;
  Clock::time_point last_progress{};
  Clock::time_point ended_at{};  // the source's publisher closed or died: look again later
  bool ended = false;
  std::string problem;

  std::uint64_t in_flight() const noexcept { return next_seq - 1 - acked; }
};

struct InChannel {
  std::string queue;  // the peer's queue or topic name (the same name here)
  QueueIdentity id;
  std::optional<QueueCore> core;  // nullopt while the local queue is missing
  std::optional<SharedMemory> shm;
  InboxHeader* hdr = nullptr;
  // A topic's: the geometry to create it with, the publisher role here.
  bool topic = false;
  std::uint32_t slots = 0;
  std::uint64_t max_message = 0;
  TopicInboxHeader* topic_hdr = nullptr;
  std::optional<Topic> local_topic;
  Publisher pub;
  // Messages received in order but not yet put (the local queue is full or
  // missing): at most the sender's window, since it sends nothing beyond
  // applied + window; kMaxPending bounds a misbehaving peer.
  std::deque<std::pair<std::uint64_t, std::vector<std::byte>>> pending;
  std::uint64_t last_acked = 0;
  std::uint64_t applied_here = 0;
  std::uint64_t full_waits = 0;
  std::string problem;  // why the local queue is not open (logged once)
};

}  // namespace

std::string_view to_string(RunEnd e) noexcept {
  switch (e) {
    case RunEnd::stopped:
      return "stopped";
    case RunEnd::peer_closed:
      return "peer_closed";
    case RunEnd::peer_reset:
      return "peer_reset";
    case RunEnd::peer_silent:
      return "peer_silent";
    case RunEnd::interrupted:
      return "interrupted";
  }
  return "unknown";
}

struct Forwarder::Impl {
  ForwarderOptions opt;
  std::vector<OutChannel> out;
  std::vector<TopicOut> tout;  // channel index out.size() + i
  std::vector<InChannel> in;   // by the peer's channel index
  std::string peer;
  std::vector<std::byte> frame;  // scratch for header + body
  std::vector<std::byte> rx;
  std::optional<detail::StatusWriter> status;  // "<name>.bridge", for bus-inspector
  Clock::time_point last_status{};
  Clock::time_point last_rx{};

  void open_outbox(OutChannel& ch) {
    const std::string name = opt.name + ".out." + ch.queue;
    const std::uint64_t slot = ch.core.max_message();
    std::uint64_t window = std::max<std::uint64_t>(
        2, std::min<std::uint64_t>(opt.window, kMaxOutboxBytes / (slot + 16)));
    const std::uint64_t stride = (sizeof(OutboxEntry) + slot + 63) / 64 * 64;
    const std::size_t size = sizeof(OutboxHeader) + window * stride;
    try {
      ch.shm.emplace(SharedMemory::open(name, state_segment_options()));
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;
    }
    if (ch.shm) {
      auto* h = reinterpret_cast<OutboxHeader*>(ch.shm->buf().data());
      const bool same = ch.shm->buf().size() >= sizeof(OutboxHeader) && h->magic == kOutboxMagic &&
                        h->slot_bytes == slot && h->entry_stride == stride && h->window == window &&
                        ch.shm->buf().size() == size && h->fingerprint == ch.id.fingerprint;
      if (same) {
        ch.hdr = h;
        ch.entries = ch.shm->buf().data() + sizeof(OutboxHeader);
        recover_outbox(ch, name);
        ch.set_keep(ch.in_flight() != 0);
        return;
      }
      // Another geometry (options changed, the queue re-made, or an outbox
      // of format v1):
      // reusable only when nothing waits for an acknowledgement in it.
      const bool empty_box = ch.shm->buf().size() >= sizeof(OutboxHeader) &&
                             (h->magic == kOutboxMagic || h->magic == kOutboxMagicV1) &&
                             h->next_seq.load(std::memory_order_relaxed) ==
                                 h->acked.load(std::memory_order_relaxed) + 1;
      if (!empty_box)
        throw Error(Errc::invalid_argument, name,
                    "the outbox has another geometry or payload type and holds "
                    "unacknowledged messages: run the bridge with its previous options");
      ch.shm.reset();
      shmbus::detail::Segment::unlink(name);
    }
    ch.shm.emplace(SharedMemory::create(name, size, state_segment_options()));
    auto* h = new (ch.shm->buf().data()) OutboxHeader{};
    h->magic = kOutboxMagic;
    h->window = window;
    h->slot_bytes = slot;
    h->entry_stride = stride;
    h->epoch = random_epoch();
    h->fingerprint = ch.id.fingerprint;
    h->next_seq.store(1, std::memory_order_relaxed);  // relaxed: not shared yet
    h->acked.store(0, std::memory_order_release);     // [outbox.commit]
    ch.hdr = h;
    ch.entries = ch.shm->buf().data() + sizeof(OutboxHeader);
  }

  // A restarted bridge: finishes a take the SIGKILL cut after its commit
  // point, drops one cut before it (its message is back in the queue) and
  // counts it, and validates what is held.
  void recover_outbox(OutChannel& ch, const std::string& name) {
    OutboxHeader& h = *ch.hdr;
    // The dead bridge's claim, if it held one, goes back to the queue now
    // (a held get), before this bridge takes anything: order is kept.
    (void)ch.core.recover_dead();
    // [outbox.commit] acquire: pairs with the release stores of the take.
    std::uint64_t next = h.next_seq.load(std::memory_order_acquire);
    const std::uint64_t acked = h.acked.load(std::memory_order_acquire);
    if (next == 0 || acked >= next || next - 1 - acked > h.window)
      throw Error(Errc::corrupted, name,
                  "outbox sequence numbers out of range (next " + std::to_string(next) +
                      ", acked " + std::to_string(acked) + ")");
    OutboxEntry& e = ch.entry(next);
    if (next - acked <= h.window && e.seq.load(std::memory_order_acquire) == next) {
      // relaxed: written by the dead bridge's get, which a SIGKILL ended
      const std::uint64_t len = OutChannel::length_of(e).load(std::memory_order_relaxed);
      const std::uint64_t pos = OutChannel::position_of(e).load(std::memory_order_relaxed);
      if (len == kTaking || pos == kNoPosition || ch.core.holds_position(pos)) {
        // Cut before its release: the message is in the queue, not taken.
        h.take_interrupted.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        e.seq.store(0, std::memory_order_relaxed);
      } else if (len <= h.slot_bytes) {
        h.next_seq.store(++next, std::memory_order_release);  // the take had committed
      }
    }
    for (std::uint64_t s = acked + 1; s < next; ++s) {
      OutboxEntry& held = ch.entry(s);
      if (held.seq.load(std::memory_order_acquire) != s ||
          OutChannel::length_of(held).load(std::memory_order_acquire) > h.slot_bytes)
        throw Error(Errc::corrupted, name,
                    "held message " + std::to_string(s) + " failed validation");
    }
  }

  explicit Impl(ForwarderOptions o) : opt(std::move(o)) {
    validate_name(opt.name);
    if (opt.window == 0) throw Error(Errc::invalid_argument, opt.name, "window must be >= 1");
    const auto once = [&](const std::vector<std::string>& names, const char* what) {
      if (std::set<std::string>(names.begin(), names.end()).size() != names.size())
        throw Error(Errc::invalid_argument, opt.name, std::string("a ") + what + " is named twice");
    };
    once(opt.queues, "forwarded queue");
    std::vector<std::string> topic_names;
    for (const TopicForward& t : opt.topics) topic_names.push_back(t.topic);
    once(topic_names, "forwarded topic");
    // First: the status segment is the name's lock (a second live bridge of
    // the name is refused here, before it could recover outboxes in use).
    status.emplace(opt.name);
    for (const std::string& q : opt.queues) {
      OutChannel ch;
      ch.queue = q;
      const std::string full = full_name(opt.bus, q);
      ch.id = read_identity(full);
      ch.core = open_queue(full, ch.id);
      open_outbox(ch);
      out.push_back(std::move(ch));
    }
    for (const TopicForward& t : opt.topics) {
      validate_name(t.topic);
      TopicOut ch;
      ch.cfg = t;
      const std::string full = full_name(opt.bus, t.topic);
      ch.id = read_identity(full, true);
      ch.topic = Topic::open_tagged(full, SegmentOptions{},
                                    shmbus::detail::TypeTag{ch.id.fingerprint, ch.id.type_name});
      ch.sub = ch.topic.subscribe({.policy = t.policy});
      ch.start = ch.sub.position();
      ch.epoch = random_epoch();
      tout.push_back(std::move(ch));
    }
    lay_out_status();
  }

  // ---- status (status.hpp) ---------------------------------------------------
  // Records: the queues, the topics, then what the peer forwards here.
  void lay_out_status() {
    std::vector<detail::StatusLayoutEntry> v;
    for (const OutChannel& ch : out) v.push_back({ch.queue, true, false});
    for (const TopicOut& ch : tout) v.push_back({ch.cfg.topic, true, true});
    for (const InChannel& ch : in) v.push_back({ch.queue, false, ch.topic});
    status->set_layout(peer, v);
  }

  void publish_status(Clock::time_point now) {
    detail::StatusWriter& w = *status;
    std::size_t i = 0;
    for (const OutChannel& ch : out) {
      // relaxed: this bridge writes its outbox alone; the outbox's totals
      // (they survive restarts, as acked does)
      w.set(i, detail::kMessages, ch.hdr->next_seq.load(std::memory_order_relaxed) - 1);
      w.set(i, detail::kAcked, ch.hdr->acked.load(std::memory_order_relaxed));
      w.set(i, detail::kInFlight, ch.in_flight());
      w.set(i, detail::kRetransmitted, ch.retransmitted);
      w.set(i++, detail::kTakeInterrupted,
            ch.hdr->take_interrupted.load(std::memory_order_relaxed));
    }
    for (const TopicOut& ch : tout) {
      w.set(i, detail::kMessages, ch.sent);
      w.set(i, detail::kAcked, ch.acked);
      w.set(i, detail::kInFlight, ch.in_flight());
      w.set(i, detail::kRetransmitted, ch.retransmitted);
      w.set(i++, detail::kMissed, ch.sub.missed());
    }
    for (const InChannel& ch : in) {
      // relaxed: this bridge writes its inboxes alone
      w.set(i, detail::kMessages, ch.applied_here);
      w.set(i, detail::kDuplicates, ch.hdr->duplicates.load(std::memory_order_relaxed));
      w.set(i, detail::kFullWaits, ch.full_waits);
      w.set(i, detail::kApplyUncertain, ch.hdr->apply_uncertain.load(std::memory_order_relaxed));
      if (ch.topic_hdr != nullptr)
        w.set(i, detail::kGaps, ch.topic_hdr->gaps.load(std::memory_order_relaxed));
      ++i;
    }
    const auto real = static_cast<std::uint64_t>(
        std::chrono::system_clock::now().time_since_epoch() / std::chrono::nanoseconds(1));
    if (last_rx != Clock::time_point{})
      w.received(real - static_cast<std::uint64_t>((now - last_rx) / std::chrono::nanoseconds(1)));
    w.touch(real);
    last_status = now;
  }

  static std::uint64_t random_epoch() {
    std::random_device rd;
    return rd() | (std::uint64_t{rd()} << 32) | 1u;
  }

  // ---- sending -------------------------------------------------------------
  SendResult send(Connection& c, Kind k, std::uint32_t channel, std::uint64_t seq,
                  std::span<const std::byte> body) {
    frame.resize(sizeof(WireHeader) + body.size());
    WireHeader h{k, {}, channel, seq};
    std::memcpy(frame.data(), &h, sizeof h);
    if (!body.empty()) std::memcpy(frame.data() + sizeof h, body.data(), body.size());
    return c.send_bytes_for(frame, std::chrono::milliseconds(100));
  }

  void send_hello(Connection& c) {
    Hello hello;
    std::get<0>(hello) = opt.name;
    for (const OutChannel& ch : out)
      std::get<1>(hello).emplace_back(ch.queue, static_cast<std::uint32_t>(ch.id.kind),
                                      ch.id.fingerprint, ch.id.type_name, ch.hdr->epoch);
    for (const TopicOut& ch : tout)
      std::get<2>(hello).emplace_back(ch.cfg.topic, ch.id.fingerprint, ch.id.type_name, ch.epoch,
                                      ch.topic.slots(), ch.topic.max_message(),
                                      static_cast<std::uint32_t>(ch.cfg.policy), ch.start);
    const std::vector<std::byte> body = encode(hello);
    (void)send(c, Kind::hello, 0, 0, body);
  }

  // Takes messages while the window has room; false when none was taken.
  bool take_and_send(Connection& c, OutChannel& ch, std::uint32_t index) {
    bool any = false;
    while (ch.in_flight() < ch.hdr->window) {
      OutboxHeader& h = *ch.hdr;
      const std::uint64_t s = h.next_seq.load(std::memory_order_relaxed);  // relaxed: ours
      OutboxEntry& e = ch.entry(s);
      // gc keeps an outbox that holds (or may hold) unacknowledged
      // messages: marked before a take, cleared once all are acked (or
      // the take found nothing).
      if (!ch.kept) {
        if (!ch.core.ready(false)) break;  // nothing to take
        ch.set_keep(true);
      }
      // [outbox.take] the entry says "being taken" before the queue's get
      // can remove anything; a restart reads it (acquire, recover_outbox).
      OutChannel::length_of(e).store(kTaking, std::memory_order_relaxed);
      OutChannel::position_of(e).store(kNoPosition, std::memory_order_relaxed);
      e.seq.store(s, std::memory_order_release);
      // [outbox.commit] the held get writes the length and position into
      // the outbox after its copy and before its [queue.release] (seq_cst)
      // store: from there on a restart holds and resends the message.
      const QueueResult r =
          ch.core.get_held(std::span<std::byte>(ch.payload(s), h.slot_bytes), e.length, e.position);
      if (r != QueueResult::ok) {
        e.seq.store(0, std::memory_order_relaxed);  // nothing taken
        if (ch.in_flight() == 0) ch.set_keep(false);
        break;
      }
      const std::uint64_t len = e.length;
      shmbus::detail::fault_point(shmbus::detail::FaultPoint::bridge_taken);
      h.next_seq.store(s + 1, std::memory_order_release);
      if (ch.in_flight() == 1) ch.last_progress = Clock::now();
      ++ch.sent;
      any = true;
      (void)send(c, Kind::data, index, s, {ch.payload(s), len});
    }
    return any;
  }

  // Takes topic messages while the window has room; false when none was.
  bool take_topic(Connection& c, TopicOut& ch, std::uint32_t index, Clock::time_point now) {
    if (ch.ended) {
      if (now - ch.ended_at < std::chrono::duration_cast<Clock::duration>(opt.heartbeat))
        return false;
      ch.ended = false;  // a new publisher may have come: look again
    }
    bool any = false;
    while (ch.in_flight() < opt.window) {
      std::span<const std::byte> msg;
      const ReceiveResult r = ch.sub.try_peek(msg);
      if (r == ReceiveResult::ok) {
        std::vector<std::byte> m(kSourcePosBytes + msg.size());
        const std::uint64_t source = ch.sub.position();
        std::memcpy(m.data(), &source, kSourcePosBytes);
        if (!msg.empty()) std::memcpy(m.data() + kSourcePosBytes, msg.data(), msg.size());
        if (!ch.sub.release()) continue;  // overwritten while copied: counted missed
        const std::uint64_t s = ch.next_seq++;
        ch.held.push_back(std::move(m));
        if (ch.in_flight() == 1) ch.last_progress = now;
        ++ch.sent;
        any = true;
        (void)send(c, Kind::data, index, s, ch.held.back());
        continue;
      }
      if (r == ReceiveResult::empty) break;
      if (r == ReceiveResult::evicted) {  // taken for dead: subscribe again
        ch.sub = ch.topic.subscribe({.policy = ch.cfg.policy});
        ++ch.resubscribed;
        continue;
      }
      // eof, publisher_dead, corrupted: nothing more now; say why once.
      const std::string why(to_string(r));
      if (ch.problem != why) {
        ch.problem = why;
        std::fprintf(stderr, "bus-bridge %s: topic '%s': %s\n", opt.name.c_str(),
                     ch.cfg.topic.c_str(), why.c_str());
      }
      ch.ended = true;
      ch.ended_at = now;
      break;
    }
    if (any) ch.problem.clear();
    return any;
  }

  void resend_topic(Connection& c, TopicOut& ch, std::uint32_t index) {
    std::uint64_t s = ch.acked + 1;
    for (const std::vector<std::byte>& m : ch.held) {
      if (send(c, Kind::data, index, s++, m) != SendResult::ok) break;
      ++ch.retransmitted;
    }
    ch.last_progress = Clock::now();
  }

  void resend_all(Connection& c, OutChannel& ch, std::uint32_t index) {
    const std::uint64_t next = ch.hdr->next_seq.load(std::memory_order_relaxed);
    for (std::uint64_t s = ch.hdr->acked.load(std::memory_order_relaxed) + 1; s < next; ++s) {
      const std::uint64_t len = OutChannel::length_of(ch.entry(s)).load(std::memory_order_relaxed);
      if (send(c, Kind::data, index, s, {ch.payload(s), len}) != SendResult::ok) break;
      ++ch.retransmitted;
    }
    ch.last_progress = Clock::now();
  }

  void on_ack(std::uint32_t channel, std::uint64_t seq) {
    if (channel >= out.size()) {
      if (channel - out.size() >= tout.size()) return;
      TopicOut& t = tout[channel - out.size()];
      if (seq <= t.acked || seq >= t.next_seq) return;
      for (; t.acked < seq; ++t.acked) t.held.pop_front();
      t.last_progress = Clock::now();
      return;
    }
    OutChannel& ch = out[channel];
    const std::uint64_t acked = ch.hdr->acked.load(std::memory_order_relaxed);
    if (seq <= acked || seq >= ch.hdr->next_seq.load(std::memory_order_relaxed)) return;
    // [outbox.commit] release: a restart sees the entries up to seq as free.
    ch.hdr->acked.store(seq, std::memory_order_release);
    if (ch.in_flight() == 0) ch.set_keep(false);
    ch.last_progress = Clock::now();
  }

  // ---- receiving -----------------------------------------------------------
  void on_hello(std::span<const std::byte> body) {
    const Hello hello = decode<Hello>(body, "bridge hello");
    peer = std::get<0>(hello);
    validate_name(peer);
    // The topics this bridge publishes here stay its own across hellos of
    // the same type (a reconnect, a restarted peer): closing them would
    // tell their subscribers eof.
    std::map<std::string, InChannel> kept;
    for (InChannel& ch : in)
      if (ch.topic) kept.emplace(ch.queue, std::move(ch));
    in.clear();
    for (const HelloChannel& hc : std::get<1>(hello)) {
      InChannel ch;
      ch.queue = std::get<0>(hc);
      validate_name(ch.queue);
      const auto kind = kind_from_u32(std::get<1>(hc));
      if (!kind) throw Error(Errc::corrupted, "bridge hello", "unknown object kind");
      ch.id = QueueIdentity{*kind, std::get<2>(hc), std::get<3>(hc)};
      open_inbox(ch, opt.name + ".in." + peer + "." + ch.queue, std::get<4>(hc));
      try_open(ch);
      in.push_back(std::move(ch));
    }
    for (const HelloTopic& ht : std::get<2>(hello)) {
      InChannel ch;
      ch.topic = true;
      ch.queue = std::get<0>(ht);
      validate_name(ch.queue);
      ch.id = QueueIdentity{ObjectKind::topic, std::get<1>(ht), std::get<2>(ht)};
      ch.slots = std::get<4>(ht);
      ch.max_message = std::get<5>(ht);
      if (open_inbox(ch, opt.name + ".tin." + peer + "." + ch.queue, std::get<3>(ht))) {
        // A new sender epoch: holes count from where its subscription
        // started, or from the last message of the epoch before.
        std::atomic<std::uint64_t>& next = ch.topic_hdr->source_next;
        if (next.load(std::memory_order_relaxed) == 0)  // relaxed: ours alone
          next.store(std::get<7>(ht) + 1, std::memory_order_relaxed);
      }
      if (auto k = kept.find(ch.queue);
          k != kept.end() && k->second.id.fingerprint == ch.id.fingerprint) {
        ch.local_topic = std::move(k->second.local_topic);
        ch.pub = std::move(k->second.pub);
        kept.erase(k);  // a topic the hello names twice gets no moved-from publisher
      }
      try_open(ch);
      in.push_back(std::move(ch));
    }
    lay_out_status();
  }

  // The inbox of a channel from the peer: kept (a restart of either side
  // with the same sender epoch), reset (a new epoch: its sequences
  // restart), or made. True for a new epoch.
  bool open_inbox(InChannel& ch, const std::string& name, std::uint64_t epoch) {
    const std::size_t size = ch.topic ? sizeof(TopicInboxHeader) : sizeof(InboxHeader);
    const std::uint64_t magic = ch.topic ? kTopicInboxMagic : kInboxMagic;
    ch.shm.emplace(SharedMemory::open_or_create(name, size, state_segment_options()));
    // Kept by gc: its applied sequence is what stops the peer's
    // retransmissions being applied twice after a restart.
    shmbus::detail::set_keep(*ch.shm, true);
    ch.hdr = reinterpret_cast<InboxHeader*>(ch.shm->buf().data());
    if (ch.topic) ch.topic_hdr = reinterpret_cast<TopicInboxHeader*>(ch.shm->buf().data());
    InboxHeader& h = *ch.hdr;
    if (h.magic != magic || h.epoch.load(std::memory_order_acquire) != epoch) {
      // New, or the sender's outbox was made anew: its sequences restart.
      // (A topic inbox keeps source_next: the holes a sender's restart
      // leaves are counted.)
      h.applying.store(0, std::memory_order_relaxed);
      h.applied.store(0, std::memory_order_relaxed);
      h.epoch.store(epoch, std::memory_order_relaxed);
      h.magic = magic;
      ch.last_acked = 0;
      return true;
    }
    ch.last_acked = h.applied.load(std::memory_order_relaxed);
    return false;
  }

  // A put cut by a SIGKILL of the bridge before it stored `applied`
  // (applying == applied + 1): a queue's tagged put says whether it landed
  // (the dead bridge's record is repaired first); a topic's publish, or a
  // queue whose records lost the tag, cannot say: counted apply_uncertain
  // (the retransmission is put again). Call once the local queue is open.
  void settle_apply(InChannel& ch) {
    InboxHeader& h = *ch.hdr;
    const std::uint64_t a = h.applying.load(std::memory_order_acquire);
    if (a == 0 || a != h.applied.load(std::memory_order_acquire) + 1) return;
    shmbus::detail::TagState st = shmbus::detail::TagState::none;
    if (!ch.topic && ch.core) {
      (void)ch.core->recover_dead();
      st = ch.core->tagged_outcome(apply_tag(h, a));
    }
    if (st == shmbus::detail::TagState::landed)
      h.applied.store(a, std::memory_order_seq_cst);  // [inbox.commit]: it is in the queue
    else if (st == shmbus::detail::TagState::none)
      h.apply_uncertain.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    h.applying.store(0, std::memory_order_release);
  }

  // The word a queue put of `seq` leaves in the queue's records: the
  // sequence mixed with the sender's epoch (62 bits; another bridge's
  // puts into the same queue carry other words).
  static std::uint64_t apply_tag(const InboxHeader& h, std::uint64_t seq) noexcept {
    // relaxed: the epoch is written by this bridge alone, before any put
    std::uint64_t x = h.epoch.load(std::memory_order_relaxed) ^ (seq * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 29;
    return x >> 2;
  }

  // The topic here: opened, or made with the sender's geometry; then its
  // publisher role (a live local publisher of the name keeps it: retried).
  void open_topic(InChannel& ch, const std::string& full) {
    const shmbus::detail::TypeTag tag{ch.id.fingerprint, ch.id.type_name};
    if (!ch.local_topic) {
      try {
        ch.local_topic = Topic::open_tagged(full, SegmentOptions{}, tag);
      } catch (const Error& e) {
        if (e.code() != Errc::not_found) throw;
        ch.local_topic = Topic::create_tagged(
            full, TopicOptions{.slots = ch.slots, .max_message = ch.max_message}, tag);
      }
    }
    ch.pub = ch.local_topic->publisher();
  }

  [[nodiscard]] static bool is_open(const InChannel& ch) noexcept {
    return ch.topic ? !ch.pub.is_closed() : ch.core.has_value();
  }

  void try_open(InChannel& ch) {
    if (is_open(ch)) return;
    const std::string full = full_name(opt.bus, ch.queue);
    try {
      if (ch.topic) {
        open_topic(ch, full);
        ch.problem.clear();
        return;
      }
      ch.core = QueueCore::open(full, ch.id.kind,
                                shmbus::detail::TypeTag{ch.id.fingerprint, ch.id.type_name},
                                QueueOptions{});
      ch.problem.clear();
    } catch (const Error& e) {
      if (ch.problem != e.what()) {
        ch.problem = e.what();
        std::fprintf(stderr, "bus-bridge %s: cannot apply '%s' from %s yet: %s\n", opt.name.c_str(),
                     ch.queue.c_str(), peer.c_str(), e.what());
      }
    }
  }

  // Puts the pending messages in order; false while some wait for room.
  bool put_pending(InChannel& ch) {
    if (is_open(ch)) settle_apply(ch);
    while (!ch.pending.empty()) {
      if (!is_open(ch)) return false;
      auto& [seq, msg] = ch.pending.front();
      InboxHeader& h = *ch.hdr;
      // relaxed: ours alone. A retransmission of the put settle_apply()
      // found landed.
      if (seq <= h.applied.load(std::memory_order_relaxed)) {
        h.duplicates.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        ch.pending.pop_front();
        continue;
      }
      // [inbox.commit] applying before the put, applied after: a restart
      // that finds applying == applied + 1 knows the put may have happened.
      h.applying.store(seq, std::memory_order_seq_cst);
      bool full = false;
      std::string failed;
      if (ch.topic) {
        const PublishResult r = publish_topic(ch, msg);
        full = r == PublishResult::full;
        if (r != PublishResult::ok && !full) failed = to_string(r);
      } else {
        // [inbox.commit] the put leaves its outcome under apply_tag() in
        // the queue's records: a restart reads whether it landed.
        const QueueResult r = ch.core->put_tagged(msg, apply_tag(h, seq));
        full = r == QueueResult::full;
        if (r != QueueResult::ok && !full) failed = to_string(r);
      }
      if (full) {
        h.applying.store(0, std::memory_order_relaxed);
        ++ch.full_waits;
        return false;
      }
      if (!failed.empty())  // too large or closed: it can never go in; skip it
        std::fprintf(stderr, "bus-bridge %s: dropped message %llu of '%s': %s\n", opt.name.c_str(),
                     static_cast<unsigned long long>(seq), ch.queue.c_str(), failed.c_str());
      shmbus::detail::fault_point(shmbus::detail::FaultPoint::bridge_applied);
      h.applied.store(seq, std::memory_order_seq_cst);
      h.applying.store(0, std::memory_order_release);
      ch.pending.pop_front();
      ++ch.applied_here;
    }
    return true;
  }

  // A topic message: published (never waiting: a remote reliable
  // subscriber's full ring is `full`, retried), its source number counted.
  PublishResult publish_topic(InChannel& ch, std::span<const std::byte> body) {
    if (body.size() < kSourcePosBytes) return PublishResult::corrupted;  // a malformed frame
    std::uint64_t source = 0;
    std::memcpy(&source, body.data(), kSourcePosBytes);
    const PublishResult r = ch.pub.try_publish(body.subspan(kSourcePosBytes));
    if (r == PublishResult::full) return r;
    if (r == PublishResult::closed) {  // lost the role: kept, put once it is taken again
      ch.pub = Publisher{};
      return PublishResult::full;
    }
    // relaxed: only this bridge writes its topic inbox; statistics
    TopicInboxHeader& t = *ch.topic_hdr;
    const std::uint64_t next = t.source_next.load(std::memory_order_relaxed);  // + 1; 0: none
    if (next != 0 && source + 1 > next)
      t.gaps.fetch_add(source + 1 - next, std::memory_order_relaxed);
    // below next: the source topic was made anew (its numbers restarted)
    t.source_next.store(source + 2, std::memory_order_relaxed);
    return r;
  }

  void on_data(std::uint32_t channel, std::uint64_t seq, std::span<const std::byte> body) {
    if (channel >= in.size()) return;  // before the hello: the sender resends
    InChannel& ch = in[channel];
    const std::uint64_t applied = ch.hdr->applied.load(std::memory_order_relaxed);
    if (seq <= applied) {
      ch.hdr->duplicates.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      ch.last_acked = 0;  // acknowledge again: the sender missed the ack
      return;
    }
    const std::uint64_t expected = applied + ch.pending.size() + 1;
    // Below expected: held already. Above: a gap (a frame lost with a
    // broken link), resent by the sender's timer. Beyond kMaxPending: a
    // peer ignoring its window.
    if (seq != expected || ch.pending.size() >= kMaxPending) return;
    ch.pending.emplace_back(seq, std::vector<std::byte>(body.begin(), body.end()));
    (void)put_pending(ch);
  }

  void send_acks(Connection& c) {
    for (std::uint32_t i = 0; i < in.size(); ++i) {
      InChannel& ch = in[i];
      const std::uint64_t applied = ch.hdr->applied.load(std::memory_order_relaxed);
      if (applied != ch.last_acked && applied != 0) {
        if (send(c, Kind::ack, i, applied, {}) == SendResult::ok) ch.last_acked = applied;
      }
    }
  }

  RunEnd run(Connection& c, const std::atomic<bool>& stop, const std::function<bool()>& interrupt) {
    status->link_started();
    status->set_link(LinkState::connected);
    struct Down {  // the link state says down when run() returns, however it does
      Impl& f;
      ~Down() {
        f.publish_status(Clock::now());
        f.status->set_link(LinkState::down);
      }
    } down{*this};
    return run_link(c, stop, interrupt);
  }

  RunEnd run_link(Connection& c, const std::atomic<bool>& stop,
                  const std::function<bool()>& interrupt) {
    const auto retransmit = std::chrono::duration_cast<Clock::duration>(opt.retransmit);
    const auto heartbeat = std::chrono::duration_cast<Clock::duration>(opt.heartbeat);
    const auto silence = std::chrono::duration_cast<Clock::duration>(opt.peer_timeout);
    bool peer_ready = false;  // the peer answered our hello
    last_rx = Clock::now();
    Clock::time_point last_tx = Clock::now();
    Clock::time_point last_hello{};
    for (;;) {
      if (stop.load(std::memory_order_relaxed)) return RunEnd::stopped;  // relaxed: a flag
      if (interrupt && interrupt()) return RunEnd::interrupted;
      const Clock::time_point now = Clock::now();
      bool progress = false;
      if (!peer_ready && now - last_hello >= retransmit) {
        send_hello(c);
        last_hello = last_tx = now;
      }
      // Everything the peer sent.
      for (int n = 0; n < 4096; ++n) {
        const RecvResult r = c.try_recv_bytes(rx);
        if (r == RecvResult::empty) break;
        if (r == RecvResult::eof || r == RecvResult::closed) return RunEnd::peer_closed;
        if (r == RecvResult::peer_dead) return RunEnd::peer_reset;
        if (r != RecvResult::ok || rx.size() < sizeof(WireHeader)) continue;
        progress = true;
        last_rx = now;
        WireHeader h;
        std::memcpy(&h, rx.data(), sizeof h);
        const std::span<const std::byte> body(rx.data() + sizeof h, rx.size() - sizeof h);
        switch (h.kind) {
          case Kind::hello:
            try {
              on_hello(body);
              (void)send(c, Kind::hello_ok, 0, 0, {});
            } catch (const Error& e) {  // a hello we cannot use: say so, apply nothing
              in.clear();
              std::fprintf(stderr, "bus-bridge %s: ignored the peer's hello: %s\n",
                           opt.name.c_str(), e.what());
            }
            break;
          case Kind::hello_ok:
            if (!peer_ready) {
              peer_ready = true;
              status->set_link(LinkState::ready);
              for (std::uint32_t i = 0; i < out.size(); ++i) resend_all(c, out[i], i);
              for (std::uint32_t i = 0; i < tout.size(); ++i)
                resend_topic(c, tout[i], static_cast<std::uint32_t>(out.size() + i));
            }
            break;
          case Kind::data:
            on_data(h.channel, h.seq, body);
            break;
          case Kind::ack:
            on_ack(h.channel, h.seq);
            break;
          case Kind::ping:
            break;
        }
      }
      // Apply what waited for room or for its queue, then acknowledge.
      for (InChannel& ch : in) {
        if (!is_open(ch) && now - last_hello >= heartbeat) try_open(ch);
        if (!ch.pending.empty() && put_pending(ch)) progress = true;
      }
      send_acks(c);
      if (peer_ready) {
        for (std::uint32_t i = 0; i < out.size(); ++i) {
          OutChannel& ch = out[i];
          if (take_and_send(c, ch, i)) progress = true;
          if (ch.in_flight() != 0 && now - ch.last_progress >= retransmit) resend_all(c, ch, i);
        }
        for (std::uint32_t i = 0; i < tout.size(); ++i) {
          TopicOut& ch = tout[i];
          const auto index = static_cast<std::uint32_t>(out.size() + i);
          if (take_topic(c, ch, index, now)) progress = true;
          if (ch.in_flight() != 0 && now - ch.last_progress >= retransmit)
            resend_topic(c, ch, index);
        }
        if (progress) last_tx = now;
      }
      if (now - last_tx >= heartbeat) {
        (void)send(c, Kind::ping, 0, 0, {});
        last_tx = now;
      }
      if (now - last_rx >= silence) return RunEnd::peer_silent;
      // bus-inspector's view: every 10 ms while busy, at once when idle.
      if (now - last_status >= std::chrono::milliseconds(progress ? 10 : 1)) publish_status(now);
      if (progress) continue;
      wait_for_work(c, peer_ready);
    }
  }

  // Sleeps until the peer or a local queue with window room may have
  // something, at most a millisecond or so (edge-triggered ZMQ_FD: a
  // missed edge costs no more than that).
  void wait_for_work(Connection& c, bool peer_ready) {
    // Sending may have consumed the descriptor's edge: ask the socket first.
    if (c.poll(std::chrono::nanoseconds::zero())) return;
    std::vector<pollfd> fds;
    fds.push_back(pollfd{c.fileno(), POLLIN, 0});
    if (peer_ready)
      for (OutChannel& ch : out)
        if (ch.in_flight() < ch.hdr->window) fds.push_back(pollfd{ch.core.fileno(), POLLIN, 0});
    if (peer_ready)
      for (TopicOut& ch : tout)
        if (!ch.ended && ch.in_flight() < opt.window)
          fds.push_back(pollfd{ch.sub.fileno(), POLLIN, 0});
    bool pending = false;  // a message waits for room in a local queue
    for (const InChannel& ch : in) pending = pending || !ch.pending.empty();
    // A full peer queue has no descriptor: look again in a millisecond.
    (void)::poll(fds.data(), fds.size(), pending ? 1 : 2);
  }
};

Forwarder::Forwarder(ForwarderOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
Forwarder::Forwarder(Forwarder&&) noexcept = default;
Forwarder& Forwarder::operator=(Forwarder&&) noexcept = default;
Forwarder::~Forwarder() = default;

RunEnd Forwarder::run(Connection& conn, const std::atomic<bool>& stop,
                      const std::function<bool()>& interrupt) {
  return impl_->run(conn, stop, interrupt);
}

const ForwarderOptions& Forwarder::options() const noexcept { return impl_->opt; }

std::vector<ChannelStats> Forwarder::outbound() const {
  std::vector<ChannelStats> v;
  for (const OutChannel& ch : impl_->out)
    v.push_back(ChannelStats{
        ch.queue, false, ch.sent, ch.hdr->acked.load(std::memory_order_relaxed), ch.retransmitted,
        ch.in_flight(), ch.hdr->take_interrupted.load(std::memory_order_relaxed)});
  for (const TopicOut& ch : impl_->tout)
    v.push_back(ChannelStats{ch.cfg.topic, true, ch.sent, ch.acked, ch.retransmitted,
                             ch.in_flight(), 0, ch.sub.missed()});
  return v;
}

std::vector<InboundStats> Forwarder::inbound() const {
  std::vector<InboundStats> v;
  for (const InChannel& ch : impl_->in)
    v.push_back(InboundStats{
        ch.queue, ch.topic, ch.applied_here, ch.hdr->duplicates.load(std::memory_order_relaxed),
        ch.full_waits, ch.hdr->apply_uncertain.load(std::memory_order_relaxed),
        ch.topic_hdr != nullptr ? ch.topic_hdr->gaps.load(std::memory_order_relaxed) : 0});
  return v;
}

namespace {
// Maps a bridge state segment read-only (not attached) and checks its magic.
template <class Header>
const Header& open_state(std::optional<SharedMemory>& shm, const std::string& name,
                         std::uint64_t magic, const char* what) {
  SegmentOptions o = state_segment_options();
  o.attach = false;
  shm.emplace(SharedMemory::open(name, o));
  if (shm->size() < sizeof(Header)) throw Error(Errc::corrupted, name, "too small");
  const auto* h = reinterpret_cast<const Header*>(shm->buf().data());
  std::uint64_t found = 0;  // every state segment starts with its magic
  std::memcpy(&found, shm->buf().data(), sizeof found);
  if (found != magic) throw Error(Errc::corrupted, name, std::string("not a bridge ") + what);
  return *h;
}
}  // namespace

ChannelStats read_outbox(const std::string& bridge, const std::string& queue) {
  std::optional<SharedMemory> shm;
  const auto& h = open_state<OutboxHeader>(shm, bridge + ".out." + queue, kOutboxMagic, "outbox");
  ChannelStats c;
  c.queue = queue;
  c.acked = h.acked.load(std::memory_order_acquire);
  c.sent = h.next_seq.load(std::memory_order_acquire) - 1;
  c.in_flight = c.sent - c.acked;
  c.take_interrupted = h.take_interrupted.load(std::memory_order_relaxed);
  return c;
}

InboundStats read_inbox(const std::string& bridge, const std::string& peer,
                        const std::string& queue) {
  std::optional<SharedMemory> shm;
  const auto& h =
      open_state<InboxHeader>(shm, bridge + ".in." + peer + "." + queue, kInboxMagic, "inbox");
  InboundStats s;
  s.queue = queue;
  s.applied = h.applied.load(std::memory_order_acquire);
  s.duplicates = h.duplicates.load(std::memory_order_relaxed);
  s.apply_uncertain = h.apply_uncertain.load(std::memory_order_relaxed);
  return s;
}

InboundStats read_topic_inbox(const std::string& bridge, const std::string& peer,
                              const std::string& topic) {
  std::optional<SharedMemory> shm;
  const auto& h = open_state<TopicInboxHeader>(shm, bridge + ".tin." + peer + "." + topic,
                                               kTopicInboxMagic, "topic inbox");
  InboundStats s;
  s.queue = topic;
  s.topic = true;
  s.applied = h.inbox.applied.load(std::memory_order_acquire);
  s.duplicates = h.inbox.duplicates.load(std::memory_order_relaxed);
  s.apply_uncertain = h.inbox.apply_uncertain.load(std::memory_order_relaxed);
  s.gaps = h.gaps.load(std::memory_order_relaxed);
  return s;
}

}  // namespace shmbus::bridge
