// detail::QueueCore — the untyped engine under Queue<T>, BytesQueue,
// SimpleQueue<T> and JoinableQueue<T>: a bounded lock-free MPMC ring of
// fixed-size slots in one shmbus segment, with futex blocking and repair
// of slots left half-done by a killed participant.
//
// Algorithm: Dmitry Vyukov's bounded MPMC queue (per-slot sequence
// numbers), changed in one way: the claim of a slot is a CAS on the slot's
// own 64-bit control word, which carries the position (lap), the state and
// the index of the claiming participant's record, instead of a CAS on the
// shared head/tail counter. enqueue_pos / dequeue_pos become hints that any
// process advances ("helping") once it sees the slot at that position
// claimed. So a claim and the identity of its claimer appear in shared
// memory in one atomic step: there is no instant at which a slot is taken
// but nobody knows by whom.
//
// Slot control word (64 bits):
//   bits 0..2   state   EMPTY, WRITING, FULL, READING, SKIP
//   bits 3..14  record  index of the claimer's participant record
//   bits 15..63 pos     the position (mod 2^49) this lap of the slot is for
// A slot for position p goes EMPTY(p) -> WRITING(p,r) -> FULL(p,r) ->
// READING(p,r') -> EMPTY(p+capacity); a dead producer's WRITING(p,r) is
// turned into SKIP(p,r), which consumers step over (EMPTY(p+capacity)).
//
// Participant records (one 64-byte line each, one per process+thread that
// uses the queue, claimed with a CAS of ProcessId::pack() into `owner`):
// each record holds the record owner's counters and in-flight stage, all
// written only by the owner (or by the one process that took over a dead
// owner's record by CAS to recover it). The counters and the stage share
// one 64-bit word per direction, so "count it and leave the stage" is a
// single store:
//   put_word = committed(40) | dropped(22) | stage(2)
//   get_word = delivered(40) | lost(22)    | stage(2)
// A put stores put_pos and stage CLAIMING before its claim CAS, stage
// ACTIVE before it publishes FULL, and (committed+1, IDLE) after. Recovery
// of a dead owner reads stage and the slot at put_pos: a slot still
// WRITING by this record means the message never got published (dropped,
// and the slot becomes SKIP); otherwise stage ACTIVE means it was published
// (committed+1) and CLAIMING means the claim never happened. Gets mirror
// this with READING; a consumer that died holding a slot has its message
// counted `lost` (not redelivered: it may have been processed), unless it
// was a held get (get_held, the bridge's): then the message goes back
// FULL at its position and dequeue_pos is moved back to it
// ([queue.giveback]), nothing counted; a consumer that stepped past the
// READING slot meanwhile re-reads it after its move of dequeue_pos and
// moves dequeue_pos back itself if the message came back, so no given-back
// message is left behind the read position. A put tagged with a caller's word
// (put_tagged) has its outcome written into the record's tag by the
// recovery (published: LANDED, else DROPPED).
//
// Wake-ups (label [queue.token]): each of the two wait channels (not_empty:
// consumers sleep; not_full: producers sleep) has a wake token next to it,
// so that a burst of publications while a sleeper is being woken costs one
// futex_wake, not one per publication (a woken process can take
// milliseconds to run on a busy host, and until it runs it is still counted
// asleep). Token word: 0 free, bit 0 HELD (a wake is on its way), bit 1
// MISSED (a publication skipped its own wake because of it).
//   notifier (after its seq_cst publication, when a sleeper is counted):
//     wins the token (CAS 0 -> HELD): bumps seq and wakes one; if that
//       woke a process, the token goes with the wake (the woken sleeper
//       releases it); if it woke nobody, it releases the token itself with
//       a CAS HELD -> 0, and if that finds MISSED it takes the token back
//       (-> HELD) and wakes again;
//     finds the token held: sets MISSED (CAS) unless set, no system call.
//   sleeper: on every return from futex_wait (woken, value changed, timed
//     out, signal) releases the token (exchange -> 0), then re-examines the
//     queue (its seq_cst predicate, then a try_ get); a get (put) call that
//     waited and then took an item (slot) passes the wake on: if the head
//     may hold another committed item (free slot), it notifies as above.
// Why no wake is lost: a notifier N that skips its wake did a seq_cst RMW
// or load of the token that read HELD, so the next write of 0 or HELD
// (a release, or a takeover that wakes again) comes after it in the token's
// modification order, hence after N's publication in the seq_cst total
// order. That writer then either wakes again (a notifier, seeing MISSED or
// taking a free token: its seq bump follows N's publication, so no sleeper
// can sleep on a seq value read before N's publication), or is a sleeper
// whose later seq_cst loads see N's publication: it takes N's item (or
// finds it taken by a consumer that was awake) and, having waited, passes
// a wake on while items remain. (If its predicate is still false, the
// head is unchanged and not consumable, EMPTY or WRITING: N's item lies
// behind a claim whose own publication will notify.) So every skipped
// publication is covered by a process that looks at the queue after it.
// The token is only ever a way to skip work: releasing it too early (a
// sleeper that timed out while another's wake was in flight) costs at most
// an extra wake. A woken
// process killed before releasing leaves the token HELD; every sleeper
// wakes at its liveness slice and releases it, so wakes resume within one
// slice. Heap queues wake every producer on not_full (different
// predicates share the channel) and never take that token.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/fd_bridge.hpp"
#include "shmbus/detail/fork_wiped.hpp"
#include "shmbus/detail/futex.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/type_tag.hpp"
#include "shmbus/object_kind.hpp"
#include "shmbus/queue_types.hpp"
#include "shmbus/wait.hpp"

namespace shmbus::detail {

inline constexpr std::uint64_t kQueueMagic = 0x3151554555514253ULL;  // "SBQUEUQ1"
inline constexpr std::uint32_t kQueueMaxRecords = 4096;              // 12 bits

enum class SlotState : std::uint64_t { empty = 0, writing = 1, full = 2, reading = 3, skip = 4 };
enum class Stage : std::uint64_t { idle = 0, claiming = 1, active = 2 };

inline constexpr unsigned kPosShift = 15;
inline constexpr std::uint64_t kPosMask = (std::uint64_t{1} << 49) - 1;

constexpr std::uint64_t slot_word(std::uint64_t pos, std::uint32_t rec, SlotState s) noexcept {
  return ((pos & kPosMask) << kPosShift) | (std::uint64_t{rec & 0xfffu} << 3) |
         static_cast<std::uint64_t>(s);
}
constexpr SlotState slot_state(std::uint64_t w) noexcept { return SlotState(w & 7u); }
constexpr std::uint32_t slot_rec(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>((w >> 3) & 0xfffu);
}
// Signed distance (slot's position - pos), modulo 2^49.
constexpr std::int64_t slot_diff(std::uint64_t w, std::uint64_t pos) noexcept {
  const std::uint64_t d = ((w >> kPosShift) - pos) & kPosMask;
  return static_cast<std::int64_t>(d << kPosShift) >> kPosShift;
}

// Counter word of one direction of a participant record.
constexpr std::uint64_t count_word(std::uint64_t main, std::uint64_t aux, Stage st) noexcept {
  return (main << 24) | ((aux & 0x3fffffu) << 2) | static_cast<std::uint64_t>(st);
}
constexpr std::uint64_t word_main(std::uint64_t w) noexcept { return w >> 24; }
constexpr std::uint64_t word_aux(std::uint64_t w) noexcept { return (w >> 2) & 0x3fffffu; }
constexpr Stage word_stage(std::uint64_t w) noexcept { return Stage(w & 3u); }

// One participant (process + thread), format v1.
//   0  owner     ProcessId::pack() of the owner; 0 = free
//   8  put_pos   position of the current/last put       (owner-written)
//   16 put_word  committed | dropped | stage            (owner-written)
//   24 get_pos   position of the current/last get       (owner-written)
//   32 get_word  delivered | lost | stage               (owner-written)
//   40 tid       owner thread id (informative; lets a handle find the
//                record its thread holds after a thread-cache miss)
//   48 hold      0, or 1: this record's gets are held gets (get_held): the
//                recovery of a dead owner gives a message it claimed and
//                did not release back to the queue (FULL again at its
//                position) instead of counting it lost (owner-written)
//   56 tag       the caller's word of the owner's last tagged put
//                (put_tagged) << 2 | its outcome (TagState): written by
//                the owner, and by the one recoverer of a dead owner,
//                which decides PENDING into LANDED or DROPPED. Kept when
//                the record passes to another owner (normal puts never
//                touch it), so a restarted caller can look its word up.
// A record of format v1 without the last two (zero) is a normal record.
struct alignas(64) QueueRecord {
  std::atomic<std::uint64_t> owner;
  std::atomic<std::uint64_t> put_pos;
  std::atomic<std::uint64_t> put_word;
  std::atomic<std::uint64_t> get_pos;
  std::atomic<std::uint64_t> get_word;
  std::atomic<std::uint64_t> tid;
  std::atomic<std::uint64_t> hold;
  std::atomic<std::uint64_t> tag;
};
enum class TagState : std::uint64_t { none = 0, pending = 1, landed = 2, dropped = 3 };
static_assert(sizeof(QueueRecord) == 64);

// Queue control block, format v1, at the start of the payload. Slots
// follow the records. Offsets only.
//
//   0    geometry (set once before ready, validated by every opener)
//   64   enqueue_pos                      (CAS by any producer: a hint)
//   128  dequeue_pos                      (CAS by any consumer: a hint)
//   192  not_empty WaitChannel, then its wake token  (consumers sleep here)
//   256  not_full WaitChannel, then its wake token   (producers sleep here)
//   320  closed, peer_deaths, interrupted (atomic, rarely written)
//   384  tasks_done, join WaitChannel     (JoinableQueue)
//   448  heap geometry                    (set once before ready)
//   512  records[max_records], then slots[capacity] of slot_stride bytes,
//        then heap block words and heap block data
//
// Slot, slot_stride bytes: control word (8), length (4), flags (4),
// payload (slot_payload bytes). flags bit 0: the payload is a HeapRef and
// the message lives in a heap block.
//
// Heap block word (64 bits): gen(32) | state(2) << 12 | record(12).
//   FREE(gen) -> ALLOC(gen, r): claimed by producer record r (CAS)
//   ALLOC(gen, r) -> QUEUED(gen): written and referenced by a slot, before
//                    the slot is published (owner store)
//   QUEUED(gen) -> FREE(gen+1): by the consumer after copying, or by the
//                    recovery of a dropped/lost slot that references it (CAS)
//   ALLOC(gen, r) -> FREE(gen+1): by the recovery of dead record r (CAS)
// The generation in the slot's HeapRef makes every free a CAS on the exact
// block generation, so a stale or torn reference frees nothing.
struct QueueControl {
  std::uint64_t magic;
  std::uint64_t capacity;      // slots, a power of two
  std::uint64_t slot_stride;   // bytes per slot, multiple of 64
  std::uint64_t slot_payload;  // payload bytes per slot
  std::uint64_t max_records;
  std::uint64_t records_offset;  // from payload start
  std::uint64_t slots_offset;    // from payload start
  std::uint64_t flags;           // bit 0: joinable
  alignas(64) std::atomic<std::uint64_t> enqueue_pos;
  alignas(64) std::atomic<std::uint64_t> dequeue_pos;
  alignas(64) WaitChannel not_empty;
  std::atomic<std::uint32_t> not_empty_waking;  // [queue.token] of not_empty (any process)
  alignas(64) WaitChannel not_full;
  std::atomic<std::uint32_t> not_full_waking;  // [queue.token] of not_full (any process)
  alignas(64) std::atomic<std::uint32_t> closed;
  std::atomic<std::uint64_t> peer_deaths;  // dead records recovered
  std::atomic<std::uint64_t> interrupted;  // ... of those, found mid-put/get
  alignas(64) std::atomic<std::uint64_t> tasks_done;
  WaitChannel join;
  // Shared heap for messages above the slot size (BytesQueue), set once
  // before ready: heap_blocks words (HeapBlock state) at heap_offset, then
  // the blocks' bytes at heap_data_offset, heap_block_size bytes each.
  alignas(64) std::uint64_t heap_blocks;
  std::uint64_t heap_block_size;  // largest heap message; multiple of 64
  std::uint64_t heap_offset;
  std::uint64_t heap_data_offset;
};
static_assert(offsetof(QueueControl, enqueue_pos) == 64);
static_assert(offsetof(QueueControl, dequeue_pos) == 128);
static_assert(offsetof(QueueControl, not_empty) == 192);
static_assert(offsetof(QueueControl, not_empty_waking) == 200);
static_assert(offsetof(QueueControl, not_full) == 256);
static_assert(offsetof(QueueControl, not_full_waking) == 264);
static_assert(offsetof(QueueControl, closed) == 320);
static_assert(offsetof(QueueControl, tasks_done) == 384);
static_assert(offsetof(QueueControl, heap_blocks) == 448);
static_assert(sizeof(QueueControl) == 512);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

struct SlotHeader {
  std::atomic<std::uint64_t> word;
  std::uint32_t length;  // written by the producer before FULL; untrusted on read
  std::uint32_t flags;   // likewise; bit 0: payload is a HeapRef
};
struct HeapRef {
  std::uint32_t block;
  std::uint32_t gen;
};
enum class HeapState : std::uint64_t { free = 0, alloc = 1, queued = 2 };
constexpr std::uint64_t heap_word(std::uint32_t gen, HeapState st, std::uint32_t rec) noexcept {
  return (std::uint64_t{gen} << 32) | (static_cast<std::uint64_t>(st) << 12) | (rec & 0xfffu);
}
constexpr std::uint32_t heap_gen(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>(w >> 32);
}
constexpr HeapState heap_state(std::uint64_t w) noexcept { return HeapState((w >> 12) & 3u); }
constexpr std::uint32_t heap_rec(std::uint64_t w) noexcept {
  return static_cast<std::uint32_t>(w & 0xfffu);
}
static_assert(sizeof(SlotHeader) == 16);

class QueueCore {
 public:
  QueueCore();
  QueueCore(QueueCore&&) noexcept;
  QueueCore& operator=(QueueCore&&) noexcept;
  QueueCore(const QueueCore&) = delete;
  QueueCore& operator=(const QueueCore&) = delete;
  ~QueueCore();

  // nullopt: an anonymous queue (detail::Segment::create_anonymous).
  // `variable_size`: messages of any length up to options.max_large_message
  // (a heap when that is above slot_payload), as for kBytesTag.
  static QueueCore create(SegmentName name, ObjectKind kind, TypeTag tag, std::size_t slot_payload,
                          const QueueOptions& options, bool variable_size = false);
  static QueueCore open(std::string_view name, ObjectKind kind, TypeTag tag,
                        const QueueOptions& options);

  [[nodiscard]] QueueResult put(std::span<const std::byte> msg, const Clock::time_point* deadline,
                                bool block) noexcept;
  // On ok, `length` is the message size (<= out.size()).
  [[nodiscard]] QueueResult get(std::span<std::byte> out, std::size_t& length,
                                const Clock::time_point* deadline, bool block) noexcept;

  // ---- for the bridge (bridge/src/forwarder.cpp), its only user ----------
  // A non-blocking get whose message, if this process dies between the
  // claim and the release, goes back to the queue at its position instead
  // of being counted lost (QueueRecord::hold). `length` and then `position`
  // (the message's queue position) are stored after the copy and before
  // the release, so a caller that keeps `out`, `length` and `position` in
  // shared memory knows after a crash: position unchanged (the caller's
  // initial value) -> not released; else, if holds_position(position)
  // after recover_dead(), the message is back in the queue; else it left
  // the queue and `out` holds it.
  [[nodiscard]] QueueResult get_held(std::span<std::byte> out, std::size_t& length,
                                     std::uint64_t& position) noexcept;
  // Whether the slot of `position` is still at that position (its message
  // not yet released by a get).
  [[nodiscard]] bool holds_position(std::uint64_t position) const noexcept;
  // A non-blocking put that leaves `tag` (62 bits) and its outcome in the
  // caller's record (QueueRecord::tag), decided by the caller or by the
  // recovery of the caller's record if it dies inside the put.
  [[nodiscard]] QueueResult put_tagged(std::span<const std::byte> msg, std::uint64_t tag) noexcept;
  // The outcome of the put tagged `tag` by a process that died: none when
  // no record holds the tag (any more), else landed/dropped. Call after
  // recover_dead() (a record still pending is reported as none).
  [[nodiscard]] TagState tagged_outcome(std::uint64_t tag) const noexcept;

  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept;
  // Removes this process from the segment's attachment table (it keeps its
  // mapping): a shared Listener leaving while others listen.
  void detach() noexcept {
    if (segment_) segment_->detach();
  }
  // Segment::unlink_own_name(): a closing Listener removes its backlog's
  // name, never a backlog another server made under it since.
  bool unlink_own_name() const { return segment_ && segment_->unlink_own_name(); }
  [[nodiscard]] std::size_t qsize() const noexcept;
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::size_t slot_payload() const noexcept { return slot_payload_; }
  // Largest message: the heap block size when the queue has a heap.
  [[nodiscard]] std::size_t max_message() const noexcept {
    return heap_blocks_ != 0 ? heap_block_size_ : slot_payload_;
  }
  [[nodiscard]] QueueStats stats() const noexcept;
  std::size_t recover_dead() noexcept;

  QueueResult task_done() noexcept;
  bool join_until(const Clock::time_point* deadline) noexcept;

  [[nodiscard]] const std::string& name() const noexcept { return segment_->name(); }
  [[nodiscard]] const WaitPolicy& policy() const noexcept { return policy_; }

  // For shmbus::wait over many objects (wait_any.cpp). `for_put` picks the
  // producers' side. ready(): a get (put) would not wait now: the head slot
  // holds an item (is free), or the queue is closed or a default handle
  // (seq_cst loads: a predicate in [wait.sleepers]'s sense). The channel a
  // waiter counts itself in and the [queue.token] it releases on every
  // return from its sleep. repair_head(): the head slot is held by a dead
  // participant: repair it as a stuck get (put) would; true if it did.
  [[nodiscard]] bool ready(bool for_put) const noexcept;
  [[nodiscard]] WaitChannel& wait_channel(bool for_put) const noexcept;
  [[nodiscard]] std::atomic<std::uint32_t>& wake_token(bool for_put) const noexcept;
  bool repair_head(bool for_put) noexcept;
  // The descriptor of fileno() (see QueueHandle::fileno()).
  int fileno();

 private:
  // What a wait compares against: the head's position and slot word, and
  // the closed word as the try_ call saw them. A change of any of them
  // ends the wait; an unchanged closed word does not (a closed queue whose
  // head is held by a dead producer still waits for the repair).
  struct Probe {
    std::uint64_t pos = 0;
    std::uint64_t word = 0;
    std::uint32_t closed = 0;
  };
  // What check_stuck() found at a head that did not move for a slice.
  enum class Stuck : std::uint8_t { waiting, repaired, garbage };
  // Tagged: put_tagged()'s (the record's tag LANDED once published).
  template <bool Tagged = false>
  QueueResult try_put_once(std::span<const std::byte> msg, std::uint32_t flags,
                           std::uint32_t length, std::uint32_t rec, Probe& probe) noexcept;
  QueueResult put_large(std::span<const std::byte> msg, const Clock::time_point* deadline,
                        bool block, std::uint32_t rec, bool tagged = false) noexcept;
  void free_heap_ref(const SlotHeader& sl) noexcept;
  // The slot's message is in the slot, or in a heap block still queued for it.
  [[nodiscard]] bool heap_ref_intact(const SlotHeader& sl) const noexcept;
  void notify_not_full() noexcept;
  [[nodiscard]] std::atomic<std::uint64_t>& heap_word_at(std::uint32_t i) const noexcept {
    return heap_words_[i];
  }
  // Held: get_held()'s (stores the position into *position before the
  // release).
  template <bool Held = false>
  QueueResult try_get_once(std::span<std::byte> out, std::size_t& length, std::uint32_t rec,
                           Probe& probe, std::uint64_t* position = nullptr) noexcept;
  // Adaptive policy: spins until spin_end (see spin_end_from_now()).
  bool wait_for_change(WaitChannel& ch, std::atomic<std::uint32_t>& token,
                       const std::atomic<std::uint64_t>& head, const Probe& probe,
                       const Clock::time_point* deadline, Clock::time_point spin_end) noexcept;
  [[nodiscard]] Clock::time_point spin_end_from_now() const noexcept {
    return policy_.strategy == WaitStrategy::adaptive ? Clock::now() + policy_.spin
                                                      : Clock::time_point{};
  }
  void notify_not_empty() noexcept;
  void pass_on_not_empty() noexcept;
  void pass_on_not_full() noexcept;
  Stuck check_stuck(const Probe& probe) noexcept;
  // After a wait: timed_out at the deadline, corrupted for a head no
  // participant can ever release, else nullopt (try again).
  std::optional<QueueResult> after_wait(bool changed, const Probe& probe,
                                        const Clock::time_point* deadline) noexcept;
  bool recover_record(std::uint32_t rec, std::uint64_t dead_owner, bool keep) noexcept;
  // The calling thread's participant record: rec_cache_ when it names this
  // thread, else my_record_slow() (the thread cache, then a new record).
  std::uint32_t my_record() noexcept;
  std::uint32_t my_record_slow() noexcept;
  std::uint32_t acquire_record() noexcept;
  // A put/get that found the queue full/empty and may wait: the loop of
  // waits and retries, out of the fast path.
  QueueResult put_wait(std::span<const std::byte> msg, const Clock::time_point* deadline,
                       std::uint32_t rec, Probe probe) noexcept;
  QueueResult get_wait(std::span<std::byte> out, std::size_t& length,
                       const Clock::time_point* deadline, std::uint32_t rec, Probe probe) noexcept;
  void bind(Segment segment, const QueueOptions& options);

  [[nodiscard]] SlotHeader& slot(std::uint64_t pos) const noexcept {
    return *reinterpret_cast<SlotHeader*>(slots_ + (pos & (capacity_ - 1)) * slot_stride_);
  }
  [[nodiscard]] QueueRecord& record(std::uint32_t i) const noexcept { return records_[i]; }

  // optional: Segment's inline default constructor needs its (incomplete)
  // Mapping type, so a default-constructed QueueCore holds none.
  std::optional<Segment> segment_;
  QueueControl* ctl_ = nullptr;
  QueueRecord* records_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t slot_stride_ = 0;
  std::uint64_t slot_payload_ = 0;
  std::uint32_t max_records_ = 0;
  std::uint32_t heap_blocks_ = 0;
  std::uint64_t heap_block_size_ = 0;
  bool joinable_ = false;
  std::atomic<std::uint64_t>* heap_words_ = nullptr;
  std::byte* heap_data_ = nullptr;
  WaitPolicy policy_{};
  std::chrono::milliseconds liveness_{10};
  pid_t attached_pid_ = 0;
  std::uint64_t handle_id_ = 0;  // never reused in this process: keys the thread cache
  // The record of the thread that called last: its thread key (see
  // queue.cpp, t_thread_key) << 12 | record. Process-local, read and
  // written by any thread of this process with relaxed atomic_ref
  // accesses; a word that names a thread names its own record (one word,
  // never torn). 0 (no key is 0) until a first call, and in any forked
  // child, _Fork() and clone() included: the word is wiped on fork
  // (detail/fork_wiped.hpp), so a child never takes its parent's record.
  ForkWipedWord rec_cache_;
  struct Held;                           // records this handle acquired in this process
  std::unique_ptr<Held> held_;           // (process-local; a forked child starts afresh)
  std::unique_ptr<FdBridge> fd_bridge_;  // fileno(); null until asked for
  void rearm_fileno() noexcept;
};

// Reads a queue's live statistics from a read-only mapping; throws
// Error(corrupted/wrong_kind) if the payload is not a valid queue.
QueueStats read_queue_stats_payload(std::span<const std::byte> payload, const std::string& name);

}  // namespace shmbus::detail
