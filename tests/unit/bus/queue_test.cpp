// Queue family, single process: semantics of put/get and their forms,
// close, timeouts, JoinableQueue accounting, open-by-name validation,
// read-only statistics, and a multi-thread MPMC run checking sequence
// numbers end to end.
#include "shmbus/queue.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "shmbus/error.hpp"
#include "shmbus/inspect.hpp"
#include "shmbus/segment_info.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using shmbus::QueueResult;
using shmbus::test::SegmentGuard;
using shmbus::test::unique_name;

struct Msg {
  std::uint32_t producer;
  std::uint32_t seq;
  std::uint64_t check;
};

std::uint64_t checksum(std::uint32_t p, std::uint32_t s) {
  return (std::uint64_t{p} * 0x9E3779B97F4A7C15ULL) ^ (std::uint64_t{s} * 0xC2B2AE3D27D4EB4FULL);
}

TEST(Queue, PutGetKeepsOrderAndCapacityRoundsUp) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<Msg>::create(g.name(), {.capacity = 5});
  EXPECT_EQ(q.capacity(), 8u);
  EXPECT_TRUE(q.empty());
  for (std::uint32_t i = 0; i < 8; ++i)
    ASSERT_EQ(q.try_put({1, i, checksum(1, i)}), QueueResult::ok);
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.qsize(), 8u);
  EXPECT_EQ(q.try_put({1, 99, 0}), QueueResult::full);
  for (std::uint32_t i = 0; i < 8; ++i) {
    Msg m{};
    ASSERT_EQ(q.try_get(m), QueueResult::ok);
    EXPECT_EQ(m.seq, i);
    EXPECT_EQ(m.check, checksum(1, i));
  }
  Msg m{};
  EXPECT_EQ(q.try_get(m), QueueResult::empty);
  // Many laps around the ring.
  for (std::uint32_t i = 0; i < 1000; ++i) {
    ASSERT_EQ(q.put({2, i, 0}), QueueResult::ok);
    ASSERT_EQ(q.get(m), QueueResult::ok);
    ASSERT_EQ(m.seq, i);
  }
  const auto s = q.stats();
  EXPECT_EQ(s.committed, 1008u);
  EXPECT_EQ(s.delivered, 1008u);
  EXPECT_EQ(s.dropped + s.lost + s.depth, 0u);
}

TEST(Queue, TimeoutsExpireOnEmptyAndFull) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 2});
  int v = 0;
  EXPECT_EQ(q.get_for(v, 20ms), QueueResult::timed_out);
  EXPECT_EQ(q.get_until(v, shmbus::Clock::now() - 1s), QueueResult::timed_out);
  ASSERT_EQ(q.put(1), QueueResult::ok);
  ASSERT_EQ(q.put(2), QueueResult::ok);
  const auto t0 = shmbus::Clock::now();
  EXPECT_EQ(q.put_for(3, 20ms), QueueResult::timed_out);
  EXPECT_GE(shmbus::Clock::now() - t0, 20ms);
  EXPECT_EQ(q.get_for(v, 1s), QueueResult::ok);
  EXPECT_EQ(v, 1);
}

TEST(Queue, BlockedGetWakesForPutFromAnotherThread) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(
      g.name(), {.capacity = 4, .policy = {shmbus::WaitStrategy::blocking, {}}});
  std::atomic<bool> got{false};
  std::thread t([&] {
    int v = 0;
    EXPECT_EQ(q.get(v), QueueResult::ok);
    EXPECT_EQ(v, 42);
    got = true;
  });
  ASSERT_EQ(q.put(42), QueueResult::ok);
  t.join();
  EXPECT_TRUE(got);
}

TEST(Queue, CloseFailsPutsAndDrainsThenReportsClosed) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 8});
  ASSERT_EQ(q.put(1), QueueResult::ok);
  ASSERT_EQ(q.put(2), QueueResult::ok);
  q.close();
  EXPECT_TRUE(q.is_closed());
  EXPECT_EQ(q.put(3), QueueResult::closed);
  EXPECT_EQ(q.try_put(3), QueueResult::closed);
  int v = 0;
  EXPECT_EQ(q.get(v), QueueResult::ok);
  EXPECT_EQ(v, 1);
  EXPECT_EQ(q.try_get(v), QueueResult::ok);
  EXPECT_EQ(v, 2);
  EXPECT_EQ(q.get(v), QueueResult::closed);
  EXPECT_EQ(q.get_for(v, 1s), QueueResult::closed);
}

TEST(Queue, CloseWakesBlockedConsumersAndProducers) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 2});
  ASSERT_EQ(q.put(1), QueueResult::ok);
  ASSERT_EQ(q.put(2), QueueResult::ok);
  std::thread producer([&] { EXPECT_EQ(q.put(3), QueueResult::closed); });
  SegmentGuard g2(unique_name("q2"));
  auto e = shmbus::Queue<int>::create(g2.name(), {.capacity = 2});
  std::thread consumer([&] {
    int v = 0;
    EXPECT_EQ(e.get(v), QueueResult::closed);
  });
  // Wait until both are blocked (they sleep as futex waiters or spin; either
  // way close() must release them).
  q.close();
  e.close();
  producer.join();
  consumer.join();
}

TEST(BytesQueue, VariableLengthAndLimits) {
  SegmentGuard g(unique_name("bq"));
  auto q = shmbus::BytesQueue::create(g.name(), {.capacity = 4, .max_message = 100});
  EXPECT_EQ(q.max_message(), 100u);
  std::array<std::byte, 100> out{};
  std::size_t n = 0;
  for (std::size_t len : {0u, 1u, 37u, 100u}) {
    std::vector<std::byte> m(len);
    for (std::size_t i = 0; i < len; ++i) m[i] = std::byte(i * 7 + len);
    ASSERT_EQ(q.put(m), QueueResult::ok);
    ASSERT_EQ(q.get(out, n), QueueResult::ok);
    ASSERT_EQ(n, len);
    if (len != 0) {
      EXPECT_EQ(std::memcmp(out.data(), m.data(), len), 0);
    }
  }
  std::vector<std::byte> big(101);
  EXPECT_EQ(q.put(big), QueueResult::too_large);
  std::array<std::byte, 50> small{};
  EXPECT_EQ(q.try_get(small, n), QueueResult::buffer_too_small);
}

TEST(BytesQueue, LargeMessagesGoThroughTheHeap) {
  SegmentGuard g(unique_name("bqh"));
  auto q = shmbus::BytesQueue::create(
      g.name(), {.capacity = 8, .max_message = 56, .max_large_message = 5000, .heap_blocks = 2});
  EXPECT_EQ(q.slot_size(), 56u);
  EXPECT_GE(q.max_message(), 5000u);
  std::vector<std::byte> out(q.max_message());
  std::size_t n = 0;
  auto pattern = [](std::size_t len, int salt) {
    std::vector<std::byte> m(len);
    for (std::size_t i = 0; i < len; ++i) m[i] = std::byte((i * 31 + salt) & 0xff);
    return m;
  };
  // Inline and heap messages interleaved keep their order.
  const std::vector<std::size_t> sizes = {10, 57, 5000, 56, 40};
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      // At most two heap messages may wait at once (two blocks).
      ASSERT_EQ(q.put(pattern(sizes[i], static_cast<int>(i))), QueueResult::ok);
    }
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      ASSERT_EQ(q.get(out, n), QueueResult::ok);
      ASSERT_EQ(n, sizes[i]);
      EXPECT_TRUE(std::equal(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n),
                             pattern(sizes[i], static_cast<int>(i)).begin()));
    }
  }
  EXPECT_EQ(q.stats().heap_in_use, 0u);
  // Every block in use: try_put says full, a timed put times out.
  ASSERT_EQ(q.put(pattern(1000, 1)), QueueResult::ok);
  ASSERT_EQ(q.put(pattern(1000, 2)), QueueResult::ok);
  EXPECT_EQ(q.stats().heap_in_use, 2u);
  EXPECT_EQ(q.try_put(pattern(1000, 3)), QueueResult::full);
  EXPECT_EQ(q.put_for(pattern(1000, 3), 10ms), QueueResult::timed_out);
  EXPECT_EQ(q.try_put(pattern(20, 3)), QueueResult::ok);  // small ones still go inline
  EXPECT_EQ(q.put(pattern(5057, 0)), QueueResult::too_large);
  std::array<std::byte, 100> small{};
  EXPECT_EQ(q.get(small, n), QueueResult::buffer_too_small);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(q.get(out, n), QueueResult::ok);
  EXPECT_EQ(q.stats().heap_in_use, 0u);
  EXPECT_EQ(q.stats().heap_blocks, 2u);
}

TEST(Queue, OpenByNameChecksKindAndType) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<Msg>::create(g.name());
  shmbus::Queue<Msg> same{g.name()};
  ASSERT_EQ(q.put({7, 1, 2}), QueueResult::ok);
  Msg m{};
  ASSERT_EQ(same.get(m), QueueResult::ok);
  EXPECT_EQ(m.producer, 7u);
  try {
    shmbus::Queue<int> wrong{g.name()};
    FAIL() << "opened with the wrong type";
  } catch (const shmbus::Error& e) {
    EXPECT_EQ(e.code(), shmbus::Errc::wrong_type);
  }
  try {
    shmbus::JoinableQueue<Msg> wrong{g.name()};
    FAIL() << "opened as the wrong kind";
  } catch (const shmbus::Error& e) {
    EXPECT_EQ(e.code(), shmbus::Errc::wrong_kind);
  }
  EXPECT_THROW(shmbus::Queue<Msg>::create(g.name()), shmbus::Error);
  EXPECT_THROW(shmbus::Queue<Msg>::create(unique_name("bad"), {.capacity = 0}), shmbus::Error);
}

TEST(Queue, StatsReadFromReadOnlyView) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 16});
  for (int i = 0; i < 5; ++i) ASSERT_EQ(q.put(i), QueueResult::ok);
  int v = 0;
  ASSERT_EQ(q.get(v), QueueResult::ok);
  auto view = shmbus::SegmentView::open(g.name());
  const auto s = shmbus::queue_stats(view);
  EXPECT_EQ(s.capacity, 16u);
  EXPECT_EQ(s.committed, 5u);
  EXPECT_EQ(s.delivered, 1u);
  EXPECT_EQ(s.depth, 4u);
  EXPECT_EQ(s.participants, 1u);
  EXPECT_FALSE(s.closed);
  EXPECT_FALSE(s.joinable);
}

TEST(Queue, ObjectStatsForTheInspector) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 4});
  ASSERT_EQ(q.put(1), QueueResult::ok);
  ASSERT_EQ(q.put(2), QueueResult::ok);
  auto view = shmbus::SegmentView::open(g.name());
  const auto stats = shmbus::object_stats(view);
  auto find = [](const auto& v, const std::string& k) -> std::int64_t {
    for (const auto& [name, value] : v)
      if (name == k) return static_cast<std::int64_t>(value);
    return -1;
  };
  EXPECT_EQ(find(stats.counters, "committed"), 2);
  EXPECT_EQ(find(stats.counters, "delivered"), 0);
  EXPECT_EQ(find(stats.gauges, "depth"), 2);
  EXPECT_EQ(find(stats.gauges, "capacity"), 4);
  EXPECT_EQ(find(stats.gauges, "dead_participants"), 0);
  EXPECT_TRUE(stats.problems.empty());
}

TEST(JoinableQueue, TaskDoneAndJoin) {
  SegmentGuard g(unique_name("jq"));
  auto q = shmbus::JoinableQueue<int>::create(g.name(), {.capacity = 8});
  EXPECT_TRUE(q.join_for(10ms));  // nothing put yet
  EXPECT_EQ(q.task_done(), QueueResult::value_error);
  ASSERT_EQ(q.put(1), QueueResult::ok);
  ASSERT_EQ(q.put(2), QueueResult::ok);
  EXPECT_FALSE(q.join_for(10ms));
  int v = 0;
  ASSERT_EQ(q.get(v), QueueResult::ok);
  EXPECT_EQ(q.task_done(), QueueResult::ok);
  EXPECT_EQ(q.task_done(), QueueResult::value_error);  // only one item got so far
  EXPECT_FALSE(q.join_for(10ms));
  std::thread worker([&] {
    int w = 0;
    EXPECT_EQ(q.get(w), QueueResult::ok);
    EXPECT_EQ(q.task_done(), QueueResult::ok);
  });
  q.join();
  worker.join();
  EXPECT_TRUE(q.join_for(0ms));
  EXPECT_EQ(q.task_done(), QueueResult::value_error);
  EXPECT_EQ(q.stats().tasks_done, 2u);
}

TEST(SimpleQueue, PutGetEmpty) {
  SegmentGuard g(unique_name("sq"));
  auto q = shmbus::SimpleQueue<long>::create(g.name(), {.capacity = 4});
  EXPECT_TRUE(q.empty());
  ASSERT_EQ(q.put(5), QueueResult::ok);
  EXPECT_FALSE(q.empty());
  long v = 0;
  ASSERT_EQ(q.get(v), QueueResult::ok);
  EXPECT_EQ(v, 5);
  q.close();
  EXPECT_EQ(q.get(v), QueueResult::closed);
}

// 4 producer threads x 4 consumer threads through a small ring: every
// message arrives once, with its checksum, and in order per producer as
// seen by each consumer.
TEST(Queue, ThreadsMpmcExactlyOnceAndPerProducerOrder) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<Msg>::create(g.name(), {.capacity = 64});
  constexpr std::uint32_t kProducers = 4, kConsumers = 4, kPer = 20000;
  std::vector<std::atomic<std::uint8_t>> seen(kProducers * kPer);
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (std::uint32_t p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      for (std::uint32_t i = 0; i < kPer; ++i)
        if (q.put({p, i, checksum(p, i)}) != QueueResult::ok) ++errors;
    });
  for (std::uint32_t c = 0; c < kConsumers; ++c)
    threads.emplace_back([&] {
      std::array<std::int64_t, kProducers> last{-1, -1, -1, -1};
      for (;;) {
        Msg m{};
        const QueueResult r = q.get(m);
        if (r == QueueResult::closed) break;
        if (r != QueueResult::ok || m.producer >= kProducers || m.seq >= kPer ||
            m.check != checksum(m.producer, m.seq) || std::int64_t{m.seq} <= last[m.producer]) {
          ++errors;
          continue;
        }
        last[m.producer] = m.seq;
        if (seen[m.producer * kPer + m.seq].fetch_add(1) != 0) ++errors;
      }
    });
  for (std::uint32_t p = 0; p < kProducers; ++p) threads[p].join();
  q.close();
  for (std::size_t t = kProducers; t < threads.size(); ++t) threads[t].join();
  EXPECT_EQ(errors.load(), 0);
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << i;
  const auto s = q.stats();
  EXPECT_EQ(s.committed, kProducers * kPer);
  EXPECT_EQ(s.delivered, kProducers * kPer);
  EXPECT_EQ(s.dropped + s.lost, 0u);
}

}  // namespace
