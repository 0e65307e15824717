// Listener / Client — multiprocessing.connection's Listener and Client on
// one host: a server accepts any number of clients, each on its own duplex
// pipe.
//
//   shmbus::Listener listener{"quotes"};            // server
//   shmbus::Connection c = listener.accept();        // one per client
//   std::string hello = c.recv_string();
//
//   shmbus::Connection s = shmbus::Client("quotes"); // any process
//   (void)s.send("hello");
//
// How. A Listener is a small queue of connection requests (its backlog) in
// a segment of kind `listener` named like the listener. Client() creates a
// pipe named "<listener>.conn-<pid>-<start>-<n>" (pid, the process's start
// time and a counter, in hex but the pid: never the name of another
// process's pipe, even one with the same pid), takes its second end, puts the
// pipe's name in the backlog and waits until the server took the first end.
// accept() takes a request and opens that end. The pipe keeps its name
// while the connection is open, so `bus-inspector show <listener>` lists
// the connections (shmbus::listener_connections() in inspect.hpp); the end
// that closes last, or outlives its peer, removes it, and gc removes one
// whose processes all died: a closed connection leaves nothing in
// /dev/shm. The Connection each side gets
// is a pipe end like any other: send/recv, zero copy, strategies, poll,
// wait(); a peer's close reads as end of file, its death as peer_dead.
//
// Who may call what: any process of the user (segments are 0600 unless
// ListenerOptions::segment.permissions says otherwise: e.g. 0660 for a
// group). Several threads of a process may accept on one Listener; a forked
// child may accept on an inherited one. Setup calls throw shmbus::Error.
//
// Several servers on one name (ListenerOptions::shared, in every one of
// them): each process makes its own Listener of the name and they share one
// backlog, as processes accepting on one socket do; each client is accepted
// by exactly one of them (whichever accepts first). The name lives while
// any of them does: a server's death or close() leaves the others serving,
// and the last one to close removes the name. A client's liveness check
// looks for any live server.
//
// Deaths and bad input: a client that dies before it is accepted leaves a
// request whose pipe accept() opens and hands over (its first recv reads
// peer_dead) or skips when the pipe is gone; a client waiting to be
// accepted by a listener that died or closed gets Error(peer_dead /
// not_found) instead of waiting on; a request whose name is not a pipe of
// this listener (a hostile or corrupted backlog) is skipped, never opened.
// Limits: listener names are at most 160 characters (the pipe names add
// up to 40); a full backlog makes Client() wait until its timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "shmbus/connection.hpp"
#include "shmbus/detail/queue_core.hpp"
#include "shmbus/detail/segment.hpp"

namespace shmbus {

struct ListenerOptions {
  // Connection requests that may wait for accept() at once.
  std::size_t backlog = 64;
  // Join the live listener of this name instead of failing with
  // already_exists: several server processes accept from one backlog.
  bool shared = false;
  SegmentOptions segment{};
  // How this server's ends of accepted connections wait for what their
  // clients send (recv, poll, wait()), whatever strategy each client chose
  // for its pipe: e.g. blocking, so that a busy-poll client does not keep
  // an idle server's core spinning. The client's sends then wake the server
  // (an atomic exchange per message for blocking, a fence-free check for
  // adaptive); its own waits for replies keep its strategy. Unset: the
  // server waits as each client's pipe does. A wait() over several ends
  // follows the strategy only (an adaptive set spins wait()'s own 50 us).
  std::optional<WaitPolicy> wait{};
};

inline constexpr std::size_t kMaxListenerName = 160;

class Listener {
 public:
  // Creates the listener `name`: Errc::already_exists if a live listener
  // has it (unless options.shared: then this process joins it); a name
  // left by listeners whose processes all died is taken over.
  explicit Listener(std::string_view name, const ListenerOptions& options = {});
  // A moved-from Listener is closed (its destructor leaves the name).
  Listener(Listener&& o) noexcept
      : name_(std::move(o.name_)),
        backlog_(std::move(o.backlog_)),
        creator_(std::exchange(o.creator_, 0)),
        shared_(o.shared_),
        wait_(o.wait_) {}
  Listener& operator=(Listener&& o) noexcept {
    if (this != &o) {
      close();
      name_ = std::move(o.name_);
      backlog_ = std::move(o.backlog_);
      creator_ = std::exchange(o.creator_, 0);
      shared_ = o.shared_;
      wait_ = o.wait_;
    }
    return *this;
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  // Closes (see close()).
  ~Listener();

  // The next client's connection; waits for one. Throws Error(closed) once
  // the listener is closed.
  [[nodiscard]] Connection accept();
  // The same, or nullopt when no client came within `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] std::optional<Connection> accept_for(std::chrono::duration<Rep, Period> timeout) {
    return accept_until(detail::deadline_after(timeout));
  }
  [[nodiscard]] std::optional<Connection> accept_until(Clock::time_point deadline);
  // A client already waiting, or nullopt at once.
  [[nodiscard]] std::optional<Connection> try_accept();

  // Clients waiting to be accepted (approximate).
  [[nodiscard]] std::size_t pending() const noexcept { return backlog_.qsize(); }

  // A descriptor that polls readable while a client may be waiting (or the
  // listener is closed): epoll/Asio/libuv, as the queues' fileno() (see
  // wait_any.hpp). A Listener is also a Waitable of shmbus::wait().
  [[nodiscard]] int fileno() { return backlog_.fileno(); }

  // Stops accepting and removes the name: waiting and later Client() calls
  // fail; connections already accepted are not affected. Only the process
  // that made this Listener removes the name (a forked child's close()
  // closes the backlog). A shared listener with other live servers only
  // leaves: they go on accepting, and the last one removes the name.
  void close() noexcept;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  friend class Waitable;                // waits on the backlog (wait_any.hpp)
  friend struct detail::ServiceAccess;  // a Service's spin reads the backlog (service.hpp)
  std::optional<Connection> accept_impl(const Clock::time_point* deadline, bool wait);

  std::string name_;
  detail::QueueCore backlog_;
  pid_t creator_ = 0;  // the process that made this handle; 0 once closed
  bool shared_ = false;
  std::optional<WaitPolicy> wait_;  // ListenerOptions::wait
};

// Connects to the listener `name` and returns this side's duplex end once
// the server accepted it. Waits up to `timeout` (none: as long as the
// listener lives) for the server's accept(); throws Error: not_found (no
// such listener), wrong_kind (the name is another kind of object),
// timed_out, peer_dead (the listener died), closed (it was closed).
// `options` shape the pipe (capacity, wait strategy, ...; duplex always).
[[nodiscard]] Connection Client(std::string_view name,
                                std::optional<Clock::duration> timeout = std::nullopt,
                                const PipeOptions& options = {});

}  // namespace shmbus
