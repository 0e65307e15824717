// The bridge status segment: its writer (the Forwarder's) and its
// validating reader (status.hpp, status_format.hpp).
#include "shmbus/bridge/status.hpp"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "shmbus/error.hpp"
#include "status_format.hpp"

namespace shmbus::bridge {

namespace {
// [status.layout] the seqlock's two fences. ThreadSanitizer does not model
// standalone fences (GCC rejects them under -fsanitize=thread with -Wtsan);
// every field under the seqlock is an atomic word, so its builds need only
// a compiler barrier.
inline void layout_fence(std::memory_order order) noexcept {
#if defined(__SANITIZE_THREAD__)
  std::atomic_signal_fence(order);
#else
  std::atomic_thread_fence(order);
#endif
}
}  // namespace

namespace detail {

namespace {

constexpr shmbus::detail::TypeTag kStatusTag{shmbus::detail::fnv1a("shmbus.bridge.status"),
                                             "bridge status"};

void store_name(std::atomic<std::uint64_t> (&words)[kStatusNameBytes / 8],
                std::string_view name) noexcept {
  char bytes[kStatusNameBytes] = {};
  std::memcpy(bytes, name.data(), std::min(name.size(), kStatusNameBytes - 1));
  for (std::size_t w = 0; w < kStatusNameBytes / 8; ++w) {
    std::uint64_t v = 0;
    std::memcpy(&v, bytes + w * 8, 8);
    words[w].store(v, std::memory_order_relaxed);  // relaxed: under [status.layout]
  }
}

}  // namespace

StatusWriter::StatusWriter(const std::string& bridge) {
  const std::string name = bridge + ".bridge";
  const std::size_t size = sizeof(StatusHeader) + kStatusCapacity * sizeof(StatusChannel);
  auto init = [](std::span<std::byte> payload) {
    auto* h = new (payload.data()) StatusHeader{};
    h->magic = kStatusMagic;
    h->version = kStatusVersion;
    h->capacity = kStatusCapacity;
    for (std::uint32_t i = 0; i < kStatusCapacity; ++i)
      new (payload.data() + sizeof(StatusHeader) + i * sizeof(StatusChannel)) StatusChannel{};
  };
  for (int round = 0;; ++round) {
    try {
      segment_ = shmbus::detail::Segment::create(name, ObjectKind::bridge, kStatusTag, size, init);
      break;
    } catch (const Error& e) {
      if (e.code() != Errc::already_exists || round >= 4) throw;
    }
    // One there: a live bridge of this name, or what a killed one left.
    try {
      const SegmentInfo info = inspect_segment(name);
      if (info.creator_alive && info.state != "closed")
        throw Error(
            Errc::already_exists, bridge,
            "a bridge of this name is running (pid " + std::to_string(info.creator.pid) + ")");
    } catch (const Error& e) {
      if (e.code() == Errc::already_exists) throw;
      // not_found: gone meanwhile; invalid: replaced below
    }
    (void)shmbus::detail::Segment::unlink(name);
  }
  header_ = reinterpret_cast<StatusHeader*>(segment_.payload());
  channels_ = reinterpret_cast<StatusChannel*>(segment_.payload() + sizeof(StatusHeader));
}

StatusWriter::~StatusWriter() {
  const std::string name = segment_.name();
  segment_.close();
  if (!name.empty()) (void)shmbus::detail::Segment::unlink(name);
}

void StatusWriter::set_layout(std::string_view peer,
                              const std::vector<StatusLayoutEntry>& channels) noexcept {
  StatusHeader& h = *header_;
  // [status.layout] odd: readers retry. relaxed load: only this bridge writes it.
  const std::uint64_t l = h.layout.load(std::memory_order_relaxed);
  h.layout.store(l + 1, std::memory_order_relaxed);
  // Pairs with the reader's acquire fence before its re-check: a reader
  // that saw any field below sees the odd value there.
  layout_fence(std::memory_order_release);
  store_name(h.peer, peer);
  count_ = std::min<std::size_t>(channels.size(), kStatusCapacity);
  for (std::size_t i = 0; i < count_; ++i) {
    StatusChannel& c = channels_[i];
    c.flags.store((channels[i].outbound ? kFlagOutbound : 0) | (channels[i].topic ? kFlagTopic : 0),
                  std::memory_order_relaxed);  // relaxed: under [status.layout]
    store_name(c.name, channels[i].name);
    for (auto& v : c.counter) v.store(0, std::memory_order_relaxed);  // relaxed: statistics
  }
  h.count.store(count_, std::memory_order_relaxed);  // relaxed: under [status.layout]
  // [status.layout] release: the fields above before the even value.
  h.layout.store(l + 2, std::memory_order_release);
}

void StatusWriter::set_link(LinkState s) noexcept {
  // relaxed (here and below): single words read on their own; statistics
  header_->link.store(static_cast<std::uint64_t>(s), std::memory_order_relaxed);
}
void StatusWriter::link_started() noexcept {
  header_->links.fetch_add(1, std::memory_order_relaxed);
}
void StatusWriter::received(std::uint64_t unix_ns) noexcept {
  header_->last_rx_ns.store(unix_ns, std::memory_order_relaxed);
}
void StatusWriter::touch(std::uint64_t unix_ns) noexcept {
  header_->updated_ns.store(unix_ns, std::memory_order_relaxed);
}
void StatusWriter::set(std::size_t i, Counter c, std::uint64_t v) noexcept {
  if (i < count_) channels_[i].counter[c].store(v, std::memory_order_relaxed);
}

}  // namespace detail

std::string_view to_string(LinkState s) noexcept {
  switch (s) {
    case LinkState::down:
      return "down";
    case LinkState::connected:
      return "connected";
    case LinkState::ready:
      return "ready";
  }
  return "unknown";
}

namespace {

using namespace detail;

// A name read from shared memory: NUL-terminated inside its 64 bytes, of
// the characters names have. Empty allowed only where `may_be_empty`.
std::string read_name(const std::atomic<std::uint64_t> (&words)[kStatusNameBytes / 8],
                      const std::string& segment, const char* what, bool may_be_empty) {
  char bytes[kStatusNameBytes];
  for (std::size_t w = 0; w < kStatusNameBytes / 8; ++w) {
    const std::uint64_t v = words[w].load(std::memory_order_relaxed);  // under [status.layout]
    std::memcpy(bytes + w * 8, &v, 8);
  }
  const std::size_t n = strnlen(bytes, kStatusNameBytes);
  if (n == kStatusNameBytes)
    throw Error(Errc::corrupted, segment, std::string(what) + " is not NUL-terminated");
  if (n == 0 && !may_be_empty)
    throw Error(Errc::corrupted, segment, std::string(what) + " is empty");
  for (std::size_t i = 0; i < n; ++i) {
    const char c = bytes[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      throw Error(Errc::corrupted, segment, std::string(what) + " has a character names cannot");
  }
  return std::string(bytes, n);
}

}  // namespace

BridgeStatus read_status(const SegmentView& view) {
  const SegmentInfo& info = view.info();
  if (info.kind != ObjectKind::bridge)
    throw Error(Errc::wrong_kind, info.name, "not a bridge status segment");
  const std::span<const std::byte> p = view.payload();
  if (p.size() < sizeof(StatusHeader))
    throw Error(Errc::corrupted, info.name, "shorter than a bridge status header");
  const auto& h = *reinterpret_cast<const StatusHeader*>(p.data());
  if (h.magic != kStatusMagic) throw Error(Errc::corrupted, info.name, "bad bridge status magic");
  if (h.version != kStatusVersion)
    throw Error(Errc::wrong_version, info.name,
                "bridge status format " + std::to_string(h.version) + ", expected " +
                    std::to_string(kStatusVersion));
  const std::size_t fits = (p.size() - sizeof(StatusHeader)) / sizeof(StatusChannel);
  // Read once: a writer (or a scribbler) changing it between the check and
  // the use must not move the bound.
  const std::uint32_t capacity = *static_cast<const volatile std::uint32_t*>(&h.capacity);
  if (capacity > fits)
    throw Error(Errc::corrupted, info.name,
                "capacity " + std::to_string(capacity) + " does not fit the segment (" +
                    std::to_string(fits) + ")");
  const auto* records = reinterpret_cast<const StatusChannel*>(p.data() + sizeof(StatusHeader));

  BridgeStatus s;
  s.name = info.name.ends_with(".bridge") ? info.name.substr(0, info.name.size() - 7) : info.name;
  s.process = info.creator;
  s.alive = info.creator_alive;
  const std::uint64_t link = h.link.load(std::memory_order_relaxed);  // relaxed: one word
  if (link > static_cast<std::uint64_t>(LinkState::ready))
    throw Error(Errc::corrupted, info.name, "link state " + std::to_string(link) + " unknown");
  s.link = static_cast<LinkState>(link);
  s.links = h.links.load(std::memory_order_relaxed);
  s.last_rx_ns = h.last_rx_ns.load(std::memory_order_relaxed);
  s.updated_ns = h.updated_ns.load(std::memory_order_relaxed);

  // [status.layout] the peer, count, flags and names of one even layout.
  for (int attempt = 0;; ++attempt) {
    if (attempt == 1000)
      throw Error(Errc::corrupted, info.name, "its layout kept changing (or stays odd)");
    // [status.layout] acquire: pairs with the writer's release of the even value.
    const std::uint64_t before = h.layout.load(std::memory_order_acquire);
    if ((before & 1) != 0) {
      ::sched_yield();
      continue;
    }
    // A check that fails counts only if the layout was stable meanwhile (a
    // writer laying out anew shows half-written records): kept until the
    // re-check below.
    std::optional<Error> bad;
    const std::uint64_t count = h.count.load(std::memory_order_relaxed);
    if (count > capacity)
      bad.emplace(Errc::corrupted, info.name,
                  std::to_string(count) + " channels, capacity " + std::to_string(capacity));
    s.channels.clear();
    try {
      if (!bad) s.peer = read_name(h.peer, info.name, "the peer's name", true);
    } catch (const Error& e) {
      bad = e;
    }
    for (std::uint64_t i = 0; !bad && i < count; ++i) {
      const StatusChannel& r = records[i];
      const std::uint64_t flags = r.flags.load(std::memory_order_relaxed);
      if ((flags & ~(kFlagOutbound | kFlagTopic)) != 0) {
        bad.emplace(Errc::corrupted, info.name, "channel " + std::to_string(i) + ": bad flags");
        break;
      }
      ChannelStatus c;
      try {
        c.name = read_name(r.name, info.name, "a channel's name", false);
      } catch (const Error& e) {
        bad = e;
        break;
      }
      c.outbound = (flags & kFlagOutbound) != 0;
      c.topic = (flags & kFlagTopic) != 0;
      auto get = [&](Counter k) { return r.counter[k].load(std::memory_order_relaxed); };
      c.messages = get(kMessages);
      c.acked = get(kAcked);
      c.in_flight = get(kInFlight);
      c.retransmitted = get(kRetransmitted);
      c.missed = get(kMissed);
      c.duplicates = get(kDuplicates);
      c.gaps = get(kGaps);
      c.full_waits = get(kFullWaits);
      c.take_interrupted = get(kTakeInterrupted);
      c.apply_uncertain = get(kApplyUncertain);
      s.channels.push_back(std::move(c));
    }
    // [status.layout] the re-check: the reads above before it; pairs with
    // the writer's release fence after its odd store.
    layout_fence(std::memory_order_acquire);
    if (h.layout.load(std::memory_order_relaxed) != before) continue;
    if (bad) throw *bad;
    break;
  }
  return s;
}

BridgeStatus read_status(const std::string& bridge) {
  return read_status(SegmentView::open(bridge + ".bridge"));
}

ObjectStats bridge_object_stats(const SegmentView& view) {
  ObjectStats stats;
  BridgeStatus s;
  try {
    s = read_status(view);
  } catch (const Error& e) {
    stats.problems.push_back(std::string("bridge status: ") + e.reason());
    return stats;
  }
  stats.gauges.emplace_back("link", static_cast<std::int64_t>(s.link));
  stats.counters.emplace_back("links", s.links);
  if (s.last_rx_ns != 0 && s.updated_ns >= s.last_rx_ns)
    stats.gauges.emplace_back("rx_age_ms",
                              static_cast<std::int64_t>((s.updated_ns - s.last_rx_ns) / 1'000'000));
  for (const ChannelStatus& c : s.channels) {
    const std::string k = (c.outbound ? "out." : "in.") + c.name + ".";
    if (c.outbound) {
      stats.counters.emplace_back(k + "sent", c.messages);
      stats.counters.emplace_back(k + "acked", c.acked);
      stats.gauges.emplace_back(k + "in_flight", static_cast<std::int64_t>(c.in_flight));
      stats.counters.emplace_back(k + "retransmitted", c.retransmitted);
      if (c.topic) stats.counters.emplace_back(k + "missed", c.missed);
    } else {
      stats.counters.emplace_back(k + "applied", c.messages);
      stats.counters.emplace_back(k + "duplicates", c.duplicates);
      stats.counters.emplace_back(k + "full_waits", c.full_waits);
      if (c.topic) stats.counters.emplace_back(k + "gaps", c.gaps);
    }
  }
  if (!s.alive)
    stats.problems.push_back("bridge process " + std::to_string(s.process.pid) +
                             " is dead: its status is stale (a restart replaces it)");
  return stats;
}

}  // namespace shmbus::bridge
