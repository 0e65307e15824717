#include "shmbus/process_id.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

namespace shmbus {

namespace {
constexpr unsigned kPidBits = 22;
constexpr std::uint64_t kPidMask = (std::uint64_t{1} << kPidBits) - 1;

// Reads state and start time from /proc/PID/stat. The command name (field 2)
// may hold spaces and parentheses, so parsing starts after its last ')'.
bool read_stat(pid_t pid, char& state, std::uint64_t& start_time) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return false;
  p += 2;  // field 3: state
  state = *p;
  // Skip fields 3..21 to reach field 22 (starttime).
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  char* end = nullptr;
  start_time = std::strtoull(p, &end, 10);
  return end != p;
}
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
  if (!read_stat(pid, state, start)) return std::nullopt;
  if (state == 'Z' || state == 'X' || state == 'x') return std::nullopt;
  // Keep the start time within the packed width, on both sides of a compare.
  return ProcessId{pid, start & (~std::uint64_t{0} >> kPidBits)};
}

namespace {
// This process's identity, read on hot paths (lock owners, queue records):
// getpid() is a real system call in current glibc, so it is cached, and
// the atfork child handler refreshes it in the single-threaded child before
// fork() returns there.
ProcessId g_self{};

void refresh_self() noexcept {
  const pid_t pid = ::getpid();
  auto id = lookup_process(pid);
  g_self = id ? *id : ProcessId{pid, 0};
}
}  // namespace

ProcessId this_process() noexcept {
  static const bool initialised = [] {
    refresh_self();
    ::pthread_atfork(nullptr, nullptr, &refresh_self);
    return true;
  }();
  (void)initialised;
  return g_self;
}

bool is_alive(const ProcessId& id) noexcept {
  auto now = lookup_process(id.pid);
  return now.has_value() && now->start_time == id.start_time;
}

}  // namespace shmbus
