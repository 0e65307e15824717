// detail::FdBridge — the descriptor behind an object's fileno(): an eventfd
// of the process that asked for it, and one thread of that process that
// turns the object's futex wake-ups into writes of that eventfd.
//
// Why a thread: an eventfd belongs to the process that made it; a sender in
// another (unrelated) process cannot write it without the descriptor
// (pidfd_getfd needs ptrace rights, SCM_RIGHTS a socket per pair). But
// senders already wake futex sleepers, so a thread of the waiting process
// that sleeps like any receiver costs the senders nothing new.
//
// Protocol (all calls but the thread's from the owner's thread, which is
// the thread that receives on the object):
//   - the owner's non-blocking call finds the object not ready: if the
//     bridge is not already sleeping, it clears the descriptor, arms the
//     object as a sleeping receiver would (a pipe marks its ring header, a
//     channel counts a sleeper) and hands the armed word to the thread with
//     sleep_on(); if arming found the object ready, signal() instead;
//   - the thread sleeps on the word (and its control word) in slices; when
//     the word changes, or a slice's check() says the object is ready (a
//     dead peer), it runs woke() (a channel uncounts its sleeper), writes
//     the eventfd and stops sleeping until the next sleep_on().
// So a sender makes at most one wake per empty -> non-empty transition, and
// a process that never asked for a descriptor changes nothing at all.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "shmbus/detail/futex.hpp"

namespace shmbus::detail {

class FdBridge {
 public:
  struct Sleep {
    FutexWaiter word{};  // sleep while these 32 bits read word.expected
    // At every slice's end, in the thread: ready although the word did not
    // change (a dead peer). Shared memory only: never the owner's locals.
    bool (*check)(const void* ctx) noexcept = nullptr;
    // Once the sleep ends for good (fired, or the bridge stops), in the
    // thread: undoes what the arm left in shared memory, if anything
    // (`ticket`: the arm's sleeper ticket, [wait.epoch] in futex.hpp).
    void (*woke)(const void* ctx, std::uint32_t ticket) noexcept = nullptr;
    const void* ctx = nullptr;
    std::uint32_t ticket = 0;
    std::chrono::microseconds slice{10'000};
  };

  // An eventfd (non-blocking, close-on-exec) and the thread; throws
  // Error(system) when either cannot be made.
  explicit FdBridge(const char* object_name);
  FdBridge(const FdBridge&) = delete;
  FdBridge& operator=(const FdBridge&) = delete;
  // Stops and joins the thread and closes the descriptor (in a forked
  // child, whose copy has no thread, it only closes the descriptor).
  ~FdBridge();

  [[nodiscard]] int fd() const noexcept { return efd_; }
  // False in a forked child: the thread is the parent's.
  [[nodiscard]] bool owned_here() const noexcept;
  // The thread sleeps on an armed word and has not fired (see above): the
  // descriptor is clear and nothing came; do not arm again. While the
  // thread is firing (between its claim and its signal) this waits for it,
  // so that a false answer always finds the descriptor already signalled:
  // it spins a little, then sleeps (the thread often shares the owner's
  // cpu, and may have been preempted there by the owner it woke).
  [[nodiscard]] bool sleeping() noexcept;
  // The descriptor polls readable from now until clear().
  void signal() noexcept;
  // The descriptor stops polling readable.
  void clear() noexcept;
  // The thread sleeps on `s` until it fires.
  void sleep_on(const Sleep& s) noexcept;

 private:
  static void* run(void* self) noexcept;
  void loop() noexcept;

  pid_t owner_;
  int efd_ = -1;
  pthread_t thread_{};
  std::mutex m_;
  Sleep next_{};       // under m_: the sleep handed over
  bool quit_ = false;  // under m_
  // Futex word of the thread (process-local memory): bumped by every
  // sleep_on() and by the destructor.
  std::atomic<std::uint32_t> control_{0};
  // [bridge.state] kIdle -> kArmed (owner, sleep_on) -> kFiring (thread)
  // [-> kFiringWatched (owner, CAS: it sleeps on this futex word)] -> kIdle
  // (thread, exchange after signal(); a futex_wake if it was watched).
  static constexpr std::uint32_t kIdle = 0, kArmed = 1, kFiring = 2, kFiringWatched = 3;
  static constexpr int kFiringSpins = 64;  // ~ one write(2) on another cpu
  std::atomic<std::uint32_t> state_{kIdle};
};

// FdBridge::Sleep::woke for a WaitChannel: the bridge counted itself a
// sleeper (ctx: the WaitChannel); it leaves as a returning sleeper does.
// A process killed while its bridge is counted is repaired like any dead
// sleeper ([wait.epoch] in futex.hpp).
inline void leave_channel(const void* ctx, std::uint32_t ticket) noexcept {
  auto* ch = const_cast<WaitChannel*>(static_cast<const WaitChannel*>(ctx));
  sleeper_leave(ch->sleepers, ticket);
}

// The owner's half of the protocol for an object waited on through a
// WaitChannel whose predicate is `ready` (seq_cst loads): count the bridge
// a sleeper ([wait.sleepers]), read seq, re-check, then signal or hand the
// sleep over. `woke`/`ctx` undo the count (leave_channel and the channel by
// default); `check` as in Sleep.
template <class Ready>
void rearm_on_channel(
    FdBridge& b, WaitChannel& ch, Ready&& ready,
    void (*woke)(const void*, std::uint32_t) noexcept = &leave_channel, const void* ctx = nullptr,
    std::chrono::microseconds slice = std::chrono::microseconds(10'000)) noexcept {
  if (!b.owned_here() || b.sleeping()) return;  // counted asleep, nothing came yet
  b.clear();
  if (ctx == nullptr) ctx = &ch;
  // [wait.sleepers] counted before the seq read and the re-check.
  std::uint32_t seq = 0;
  const std::uint32_t ticket = sleeper_enter(ch, seq);
  FdBridge::Sleep s;
  s.word = {&ch.seq, seq};
  if (ready()) {
    woke(ctx, ticket);
    b.signal();
    return;
  }
  s.ticket = ticket;
  s.woke = woke;
  s.ctx = ctx;
  s.slice = slice;
  b.sleep_on(s);
}

}  // namespace shmbus::detail
