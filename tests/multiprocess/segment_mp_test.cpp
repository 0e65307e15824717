// Segments between real processes: forked children, and unrelated
// processes started by fork+exec that open by name.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <thread>

#include "shmbus/segment_info.hpp"
#include "shmbus/shared_memory.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

TEST(SegmentMp, UnrelatedProcessesSeeEachOthersWrites) {
  SegmentGuard g(unique_name("mp"));
  auto shm = SharedMemory::create(g.name(), 4096);
  auto w = test::wait_child(test::spawn_helper("shm_peer", {g.name(), "write", "from-child"}));
  ASSERT_TRUE(w.exited);
  ASSERT_EQ(w.code, 0);
  EXPECT_STREQ(reinterpret_cast<const char*>(shm.buf().data()), "from-child");

  std::memcpy(shm.buf().data(), "from-parent", 12);
  auto e = test::wait_child(test::spawn_helper("shm_peer", {g.name(), "expect", "from-parent"}));
  ASSERT_TRUE(e.exited);
  EXPECT_EQ(e.code, 0);
}

TEST(SegmentMp, ForkedChildOpensByNameAndDetachesOnExit) {
  SegmentGuard g(unique_name("fork"));
  auto shm = SharedMemory::create(g.name(), 64);
  pid_t child = test::fork_child([&] {
    auto mine = SharedMemory::open(g.name());
    mine.buf()[1] = std::byte{5};
    return inspect_segment(g.name()).attached.size() == 2 ? 0 : 1;
  });
  auto st = test::wait_child(child);
  ASSERT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  EXPECT_EQ(shm.buf()[1], std::byte{5});
  EXPECT_EQ(inspect_segment(g.name()).attached.size(), 1u);  // the child detached
}

TEST(SegmentMp, KilledProcessStaysInTableAndShowsDead) {
  SegmentGuard g(unique_name("kill"));
  auto shm = SharedMemory::create(g.name(), 4096);
  pid_t pid = test::spawn_helper("shm_peer", {g.name(), "hold"});
  ASSERT_TRUE(
      test::poll_until([&] { return std::memcmp(shm.buf().data() + 64, "held", 5) == 0; }, 10s));
  auto before = inspect_segment(g.name());
  ASSERT_EQ(before.attached.size(), 2u);
  EXPECT_TRUE(before.attached[1].alive);
  EXPECT_EQ(before.attached[1].id.pid, pid);

  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto st = test::wait_child(pid);
  EXPECT_EQ(st.signal, SIGKILL);
  auto after = inspect_segment(g.name());
  ASSERT_EQ(after.attached.size(), 2u);  // a killed process cannot detach
  EXPECT_EQ(after.attached[1].id.pid, pid);
  EXPECT_FALSE(after.attached[1].alive);
  EXPECT_FALSE(after.abandoned());  // we are still alive
}

TEST(SegmentMp, DeadSlotsAreReusedWhenTheTableIsFull) {
  SegmentGuard g(unique_name("reuse"));
  SegmentOptions two;
  two.max_attached = 2;
  auto shm = SharedMemory::create(g.name(), 4096, two);
  pid_t pid = test::spawn_helper("shm_peer", {g.name(), "hold"});
  ASSERT_TRUE(
      test::poll_until([&] { return std::memcmp(shm.buf().data() + 64, "held", 5) == 0; }, 10s));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  (void)test::wait_child(pid);
  auto again = SharedMemory::open(g.name());  // takes the dead process's slot
  auto info = inspect_segment(g.name());
  ASSERT_EQ(info.attached.size(), 2u);
  EXPECT_TRUE(info.attached[0].alive);
  EXPECT_TRUE(info.attached[1].alive);
}

TEST(SegmentMp, OpenWaitsForACreatorStillInitialising) {
  SegmentGuard g(unique_name("slowinit"));
  // The creator's init step holds until the opener has started waiting;
  // the opener must then see the fully initialised payload.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t creator = test::fork_child([&] {
    ::close(fds[1]);
    auto seg = detail::Segment::create(g.name(), ObjectKind::shared_memory, detail::kBytesTag, 64,
                                       [&](std::span<std::byte> p) {
                                         char go;
                                         if (::read(fds[0], &go, 1) != 1)
                                           throw std::runtime_error("no go");
                                         p[0] = std::byte{0x5a};
                                       });
    return 0;
  });
  ::close(fds[0]);
  ASSERT_TRUE(
      test::poll_until([&] { return ::access(test::shm_path(g.name()).c_str(), F_OK) == 0; }));
  SegmentOptions patient;
  patient.open_timeout = 10s;
  std::thread release([&] {
    char go = 'g';
    (void)::write(fds[1], &go, 1);
  });
  auto shm = SharedMemory::open(g.name(), patient);
  release.join();
  EXPECT_EQ(shm.buf()[0], std::byte{0x5a});
  ::close(fds[1]);
  auto st = test::wait_child(creator);
  EXPECT_TRUE(st.exited);
}

}  // namespace
}  // namespace shmbus
