// Service / ServiceClient — request and response over a Listener: what a
// multiprocessing Manager's proxies do, without a proxy per call. Any
// number of clients, many calls in flight per client, each correlated by
// an id; a request may get several responses; a call may be cancelled.
//
//   shmbus::Service<std::string, std::size_t> lengths{"lengths"};   // server
//   while (auto req = lengths.take_for(1s)) req->respond(req->value().size());
//
//   shmbus::ServiceClient<std::string, std::size_t> client{"lengths"};
//   std::size_t n = client.call("hello", 1s);                        // 5
//   auto a = client.call_async("x");                                 // in flight
//   auto b = client.call_async("yy");                                // together
//   std::size_t both = a.get_for(1s) + b.get_for(1s);
//
// Types go through the codec (shmbus/codec.hpp): trivially copyable types,
// strings, std containers, MSGPACK_DEFINE structs.
//
// Wire: each client has its own duplex pipe (Listener/Client). A frame is
// a 16-byte header (call id, kind) and the encoded value. The server takes
// at most one request per client per turn (round robin), so a client that
// floods requests cannot starve the others; a client can have no more
// requests in flight than its pipe holds (its send waits: back pressure).
//
// Deaths, and what they answer:
//   - the server dies (or closes): every pending call of every client ends
//     at once with ServerGone (an Error(peer_dead)) whose maybe_executed()
//     says whether the server had taken that request (it may have run it)
//     or not (it did not: calling again is safe); the client's next call
//     connects again, so a server restarted under the same name serves it.
//   - a client dies: its connection is dropped at the server's next turn,
//     with the requests it had queued; responses to it are discarded.
//   - a response the client does not read within
//     ServiceOptions::respond_timeout drops that client (its pipe is full:
//     the server never blocks on one client); so does a request larger
//     than one ring frame whose rest does not arrive within respond_timeout
//     of its first fragment (a client stopped half way through it), and a
//     take_for() gathering such a request may return that much past its
//     deadline.
// Bad input: a frame shorter than its header, of an unknown kind, or a
// value that does not decode is a protocol error: the server drops that
// client; a client ignores responses to ids it does not wait for.
//
// Several servers: with ServiceOptions::listener.shared in each, any
// number of server processes serve one name. Calls spread per client
// connection: each client is accepted by one server, which takes every
// request of that client (each request is taken once); a server's death
// ends the pending calls of its own clients only (peer_dead, as above), and
// their next call connects to a live server. Without `shared`, a second
// Service of a live server's name throws already_exists; a server that
// died leaves the name to the next one.
//
// Waiting: take_for() waits on the listener and every client's pipe at
// once (shmbus::wait()). By default it spins while any client's pipe is
// busy-poll (that client's requests wake nobody; with up to 16 clients,
// every end read in place, it spins on their pipes directly for up to
// 20 us at a time and reads a request the moment it sees one, then
// wait() spins with its liveness checks); ServiceOptions::wait picks the
// server's own strategy instead:
//
//   shmbus::Service<std::string, std::size_t> quiet{
//       "quiet", {.wait = shmbus::WaitPolicy{.strategy = shmbus::WaitStrategy::blocking}}};
//
// Threads: a Service is used by one thread at a time, with the
// ServiceRequests it returned, their destruction included (a request may
// outlive its Service, but then may only be destroyed, by the thread that
// destroyed the Service or one that synchronised with it). A request is
// not handed to a worker thread to answer or drop while the Service takes
// others: the count that ties requests to their client is not atomic. So
// is a ServiceClient used with its PendingCalls.
#pragma once

#include <algorithm>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "shmbus/codec.hpp"
#include "shmbus/listener.hpp"

namespace shmbus {

class Waitable;  // wait_any.hpp

struct ServiceOptions {
  ListenerOptions listener{};
  // How the server waits for requests, whatever strategy its clients chose
  // for their pipes (ServiceClient's PipeOptions): blocking or adaptive
  // keeps a busy-poll client from making an idle server spin; its requests
  // still wake the server at once (each client's sends are made to wake it:
  // an atomic exchange per request for blocking, a fence-free check for
  // adaptive), and the client still spins for its responses. Unset (the
  // default): the server waits as its clients' pipes do, so one busy-poll
  // client keeps it spinning until its deadline. Overrides listener.wait.
  // The server takes requests through one wait() over its clients, which
  // follows the strategy only: an adaptive server spins wait()'s own 50 us
  // before it sleeps, whatever `spin` says.
  std::optional<WaitPolicy> wait{};
  // How long respond() waits for room in a client's pipe, and a take for
  // the rest of a request that arrives in fragments, before it drops the
  // client.
  std::chrono::milliseconds respond_timeout{100};
};

// A call that ended without its response. maybe_executed(): whether the
// server may have run it (or part of it), so whether resending could run
// it twice. What each case means is on the two kinds below.
class CallFailed : public Error {
 public:
  [[nodiscard]] bool maybe_executed() const noexcept { return maybe_executed_; }

 protected:
  CallFailed(Errc code, std::string object, std::string reason, bool maybe_executed)
      : Error(code, std::move(object), std::move(reason)), maybe_executed_(maybe_executed) {}

 private:
  bool maybe_executed_;
};

// A call that ended because its server died or closed: code() is
// peer_dead. maybe_executed(): the server had taken the request before it
// went (it may have run it, or part of it), or cannot say; false: the
// request was still in the pipe, never handed to the server's code.
class ServerGone : public CallFailed {
 public:
  ServerGone(std::string object, std::string reason, bool maybe_executed)
      : CallFailed(Errc::peer_dead, std::move(object), std::move(reason), maybe_executed) {}
};

// A call that ended at its deadline: code() is timed_out. maybe_executed():
// the request was sent, so the server may still run it (a call()'s late
// response is dropped; a PendingCall stays pending and may still get it);
// false: it was never handed to the server (not connected or not sent by
// the deadline, or sent only in part), so resending cannot run it twice.
class CallTimedOut : public CallFailed {
 public:
  CallTimedOut(std::string object, std::string reason, bool maybe_executed)
      : CallFailed(Errc::timed_out, std::move(object), std::move(reason), maybe_executed) {}
};

namespace detail {

enum class FrameKind : std::uint32_t {
  request = 1,
  cancel = 2,
  response = 3,
  last = 4,
  failed = 5
};

struct ServiceHeader {
  std::uint64_t id;
  std::uint32_t kind;  // FrameKind; untrusted on read
  std::uint32_t reserved;
};
static_assert(sizeof(ServiceHeader) == 16);

// A frame is sent as one message, header and value written straight into
// the pipe's ring (Connection::send_encoded), and received in place.
struct ServiceAccess {
  template <class T, class Slow>
  static SendResult send(Connection& c, std::uint64_t id, FrameKind kind, const T& value,
                         Slow&& slow) {
    const ServiceHeader h{id, static_cast<std::uint32_t>(kind), 0};
    return c.send_encoded(std::as_bytes(std::span<const ServiceHeader, 1>(&h, 1)), value, slow);
  }
  static RecvResult next(Connection& c, std::span<const std::byte>& frame, bool& in_place,
                         const Clock::time_point* deadline, bool wait, Clock::duration grace = {}) {
    return c.next_message(frame, in_place, deadline, wait, grace);
  }
  static void release(Connection& c, bool in_place) noexcept { c.release_message(in_place); }
  // now + timeout, saturated (Connection's: hours::max() waits forever).
  template <class Rep, class Period>
  static Clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout) noexcept {
    return Connection::deadline_after(timeout);
  }
  // `timeout` as a Clock::duration without reading the clock, saturated:
  // half what the clock holds (146 years) or more is max() (forever;
  // deadline_after() saturates only nearer its end, 292 years less the
  // uptime: no process waits either), zero, negative or NaN is zero. Any
  // duration type, floating-point ones included.
  template <class Rep, class Period>
  static Clock::duration saturated(std::chrono::duration<Rep, Period> timeout) noexcept {
    const double t = std::chrono::duration<double>(timeout).count();
    if (!(t > 0)) return Clock::duration::zero();
    if (t >= std::chrono::duration<double>(Clock::duration::max()).count() / 2)
      return Clock::duration::max();
    return std::chrono::duration_cast<Clock::duration>(timeout);
  }
  // [service.spin] What the server's spin reads of a client's end: whether
  // it can be read by the inlined path (owned here, open, nothing peeked),
  // how it waits, and its hot word (the header at its read position).
  static bool fast_ready(const Connection& c) noexcept { return c.fast_recv_ready(); }
  static bool busy_poll(const Connection& c) noexcept {
    return c.recv_policy_.strategy == WaitStrategy::busy_poll;
  }
  static bool has_data(const Connection& c) noexcept { return c.rx_.has_data(); }
  static bool peer_closed(const Connection& c) noexcept { return c.peer_closed(); }
  // A client is waiting in the backlog: what wait() reads of it (a slot
  // claimed by a client that died connecting is not; wait() repairs it).
  static bool backlog_ready(const Listener& l) noexcept { return l.backlog_.ready(false); }
  // Repairs that slot when its client is dead (as wait() does).
  static void repair_backlog(Listener& l) noexcept { (void)l.backlog_.repair_head(false); }

  // [service.taken] A server publishes, in the producer line of the ring it
  // answers on (a line only it writes, which its client never reads while
  // the server lives), 1 + the messages it has taken from the client and
  // 1 + the calls it took and has not answered. relaxed (both sides): a
  // single writer; its client reads `taken` only once the server died or
  // closed (the dead process's stores are all in memory by then, and a
  // request it took was taken before its handler ran: program order), and
  // inspectors read a snapshot.
  //
  // The line of the ring `c` sends on (the server's own).
  static RingProducerLine& own_line(Connection& c) noexcept {
    return c.control_->rings[1 - c.end_].producer;
  }
  // The line of the ring `c` receives on (its peer's).
  static const RingProducerLine& peer_line(const Connection& c) noexcept {
    return c.control_->rings[c.end_].producer;
  }
  // Whether `c` can send no more frames (a fragmented send stopped halfway).
  static bool send_failed(const Connection& c) noexcept { return c.tx_.corrupted(); }
};

// A value a server keeps per client, whose memory the next request from
// that client is decoded into (a string's or a vector's: no allocation
// when it fits). Made by the typed Service, which alone reads it back.
struct SpareValue {
  virtual ~SpareValue() = default;
};
template <class T>
struct Spare final : SpareValue {
  T value{};
};
// The request types that use it: those a decode overwrites whole (a struct
// decoded into an old value would keep the old value's fields that a
// shorter message leaves out).
template <class T>
struct ReusesValue : std::false_type {};
template <>
struct ReusesValue<std::string> : std::true_type {};
template <class E, class A>
struct ReusesValue<std::vector<E, A>>
    : std::bool_constant<(std::is_arithmetic_v<E> && !std::is_same_v<E, bool>) ||
                         std::is_same_v<E, std::byte>> {};
template <class T>
inline constexpr bool kReusesValue = ReusesValue<T>::value;

// The untyped server: connections, round robin, framing.
class ServiceServer {
 public:
  struct Peer;  // one client's connection and the ids it cancelled
  // A counted reference to a Peer; the count is not atomic: a Service and
  // the requests it returned are used by one thread at a time (see Threads
  // above). A request outliving its Service keeps its Peer, and with it the
  // client's Connection open, until it is destroyed.
  using PeerRef = boost::intrusive_ptr<Peer>;
  struct Taken {
    PeerRef peer;
    std::uint64_t id = 0;
    // The encoded request, in place in the client's pipe: valid until
    // release_request() or the next take().
    std::span<const std::byte> value;
  };

  ServiceServer(std::string_view name, const ServiceOptions& options);
  ServiceServer(ServiceServer&&) noexcept;
  ServiceServer& operator=(ServiceServer&&) noexcept;
  ~ServiceServer();

  // The next request, or nullopt at the deadline (nullptr: none).
  std::optional<Taken> take(const Clock::time_point* deadline);
  // take() within `timeout`: the clock is read only when no request is
  // there at once.
  std::optional<Taken> take_within(Clock::duration timeout);
  // Frees the frame the last take() returned (its value is read).
  void release_request() noexcept;
  // Sends one response frame; false when the client is gone (or dropped).
  template <class T>
  bool respond(const Taken& t, FrameKind kind, const T& value) {
    bool answered = false;
    Connection* c = respond_to(t, kind, answered);
    if (c == nullptr) return answered;
    const SendResult r = ServiceAccess::send(*c, t.id, kind, value, [&](auto frame) {
      return c->send_bytes_for(frame, respond_timeout_);
    });
    return r == SendResult::ok || respond_failed(t);
  }
  static bool cancelled(const Taken& t) noexcept;
  // The spare value of the client `t` came from (null until one is given
  // back); it lives as long as a request of that client does.
  static std::unique_ptr<SpareValue>& spare(const Taken& t) noexcept;
  [[nodiscard]] std::size_t clients() const noexcept { return peers_.size(); }
  [[nodiscard]] const std::string& name() const noexcept { return listener_.name(); }
  // Drops a client whose request did not decode.
  void drop(const Taken& t) noexcept;

 private:
  // The connection to respond on, or nullptr when nothing is to be sent
  // (`answered`: true when the caller cancelled, false when it is gone).
  Connection* respond_to(const Taken& t, FrameKind kind, bool& answered);
  // Accepts new clients, then one round robin turn over them: a request,
  // or nullopt when none has one now. `quick`: a lone client's end with
  // nothing to read is passed over without a look at its peer's close or
  // death (wait_and_take()'s full turn follows, also when the deadline has
  // passed).
  std::optional<Taken> turn(bool quick = false);
  // turn()'s part when the backlog counts a client: accepts every client
  // ready, after repairing a head slot a client that died connecting left.
  void accept_new();
  // After a turn found nothing: waits (spin(), else wait()) and turns
  // again until a request or the deadline (nullptr: none); `now`: the
  // clock read just before (unused without a deadline).
  std::optional<Taken> wait_and_take(const Clock::time_point* deadline, Clock::time_point now);
  // [service.spin] Spins on the clients' hot words when wait() would spin
  // anyway: `ready` when a turn should look now, `skipped` when it cannot
  // (wait() is to, at once), `gave_up` after its 20 us (wait() is to).
  enum class Spin { skipped, ready, gave_up };
  Spin spin(const Clock::time_point* deadline) noexcept;
  // respond()'s send failed: drops the client; false.
  bool respond_failed(const Taken& t) noexcept;

  Listener listener_;
  std::chrono::milliseconds respond_timeout_;
  std::vector<PeerRef> peers_;
  std::size_t next_ = 0;            // round robin
  Connection* held_ = nullptr;      // whose frame take() returned in place
  bool held_in_place_ = false;      // ... in its ring (else in the thread's buffer)
  std::vector<Waitable> waiting_;   // the listener and peers_' ends, for wait()
  std::vector<std::size_t> ready_;  // what wait() found ready
  // turn()'s look at a backlog head held by a client that died connecting.
  static constexpr std::chrono::milliseconds kBacklogCheckEvery{10};
  Clock::time_point next_backlog_check_{};
};

// One client's connection and the ids it cancelled (here, not in
// service.cpp: a request's respond() and destruction use it inline).
struct ServiceServer::Peer {
  std::size_t refs = 0;  // PeerRefs to it (intrusive_ptr_add_ref)
  Connection conn;
  // Ids taken and not yet answered with a last response or a failure
  // (sorted: a client's ids grow, so taking one appends and answering the
  // oldest erases the front), and those of them the client cancelled: a
  // cancel for any other id (already answered, never sent: the pipe is FIFO,
  // so a cancel follows its request) is ignored, so a hostile client cannot
  // grow these sets.
  std::vector<std::uint64_t> open;
  std::unordered_set<std::uint64_t> cancelled;

  [[nodiscard]] bool is_open(std::uint64_t id) const noexcept {
    return std::binary_search(open.begin(), open.end(), id);
  }
  void add_open(std::uint64_t id) {
    if (open.empty() || open.back() < id)
      open.push_back(id);
    else
      open.insert(std::lower_bound(open.begin(), open.end(), id), id);
  }
  void remove_open(std::uint64_t id) noexcept {
    if (!open.empty() && open.back() == id) {  // the newest: a call answered at once
      open.pop_back();
      return;
    }
    const auto it = std::lower_bound(open.begin(), open.end(), id);
    if (it != open.end() && *it == id) open.erase(it);
  }
  std::unique_ptr<SpareValue> spare;  // see ServiceServer::spare()
  bool gone = false;                  // closed, dead, or dropped
  std::uint64_t taken = 0;            // messages read from the client

  // [service.taken] after each message read, before a request is handed
  // out; `open` whenever it changes.
  void publish_taken() noexcept {
    ServiceAccess::own_line(conn).taken.store(++taken + 1, std::memory_order_relaxed);
  }
  void publish_open() noexcept {
    ServiceAccess::own_line(conn).open.store(open.size() + 1, std::memory_order_relaxed);
  }

  // Ends the connection now (the client reads end of file), even while a
  // request of it is still held.
  void drop() noexcept {
    gone = true;
    conn.close();
  }
};

inline void intrusive_ptr_add_ref(ServiceServer::Peer* p) noexcept { ++p->refs; }
inline void intrusive_ptr_release(ServiceServer::Peer* p) noexcept {
  if (--p->refs == 0) delete p;
}

// ServiceServer's per-request steps, inline in each respond().
inline Connection* ServiceServer::respond_to(const Taken& t, FrameKind kind, bool& answered) {
  Peer& p = *t.peer;
  answered = false;
  if (p.gone) return nullptr;
  const bool ends = kind != FrameKind::response;  // last or failed: the call is over
  // The set is empty unless the client cancelled something: no lookup then.
  const bool cancelled = p.cancelled.empty() ? false
                         : ends              ? p.cancelled.erase(t.id) != 0
                                             : p.cancelled.count(t.id) != 0;
  if (ends) {
    p.remove_open(t.id);
    p.publish_open();
  }
  answered = cancelled;  // the caller no longer waits
  return cancelled ? nullptr : &p.conn;
}
inline std::unique_ptr<SpareValue>& ServiceServer::spare(const Taken& t) noexcept {
  return t.peer->spare;
}
inline bool ServiceServer::cancelled(const Taken& t) noexcept {
  return t.peer->cancelled.count(t.id) != 0;
}

// The untyped client: one connection, pending calls by id.
class ServiceClientCore {
 public:
  ServiceClientCore(std::string_view name, std::optional<Clock::duration> connect_timeout,
                    const PipeOptions& options);
  // Sends a request; returns its id. Connects again first if the server died.
  // `record` = false: no pending record (answer() is to follow at once).
  // A full pipe holds the send until `deadline` (null: for as long as the
  // server lives), then throws CallTimedOut, maybe_executed() false (one
  // sent only in part also resets the connection).
  template <class T>
  std::uint64_t send(const T& value, bool record = true,
                     const Clock::time_point* deadline = nullptr) {
    Connection& c = conn_ ? *conn_ : connection(deadline);
    const SendResult r =
        ServiceAccess::send(c, next_id_, FrameKind::request, value, [&](auto frame) {
          return deadline ? c.send_bytes_until(frame, *deadline) : c.send_bytes(frame);
        });
    if (r == SendResult::ok && !record) [[likely]] {  // call(): sent, no record
      ++sent_;
      return next_id_++;
    }
    return sent(r, record);  // the pipe was full: back pressure
  }
  // The last response of call `id`, the request sent last with no record
  // (send(value, false)), or nullopt at the deadline; valid until
  // release(). The usual case, its one last response arriving first, makes
  // no record; anything else makes it (`recorded`: the caller forgets it)
  // and goes on as next() does. Throws as next().
  std::optional<std::span<const std::byte>> answer(std::uint64_t id,
                                                   const Clock::time_point* deadline,
                                                   bool& recorded);
  // The next response of call `id` (the last: `last` = true), or nullopt at
  // the deadline; the bytes are valid until release() or the next call on
  // this client.
  // Throws ServerGone when the server died or closed, and
  // Error(task_failed) when the server answered with an error.
  std::optional<std::span<const std::byte>> next(std::uint64_t id,
                                                 const Clock::time_point* deadline, bool& last);
  // Frees the response next() returned (it may be in the pipe's ring).
  void release() noexcept {
    if (!held_in_place_) return;
    held_in_place_ = false;
    if (conn_) ServiceAccess::release(*conn_, true);
  }
  void cancel(std::uint64_t id) noexcept;
  void forget(std::uint64_t id) noexcept;
  // Error(decode_error): a response that is not a T (as decode<T>() says).
  template <class T>
  [[noreturn]] void throw_decode_error() const {
    throw_decode_error(detail::type_name<T>());
  }
  [[noreturn]] void throw_decode_error(std::string_view type) const;
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  // What a call gathers while another one is read: made only then, so a
  // call read as it arrives (the usual one) is three words in pending_,
  // moved and erased without a destructor to run.
  struct Later {
    // Responses, from `head` on (a vector, not a deque: libstdc++'s deque
    // allocates when made).
    std::vector<std::vector<std::byte>> responses;
    std::size_t head = 0;
    std::optional<std::string> failed;  // the server's error, when it sent one
  };
  struct Pending {
    bool done = false;           // the last response is among `responses`
    bool server_gone = false;    // the server died or closed meanwhile
    bool maybe_executed = true;  // then: whether the server had taken it
    std::uint64_t message = 0;   // messages sent on the connection before it
    std::unique_ptr<Later> later;

    [[nodiscard]] bool queued() const noexcept {
      return later && later->head < later->responses.size();
    }
    [[nodiscard]] bool failed() const noexcept { return later && later->failed; }
    Later& gather() {
      if (!later) later = std::make_unique<Later>();
      return *later;
    }
  };
  // The pending call `id`, or nullptr.
  Pending* find(std::uint64_t id) noexcept;
  void connect();
  // The connection, connected again first if the server died.
  // The connection, connecting again first (by `deadline` too, if given;
  // a connect that times out throws CallTimedOut: nothing was sent).
  Connection& connection(const Clock::time_point* deadline);
  // After a request was sent: its id (pending from now, with `record`),
  // or Error.
  std::uint64_t sent(SendResult r, bool record);
  void add_record(std::uint64_t id, std::uint64_t message);  // call `id`, sent as `message`
  // What next() does with a frame read while it waits for call `id`
  // (record `p`): true when it is that call's response, returned in
  // `value` (held until release()); else the frame is freed, and what it
  // says for another call kept in that call's record.
  bool on_frame(std::uint64_t id, Pending& p, std::span<const std::byte> frame, bool in_place,
                std::span<const std::byte>& value, bool& last);
  // Ends every pending call (the server died or closed), each told
  // whether the server had taken it, and drops the connection.
  // `taken_final` = false (the server may still be running: a connection
  // given up for corruption): every call ends as maybe executed.
  void end_pending(bool taken_final = true) noexcept;
  // end_pending(), then throws ServerGone for call `id` (`why`: how it went).
  [[noreturn]] void server_gone(RecvResult why, std::uint64_t id);
  [[noreturn]] void throw_gone(std::uint64_t id, const char* how);

  std::string name_;
  std::optional<Clock::duration> connect_timeout_;
  PipeOptions options_;
  std::optional<Connection> conn_;
  std::uint64_t next_id_ = 1;
  std::uint64_t sent_ = 0;  // messages sent on conn_ (requests and cancels)
  // Pending calls by id: a vector sorted by id (ids grow, so a call
  // appends and the usual one, the newest, is popped from the back; the
  // memory is reused, no allocation per call; sized by the calls pending,
  // however old the oldest).
  struct Entry {
    std::uint64_t id;
    Pending call;
  };
  std::vector<Entry> pending_;
  std::vector<std::byte> frame_;  // a cancel being sent
  std::vector<std::byte> held_;   // a response returned from `responses`
  bool held_in_place_ = false;    // next() returned a frame of the ring: release()
};

}  // namespace detail

template <class Req, class Resp>
class Service;

// One request a server took. respond() once (or several times, the last
// with last = true); a request dropped without a last response leaves its
// caller waiting until its timeout.
template <class Req, class Resp>
class ServiceRequest {
 public:
  [[nodiscard]] const Req& value() const noexcept { return value_; }
  [[nodiscard]] std::uint64_t id() const noexcept { return taken_.id; }
  // Whether the caller cancelled the call (checked when the server last
  // read from that client).
  [[nodiscard]] bool cancelled() const noexcept { return detail::ServiceServer::cancelled(taken_); }
  // Sends a response; false if the client is gone. `last` = false sends
  // a partial response: more follow.
  bool respond(const Resp& r, bool last = true) {
    return server_->respond(taken_, last ? detail::FrameKind::last : detail::FrameKind::response,
                            r);
  }
  // Ends the call with an error: the caller's get() throws
  // Error(task_failed, what).
  bool fail(std::string_view what) {
    return server_->respond(taken_, detail::FrameKind::failed, std::string(what));
  }

 private:
  friend class Service<Req, Resp>;
  // Only a Service makes one (std::optional constructs it in place).
  class Key {
    friend class Service<Req, Resp>;
    Key() = default;
  };

 public:
  // Its value starts as the spare its client's last request gave back
  // (detail::SpareValue), for the decode to reuse.
  ServiceRequest(Key, detail::ServiceServer* server, detail::ServiceServer::Taken taken)
      : server_(server), taken_(std::move(taken)) {
    taken_.value = {};  // it viewed the server's frame, which the next take() reuses
    if constexpr (detail::kReusesValue<Req>) {
      if (auto& spare = detail::ServiceServer::spare(taken_))
        value_ = std::move(static_cast<detail::Spare<Req>&>(*spare).value);
    }
  }
  ServiceRequest(ServiceRequest&&) noexcept = default;
  ServiceRequest& operator=(ServiceRequest&&) noexcept = default;
  // Gives the value's memory back to its client's spare (the client's
  // record, which this request keeps alive: never the Service's, which may
  // be gone), unless it is over kSpareLimit: one large request does not pin
  // its memory for the connection's life.
  ~ServiceRequest() {
    if constexpr (detail::kReusesValue<Req>) {
      if (!taken_.peer) return;  // moved from
      if (value_.capacity() * sizeof(typename Req::value_type) > kSpareLimit) return;
      auto& spare = detail::ServiceServer::spare(taken_);
      if (!spare) spare.reset(new (std::nothrow) detail::Spare<Req>());
      if (spare) static_cast<detail::Spare<Req>&>(*spare).value = std::move(value_);
    }
  }

 private:
  static constexpr std::size_t kSpareLimit = 64 * 1024;  // bytes a spare may keep
  detail::ServiceServer* server_;
  detail::ServiceServer::Taken taken_;
  Req value_{};
};

template <class Req, class Resp>
class Service {
 public:
  // Serves `name` (a Listener of that name).
  explicit Service(std::string_view name, const ServiceOptions& options = {})
      : core_(name, options) {}

  // The next request from any client, waiting for one; nullopt at the
  // deadline.
  template <class Rep, class Period>
  [[nodiscard]] std::optional<ServiceRequest<Req, Resp>> take_for(
      std::chrono::duration<Rep, Period> timeout) {
    // Saturated (ServiceAccess::saturated): hours::max() waits forever;
    // zero, negative or NaN looks once. The clock is read only when no
    // request is there at once.
    const Clock::duration within = detail::ServiceAccess::saturated(timeout);
    return take_impl([&] { return core_.take_within(within); });
  }
  [[nodiscard]] ServiceRequest<Req, Resp> take() {
    return *take_impl([&] { return core_.take(nullptr); });
  }

  [[nodiscard]] std::size_t clients() const noexcept { return core_.clients(); }
  [[nodiscard]] const std::string& name() const noexcept { return core_.name(); }

 private:
  // `take`: the core's take() or take_within().
  template <class Take>
  std::optional<ServiceRequest<Req, Resp>> take_impl(Take take) {
    using Request = ServiceRequest<Req, Resp>;
    // One object returned on every path: the request is decoded straight
    // into what the caller gets (no move of it or its value).
    std::optional<Request> r;
    for (;;) {
      auto t = take();
      if (!t) return r;
      const std::span<const std::byte> bytes = t->value;
      r.emplace(typename Request::Key{}, &core_, std::move(*t));
      const bool decoded = detail::decode_message(bytes, r->value_);
      core_.release_request();
      if (decoded) return r;
      core_.drop(r->taken_);  // not a Req: a protocol error
      r.reset();
    }
  }
  detail::ServiceServer core_;
};

template <class Req, class Resp>
class ServiceClient;

// A call in flight. get()/get_for() return its (last) response; next_for()
// walks several responses. Throws Error(peer_dead) if the server died,
// Error(task_failed) if it failed the call, Error(decode_error) if a
// response is not a Resp, CallTimedOut from get_for() or next_for() at
// its timeout (the call stays pending: either may be called again).
template <class Req, class Resp>
class PendingCall {
 public:
  PendingCall(PendingCall&& o) noexcept
      : client_(std::exchange(o.client_, nullptr)), id_(o.id_), done_(o.done_) {}
  PendingCall& operator=(PendingCall&&) = delete;
  PendingCall(const PendingCall&) = delete;
  ~PendingCall() {
    if (client_ != nullptr) client_->forget(id_);
  }

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  // The next response, or nullopt once the last one was returned.
  template <class Rep, class Period>
  [[nodiscard]] std::optional<Resp> next_for(std::chrono::duration<Rep, Period> timeout) {
    if (done_) return std::nullopt;
    const auto deadline = detail::ServiceAccess::deadline_after(timeout);
    bool last = false;
    auto bytes = client_->next(id_, &deadline, last);
    if (!bytes)
      throw CallTimedOut(client_->name(),
                         "call " + std::to_string(id_) + ": no response by the deadline", true);
    done_ = last;
    const Release release{client_};
    return decode<Resp>(*bytes, client_->name());
  }
  // The last response (earlier partial ones are skipped).
  template <class Rep, class Period>
  [[nodiscard]] Resp get_for(std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = detail::ServiceAccess::deadline_after(timeout);
    return get_impl(&deadline);
  }
  [[nodiscard]] Resp get() { return get_impl(nullptr); }
  // The same into `out`, reusing what it owns (a string's or a vector's
  // memory: no allocation when the response fits); `out` is unspecified
  // after an Error.
  template <class Rep, class Period>
  void get_for(Resp& out, std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = detail::ServiceAccess::deadline_after(timeout);
    get_impl(&deadline, out);
  }
  // Asks the server to drop the call; a response already on its way is
  // discarded.
  void cancel() noexcept {
    if (client_ == nullptr || done_) return;
    client_->cancel(id_);
    done_ = true;
  }

 private:
  friend class ServiceClient<Req, Resp>;
  PendingCall(detail::ServiceClientCore* client, std::uint64_t id) : client_(client), id_(id) {}
  Resp get_impl(const Clock::time_point* deadline) {
    Resp out{};
    get_impl(deadline, out);
    return out;
  }
  void get_impl(const Clock::time_point* deadline, Resp& out) {
    if (done_) throw Error(Errc::invalid_argument, client_->name(), "the call has ended");
    for (;;) {
      bool last = false;
      auto bytes = client_->next(id_, deadline, last);
      if (!bytes)
        throw CallTimedOut(client_->name(),
                           "call " + std::to_string(id_) + ": no response by the deadline", true);
      if (!last) continue;
      done_ = true;
      decode_last(*client_, *bytes, out);
      return;
    }
  }
  // Decodes the last response into `out` and frees it (it may be in the
  // pipe's ring).
  static void decode_last(detail::ServiceClientCore& client, std::span<const std::byte> bytes,
                          Resp& out) {
    const Release release{&client};
    if constexpr (detail::kReusesValue<Resp>) {
      if (!detail::decode_message(bytes, out)) client.throw_decode_error<Resp>();
    } else {
      // Decoded into the caller's struct, a response that omits fields
      // would leave the last call's values in them: a fresh one.
      Resp fresh{};
      if (!detail::decode_message(bytes, fresh)) client.throw_decode_error<Resp>();
      out = std::move(fresh);
    }
  }
  // Frees the response next() returned once it is decoded (or not).
  struct Release {
    detail::ServiceClientCore* client;
    ~Release() { client->release(); }
  };
  detail::ServiceClientCore* client_;
  std::uint64_t id_;
  bool done_ = false;
};

template <class Req, class Resp>
class ServiceClient {
 public:
  // Connects to the server of `name` (see Client(); `options` shape this
  // client's pipe: capacity, wait strategy).
  explicit ServiceClient(std::string_view name,
                         std::optional<Clock::duration> connect_timeout = std::nullopt,
                         const PipeOptions& options = {})
      : core_(std::make_unique<detail::ServiceClientCore>(name, connect_timeout, options)) {}

  // One call: the (last) response, or Error (timed_out — a CallTimedOut —,
  // peer_dead — a ServerGone when the server died or closed —, task_failed,
  // decode_error).
  template <class Rep, class Period>
  [[nodiscard]] Resp call(const Req& request, std::chrono::duration<Rep, Period> timeout) {
    Resp out{};
    call(request, out, timeout);
    return out;
  }
  [[nodiscard]] Resp call(const Req& request) {
    Resp out{};
    call_impl(core_->send(request, false), nullptr, out);
    return out;
  }
  // One call, its response decoded into `out` (see PendingCall::get_for).
  template <class Rep, class Period>
  void call(const Req& request, Resp& out, std::chrono::duration<Rep, Period> timeout) {
    const auto deadline = detail::ServiceAccess::deadline_after(timeout);
    call_impl(core_->send(request, false, &deadline), &deadline, out);
  }
  // Sends the request now; the response is collected through the result
  // (any number in flight at once).
  [[nodiscard]] PendingCall<Req, Resp> call_async(const Req& request) {
    return PendingCall<Req, Resp>(core_.get(), core_->send(request));
  }

 private:
  // call_async(request).get_for(out, ...) without a PendingCall: the
  // request `id` was sent with no record, which the core makes only when
  // the call needs one (ServiceClientCore::answer()).
  void call_impl(std::uint64_t id, const Clock::time_point* deadline, Resp& out) {
    struct Forget {
      detail::ServiceClientCore& core;
      std::uint64_t id;
      bool recorded = false;
      ~Forget() {
        if (recorded) core.forget(id);
      }
    } forget{*core_, id};
    const auto bytes = core_->answer(id, deadline, forget.recorded);
    if (!bytes) {
      throw CallTimedOut(core_->name(),
                         "call " + std::to_string(id) + ": no response by the deadline", true);
    }
    PendingCall<Req, Resp>::decode_last(*core_, *bytes, out);
  }
  std::unique_ptr<detail::ServiceClientCore> core_;  // stable for PendingCalls
};

}  // namespace shmbus
