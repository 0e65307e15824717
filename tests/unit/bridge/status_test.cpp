// A bridge's status segment (bridge/status.hpp): one live bridge per name,
// a dead one's status replaced, and the reader's validation of what shared
// memory holds (a scribbled record is an Error naming it, never a crash or
// a hang), and bus-inspector's show/doctor of a bridge. The view of a
// running link is in forwarder_test.
#include "shmbus/bridge/status.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>

#include "../../../bridge/src/status_format.hpp"  // the format, to scribble on it
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "shmbus/bridge/forwarder.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/event.hpp"
#include "shmbus/queue.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace sb = shmbus::bridge;
namespace sf = shmbus::bridge::detail;

namespace {

// A writable mapping of a segment's payload, as a hostile process has it.
struct Scribbler {
  void* base = MAP_FAILED;
  std::size_t size = 0;
  explicit Scribbler(const std::string& name) {
    const std::string path = "/dev/shm/" + shmbus::detail::os_name(name);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    EXPECT_GE(fd, 0) << path;
    size = static_cast<std::size_t>(::lseek(fd, 0, SEEK_END));
    base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    EXPECT_NE(base, MAP_FAILED);
  }
  ~Scribbler() {
    if (base != MAP_FAILED) ::munmap(base, size);
  }
  std::byte* payload() const { return static_cast<std::byte*>(base) + shmbus::detail::kHeaderSize; }
  sf::StatusHeader& header() const { return *reinterpret_cast<sf::StatusHeader*>(payload()); }
  sf::StatusChannel& channel(std::size_t i) const {
    return reinterpret_cast<sf::StatusChannel*>(payload() + sizeof(sf::StatusHeader))[i];
  }
};

struct OneBridge {
  std::string u = shmbus::test::unique_name("bs");
  shmbus::test::SegmentGuard guard;
  shmbus::Queue<int> q;
  OneBridge() {
    guard.add(u + ".orders");
    guard.add(u + "-f.out.orders");
    guard.add(u + "-f.bridge");
    q = shmbus::Queue<int>::create(u + ".orders", {.capacity = 8});
  }
  [[nodiscard]] sb::ForwarderOptions options() const {
    return {.name = u + "-f", .bus = u, .queues = {"orders"}};
  }
};

}  // namespace

TEST(BridgeStatus, ShowsTheChannelsOfAForwarderBeforeItsFirstLink) {
  OneBridge b;
  sb::Forwarder f{b.options()};
  const sb::BridgeStatus s = sb::read_status(b.u + "-f");
  EXPECT_EQ(s.name, b.u + "-f");
  EXPECT_TRUE(s.alive);
  EXPECT_EQ(s.process.pid, ::getpid());
  EXPECT_EQ(s.link, sb::LinkState::down);
  EXPECT_EQ(s.peer, "");
  EXPECT_EQ(s.links, 0u);
  ASSERT_EQ(s.channels.size(), 1u);
  EXPECT_EQ(s.channels[0].name, "orders");
  EXPECT_TRUE(s.channels[0].outbound);
  EXPECT_FALSE(s.channels[0].topic);
  EXPECT_EQ(shmbus::inspect_segment(b.u + "-f.bridge").kind, shmbus::ObjectKind::bridge);
}

TEST(BridgeStatus, ASecondLiveBridgeOfTheNameIsRefusedAndTheStatusGoesWithTheBridge) {
  OneBridge b;
  {
    sb::Forwarder f{b.options()};
    EXPECT_EQ(shmbus::test::code_of([&] { sb::Forwarder again{b.options()}; }),
              shmbus::Errc::already_exists);
    EXPECT_EQ(sb::read_status(b.u + "-f").channels.size(), 1u);  // the first one's, untouched
  }
  EXPECT_EQ(shmbus::test::code_of([&] { (void)sb::read_status(b.u + "-f"); }),
            shmbus::Errc::not_found);
}

TEST(BridgeStatus, ABridgeKilledLeavesAStaleStatusThatTheNextReplaces) {
  OneBridge b;
  const pid_t child = shmbus::test::fork_child([&]() -> int {
    sb::Forwarder f{b.options()};
    ::raise(SIGKILL);  // dies holding it: the destructor never runs
    return 1;
  });
  EXPECT_EQ(shmbus::test::wait_child(child).signal, SIGKILL);
  const sb::BridgeStatus stale = sb::read_status(b.u + "-f");
  EXPECT_FALSE(stale.alive);
  EXPECT_EQ(stale.process.pid, child);
  const auto view = shmbus::SegmentView::open(b.u + "-f.bridge");
  const auto problems = sb::bridge_object_stats(view).problems;
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("dead"), std::string::npos) << problems[0];
  sb::Forwarder f{b.options()};
  const sb::BridgeStatus fresh = sb::read_status(b.u + "-f");
  EXPECT_TRUE(fresh.alive);
  EXPECT_EQ(fresh.process.pid, ::getpid());
}

TEST(BridgeStatus, ScribbledRecordsAreCorruptedErrorsNamingWhatWasWrong) {
  OneBridge b;
  sb::Forwarder f{b.options()};
  const std::string name = b.u + "-f";
  Scribbler w(name + ".bridge");
  auto reason = [&] {
    try {
      (void)sb::read_status(name);
    } catch (const shmbus::Error& e) {
      EXPECT_EQ(e.object(), name + ".bridge");
      return std::string(shmbus::to_string(e.code())) + ": " + e.reason();
    }
    return std::string("no error");
  };
  auto& h = w.header();
  h.count.store(1000);
  EXPECT_NE(reason().find("corrupted: 1000 channels, capacity 64"), std::string::npos) << reason();
  h.count.store(1);
  std::memset(static_cast<void*>(&w.channel(0).name), 'x', sf::kStatusNameBytes);
  EXPECT_NE(reason().find("not NUL-terminated"), std::string::npos) << reason();
  w.channel(0).name[0].store(0x2f2e);  // "./": characters no name has
  EXPECT_NE(reason().find("a character names cannot"), std::string::npos) << reason();
  w.channel(0).name[0].store(0);
  EXPECT_NE(reason().find("empty"), std::string::npos) << reason();
  w.channel(0).name[0].store(0x61);  // "a"
  w.channel(0).flags.store(0x80);
  EXPECT_NE(reason().find("bad flags"), std::string::npos) << reason();
  w.channel(0).flags.store(sf::kFlagOutbound);
  h.link.store(7);
  EXPECT_NE(reason().find("link state 7"), std::string::npos) << reason();
  h.link.store(0);
  h.layout.store(1);  // a writer that died mid-layout: odd for ever
  EXPECT_NE(reason().find("layout kept changing"), std::string::npos) << reason();
  h.layout.store(2);
  h.capacity = 1u << 30;
  EXPECT_NE(reason().find("does not fit"), std::string::npos) << reason();
  h.capacity = sf::kStatusCapacity;
  h.version = 9;
  EXPECT_NE(reason().find("wrong_version"), std::string::npos) << reason();
  h.version = sf::kStatusVersion;
  EXPECT_EQ(reason(), "no error");
  // Garbage anywhere: an answer or an Error, never a crash or a hang; the
  // inspector's stats turn it into a problem.
  std::mt19937_64 rng(21);
  const std::size_t bytes = sizeof(sf::StatusHeader) + 4 * sizeof(sf::StatusChannel);
  for (int round = 0; round < 2000; ++round) {
    w.payload()[rng() % bytes] = static_cast<std::byte>(rng() & 0xff);
    if (round % 7 == 0) h.layout.store(rng() & ~std::uint64_t{1});  // mostly even: read on
    try {
      const sb::BridgeStatus s = sb::read_status(name);
      EXPECT_LE(s.channels.size(), sf::kStatusCapacity);
    } catch (const shmbus::Error& e) {
      EXPECT_TRUE(e.code() == shmbus::Errc::corrupted || e.code() == shmbus::Errc::wrong_version)
          << e.what();
    }
    const auto view = shmbus::SegmentView::open(name + ".bridge");
    (void)sb::bridge_object_stats(view);
  }
}

TEST(BridgeStatus, BusInspectorShowsABridgeAndItsDoctorNamesAStaleOne) {
  using nlohmann::json;
  OneBridge b;
  const std::string status = b.u + "-f.bridge";
  {
    sb::Forwarder f{b.options()};
    const auto r = shmbus::test::run_inspector({"show", status, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const json j = json::parse(r.output);
    EXPECT_EQ(j["kind"], "bridge");
    EXPECT_EQ(j["bridge"]["name"], b.u + "-f");
    EXPECT_EQ(j["bridge"]["link"], "down");
    EXPECT_EQ(j["bridge"]["channels"][0]["name"], "orders");
    EXPECT_EQ(j["bridge"]["channels"][0]["direction"], "out");
    EXPECT_EQ(j["stats"]["gauges"]["out.orders.in_flight"], 0);
    const auto text = shmbus::test::run_inspector({"show", status});
    EXPECT_NE(text.output.find("out  queue  orders"), std::string::npos) << text.output;
    // A scribbled status: exit code 3 and the reason, no crash.
    Scribbler w(status);
    w.header().count.store(999);
    const auto bad = shmbus::test::run_inspector({"show", status, "--json"});
    EXPECT_EQ(bad.exit_code, 3) << bad.output;
    EXPECT_EQ(json::parse(bad.output)["error"], "corrupted");
    w.header().count.store(1);
  }
  // A bridge killed: its status stays, and doctor says so. A host-wide gc
  // run by a test in parallel (bus_test and inspector_test run
  // `bus-inspector gc`) would unlink a status whose every process is dead
  // before doctor reads it (the flake under the parallel ctest run): this
  // process attaches before the bridge dies, so gc keeps the status while
  // its bridge is dead.
  shmbus::Event made, attached;
  const pid_t child = shmbus::test::fork_child([&]() -> int {
    sb::Forwarder f{b.options()};
    made.set();
    if (!attached.wait_for(30s)) return 2;
    ::raise(SIGKILL);
    return 1;
  });
  ASSERT_TRUE(made.wait_for(30s));
  const auto keep = shmbus::detail::Segment::open(
      status, shmbus::ObjectKind::bridge,
      {shmbus::detail::fnv1a("shmbus.bridge.status"), "bridge status"});
  ASSERT_TRUE(keep.attached_here());
  attached.set();
  EXPECT_EQ(shmbus::test::wait_child(child).signal, SIGKILL);
  const auto doctor = shmbus::test::run_inspector({"doctor", "--json"});
  bool named = false;
  const json report = json::parse(doctor.output);
  for (const auto& f : report["findings"])
    named = named || (f["name"] == status &&
                      f["problem"].get<std::string>().find("is dead") != std::string::npos);
  EXPECT_TRUE(named) << doctor.output;
}
