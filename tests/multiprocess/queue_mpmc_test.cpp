// Queue family across real processes (forked): 4 producers x 4 consumers
// oversubscribed on the machine's cores, checking that nothing is lost or
// duplicated, checksums hold and per-producer order is kept as each
// consumer sees it; the task-queue/result-queue scenario with worker
// processes and sentinel shutdown; JoinableQueue join across processes;
// a queue opened by name in a child.
//
// Size: 50,000 messages per producer by default so the TSan build stays
// fast; SHMBUS_SOAK=1 runs 1,000,000 per producer.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <vector>

#include "shmbus/queue.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using shmbus::QueueResult;
using shmbus::test::fork_child;
using shmbus::test::SegmentGuard;
using shmbus::test::unique_name;
using shmbus::test::wait_child;

using Msg = shmbus::test::SeqMsg;
using shmbus::test::checksum;

// Anonymous shared memory the parent sets up before forking (test
// bookkeeping only, not part of the queue under test).
template <class T>
T* shared_array(std::size_t n) {
  void* p =
      ::mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  return static_cast<T*>(p);
}

TEST(QueueProcesses, FourByFourExactlyOnceInOrderWithChecksums) {
  constexpr std::uint32_t kProducers = 4, kConsumers = 4;
  const char* soak = std::getenv("SHMBUS_SOAK");
  const std::uint32_t per = (soak != nullptr && soak[0] == '1') ? 1'000'000 : 50'000;
  SegmentGuard g(unique_name("mp"));
  auto q = shmbus::Queue<Msg>::create(g.name(), {.capacity = 256});
  const std::size_t total = std::size_t{kProducers} * per;
  auto* seen = shared_array<std::atomic<std::uint8_t>>(total);
  ASSERT_NE(seen, nullptr);
  std::vector<pid_t> consumers, producers;
  for (std::uint32_t c = 0; c < kConsumers; ++c)
    consumers.push_back(fork_child([&] {
      shmbus::Queue<Msg> mine{g.name()};  // opened by name in the child
      std::array<std::int64_t, kProducers> last{-1, -1, -1, -1};
      int errors = 0;
      for (;;) {
        Msg m{};
        const QueueResult r = mine.get(m);
        if (r == QueueResult::closed) break;
        if (r != QueueResult::ok || m.producer >= kProducers || m.seq >= per ||
            m.check != checksum(m.producer, m.seq) || std::int64_t{m.seq} <= last[m.producer]) {
          ++errors;
          continue;
        }
        last[m.producer] = m.seq;
        if (seen[std::size_t{m.producer} * per + m.seq].fetch_add(1) != 0) ++errors;
      }
      return errors == 0 ? 0 : 1;
    }));
  for (std::uint32_t p = 0; p < kProducers; ++p)
    producers.push_back(fork_child([&, p] {
      for (std::uint32_t i = 0; i < per; ++i)  // the inherited handle
        if (q.put({p, i, checksum(p, i)}) != QueueResult::ok) return 1;
      return 0;
    }));
  for (pid_t pid : producers) {
    const auto st = wait_child(pid, 600s);
    EXPECT_TRUE(st.exited && st.code == 0) << "producer failed";
  }
  q.close();
  for (pid_t pid : consumers) {
    const auto st = wait_child(pid, 120s);
    EXPECT_TRUE(st.exited && st.code == 0) << "consumer saw an error";
  }
  std::size_t missing = 0, dup = 0;
  for (std::size_t i = 0; i < total; ++i) {
    const auto v = seen[i].load();
    missing += v == 0;
    dup += v > 1;
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(dup, 0u);
  const auto s = q.stats();
  EXPECT_EQ(s.committed, total);
  EXPECT_EQ(s.delivered, total);
  EXPECT_EQ(s.dropped + s.lost + s.peer_deaths, 0u);
  ::munmap(seen, total);
}

// multiprocessing's worker example: a task queue and a result queue,
// worker processes, one sentinel per worker to shut down.
TEST(QueueProcesses, TaskAndResultQueuesWithSentinelShutdown) {
  struct Task {
    std::int32_t id;  // -1: sentinel
    std::int32_t a, b;
  };
  struct Result {
    std::int32_t id;
    std::int64_t product;
    pid_t worker;
  };
  SegmentGuard g(unique_name("tasks"));
  g.add(unique_name("results"));
  auto tasks = shmbus::Queue<Task>::create(g.name(0), {.capacity = 16});
  auto results = shmbus::Queue<Result>::create(g.name(1), {.capacity = 16});
  constexpr int kWorkers = 3, kTasks = 200;
  std::vector<pid_t> workers;
  for (int w = 0; w < kWorkers; ++w)
    workers.push_back(fork_child([&] {
      for (;;) {
        Task t{};
        if (tasks.get(t) != QueueResult::ok) return 2;
        if (t.id < 0) return 0;
        if (results.put({t.id, std::int64_t{t.a} * t.b, ::getpid()}) != QueueResult::ok) return 3;
      }
    }));
  std::vector<int> got(kTasks, 0);
  int sent = 0, received = 0;
  // Interleave, since both queues are smaller than the task count.
  while (received < kTasks) {
    if (sent < kTasks && tasks.try_put({sent, sent, sent + 1}) == QueueResult::ok) {
      ++sent;
      continue;
    }
    Result r{};
    ASSERT_EQ(results.get_for(r, 30s), QueueResult::ok);
    ASSERT_GE(r.id, 0);
    ASSERT_LT(r.id, kTasks);
    EXPECT_EQ(r.product, std::int64_t{r.id} * (r.id + 1));
    ++got[r.id];
    ++received;
  }
  for (int w = 0; w < kWorkers; ++w) ASSERT_EQ(tasks.put({-1, 0, 0}), QueueResult::ok);
  for (pid_t pid : workers) {
    const auto st = wait_child(pid, 30s);
    EXPECT_TRUE(st.exited && st.code == 0);
  }
  for (int i = 0; i < kTasks; ++i) EXPECT_EQ(got[i], 1) << i;
}

TEST(QueueProcesses, JoinableJoinReturnsAfterEveryTaskDone) {
  SegmentGuard g(unique_name("jq"));
  auto q = shmbus::JoinableQueue<int>::create(g.name(), {.capacity = 8});
  auto* processed = shared_array<std::atomic<int>>(1);
  ASSERT_NE(processed, nullptr);
  constexpr int kItems = 100;
  std::vector<pid_t> workers;
  for (int w = 0; w < 2; ++w)
    workers.push_back(fork_child([&] {
      for (;;) {
        int v = 0;
        const QueueResult r = q.get(v);
        if (r == QueueResult::closed) return 0;
        if (r != QueueResult::ok) return 1;
        processed->fetch_add(1);
        if (q.task_done() != QueueResult::ok) return 2;
      }
    }));
  for (int i = 0; i < kItems; ++i) ASSERT_EQ(q.put(i), QueueResult::ok);
  q.join();
  // join() returned: every item was task_done, so every item was processed.
  EXPECT_EQ(processed->load(), kItems);
  EXPECT_EQ(q.stats().tasks_done, std::uint64_t{kItems});
  q.close();
  for (pid_t pid : workers) {
    const auto st = wait_child(pid, 30s);
    EXPECT_TRUE(st.exited && st.code == 0);
  }
  ::munmap(processed, sizeof(std::atomic<int>));
}

TEST(QueueProcesses, BlockedConsumerInOtherProcessSeesClose) {
  SegmentGuard g(unique_name("cl"));
  auto q = shmbus::BytesQueue::create(g.name(), {.capacity = 4, .max_message = 64});
  const std::byte one[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  ASSERT_EQ(q.put(one), QueueResult::ok);
  // The liveness slice (which also wakes sleepers) is an hour: only
  // close()'s notify can wake the child within the bound below.
  pid_t child = fork_child([&] {
    shmbus::BytesQueue mine{g.name(), {.liveness_interval = std::chrono::hours(1)}};
    std::array<std::byte, 64> buf{};
    std::size_t n = 0;
    if (mine.get(buf, n) != QueueResult::ok || n != 3) return 1;
    if (mine.get(buf, n) != QueueResult::closed) return 2;  // blocks until close
    return 0;
  });
  // Wait until the child is counted asleep on the futex.
  ASSERT_TRUE(shmbus::test::poll_until(
      [&] { return q.stats().delivered == 1 && q.stats().consumers_waiting == 1; }));
  q.close();
  const auto st = wait_child(child, 5s);  // far below the hour-long slice
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
}

}  // namespace
