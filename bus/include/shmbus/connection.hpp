// shmbus::Connection — one end of a Pipe (multiprocessing.Connection).
//
// A Connection sends and receives whole messages: bytes, strings, spans,
// trivially copyable values, and through the codec (shmbus/codec.hpp)
// std containers, optionals, variants, tuples and MSGPACK_DEFINE structs:
//   conn.send(std::vector<int>{1, 2, 3});
//   auto v = other.recv<std::vector<int>>();   // Error(decode_error) if not one
//
// Messages arrive in order, exactly once, each as it was sent; one larger
// than a ring frame streams through the ring in fragments, up to the
// pipe's max_message.
//
// Who may call what: one thread of one process uses an end at a time.
// Connections made by Pipe() can be inherited across fork(); the first
// process that uses an end takes it (the creator's claim passes to a
// forked child). An end opened by name is taken at once; a second taker
// gets Errc::already_exists. After fork, use each end in one process only.
//
// Hot paths (send*, recv*_into, try_*, poll, reserve/commit, peek/release)
// are noexcept and return a small enum; the convenience calls that return
// a value (recv<T>(), recv_bytes(), recv_string()) throw shmbus::Error.
//
// End of file: when the peer closes its end or dies, the receiver first
// gets every message the peer committed, then RecvResult::eof (closed) or
// RecvResult::peer_dead (died without closing). A sender whose peer is
// gone gets SendResult::broken / peer_dead. Using a closed end gives
// `closed`. Death is noticed by the peer's ProcessId (pid + start time)
// stored in the segment, checked only while waiting.
//
// Timeouts: a timed call gives up at its deadline, also in the middle of a
// message larger than one frame (a peer that stops half way through a
// message never holds the other side past its deadline). A half message
// cannot be resumed or taken back, so such a timeout fails that direction
// for good: a sender that timed out after its first fragment gets
// SendResult::corrupted from every later send (its peer receives the
// fragments sent, then waits until this end closes: eof / peer_dead); a
// receiver that timed out after the first fragment gets
// RecvResult::corrupted from every later receive. Calls without a
// deadline (and try_ receives, once a message's first fragment is there)
// wait for the rest of the message until the peer closes or dies.
// Receiving into a vector or string grows it with the bytes that arrive,
// not to the length the first fragment announces.
//
// Memory ordering: everything a sender wrote before send()/commit()
// returned (before end_batch() for a batch) is visible to the receiver
// that receives that message.
#pragma once

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shmbus/codec.hpp"
#include "shmbus/detail/copy_choice.hpp"
#include "shmbus/detail/fd_bridge.hpp"
#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/error.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

namespace detail {
class Segment;
// Whether this thread sent through any Connection since a wait for data
// last ended (a receiver that sees a send between two of its waits is in
// a request/response exchange: no stream coalescing). A send only stores
// true (one store where a count took a load and a store); the end of a
// wait takes the flag (Connection::wait_data()): when set, it clears it and moves
// t_send_epoch on. So a receiver that kept t_send_epoch from its wait's
// end has seen no send since exactly when the flag is clear and the epoch
// is the same (a wait of another receiver that took the flag meanwhile
// moved the epoch). constinit: no guard or wrapper call on the send path.
extern constinit thread_local bool t_sent;
extern constinit thread_local std::uint64_t t_send_epoch;
// [pipe.fork] In a fork child: turns off the fast paths of every
// Connection the child inherited (pipe.cpp's pthread_atfork handler).
void fork_child_stop_fast() noexcept;
// What peer_closed() reads in a Connection without a peer (default made,
// moved from): never set, so the inlined send may test the peer's flag
// before its ring refuses the send.
inline constinit const std::atomic<std::uint32_t> g_no_peer_closed{0};
}  // namespace detail

enum class SendResult : std::uint8_t {
  ok,
  full,       // try_ call: no room right now
  timeout,    // the deadline passed before the message was sent
  too_large,  // above the pipe's max_message; nothing was sent
  closed,     // this end is closed, cannot send, or was taken by another process
  broken,     // the peer closed its end
  peer_dead,  // the peer died
  corrupted,  // shared state failed validation; the channel is unusable
};

enum class RecvResult : std::uint8_t {
  ok,
  empty,          // try_ call: nothing to receive right now
  timeout,        // the deadline passed
  eof,            // the peer closed its end and everything it sent was received
  peer_dead,      // the peer died and everything it committed was received
  too_small,      // the buffer is too small: the size needed was reported, the message stays
  too_large,      // longer than maxlength: the message stays
  size_mismatch,  // recv<T>: the message is not sizeof(T) bytes; it stays
  closed,         // this end is closed, cannot receive, or was taken by another process
  corrupted,      // a header or index failed validation; the channel is unusable
  decode_error,   // recv of a codec type: the message is not a T (it was consumed;
                  // the connection stays usable)
};

[[nodiscard]] std::string_view to_string(SendResult r) noexcept;
[[nodiscard]] std::string_view to_string(RecvResult r) noexcept;

enum class PipeEnd : std::uint8_t { first = 0, second = 1 };

struct PipeOptions {
  bool duplex = true;
  // Bytes per ring (per direction): a power of two, 4 KiB .. 1 GiB. A
  // message up to a quarter of it travels as one frame.
  std::size_t capacity = std::size_t{256} << 10;
  // The largest message; larger ones fail with too_large before anything
  // is sent. At most 2^62.
  std::uint64_t max_message = std::uint64_t{1} << 30;
  // How both ends wait (fixed per pipe: the sender must know whether to
  // wake a sleeping receiver). Adaptive (the default): the sender
  // publishes with plain stores, and a receiver that goes to sleep after
  // its spin first calls membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which
  // interrupts (about 1 us) every cpu then running a process with an
  // adaptive sending end, once per wait that sleeps. A process that must
  // not be interrupted sets SHMBUS_NO_MEMBARRIER=1 in its environment: its
  // adaptive senders then pay a locked instruction per message instead
  // (as blocking senders always do), and nothing interrupts it.
  WaitPolicy wait{};
  // Message and byte counters for bus-inspector (fixed per pipe). They are
  // plain stores to lines only their side writes; off exists to measure
  // exactly that cost (bench: BM_PipeNoStats_*).
  bool statistics = true;
  // Stream coalescing, per receiving end (not shared): a busy-poll or
  // adaptive receiver that catches up with a stream (its previous wait
  // ended within a few polls, i.e. messages come less than about 0.4 us
  // apart, and its thread sent nothing since) waits this long before it
  // polls again, so the sender fills whole cache lines instead of fighting
  // the receiver for each one (a 64-byte stream on the 2-vCPU VM: 16-18 M
  // msg/s off, 23-26 M at 1 us, 30 M at 2 us, 32-35 M at 4 us). A message
  // that arrives meanwhile is received up to this much later.
  // Request/response traffic (the receiving thread sends between receives,
  // on any pipe) and receivers that waited long are never delayed. Zero
  // turns it off. Ends opened by name use the default; set_coalesce()
  // changes it for one end.
  std::chrono::nanoseconds coalesce = std::chrono::microseconds(2);
  // Anonymous pipes (no name given) are unlinked at once and shared by
  // fork() only, like multiprocessing's.
  SegmentOptions segment{};
};

namespace detail {
struct ConnectionWait;
struct WaitAccess;  // shmbus::wait over any mix of objects (wait_any.hpp)
struct ListenerAccess;
struct ServiceAccess;  // service.hpp: Service frames and [service.taken]
// A value Connection sends as one MessagePack value: not trivially
// copyable (those go as their bytes) and not std::string (its bytes, no
// header, whichever call sends or receives it: README's type table).
template <class T>
concept CodecMessage = !std::is_trivially_copyable_v<T> && !std::is_same_v<T, std::string>;
template <class T>
inline constexpr bool is_span_v = false;
template <class E, std::size_t N>
inline constexpr bool is_span_v<std::span<E, N>> = true;
// A value received as its object bytes: trivially copyable and not a
// reference to memory elsewhere (a pointer's, a string_view's or a span's
// bytes are an address, meaningless in another process).
template <class T>
concept PlainValue =
    std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
    !is_span_v<T> && !std::is_same_v<T, std::string_view>;
// A value sent as its object bytes: a PlainValue that is not a string (a
// char array or a C string goes as the characters up to its NUL).
template <class T>
concept PlainMessage = PlainValue<T> && !std::is_convertible_v<const T&, std::string_view>;
// A C string (char*, const char*) or a char array, however passed: sent as
// its characters up to its NUL, and an array never past its extent (one
// without a NUL is all of it).
template <class S>
inline constexpr bool kCharsArg =
    std::is_same_v<std::decay_t<S>, char*> || std::is_same_v<std::decay_t<S>, const char*>;
template <class S>
concept CharsArg = kCharsArg<S>;
template <class S>
[[nodiscard]] std::string_view chars_of(const S& s) noexcept {
  if constexpr (std::is_array_v<S>) {
    // memchr, not strnlen: GCC folds it for a literal, whose exact length
    // the inline copy's size classes then see (strnlen's unknown result
    // made -Warray-bounds flag classes larger than the literal).
    const auto* nul = std::char_traits<char>::find(s, std::extent_v<S>, '\0');
    return {s, nul == nullptr ? std::extent_v<S> : static_cast<std::size_t>(nul - s)};
  } else {
    return s == nullptr ? std::string_view{} : std::string_view(s);
  }
}
}  // namespace detail

class Connection {
 public:
  using Deadline = Clock::time_point;

  // Takes `end` of the pipe named `name` (created by Pipe() or
  // Connection::create()). Throws Error: not_found, already_exists (the end
  // is taken), invalid_argument, and whatever opening a segment throws.
  static Connection open(std::string_view name, PipeEnd end, const SegmentOptions& options = {});
  // Creates the pipe `name` and takes one end of it; another process takes
  // the other end with open(). Throws Error (already_exists,
  // invalid_argument, ...).
  static Connection create(std::string_view name, PipeEnd end, const PipeOptions& options = {});

  Connection() = default;
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  // Closes the end if this process holds it.
  // Closes this end (as close()). A process that ends cleanly (a Process
  // child whose callable returns, or exit()) closes its ends the same way,
  // so the peer reads EOF, not a death.
  ~Connection();

  // --- sending -----------------------------------------------------------
  [[nodiscard]] SendResult send_bytes(std::span<const std::byte> data) noexcept {
    if (fast_send_small(data.data(), data.size())) [[likely]]
      return SendResult::ok;
    return send_bytes_slow(data);
  }
  [[nodiscard]] SendResult send_bytes_until(std::span<const std::byte> data,
                                            Deadline deadline) noexcept {
    return send_bytes_impl(data, &deadline, true);
  }
  template <class Rep, class Period>
  [[nodiscard]] SendResult send_bytes_for(std::span<const std::byte> data,
                                          std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_bytes_until(data, deadline_after(timeout));
  }
  // Never waits: SendResult::full when there is no room for the whole
  // message now (a message larger than one frame is never sent by try_).
  [[nodiscard]] SendResult try_send_bytes(std::span<const std::byte> data) noexcept {
    return send_bytes_impl(data, nullptr, false);
  }

  // A trivially copyable value, sent as its bytes. Not a pointer, a span
  // or a string_view (an address means nothing to another process: a
  // span has its own overloads), and a char array or C string is a string
  // (its characters up to the NUL).
  template <class T>
  requires detail::PlainMessage<T>
  [[nodiscard]] SendResult send(const T& value) noexcept {
    const auto bytes = std::as_bytes(std::span<const T, 1>(&value, 1));
    if constexpr (sizeof(T) <= detail::kInlineCopy) {
      return send_bytes(bytes);
    } else {  // a constant size: the whole one-frame path inline, memcpy too
      if (fast_send(bytes.data(), sizeof(T))) [[likely]]
        return SendResult::ok;
      return send_bytes_impl(bytes, nullptr, true);
    }
  }
  template <class T>
  requires detail::PlainMessage<T>
  [[nodiscard]] SendResult try_send(const T& value) noexcept {
    return try_send_bytes(std::as_bytes(std::span<const T, 1>(&value, 1)));
  }
  template <class T>
  requires detail::PlainMessage<T>
  [[nodiscard]] SendResult send_until(const T& value, Deadline deadline) noexcept {
    return send_bytes_until(std::as_bytes(std::span<const T, 1>(&value, 1)), deadline);
  }
  template <class T, class Rep, class Period>
  requires detail::PlainMessage<T>
  [[nodiscard]] SendResult send_for(const T& value,
                                    std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_until(value, deadline_after(timeout));
  }
  template <class T>
  requires std::is_trivially_copyable_v<T>
  [[nodiscard]] SendResult send(std::span<const T> values) noexcept {
    return send_bytes(std::as_bytes(values));
  }
  template <class T>
  requires std::is_trivially_copyable_v<T>
  [[nodiscard]] SendResult try_send(std::span<const T> values) noexcept {
    return try_send_bytes(std::as_bytes(values));
  }
  template <class T>
  requires std::is_trivially_copyable_v<T>
  [[nodiscard]] SendResult send_until(std::span<const T> values, Deadline deadline) noexcept {
    return send_bytes_until(std::as_bytes(values), deadline);
  }
  template <class T, class Rep, class Period>
  requires std::is_trivially_copyable_v<T>
  [[nodiscard]] SendResult send_for(std::span<const T> values,
                                    std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_bytes_until(std::as_bytes(values), deadline_after(timeout));
  }
  [[nodiscard]] SendResult send(std::string_view s) noexcept {
    return send_bytes(std::as_bytes(std::span<const char>(s.data(), s.size())));
  }
  [[nodiscard]] SendResult send(const std::string& s) noexcept { return send(std::string_view(s)); }
  // A C string or char array (detail::CharsArg), every call form: an array
  // is read up to its NUL or its extent, never past it.
  template <class S>
  requires detail::CharsArg<S>
  [[nodiscard]] SendResult send(const S& s) noexcept { return send(detail::chars_of(s)); }
  template <class S>
  requires detail::CharsArg<S>
  [[nodiscard]] SendResult try_send(const S& s) noexcept { return try_send(detail::chars_of(s)); }
  template <class S>
  requires detail::CharsArg<S>
  [[nodiscard]] SendResult send_until(const S& s, Deadline deadline) noexcept {
    return send_until(detail::chars_of(s), deadline);
  }
  template <class S, class Rep, class Period>
  requires detail::CharsArg<S>
  [[nodiscard]] SendResult send_for(const S& s,
                                    std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_until(detail::chars_of(s), deadline_after(timeout));
  }
  // A string's bytes with every call form (as send(std::string_view)).
  [[nodiscard]] SendResult try_send(std::string_view s) noexcept {
    return try_send_bytes(std::as_bytes(std::span<const char>(s.data(), s.size())));
  }
  [[nodiscard]] SendResult send_until(std::string_view s, Deadline deadline) noexcept {
    return send_bytes_until(std::as_bytes(std::span<const char>(s.data(), s.size())), deadline);
  }
  template <class Rep, class Period>
  [[nodiscard]] SendResult send_for(std::string_view s,
                                    std::chrono::duration<Rep, Period> timeout) noexcept {
    return send_until(s, deadline_after(timeout));
  }

  // Any other value the codec carries (shmbus/codec.hpp: std containers,
  // optional, variant, tuple, MSGPACK_DEFINE structs, ...), sent as one
  // message: encoded straight into the ring when it has room now, else
  // into a per-thread buffer first (then waiting and fragmenting as
  // send_bytes does). A type the codec cannot
  // carry fails to compile with a static_assert saying what to add. May
  // throw std::bad_alloc while encoding; a container of more than 2^32-1
  // elements gives too_large.
  template <class T>
  requires detail::CodecMessage<T>
  [[nodiscard]] SendResult send(const T& value) { return send_codec(value, nullptr, true); }
  template <class T>
  requires detail::CodecMessage<T>
  [[nodiscard]] SendResult try_send(const T& value) { return send_codec(value, nullptr, false); }
  template <class T>
  requires detail::CodecMessage<T>
  [[nodiscard]] SendResult send_until(const T& value, Deadline deadline) {
    return send_codec(value, &deadline, true);
  }
  template <class T, class Rep, class Period>
  requires detail::CodecMessage<T>
  [[nodiscard]] SendResult send_for(const T& value, std::chrono::duration<Rep, Period> timeout) {
    return send_until(value, deadline_after(timeout));
  }

  // --- receiving ---------------------------------------------------------
  // Receives one message into buffer[offset..]. On ok, `size` is its
  // length; on too_small, `size` is the length needed (the message stays).
  [[nodiscard]] RecvResult recv_bytes_into(std::span<std::byte> buffer, std::size_t offset,
                                           std::size_t& size) noexcept {
    if (offset <= buffer.size() &&
        rx_.try_recv<false, true>(buffer.data() + offset, buffer.size() - offset, size)) [[likely]]
      return RecvResult::ok;
    return recv_bytes_into_slow(buffer, offset, size);
  }
  [[nodiscard]] RecvResult recv_bytes_into_until(std::span<std::byte> buffer, std::size_t offset,
                                                 std::size_t& size, Deadline deadline) noexcept {
    return recv_impl(buffer, offset, size, &deadline, true);
  }
  template <class Rep, class Period>
  [[nodiscard]] RecvResult recv_bytes_into_for(
      std::span<std::byte> buffer, std::size_t offset, std::size_t& size,
      std::chrono::duration<Rep, Period> timeout) noexcept {
    return recv_bytes_into_until(buffer, offset, size, deadline_after(timeout));
  }
  [[nodiscard]] RecvResult try_recv_bytes_into(std::span<std::byte> buffer, std::size_t offset,
                                               std::size_t& size) noexcept {
    return recv_impl(buffer, offset, size, nullptr, false);
  }

  // Into a vector (resized to the message). too_large when the message is
  // longer than maxlength (it stays). May throw std::bad_alloc.
  [[nodiscard]] RecvResult recv_bytes(std::vector<std::byte>& out, std::size_t maxlength = SIZE_MAX,
                                      const Deadline* deadline = nullptr);
  // Python-style: returns the message; throws Error(closed) at EOF,
  // Error(peer_dead), Error(too_large), Error(corrupted).
  [[nodiscard]] std::vector<std::byte> recv_bytes(std::size_t maxlength = SIZE_MAX);

  // A trivially copyable value; a message of another size is left in the
  // ring and reported as size_mismatch.
  template <class T>
  requires detail::PlainValue<T>
  [[nodiscard]] RecvResult recv(T& out) noexcept {
    std::size_t size = 0;
    if (rx_.try_recv<true>(reinterpret_cast<std::byte*>(&out), sizeof(T), size)) [[likely]]
      return RecvResult::ok;
    return recv_value(&out, sizeof(T), nullptr);
  }
  template <class T, class Rep, class Period>
  requires detail::PlainValue<T>
  [[nodiscard]] RecvResult recv_for(T& out, std::chrono::duration<Rep, Period> timeout) noexcept {
    const Deadline d = deadline_after(timeout);
    return recv_value(&out, sizeof(T), &d);
  }
  template <class T>
  requires detail::PlainValue<T>
  [[nodiscard]] RecvResult recv_until(T& out, Deadline deadline) noexcept {
    return recv_value(&out, sizeof(T), &deadline);
  }
  // Never waits: empty when no message is there.
  template <class T>
  requires detail::PlainValue<T>
  [[nodiscard]] RecvResult try_recv(T& out) noexcept {
    return recv_value(&out, sizeof(T), nullptr, false);
  }
  template <class T>
  requires detail::PlainValue<T>
  [[nodiscard]] T recv() {
    T out;
    throw_unless_ok(recv(out), "recv");
    return out;
  }
  // A message's bytes as a string (whatever sent them), with every call
  // form. May throw std::bad_alloc.
  [[nodiscard]] RecvResult recv(std::string& out, const Deadline* deadline = nullptr);
  [[nodiscard]] RecvResult try_recv(std::string& out);
  [[nodiscard]] RecvResult recv_until(std::string& out, Deadline deadline) {
    return recv(out, &deadline);
  }
  template <class Rep, class Period>
  [[nodiscard]] RecvResult recv_for(std::string& out, std::chrono::duration<Rep, Period> timeout) {
    const Deadline d = deadline_after(timeout);
    return recv(out, &d);
  }
  [[nodiscard]] std::string recv_string();

  // A codec value (see send(const T&) above). A message that does not
  // decode as T is consumed and reported as decode_error (the reason is
  // detail::last_decode_error()); the next receive gets the next message.
  // May throw std::bad_alloc.
  template <class T>
  requires detail::CodecMessage<T>
  [[nodiscard]] RecvResult recv(T& out, const Deadline* deadline = nullptr) {
    return recv_codec(out, deadline, true);
  }
  template <class T>
  requires detail::CodecMessage<T>
  [[nodiscard]] RecvResult try_recv(T& out) { return recv_codec(out, nullptr, false); }
  template <class T>
  requires detail::CodecMessage<T>
  [[nodiscard]] RecvResult recv_until(T& out, Deadline deadline) {
    return recv_codec(out, &deadline, true);
  }
  template <class T, class Rep, class Period>
  requires detail::CodecMessage<T>
  [[nodiscard]] RecvResult recv_for(T& out, std::chrono::duration<Rep, Period> timeout) {
    const Deadline d = deadline_after(timeout);
    return recv_codec(out, &d, true);
  }
  // Python-style: returns the value; throws Error(decode_error) naming
  // this pipe and T when the message is not a T, Error(closed) at EOF,
  // Error(peer_dead), Error(corrupted).
  template <class T>
  requires(!std::is_trivially_copyable_v<T>) [[nodiscard]] T recv() {  // std::string: its bytes
    T out{};
    const RecvResult r = recv(out);
    if (r == RecvResult::decode_error) throw_decode_error(detail::type_name<T>());
    throw_unless_ok(r, "recv");
    return out;
  }

  // True when a message (or end of file) is ready, waiting up to `timeout`.
  [[nodiscard]] bool poll(
      std::chrono::nanoseconds timeout = std::chrono::nanoseconds::zero()) noexcept;

  // A file descriptor (an eventfd of this process) that polls readable
  // while a message, end of file or a dead peer may be there, for poll,
  // epoll, Boost.Asio, libuv. Level-triggered, re-armed by this end: it
  // stays readable until a call here finds nothing (poll() returning false,
  // try_recv_bytes_into() empty), then turns readable at the next message.
  // So drain while poll() is true, then wait on it again; reading the
  // descriptor is not needed. It may read readable once for nothing (a
  // message received meanwhile by a blocking recv()). The first call starts
  // one thread in this process that sleeps on the ring as a blocked recv()
  // would (see wait_any.hpp); senders then make one futex wake per
  // empty -> non-empty transition, and nothing at all while no process
  // asked for a descriptor. Valid until this Connection is destroyed; call
  // it from the thread that receives. Throws Error(invalid_argument) on an
  // end that cannot receive, Error(system) if the eventfd or thread cannot
  // be made.
  [[nodiscard]] int fileno();

  // --- zero copy -----------------------------------------------------------
  // Room for one message of up to `size` bytes (<= max_frame_payload()),
  // written in place and sent by commit(n). Waits like send_bytes().
  [[nodiscard]] SendResult reserve(std::size_t size, std::span<std::byte>& out) noexcept;
  // Sends `size` bytes of the reserved room: ok; closed (this end cannot
  // send, is closed or moved from); too_large (no reservation is pending,
  // or `size` is above the reserved size): nothing is sent.
  SendResult commit(std::size_t size) noexcept;
  // The next message in place, without copying; release() frees it. A
  // fragmented message cannot be peeked (too_large: use recv_bytes_into).
  [[nodiscard]] RecvResult peek(std::span<const std::byte>& out,
                                const Deadline* deadline = nullptr) noexcept;
  void release() noexcept;

  // Messages sent between begin_batch() and end_batch() become visible to
  // the receiver together, with one store. A batch is also published when
  // the sender has to wait for room.
  void begin_batch() noexcept;
  void end_batch() noexcept;

  // --- state -----------------------------------------------------------------
  // Closes this end: the peer receives what was sent, then EOF. Idempotent.
  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  [[nodiscard]] bool readable() const noexcept { return can_recv_; }
  [[nodiscard]] bool writable() const noexcept { return can_send_; }
  [[nodiscard]] PipeEnd end() const noexcept { return static_cast<PipeEnd>(end_); }
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] std::size_t max_frame_payload() const noexcept;
  [[nodiscard]] std::uint64_t max_message() const noexcept { return max_message_; }
  // See PipeOptions::coalesce.
  void set_coalesce(std::chrono::nanoseconds delay) noexcept {
    coalesce_ =
        std::min(delay, std::chrono::nanoseconds(Clock::duration::max() / 4));  // no overflow
  }

  // Internal: used by Pipe() and create()/open(). `config` is this
  // process's validated copy of the segment's config (never re-read).
  Connection(std::shared_ptr<detail::Segment> segment, const detail::PipeConfig& config, int end,
             bool taken);

 private:
  static void close_at_exit(void* self) noexcept;
  friend struct detail::ConnectionWait;  // shmbus::wait(): several ends at once
  friend struct detail::WaitAccess;      // shmbus::wait() over any mix (wait_any.hpp)
  friend struct detail::ListenerAccess;  // Client(): has the listener taken its end?
  friend struct detail::ServiceAccess;   // Service frames, [service.taken] words
  using WaitOutcome = detail::WaitOutcome;

  // now + timeout, saturated (detail::deadline_after in wait.hpp).
  template <class Rep, class Period>
  static Deadline deadline_after(std::chrono::duration<Rep, Period> timeout) noexcept {
    return detail::deadline_after(timeout);
  }
  void throw_unless_ok(RecvResult r, const char* what) const;
  [[noreturn]] void throw_decode_error(std::string_view type) const;
  // open(); with `recv_wait`, this end waits for data by that policy
  // instead of the pipe's, and says so to the peer ([pipe.recv_wait]),
  // whose follow_peer_recv_wait() then makes its sends wake it.
  static Connection take_end(std::string_view name, PipeEnd end, const SegmentOptions& options,
                             const WaitPolicy* recv_wait);
  // Once the peer took its end: sends wake it as its [pipe.recv_wait] asks
  // (a Client() whose server sleeps although this client busy-polls).
  void follow_peer_recv_wait() noexcept;

  template <class T>
  SendResult send_codec(const T& value, const Deadline* deadline, bool wait) {
    const auto slow = [&](std::span<const std::byte> msg) {
      if (!wait) return try_send_bytes(msg);
      return deadline != nullptr ? send_bytes_until(msg, *deadline) : send_bytes(msg);
    };
    if constexpr (wire_format_v<T> != WireFormat::msgpack) {
      return slow(detail::encode_message(value));  // its own bytes: no encoding
    } else {
      return send_encoded({}, value, slow);
    }
  }
  // Sends `prefix` followed by value's message as one message. When the
  // ring has room now (the inlined fast path's conditions), both are
  // written straight into the frame and published (no copy); otherwise, or
  // when they outgrow the room (the encoder asks for room per value at its
  // longest: a value that only just fits may go this way too), they go to
  // this thread's encode buffer and `slow(message)` sends them (waiting,
  // fragmenting or failing as it does). A container of more than 2^32-1 elements gives too_large;
  // may throw std::bad_alloc.
  template <class T, class Slow>
  SendResult send_encoded(std::span<const std::byte> prefix, const T& value, Slow&& slow) {
    std::size_t room = 0;
    std::byte* at = nullptr;
    if (fast_send_end_ != 0 && !peer_closed()) [[likely]] {
      at = tx_.try_begin(room);
      if (room > fast_send_limit_) room = fast_send_limit_;  // max_message too
    }
    detail::SpillWriter w(std::span<std::byte>(at, at != nullptr ? room : 0));
    try {
      if (!prefix.empty()) w.write(reinterpret_cast<const char*>(prefix.data()), prefix.size());
      detail::encode_into(w, value);
    } catch (const msgpack::container_size_overflow&) {
      return SendResult::too_large;
    }
    if (w.spilled()) [[unlikely]]
      return slow(w.bytes());
    tx_.finish(w.size());
    detail::t_sent = true;
    return SendResult::ok;
  }
  template <class T>
  RecvResult recv_codec(T& out, const Deadline* deadline, bool wait) {
    std::span<const std::byte> msg;
    bool in_place = false;
    const RecvResult r = next_message(msg, in_place, deadline, wait);
    if (r != RecvResult::ok) return r;
    const bool decoded = detail::decode_message(msg, out);
    release_message(in_place);
    return decoded ? RecvResult::ok : RecvResult::decode_error;
  }
  // recv_message() with the inlined fast path first: a whole message in
  // one frame, there now, viewed in place.
  [[gnu::always_inline]] RecvResult next_message(std::span<const std::byte>& msg, bool& in_place,
                                                 const Deadline* deadline, bool wait,
                                                 Clock::duration grace = {}) {
    const std::byte* at = nullptr;
    std::size_t n = 0;
    if (rx_.try_view(at, n)) [[likely]] {
      msg = {at, n};
      in_place = true;
      return RecvResult::ok;
    }
    return recv_message(msg, in_place, deadline, wait, grace);
  }
  // Frees a message next_message() / recv_message() returned.
  void release_message(bool in_place) noexcept {
    if (in_place) rx_.release(true);
  }
  // The next whole message: in place (in_place: the caller releases the
  // frame with rx_.release(true)) when it is one frame, else gathered into
  // this thread's buffer. A `grace` above zero bounds the gathering: the
  // rest of a message whose first fragment is there is waited for until
  // `grace` from now or the deadline, whichever is later (then timeout,
  // and this direction is corrupted, as for any timeout mid-message).
  RecvResult recv_message(std::span<const std::byte>& msg, bool& in_place, const Deadline* deadline,
                          bool wait, Clock::duration grace = {});

  [[nodiscard, gnu::always_inline]] bool ensure_owner() noexcept {
    if (fork_gen_ == detail::fork_generation() && active_) [[likely]]
      return true;
    return take_over();
  }
  bool take_over() noexcept;

  // The inlined fast paths: a whole message that fits one frame, with room
  // (or a frame) there now. Anything else (waiting, fragments, pads to the
  // ring end, errors, end of file) goes through the out-of-line *_impl
  // calls, which repeat these checks and report why. The end's state (can
  // send/receive, taken by this process, not closed, no frame left peeked,
  // not a fork child's copy: [pipe.fork]) is folded into the rings' own
  // limits (allow_fast(), kept by update_fast()), so the inlined paths
  // test it with the compare they make anyway.
  //
  // What the inlined paths execute (issue 22; x86-64, GCC 12 -O3, read in
  // `objdump -d` of bench/cost/pipe_cost, counted there by callgrind per
  // call with the wrapper's entry and return). On one core, what bounds a
  // send and a receive is their loads and stores more than their
  // instructions: the core issues at most three memory operations a cycle
  // (AMD Zen 4 here; llvm-mca -mcpu=znver3 on the benchmark's loop names
  // them the bottleneck). Boost.Lockfree's spsc_queue takes 10 a pair (an
  // index each side loaded and stored, the other's index, the element in
  // and out), the typed 8 B pair here 33 before the seventeenth session:
  // 3.3 and 11 cycles at three a cycle, the 3.0x the benchmark measured.
  // Below, [n] is a group's memory operations.
  // send(Msg<8>) on a busy-poll pipe, 45 instructions [16]: the peer's
  // `closed` flag through its pointer, so that a send after the peer
  // closed says `broken` at once, as Python's BrokenPipeError does (4 [2];
  // kept: Pipe.CloseDeliversEverythingThenEof asks it of the first send
  // after the close, and a check only where the ring looks full would
  // answer ok for messages nobody will read); position, mask, offset (4
  // [2]) and whether a small frame would cross its cache line (4; the pad
  // itself is out of line: try_send_padded()); the new position against
  // fast_end_, which folds room, the [ring.stats] point, the ring's end, a
  // batch, corruption and whether this end may send at all into one
  // compare (3 [1]); ring base, wake mode, the next frame's offset, the
  // copy (6 [4]: one load and one store for 8 B); the write-intent
  // prefetch kWriteAhead on (3 [1]); zeroing the next frame's header word
  // (1 [1]); header word = position << 29 | valid | length, its address,
  // the new position (5 [1]); the message and its bytes counted in one
  // word (2 [2]: one add to memory, RingCounts); busy-poll? then the
  // publishing store (3 [1]: an adaptive pipe goes on to the exchange
  // test, the store and its load of consumer_asleep, 7 more [2]; a
  // blocking one publishes out of line); t_sent for stream coalescing (2
  // [1]); the wrapper's entry and return, and the register the
  // out-of-line pad call makes it save (8 [2]; inlined into a loop, as in
  // the benchmark, mostly gone). send(Msg<64>) is 42: no line check, a copy
  // of 4 + 4 vector moves. send_bytes() of a run-time size of up to
  // kInlineCopy (64) bytes takes the same path (a larger one goes to
  // send_bytes_slow(), out of line: no memcpy call here to keep registers
  // across) and adds the size against kInlineCopy (2), the frame size (2),
  // the line check as one unsigned compare (5), the copy's size-class tree
  // (4: two compares for any size from 8 to 64) and the length in the
  // header word (2); its wrapper saves five registers for the pad call.
  // recv(Msg<8>&), 21 [10]: position, mask, base, offset, the header load
  // (6 [4]); the word a plain frame here carries and the difference (3);
  // length == sizeof(T), which with the difference compares the whole
  // header with one constant (2); the frame's end against fast_limit_,
  // which folds the ring's end, the largest frame, corruption, the read
  // position's publication point and whether this end may receive at all
  // (3 [1]); the copy (2 [2]: 8 B; 9 for 64 B: recv(Msg<64>&) is 28); the
  // new position and the counts (4 [3]: a store and an add to memory);
  // return (1). recv_bytes_into() bounds the length by the caller's room
  // and 64 at once (4: a longer frame, or any word that is not a plain
  // frame, goes to recv_bytes_into_slow(), a tail call), computes the frame
  // size (2) and runs the size-class tree (4).
  [[nodiscard, gnu::always_inline]] bool fast_send(const std::byte* p, std::size_t n) noexcept {
    if (n >= fast_send_end_ || peer_closed() || !tx_.try_send(p, n)) return false;
    detail::t_sent = true;
    return true;
  }
  // fast_send() of at most kInlineCopy bytes (a larger message is refused
  // by the first compare): no memcpy call in the inlined path, so nothing
  // to keep in registers across one; send_bytes_slow() takes the rest.
  [[nodiscard, gnu::always_inline]] bool fast_send_small(const std::byte* p,
                                                         std::size_t n) noexcept {
    if (n > detail::kInlineCopy || peer_closed() || !tx_.try_send<true>(p, n)) return false;
    detail::t_sent = true;
    return true;
  }
  [[nodiscard, gnu::always_inline]] bool fast_recv_ready() const noexcept { return fast_recv_; }
  // [pipe.fork] The fast paths hold only while this process is the one the
  // end was set up or taken in: a fork child's copy turns them off at once
  // (fork_child_stop_fast(), in the child's pthread_atfork handler), and
  // they come back only here, with fork_gen_ current, i.e. after
  // take_over() in that child. So no send or receive checks the fork
  // generation itself.
  void update_fast() noexcept {
    const bool mine = active_ && !closed_ && fork_gen_ == detail::fork_generation();
    fast_send_end_ = can_send_ && mine ? fast_send_limit_ + 1 : 0;
    fast_recv_ = can_recv_ && mine && !peeked_;
    // The inlined paths test only the rings' own limits (one load each
    // fewer): the rings run their fast paths only while these hold. A
    // max_message below kInlineCopy leaves every send to the general path
    // (fast_send_small() checks only n <= kInlineCopy).
    tx_.allow_fast(fast_send_end_ > detail::kInlineCopy);
    rx_.allow_fast(fast_recv_);
  }
  // [pipe.fork] Every Connection with a segment is on one process-wide
  // list (pipe.cpp) from the moment it has fast paths until it is
  // destroyed, so that a fork child can reach each one.
  void track_for_fork() noexcept;
  void untrack_for_fork() noexcept;
  friend void detail::fork_child_stop_fast() noexcept;

  SendResult send_bytes_impl(std::span<const std::byte> data, const Deadline* deadline,
                             bool wait) noexcept;
  // send_bytes() and recv_bytes_into() past their inlined small paths (out
  // of line, few enough arguments for a tail call): the one-frame fast path
  // for any size, then the *_impl call.
  [[gnu::noinline]] SendResult send_bytes_slow(std::span<const std::byte> data) noexcept;
  [[gnu::noinline]] RecvResult recv_bytes_into_slow(std::span<std::byte> buffer, std::size_t offset,
                                                    std::size_t& size) noexcept;
  SendResult reserve_impl(std::size_t size, std::span<std::byte>& out,
                          const Deadline* deadline) noexcept;
  SendResult send_fragmented(std::span<const std::byte> data, const Deadline* deadline) noexcept;
  RecvResult recv_impl(std::span<std::byte> buffer, std::size_t offset, std::size_t& size,
                       const Deadline* deadline, bool wait) noexcept;
  RecvResult recv_value(void* out, std::size_t size, const Deadline* deadline,
                        bool wait = true) noexcept;
  // fileno(): this end found nothing: clear the descriptor, arm the ring
  // and let the bridge thread sleep on it.
  void rearm_fileno() noexcept;
  // The continuation frame after `got` of `total` bytes, validated; a
  // timeout fails the receiving direction (see Timeouts above).
  RecvResult next_fragment(detail::Frame& f, std::uint64_t got, std::uint64_t total,
                           const Deadline* deadline) noexcept;
  // One message into a container that `grow(out, n)` resizes to n bytes
  // (returning its data) as fragments arrive.
  RecvResult recv_growing(void* out, std::byte* (*grow)(void*, std::size_t), std::size_t maxlength,
                          const Deadline* deadline, bool wait = true);
  // Waits until a frame is peekable; maps the outcome to a RecvResult.
  RecvResult next_frame(detail::Frame& frame, const Deadline* deadline, bool wait) noexcept;
  WaitOutcome wait_data(const Deadline* deadline) noexcept;
  WaitOutcome wait_room(std::size_t payload, const Deadline* deadline) noexcept;
  [[nodiscard, gnu::always_inline]] bool peer_closed() const noexcept {
    // [pipe.closed] seq_cst: pairs with the peer's store in close(); frames
    // it committed before are visible after this load.
    return peer_closed_flag_->load(std::memory_order_seq_cst) != 0;
  }
  [[nodiscard]] bool peer_dead() noexcept;
  // peer_dead() for calls that never wait (try_recv*, poll(0)): at most one
  // liveness check per kLivenessInterval, a coarse clock read otherwise.
  [[nodiscard]] bool peer_dead_by_now() noexcept;
  SendResult send_status() noexcept;
  // close() of a Listener's connection: the end that finds its peer closed
  // or dead removes the pipe's name.
  void remove_name_if_peer_gone() noexcept;

  std::shared_ptr<detail::Segment> segment_;
  detail::PipeControl* control_ = nullptr;
  detail::RingProducer tx_;
  detail::RingConsumer rx_;
  WaitPolicy policy_{};       // the pipe's: sends wait for room by it
  WaitPolicy recv_policy_{};  // receives wait by it: policy_, or take_end()'s
  std::uint64_t max_message_ = 0;
  std::uint64_t fast_send_limit_ = 0;  // largest one-frame message (0: cannot send)
  std::uint64_t fast_send_end_ = 0;    // fast_send_limit_ + 1 while it may send, else 0
  // The peer end's `closed`; never null (detail::g_no_peer_closed without a pipe).
  const std::atomic<std::uint32_t>* peer_closed_flag_ = &detail::g_no_peer_closed;
  std::chrono::nanoseconds coalesce_ = PipeOptions{}.coalesce;
  detail::CopyChoice copy_choice_;      // how fragments are copied (copy_choice.hpp)
  std::uint64_t sends_after_wait_ = 0;  // detail::t_send_epoch when the last wait ended
  bool short_wait_ = false;             // the last wait for data ended within a few polls
  std::uint64_t fork_gen_ = 0;
  std::uint64_t forks_at_create_ = 0;
  int end_ = 0;
  bool can_send_ = false;
  bool can_recv_ = false;
  bool active_ = false;  // this process holds the end (took it or used it)
  bool closed_ = true;
  bool peeked_ = false;
  bool fast_recv_ = false;  // can_recv_ && active_ && !closed_ && !peeked_ (update_fast())
  bool peer_death_counted_ = false;
  bool remove_name_at_close_ = false;            // a Listener's connection (listener.cpp)
  std::uint64_t peer_owner_seen_ = 0;            // the peer end's last non-zero owner word
  std::int64_t next_liveness_ns_ = 0;            // peer_dead_by_now(): CLOCK_MONOTONIC_COARSE
  std::unique_ptr<detail::FdBridge> fd_bridge_;  // fileno(); null until asked for
  // [pipe.fork] This Connection's links on the process-wide list (under the
  // list's mutex; fork_tracked_ is read by the owning thread only). So a
  // Connection must be destroyed, never freed or jumped over (longjmp)
  // without its destructor: a fork() would follow its dangling links.
  Connection* fork_prev_ = nullptr;
  Connection* fork_next_ = nullptr;
  bool fork_tracked_ = false;
};

}  // namespace shmbus
