#include "shmbus/listener.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/error.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"

namespace shmbus {
namespace detail {

// One entry of a listener's backlog: the name of the pipe a client made.
// Read from shared memory: untrusted (NUL-terminated within the array,
// validated as a name of this listener's pipes before it is opened).
struct ConnectRequest {
  char pipe[kMaxNameLength + 1];
};

inline constexpr TypeTag kConnectRequestTag = type_tag<ConnectRequest>();

// What Client() needs of a Connection's insides.
struct ListenerAccess {
  // A connection of a listener: its pipe's name goes when both ends have.
  static void remove_name_at_close(Connection& c) noexcept { c.remove_name_at_close_ = true; }
  // Whether the other end was ever taken (the server accepted).
  static bool peer_taken(const Connection& c) noexcept {
    // [pipe.owner] acquire: pairs with the CAS of the server's take_end(),
    // which also publishes its [pipe.recv_wait].
    return c.control_->ends[1 - c.end_].owner.load(std::memory_order_acquire) != 0;
  }
  // accept(): the server's end, waiting for data by `wait` when set.
  static Connection take_server_end(std::string_view pipe, const std::optional<WaitPolicy>& wait) {
    return Connection::take_end(pipe, PipeEnd::first, {}, wait ? &*wait : nullptr);
  }
  // Client(), once accepted: sends wake the server as it asked.
  static void follow_server_wait(Connection& c) noexcept { c.follow_peer_recv_wait(); }
};

}  // namespace detail

namespace {

std::string pipe_prefix(std::string_view listener) { return std::string(listener) + ".conn-"; }

// "<pid>-<start time, hex>-<n, hex>": unique on this host until reboot
// (a pid reused by another process comes with another start time), so a
// client never makes the name of another's pipe, live or being removed.
// At most 7 + 1 + 11 + 1 + 13 characters: with the prefix and a listener
// name of kMaxListenerName, within kMaxNameLength.
std::string pipe_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  const ProcessId me = this_process();
  // relaxed: the counter only makes names unique within this process; 52
  // bits (13 hex digits) would take a century at a connect per nanosecond.
  const std::uint64_t n =
      counter.fetch_add(1, std::memory_order_relaxed) & ((std::uint64_t{1} << 52) - 1);
  char buf[64];
  const int len = std::snprintf(buf, sizeof buf, "%d-%llx-%llx", static_cast<int>(me.pid),
                                static_cast<unsigned long long>(me.start_time),
                                static_cast<unsigned long long>(n));
  return std::string(buf, static_cast<std::size_t>(len));
}
static_assert(kMaxListenerName + 6 + 7 + 1 + 11 + 1 + 13 <= kMaxNameLength);

void check_listener_name(std::string_view name) {
  validate_name(name);
  if (name.size() > kMaxListenerName) {
    throw Error(Errc::invalid_name, std::string(name),
                "a listener name has at most " + std::to_string(kMaxListenerName) +
                    " characters (its connections' pipe names add to it)");
  }
}

QueueOptions backlog_options(const ListenerOptions& options) {
  QueueOptions q;
  q.capacity = std::max<std::size_t>(options.backlog, 2);
  q.segment = options.segment;
  q.segment.attach = true;  // the attachment table says which servers live
  return q;
}

std::span<const std::byte> bytes_of(const detail::ConnectRequest& r) noexcept {
  return {reinterpret_cast<const std::byte*>(&r), sizeof r};
}

// A Client() that gives up: its pipe goes, as if it never was.
[[noreturn]] void abandon(Connection& c, const std::string& pipe, std::string_view listener,
                          Errc code, const std::string& why) {
  c.close();
  (void)unlink_pipe(pipe);
  throw Error(code, std::string(listener), why);
}

}  // namespace

namespace {

// Whether a server of the listener `info` describes lives: a live process
// in its attachment table (every server attaches, its creator included;
// clients do not; a shared server that closed has detached, though its
// process may live on), not counting the caller when `but_me`.
bool listening(const SegmentInfo& info, bool but_me) {
  const ProcessId me = this_process();
  return std::any_of(info.attached.begin(), info.attached.end(),
                     [&](const AttachedProcess& p) { return p.alive && !(but_me && p.id == me); });
}

// `options`, once its wait policy checked (before anything is made).
const ListenerOptions& check_wait(std::string_view name, const ListenerOptions& options) {
  if (options.wait &&
      (static_cast<unsigned>(options.wait->strategy) > 2 || options.wait->spin.count() < 0)) {
    throw Error(
        Errc::invalid_argument, std::string(name),
        "the server's wait policy (ServiceOptions::wait or ListenerOptions::wait): strategy " +
            std::to_string(static_cast<unsigned>(options.wait->strategy)) + ", spin " +
            std::to_string(options.wait->spin.count()) + " ns");
  }
  return options;
}

// The backlog of a new listener, or of the live shared one it joins. A
// name left by listeners that all died is taken over (a server restarted
// under its old name).
detail::QueueCore create_backlog(std::string_view name, const ListenerOptions& options) {
  check_listener_name(name);
  const QueueOptions q = backlog_options(options);
  for (int attempt = 0;; ++attempt) {
    try {
      return detail::QueueCore::create(name, ObjectKind::listener, detail::kConnectRequestTag,
                                       sizeof(detail::ConnectRequest), q);
    } catch (const Error& e) {
      if (e.code() != Errc::already_exists || attempt == 3) throw;
    }
    std::optional<SegmentInfo> info;
    try {
      info = SegmentView::open(std::string(name)).info();
    } catch (const Error&) {
      continue;  // gone meanwhile: create again
    }
    if (info->state == "initialising") {
      // A backlog being made under the name: by a server that died making
      // it (removed like a dead listener's), or by a live one (or one not
      // yet known) that will listen: the name is taken, or, shared, the
      // join below waits for it to be ready.
      if (info->creator.pid != 0 && !info->creator_alive) {
        (void)detail::Segment::unlink_if_same(name, info->creator.pack(), info->created_unix_ns);
        continue;
      }
      if (!options.shared) {
        throw Error(Errc::already_exists, std::string(name),
                    "a listener is being made under the name (ListenerOptions::shared joins it)");
      }
    } else if (info->kind != ObjectKind::listener) {
      throw Error(Errc::wrong_kind, std::string(name),
                  "the name is a " + std::string(info->kind ? to_string(*info->kind) : "?") +
                      ", not a listener");
    } else if (!listening(*info, false)) {
      // Every listener of it died. Only that backlog goes: another server
      // taking it over at the same time may have made a new one under the
      // name since we looked ([segment.unlink]).
      (void)detail::Segment::unlink_if_same(name, info->creator.pack(), info->created_unix_ns);
      continue;
    } else if (!options.shared) {
      throw Error(Errc::already_exists, std::string(name),
                  "a live listener has the name (ListenerOptions::shared joins it)");
    }
    detail::QueueCore joined =
        detail::QueueCore::open(name, ObjectKind::listener, detail::kConnectRequestTag, q);
    if (!joined.closed()) return joined;
    // The last server closed it as we joined: its name is being removed.
  }
}

}  // namespace

Listener::Listener(std::string_view name, const ListenerOptions& options)
    : name_(name),
      backlog_(create_backlog(name, check_wait(name, options))),
      creator_(::getpid()),
      shared_(options.shared),
      wait_(options.wait) {}

Listener::~Listener() { close(); }

void Listener::close() noexcept {
  if (creator_ == 0) return;
  const bool mine = creator_ == ::getpid();
  creator_ = 0;
  if (mine && shared_) {
    backlog_.detach();  // from now on this process is not one of its servers
    try {
      if (listening(SegmentView::open(name_).info(), true)) return;  // they go on
    } catch (const Error&) {
      return;  // the name is gone already
    }
  }
  backlog_.close();  // waiting clients and accept() calls see it
  if (mine) {
    try {
      // Only our backlog's name ([segment.unlink]): once a shared one
      // detached above, a new server may have taken the name over.
      (void)backlog_.unlink_own_name();
    } catch (...) {  // the name was validated at creation
    }
  }
}

Connection Listener::accept() {
  if (auto c = accept_impl(nullptr, true)) return std::move(*c);
  throw Error(Errc::closed, name_, "accept: the listener is closed");
}

std::optional<Connection> Listener::accept_until(Clock::time_point deadline) {
  return accept_impl(&deadline, true);
}

std::optional<Connection> Listener::try_accept() { return accept_impl(nullptr, false); }

std::optional<Connection> Listener::accept_impl(const Clock::time_point* deadline, bool wait) {
  if (creator_ == 0) throw Error(Errc::closed, name_, "accept: the listener is closed");
  const std::string prefix = pipe_prefix(name_);
  for (;;) {
    detail::ConnectRequest req{};
    std::size_t len = 0;
    const QueueResult r =
        backlog_.get({reinterpret_cast<std::byte*>(&req), sizeof req}, len, deadline, wait);
    if (r == QueueResult::timed_out || r == QueueResult::empty) return std::nullopt;
    if (r == QueueResult::closed)
      throw Error(Errc::closed, name_, "accept: the listener is closed");
    if (r != QueueResult::ok) {
      throw Error(Errc::corrupted, name_, "accept: backlog: " + std::string(to_string(r)));
    }
    // Untrusted: a name of this listener's pipes, or the request is skipped.
    const std::string_view pipe(req.pipe, strnlen(req.pipe, sizeof req.pipe));
    if (len != sizeof req || pipe.size() == sizeof req.pipe || !pipe.starts_with(prefix)) continue;
    try {
      validate_name(pipe);
      Connection c = detail::ListenerAccess::take_server_end(pipe, wait_);
      detail::ListenerAccess::remove_name_at_close(c);
      return c;
    } catch (const Error&) {
      // The client gave up (its pipe is gone) or the request was not a
      // pipe we can take: the next one.
    }
  }
}

Connection Client(std::string_view name, std::optional<Clock::duration> timeout,
                  const PipeOptions& options) {
  check_listener_name(name);
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = detail::deadline_from(start, timeout);
  QueueOptions not_attached;
  not_attached.segment.attach = false;  // the attached processes are the servers
  // Which listener this is (creator, creation time), read before its backlog
  // is opened: a server restarted under the name meanwhile reads as another.
  using ListenerId = std::pair<std::uint64_t, std::uint64_t>;
  const auto identity = [](const SegmentInfo& i) {
    return ListenerId{i.creator.pack(), i.created_unix_ns};
  };
  std::optional<ListenerId> listener_id;
  try {
    const SegmentInfo info = SegmentView::open(std::string(name)).info();
    // Still initialising: its creation time is not written yet (the first
    // check below reads it from the backlog the open waits for).
    if (info.state != "initialising") listener_id = identity(info);
  } catch (const Error&) {  // the backlog's open below says what is wrong
  }
  auto backlog =
      detail::QueueCore::open(name, ObjectKind::listener, detail::kConnectRequestTag, not_attached);
  // The pipe: unique per process and call, taken by this process.
  detail::ConnectRequest req{};
  const std::string pipe = pipe_prefix(name) + pipe_suffix();
  std::memcpy(req.pipe, pipe.data(), pipe.size());
  PipeOptions o = options;
  o.duplex = true;
  Connection c = Connection::create(pipe, PipeEnd::second, o);
  const auto give_up = [&](Errc code, const std::string& why) {
    abandon(c, pipe, name, code, why);
  };
  switch (backlog.put(bytes_of(req), &deadline, true)) {
    case QueueResult::ok:
      break;
    case QueueResult::timed_out:
      give_up(Errc::timed_out, "connect: the backlog stayed full");
      break;
    case QueueResult::closed:
      give_up(Errc::closed, "connect: the listener is closed");
      break;
    default:
      give_up(Errc::corrupted, "connect: the backlog is corrupted");
  }
  // Wait for accept(), checking now and then that the listener is alive
  // and still the one whose backlog holds our request: a server restarted
  // under the name makes a new backlog, which our request is not in.
  // A failed check gives up only if the request is still not taken: a
  // server may accept, send and die between our two reads, and what it
  // sent is this connection's.
  const auto accepted = [&] { return detail::ListenerAccess::peer_taken(c); };
  const auto fail = [&](Errc code, const std::string& why) {
    if (!accepted()) give_up(code, why);
  };
  auto pause = std::chrono::microseconds(20);
  auto next_check = Clock::now();
  while (!accepted()) {
    const auto now = Clock::now();
    if (now >= deadline) {
      fail(Errc::timed_out, "connect: not accepted in time");
      break;
    }
    if (now >= next_check) {
      next_check = now + std::chrono::milliseconds(10);
      detail::fault_point(detail::FaultPoint::connect_checking);
      if (backlog.closed()) fail(Errc::closed, "connect: the listener was closed");
      std::optional<SegmentInfo> info;
      try {
        info = SegmentView::open(std::string(name)).info();
      } catch (const Error&) {
        fail(Errc::closed, "connect: the listener is gone");
        break;
      }
      const ListenerId id = identity(*info);
      if (listener_id && id != *listener_id) {
        fail(Errc::peer_dead, "connect: the listener was replaced (a server restarted)");
      }
      listener_id = id;
      if (!listening(*info, false)) fail(Errc::peer_dead, "connect: the listener died");
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
  // peer_taken() saw the server's end taken: what it asked for is written.
  if (accepted()) detail::ListenerAccess::follow_server_wait(c);
  detail::ListenerAccess::remove_name_at_close(c);
  return c;
}

}  // namespace shmbus
