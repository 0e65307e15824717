// detail::SpscRing — a single-producer single-consumer ring of
// variable-length framed messages in shared memory (the core of Pipe).
//
// Who may call what: one RingProducer and one RingConsumer per ring, each
// in one thread of one process. Both sides keep their positions locally;
// shared memory is only read through validated loads.
//
// Design (one cache-line hand-off per hop for a small message):
//   - Every frame starts with an 8-byte header word holding a position tag,
//     flags and the payload length. The consumer polls the header word at
//     its read position, so a small message and its publication travel in
//     the same cache line. There is no write index the consumer must read.
//   - Before publishing a frame the producer zeroes the header word of the
//     frame that follows it, so the consumer never mistakes stale bytes of
//     an earlier lap (or user payload) for a header.
//   - A frame of at most 64 bytes never straddles a cache line (the
//     producer pads to the next line), and no frame straddles the ring end
//     (the producer pads to the end and starts over at offset 0).
//   - The consumer publishes its read position lazily: every quarter ring,
//     and whenever it finds the ring empty. The producer reads it only when
//     its cached copy says the ring is full.
//   - Fast paths (issue 22): try_send() and try_recv() move one whole
//     frame with one bounds compare each, against a limit that folds room,
//     the ring's end, the next publication point and corruption (see
//     update_fast_end() and update_fast_limit()); anything else hands over
//     to try_reserve()/commit() and peek()/release(), which re-check and
//     say why.
//   - [ring.stats] The producer's write_pos and counters are published by
//     every commit() and at least every stats_interval() bytes of
//     try_send(); an inspector counts the frames past the published
//     position from their headers (ring_tail()). The consumer publishes
//     its read_pos and counters lazily, as above.
//   - Batching: between begin_batch() and end_batch() the producer writes
//     every header except the first of the batch with plain stores and
//     publishes the whole batch with one store of that first header.
//   - Nothing is written by both sides on the fast path: header words and
//     payload are producer-written, read_pos is consumer-written. Only a
//     consumer about to sleep writes a header word (below); the `space`
//     WaitChannel follows the futex layer's contract and is touched only by
//     a producer that sleeps for room or a consumer that wakes it.
//   - A consumer sleeps on the header word it polls ([ring.sleep]): it
//     writes the word's sleep token into `consumer_asleep`, turns the
//     empty word (0) into kHeaderWaiting with a CAS and futex-waits on its
//     low half. A blocking ring's producer (RingWake::exchange) publishes
//     every frame with an exchange and wakes the consumer when the
//     exchange returns kHeaderWaiting. An adaptive ring's producer
//     (RingWake::checked) publishes with a plain store and then reads
//     `consumer_asleep`, with no fence between the two; a token naming a
//     word it has now written is taken (CAS to 0) and that word woken. The
//     consumer pays for that ordering with an asymmetric heavy fence
//     (membarrier, [fence.asym] in futex.hpp) before it sleeps, which an
//     adaptive consumer does only after its spin. So a wake-up moves the
//     line that carries the frame, and a commit that finds nobody asleep
//     makes no system call (and, when checked, no locked instruction).
//
// Memory ordering contract: everything a producer wrote into a frame
// before commit() (or before end_batch() for a batch) is visible to the
// consumer that peek()s that frame; everything a consumer read from a frame
// before release() is done before the producer may overwrite it.
//
// Frame header word (little endian, atomic 64-bit, 8-byte aligned):
//
//   bits  0..27  length: payload bytes (for a pad frame: bytes to skip)
//   bit   28     last fragment of a multi-frame message
//   bit   29     fragment: part of a multi-frame message
//   bit   30     pad: skip `length` bytes (to the next line or ring end)
//   bit   31     valid: always set in a written header
//   bits 32..63  tag: low 32 bits of (frame position / 8)
//
// kHeaderWaiting (1: valid bit clear, so never a frame) in the word at the
// read position means "the consumer sleeps here"; readers take it for 0.
//
// The first fragment of a multi-frame message starts its payload with the
// message's total length (uint64).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "shmbus/detail/futex.hpp"
#include "shmbus/detail/wake_slot.hpp"

namespace shmbus::detail {

inline constexpr std::uint64_t kFrameValid = std::uint64_t{1} << 31;
inline constexpr std::uint64_t kFramePad = std::uint64_t{1} << 30;
inline constexpr std::uint64_t kFrameFragment = std::uint64_t{1} << 29;
inline constexpr std::uint64_t kFrameLast = std::uint64_t{1} << 28;
inline constexpr std::uint64_t kFrameLengthMask = (std::uint64_t{1} << 28) - 1;
inline constexpr std::size_t kFrameHeaderSize = 8;
inline constexpr std::uint64_t kHeaderWaiting = 1;  // [ring.sleep]
inline constexpr std::size_t kCacheLine = 64;
// How far ahead of its next frame the producer asks for a line with intent
// to write (prefetch_for_write). Measured on the 2-vCPU EPYC VM, cores
// "far" apart: an 8 B stream went from 35 M to 105 M msg/s and a 64 B one
// from 26 M to 29 M (without it every new line's ownership is fetched while
// the frame waits to publish). 256 B streamed and round-tripped like 768 B
// over three builds; an earlier finding that 512 B or less slowed the round
// trip was the run-to-run flip described in pipe.cpp's wait_data().
inline constexpr std::size_t kWriteAhead = 768;
// A consumer that could not pay the heavy fence ([ring.sleep]) sleeps at
// most this long at a time, so a wake-up it may miss costs no more.
inline constexpr std::chrono::microseconds kUnfencedNap{200};
inline constexpr std::size_t kMinRingCapacity = 4096;
// Positions a ring starts from (read from shared memory when an end is
// set up) above this are taken as corrupted: a real one needs 2^63 bytes
// sent (decades at 10 GB/s), and below it no position plus a frame (at
// most 2^28 + 16 bytes) wraps around, which the fast paths' limits rely on.
inline constexpr std::uint64_t kMaxStartPosition = std::uint64_t{1} << 63;
inline constexpr std::size_t kMaxRingCapacity = std::size_t{1} << 30;

[[nodiscard]] constexpr std::uint64_t align8(std::uint64_t n) noexcept {
  return (n + 7) & ~std::uint64_t{7};
}
// The low 32 bits of pos / 8 in bits 32..63. `pos` is a frame position,
// a multiple of 8 (every side checks that of a position it takes from
// shared memory), so its three low bits are 0 and one shift makes the tag
// (two where pos / 8 is shifted up again: one instruction a message on
// each side).
[[nodiscard]] constexpr std::uint64_t frame_tag(std::uint64_t pos) noexcept { return pos << 29; }
// [ring.sleep] What a consumer asleep at `pos` writes into
// RingControl::consumer_asleep: odd, so never 0 (not asleep), and the
// difference of two tokens, halved, is the distance in 8-byte words.
[[nodiscard]] constexpr std::uint32_t sleep_token(std::uint64_t pos) noexcept {
  return static_cast<std::uint32_t>(pos >> 3) << 1 | 1U;
}
// The header word of a frame at `pos` with `value` (length and flags).
[[nodiscard]] constexpr std::uint64_t frame_word(std::uint64_t pos, std::uint64_t value) noexcept {
  return value | kFrameValid | frame_tag(pos);
}
// [ring.stats] How far a producer's fast path runs between two
// publications of its position and counters: an inspector reads at most
// this many bytes of headers to count what was sent since.
[[nodiscard]] constexpr std::uint64_t stats_interval(std::uint64_t capacity) noexcept {
  return capacity / 4 < 4096 ? capacity / 4 : 4096;
}
// [ring.stats] An end's counts not yet added to its totals: messages in
// the high half, bytes in the low half, so that counting a message is one
// add to memory (two counters took two read-modify-writes a message, and
// on one core the loads and stores are what a send and a receive are
// bound by). An end adds them to its totals whenever it publishes, at
// most a quarter ring (< 2^29 bytes and frames) after the last time, so
// neither half overflows.
inline constexpr std::uint64_t kCountedMessage = std::uint64_t{1} << 32;
struct RingCounts {
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
  std::uint64_t unadded = 0;  // kCountedMessage * messages + bytes since the last add()
  [[gnu::always_inline]] void count(std::uint64_t n_bytes, std::uint64_t n_messages = 1) noexcept {
    unadded += kCountedMessage * n_messages + n_bytes;
  }
  void add() noexcept {
    messages += unadded >> 32;
    bytes += unadded & (kCountedMessage - 1);
    unadded = 0;
  }
};

[[nodiscard]] constexpr std::uint64_t frame_size(std::uint64_t payload) noexcept {
  return align8(kFrameHeaderSize + payload);
}
// The largest payload of one frame in a ring of `capacity` bytes: a frame
// takes at most a quarter ring, so it always fits after padding.
[[nodiscard]] constexpr std::size_t max_frame_payload(std::size_t capacity) noexcept {
  return capacity / 4 - kFrameHeaderSize;
}

// Producer-owned line: its published position (for depth) and statistics.
// Written only by the producer (relaxed single-writer stores, at most
// stats_interval() bytes apart: [ring.stats]); read by the consumer never,
// by inspectors any time (who add ring_tail() for what came since).
struct alignas(64) RingProducerLine {
  std::atomic<std::uint64_t> write_pos;  // end of the last committed frame
  std::atomic<std::uint64_t> messages_sent;
  std::atomic<std::uint64_t> bytes_sent;
  std::atomic<std::uint64_t> blocked_sends;  // sends that slept waiting for space
  // What the producer's end took from the other ring, published by its
  // user (a Service server: [service.taken]); 0 when it publishes nothing
  // (a plain pipe, or a peer built before these words).
  std::atomic<std::uint64_t> taken;  // 1 + messages taken
  std::atomic<std::uint64_t> open;   // 1 + calls taken and not yet answered
};

// Consumer-owned line: the published read position and statistics.
struct alignas(64) RingConsumerLine {
  std::atomic<std::uint64_t> read_pos;  // [ring.consume] everything before is free
  std::atomic<std::uint64_t> messages_received;
  std::atomic<std::uint64_t> bytes_received;
  std::atomic<std::uint64_t> blocked_recvs;  // receives that slept waiting for data
};

// Ring control block (pipe formats 4 to 6). Lives in the segment; offsets only.
// (A consumer waiting for data sleeps on a header word: [ring.sleep].)
//
//   0    producer line   (producer-owned)
//   64   consumer line   (consumer-owned)
//   128  space channel   (producer sleeps when full, consumer notifies),
//        consumer_asleep (consumer-written; a checked producer may clear it)
//        producer_checks (producer-written when its end is set up),
//        wake_slot       (consumer-written before it sleeps: [ring.redirect])
// The third line is written only around sleeps and set-up, so the checked
// producer's load of consumer_asleep on every commit hits its own cache.
struct RingControl {
  RingProducerLine producer;
  RingConsumerLine consumer;
  alignas(64) WaitChannel space;
  std::atomic<std::uint32_t> consumer_asleep;  // [ring.sleep] sleep_token(), 0: awake
  std::atomic<std::uint32_t> producer_checks;  // [ring.sleep] 1: RingWake::checked
  // [ring.redirect] consumer-written: the id of the wake slot
  // (detail/wake_slot.hpp) a producer that finds the consumer's mark or
  // token wakes instead of the header word; 0: the header word. Stored by
  // the consumer before the RMWs that arm it (mark_asleep()); read by the
  // producer after its RMW that read the mark or took the token.
  std::atomic<std::uint32_t> wake_slot;
};
static_assert(std::is_standard_layout_v<RingControl>);
static_assert(offsetof(RingControl, consumer) == 64);
static_assert(offsetof(RingControl, space) == 128);
static_assert(offsetof(RingControl, consumer_asleep) == 136);
static_assert(offsetof(RingControl, wake_slot) == 144);
static_assert(sizeof(RingControl) == 192);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// A view of one frame found by RingConsumer::peek().
struct Frame {
  const std::byte* data = nullptr;
  std::uint32_t length = 0;
  bool fragment = false;
  bool last = false;
};

enum class PeekResult : std::uint8_t { ok, empty, corrupted };

// What a RingConsumer without a ring (default made) reads at its read
// position: an empty header word, so its inlined receives, which load the
// header before they compare against fast_limit_ (0 there), find nothing
// to take, and its owner needs no flag of its own to keep them off.
alignas(kCacheLine) inline constinit std::byte g_no_ring[kFrameHeaderSize]{};

[[nodiscard]] inline std::atomic<std::uint64_t>& header_at(std::byte* data,
                                                           std::uint64_t offset) noexcept {
  return *reinterpret_cast<std::atomic<std::uint64_t>*>(data + offset);
}

// The first and the last k bytes of n (k <= n <= 2k), loaded before either
// is stored: together they are the n bytes, whatever n. Moved in pieces of
// at most 16 bytes: GCC keeps a 16-byte temporary in a register, but wrote
// a 32-byte one to the stack as well (four extra stores per 64 B message,
// seen in bench/cost/pipe_cost's disassembly).
template <std::size_t k>
[[gnu::always_inline]] inline void copy_ends(std::byte* dst, const std::byte* src,
                                             std::size_t n) noexcept {
  constexpr std::size_t p = k < 16 ? k : 16;
  constexpr std::size_t pieces = k / p;
  static_assert(k % p == 0, "copy_ends: k must be a multiple of its piece");
  unsigned char head[pieces][p], tail[pieces][p];
  for (std::size_t i = 0; i < pieces; ++i) {
    std::memcpy(head[i], src + i * p, p);
    std::memcpy(tail[i], src + n - k + i * p, p);
  }
  for (std::size_t i = 0; i < pieces; ++i) {
    std::memcpy(dst + i * p, head[i], p);
    std::memcpy(dst + n - k + i * p, tail[i], p);
  }
}

// Copies a message of at most kInlineCopy bytes inline by size class, no
// call, in a tree of two compares for every size from 8 to 64 (the 8 and
// 64 byte messages of the benchmarks: two each).
inline constexpr std::size_t kInlineCopy = 64;
[[gnu::always_inline]] inline void copy_small(std::byte* dst, const std::byte* src,
                                              std::size_t n) noexcept {
  if (n > 16) {
    if (n > 32) {
      copy_ends<32>(dst, src, n);
    } else {
      copy_ends<16>(dst, src, n);
    }
  } else if (n >= 8) {
    copy_ends<8>(dst, src, n);
  } else if (n >= 4) {
    copy_ends<4>(dst, src, n);
  } else if (n != 0) {
    const std::byte a = src[0], b = src[n / 2], c = src[n - 1];
    dst[0] = a;
    dst[n / 2] = b;
    dst[n - 1] = c;
  }
}

// Copies a message's bytes. Up to 64 bytes are copied inline by size
// class, no call: for the small messages of a busy pipe the library
// memcpy's call and size dispatch cost a sixth of a send and receive (one
// core's send+recv of 8 B, -O2: 11.0 ns with memcpy, 9.3 ns inline).
[[gnu::always_inline]] inline void copy_payload(std::byte* dst, const std::byte* src,
                                                std::size_t n) noexcept {
  if (n > kInlineCopy) {
    std::memcpy(dst, src, n);
  } else {
    copy_small(dst, src, n);
  }
}

// [ring.stats] What a producer sent past the position it last published:
// the frames found from `pos` on (their headers validated as a consumer
// would: valid bit, tag, bounds), read without writing. An inspector adds
// them to the published counters, so it shows every committed message
// although the producer's fast path publishes only every stats_interval()
// bytes. Stops at the first word that is not such a frame (the producer's
// next position, or anything a racing or hostile writer left there), and
// after `limit` bytes.
struct RingTail {
  std::uint64_t pos = 0;  // end of the last frame found
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
};
[[nodiscard]] inline RingTail ring_tail(const std::byte* data, std::uint64_t capacity,
                                        std::uint64_t pos, std::uint64_t limit) noexcept {
  RingTail t{pos, 0, 0};
  if ((pos & 7) != 0) return t;  // untrusted
  const std::uint64_t mask = capacity - 1;
  while (t.pos - pos < limit) {
    const std::uint64_t off = t.pos & mask;
    // relaxed: only the header word itself is read (for a count), never
    // the payload it describes.
    const std::uint64_t h = reinterpret_cast<const std::atomic<std::uint64_t>*>(data + off)
                                ->load(std::memory_order_relaxed);
    const std::uint64_t len = h & kFrameLengthMask;
    if ((h & kFrameValid) == 0 || (h & ~std::uint64_t{0xFFFFFFFF}) != frame_tag(t.pos)) break;
    const std::uint64_t fs = (h & kFramePad) != 0 ? len : frame_size(len);
    if (fs < kFrameHeaderSize || (fs & 7) != 0 || off + fs > capacity) break;
    if ((h & kFramePad) == 0) {
      if ((h & kFrameFragment) == 0 || (h & kFrameLast) != 0) ++t.messages;
      t.bytes += len;
    }
    t.pos += fs;
  }
  return t;
}

// For tests: runs in a checked producer between its load of a sleep token
// and its CAS, as if it were preempted there. Only reached with a consumer
// asleep (the slow path); null in every real use.
inline std::atomic<void (*)()> g_ring_token_hook{nullptr};

// How a producer publishes and wakes a sleeping consumer ([ring.sleep]).
enum class RingWake : std::uint8_t {
  none,      // busy-poll: plain release store; the consumer never sleeps on it
  checked,   // adaptive: plain release store, then a fence-free check of
             // consumer_asleep (needs asymmetric_fence_register() first)
  exchange,  // blocking: seq_cst exchange that finds the consumer's mark
};

// The producing side of one ring.
class RingProducer {
 public:
  RingProducer() = default;
  // `data` is the ring's `capacity` bytes (a power of two, 64-aligned).
  // Announces `wake` in the control block (a consumer about to sleep reads
  // it to learn whether it owes the heavy fence).
  RingProducer(RingControl* control, std::byte* data, std::size_t capacity, RingWake wake) noexcept
      : control_(control), data_(data), capacity_(capacity), mask_(capacity - 1), wake_(wake) {
    announce();
    // relaxed: set up before the producer end is used, by its only writer.
    pos_ = control->producer.write_pos.load(std::memory_order_relaxed);
    if ((pos_ & 7) != 0 || pos_ > kMaxStartPosition) {  // untrusted
      // From 0, so no frame's end wraps past 2^64 to pass fast_end_ (0
      // now): nothing is published while corrupted.
      corrupted_ = true;
      pos_ = 0;
    }
    // [ring.consume] acquire: pairs with the consumer's release of read_pos.
    cached_read_ = control->consumer.read_pos.load(std::memory_order_acquire);
    counts_.messages = control->producer.messages_sent.load(std::memory_order_relaxed);
    counts_.bytes = control->producer.bytes_sent.load(std::memory_order_relaxed);
    publish_at_ = pos_ + stats_interval(capacity);
    update_fast_end();
  }

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::size_t max_payload() const noexcept { return max_frame_payload(capacity_); }
  [[nodiscard]] RingWake wake() const noexcept { return wake_; }

  // The whole send of a message of `n` bytes (<= max_payload()) when the
  // ring has room for it now and no batch is open: copies it, publishes it
  // and returns true. False, with nothing written, when it needs the
  // general path (try_reserve() + commit(): a pad to the ring end, a
  // refresh of the consumer's position, the [ring.stats] publication point,
  // a batch, a corrupted ring). Everything that path checks on every frame
  // is folded here into one compare against fast_end_. Small: the caller
  // knows n <= kInlineCopy (the copy then has no memcpy call to keep
  // registers across).
  template <bool Small = false>
  [[nodiscard, gnu::always_inline]] bool try_send(const std::byte* src, std::size_t n) noexcept {
    const std::uint64_t pos = pos_;
    const std::uint64_t mask = mask_;
    const std::uint64_t off = pos & mask;
    const std::uint64_t fs = frame_size(n);
    // A small frame stays in one line. (A frame that would pass the ring
    // end, which needs a pad to it, ends past fast_end_: try_reserve().)
    // With x = off % 64 (a multiple of 8), the frame crosses its line when
    // fs <= 64 and x + fs > 64, i.e. (fs = align8(8 + n)) n <= 56 and
    // x + n >= 57: both at once are the one unsigned compare below (x + n
    // - 57 wraps above x when x + n < 57 and is x or more when n > 56).
    // A run-time n costs 5 instructions (the two compares took 8 up to
    // 56 bytes, 2 above); a constant n folds to one compare of x.
    const std::uint64_t in_line = off & (kCacheLine - 1);
    if (in_line + n - (kCacheLine - kFrameHeaderSize + 1) < in_line) [[unlikely]]
      return try_send_padded(src, n);
    const std::uint64_t next = pos + fs;
    if (next > fast_end_) return false;  // see update_fast_end()
    // Loaded before the copy: stores through std::byte may alias members.
    std::byte* const data = data_;
    const RingWake wake = wake_;
    if constexpr (Small) {
      copy_small(data + off + kFrameHeaderSize, src, n);
    } else {
      copy_payload(data + off + kFrameHeaderSize, src, n);
    }
    publish_frame(data, mask, wake, pos, 0, n);
    return true;
  }

  // try_send() in two halves, for a message written in place whose length
  // is known only once it is written (the codec encodes straight into the
  // ring): where to write up to `room` bytes, or nullptr when the fast path
  // does not hold now (as try_send(): the ring end, the [ring.stats] point,
  // a batch, a corrupted ring, or less than kMinBegin bytes free). `room`
  // is what is free and contiguous from here, at most max_payload(), and
  // leaves space for the pad a small frame may need to stay in its line.
  // Nothing changes until finish(); a begun frame may be abandoned.
  [[nodiscard, gnu::always_inline]] std::byte* try_begin(std::size_t& room) noexcept {
    const std::uint64_t pos = pos_;
    const std::uint64_t off = pos & mask_;
    if (capacity_ - off < kMinBegin) return nullptr;
    if (fast_end_ < pos + kMinBegin && !begin_room()) return nullptr;
    std::uint64_t limit = fast_end_ - pos;
    if (capacity_ - off < limit) limit = capacity_ - off;
    // A frame takes at most a quarter ring (max_frame_payload()).
    if (limit > capacity_ / 4) limit = capacity_ / 4;
    room = (limit & ~std::uint64_t{7}) - kFrameHeaderSize;
    return data_ + off + kFrameHeaderSize;
  }
  // Publishes the frame begun by try_begin() with its first `n` bytes
  // (n <= room). A frame of a line or less that would straddle a line moves
  // to the next line's start (a memmove of at most 56 bytes; try_begin()'s
  // kMinBegin bytes cover the pad).
  [[gnu::always_inline]] void finish(std::size_t n) noexcept {
    const std::uint64_t pos = pos_;
    const std::uint64_t off = pos & mask_;
    const std::uint64_t fs = frame_size(n);
    std::uint64_t pad = 0;
    if (fs <= kCacheLine) {
      const std::uint64_t in_line = off & (kCacheLine - 1);
      if (in_line + fs > kCacheLine) [[unlikely]] {
        pad = kCacheLine - in_line;
        std::byte* at = data_ + off + kFrameHeaderSize;
        std::memmove(at + pad, at, n);
      }
    }
    publish_frame(data_, mask_, wake_, pos, pad, n);
  }
  // try_begin() needs this much free and contiguous: a frame of a line or
  // less plus the pad before it.
  static constexpr std::uint64_t kMinBegin = 2 * kCacheLine;

 private:
  // try_send() of a small frame that must move to the next line's start
  // (out of line: with no pad to handle, the inlined path holds one
  // register and three instructions less).
  [[gnu::noinline]] bool try_send_padded(const std::byte* src, std::size_t n) noexcept {
    const std::uint64_t pos = pos_;
    const std::uint64_t mask = mask_;
    const std::uint64_t pad = kCacheLine - (pos & (kCacheLine - 1));
    const std::uint64_t start = pos + pad;
    if (start + frame_size(n) > fast_end_) return false;  // see update_fast_end()
    std::byte* const data = data_;
    const RingWake wake = wake_;
    copy_payload(data + (start & mask) + kFrameHeaderSize, src, n);
    publish_frame(data, mask, wake, pos, pad, n);
    return true;
  }

  // try_begin() found less than kMinBegin before fast_end_: passes the
  // [ring.stats] point (as commit() would) and refreshes the consumer's
  // position; true when kMinBegin bytes are free now (never in a batch or
  // a corrupted ring).
  [[gnu::noinline]] bool begin_room() noexcept {
    if (corrupted_ || batching_ || !fast_allowed_) return false;
    if (publish_at_ < pos_ + kMinBegin) publish_stats();
    if (fast_end_ < pos_ + kMinBegin) (void)refresh_read(kMinBegin + kFrameHeaderSize);
    return fast_end_ >= pos_ + kMinBegin;
  }

 public:
 private:
  // try_send() and finish(): publishes the frame of `n` bytes at pos + pad
  // (whose payload is written), with the pad before it if any. `data`,
  // `mask` and `wake` are the members, loaded by the caller before it
  // wrote the payload (std::byte stores may alias them: reloading costs
  // two instructions a message).
  [[gnu::always_inline]] void publish_frame(std::byte* data, std::uint64_t mask, RingWake wake,
                                            std::uint64_t pos, std::uint64_t pad,
                                            std::size_t n) noexcept {
    const std::uint64_t off = pos & mask;
    const std::uint64_t start = pos + pad;
    const std::uint64_t next = start + frame_size(n);
    const std::uint64_t next_off = next & mask;
    // As in commit(): the line kWriteAhead bytes on, with intent to write,
    // wrapped to the ring's start (past its end lies the other direction's
    // ring, whose lines a write prefetch would take from its owners).
    detail::prefetch_for_write(data + ((next_off + kWriteAhead) & mask));
    // relaxed: published by the release (or seq_cst) store of the first
    // header below ([ring.publish]).
    header_at(data, next_off).store(0, std::memory_order_relaxed);
    std::uint64_t first = frame_word(start, n);
    if (pad != 0) {
      // The pad and the frame go out together, as a batch of two: the
      // frame's header plainly, then the pad's, which publishes both.
      // relaxed: [ring.publish] by the pad header's store below.
      header_at(data, start & mask).store(first, std::memory_order_relaxed);
      first = frame_word(pos, kFramePad | pad);
    }
    pos_ = next;
    counts_.count(n);
    publish(header_at(data, off), first, next, wake);
  }

 public:
  // Falls back from RingWake::checked to exchange (a process that could
  // not register for [fence.asym], e.g. a forked child under seccomp).
  void use_exchange() noexcept {
    if (wake_ != RingWake::checked) return;
    set_wake(RingWake::exchange);
  }
  // Changes how commits wake the consumer (a Listener client whose server
  // sleeps although the pipe is busy-poll: [pipe.recv_wait]). Between
  // commits only; a consumer already marked asleep is seen by the next
  // commit (announce()).
  void set_wake(RingWake wake) noexcept {
    wake_ = wake;
    announce();
  }
  [[nodiscard]] bool corrupted() const noexcept { return corrupted_; }
  [[nodiscard]] RingControl* control() const noexcept { return control_; }
  // Whether try_send() and try_begin() may run (on by default): the owner
  // of the ring folds its own state into the one compare try_send() makes
  // (Connection: this end may send, is this process's, not closed: one
  // load a send fewer than a flag of its own).
  void allow_fast(bool on) noexcept {
    fast_allowed_ = on;
    update_fast_end();
  }

  // Room for a frame of `payload` bytes (<= max_payload()): returns where
  // to write it, or nullptr when the ring is full right now (or the
  // consumer's published position is corrupted: check corrupted()).
  [[nodiscard, gnu::always_inline]] std::byte* try_reserve(std::size_t payload) noexcept {
    if (corrupted_) [[unlikely]]
      return nullptr;
    const std::uint64_t fs = frame_size(payload);
    const std::uint64_t pad = pad_before(fs);
    std::uint64_t off = pos_ & mask_;
    // Room for the pad, the frame and the next frame's zeroed header word.
    const std::uint64_t need = pad + fs + kFrameHeaderSize;
    if (pos_ + need - cached_read_ > capacity_ && !refresh_read(need)) return nullptr;
    if (pad != 0) {
      write_header(pos_, kFramePad | pad, pad);
      pos_ += pad;
      off = pos_ & mask_;
    }
    reserved_ = payload;
    has_reservation_ = true;
    return data_ + off + kFrameHeaderSize;
  }

  // Whether a frame of `payload` bytes may be committed now: a frame was
  // reserved by try_reserve() and not committed yet, at least that large.
  [[nodiscard]] bool can_commit(std::size_t payload) const noexcept {
    return has_reservation_ && payload <= reserved_;
  }

  // Publishes the reserved frame with `payload` bytes (<= the reserved
  // size, see can_commit()) and `flags` (kFrameFragment / kFrameLast).
  [[gnu::always_inline]] void commit(std::size_t payload, std::uint64_t flags = 0) noexcept {
    const std::uint64_t fs = frame_size(payload);
    // Ask for the line kWriteAhead bytes on with intent to write, so that
    // its ownership moves here long before a frame lands in it.
    detail::prefetch_for_write(data_ + ((pos_ + fs + kWriteAhead) & mask_));
    write_header(pos_, flags | payload, fs);
    pos_ += fs;
    reserved_ = 0;
    has_reservation_ = false;
    counts_.count(payload);
    publish_stats();
  }

  // [ring.stats] Publishes the position and the counters. try_send() does
  // not: the general path does, on every commit(), and try_send() hands
  // over to it at the latest stats_interval() bytes after the last one.
  // An inspector counts the frames written past the published position
  // from their headers (pipe_stats()), so what it shows is live.
  void publish_stats() noexcept {
    // [ring.stats] relaxed: single-writer counters for inspection only.
    control_->producer.write_pos.store(pos_, std::memory_order_relaxed);
    counts_.add();
    if (stats_) {
      control_->producer.messages_sent.store(counts_.messages, std::memory_order_relaxed);
      control_->producer.bytes_sent.store(counts_.bytes, std::memory_order_relaxed);
    }
    publish_at_ = pos_ + stats_interval(capacity_);
    update_fast_end();
  }

  // For a producer that closes: wakes a consumer asleep at the write
  // position ([ring.sleep]) so that it sees the close. Call after the
  // seq_cst store that closes the end, and after flush().
  void wake_consumer() noexcept {
    if (wake_ == RingWake::none) return;
    auto& h = header_at(data_, pos_ & mask_);
    std::uint64_t w = kHeaderWaiting;
    // [ring.sleep] seq_cst: ordered after the caller's close store; a
    // consumer that armed before this sees the word change (its futex_wait
    // fails or is woken), one that arms after it sees the close.
    if (h.compare_exchange_strong(w, 0, std::memory_order_seq_cst, std::memory_order_relaxed))
      wake_sleeper(h);
    else if (wake_ == RingWake::checked)
      wake_if_asleep(pos_);  // the mark may already be under a frame
  }

  // The caller stopped in the middle of a fragmented message: the ring is
  // unusable for this producer from now on (sticky, like a bad read_pos).
  void mark_corrupted() noexcept {
    corrupted_ = true;
    update_fast_end();
  }

  // Whether commit() updates the message/byte counters (the pipe's config).
  void set_statistics(bool on) noexcept { stats_ = on; }

  // Counts one message made of several fragments as one (commit() counted
  // each fragment); keeps messages_sent a count of user messages.
  void uncount_fragments(std::uint64_t n) noexcept {
    counts_.add();
    counts_.messages -= n;
    // [ring.stats] relaxed: single-writer counter.
    if (stats_) control_->producer.messages_sent.store(counts_.messages, std::memory_order_relaxed);
  }

  // Frames committed until end_batch() become visible together, with one
  // store. A batch is flushed before the producer waits for space.
  void begin_batch() noexcept {
    batching_ = true;
    update_fast_end();
  }
  void end_batch() noexcept {
    batching_ = false;
    flush();
    update_fast_end();
  }
  [[nodiscard]] bool batching() const noexcept { return batching_; }

  // Publishes a pending batch header, if any.
  void flush() noexcept {
    if (!pending_) return;
    pending_ = false;
    publish(header_at(data_, pending_off_), pending_value_, pos_, wake_);
  }

  // For the wait loop: true once the consumer published room for a frame
  // of `payload` bytes (or read_pos is corrupted: check corrupted()).
  // Loads read_pos seq_cst ([wait.sleepers] contract).
  [[nodiscard]] bool has_room(std::size_t payload) noexcept {
    const std::uint64_t fs = frame_size(payload);
    const std::uint64_t need = pad_before(fs) + fs + kFrameHeaderSize;
    // [ring.consume] seq_cst: pairs with the consumer's seq_cst store of
    // read_pos before it notifies `space`.
    const std::uint64_t rp = control_->consumer.read_pos.load(std::memory_order_seq_cst);
    if (rp > pos_ || pos_ - rp > capacity_ || (rp & 7) != 0) {  // untrusted
      mark_corrupted();
      return true;
    }
    cached_read_ = rp;
    update_fast_end();
    return pos_ + need - rp <= capacity_;
  }

 private:
  // Padding needed before a frame of `fs` bytes at pos_: a small frame
  // stays in one cache line, and no frame straddles the ring end.
  [[nodiscard, gnu::always_inline]] std::uint64_t pad_before(std::uint64_t fs) const noexcept {
    const std::uint64_t off = pos_ & mask_;
    std::uint64_t pad = 0;
    if (fs <= kCacheLine && (off & (kCacheLine - 1)) + fs > kCacheLine) {
      pad = kCacheLine - (off & (kCacheLine - 1));
    }
    if (off + pad + fs > capacity_) pad = capacity_ - off;
    return pad;
  }

  bool refresh_read(std::uint64_t need) noexcept {
    // [ring.consume] acquire: pairs with the consumer's release (or
    // seq_cst) store of read_pos; after it the consumer is done with every
    // byte before rp.
    const std::uint64_t rp = control_->consumer.read_pos.load(std::memory_order_acquire);
    if (rp > pos_ || pos_ - rp > capacity_ || (rp & 7) != 0) {  // untrusted
      mark_corrupted();
      return false;
    }
    cached_read_ = rp;
    update_fast_end();
    return pos_ + need - rp <= capacity_;
  }

  // Writes the header of the frame at `pos` (size `fs`), after zeroing the
  // header word of the frame after it.
  [[gnu::always_inline]] void write_header(std::uint64_t pos, std::uint64_t value,
                                           std::uint64_t fs) noexcept {
    // relaxed: published by the release (or seq_cst) store of this frame's
    // header below, or of the batch's first header ([ring.publish]).
    header_at(data_, (pos + fs) & mask_).store(0, std::memory_order_relaxed);
    const std::uint64_t word = frame_word(pos, value);
    auto& h = header_at(data_, pos & mask_);
    if (batching_ && !pending_) {
      pending_ = true;
      pending_off_ = pos & mask_;
      pending_value_ = word;
    } else if (pending_) {
      // relaxed: made visible by the batch's first header ([ring.publish]),
      // which the consumer must read (acquire) before it reaches this one.
      h.store(word, std::memory_order_relaxed);
    } else {
      publish(h, word, pos + fs, wake_);
    }
  }

  // try_send() may publish frames up to fast_end_ without another check:
  // room for them and the next header word by the cached read position,
  // not past the next [ring.stats] publication, not past the end of the
  // ring's lap pos_ is in (so a frame below it lies inside the ring), and
  // 0 (nothing) while a batch is open, the ring is corrupted or the owner
  // turned the fast paths off (allow_fast()). Kept current by every change
  // of those but the lap: a fast frame may end exactly at the lap's end,
  // and then fast_end_ (that end) is <= pos_, so the next frame is refused
  // and goes through commit(), which recomputes it.
  void update_fast_end() noexcept {
    const std::uint64_t room = cached_read_ + capacity_ - kFrameHeaderSize;
    const std::uint64_t lap_end = (pos_ | mask_) + 1;
    std::uint64_t end = room < publish_at_ ? room : publish_at_;
    if (lap_end < end) end = lap_end;
    fast_end_ = corrupted_ || batching_ || !fast_allowed_ ? 0 : end;
  }

  // [ring.sleep] seq_cst exchange (a full barrier, where a fence would be
  // rejected by -fsanitize=thread): a consumer whose seq_cst load of
  // producer_checks misses this write raised consumer_asleep before it,
  // so every later commit's check sees the flag.
  void announce() noexcept {
    (void)control_->producer_checks.exchange(wake_ == RingWake::checked ? 1 : 0,
                                             std::memory_order_seq_cst);
  }

  // Stores `word` into `h`, which makes the frames up to `end` visible.
  // `wake` is wake_, passed in by a caller that loaded it before writing
  // the payload (whose std::byte stores the compiler must assume alias it).
  [[gnu::always_inline]] void publish(std::atomic<std::uint64_t>& h, std::uint64_t word,
                                      std::uint64_t end, RingWake wake) noexcept {
    // Busy-poll first: one test of the mode and the store (testing for
    // exchange first cost a busy-poll send two instructions more; an
    // adaptive one runs as many either way).
    if (wake == RingWake::none) [[likely]] {
      // [ring.publish] release: pairs with the consumer's acquire in peek().
      h.store(word, std::memory_order_release);
      return;
    }
    if (wake == RingWake::exchange) {
      publish_exchange(h, word);
      return;
    }
    // [ring.publish] release: as above.
    h.store(word, std::memory_order_release);
    // RingWake::checked. [ring.sleep] the hot side of [fence.asym]: store
    // the header, then load consumer_asleep with only a compiler barrier
    // between; the consumer's heavy fence orders the pair.
    asymmetric_light_fence();
    // relaxed load: ordered by [fence.asym]; wake_if_asleep() reads it again.
    if (control_->consumer_asleep.load(std::memory_order_relaxed) != 0) [[unlikely]]
      wake_if_asleep(end);
  }
  // A blocking ring's publication (out of line: its receiver sleeps, so
  // the locked exchange and the wake-up dominate).
  [[gnu::noinline]] void publish_exchange(std::atomic<std::uint64_t>& h,
                                          std::uint64_t word) noexcept {
    // [ring.publish] + [ring.sleep] seq_cst exchange: releases the payload
    // and later headers written above (pairs with the consumer's acquire /
    // seq_cst load in peek / has_data) and reads whether the consumer
    // armed this word to sleep on it (pairs with its arm CAS).
    if (h.exchange(word, std::memory_order_seq_cst) == kHeaderWaiting) wake_sleeper(h);
  }
  // [ring.redirect] Wakes the consumer that armed header word `h`: the
  // wake slot it named, else (none named, or this process cannot reach the
  // slot table) the word itself. Called right after an RMW that read the
  // consumer's mark (or took its token): that RMW read the value of the
  // consumer's arming RMW, which followed its store of wake_slot, so the
  // load below sees that store (or a later one).
  void wake_sleeper(std::atomic<std::uint64_t>& h) noexcept {
    // relaxed: ordered after the consumer's store by the caller's RMW (above).
    const std::uint32_t slot = control_->wake_slot.load(std::memory_order_relaxed);
    if (slot == 0 || !wake_slot(slot)) (void)futex_wake(h, 1);
  }
  // [ring.sleep] Wakes a consumer whose token names a word before `end`,
  // i.e. one this producer has written over. The token is taken (CAS to
  // 0), so a burst of commits makes one futex_wake, not one each. The CAS
  // expects the token loaded: a consumer that woke, moved on and went to
  // sleep at a later word meanwhile (this producer preempted between load
  // and CAS) keeps its new token, which a later commit wakes. A token for
  // the word at `end` itself, not written yet, is left for the commit
  // that writes it.
  [[gnu::noinline]] void wake_if_asleep(std::uint64_t end) noexcept {
    auto& asleep = control_->consumer_asleep;
    // relaxed load: ordered by [fence.asym].
    std::uint32_t token = asleep.load(std::memory_order_relaxed);
    if (token == 0) return;
    const std::uint64_t behind =
        std::uint64_t{static_cast<std::uint32_t>(sleep_token(end) - token) >> 1} * 8;
    if (behind == 0 || behind > capacity_) return;  // not written yet (or untrusted garbage)
    // relaxed: a test sets the hook before the producer runs.
    if (auto* hook = g_ring_token_hook.load(std::memory_order_relaxed); hook != nullptr)
        [[unlikely]]
      hook();
    // acq_rel: one taker per token; pairs with the consumer's exchange.
    if (asleep.compare_exchange_strong(token, 0, std::memory_order_acq_rel,
                                       std::memory_order_relaxed))
      wake_sleeper(header_at(data_, (end - behind) & mask_));
  }

  RingControl* control_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  std::uint64_t pos_ = 0;          // start of the next frame
  std::uint64_t cached_read_ = 0;  // producer's copy of consumer read_pos
  std::uint64_t reserved_ = 0;     // payload bytes of the reserved frame
  RingCounts counts_;              // [ring.stats] messages and bytes sent
  std::uint64_t pending_off_ = 0;
  std::uint64_t pending_value_ = 0;
  std::uint64_t publish_at_ = 0;  // [ring.stats] try_send() hands over to commit() here
  std::uint64_t fast_end_ = 0;    // see update_fast_end()
  RingWake wake_ = RingWake::none;
  bool has_reservation_ = false;  // try_reserve() succeeded, commit() not yet
  bool batching_ = false;
  bool pending_ = false;
  bool corrupted_ = false;
  bool stats_ = true;         // update the [ring.stats] counters
  bool fast_allowed_ = true;  // allow_fast()
};

// The consuming side of one ring. Every header and position it reads is
// validated; a bad one makes the ring corrupted (sticky), never an
// out-of-bounds access.
class RingConsumer {
 public:
  RingConsumer() = default;
  RingConsumer(RingControl* control, std::byte* data, std::size_t capacity, bool notify) noexcept
      : control_(control), data_(data), capacity_(capacity), mask_(capacity - 1), notify_(notify) {
    // relaxed: set up before the consumer end is used, by its only writer.
    pos_ = control->consumer.read_pos.load(std::memory_order_relaxed);
    if ((pos_ & 7) != 0 || pos_ > kMaxStartPosition) corrupted_ = true;  // untrusted
    published_ = pos_;
    publish_at_ = pos_ + capacity / 4;
    counts_.messages = control->consumer.messages_received.load(std::memory_order_relaxed);
    counts_.bytes = control->consumer.bytes_received.load(std::memory_order_relaxed);
    update_fast_limit();
  }

  // The whole receive of a message that is one frame (not a pad, not a
  // fragment) at the read position, copied to `dst` when it fits `room`
  // bytes (Exact: is exactly `room` bytes); sets `size` and returns true.
  // False, with nothing consumed, in every other case (empty, a pad, a
  // fragment, too large for `room`, corrupted, or a frame that reaches
  // fast_limit_): peek() says which. The header is validated as peek()
  // does, in two compares: the header minus the word frame_word(pos, 0)
  // expects is below 2^28 only when the tag, the valid bit and all three
  // flags are what a plain frame at this position has; what remains is the
  // length, and the frame must end before fast_limit_ (see
  // update_fast_limit(): inside the ring, not longer than the largest
  // frame, never when corrupted).
  // Small (not Exact): a frame longer than kInlineCopy is refused too, so
  // the copy has no memcpy call (the caller goes out of line for it).
  template <bool Exact, bool Small = false>
  [[nodiscard, gnu::always_inline]] bool try_recv(std::byte* dst, std::size_t room,
                                                  std::size_t& size) noexcept {
    const std::uint64_t pos = pos_;
    const std::uint64_t off = pos & mask_;
    std::byte* const data = data_;
    // [ring.publish] acquire: pairs with the producer's release/seq_cst
    // store of this header; the payload is visible after it.
    const std::uint64_t h = header_at(data, off).load(std::memory_order_acquire);
    std::uint64_t len = h - frame_word(pos, 0);
    if constexpr (Exact) {
      // The length must be `room`, a constant in recv<T>(): compared
      // first, the frame size and the limit below are constants too (the
      // whole header is one compare with frame_word(pos, room)).
      if (len != room) return false;
      len = room;
    } else if constexpr (Small) {
      // Every word that is not a plain frame here is above 2^28 > the bound.
      if (len > (room < kInlineCopy ? room : kInlineCopy)) return false;
    } else if (len > kFrameLengthMask || len > room) {
      return false;  // the first: every word that is not a plain frame here
    }
    const std::uint64_t next = pos + frame_size(len);
    if (next >= fast_limit_) return false;  // see update_fast_limit()
    if constexpr (Exact) {
      std::memcpy(dst, data + off + kFrameHeaderSize, room);  // a constant size in recv<T>()
    } else if constexpr (Small) {
      copy_small(dst, data + off + kFrameHeaderSize, len);
    } else {
      copy_payload(dst, data + off + kFrameHeaderSize, len);
    }
    size = len;
    // peeked_ may still hold a frame a slow path peeked and left (too
    // small for its buffer): release() runs only right after a peek(), so
    // it is never used again.
    pos_ = next;
    counts_.count(len);
    return true;
  }

  // try_recv() without the copy: the message that is one plain frame at
  // the read position, in place (peeked: release() frees it); false, with
  // nothing changed, in every case try_recv() returns false.
  [[nodiscard, gnu::always_inline]] bool try_view(const std::byte*& at,
                                                  std::size_t& size) noexcept {
    const std::uint64_t pos = pos_;
    const std::uint64_t off = pos & mask_;
    // [ring.publish] acquire: as in try_recv().
    const std::uint64_t h = header_at(data_, off).load(std::memory_order_acquire);
    const std::uint64_t len = h - frame_word(pos, 0);
    if (len > kFrameLengthMask) return false;  // not a plain frame here
    const std::uint64_t fs = frame_size(len);
    if (pos + fs >= fast_limit_) return false;  // see update_fast_limit()
    at = data_ + off + kFrameHeaderSize;
    size = len;
    peeked_ = fs;
    peeked_len_ = len;
    return true;
  }

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] bool corrupted() const noexcept { return corrupted_; }
  [[nodiscard]] RingControl* control() const noexcept { return control_; }
  // Whether try_recv() and try_view() may run (on by default): as
  // RingProducer::allow_fast() (Connection: this end may receive, is this
  // process's, not closed, nothing peeked).
  void allow_fast(bool on) noexcept {
    fast_allowed_ = on;
    update_fast_limit();
  }

  // The frame at the read position, or empty / corrupted. Skips pad
  // frames. A frame stays peeked until release().
  [[nodiscard, gnu::always_inline]] PeekResult peek(Frame& frame) noexcept {
    if (corrupted_) return PeekResult::corrupted;
    for (;;) {
      const std::uint64_t off = pos_ & mask_;
      // [ring.publish] acquire: pairs with the producer's release/seq_cst
      // store of this header; the payload (and, in a batch, later headers)
      // is visible after it.
      const std::uint64_t h = header_at(data_, off).load(std::memory_order_acquire);
      if (h == 0 || h == kHeaderWaiting) {
        publish_read();  // the producer may be waiting for this room
        return PeekResult::empty;
      }
      const std::uint64_t len = h & kFrameLengthMask;
      if ((h & kFrameValid) == 0 || (h & ~std::uint64_t{0xFFFFFFFF}) != frame_tag(pos_)) {
        return fail();
      }
      if ((h & kFramePad) != 0) {
        // A pad runs to the next line or to the ring end, in 8-byte steps.
        if (len < kFrameHeaderSize || (len & 7) != 0 || off + len > capacity_ ||
            ((off + len) & (kCacheLine - 1)) != 0 || (len > kCacheLine && off + len != capacity_) ||
            (h & (kFrameFragment | kFrameLast)) != 0) {
          return fail();
        }
        pos_ += len;
        continue;
      }
      const std::uint64_t fs = frame_size(len);
      if (len > max_frame_payload(capacity_) || off + fs > capacity_ ||
          ((h & kFrameLast) != 0 && (h & kFrameFragment) == 0)) {
        return fail();
      }
      frame.data = data_ + off + kFrameHeaderSize;
      frame.length = static_cast<std::uint32_t>(len);
      frame.fragment = (h & kFrameFragment) != 0;
      frame.last = (h & kFrameLast) != 0;
      peeked_ = fs;
      peeked_len_ = len;
      return PeekResult::ok;
    }
  }

  // For the wait loop: true when a header is at the read position (or the
  // ring is corrupted).
  [[nodiscard]] bool has_data() const noexcept {
    if (corrupted_) return true;
    // [ring.publish] seq_cst: pairs with the producer's header exchange.
    const std::uint64_t h = header_at(data_, pos_ & mask_).load(std::memory_order_seq_cst);
    return h != 0 && h != kHeaderWaiting;
  }

  // [ring.sleep], for a consumer about to sleep: marks the empty header
  // word at the read position kHeaderWaiting. False when a frame (or
  // anything else) is there: do not sleep, peek().
  [[nodiscard]] bool arm_sleep() noexcept {
    if (!mark_asleep()) return false;
    if (needs_fence()) order_sleep(asymmetric_heavy_fence());
    return true;
  }
  // arm_sleep() in two steps, for a wait over several rings that pays one
  // heavy fence for all of them: mark_asleep() on each; then, if any
  // needs_fence(), one asymmetric_heavy_fence() and order_sleep(its
  // result) on those that needed it.
  // `slot`: the wake slot producers are to wake instead of the header
  // word ([ring.redirect], shmbus::wait()); 0 (recv()): the word itself.
  [[nodiscard]] bool mark_asleep(std::uint32_t slot = 0) noexcept {
    if (corrupted_) return false;
    auto& h = header_at(data_, pos_ & mask_);
    const std::uint32_t token = sleep_token(pos_);
    // [ring.redirect] relaxed: published by the seq_cst RMWs below (the
    // token exchange, the mark), which a producer reads before this field.
    control_->wake_slot.store(slot, std::memory_order_relaxed);
    // [ring.sleep] seq_cst: the cold side's store of [fence.asym], before
    // the mark and the heavy fence. It returns whether our token still
    // stands from an earlier arm at this word (nobody took it).
    token_stood_ = control_->consumer_asleep.exchange(token, std::memory_order_seq_cst) == token;
    std::uint64_t w = 0;
    // [ring.sleep] seq_cst: pairs with an exchanging producer's publication
    // (one of the two reads the other's value) and orders the caller's
    // later seq_cst check of the peer's close after the mark.
    bool fresh = h.compare_exchange_strong(w, kHeaderWaiting, std::memory_order_seq_cst,
                                           std::memory_order_acquire);
    // [ring.redirect] Marked already (an earlier arm, ours or a dead
    // consumer's): mark it again with an RMW, so that a producer's RMW that
    // reads the mark reads ours and sees the wake_slot stored above.
    if (!fresh && w == kHeaderWaiting)
      fresh = h.compare_exchange_strong(w, kHeaderWaiting, std::memory_order_seq_cst,
                                        std::memory_order_acquire);
    if (!fresh && w != kHeaderWaiting) {
      control_->consumer_asleep.store(0, std::memory_order_relaxed);  // relaxed: not asleep
      return false;
    }
    return true;
  }
  // [ring.sleep] A checked producer stores headers without a fence: a heavy
  // fence after our mark orders its store before its check of
  // consumer_asleep against our token, so either its check sees our token
  // or futex_wait's own read of the word sees its frame. Without the fence
  // (no membarrier here) sleep() falls back to short naps. Re-arming while
  // our token still stands (a slice ended, nothing came) needs no new
  // fence: the producer takes a token only after writing over its word, so
  // the last fence still orders it. So an idle receiver sends one
  // membarrier per wait, not one per slice. (A token left by another
  // consumer of this ring, or one whose fence failed, does not count:
  // fenced_ starts false.)
  [[nodiscard]] bool needs_fence() noexcept {
    if (token_stood_ && fenced_) return false;
    // [ring.sleep] seq_cst: pairs with the producer's exchange in
    // RingProducer::announce(); a producer that does not check (blocking:
    // it publishes with an exchange) needs no fence.
    if (control_->producer_checks.load(std::memory_order_seq_cst) == 0) {
      fenced_ = true;
      return false;
    }
    return true;
  }
  void order_sleep(bool heavy_fence_done) noexcept { fenced_ = heavy_fence_done; }
  // Sleeps while the armed word still reads kHeaderWaiting, until woken or
  // `deadline`; spurious returns are possible.
  FutexResult sleep(const Clock::time_point* deadline) const noexcept {
    Clock::time_point nap{};
    if (!fenced_) {  // a wake-up may be missed: never sleep long
      nap = Clock::now() + kUnfencedNap;
      if (deadline == nullptr || nap < *deadline) deadline = &nap;
    }
    return futex_wait(header_at(data_, pos_ & mask_), static_cast<std::uint32_t>(kHeaderWaiting),
                      deadline);
  }
  // For a wait over several rings (shmbus::wait): the word an armed
  // consumer sleeps on (its low half reads kHeaderWaiting while nothing
  // came), and whether the arm ordered a checked producer (if not, sleep
  // only in naps of kUnfencedNap).
  [[nodiscard]] const std::atomic<std::uint64_t>& sleep_word() const noexcept {
    return header_at(data_, pos_ & mask_);
  }
  [[nodiscard]] bool fenced() const noexcept { return fenced_; }
  // Takes the mark back when the consumer stops waiting (woken by a frame,
  // or by a timeout, the close or a dead peer without one), so the
  // producer's next commit makes no futex_wake for nobody. A frame
  // published meanwhile stays.
  void disarm_sleep() noexcept {
    if (corrupted_) return;
    // relaxed: our own flag; a checked producer at worst wakes nobody once.
    control_->consumer_asleep.store(0, std::memory_order_relaxed);
    auto& h = header_at(data_, pos_ & mask_);
    std::uint64_t w = kHeaderWaiting;
    // relaxed: only the mark itself is at stake; the producer's exchange
    // either precedes this (the CAS fails) or finds 0 (no wake).
    if (h.load(std::memory_order_relaxed) == w)
      (void)h.compare_exchange_strong(w, 0, std::memory_order_relaxed, std::memory_order_relaxed);
  }

  // Frees the peeked frame. `count_message` counts it in the statistics
  // (the last fragment of a message, or a whole message).
  // Without a peeked frame (already released) it does nothing.
  // Call it only after peek() or try_view(), before any other receive
  // (try_recv() leaves peeked_ as it was).
  [[gnu::always_inline]] void release(bool count_message = true) noexcept {
    if (peeked_ == 0) return;  // a peeked frame is at least its header
    pos_ += peeked_;
    counts_.count(peeked_len_, count_message ? 1 : 0);
    peeked_ = 0;
    peeked_len_ = 0;
    if (pos_ >= fast_limit_) passed_fast_limit();
  }

  // A frame's contents failed the caller's validation (e.g. a fragment
  // sequence that does not add up): the ring is unusable from now on.
  void mark_corrupted() noexcept {
    corrupted_ = true;
    fast_limit_ = 0;
  }

  // Whether publish_read() updates the message/byte counters.
  void set_statistics(bool on) noexcept { stats_ = on; }

  // Publishes the read position (and statistics) now.
  void publish_read() noexcept {
    if (pos_ == published_) return;
    published_ = pos_;
    publish_at_ = pos_ + capacity_ / 4;
    update_fast_limit();
    // [ring.stats] relaxed: single-writer counters for inspection only.
    counts_.add();
    if (stats_) {
      control_->consumer.messages_received.store(counts_.messages, std::memory_order_relaxed);
      control_->consumer.bytes_received.store(counts_.bytes, std::memory_order_relaxed);
    }
    if (notify_) {
      // [ring.consume] seq_cst: pairs with the producer's acquire in
      // refresh_read() and its seq_cst load in has_room(); seq_cst for
      // [wait.sleepers] before notify().
      control_->consumer.read_pos.store(pos_, std::memory_order_seq_cst);
      notify(control_->space, 1);
    } else {
      // [ring.consume] release: every read of the freed frames happens
      // before the producer's acquire load sees this position.
      control_->consumer.read_pos.store(pos_, std::memory_order_release);
    }
  }

 private:
  PeekResult fail() noexcept {
    mark_corrupted();
    return PeekResult::corrupted;
  }

  // try_recv() and try_view() take a frame only when it ends before
  // fast_limit_: the publish_read() point (a quarter ring past the last
  // publication, so such a frame is shorter than the largest frame
  // payload), and the end of the lap pos_ is in (so it lies inside the
  // ring); 0 when the ring is corrupted or the owner turned the fast paths
  // off (allow_fast()). A frame that reaches it goes through peek() and
  // release(), which publishes and moves the limit on.
  void update_fast_limit() noexcept {
    const std::uint64_t lap_end = (pos_ | mask_) + 1;
    fast_limit_ =
        corrupted_ || !fast_allowed_ ? 0 : (publish_at_ < lap_end ? publish_at_ : lap_end);
  }
  // release() reached fast_limit_: the publication point, or a new lap.
  [[gnu::noinline]] void passed_fast_limit() noexcept {
    if (pos_ >= publish_at_) publish_read();
    update_fast_limit();
  }

  RingControl* control_ = nullptr;
  std::byte* data_ = g_no_ring;  // see g_no_ring
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  std::uint64_t pos_ = 0;
  std::uint64_t published_ = 0;
  std::uint64_t publish_at_ = 0;  // published_ + a quarter ring: publish_read() there
  std::uint64_t fast_limit_ = 0;  // see update_fast_limit()
  RingCounts counts_;             // [ring.stats] messages and bytes received
  std::uint64_t peeked_ = 0;
  std::uint64_t peeked_len_ = 0;
  bool notify_ = false;
  bool corrupted_ = false;
  bool fenced_ = false;       // an arm_sleep() of ours ordered a checked producer
  bool token_stood_ = false;  // the last mark_asleep() found our token standing
  bool stats_ = true;         // update the [ring.stats] counters
  bool fast_allowed_ = true;  // allow_fast()
};

}  // namespace shmbus::detail
