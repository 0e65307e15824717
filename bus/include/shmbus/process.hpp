// shmbus::Process — a child process, after Python's multiprocessing.Process.
//
//   shmbus::Process p([] { return work(); }, {.name = "worker", .cpus = {2}});
//   p.start();
//   if (!p.join_for(5s)) p.terminate();
//   p.join();
//   int code = *p.exitcode();   // -15 if SIGTERM ended it, like Python
//
// A Process runs a callable in a forked child, or (Process::spawn) an
// executable with arguments. Before the target runs the child applies its
// CPU placement (`cpus`, e.g. one side of Topology::pick_pair()) and, for a
// daemon, asks the kernel to SIGKILL it when the parent dies
// (PR_SET_PDEATHSIG, then a getppid() check closes the race with a parent
// that died during fork). Setup failures in the child (pinning refused, exec
// failed) come back to start(), which throws shmbus::Error.
//
// A target returning int exits with that code (0..255); a void target exits
// 0; a target that throws prints "shmbus::Process '<name>' (pid N): <what>"
// on stderr and exits 1 (Python's exit code for an uncaught exception).
// The child leaves with _exit(): it runs no atexit handlers or static
// destructors of the parent's image.
//
// exitcode(): nullopt while not started or still running, the exit status
// when it exited, and minus the signal number when a signal ended it.
// sentinel(): a pidfd (pidfd_open) that becomes readable when the child
// exits, for poll/epoll/select next to other descriptors.
//
// Threads: one Process object is used by one thread at a time. The child
// is reaped by this object only: a waitpid(-1) elsewhere in the program
// (or SIGCHLD set to SIG_IGN) steals its status, and join(), is_alive()
// and exitcode() then throw Error(system). fork() in a multithreaded
// parent copies only the calling thread; the callable must not need locks
// that other threads held (the same rule as Python's fork start method).
// PR_SET_PDEATHSIG fires when the *thread* that called start() exits.
//
// Destruction: a daemon child still running is killed (SIGKILL) and
// reaped; a non-daemon child still running is joined (Python joins
// non-daemonic children at exit). Call terminate()/kill() first if it may
// never finish.
//
// As Python's module functions:
//
//   std::string me = shmbus::current_process().name;  // "MainProcess", or the Process's name
//   auto parent = shmbus::parent_process();           // nullopt, or {name, pid} of our starter
//   for (shmbus::Process* p : shmbus::active_children()) p->terminate();
//
// A spawn()ed executable learns its name and parent from environment
// variables set at exec (SHMBUS_PROCESS_NAME, SHMBUS_PARENT_PROCESS, and
// SHMBUS_PROCESS_PID, the pid they were set for), so current_process() and
// parent_process() answer there too, also after its parent died (as
// Python's parent_process() names a dead parent); a process that inherited
// them (a shell's child) ignores them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmbus/topology.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

struct ProcessOptions {
  std::string name{};   // default "Process-<n>", n counting per parent process
  bool daemon = false;  // killed (SIGKILL) when the parent dies
  CpuList cpus{};       // empty: inherit the parent thread's affinity
};

// What current_process() and parent_process() tell about a process.
struct ProcessIdentity {
  std::string name;
  pid_t pid = 0;
};

class Process {
 public:
  // A callable returning int (the exit code) or void (exit 0).
  template <class F>
  requires std::is_invocable_v<F&>
  explicit Process(F target, ProcessOptions options = {})
      : Process(wrap(std::move(target)), std::move(options), 0) {}

  // An executable and its arguments (argv[1..]); `path` without a '/' is
  // looked up in PATH. start() throws Error(not_found / permission_denied)
  // if it cannot be executed.
  static Process spawn(std::string path, std::vector<std::string> args = {},
                       ProcessOptions options = {});

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  // Starts the child; throws Error(invalid_argument) when already started
  // or closed, Error(system / invalid_argument / not_found /
  // permission_denied) when fork, placement or exec fails.
  void start();

  // Waits for the child to end (forever / at most `timeout` / until
  // `deadline`); true once it has ended and been reaped. Throws
  // Error(invalid_argument) if not started.
  void join();
  [[nodiscard]] bool join_for(Clock::duration timeout);
  [[nodiscard]] bool join_until(Clock::time_point deadline);

  // True between start() and the child's end (reaps it if it has ended).
  [[nodiscard]] bool is_alive();
  // nullopt until the child has ended; then its exit status, or -signal.
  [[nodiscard]] std::optional<int> exitcode();

  // SIGTERM / SIGKILL; nothing if the child was already reaped or never
  // started (as in Python).
  void terminate();
  void kill();

  // Releases the pidfd; throws Error(invalid_argument) while the child runs.
  void close();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }       // 0 before start()
  [[nodiscard]] int sentinel() const noexcept { return pidfd_; }  // -1 before start()
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  [[nodiscard]] bool daemon() const noexcept { return daemon_; }
  // Throws Error(invalid_argument) after start(), as Python does.
  void set_daemon(bool daemon);
  [[nodiscard]] const CpuList& cpus() const noexcept { return cpus_; }
  void set_cpus(CpuList cpus);  // before start(); throws Error after it

 private:
  Process(std::function<int()> target, ProcessOptions options, int);

  template <class F>
  static std::function<int()> wrap(F target) {
    if constexpr (std::is_void_v<std::invoke_result_t<F&>>) {
      return [t = std::move(target)]() mutable {
        t();
        return 0;
      };
    } else {
      return [t = std::move(target)]() mutable { return static_cast<int>(t()); };
    }
  }

  // Reaps the child if it has ended (blocking when `block`); true if reaped.
  bool reap(bool block);
  void send(int sig);
  void release() noexcept;

  std::function<int()> target_;    // empty for spawn()
  std::vector<std::string> argv_;  // spawn(): path, then arguments
  std::string name_;
  bool daemon_ = false;
  CpuList cpus_;
  pid_t pid_ = 0;
  int pidfd_ = -1;
  bool started_ = false;
  bool closed_ = false;
  std::optional<int> exitcode_;
};

// The calling process: its pid, and its name: "MainProcess", or the name of
// the Process that started it (in a forked child and in a spawn()ed one).
[[nodiscard]] ProcessIdentity current_process();

// The process whose Process object started this one (its name and pid as
// they were at start()), or nullopt in a process not started by a Process,
// as Python's parent_process() returns None in the main process.
[[nodiscard]] std::optional<ProcessIdentity> parent_process();

// The Process objects of this process that were started and whose child
// has not ended, after reaping those that ended (as Python's
// active_children() joins finished children). The pointers stay valid
// while those objects live. Call it from the thread that uses those
// Process objects (a Process is used by one thread at a time).
[[nodiscard]] std::vector<Process*> active_children();

}  // namespace shmbus
