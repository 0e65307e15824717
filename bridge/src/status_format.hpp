// The bridge status segment's format and its writer (status.hpp says what
// it is for). Private to shmbus::bridge: readers use read_status().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/bridge/status.hpp"
#include "shmbus/detail/segment.hpp"

namespace shmbus::bridge::detail {

// Bridge status segment "<name>.bridge", format v1 (ObjectKind::bridge).
// Offsets only. Written by the bridge's Forwarder alone; read by anyone.
//
//   0    magic, version, capacity                       (set once before ready)
//   64   layout, link, links, last_rx_ns, updated_ns, count   (bridge-owned)
//   128  peer name: 64 bytes in 8 words                 (under layout)
//   192  channels[capacity], 192 bytes each: flags and name (under
//        layout), then the counters (each its own atomic word)
//
// [status.layout] a seqlock over the peer name, count and every record's
// flags and name: odd while the bridge rewrites them (a new peer's hello).
// Counters are not under it: each is one word, monotonic but in_flight.
inline constexpr std::uint64_t kStatusMagic = 0x3141545342524253ULL;  // "SBRBSTA1"
inline constexpr std::uint32_t kStatusVersion = 1;
inline constexpr std::uint32_t kStatusCapacity = 64;
inline constexpr std::size_t kStatusNameBytes = 64;

enum Counter : std::size_t {
  kMessages,
  kAcked,
  kInFlight,
  kRetransmitted,
  kMissed,
  kDuplicates,
  kGaps,
  kFullWaits,
  kTakeInterrupted,
  kApplyUncertain,
  kCounters
};

inline constexpr std::uint64_t kFlagOutbound = 1;
inline constexpr std::uint64_t kFlagTopic = 2;

struct alignas(64) StatusChannel {
  std::atomic<std::uint64_t> flags;                       // under layout
  std::atomic<std::uint64_t> name[kStatusNameBytes / 8];  // NUL-padded, under layout
  std::atomic<std::uint64_t> counter[kCounters];          // bridge-owned
};
static_assert(sizeof(StatusChannel) == 192);

struct StatusHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t capacity;
  alignas(64) std::atomic<std::uint64_t> layout;  // [status.layout]
  std::atomic<std::uint64_t> link;                // LinkState
  std::atomic<std::uint64_t> links;
  std::atomic<std::uint64_t> last_rx_ns;
  std::atomic<std::uint64_t> updated_ns;
  std::atomic<std::uint64_t> count;  // records in use, under layout
  alignas(64) std::atomic<std::uint64_t> peer[kStatusNameBytes / 8];
};
static_assert(sizeof(StatusHeader) == 192);
static_assert(offsetof(StatusHeader, layout) == 64);
static_assert(offsetof(StatusHeader, peer) == 128);

// One channel as the writer lays it out.
struct StatusLayoutEntry {
  std::string name;
  bool outbound = false;
  bool topic = false;
};

// The running bridge's side. Creates "<bridge>.bridge", replacing one a
// dead bridge left; a live one is Errc::already_exists. The destructor
// removes it.
class StatusWriter {
 public:
  explicit StatusWriter(const std::string& bridge);
  StatusWriter(const StatusWriter&) = delete;
  StatusWriter& operator=(const StatusWriter&) = delete;
  ~StatusWriter();

  // Rewrites the peer and the records (at most the capacity: the rest are
  // not shown).
  void set_layout(std::string_view peer, const std::vector<StatusLayoutEntry>& channels) noexcept;
  void set_link(LinkState s) noexcept;
  void link_started() noexcept;
  void received(std::uint64_t unix_ns) noexcept;
  void touch(std::uint64_t unix_ns) noexcept;
  // Record i's counter c (ignored beyond the records in use).
  void set(std::size_t i, Counter c, std::uint64_t v) noexcept;

 private:
  shmbus::detail::Segment segment_;
  StatusHeader* header_ = nullptr;
  StatusChannel* channels_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace shmbus::bridge::detail
