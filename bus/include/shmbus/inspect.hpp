// Object-level inspection: the live statistics of any shmbus object, read
// from a read-only SegmentView without writing to it or blocking anyone.
// bus-inspector shows these; `watch` turns the counters into rates.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"

namespace shmbus {

struct ObjectStats {
  // Monotonic counters ("messages_in", "bytes_out", ...): watch shows rates.
  std::vector<std::pair<std::string, std::uint64_t>> counters;
  // Instantaneous values ("depth", "waiters", "owner_pid", ...).
  std::vector<std::pair<std::string, std::int64_t>> gauges;
  // What looks wrong ("lock held by dead process 123"), for doctor.
  std::vector<std::string> problems;
};

// One open connection of a listener (listener.hpp): the pipe a client made,
// which keeps its name while either end has it open. For a Service the
// messages are its frames: requests (and cancels) to the server, responses
// to the client; "queued" ones were sent and not yet read (an upper bound:
// a receiver publishes its count lazily), so a service's
// calls waiting for a server are `queued_to_server`.
struct ListenerConnection {
  std::string pipe;  // "<listener>.conn-<client pid>-<start time>-<n>"
  ProcessId server, client;
  bool server_alive = false, client_alive = false;
  bool server_closed = false, client_closed = false;
  std::uint64_t to_server = 0, queued_to_server = 0;
  std::uint64_t to_client = 0, queued_to_client = 0;
  // What a Service server says it took ([service.taken]), exact where
  // to_server is lazy: messages read (requests and cancels), and calls
  // taken and not answered yet. nullopt for a plain connection (or a
  // server that publishes neither).
  std::optional<std::uint64_t> taken, calls_open;
};

// The connections of the listener `listener` (a Service's clients), by
// pipe name. A pipe that does not validate is left out.
[[nodiscard]] std::vector<ListenerConnection> listener_connections(const std::string& listener);

// Statistics of the object in `view`, by its kind. Kinds without
// statistics give an empty result. A payload that fails validation gives
// a problem entry, never a crash.
[[nodiscard]] ObjectStats object_stats(const SegmentView& view);

}  // namespace shmbus
