#include "shmbus/process_id.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "shmbus/detail/fork_wiped.hpp"

namespace shmbus {

namespace {
constexpr unsigned kPidBits = 22;
constexpr std::uint64_t kPidMask = (std::uint64_t{1} << kPidBits) - 1;

enum class Stat : std::uint8_t { ok, gone, unknown };

// Reads state and start time from /proc/PID/stat. The command name (field 2)
// may hold spaces and parentheses, so parsing starts after its last ')'.
// `gone` only when the kernel says there is no such process; any other
// failure (EMFILE, a hidepid /proc, a short read) is `unknown`: a caller must
// not declare a process dead on that.
Stat read_stat(pid_t pid, char& state, std::uint64_t& start_time,
               unsigned long* threads = nullptr) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT || errno == ESRCH ? Stat::gone : Stat::unknown;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  const int read_errno = errno;
  ::close(fd);
  if (n <= 0) return n < 0 && read_errno == ESRCH ? Stat::gone : Stat::unknown;
  buf[n] = '\0';
  char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return Stat::unknown;
  p += 2;  // field 3: state
  state = *p;
  // Skip fields 3..21 to reach field 22 (starttime); field 20 is
  // num_threads (a zombie leader counts itself until it is reaped).
  for (int field = 3; field < 22; ++field) {
    if (field == 20 && threads != nullptr) *threads = std::strtoul(p, nullptr, 10);
    p = std::strchr(p, ' ');
    if (p == nullptr) return Stat::unknown;
    ++p;
  }
  char* end = nullptr;
  start_time = std::strtoull(p, &end, 10);
  return end != p ? Stat::ok : Stat::unknown;
}

constexpr std::uint64_t kStartMask = ~std::uint64_t{0} >> kPidBits;

}  // namespace

std::uint64_t ProcessId::pack() const noexcept {
  return (start_time << kPidBits) | (static_cast<std::uint64_t>(pid) & kPidMask);
}

ProcessId ProcessId::unpack(std::uint64_t word) noexcept {
  return ProcessId{static_cast<pid_t>(word & kPidMask), word >> kPidBits};
}

std::optional<ProcessId> lookup_process(pid_t pid) noexcept {
  if (pid <= 0) return std::nullopt;
  char state = 0;
  std::uint64_t start = 0;
  unsigned long threads = 0;
  if (read_stat(pid, state, start, &threads) != Stat::ok) return std::nullopt;
  if (state == 'X' || state == 'x') return std::nullopt;
  // A zombie leader with other threads still running is alive (is_alive()).
  if (state == 'Z' && threads <= 1) return std::nullopt;
  // Keep the start time within the packed width, on both sides of a compare.
  return ProcessId{pid, start & kStartMask};
}

namespace {
// This process's identity, read on hot paths (lock owners, queue records):
// getpid() is a real system call in current glibc, so it is cached, as
// ProcessId::pack() (never 0: a pid is never 0), in a word that reads 0 in
// any forked child (detail/fork_wiped.hpp): a child made by fork() is
// refreshed by the atfork handler before fork() returns there, one made by
// _Fork() or a raw clone() (no handler) by its first this_process().
std::uint64_t* self_word() {
  static std::uint64_t* const w = detail::allocate_fork_wiped_word();  // never freed
  return w;
}
std::uint64_t refresh_self() noexcept {
  const pid_t pid = ::getpid();
  auto id = lookup_process(pid);
  const std::uint64_t packed = (id ? *id : ProcessId{pid, 0}).pack();
  // relaxed: process-local; every thread that refreshes stores the same value.
  std::atomic_ref(*self_word()).store(packed, std::memory_order_relaxed);
  return packed;
}
void refresh_self_in_child() noexcept { (void)refresh_self(); }
}  // namespace

ProcessId this_process() noexcept {
  static std::uint64_t* const self = [] {
    std::uint64_t* w = nullptr;
    try {
      w = self_word();
    } catch (...) {  // no memory for one page at start-up: nothing works anyway
      std::abort();
    }
    (void)refresh_self();
    ::pthread_atfork(nullptr, nullptr, &refresh_self_in_child);
    return w;
  }();
  // relaxed: see refresh_self().
  std::uint64_t packed = std::atomic_ref(*self).load(std::memory_order_relaxed);
  if (packed == 0) [[unlikely]]
    packed = refresh_self();  // a child that ran no atfork handler
  return ProcessId::unpack(packed);
}

bool is_alive(const ProcessId& id) noexcept {
  if (id.pid <= 0) return false;
  char state = 0;
  std::uint64_t start = 0;
  unsigned long threads = 0;
  switch (read_stat(id.pid, state, start, &threads)) {
    case Stat::gone:
      return false;
    case Stat::unknown:
      // Cannot read its identity: alive while the pid exists (a reused pid
      // is then taken for the process; never the reverse, which would let
      // a survivor repair or unlink what a live process uses).
      return ::kill(id.pid, 0) == 0 || errno == EPERM;
    case Stat::ok:
      break;
  }
  if (state == 'X' || state == 'x') return false;
  // Dead only once every thread has stopped: the state is the group
  // leader's, a zombie from the time the main thread exits (pthread_exit(),
  // or a group exit that has not stopped the others yet), while another
  // thread may still hold a lock and write shared memory.
  if (state == 'Z' && threads <= 1) return false;
  // start_time 0: recorded without an identity (its /proc was unreadable).
  return id.start_time == 0 || (start & kStartMask) == id.start_time;
}

}  // namespace shmbus
