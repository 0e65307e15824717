#include "shmbus/detail/fd_bridge.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "shmbus/detail/fault.hpp"
#include "shmbus/error.hpp"
#include "shmbus/process_id.hpp"

namespace shmbus::detail {

FdBridge::FdBridge(const char* object_name) : owner_(this_process().pid) {
  efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd_ < 0) {
    throw Error(Errc::system, object_name, std::string("fileno: eventfd: ") + std::strerror(errno));
  }
  if (const int rc = ::pthread_create(&thread_, nullptr, &FdBridge::run, this); rc != 0) {
    ::close(efd_);
    throw Error(Errc::system, object_name,
                std::string("fileno: pthread_create: ") + std::strerror(rc));
  }
}

FdBridge::~FdBridge() {
  if (owned_here()) {
    {
      std::scoped_lock g(m_);
      quit_ = true;
    }
    // seq_cst RMW: the thread's futex_waitv compares this word.
    control_.fetch_add(1, std::memory_order_seq_cst);
    (void)futex_wake(control_);
    (void)::pthread_join(thread_, nullptr);
  }
  ::close(efd_);
}

// this_process(): cached (refreshed in a forked child), so a re-arm makes
// no getpid() system call.
bool FdBridge::owned_here() const noexcept { return this_process().pid == owner_; }

bool FdBridge::sleeping() noexcept {
  // [bridge.state] acquire: pairs with the thread's release exchange of
  // kIdle after its signal(), so a kIdle seen here finds the descriptor
  // signalled.
  std::uint32_t s = state_.load(std::memory_order_acquire);
  if (s == kArmed) return true;
  // Firing: the thread is inside one write(2), or was preempted there,
  // often by this very thread (its wake-up made us runnable on the cpu they
  // share). Spin briefly for a thread on another cpu, then sleep until its
  // kIdle: spinning on would hold the cpu it needs until the scheduler's
  // tick (4 ms), and returning without the signal landed would leave it to
  // land after our clear().
  for (int i = 0; i < kFiringSpins && s != kIdle; ++i) {
    cpu_relax();
    s = state_.load(std::memory_order_acquire);  // [bridge.state] as above
  }
  while (s != kIdle) {
    // [bridge.state] acquire (failure too): as above. Tells the thread to
    // wake us when it stores kIdle.
    if (s == kFiring && !state_.compare_exchange_weak(s, kFiringWatched, std::memory_order_acquire,
                                                      std::memory_order_acquire))
      continue;
    // No deadline: the thread is inside (or preempted in) one write(2).
    (void)futex_wait(state_, kFiringWatched, nullptr);
    s = state_.load(std::memory_order_acquire);  // [bridge.state] as above
  }
  return false;
}

void FdBridge::signal() noexcept {
  const std::uint64_t one = 1;
  (void)!::write(efd_, &one, sizeof one);  // EAGAIN only at a counter near 2^64
}

void FdBridge::clear() noexcept {
  std::uint64_t v = 0;
  (void)!::read(efd_, &v, sizeof v);  // EAGAIN: already clear
}

void FdBridge::sleep_on(const Sleep& s) noexcept {
  {
    std::scoped_lock g(m_);
    next_ = s;
  }
  // [bridge.state] release: the thread that sees kArmed (under the mutex
  // anyway) takes this next_. Only the owner moves kIdle -> kArmed.
  state_.store(kArmed, std::memory_order_release);
  // seq_cst RMW: the thread's futex wait compares this word.
  control_.fetch_add(1, std::memory_order_seq_cst);
  (void)futex_wake(control_);
}

void* FdBridge::run(void* self) noexcept {
  static_cast<FdBridge*>(self)->loop();
  return nullptr;
}

void FdBridge::loop() noexcept {
  Sleep cur{};
  bool have = false;  // cur is armed and not yet fired
  for (;;) {
    // seq_cst: read before next_ so that a later sleep_on() changes it.
    const std::uint32_t seen = control_.load(std::memory_order_seq_cst);
    {
      std::scoped_lock g(m_);
      if (quit_) break;
      // Armed and not yet taken: take next_. (The owner arms only while
      // we are idle, so no armed sleep is dropped.)
      // [bridge.state] acquire: pairs with sleep_on()'s release.
      if (!have && state_.load(std::memory_order_acquire) == kArmed) {
        cur = next_;
        have = true;
      }
    }
    if (!have) {
      (void)futex_wait(control_, seen, nullptr);
      continue;
    }
    const std::array<FutexWaiter, 2> words{FutexWaiter{&control_, seen}, cur.word};
    const Clock::time_point slice = Clock::now() + cur.slice;
    const FutexResult r = futex_wait_any(words, &slice);
    // seq_cst: the armed word is a futex word of shared memory (its low
    // 32 bits, as futex_waitv compares it); pairs with the waker's publication.
    const std::uint32_t now =
        __atomic_load_n(static_cast<const std::uint32_t*>(cur.word.word), __ATOMIC_SEQ_CST);
    bool fired = now != cur.word.expected;
    if (!fired && r == FutexResult::timed_out && cur.check != nullptr) fired = cur.check(cur.ctx);
    if (!fired) continue;
    if (cur.woke != nullptr) cur.woke(cur.ctx, cur.ticket);
    have = false;
    // [bridge.state] the owner waits out kFiring (sleeping()); relaxed: the
    // release exchange below publishes the signal.
    state_.store(kFiring, std::memory_order_relaxed);
    fault_point(FaultPoint::fd_firing);
    signal();
    // [bridge.state] release: pairs with sleeping()'s acquire. The owner
    // asleep in sleeping() marked kFiringWatched: wake it.
    if (state_.exchange(kIdle, std::memory_order_release) == kFiringWatched)
      (void)futex_wake(state_);
  }
  if (have && cur.woke != nullptr) cur.woke(cur.ctx, cur.ticket);
}

}  // namespace shmbus::detail
