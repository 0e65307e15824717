// Event — a process-shared flag after Python's multiprocessing.Event: set()
// wakes every waiter, clear() resets, wait() blocks until it is set.
//
//   shmbus::Event done;                                   // anonymous, as Event()
//   auto ready = shmbus::Event::create("ready");          // named: producer
//   auto same = shmbus::Event::open("ready");             // consumer
//   if (!same.wait_for(1s)) { /* timed out */ }
//
// Who may call what: any thread of any process that opened the event (or
// inherited it across fork(): an anonymous one is reached no other way). create/open throw
// shmbus::Error; set/clear/is_set/wait are noexcept.
//
// Memory ordering: everything a process wrote before set() is visible to a
// process whose wait() (or is_set()) returns true because of that set().
//
// Fast path: set() with nobody asleep is a store and a load (and nothing at
// all if already set); FUTEX_WAKE only when a sleeper is counted. A waiter
// spins for its WaitPolicy's budget (adaptive, default 50 us) before
// sleeping on a shared futex.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "shmbus/detail/fd_bridge.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// Live statistics of an Event, read without writing or blocking (e.g. from
// a SegmentView's payload); nullopt if the payload is too small.
struct EventInfo {
  bool is_set = false;
  std::uint32_t sleepers = 0;  // waiters counted asleep (a dead one until the repair, [wait.epoch])
};
[[nodiscard]] std::optional<EventInfo> read_event_info(const std::byte* payload,
                                                       std::size_t size) noexcept;

namespace detail {
struct WaitAccess;  // shmbus::wait over any mix of objects (bus: wait_any.hpp)
}  // namespace detail

class Event {
 public:
  static Event create(std::string_view name, const SegmentOptions& options = {});
  static Event open(std::string_view name, const SegmentOptions& options = {});
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // An anonymous event, as Python's Event(): unnamed memory that fork()ed
  // children share; nothing in /dev/shm. Throws Errc::system when out of
  // memory or descriptors.
  Event();

  void set() noexcept;
  void clear() noexcept;
  [[nodiscard]] bool is_set() const noexcept;

  // Returns once set (wait() always true; the timed forms false on timeout).
  bool wait() noexcept { return wait_until_(nullptr); }
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> d) noexcept {
    const auto deadline = detail::deadline_after(d);
    return wait_until_(&deadline);
  }
  [[nodiscard]] bool wait_until(Clock::time_point deadline) noexcept {
    return wait_until_(&deadline);
  }
  // is_set(); with a descriptor (fileno()), false also re-arms it.
  [[nodiscard]] bool try_wait() const noexcept;

  // A file descriptor (an eventfd of this process) that polls readable
  // while the event may be set, for poll, epoll, Boost.Asio, libuv.
  // Level-triggered, re-armed by this handle: it stays readable until
  // try_wait() here returns false (or clear() is called here), then turns
  // readable at the next set(). The first call starts one thread in this
  // process that sleeps on the event as wait() would (shmbus/wait_any.hpp);
  // set() then wakes it as it wakes any waiter. Throws Error(system) if the
  // eventfd or the thread cannot be made.
  [[nodiscard]] int fileno();
  void attach() { segment_.attach(); }
  void set_wait_policy(const WaitPolicy& policy) noexcept { policy_ = policy; }
  [[nodiscard]] const std::string& name() const noexcept { return segment_.name(); }

 private:
  friend struct detail::WaitAccess;
  Event(detail::Segment segment, detail::EventState* state)
      : segment_(std::move(segment)), state_(state) {}
  static Event make(detail::SegmentName name, const SegmentOptions& options);
  bool wait_until_(const Clock::time_point* deadline) noexcept;

  detail::Segment segment_;
  detail::EventState* state_ = nullptr;
  WaitPolicy policy_{};
  std::unique_ptr<detail::FdBridge> fd_bridge_;  // fileno(); null until asked for
};

}  // namespace shmbus
