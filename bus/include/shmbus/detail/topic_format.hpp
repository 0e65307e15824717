// detail::TopicControl — the shared-memory format of a Topic segment.
//
// One publisher writes messages into a ring of fixed-size slots; any number
// of subscribers read them, each at its own position. Message s (counting
// from 0 since the topic was made) lives in slot s % slots. Each slot
// starts with a sequence word (a seqlock, [topic.seqlock]):
//
//   0                 never written
//   done(s)    = 2s + 2   message s is complete
//   writing(s) = 2s + 3   message s is being written (its bytes may be torn)
//
// A subscriber at position r polls slot r % slots: done(r) means ready;
// anything below means "not yet" (an older lap, or r being written); a
// value above writing(r) means the publisher has lapped it. Small messages
// and their publication share the slot's first cache line.
//
// Subscriber records: one cache line each, claimed with a CAS of
// ProcessId::pack() on `owner` (0: free; a dead owner's record may be
// taken over). The publisher reads a reliable subscriber's published
// position only when its cached minimum says the ring is full; it never
// writes a subscriber's line except to evict a dead reliable one. Which
// records may be reliable is one bit each in the reliable set
// ([topic.reliable]), so that a full ring costs the publisher a record's
// line only for the reliable ones (none at all for lossy subscribers).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shmbus/detail/futex.hpp"

namespace shmbus::detail {

inline constexpr std::uint32_t kTopicFormat = 3;     // 2: [topic.wake]; 3: [topic.reliable]
inline constexpr std::size_t kTopicSlotHeader = 16;  // seq word + length word
inline constexpr std::uint32_t kTopicMaxSlots = std::uint32_t{1} << 24;
inline constexpr std::uint32_t kTopicMaxSubscribers = 1024;
inline constexpr std::uint64_t kTopicMaxMessage = std::uint64_t{1} << 24;

[[nodiscard]] constexpr std::uint64_t topic_done(std::uint64_t s) noexcept { return 2 * s + 2; }
[[nodiscard]] constexpr std::uint64_t topic_writing(std::uint64_t s) noexcept { return 2 * s + 3; }
// [topic.seqlock] the two fences (bus/src/topic.cpp says how they pair).
// ThreadSanitizer does not model standalone fences (GCC rejects them under
// -fsanitize=thread with -Wtsan); its builds copy the racing payload
// uninstrumented, so there is nothing for it to order, and a compiler
// barrier stands in. SHMBUS_TOPIC_TSAN: this translation unit is built
// with ThreadSanitizer (detected, so users' TSan builds need no define).
#if defined(__SANITIZE_THREAD__)
#define SHMBUS_TOPIC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHMBUS_TOPIC_TSAN 1
#endif
#endif
#ifndef SHMBUS_TOPIC_TSAN
#define SHMBUS_TOPIC_TSAN 0
#endif
#if SHMBUS_TOPIC_TSAN
#define SHMBUS_TOPIC_FENCE std::atomic_signal_fence
#else
#define SHMBUS_TOPIC_FENCE std::atomic_thread_fence
#endif
inline void topic_seqlock_release_fence() noexcept {
  SHMBUS_TOPIC_FENCE(std::memory_order_release);
}
inline void topic_seqlock_acquire_fence() noexcept {
  SHMBUS_TOPIC_FENCE(std::memory_order_acquire);
}

// Forks this process took part in, as parent or child (pthread_atfork,
// registered by Topic::create/open). A topic handle remembers the value
// at its last use here: a different one means a fork came since (see
// take_role() in bus/src/topic.cpp).
extern std::atomic<std::uint64_t> g_topic_fork_epoch;
[[nodiscard]] inline std::uint64_t topic_fork_epoch() noexcept {
  // relaxed: written only by this process's own fork handlers.
  return g_topic_fork_epoch.load(std::memory_order_relaxed);
}

// Bytes per slot: header plus max_message, rounded up to a cache line.
[[nodiscard]] constexpr std::uint64_t topic_slot_stride(std::uint64_t max_message) noexcept {
  return (kTopicSlotHeader + max_message + 63) & ~std::uint64_t{63};
}

// Set once before the segment is ready; read-only afterwards (each process
// copies and validates it once).
struct TopicConfig {
  std::uint32_t format;           // kTopicFormat
  std::uint32_t slots;            // a power of two, 2 .. kTopicMaxSlots
  std::uint64_t max_message;      // bytes, 1 .. kTopicMaxMessage
  std::uint64_t slot_stride;      // topic_slot_stride(max_message)
  std::uint32_t history;          // most messages a late joiner may ask for, <= slots
  std::uint32_t max_subscribers;  // records in the table, 1 .. kTopicMaxSubscribers
  std::uint32_t strategy;         // WaitStrategy of the topic
  std::uint32_t reserved;
  std::uint64_t spin_ns;  // adaptive spin budget
};

// The publisher's line: written only by the process that holds `owner`.
struct alignas(64) TopicPublisherLine {
  std::atomic<std::uint64_t> owner;      // ProcessId::pack(), 0: none   [topic.owner]
  std::atomic<std::uint64_t> write_seq;  // next message number           [topic.join]
  std::atomic<std::uint32_t> closed;     // 1: the publisher closed       [topic.closed]
  std::atomic<std::uint32_t> takeovers;  // publishers that replaced a dead one
  std::atomic<std::uint64_t> evictions;  // dead reliable subscribers evicted
  std::atomic<std::uint64_t> blocked;    // publishes that waited for a reliable subscriber
};

// Wake-up words: `data` for subscribers waiting for a message (all share
// it: one FUTEX_WAKE wakes every one), `space` for a publisher waiting for
// a reliable subscriber ([wait.sleepers]). Written only around sleeps.
//
// [topic.wake] `data` is one 64-bit word: its low half (its first four
// bytes) the wake generation, the futex word every sleeping subscriber
// waits on; its high half the count of subscribers about to sleep on the
// current generation. A subscriber joins (a CAS adding one to the count,
// the generation unchanged), re-checks for a message, and sleeps on the
// generation it joined; one that found a message after all leaves again
// (a CAS taking its one back, only while the generation is still the one
// it joined). After each publication the publisher loads the word and
// only when the count is not zero exchanges it for the next generation
// with count 0 and makes one FUTEX_WAKE for all. So: no system call and
// no shared write when nobody sleeps; a subscriber that looked and found
// data costs the publisher nothing; any number of subscribers asleep at
// once cost one call; a woken subscriber that has not run yet is not
// counted again (its generation is over); and joining or leaving never
// changes the futex word under another sleeper.
inline constexpr std::uint64_t kTopicSleeper = std::uint64_t{1} << 32;  // one in the count
[[nodiscard]] constexpr std::uint32_t topic_generation(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>(w);
}
[[nodiscard]] constexpr std::uint32_t topic_sleepers(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>(w >> 32);
}
// [topic.room] `room_needed`: the position every reliable subscriber must
// reach before a publisher asleep on `space` can go on (a quarter of the
// ring free), stored by that publisher before it sleeps. A reliable
// subscriber that publishes its position while the publisher sleeps wakes
// it only when the slowest reliable record has reached it, so the
// publisher is woken once per quarter ring, by the last subscriber to get
// there, not by each subscriber's every step.
//
// [topic.ask] `room_asked`: 1 from the time a publisher held back by a
// reliable subscriber gives up (try_publish full, publish_for timed out)
// or has waited a liveness slice, until its next scan() finds room; set
// and cleared once per episode, not per try. A reliable subscriber reads
// it with each message it takes and, while it is set, hands back its
// position at once instead of at its next quarter ring, so that what it
// read is room for the publisher's next try. A hint (relaxed on both
// sides; any value but 0 reads as set, so a corrupted one costs a hand-back
// per message, nothing else): the data is ordered by [topic.consume].
// Streaming keeps the quarter-ring batching: short waits ask nothing.
// Added within format 3 (the word was zero in every format-3 segment): a
// subscriber built before it does not answer; a publisher built before it
// does not ask (an earlier build of this one counted in it instead, which
// reads as set until a publisher of this build takes the role and clears it).
struct alignas(64) TopicWakeLine {
  std::atomic<std::uint64_t> data;  // [topic.wake] sleepers << 32 | generation
  WaitChannel space;
  std::atomic<std::uint32_t> room_asked;   // [topic.ask] publisher-owned flag
  std::atomic<std::uint32_t> reserved;     // zero in format 3
  std::atomic<std::uint64_t> room_needed;  // [topic.room] written by a blocked publisher
};
static_assert(sizeof(TopicWakeLine) == 64);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

enum class TopicPolicy : std::uint32_t { free = 0, lossy = 1, reliable = 2 };

// [topic.reliable] One bit per subscriber record (bit i % 64 of word
// i / 64): set while record i may be reliable. Invariant: a record whose
// policy is reliable has its bit set. Only the record's owner changes its
// bit (and a publisher that evicts the record of a dead owner), always
// with the bit covering the policy: set before the policy becomes
// reliable, cleared after it stopped being so, and before the owner word
// is given back. A process killed in between leaves a bit set on a record
// whose owner is dead and whose policy may be anything, never a reliable
// record without its bit: the publisher scans too much until it frees
// that record (at its next liveness slice), never too little. One atomic
// RMW is both the mark and the count, so no crash can leave them apart.
inline constexpr std::uint32_t kTopicReliableWords = kTopicMaxSubscribers / 64;
struct alignas(64) TopicReliableSet {
  std::atomic<std::uint64_t> words[kTopicReliableWords];
};
static_assert(sizeof(TopicReliableSet) == 128);

// One subscriber's record, written by its owner only (and by a publisher
// that evicts it when dead, or an inspector never).
struct alignas(64) TopicSubscriberLine {
  std::atomic<std::uint64_t> owner;      // ProcessId::pack(), 0: free  [topic.sub]
  std::atomic<std::uint32_t> policy;     // TopicPolicy                  [topic.join]
  std::atomic<std::uint32_t> evicted;    // 1: evicted by the publisher [topic.evict]
  std::atomic<std::uint64_t> read_seq;   // published position           [topic.consume]
  std::atomic<std::uint64_t> received;   // [topic.stats] messages delivered
  std::atomic<std::uint64_t> lapped;     // [topic.stats] times it was lapped
  std::atomic<std::uint64_t> missed;     // [topic.stats] messages lost to laps
  std::atomic<std::uint64_t> joined_at;  // first message it was owed
};
static_assert(sizeof(TopicSubscriberLine) == 64);

// Topic control block, format 3, at the start of the payload.
//
//   0      config        (set once before ready)
//   64     publisher line
//   128    wake line
//   192    reliable set  (two lines: a bit per record)
//   320    subscriber records (max_subscribers x 64)
//   then   slots (slots x slot_stride), page aligned
struct TopicControl {
  alignas(64) TopicConfig config;
  TopicPublisherLine publisher;
  TopicWakeLine wake;
  TopicReliableSet reliable;  // [topic.reliable]
  // TopicSubscriberLine subscribers[max_subscribers] follows.
};
static_assert(std::is_standard_layout_v<TopicControl>);
static_assert(offsetof(TopicControl, publisher) == 64);
static_assert(offsetof(TopicControl, wake) == 128);
static_assert(offsetof(TopicControl, reliable) == 192);
static_assert(sizeof(TopicControl) == 320);

// The slot header (the seqlock word and the message length).
struct TopicSlot {
  std::atomic<std::uint64_t> seq;     // [topic.seqlock]
  std::atomic<std::uint64_t> length;  // payload bytes; written between writing() and done()
};
static_assert(sizeof(TopicSlot) == kTopicSlotHeader);

[[nodiscard]] constexpr std::uint64_t topic_slots_offset(std::uint32_t max_subscribers) noexcept {
  const std::uint64_t end = sizeof(TopicControl) + std::uint64_t{max_subscribers} * 64;
  return (end + 4095) & ~std::uint64_t{4095};
}
[[nodiscard]] constexpr std::uint64_t topic_payload_size(const TopicConfig& k) noexcept {
  return topic_slots_offset(k.max_subscribers) + std::uint64_t{k.slots} * k.slot_stride;
}

}  // namespace shmbus::detail
