// bus-inspector, the real binary, against live segments: JSON output,
// exit codes, dead processes, gc, doctor, and watch in a pseudo-terminal.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstddef>
#include <cstring>
#include <nlohmann/json.hpp>

#include "shmbus/detail/segment.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/shared_memory.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::run_inspector;
using test::SegmentGuard;
using test::unique_name;

// Starts a helper that attaches to `name` and waits to be killed.
pid_t start_holder(SharedMemory& shm, const std::string& name) {
  pid_t pid = test::spawn_helper("shm_peer", {name, "hold"});
  EXPECT_TRUE(
      test::poll_until([&] { return std::memcmp(shm.buf().data() + 64, "held", 5) == 0; }, 10s));
  return pid;
}

TEST(Inspector, ShowJsonReportsKilledProcessDead) {
  SegmentGuard g(unique_name("insp"));
  auto shm = SharedMemory::create(g.name(), 4096);
  pid_t pid = start_holder(shm, g.name());

  auto live = run_inspector({"show", g.name(), "--json"});
  ASSERT_EQ(live.exit_code, 0) << live.output;
  json j = json::parse(live.output);
  EXPECT_EQ(j["name"], g.name());
  EXPECT_EQ(j["kind"], "shared_memory");
  EXPECT_EQ(j["state"], "ready");
  EXPECT_EQ(j["payload_size"], 4096);
  ASSERT_EQ(j["attached"].size(), 2u);
  EXPECT_EQ(j["attached"][1]["pid"], pid);
  EXPECT_EQ(j["attached"][1]["alive"], true);

  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  (void)test::wait_child(pid);
  auto dead = run_inspector({"show", g.name(), "--json"});
  ASSERT_EQ(dead.exit_code, 0);
  j = json::parse(dead.output);
  EXPECT_EQ(j["attached"][1]["pid"], pid);
  EXPECT_EQ(j["attached"][1]["alive"], false);
  EXPECT_EQ(j["creator"]["alive"], true);
  EXPECT_EQ(j["abandoned"], false);
}

TEST(Inspector, ListJsonIncludesOurObject) {
  SegmentGuard g(unique_name("insplist"));
  auto shm = SharedMemory::create(g.name(), 128);
  auto r = run_inspector({"list", "--json"});
  ASSERT_EQ(r.exit_code, 0);
  bool found = false;
  const json all = json::parse(r.output);
  for (const auto& o : all) {
    if (o["name"] == g.name()) {
      found = true;
      EXPECT_EQ(o["kind"], "shared_memory");
      EXPECT_EQ(o["creator"]["pid"], ::getpid());
    }
  }
  EXPECT_TRUE(found);
}

// Type names read as people write them, not as GCC spells them.
TEST(Inspector, TypeNamesReadAsWritten) {
  EXPECT_EQ(readable_type_name("std::__cxx11::basic_string<char>"), "std::string");
  EXPECT_EQ(readable_type_name("std::pair<std::__cxx11::basic_string<char>, int>"),
            "std::pair<std::string, int>");
  EXPECT_EQ(readable_type_name("std::vector<std::__cxx11::basic_string<char> >"),
            "std::vector<std::string >");
  EXPECT_EQ(readable_type_name("std::__1::basic_string<char>"), "std::string");
  EXPECT_EQ(readable_type_name("xstd::__cxx11::T"), "xstd::__cxx11::T");
  EXPECT_EQ(readable_type_name("Tick"), "Tick");
  SegmentGuard g(unique_name("insptype"));
  auto q = Queue<std::string>::create(g.name(), {.capacity = 4});
  EXPECT_EQ(inspect_segment(g.name()).type_name, "std::string");
}

TEST(Inspector, ExitCodesForMissingInvalidAndCorrupted) {
  EXPECT_EQ(run_inspector({"show", unique_name("absent")}).exit_code, 1);
  EXPECT_EQ(run_inspector({"show", "bad name"}).exit_code, 2);
  EXPECT_EQ(run_inspector({"no-such-command"}).exit_code, 2);

  SegmentGuard g(unique_name("garbage"));
  int fd = ::open(test::shm_path(g.name()).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  std::string junk(8192, 'x');
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  auto r = run_inspector({"show", g.name(), "--json"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(json::parse(r.output)["error"], "corrupted");

  auto doctor = run_inspector({"doctor", "--json"});
  EXPECT_EQ(doctor.exit_code, 4);
  bool named = false;
  const json report = json::parse(doctor.output);
  for (const auto& f : report["findings"]) {
    named = named || f["name"] == g.name();
  }
  EXPECT_TRUE(named) << doctor.output;
}

TEST(Inspector, GcRemovesOnlyAbandonedObjects) {
  SegmentGuard g(unique_name("gcdead"));
  const std::string& keep = g.add(unique_name("gclive"));
  // An object whose creator and every attached process died.
  pid_t child = test::fork_child([&] {
    auto shm = SharedMemory::create(g.name(), 64);
    ::raise(SIGKILL);
    return 0;
  });
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  auto alive = SharedMemory::create(keep, 64);

  auto dry = run_inspector({"gc", "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0);
  bool listed = false;
  const json plan = json::parse(dry.output);
  for (const auto& a : plan["actions"]) {
    EXPECT_NE(a["name"], keep);
    listed = listed || a["name"] == g.name();
  }
  EXPECT_TRUE(listed) << dry.output;
  EXPECT_EQ(::access(test::shm_path(g.name()).c_str(), F_OK), 0);  // dry run kept it

  ASSERT_EQ(run_inspector({"gc"}).exit_code, 0);
  EXPECT_NE(::access(test::shm_path(g.name()).c_str(), F_OK), 0);
  EXPECT_EQ(::access(test::shm_path(keep).c_str(), F_OK), 0);
}

TEST(Inspector, WatchRefreshesInAPtyAndQuitsOnQ) {
  SegmentGuard g(unique_name("watch"));
  auto shm = SharedMemory::create(g.name(), 64);
  std::string path = std::string(SHMBUS_BINARY_DIR) + "/tools/bus-inspector/bus-inspector";
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl(path.c_str(), path.c_str(), "watch", g.name().c_str(), "--interval", "0.2",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string screen;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (screen.find(g.name()) == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{master, POLLIN, 0};
    if (::poll(&pfd, 1, 100) > 0) {
      char buf[1024];
      ssize_t n = ::read(master, buf, sizeof buf);
      if (n > 0) screen.append(buf, static_cast<std::size_t>(n));
    }
  }
  EXPECT_NE(screen.find(g.name()), std::string::npos) << screen;
  EXPECT_NE(screen.find("shared_memory"), std::string::npos);
  ASSERT_EQ(::write(master, "q", 1), 1);
  auto st = test::wait_child(pid, 10s);
  ::close(master);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
}

// watch of a prefix that names nothing says so (it waits for objects to
// appear), rather than drawing an empty table that looks like a hang.
TEST(Inspector, WatchOfAPrefixThatNamesNothingSaysItWaits) {
  const std::string nothing = unique_name("nothing");
  auto r = run_inspector({"watch", nothing, "--interval", "0.05", "--iterations", "2"}, 10s);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("no object named " + nothing), std::string::npos) << r.output;
}

// A FIFO named like a shmbus object: every command answers within its
// deadline (the FIFO is opened non-blocking and refused as not a regular
// file), show exits 3 (invalid).
TEST(Inspector, FifoNamedLikeAnObjectBlocksNoCommand) {
  SegmentGuard g(unique_name("fifo"));
  ASSERT_EQ(::mkfifo(test::shm_path(g.name()).c_str(), 0600), 0);
  for (const std::vector<std::string>& args : {std::vector<std::string>{"list"},
                                               {"list", "--json"},
                                               {"show", g.name()},
                                               {"doctor"},
                                               {"gc", "--dry-run"},
                                               {"gc"}}) {
    auto r = run_inspector(args, 10s);
    EXPECT_FALSE(r.timed_out) << args[0];
    EXPECT_NE(r.exit_code, -1) << args[0];
  }
  EXPECT_EQ(run_inspector({"show", g.name()}, 10s).exit_code, 3);
}

// watch with a FIFO among the objects still refreshes, and SIGTERM ends
// it cleanly (exit 0: its handler ran and it restored the terminal).
TEST(Inspector, WatchEndsOnSigtermWithAFifoPresent) {
  SegmentGuard g(unique_name("wfifo"));
  ASSERT_EQ(::mkfifo(test::shm_path(g.name()).c_str(), 0600), 0);
  std::string path = std::string(SHMBUS_BINARY_DIR) + "/tools/bus-inspector/bus-inspector";
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(path.c_str(), path.c_str(), "watch", g.name().c_str(), "--interval", "0.1",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  // The FIFO's row is printed after the signal handlers are installed.
  std::string screen;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (screen.find("INVALID") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{out[0], POLLIN, 0};
    if (::poll(&pfd, 1, 100) > 0) {
      char buf[1024];
      ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n > 0) screen.append(buf, static_cast<std::size_t>(n));
    }
  }
  EXPECT_NE(screen.find("INVALID"), std::string::npos) << screen;
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  auto st = test::wait_child(pid, 10s);
  ::close(out[0]);
  EXPECT_FALSE(st.timed_out);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
}

// A segment whose kind field is not a shmbus kind is invalid (exit 3), in
// text and in JSON.
TEST(Inspector, ShowOfUnknownKindExitsInvalid) {
  SegmentGuard g(unique_name("badkind"));
  auto shm = SharedMemory::create(g.name(), 64);
  int fd = ::open(test::shm_path(g.name()).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const std::uint32_t bad = 0xEEEE;
  ASSERT_EQ(::pwrite(fd, &bad, sizeof bad, offsetof(detail::SegmentHeader, kind)),
            static_cast<ssize_t>(sizeof bad));
  ::close(fd);
  auto text = run_inspector({"show", g.name()}, 10s);
  EXPECT_EQ(text.exit_code, 3) << text.output;
  auto js = run_inspector({"show", g.name(), "--json"}, 10s);
  EXPECT_EQ(js.exit_code, 3);
  EXPECT_EQ(json::parse(js.output)["error"], "corrupted");
}

// A type name (written by whoever has the segment) that is not UTF-8 is
// shown with U+FFFD in JSON; the inspector died of nlohmann's type_error.
TEST(Inspector, ShowJsonOfATypeNameThatIsNotUtf8PrintsAReplacement) {
  SegmentGuard g(unique_name("notutf8"));
  auto shm = SharedMemory::create(g.name(), 64);
  int fd = ::open(test::shm_path(g.name()).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const char bad[] = "q\x86\xff";
  ASSERT_EQ(::pwrite(fd, bad, sizeof bad, offsetof(detail::SegmentHeader, type_name)),
            static_cast<ssize_t>(sizeof bad));
  ::close(fd);
  for (const char* cmd : {"show", "list", "doctor"}) {
    std::vector<std::string> args{cmd};
    if (std::string(cmd) == "show") args.push_back(g.name());
    args.emplace_back("--json");
    auto r = run_inspector(args, 10s);
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 4) << cmd << ": exit " << r.exit_code;
    EXPECT_TRUE(json::accept(r.output)) << cmd << ": " << r.output;
  }
  auto r = run_inspector({"show", g.name(), "--json"}, 10s);
  EXPECT_NE(r.output.find("q\xef\xbf\xbd"), std::string::npos) << r.output;  // "q" U+FFFD
}

}  // namespace
}  // namespace shmbus
