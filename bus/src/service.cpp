#include "shmbus/service.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <unordered_set>

#include "shmbus/detail/futex.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/wait_any.hpp"

namespace shmbus::detail {

namespace {

// Frames read from one client in one turn (a request ends the turn; cancels
// do not): a client flooding cancels cannot hold the server past its
// deadline or starve the others.
constexpr int kFramesPerTurn = 64;
// Frames a client still reads once a call's deadline passed (each is already
// in the pipe: recv does not wait then), so that get_for(0) finds a response
// behind others'.
constexpr int kFramesPastDeadline = 256;
// The longest respond_timeout taken as given: now + it (a nanosecond
// deadline) cannot overflow; a longer one (milliseconds::max()) is as good
// as forever.
constexpr auto kLongestWait =
    std::chrono::duration_cast<std::chrono::milliseconds>(Clock::duration::max() / 4);

void put_frame(std::vector<std::byte>& frame, std::uint64_t id, FrameKind kind,
               std::span<const std::byte> value) {
  const ServiceHeader h{id, static_cast<std::uint32_t>(kind), 0};
  frame.resize(sizeof h + value.size());
  std::memcpy(frame.data(), &h, sizeof h);
  if (!value.empty()) std::memcpy(frame.data() + sizeof h, value.data(), value.size());
}

// The header of a received frame; false when it is too short to have one.
bool get_header(std::span<const std::byte> frame, ServiceHeader& h) noexcept {
  if (frame.size() < sizeof h) return false;
  std::memcpy(&h, frame.data(), sizeof h);
  return true;
}

}  // namespace

// ---- server ------------------------------------------------------------------

namespace {
// The listener's options with the Service's wait policy, when it has one.
ListenerOptions listener_options(const ServiceOptions& o) {
  ListenerOptions l = o.listener;
  if (o.wait) l.wait = o.wait;
  return l;
}
}  // namespace

ServiceServer::ServiceServer(std::string_view name, const ServiceOptions& options)
    : listener_(name, listener_options(options)),
      respond_timeout_(std::min(options.respond_timeout, kLongestWait)) {}
ServiceServer::ServiceServer(ServiceServer&&) noexcept = default;
ServiceServer& ServiceServer::operator=(ServiceServer&&) noexcept = default;
ServiceServer::~ServiceServer() = default;

// One object returned on every path (no move of a Taken on the way out).
std::optional<ServiceServer::Taken> ServiceServer::take_within(Clock::duration timeout) {
  release_request();
  std::optional<Taken> t = turn(true);  // a request there now: no clock read
  if (!t) {
    const auto now = Clock::now();
    const auto deadline = detail::deadline_from(now, timeout);
    t = wait_and_take(&deadline, now);
  }
  return t;
}

void ServiceServer::accept_new() {
  // A count with no client ready at the head is a client still connecting,
  // or one that died doing so: wait() repairs such a slot, but a server
  // that one client keeps busy may never reach wait(), so the turn looks
  // too, once a liveness interval.
  if (!ServiceAccess::backlog_ready(listener_)) {
    const Clock::time_point now = Clock::now();
    if (now >= next_backlog_check_) {
      next_backlog_check_ = now + kBacklogCheckEvery;
      ServiceAccess::repair_backlog(listener_);
    }
  }
  while (auto c = listener_.pending() != 0 ? listener_.try_accept() : std::nullopt) {
    PeerRef peer(new Peer);
    peer->conn = std::move(*c);
    peers_.push_back(std::move(peer));
  }
}

std::optional<ServiceServer::Taken> ServiceServer::turn(bool quick) {
  // pending(): two loads of lines that change only when a client connects.
  if (listener_.pending() != 0) [[unlikely]]
    accept_new();
  // One turn: at most one request from each client, starting after the
  // client served last.
  const std::size_t n = peers_.size();
  if (next_ >= n) next_ = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = next_ + k < n ? next_ + k : next_ + k - n;
    Peer& p = *peers_[i];
    // A quick turn over one client passes over its end when no frame is at
    // its read position (one load): the out-of-line receive would say
    // `empty`, or, for a client that closed or died, what wait_and_take()'s
    // full turn then finds (after its wait or spin, which both end on such
    // an end, or at once when the deadline has passed). With several
    // clients every end gets the full look: a request of another would end
    // the turn before that wait.
    if (quick && n == 1 && ServiceAccess::fast_ready(p.conn) && !ServiceAccess::has_data(p.conn))
      break;
    for (int f = 0; f < kFramesPerTurn && !p.gone; ++f) {
      // A frame (read in place, or gathered when it came in fragments),
      // nothing yet, end of file or a death. Waits only for the rest of a
      // request that has begun to arrive, at most respond_timeout: a client
      // stopped half way through one is dropped (timeout), never waited for.
      std::span<const std::byte> frame;
      bool in_place = false;
      ServiceHeader h{};
      const RecvResult r =
          ServiceAccess::next(p.conn, frame, in_place, nullptr, false, respond_timeout_);
      // closed: this end is not this process's (a forked child's copy of
      // the Service): never served here, and not dropped for its owner.
      if (r == RecvResult::empty || r == RecvResult::closed) break;
      if (r != RecvResult::ok) {
        p.drop();  // closed, dead or corrupted
        break;
      }
      p.publish_taken();
      const bool framed = get_header(frame, h);
      if (framed && h.kind == static_cast<std::uint32_t>(FrameKind::cancel)) {
        ServiceAccess::release(p.conn, in_place);
        if (p.is_open(h.id)) p.cancelled.insert(h.id);
        continue;  // cancels do not count as the client's turn
      }
      if (!framed || h.kind != static_cast<std::uint32_t>(FrameKind::request) || p.is_open(h.id)) {
        ServiceAccess::release(p.conn, in_place);
        p.drop();  // a frame without a header, a protocol error, an id reused while open
        break;
      }
      p.add_open(h.id);
      p.publish_open();
      next_ = i + 1;
      held_ = &p.conn;
      held_in_place_ = in_place;
      return Taken{peers_[i], h.id, frame.subspan(sizeof h)};
    }
  }
  return std::nullopt;
}

std::optional<ServiceServer::Taken> ServiceServer::take(const Clock::time_point* deadline) {
  release_request();
  std::optional<Taken> t = turn(true);
  if (!t) t = wait_and_take(deadline, deadline != nullptr ? Clock::now() : Clock::time_point{});
  return t;
}

std::optional<ServiceServer::Taken> ServiceServer::wait_and_take(const Clock::time_point* deadline,
                                                                 Clock::time_point now) {
  // A spin whose turn found nothing (a closed end dropped, a cancel) is
  // followed by a wait(): its liveness checks (a dead client, a backlog
  // slot a dying client left claimed) always get their turn.
  const auto forget_gone = [this] {
    std::erase_if(peers_, [](const PeerRef& p) { return p->gone; });
  };
  bool may_spin = true;
  for (bool first = true;; first = false) {
    forget_gone();
    if (deadline != nullptr) {
      if (!first) now = Clock::now();
      if (now >= *deadline) {
        if (!first) return std::nullopt;
        auto t = turn();  // the full turn the quick one owes: take_for(0) drops a closed client
        forget_gone();
        return t;
      }
    }
    const Spin spun = may_spin ? spin(deadline) : Spin::skipped;
    if (spun != Spin::ready) {
      std::optional<Clock::duration> left;
      if (deadline != nullptr) {
        if (spun == Spin::gave_up) now = Clock::now();  // spun up to 20 us
        if (now >= *deadline) return std::nullopt;
        left = *deadline - now;
      }
      // Sleep on the backlog and every client's pipe at once: a new client
      // or a request wakes the server (wait() takes any number of them).
      waiting_.clear();
      waiting_.emplace_back(listener_);
      for (auto& p : peers_) waiting_.emplace_back(p->conn);
      shmbus::wait(waiting_, ready_, left);
    }
    if (auto t = turn()) return t;
    may_spin = spun != Spin::ready;
  }
}

// [service.spin] A set holding a busy-poll end makes wait() spin until
// something is ready (that end's sender wakes nobody). Then the server
// spins here instead, for at most kSpin, on what wait()'s own spin reads:
// each client's hot word (the header at its read position, a seq_cst load
// as the ring's has_data() does), and every 64 steps the clients' close
// flags, the backlog and the clock. The turn that follows reads the request
// it found: no wait() set to build, and the end is not checked twice (wait()
// then recv) on the way to a request. Past kSpin, or when an end cannot be
// read inline (another process's copy, a frame peeked), or with more
// clients than kSpinPeers (wait()'s hint serves many ends better), wait()
// does as before: it also checks the clients' liveness. Nothing is written.
ServiceServer::Spin ServiceServer::spin(const Clock::time_point* deadline) noexcept {
  constexpr std::size_t kSpinPeers = 16;
  constexpr auto kSpin = std::chrono::microseconds(20);
  if (peers_.empty() || peers_.size() > kSpinPeers) return Spin::skipped;
  bool busy = false;
  for (const auto& p : peers_) {
    if (!ServiceAccess::fast_ready(p->conn)) return Spin::skipped;
    busy = busy || ServiceAccess::busy_poll(p->conn);
  }
  if (!busy) return Spin::skipped;  // wait() spins only so long, then sleeps
  Clock::time_point until{};
  for (unsigned i = 1;; ++i) {
    for (const auto& p : peers_)
      if (ServiceAccess::has_data(p->conn)) return Spin::ready;
    if ((i & 63) != 0) {
      detail::cpu_relax();
      continue;
    }
    for (const auto& p : peers_)
      if (ServiceAccess::peer_closed(p->conn)) return Spin::ready;
    if (ServiceAccess::backlog_ready(listener_)) return Spin::ready;
    const Clock::time_point now = Clock::now();
    if (deadline != nullptr && now >= *deadline) return Spin::ready;  // the turn, then nullopt
    if (i == 64) {
      until = now + kSpin;
    } else if (now >= until) {
      return Spin::gave_up;
    }
  }
}

void ServiceServer::release_request() noexcept {
  if (held_ == nullptr) return;
  ServiceAccess::release(*held_, held_in_place_);
  held_ = nullptr;
}

bool ServiceServer::respond_failed(const Taken& t) noexcept {
  if (held_ == &t.peer->conn) release_request();
  t.peer->drop();  // dead, closed, or not reading its responses
  return false;
}

void ServiceServer::drop(const Taken& t) noexcept {
  if (held_ == &t.peer->conn) release_request();
  t.peer->drop();
}

// ---- client ------------------------------------------------------------------

ServiceClientCore::ServiceClientCore(std::string_view name,
                                     std::optional<Clock::duration> connect_timeout,
                                     const PipeOptions& options)
    : name_(name), connect_timeout_(connect_timeout), options_(options) {
  connect();
}

void ServiceClientCore::connect() {
  conn_ = Client(name_, connect_timeout_, options_);
  sent_ = 0;
}

namespace {
// The first entry of `pending` (sorted by id) whose id is not below `id`.
template <class Entries>
auto lower_bound_id(Entries& pending, std::uint64_t id) noexcept {
  return std::lower_bound(pending.begin(), pending.end(), id,
                          [](const auto& e, std::uint64_t want) { return e.id < want; });
}
}  // namespace

ServiceClientCore::Pending* ServiceClientCore::find(std::uint64_t id) noexcept {
  if (!pending_.empty() && pending_.back().id == id)
    return &pending_.back().call;  // the newest call: no search
  const auto it = lower_bound_id(pending_, id);
  return it != pending_.end() && it->id == id ? &it->call : nullptr;
}

void ServiceClientCore::forget(std::uint64_t id) noexcept {
  // Mostly the newest call (one call at a time): no search.
  if (!pending_.empty() && pending_.back().id == id) {
    pending_.pop_back();
    return;
  }
  const auto it = lower_bound_id(pending_, id);
  if (it != pending_.end() && it->id == id) pending_.erase(it);
}

void ServiceClientCore::end_pending(bool taken_final) noexcept {
  release();
  // [service.taken]: what the server took before it went (0: it did not say).
  const std::uint64_t taken =
      ServiceAccess::peer_line(*conn_).taken.load(std::memory_order_relaxed);
  conn_.reset();  // the next call connects again
  // Every call in flight ends now, not at its timeout.
  for (auto& [pid, p] : pending_) {
    if (p.done) continue;
    p.server_gone = true;
    p.maybe_executed = !taken_final || taken == 0 || p.message < taken - 1;
  }
}

void ServiceClientCore::server_gone(RecvResult why, std::uint64_t id) {
  // [service.taken] is final only once the server closed or died.
  end_pending(why == RecvResult::eof || why == RecvResult::peer_dead);
  throw_gone(id, why == RecvResult::eof ? "closed" : "died");
}

void ServiceClientCore::throw_gone(std::uint64_t id, const char* how) {
  const Pending* p = find(id);
  const bool maybe = p == nullptr || p->maybe_executed;
  throw ServerGone(name_,
                   std::string("the server ") + how +
                       (maybe ? " after taking the request: it may have been executed"
                              : " before taking the request: it was not executed"),
                   maybe);
}

Connection& ServiceClientCore::connection(const Clock::time_point* deadline) {
  if (conn_) return *conn_;
  std::optional<Clock::duration> timeout = connect_timeout_;
  if (deadline != nullptr) {
    const Clock::duration left = std::max(*deadline - Clock::now(), Clock::duration::zero());
    timeout = timeout ? std::min(*timeout, left) : left;
  }
  try {
    conn_ = Client(name_, timeout, options_);
  } catch (const Error& e) {
    if (e.code() != Errc::timed_out) throw;
    throw CallTimedOut(name_,
                       std::string("not connected to the server again in time (") + e.what() +
                           "): the request was not sent",
                       false);
  }
  sent_ = 0;
  return *conn_;
}

std::uint64_t ServiceClientCore::sent(SendResult r, bool record) {
  const std::uint64_t id = next_id_;
  if (r == SendResult::too_large) {
    throw Error(Errc::too_large, name_, "request larger than the pipe's max_message");
  }
  if (r == SendResult::timeout) {  // a full pipe past a timed call's deadline
    if (!ServiceAccess::send_failed(*conn_)) {
      throw CallTimedOut(name_, "request not sent by the deadline: not executed", false);
    }
    // Part of a fragmented request went out, and this connection can carry
    // no other frame: the server drops it without executing the request;
    // calls in flight on it may still run.
    end_pending(false);
    throw CallTimedOut(name_,
                       "request sent only in part by the deadline: not executed; the connection "
                       "was reset (calls in flight on it end as maybe executed)",
                       false);
  }
  if (r != SendResult::ok) {  // the server closed or died: this request never left
    end_pending(r != SendResult::corrupted);
    throw ServerGone(name_, "request not sent (" + std::string(to_string(r)) + "): not executed",
                     false);
  }
  ++next_id_;
  const std::uint64_t message = sent_++;  // counted even if the record below throws
  if (record) add_record(id, message);
  return id;
}

void ServiceClientCore::add_record(std::uint64_t id, std::uint64_t message) {
  // Ids only grow: appending keeps pending_ sorted.
  pending_.push_back(Entry{id, {}});
  pending_.back().call.message = message;
}

// Inlined into next() and answer(): a call read as it arrives goes through
// it once per response.
[[gnu::always_inline]] inline bool ServiceClientCore::on_frame(std::uint64_t id, Pending& p,
                                                               std::span<const std::byte> frame,
                                                               bool in_place,
                                                               std::span<const std::byte>& value,
                                                               bool& last) {
  // Frees the frame on every way out but the one that returns it.
  struct Done {
    Connection& c;
    bool in_place;
    ~Done() { ServiceAccess::release(c, in_place); }
  } done{*conn_, in_place};
  ServiceHeader h{};
  if (!get_header(frame, h)) return false;  // untrusted: ignored
  // Mostly the call waited for: no search.
  Pending* target = h.id == id ? &p : find(h.id);
  if (target == nullptr || target->done || target->failed()) {
    return false;  // unknown, cancelled or ended: ignored
  }
  Pending& q = *target;
  const std::span<const std::byte> v = frame.subspan(sizeof h);
  switch (static_cast<FrameKind>(h.kind)) {
    case FrameKind::response:
    case FrameKind::last:
      q.done = h.kind == static_cast<std::uint32_t>(FrameKind::last);
      if (&q == &p) {  // the call waited for, with nothing queued: no copy
        last = q.done;
        held_in_place_ = in_place;  // release() frees it once decoded
        done.in_place = false;
        value = v;
        return true;
      }
      q.gather().responses.emplace_back(v.begin(), v.end());
      return false;
    case FrameKind::failed:
      q.gather().failed.emplace(reinterpret_cast<const char*>(v.data()), v.size());
      return false;
    default:
      return false;  // not a response kind: ignored
  }
}

std::optional<std::span<const std::byte>> ServiceClientCore::next(std::uint64_t id,
                                                                  const Clock::time_point* deadline,
                                                                  bool& last) {
  release();                  // the frame returned last (normally released after decoding)
  int frames = 0, late = -1;  // late: frames read since the deadline was seen passed
  for (;;) {
    Pending* found = find(id);
    if (found == nullptr) throw Error(Errc::invalid_argument, name_, "no such call");
    Pending& p = *found;
    if (p.queued()) {
      Later& l = *p.later;
      held_ = std::move(l.responses[l.head++]);
      last = p.done && !p.queued();
      if (!p.queued()) {
        l.responses.clear();
        l.head = 0;
      }
      return std::span<const std::byte>(held_);
    }
    if (p.server_gone) throw_gone(id, "died or closed");
    if (p.failed()) {
      const std::string why = std::move(*p.later->failed);
      forget(id);
      throw Error(Errc::task_failed, name_, why);
    }
    if (!conn_) throw Error(Errc::peer_dead, name_, "the server is gone");
    // Past the deadline, only frames already there are read, and at most
    // kFramesPastDeadline of them: a server flooding frames for other calls
    // (or junk) cannot hold the caller. The clock is read every 16th frame
    // (a call's usual one frame reads none; the recv below times out by
    // itself when nothing comes).
    if (deadline != nullptr) {
      if (late >= 0) {
        if (++late > kFramesPastDeadline) return std::nullopt;
      } else if (++frames % 16 == 0 && Clock::now() >= *deadline) {
        late = 0;
      }
    }
    std::span<const std::byte> frame;
    bool in_place = false;
    const RecvResult r = ServiceAccess::next(*conn_, frame, in_place, deadline, true);
    if (r == RecvResult::timeout) return std::nullopt;
    if (r != RecvResult::ok) server_gone(r, id);
    std::span<const std::byte> value;
    if (on_frame(id, p, frame, in_place, value, last)) return value;
  }
}

std::optional<std::span<const std::byte>> ServiceClientCore::answer(
    std::uint64_t id, const Clock::time_point* deadline, bool& recorded) {
  // `id` is the request sent last, with no record (send(value, false)).
  assert(id + 1 == next_id_ && find(id) == nullptr);
  release();  // the frame returned last (normally released after decoding)
  // Room for the record a frame other than the answer needs, taken before
  // the frame is read: a push_back that threw then would strand the frame.
  if (pending_.size() == pending_.capacity())
    pending_.reserve(std::max<std::size_t>(4, 2 * pending_.capacity()));
  std::span<const std::byte> frame;
  bool in_place = false;
  const RecvResult r = ServiceAccess::next(*conn_, frame, in_place, deadline, true);
  ServiceHeader h{};
  if (r == RecvResult::ok && get_header(frame, h) && h.id == id &&
      h.kind == static_cast<std::uint32_t>(FrameKind::last)) {
    held_in_place_ = in_place;  // release() frees it once decoded
    return frame.subspan(sizeof h);
  }
  // No response by the deadline: the call ends (a response later is one
  // to an id no longer waited for, ignored).
  if (r == RecvResult::timeout) return std::nullopt;
  // Anything else (a death, another call's frame, a partial response, a
  // failure, junk): the call gets the record call_async() makes (it is the
  // request sent last) and goes on as PendingCall::get() does.
  add_record(id, sent_ - 1);  // no allocation: reserved above
  recorded = true;
  if (r != RecvResult::ok) server_gone(r, id);
  bool last = false;
  std::span<const std::byte> value;
  if (on_frame(id, pending_.back().call, frame, in_place, value, last) && last) return value;
  for (;;) {
    auto next_value = next(id, deadline, last);
    if (!next_value || last) return next_value;
  }
}

void ServiceClientCore::throw_decode_error(std::string_view type) const {
  throw Error(Errc::decode_error, name_,
              "expected " + std::string(type) + ": " + last_decode_error());
}

void ServiceClientCore::cancel(std::uint64_t id) noexcept {
  Pending* p = find(id);
  if (p == nullptr) return;
  p->done = true;  // later responses are dropped
  if (p->later) {
    p->later->responses.clear();
    p->later->head = 0;
  }
  if (!conn_) return;
  put_frame(frame_, id, FrameKind::cancel, {});
  // Best effort: a full pipe keeps the call running.
  if (conn_->try_send_bytes(frame_) == SendResult::ok) ++sent_;
}

}  // namespace shmbus::detail
