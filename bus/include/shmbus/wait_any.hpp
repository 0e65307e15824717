// shmbus::wait over any mix of objects — multiprocessing.connection.wait()
// for Connection ends, queues, Events, Semaphores, Process sentinels and raw
// file descriptors together.
//
//   std::vector<std::size_t> ready;                 // reused: no allocation in a loop
//   for (;;) {
//     shmbus::wait({results, tasks, stop, worker, shmbus::Waitable::fd(sock)}, ready, 100ms);
//     for (std::size_t i : ready) { ... }           // positions in the list, in order
//   }
//
// What makes each kind ready (a wait returns at once for a ready one):
//   Connection        recv() would not wait: a message, end of file, or a
//                     dead peer (its recv then reports the error); also a
//                     closed or moved-from end, or a corrupted ring.
//   Queue family      readable: get() would not wait (an item, or closed);
//                     Waitable::writable(q): put() would not wait (a free
//                     slot, or closed). A heap queue's large put may still
//                     wait for a heap block.
//   Event             set.
//   Semaphore         acquirable (value > 0); wait() takes nothing.
//   Process           exited (its sentinel, a pidfd, polls readable), or
//                     already joined.
//   Waitable::fd      poll(2) reports any of `events` (or an error/hangup).
//
// How it waits. A set of shmbus objects only keeps the pipe-only wait()'s
// design: no system call while something is ready; else it spins like its
// objects (none if one of them blocks, forever if all busy-poll), then
// sleeps with one futex_waitv(2) on every object's futex word (a pipe end's
// ring header, armed as a sleeping recv() arms it, with one heavy fence for
// all of them; an Event's, Semaphore's or queue's wait channel, counted as a
// sleeper as its own wait counts itself). Senders pay nothing new: they
// wake these words as they wake their own sleepers.
//
// More than 127 objects (futex_waitv takes 128 words; one is kept for the
// descriptor watcher): every object is still checked on every pass, but
// only a window of 127 is slept on at once, in naps of 200 us that rotate
// the window, so an object outside the window is seen within a nap.
//
// A set with a file descriptor (a sentinel, a socket): the calling thread
// still sleeps in futex_waitv on the objects' words, plus one word of its
// own; a watcher thread (one per waiting thread, started by its first such
// wait and parked on a futex between waits) sleeps in ppoll(2) on the
// descriptors and wakes that word when one fires. Cost, on top of the
// shmbus-only wait: the descriptors are polled (one ppoll with a zero
// timeout) before sleeping and after every wake, and every sleep hands the
// list to the watcher and takes it back (two futex wakes and one eventfd
// write); a wake by a descriptor goes through the watcher (one more thread
// hop), a wake by a shmbus object does not. Figures: README, "wait()".
//
// Liveness: a pipe end whose peer died, or a queue whose head is held by a
// dead participant (repaired as a get() would), is seen within 10 ms.
//
// Errors: an object that cannot be waited on at all (a Connection that only
// sends, a Process never started, a negative descriptor) throws
// Error(invalid_argument) when its Waitable is made; a closed, moved-from
// or corrupted object is reported ready, and its own call then says why.
// wait() with an empty list and no timeout throws Error(invalid_argument);
// with a timeout it sleeps that long, as Python's wait([], t) does.
// Otherwise wait() is noexcept in effect: it neither allocates (the vector
// form, once `ready` has held every position) nor throws.
//
// Threads: one thread waits on a given pipe end at a time (it is the end's
// receiving side), as for recv(). Queues, Events and Semaphores may be
// waited on by any number of threads and processes.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "shmbus/connection.hpp"
#include "shmbus/event.hpp"
#include "shmbus/process.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/semaphore.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

namespace detail {
struct WaitOps;     // how wait() treats one kind of object (wait_any.cpp)
struct WaitAccess;  // what it needs of the objects' insides
struct WaitAny;     // one call of wait()
const WaitOps& queue_ops(bool writable) noexcept;
QueueCore& queue_core_of(QueueHandle& q) noexcept;
}  // namespace detail

// A view of one object for wait(): it refers to the object (which must
// outlive the wait), it owns nothing, and it is cheap to copy. Implicit
// from a Connection, queue, Event, Semaphore or Process, so a braced list
// of objects is a list of Waitables.
class Waitable {
 public:
  Waitable(Connection& c);        // readable (see above)
  Waitable(Event& e) noexcept;    // set
  Waitable(Semaphore& s) noexcept;  // acquirable
  Waitable(const Process& p);     // exited
  template <class Q>
    requires std::is_base_of_v<detail::QueueHandle, Q>
  Waitable(Q& q) noexcept  // readable
      : Waitable(&detail::queue_ops(false), &detail::queue_core_of(q), &q) {}
  // SimpleQueue hides its base (Waitable is its friend): readable too.
  template <class T>
  Waitable(SimpleQueue<T>& q) noexcept
      : Waitable(&detail::queue_ops(false),
                 &detail::queue_core_of(static_cast<detail::QueueHandle&>(q)), &q) {}

  // Ready when put() would not wait.
  template <class Q>
    requires std::is_base_of_v<detail::QueueHandle, Q>
  [[nodiscard]] static Waitable writable(Q& q) noexcept {
    return Waitable(&detail::queue_ops(true), &detail::queue_core_of(q), &q);
  }
  // A raw descriptor; `events` as for poll(2) (POLLIN, POLLOUT, ...).
  [[nodiscard]] static Waitable fd(int fd, short events = POLLIN);

  // The object's file descriptor for a descriptor Waitable (a Process's
  // sentinel), else -1.
  [[nodiscard]] int descriptor() const noexcept { return fd_; }
  // Whether this views `object` (for a descriptor: never).
  [[nodiscard]] bool refers_to(const void* object) const noexcept { return object == view_of_; }

 private:
  friend struct detail::WaitAccess;
  friend struct detail::WaitAny;
  friend void wait(std::span<const Waitable> items, std::vector<std::size_t>& ready,
                   std::optional<Clock::duration> timeout);
  Waitable(const detail::WaitOps* ops, void* obj, const void* view_of) noexcept
      : ops_(ops), obj_(obj), view_of_(view_of) {}

  const detail::WaitOps* ops_ = nullptr;  // null: a descriptor (fd_)
  void* obj_ = nullptr;                   // the object, or what it waits through
  const void* view_of_ = nullptr;         // the user's object, for refers_to()
  int fd_ = -1;
  short events_ = 0;
};

// Waits until at least one of `items` is ready or `timeout` passes (none:
// forever) and returns the positions of the ready ones, in order (empty on
// timeout).
[[nodiscard]] std::vector<std::size_t> wait(std::span<const Waitable> items,
                                            std::optional<Clock::duration> timeout = std::nullopt);
[[nodiscard]] std::vector<std::size_t> wait(std::initializer_list<Waitable> items,
                                            std::optional<Clock::duration> timeout = std::nullopt);
// The same into `ready` (cleared first), reusing its capacity.
void wait(std::span<const Waitable> items, std::vector<std::size_t>& ready,
          std::optional<Clock::duration> timeout = std::nullopt);
void wait(std::initializer_list<Waitable> items, std::vector<std::size_t>& ready,
          std::optional<Clock::duration> timeout = std::nullopt);

}  // namespace shmbus
