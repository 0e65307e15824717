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

// --- the one-frame fast paths (try_send / try_recv) --------------------------

std::uint64_t header_word(const TestRing& r, std::uint64_t offset) {
  return header_at(r.data, offset).load();
}

// Sends `len` bytes of `seq` through try_send() (try_send<true>() for an
// odd `seq` that fits the inline copy), or, when it hands over, through
// try_reserve() + commit(); false when the ring is full.
bool send_fast(TestRing& r, std::uint32_t seq, std::size_t len, bool* took_fast = nullptr) {
  std::vector<std::byte> msg(len);
  for (std::size_t i = 0; i < len; ++i) msg[i] = static_cast<std::byte>(seq + i);
  const bool fast = seq % 2 == 1 && len <= kInlineCopy ? r.producer.try_send<true>(msg.data(), len)
                                                       : r.producer.try_send(msg.data(), len);
  if (took_fast != nullptr) *took_fast = fast;
  return fast || r.send(seq, len);
}
// Receives one message through try_recv() (its Small form, which refuses
// frames over kInlineCopy, for an odd `seq`), or through peek() + release()
// when it hands over; checks its bytes against `seq`.
PeekResult recv_fast(TestRing& r, std::uint32_t seq, std::size_t len) {
  std::vector<std::byte> buf(len + 1);
  std::size_t n = 0;
  const bool fast = seq % 2 == 1 ? r.consumer.try_recv<false, true>(buf.data(), buf.size(), n)
                                 : r.consumer.try_recv<false>(buf.data(), buf.size(), n);
  if (!fast) return r.recv(seq, len);
  EXPECT_EQ(n, len);
  for (std::size_t i = 0; i < n; ++i) {
    if (buf[i] != static_cast<std::byte>(seq + i)) {
      ADD_FAILURE() << "byte " << i << " of message " << seq;
      break;
    }
  }
  return PeekResult::ok;
}

// A hostile start position just short of 2^64: the first frame's end
// would wrap to 0 and pass a corrupted ring's fast_end_ (0) if the
// producer kept that position.
TEST(SpscRingFast, StartPositionsPast2To63AreCorruptedOnBothSides) {
  for (const std::uint64_t start : {~std::uint64_t{0} - 15, (std::uint64_t{1} << 63) + 8}) {
    TestRing r(4096);
    r.control->producer.write_pos.store(start);
    r.control->consumer.read_pos.store(start);
    RingProducer producer(r.control, r.data, r.capacity, RingWake::none);
    RingConsumer consumer(r.control, r.data, r.capacity, false);
    EXPECT_TRUE(producer.corrupted()) << start;
    const std::byte msg[8]{};
    EXPECT_FALSE(producer.try_send(msg, sizeof msg)) << start;
    EXPECT_EQ(producer.try_reserve(sizeof msg), nullptr) << start;
    std::byte buf[8];
    std::size_t n = 0;
    EXPECT_FALSE(consumer.try_recv<false>(buf, sizeof buf, n)) << start;
    Frame f;
    EXPECT_EQ(consumer.peek(f), PeekResult::corrupted) << start;
  }
}

TEST(SpscRingFast, InterleavesWithTheGeneralPathsAtEverySizeAcrossManyLaps) {
  for (const RingWake wake : {RingWake::none, RingWake::checked, RingWake::exchange}) {
    (void)asymmetric_fence_register();
    TestRing r(4096, wake != RingWake::none, wake);
    std::mt19937 rng(11);
    std::uniform_int_distribution<std::size_t> size(0, r.producer.max_payload());
    std::bernoulli_distribution coin(0.5);
    std::uint32_t sent = 0, received = 0, fast_sends = 0;
    std::vector<std::size_t> sizes;
    while (received < 20000) {
      for (;;) {
        const std::size_t len = coin(rng) ? size(rng) % 80 : size(rng);
        bool fast = false;
        if (!(coin(rng) ? send_fast(r, sent, len, &fast) : r.send(sent, len))) break;
        fast_sends += fast ? 1 : 0;
        sizes.push_back(len);
        ++sent;
      }
      const std::uint32_t target = received + (sent - received + 1) / 2;
      for (; received < target; ++received) {
        const PeekResult got =
            coin(rng) ? recv_fast(r, received, sizes[received]) : r.recv(received, sizes[received]);
        ASSERT_EQ(got, PeekResult::ok) << received;
      }
    }
    for (; received < sent; ++received) {
      ASSERT_EQ(recv_fast(r, received, sizes[received]), PeekResult::ok);
    }
    Frame f;
    EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);
    EXPECT_GT(fast_sends, sent / 4);  // the fast path did most of its share
    // Published counters plus the frames counted from their headers are
    // every message sent.
    const RingTail tail =
        ring_tail(r.data, 4096, r.control->producer.write_pos.load(), stats_interval(4096) + 64);
    EXPECT_EQ(r.control->producer.messages_sent.load() + tail.messages, sent);
  }
}

TEST(SpscRingFast, SmallFrameThatWouldCrossALineIsPaddedAndPublishedWithThePad) {
  TestRing r(4096);
  std::byte msg[40];
  for (std::size_t i = 0; i < 40; ++i) msg[i] = static_cast<std::byte>(i);  // message 0
  ASSERT_TRUE(r.producer.try_send(msg, 40));                                // frame 0..48
  ASSERT_TRUE(r.producer.try_send(msg, 40));  // pad 48..64, frame 64..112
  EXPECT_EQ(header_word(r, 48), kFrameValid | kFramePad | 16 | frame_tag(48));
  EXPECT_EQ(header_word(r, 64), kFrameValid | 40 | frame_tag(64));
  EXPECT_EQ(header_word(r, 112), 0u);  // the next header word, zeroed
  std::byte buf[64];
  std::size_t n = 0;
  ASSERT_TRUE(r.consumer.try_recv<false>(buf, sizeof buf, n));
  EXPECT_FALSE(r.consumer.try_recv<false>(buf, sizeof buf, n));  // a pad: peek() skips it
  EXPECT_EQ(r.recv(0, 40), PeekResult::ok);
}

// try_send()'s one-compare line check, at every offset in a line and
// every size around a line: a frame of at most a line that would cross
// one is padded to the next line's start, and no other frame is.
TEST(SpscRingFast, PadsExactlyTheSmallFramesThatWouldCrossALineAtEveryOffsetAndSize) {
  std::vector<std::byte> msg(100);
  for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<std::byte>(i);
  for (std::size_t x = 0; x < kCacheLine; x += 8) {
    for (std::size_t n = 0; n <= 80; ++n) {
      for (const bool small : {false, true}) {
        if (small && n > kInlineCopy) continue;
        TestRing r(4096);
        if (x != 0) {
          ASSERT_TRUE(r.producer.try_send(msg.data(), x - kFrameHeaderSize));
        }
        ASSERT_TRUE(small ? r.producer.try_send<true>(msg.data(), n)
                          : r.producer.try_send(msg.data(), n));
        const bool crosses = frame_size(n) <= kCacheLine && x + frame_size(n) > kCacheLine;
        const std::size_t at = crosses ? kCacheLine : x;
        if (crosses) {
          EXPECT_EQ(header_word(r, x), kFrameValid | kFramePad | (kCacheLine - x) | frame_tag(x))
              << "x=" << x << " n=" << n;
        }
        EXPECT_EQ(header_word(r, at), kFrameValid | n | frame_tag(at)) << "x=" << x << " n=" << n;
        EXPECT_EQ(std::memcmp(r.data + at + kFrameHeaderSize, msg.data(), n), 0);
      }
    }
  }
}

// The Small receive (recv_bytes_into()'s inlined path) takes a frame of up
// to kInlineCopy bytes that fits the room, and leaves any longer one, or
// one longer than the room, to peek().
TEST(SpscRingFast, SmallRecvLeavesFramesOverTheInlineCopyOrTheRoom) {
  TestRing r(4096);
  std::vector<std::byte> msg(200, std::byte{7}), buf(200);
  std::size_t n = 0;
  for (const std::size_t len : {std::size_t{64}, std::size_t{65}, std::size_t{150}}) {
    ASSERT_TRUE(r.producer.try_send(msg.data(), len));
    if (len <= kInlineCopy) {
      EXPECT_FALSE((r.consumer.try_recv<false, true>(buf.data(), len - 1, n)));  // room too small
      ASSERT_TRUE((r.consumer.try_recv<false, true>(buf.data(), buf.size(), n)));
      EXPECT_EQ(n, len);
    } else {
      EXPECT_FALSE((r.consumer.try_recv<false, true>(buf.data(), buf.size(), n))) << len;
      ASSERT_TRUE(r.consumer.try_recv<false>(buf.data(), buf.size(), n));
      EXPECT_EQ(n, len);
    }
  }
}

TEST(SpscRingFast, SendHandsOverAtTheStatsIntervalAndTheTailCountsWhatItSentSince) {
  TestRing r(1 << 16);
  const std::byte msg[8] = {};
  std::uint32_t fast = 0;
  while (r.producer.try_send(msg, 8)) ++fast;
  EXPECT_EQ(fast, stats_interval(1 << 16) / 16);  // 16-byte frames up to the interval
  EXPECT_EQ(r.control->producer.messages_sent.load(), 0u);
  RingTail tail = ring_tail(r.data, 1 << 16, 0, stats_interval(1 << 16) + 64);
  EXPECT_EQ(tail.messages, fast);
  EXPECT_EQ(tail.bytes, 8u * fast);
  EXPECT_EQ(tail.pos, 16u * fast);
  ASSERT_TRUE(r.send(0, 8));  // the general path publishes, and the fast path goes on
  EXPECT_EQ(r.control->producer.messages_sent.load(), fast + 1);
  EXPECT_EQ(r.control->producer.bytes_sent.load(), 8u * (fast + 1));
  EXPECT_TRUE(r.producer.try_send(msg, 8));
}

TEST(SpscRingFast, SendHandsOverWhenFullInABatchOrCorrupted) {
  TestRing r(4096);
  const std::byte msg[56] = {};
  std::uint32_t n = 0;
  while (send_fast(r, n, 56)) ++n;
  EXPECT_FALSE(r.producer.try_send(msg, 56));  // full
  for (std::uint32_t i = 0; i < n; ++i) ASSERT_EQ(recv_fast(r, i, 56), PeekResult::ok);
  Frame f;
  EXPECT_EQ(r.consumer.peek(f), PeekResult::empty);  // publishes the read position
  EXPECT_FALSE(r.producer.try_send(msg, 56));        // the cached position is old: general path
  ASSERT_TRUE(r.send(0, 56));                        // which refreshes it
  EXPECT_TRUE(r.producer.try_send(msg, 56));
  r.producer.begin_batch();
  EXPECT_FALSE(r.producer.try_send(msg, 8));
  r.producer.end_batch();
  EXPECT_TRUE(r.producer.try_send(msg, 8));
  r.producer.mark_corrupted();
  EXPECT_FALSE(r.producer.try_send(msg, 8));
}

// try_recv() takes exactly the headers peek() takes as a plain frame, in
// one compare; every other word leaves the frame for peek() to judge.
TEST(SpscRingFast, RecvRefusesEveryHeaderButAPlainFrameInBounds) {
  const std::uint64_t tag = frame_tag(0);
  const std::uint64_t max = max_frame_payload(4096);
  const std::uint64_t bad[] = {
      0,
      kHeaderWaiting,
      tag | 16,                                 // valid bit clear
      kFrameValid | frame_tag(4096) | 16,       // a later lap's tag
      kFrameValid | frame_tag(8) | 16,          // another position's tag
      kFrameValid | tag | kFramePad | 16,       // a pad
      kFrameValid | tag | kFrameFragment | 16,  // a fragment
      kFrameValid | tag | kFrameLast | 16,      // last without fragment
      kFrameValid | tag | (max + 1),            // above the largest frame
      kFrameValid | tag | kFrameLengthMask,     // far above
      ~std::uint64_t{0},
  };
  for (const std::uint64_t h : bad) {
    TestRing r(4096);
    header_at(r.data, 0).store(h);
    std::byte buf[4096];
    std::size_t n = 99;
    EXPECT_FALSE(r.consumer.try_recv<false>(buf, sizeof buf, n)) << std::hex << h;
    EXPECT_FALSE((r.consumer.try_recv<false, true>(buf, sizeof buf, n))) << std::hex << h;
    // The typed receive (recv<T>: exactly `room` bytes) compares the
    // length with its room first: neither the length the header carries
    // nor one past the largest frame may pass.
    for (const std::uint64_t room : {std::uint64_t{16}, max + 1, h & kFrameLengthMask}) {
      if (room > sizeof buf) continue;
      EXPECT_FALSE(r.consumer.try_recv<true>(buf, room, n)) << std::hex << h << " room " << room;
    }
    EXPECT_EQ(n, 99u);
    EXPECT_EQ(r.control->consumer.read_pos.load(), 0u);
  }
  {  // a frame that would cross the ring end
    TestRing r(4096);
    r.control->consumer.read_pos.store(4032);
    r.consumer = RingConsumer(r.control, r.data, 4096, false);
    header_at(r.data, 4032).store(kFrameValid | frame_tag(4032) | 64);
    Frame f;
    std::byte buf[128];
    std::size_t n = 0;
    EXPECT_FALSE(r.consumer.try_recv<false>(buf, sizeof buf, n));
    EXPECT_FALSE(r.consumer.try_recv<true>(buf, 64, n));
    EXPECT_FALSE((r.consumer.try_recv<false, true>(buf, sizeof buf, n)));
    EXPECT_EQ(r.consumer.peek(f), PeekResult::corrupted);
    EXPECT_FALSE(r.consumer.try_recv<false>(buf, sizeof buf, n));  // sticky
  }
  {  // the largest frame the fast path takes (it ends one word before the
     // publication point, a quarter ring on); too small a buffer or another
     // size is not taken
    TestRing r(4096);
    const std::uint64_t most = max - 8;
    std::vector<std::byte> big(most, std::byte{3});
    ASSERT_TRUE(r.producer.try_send(big.data(), most));
    std::vector<std::byte> buf(most);
    std::size_t n = 0;
    EXPECT_FALSE(r.consumer.try_recv<false>(buf.data(), most - 1, n));
    EXPECT_FALSE(r.consumer.try_recv<true>(buf.data(), most - 1, n));
    ASSERT_TRUE(r.consumer.try_recv<true>(buf.data(), most, n));
    EXPECT_EQ(n, most);
    EXPECT_EQ(buf, big);
  }
  {  // a frame that reaches the publication point (the largest frame does)
     // goes through peek() and release(), which publish the read position
    TestRing r(4096);
    std::vector<std::byte> big(max, std::byte{3});
    ASSERT_TRUE(r.producer.try_send(big.data(), max));
    std::vector<std::byte> buf(max);
    std::size_t n = 0;
    EXPECT_FALSE(r.consumer.try_recv<true>(buf.data(), max, n));
    EXPECT_FALSE(r.consumer.try_recv<false>(buf.data(), max, n));
    Frame f;
    ASSERT_EQ(r.consumer.peek(f), PeekResult::ok);
    EXPECT_EQ(f.length, max);
    r.consumer.release();
    EXPECT_EQ(r.control->consumer.read_pos.load(), frame_size(max));
    // ... and the fast path goes on from there
    ASSERT_TRUE(r.send(7, 8));
    EXPECT_TRUE(r.consumer.try_recv<true>(buf.data(), 8, n));
    EXPECT_EQ(buf[0], std::byte{7});
  }
}

TEST(SpscRingFast, TailStopsAtTheFirstWordThatIsNotAFrameAndAtItsLimit) {
  TestRing r(4096);
  const std::byte msg[8] = {};
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(r.producer.try_send(msg, 8));
  EXPECT_EQ(ring_tail(r.data, 4096, 0, 4096).messages, 4u);
  EXPECT_EQ(ring_tail(r.data, 4096, 0, 32).messages, 2u);
  EXPECT_EQ(ring_tail(r.data, 4096, 4, 4096).messages, 0u);             // misaligned start
  header_at(r.data, 32).store(kFrameValid | frame_tag(4096 + 32) | 8);  // another lap
  EXPECT_EQ(ring_tail(r.data, 4096, 0, 4096).messages, 2u);
  header_at(r.data, 32).store(kFrameValid | frame_tag(32) | kFramePad | 4072);  // past the end
  EXPECT_EQ(ring_tail(r.data, 4096, 0, 4096).pos, 32u);
  header_at(r.data, 32).store(kFrameValid | frame_tag(32) | kFrameFragment | 8);  // not last
  const RingTail t = ring_tail(r.data, 4096, 0, 4096);
  EXPECT_EQ(t.messages, 3u);
  EXPECT_EQ(t.bytes, 32u);
}

TEST(SpscRingFast, TwoThreadsDeliverEverySequenceNumber) {
  TestRing r(1 << 14);
  constexpr std::uint32_t kCount = 200000;
  std::atomic<bool> abort{false};
  std::thread producer([&] {
    std::mt19937 rng(3);
    std::uniform_int_distribution<std::size_t> extra(0, 120);
    std::vector<std::byte> msg(200);
    for (std::uint32_t i = 0; i < kCount; ++i) {
      const std::size_t len = sizeof i + extra(rng);
      std::memcpy(msg.data(), &i, sizeof i);
      for (std::size_t k = sizeof i; k < len; ++k) msg[k] = static_cast<std::byte>(i + k);
      while (!r.producer.try_send(msg.data(), len)) {
        if (std::byte* p = r.producer.try_reserve(len)) {
          std::memcpy(p, msg.data(), len);
          r.producer.commit(len);
          break;
        }
        // relaxed: a stop request only.
        if (abort.load(std::memory_order_relaxed) || r.producer.corrupted()) return;
        cpu_relax();
      }
    }
  });
  std::uint32_t expect = 0;
  bool ok = true;
  std::vector<std::byte> buf(200);
  std::uint64_t bytes = 0;         // frame bytes received
  std::uint64_t left_to_peek = 0;  // plain frames try_recv() did not take
  while (expect < kCount && ok) {
    std::size_t n = 0;
    if (!r.consumer.try_recv<false>(buf.data(), buf.size(), n)) {
      Frame f;
      const PeekResult pr = r.consumer.peek(f);  // a pad, empty, corrupted, or a frame at
                                                 // the fast path's limit
      if (pr == PeekResult::corrupted) ok = false;
      if (pr == PeekResult::ok) {
        // The frame after a pad (peek() skipped it): try_recv() takes it,
        // unless it reaches the fast path's limit.
        if (!r.consumer.try_recv<false>(buf.data(), buf.size(), n)) {
          ++left_to_peek;
          n = f.length;
          std::memcpy(buf.data(), f.data, n);
          r.consumer.release();
        }
      } else {
        cpu_relax();
        continue;
      }
    }
    bytes += frame_size(n);
    std::uint32_t seq;
    std::memcpy(&seq, buf.data(), sizeof seq);
    if (seq != expect || n < sizeof seq) ok = false;
    for (std::size_t k = sizeof seq; k < n && ok; ++k) {
      if (buf[k] != static_cast<std::byte>(seq + k)) ok = false;
    }
    ++expect;
  }
  // relaxed: a stop request only.
  if (!ok) abort.store(true, std::memory_order_relaxed);
  producer.join();
  EXPECT_TRUE(ok) << "at message " << expect;
  EXPECT_EQ(expect, kCount);
  // try_recv() leaves a plain frame only where it reaches the publication
  // point (once a quarter ring) or the ring's end (once a lap).
  EXPECT_LE(left_to_peek, 2 * bytes / ((1 << 14) / 4) + 2);
  EXPECT_GT(left_to_peek, 0u);
}

// [ring.sleep]: the word a sleeping consumer marks is the header it polls.

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
      if (n > kInlineCopy) continue;
      std::fill(dst.begin(), dst.end(), std::byte{0xEE});
      copy_small(dst.data() + 16 + at, src.data() + at, n);  // its tree alone
      for (std::size_t k = 0; k < dst.size(); ++k) {
        const bool inside = k >= 16 + at && k < 16 + at + n;
        const std::byte want = inside ? src[k - 16] : std::byte{0xEE};
        ASSERT_EQ(dst[k], want) << "copy_small n=" << n << " at=" << at << " byte " << k;
      }
    }
  }
}

}  // namespace
}  // namespace shmbus::detail
