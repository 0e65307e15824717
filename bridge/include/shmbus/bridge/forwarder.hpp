// shmbus::bridge::Forwarder — the engine of bus-bridge: drains local queues
// to the same-named queues of the peer's bus over a remote Connection, with
// acknowledged forwarding, and applies what the peer forwards.
//
//   shmbus::bridge::Forwarder f{{.name = "east", .bus = "trading", .queues = {"orders"}}};
//   std::atomic<bool> stop{false};
//   // conn: a shmbus::bridge::Connection (Client() or Listener::accept())
//   // auto why = f.run(conn, stop);   // until the link fails or stop is set
//
// Both bridges of a pair run a Forwarder over one Connection; each sends its
// own `queues` and applies the peer's to its bus (queue "orders" of bus "b"
// is the segment "b.orders"; the queue must exist there, with the same
// payload type: its fingerprint travels with the channel).
//
// Delivery (per queue): a message leaves the local queue into this
// bridge's outbox, a small shared-memory segment "<name>.out.<queue>" that
// survives a SIGKILL of the bridge, and stays there until the peer
// acknowledges that it committed it to its queue. Each message carries a
// sequence number (per outbox, with a random epoch made with the outbox);
// the receiver keeps, per (sending bridge, queue), the last sequence it
// applied in "<name>.in.<peer>.<queue>" and drops anything at or below it,
// so retransmissions after a reconnect or restart are not applied twice.
// At most `window` messages per queue are unacknowledged: when the
// peer's queue is full the receiver stops acknowledging and this bridge
// stops taking (bounded memory: the outbox; nothing grows).
//
// The two windows that remain (at-least-once is not quite reached on the
// take side, exactly-once not on the apply side; each is a few
// instructions long and counted, never silent):
//   - take: the queue's get writes the message and then its length straight
//     into the outbox. A SIGKILL of the sending bridge after the get
//     claimed the slot and before it wrote the length (the copy of one
//     message) loses that message; the source queue counts it `lost` when
//     the dead bridge's record is recovered (QueueStats::lost, which is
//     an upper bound: a kill after the length but before the get's release
//     is counted lost too, though the outbox forwards that message). The
//     outbox counts restarts that found a take under way
//     (`take_interrupted`, also an upper bound).
//   - apply: a SIGKILL of the receiving bridge after its put published the
//     message and before it stored the sequence number delivers that
//     message twice after the restart (the retransmission is put again);
//     the inbox counts restarts that found a put under way
//     (`apply_uncertain`, an upper bound on such duplicates).
// Why they remain: closing them needs the queue to make "get + record"
// and "put + record" one step (a get whose slot stays held until the
// bridge releases it, a put that publishes a word of the caller's with its
// slot); see the README's Known gaps.
//
// Threads: run() uses the Connection and the queues from the calling thread
// only. Setup and run() throw shmbus::Error for local problems (a queue of
// another type, a malformed outbox); the link's problems end run().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shmbus/bridge/remote.hpp"

namespace shmbus::bridge {

struct ForwarderOptions {
  // This bridge's name: names its state segments and identifies it to the
  // peer (whose inbox is keyed by it). [A-Za-z0-9._-].
  std::string name = "bridge";
  // The local bus: queue "orders" is the segment "<bus>.orders" ("": the
  // queue's own name).
  std::string bus{};
  std::vector<std::string> queues{};             // local queues to forward to the peer
  std::size_t window = 1024;                     // unacknowledged messages per queue
  std::chrono::milliseconds retransmit{500};     // resend what is not acked after this
  std::chrono::milliseconds heartbeat{250};      // a ping when nothing else was sent
  std::chrono::milliseconds peer_timeout{3000};  // silence after which run() returns
};

// Counters of one forwarded queue, this process's view.
struct ChannelStats {
  std::string queue;
  std::uint64_t sent = 0;              // messages taken from the local queue
  std::uint64_t acked = 0;             // highest sequence the peer committed (the outbox's)
  std::uint64_t retransmitted = 0;     // data frames sent again
  std::uint64_t in_flight = 0;         // taken, not yet acknowledged (<= window)
  std::uint64_t take_interrupted = 0;  // outbox: takes a SIGKILL cut (see above)
};
struct InboundStats {
  std::string queue;
  std::uint64_t applied = 0;          // messages put into the local queue
  std::uint64_t duplicates = 0;       // retransmissions dropped by sequence
  std::uint64_t full_waits = 0;       // times the local queue was full
  std::uint64_t apply_uncertain = 0;  // inbox: puts a SIGKILL cut (see above)
};

enum class RunEnd : std::uint8_t {
  stopped,      // `stop` was set
  peer_closed,  // the peer closed the connection (eof)
  peer_reset,   // the peer does not know this connection any more (restarted)
  peer_silent,  // nothing from the peer for peer_timeout
  interrupted,  // the `interrupt` callback asked to return
};
[[nodiscard]] std::string_view to_string(RunEnd e) noexcept;

// The counters a bridge keeps in its state segments, read from any process
// (bus-inspector, tests) without disturbing it: the outbox of `queue` of the
// bridge `bridge`, and its inbox of `queue` from the peer bridge `peer`.
// Only the persistent fields are filled (sent/retransmitted/full_waits are
// per process). Throws Error(not_found, corrupted).
[[nodiscard]] ChannelStats read_outbox(const std::string& bridge, const std::string& queue);
[[nodiscard]] InboundStats read_inbox(const std::string& bridge, const std::string& peer,
                                      const std::string& queue);

class Forwarder {
 public:
  // Opens the local queues and this bridge's outboxes (creating them the
  // first time). Throws Error (not_found for a missing local queue, ...).
  explicit Forwarder(ForwarderOptions options);
  Forwarder(Forwarder&&) noexcept;
  Forwarder& operator=(Forwarder&&) noexcept;
  ~Forwarder();

  // Forwards over `conn` until `stop`, the peer closes, resets or stays
  // silent, or `interrupt` (called about every millisecond) returns true.
  RunEnd run(Connection& conn, const std::atomic<bool>& stop,
             const std::function<bool()>& interrupt = {});

  [[nodiscard]] std::vector<ChannelStats> outbound() const;
  [[nodiscard]] std::vector<InboundStats> inbound() const;
  [[nodiscard]] const ForwarderOptions& options() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmbus::bridge
