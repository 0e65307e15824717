// shmbus::bridge::Listener / Client / Connection — multiprocessing.connection's
// Listener and Client across hosts, on ZeroMQ with CURVE keys instead of an
// authkey.
//
//   namespace sb = shmbus::bridge;
//   auto server_key = sb::KeyPair::generate();
//   auto client_key = sb::KeyPair::generate();
//   sb::Listener listener{"tcp://127.0.0.1:0",
//                         {.key = server_key, .allowed_clients = {client_key.public_key}}};
//   sb::Connection c = sb::Client(listener.endpoint(),
//                                 {.key = client_key, .server_key = server_key.public_key});
//   sb::Connection s = listener.accept();
//   (void)c.send(std::vector<int>{1, 2, 3});         // any codec type (shmbus/codec.hpp)
//   auto v = s.recv<std::vector<int>>();
//
// Security: the listener is a CURVE server; only a client whose public key
// is in ListenerOptions::allowed_clients completes the handshake (checked by
// a ZAP handler, ZeroMQ's authentication hook, in a thread of the
// listener). A refused client gets Error(permission_denied) from Client(),
// never a connection and never a byte of data; the listener counts it
// (refused()) and logs it through ListenerOptions::on_refused (default: one
// line on stderr with the key and the address). All traffic is encrypted
// and authenticated (CurveZMQ).
//
// The Connection sends and receives whole messages: bytes, strings and every
// codec type with the same send(v) / recv<T>() as a local shmbus::Connection,
// with the same result enums (SendResult, RecvResult); recv_for/recv_until
// and poll() honour their deadlines; close() is seen by the peer as
// RecvResult::eof once everything sent before it was received.
//
// Who may call what: a client Connection belongs to one thread at a time.
// A Listener and every Connection it accepted share one ZeroMQ socket: use
// them from one thread (a receive on one connection may read and keep
// messages for the others).
//
// What the network changes (documented, not hidden):
//   - Messages of one connection arrive in order, at most once. A TCP link
//     that breaks is re-established by ZeroMQ under the same connection
//     (the client keeps its routing id), but a message in flight when it
//     broke can be lost. Code that must not lose anything acknowledges
//     (bus-bridge does: see forwarder.hpp).
//   - A peer that dies without close() is silence, not peer_dead: use
//     timeouts (bus-bridge sends heartbeats). A listener that restarted
//     answers a connection it does not know with a reset, read by the client
//     as RecvResult::peer_dead.
//   - fileno(): ZeroMQ's ZMQ_FD, which is edge-triggered: it turns readable
//     when the socket's state changed, not while a message waits. So after
//     it polls readable, receive with try_recv() until `empty` before
//     waiting on it again (the same rule as a local Connection's fileno()).
//     On the listener side the descriptor is shared by the listener and its
//     connections: also try each of them. Valid until the owner is destroyed.
//   - Memory: each direction queues at most ListenerOptions/ClientOptions
//     high_water_mark messages in ZeroMQ; a sender beyond it waits (send)
//     or gets `full` (try_send).
//
// Setup calls (Listener, accept, Client) throw shmbus::Error; send and
// receive return the result enums (the Python-style recv<T>() and
// recv_bytes() throw, as a local Connection's do).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shmbus/bridge/keys.hpp"
#include "shmbus/codec.hpp"
#include "shmbus/connection.hpp"
#include "shmbus/wait.hpp"

namespace shmbus::bridge {

// Who was refused, for ListenerOptions::on_refused.
struct RefusedClient {
  std::string public_key;  // Z85
  std::string address;     // the peer's IP address as ZeroMQ reports it
};

struct ListenerOptions {
  KeyPair key{};                               // the listener's own pair (secret needed)
  std::vector<std::string> allowed_clients{};  // Z85 public keys that may connect
  // Called (on the listener's ZAP thread) for each refused handshake;
  // default: a line on stderr.
  std::function<void(const RefusedClient&)> on_refused{};
  int high_water_mark = 10000;  // messages queued per direction and peer
};

struct ClientOptions {
  KeyPair key{};             // this client's pair (secret needed)
  std::string server_key{};  // the listener's public key (Z85)
  int high_water_mark = 10000;
};

namespace detail {
struct Endpoint;  // remote.cpp: one side of a connection over ZeroMQ
struct EndpointDeleter {
  void operator()(Endpoint* e) const noexcept;
};
struct Hub;  // remote.cpp: a listener's socket, shared with its connections
}  // namespace detail

class Connection {
 public:
  using Deadline = Clock::time_point;

  Connection() = default;
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  // Closes (see close()).
  ~Connection();

  // --- sending: ok, full (try_), timeout, closed, broken (the peer closed
  // or is unreachable), too_large (above 2^31 bytes)
  [[nodiscard]] SendResult send_bytes(std::span<const std::byte> data) noexcept;
  [[nodiscard]] SendResult send_bytes_until(std::span<const std::byte> data,
                                            Deadline deadline) noexcept;
  template <class Rep, class Period>
  [[nodiscard]] SendResult send_bytes_for(std::span<const std::byte> data,
                                          std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_bytes_until(data, after(timeout));
  }
  [[nodiscard]] SendResult try_send_bytes(std::span<const std::byte> data) noexcept;

  // Any value the codec carries (trivially copyable types as their bytes,
  // std::string as its bytes, the rest as msgpack): the message a local
  // Connection would send for it. May throw std::bad_alloc while encoding.
  // Strings (std::string, a literal, a C string, a char array) as their
  // characters; a pointer does not compile.
  template <class T>
  requires(!std::is_convertible_v<const T&, std::string_view> && !std::is_pointer_v<T>)
      [[nodiscard]] SendResult send(const T& value) {
    return send_bytes(shmbus::detail::encode_message(value));
  }
  [[nodiscard]] SendResult send(std::string_view s) noexcept {
    return send_bytes(std::as_bytes(std::span<const char>(s.data(), s.size())));
  }
  // A C string or char array: up to its NUL, an array never past its extent.
  template <class S>
  requires shmbus::detail::CharsArg<S>
  [[nodiscard]] SendResult send(const S& s) noexcept { return send(shmbus::detail::chars_of(s)); }
  template <class T, class Rep, class Period>
  requires(!std::is_convertible_v<const T&, std::string_view> && !std::is_pointer_v<T>)
      [[nodiscard]] SendResult
      send_for(const T& value, std::chrono::duration<Rep, Period> timeout) {
    return send_bytes_until(shmbus::detail::encode_message(value), after(timeout));
  }
  template <class Rep, class Period>
  [[nodiscard]] SendResult send_for(std::string_view s,
                                    std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_bytes_until(std::as_bytes(std::span<const char>(s.data(), s.size())),
                            after(timeout));
  }
  template <class S, class Rep, class Period>
  requires shmbus::detail::CharsArg<S>
  [[nodiscard]] SendResult send_for(const S& s,
                                    std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_for(shmbus::detail::chars_of(s), timeout);
  }

  // --- receiving: ok, empty (try_), timeout, eof (the peer closed),
  // peer_dead (a restarted listener reset this connection), closed,
  // decode_error (recv of a T: the message was consumed).
  [[nodiscard]] RecvResult recv_bytes(std::vector<std::byte>& out,
                                      const Deadline* deadline = nullptr) noexcept;
  [[nodiscard]] RecvResult recv_bytes_until(std::vector<std::byte>& out,
                                            Deadline deadline) noexcept {
    return recv_bytes(out, &deadline);
  }
  template <class Rep, class Period>
  [[nodiscard]] RecvResult recv_bytes_for(std::vector<std::byte>& out,
                                          std::chrono::duration<Rep, Period> timeout) noexcept {
    const Deadline d = after(timeout);
    return recv_bytes(out, &d);
  }
  [[nodiscard]] RecvResult try_recv_bytes(std::vector<std::byte>& out) noexcept;
  // Python-style: the message; throws Error(closed) at EOF, Error(peer_dead).
  [[nodiscard]] std::vector<std::byte> recv_bytes();

  template <class T>
  [[nodiscard]] RecvResult recv(T& out, const Deadline* deadline = nullptr) {
    return decoded(recv_bytes(rx_, deadline), out);
  }
  template <class T, class Rep, class Period>
  [[nodiscard]] RecvResult recv_for(T& out, std::chrono::duration<Rep, Period> timeout) {
    const Deadline d = after(timeout);
    return recv(out, &d);
  }
  template <class T>
  [[nodiscard]] RecvResult try_recv(T& out) {
    return decoded(try_recv_bytes(rx_), out);
  }
  // Python-style: throws Error(decode_error) naming T when the message is
  // not one, Error(closed) at EOF, Error(peer_dead).
  template <class T>
  [[nodiscard]] T recv() {
    T out{};
    const RecvResult r = recv(out);
    if (r == RecvResult::decode_error)
      throw Error(Errc::decode_error, describe(),
                  "expected " + std::string(shmbus::detail::type_name<T>()) + ": " +
                      shmbus::detail::last_decode_error());
    throw_unless_ok(r);
    return out;
  }
  [[nodiscard]] std::string recv_string() { return recv<std::string>(); }

  // True when a message (or the end) is ready, waiting up to `timeout`.
  [[nodiscard]] bool poll(std::chrono::nanoseconds timeout = std::chrono::nanoseconds::zero());

  // Tells the peer (it reads eof after what was sent) and releases this
  // end. Idempotent.
  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept { return ep_ == nullptr; }
  // See the file comment (edge-triggered ZMQ_FD). -1 when closed.
  [[nodiscard]] int fileno() const noexcept;
  // The peer's public key (Z85): the client's on the listener side, the
  // server's on the client side.
  [[nodiscard]] const std::string& peer_key() const noexcept;
  // "tcp://host:port" and the peer, for messages.
  [[nodiscard]] std::string describe() const;

 private:
  friend class Listener;
  friend Connection Client(std::string_view, const ClientOptions&, std::optional<Clock::duration>);
  explicit Connection(std::unique_ptr<detail::Endpoint, detail::EndpointDeleter> ep) noexcept;
  template <class Rep, class Period>
  static Deadline after(std::chrono::duration<Rep, Period> t) noexcept {
    return shmbus::detail::deadline_after(t);  // saturated: hours::max() waits forever
  }
  template <class T>
  RecvResult decoded(RecvResult r, T& out) {
    if (r != RecvResult::ok) return r;
    return shmbus::detail::decode_message(std::span<const std::byte>(rx_), out)
               ? RecvResult::ok
               : RecvResult::decode_error;
  }
  void throw_unless_ok(RecvResult r) const;

  std::unique_ptr<detail::Endpoint, detail::EndpointDeleter> ep_;
  std::vector<std::byte> rx_;  // reused by recv<T>
};

class Listener {
 public:
  // Binds `endpoint` ("tcp://*:7000", "tcp://127.0.0.1:0" for any free
  // port, "ipc://...") as a CURVE server with `options.key`. Throws Error:
  // invalid_argument (a malformed key, no secret, no allowed client),
  // system (the bind failed: address in use, ...).
  Listener(std::string_view endpoint, const ListenerOptions& options);
  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // The next client's connection; waits for one. Error(closed) once closed.
  [[nodiscard]] Connection accept();
  template <class Rep, class Period>
  [[nodiscard]] std::optional<Connection> accept_for(std::chrono::duration<Rep, Period> timeout) {
    return accept_until(shmbus::detail::deadline_after(timeout));
  }
  [[nodiscard]] std::optional<Connection> accept_until(Clock::time_point deadline);

  // The endpoint actually bound (the port chosen for ":0" filled in).
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  // Handshakes refused so far (wrong or unknown client key).
  [[nodiscard]] std::uint64_t refused() const noexcept;
  // The descriptor shared by this listener and its connections (ZMQ_FD,
  // edge-triggered: see the file comment).
  [[nodiscard]] int fileno() const noexcept;
  // Unbinds and stops accepting; accepted connections stay usable.
  void close() noexcept;

 private:
  std::optional<Connection> accept_impl(const Clock::time_point* deadline);
  std::shared_ptr<detail::Hub> hub_;
  std::string endpoint_;
};

// Connects to the listener at `endpoint` ("tcp://host:7000") and returns
// this side's connection once the listener accepted it. Waits up to
// `timeout` (none: until accepted). Throws Error: permission_denied (the
// listener refused this client's key, or the server key is not the
// listener's: it closed the connection during the handshake twice in a
// row), timed_out (no listener answered in time: not running,
// unreachable, or not calling accept()), invalid_argument (a malformed key).
[[nodiscard]] Connection Client(std::string_view endpoint, const ClientOptions& options,
                                std::optional<Clock::duration> timeout = std::nullopt);

}  // namespace shmbus::bridge
