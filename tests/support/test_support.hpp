// Helpers shared by shmbus tests: unique object names with RAII cleanup,
// forking children with a deadline, and polling a condition with a
// deadline. No test sleeps to "wait long enough": it waits for something.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/error.hpp"

namespace shmbus::test {

// The code of the shmbus::Error that `f` throws; a test failure (and
// Errc::system) if it throws none.
Errc code_of(const std::function<void()>& f);

using namespace std::chrono_literals;

// A message that carries its producer, its sequence number and a checksum
// of both, for end-to-end ordering and integrity checks.
struct SeqMsg {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint64_t check;
};
inline std::uint64_t checksum(std::uint32_t producer, std::uint32_t seq) {
  return (std::uint64_t{producer} * 0x9E3779B97F4A7C15ULL) ^
         (std::uint64_t{seq} * 0xC2B2AE3D27D4EB4FULL);
}

// "t<pid>-<stem>-<n>": unique per process and call.
std::string unique_name(std::string_view stem);

// Unlinks every name it was given when it goes out of scope, even when an
// assertion failed. Ignores names that no longer exist.
class SegmentGuard {
 public:
  SegmentGuard() = default;
  explicit SegmentGuard(std::string name) { add(std::move(name)); }
  SegmentGuard(const SegmentGuard&) = delete;
  SegmentGuard& operator=(const SegmentGuard&) = delete;
  ~SegmentGuard();
  const std::string& add(std::string name);
  [[nodiscard]] const std::string& name(std::size_t i = 0) const { return names_.at(i); }

 private:
  std::vector<std::string> names_;
};

// Forks; the child runs `body` and _exit()s with its return value (an
// exception exits 99 after printing it). Returns the child's pid.
pid_t fork_child(const std::function<int()>& body);

// fork+exec of a helper built from tests/helpers/NAME.cpp, with arguments.
pid_t spawn_helper(const std::string& name, const std::vector<std::string>& args);

struct ChildStatus {
  bool exited = false;  // normal exit: code valid
  int code = -1;
  int signal = 0;          // killed by this signal
  bool timed_out = false;  // still running at the deadline (then killed)
};

// Waits for `pid` until `timeout`; on timeout kills it with SIGKILL.
ChildStatus wait_child(pid_t pid, std::chrono::milliseconds timeout = 30s);

// Polls `done` every ~100 µs until it returns true or `timeout` passes.
bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s);

// Whether thread `tid` of this process is asleep in the kernel (state S in
// /proc/self/task/<tid>/stat): lets a test wake a sleeper it knows sleeps.
bool thread_sleeping(pid_t tid);

// One thread held once at a fault point (detail/fault.hpp), in this
// process: install hold_hook with detail::set_fault_hook, call
// hold_me_at(p) in the thread to hold; it parks at `p` (hold_state() 1)
// until hold_release() (state 2). hold_reset() before each use.
void hold_me_at(detail::FaultPoint p) noexcept;
void hold_hook(detail::FaultPoint p) noexcept;
int hold_state() noexcept;
void hold_release() noexcept;
void hold_reset() noexcept;
// Ends a hold test whatever its outcome (a failed ASSERT too): releases
// the hold, joins both threads (either may not have started) and removes
// the fault hook. Declare it after the threads.
struct HoldJoin {
  std::thread& a;
  std::thread& b;
  ~HoldJoin();
};
// The same for process `pid`'s main thread (/proc/<pid>/stat).
bool process_sleeping(pid_t pid);

// Path to /dev/shm/shmbus.<name>.
std::string shm_path(std::string_view name);
// Unlinks every segment whose name starts with `prefix` (objects a test's
// object made under names the test cannot know, e.g. a client's pipes).
void remove_names_with_prefix(std::string_view prefix);

// One T in anonymous shared memory that forked children share (counters a
// child reports through, progress a test polls).
template <class T>
class SharedBlock {
 public:
  SharedBlock() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    value_ = new (p) T{};
  }
  SharedBlock(const SharedBlock&) = delete;
  SharedBlock& operator=(const SharedBlock&) = delete;
  ~SharedBlock() {
    value_->~T();
    ::munmap(value_, sizeof(T));
  }
  T* operator->() const { return value_; }
  T& operator*() const { return *value_; }

 private:
  T* value_;
};

}  // namespace shmbus::test

namespace shmbus::test {

struct CommandResult {
  int exit_code = -1;      // -1 if it did not exit normally
  std::string output;      // stdout
  bool timed_out = false;  // still running at the deadline (then killed)
};

// Runs bus-inspector (built in this tree) with `args`; captures stdout.
// Kills it at `timeout`.
CommandResult run_inspector(const std::vector<std::string>& args,
                            std::chrono::milliseconds timeout = 30s);

}  // namespace shmbus::test
