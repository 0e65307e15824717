// The resource tracker for named objects made outside a Bus: unlinked when
// the creating process ends cleanly, unless track=false or another live
// process has the object open; never the parent's objects from a child.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <shmbus/shmbus.hpp>

#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

bool exists(const std::string& name) { return std::filesystem::exists(test::shm_path(name)); }

TEST(Tracker, NamedObjectIsUnlinkedWhenItsCreatorExits) {
  SegmentGuard g(unique_name("trk"));
  const pid_t pid = test::fork_child([&]() -> int {
    auto shm = SharedMemory::create(g.name(), 64);
    std::exit(0);  // atexit: the tracker runs
  });
  EXPECT_EQ(test::wait_child(pid).code, 0);
  EXPECT_FALSE(exists(g.name()));
}

TEST(Tracker, ProcessChildThatReturnsUnlinksWhatItCreated) {
  SegmentGuard g(unique_name("trk"));
  SegmentGuard lock_name(g.name() + ".lock");
  Process child([&] {
    auto ev = Event::create(g.name());
    auto cond = Condition::create(g.name() + "c");
    (void)cond;
    return 0;
  });
  g.add(g.name() + "c");
  g.add(g.name() + "c.lock");
  child.start();
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_FALSE(exists(g.name()));
  EXPECT_FALSE(exists(g.name() + "c"));
  EXPECT_FALSE(exists(g.name() + "c.lock"));
}

TEST(Tracker, TrackFalseOutlivesItsCreator) {
  SegmentGuard g(unique_name("trk"));
  const pid_t pid = test::fork_child([&]() -> int {
    auto shm = SharedMemory::create(g.name(), 64, {.track = false});
    std::exit(0);
  });
  EXPECT_EQ(test::wait_child(pid).code, 0);
  EXPECT_TRUE(exists(g.name()));
}

TEST(Tracker, NeverUnlinksWhatAnotherLiveProcessHasOpen) {
  SegmentGuard g(unique_name("trk"));
  Event created;
  Event opened;
  const pid_t pid = test::fork_child([&]() -> int {
    auto shm = SharedMemory::create(g.name(), 64);
    created.set();
    if (!opened.wait_for(10s)) return 1;
    std::exit(0);
  });
  ASSERT_TRUE(created.wait_for(10s));
  auto mine = SharedMemory::open(g.name());  // attaches this process
  opened.set();
  EXPECT_EQ(test::wait_child(pid).code, 0);
  EXPECT_TRUE(exists(g.name()));
}

TEST(Tracker, AForkedChildLeavesItsParentsObjects) {
  SegmentGuard g(unique_name("trk"));
  auto shm = SharedMemory::create(g.name(), 64);
  const pid_t pid = test::fork_child([&]() -> int { std::exit(0); });
  EXPECT_EQ(test::wait_child(pid).code, 0);
  EXPECT_TRUE(exists(g.name()));
}

TEST(Tracker, AnObjectUnlinkedAndMadeAgainByAnotherIsLeftAlone) {
  SegmentGuard g(unique_name("trk"));
  Event made;
  Event remade;
  const pid_t pid = test::fork_child([&]() -> int {
    auto shm = SharedMemory::create(g.name(), 64);
    made.set();
    if (!remade.wait_for(10s)) return 1;
    std::exit(0);
  });
  ASSERT_TRUE(made.wait_for(10s));
  ASSERT_TRUE(remove_segment(g.name()));
  auto again = SharedMemory::create(g.name(), 32, {.attach = false, .track = false});
  remade.set();
  EXPECT_EQ(test::wait_child(pid).code, 0);
  EXPECT_TRUE(exists(g.name()));
}

TEST(Tracker, ObjectsOfABusAreLeftToTheBus) {
  const std::string bus_name = unique_name("trkbus");
  SegmentGuard g(bus_name);
  g.add(bus_name + ".ev");
  Bus bus{bus_name};
  const pid_t pid = test::fork_child([&]() -> int {
    Bus mine{bus_name};
    auto ev = mine.event("ev");
    ev.set();
    std::exit(0);
  });
  EXPECT_EQ(test::wait_child(pid).code, 0);
  EXPECT_TRUE(exists(bus_name + ".ev"));
  EXPECT_TRUE(bus.event("ev").is_set());
}

}  // namespace
}  // namespace shmbus
