// detail::RingProducer / RingConsumer in one process: framing, wrap-around,
// padding, batching, lazy read positions, validation of corrupted state,
// and a two-thread stress run with sequence numbers.
#include "shmbus/detail/spsc_ring.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace shmbus::detail {
namespace {

struct TestRing {
  explicit TestRing(std::size_t cap, bool notify = false, RingWake wake_mode = RingWake::exchange)
      : capacity(cap),
        mem(static_cast<std::byte*>(std::aligned_alloc(64, sizeof(RingControl) + cap))) {
    std::memset(mem, 0, sizeof(RingControl) + cap);
    control = new (mem) RingControl{};
    data = mem + sizeof(RingControl);
    producer = RingProducer(control, data, cap, notify ? wake_mode : RingWake::none);
    consumer = RingConsumer(control, data, cap, notify);
  }
  ~TestRing() { std::free(mem); }
  TestRing(const TestRing&) = delete;
  TestRing& operator=(const TestRing&) = delete;

  bool send(std::uint32_t seq, std::size_t len, std::uint64_t flags = 0) {
    std::byte* p = producer.try_reserve(len);
    if (p == nullptr) return false;
    for (std::size_t i = 0; i < len; ++i) p[i] = static_cast<std::byte>(seq + i);
    producer.commit(len, flags);
    return true;
  }
  // Receives one frame; checks its bytes against `seq`.
  PeekResult recv(std::uint32_t seq, std::size_t len) {
    Frame f;
    PeekResult r = consumer.peek(f);
    if (r != PeekResult::ok) return r;
    EXPECT_EQ(f.length, len);
    for (std::size_t i = 0; i < f.length; ++i) {
      if (f.data[i] != static_cast<std::byte>(seq + i)) {
        ADD_FAILURE() << "byte " << i << " of message " << seq;
        break;
      }
    }
    consumer.release();
    return r;
  }

  std::size_t capacity;
  std::byte* mem;
  RingControl* control;
  std::byte* data;
  RingProducer producer;
  RingConsumer consumer;
};

TEST(SpscRing, EmptyRingPeeksEmpty) {
  TestRing r(4096);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
}

TEST(SpscRing, DeliversFramesInOrderWithTheirBytes) {
  TestRing r(4096);
  for (std::uint32_t i = 0; i < 10; ++i) ASSERT_TRUE(r.send(i, i * 7));
  for (std::uint32_t i = 0; i < 10; ++i) ASSERT_EQ(r.recv(i, i * 7), PeekResult::ok);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
}

TEST(SpscRing, SmallFrameNeverStraddlesACacheLine) {
  TestRing r(4096);
  ASSERT_TRUE(r.send(0, 40));                 // frame of 48 bytes at offset 0
  std::byte* p = r.producer.try_reserve(40);  // 48 more: would cross 64
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p - kFrameHeaderSize) % 64, 0u);
  r.producer.commit(40);
}

TEST(SpscRing, WrapsAroundManyTimesWithRandomSizes) {
  TestRing r(4096);
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::size_t> size(0, r.producer.max_payload());
  std::uint32_t sent = 0, received = 0;
  std::vector<std::size_t> sizes;
  while (received < 20000) {
    // Fill as far as it goes, then drain part of it.
    for (;;) {
      std::size_t len = size(rng);
      if (!r.send(sent, len)) break;
      sizes.push_back(len);
      ++sent;
    }
    const std::uint32_t target = received + (sent - received + 1) / 2;
    while (received < target) {
      ASSERT_EQ(r.recv(received, sizes[received]), PeekResult::ok) << received;
      ++received;
    }
  }
  while (received < sent) {
    ASSERT_EQ(r.recv(received, sizes[received]), PeekResult::ok);
    ++received;
  }
  EXPECT_EQ(r.control->producer.messages_sent.load(), sent);
}

TEST(SpscRing, ProducerSeesFullUntilConsumerPublishes) {
  TestRing r(4096);
  std::uint32_t n = 0;
  while (r.send(n, 56)) ++n;
  EXPECT_GT(n, 40u);
  EXPECT_EQ(r.producer.try_reserve(56), nullptr);
  // Consuming one frame does not publish (lazy, every quarter ring)...
  ASSERT_EQ(r.recv(0, 56), PeekResult::ok);
  EXPECT_EQ(r.control->consumer.read_pos.load(), 0u);
  // ...finding the ring empty does.
  for (std::uint32_t i = 1; i < n; ++i) ASSERT_EQ(r.recv(i, 56), PeekResult::ok);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
  EXPECT_NE(r.producer.try_reserve(56), nullptr);
}

TEST(SpscRing, BatchIsInvisibleUntilEndBatch) {
  TestRing r(4096);
  r.producer.begin_batch();
  for (std::uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(r.send(i, 16));
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
  r.producer.end_batch();
  for (std::uint32_t i = 0; i < 5; ++i) ASSERT_EQ(r.recv(i, 16), PeekResult::ok);
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
}

TEST(SpscRing, StaleBytesThatLookLikeAHeaderAreNotAFrame) {
  TestRing r(4096);
  // Lap 1: a payload holding, at ring offset 16, exactly the header word
  // lap 2 would expect there. The producer zeroes each next header before
  // publishing, so lap 2 must not read it as a frame.
  const std::uint64_t fake = kFrameValid | 8 | frame_tag(4096 + 16);
  std::byte* p = r.producer.try_reserve(56);
  ASSERT_NE(p, nullptr);
  std::memset(p, 0, 56);
  std::memcpy(p + 8, &fake, sizeof fake);
  r.producer.commit(56);
  Frame f;
  ASSERT_EQ(r.consumer.peek(f), PeekResult::ok);
  r.consumer.release();
  for (int half = 0; half < 2; ++half) {
    for (int i = half == 0 ? 1 : 0; i < 32; ++i) ASSERT_TRUE(r.send(0, 0)) << i;
    // 0-byte frames are 8 bytes: use 56-byte payloads to move 64 at a time.
    while (r.consumer.peek(f) == PeekResult::ok) r.consumer.release();
    if (half == 0) break;
  }
  // Move the producer to exactly 4096 with 64-byte frames.
  while ((r.control->producer.write_pos.load() & 4095) != 0) {
    ASSERT_TRUE(r.send(0, r.control->producer.write_pos.load() % 64 == 0 ? 56 : 0));
    while (r.consumer.peek(f) == PeekResult::ok) r.consumer.release();
  }
  ASSERT_EQ(r.control->producer.write_pos.load(), 4096u);
  ASSERT_TRUE(r.send(1, 8));  // lap 2, offset 0; the next header is offset 16
  ASSERT_EQ(r.recv(1, 8), PeekResult::ok);
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
}

TEST(SpscRing, CorruptedLengthFailsTheRing) {
  TestRing r(4096);
  ASSERT_TRUE(r.send(0, 16));
  header_at(r.data, 0).store(kFrameValid | frame_tag(0) | kFrameLengthMask);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::corrupted);
  EXPECT_TRUE(r.consumer.corrupted());
  EXPECT_EQ(r.consumer.peek(f), PeekResult::corrupted);  // sticky
}

TEST(SpscRing, WrongTagFailsTheRing) {
  TestRing r(4096);
  ASSERT_TRUE(r.send(0, 16));
  header_at(r.data, 0).store(kFrameValid | frame_tag(4096) | 16);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::corrupted);
}

TEST(SpscRing, PadBeyondTheRingEndFailsTheRing) {
  TestRing r(4096);
  header_at(r.data, 0).store(kFrameValid | frame_tag(0) | kFramePad | 8192);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::corrupted);
}

TEST(SpscRing, FrameCrossingTheRingEndFailsTheRing) {
  TestRing r(4096);
  header_at(r.data, 0).store(kFrameValid | frame_tag(0) | kFramePad | 4032);
  header_at(r.data, 4032).store(kFrameValid | frame_tag(4032) | 200);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::corrupted);
}

TEST(SpscRing, CorruptedReadPositionFailsTheProducer) {
  TestRing r(4096);
  while (r.send(0, 100)) {
  }
  r.control->consumer.read_pos.store(1u << 20);  // ahead of the producer
  EXPECT_EQ(r.producer.try_reserve(100), nullptr);
  EXPECT_TRUE(r.producer.corrupted());
}

// [ring.sleep]: the word a sleeping consumer marks is the header it polls.
std::uint64_t header_word(const TestRing& r, std::uint64_t offset) {
  return header_at(r.data, offset).load();
}

// Sleeps in a thread on the armed header until a frame is there (re-arming
// before each sleep when `rearm`), runs `commit` once that thread sleeps in
// the kernel, and returns whether the commit's wake-up ended the sleep (a
// lost wake-up shows as the 30 s deadline passing: a failure, not a hang).
bool commit_wakes_sleeper(TestRing& r, bool rearm, const std::function<void()>& commit) {
  std::atomic<bool> timed_out{false};
  std::atomic<pid_t> tid{0};
  std::thread sleeper([&] {
    tid = ::gettid();
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (!r.consumer.has_data()) {
      if (rearm && !r.consumer.arm_sleep()) break;
      if (r.consumer.sleep(&deadline) == FutexResult::timed_out) {
        timed_out = true;
        return;
      }
    }
  });
  const bool asleep = test::poll_until([&] { return tid != 0 && test::thread_sleeping(tid); });
  commit();
  sleeper.join();
  return asleep && !timed_out;
}

TEST(SpscRing, SleepingConsumerMarksTheHeaderItPollsAndReadsItAsEmpty) {
  TestRing r(4096, /*notify=*/true);
  ASSERT_TRUE(r.consumer.arm_sleep());
  EXPECT_EQ(header_word(r, 0), kHeaderWaiting);
  EXPECT_TRUE(r.consumer.arm_sleep());  // armed already: still sleep
  EXPECT_FALSE(r.consumer.has_data());
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
  ASSERT_TRUE(r.send(7, 40));  // the commit's exchange replaces the mark
  EXPECT_FALSE(r.consumer.arm_sleep());
  EXPECT_EQ(r.recv(7, 40), PeekResult::ok);
}

TEST(SpscRing, CommitWakesAConsumerAsleepOnTheHeader) {
  TestRing r(4096, /*notify=*/true);
  ASSERT_TRUE(r.consumer.arm_sleep());
  EXPECT_TRUE(commit_wakes_sleeper(r, false, [&] { ASSERT_TRUE(r.send(1, 8)); }));
  EXPECT_EQ(r.recv(1, 8), PeekResult::ok);
}

TEST(SpscRing, DisarmTakesTheMarkBackButNeverAFrame) {
  TestRing r(4096, /*notify=*/true);
  ASSERT_TRUE(r.consumer.arm_sleep());
  r.consumer.disarm_sleep();
  EXPECT_EQ(header_word(r, 0), 0u);
  ASSERT_TRUE(r.consumer.arm_sleep());
  ASSERT_TRUE(r.send(2, 16));
  r.consumer.disarm_sleep();  // a frame came meanwhile: it stays
  EXPECT_EQ(r.recv(2, 16), PeekResult::ok);
}

TEST(SpscRing, ClosingProducerClearsTheMarkOfASleeper) {
  TestRing r(4096, /*notify=*/true);
  ASSERT_TRUE(r.send(3, 8));
  ASSERT_EQ(r.recv(3, 8), PeekResult::ok);
  ASSERT_TRUE(r.consumer.arm_sleep());  // at the producer's write position
  r.producer.wake_consumer();
  EXPECT_EQ(header_word(r, 16), 0u);
  r.producer.wake_consumer();  // nobody marked: nothing to do
  EXPECT_EQ(header_word(r, 16), 0u);
}

// RingWake::checked: the producer stores headers plainly and checks
// consumer_asleep without a fence; the sleeper pays the heavy fence
// ([fence.asym]). Where membarrier is missing the sleeper naps instead:
// these tests then check that fallback.
TEST(SpscRing, CheckedCommitWakesAConsumerAsleepOnTheHeaderOnce) {
  (void)asymmetric_fence_register();
  TestRing r(4096, /*notify=*/true, RingWake::checked);
  EXPECT_EQ(r.control->producer_checks.load(), 1u);
  ASSERT_TRUE(r.consumer.arm_sleep());
  EXPECT_EQ(r.control->consumer_asleep.load(), sleep_token(0));
  EXPECT_TRUE(commit_wakes_sleeper(r, false, [&] {
    ASSERT_TRUE(r.send(1, 8));
    EXPECT_EQ(r.control->consumer_asleep.load(), 0u);  // the commit took the flag
    ASSERT_TRUE(r.send(2, 8));                         // and the next one finds none
  }));
  r.consumer.disarm_sleep();
  EXPECT_EQ(r.recv(1, 8), PeekResult::ok);
  EXPECT_EQ(r.recv(2, 8), PeekResult::ok);
}

// A slice that ends with nothing sent re-arms the still-marked word
// without a second heavy fence: the wake-up must still come.
TEST(SpscRing, CheckedWakeAfterASliceEndedStillArrives) {
  (void)asymmetric_fence_register();
  TestRing r(4096, /*notify=*/true, RingWake::checked);
  ASSERT_TRUE(r.consumer.arm_sleep());
  const auto slice = Clock::now() + std::chrono::milliseconds(1);
  while (r.consumer.sleep(&slice) != FutexResult::timed_out) {
  }
  // The sleeper re-arms first: the mark is still there.
  EXPECT_TRUE(commit_wakes_sleeper(r, true, [&] { ASSERT_TRUE(r.send(5, 8)); }));
  r.consumer.disarm_sleep();
  EXPECT_EQ(r.control->consumer_asleep.load(), 0u);
  EXPECT_EQ(r.recv(5, 8), PeekResult::ok);
}

// The race CI caught: a producer that loaded the token of a consumer
// asleep at word 0 is preempted; meanwhile the consumer wakes, takes the
// frame and goes to sleep at the next word. The producer's CAS must leave
// that new token alone (an exchange took it, and the consumer then slept
// through the next frame), and the next commit must take it.
TestRing* g_race_ring = nullptr;
void consumer_moves_on_meanwhile() {
  TestRing& r = *g_race_ring;
  r.consumer.disarm_sleep();
  EXPECT_EQ(r.recv(1, 8), PeekResult::ok);
  EXPECT_TRUE(r.consumer.arm_sleep());  // at the next word
}

TEST(SpscRing, CheckedProducerPreemptedBeforeItsCasLeavesALaterTokenAlone) {
  (void)asymmetric_fence_register();
  TestRing r(4096, /*notify=*/true, RingWake::checked);
  ASSERT_TRUE(r.consumer.arm_sleep());
  EXPECT_EQ(r.control->consumer_asleep.load(), sleep_token(0));
  g_race_ring = &r;
  g_ring_token_hook.store(&consumer_moves_on_meanwhile);
  ASSERT_TRUE(r.send(1, 8));  // frame 0..16; its wake check runs the hook
  g_ring_token_hook.store(nullptr);
  g_race_ring = nullptr;
  EXPECT_EQ(r.control->consumer_asleep.load(), sleep_token(16));  // the new token stands
  // The next commit writes word 16: it takes the token (and wakes it).
  EXPECT_TRUE(commit_wakes_sleeper(r, true, [&] { ASSERT_TRUE(r.send(2, 8)); }));
  EXPECT_EQ(r.control->consumer_asleep.load(), 0u);
  r.consumer.disarm_sleep();
  EXPECT_EQ(r.recv(2, 8), PeekResult::ok);
}

TEST(SpscRing, CheckedPingPongNeverMissesAWakeUp) {
  (void)asymmetric_fence_register();
  TestRing r(4096, /*notify=*/true, RingWake::checked);
  constexpr std::uint32_t kRounds = 3000;
  std::atomic<std::uint32_t> consumed{0};
  std::atomic<std::uint32_t> missed{0};
  std::thread consumer([&] {
    for (std::uint32_t i = 0; i < kRounds; ++i) {
      const auto deadline = Clock::now() + std::chrono::seconds(10);
      while (!r.consumer.has_data()) {
        // Arms right as the producer commits, on many rounds: a wake-up
        // lost in that race shows as a timeout.
        // (Without membarrier the sleeper naps: only the deadline counts.)
        if (r.consumer.arm_sleep() && r.consumer.sleep(&deadline) == FutexResult::timed_out &&
            Clock::now() >= deadline) {
          missed.fetch_add(1);
          break;
        }
      }
      r.consumer.disarm_sleep();
      if (r.recv(i, 4) != PeekResult::ok) return;
      consumed.store(i + 1, std::memory_order_release);  // release: pairs with the producer
    }
  });
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> spin(0, 400);
  for (std::uint32_t i = 0; i < kRounds && missed.load() == 0; ++i) {
    for (int k = spin(rng); k > 0; --k) cpu_relax();
    ASSERT_TRUE(r.send(i, 4));
    // acquire: pairs with the consumer's release; the next round starts
    // with the ring empty and the consumer about to sleep.
    while (consumed.load(std::memory_order_acquire) != i + 1 && missed.load() == 0) cpu_relax();
  }
  consumer.join();
  EXPECT_EQ(missed.load(), 0u);
  EXPECT_EQ(consumed.load(), kRounds);
}

TEST(SpscRing, TwoThreadsDeliverEverySequenceNumber) {
  TestRing r(1 << 14);
  constexpr std::uint32_t kCount = 200000;
  // Set by the side that stops on an error: the other one, which would
  // otherwise wait forever, stops too (a failure, not a hang).
  std::atomic<bool> abort{false};
  bool producer_ok = true;
  std::thread producer([&] {
    std::mt19937 rng(1);
    std::uniform_int_distribution<std::size_t> extra(0, 300);
    for (std::uint32_t i = 0; i < kCount; ++i) {
      const std::size_t len = sizeof(std::uint32_t) + extra(rng);
      std::byte* p;
      while ((p = r.producer.try_reserve(len)) == nullptr) {
        // relaxed: a stop request only; no data is read through it.
        if (abort.load(std::memory_order_relaxed) || r.producer.corrupted()) {
          producer_ok = !r.producer.corrupted();
          abort.store(true, std::memory_order_relaxed);  // relaxed: a stop request only
          return;
        }
        r.producer.flush();  // a pending batch must be visible before waiting
        cpu_relax();
      }
      std::memcpy(p, &i, sizeof i);
      for (std::size_t k = sizeof i; k < len; ++k) p[k] = static_cast<std::byte>(i + k);
      if (i % 8 == 0) r.producer.begin_batch();
      r.producer.commit(len);
      if (i % 8 == 7 || i + 1 == kCount) r.producer.end_batch();
    }
  });
  std::uint32_t expect = 0;
  bool ok = true;
  while (expect < kCount && ok) {
    Frame f;
    const PeekResult pr = r.consumer.peek(f);
    if (pr == PeekResult::empty) {
      // relaxed: a stop request only; the producer gave up.
      if (abort.load(std::memory_order_relaxed)) {
        ok = false;
        break;
      }
      cpu_relax();
      continue;
    }
    if (pr != PeekResult::ok) {
      ok = false;
      break;
    }
    std::uint32_t seq;
    std::memcpy(&seq, f.data, sizeof seq);
    if (seq != expect) ok = false;
    for (std::size_t k = sizeof seq; k < f.length && ok; ++k) {
      if (f.data[k] != static_cast<std::byte>(seq + k)) ok = false;
    }
    r.consumer.release();
    if (!ok) break;
    ++expect;
  }
  // relaxed: see the producer's load.
  if (!ok) abort.store(true, std::memory_order_relaxed);
  producer.join();
  EXPECT_TRUE(producer_ok) << "the producer found read_pos corrupted";
  EXPECT_TRUE(ok) << "at message " << expect;
  EXPECT_EQ(expect, kCount);
}

}  // namespace
}  // namespace shmbus::detail

namespace shmbus::detail {
namespace {

// copy_payload's inline size classes (and the memcpy beyond them) copy
// exactly n bytes from any alignment: nothing before or after is touched.
TEST(CopyPayload, CopiesExactlyTheBytesAskedForAtEverySizeAndAlignment) {
  std::vector<std::byte> src(300), dst(300);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::byte>(i * 7 + 1);
  for (std::size_t n = 0; n <= 130; ++n) {
    for (std::size_t at = 0; at < 8; ++at) {
      std::fill(dst.begin(), dst.end(), std::byte{0xEE});
      copy_payload(dst.data() + 16 + at, src.data() + at, n);
      for (std::size_t k = 0; k < dst.size(); ++k) {
        const bool inside = k >= 16 + at && k < 16 + at + n;
        const std::byte want = inside ? src[k - 16] : std::byte{0xEE};
        ASSERT_EQ(dst[k], want) << "n=" << n << " at=" << at << " byte " << k;
      }
    }
  }
}

}  // namespace
}  // namespace shmbus::detail
