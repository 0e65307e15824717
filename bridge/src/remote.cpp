// Remote Listener / Client / Connection on ZeroMQ with CURVE (remote.hpp).
//
// Sockets: the listener is a ROUTER (CURVE server, ROUTER_MANDATORY so a
// send to a vanished peer says so), each client a DEALER (CURVE client)
// with a fixed random routing id, so that a TCP link ZeroMQ re-establishes
// is still the same connection for the listener.
//
// Wire: one ZeroMQ frame per message; its first byte says what it is:
//   'H' hello    client -> listener, asks to be accepted
//   'W' welcome  listener -> client, accept() took it
//   'D' data     either way, the rest of the frame is the message
//   'B' bye      either way, close(): the peer reads eof
//   'R' reset    listener -> client, the listener does not know this
//                connection (it restarted): the client reads peer_dead
//
// Authentication: a ZAP handler (ZeroMQ's RFC 27) on inproc://zeromq.zap.01
// in the listener's context, run by one thread, answers 200 for a client
// public key in the allowed set and 400 (logged, counted) otherwise; it is
// bound before the ROUTER so no handshake ever bypasses it.
#include "shmbus/bridge/remote.hpp"

#include <poll.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "shmbus/error.hpp"

namespace shmbus::bridge {

namespace {

constexpr char kHello = 'H';
constexpr char kWelcome = 'W';
constexpr char kData = 'D';
constexpr char kBye = 'B';
constexpr char kReset = 'R';
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr int kLingerMs = 200;  // how long close() lets a bye drain

// A zmq_msg_t that closes itself.
struct Msg {
  zmq_msg_t m;
  Msg() noexcept { zmq_msg_init(&m); }
  ~Msg() { zmq_msg_close(&m); }
  Msg(const Msg&) = delete;
  Msg& operator=(const Msg&) = delete;
  [[nodiscard]] const std::byte* data() noexcept {
    return static_cast<const std::byte*>(zmq_msg_data(&m));
  }
  [[nodiscard]] std::size_t size() noexcept { return zmq_msg_size(&m); }
  [[nodiscard]] bool more() noexcept { return zmq_msg_more(&m) != 0; }
};

Error zmq_error(std::string object, const char* what) {
  const int e = errno;
  return Error(e == EADDRINUSE ? Errc::already_exists : Errc::system, std::move(object),
               std::string(what) + ": " + zmq_strerror(e));
}

void set_opt(void* s, int opt, const void* v, std::size_t n, const std::string& object) {
  if (zmq_setsockopt(s, opt, v, n) != 0) throw zmq_error(object, "zmq_setsockopt");
}
void set_int(void* s, int opt, int v, const std::string& object) {
  set_opt(s, opt, &v, sizeof v, object);
}
void set_key(void* s, int opt, const std::string& z85, const std::string& object) {
  set_opt(s, opt, z85.c_str(), z85.size() + 1, object);  // 41 bytes: Z85 with its NUL
}
// Options both sides share: heartbeats drop a dead TCP peer (ZeroMQ then
// reconnects), quick reconnects, bounded queues.
void common_options(void* s, int hwm, const std::string& object) {
  set_int(s, ZMQ_SNDHWM, hwm, object);
  set_int(s, ZMQ_RCVHWM, hwm, object);
  set_int(s, ZMQ_LINGER, kLingerMs, object);
  set_int(s, ZMQ_HEARTBEAT_IVL, 1000, object);
  set_int(s, ZMQ_HEARTBEAT_TIMEOUT, 3000, object);
  set_int(s, ZMQ_RECONNECT_IVL, 100, object);
  set_int(s, ZMQ_RECONNECT_IVL_MAX, 1000, object);
}

// Milliseconds left until `deadline` for zmq_poll (rounded up; -1: none).
long poll_ms(const Clock::time_point* deadline) noexcept {
  if (deadline == nullptr) return -1;
  const auto left = *deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  return static_cast<long>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
}

bool wait_socket(void* s, short events, const Clock::time_point* deadline) noexcept {
  zmq_pollitem_t item{s, 0, events, 0};
  for (;;) {
    const int rc = zmq_poll(&item, 1, poll_ms(deadline));
    if (rc > 0) return true;
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0 || deadline == nullptr || Clock::now() >= *deadline) return false;
  }
}

std::string z85_of(const std::string& raw32) {
  std::array<char, kZ85KeySize + 1> out{};
  if (raw32.size() != 32 ||
      zmq_z85_encode(out.data(), reinterpret_cast<const std::uint8_t*>(raw32.data()), 32) ==
          nullptr)
    return "(not a 32-byte key)";
  return {out.data(), kZ85KeySize};
}
std::string raw_of(const std::string& z85) {
  std::array<std::uint8_t, 32> out{};
  zmq_z85_decode(out.data(), z85.c_str());
  return {reinterpret_cast<const char*>(out.data()), out.size()};
}

// Sends [type][payload] as one frame (optionally after a routing id frame).
SendResult send_frame(void* s, const std::string* routing_id, char type,
                      std::span<const std::byte> payload, const Clock::time_point* deadline,
                      bool block) noexcept {
  if (payload.size() > (std::size_t{1} << 31)) return SendResult::too_large;
  for (;;) {
    if (routing_id != nullptr &&
        zmq_send(s, routing_id->data(), routing_id->size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
      if (errno == EHOSTUNREACH) return SendResult::broken;
      if (errno != EAGAIN) return errno == ETERM ? SendResult::closed : SendResult::broken;
    } else {
      Msg m;
      zmq_msg_close(&m.m);
      if (zmq_msg_init_size(&m.m, payload.size() + 1) != 0) return SendResult::too_large;
      auto* p = static_cast<char*>(zmq_msg_data(&m.m));
      p[0] = type;
      if (!payload.empty()) std::memcpy(p + 1, payload.data(), payload.size());
      if (zmq_msg_send(&m.m, s, ZMQ_DONTWAIT) >= 0) return SendResult::ok;
      if (errno != EAGAIN) return errno == ETERM ? SendResult::closed : SendResult::broken;
    }
    // EAGAIN: the high-water mark is reached (a ROUTER drops the id frame
    // with the rest, so the whole message is retried).
    if (!block) return SendResult::full;
    if (!wait_socket(s, ZMQ_POLLOUT, deadline) && deadline != nullptr && Clock::now() >= *deadline)
      return SendResult::timeout;
  }
}

}  // namespace

// ---- the listener's shared state ------------------------------------------

namespace detail {

struct Hub {
  struct Peer {
    std::deque<std::vector<std::byte>> inbox;  // data not yet received
    std::string key;                           // Z85 of the client's public key
    bool accepted = false;
    bool eof = false;
  };

  std::string where;  // as given to the Listener; set before the ZAP thread starts
  void* ctx = nullptr;
  void* router = nullptr;
  std::set<std::string> allowed;  // raw 32-byte public keys
  std::function<void(const RefusedClient&)> on_refused;
  std::atomic<std::uint64_t> refused{0};
  std::atomic<bool> stop{false};
  std::thread zap;
  std::map<std::string, Peer> peers;  // by routing id
  std::deque<std::string> backlog;    // hellos not yet accepted
  bool accepting = true;

  ~Hub() {
    stop.store(true, std::memory_order_relaxed);  // relaxed: the thread polls it every 100 ms
    if (zap.joinable()) zap.join();
    if (router != nullptr) zmq_close(router);
    if (ctx != nullptr) zmq_ctx_term(ctx);
  }

  void run_zap(void* rep) noexcept {
    while (!stop.load(std::memory_order_relaxed)) {  // relaxed: a flag, no data with it
      zmq_pollitem_t item{rep, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 100) <= 0) continue;
      std::vector<std::string> frames;
      for (;;) {
        Msg m;
        if (zmq_msg_recv(&m.m, rep, 0) < 0) break;
        frames.emplace_back(reinterpret_cast<const char*>(m.data()), m.size());
        if (!m.more()) break;
      }
      if (frames.size() < 6) continue;  // not a ZAP request: nothing to answer
      // version, request id, domain, address, routing id, mechanism, credentials
      const bool curve = frames[5] == "CURVE" && frames.size() >= 7 && frames[6].size() == 32;
      const bool ok = curve && allowed.count(frames[6]) != 0;
      const std::string user = curve ? z85_of(frames[6]) : std::string();
      if (!ok) {
        refused.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        RefusedClient who{curve ? user : "(no CURVE key)", frames[3]};
        try {
          if (on_refused)
            on_refused(who);
          else
            std::fprintf(stderr, "shmbus bridge %s: refused client key %s from %s\n", where.c_str(),
                         who.public_key.c_str(), who.address.c_str());
        } catch (...) {  // a throwing logger does not stop authentication
        }
      }
      const std::array<std::string, 6> reply{
          frames[0],      frames[1], ok ? "200" : "400", ok ? "OK" : "client key not allowed",
          ok ? user : "", ""};
      for (std::size_t i = 0; i < reply.size(); ++i)
        zmq_send(rep, reply[i].data(), reply[i].size(), i + 1 < reply.size() ? ZMQ_SNDMORE : 0);
    }
    zmq_close(rep);
  }

  void reply(const std::string& id, char type) noexcept {
    (void)send_frame(router, &id, type, {}, nullptr, false);
  }

  // Reads every message waiting, after waiting up to `deadline` for the
  // first; false when nothing came.
  bool pump(const Clock::time_point* deadline) noexcept {
    if (!wait_socket(router, ZMQ_POLLIN, deadline)) return false;
    for (;;) {
      Msg id;
      if (zmq_msg_recv(&id.m, router, ZMQ_DONTWAIT) < 0) return true;
      if (!id.more()) continue;  // a routing id alone: not ours
      Msg body;
      if (zmq_msg_recv(&body.m, router, ZMQ_DONTWAIT) < 0) return true;
      while (body.more()) {  // extra frames: not our protocol, discard
        Msg extra;
        if (zmq_msg_recv(&extra.m, router, ZMQ_DONTWAIT) < 0) break;
        if (!extra.more()) break;
      }
      if (body.size() == 0) continue;
      std::string rid(reinterpret_cast<const char*>(id.data()), id.size());
      const char type = static_cast<char>(body.data()[0]);
      auto it = peers.find(rid);
      if (type == kHello) {
        if (it == peers.end() && accepting) {
          Peer p;
          const char* user = zmq_msg_gets(&body.m, "User-Id");
          p.key = user != nullptr ? user : "";
          peers.emplace(rid, std::move(p));
          backlog.push_back(rid);
        } else if (it != peers.end() && it->second.accepted) {
          reply(rid, kWelcome);  // a hello again (its first welcome was lost)
        }
      } else if (it == peers.end() || !it->second.accepted) {
        if (type == kData) reply(rid, kReset);  // a connection this listener does not know
      } else if (type == kData) {
        it->second.inbox.emplace_back(body.data() + 1, body.data() + body.size());
      } else if (type == kBye) {
        it->second.eof = true;
      }
    }
  }
};

// One side of a connection: a client's own DEALER, or a listener's peer.
struct Endpoint {
  std::shared_ptr<Hub> hub;  // listener side
  std::string id;            // listener side: the peer's routing id
  void* ctx = nullptr;       // client side
  void* sock = nullptr;      // client side: the DEALER
  std::string peer_key;
  std::string where;
  bool eof = false;
  bool reset = false;

  ~Endpoint() {
    if (sock != nullptr) zmq_close(sock);
    if (ctx != nullptr) zmq_ctx_term(ctx);
  }

  SendResult send(char type, std::span<const std::byte> data, const Clock::time_point* deadline,
                  bool block) noexcept {
    if (hub) return send_frame(hub->router, &id, type, data, deadline, block);
    return send_frame(sock, nullptr, type, data, deadline, block);
  }

  RecvResult recv(std::vector<std::byte>& out, const Clock::time_point* deadline,
                  bool block) noexcept {
    const Clock::time_point now{};
    const Clock::time_point* d = block ? deadline : &now;  // try_: a deadline already past
    if (hub) {
      for (;;) {
        auto it = hub->peers.find(id);
        if (it == hub->peers.end()) return RecvResult::closed;
        Hub::Peer& p = it->second;
        if (!p.inbox.empty()) {
          out.swap(p.inbox.front());
          p.inbox.pop_front();
          return RecvResult::ok;
        }
        if (p.eof) return RecvResult::eof;
        if (!hub->pump(d) && d != nullptr && Clock::now() >= *d)
          return block ? RecvResult::timeout : RecvResult::empty;
      }
    }
    if (eof) return RecvResult::eof;
    if (reset) return RecvResult::peer_dead;
    for (;;) {
      Msg m;
      if (zmq_msg_recv(&m.m, sock, ZMQ_DONTWAIT) >= 0) {
        if (m.size() == 0) continue;
        const char type = static_cast<char>(m.data()[0]);
        if (type == kData) {
          try {
            out.assign(m.data() + 1, m.data() + m.size());
          } catch (...) {
            return RecvResult::corrupted;  // out of memory for the message
          }
          return RecvResult::ok;
        }
        if (type == kBye) {
          eof = true;
          return RecvResult::eof;
        }
        if (type == kReset) {
          reset = true;
          return RecvResult::peer_dead;
        }
        continue;  // a late welcome: nothing to do
      }
      if (errno != EAGAIN) return RecvResult::closed;
      if (!wait_socket(sock, ZMQ_POLLIN, d) && d != nullptr && Clock::now() >= *d)
        return block ? RecvResult::timeout : RecvResult::empty;
    }
  }
};

void EndpointDeleter::operator()(Endpoint* e) const noexcept { delete e; }

}  // namespace detail

// ---- Connection ------------------------------------------------------------

Connection::Connection(std::unique_ptr<detail::Endpoint, detail::EndpointDeleter> ep) noexcept
    : ep_(std::move(ep)) {}
Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    close();
    ep_ = std::move(o.ep_);
    rx_ = std::move(o.rx_);
  }
  return *this;
}
Connection::~Connection() { close(); }

SendResult Connection::send_bytes(std::span<const std::byte> data) noexcept {
  return ep_ ? ep_->send(kData, data, nullptr, true) : SendResult::closed;
}
SendResult Connection::send_bytes_until(std::span<const std::byte> data,
                                        Deadline deadline) noexcept {
  return ep_ ? ep_->send(kData, data, &deadline, true) : SendResult::closed;
}
SendResult Connection::try_send_bytes(std::span<const std::byte> data) noexcept {
  return ep_ ? ep_->send(kData, data, nullptr, false) : SendResult::closed;
}

RecvResult Connection::recv_bytes(std::vector<std::byte>& out, const Deadline* deadline) noexcept {
  return ep_ ? ep_->recv(out, deadline, true) : RecvResult::closed;
}
RecvResult Connection::try_recv_bytes(std::vector<std::byte>& out) noexcept {
  return ep_ ? ep_->recv(out, nullptr, false) : RecvResult::closed;
}
std::vector<std::byte> Connection::recv_bytes() {
  std::vector<std::byte> out;
  throw_unless_ok(recv_bytes(out, nullptr));
  return out;
}

void Connection::throw_unless_ok(RecvResult r) const {
  if (r == RecvResult::ok) return;
  const Errc code = r == RecvResult::peer_dead ? Errc::peer_dead
                    : r == RecvResult::timeout ? Errc::timed_out
                                               : Errc::closed;
  throw Error(code, describe(), std::string("recv: ") + std::string(to_string(r)));
}

bool Connection::poll(std::chrono::nanoseconds timeout) {
  if (!ep_) return false;
  if (ep_->hub) {  // messages the pump reads wait in the peers' inboxes
    const Deadline d = shmbus::detail::deadline_after(timeout);
    for (;;) {
      auto it = ep_->hub->peers.find(ep_->id);
      if (it == ep_->hub->peers.end()) return true;  // closed: a recv answers at once
      if (!it->second.inbox.empty() || it->second.eof) return true;
      if (!ep_->hub->pump(&d) && Clock::now() >= d) return false;
    }
  }
  if (ep_->eof || ep_->reset) return true;
  int events = 0;
  std::size_t n = sizeof events;
  if (zmq_getsockopt(ep_->sock, ZMQ_EVENTS, &events, &n) == 0 && (events & ZMQ_POLLIN) != 0)
    return true;
  const Deadline d = shmbus::detail::deadline_after(timeout);
  return wait_socket(ep_->sock, ZMQ_POLLIN, &d);
}

void Connection::close() noexcept {
  if (!ep_) return;
  if (ep_->hub) {
    auto it = ep_->hub->peers.find(ep_->id);
    if (it != ep_->hub->peers.end() && !it->second.eof) (void)ep_->send(kBye, {}, nullptr, false);
    ep_->hub->peers.erase(ep_->id);
  } else if (!ep_->eof && !ep_->reset) {
    (void)ep_->send(kBye, {}, nullptr, false);
  }
  ep_.reset();  // a client's socket lingers up to kLingerMs to deliver the bye
}

int Connection::fileno() const noexcept {
  if (!ep_) return -1;
  int fd = -1;
  std::size_t n = sizeof fd;
  void* s = ep_->hub ? ep_->hub->router : ep_->sock;
  return zmq_getsockopt(s, ZMQ_FD, &fd, &n) == 0 ? fd : -1;
}

const std::string& Connection::peer_key() const noexcept {
  static const std::string none;
  return ep_ ? ep_->peer_key : none;
}

std::string Connection::describe() const {
  return ep_ ? ep_->where + " (peer " + ep_->peer_key + ")" : std::string("closed connection");
}

// ---- Listener --------------------------------------------------------------

Listener::Listener(std::string_view endpoint, const ListenerOptions& options)
    : hub_(std::make_shared<detail::Hub>()) {
  const std::string where(endpoint);
  check_z85_key(options.key.public_key, where + " listener public key");
  if (options.key.secret_key.empty())
    throw Error(Errc::invalid_argument, where, "the listener's key pair has no secret key");
  check_z85_key(options.key.secret_key, where + " listener secret key");
  if (options.allowed_clients.empty())
    throw Error(Errc::invalid_argument, where, "no allowed client key: nobody could connect");
  for (const std::string& k : options.allowed_clients) {
    check_z85_key(k, where + " allowed client key");
    hub_->allowed.insert(raw_of(k));
  }
  hub_->where = where;
  hub_->on_refused = options.on_refused;
  hub_->ctx = zmq_ctx_new();
  if (hub_->ctx == nullptr) throw zmq_error(where, "zmq_ctx_new");
  void* rep = zmq_socket(hub_->ctx, ZMQ_REP);
  if (rep == nullptr) throw zmq_error(where, "zmq_socket(REP)");
  if (zmq_bind(rep, kZapEndpoint) != 0) {
    zmq_close(rep);
    throw zmq_error(where, "binding the ZAP handler");
  }
  hub_->zap = std::thread([hub = hub_.get(), rep] { hub->run_zap(rep); });

  hub_->router = zmq_socket(hub_->ctx, ZMQ_ROUTER);
  if (hub_->router == nullptr) throw zmq_error(where, "zmq_socket(ROUTER)");
  common_options(hub_->router, options.high_water_mark, where);
  set_int(hub_->router, ZMQ_ROUTER_MANDATORY, 1, where);
  set_int(hub_->router, ZMQ_CURVE_SERVER, 1, where);
  set_key(hub_->router, ZMQ_CURVE_SECRETKEY, options.key.secret_key, where);
  const std::string domain = "shmbus";
  set_opt(hub_->router, ZMQ_ZAP_DOMAIN, domain.data(), domain.size(), where);
  if (zmq_bind(hub_->router, where.c_str()) != 0) throw zmq_error(where, "zmq_bind");
  std::array<char, 256> last{};
  std::size_t n = last.size();
  endpoint_ = zmq_getsockopt(hub_->router, ZMQ_LAST_ENDPOINT, last.data(), &n) == 0
                  ? std::string(last.data())
                  : where;
  // hub_->where stays as given: the ZAP thread reads it (for its log lines).
}

Listener::Listener(Listener&&) noexcept = default;
Listener& Listener::operator=(Listener&&) noexcept = default;
Listener::~Listener() { close(); }

std::optional<Connection> Listener::accept_impl(const Clock::time_point* deadline) {
  if (!hub_ || !hub_->accepting) throw Error(Errc::closed, endpoint_, "the listener is closed");
  for (;;) {
    if (!hub_->backlog.empty()) {
      std::string id = std::move(hub_->backlog.front());
      hub_->backlog.pop_front();
      auto it = hub_->peers.find(id);
      if (it == hub_->peers.end()) continue;
      it->second.accepted = true;
      hub_->reply(id, kWelcome);
      std::unique_ptr<detail::Endpoint, detail::EndpointDeleter> ep(new detail::Endpoint);
      ep->hub = hub_;
      ep->id = std::move(id);
      ep->peer_key = it->second.key;
      ep->where = endpoint_;
      return Connection(std::move(ep));
    }
    if (!hub_->pump(deadline) && deadline != nullptr && Clock::now() >= *deadline)
      return std::nullopt;
  }
}

Connection Listener::accept() { return std::move(*accept_impl(nullptr)); }
std::optional<Connection> Listener::accept_until(Clock::time_point deadline) {
  return accept_impl(&deadline);
}

std::uint64_t Listener::refused() const noexcept {
  return hub_ ? hub_->refused.load(std::memory_order_relaxed) : 0;  // relaxed: a statistic
}

int Listener::fileno() const noexcept {
  if (!hub_) return -1;
  int fd = -1;
  std::size_t n = sizeof fd;
  return zmq_getsockopt(hub_->router, ZMQ_FD, &fd, &n) == 0 ? fd : -1;
}

void Listener::close() noexcept {
  if (!hub_) return;
  if (hub_->accepting) {
    hub_->accepting = false;
    (void)zmq_unbind(hub_->router, endpoint_.c_str());
    for (const std::string& id : hub_->backlog) hub_->peers.erase(id);
    hub_->backlog.clear();
  }
  hub_.reset();  // the socket lives on while accepted connections use it
}

// ---- Client ----------------------------------------------------------------

Connection Client(std::string_view endpoint, const ClientOptions& options,
                  std::optional<Clock::duration> timeout) {
  const std::string where(endpoint);
  check_z85_key(options.server_key, where + " server key");
  check_z85_key(options.key.public_key, where + " client public key");
  if (options.key.secret_key.empty())
    throw Error(Errc::invalid_argument, where, "the client's key pair has no secret key");
  check_z85_key(options.key.secret_key, where + " client secret key");

  std::unique_ptr<detail::Endpoint, detail::EndpointDeleter> ep(new detail::Endpoint);
  ep->where = where;
  ep->peer_key = options.server_key;
  ep->ctx = zmq_ctx_new();
  if (ep->ctx == nullptr) throw zmq_error(where, "zmq_ctx_new");
  ep->sock = zmq_socket(ep->ctx, ZMQ_DEALER);
  if (ep->sock == nullptr) throw zmq_error(where, "zmq_socket(DEALER)");
  common_options(ep->sock, options.high_water_mark, where);
  // A routing id of our own (first byte non-zero: ZeroMQ reserves 0), so a
  // reconnect after a broken link is the same peer to the listener.
  std::array<unsigned char, 16> rid{};
  std::random_device rd;
  for (auto& b : rid) b = static_cast<unsigned char>(rd());
  rid[0] = static_cast<unsigned char>(rid[0] | 1u);
  set_opt(ep->sock, ZMQ_ROUTING_ID, rid.data(), rid.size(), where);
  set_key(ep->sock, ZMQ_CURVE_SERVERKEY, options.server_key, where);
  set_key(ep->sock, ZMQ_CURVE_PUBLICKEY, options.key.public_key, where);
  set_key(ep->sock, ZMQ_CURVE_SECRETKEY, options.key.secret_key, where);

  // A monitor tells a refused handshake from a listener that is not there,
  // and a wrong server key from both: a listener that cannot open our
  // CURVE hello closes the connection without a word, so the client sees
  // only a disconnect during the handshake, again at every reconnect.
  static std::atomic<std::uint64_t> monitors{0};
  const std::string mon_addr =
      "inproc://shmbus-client-monitor-" +
      std::to_string(monitors.fetch_add(1, std::memory_order_relaxed));  // relaxed: a counter
  if (zmq_socket_monitor(ep->sock, mon_addr.c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                             ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0)
    throw zmq_error(where, "zmq_socket_monitor");
  void* mon = zmq_socket(ep->ctx, ZMQ_PAIR);
  struct CloseMon {
    void* sock;
    void* mon;
    ~CloseMon() {
      zmq_socket_monitor(sock, nullptr, 0);
      if (mon != nullptr) zmq_close(mon);
    }
  } close_mon{ep->sock, mon};
  if (mon == nullptr || zmq_connect(mon, mon_addr.c_str()) != 0)
    throw zmq_error(where, "connecting the monitor");
  if (zmq_connect(ep->sock, where.c_str()) != 0) throw zmq_error(where, "zmq_connect");
  if (send_frame(ep->sock, nullptr, kHello, {}, nullptr, false) != SendResult::ok)
    throw Error(Errc::system, where, "could not queue the hello");

  const Clock::time_point deadline = shmbus::detail::deadline_from(Clock::now(), timeout);
  bool in_handshake = false;  // connected, the CURVE handshake not yet done
  int dropped_in_handshake = 0;
  // Twice in a row: one drop may be a listener restarting mid-handshake.
  constexpr int kDropsMeanWrongKey = 2;
  for (;;) {
    std::array<zmq_pollitem_t, 2> items{zmq_pollitem_t{ep->sock, 0, ZMQ_POLLIN, 0},
                                        zmq_pollitem_t{mon, 0, ZMQ_POLLIN, 0}};
    const Clock::time_point* d = timeout ? &deadline : nullptr;
    const int rc = zmq_poll(items.data(), 2, poll_ms(d));
    if (rc < 0 && errno != EINTR) throw zmq_error(where, "zmq_poll");
    if ((items[1].revents & ZMQ_POLLIN) != 0) {
      Msg ev;
      Msg addr;
      if (zmq_msg_recv(&ev.m, mon, 0) >= 0 && ev.more()) (void)zmq_msg_recv(&addr.m, mon, 0);
      std::uint16_t event = 0;
      std::uint32_t value = 0;
      if (ev.size() >= 6) {
        std::memcpy(&event, ev.data(), 2);
        std::memcpy(&value, ev.data() + 2, 4);
      }
      if (event == ZMQ_EVENT_CONNECTED) {
        in_handshake = true;
        continue;
      }
      if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        in_handshake = false;
        dropped_in_handshake = 0;
        continue;
      }
      if (event == ZMQ_EVENT_DISCONNECTED) {
        if (!std::exchange(in_handshake, false) || ++dropped_in_handshake < kDropsMeanWrongKey)
          continue;
        throw Error(Errc::permission_denied, where,
                    "the listener closed the connection during the CURVE handshake, " +
                        std::to_string(kDropsMeanWrongKey) +
                        " times in a row: the server key is not the listener's");
      }
      throw Error(
          Errc::permission_denied, where,
          event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
              ? "the listener refused this client's key (ZAP status " + std::to_string(value) + ")"
              : std::string("the CURVE handshake failed (is the server key right?)"));
    }
    if ((items[0].revents & ZMQ_POLLIN) != 0) {
      Msg m;
      if (zmq_msg_recv(&m.m, ep->sock, ZMQ_DONTWAIT) >= 0 && m.size() >= 1) {
        const char type = static_cast<char>(m.data()[0]);
        if (type == kWelcome) break;
        if (type == kReset)  // our hello was lost and data of ours arrived: cannot be
          throw Error(Errc::peer_dead, where, "the listener reset the connection");
      }
    }
    if (timeout && Clock::now() >= deadline)
      throw Error(Errc::timed_out, where,
                  "no listener accepted within the timeout (not running, unreachable, or not "
                  "calling accept())");
  }
  return Connection(std::move(ep));
}

}  // namespace shmbus::bridge
