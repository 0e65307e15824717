// Barrier — a process-shared barrier after Python's multiprocessing.Barrier:
// `parties` processes (or threads) call wait(); the last to arrive runs the
// optional action and releases them all.
//
//   shmbus::Barrier start{3};                        // anonymous, as Barrier(3)
//   auto b = shmbus::Barrier::create("start", 3);    // named: coordinator
//   auto same = shmbus::Barrier::open("start");      // each worker
//   if (auto r = same.wait_for(5s)) { use(r.index); } else { /* broken */ }
//
// Who may call what: any thread of any process that opened it (or inherited
// it across fork() and attach()ed). create/open throw shmbus::Error; wait,
// abort, reset and the queries are noexcept (an action that throws breaks
// the barrier).
//
// Breaking (BrokenBarrierError analogue): a wait that times out, abort(),
// an action that throws, or the death of a registered party while others
// wait breaks the barrier: every current and later wait() returns
// broken until reset(). Parties register when they open() or attach() the
// barrier, or on their first wait(), and deregister when their handle is
// destroyed; a waiter checks registered parties with is_alive() every
// detail::kOwnerCheckPeriod (10 ms). A process that exits without
// destroying its handle and without a clean exit (killed, or _exit after a
// bare fork()) stays registered and, once dead, breaks a later wait; a
// shmbus::Process child whose callable returns, or a process that calls
// exit(), leaves its slots (detail/exit_actions.hpp), so the barrier is
// reusable by the next set of parties. At most detail::kBarrierMembers (64)
// processes are tracked; more still work but are not watched.
//
// Memory ordering: everything a party wrote before wait() is visible to
// every party after its wait() returns success (and the action sees what
// all parties wrote before arriving).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// Live statistics of a Barrier, read without writing or blocking (e.g. from
// a SegmentView's payload); nullopt if too small.
struct BarrierInfo {
  std::uint32_t parties = 0;
  std::uint32_t n_waiting = 0;
  bool broken = false;
  std::uint32_t generation = 0;
  std::uint32_t registered = 0;  // processes registered as parties
};
[[nodiscard]] std::optional<BarrierInfo> read_barrier_info(const std::byte* payload,
                                                           std::size_t size) noexcept;

struct BarrierResult {
  bool broken = false;      // the barrier broke (timeout, abort, dead party)
  std::uint32_t index = 0;  // arrival index 0..parties-1 when not broken
  explicit operator bool() const noexcept { return !broken; }
};

class Barrier {
 public:
  // Errc::invalid_argument unless 1 <= parties <= 2^20. The action runs in
  // the process of the last arriver, if that process's handle has one.
  static Barrier create(std::string_view name, std::uint32_t parties,
                        std::function<void()> action = {}, const SegmentOptions& options = {});
  static Barrier open(std::string_view name, std::function<void()> action = {},
                      const SegmentOptions& options = {});
  static bool unlink(std::string_view name) { return detail::Segment::unlink(name); }

  // An anonymous barrier, as Python's Barrier(parties, action): unnamed
  // memory that fork()ed children share. Errc::invalid_argument unless
  // 1 <= parties <= 2^20.
  explicit Barrier(std::uint32_t parties, std::function<void()> action = {});
  Barrier(Barrier&&) noexcept;
  Barrier& operator=(Barrier&&) noexcept;
  ~Barrier();

  BarrierResult wait() noexcept { return wait_until_(nullptr); }
  template <class Rep, class Period>
  BarrierResult wait_for(std::chrono::duration<Rep, Period> d) noexcept {
    const auto deadline = detail::deadline_after(d);
    return wait_until_(&deadline);
  }
  BarrierResult wait_until(Clock::time_point deadline) noexcept { return wait_until_(&deadline); }

  // Breaks the barrier: waiters and later waits return broken.
  void abort() noexcept;
  // Back to the initial state; current waiters return broken.
  void reset() noexcept;

  [[nodiscard]] std::uint32_t parties() const noexcept { return state_->parties; }
  [[nodiscard]] std::uint32_t n_waiting() const noexcept;
  [[nodiscard]] bool broken() const noexcept;

  // Attaches to the segment and registers this process as a party.
  void attach();
  [[nodiscard]] const std::string& name() const noexcept { return segment_.name(); }

 private:
  Barrier(detail::Segment segment, std::function<void()> action);
  static detail::Segment make(detail::SegmentName name, std::uint32_t parties,
                              const SegmentOptions& options);
  BarrierResult wait_until_(const Clock::time_point* deadline) noexcept;
  void register_self() noexcept;
  void deregister_self() noexcept;
  // Ends generation `gen` as broken (if still current) and wakes everyone.
  void break_generation(std::uint32_t gen, bool mark_broken) noexcept;
  // Wakes the sleepers of a generation just ended (after the gen bump).
  void wake_generation() noexcept;
  bool lock_guard() noexcept;
  bool any_member_dead() noexcept;

  detail::Segment segment_;
  detail::BarrierState* state_ = nullptr;
  std::function<void()> action_;
  // Packed id this handle registered as (0: none). Threads sharing the
  // handle read it lock-free; changes are made under a process-wide mutex.
  std::atomic<std::uint64_t> registered_as_{0};
  // The slot this handle claimed (under the registration mutex), whose
  // exit action frees it at a clean exit (detail/exit_actions.hpp).
  std::atomic<std::uint64_t>* party_slot_ = nullptr;
};

}  // namespace shmbus
