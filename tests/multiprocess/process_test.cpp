// shmbus::Process with real children: exit codes, signals, timeouts,
// terminate/kill, the pidfd sentinel, daemon children dying with their
// parent, spawned executables, placement, and a throwing target.
#include "shmbus/process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <string>
#include <thread>

#include "shmbus/error.hpp"
#include "shmbus/topology.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;

using test::code_of;

// A pipe both ends of which close with the test.
struct Pipe {
  int rd = -1, wr = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    rd = fds[0];
    wr = fds[1];
  }
  ~Pipe() {
    if (rd >= 0) ::close(rd);
    if (wr >= 0) ::close(wr);
  }
  // Blocks until a byte or EOF; returns what read() returned.
  ssize_t wait_byte() const {
    char c;
    ssize_t r;
    while ((r = ::read(rd, &c, 1)) < 0 && errno == EINTR) {
    }
    return r;
  }
  void put_byte() const { EXPECT_EQ(::write(wr, "x", 1), 1); }
};

TEST(Process, ExitCodeOfAnIntTarget) {
  Process p([] { return 7; });
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  EXPECT_EQ(p.pid(), 0);
  EXPECT_EQ(p.sentinel(), -1);
  p.start();
  EXPECT_GT(p.pid(), 0);
  p.join();
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 7);
}

TEST(Process, VoidTargetExitsZeroAndNamesCount) {
  Process a([] {});
  Process b([] {}, {.name = "worker"});
  EXPECT_EQ(a.name().rfind("Process-", 0), 0u) << a.name();
  EXPECT_EQ(b.name(), "worker");
  a.start();
  b.start();
  EXPECT_TRUE(a.join_for(30s));
  EXPECT_TRUE(b.join_for(30s));
  EXPECT_EQ(a.exitcode(), 0);
  EXPECT_EQ(b.exitcode(), 0);
}

TEST(Process, ASignalShowsAsMinusItsNumber) {
  Process p([] {
    ::raise(SIGUSR1);
    return 0;
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGUSR1);
}

TEST(Process, ThrowingTargetExitsOneWithAMessage) {
  Pipe err;
  const int saved = ::dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  ASSERT_GE(::dup2(err.wr, STDERR_FILENO), 0);
  Process p([]() -> int { throw std::runtime_error("bad input 42"); }, {.name = "thrower"});
  p.start();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(err.wr);
  err.wr = -1;
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  std::string text;
  char buf[256];
  ssize_t n;
  while ((n = ::read(err.rd, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
  EXPECT_NE(text.find("thrower"), std::string::npos) << text;
  EXPECT_NE(text.find("bad input 42"), std::string::npos) << text;
}

TEST(Process, JoinForTimesOutThenTerminateEndsIt) {
  Pipe gate;
  Process p([&] { return gate.wait_byte() == 1 ? 0 : 3; });
  p.start();
  EXPECT_FALSE(p.join_for(20ms));
  EXPECT_TRUE(p.is_alive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  p.terminate();
  EXPECT_TRUE(p.join_for(30s));
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  p.terminate();  // after the end: nothing, as in Python
  p.kill();
  EXPECT_EQ(p.exitcode(), -SIGTERM);
}

// join_for(Clock::duration::max()) waits for the child: now + timeout
// overflowed into the past and returned false at once.
TEST(Process, JoinForTheLongestDurationWaitsForTheChild) {
  Pipe gate;
  Process p([&] { return gate.wait_byte() == 1 ? 0 : 3; });
  p.start();
  std::thread opener([&] {
    (void)test::poll_until([&] { return test::process_sleeping(p.pid()); });
    gate.put_byte();
  });
  EXPECT_TRUE(p.join_for(Clock::duration::max()));
  opener.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, KillEndsAChildThatIgnoresTerminate) {
  Pipe ready, gate;
  Process p([&] {
    ::signal(SIGTERM, SIG_IGN);
    ready.put_byte();
    gate.wait_byte();
    return 0;
  });
  p.start();
  ASSERT_EQ(ready.wait_byte(), 1);
  p.terminate();
  EXPECT_FALSE(p.join_for(50ms));
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST(Process, SentinelBecomesReadableWhenTheChildEnds) {
  Pipe gate;
  Process p([&] { return gate.wait_byte() == 1 ? 5 : 3; });
  p.start();
  ASSERT_GE(p.sentinel(), 0);
  pollfd pfd{p.sentinel(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0);
  gate.put_byte();
  pfd.revents = 0;
  EXPECT_EQ(::poll(&pfd, 1, 30000), 1);
  EXPECT_TRUE(pfd.revents & POLLIN);
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 5);
  p.close();
  EXPECT_EQ(p.sentinel(), -1);
  EXPECT_EQ(code_of([&] { p.start(); }), Errc::invalid_argument);
}

// Runs `daemon` children under a subreaper whose middle process exits at
// once: returns how the grandchild ended (or that it is still alive).
test::ChildStatus orphan_fate(bool daemon) {
  Pipe out;
  pid_t s = test::fork_child([&] {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return 10;
    Pipe pid_pipe;
    pid_t a = ::fork();
    if (a == 0) {
      Process d(
          [] {
            for (;;) ::pause();
          },
          {.name = "orphan", .daemon = daemon});
      d.start();
      pid_t dp = d.pid();
      if (::write(pid_pipe.wr, &dp, sizeof dp) != sizeof dp) ::_exit(2);
      ::_exit(0);  // no destructors: only the kernel's death signal acts
    }
    pid_t dp = 0;
    if (::read(pid_pipe.rd, &dp, sizeof dp) != sizeof dp) return 11;
    if (!test::wait_child(a).exited) return 12;
    // The orphan is now our child; a non-daemon one stays alive.
    test::ChildStatus st = test::wait_child(dp, daemon ? 30s : 200ms);
    int code = st.timed_out ? 0 : (st.signal == SIGKILL ? 1 : 2);
    return ::write(out.wr, &code, sizeof code) == sizeof code ? 0 : 13;
  });
  test::ChildStatus st = test::wait_child(s);
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
  int code = -1;
  EXPECT_EQ(::read(out.rd, &code, sizeof code), static_cast<ssize_t>(sizeof code));
  test::ChildStatus fate;
  fate.timed_out = code == 0;
  fate.signal = code == 1 ? SIGKILL : 0;
  return fate;
}

TEST(Process, DaemonChildDiesWithItsParent) {
  test::ChildStatus fate = orphan_fate(true);
  EXPECT_FALSE(fate.timed_out);
  EXPECT_EQ(fate.signal, SIGKILL);
}

TEST(Process, NonDaemonChildOutlivesItsParent) {
  test::ChildStatus fate = orphan_fate(false);
  EXPECT_TRUE(fate.timed_out);  // still alive at the deadline (then killed)
}

TEST(Process, DestroyingARunningDaemonKillsAndReapsIt) {
  pid_t pid = 0;
  {
    Process p(
        [] {
          for (;;) ::pause();
        },
        {.daemon = true});
    p.start();
    pid = p.pid();
    EXPECT_TRUE(p.is_alive());
  }
  errno = 0;
  EXPECT_EQ(::kill(pid, 0), -1);  // reaped: the pid is gone
  EXPECT_EQ(errno, ESRCH);
}

TEST(Process, SpawnRunsAnExecutable) {
  auto p = Process::spawn("/bin/sh", {"-c", "exit 7"});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
  auto q = Process::spawn("sh", {"-c", "kill -TERM $$"});  // PATH lookup
  q.start();
  EXPECT_TRUE(q.join_for(30s));
  EXPECT_EQ(q.exitcode(), -SIGTERM);
}

TEST(ProcessIdentity, TheMainProcessThenEachChildNamesItselfAndItsParent) {
  EXPECT_EQ(current_process().name, "MainProcess");
  EXPECT_EQ(current_process().pid, ::getpid());
  EXPECT_FALSE(parent_process().has_value());
  const pid_t main_pid = ::getpid();
  Process child(
      [main_pid] {
        const auto self = current_process();
        const auto parent = parent_process();
        if (self.name != "worker" || self.pid != ::getpid()) return 1;
        if (!parent || parent->name != "MainProcess" || parent->pid != main_pid) return 2;
        Process grandchild(
            [worker_pid = self.pid] {
              const auto up = parent_process();
              if (current_process().name != "Process-grand") return 3;
              return up && up->name == "worker" && up->pid == worker_pid ? 0 : 4;
            },
            {.name = "Process-grand"});
        grandchild.start();
        grandchild.join();
        return *grandchild.exitcode();
      },
      {.name = "worker"});
  child.start();
  ASSERT_TRUE(child.join_for(30s));
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_EQ(current_process().name, "MainProcess");  // the parent's own name is unchanged
}

TEST(ProcessIdentity, ASpawnedExecutableLearnsItsNameAndParent) {
  const std::string helper =
      std::string(SHMBUS_BINARY_DIR) + "/helpers/shmbus_helper_identity_peer";
  auto p = Process::spawn(helper, {"namer", "MainProcess"}, {.name = "namer"});
  p.start();
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), 0);
  // Variables left in the environment by a caller are replaced, not doubled.
  ASSERT_EQ(::setenv("SHMBUS_PROCESS_NAME", "stale", 1), 0);
  auto q = Process::spawn(helper, {"fresh", "MainProcess"}, {.name = "fresh"});
  q.start();
  ASSERT_TRUE(q.join_for(30s));
  EXPECT_EQ(q.exitcode(), 0);
  ASSERT_EQ(::unsetenv("SHMBUS_PROCESS_NAME"), 0);
}

TEST(ProcessIdentity, AGrandchildThatInheritedTheVariablesThroughAShellIgnoresThem) {
  // sh forks the helper (the `; exit` keeps sh from exec'ing it), so the
  // helper's parent is sh, not the process the variables name.
  const std::string helper =
      std::string(SHMBUS_BINARY_DIR) + "/helpers/shmbus_helper_identity_peer";
  auto p = Process::spawn("/bin/sh", {"-c", helper + " MainProcess x; exit $?"}, {.name = "shell"});
  p.start();
  ASSERT_TRUE(p.join_for(30s));
  EXPECT_EQ(p.exitcode(), 3);  // named MainProcess (else 1), and no parent
}

TEST(ProcessIdentity, ASpawnedExecutableWhoseParentDiedStillKnowsItsNameAndParent) {
  // A middle child spawns the helper and exits at once; the helper asks
  // only once it has been re-parented, and reports through a pipe.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);  // not O_CLOEXEC: the helper writes to fds[1]
  const std::string helper =
      std::string(SHMBUS_BINARY_DIR) + "/helpers/shmbus_helper_identity_peer";
  Process middle(
      [&] {
        auto orphan = Process::spawn(
            helper,
            {"orphan", std::to_string(fds[1]), std::to_string(::getpid()), "orphan", "middle"},
            {.name = "orphan"});
        orphan.start();
        ::_exit(0);  // leaves the helper running (no join in a destructor)
      },
      {.name = "middle"});
  middle.start();
  ASSERT_TRUE(middle.join_for(30s));
  ::close(fds[1]);
  char code = -1;
  ssize_t r = 0;
  while ((r = ::read(fds[0], &code, 1)) < 0 && errno == EINTR) {
  }
  ::close(fds[0]);
  ASSERT_EQ(r, 1) << "the helper ended without an answer";
  EXPECT_EQ(code, 0);  // 3: it lost its parent's name with its parent
}

TEST(ProcessIdentity, ActiveChildrenListsRunningOnesAndReapsEndedOnes) {
  EXPECT_TRUE(active_children().empty());
  Pipe hold;  // the long child runs until this pipe's write end closes
  Process quick([] { return 5; }, {.name = "quick"});
  Process longer(
      [&hold] {
        ::close(hold.wr);
        return hold.wait_byte() == 0 ? 0 : 1;
      },
      {.name = "longer"});
  quick.start();
  longer.start();
  // The quick child ends on its own; active_children() reaps it.
  ASSERT_TRUE(test::poll_until([&] { return active_children().size() == 1; }, 30s));
  EXPECT_EQ(active_children().front(), &longer);
  EXPECT_EQ(quick.exitcode(), 5);
  // A moved Process is listed at its new address.
  Process moved(std::move(longer));
  EXPECT_EQ(active_children(), std::vector<Process*>{&moved});
  ::close(hold.wr);
  hold.wr = -1;
  moved.join();
  EXPECT_EQ(moved.exitcode(), 0);
  EXPECT_TRUE(active_children().empty());
  // A child's own list starts empty, and a destroyed Process leaves the list.
  {
    Process parent_of_none([] { return active_children().empty() ? 0 : 1; });
    parent_of_none.start();
    parent_of_none.join();
    EXPECT_EQ(parent_of_none.exitcode(), 0);
  }
  EXPECT_TRUE(active_children().empty());
}

TEST(Process, SpawnOfAMissingFileThrowsNotFound) {
  auto p = Process::spawn("/nonexistent/shmbus-no-such-program");
  EXPECT_EQ(code_of([&] { p.start(); }), Errc::not_found);
  EXPECT_EQ(p.exitcode(), 127);  // the child that could not exec was reaped
}

TEST(Process, PlacementPinsTheChild) {
  for (int cpu : this_thread_cpus()) {
    Process p([cpu] { return this_thread_cpus() == CpuList{cpu} ? 0 : 1; }, {.cpus = {cpu}});
    EXPECT_EQ(p.cpus(), CpuList{cpu});
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0) << "cpu " << cpu;
  }
  Process bad([] { return 0; }, {.cpus = {4000}});
  EXPECT_EQ(code_of([&] { bad.start(); }), Errc::invalid_argument);
}

TEST(Process, MisuseThrows) {
  Process p([] { return 0; });
  EXPECT_EQ(code_of([&] { p.join(); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { (void)p.join_for(1ms); }), Errc::invalid_argument);
  p.start();
  EXPECT_EQ(code_of([&] { p.start(); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { p.set_daemon(true); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { p.set_cpus({0}); }), Errc::invalid_argument);
  Process moved = std::move(p);
  EXPECT_EQ(p.pid(), 0);
  moved.join();
  EXPECT_EQ(moved.exitcode(), 0);
}

}  // namespace
}  // namespace shmbus
