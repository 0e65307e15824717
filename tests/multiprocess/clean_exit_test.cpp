// Clean exit: a Process child whose callable returns (or a process that
// calls exit()) leaves its objects as closed handles would; a child killed
// by a signal still reads as a death.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <shmbus/shmbus.hpp>
#include <string>

#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::code_of;

TEST(CleanExit, PipePeerReadsEofWhenAProcessChildReturns) {
  auto [parent_end, child_end] = Pipe();
  Process child([&] { return child_end.send("bye") == SendResult::ok ? 0 : 1; });
  child.start();
  EXPECT_EQ(parent_end.recv_string(), "bye");
  std::string more;
  const RecvResult r = parent_end.recv(more);
  EXPECT_EQ(r, RecvResult::eof) << to_string(r);
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
}

TEST(CleanExit, PipePeerReadsEofWhenAChildCallsExit) {
  auto [parent_end, child_end] = Pipe();
  const pid_t pid = test::fork_child([&]() -> int {
    (void)child_end.send("bye");
    std::exit(0);  // atexit runs the exit actions
  });
  EXPECT_EQ(parent_end.recv_string(), "bye");
  EXPECT_EQ(code_of([&] { (void)parent_end.recv_string(); }), Errc::closed);
  EXPECT_EQ(test::wait_child(pid).code, 0);
}

TEST(CleanExit, PipePeerReadsDeathWhenAProcessChildIsKilled) {
  auto [parent_end, child_end] = Pipe();
  Process child([&] {
    (void)child_end.send("last");
    ::raise(SIGKILL);
    return 0;
  });
  child.start();
  EXPECT_EQ(parent_end.recv_string(), "last");
  std::string more;
  EXPECT_EQ(parent_end.recv(more), RecvResult::peer_dead);
  child.join();
  EXPECT_EQ(child.exitcode(), -SIGKILL);
}

TEST(CleanExit, QueueRecordsOfAReturningChildAreFreedNotRecovered) {
  Queue<int> queue{{.capacity = 16}};
  Process child([&] { return queue.put(1) == QueueResult::ok ? 0 : 1; });
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_EQ(queue.recover_dead(), 0u);  // nothing held by a dead participant
  EXPECT_EQ(queue.stats().peer_deaths, 0u);
  int v = 0;
  EXPECT_EQ(queue.get_for(v, 1s), QueueResult::ok);
  EXPECT_EQ(v, 1);
}

TEST(CleanExit, QueueRecordsOfAKilledChildAreRecovered) {
  Queue<int> queue{{.capacity = 16}};
  Process child([&] {
    (void)queue.put(1);
    ::raise(SIGKILL);
    return 0;
  });
  child.start();
  child.join();
  EXPECT_EQ(queue.recover_dead(), 1u);
}

TEST(CleanExit, BarrierIsReusableBySuccessiveSetsOfProcessChildren) {
  Barrier barrier{3};
  for (int round = 0; round < 20; ++round) {
    Process a([&] { return barrier.wait_for(10s) ? 0 : 1; });
    Process b([&] { return barrier.wait_for(10s) ? 0 : 1; });
    a.start();
    b.start();
    const BarrierResult r = barrier.wait_for(10s);
    a.join();
    b.join();
    ASSERT_TRUE(r) << "round " << round;
    ASSERT_EQ(a.exitcode(), 0) << "round " << round;
    ASSERT_EQ(b.exitcode(), 0) << "round " << round;
  }
}

TEST(CleanExit, AKilledPartyStillBreaksTheBarrier) {
  Barrier barrier{3};
  Process waiter([&] { return barrier.wait() ? 0 : 1; });
  waiter.start();
  // The child is registered once it waits: hold it there, then kill it.
  ASSERT_TRUE(test::poll_until([&] { return barrier.n_waiting() == 1; }));
  waiter.kill();
  waiter.join();
  EXPECT_FALSE(barrier.wait_for(10s));
}

}  // namespace
}  // namespace shmbus
