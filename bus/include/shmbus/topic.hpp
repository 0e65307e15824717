// shmbus::Topic — publish/subscribe: one stream broadcast to many processes.
//
//   auto topic = shmbus::Topic::create<Tick>("ticks", {.slots = 1024});
//   auto pub = topic.publisher();                       // one at a time
//   (void)pub.publish(Tick{1, 100.5});
//
//   auto t = shmbus::Topic::open<Tick>("ticks");        // another process
//   auto sub = t.subscribe({.policy = shmbus::SubscriberPolicy::lossy,
//                           .history = 16});           // the last 16 first
//   Tick tick;
//   while (sub.recv(tick) == shmbus::ReceiveResult::ok) handle(tick);
//
// One ring of fixed-size slots, written once by the publisher and read by
// every subscriber at its own position (its own cache line in the
// segment's subscriber table). Messages are bytes of 0..max_message, or
// values of any type the codec carries (shmbus/codec.hpp): a trivially
// copyable T as its bytes, written straight into the slot; std::string
// as its characters; containers, MSGPACK_DEFINE structs and the rest as
// one MessagePack value (encoded, then copied in). A message never spans
// slots: an encoded value above max_message is too_large.
//
// Per-subscriber policy, chosen by the subscriber:
//   reliable  the publisher never overwrites a message it has not read:
//             a full ring makes publish() wait (back-pressure), up to the
//             publisher's own deadline (publish_for / try_publish). A
//             message read frees its slot: from the time a publisher finds
//             the ring full (try_publish full, publish_for timed out, or a
//             wait of 10 ms) until it publishes again, each message a
//             subscriber reads is room for its next publish, and wakes a
//             publish() asleep for room. (While streaming, a subscriber
//             hands its position back a quarter of the ring at a time, so
//             what it read before the ring filled is room once it reads
//             one more message or finds none.)
//   lossy     never slows the publisher and costs it no write to a shared
//             line. A subscriber that falls a whole ring behind (lapped)
//             skips ahead to half a ring behind the publisher; lapped()
//             counts those events and missed() the messages it lost, so
//             received() + missed() is exactly what was published since
//             it joined. A message overwritten while it was being copied
//             is detected (a seqlock) and counted as missed: a torn
//             message is never delivered.
// A late joiner asks for up to `history` of the messages published before
// it joined (at most the topic's history); those it gets if the ring still
// holds them intact (not counted as missed otherwise). Every message
// published after subscribe() returned is owed to it.
//
// One publisher at a time: a second live one gets Errc::already_exists.
// Why: a single writer keeps publish() free of any atomic read-modify-
// write (several publishers would need a CAS on the write position per
// message and slot-level locking for the seqlock) and gives all
// subscribers one order. A publisher whose process died is replaced by
// the next publisher() call (takeovers counts it); its subscribers first
// receive everything it committed, then ReceiveResult::publisher_dead
// (and, if a new publisher comes, its messages after that).
//
// Crashes: a reliable subscriber that dies is evicted by a publisher that
// waits for it, after one liveness check (evictions counts it), so a
// dead reader never blocks the publisher for longer than that check.
//
// Waiting: the topic's WaitPolicy (busy_poll, adaptive, blocking) applies
// to both sides. Subscribers sleep on one shared futex word: a
// publication wakes all sleepers with one FUTEX_WAKE, and makes no system
// call and writes nothing shared when nobody sleeps (busy_poll topics do
// not even check). Subscribers count themselves in before they sleep and
// out when a last look found a message, so only a subscriber that really
// sleeps costs the publisher that call, and all that went to sleep since
// the last publication share it.
//
// Setup (create, open, publisher, subscribe, topic_stats) throws
// shmbus::Error; the hot paths are noexcept. Handles are usable across
// fork(): the first use in a child takes the handle's role over from its
// parent (use each handle in one process only afterwards); a parent that
// has not used a handle since the fork leaves its role to the child when
// it closes its copy. So if no child ever uses it, its record stays held
// by the (live) parent until that process exits: a reliable one then
// holds the publisher back (publish_for times out; no eviction, its owner
// lives). A parent that means to drop a subscriber its children will not
// use closes it before forking, or uses it once after (try_recv), which
// keeps the role here, so that its close() frees the record.
//
// Memory ordering: everything a publisher wrote before publish() returned
// is visible to a subscriber that receives that message.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shmbus/codec.hpp"
#include "shmbus/detail/fd_bridge.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/spsc_ring.hpp"
#include "shmbus/detail/topic_format.hpp"
#include "shmbus/detail/type_tag.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

struct TopicOptions {
  // Messages the ring holds: a power of two, 2 .. 2^24.
  std::uint32_t slots = 1024;
  // The largest message in bytes (1 .. 16 MiB); each slot holds one.
  std::size_t max_message = 240;
  // The most messages a late joiner may ask for (<= slots); 0: slots,
  // i.e. whatever the ring holds.
  std::uint32_t history = 0;
  // Subscriber records (1 .. 1024); a record of a dead subscriber is reused.
  std::uint32_t max_subscribers = 64;
  WaitPolicy wait{};
  SegmentOptions segment{};
};

enum class SubscriberPolicy : std::uint8_t { reliable, lossy };

struct SubscribeOptions {
  SubscriberPolicy policy = SubscriberPolicy::reliable;
  std::uint32_t history = 0;  // messages from before joining, <= the topic's history
};

enum class PublishResult : std::uint8_t {
  ok,
  full,       // try_ call: a reliable subscriber has not read the slot yet
  timeout,    // the deadline passed waiting for a reliable subscriber
  too_large,  // above max_message; nothing was published
  closed,     // this handle is closed, moved from, or not the publisher
  corrupted,  // shared state failed validation
};

enum class ReceiveResult : std::uint8_t {
  ok,
  empty,           // try_ call: nothing new
  timeout,         // the deadline passed
  eof,             // the publisher closed and everything it published was received
  publisher_dead,  // the publisher died; everything it committed was received
  too_small,       // the buffer is too small: n says what is needed; the message stays
  size_mismatch,   // recv<T>: the message is not sizeof(T) bytes; it stays
  evicted,         // a publisher took this reliable subscriber for dead
  closed,          // this handle is closed or moved from
  corrupted,       // shared state failed validation
  decode_error,    // recv of a codec type: the message is not a T (it was
                   // consumed; detail::last_decode_error() says why)
};

[[nodiscard]] std::string_view to_string(PublishResult r) noexcept;
[[nodiscard]] std::string_view to_string(ReceiveResult r) noexcept;
[[nodiscard]] std::string_view to_string(SubscriberPolicy p) noexcept;

class Publisher;
class Subscriber;
namespace detail {
struct WaitAccess;  // shmbus::wait()'s view of the objects (wait_any.cpp)

// A handle's pointer into its segment, left null by a move (null: closed
// or moved from), so the handles' moves can be memberwise.
template <class T>
class MovedNull {
 public:
  MovedNull() = default;
  MovedNull(MovedNull&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  MovedNull& operator=(MovedNull&& o) noexcept {
    p_ = o.p_;
    o.p_ = nullptr;
    return *this;
  }
  MovedNull& operator=(T* p) noexcept {
    p_ = p;
    return *this;
  }
  T* operator->() const noexcept { return p_; }
  operator T*() const noexcept { return p_; }  // NOLINT: a pointer in all but its move

 private:
  T* p_ = nullptr;
};
}  // namespace detail

// A handle on a topic segment; makes its publisher and subscribers.
class Topic {
 public:
  // Creates the topic `name` exclusively (Errc::already_exists otherwise).
  // T = std::byte: a topic of byte messages.
  template <class T = std::byte>
  static Topic create(std::string_view name, const TopicOptions& options = {}) {
    return create_tagged(name, options, tag_of<T>());
  }
  // Opens an existing topic, checking kind, type and format.
  template <class T = std::byte>
  static Topic open(std::string_view name, const SegmentOptions& options = {}) {
    return open_tagged(name, options, tag_of<T>());
  }
  // Removes the name (open handles keep working). False if absent.
  static bool unlink(std::string_view name);

  Topic() = default;

  // The publisher: takes the topic's publisher role, from nobody or from
  // a dead process; a live publisher elsewhere is Errc::already_exists.
  [[nodiscard]] Publisher publisher();
  // A new subscriber. Errc::attach_table_full when every record holds a
  // live subscriber (the message names the limit), Errc::invalid_argument
  // for a history above the topic's.
  [[nodiscard]] Subscriber subscribe(const SubscribeOptions& options = {});

  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] std::size_t max_message() const noexcept { return config_.max_message; }
  [[nodiscard]] std::uint32_t slots() const noexcept { return config_.slots; }
  [[nodiscard]] std::uint32_t history() const noexcept { return config_.history; }
  [[nodiscard]] std::uint32_t max_subscribers() const noexcept { return config_.max_subscribers; }

  template <class T>
  static constexpr detail::TypeTag tag_of() noexcept {
    if constexpr (std::is_same_v<T, std::byte>)
      return detail::kBytesTag;
    else
      return detail::type_tag<T>();
  }
  static Topic create_tagged(std::string_view name, const TopicOptions& options,
                             detail::TypeTag type);
  static Topic open_tagged(std::string_view name, const SegmentOptions& options,
                           detail::TypeTag type);

 private:
  Topic(std::shared_ptr<detail::Segment> segment, const detail::TopicConfig& config) noexcept
      : segment_(std::move(segment)), config_(config) {}

  std::shared_ptr<detail::Segment> segment_;
  detail::TopicConfig config_{};  // this process's validated copy
};

// The writing side. One thread of one process uses it at a time.
class Publisher {
 public:
  Publisher() = default;
  Publisher(Publisher&& o) noexcept = default;
  Publisher& operator=(Publisher&& o) noexcept;  // closes this one first
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;
  ~Publisher();

  // Copies `msg` into the ring once. Waits (per the topic's strategy) while
  // a reliable subscriber has not read the slot it needs.
  PublishResult publish(std::span<const std::byte> msg) noexcept {
    if (fast_publish(msg.data(), msg.size())) [[likely]]
      return PublishResult::ok;
    return copy_in(msg, nullptr, false);
  }
  PublishResult publish_for(std::span<const std::byte> msg, Clock::duration timeout) noexcept;
  PublishResult try_publish(std::span<const std::byte> msg) noexcept;
  PublishResult publish(std::string_view msg) noexcept { return publish(as_bytes(msg)); }

  // A value: a trivially copyable T written straight into the slot
  // (noexcept); any other type the codec carries encoded first (may throw
  // std::bad_alloc; an encoding above max_message is too_large). A
  // std::string or std::vector<std::byte> goes as its bytes (the overloads
  // above), as the codec's bytes format has it.
  template <class T>
  requires(!std::is_convertible_v<const T&, std::span<const std::byte>> &&
           !std::is_convertible_v<const T&, std::string_view>) PublishResult publish(const T& value)
  noexcept(std::is_trivially_copyable_v<T>) { return publish_value(value, nullptr, false); }
  template <class T>
  requires(!std::is_convertible_v<const T&, std::span<const std::byte>> &&
           !std::is_convertible_v<const T&, std::string_view>) PublishResult
      publish_for(const T& value, Clock::duration timeout)
  noexcept(std::is_trivially_copyable_v<T>) {
    const Clock::time_point deadline = detail::deadline_after(timeout);
    return publish_value(value, &deadline, false);
  }
  template <class T>
  requires(!std::is_convertible_v<const T&, std::span<const std::byte>> &&
           !std::is_convertible_v<const T&, std::string_view>) PublishResult
      try_publish(const T& value)
  noexcept(std::is_trivially_copyable_v<T>) { return publish_value(value, nullptr, true); }

  // Zero-copy: a slot of n bytes to write in place, then publish() it.
  // Empty when it cannot be had (last_error() says why: too_large, closed,
  // timeout, full, corrupted). A later loan() before publish() returns
  // the same slot. Lossy subscribers lapped onto the slot see it as being
  // written from the moment it is loaned.
  [[nodiscard]] std::span<std::byte> loan(std::size_t n) noexcept;
  [[nodiscard]] std::span<std::byte> loan_for(std::size_t n, Clock::duration timeout) noexcept;
  [[nodiscard]] std::span<std::byte> try_loan(std::size_t n) noexcept;
  // Publishes the loaned slot (all n bytes). `closed` without a loan.
  PublishResult publish() noexcept;
  [[nodiscard]] PublishResult last_error() const noexcept { return last_error_; }

  // Subscribers see eof once they have received everything. Releases the
  // publisher role; the destructor does the same.
  void close() noexcept;
  [[nodiscard]] bool is_closed() const noexcept { return control_ == nullptr; }
  [[nodiscard]] std::uint64_t published() const noexcept { return pos_; }
  [[nodiscard]] std::size_t max_message() const noexcept { return max_message_; }

 private:
  friend class Topic;
  Publisher(std::shared_ptr<detail::Segment> segment, const detail::TopicConfig& k);
  static std::span<const std::byte> as_bytes(std::string_view s) noexcept {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
  }
  template <class T>
  PublishResult publish_value(const T& value, const Clock::time_point* deadline,
                              bool try_only) noexcept(std::is_trivially_copyable_v<T>) {
    if constexpr (std::is_trivially_copyable_v<T>) {
      if (fast_publish(&value, sizeof(T))) [[likely]]
        return PublishResult::ok;
      std::byte* p = nullptr;
      if (const PublishResult r = acquire(sizeof(T), deadline, try_only, p); r != PublishResult::ok)
        return r;
      std::memcpy(p, &value, sizeof(T));
      return commit();
    } else {
      std::span<const std::byte> m;
      try {
        m = detail::encode_message(value);
      } catch (const msgpack::container_size_overflow&) {
        return last_error_ = PublishResult::too_large;
      }
      return copy_in(m, deadline, try_only);
    }
  }
  // Reserves the slot for the next message (marked writing): p is where
  // its n bytes go.
  PublishResult acquire(std::size_t n, const Clock::time_point* deadline, bool try_only,
                        std::byte*& p) noexcept;
  PublishResult commit() noexcept;
  // The inlined fast path of every publish: a message of at most
  // max_message into a slot no reliable subscriber still needs (as far as
  // cached_min_ knows), on a handle that is open, used in this process
  // since the last fork, with no loan under way and no corruption seen
  // (fast_limit_ folds the last two: 0 unless both hold; a move leaves it,
  // so the moved-from handle's null control_ is checked). Anything else
  // goes to copy_in()/acquire(), which check again and say why.
  [[nodiscard, gnu::always_inline]] bool fast_publish(const void* p, std::size_t n) noexcept {
    if (n >= fast_limit_ || control_ == nullptr || fork_epoch_ != detail::topic_fork_epoch() ||
        pos_ - cached_min_ > mask_)
      return false;
    auto& slot = slot_at(pos_);
    // [topic.seqlock] as acquire() and commit(): writing() relaxed and a
    // release fence before the bytes, done() released after them.
    slot.seq.store(detail::topic_writing(pos_), std::memory_order_relaxed);
    detail::topic_seqlock_release_fence();
    detail::copy_payload(reinterpret_cast<std::byte*>(&slot) + detail::kTopicSlotHeader,
                         static_cast<const std::byte*>(p), n);
    // relaxed: published by the release store of seq below.
    slot.length.store(n, std::memory_order_relaxed);
    slot.seq.store(detail::topic_done(pos_), std::memory_order_release);
    ++pos_;
    publish_position();
    return true;
  }
  // After a message's done(): the position for joiners and sleepers.
  [[gnu::always_inline]] void publish_position() noexcept {
    auto& w = control_->publisher.write_seq;
    if (policy_.strategy == WaitStrategy::busy_poll) {
      // [topic.join] release: for joiners and inspectors; busy subscribers
      // never sleep, so nobody needs waking.
      w.store(pos_, std::memory_order_release);
    } else {
      // [topic.wake] seq_cst: the state a sleeping subscriber's ready()
      // loads, before wake_subscribers() loads the word it joins.
      w.store(pos_, std::memory_order_seq_cst);
      wake_subscribers();
    }
  }
  [[gnu::always_inline]] void wake_subscribers() noexcept {
    // [topic.wake] seq_cst: pairs with the subscriber's joining CAS. Either
    // this load sees the join, or the subscriber's seq_cst ready() check
    // after its join sees what we stored before this load.
    const std::uint64_t w = control_->wake.data.load(std::memory_order_seq_cst);
    if (detail::topic_sleepers(w) != 0) [[unlikely]]
      wake_generation(w);  // else nobody sleeps: no system call, no write
  }
  void wake_generation(std::uint64_t w) noexcept;
  void update_fast() noexcept { fast_limit_ = !corrupted_ && !has_loan_ ? max_message_ + 1 : 0; }
  PublishResult copy_in(std::span<const std::byte> msg, const Clock::time_point* deadline,
                        bool try_only) noexcept;
  bool take_over() noexcept;
  [[nodiscard]] bool scan() noexcept;  // refreshes cached_min_; true: room for pos_
  PublishResult wait_room(const Clock::time_point* deadline) noexcept;
  bool evict_dead() noexcept;
  // [topic.ask] a held-back publisher asks reliable subscribers for room.
  void ask_room() noexcept;
  void free_stale_marks() noexcept;  // scan() found a marked record that is not reliable
  [[nodiscard]] detail::TopicSlot& slot_at(std::uint64_t s) const noexcept {
    return *reinterpret_cast<detail::TopicSlot*>(slots_ + (s & mask_) * stride_);
  }

  std::shared_ptr<detail::Segment> segment_;
  detail::MovedNull<detail::TopicControl> control_;
  detail::TopicSubscriberLine* subs_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t stride_ = 0;
  std::uint64_t max_message_ = 0;
  std::uint32_t max_subscribers_ = 0;
  WaitPolicy policy_{};
  std::uint64_t pos_ = 0;  // next message number
  bool asking_ = false;    // [topic.ask] we set room_asked and no scan() has found room since
  std::uint64_t cached_min_ = 0;  // publisher's copy of the slowest reliable position
  std::uint64_t loaned_ = 0;      // bytes of the loaned slot
  std::uint64_t fast_limit_ = 0;  // max_message_ + 1 while fast_publish() may run, else 0
  bool has_loan_ = false;
  bool corrupted_ = false;
  PublishResult last_error_ = PublishResult::ok;
  std::uint64_t owner_word_ = 0;         // ProcessId::pack() we hold the role with
  std::uint64_t fork_epoch_ = 0;         // forks seen at its last use here
  std::int64_t next_mark_check_ns_ = 0;  // free_stale_marks()'s liveness slice
};

// The reading side. One thread of one process uses it at a time.
class Subscriber {
 public:
  Subscriber() = default;
  Subscriber(Subscriber&& o) noexcept = default;
  Subscriber& operator=(Subscriber&& o) noexcept;  // closes this one first
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;
  ~Subscriber();

  // Copies the next message into `buf`; `n` gets its length (also for
  // too_small, when the message stays).
  ReceiveResult recv(std::span<std::byte> buf, std::size_t& n) noexcept {
    if (fast_recv(buf.data(), buf.size(), n, false)) [[likely]]
      return ReceiveResult::ok;
    return read_copy(buf.data(), buf.size(), n, false, nullptr, false);
  }
  ReceiveResult recv_for(std::span<std::byte> buf, std::size_t& n,
                         Clock::duration timeout) noexcept;
  ReceiveResult try_recv(std::span<std::byte> buf, std::size_t& n) noexcept;
  // Into a vector (resized to the message; may allocate).
  ReceiveResult recv(std::vector<std::byte>& out) noexcept;
  ReceiveResult recv_for(std::vector<std::byte>& out, Clock::duration timeout) noexcept;

  // A value: a trivially copyable T as its bytes (size_mismatch, the
  // message staying, when it is not sizeof(T) bytes; noexcept); any other
  // type the codec carries decoded (a message that is not a T is consumed
  // and reported as decode_error; may throw std::bad_alloc).
  template <class T>
  requires(!std::is_same_v<T, std::vector<std::byte>>) ReceiveResult recv(T& out)
  noexcept(std::is_trivially_copyable_v<T>) { return recv_value(out, nullptr, false); }
  template <class T>
  requires(!std::is_same_v<T, std::vector<std::byte>>) ReceiveResult
      recv_for(T& out, Clock::duration timeout)
  noexcept(std::is_trivially_copyable_v<T>) {
    const Clock::time_point deadline = detail::deadline_after(timeout);
    return recv_value(out, &deadline, false);
  }
  template <class T>
  ReceiveResult try_recv(T& out) noexcept(std::is_trivially_copyable_v<T>) {
    return recv_value(out, nullptr, true);
  }

  // Zero-copy: the next message in place, until release(). For a lossy
  // subscriber the publisher may overwrite it meanwhile: release() says
  // whether it stayed intact (false: it was overwritten, and is counted
  // as missed). A reliable subscriber's message always stays.
  ReceiveResult peek(std::span<const std::byte>& msg) noexcept;
  ReceiveResult peek_for(std::span<const std::byte>& msg, Clock::duration timeout) noexcept;
  ReceiveResult try_peek(std::span<const std::byte>& msg) noexcept;
  bool release() noexcept;

  // Counters since subscribe(): messages delivered, lap events and
  // messages lost to them (lossy subscribers, or a reliable one whose
  // history was overwritten... never after it joined).
  [[nodiscard]] std::uint64_t received() const noexcept { return received_; }
  [[nodiscard]] std::uint64_t lapped() const noexcept { return lapped_; }
  [[nodiscard]] std::uint64_t missed() const noexcept { return missed_; }
  // The next message number this subscriber reads.
  [[nodiscard]] std::uint64_t position() const noexcept { return pos_; }
  // Messages published and not received yet (a snapshot).
  [[nodiscard]] std::uint64_t lag() const noexcept;
  [[nodiscard]] SubscriberPolicy policy() const noexcept { return policy_kind_; }
  [[nodiscard]] std::size_t max_message() const noexcept { return max_message_; }

  // True when recv would not wait for a publication (a message, a lap,
  // corruption at our position, or the publisher closed). shmbus::wait()
  // takes a Subscriber (wait_any.hpp): ready then, or when the publisher
  // died or this subscriber was evicted (seen within 10 ms). The word
  // every subscriber of the topic sleeps on: [topic.wake] in
  // detail/topic_format.hpp (its low half is the futex word, the wake
  // generation; its high half counts the sleepers: join with a CAS,
  // re-check ready(), sleep on the generation, take the join back).
  [[nodiscard]] bool ready() const noexcept;
  [[nodiscard]] const std::atomic<std::uint64_t>* wait_word() const noexcept;

  // A file descriptor (an eventfd of this process) for poll, epoll, Asio,
  // libuv: readable while a message (or the end, a dead publisher, an
  // eviction) may be there. Level-triggered, re-armed by this handle: it
  // stays readable until a try_recv()/try_peek() finds nothing, then turns
  // readable at the next publication. Costs a thread of this process per
  // subscriber that asks (detail/fd_bridge.hpp), and the publisher nothing
  // new: the thread sleeps on the word sleeping subscribers share, which a
  // publication wakes with one system call at most. Throws Error(closed)
  // on a closed handle, Error(system) when the thread cannot start. Not
  // for busy_poll topics (their publisher wakes nobody): the descriptor
  // then fires only at the thread's 10 ms slices.
  [[nodiscard]] int fileno();

  // Gives the record back. The destructor does the same.
  void close() noexcept;
  [[nodiscard]] bool is_closed() const noexcept { return control_ == nullptr; }

 private:
  friend class Topic;
  friend struct detail::WaitAccess;
  Subscriber(std::shared_ptr<detail::Segment> segment, const detail::TopicConfig& k,
             std::uint32_t index, SubscriberPolicy policy, std::uint64_t start,
             std::uint64_t joined);
  enum class SlotState : std::uint8_t { ready, empty, lapped, corrupted };
  template <class T>
  ReceiveResult recv_value(T& out, const Clock::time_point* deadline,
                           bool try_only) noexcept(std::is_trivially_copyable_v<T>) {
    std::size_t n = 0;
    if constexpr (std::is_trivially_copyable_v<T>) {
      std::byte tmp[sizeof(T)];
      if (fast_recv(tmp, sizeof(T), n, true)) [[likely]] {
        std::memcpy(&out, tmp, sizeof(T));
        return ReceiveResult::ok;
      }
      const ReceiveResult r = read_copy(tmp, sizeof(T), n, true, deadline, try_only);
      if (r == ReceiveResult::ok) std::memcpy(&out, tmp, sizeof(T));
      return r;
    } else if constexpr (wire_format_v<T> == WireFormat::bytes) {
      return recv_resizable(out, deadline, try_only);
    } else {
      detail::require_codable<T>();
      const std::span<std::byte> buf = receive_buffer(max_message_);
      if (const ReceiveResult r = read_copy(buf.data(), buf.size(), n, false, deadline, try_only);
          r != ReceiveResult::ok)
        return r;
      return detail::decode_message(std::span<const std::byte>(buf.first(n)), out)
                 ? ReceiveResult::ok
                 : ReceiveResult::decode_error;
    }
  }
  // The next message into a container resized to it (std::string,
  // std::vector<std::byte>); may throw std::bad_alloc.
  template <class C>
  ReceiveResult recv_resizable(C& out, const Clock::time_point* deadline, bool try_only) {
    std::span<const std::byte> msg;
    for (;;) {
      if (const ReceiveResult r = next(msg, deadline, try_only); r != ReceiveResult::ok) return r;
      out.resize(msg.size());
      copy_out(reinterpret_cast<std::byte*>(out.data()), msg.data(), msg.size());
      if (intact()) break;  // else overwritten mid-copy: counted, try the next
    }
    advance();
    return ReceiveResult::ok;
  }
  // The inlined fast path of every copying receive: the message at our
  // position is there (done), fits (`exact`: is cap bytes), and stayed
  // whole while we copied it, on a handle that is open, used in this
  // process since the last fork and has seen no corruption. Anything else
  // (nothing yet, a lap, a torn copy, too small) changes nothing here and
  // goes to read_copy(), which looks again and says why.
  [[nodiscard, gnu::always_inline]] bool fast_recv(std::byte* dst, std::size_t cap, std::size_t& n,
                                                   bool exact) noexcept {
    if (control_ == nullptr || corrupted_ || fork_epoch_ != detail::topic_fork_epoch())
      return false;
    auto& slot = slot_at(pos_);
    // [topic.seqlock] acquire: pairs with the publisher's release of done().
    if (slot.seq.load(std::memory_order_acquire) != detail::topic_done(pos_)) return false;
    // relaxed: ordered by the acquire above; untrusted, so checked against
    // our own copy of max_message.
    const std::uint64_t len = slot.length.load(std::memory_order_relaxed);
    if (len > max_message_ || (exact ? len != cap : len > cap)) return false;
    copy_out(dst, reinterpret_cast<const std::byte*>(&slot) + detail::kTopicSlotHeader,
             static_cast<std::size_t>(len));
    // [topic.seqlock] the re-check, as intact(): an acquire fence orders
    // the copy before the relaxed re-load.
    detail::topic_seqlock_acquire_fence();
    if (slot.seq.load(std::memory_order_relaxed) != detail::topic_done(pos_)) return false;
    n = static_cast<std::size_t>(len);
    advance();
    return true;
  }
  // The next message copied into dst[0, cap) (n: its length). Above cap
  // (or, `exact`, not cap bytes) it stays: too_small (size_mismatch).
  ReceiveResult read_copy(std::byte* dst, std::size_t cap, std::size_t& n, bool exact,
                          const Clock::time_point* deadline, bool try_only) noexcept;
  // This thread's buffer of at least `size` bytes for decoding.
  static std::span<std::byte> receive_buffer(std::size_t size);
  // Waits for the message at the position: ok with `msg` in place (not
  // yet validated against overwriting: copy, then intact()).
  ReceiveResult next(std::span<const std::byte>& msg, const Clock::time_point* deadline,
                     bool try_only) noexcept;
  // The slot at our position (inline: the receive's hot check).
  [[nodiscard]] SlotState state(std::uint64_t& seen) const noexcept {
    if (corrupted_) return SlotState::corrupted;
    // [topic.seqlock] acquire: pairs with the publisher's release of done().
    seen = slot_at(pos_).seq.load(std::memory_order_acquire);
    if (seen == detail::topic_done(pos_)) [[likely]]
      return SlotState::ready;
    if (seen == 0) return SlotState::empty;
    // Untrusted: the word must name a message of this slot.
    if (seen < 2 || (((seen - 2) >> 1) & mask_) != (pos_ & mask_)) return SlotState::corrupted;
    return seen > detail::topic_writing(pos_) ? SlotState::lapped : SlotState::empty;
  }
  ReceiveResult wait_data(const Clock::time_point* deadline) noexcept;
  void sleep_for_data(Clock::time_point until) noexcept;
  // [topic.wake] counts this subscriber among the sleepers of the current
  // generation (returned: the futex value to sleep on); leave_wake() takes
  // it back unless the publisher woke that generation meanwhile.
  [[nodiscard]] std::uint32_t join_wake() const noexcept;
  void leave_wake(std::uint32_t generation) const noexcept;
  // The publisher died, or this record was evicted or taken: recv would
  // report it rather than wait (reads /proc: a liveness check).
  [[nodiscard]] bool peer_gone() const noexcept;
  // fileno(): this handle found nothing; clear the descriptor and arm.
  void rearm_fileno() noexcept;
  [[nodiscard]] std::optional<ReceiveResult> ended() noexcept;
  void skip_lapped(std::uint64_t seen) noexcept;
  ReceiveResult recv_vector(std::vector<std::byte>& out,
                            const Clock::time_point* deadline) noexcept;
  // After a copy: whether the message was still whole (else counted as
  // lost and skipped).
  bool intact() noexcept {
    // [topic.seqlock] the re-check: an acquire fence orders the copy above
    // before the relaxed re-load; pairs with the release fence after the
    // publisher's store of writing() in Publisher::acquire().
    detail::topic_seqlock_acquire_fence();
    const std::uint64_t seen = slot_at(pos_).seq.load(std::memory_order_relaxed);
    if (seen == detail::topic_done(pos_)) [[likely]]
      return true;
    return overwritten(seen);
  }
  // intact()'s slow path: the slot moved on (a lap: counted and skipped,
  // false) or went back (corrupted, false).
  bool overwritten(std::uint64_t seen) noexcept;
  void advance() noexcept {
    ++pos_;
    ++received_;
    peeked_ = false;
    // [topic.ask] relaxed: a hint from the publisher (see topic_format.hpp);
    // only a reliable subscriber holds a publisher back.
    if (pos_ - published_ >= slots_count_ / 4 ||
        (policy_kind_ == SubscriberPolicy::reliable &&
         control_->wake.room_asked.load(std::memory_order_relaxed) != 0))
      publish_read();
  }
  void publish_read() noexcept;
  // [topic.room] after a reliable subscriber's position store: wakes a
  // blocked publisher once the slowest reliable record freed what it needs.
  void notify_publisher() const noexcept;
  bool take_over() noexcept;
  // A copy out of a slot the publisher may be overwriting (a lossy
  // subscriber's; the seqlock's re-check discards it then).
  static void copy_out(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
#if SHMBUS_TOPIC_TSAN
    copy_racy(dst, src, n);
#else
    detail::copy_payload(dst, src, n);
#endif
  }
  // copy_out() in ThreadSanitizer builds: uninstrumented (topic.cpp).
  static void copy_racy(std::byte* dst, const std::byte* src, std::size_t n) noexcept;
  [[nodiscard]] detail::TopicSlot& slot_at(std::uint64_t s) const noexcept {
    return *reinterpret_cast<detail::TopicSlot*>(slots_ + (s & mask_) * stride_);
  }
  [[nodiscard]] detail::TopicSubscriberLine& line() const noexcept { return subs_[index_]; }

  std::shared_ptr<detail::Segment> segment_;
  detail::MovedNull<detail::TopicControl> control_;
  detail::TopicSubscriberLine* subs_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint64_t slots_count_ = 0;
  std::uint64_t stride_ = 0;
  std::uint64_t max_message_ = 0;
  std::uint32_t max_subscribers_ = 0;
  WaitPolicy policy_{};
  std::uint32_t index_ = 0;
  SubscriberPolicy policy_kind_ = SubscriberPolicy::reliable;
  std::uint64_t pos_ = 0;        // next message number
  std::uint64_t published_ = 0;  // last read_seq stored
  std::uint64_t joined_ = 0;     // first message owed (after the history)
  std::uint64_t received_ = 0;
  std::uint64_t lapped_ = 0;
  std::uint64_t missed_ = 0;
  bool peeked_ = false;
  bool corrupted_ = false;
  std::uint64_t owner_word_ = 0;
  std::uint64_t fork_epoch_ = 0;  // forks seen at its last use here
  std::int64_t next_liveness_ns_ = 0;
  std::uint32_t wake_generation_ = 0;            // shmbus::wait()'s join ([topic.wake])
  std::unique_ptr<detail::FdBridge> fd_bridge_;  // fileno(); null until asked for
};

// Live statistics of a topic, read from a read-only view.
struct TopicSubscriberStats {
  std::uint32_t index = 0;
  ProcessId owner;
  bool alive = false;
  SubscriberPolicy policy = SubscriberPolicy::reliable;
  std::uint64_t position = 0;  // published lazily: lag is an upper bound
  std::uint64_t lag = 0;
  std::uint64_t received = 0;
  std::uint64_t lapped = 0;
  std::uint64_t missed = 0;
};
struct TopicStats {
  std::uint32_t slots = 0;
  std::uint64_t max_message = 0;
  std::uint32_t history = 0;
  std::uint32_t max_subscribers = 0;
  WaitStrategy strategy = WaitStrategy::adaptive;
  ProcessId publisher;  // pid 0: none
  bool publisher_alive = false;
  bool closed = false;
  std::uint64_t published = 0;
  std::uint32_t takeovers = 0;
  std::uint64_t evictions = 0;
  std::uint64_t blocked_publishes = 0;
  // Records in the reliable set ([topic.reliable]): the reliable
  // subscribers a publisher scans, and a dead one's until it is evicted.
  std::uint32_t reliable_marked = 0;
  std::vector<TopicSubscriberStats> subscribers;  // live records only
};
// Throws Error(wrong_kind) for another object, Error(corrupted) for a
// topic whose control block does not validate.
[[nodiscard]] TopicStats topic_stats(const SegmentView& view);

}  // namespace shmbus
