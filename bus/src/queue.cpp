// The queue engine (detail::QueueCore) and BytesQueue/queue_stats. The
// algorithm, slot word and participant-record protocol are described in
// shmbus/detail/queue_core.hpp; the labels below pair the two sides of
// every ordering:
//   [queue.claim]    claim CAS of a slot (seq_cst): releases the owner's
//                    put_pos/get_pos and stage stores written before it, so
//                    a recoverer that sees the claim sees them too.
//   [queue.publish]  producer's FULL store (seq_cst): releases the payload;
//                    acquired by the consumer's slot-word load.
//   [queue.release]  consumer's EMPTY(next lap) store (seq_cst): releases
//                    the slot for reuse; acquired by the producer's load.
//   [queue.record]   owner's counter/stage stores; acquired by recovery and
//                    by statistics readers.
//   [queue.heap]     heap block word transitions: the producer's QUEUED
//                    store releases the block's bytes to the consumer's
//                    acquire; frees (acq_rel CAS) hand the block on.
//   [queue.token]    the wake tokens of not_empty/not_full (all seq_cst);
//                    the protocol and why it loses no wake-up are in
//                    queue_core.hpp.
//   [queue.giveback] a held get's dead claim given back: the recoverer's
//                    FULL store, then its seq_cst move of dequeue_pos back;
//                    a consumer's acquire load of dequeue_pos that reads
//                    the moved hint sees the FULL word (not the READING
//                    one, which it would step over). A consumer that steps
//                    past a READING slot does so with a seq_cst CAS and
//                    then re-reads the slot (pull_hint_back()), so one of
//                    the two always moves the hint back.
// The seq_cst publications are also the notifier side of [wait.sleepers].
#include "shmbus/queue.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "shmbus/detail/exit_actions.hpp"
#include "shmbus/error.hpp"
#include "shmbus/inspect.hpp"
#include "shmbus/process_id.hpp"

namespace shmbus {

std::string_view to_string(QueueResult r) noexcept {
  switch (r) {
    case QueueResult::ok:
      return "ok";
    case QueueResult::full:
      return "full";
    case QueueResult::empty:
      return "empty";
    case QueueResult::timed_out:
      return "timed_out";
    case QueueResult::closed:
      return "closed";
    case QueueResult::too_large:
      return "too_large";
    case QueueResult::buffer_too_small:
      return "buffer_too_small";
    case QueueResult::value_error:
      return "value_error";
    case QueueResult::no_record:
      return "no_record";
    case QueueResult::corrupted:
      return "corrupted";
    case QueueResult::decode_error:
      return "decode_error";
  }
  return "unknown";
}

namespace detail {
namespace {

constexpr std::uint32_t kNoRecord = 0xffffffffu;
constexpr std::uint64_t kJoinableFlag = 1;
constexpr std::uint32_t kHeapFlag = 1;  // SlotHeader::flags

// this_process() is cached and refreshed after fork: no system call.
pid_t current_pid() noexcept { return this_process().pid; }

std::atomic<std::uint64_t> g_next_handle{1};

struct CacheEntry {
  std::uint64_t handle = 0;
  pid_t pid = 0;
  std::uint32_t rec = 0;
};
constexpr unsigned kCacheSize = 16;
thread_local CacheEntry t_cache[kCacheSize];
thread_local unsigned t_cache_next = 0;
thread_local const CacheEntry* t_cache_last = nullptr;  // the last hit: checked first

// The calling thread's key in every handle's record cache
// (QueueCore::rec_cache_): unique in this process and never reused (52
// bits, from 1), kNoKey until the thread's first put/get. A handle's cache
// reads 0 (no key) in any forked child (a wipe-on-fork word), so it names
// no thread there: the child's first call takes a record of its own (its
// thread cache is keyed by pid, and this_process() is refreshed in a child
// too). fork() also gives the forking thread a new key in the child (the
// only cover where the kernel does not wipe: fork_wiped.hpp).
std::atomic<std::uint64_t> g_next_thread_key{1};
constexpr unsigned kRecBits = 12;  // kQueueMaxRecords == 1 << kRecBits
static_assert(kQueueMaxRecords == 1u << kRecBits);
constexpr std::uint64_t kNoKey = (std::uint64_t{1} << (64 - kRecBits)) - 1;  // never given out
thread_local std::uint64_t t_thread_key = kNoKey;
void clear_thread_key() noexcept { t_thread_key = kNoKey; }
void register_atfork() {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, &clear_thread_key); });
}

// A record's counter word (count_word) as a base plus these: the stage
// bits, and one more message counted in `main` (committed / delivered).
constexpr std::uint64_t kStageBits = 3;
// The record bits of a slot word (slot_rec), and the bits of a slot's
// length | flags << 32 that say "a message inside the slot" when at most
// slot_payload (the length, and the heap flag above it).
constexpr std::uint64_t kSlotRecBits = std::uint64_t{0xfff} << 3;
static_assert(slot_word(0, 0xfff, SlotState::empty) == kSlotRecBits);
constexpr std::uint64_t kInSlotMask = (std::uint64_t{kHeapFlag} << 32) | 0xffffffffu;
constexpr std::uint64_t kClaiming = count_word(0, 0, Stage::claiming);
constexpr std::uint64_t kActive = count_word(0, 0, Stage::active);
constexpr std::uint64_t kCountOne = count_word(1, 0, Stage::idle);
static_assert(count_word(5, 7, Stage::active) == (count_word(5, 7, Stage::idle) | kActive) &&
              count_word(6, 7, Stage::idle) == count_word(5, 7, Stage::idle) + kCountOne &&
              word_stage(kStageBits) == Stage(3));

constexpr std::uint32_t kTokenHeld = 1;    // [queue.token]: a wake is on its way
constexpr std::uint32_t kTokenMissed = 2;  // ... and a publication skipped its own

// Wakes one sleeper of `ch` if one is counted, unless a wake is already on
// its way ([queue.token] in queue_core.hpp). Call after the seq_cst
// publication, as [wait.sleepers] requires.
[[gnu::noinline]] void wake_counted(WaitChannel& ch, std::atomic<std::uint32_t>& token,
                                    std::uint32_t seen) noexcept;
inline void wake_one(WaitChannel& ch, std::atomic<std::uint32_t>& token) noexcept {
  // [wait.sleepers] seq_cst: pairs with the sleeper's increment.
  const std::uint32_t seen = ch.sleepers.load(std::memory_order_seq_cst);
  if (sleeper_count(seen) != 0) [[unlikely]]
    wake_counted(ch, token, seen);
}
// wake_one() once a sleeper is counted (`seen`: the sleepers word it read),
// out of the put/get fast path.
void wake_counted(WaitChannel& ch, std::atomic<std::uint32_t>& token, std::uint32_t seen) noexcept {
  // [queue.token] seq_cst (load and CASes): a HELD we read is released or
  // taken over after this point in the total order, and whoever does that
  // looks at the queue after our publication.
  std::uint32_t t = token.load(std::memory_order_seq_cst);
  for (;;) {
    if (t == 0) {
      if (token.compare_exchange_weak(t, kTokenHeld, std::memory_order_seq_cst,
                                      std::memory_order_seq_cst))
        break;
    } else if ((t & kTokenMissed) != 0) {
      return;  // held, and the holder already knows it missed publications
    } else if (token.compare_exchange_weak(t, t | kTokenMissed, std::memory_order_seq_cst,
                                           std::memory_order_seq_cst)) {
      return;
    }
  }
  for (;;) {
    // seq_cst RMW: a sleeper that read the old seq fails its futex check
    // ([wait.sleepers]); one that reads the new seq re-checks its predicate
    // after every publication that came before our token CAS.
    ch.seq.fetch_add(1, std::memory_order_seq_cst);
    // The futex word is in shared memory: futex_wake never uses the
    // PRIVATE flag (see futex.hpp).
    const int woke = futex_wake(ch.seq, 1);
    // [wait.epoch] a strike, or the repair of dead sleepers (which wakes
    // everyone: each returning sleeper releases the token and re-checks).
    note_wake(ch.sleepers, seen, woke, &ch.seq, ch.seq);
    if (woke > 0) return;  // the token goes with the wake
    // Woke nobody (the counted sleeper is not in the kernel yet, or left):
    // release the token ourselves.
    std::uint32_t h = kTokenHeld;
    // [queue.token] seq_cst.
    if (token.compare_exchange_strong(h, 0, std::memory_order_seq_cst, std::memory_order_seq_cst))
      return;
    // MISSED (or a value we did not write): take it back clean and wake
    // again; 0: a returning sleeper released it and looks at the queue.
    for (;;) {
      if (h == 0) return;
      if (token.compare_exchange_weak(h, kTokenHeld, std::memory_order_seq_cst,
                                      std::memory_order_seq_cst))
        break;
    }
  }
}

// The blocking half of [wait.sleepers] (detail::sleep_until) with the
// sleeper's side of [queue.token]: after every return from futex_wait,
// release the token before re-checking `ready`.
template <class Ready>
bool sleep_until(WaitChannel& ch, std::atomic<std::uint32_t>& token, Ready&& ready,
                 const Clock::time_point* deadline) noexcept {
  return detail::sleep_until(ch, ready, deadline, [&token] {
    fault_point(FaultPoint::wait_returned);
    // [queue.token] seq_cst: released before ready() re-reads the queue, so
    // a publication that skipped its wake because of this token is seen by
    // that re-read.
    token.exchange(0, std::memory_order_seq_cst);
  });
}

// The hint-helping steps of try_put_once/try_get_once. A slot whose word
// is ahead of the hint (d > 0) is passed by advancing the hint. In a sound
// ring, when our CAS of the hint from `pos` succeeds the slot can be at
// most one lap ahead: its position q came from a release of q - capacity,
// whose claim read the hint as q - capacity, and that read happens before
// our CAS (through the slot word's release/acquire chain), so the hint
// was >= q - capacity when we moved it from pos: it moves back only to a
// slot given back FULL ([queue.giveback]), and a FULL or READING slot at p
// keeps producers below p + capacity. Anything
// further ahead was written by someone who does not follow the protocol;
// stepping over it could take up to 2^47 helps, so it is `corrupted`.
inline bool help_hint(std::atomic<std::uint64_t>& hint, std::uint64_t pos, std::int64_t d,
                      std::uint64_t capacity) noexcept {
  std::uint64_t e = pos;
  // relaxed: the hint carries no data; slot words do.
  const bool moved = hint.compare_exchange_strong(e, pos + 1, std::memory_order_relaxed);
  return !(moved && d > 0 && static_cast<std::uint64_t>(d) != capacity);
}

// [queue.giveback] Moves the consumers' hint back to `p` while slot p holds
// a given-back message (FULL at p: a slot goes FULL(p) -> READING(p) ->
// EMPTY(p + capacity), or back to FULL(p) only by a give-back) and the
// hint is past it. Called by the recoverer after its FULL store, and by a
// consumer that moved the hint past a slot it had read as READING. The
// two sides, all seq_cst:
//   recoverer R: FULL(p) store; load hint; re-read slot p; CAS hint -> p
//   consumer  C: (read slot p READING); CAS hint p -> p+1; load hint;
//                re-read slot p; CAS hint -> p
// In the total order either C's CAS comes before R's hint load, so R
// reads C's p+1 (or a later value) and moves it back; or it comes after,
// so R's FULL store (before R's load) comes before C's re-read, and C sees
// FULL and moves the hint back itself. Either finds the slot no longer
// FULL only when a consumer claimed it (it read the hint at p): taken,
// nothing to move. A hint at or below p is not behind the message: the
// consumers walk up to p and stop at a FULL slot. A C whose CAS failed
// moved nothing. (Without C's re-read: C reads READING, R gives back and
// finds the hint still at p, C's CAS moves it to p+1, and no consumer
// ever looks at p again: tests/fault/queue_kill_test.cpp,
// AConsumerSteppingPastAHeldClaim....) The slot is
// re-read before each CAS so that a hint is never moved back to a message
// that another consumer claimed meanwhile (the hint could have gone a lap
// further by then).
inline void pull_hint_back(std::atomic<std::uint64_t>& hint, const SlotHeader& sl,
                           std::uint64_t p) noexcept {
  std::uint64_t d = hint.load(std::memory_order_seq_cst);
  while (static_cast<std::int64_t>(d - p) > 0 &&
         (sl.word.load(std::memory_order_seq_cst) & ~kSlotRecBits) ==
             slot_word(p, 0, SlotState::full) &&
         !hint.compare_exchange_weak(d, p, std::memory_order_seq_cst)) {
  }
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 30;  // as create() allows
constexpr std::uint64_t kMaxSlotPayload = std::uint64_t{1} << 30;
constexpr std::uint64_t kMaxHeapBlockSize = std::uint64_t{1} << 30;

// The geometry of a queue segment. Read from shared memory exactly once
// (read_geometry), validated, and from then on used only as this local
// copy: a peer that rewrites the control block later cannot change the
// bounds a handle or an inspector uses.
struct Geometry {
  std::uint64_t capacity, slot_stride, slot_payload, max_records, records_offset, slots_offset,
      heap_blocks, heap_block_size, heap_offset, heap_data_offset, total, flags;
};

// a*b + c into out, false on overflow.
bool mul_add(std::uint64_t a, std::uint64_t b, std::uint64_t c, std::uint64_t& out) noexcept {
  std::uint64_t m = 0;
  return !__builtin_mul_overflow(a, b, &m) && !__builtin_add_overflow(m, c, &out);
}
bool add_round64(std::uint64_t v, std::uint64_t& out) noexcept {
  if (__builtin_add_overflow(v, std::uint64_t{63}, &out)) return false;
  out = out / 64 * 64;
  return true;
}

// Computes the layout for the given parameters; false if any step
// overflows 64 bits (only possible for hostile input: create() bounds
// every parameter first).
bool geometry(std::uint64_t capacity, std::uint64_t slot_payload, std::uint64_t records,
              std::uint64_t heap_blocks, std::uint64_t heap_block_size, Geometry& g) noexcept {
  g = Geometry{};
  if (capacity > kMaxCapacity) return false;
  g.capacity = 2;
  while (g.capacity < capacity) g.capacity <<= 1;
  g.slot_payload = slot_payload;
  std::uint64_t v = 0;
  if (__builtin_add_overflow(std::uint64_t{sizeof(SlotHeader)}, slot_payload, &v) ||
      !add_round64(v, g.slot_stride))
    return false;
  g.max_records = records;
  g.records_offset = sizeof(QueueControl);
  if (!mul_add(records, sizeof(QueueRecord), g.records_offset, v) ||
      !add_round64(v, g.slots_offset))
    return false;
  g.heap_blocks = heap_blocks;
  g.heap_block_size = heap_block_size;
  if (!mul_add(g.capacity, g.slot_stride, g.slots_offset, g.heap_offset)) return false;
  if (!mul_add(heap_blocks, 8, g.heap_offset, v) || !add_round64(v, g.heap_data_offset))
    return false;
  return mul_add(heap_blocks, heap_block_size, g.heap_data_offset, g.total);
}

// One load of a set-once geometry field. relaxed: the fields were
// published by [segment.ready] before anyone could map the segment; the
// atomic load only makes sure the compiler reads the field exactly once.
std::uint64_t load_once(const std::uint64_t& f) noexcept {
  return __atomic_load_n(&f, __ATOMIC_RELAXED);
}

// Reads the control block's geometry from shared memory (untrusted) into a
// local copy, once, and validates the copy.
Geometry read_geometry(std::span<const std::byte> payload, const std::string& name) {
  if (payload.size() < sizeof(QueueControl))
    throw Error(Errc::truncated, name, "payload smaller than a queue control block");
  const auto& c = *reinterpret_cast<const QueueControl*>(payload.data());
  if (load_once(c.magic) != kQueueMagic) throw Error(Errc::corrupted, name, "queue magic differs");
  Geometry in{};
  in.capacity = load_once(c.capacity);
  in.slot_stride = load_once(c.slot_stride);
  in.slot_payload = load_once(c.slot_payload);
  in.max_records = load_once(c.max_records);
  in.records_offset = load_once(c.records_offset);
  in.slots_offset = load_once(c.slots_offset);
  in.flags = load_once(c.flags);
  in.heap_blocks = load_once(c.heap_blocks);
  in.heap_block_size = load_once(c.heap_block_size);
  in.heap_offset = load_once(c.heap_offset);
  in.heap_data_offset = load_once(c.heap_data_offset);
  const std::uint64_t cap = in.capacity;
  if (cap < 2 || (cap & (cap - 1)) != 0 || cap > kMaxCapacity)
    throw Error(Errc::corrupted, name, "queue capacity " + std::to_string(cap) + " invalid");
  if (in.max_records == 0 || in.max_records > kQueueMaxRecords)
    throw Error(Errc::corrupted, name, "queue record count invalid");
  if (in.slot_payload == 0 || in.slot_payload > kMaxSlotPayload)
    throw Error(Errc::corrupted, name, "queue slot size invalid");
  if (in.heap_blocks > kQueueMaxRecords || in.heap_block_size > kMaxHeapBlockSize ||
      in.heap_block_size % 64 != 0 ||
      (in.heap_blocks != 0 && (in.heap_block_size <= in.slot_payload || in.slot_payload < 8)))
    throw Error(Errc::corrupted, name, "queue heap geometry invalid");
  Geometry g{};
  if (!geometry(cap, in.slot_payload, in.max_records, in.heap_blocks, in.heap_block_size, g) ||
      in.slot_stride != g.slot_stride || in.records_offset != g.records_offset ||
      in.slots_offset != g.slots_offset || in.heap_offset != g.heap_offset ||
      in.heap_data_offset != g.heap_data_offset || g.total > payload.size())
    throw Error(Errc::corrupted, name, "queue geometry does not match the segment size");
  g.flags = in.flags;
  return g;
}

// Statistics from the validated geometry `g` (never from the shared copy
// of it) and the live counters.
QueueStats stats_of(const Geometry& g, const QueueControl& c, const QueueRecord* records,
                    const std::atomic<std::uint64_t>* heap) noexcept {
  QueueStats s;
  s.capacity = g.capacity;
  s.slot_payload = g.slot_payload;
  for (std::uint64_t i = 0; i < g.max_records; ++i) {
    const QueueRecord& r = records[i];
    // [queue.record] acquire: pairs with the owner's counter stores.
    const std::uint64_t pw = r.put_word.load(std::memory_order_acquire);
    const std::uint64_t gw = r.get_word.load(std::memory_order_acquire);
    // A put in stage ACTIVE has published (or is about to publish) its
    // message: count it, as join() does.
    s.committed += word_main(pw) + (word_stage(pw) == Stage::active ? 1 : 0);
    s.dropped += word_aux(pw);
    s.delivered += word_main(gw);
    s.lost += word_aux(gw);
    // relaxed: a count for display only.
    if (r.owner.load(std::memory_order_relaxed) != 0) ++s.participants;
  }
  // relaxed: hints/counters read for display; a racy snapshot by contract.
  const std::uint64_t e = c.enqueue_pos.load(std::memory_order_relaxed);
  const std::uint64_t d = c.dequeue_pos.load(std::memory_order_relaxed);
  s.depth = e > d ? std::min<std::uint64_t>(e - d, g.capacity) : 0;
  s.peer_deaths = c.peer_deaths.load(std::memory_order_relaxed);
  s.interrupted = c.interrupted.load(std::memory_order_relaxed);
  s.tasks_done = c.tasks_done.load(std::memory_order_relaxed);
  s.closed = c.closed.load(std::memory_order_relaxed) != 0;
  // relaxed: sleeper counts for display (and for tests that wait until a
  // waiter is asleep); a racy snapshot.
  s.consumers_waiting = sleeper_count(c.not_empty.sleepers.load(std::memory_order_relaxed));
  s.producers_waiting = sleeper_count(c.not_full.sleepers.load(std::memory_order_relaxed));
  s.joinable = (g.flags & kJoinableFlag) != 0;
  s.heap_blocks = g.heap_blocks;
  for (std::uint64_t i = 0; i < g.heap_blocks; ++i)
    // relaxed: a count for display only.
    if (heap_state(heap[i].load(std::memory_order_relaxed)) != HeapState::free) ++s.heap_in_use;
  return s;
}

}  // namespace

struct QueueCore::Held {
  std::mutex m;
  pid_t pid = 0;
  std::vector<std::uint32_t> recs;
  QueueRecord* records = nullptr;  // the segment's table (its mapping outlives this)

  // Gives back this process's idle records (all threads): when the handle
  // goes, and at a clean exit (detail/exit_actions.hpp), so a returning
  // child's records read as freed, not as a dead participant's.
  static void release(void* self) noexcept {
    auto& held = *static_cast<Held*>(self);
    std::unique_lock lock(held.m, std::try_to_lock);
    if (!lock.owns_lock() || held.pid != current_pid() || held.records == nullptr) return;
    const std::uint64_t me = this_process().pack();
    for (std::uint32_t r : held.recs) {
      QueueRecord& rec = held.records[r];
      // relaxed: owner-only fields; the release store of owner below
      // publishes them to the next owner [queue.record].
      if (word_stage(rec.put_word.load(std::memory_order_relaxed)) != Stage::idle ||
          word_stage(rec.get_word.load(std::memory_order_relaxed)) != Stage::idle)
        continue;
      std::uint64_t expected = me;
      rec.owner.compare_exchange_strong(expected, 0, std::memory_order_release,
                                        std::memory_order_relaxed);
    }
    held.recs.clear();
  }
};

QueueCore::QueueCore() = default;
QueueCore::QueueCore(QueueCore&&) noexcept = default;
QueueCore& QueueCore::operator=(QueueCore&& o) noexcept {
  if (this != &o) {
    this->~QueueCore();
    new (this) QueueCore(std::move(o));
  }
  return *this;
}

QueueCore::~QueueCore() {
  if (!held_) return;
  // In any process: a forked child's copy of the exit actions names it too.
  detail::remove_exit_action(held_.get());
  if (ctl_ == nullptr) return;
  Held::release(held_.get());
}

void QueueCore::bind(Segment segment, const QueueOptions& options) {
  segment_.emplace(std::move(segment));
  // Every bound below comes from this one validated copy, never from the
  // shared control block again.
  const Geometry g =
      read_geometry({segment_->payload(), segment_->payload_size()}, segment_->name());
  ctl_ = reinterpret_cast<QueueControl*>(segment_->payload());
  capacity_ = g.capacity;
  slot_stride_ = g.slot_stride;
  slot_payload_ = g.slot_payload;
  max_records_ = static_cast<std::uint32_t>(g.max_records);
  records_ = reinterpret_cast<QueueRecord*>(segment_->payload() + g.records_offset);
  slots_ = segment_->payload() + g.slots_offset;
  heap_blocks_ = static_cast<std::uint32_t>(g.heap_blocks);
  heap_block_size_ = g.heap_block_size;
  heap_words_ = reinterpret_cast<std::atomic<std::uint64_t>*>(segment_->payload() + g.heap_offset);
  heap_data_ = segment_->payload() + g.heap_data_offset;
  joinable_ = (g.flags & kJoinableFlag) != 0;
  policy_ = options.policy;
  liveness_ = options.liveness_interval;
  handle_id_ = g_next_handle.fetch_add(1, std::memory_order_relaxed);  // relaxed: unique id only
  rec_cache_ = make_fork_wiped_word();
  held_ = std::make_unique<Held>();
  held_->pid = current_pid();
  held_->records = records_;
  register_atfork();
  detail::add_exit_action(held_.get(), Held::release);
  attached_pid_ = options.segment.attach ? current_pid() : 0;
}

QueueCore QueueCore::create(SegmentName name, ObjectKind kind, TypeTag tag,
                            std::size_t slot_payload, const QueueOptions& options,
                            bool variable_size) {
  const std::string n(name.value_or(""));
  if (slot_payload == 0 || slot_payload > (std::size_t{1} << 30))
    throw Error(Errc::invalid_argument, n, "slot size must be 1 byte .. 1 GiB");
  if (options.capacity == 0 || options.capacity > (std::size_t{1} << 30))
    throw Error(Errc::invalid_argument, n, "capacity must be 1 .. 2^30");
  if (options.max_participants == 0 || options.max_participants > kQueueMaxRecords)
    throw Error(Errc::invalid_argument, n, "max_participants must be 1 .. 4096");
  std::uint64_t heap_blocks = 0, heap_block_size = 0;
  if ((variable_size || tag.fingerprint == kBytesTag.fingerprint) &&
      options.max_large_message > slot_payload) {
    if (options.max_large_message > (std::size_t{1} << 30) || options.heap_blocks == 0 ||
        options.heap_blocks > kQueueMaxRecords)
      throw Error(Errc::invalid_argument, n,
                  "max_large_message must be <= 1 GiB and heap_blocks 1 .. 4096");
    if (slot_payload < sizeof(HeapRef))
      throw Error(Errc::invalid_argument, n, "a queue with a heap needs max_message >= 8");
    heap_blocks = options.heap_blocks;
    heap_block_size = round_up(options.max_large_message, 64);
  }
  Geometry g{};
  if (!geometry(options.capacity, slot_payload, options.max_participants, heap_blocks,
                heap_block_size, g))
    throw Error(Errc::invalid_argument, n, "queue size overflows");
  const bool joinable = kind == ObjectKind::joinable_queue;
  auto init = [&](std::span<std::byte> p) {
    auto* c = new (p.data()) QueueControl{};
    c->magic = kQueueMagic;
    c->capacity = g.capacity;
    c->slot_stride = g.slot_stride;
    c->slot_payload = g.slot_payload;
    c->max_records = g.max_records;
    c->records_offset = g.records_offset;
    c->slots_offset = g.slots_offset;
    c->flags = joinable ? kJoinableFlag : 0;
    c->heap_blocks = g.heap_blocks;
    c->heap_block_size = g.heap_block_size;
    c->heap_offset = g.heap_offset;
    c->heap_data_offset = g.heap_data_offset;
    for (std::uint64_t i = 0; i < g.heap_blocks; ++i)
      new (p.data() + g.heap_offset + i * 8) std::atomic<std::uint64_t>(0);
    for (std::uint64_t i = 0; i < g.max_records; ++i)
      new (p.data() + g.records_offset + i * sizeof(QueueRecord)) QueueRecord{};
    for (std::uint64_t i = 0; i < g.capacity; ++i) {
      auto* s = new (p.data() + g.slots_offset + i * g.slot_stride) SlotHeader{};
      // relaxed: before ready; [segment.ready] publishes the whole payload.
      s->word.store(slot_word(i, 0, SlotState::empty), std::memory_order_relaxed);
    }
  };
  QueueCore q;
  q.bind(Segment::make(name, kind, tag, g.total, init, options.segment), options);
  return q;
}

QueueCore QueueCore::open(std::string_view name, ObjectKind kind, TypeTag tag,
                          const QueueOptions& options) {
  QueueCore q;
  q.bind(Segment::open(name, kind, tag, options.segment), options);
  if (q.joinable_ != (kind == ObjectKind::joinable_queue))
    throw Error(Errc::corrupted, q.name(), "joinable flag does not match the object kind");
  return q;
}

// ---- participant records ---------------------------------------------------

std::uint32_t QueueCore::my_record() noexcept {
  // relaxed: process-local; only a thread whose key it holds stored it.
  const std::uint64_t c = std::atomic_ref(*rec_cache_).load(std::memory_order_relaxed);
  if ((c >> kRecBits) == t_thread_key) [[likely]]
    return static_cast<std::uint32_t>(c & (kQueueMaxRecords - 1));
  return my_record_slow();
}

// A handle shared by threads that take turns: each turn's first call
// comes here (the thread cache, no system call) and takes the handle's
// cache over.
[[gnu::noinline]] std::uint32_t QueueCore::my_record_slow() noexcept {
  if (t_thread_key == kNoKey)
    t_thread_key = g_next_thread_key.fetch_add(1, std::memory_order_relaxed);  // relaxed: an id
  const pid_t pid = current_pid();
  std::uint32_t r = kNoRecord;
  if (const CacheEntry* e = t_cache_last; e != nullptr && e->handle == handle_id_ && e->pid == pid)
    r = e->rec;
  for (const CacheEntry& e : t_cache)
    if (r == kNoRecord && e.handle == handle_id_ && e.pid == pid) {
      t_cache_last = &e;
      r = e.rec;
    }
  if (r == kNoRecord) {
    r = acquire_record();
    if (r == kNoRecord) return r;
    t_cache[t_cache_next % kCacheSize] = CacheEntry{handle_id_, pid, r};
    ++t_cache_next;
  }
  // relaxed: see my_record().
  std::atomic_ref(*rec_cache_).store(t_thread_key << kRecBits | r, std::memory_order_relaxed);
  return r;
}

std::uint32_t QueueCore::acquire_record() noexcept {
  const pid_t pid = current_pid();
  const auto tid = static_cast<std::uint64_t>(::syscall(SYS_gettid));
  const std::uint64_t me = this_process().pack();
  std::lock_guard lock(held_->m);
  if (held_->pid != pid) {  // a forked child: the parent's records are not ours
    held_->pid = pid;
    held_->recs.clear();
  }
  if (attached_pid_ != 0 && attached_pid_ != pid) {
    attached_pid_ = pid;
    try {
      segment_->attach();
    } catch (...) {  // a full attachment table only costs inspection detail
    }
  }
  for (std::uint32_t r : held_->recs) {
    // relaxed: written by this thread when it took the record.
    if (record(r).tid.load(std::memory_order_relaxed) == tid &&
        record(r).owner.load(std::memory_order_relaxed) == me)
      return r;
  }
  auto take = [&](std::uint32_t r) {
    record(r).tid.store(tid, std::memory_order_relaxed);  // relaxed: informative
    // relaxed: the owner's own field (get_held sets it before each claim).
    record(r).hold.store(0, std::memory_order_relaxed);
    held_->recs.push_back(r);
    return r;
  };
  for (std::uint32_t r = 0; r < max_records_; ++r) {
    std::uint64_t expected = 0;
    // acquire: pairs with the release of owner by the last owner or
    // recoverer, so its counters/stage are visible to us [queue.record].
    if (record(r).owner.load(std::memory_order_relaxed) == 0 &&
        record(r).owner.compare_exchange_strong(expected, me, std::memory_order_acquire,
                                                std::memory_order_relaxed))
      return take(r);
  }
  for (std::uint32_t r = 0; r < max_records_; ++r) {
    const std::uint64_t owner = record(r).owner.load(std::memory_order_acquire);
    if (owner != 0 && owner != me && !is_alive(ProcessId::unpack(owner)) &&
        recover_record(r, owner, /*keep=*/true))
      return take(r);
  }
  return kNoRecord;
}

bool QueueCore::recover_record(std::uint32_t r, std::uint64_t dead_owner, bool keep) noexcept {
  QueueRecord& rec = record(r);
  const std::uint64_t me = this_process().pack();
  std::uint64_t expected = dead_owner;
  // acquire: we now act as the owner of this record and must see every
  // store the dead owner (or a dead earlier recoverer) made to it.
  if (!rec.owner.compare_exchange_strong(expected, me, std::memory_order_acq_rel,
                                         std::memory_order_relaxed))
    return false;

  bool busy = false;  // was the dead owner in the middle of something?
  // Put side. [queue.record] acquire pairs with the owner's stage stores.
  {
    const std::uint64_t pw = rec.put_word.load(std::memory_order_acquire);
    const std::uint64_t p = rec.put_pos.load(std::memory_order_acquire);
    SlotHeader& sl = slot(p);
    const std::uint64_t held = slot_word(p, r, SlotState::writing);
    // [queue.claim] acquire: if the claim happened we see it here.
    const bool writing = sl.word.load(std::memory_order_acquire) == held;
    const Stage st = word_stage(pw);
    busy |= st != Stage::idle || writing;
    const bool published = st == Stage::active && !writing;
    if (st != Stage::idle) {
      std::uint64_t main = word_main(pw), aux = word_aux(pw);
      if (writing)
        ++aux;  // claimed, never published: dropped
      else if (published)
        ++main;  // published before it died
      // [queue.record] release: one store decides and clears the stage.
      rec.put_word.store(count_word(main, aux, Stage::idle), std::memory_order_release);
    }
    // A tagged put cut by the death: its outcome, decided here once.
    // [queue.record] acquire/release, as the words above.
    if (const std::uint64_t t = rec.tag.load(std::memory_order_acquire);
        TagState(t & 3u) == TagState::pending)
      rec.tag.store((t & ~std::uint64_t{3}) | static_cast<std::uint64_t>(
                                                  published ? TagState::landed : TagState::dropped),
                    std::memory_order_release);
    // Heap blocks the dead producer allocated but never queued.
    for (std::uint32_t b = 0; b < heap_blocks_; ++b) {
      std::uint64_t hw = heap_word_at(b).load(std::memory_order_acquire);
      if (heap_state(hw) == HeapState::alloc && heap_rec(hw) == r)
        // [queue.heap] acq_rel: frees the block for the next allocator.
        busy |= heap_word_at(b).compare_exchange_strong(
            hw, heap_word(heap_gen(hw) + 1, HeapState::free, 0), std::memory_order_acq_rel,
            std::memory_order_relaxed);
    }
    if (writing) {
      free_heap_ref(sl);  // a dropped large message's block
      std::uint64_t w = held;
      // [queue.publish] seq_cst: a SKIP is published like a message.
      sl.word.compare_exchange_strong(w, slot_word(p, r, SlotState::skip),
                                      std::memory_order_seq_cst, std::memory_order_relaxed);
    }
  }
  // Get side.
  {
    const std::uint64_t gw = rec.get_word.load(std::memory_order_acquire);
    const std::uint64_t p = rec.get_pos.load(std::memory_order_acquire);
    SlotHeader& sl = slot(p);
    const std::uint64_t held = slot_word(p, r, SlotState::reading);
    const bool reading = sl.word.load(std::memory_order_acquire) == held;
    const Stage st = word_stage(gw);
    busy |= st != Stage::idle || reading;
    // A held get's message goes back to the queue, unless its large
    // message's block is already freed (the copy was complete then).
    // relaxed: the owner's own field, written before its [queue.claim].
    const bool held_get = rec.hold.load(std::memory_order_relaxed) != 0;
    const bool give_back = reading && held_get && heap_ref_intact(sl);
    if (st != Stage::idle) {
      std::uint64_t main = word_main(gw), aux = word_aux(gw);
      if (give_back) {
        // not taken after all: nothing to count
      } else if (reading && held_get) {
        ++main;  // a held get that copied its large message and freed the block
      } else if (reading) {
        ++aux;  // taken, not finished: lost
      } else if (st == Stage::active) {
        ++main;  // released before it died
      }
      rec.get_word.store(count_word(main, aux, Stage::idle), std::memory_order_release);
    }
    rec.hold.store(0, std::memory_order_relaxed);  // relaxed: ours now
    if (give_back) {
      std::uint64_t w = held;
      // [queue.giveback] seq_cst: FULL again at its position, then the
      // consumers' hint back to it (it moved past when the get claimed).
      if (sl.word.compare_exchange_strong(w, slot_word(p, r, SlotState::full),
                                          std::memory_order_seq_cst, std::memory_order_relaxed))
        pull_hint_back(ctl_->dequeue_pos, sl, p);
    } else if (reading) {
      free_heap_ref(sl);  // a lost large message's block (if not freed yet)
      std::uint64_t w = held;
      // [queue.release] seq_cst: frees the slot for the next lap.
      sl.word.compare_exchange_strong(w, slot_word(p + capacity_, 0, SlotState::empty),
                                      std::memory_order_seq_cst, std::memory_order_relaxed);
    }
  }
  ctl_->peer_deaths.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  if (busy) ctl_->interrupted.fetch_add(1, std::memory_order_relaxed);
  if (!keep) rec.owner.store(0, std::memory_order_release);  // [queue.record]
  notify(ctl_->not_empty);
  notify(ctl_->not_full);
  notify(ctl_->join);
  return true;
}

QueueCore::Stuck QueueCore::check_stuck(const Probe& probe) noexcept {
  const SlotState st = slot_state(probe.word);
  if (st != SlotState::writing && st != SlotState::reading) return Stuck::waiting;
  const std::uint32_t r = slot_rec(probe.word);
  // No participant has that record: nobody will ever release the slot.
  if (r >= max_records_) return Stuck::garbage;
  // [queue.record] acquire: pairs with the release of owner (a claim, or
  // recover_record()'s free, which repairs the record's slots first).
  const std::uint64_t owner = record(r).owner.load(std::memory_order_acquire);
  // seq_cst: re-read after the owner: is the head still held as probed?
  const auto still = [&] {
    return slot(probe.pos).word.load(std::memory_order_seq_cst) == probe.word;
  };
  if (owner == 0) return still() ? Stuck::garbage : Stuck::waiting;
  if (owner == this_process().pack()) return Stuck::waiting;
  if (is_alive(ProcessId::unpack(owner))) return Stuck::waiting;
  // Recovery repairs the slots at the record's put_pos and get_pos; a
  // head it leaves held was never that record's claim.
  if (!recover_record(r, owner, /*keep=*/false)) return Stuck::waiting;  // another recoverer
  return still() ? Stuck::garbage : Stuck::repaired;
}

std::optional<QueueResult> QueueCore::after_wait(bool changed, const Probe& probe,
                                                 const Clock::time_point* deadline) noexcept {
  // Every pass, not only after a quiet slice: a peer that keeps rewriting
  // the words we watch must not keep us past the deadline.
  if (deadline != nullptr && Clock::now() >= *deadline) return QueueResult::timed_out;
  if (!changed && check_stuck(probe) == Stuck::garbage) return QueueResult::corrupted;
  return std::nullopt;
}

std::size_t QueueCore::recover_dead() noexcept {
  std::size_t n = 0;
  const std::uint64_t me = this_process().pack();
  for (std::uint32_t r = 0; r < max_records_; ++r) {
    const std::uint64_t owner = record(r).owner.load(std::memory_order_acquire);
    if (owner != 0 && owner != me && !is_alive(ProcessId::unpack(owner)) &&
        recover_record(r, owner, false))
      ++n;
  }
  return n;
}

// ---- put / get ---------------------------------------------------------------

// Inlined into put() (and its waits): the fast path is one function.
template <bool Tagged>
[[gnu::always_inline]] inline QueueResult QueueCore::try_put_once(std::span<const std::byte> msg,
                                                                  std::uint32_t flags,
                                                                  std::uint32_t length,
                                                                  std::uint32_t r,
                                                                  Probe& probe) noexcept {
  // acquire: pairs with close(); a cheap early answer (the check that
  // matters is the seq_cst one after the claim).
  if (ctl_->closed.load(std::memory_order_acquire) != 0) return QueueResult::closed;
  QueueRecord& rec = record(r);
  // relaxed: only this thread (the owner) writes its put_word. Its stage
  // is idle between calls (cleared anyway), so every word below is this
  // one plus a constant (kClaiming, kActive, kCountOne).
  const std::uint64_t idle = rec.put_word.load(std::memory_order_relaxed) & ~kStageBits;
  // relaxed: the [queue.claim] CAS below releases this stage store.
  rec.put_word.store(idle | kClaiming, std::memory_order_relaxed);
  std::uint64_t pos = 0;
  SlotHeader* sl = nullptr;
  for (;;) {
    pos = ctl_->enqueue_pos.load(std::memory_order_relaxed);  // relaxed: a hint, checked below
    sl = &slot(pos);
    // The claim is tried outright, without loading the word first: the
    // slot's line was last written by a consumer, and a load would fetch it
    // shared and the CAS then fetch it again to own it.
    rec.put_pos.store(pos, std::memory_order_relaxed);  // relaxed: released by [queue.claim]
    std::uint64_t s = slot_word(pos, 0, SlotState::empty);
    // [queue.claim] seq_cst; on failure, [queue.release] acquire: pairs
    // with the consumer's EMPTY store.
    if (sl->word.compare_exchange_strong(s, slot_word(pos, r, SlotState::writing),
                                         std::memory_order_seq_cst, std::memory_order_acquire))
      break;
    const std::int64_t d = slot_diff(s, pos);
    if (slot_state(s) > SlotState::skip) {
      rec.put_word.store(idle, std::memory_order_relaxed);
      return QueueResult::corrupted;
    }
    if (d == 0 && slot_state(s) == SlotState::empty) {  // EMPTY with record bits: claim it as is
      if (sl->word.compare_exchange_strong(s, slot_word(pos, r, SlotState::writing),
                                           std::memory_order_seq_cst, std::memory_order_relaxed))
        break;
      continue;
    }
    if (d >= 0) {  // claimed already (maybe by a now-dead producer): help the hint on
      if (!help_hint(ctl_->enqueue_pos, pos, d, capacity_)) {
        rec.put_word.store(idle, std::memory_order_relaxed);
        return QueueResult::corrupted;
      }
      continue;
    }
    // The slot still holds the previous lap: full (or a slow/dead consumer).
    probe = Probe{pos, s};
    rec.put_word.store(idle, std::memory_order_relaxed);
    return QueueResult::full;
  }
  {
    std::uint64_t e = pos;
    ctl_->enqueue_pos.compare_exchange_strong(e, pos + 1, std::memory_order_relaxed);
  }
  fault_point(FaultPoint::put_claimed);
  // seq_cst: orders after our claim against close()'s store, see close().
  if (ctl_->closed.load(std::memory_order_seq_cst) != 0) {
    // Withdraw: the message is not committed; consumers step over it.
    sl->word.store(slot_word(pos, r, SlotState::skip), std::memory_order_seq_cst);
    rec.put_word.store(idle, std::memory_order_release);
    notify(ctl_->not_empty);  // all: a consumer may be waiting on this slot to close
    return QueueResult::closed;
  }
  auto* payload = reinterpret_cast<std::byte*>(sl) + sizeof(SlotHeader);
  // The library's memcpy, not an inline copy by size class as the pipe's:
  // inline, the busy round trip of 64 B read 912-922 ns against 511-601
  // (interleaved runs on a loaded 2-vCPU VM), for 1-2 ns less on one core.
  if (!msg.empty()) std::memcpy(payload, msg.data(), msg.size());
  sl->length = length;
  sl->flags = flags;
  if ((flags & kHeapFlag) != 0) {
    HeapRef ref{};
    std::memcpy(&ref, msg.data(), sizeof ref);
    // [queue.heap] release: the block's bytes, then the slot's reference,
    // before the block counts as queued (recovery frees it through the slot).
    heap_word_at(ref.block).store(heap_word(ref.gen, HeapState::queued, 0),
                                  std::memory_order_release);
  }
  // relaxed: released by the [queue.publish] store below.
  rec.put_word.store(idle | kActive, std::memory_order_relaxed);
  fault_point(FaultPoint::put_written);
  // [queue.publish] seq_cst (release + [wait.sleepers]).
  sl->word.store(slot_word(pos, r, SlotState::full), std::memory_order_seq_cst);
  fault_point(FaultPoint::put_published);
  if constexpr (Tagged) {
    // [queue.record] release (relaxed load: the owner's own field): a
    // recovery from here on would decide LANDED as well.
    const std::uint64_t t = rec.tag.load(std::memory_order_relaxed) & ~std::uint64_t{3};
    rec.tag.store(t | static_cast<std::uint64_t>(TagState::landed), std::memory_order_release);
  }
  // [queue.record] release.
  rec.put_word.store(idle + kCountOne, std::memory_order_release);
  notify_not_empty();
  return QueueResult::ok;
}

// Inlined into get() (and its waits), as try_put_once().
template <bool Held>
[[gnu::always_inline]] inline QueueResult QueueCore::try_get_once(
    std::span<std::byte> out, std::size_t& length, std::uint32_t r, Probe& probe,
    std::uint64_t* position) noexcept {
  QueueRecord& rec = record(r);
  // relaxed: only this thread (the owner) writes its get_word; as in
  // try_put_once(), every word below is this one plus a constant.
  const std::uint64_t w0 = rec.get_word.load(std::memory_order_relaxed) & ~kStageBits;
  auto idle = [&] { rec.get_word.store(w0, std::memory_order_relaxed); };
  std::uint64_t pos = 0;
  SlotHeader* sl = nullptr;
  for (;;) {
    // acquire: [queue.giveback] (a hint moved back shows the FULL word
    // given back); otherwise only a hint, checked below.
    pos = ctl_->dequeue_pos.load(std::memory_order_acquire);
    sl = &slot(pos);
    // [queue.publish] acquire: pairs with the producer's FULL store.
    std::uint64_t s = sl->word.load(std::memory_order_acquire);
    // FULL for this very position, whoever wrote it: one compare (the
    // word without its record bits) for d == 0 and the state.
    if ((s & ~kSlotRecBits) == slot_word(pos, 0, SlotState::full)) [[likely]] {
      rec.get_pos.store(pos, std::memory_order_relaxed);  // relaxed: released by [queue.claim]
      rec.get_word.store(w0 | kClaiming, std::memory_order_relaxed);
      // [queue.claim] seq_cst.
      if (sl->word.compare_exchange_weak(s, slot_word(pos, r, SlotState::reading),
                                         std::memory_order_seq_cst, std::memory_order_relaxed))
        break;
      continue;
    }
    const std::int64_t d = slot_diff(s, pos);
    if (slot_state(s) > SlotState::skip) {
      idle();
      return QueueResult::corrupted;
    }
    if (d == 0) {
      const SlotState st = slot_state(s);
      if (st == SlotState::skip) {
        // [queue.release] seq_cst: step over a dropped or withdrawn message.
        if (sl->word.compare_exchange_strong(s, slot_word(pos + capacity_, 0, SlotState::empty),
                                             std::memory_order_seq_cst, std::memory_order_relaxed))
          notify_not_full();
        std::uint64_t e = pos;
        ctl_->dequeue_pos.compare_exchange_strong(e, pos + 1, std::memory_order_relaxed);
        continue;
      }
      if (st == SlotState::reading) {
        // Claimed by another getter: step past it. If that getter was a
        // held one that died, its message may come back FULL here at any
        // moment: [queue.giveback] seq_cst CAS, then the re-read.
        fault_point(FaultPoint::get_passing);
        std::uint64_t e = pos;
        if (ctl_->dequeue_pos.compare_exchange_strong(e, pos + 1, std::memory_order_seq_cst))
          pull_hint_back(ctl_->dequeue_pos, *sl, pos);
        continue;
      }
      // empty or writing: nothing committed at the head yet.
    } else if (d > 0) {
      if (!help_hint(ctl_->dequeue_pos, pos, d, capacity_)) {
        idle();
        return QueueResult::corrupted;
      }
      continue;
    }
    idle();
    if (slot_state(s) != SlotState::writing && ctl_->closed.load(std::memory_order_seq_cst) != 0) {
      // A producer that claims this slot from now on sees `closed` after its
      // claim and withdraws (see close()); re-read to catch one that
      // claimed before that.
      if (sl->word.load(std::memory_order_seq_cst) == s &&
          ctl_->dequeue_pos.load(std::memory_order_seq_cst) == pos)
        return QueueResult::closed;
      continue;
    }
    // seq_cst: the closed word this wait compares against ([wait.sleepers]).
    probe = Probe{pos, s, ctl_->closed.load(std::memory_order_seq_cst)};
    return QueueResult::empty;
  }
  {
    std::uint64_t e = pos;
    ctl_->dequeue_pos.compare_exchange_strong(e, pos + 1, std::memory_order_relaxed);
  }
  // relaxed: released by the [queue.release] store below.
  rec.get_word.store(w0 | kActive, std::memory_order_relaxed);
  // The claimed position, for the caller after a crash (get_held), before
  // anything is copied or freed: a restarted caller then finds the slot
  // still at it (given back: drop its copy) or released (keep its copy).
  // relaxed: a dead process's stores are all in memory when its recoverer
  // runs; the caller reads it only then.
  if constexpr (Held)
    std::atomic_ref<std::uint64_t>(*position).store(pos, std::memory_order_relaxed);
  fault_point(FaultPoint::get_claimed);
  std::uint64_t length_flags = 0;  // length | flags << 32, untrusted
  static_assert(offsetof(SlotHeader, flags) == offsetof(SlotHeader, length) + 4);
  std::memcpy(&length_flags, &sl->length, sizeof length_flags);
  const auto len = static_cast<std::uint32_t>(length_flags);
  const auto flags = static_cast<std::uint32_t>(length_flags >> 32);
  const auto* payload = reinterpret_cast<const std::byte*>(sl) + sizeof(SlotHeader);
  QueueResult result = QueueResult::ok;
  // One compare: no heap flag and a length within the slot (`out` holds
  // max_message() >= slot_payload_ bytes: get() checked it).
  if ((length_flags & kInSlotMask) <= slot_payload_) [[likely]] {
    if (len != 0) std::memcpy(out.data(), payload, len);  // as in try_put_once()
    length = len;
  } else if ((flags & kHeapFlag) != 0) {
    HeapRef ref{};
    std::memcpy(&ref, payload, sizeof ref);
    std::uint64_t expect = heap_word(ref.gen, HeapState::queued, 0);
    // [queue.heap] acquire: pairs with the producer's QUEUED store.
    if (ref.block >= heap_blocks_ || len > heap_block_size_ || len > out.size() ||
        heap_word_at(ref.block).load(std::memory_order_acquire) != expect) {
      result = QueueResult::corrupted;
      // A bad length with a valid reference still owns a block: free it
      // (free_heap_ref frees only the exact QUEUED generation).
      free_heap_ref(*sl);
    } else {
      if (len != 0) std::memcpy(out.data(), heap_data_ + ref.block * heap_block_size_, len);
      length = len;
      // [queue.heap] seq_cst (acq_rel: our copy is done before the block is
      // reused; seq_cst: also the [wait.sleepers] publication for a
      // producer waiting for a block, notified below).
      heap_word_at(ref.block).compare_exchange_strong(
          expect, heap_word(ref.gen + 1, HeapState::free, 0), std::memory_order_seq_cst,
          std::memory_order_relaxed);
    }
  } else {
    result = QueueResult::corrupted;  // a length beyond the slot
  }
  fault_point(FaultPoint::get_copied);
  // [queue.release] seq_cst (release + [wait.sleepers]).
  sl->word.store(slot_word(pos + capacity_, 0, SlotState::empty), std::memory_order_seq_cst);
  fault_point(FaultPoint::get_released);
  // [queue.record] release. A corrupted message counts as lost.
  rec.get_word.store(result == QueueResult::ok
                         ? w0 + kCountOne
                         : count_word(word_main(w0), word_aux(w0) + 1, Stage::idle),
                     std::memory_order_release);
  notify_not_full();
  return result;
}

bool QueueCore::wait_for_change(WaitChannel& ch, std::atomic<std::uint32_t>& token,
                                const std::atomic<std::uint64_t>& head, const Probe& probe,
                                const Clock::time_point* deadline,
                                Clock::time_point spin_end) noexcept {
  const auto now0 = Clock::now();
  Clock::time_point slice = now0 + liveness_;
  if (deadline != nullptr && *deadline < slice) slice = *deadline;
  // [wait.sleepers] seq_cst loads, as wait_until() requires.
  auto changed = [&] {
    return slot(probe.pos).word.load(std::memory_order_seq_cst) != probe.word ||
           head.load(std::memory_order_seq_cst) != probe.pos ||
           ctl_->closed.load(std::memory_order_seq_cst) != probe.closed;
  };
  const WaitPolicy& p = policy_;
  if (p.strategy == WaitStrategy::busy_poll) return wait_until(ch, changed, p, &slice);
  if (p.strategy == WaitStrategy::adaptive) {
    // Adaptive: spin until spin_end (policy.spin after the call's first
    // wait, so a change that is not yet our item, e.g. a producer's claim
    // seen before its publication, does not send us to sleep), but yield
    // the CPU every 256 pauses: when processes outnumber cores, the peer we
    // wait for (a producer between claim and publish, or the consumer that
    // frees our slot) may be waiting for our core. Then sleep. (Spinning
    // without the yield streamed 2P2C on 2 cores 30% faster in some runs
    // and at half the speed of Boost.Interprocess mq in others.)
    if (now0 < spin_end) {
      for (unsigned i = 1;; ++i) {
        detail::cpu_relax();
        if (changed()) return true;
        if ((i & 255) == 0) {
          const auto now = Clock::now();
          if (now >= slice || now >= spin_end) break;
          ::sched_yield();
        }
      }
    }
  }
  return sleep_until(ch, token, changed, &slice);
}

void QueueCore::notify_not_empty() noexcept { wake_one(ctl_->not_empty, ctl_->not_empty_waking); }

void QueueCore::notify_not_full() noexcept {
  // Producers waiting for a slot and (with a heap) producers waiting for a
  // heap block sleep on the same channel with different predicates: a
  // single wake could go to one whose predicate is still false, which then
  // sleeps again and the wake is lost. So with a heap, wake them all (and
  // leave the not_full token alone).
  if (heap_blocks_ != 0)
    notify(ctl_->not_full);
  else
    wake_one(ctl_->not_full, ctl_->not_full_waking);
}

// [queue.token] pass-on: called by a get call that waited and then took an
// item. If the head may hold another committed item (or a SKIP to step
// over, or a claim we cannot judge), wake one more consumer: the chain that
// replaces one wake per publication. Errs towards waking.
void QueueCore::pass_on_not_empty() noexcept {
  // [wait.sleepers] seq_cst: a cheap filter; wake_one() loads it again.
  if (sleeper_count(ctl_->not_empty.sleepers.load(std::memory_order_seq_cst)) == 0) return;
  // seq_cst: these loads follow our token release (see queue_core.hpp).
  const std::uint64_t pos = ctl_->dequeue_pos.load(std::memory_order_seq_cst);
  const std::uint64_t w = slot(pos).word.load(std::memory_order_seq_cst);
  const std::int64_t d = slot_diff(w, pos);
  const SlotState st = slot_state(w);
  if (d < 0 || (d == 0 && (st == SlotState::empty || st == SlotState::writing))) return;
  notify_not_empty();
}

// [queue.token] pass-on for producers: a put call that waited and then got
// a slot wakes one more producer if the next slot may be free.
void QueueCore::pass_on_not_full() noexcept {
  if (sleeper_count(ctl_->not_full.sleepers.load(std::memory_order_seq_cst)) == 0)
    return;  // as above
  const std::uint64_t pos = ctl_->enqueue_pos.load(std::memory_order_seq_cst);
  // d < 0: the slot still holds the previous lap (full); anything else may
  // be (or be just past) a free slot.
  if (slot_diff(slot(pos).word.load(std::memory_order_seq_cst), pos) < 0) return;
  notify_not_full();
}

bool QueueCore::heap_ref_intact(const SlotHeader& sl) const noexcept {
  if ((sl.flags & kHeapFlag) == 0) return true;
  HeapRef ref{};
  std::memcpy(&ref, reinterpret_cast<const std::byte*>(&sl) + sizeof(SlotHeader), sizeof ref);
  // [queue.heap] acquire: the block still queued for this very reference.
  return ref.block < heap_blocks_ && heap_word_at(ref.block).load(std::memory_order_acquire) ==
                                         heap_word(ref.gen, HeapState::queued, 0);
}

void QueueCore::free_heap_ref(const SlotHeader& sl) noexcept {
  if ((sl.flags & kHeapFlag) == 0) return;
  HeapRef ref{};
  std::memcpy(&ref, reinterpret_cast<const std::byte*>(&sl) + sizeof(SlotHeader), sizeof ref);
  if (ref.block >= heap_blocks_) return;  // garbage: nothing of ours to free
  std::uint64_t expect = heap_word(ref.gen, HeapState::queued, 0);
  // [queue.heap] seq_cst (acq_rel + [wait.sleepers] for block waiters);
  // only the exact generation: a stale ref frees nothing.
  heap_word_at(ref.block).compare_exchange_strong(
      expect, heap_word(ref.gen + 1, HeapState::free, 0), std::memory_order_seq_cst,
      std::memory_order_relaxed);
}

QueueResult QueueCore::put_large(std::span<const std::byte> msg, const Clock::time_point* deadline,
                                 bool block, std::uint32_t r, bool tagged) noexcept {
  // 1. A heap block: CAS FREE(gen) -> ALLOC(gen, r), so a dead allocator's
  //    block is found by its record.
  std::uint32_t b = 0;
  std::uint64_t gen = 0;
  for (bool first = true;; first = false) {
    if (ctl_->closed.load(std::memory_order_acquire) != 0) return QueueResult::closed;
    bool got = false;
    for (b = 0; b < heap_blocks_ && !got; ++b) {
      std::uint64_t w = heap_word_at(b).load(std::memory_order_acquire);
      if (heap_state(w) == HeapState::free &&
          heap_word_at(b).compare_exchange_strong(w, heap_word(heap_gen(w), HeapState::alloc, r),
                                                  std::memory_order_acq_rel,
                                                  std::memory_order_relaxed)) {
        gen = heap_gen(w);
        got = true;
      }
    }
    if (got) {
      --b;
      break;
    }
    if (!block) return QueueResult::full;
    if (!first && deadline != nullptr && Clock::now() >= *deadline) return QueueResult::timed_out;
    Clock::time_point slice = Clock::now() + liveness_;
    if (deadline != nullptr && *deadline < slice) slice = *deadline;
    auto any_free = [&] {
      for (std::uint32_t i = 0; i < heap_blocks_; ++i)
        // seq_cst: the predicate side of [wait.sleepers].
        if (heap_state(heap_word_at(i).load(std::memory_order_seq_cst)) == HeapState::free)
          return true;
      return ctl_->closed.load(std::memory_order_seq_cst) != 0;
    };
    bool ready = false;
    if (policy_.strategy == WaitStrategy::busy_poll ||
        (first && policy_.strategy == WaitStrategy::adaptive)) {
      WaitPolicy p = policy_;
      if (p.strategy == WaitStrategy::adaptive) p.strategy = WaitStrategy::busy_poll;
      // Adaptive: spin up to policy.spin, then sleep below.
      const auto spin_end = Clock::now() + policy_.spin;
      const Clock::time_point* until = &slice;
      Clock::time_point bound = slice;
      if (policy_.strategy == WaitStrategy::adaptive && spin_end < slice) {
        bound = spin_end;
        until = &bound;
      }
      ready = wait_until(ctl_->not_full, any_free, p, until);
    }
    if (!ready && policy_.strategy != WaitStrategy::busy_poll)
      ready = sleep_until(ctl_->not_full, ctl_->not_full_waking, any_free, &slice);
    if (!ready) {
      if (deadline != nullptr && Clock::now() >= *deadline) return QueueResult::timed_out;
      (void)recover_dead();  // blocks held by dead producers or consumers
    }
  }
  std::memcpy(heap_data_ + std::uint64_t{b} * heap_block_size_, msg.data(), msg.size());
  // 2. A slot carrying the reference, published as usual.
  const HeapRef ref{b, static_cast<std::uint32_t>(gen)};
  std::byte refbytes[sizeof ref];
  std::memcpy(refbytes, &ref, sizeof ref);
  Probe probe;
  QueueResult res = QueueResult::ok;
  Clock::time_point spin_end{};  // adaptive: set at the first wait
  for (bool first = true;; first = false) {
    res = tagged
              ? try_put_once<true>(refbytes, kHeapFlag, static_cast<std::uint32_t>(msg.size()), r,
                                   probe)
              : try_put_once(refbytes, kHeapFlag, static_cast<std::uint32_t>(msg.size()), r, probe);
    if (res != QueueResult::full || !block) break;
    if (first) spin_end = spin_end_from_now();
    const bool changed = wait_for_change(ctl_->not_full, ctl_->not_full_waking, ctl_->enqueue_pos,
                                         probe, deadline, spin_end);
    if (auto end = after_wait(changed, probe, deadline)) {
      res = *end;
      break;
    }
  }
  if (res != QueueResult::ok) {  // not queued: give the block back
    std::uint64_t w = heap_word(static_cast<std::uint32_t>(gen), HeapState::alloc, r);
    heap_word_at(b).compare_exchange_strong(
        w, heap_word(static_cast<std::uint32_t>(gen) + 1, HeapState::free, 0),
        std::memory_order_seq_cst, std::memory_order_relaxed);  // [queue.heap] + [wait.sleepers]
    notify_not_full();
  }
  return res;
}

// put()/get(): the first try inline, the waits out of line (put_wait,
// get_wait); a large message through the heap (put_large).
QueueResult QueueCore::put(std::span<const std::byte> msg, const Clock::time_point* deadline,
                           bool block) noexcept {
  const auto size = static_cast<std::uint32_t>(msg.size());
  if (msg.size() <= slot_payload_) [[likely]] {
    const std::uint32_t r = my_record();
    if (r == kNoRecord) [[unlikely]]
      return QueueResult::no_record;
    Probe probe;
    const QueueResult res = try_put_once(msg, 0, size, r, probe);
    if (res != QueueResult::full || !block) [[likely]]
      return res;
    return put_wait(msg, deadline, r, probe);
  }
  if (heap_blocks_ == 0 || msg.size() > heap_block_size_) return QueueResult::too_large;
  const std::uint32_t r = my_record();
  if (r == kNoRecord) return QueueResult::no_record;
  return put_large(msg, deadline, block, r);
}

QueueResult QueueCore::put_wait(std::span<const std::byte> msg, const Clock::time_point* deadline,
                                std::uint32_t r, Probe probe) noexcept {
  const Clock::time_point spin_end = spin_end_from_now();  // adaptive: from the first wait
  for (;;) {
    const bool changed = wait_for_change(ctl_->not_full, ctl_->not_full_waking, ctl_->enqueue_pos,
                                         probe, deadline, spin_end);
    if (auto end = after_wait(changed, probe, deadline)) return *end;
    const QueueResult res = try_put_once(msg, 0, static_cast<std::uint32_t>(msg.size()), r, probe);
    if (res != QueueResult::full) {
      // A put that waited may have released the [queue.token]: pass on.
      if (res == QueueResult::ok) pass_on_not_full();
      return res;
    }
  }
}

QueueResult QueueCore::get(std::span<std::byte> out, std::size_t& length,
                           const Clock::time_point* deadline, bool block) noexcept {
  if (out.size() < max_message()) [[unlikely]]
    return QueueResult::buffer_too_small;
  const std::uint32_t r = my_record();
  if (r == kNoRecord) [[unlikely]]
    return QueueResult::no_record;
  Probe probe;
  const QueueResult res = try_get_once(out, length, r, probe);
  if (res != QueueResult::empty) [[likely]]
    return res;
  if (block) return get_wait(out, length, deadline, r, probe);
  if (fd_bridge_ != nullptr) [[unlikely]]
    rearm_fileno();
  return res;
}

QueueResult QueueCore::get_wait(std::span<std::byte> out, std::size_t& length,
                                const Clock::time_point* deadline, std::uint32_t r,
                                Probe probe) noexcept {
  const Clock::time_point spin_end = spin_end_from_now();  // adaptive: from the first wait
  for (;;) {
    const bool changed = wait_for_change(ctl_->not_empty, ctl_->not_empty_waking, ctl_->dequeue_pos,
                                         probe, deadline, spin_end);
    if (auto end = after_wait(changed, probe, deadline)) return *end;
    const QueueResult res = try_get_once(out, length, r, probe);
    if (res != QueueResult::empty) {
      // A get that waited may have released the [queue.token]: pass on.
      if (res != QueueResult::closed) pass_on_not_empty();
      return res;
    }
  }
}

// ---- the bridge's entry points (queue_core.hpp) ---------------------------

QueueResult QueueCore::get_held(std::span<std::byte> out, std::size_t& length,
                                std::uint64_t& position) noexcept {
  if (out.size() < max_message()) return QueueResult::buffer_too_small;
  const std::uint32_t r = my_record();
  if (r == kNoRecord) return QueueResult::no_record;
  // relaxed: released by the get's [queue.claim] CAS, which a recoverer
  // that sees the claim acquires.
  record(r).hold.store(1, std::memory_order_relaxed);
  Probe probe;
  const QueueResult res = try_get_once<true>(out, length, r, probe, &position);
  // relaxed: the get is over (its slot released or never claimed); a later
  // plain get on this record must not read as held.
  record(r).hold.store(0, std::memory_order_relaxed);
  if (res == QueueResult::empty && fd_bridge_ != nullptr) rearm_fileno();
  return res;
}

bool QueueCore::holds_position(std::uint64_t position) const noexcept {
  // seq_cst: after the caller's recover_dead(); a slot still at `position`
  // (FULL given back, or READING by a claim a recoverer is giving back).
  return slot_diff(slot(position).word.load(std::memory_order_seq_cst), position) == 0;
}

QueueResult QueueCore::put_tagged(std::span<const std::byte> msg, std::uint64_t tag) noexcept {
  const std::uint32_t r = my_record();
  if (r == kNoRecord) return QueueResult::no_record;
  QueueRecord& rec = record(r);
  const std::uint64_t t = tag << 2;
  // relaxed: released by the put's [queue.claim] CAS (a recoverer that sees
  // no claim decides DROPPED, which is right: nothing was published).
  rec.tag.store(t | static_cast<std::uint64_t>(TagState::pending), std::memory_order_relaxed);
  QueueResult res = QueueResult::too_large;
  if (msg.size() <= slot_payload_) {
    Probe probe;
    res = try_put_once<true>(msg, 0, static_cast<std::uint32_t>(msg.size()), r, probe);
  } else if (heap_blocks_ != 0 && msg.size() <= heap_block_size_) {
    res = put_large(msg, nullptr, false, r, /*tagged=*/true);
  }
  if (res != QueueResult::ok)  // [queue.record] release
    rec.tag.store(t | static_cast<std::uint64_t>(TagState::dropped), std::memory_order_release);
  return res;
}

TagState QueueCore::tagged_outcome(std::uint64_t tag) const noexcept {
  const std::uint64_t t = tag << 2;
  for (std::uint32_t r = 0; r < max_records_; ++r) {
    // [queue.record] acquire: pairs with the owner's or recoverer's store.
    const std::uint64_t w = record(r).tag.load(std::memory_order_acquire);
    if ((w & ~std::uint64_t{3}) != t) continue;
    const auto st = TagState(w & 3u);
    if (st == TagState::landed || st == TagState::dropped) return st;
  }
  return TagState::none;
}

void QueueCore::close() noexcept {
  // seq_cst: a producer loads `closed` after its claim CAS; a consumer that
  // sees `closed` re-reads the head slot. In the total order a producer
  // either claimed before that re-read (the consumer waits for it) or loads
  // closed == 1 after claiming and withdraws.
  ctl_->closed.store(1, std::memory_order_seq_cst);
  notify(ctl_->not_empty);
  notify(ctl_->not_full);
  notify(ctl_->join);
}

bool QueueCore::closed() const noexcept {
  return ctl_->closed.load(std::memory_order_acquire) != 0;  // acquire: pairs with close()
}

std::size_t QueueCore::qsize() const noexcept {
  // relaxed: approximate by contract.
  const std::uint64_t e = ctl_->enqueue_pos.load(std::memory_order_relaxed);
  const std::uint64_t d = ctl_->dequeue_pos.load(std::memory_order_relaxed);
  return e > d ? static_cast<std::size_t>(std::min<std::uint64_t>(e - d, capacity_)) : 0;
}

QueueStats QueueCore::stats() const noexcept {
  Geometry g{};
  g.capacity = capacity_;
  g.slot_payload = slot_payload_;
  g.max_records = max_records_;
  g.heap_blocks = heap_blocks_;
  g.flags = joinable_ ? kJoinableFlag : 0;
  return stats_of(g, *ctl_, records_, heap_words_);
}

QueueResult QueueCore::task_done() noexcept {
  // Read tasks_done first: every task_done() it counts happened after that
  // caller's get() finished, so the delivered counts summed afterwards
  // include those gets (a sum read first could miss one and refuse a valid
  // call).
  for (;;) {
    // seq_cst: also the [wait.sleepers] publication for join().
    std::uint64_t done = ctl_->tasks_done.load(std::memory_order_seq_cst);
    std::uint64_t delivered = 0;
    for (std::uint32_t r = 0; r < max_records_; ++r)
      delivered += word_main(record(r).get_word.load(std::memory_order_seq_cst));
    if (done + 1 > delivered) return QueueResult::value_error;
    if (ctl_->tasks_done.compare_exchange_strong(done, done + 1, std::memory_order_seq_cst)) break;
  }
  notify(ctl_->join);
  return QueueResult::ok;
}

bool QueueCore::join_until(const Clock::time_point* deadline) noexcept {
  auto all_done = [&] {
    // tasks_done first, so a stale (low) read errs towards waiting longer.
    const std::uint64_t done = ctl_->tasks_done.load(std::memory_order_seq_cst);
    std::uint64_t committed = 0, lost = 0;
    for (std::uint32_t r = 0; r < max_records_; ++r) {
      // seq_cst: the predicate side of [wait.sleepers].
      const std::uint64_t pw = record(r).put_word.load(std::memory_order_seq_cst);
      // A put in stage ACTIVE may already have published its item (a
      // consumer may even have got it) before it counts it: count it now,
      // or join() could return while that item is still in the queue.
      committed += word_main(pw) + (word_stage(pw) == Stage::active ? 1 : 0);
      lost += word_aux(record(r).get_word.load(std::memory_order_seq_cst));
    }
    return done + lost >= committed;
  };
  for (;;) {
    Clock::time_point slice = Clock::now() + liveness_;
    if (deadline != nullptr && *deadline < slice) slice = *deadline;
    if (wait_until(ctl_->join, all_done, WaitPolicy{WaitStrategy::blocking, {}}, &slice))
      return true;
    if (deadline != nullptr && Clock::now() >= *deadline) return all_done();
    (void)recover_dead();  // a dead consumer's lost item counts as done
  }
}

QueueStats read_queue_stats_payload(std::span<const std::byte> payload, const std::string& name) {
  const Geometry g = read_geometry(payload, name);
  return stats_of(
      g, *reinterpret_cast<const QueueControl*>(payload.data()),
      reinterpret_cast<const QueueRecord*>(payload.data() + g.records_offset),
      reinterpret_cast<const std::atomic<std::uint64_t>*>(payload.data() + g.heap_offset));
}

// ---- shmbus::wait over many objects (wait_any.cpp) ------------------------------

bool QueueCore::ready(bool for_put) const noexcept {
  if (ctl_ == nullptr) return true;  // a default handle: its own calls say why
  // [wait.sleepers] seq_cst (all three loads): the predicate a waiter re-checks
  // after counting itself a sleeper; pairs with the publications' seq_cst RMWs.
  if (ctl_->closed.load(std::memory_order_seq_cst) != 0) return true;
  const std::uint64_t pos =
      (for_put ? ctl_->enqueue_pos : ctl_->dequeue_pos).load(std::memory_order_seq_cst);
  const std::uint64_t w = slot(pos).word.load(std::memory_order_seq_cst);
  const std::int64_t d = slot_diff(w, pos);
  // As pass_on_not_full(): d < 0 is the previous lap, not yet consumed.
  if (for_put) return d >= 0;
  // As pass_on_not_empty(): an item, a SKIP to step over, or a claim that
  // a get would judge.
  const SlotState st = slot_state(w);
  return !(d < 0 || (d == 0 && (st == SlotState::empty || st == SlotState::writing)));
}

WaitChannel& QueueCore::wait_channel(bool for_put) const noexcept {
  return for_put ? ctl_->not_full : ctl_->not_empty;
}

std::atomic<std::uint32_t>& QueueCore::wake_token(bool for_put) const noexcept {
  return for_put ? ctl_->not_full_waking : ctl_->not_empty_waking;
}

namespace {
// FdBridge::Sleep::woke for a queue's not_empty: the bridge counted itself
// a sleeper; it leaves as a sleeper returning from futex_wait does.
void leave_not_empty(const void* ctx, std::uint32_t ticket) noexcept {
  auto* c = const_cast<QueueControl*>(static_cast<const QueueControl*>(ctx));
  sleeper_leave(c->not_empty.sleepers, ticket);  // [wait.epoch]
  // [queue.token] seq_cst: released on every return, as sleep_until() does.
  c->not_empty_waking.exchange(0, std::memory_order_seq_cst);
}
}  // namespace

int QueueCore::fileno() {
  if (ctl_ == nullptr) throw Error(Errc::invalid_argument, "fileno", "a default queue handle");
  if (fd_bridge_ == nullptr || !fd_bridge_->owned_here()) {
    fd_bridge_ = std::make_unique<FdBridge>(name().c_str());
    rearm_fileno();
  }
  return fd_bridge_->fd();
}

void QueueCore::rearm_fileno() noexcept {
  rearm_on_channel(
      *fd_bridge_, ctl_->not_empty, [this] { return ready(false); }, &leave_not_empty, ctl_,
      std::chrono::duration_cast<std::chrono::microseconds>(liveness_));
}

bool QueueCore::repair_head(bool for_put) noexcept {
  if (ctl_ == nullptr) return false;
  Probe probe;
  // acquire: the slot word names the claimer whose record check_stuck() reads.
  probe.pos = (for_put ? ctl_->enqueue_pos : ctl_->dequeue_pos).load(std::memory_order_acquire);
  probe.word = slot(probe.pos).word.load(std::memory_order_acquire);
  check_stuck(probe);
  // acquire: as above.
  return slot(probe.pos).word.load(std::memory_order_acquire) != probe.word;
}

}  // namespace detail

QueueStats queue_stats(const SegmentView& view) {
  const SegmentInfo& info = view.info();
  if (!info.kind ||
      (*info.kind != ObjectKind::queue && *info.kind != ObjectKind::simple_queue &&
       *info.kind != ObjectKind::joinable_queue && *info.kind != ObjectKind::listener))
    throw Error(Errc::wrong_kind, info.name, "not a queue");
  if (view.payload().empty()) throw Error(Errc::not_ready, info.name, "still initialising");
  return detail::read_queue_stats_payload(view.payload(), info.name);
}

void detail::queue_object_stats(const SegmentView& view, ObjectStats& stats) {
  QueueStats q;
  std::uint64_t records_offset = 0, max_records = 0;
  try {
    q = queue_stats(view);
    // The record bounds below come from a validated copy, like queue_stats's.
    const Geometry g = read_geometry(view.payload(), view.info().name);
    records_offset = g.records_offset;
    max_records = g.max_records;
  } catch (const Error& e) {
    stats.problems.push_back(std::string("queue: ") + e.what());
    return;
  }
  auto counter = [&](const char* n, std::uint64_t v) { stats.counters.emplace_back(n, v); };
  auto gauge = [&](const char* n, std::uint64_t v) {
    stats.gauges.emplace_back(n, static_cast<std::int64_t>(v));
  };
  counter("committed", q.committed);
  counter("delivered", q.delivered);
  counter("dropped", q.dropped);
  counter("lost", q.lost);
  counter("peer_deaths", q.peer_deaths);
  counter("interrupted", q.interrupted);
  if (q.joinable) counter("tasks_done", q.tasks_done);
  gauge("depth", q.depth);
  gauge("capacity", q.capacity);
  gauge("slot_bytes", q.slot_payload);
  gauge("participants", q.participants);
  gauge("closed", q.closed ? 1 : 0);
  gauge("consumers_waiting", q.consumers_waiting);
  gauge("producers_waiting", q.producers_waiting);
  if (q.heap_blocks != 0) {
    gauge("heap_blocks", q.heap_blocks);
    gauge("heap_in_use", q.heap_in_use);
  }
  // Records of dead processes: repaired by the next waiter that needs it,
  // or by recover_dead(); shown so an operator sees a crash happened.
  const auto* records =
      reinterpret_cast<const detail::QueueRecord*>(view.payload().data() + records_offset);
  std::uint64_t dead = 0, dead_busy = 0;
  for (std::uint64_t i = 0; i < max_records; ++i) {
    // acquire: pairs with the [queue.record] stores of the owner.
    const std::uint64_t owner = records[i].owner.load(std::memory_order_acquire);
    if (owner == 0 || is_alive(ProcessId::unpack(owner))) continue;
    ++dead;
    if (detail::word_stage(records[i].put_word.load(std::memory_order_acquire)) !=
            detail::Stage::idle ||
        detail::word_stage(records[i].get_word.load(std::memory_order_acquire)) !=
            detail::Stage::idle)
      ++dead_busy;
  }
  gauge("dead_participants", dead);
  if (dead_busy != 0)
    stats.problems.push_back(std::to_string(dead_busy) +
                             " participant(s) died in the middle of a put/get; the next "
                             "waiter on their slot (or recover_dead()) repairs it");
}

namespace detail {
std::span<std::byte> queue_receive_buffer(std::size_t size) {
  thread_local std::vector<std::byte> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return {buffer.data(), size};
}
}  // namespace detail

BytesQueue BytesQueue::create(std::string_view name, const QueueOptions& options) {
  return BytesQueue(
      detail::QueueCore::create(name, kKind, detail::kBytesTag, options.max_message, options));
}

BytesQueue::BytesQueue(const QueueOptions& options)
    : QueueHandle(detail::QueueCore::create(std::nullopt, kKind, detail::kBytesTag,
                                            options.max_message, options)) {}

BytesQueue::BytesQueue(std::string_view name, const QueueOptions& options)
    : QueueHandle(detail::QueueCore::open(name, kKind, detail::kBytesTag, options)) {}

}  // namespace shmbus
