#include "test_support.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <thread>

#include "shmbus/detail/segment.hpp"

namespace shmbus::test {

namespace {
// argv for execv(): `path` then `args`, NUL-terminated; owns the strings.
class Argv {
 public:
  Argv(const std::string& path, const std::vector<std::string>& args) : strings_{path} {
    strings_.insert(strings_.end(), args.begin(), args.end());
    for (auto& a : strings_) pointers_.push_back(a.data());
    pointers_.push_back(nullptr);
  }
  char* const* get() noexcept { return pointers_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> pointers_;
};
}  // namespace

Errc code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no shmbus::Error thrown";
  return Errc::system;
}

std::string unique_name(std::string_view stem) {
  static std::atomic<unsigned> counter{0};
  return "t" + std::to_string(::getpid()) + "-" + std::string(stem) + "-" +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
}

SegmentGuard::~SegmentGuard() {
  for (const auto& n : names_) {
    try {
      detail::Segment::unlink(n);
    } catch (...) {
    }
  }
}

const std::string& SegmentGuard::add(std::string name) {
  names_.push_back(std::move(name));
  return names_.back();
}

pid_t fork_child(const std::function<int()>& body) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
    } catch (...) {
      std::fprintf(stderr, "child %d: unknown exception\n", ::getpid());
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  return pid;
}

pid_t spawn_helper(const std::string& name, const std::vector<std::string>& args) {
  const std::string path = std::string(SHMBUS_BINARY_DIR) + "/helpers/shmbus_helper_" + name;
  Argv argv(path, args);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execv(path.c_str(), argv.get());
    std::perror("execv");
    ::_exit(127);
  }
  return pid;
}

ChildStatus wait_child(pid_t pid, std::chrono::milliseconds timeout) {
  ChildStatus st;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) {
        st.exited = true;
        st.code = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        st.signal = WTERMSIG(status);
      }
      return st;
    }
    if (r < 0) return st;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      st.timed_out = true;
      return st;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(10000));
  }
}

bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

namespace {
bool stat_says_sleeping(const std::string& path) {
  std::ifstream stat(path);
  std::string line;
  if (!std::getline(stat, line)) return false;
  // "tid (comm) S ...": the state follows the last ')' (comm may hold any).
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'S';
}
}  // namespace

bool thread_sleeping(pid_t tid) {
  return stat_says_sleeping("/proc/self/task/" + std::to_string(tid) + "/stat");
}
bool process_sleeping(pid_t pid) {
  return stat_says_sleeping("/proc/" + std::to_string(pid) + "/stat");
}

std::string shm_path(std::string_view name) { return "/dev/shm/" + detail::os_name(name); }

void remove_names_with_prefix(std::string_view prefix) {
  const std::string os_prefix = detail::os_name(prefix);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string file = entry.path().filename().string();
    if (file.starts_with(os_prefix)) ::shm_unlink(file.c_str());
  }
}

}  // namespace shmbus::test

namespace shmbus::test {

CommandResult run_inspector(const std::vector<std::string>& args,
                            std::chrono::milliseconds timeout) {
  std::string path = std::string(SHMBUS_BINARY_DIR) + "/tools/bus-inspector/bus-inspector";
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return {};
  Argv argv(path, args);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::execv(path.c_str(), argv.get());
    ::_exit(127);
  }
  ::close(out[1]);
  CommandResult r;
  // Read until end of file or the deadline: a hung inspector fails the
  // test instead of hanging it.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      break;
    }
    pollfd pfd{out[0], POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    r.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  auto st = wait_child(pid, r.timed_out ? std::chrono::milliseconds(0) : timeout);
  r.timed_out = r.timed_out || st.timed_out;
  r.exit_code = st.exited ? st.code : -1;
  return r;
}

namespace {
std::atomic<int> g_hold{0};  // 0 not there yet, 1 held, 2 released
thread_local bool t_hold_armed = false;
thread_local detail::FaultPoint t_hold_point{};
}  // namespace

void hold_me_at(detail::FaultPoint p) noexcept {
  t_hold_point = p;
  t_hold_armed = true;
}
void hold_hook(detail::FaultPoint p) noexcept {
  if (!t_hold_armed || p != t_hold_point) return;
  t_hold_armed = false;  // only the first time
  g_hold.store(1);
  while (g_hold.load() != 2) std::this_thread::yield();
}
int hold_state() noexcept { return g_hold.load(); }
void hold_release() noexcept { g_hold.store(2); }
void hold_reset() noexcept { g_hold.store(0); }
HoldJoin::~HoldJoin() {
  hold_release();
  if (a.joinable()) a.join();
  if (b.joinable()) b.join();
  detail::set_fault_hook(nullptr);
}

}  // namespace shmbus::test

#if defined(SHMBUS_TSAN)
// [kv.tsan] LMDB orders a transaction's page writes after every reader of
// the pages it reuses through its reader table, in code ThreadSanitizer
// does not see; kv_store.cpp tells it so at each transaction's begin and
// end, but a writer also picks freed pages while its transaction runs,
// after readers that ended since its begin: ThreadSanitizer then reports
// LMDB's own page copy against an old reader's read. A race with a frame
// in liblmdb is LMDB's to order; everything else is still reported.
extern "C" const char* __tsan_default_suppressions() { return "race:liblmdb.so\n"; }
#endif
