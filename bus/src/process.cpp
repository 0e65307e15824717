// shmbus::Process: fork (and exec), placement, daemon death signal, reaping
// through waitpid and waiting through a pidfd. See process.hpp.
#include "shmbus/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <mutex>
#include <thread>

#include "shmbus/detail/exit_actions.hpp"
#include "shmbus/error.hpp"

namespace shmbus {
namespace {

std::atomic<unsigned> process_counter{0};

// What a child writes to the setup pipe when it cannot run its target.
struct SetupFailure {
  int stage;  // kStagePin or kStageExec
  int err;    // errno
};
constexpr int kStagePin = 1;
constexpr int kStageExec = 2;
constexpr int kSetupFailedExit = 127;

// What a spawn()ed child reads its name and parent from.
constexpr std::string_view kNameVar = "SHMBUS_PROCESS_NAME";
constexpr std::string_view kParentVar = "SHMBUS_PARENT_PROCESS";  // "<pid>:<name>"
constexpr std::string_view kPidVar = "SHMBUS_PROCESS_PID";        // whom they are for
constexpr std::size_t kPidDigits = 20;                            // room for any pid_t

// This process's identity. A spawn()ed child takes it from its environment,
// only if the variables were set for its own pid (a grandchild that
// inherited them through a shell is not the process they were meant for);
// its parent may have died since.
struct Identity {
  std::string name = "MainProcess";
  std::optional<ProcessIdentity> parent;
};

Identity from_environment() {
  Identity id;
  const char* name = std::getenv(kNameVar.data());
  const char* parent = std::getenv(kParentVar.data());
  const char* for_pid = std::getenv(kPidVar.data());
  if (name == nullptr || parent == nullptr || for_pid == nullptr || *name == '\0') return id;
  const std::string_view me(for_pid);
  pid_t self = 0;
  if (const auto [end, ec] = std::from_chars(me.data(), me.data() + me.size(), self);
      ec != std::errc{} || end != me.data() + me.size() || self != ::getpid()) {
    return id;
  }
  const std::string_view p(parent);
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), pid);
  if (ec != std::errc{} || end == p.data() + p.size() || *end != ':') return id;
  id.name = name;
  id.parent = ProcessIdentity{std::string(end + 1, p.data() + p.size()), pid};
  return id;
}

// Writes `pid` in decimal at `out` (kPidDigits bytes of room, NUL-ended);
// no allocation: it runs between fork and exec.
void write_pid(char* out, pid_t pid) noexcept {
  char digits[kPidDigits];
  std::size_t n = 0;
  auto v = static_cast<unsigned long>(pid);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && n < kPidDigits - 1);
  for (std::size_t i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  out[n] = '\0';
}

Identity& identity() {
  static Identity id = from_environment();
  return id;
}

// The started Process objects of this process, for active_children(). The
// mutex is held across fork() (as a pthread_atfork prepare handler would),
// so the child finds the list whole, unlocks it and empties it: a child has
// no children.
struct Children {
  std::mutex lock;
  std::vector<Process*> list;
};

Children& children() {
  static Children c;
  return c;
}

void forget_child(Process* p) {
  auto& c = children();
  std::scoped_lock guard(c.lock);
  std::erase(c.list, p);
}

void replace_child(Process* from, Process* to) {
  auto& c = children();
  std::scoped_lock guard(c.lock);
  std::replace(c.list.begin(), c.list.end(), from, to);
}

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  errno = ENOSYS;
  return -1;
#endif
}

void write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

Errc errc_of(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return Errc::not_found;
    case EACCES:
    case EPERM:
      return Errc::permission_denied;
    case EINVAL:
      return Errc::invalid_argument;
    default:
      return Errc::system;
  }
}

}  // namespace

Process::Process(std::function<int()> target, ProcessOptions options, int)
    : target_(std::move(target)),
      name_(std::move(options.name)),
      daemon_(options.daemon),
      cpus_(std::move(options.cpus)) {
  if (name_.empty()) name_ = "Process-" + std::to_string(process_counter.fetch_add(1) + 1);
}

Process Process::spawn(std::string path, std::vector<std::string> args, ProcessOptions options) {
  if (path.empty()) throw Error(Errc::invalid_argument, options.name, "spawn() of an empty path");
  if (options.name.empty()) options.name = path;
  Process p(std::function<int()>{}, std::move(options), 0);
  p.argv_.reserve(args.size() + 1);
  p.argv_.push_back(std::move(path));
  for (auto& a : args) p.argv_.push_back(std::move(a));
  return p;
}

Process::Process(Process&& other) noexcept
    : target_(std::move(other.target_)),
      argv_(std::move(other.argv_)),
      name_(std::move(other.name_)),
      daemon_(other.daemon_),
      cpus_(std::move(other.cpus_)),
      pid_(std::exchange(other.pid_, 0)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      started_(std::exchange(other.started_, false)),
      closed_(std::exchange(other.closed_, false)),
      exitcode_(std::exchange(other.exitcode_, std::nullopt)) {
  if (started_) replace_child(&other, this);
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    release();
    target_ = std::move(other.target_);
    argv_ = std::move(other.argv_);
    name_ = std::move(other.name_);
    daemon_ = other.daemon_;
    cpus_ = std::move(other.cpus_);
    pid_ = std::exchange(other.pid_, 0);
    pidfd_ = std::exchange(other.pidfd_, -1);
    started_ = std::exchange(other.started_, false);
    closed_ = std::exchange(other.closed_, false);
    exitcode_ = std::exchange(other.exitcode_, std::nullopt);
    if (started_) replace_child(&other, this);
  }
  return *this;
}

Process::~Process() { release(); }

void Process::release() noexcept {
  if (started_) forget_child(this);
  if (started_ && !exitcode_) {
    try {
      if (daemon_) send(SIGKILL);
      reap(true);
    } catch (...) {
      // Reaped elsewhere: nothing left to wait for.
    }
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
}

void Process::set_daemon(bool daemon) {
  if (started_) throw Error(Errc::invalid_argument, name_, "set_daemon() after start()");
  daemon_ = daemon;
}

void Process::set_cpus(CpuList cpus) {
  if (started_) throw Error(Errc::invalid_argument, name_, "set_cpus() after start()");
  cpus_ = std::move(cpus);
}

void Process::start() {
  if (closed_) throw Error(Errc::invalid_argument, name_, "start() after close()");
  if (started_) throw Error(Errc::invalid_argument, name_, "start() called twice");
  if (!target_ && argv_.empty()) throw Error(Errc::invalid_argument, name_, "no target");

  // Everything the child needs is prepared here: between fork and exec the
  // child of a multithreaded parent must not allocate.
  cpu_set_t* set = nullptr;
  std::size_t set_size = 0;
  if (!cpus_.empty()) {
    int max_cpu = 0;
    for (int c : cpus_) {
      if (c < 0) {
        throw Error(Errc::invalid_argument, name_,
                    "cpu index " + std::to_string(c) + " is negative");
      }
      max_cpu = std::max(max_cpu, c);
    }
    const int count = std::max(max_cpu + 1, 1024);
    set = CPU_ALLOC(count);
    if (set == nullptr) throw Error(Errc::system, name_, "CPU_ALLOC failed");
    set_size = CPU_ALLOC_SIZE(count);
    CPU_ZERO_S(set_size, set);
    for (int c : cpus_) CPU_SET_S(static_cast<std::size_t>(c), set_size, set);
  }
  struct SetGuard {
    cpu_set_t* s;
    ~SetGuard() {
      if (s) CPU_FREE(s);
    }
  } set_guard{set};
  std::vector<char*> argv;
  for (auto& a : argv_) argv.push_back(a.data());
  argv.push_back(nullptr);
  // A spawn()ed child's environment: the caller's, plus its name and parent.
  Identity& self = identity();
  std::vector<std::string> env_added;
  std::vector<char*> envp;
  if (!target_) {
    env_added.push_back(std::string(kNameVar) + "=" + name_);
    env_added.push_back(std::string(kParentVar) + "=" + std::to_string(::getpid()) + ":" +
                        self.name);
    // The child writes its own pid here between fork and exec.
    env_added.push_back(std::string(kPidVar) + "=" + std::string(kPidDigits, '\0'));
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view var(*e);
      const bool ours = var.starts_with(std::string(kNameVar) + "=") ||
                        var.starts_with(std::string(kParentVar) + "=") ||
                        var.starts_with(std::string(kPidVar) + "=");
      if (!ours) envp.push_back(*e);
    }
    for (auto& e : env_added) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  auto& kids = children();

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    throw Error(Errc::system, name_, std::string("pipe2: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  // One critical section from the reserve to the parent's push_back, so
  // that no other thread's start() takes the room reserved here.
  std::unique_lock kids_guard(kids.lock);
  try {
    kids.list.reserve(kids.list.size() + 1);  // before the fork: it may throw
  } catch (...) {
    ::close(report[0]);
    ::close(report[1]);
    throw;
  }
  const pid_t pid = ::fork();
  if (pid > 0) kids.list.push_back(this);  // cannot throw: room reserved
  kids_guard.unlock();
  if (pid < 0) {
    const int err = errno;
    ::close(report[0]);
    ::close(report[1]);
    throw Error(Errc::system, name_, std::string("fork: ") + std::strerror(err));
  }
  if (pid == 0) {
    ::close(report[0]);
    if (daemon_) {
      // Killed with the parent. A parent that died before prctl() took
      // effect has already re-parented us: getppid() then differs.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::raise(SIGKILL);
    }
    if (set != nullptr && ::sched_setaffinity(0, set_size, set) != 0) {
      SetupFailure f{kStagePin, errno};
      write_all(report[1], &f, sizeof f);
      ::_exit(kSetupFailedExit);
    }
    if (!target_) {
      write_pid(env_added.back().data() + kPidVar.size() + 1, ::getpid());
      ::execvpe(argv[0], argv.data(), envp.data());
      SetupFailure f{kStageExec, errno};
      write_all(report[1], &f, sizeof f);
      ::_exit(kSetupFailedExit);
    }
    ::close(report[1]);  // setup done: the parent's read() sees EOF
    kids.list.clear();
    self.parent = ProcessIdentity{self.name, parent};
    self.name = name_;
    int code = 1;
    try {
      code = target_() & 0xff;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shmbus::Process '%s' (pid %d): %s\n", name_.c_str(),
                   static_cast<int>(::getpid()), e.what());
    } catch (...) {
      std::fprintf(stderr, "shmbus::Process '%s' (pid %d): unknown exception\n", name_.c_str(),
                   static_cast<int>(::getpid()));
    }
    // A clean end: close this process's pipe ends, leave barriers, as
    // destroyed handles would (detail/exit_actions.hpp); a signal skips it.
    shmbus::detail::run_exit_actions();
    std::fflush(nullptr);
    ::_exit(code);
  }

  ::close(report[1]);
  pid_ = pid;
  started_ = true;

  // The child cannot be reaped before we wait for it, so its pid cannot be
  // reused yet: pidfd_open() on it is race-free. ENOSYS (kernel < 5.3):
  // no sentinel, join_for() polls instead.
  pidfd_ = pidfd_open(pid);
  SetupFailure f{0, 0};
  std::size_t got = 0;
  while (got < sizeof f) {
    ssize_t r = ::read(report[0], reinterpret_cast<char*>(&f) + got, sizeof f - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  ::close(report[0]);
  if (got == sizeof f) {
    reap(true);
    if (f.stage == kStagePin) {
      std::string list;
      for (int c : cpus_) list += (list.empty() ? "" : ",") + std::to_string(c);
      throw Error(errc_of(f.err), name_,
                  "placing the child on cpus {" + list + "}: " + std::strerror(f.err));
    }
    throw Error(errc_of(f.err), name_, "exec '" + argv_[0] + "': " + std::strerror(f.err));
  }
}

bool Process::reap(bool block) {
  if (exitcode_) return true;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == pid_) {
      if (WIFEXITED(status)) {
        exitcode_ = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        exitcode_ = -WTERMSIG(status);
      } else {
        continue;  // stopped/continued are not reported without WUNTRACED
      }
      return true;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    throw Error(
        Errc::system, name_,
        "waitpid(" + std::to_string(pid_) + "): " + std::strerror(errno) +
            (errno == ECHILD ? " (reaped elsewhere: a waitpid(-1) or SIGCHLD ignored)" : ""));
  }
}

void Process::join() {
  if (!started_) throw Error(Errc::invalid_argument, name_, "join() before start()");
  reap(true);
}

bool Process::join_for(Clock::duration timeout) {
  return join_until(detail::deadline_after(timeout));
}

bool Process::join_until(Clock::time_point deadline) {
  if (!started_) throw Error(Errc::invalid_argument, name_, "join() before start()");
  for (;;) {
    if (reap(false)) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
    if (pidfd_ >= 0) {
      pollfd pfd{pidfd_, POLLIN, 0};
      timespec ts{static_cast<time_t>(left.count() / 1'000'000'000),
                  static_cast<long>(left.count() % 1'000'000'000)};
      if (::ppoll(&pfd, 1, &ts, nullptr) < 0 && errno != EINTR) {
        throw Error(Errc::system, name_, std::string("ppoll(pidfd): ") + std::strerror(errno));
      }
    } else {
      std::this_thread::sleep_for(
          std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(1)));
    }
  }
}

bool Process::is_alive() {
  if (!started_) return false;
  return !reap(false);
}

std::optional<int> Process::exitcode() {
  if (started_) reap(false);
  return exitcode_;
}

void Process::send(int sig) {
  if (!started_ || exitcode_) return;
  // Not reaped yet, so the pid still names our child (alive or a zombie).
  if (::kill(pid_, sig) != 0 && errno != ESRCH) {
    throw Error(
        Errc::system, name_,
        "kill(" + std::to_string(pid_) + ", " + std::to_string(sig) + "): " + std::strerror(errno));
  }
}

void Process::terminate() { send(SIGTERM); }
void Process::kill() { send(SIGKILL); }

void Process::close() {
  if (started_ && !exitcode_ && !reap(false)) {
    throw Error(Errc::invalid_argument, name_, "close() while the child is still running");
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
  closed_ = true;
}

ProcessIdentity current_process() { return {identity().name, ::getpid()}; }

std::optional<ProcessIdentity> parent_process() { return identity().parent; }

std::vector<Process*> active_children() {
  std::vector<Process*> started;
  {
    auto& c = children();
    std::scoped_lock guard(c.lock);
    started = c.list;
  }
  std::vector<Process*> alive;
  for (Process* p : started) {
    if (p->is_alive()) alive.push_back(p);
  }
  return alive;
}

}  // namespace shmbus
