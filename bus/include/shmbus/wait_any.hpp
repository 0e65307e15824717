// shmbus::wait over any mix of objects — multiprocessing.connection.wait()
// for Connection ends, queues, Events, Semaphores, Process sentinels and raw
// file descriptors together.
//
//   std::vector<std::size_t> ready;                 // reused: no allocation in a loop
//   for (;;) {
//     shmbus::wait({results, tasks, stop_event, worker, shmbus::Waitable::fd(sock)}, ready,
//                  100ms);
//     for (std::size_t i : ready) handle(i);        // positions in the list, in order
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
//   Listener          a client waits to be accepted (accept() would not
//                     wait), or the listener is closed; a client that gave
//                     up meanwhile makes it ready for nothing (try_accept()
//                     then returns nullopt).
//   Process           exited (its sentinel, a pidfd, polls readable), or
//                     already joined when the Waitable was made (it holds
//                     the sentinel's number: make it again after a join).
//   Subscriber        recv() would not wait: a message (or a lap) at its
//                     position, the publisher closed or dead, this
//                     subscriber evicted; also a closed or moved-from one.
//                     A busy_poll topic's publisher wakes nobody: a set
//                     holding its subscriber spins (see below).
//   Waitable::fd      poll(2) reports any of `events` (or an error/hangup).
//
// How it waits. A set of shmbus objects only keeps the pipe-only wait()'s
// design: no system call while something is ready; else it spins like its
// objects (until the deadline if one of them busy-polls, whose notifier
// wakes nobody; else as an adaptive object, none if one blocks), then
// sleeps with one futex_waitv(2) on the objects' futex words: an Event's,
// Semaphore's, queue's or topic's wait channel, counted as a sleeper as
// its own wait counts itself; for pipe ends, two or more share one word,
// the calling thread's wake slot. Each end is armed as a sleeping recv()
// arms its ring's header word (one heavy fence for all of them), naming
// the slot, and its sender, finding the mark, wakes the slot instead of
// the word ([ring.redirect], detail/wake_slot.hpp: a per-user table of
// 1024 words, /dev/shm/shmbus-wake-slots.<euid>, one claimed by each
// thread that waits over two pipe ends or more, held until it exits).
// futex_waitv costs about 0.5 us per word per call (the kernel looks up
// each shared word's key every time), so 64 pipe ends cost one word, not
// 64. Where no slot can be had (the table cannot be made, mapped or
// validated, or all 1024 are held by live threads; or after a missed
// wake-up, see detail/wake_slot.hpp), or for a single end, each end's
// own word, as recv(). Senders pay nothing new on a send that
// finds no waiter; one that finds a redirecting waiter reads one more word
// and wakes the slot (its first such wake maps the table). A waiter killed
// while armed leaves its ring naming its slot: the next message wakes that
// slot once (nobody, or whoever reclaimed it from the dead owner: a
// spurious wake-up). A waiter killed while counted on a channel costs the
// notifiers at most 4 wakes for nobody before they repair the count
// ([wait.epoch] in detail/futex.hpp).
//
// What a call returns: the objects found ready by one pass, in order.
// Sets of 16 objects or more remember (per thread) the object found ready
// last time ([wait.hint]): when it is ready again the call returns it
// alone, without a pass over the others; while waiting, such a set whose
// objects all spin first looks for up to 20 us at hot words only (that
// object every step, 4 others in turn every 8th step), again without a
// whole pass. A whole pass
// (every object's state, a peer's close, the descriptors) runs at least
// every 16th call, so an object that became ready meanwhile is reported
// within 16 calls even while another is ready every time. Smaller sets, and
// any call with a zero timeout whose hinted object is not ready, always
// make a whole pass. Descriptors in a spinning set are polled by whole
// passes only (as before, one ppoll each), so one that fires while the
// set spins is seen within those 20 us.
//
// More than 127 objects with a word of their own (futex_waitv takes 128
// words; one is kept for the descriptor watcher, one for the wake slot;
// pipe ends on the slot count for none): every object is still checked on
// every pass, but only a window of them is slept on at once, in naps of
// 200 us that rotate the window, so an object outside the window is seen
// within a nap.
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
// hop), a wake by a shmbus object does not.
//
// Measured (bench/wait_any_bench.cpp, 8 B round trips, p50, 2-vCPU VM
// shared with other builds (load 6), ratios within one run;
// docs/performance.md): over 64 pipes with one active, busy-poll
// 0.87-0.98x and adaptive 0.85-1.00x the same traffic on one pipe with
// plain recv (a call answered from the hint runs about 80 instructions, a
// whole pass about 35 an object: bench/cost/wait_cost.cpp); with an idle
// descriptor in the set, adaptive 390-480 ns beside 410-450 ns (was 2.8 us
// when every call made a ppoll). Blocking over 64 pipes 0.90-1.16x
// (median 1.01x) Linux epoll_wait over 64 pipes, 0.98-1.16x one pipe
// (five pairs, load 10-12: the ends share the thread's wake slot, so
// futex_waitv gets one word; it got 64 and read 1.12-1.16x before);
// fileno() + epoll_wait 1.15-1.25x a raw eventfd ping-pong.
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
// Otherwise wait() neither allocates (the vector form, once `ready` and
// the thread's scratch have held every position) nor throws, except that a
// thread's first wait with a descriptor throws Error(system) if its
// watcher thread cannot be started.
//
// Threads: one thread waits on a given pipe end at a time (it is the end's
// receiving side), as for recv(). Queues, Events and Semaphores may be
// waited on by any number of threads and processes.
//
// fileno() (Connection, every queue, Event, Semaphore, Listener, topic
// Subscriber; a Process's sentinel() is already a pidfd): an eventfd of the
// calling process for poll/epoll/Asio/libuv. An eventfd cannot be written by an unrelated
// process (pidfd_getfd needs ptrace rights, SCM_RIGHTS a socket per pair),
// so the first fileno() of an object starts one thread in this process
// (detail/fd_bridge.hpp) that sleeps on the object exactly as a blocked
// receiver does and writes the eventfd when woken. Senders keep their code:
// with nobody registered they make no system call and no extra shared
// write; with one, at most one futex wake per empty -> non-empty transition
// (the registration is a sleeper, re-armed only after the handle's own
// non-blocking call found the object empty). Level-triggered: readable
// from the moment the object may be ready until a non-blocking call on that
// handle finds it not ready (Connection::poll() false, try_get empty,
// try_acquire false, Event::try_wait false or clear()); it may be readable
// once for nothing (another consumer took the item). Cost: a thread per
// object with a descriptor, and two thread hops per wake (sender -> bridge
// thread -> the eventfd's waiter). Do not mix, on one pipe end, fileno()
// with a blocking recv() or wait(): they sleep on the same word, and a
// sender wakes one sleeper per message (the other sees it at its 10 ms
// slice). A process killed while registered on a pipe leaves its mark on
// the ring until the next message takes it (one wake for nobody); on a
// queue, Event or Semaphore it stays counted as a sleeper until the count
// is repaired: at most 4 futex wakes for nobody in a row, as for any killed
// sleeper ([wait.epoch] in detail/futex.hpp).
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
#include "shmbus/listener.hpp"
#include "shmbus/process.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/semaphore.hpp"
#include "shmbus/topic.hpp"
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
// from a Connection, queue, Event, Semaphore, Listener, topic Subscriber or
// Process, so a braced list of objects is a list of Waitables.
class Waitable {
 public:
  Waitable(Connection& c);           // readable (see above)
  Waitable(Event& e) noexcept;       // set
  Waitable(Semaphore& s) noexcept;   // acquirable
  Waitable(Subscriber& s) noexcept;  // a topic subscriber: readable (see above)
  Waitable(const Process& p);        // exited
  Waitable(Listener& l) noexcept     // a client to accept
      : Waitable(&detail::queue_ops(false), &l.backlog_, &l) {}
  template <class Q>
  requires std::is_base_of_v<detail::QueueHandle, Q> Waitable(Q& q)
  noexcept  // readable
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
