// Shared vocabulary of the queue family (Queue<T>, BytesQueue, SimpleQueue<T>,
// JoinableQueue<T>): results, options and statistics. See shmbus/queue.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "shmbus/detail/segment.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// Result of a hot-path queue call (put/get/task_done and their forms).
enum class QueueResult : std::uint8_t {
  ok,
  full,              // try_put: no free slot
  empty,             // try_get: nothing committed at the head
  timed_out,         // _for/_until: deadline passed
  closed,            // put after close(); get after close() once drained
  too_large,         // message above the slot size
  buffer_too_small,  // get: out buffer smaller than the slot size
  value_error,       // task_done() called more times than items were got
  no_record,         // every participant record holds a live thread
  corrupted,         // a length read from shared memory is out of range
  decode_error,      // get of a codec type: the message is not a T (it was consumed)
};

[[nodiscard]] std::string_view to_string(QueueResult r) noexcept;

struct QueueOptions {
  // Slots in the ring, rounded up to a power of two (>= 2).
  std::size_t capacity = 1024;
  // BytesQueue and codec queues (Queue<std::string>, ...) only: the slot
  // size, chosen at creation; messages up to this size travel inside the
  // ring.
  std::size_t max_message = 240;
  // BytesQueue and codec queues only: larger messages, up to this size, go
  // through a shared heap of `heap_blocks` blocks in the segment (0: no
  // heap for a BytesQueue, 1 MiB for a codec queue; above the limit put()
  // returns too_large).
  std::size_t max_large_message = 0;
  std::uint32_t heap_blocks = 8;
  // Participant records: processes x threads that use the queue at once.
  std::uint32_t max_participants = 256;
  WaitPolicy policy{};
  SegmentOptions segment{};
  // How long a blocked call waits on a slot whose claimer it has not yet
  // checked for liveness; the bound on how long a dead peer can stall a
  // survivor (plus one /proc read per check).
  std::chrono::milliseconds liveness_interval{10};
};

// Live counters of one queue, read from shared memory without writing or
// blocking (so figures taken while the queue runs are a racy snapshot).
// Exactly-once accounting, once no operation is in flight:
//   committed == delivered + lost + depth
// and every put that claimed a slot is either committed or dropped.
struct QueueStats {
  std::uint64_t capacity = 0;
  std::uint64_t slot_payload = 0;
  std::uint64_t committed = 0;     // messages published by producers
  std::uint64_t delivered = 0;     // messages handed to a consumer
  std::uint64_t dropped = 0;       // half-written by a producer that died: never committed
  std::uint64_t lost = 0;          // committed, claimed by a consumer that died before release
  std::uint64_t peer_deaths = 0;   // dead participants' records recovered (a
                                   // process that exits without destroying its
                                   // handle counts too)
  std::uint64_t interrupted = 0;   // of those, killed in the middle of a put/get
  std::uint64_t depth = 0;         // enqueue_pos - dequeue_pos (slots claimed, not yet consumed)
  std::uint64_t participants = 0;  // records held (live or not yet recovered)
  std::uint64_t tasks_done = 0;    // JoinableQueue
  std::uint64_t heap_blocks = 0;   // BytesQueue large-message heap
  std::uint64_t heap_in_use = 0;   // blocks allocated or queued
  std::uint64_t consumers_waiting = 0;  // gets asleep on the futex now (racy snapshot)
  std::uint64_t producers_waiting = 0;  // puts asleep on the futex now (racy snapshot)
  bool closed = false;
  bool joinable = false;
};

}  // namespace shmbus
