// shmbus::bridge status — what a running bus-bridge shows bus-inspector:
// its link, its peer and, per channel, its counters and backlog.
//
//   auto s = shmbus::bridge::read_status("east");     // "<name>.bridge"
//   for (const auto& c : s.channels)
//     std::printf("%s %s: %llu in flight\n", c.outbound ? "to" : "from", c.name.c_str(),
//                 static_cast<unsigned long long>(c.in_flight));
//
// Every Forwarder keeps one status segment "<name>.bridge" (ObjectKind::
// bridge), written by its run() alone (about every 10 ms, at every idle
// moment and when a link starts or ends), removed by its destructor. A
// bridge killed by a signal leaves it with a dead creator: the next
// Forwarder of that name replaces it, `bus-inspector gc` removes it, and
// a second live Forwarder of the name is refused (Errc::already_exists).
// Counters are monotonic (bus-inspector watch shows their rates).
//
// Readers validate everything they read (shared memory is untrusted): a
// record that does not validate is Error(corrupted) naming what was wrong.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shmbus/inspect.hpp"
#include "shmbus/segment_info.hpp"

namespace shmbus::bridge {

enum class LinkState : std::uint8_t {
  down = 0,       // no connection (connecting, or between links)
  connected = 1,  // a connection; the peer has not answered this bridge's hello yet
  ready = 2,      // forwarding both ways
};
[[nodiscard]] std::string_view to_string(LinkState s) noexcept;

struct ChannelStatus {
  std::string name;  // the queue's or topic's name
  bool outbound = false;
  bool topic = false;
  std::uint64_t messages = 0;          // outbound: taken (a queue's: its outbox's total,
                                       // across restarts); inbound: applied by this process
  std::uint64_t acked = 0;             // outbound: acknowledged by the peer
  std::uint64_t in_flight = 0;         // outbound: backlog, taken and not yet acknowledged
  std::uint64_t retransmitted = 0;     // outbound
  std::uint64_t missed = 0;            // outbound topic: lost by a lossy subscription
  std::uint64_t duplicates = 0;        // inbound: retransmissions dropped by sequence
  std::uint64_t gaps = 0;              // inbound topic: source messages never republished
  std::uint64_t full_waits = 0;        // inbound: the local queue or topic was full
  std::uint64_t take_interrupted = 0;  // outbound queue (forwarder.hpp)
  std::uint64_t apply_uncertain = 0;   // inbound (forwarder.hpp)
};

struct BridgeStatus {
  std::string name;  // the bridge's
  ProcessId process;
  bool alive = false;
  LinkState link = LinkState::down;
  std::string peer;              // the peer bridge's name ("" before its first hello)
  std::uint64_t links = 0;       // connections run since the bridge started
  std::uint64_t last_rx_ns = 0;  // CLOCK_REALTIME of the last frame from the peer (0: none)
  std::uint64_t updated_ns = 0;  // CLOCK_REALTIME of the last update
  std::vector<ChannelStatus> channels;
};

// Reads the status of the bridge `bridge` (segment "<bridge>.bridge").
// Throws Error(not_found, wrong_kind, corrupted).
[[nodiscard]] BridgeStatus read_status(const std::string& bridge);
[[nodiscard]] BridgeStatus read_status(const SegmentView& view);

// The same as counters and gauges for bus-inspector's show/watch/doctor:
// counters "out.<q>.sent", "out.<q>.acked", "in.<q>.applied", ...; gauges
// "link" (LinkState), "out.<q>.in_flight", "rx_age_ms". Problems: a dead
// bridge process, a corrupted record.
[[nodiscard]] ObjectStats bridge_object_stats(const SegmentView& view);

}  // namespace shmbus::bridge
