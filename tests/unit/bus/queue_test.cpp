// Queue family, single process: semantics of put/get and their forms,
// close, timeouts, JoinableQueue accounting, open-by-name validation,
// read-only statistics, and a multi-thread MPMC run checking sequence
// numbers end to end.
#include "shmbus/queue.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/detail/fork_wiped.hpp"
#include "shmbus/error.hpp"
#include "shmbus/inspect.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using shmbus::QueueResult;
using shmbus::test::poll_until;
using shmbus::test::SegmentGuard;
using shmbus::test::unique_name;

using Msg = shmbus::test::SeqMsg;
using shmbus::test::checksum;

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

// A `_for` with a huge timeout (hours::max()) waits for the item; now + d
// overflowed into the past and returned timed_out at once. A floating
// duration compiles and times out.
TEST(Queue, GetForAHugeTimeoutWaitsForTheItem) {
  shmbus::Queue<int> q{{.capacity = 2, .policy = {shmbus::WaitStrategy::blocking, {}}}};
  std::thread t([&] {
    (void)poll_until([&] { return q.stats().consumers_waiting == 1; });
    EXPECT_EQ(q.put(7), QueueResult::ok);
  });
  int v = 0;
  EXPECT_EQ(q.get_for(v, std::chrono::hours::max()), QueueResult::ok);
  EXPECT_EQ(v, 7);
  t.join();
  EXPECT_EQ(q.get_for(v, std::chrono::duration<double>(0.0001)), QueueResult::timed_out);
}

// The liveness slice (which also wakes sleepers) is set to an hour in the
// wake-up tests below, so only a notify can wake a sleeper within the
// tests' bound; each test first waits until the waiter is counted asleep.
constexpr auto kNoSlice = std::chrono::milliseconds(std::chrono::hours(1));
constexpr auto kWakeBound = 5s;  // far below kNoSlice

TEST(Queue, BlockedGetWakesForPutFromAnotherThread) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 4,
                                                 .policy = {shmbus::WaitStrategy::blocking, {}},
                                                 .liveness_interval = kNoSlice});
  std::atomic<bool> got{false};
  std::thread t([&] {
    int v = 0;
    EXPECT_EQ(q.get(v), QueueResult::ok);
    EXPECT_EQ(v, 42);
    got = true;
  });
  ASSERT_TRUE(poll_until([&] { return q.stats().consumers_waiting == 1; }));
  ASSERT_EQ(q.put(42), QueueResult::ok);
  const bool woke = poll_until([&] { return got.load(); }, kWakeBound);
  EXPECT_TRUE(woke) << "a put did not wake the sleeping consumer";
  if (!woke) q.close();  // do not leave the thread asleep for an hour
  t.join();
}

// `n` sleeping consumers taking one item each, `n` quick puts: all must
// wake on a notify (the slice is an hour), not one only at its slice.
void quick_puts_wake_sleeping_consumers(int n) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 8,
                                                 .policy = {shmbus::WaitStrategy::blocking, {}},
                                                 .liveness_interval = kNoSlice});
  std::atomic<int> got{0};
  std::vector<std::thread> consumers;
  for (int i = 0; i < n; ++i)
    consumers.emplace_back([&] {
      int v = 0;
      if (q.get(v) == QueueResult::ok) got.fetch_add(1);  // exactly one item each
    });
  ASSERT_TRUE(poll_until([&] { return q.stats().consumers_waiting == std::uint64_t(n); }));
  for (int i = 1; i <= n; ++i) ASSERT_EQ(q.put(i), QueueResult::ok);
  const bool woke = poll_until([&] { return got.load() == n; }, kWakeBound);
  EXPECT_TRUE(woke) << "only " << got.load() << " of " << n << " sleeping consumers woke";
  if (!woke) q.close();
  for (auto& t : consumers) t.join();
  EXPECT_EQ(q.stats().delivered, std::uint64_t(n));
}

// Two sleeping consumers, two quick puts: both must wake.
TEST(Queue, TwoQuickPutsWakeTwoSleepingConsumers) { quick_puts_wake_sleeping_consumers(2); }

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
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 2, .liveness_interval = kNoSlice});
  ASSERT_EQ(q.put(1), QueueResult::ok);
  ASSERT_EQ(q.put(2), QueueResult::ok);
  std::atomic<int> done{0};
  std::thread producer([&] {
    EXPECT_EQ(q.put(3), QueueResult::closed);
    done.fetch_add(1);
  });
  SegmentGuard g2(unique_name("q2"));
  auto e = shmbus::Queue<int>::create(g2.name(), {.capacity = 2, .liveness_interval = kNoSlice});
  std::thread consumer([&] {
    int v = 0;
    EXPECT_EQ(e.get(v), QueueResult::closed);
    done.fetch_add(1);
  });
  // Both asleep on the futex (after the adaptive spin): only close() wakes them.
  ASSERT_TRUE(poll_until(
      [&] { return q.stats().producers_waiting == 1 && e.stats().consumers_waiting == 1; }));
  q.close();
  e.close();
  const bool woke = poll_until([&] { return done.load() == 2; }, kWakeBound);
  EXPECT_TRUE(woke) << "close() did not wake the sleepers";
  if (!woke) {  // unblock them through the ring instead
    int v = 0;
    (void)q.try_get(v);
    (void)e.try_put(0);
  }
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
  EXPECT_EQ(find(stats.gauges, "consumers_waiting"), 0);
  EXPECT_EQ(find(stats.gauges, "producers_waiting"), 0);
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

// README: named objects are "X::create(name) / X::open(name)" for every
// kind; SimpleQueue, JoinableQueue and BytesQueue had no open() (only a
// constructor from a name), so the README's form did not compile.
TEST(Queue, EveryQueueKindOpensByNameWithOpen) {
  SegmentGuard g(unique_name("sq"));
  g.add(unique_name("jq"));
  g.add(unique_name("bq"));
  auto s = shmbus::SimpleQueue<long>::create(g.name(0));
  auto j = shmbus::JoinableQueue<long>::create(g.name(1));
  auto b = shmbus::BytesQueue::create(g.name(2), {.max_message = 16});
  ASSERT_EQ(shmbus::SimpleQueue<long>::open(g.name(0)).put(1), QueueResult::ok);
  ASSERT_EQ(shmbus::JoinableQueue<long>::open(g.name(1)).put(2), QueueResult::ok);
  const std::array<std::byte, 3> three{};
  ASSERT_EQ(shmbus::BytesQueue::open(g.name(2)).put(three), QueueResult::ok);
  long v = 0;
  EXPECT_EQ(s.get(v), QueueResult::ok);
  EXPECT_EQ(v, 1);
  EXPECT_EQ(j.get(v), QueueResult::ok);
  EXPECT_EQ(v, 2);
  std::array<std::byte, 16> out{};
  std::size_t n = 0;
  EXPECT_EQ(b.get(out, n), QueueResult::ok);
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(shmbus::test::code_of([&] { (void)shmbus::JoinableQueue<long>::open(g.name(0)); }),
            shmbus::Errc::wrong_kind);
  EXPECT_EQ(shmbus::test::code_of([&] { (void)shmbus::SimpleQueue<int>::open(g.name(0)); }),
            shmbus::Errc::wrong_type);
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

// ---- hostile or damaged shared memory ---------------------------------------

// A writable mapping of a queue segment's whole file, and its control block
// (found by its magic at a page-aligned offset), to play a hostile peer.
struct RawQueue {
  explicit RawQueue(const std::string& name) {
    const int fd = ::open(shmbus::test::shm_path(name).c_str(), O_RDWR);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0) {
      size = static_cast<std::size_t>(st.st_size);
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) base = static_cast<std::byte*>(p);
    }
    ::close(fd);
    for (std::size_t off = 0; base != nullptr && off + sizeof(shmbus::detail::QueueControl) <= size;
         off += 4096) {
      auto* c = reinterpret_cast<shmbus::detail::QueueControl*>(base + off);
      if (c->magic == shmbus::detail::kQueueMagic) {
        ctl = c;
        break;
      }
    }
  }
  ~RawQueue() {
    if (base != nullptr) ::munmap(base, size);
  }
  shmbus::detail::SlotHeader& slot(std::uint64_t i) const {
    return *reinterpret_cast<shmbus::detail::SlotHeader*>(reinterpret_cast<std::byte*>(ctl) +
                                                          ctl->slots_offset + i * ctl->slot_stride);
  }
  shmbus::detail::QueueRecord& record(std::uint64_t i) const {
    return *reinterpret_cast<shmbus::detail::QueueRecord*>(reinterpret_cast<std::byte*>(ctl) +
                                                           ctl->records_offset +
                                                           i * sizeof(shmbus::detail::QueueRecord));
  }
  std::byte* base = nullptr;
  std::size_t size = 0;
  shmbus::detail::QueueControl* ctl = nullptr;
};

// capacity 2^40 x stride 2^24 wraps to 0 in 64 bits: the header must not
// pass validation with a heap_offset equal to slots_offset.
TEST(QueueHostile, CapacityTimesStrideOverflowIsCorrupted) {
  SegmentGuard g(unique_name("qh"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 4});
  RawQueue raw(g.name());
  ASSERT_NE(raw.ctl, nullptr);
  auto& c = *raw.ctl;
  c.capacity = std::uint64_t{1} << 40;
  c.slot_payload = (std::uint64_t{1} << 24) - sizeof(shmbus::detail::SlotHeader);
  c.slot_stride = std::uint64_t{1} << 24;
  c.heap_blocks = 0;
  c.heap_block_size = 0;
  c.heap_offset = c.slots_offset;  // slots_offset + 2^64 (mod 2^64)
  c.heap_data_offset = c.slots_offset;
  EXPECT_EQ(shmbus::test::code_of([&] { (void)shmbus::Queue<int>::open(g.name()); }),
            shmbus::Errc::corrupted);
  // The read-only inspector path validates the same way.
  auto view = shmbus::SegmentView::open(g.name());
  EXPECT_EQ(shmbus::test::code_of([&] { (void)shmbus::queue_stats(view); }),
            shmbus::Errc::corrupted);
  // A capacity above create()'s 2^30 limit is refused even when it fits.
  c.capacity = std::uint64_t{1} << 31;
  c.slot_payload = 4;
  c.slot_stride = 64;
  EXPECT_EQ(shmbus::test::code_of([&] { (void)shmbus::Queue<int>::open(g.name()); }),
            shmbus::Errc::corrupted);
}

// An invalid slot state (5..7) at the head makes get/try_get report
// corrupted instead of `empty` forever; put over it too.
TEST(QueueHostile, InvalidSlotStateIsCorrupted) {
  SegmentGuard g(unique_name("qh"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 4});
  RawQueue raw(g.name());
  ASSERT_NE(raw.ctl, nullptr);
  raw.slot(0).word.store(shmbus::detail::slot_word(0, 0, shmbus::detail::SlotState(5)));
  int v = 0;
  EXPECT_EQ(q.try_get(v), QueueResult::corrupted);
  EXPECT_EQ(q.get_for(v, 10s), QueueResult::corrupted);
  EXPECT_EQ(q.try_put(1), QueueResult::corrupted);
}

// A slot word whose position is forged far ahead must not make try_put or
// try_get step the hint towards it one position at a time (2^47 steps).
TEST(QueueHostile, PositionFarAheadIsCorrupted) {
  SegmentGuard g(unique_name("qh"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 4});
  RawQueue raw(g.name());
  ASSERT_NE(raw.ctl, nullptr);
  const std::uint64_t far = std::uint64_t{1} << 46;  // a multiple of the capacity
  for (std::uint64_t i = 0; i < 4; ++i)
    raw.slot(i).word.store(shmbus::detail::slot_word(far + i, 0, shmbus::detail::SlotState::empty));
  EXPECT_EQ(q.try_put(1), QueueResult::corrupted);
  int v = 0;
  EXPECT_EQ(q.try_get(v), QueueResult::corrupted);
  // The hints were not walked forward towards the forged position.
  EXPECT_LT(raw.ctl->enqueue_pos.load(), 8u);
  EXPECT_LT(raw.ctl->dequeue_pos.load(), 8u);
}

// A heap message whose length exceeds the block size (but whose block
// reference is valid) is reported corrupted AND its block is freed.
TEST(QueueHostile, CorruptedHeapMessageFreesItsBlock) {
  SegmentGuard g(unique_name("qh"));
  auto q = shmbus::BytesQueue::create(
      g.name(), {.capacity = 4, .max_message = 16, .max_large_message = 256, .heap_blocks = 1});
  std::vector<std::byte> big(200, std::byte{7});
  ASSERT_EQ(q.put(big), QueueResult::ok);
  EXPECT_EQ(q.stats().heap_in_use, 1u);
  RawQueue raw(g.name());
  ASSERT_NE(raw.ctl, nullptr);
  raw.slot(0).length = 1u << 20;  // larger than the block
  std::vector<std::byte> out(q.max_message());
  std::size_t n = 0;
  EXPECT_EQ(q.try_get(out, n), QueueResult::corrupted);
  EXPECT_EQ(q.stats().heap_in_use, 0u);
  EXPECT_EQ(q.stats().lost, 1u);
  ASSERT_EQ(q.try_put(big), QueueResult::ok);  // the one block is usable again
  ASSERT_EQ(q.try_get(out, n), QueueResult::ok);
  EXPECT_EQ(n, big.size());
}

// ---- join() and a put in flight ------------------------------------------------

std::atomic<int> g_hook_state{0};  // 1: a put stopped at put_published; 2: let it go
void hold_after_publish(shmbus::detail::FaultPoint p) noexcept {
  if (p != shmbus::detail::FaultPoint::put_published) return;
  g_hook_state.store(1);
  while (g_hook_state.load() != 2) std::this_thread::yield();
}

// A put that has published its message but not yet counted it (stage
// ACTIVE) must keep join() waiting: the item is in the queue.
TEST(JoinableQueue, JoinWaitsForAPublishedButUncountedPut) {
  SegmentGuard g(unique_name("jq"));
  auto q = shmbus::JoinableQueue<int>::create(g.name(), {.capacity = 4});
  g_hook_state.store(0);
  shmbus::detail::set_fault_hook(&hold_after_publish);
  std::thread producer([&] { EXPECT_EQ(q.put(5), QueueResult::ok); });
  ASSERT_TRUE(poll_until([] { return g_hook_state.load() == 1; }));
  EXPECT_EQ(q.stats().committed, 1u);
  EXPECT_FALSE(q.join_for(20ms));  // one item not done: join must not return
  g_hook_state.store(2);
  producer.join();
  shmbus::detail::set_fault_hook(nullptr);
  int v = 0;
  ASSERT_EQ(q.get(v), QueueResult::ok);
  EXPECT_FALSE(q.join_for(0ms));
  ASSERT_EQ(q.task_done(), QueueResult::ok);
  EXPECT_TRUE(q.join_for(5s));
}

// ---- coalesced wake-ups ([queue.token]) -------------------------------------------

// Three sleeping consumers, three puts in a row: the first put's wake is
// in flight while the others are published, so they skip their own wakes;
// each woken consumer must pass the wake on.
TEST(QueueWake, ThreeQuickPutsWakeThreeSleepingConsumersInAChain) {
  quick_puts_wake_sleeping_consumers(3);
}

// The same for producers sleeping on a full queue: three gets in a row
// must let all three finish.
TEST(QueueWake, ThreeQuickGetsWakeThreeSleepingProducersInAChain) {
  SegmentGuard g(unique_name("q"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 2,
                                                 .policy = {shmbus::WaitStrategy::blocking, {}},
                                                 .liveness_interval = kNoSlice});
  ASSERT_EQ(q.put(0), QueueResult::ok);
  ASSERT_EQ(q.put(0), QueueResult::ok);
  std::atomic<int> done{0};
  std::vector<std::thread> producers;
  for (int i = 1; i <= 3; ++i)
    producers.emplace_back([&, i] {
      if (q.put(i) == QueueResult::ok) done.fetch_add(1);
    });
  ASSERT_TRUE(poll_until([&] { return q.stats().producers_waiting == 3; }));
  int v = 0;
  for (int i = 0; i < 3; ++i) ASSERT_EQ(q.get(v), QueueResult::ok);
  const bool woke = poll_until([&] { return done.load() == 3; }, kWakeBound);
  EXPECT_TRUE(woke) << "only " << done.load() << " of 3 sleeping producers woke";
  if (!woke) q.close();
  for (auto& t : producers) t.join();
  EXPECT_EQ(q.stats().committed, 5u);
}

void die_when_back_from_sleep(shmbus::detail::FaultPoint p) noexcept {
  if (p == shmbus::detail::FaultPoint::wait_returned) ::raise(SIGKILL);
}

// The process state letter from /proc/<pid>/stat ('S': asleep), or 0.
char process_state(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return 0;
  char buf[512] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* paren = std::strrchr(buf, ')');  // the command may contain spaces
  return paren != nullptr && paren + 2 < buf + n ? paren[2] : 0;
}

// A consumer woken by a put and SIGKILLed before it releases the wake
// token leaves it held, so later puts skip their wakes. A sleeper's
// liveness slice must release it: afterwards a sleeper that only a notify
// can wake (hour-long slice) is woken by a put again.
TEST(QueueWake, TokenHeldByAKilledWokenConsumerIsReleasedWithinASlice) {
  SegmentGuard g(unique_name("q"));
  const shmbus::QueueOptions no_slice{
      .capacity = 8, .policy = {shmbus::WaitStrategy::blocking, {}}, .liveness_interval = kNoSlice};
  auto q = shmbus::Queue<int>::create(g.name(), no_slice);
  const pid_t child = shmbus::test::fork_child([&] {
    shmbus::detail::set_fault_hook(&die_when_back_from_sleep);
    int v = 0;
    (void)q.get(v);
    return 1;  // not reached
  });
  // Counted and asleep in the kernel (blocking policy: no spin), so the
  // put's futex_wake finds it and hands it the token.
  ASSERT_TRUE(
      poll_until([&] { return q.stats().consumers_waiting == 1 && process_state(child) == 'S'; }));
  ASSERT_EQ(q.put(1), QueueResult::ok);
  const auto st = shmbus::test::wait_child(child, 10s);
  ASSERT_EQ(st.signal, SIGKILL);
  {
    RawQueue raw(g.name());
    ASSERT_NE(raw.ctl, nullptr);
    ASSERT_NE(raw.ctl->not_empty_waking.load(), 0u) << "the killed child did not hold the token";
  }
  // A consumer with a short slice: takes the item the child never got,
  // then sleeps; put(2) skips its wake (token held); the slice ends the
  // sleep, which releases the token.
  shmbus::QueueOptions short_slice = no_slice;
  short_slice.liveness_interval = 20ms;
  shmbus::Queue<int> c(g.name(), short_slice);
  int v = 0;
  ASSERT_EQ(c.get(v), QueueResult::ok);
  EXPECT_EQ(v, 1);
  std::atomic<int> got{0};
  std::thread slicer([&] {
    int x = 0;
    if (c.get(x) == QueueResult::ok) got.store(x);
  });
  ASSERT_TRUE(poll_until([&] { return q.stats().consumers_waiting == 1; }));
  ASSERT_EQ(q.put(2), QueueResult::ok);
  ASSERT_TRUE(poll_until([&] { return got.load() == 2; }, kWakeBound));
  slicer.join();
  // Wakes work again for a sleeper without a slice.
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    int x = 0;
    if (q.get(x) == QueueResult::ok && x == 3) woke.store(true);
  });
  ASSERT_TRUE(poll_until([&] { return q.stats().consumers_waiting == 1; }));
  ASSERT_EQ(q.put(3), QueueResult::ok);
  const bool ok = poll_until([&] { return woke.load(); }, kWakeBound);
  EXPECT_TRUE(ok) << "the token stayed held: a put did not wake the sleeper";
  if (!ok) q.close();
  sleeper.join();
}

// Threads that take turns on one handle keep one participant record each
// (the handle caches the last caller's record; the other thread must not
// be given it): every owned record counts exactly its own thread's puts.
TEST(QueueRecord, ThreadsTakingTurnsOnOneHandleKeepOneRecordEach) {
  SegmentGuard g(unique_name("qr"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 64});
  std::atomic<int> turn{0};
  std::thread other([&] {
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(poll_until([&] { return turn.load() == 2 * i + 1; }));
      EXPECT_EQ(q.put(100 + i), QueueResult::ok);
      turn.store(2 * i + 2);
    }
  });
  for (int i = 0; i < 4; ++i) {  // two puts a turn: the second hits the cache
    ASSERT_TRUE(poll_until([&] { return turn.load() == 2 * i; }));
    ASSERT_EQ(q.put(i), QueueResult::ok);
    ASSERT_EQ(q.put(i), QueueResult::ok);
    turn.store(2 * i + 1);
  }
  other.join();
  RawQueue raw(g.name());
  ASSERT_NE(raw.ctl, nullptr);
  std::vector<std::uint64_t> counts;
  for (std::uint64_t r = 0; r < raw.ctl->max_records; ++r)
    if (raw.record(r).owner.load() != 0)
      counts.push_back(shmbus::detail::word_main(raw.record(r).put_word.load()));
  std::sort(counts.begin(), counts.end());
  EXPECT_EQ(counts, (std::vector<std::uint64_t>{3, 8}));
  EXPECT_EQ(q.stats().committed, 11u);
}

void die_after_write(shmbus::detail::FaultPoint p) noexcept {
  if (p == shmbus::detail::FaultPoint::put_written) ::raise(SIGKILL);
}

// A forked child that uses a handle its parent used (the handle's record
// cache, copied by fork, names the parent's thread) takes a record of its
// own: killed in the middle of a put, it is repaired as a dead participant
// (its message dropped), and the parent's counts stay the parent's.
TEST(QueueRecord, ForkedChildTakesItsOwnRecordOnAHandleItsParentUsed) {
  SegmentGuard g(unique_name("qr"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 8});
  ASSERT_EQ(q.put(1), QueueResult::ok);
  const pid_t child = shmbus::test::fork_child([&] {
    shmbus::detail::set_fault_hook(&die_after_write);
    (void)q.put(2);
    return 1;  // not reached
  });
  const auto st = shmbus::test::wait_child(child, 10s);
  ASSERT_EQ(st.signal, SIGKILL);
  EXPECT_EQ(q.recover_dead(), 1u) << "the child used its parent's record";
  const auto s = q.stats();
  EXPECT_EQ(s.committed, 1u);
  EXPECT_EQ(s.dropped, 1u);
  EXPECT_EQ(s.interrupted, 1u);
  int v = 0;
  ASSERT_EQ(q.try_get(v), QueueResult::ok);
  EXPECT_EQ(v, 1);
  EXPECT_EQ(q.try_get(v), QueueResult::empty);  // the dropped slot is stepped over
  ASSERT_EQ(q.put(3), QueueResult::ok);
  ASSERT_EQ(q.try_get(v), QueueResult::ok);
  EXPECT_EQ(v, 3);
}

// The same for a child made by _Fork() (glibc 2.34), which runs no atfork
// handler: the handle's record cache and this_process() are in
// wipe-on-fork words, so the child still takes a record of its own, owned
// by its own pid (the parent's recover_dead() finds it dead).
TEST(QueueRecord, ChildOfUnderscoreForkTakesItsOwnRecordOnAHandleItsParentUsed) {
  ASSERT_TRUE(shmbus::detail::fork_wiping_works()) << "MADV_WIPEONFORK refused here";
  SegmentGuard g(unique_name("qr"));
  auto q = shmbus::Queue<int>::create(g.name(), {.capacity = 8});
  ASSERT_EQ(q.put(1), QueueResult::ok);
  const pid_t parent_pid = shmbus::this_process().pid;
  const pid_t child = ::_Fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child: no gtest assertions (they would report in the parent's
    // output); a wrong identity exits with a code the parent reads.
    if (shmbus::this_process().pid != ::getpid() || shmbus::this_process().pid == parent_pid)
      ::_exit(3);
    shmbus::detail::set_fault_hook(&die_after_write);
    (void)q.put(2);
    ::_exit(1);  // not reached
  }
  const auto st = shmbus::test::wait_child(child, 10s);
  ASSERT_EQ(st.signal, SIGKILL) << "exit code " << st.code;
  EXPECT_EQ(q.recover_dead(), 1u) << "the child used its parent's record";
  const auto s = q.stats();
  EXPECT_EQ(s.committed, 1u);
  EXPECT_EQ(s.dropped, 1u);
  int v = 0;
  ASSERT_EQ(q.try_get(v), QueueResult::ok);
  EXPECT_EQ(v, 1);
  EXPECT_EQ(q.try_get(v), QueueResult::empty);
}

}  // namespace
