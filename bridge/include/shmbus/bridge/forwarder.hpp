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
// Through a SIGKILL of either bridge at any instruction, a queue message is
// delivered exactly once: the two steps that are not one atomic step are
// settled on restart from what the queue itself recorded.
//   - take: the queue's get is a held get (QueueCore::get_held): it copies
//     the message into the outbox entry and writes its length and queue
//     position there before it releases the slot, and if the bridge dies
//     before that release the queue's recovery gives the message back
//     (FULL again at its position) instead of counting it lost. A
//     restarted bridge first repairs its dead predecessor's claim, then
//     keeps the outbox entry only if it is complete and the queue no
//     longer holds its position; else the message is taken again
//     (counted `take_interrupted`: takes a kill cut, messages given back).
//   - apply: the put is a tagged put (QueueCore::put_tagged): it leaves a
//     word made of the sequence and the sender's epoch, with its outcome,
//     in the bridge's record in the queue; the queue's recovery of a dead
//     bridge decides that outcome (published: LANDED, else DROPPED). A
//     restarted bridge that finds a put under way (the inbox's `applying`)
//     reads the outcome and marks the sequence applied or not, so the
//     retransmission is dropped or put. `apply_uncertain` counts the puts
//     it could not settle (a topic's publish; the record reused by another
//     tagged put before the restart): expected 0 for queues.
// What this needs: the bridge is the forwarded queue's only consumer (a
// message given back could otherwise be taken by another consumer before
// the restart and be delivered both there and on the peer). Another
// consumer cannot lose such a message: one that steps past the bridge's
// claim while it is given back moves the read position back to it (see
// [queue.giveback] in bus/src/queue.cpp).
//
// Topics (`topics`): a local Topic is republished on the peer's bus, on
// the topic of the same name there (created with this topic's slots,
// message size and type when it does not exist; its publisher role is the
// receiving bridge's). The bridge subscribes here with the policy given per
// topic, and what holds is exactly this:
//   - every message the bridge's subscription receives reaches the remote
//     topic once, in order, while both bridges live: frames lost with a
//     broken link are resent from a window kept in the sending bridge's
//     memory, duplicates dropped by sequence as for queues;
//   - reliable: the remote topic's reliable subscribers hold the receiving
//     bridge (a full ring there: it stops acknowledging), which holds the
//     sending bridge at `window` unacknowledged messages, whose reliable
//     subscription then holds the local publisher, as any slow reliable
//     subscriber does (also while the link is down). Memory stays bounded:
//     the two rings and the window. Nothing is dropped while both live.
//   - lossy: the local publisher is never slowed; the bridge's subscription
//     is lapped when the link or the remote side is slower, and counts what
//     it missed (ChannelStats::missed). Remote reliable subscribers still
//     get everything the bridge forwarded, in order.
//   - a bridge that dies loses what its memory held (at most `window`
//     messages) and what the topic published while no bridge subscribed:
//     topics are not durable. The receiving bridge counts every such hole
//     by the source topic's message numbers, which travel with each message
//     (InboundStats::gaps, persistent in its topic inbox
//     "<name>.tin.<peer>.<topic>"); remote subscribers see a restarted
//     receiving bridge as a publisher takeover (publisher_dead, then the
//     new publisher's messages), as for any publisher that died.
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
#include "shmbus/topic.hpp"

namespace shmbus::bridge {

// A local topic to republish on the peer's bus (see above).
struct TopicForward {
  std::string topic;
  // How the bridge subscribes here: lossy never slows the local publisher;
  // reliable carries back-pressure from the remote reliable subscribers.
  SubscriberPolicy policy = SubscriberPolicy::lossy;
};

struct ForwarderOptions {
  // This bridge's name: names its state segments and identifies it to the
  // peer (whose inbox is keyed by it). [A-Za-z0-9._-].
  std::string name = "bridge";
  // The local bus: queue "orders" is the segment "<bus>.orders" ("": the
  // queue's own name).
  std::string bus{};
  std::vector<std::string> queues{};             // local queues to forward to the peer
  std::vector<TopicForward> topics{};            // local topics to republish there
  std::size_t window = 1024;                     // unacknowledged messages per channel
  std::chrono::milliseconds retransmit{500};     // resend what is not acked after this
  std::chrono::milliseconds heartbeat{250};      // a ping when nothing else was sent
  std::chrono::milliseconds peer_timeout{3000};  // silence after which run() returns
};

// Counters of one forwarded queue or topic, this process's view.
struct ChannelStats {
  std::string queue;  // the queue's or topic's name
  bool topic = false;
  std::uint64_t sent = 0;              // messages taken from the local queue
  std::uint64_t acked = 0;             // highest sequence the peer committed (the outbox's)
  std::uint64_t retransmitted = 0;     // data frames sent again
  std::uint64_t in_flight = 0;         // taken, not yet acknowledged (<= window)
  std::uint64_t take_interrupted = 0;  // outbox: takes a SIGKILL cut (see above)
  std::uint64_t missed = 0;            // topic: lost by a lossy subscription here (lapped)
};
struct InboundStats {
  std::string queue;  // the queue's or topic's name
  bool topic = false;
  std::uint64_t applied = 0;          // messages put into the local queue
  std::uint64_t duplicates = 0;       // retransmissions dropped by sequence
  std::uint64_t full_waits = 0;       // times the local queue was full
  std::uint64_t apply_uncertain = 0;  // inbox: puts a SIGKILL cut (see above)
  std::uint64_t gaps = 0;             // topic: source messages never republished here
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
// The topic inbox of `topic` from `peer` (applied, duplicates, gaps, ...).
[[nodiscard]] InboundStats read_topic_inbox(const std::string& bridge, const std::string& peer,
                                            const std::string& topic);

class Forwarder {
 public:
  // Opens the local queues and this bridge's outboxes (creating them the
  // first time) and subscribes to the local topics (messages published
  // from here on are owed to the bridge). Throws Error (not_found for a
  // missing local queue or topic, ...).
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
