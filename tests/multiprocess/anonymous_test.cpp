// Anonymous objects (constructed without a name, as Python's Queue(),
// Event(), ...): unnamed memory shared by fork(), nothing in /dev/shm.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <numeric>
#include <shmbus/shmbus.hpp>
#include <vector>

#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::wait_child;

// shmbus objects in /dev/shm created by one of `pids` (other tests may run
// beside this one, so only the creator tells ours apart).
std::size_t created_by(const std::vector<pid_t>& pids) {
  std::size_t n = 0;
  for (const auto& name : list_segments()) {
    try {
      const SegmentInfo info = inspect_segment(name);
      if (std::find(pids.begin(), pids.end(), info.creator.pid) != pids.end()) ++n;
    } catch (const Error&) {
    }
  }
  return n;
}

TEST(Anonymous, EveryKindWorksAcrossForkWithNothingInDevShm) {
  Event event;
  Lock lock;
  RLock rlock;
  Semaphore sem{0};
  BoundedSemaphore bounded{1};
  Condition cond;
  Barrier barrier{2};
  Value<long> hits{5};
  Array<int> xs{1, 2, 3};
  SharedMemory block{64};
  Queue<int> queue{{.capacity = 8}};
  SimpleQueue<int> simple;
  JoinableQueue<int> joinable;
  BytesQueue bytes;
  auto [here, there] = Pipe();
  EXPECT_TRUE(event.name().empty());

  const pid_t child = fork_child([&] {
    if (!barrier.wait_for(10s)) return 1;
    {
      std::scoped_lock g(lock, rlock);
      hits.fetch_add(10);
      xs[0] = 100;
    }
    block.buf()[0] = std::byte{42};
    if (queue.put(7) != QueueResult::ok || simple.put(8) != QueueResult::ok ||
        joinable.put(9) != QueueResult::ok)
      return 2;
    const std::array<std::byte, 3> msg{std::byte{1}, std::byte{2}, std::byte{3}};
    if (bytes.put(msg) != QueueResult::ok) return 3;
    if (there.send("hello") != SendResult::ok) return 4;
    {
      std::scoped_lock g(bounded);
      sem.release();
    }
    {
      std::unique_lock g(cond);
      event.set();
      cond.notify_all();
    }
    return 0;
  });
  const auto b = barrier.wait_for(10s);
  ASSERT_TRUE(b);
  ASSERT_TRUE(sem.acquire_for(10s));
  ASSERT_TRUE(event.wait_for(10s));
  EXPECT_EQ(wait_child(child).code, 0);
  EXPECT_EQ(hits.get(), 15);
  EXPECT_EQ(xs[0], 100);
  EXPECT_EQ(block.buf()[0], std::byte{42});
  int v = 0;
  EXPECT_EQ(queue.get_for(v, 1s), QueueResult::ok);
  EXPECT_EQ(v, 7);
  EXPECT_EQ(simple.get(v), QueueResult::ok);
  EXPECT_EQ(v, 8);
  EXPECT_EQ(joinable.get_for(v, 1s), QueueResult::ok);
  EXPECT_EQ(v, 9);
  EXPECT_EQ(joinable.task_done(), QueueResult::ok);
  EXPECT_TRUE(joinable.join_for(1s));
  std::vector<std::byte> out(bytes.max_message());
  std::size_t n = 0;
  EXPECT_EQ(bytes.get_for(out, n, 1s), QueueResult::ok);
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(here.recv_string(), "hello");
  EXPECT_EQ(bounded.get_value(), 1u);
  EXPECT_EQ(created_by({::getpid(), child}), 0u);
}

TEST(Anonymous, TwoObjectsAreDistinct) {
  Event a;
  Event b;
  a.set();
  EXPECT_TRUE(a.is_set());
  EXPECT_FALSE(b.is_set());
  Queue<int> q1;
  Queue<int> q2;
  ASSERT_EQ(q1.put(1), QueueResult::ok);
  EXPECT_EQ(q2.qsize(), 0u);
  EXPECT_EQ(q1.capacity(), 1024u);
}

TEST(Anonymous, ConditionWaitsOnTheLockItWasGiven) {
  Lock lock;
  Condition cond{lock};
  ASSERT_EQ(cond.acquire(), LockResult::acquired);
  EXPECT_TRUE(lock.locked());  // the Condition's lock is this very lock
  EXPECT_FALSE(cond.wait_for(1ms));
  cond.release();
  EXPECT_FALSE(lock.locked());
}

TEST(Anonymous, NamedConditionOverAnAnonymousLockIsRefused) {
  test::SegmentGuard g(test::unique_name("cond"));
  Lock lock;
  EXPECT_EQ(test::code_of([&] { (void)Condition::create(g.name(), lock); }),
            Errc::invalid_argument);
}

TEST(Anonymous, ArgumentsAreCheckedAsForNamedObjects) {
  EXPECT_EQ(test::code_of([] { Barrier b{0}; }), Errc::invalid_argument);
  EXPECT_EQ(test::code_of([] { SharedMemory m{0}; }), Errc::invalid_argument);
  EXPECT_EQ(test::code_of([] { Semaphore s{Semaphore::kMaxValue + 1u}; }), Errc::invalid_argument);
  EXPECT_EQ(test::code_of([] { Array<int> a(std::size_t{0}); }), Errc::invalid_argument);
}

TEST(Semaphore, ScopedLockTakesAndReturnsAToken) {
  Semaphore sem{1};
  {
    std::scoped_lock g(sem);
    EXPECT_EQ(sem.get_value(), 0u);
    EXPECT_FALSE(sem.try_lock());
  }
  EXPECT_EQ(sem.get_value(), 1u);
  BoundedSemaphore bounded{1};
  { std::unique_lock g(bounded); }
  bounded.unlock();  // past the bound: ignored, as the Lockable form cannot throw
  EXPECT_EQ(bounded.get_value(), 1u);
}

TEST(Array, IndexIterateViewAndBuild) {
  Array<int> a{3, 1, 2};
  ASSERT_EQ(a.size(), 3u);
  a[0] = a[1] + a[2];
  EXPECT_EQ(a[0], 3);
  EXPECT_EQ(std::accumulate(a.begin(), a.end(), 0), 6);
  {
    auto v = a.view();
    EXPECT_TRUE(a.get_lock().is_owned());
    std::ranges::sort(v);
  }
  EXPECT_FALSE(a.get_lock().is_owned());
  EXPECT_EQ(std::vector<int>(a.begin(), a.end()), (std::vector<int>{1, 2, 3}));
  Array<double> zeros(4);
  EXPECT_EQ(zeros.size(), 4u);
  EXPECT_EQ(zeros[3], 0.0);
  const std::vector<long> src{5, 6};
  Array<long> copied{src};
  EXPECT_EQ(copied[1], 6);
  EXPECT_EQ(test::code_of([&] { (void)static_cast<int>(a[3]); }), Errc::invalid_argument);
  const Array<int>& ca = a;
  EXPECT_EQ(ca[2], 3);
}

}  // namespace
}  // namespace shmbus
