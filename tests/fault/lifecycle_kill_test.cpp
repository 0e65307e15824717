// Children killed (SIGKILL) at random points of their start-up, work and
// clean exit, while they create tracked named objects, open the parent's
// live ones and use anonymous ones: after the tracker's sweep nothing of
// theirs is left in /dev/shm, and no live object was unlinked.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <random>
#include <thread>

#include "shmbus/detail/segment.hpp"
#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

TEST(LifecycleKill, KilledChildrenLeaveNothingAndUnlinkNothingLive) {
  const std::string prefix = unique_name("lk");
  SegmentGuard g(prefix + "-live");
  auto live = SharedMemory::create(g.name(), 64);  // the parent's: must survive
  live.buf()[0] = std::byte{7};
  Queue<int> results{{.capacity = 1024}};
  auto [parent_end, child_end] = Pipe();
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_us(0, 2000);
  // Until 200 kills have landed in a child's life (the others found it
  // ended), with a bound on the children started.
  constexpr int kKills = 200;
  constexpr int kMaxChildren = 4000;
  int killed = 0;
  int started = 0;
  for (int i = 0; killed < kKills && i < kMaxChildren; ++i, ++started) {
    const std::string mine = prefix + "-c" + std::to_string(i);
    g.add(mine);
    g.add(mine + "-cond");
    g.add(mine + "-cond.lock");
    Process child([&, mine] {
      auto shm = SharedMemory::create(mine, 4096);    // tracked: gone at exit
      auto cond = Condition::create(mine + "-cond");  // and its lock
      auto theirs = SharedMemory::open(g.name());     // the parent's: left alone
      (void)results.try_put(static_cast<int>(theirs.buf()[0]));
      (void)child_end.try_send("alive");
      return 0;
    });
    child.start();
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));  // fault injection point
    child.kill();  // SIGKILL, or nothing if it already ended
    child.join();
    if (child.exitcode() == -SIGKILL) ++killed;
  }
  // The tracker's sweep for what killed creators left (their attachment
  // tables hold only dead processes).
  // A creator killed between shm_open() and writing its header leaves a
  // file with no creator recorded (empty, or initialising with creator 0):
  // gc takes those after stuck_after (10 s by default) or, when empty,
  // only with include_invalid; the names here are this test's alone.
  GcOptions sweep;
  sweep.prefix = prefix;
  sweep.include_invalid = true;
  sweep.stuck_after = 0s;
  (void)collect_garbage(sweep);
  std::size_t left = 0;
  for (const auto& name : list_segments()) {
    if (name.starts_with(prefix) && name != g.name()) ++left;
  }
  EXPECT_EQ(left, 0u) << killed << " of " << started << " children killed";
  ASSERT_TRUE(std::filesystem::exists(test::shm_path(g.name())));
  EXPECT_EQ(SharedMemory::open(g.name()).buf()[0], std::byte{7});
  RecordProperty("killed", killed);
  RecordProperty("started", started);
  EXPECT_EQ(killed, kKills);
  (void)parent_end;
}

// A creator killed inside its payload's init has written its identity
// (creator, creation time) but not published ready: gc judges the
// segment by what inspect_segment() read and removes it by that identity
// under the unlink lock ([segment.unlink]); a live one beside it stays.
TEST(LifecycleKill, GcRemovesASegmentWhoseCreatorDiedInitialisingIt) {
  SegmentGuard g(unique_name("lki"));
  g.add(g.name() + "-live");
  auto live = SharedMemory::create(g.name() + "-live", 64);
  const pid_t kid = test::fork_child([&] {
    (void)detail::Segment::create(g.name(), ObjectKind::shared_memory,
                                  detail::type_tag<std::byte>(), 64,
                                  [](std::span<std::byte>) { ::raise(SIGKILL); });
    return 1;
  });
  ASSERT_EQ(test::wait_child(kid).signal, SIGKILL);
  const SegmentInfo seen = inspect_segment(g.name());
  ASSERT_EQ(seen.state, "initialising");
  ASSERT_EQ(seen.creator.pid, kid);
  EXPECT_NE(seen.created_unix_ns, 0u);
  GcOptions sweep;
  sweep.prefix = g.name();
  const std::vector<GcAction> actions = collect_garbage(sweep);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].name, g.name());
  EXPECT_TRUE(actions[0].removed) << actions[0].reason;
  EXPECT_FALSE(std::filesystem::exists(test::shm_path(g.name())));
  EXPECT_TRUE(std::filesystem::exists(test::shm_path(g.name() + "-live")));
}

}  // namespace
}  // namespace shmbus
