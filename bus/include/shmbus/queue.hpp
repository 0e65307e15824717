// Queue<T>, BytesQueue, SimpleQueue<T>, JoinableQueue<T> — multiprocessing's
// queues as bounded lock-free MPMC rings in shared memory, safe when a
// producer or consumer is killed in the middle of an operation.
//
// Payloads: a trivially copyable T travels as its bytes in a slot of
// sizeof(T) (put/get are noexcept). Any other type the codec carries
// (shmbus/codec.hpp: std::string, containers, MSGPACK_DEFINE structs, ...)
// is encoded per message and the queue is variable-size: capacity is
// `capacity` messages; a message up to QueueOptions::max_message bytes
// (240 by default) travels inside its slot, a larger one up to
// max_large_message (1 MiB by default for such queues) through a shared
// heap of heap_blocks blocks (at most that many large messages queued at
// once). capacity_bytes() states the total. Their put/get may throw
// std::bad_alloc (encoding, decoding); a message that does not decode as T
// is consumed and reported as QueueResult::decode_error.
//
// Who may call what: any number of processes and threads may put and get
// on the same queue at once. A handle is opened by name (kind and payload
// type are checked: Queue<Tick> opened as Queue<Quote> throws wrong_type)
// or inherited across fork() (the child just uses it). A queue constructed
// without a name (`shmbus::Queue<int> q;`, as Python's Queue()) is
// anonymous: unnamed memory that fork()ed children share, nothing in
// /dev/shm. Setup (create,
// open) throws shmbus::Error; put/get/task_done are noexcept and return a
// QueueResult.
//
// Algorithm: Vyukov's bounded MPMC ring with per-slot sequence numbers,
// where the claim is a CAS on the slot's own word that also records the
// claimer's participant record (see detail/queue_core.hpp). Blocking for
// empty/full goes through the futex layer's WaitChannel: a put or get that
// does not wait makes no system call (a notify costs one load of a
// waiter count).
//
// Guarantees:
//   - Memory ordering: everything a producer wrote into the message before
//     put() returned ok is what the consumer that gets it reads.
//   - Every committed message is delivered exactly once, or counted `lost`
//     if the consumer that took it died before finishing its get.
//   - FIFO per producer as seen by each consumer: two messages put by one
//     thread reach any one consumer in put order.
//   - qsize() is approximate (slots claimed minus slots consumed, racing
//     with everyone); empty()/full() are derived from it, like Python's.
//   - close(): later puts return `closed`; gets drain what was committed
//     and then return `closed`.
//
// Crash safety: a participant killed between claiming a slot and
// publishing or releasing it leaves the slot tagged with its participant
// record; a survivor waiting on that slot checks the record owner's
// liveness (ProcessId: pid + start time) every `liveness_interval` and
// repairs it (recover_dead() does the same on demand):
//   - a half-written message is dropped (never delivered) and counted in
//     `dropped`; consumers step over the slot;
//   - a half-consumed message is NOT redelivered (the dead consumer may
//     have acted on it): it is counted in `lost` and the slot is freed;
//   - heap blocks (BytesQueue large messages) the dead process held are
//     freed.
// Counters live in the segment and read with stats() or, read-only from
// another process, queue_stats(SegmentView). With nothing in flight:
// committed == delivered + lost + depth.
//
// Limits (by design, documented rather than hidden):
//   - Vyukov's ring is not lock-free in the strict sense: a producer
//     preempted between claim and publish holds up consumers at that slot
//     until it runs again (only a *dead* claimer is repaired).
//   - A dead participant's counters settle when its record is recovered
//     (by a waiter stuck on its slot, by recover_dead(), by join(), or when
//     the record is reused). stats() and join() count a put that has
//     published (stage ACTIVE) as committed, so a producer killed between
//     that stage and its publication shows one committed message that
//     recovery then moves to `dropped`.
//   - JoinableQueue::join() waits forever if a consumer dies after get()
//     returned and before its task_done(); see JoinableQueue.
//   - peer_deaths counts records recovered, including those of processes
//     that exited without destroying their handle; `interrupted` counts the
//     ones killed mid-operation. A recoverer killed while recovering can
//     make peer_deaths count one death twice (the other counters stay
//     exact: recovery is idempotent).
//   - One participant record per (process, thread); a thread that exits
//     keeps its record until the handle is destroyed or the process dies
//     (max_participants, default 256).
//   - fork() while another thread of the process is taking a record for
//     the same handle can deadlock the child on its first put/get.
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "shmbus/codec.hpp"
#include "shmbus/detail/queue_core.hpp"
#include "shmbus/queue_types.hpp"
#include "shmbus/segment_info.hpp"

namespace shmbus {

// Statistics of any queue-family segment from a read-only view; never
// writes or blocks. Throws Error(wrong_kind/corrupted) for other segments.
[[nodiscard]] QueueStats queue_stats(const SegmentView& view);

struct ObjectStats;
class Waitable;  // shmbus::wait over any mix of objects (wait_any.hpp)
namespace detail {
// object_stats() (shmbus/inspect.hpp) for the queue kinds: counters,
// gauges, and problems (invalid payload, records held by dead processes).
void queue_object_stats(const SegmentView& view, ObjectStats& stats);
}  // namespace detail

namespace detail {

// Methods shared by every queue flavour; `Derived` supplies the payload.
class QueueHandle {
 public:
  void close() noexcept { core_.close(); }
  [[nodiscard]] bool is_closed() const noexcept { return core_.closed(); }
  [[nodiscard]] std::size_t qsize() const noexcept { return core_.qsize(); }
  [[nodiscard]] bool empty() const noexcept { return core_.qsize() == 0; }
  [[nodiscard]] bool full() const noexcept { return core_.qsize() >= core_.capacity(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return core_.capacity(); }
  [[nodiscard]] QueueStats stats() const noexcept { return core_.stats(); }
  // Repairs every slot held by a dead participant now (waiters do it on
  // their own when they get stuck); returns how many records it recovered.
  std::size_t recover_dead() noexcept { return core_.recover_dead(); }
  [[nodiscard]] const std::string& name() const noexcept { return core_.name(); }
  // A file descriptor (an eventfd of this process) that polls readable
  // while an item (or the close) may be there, for poll, epoll, Boost.Asio,
  // libuv. Level-triggered, re-armed by this handle: it stays readable
  // until a try_get on this handle finds the queue empty, then turns
  // readable at the next put. So drain with try_get until empty, then wait
  // on it again. It may read readable for nothing (another consumer took
  // the item). The first call starts one thread in this process that sleeps
  // on the queue as a blocked get() would (see wait_any.hpp); producers
  // then make one futex wake per empty -> non-empty transition, and nothing
  // more while no process asked for a descriptor. Valid until the handle is
  // destroyed; one thread calls try_get on a handle that has one. Throws
  // Error(system) if the eventfd or the thread cannot be made.
  [[nodiscard]] int fileno() { return core_.fileno(); }

 protected:
  friend QueueCore& queue_core_of(QueueHandle& q) noexcept;  // shmbus::wait (wait_any.hpp)
  QueueHandle() = default;
  explicit QueueHandle(QueueCore core) : core_(std::move(core)) {}
  QueueCore core_;
};

template <class T>
class TypedQueue : public QueueHandle {
  static_assert(std::is_trivially_copyable_v<T>, "TypedQueue<T> needs a trivially copyable T");

 public:
  [[nodiscard]] QueueResult put(const T& v) noexcept { return core_.put(bytes(v), nullptr, true); }
  [[nodiscard]] QueueResult try_put(const T& v) noexcept {
    return core_.put(bytes(v), nullptr, false);
  }
  template <class Rep, class Period>
  [[nodiscard]] QueueResult put_for(const T& v, std::chrono::duration<Rep, Period> d) noexcept {
    return put_until(v, detail::deadline_after(d));
  }
  [[nodiscard]] QueueResult put_until(const T& v, Clock::time_point deadline) noexcept {
    return core_.put(bytes(v), &deadline, true);
  }

  [[nodiscard]] QueueResult get(T& out) noexcept { return get_impl(out, nullptr, true); }
  [[nodiscard]] QueueResult try_get(T& out) noexcept { return get_impl(out, nullptr, false); }
  template <class Rep, class Period>
  [[nodiscard]] QueueResult get_for(T& out, std::chrono::duration<Rep, Period> d) noexcept {
    return get_until(out, detail::deadline_after(d));
  }
  [[nodiscard]] QueueResult get_until(T& out, Clock::time_point deadline) noexcept {
    return get_impl(out, &deadline, true);
  }

 protected:
  TypedQueue() = default;
  static std::span<const std::byte> bytes(const T& v) noexcept {
    return {reinterpret_cast<const std::byte*>(&v), sizeof(T)};
  }
  QueueResult get_impl(T& out, const Clock::time_point* deadline, bool block) noexcept {
    std::size_t n = 0;
    QueueResult r = core_.get({reinterpret_cast<std::byte*>(&out), sizeof(T)}, n, deadline, block);
    if (r == QueueResult::ok && n != sizeof(T)) return QueueResult::corrupted;
    return r;
  }
};

// This thread's buffer for receiving a codec message of up to `size` bytes.
std::span<std::byte> queue_receive_buffer(std::size_t size);

// Default largest message of a codec queue when max_large_message is 0.
inline constexpr std::size_t kCodecLargeMessage = std::size_t{1} << 20;

// A queue of codec values (not trivially copyable): each message encoded
// (shmbus/codec.hpp) and stored inline or in the queue's heap.
template <class T>
class CodecQueue : public QueueHandle {
 public:
  [[nodiscard]] QueueResult put(const T& v) { return put_msg(v, nullptr, true); }
  [[nodiscard]] QueueResult try_put(const T& v) { return put_msg(v, nullptr, false); }
  template <class Rep, class Period>
  [[nodiscard]] QueueResult put_for(const T& v, std::chrono::duration<Rep, Period> d) {
    return put_until(v, detail::deadline_after(d));
  }
  [[nodiscard]] QueueResult put_until(const T& v, Clock::time_point deadline) {
    return put_msg(v, &deadline, true);
  }

  [[nodiscard]] QueueResult get(T& out) { return get_msg(out, nullptr, true); }
  [[nodiscard]] QueueResult try_get(T& out) { return get_msg(out, nullptr, false); }
  template <class Rep, class Period>
  [[nodiscard]] QueueResult get_for(T& out, std::chrono::duration<Rep, Period> d) {
    return get_until(out, detail::deadline_after(d));
  }
  [[nodiscard]] QueueResult get_until(T& out, Clock::time_point deadline) {
    return get_msg(out, &deadline, true);
  }

  // Largest encoded message put() accepts (bytes); larger: too_large.
  [[nodiscard]] std::size_t max_message() const noexcept { return core_.max_message(); }
  // Largest encoded message that travels inside a slot (bytes).
  [[nodiscard]] std::size_t slot_size() const noexcept { return core_.slot_payload(); }
  // Bytes the queue holds at most: capacity() slots of slot_size() plus
  // every heap block full.
  [[nodiscard]] std::size_t capacity_bytes() const noexcept {
    const QueueStats s = core_.stats();
    return core_.capacity() * core_.slot_payload() +
           s.heap_blocks * (core_.max_message() > core_.slot_payload() ? core_.max_message() : 0);
  }

 protected:
  CodecQueue() = default;
  QueueResult put_msg(const T& v, const Clock::time_point* deadline, bool block) {
    std::span<const std::byte> m;
    try {
      m = encode_message(v);
    } catch (const msgpack::container_size_overflow&) {
      return QueueResult::too_large;
    }
    return core_.put(m, deadline, block);
  }
  QueueResult get_msg(T& out, const Clock::time_point* deadline, bool block) {
    const std::span<std::byte> buf = queue_receive_buffer(core_.max_message());
    std::size_t n = 0;
    const QueueResult r = core_.get(buf, n, deadline, block);
    if (r != QueueResult::ok) return r;
    return decode_message(std::span<const std::byte>(buf.first(n)), out)
               ? QueueResult::ok
               : QueueResult::decode_error;
  }
};

// The base of Queue<T> etc.: the memcpy path for trivially copyable T
// (unchanged), the codec for the rest (chosen at compile time).
template <class T>
using QueueOf = std::conditional_t<std::is_trivially_copyable_v<T>, TypedQueue<T>, CodecQueue<T>>;

// Creates the core of a queue of T: slots of sizeof(T), or (codec types)
// of options.max_message with a heap for larger messages.
template <class T>
QueueCore create_queue_core(SegmentName name, ObjectKind kind, const QueueOptions& options) {
  require_codable<T>();
  if constexpr (std::is_trivially_copyable_v<T>) {
    return QueueCore::create(name, kind, type_tag<T>(), sizeof(T), options);
  } else {
    QueueOptions o = options;
    if (o.max_large_message == 0) o.max_large_message = kCodecLargeMessage;
    return QueueCore::create(name, kind, type_tag<T>(), o.max_message, o, true);
  }
}

}  // namespace detail

// multiprocessing.Queue for one type (trivially copyable, or any type the
// codec carries: see the file comment).
//   shmbus::Queue<int> jobs{{.capacity = 64}};                  // anonymous
//   auto q = shmbus::Queue<Tick>::create("ticks", {.capacity = 4096});   // named
//   shmbus::Queue<Tick> q2{"ticks"};                            // another process
//   (void)q.put(Tick{});
//   Tick t;
//   (void)q2.get(t);
//   shmbus::Queue<std::string> names;                           // any codec type
//   (void)names.put("Item 3");
//   std::string s;
//   (void)names.get(s);
template <class T>
class Queue : public detail::QueueOf<T> {
 public:
  static constexpr ObjectKind kKind = ObjectKind::queue;
  // An anonymous queue, as Python's Queue(maxsize).
  Queue() : Queue(QueueOptions{}) {}
  explicit Queue(const QueueOptions& options)
      : Queue(detail::create_queue_core<T>(std::nullopt, kKind, options)) {}
  static Queue create(std::string_view name, const QueueOptions& options = {}) {
    return Queue(detail::create_queue_core<T>(name, kKind, options));
  }
  static Queue open(std::string_view name, const QueueOptions& options = {}) {
    return Queue(detail::QueueCore::open(name, kKind, detail::type_tag<T>(), options));
  }
  explicit Queue(std::string_view name, const QueueOptions& options = {})
      : Queue(detail::QueueCore::open(name, kKind, detail::type_tag<T>(), options)) {}
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

 private:
  explicit Queue(detail::QueueCore core) { this->core_ = std::move(core); }
};

// multiprocessing.SimpleQueue: put/get/empty/close only (bounded
// underneath: put blocks while the ring is full).
template <class T>
class SimpleQueue : private detail::QueueOf<T> {
  using Base = detail::QueueOf<T>;

 public:
  static constexpr ObjectKind kKind = ObjectKind::simple_queue;
  // An anonymous queue, as Python's SimpleQueue().
  SimpleQueue() : SimpleQueue(QueueOptions{}) {}
  explicit SimpleQueue(const QueueOptions& options)
      : SimpleQueue(detail::create_queue_core<T>(std::nullopt, kKind, options)) {}
  static SimpleQueue create(std::string_view name, const QueueOptions& options = {}) {
    return SimpleQueue(detail::create_queue_core<T>(name, kKind, options));
  }
  static SimpleQueue open(std::string_view name, const QueueOptions& options = {}) {
    return SimpleQueue(name, options);
  }
  explicit SimpleQueue(std::string_view name, const QueueOptions& options = {})
      : SimpleQueue(detail::QueueCore::open(name, kKind, detail::type_tag<T>(), options)) {}
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  using Base::close;
  using Base::empty;
  using Base::fileno;
  using Base::get;
  using Base::put;
  using Base::stats;

 private:
  friend class shmbus::Waitable;  // waits on its queue (wait_any.hpp)
  explicit SimpleQueue(detail::QueueCore core) { this->core_ = std::move(core); }
};

// multiprocessing.JoinableQueue: a Queue whose consumers call task_done()
// once per item they got, and whose join() waits until every committed
// item has been task_done (a put that has published its item but not yet
// returned counts as committed).
//
// Crashes: an item lost with a consumer that died *during* its get()
// (counted `lost`) counts as done, and join() repairs dead participants
// itself every liveness_interval. But an item whose get() completed and
// whose consumer then died before calling task_done() is never marked
// done: the queue cannot tell that death from a slow worker (task_done()
// may come from any process), so join() then waits forever, as Python's
// does when a worker dies. Where consumers can die, use join_for() /
// join_until() and decide what a timeout means.
template <class T>
class JoinableQueue : public detail::QueueOf<T> {
 public:
  static constexpr ObjectKind kKind = ObjectKind::joinable_queue;
  // An anonymous queue, as Python's JoinableQueue(maxsize).
  JoinableQueue() : JoinableQueue(QueueOptions{}) {}
  explicit JoinableQueue(const QueueOptions& options)
      : JoinableQueue(detail::create_queue_core<T>(std::nullopt, kKind, options)) {}
  static JoinableQueue create(std::string_view name, const QueueOptions& options = {}) {
    return JoinableQueue(detail::create_queue_core<T>(name, kKind, options));
  }
  static JoinableQueue open(std::string_view name, const QueueOptions& options = {}) {
    return JoinableQueue(name, options);
  }
  explicit JoinableQueue(std::string_view name, const QueueOptions& options = {})
      : JoinableQueue(detail::QueueCore::open(name, kKind, detail::type_tag<T>(), options)) {}
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // value_error if called more times than items were got (all processes).
  [[nodiscard]] QueueResult task_done() noexcept { return this->core_.task_done(); }
  void join() noexcept { (void)this->core_.join_until(nullptr); }
  template <class Rep, class Period>
  [[nodiscard]] bool join_for(std::chrono::duration<Rep, Period> d) noexcept {
    return join_until(detail::deadline_after(d));
  }
  [[nodiscard]] bool join_until(Clock::time_point deadline) noexcept {
    return this->core_.join_until(&deadline);
  }

 private:
  explicit JoinableQueue(detail::QueueCore core) { this->core_ = std::move(core); }
};

// A queue of variable-length byte messages. Up to options.max_message
// bytes (the slot size, fixed at creation) travel inside the ring; larger
// ones up to options.max_large_message go through a shared heap of
// options.heap_blocks blocks in the segment (a put waits, or try_put
// returns full, while every block is in use); beyond that, too_large.
class BytesQueue : public detail::QueueHandle {
 public:
  static constexpr ObjectKind kKind = ObjectKind::queue;
  static BytesQueue create(std::string_view name, const QueueOptions& options = {});
  // An anonymous queue: unnamed memory that fork()ed children share.
  BytesQueue() : BytesQueue(QueueOptions{}) {}
  explicit BytesQueue(const QueueOptions& options);
  // Opens an existing one (as the constructor from a name).
  static BytesQueue open(std::string_view name, const QueueOptions& options = {}) {
    return BytesQueue(name, options);
  }
  explicit BytesQueue(std::string_view name, const QueueOptions& options = {});
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // Largest message put() accepts (the heap block size if the queue has a
  // heap, else the slot size); get() needs an `out` this large.
  [[nodiscard]] std::size_t max_message() const noexcept { return core_.max_message(); }
  [[nodiscard]] std::size_t slot_size() const noexcept { return core_.slot_payload(); }

  [[nodiscard]] QueueResult put(std::span<const std::byte> m) noexcept {
    return core_.put(m, nullptr, true);
  }
  [[nodiscard]] QueueResult try_put(std::span<const std::byte> m) noexcept {
    return core_.put(m, nullptr, false);
  }
  [[nodiscard]] QueueResult put_until(std::span<const std::byte> m, Clock::time_point d) noexcept {
    return core_.put(m, &d, true);
  }
  template <class Rep, class Period>
  [[nodiscard]] QueueResult put_for(std::span<const std::byte> m,
                                    std::chrono::duration<Rep, Period> d) noexcept {
    return put_until(m, detail::deadline_after(d));
  }
  // `out` must hold max_message() bytes; on ok `length` is the size.
  [[nodiscard]] QueueResult get(std::span<std::byte> out, std::size_t& length) noexcept {
    return core_.get(out, length, nullptr, true);
  }
  [[nodiscard]] QueueResult try_get(std::span<std::byte> out, std::size_t& length) noexcept {
    return core_.get(out, length, nullptr, false);
  }
  [[nodiscard]] QueueResult get_until(std::span<std::byte> out, std::size_t& length,
                                      Clock::time_point d) noexcept {
    return core_.get(out, length, &d, true);
  }
  template <class Rep, class Period>
  [[nodiscard]] QueueResult get_for(std::span<std::byte> out, std::size_t& length,
                                    std::chrono::duration<Rep, Period> d) noexcept {
    return get_until(out, length, detail::deadline_after(d));
  }

 private:
  explicit BytesQueue(detail::QueueCore core) : QueueHandle(std::move(core)) {}
};

}  // namespace shmbus
