#include "shmbus/inspect.hpp"

#include <algorithm>

#include "shmbus/barrier.hpp"
#include "shmbus/bus.hpp"
#include "shmbus/condition.hpp"
#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/event.hpp"
#include "shmbus/lock.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/semaphore.hpp"
#include "shmbus/topic.hpp"
#include "shmbus/value.hpp"

namespace shmbus {

namespace {

void bus_registry_stats(const SegmentView& view, ObjectStats& stats) {
  if (view.payload().size() < sizeof(detail::Registry)) {
    stats.problems.push_back("registry payload too small");
    return;
  }
  const auto* reg = reinterpret_cast<const detail::Registry*>(view.payload().data());
  if (reg->entry_count != detail::kRegistryEntries) {
    stats.problems.push_back("registry entry count " + std::to_string(reg->entry_count) +
                             ", expected " + std::to_string(detail::kRegistryEntries));
    return;
  }
  stats.gauges.emplace_back("objects", static_cast<std::int64_t>(Bus::list_objects(view).size()));
  // [registry.lifecycle] a snapshot only: we never take part in the handshake.
  const std::uint64_t closer = reg->closing.load(std::memory_order_seq_cst);
  if (closer != 0 && !is_alive(ProcessId::unpack(closer))) {
    stats.problems.push_back("closing token held by dead process " +
                             std::to_string(ProcessId::unpack(closer).pid));
  }
}

void gauge(ObjectStats& stats, const std::string& name, std::int64_t v) {
  stats.gauges.emplace_back(name, v);
}

void pipe_object_stats(const SegmentView& view, ObjectStats& stats) {
  PipeStats p;
  try {
    p = pipe_stats(view);
  } catch (const Error& e) {
    stats.problems.push_back(e.reason());
    return;
  }
  gauge(stats, "duplex", p.duplex);
  gauge(stats, "statistics", p.statistics);
  for (int e = 0; e < 2; ++e) {
    const std::string end = e == 0 ? "end0." : "end1.";
    const auto& ring = p.rings[static_cast<std::size_t>(e)];
    const auto& owner = p.ends[static_cast<std::size_t>(e)];
    // rings[e] flows into end e; a half-duplex pipe has only rings[0].
    if (p.duplex || e == 0) {
      stats.counters.emplace_back(end + "messages_in", ring.messages_received);
      stats.counters.emplace_back(end + "bytes_in", ring.bytes_received);
      stats.counters.emplace_back(end + "blocked_recvs", ring.blocked_recvs);
      stats.counters.emplace_back(end + "peer_messages_out", ring.messages_sent);
      stats.counters.emplace_back(end + "peer_blocked_sends", ring.blocked_sends);
      gauge(stats, end + "depth_bytes", static_cast<std::int64_t>(ring.depth_bytes));
    }
    gauge(stats, end + "owner_pid", owner.owner.pid);
    gauge(stats, end + "closed", owner.closed);
    stats.counters.emplace_back(end + "peer_deaths", owner.peer_deaths);
    if (owner.owner.pid != 0 && !owner.owner_alive && !owner.closed) {
      stats.problems.push_back("end " + std::to_string(e) + " held by dead process " +
                               std::to_string(owner.owner.pid) + ": its peer reads EOF");
    }
  }
}

// The backlog's queue statistics, the servers (the processes attached to
// the backlog) and one gauge group per open connection ("conn0.client_pid").
void listener_object_stats(const SegmentView& view, ObjectStats& stats) {
  detail::queue_object_stats(view, stats);
  const auto& attached = view.info().attached;
  gauge(stats, "servers",
        std::count_if(attached.begin(), attached.end(),
                      [](const AttachedProcess& p) { return p.alive; }));
  const auto connections = listener_connections(view.info().name);
  gauge(stats, "connections", static_cast<std::int64_t>(connections.size()));
  for (std::size_t i = 0; i < connections.size(); ++i) {
    const ListenerConnection& c = connections[i];
    const std::string group = "conn" + std::to_string(i) + ".";
    gauge(stats, group + "client_pid", c.client.pid);
    gauge(stats, group + "server_pid", c.server.pid);
    stats.counters.emplace_back(group + "to_server", c.to_server);
    stats.counters.emplace_back(group + "to_client", c.to_client);
    gauge(stats, group + "queued_to_server", static_cast<std::int64_t>(c.queued_to_server));
    gauge(stats, group + "queued_to_client", static_cast<std::int64_t>(c.queued_to_client));
    if (c.taken) stats.counters.emplace_back(group + "taken", *c.taken);
    if (c.calls_open) gauge(stats, group + "calls_open", static_cast<std::int64_t>(*c.calls_open));
    if (c.client.pid != 0 && !c.client_alive && !c.client_closed && !c.server_closed) {
      stats.problems.push_back(c.pipe + ": client pid " + std::to_string(c.client.pid) +
                               " died; the server drops it at its next read");
    }
  }
}

// One gauge group per live subscriber ("sub3.lag"), so `show` lists each
// one: process, policy, lag in messages, lapped and missed counts.
void topic_object_stats(const SegmentView& view, ObjectStats& stats) {
  TopicStats t;
  try {
    t = topic_stats(view);
  } catch (const Error& e) {
    stats.problems.push_back(e.reason());
    return;
  }
  gauge(stats, "slots", t.slots);
  gauge(stats, "max_message", static_cast<std::int64_t>(t.max_message));
  gauge(stats, "publisher_pid", t.publisher.pid);
  gauge(stats, "closed", t.closed);
  gauge(stats, "subscribers", static_cast<std::int64_t>(t.subscribers.size()));
  // [topic.reliable] the records a full ring makes the publisher read
  // (a dead reliable subscriber's until it is evicted).
  gauge(stats, "reliable_marked", t.reliable_marked);
  stats.counters.emplace_back("published", t.published);
  stats.counters.emplace_back("blocked_publishes", t.blocked_publishes);
  stats.counters.emplace_back("evictions", t.evictions);
  stats.counters.emplace_back("takeovers", t.takeovers);
  if (t.publisher.pid != 0 && !t.publisher_alive && !t.closed) {
    stats.problems.push_back("publisher pid " + std::to_string(t.publisher.pid) +
                             " is dead: the next publisher() takes over");
  }
  std::uint64_t slowest = 0;
  for (const auto& s : t.subscribers) {
    const std::string p = "sub" + std::to_string(s.index) + ".";
    gauge(stats, p + "pid", s.owner.pid);
    gauge(stats, p + "reliable", s.policy == SubscriberPolicy::reliable);
    gauge(stats, p + "lag", static_cast<std::int64_t>(s.lag));
    stats.counters.emplace_back(p + "received", s.received);
    stats.counters.emplace_back(p + "lapped", s.lapped);
    stats.counters.emplace_back(p + "missed", s.missed);
    slowest = std::max(slowest, s.lag);
    if (!s.alive) {
      stats.problems.push_back("subscriber " + std::to_string(s.index) + " (" +
                               std::string(to_string(s.policy)) + ") held by dead process " +
                               std::to_string(s.owner.pid));
    }
  }
  gauge(stats, "slowest_lag", static_cast<std::int64_t>(slowest));
}

void lock_stats(const SegmentView& view, ObjectStats& stats) {
  const LockInfo info = read_lock_info(view.payload().data(), view.payload().size());
  gauge(stats, "locked", info.locked);
  gauge(stats, "waiters", info.waiters);
  if (info.owner) {
    gauge(stats, "owner_pid", info.owner->pid);
    if (!is_alive(*info.owner)) {
      stats.problems.push_back("held by dead process " + std::to_string(info.owner->pid) +
                               ": the next acquirer gets owner_died");
    }
  }
  if (info.depth != 0) gauge(stats, "depth", info.depth);
  if (info.not_recoverable) stats.problems.push_back("not recoverable (released inconsistent)");
}

// Value/Array: its lock as a Lock's, the element count, and a value that a
// writer's death may have torn ([cells.writing] in value.hpp).
void cells_stats(const SegmentView& view, ObjectStats& stats) {
  lock_stats(view, stats);
  if (view.payload().size() < sizeof(detail::CellsHeader)) {
    stats.problems.push_back("payload too short for its header");
    return;
  }
  const auto& h = *reinterpret_cast<const detail::CellsHeader*>(view.payload().data());
  const std::uint64_t count = h.count;  // written once before ready
  gauge(stats, "count", static_cast<std::int64_t>(std::min<std::uint64_t>(count, INT64_MAX)));
  // As an opener checks (value.hpp, Cells): the elements must fit the payload.
  const std::size_t payload = view.payload().size();
  if (payload < detail::kCellsOffset || h.elem_size == 0 || count == 0 ||
      count > (payload - detail::kCellsOffset) / h.elem_size) {
    stats.problems.push_back("corrupted: " + std::to_string(count) + " elements of " +
                             std::to_string(h.elem_size) + " B do not fit its " +
                             std::to_string(payload) + " B payload; every open fails");
  }
  // relaxed (both): a snapshot for display; the holder writes them under the lock.
  const std::uint64_t torn = h.torn.load(std::memory_order_relaxed);
  const std::uint64_t writing = h.writing.load(std::memory_order_relaxed);
  const auto what = [&](std::uint64_t v) {
    if (count == 1) return std::string("its value");
    return v > count ? std::string("every element") : "element " + std::to_string(v - 1);
  };
  if (torn != 0) {
    stats.problems.push_back("torn: a process died writing " + what(torn) +
                             "; get() throws until set() writes it whole or clear_torn()");
  }
  const LockInfo lock = read_lock_info(view.payload().data(), view.payload().size());
  if (writing != 0 && lock.owner && !is_alive(*lock.owner)) {
    stats.problems.push_back("its holder died writing " + what(writing) +
                             ": the next acquirer reports it torn");
  }
}

void sleepers_gauge(ObjectStats& stats, std::uint32_t sleepers) {
  gauge(stats, "sleepers", sleepers);
}

}  // namespace

std::vector<ListenerConnection> listener_connections(const std::string& listener) {
  std::vector<ListenerConnection> out;
  const std::string prefix = listener + ".conn-";
  for (const std::string& name : list_segments()) {
    if (!name.starts_with(prefix)) continue;
    try {
      const SegmentView view = SegmentView::open(name);
      const PipeStats p = pipe_stats(view);  // validates; throws for anything else
      if (!p.duplex) continue;               // not a connection Client() made
      // End 0 is the server's (accept() takes the first end), end 1 the
      // client's; rings[e] flows into end e.
      ListenerConnection c;
      c.pipe = name;
      c.server = p.ends[0].owner;
      c.server_alive = p.ends[0].owner_alive;
      c.server_closed = p.ends[0].closed;
      c.client = p.ends[1].owner;
      c.client_alive = p.ends[1].owner_alive;
      c.client_closed = p.ends[1].closed;
      const auto queued = [](const PipeRingStats& r) {
        return r.messages_sent > r.messages_received ? r.messages_sent - r.messages_received : 0;
      };
      c.to_server = p.rings[0].messages_received;
      c.queued_to_server = queued(p.rings[0]);
      c.to_client = p.rings[1].messages_received;
      c.queued_to_client = queued(p.rings[1]);
      // [service.taken] relaxed: a snapshot of the server's words, for
      // display (pipe_stats() validated the control block above).
      const auto* control = reinterpret_cast<const detail::PipeControl*>(view.payload().data());
      const auto& line = control->rings[1].producer;
      const auto word = [](const std::atomic<std::uint64_t>& w) -> std::optional<std::uint64_t> {
        const std::uint64_t v = w.load(std::memory_order_relaxed);
        return v == 0 ? std::nullopt : std::optional<std::uint64_t>(v - 1);
      };
      c.taken = word(line.taken);
      c.calls_open = word(line.open);
      if (c.server.pid != 0) out.push_back(std::move(c));  // else: not accepted yet
    } catch (const Error&) {  // gone meanwhile, initialising or not a pipe
    }
  }
  return out;
}

ObjectStats object_stats(const SegmentView& view) {
  ObjectStats stats;
  if (!view.info().kind || view.payload().empty()) return stats;
  switch (*view.info().kind) {
    case ObjectKind::bus_registry:
      bus_registry_stats(view, stats);
      break;
    case ObjectKind::pipe:
      pipe_object_stats(view, stats);
      break;
    case ObjectKind::lock:
    case ObjectKind::rlock:
      lock_stats(view, stats);
      break;
    case ObjectKind::value:
    case ObjectKind::array:
      cells_stats(view, stats);
      break;
    case ObjectKind::semaphore:
    case ObjectKind::bounded_semaphore:
      if (auto i = read_semaphore_info(view.payload().data(), view.payload().size())) {
        gauge(stats, "value", i->value);
        if (i->bound != 0) gauge(stats, "bound", i->bound);
        sleepers_gauge(stats, i->sleepers);
      }
      break;
    case ObjectKind::event:
      if (auto i = read_event_info(view.payload().data(), view.payload().size())) {
        gauge(stats, "set", i->is_set);
        sleepers_gauge(stats, i->sleepers);
      }
      break;
    case ObjectKind::condition:
      if (auto i = read_condition_info(view.payload().data(), view.payload().size())) {
        sleepers_gauge(stats, i->sleepers);
      } else {
        stats.problems.push_back("condition payload fails validation");
      }
      break;
    case ObjectKind::barrier:
      if (auto i = read_barrier_info(view.payload().data(), view.payload().size())) {
        gauge(stats, "parties", i->parties);
        gauge(stats, "n_waiting", i->n_waiting);
        gauge(stats, "broken", i->broken);
        gauge(stats, "registered", i->registered);
        if (i->broken) stats.problems.push_back("broken: reset() it before the next round");
      }
      break;
    case ObjectKind::queue:
    case ObjectKind::simple_queue:
    case ObjectKind::joinable_queue:
      detail::queue_object_stats(view, stats);
      break;
    case ObjectKind::listener:  // its backlog, servers and connections
      listener_object_stats(view, stats);
      break;
    case ObjectKind::topic:
      topic_object_stats(view, stats);
      break;
    default:
      break;
  }
  return stats;
}

}  // namespace shmbus
