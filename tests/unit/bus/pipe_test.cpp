// Pipe / Connection in one process (two ends, threads where a side must
// block): typed send/recv, half-duplex roles, buffer sizes, fragmentation,
// limits, timeouts, close/EOF, end ownership, corruption and statistics.
#include "shmbus/pipe.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/detail/segment.hpp"
#include "shmbus/error.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/shared_memory.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

using test::code_of;

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return v;
}

struct Point {
  int x;
  double y;
};

TEST(Pipe, DuplexCarriesValuesStringsAndSpansBothWays) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send(Point{3, 4.5}), SendResult::ok);
  ASSERT_EQ(a.send("hello"), SendResult::ok);
  const std::vector<int> ints{1, 2, 3, 4};
  ASSERT_EQ(a.send(std::span<const int>(ints)), SendResult::ok);
  ASSERT_EQ(b.send(std::string("back")), SendResult::ok);

  auto p = b.recv<Point>();
  EXPECT_EQ(p.x, 3);
  EXPECT_EQ(p.y, 4.5);
  EXPECT_EQ(b.recv_string(), "hello");
  auto bytes = b.recv_bytes();
  ASSERT_EQ(bytes.size(), sizeof(int) * 4);
  std::vector<int> got(4);
  std::memcpy(got.data(), bytes.data(), bytes.size());
  EXPECT_EQ(got, ints);
  EXPECT_EQ(a.recv_string(), "back");
}

// The README promises a try_ and an _until form of every blocking call: a
// trivially copyable value had recv and recv_for only.
TEST(Pipe, TryRecvAndRecvUntilOfAPlainValue) {
  auto [a, b] = Pipe();
  int v = 0;
  EXPECT_EQ(b.try_recv(v), RecvResult::empty);
  ASSERT_EQ(a.send(41), SendResult::ok);
  ASSERT_EQ(a.send(std::int64_t{42}), SendResult::ok);
  ASSERT_EQ(a.send(43), SendResult::ok);
  EXPECT_EQ(b.try_recv(v), RecvResult::ok);
  EXPECT_EQ(v, 41);
  EXPECT_EQ(b.try_recv(v), RecvResult::size_mismatch);  // an int64: it stays
  std::int64_t w = 0;
  EXPECT_EQ(b.recv_until(w, Clock::now() + 1s), RecvResult::ok);
  EXPECT_EQ(w, 42);
  EXPECT_EQ(b.recv_until(v, Clock::now()), RecvResult::ok);
  EXPECT_EQ(v, 43);
  EXPECT_EQ(b.recv_until(v, Clock::now() + 1ms), RecvResult::timeout);
  a.close();
  EXPECT_EQ(b.try_recv(v), RecvResult::eof);
}

// A plain value and a string have every call form, and a string is its
// bytes whichever form sends or receives it (README's type table): the
// _for/_until/try_ forms of a std::string went through the codec, so
// send("x") then try_recv(s) read a decode_error.
TEST(Pipe, PlainValuesAndStringsHaveEveryCallFormAndAStringIsItsBytes) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send_for(41, 1s), SendResult::ok);
  ASSERT_EQ(a.send_until(std::int64_t{42}, Clock::now() + 1s), SendResult::ok);
  int v = 0;
  ASSERT_EQ(b.recv_for(v, 1s), RecvResult::ok);
  EXPECT_EQ(v, 41);
  std::int64_t w = 0;
  ASSERT_EQ(b.try_recv(w), RecvResult::ok);
  EXPECT_EQ(w, 42);

  const std::string text = "hello";
  ASSERT_EQ(a.send("one"), SendResult::ok);
  ASSERT_EQ(a.try_send(text), SendResult::ok);
  ASSERT_EQ(a.try_send("two"), SendResult::ok);
  ASSERT_EQ(a.send_for(text, 1s), SendResult::ok);
  ASSERT_EQ(a.send_for("three", 1s), SendResult::ok);
  ASSERT_EQ(a.send_until(std::string_view("four"), Clock::now() + 1s), SendResult::ok);
  std::string s;
  ASSERT_EQ(b.try_recv(s), RecvResult::ok);
  EXPECT_EQ(s, "one");
  ASSERT_EQ(b.recv_for(s, 1s), RecvResult::ok);
  EXPECT_EQ(s, "hello");
  ASSERT_EQ(b.recv_until(s, Clock::now() + 1s), RecvResult::ok);
  EXPECT_EQ(s, "two");  // no terminating zero: the literal's characters
  EXPECT_EQ(b.recv_string(), "hello");
  const std::vector<std::byte> raw = b.recv_bytes();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(raw.data()), raw.size()), "three");
  EXPECT_EQ(b.recv<std::string>(), "four");
  // A C string is its characters (not the pointer's bytes), a span its
  // elements, an array of numbers its bytes.
  const char* c_string = "five";
  char mutable_chars[] = "six";
  char* c_mutable = mutable_chars;
  ASSERT_EQ(a.send_for(c_string, 1s), SendResult::ok);
  ASSERT_EQ(a.try_send(c_string), SendResult::ok);
  ASSERT_EQ(a.send(c_mutable), SendResult::ok);
  ASSERT_EQ(a.send_until(c_mutable, Clock::now() + 1s), SendResult::ok);
  for (const char* expected : {"five", "five", "six", "six"}) {
    ASSERT_EQ(b.try_recv(s), RecvResult::ok);
    EXPECT_EQ(s, expected);
  }
  const int numbers[3] = {7, 8, 9};
  ASSERT_EQ(a.try_send(std::span<const int>(numbers)), SendResult::ok);
  ASSERT_EQ(a.send_for(numbers, 1s), SendResult::ok);
  for (int round = 0; round < 2; ++round) {
    int got[3] = {};
    ASSERT_EQ(b.try_recv(got), RecvResult::ok);
    EXPECT_EQ(got[0] + got[1] + got[2], 24);
    EXPECT_EQ(got[2], 9);
  }
  EXPECT_EQ(b.try_recv(s), RecvResult::empty);
  EXPECT_EQ(b.recv_for(s, 1ms), RecvResult::timeout);
  a.close();
  EXPECT_EQ(b.try_recv(s), RecvResult::eof);
}

// A char array without a NUL is all its characters, never more: every
// call form stops at the array's extent (ASan: no read past it), and one
// with a NUL stops there.
TEST(Pipe, CharArrayWithoutNulIsSentUpToItsExtentInEveryCallForm) {
  auto [a, b] = Pipe();
  struct {
    char full[8] = {'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'};
    char after[8] = {'X', 'X', 'X', 'X', 'X', 'X', 'X', 'X'};  // what strlen would run into
  } chars;
  const auto& cfull = chars.full;
  ASSERT_EQ(a.send(chars.full), SendResult::ok);
  ASSERT_EQ(a.try_send(chars.full), SendResult::ok);
  ASSERT_EQ(a.send_for(cfull, 1s), SendResult::ok);
  ASSERT_EQ(a.send_until(cfull, Clock::now() + 1s), SendResult::ok);
  char shorter[8] = "ab\0cd";
  ASSERT_EQ(a.try_send(shorter), SendResult::ok);
  std::string s;
  for (const char* expected : {"abcdefgh", "abcdefgh", "abcdefgh", "abcdefgh", "ab"}) {
    ASSERT_EQ(b.try_recv(s), RecvResult::ok);
    EXPECT_EQ(s, expected);
  }
  EXPECT_EQ(chars.after[0], 'X');
}

TEST(Pipe, HalfDuplexFirstEndOnlyReceivesSecondOnlySends) {
  auto [r, w] = Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_TRUE(w.writable());
  EXPECT_FALSE(w.readable());
  EXPECT_EQ(r.send(1), SendResult::closed);
  int x = 0;
  EXPECT_EQ(w.recv(x), RecvResult::closed);
  ASSERT_EQ(w.send(42), SendResult::ok);
  EXPECT_EQ(r.recv<int>(), 42);
}

TEST(Pipe, EmptyMessageIsAMessage) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send_bytes({}), SendResult::ok);
  std::size_t n = 99;
  std::byte buf[1];
  ASSERT_EQ(b.recv_bytes_into(buf, 0, n), RecvResult::ok);
  EXPECT_EQ(n, 0u);
}

// Spans of every size around the inlined paths' 64-byte limit (send_bytes()
// and recv_bytes_into() go out of line above it, as does a receive whose
// room is short of the message), and a typed value above it, arrive whole.
TEST(Pipe, MessagesOfEverySizeAroundTheInlineCopyArriveWhole) {
  PipeOptions o;
  o.capacity = 4096;  // many laps and pads
  auto [a, b] = Pipe(o);
  std::vector<std::byte> buf(300);
  for (int round = 0; round < 20; ++round) {
    for (std::size_t len = 0; len <= 140; ++len) {
      const auto msg = pattern(len, static_cast<unsigned>(len + static_cast<std::size_t>(round)));
      ASSERT_EQ(a.send_bytes(msg), SendResult::ok) << len;
      const std::size_t offset = len % 3;
      std::size_t n = 0;
      if (len > 0) {
        EXPECT_EQ(b.recv_bytes_into(std::span(buf).first(len - 1 + offset), offset, n),
                  RecvResult::too_small);
        EXPECT_EQ(n, len);
      }
      ASSERT_EQ(b.recv_bytes_into(std::span(buf).first(len + offset), offset, n), RecvResult::ok);
      ASSERT_EQ(n, len);
      ASSERT_TRUE(std::equal(msg.begin(), msg.end(), buf.begin() + static_cast<long>(offset)))
          << len;
    }
  }
  struct Big {
    std::byte bytes[100];
  };
  Big big{}, got{};
  for (std::size_t i = 0; i < sizeof big.bytes; ++i) big.bytes[i] = static_cast<std::byte>(i);
  ASSERT_EQ(a.send(big), SendResult::ok);
  ASSERT_EQ(b.recv(got), RecvResult::ok);
  EXPECT_EQ(std::memcmp(big.bytes, got.bytes, sizeof big.bytes), 0);
}

// The inlined small send of a busy-poll pipe refuses a frame that must move
// to the next cache line and any ring that wakes its receiver; its
// out-of-line retry pads it (issue 22). Spans of 1 to 64 bytes and typed
// values of two sizes, interleaved so that frames keep landing across a
// line, arrive whole and in order on every wait strategy.
template <std::size_t N>
struct Sized {
  std::array<std::uint8_t, N> bytes;
};
template <std::size_t N>
Sized<N> sized(unsigned seed) {
  Sized<N> v{};
  for (std::size_t i = 0; i < N; ++i) v.bytes[i] = static_cast<std::uint8_t>(seed * 31 + i);
  return v;
}
TEST(Pipe, SmallSendsThatMustPadToTheNextLineArriveWholeOnEveryStrategy) {
  for (const WaitStrategy strategy :
       {WaitStrategy::busy_poll, WaitStrategy::adaptive, WaitStrategy::blocking}) {
    PipeOptions o;
    o.capacity = 4096;  // many laps, pads to the ring end too
    o.wait.strategy = strategy;
    auto [a, b] = Pipe(o);
    std::vector<std::byte> buf(64);
    for (unsigned round = 0; round < 40; ++round) {
      for (std::size_t len = 1; len <= 64; len += 9) {
        const auto msg = pattern(len, round + static_cast<unsigned>(len));
        ASSERT_EQ(a.send_bytes(msg), SendResult::ok) << len;
        ASSERT_EQ(a.send(sized<5>(round)), SendResult::ok);
        ASSERT_EQ(a.send(sized<40>(round + 1)), SendResult::ok);
        // try_: all three are there now (one thread), and a lost one
        // fails here rather than waiting for ever.
        std::size_t n = 0;
        ASSERT_EQ(b.try_recv_bytes_into(buf, 0, n), RecvResult::ok) << len;
        ASSERT_EQ(n, len);
        ASSERT_TRUE(std::equal(msg.begin(), msg.end(), buf.begin())) << len;
        Sized<5> s5{};
        Sized<40> s40{};
        ASSERT_EQ(b.try_recv(s5), RecvResult::ok) << len;
        EXPECT_EQ(s5.bytes, sized<5>(round).bytes);
        ASSERT_EQ(b.try_recv(s40), RecvResult::ok) << len;
        EXPECT_EQ(s40.bytes, sized<40>(round + 1).bytes);
      }
    }
  }
}

TEST(Pipe, RecvBytesIntoReportsTheSizeNeededAndKeepsTheMessage) {
  auto [a, b] = Pipe();
  const auto msg = pattern(100, 1);
  ASSERT_EQ(a.send_bytes(msg), SendResult::ok);
  std::vector<std::byte> small(60);
  std::size_t n = 0;
  EXPECT_EQ(b.recv_bytes_into(small, 0, n), RecvResult::too_small);
  EXPECT_EQ(n, 100u);
  std::vector<std::byte> big(150);
  EXPECT_EQ(b.recv_bytes_into(big, 100, n), RecvResult::too_small);  // offset counts
  ASSERT_EQ(b.recv_bytes_into(big, 50, n), RecvResult::ok);
  EXPECT_EQ(n, 100u);
  EXPECT_TRUE(std::equal(msg.begin(), msg.end(), big.begin() + 50));
}

TEST(Pipe, RecvBytesAboveMaxLengthIsTooLargeAndKeepsTheMessage) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send_bytes(pattern(500, 2)), SendResult::ok);
  EXPECT_EQ(code_of([&] { (void)b.recv_bytes(499); }), Errc::too_large);
  EXPECT_EQ(b.recv_bytes(500), pattern(500, 2));
}

TEST(Pipe, RecvOfAnotherSizeIsAMismatchAndKeepsTheMessage) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send(std::uint16_t{7}), SendResult::ok);
  std::uint64_t wide = 0;
  EXPECT_EQ(b.recv(wide), RecvResult::size_mismatch);
  EXPECT_EQ(b.recv<std::uint16_t>(), 7);
}

TEST(Pipe, MessageLargerThanTheRingStreamsThroughInFragments) {
  PipeOptions o;
  o.capacity = 4096;
  auto [a, b] = Pipe(o);
  const std::vector<std::size_t> sizes{1016, 1017, 5000, 4096, 1 << 20, 3};
  std::thread reader([&b = b, &sizes] {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      auto got = b.recv_bytes();
      EXPECT_EQ(got, pattern(sizes[i], static_cast<unsigned>(i))) << "message " << i;
    }
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_EQ(a.send_bytes(pattern(sizes[i], static_cast<unsigned>(i))), SendResult::ok);
  }
  reader.join();
}

TEST(Pipe, FragmentedMessageIntoTooSmallBufferReportsItsSize) {
  PipeOptions o;
  o.capacity = 4096;
  auto [a, b] = Pipe(o);
  ASSERT_EQ(a.send_bytes(pattern(2000, 5)), SendResult::ok);  // 2 frames, fits the ring
  std::vector<std::byte> buf(100);
  std::size_t n = 0;
  EXPECT_EQ(b.recv_bytes_into(buf, 0, n), RecvResult::too_small);
  EXPECT_EQ(n, 2000u);
  EXPECT_EQ(b.recv_bytes(), pattern(2000, 5));
}

TEST(Pipe, AboveMaxMessageFailsBeforeAnythingIsSent) {
  PipeOptions o;
  o.capacity = 4096;
  o.max_message = 3000;
  auto [a, b] = Pipe(o);
  EXPECT_EQ(a.send_bytes(pattern(3001, 0)), SendResult::too_large);
  std::size_t n = 0;
  std::byte buf[8];
  EXPECT_EQ(b.try_recv_bytes_into(buf, 0, n), RecvResult::empty);
  EXPECT_EQ(a.send_bytes(pattern(3000, 0)), SendResult::ok);
  EXPECT_EQ(b.recv_bytes(), pattern(3000, 0));
}

TEST(Pipe, TimedCallsTimeOutOnEmptyAndFull) {
  PipeOptions o;
  o.capacity = 4096;
  auto [a, b] = Pipe(o);
  std::byte buf[64];
  std::size_t n = 0;
  EXPECT_EQ(b.recv_bytes_into_for(buf, 0, n, 20ms), RecvResult::timeout);
  EXPECT_FALSE(b.poll());
  EXPECT_FALSE(b.poll(5ms));
  const auto msg = pattern(500, 0);
  while (a.try_send_bytes(msg) == SendResult::ok) {
  }
  EXPECT_EQ(a.try_send_bytes(msg), SendResult::full);
  EXPECT_EQ(a.send_bytes_for(msg, 20ms), SendResult::timeout);
  EXPECT_TRUE(b.poll());
}

TEST(Pipe, CloseDeliversEverythingThenEof) {
  auto [a, b] = Pipe();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(a.send(i), SendResult::ok);
  a.close();
  EXPECT_TRUE(a.closed());
  EXPECT_EQ(a.send(9), SendResult::closed);  // using a closed end
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.recv<int>(), i);
  int x = 0;
  EXPECT_EQ(b.recv(x), RecvResult::eof);
  EXPECT_TRUE(b.poll());  // EOF is ready, like multiprocessing
  EXPECT_EQ(code_of([&] { (void)b.recv<int>(); }), Errc::closed);
  EXPECT_EQ(b.send(1), SendResult::broken);
}

// Until `n` receives on ring `ring` of the pipe `name` went to sleep.
bool receivers_blocked(const std::string& name, int ring, std::uint64_t n) {
  return test::poll_until([&] {
    const PipeStats s = pipe_stats(SegmentView::open(name));
    return s.rings[static_cast<std::size_t>(ring)].blocked_recvs >= n;
  });
}

TEST(Pipe, BlockedReceiverWakesOnClose) {
  PipeOptions o;
  o.wait.strategy = WaitStrategy::blocking;
  SegmentGuard g(unique_name("pipe-wake"));
  auto [a, b] = Pipe(g.name(), o);
  std::thread reader([&b = b] {
    int x = 0;
    EXPECT_EQ(b.recv(x), RecvResult::eof);
  });
  ASSERT_TRUE(receivers_blocked(g.name(), 1, 1));  // b (end 1) sleeps on ring 1
  a.close();
  reader.join();
}

TEST(Pipe, HugeTimeoutsWaitInsteadOfOverflowing) {
  PipeOptions o;
  o.wait.strategy = WaitStrategy::blocking;
  SegmentGuard g(unique_name("pipe-huge"));
  auto [a, b] = Pipe(g.name(), o);
  std::thread reader([&b = b] {
    EXPECT_TRUE(b.poll(std::chrono::nanoseconds::max()));
    int x = 0;
    EXPECT_EQ(b.recv_for(x, std::chrono::hours::max()), RecvResult::ok);
    EXPECT_EQ(x, 5);
    EXPECT_EQ(b.recv_for(x, std::chrono::nanoseconds::max()), RecvResult::ok);
    EXPECT_EQ(x, 6);
  });
  ASSERT_TRUE(receivers_blocked(g.name(), 1, 1));
  ASSERT_EQ(a.send(5), SendResult::ok);
  ASSERT_TRUE(receivers_blocked(g.name(), 1, 2));
  ASSERT_EQ(a.send(6), SendResult::ok);
  reader.join();
}

TEST(Pipe, PingPongUnderEveryStrategy) {
  const std::uint64_t missed = detail::pipe_missed_wakeups();
  for (auto s : {WaitStrategy::busy_poll, WaitStrategy::adaptive, WaitStrategy::blocking}) {
    PipeOptions o;
    o.wait.strategy = s;
    o.wait.spin = std::chrono::microseconds(1);
    auto [a, b] = Pipe(o);
    std::thread echo([&b = b] {
      int x = 0;
      while (b.recv(x) == RecvResult::ok) {
        if (b.send(x + 1) != SendResult::ok) return;
      }
    });
    for (int i = 0; i < 2000; ++i) {
      ASSERT_EQ(a.send(i), SendResult::ok);
      ASSERT_EQ(a.recv<int>(), i + 1);
    }
    a.close();
    echo.join();
  }
  // Every sleep was ended by its notifier, none by a liveness slice.
  EXPECT_EQ(detail::pipe_missed_wakeups(), missed);
}

TEST(Pipe, BatchBecomesVisibleAtEndBatch) {
  auto [a, b] = Pipe();
  a.begin_batch();
  for (int i = 0; i < 4; ++i) ASSERT_EQ(a.send(i), SendResult::ok);
  EXPECT_FALSE(b.poll());
  a.end_batch();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(b.recv<int>(), i);
}

TEST(Pipe, FullTrySendInsideABatchPublishesTheBatch) {
  PipeOptions o;
  o.capacity = 4096;
  auto [a, b] = Pipe(o);
  a.begin_batch();
  int sent = 0;
  while (a.try_send(sent) == SendResult::ok) ++sent;
  // The batch was published when the ring filled: the reader sees it all.
  for (int i = 0; i < sent; ++i) {
    int x = -1;
    ASSERT_EQ(b.recv_for(x, 5s), RecvResult::ok) << i;
    ASSERT_EQ(x, i);
  }
  a.end_batch();
}

TEST(Pipe, ZeroCopyReserveCommitPeekRelease) {
  auto [a, b] = Pipe();
  std::span<std::byte> out;
  ASSERT_EQ(a.reserve(32, out), SendResult::ok);
  ASSERT_EQ(out.size(), 32u);
  std::memcpy(out.data(), "zero-copy", 9);
  a.commit(9);
  std::span<const std::byte> in;
  ASSERT_EQ(b.peek(in), RecvResult::ok);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(in.data()), in.size()), "zero-copy");
  b.release();
  EXPECT_FALSE(b.poll());
  EXPECT_EQ(a.reserve(a.max_frame_payload() + 1, out), SendResult::too_large);
}

TEST(Pipe, CommitWithoutAValidReservationSendsNothing) {
  auto [r, w] = Pipe(false);
  EXPECT_EQ(r.commit(8), SendResult::closed);     // receive-only: no ring to write
  EXPECT_EQ(w.commit(8), SendResult::too_large);  // nothing reserved
  std::span<std::byte> out;
  ASSERT_EQ(w.reserve(16, out), SendResult::ok);
  EXPECT_EQ(w.commit(17), SendResult::too_large);  // above the reservation
  std::memcpy(out.data(), "sixteen bytes!!!", 16);
  EXPECT_EQ(w.commit(16), SendResult::ok);
  EXPECT_EQ(w.commit(16), SendResult::too_large);  // already committed
  ASSERT_EQ(w.reserve(8, out), SendResult::ok);
  Connection moved = std::move(w);
  EXPECT_EQ(w.commit(8), SendResult::closed);  // NOLINT(bugprone-use-after-move)
  std::string got;
  ASSERT_EQ(r.recv(got), RecvResult::ok);
  EXPECT_EQ(got, "sixteen bytes!!!");
  EXPECT_FALSE(r.poll());  // nothing else was sent
}

TEST(Pipe, ReleaseAfterAReceiveConsumedThePeekedFrameCountsNothingTwice) {
  SegmentGuard g(unique_name("pipe-peek"));
  auto [a, b] = Pipe(g.name());
  ASSERT_EQ(a.send(std::uint64_t{7}), SendResult::ok);
  ASSERT_EQ(a.send(std::uint64_t{8}), SendResult::ok);
  std::span<const std::byte> in;
  ASSERT_EQ(b.peek(in), RecvResult::ok);
  EXPECT_EQ(b.recv<std::uint64_t>(), 7u);  // consumes the peeked frame
  b.release();                             // nothing left to release
  EXPECT_EQ(b.recv<std::uint64_t>(), 8u);
  b.release();
  b.close();  // publishes the read position and counters
  const PipeStats s = pipe_stats(SegmentView::open(g.name()));
  EXPECT_EQ(s.rings[1].messages_received, 2u);
  EXPECT_EQ(s.rings[1].bytes_received, 16u);
}

TEST(Pipe, SecondTakerOfAnEndGetsAnError) {
  SegmentGuard g(unique_name("pipe-take"));
  auto first = Connection::create(g.name(), PipeEnd::first);
  auto second = Connection::open(g.name(), PipeEnd::second);
  EXPECT_EQ(code_of([&] { (void)Connection::open(g.name(), PipeEnd::second); }),
            Errc::already_exists);
  EXPECT_EQ(code_of([&] { (void)Connection::open(g.name(), PipeEnd::first); }),
            Errc::already_exists);
  ASSERT_EQ(second.send("by name"), SendResult::ok);
  EXPECT_EQ(first.recv_string(), "by name");
}

TEST(Pipe, OpeningAnotherKindOrMissingNameFails) {
  SegmentGuard g(unique_name("pipe-kind"));
  auto shm = SharedMemory::create(g.name(), 4096);
  EXPECT_EQ(code_of([&] { (void)Connection::open(g.name(), PipeEnd::first); }), Errc::wrong_kind);
  EXPECT_EQ(code_of([&] { (void)Connection::open(unique_name("none"), PipeEnd::first); }),
            Errc::not_found);
  PipeOptions bad;
  bad.capacity = 5000;
  EXPECT_EQ(code_of([&] { (void)Pipe(unique_name("bad"), bad); }), Errc::invalid_argument);
}

TEST(Pipe, AnEndThatIsNeitherFirstNorSecondIsAnInvalidArgument) {
  SegmentGuard g(unique_name("pipe-end"));
  const auto neither = static_cast<PipeEnd>(7);
  EXPECT_EQ(code_of([&] { (void)Connection::create(g.name(), neither); }), Errc::invalid_argument);
  auto made = Connection::create(g.name(), PipeEnd::first);
  EXPECT_EQ(code_of([&] { (void)Connection::open(g.name(), neither); }), Errc::invalid_argument);
  auto other = Connection::open(g.name(), PipeEnd::second);  // the real end is still free
  EXPECT_EQ(made.send(5), SendResult::ok);
  int x = 0;
  EXPECT_EQ(other.recv(x), RecvResult::ok);
  EXPECT_EQ(x, 5);
}

TEST(Pipe, CorruptedHeaderFailsTheChannelWithAnError) {
  SegmentGuard g(unique_name("pipe-corrupt"));
  auto [a, b] = Pipe(g.name());
  ASSERT_EQ(a.send(1), SendResult::ok);
  {
    SegmentOptions so;
    so.attach = false;
    auto seg = detail::Segment::open(g.name(), ObjectKind::pipe, detail::kBytesTag, so);
    // a -> b flows through ring 1 (end e receives ring e): damage its first header.
    const auto cap = reinterpret_cast<detail::PipeControl*>(seg.payload())->config.capacity;
    std::byte* ring1 = seg.payload() + detail::kPipeControlSize + cap;
    const std::uint64_t bad = detail::kFrameValid | detail::frame_tag(0) | (cap * 2);
    std::memcpy(ring1, &bad, sizeof bad);
  }
  int x = 0;
  EXPECT_EQ(b.recv(x), RecvResult::corrupted);
  EXPECT_EQ(code_of([&] { (void)b.recv_bytes(); }), Errc::corrupted);
}

// The shared config of a pipe segment, through a second mapping (what a
// misbehaving peer could write).
template <class Fn>
void rewrite_config(const std::string& name, Fn&& fn) {
  SegmentOptions so;
  so.attach = false;
  auto seg = detail::Segment::open(name, ObjectKind::pipe, detail::kBytesTag, so);
  fn(reinterpret_cast<detail::PipeControl*>(seg.payload())->config);
}

TEST(Pipe, OpenRejectsUnknownFlagsAndAnAbsurdSpinBudget) {
  SegmentGuard g(unique_name("pipe-cfg"));
  auto first = Connection::create(g.name(), PipeEnd::first);
  rewrite_config(g.name(), [](detail::PipeConfig& k) { k.flags = 2; });
  EXPECT_EQ(code_of([&] { (void)Connection::open(g.name(), PipeEnd::second); }), Errc::corrupted);
  rewrite_config(g.name(), [](detail::PipeConfig& k) {
    k.flags = 0;
    k.spin_ns = ~std::uint64_t{0};
  });
  EXPECT_EQ(code_of([&] { (void)Connection::open(g.name(), PipeEnd::second); }), Errc::corrupted);
}

TEST(Pipe, GeometryComesFromTheValidatedCopyNotTheLiveConfig) {
  SegmentGuard g(unique_name("pipe-geom"));
  PipeOptions o;
  o.capacity = 4096;
  o.duplex = false;
  auto second = Connection::create(g.name(), PipeEnd::second, o);
  auto first = Connection::open(g.name(), PipeEnd::first);
  const std::size_t frame = first.max_frame_payload();
  ASSERT_EQ(frame, detail::max_frame_payload(4096));
  // A peer rewrites the geometry after both ends were set up.
  rewrite_config(g.name(), [](detail::PipeConfig& k) {
    k.capacity = std::uint64_t{1} << 30;
    k.duplex = 1;
  });
  EXPECT_EQ(first.max_frame_payload(), frame);
  EXPECT_EQ(second.max_frame_payload(), frame);
  std::vector<std::byte> big = pattern(3 * frame, 7);
  std::thread reader([&first = first, &big] {
    std::vector<std::byte> got;
    EXPECT_EQ(first.recv_bytes(got), RecvResult::ok);
    EXPECT_EQ(got, big);
  });
  EXPECT_EQ(second.send_bytes(big), SendResult::ok);
  reader.join();
}

// The segment of pipe `name`, opened as raw memory (not attached).
detail::Segment open_pipe_segment(const std::string& name) {
  SegmentOptions so;
  so.attach = false;
  return detail::Segment::open(name, ObjectKind::pipe, detail::kBytesTag, so);
}

// Writes frames straight into ring 0 of the half-duplex pipe `name` (what
// a misbehaving sender could commit); end first receives them.
class ForgedSender {
 public:
  explicit ForgedSender(const std::string& name) : seg_(open_pipe_segment(name)) {
    auto* c = reinterpret_cast<detail::PipeControl*>(seg_.payload());
    producer_ = detail::RingProducer(&c->rings[0], seg_.payload() + detail::kPipeControlSize,
                                     c->config.capacity, detail::RingWake::exchange);
  }
  // A first fragment announcing `total` bytes and carrying `carried`.
  void first(std::uint64_t total, std::size_t carried) {
    std::byte* p = producer_.try_reserve(8 + carried);
    ASSERT_NE(p, nullptr);
    std::memcpy(p, &total, 8);
    std::memset(p + 8, 'x', carried);
    producer_.commit(8 + carried, detail::kFrameFragment);
  }
  void next(std::size_t len, bool last) {
    std::byte* p = producer_.try_reserve(len);
    ASSERT_NE(p, nullptr);
    std::memset(p, 'y', len);
    producer_.commit(len, detail::kFrameFragment | (last ? detail::kFrameLast : 0));
  }

 private:
  detail::Segment seg_;
  detail::RingProducer producer_;
};

// SHMBUS_NO_MEMBARRIER keeps a process out of [fence.asym]: its adaptive
// sender announces the exchange, so no receiver fences (or interrupts it)
// on its account, and the pipe still works.
TEST(Pipe, NoMembarrierEnvironmentMakesAdaptiveSendersExchange) {
  SegmentGuard g(unique_name("pipe-nomb"));
  const pid_t child = test::fork_child([&] {
    ::setenv("SHMBUS_NO_MEMBARRIER", "1", 1);
    if (detail::asymmetric_fence_register()) return 1;
    PipeOptions o;
    o.duplex = false;
    o.wait.strategy = WaitStrategy::adaptive;
    auto sender = Connection::create(g.name(), PipeEnd::second, o);
    auto seg = open_pipe_segment(g.name());
    auto* c = reinterpret_cast<detail::PipeControl*>(seg.payload());
    if (c->rings[0].producer_checks.load() != 0) return 2;
    auto receiver = Connection::open(g.name(), PipeEnd::first);
    if (sender.send(7) != SendResult::ok || receiver.recv<int>() != 7) return 3;
    return 0;
  });
  const auto st = test::wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
}

TEST(Pipe, FirstFragmentThatCarriesTheWholeTotalIsCorrupted) {
  SegmentGuard g(unique_name("pipe-forge1"));
  auto [r, w] = Pipe(g.name(), false);
  ForgedSender forged(g.name());
  forged.first(16, 16);  // a fragment not marked last must leave bytes to come
  std::string got;
  EXPECT_EQ(r.recv(got), RecvResult::corrupted);
}

TEST(Pipe, EmptyContinuationFragmentIsCorrupted) {
  SegmentGuard g(unique_name("pipe-forge2"));
  auto [r, w] = Pipe(g.name(), false);
  ForgedSender forged(g.name());
  forged.first(16, 8);
  forged.next(0, false);
  forged.next(8, true);
  std::vector<std::byte> got;
  EXPECT_EQ(r.recv_bytes(got), RecvResult::corrupted);
}

TEST(Pipe, AnnouncedHugeMessageAllocatesOnlyWhatArrivesAndTimesOut) {
  SegmentGuard g(unique_name("pipe-forge3"));
  PipeOptions o;
  o.duplex = false;
  o.max_message = std::uint64_t{1} << 40;
  auto [r, w] = Pipe(g.name(), o);
  ForgedSender forged(g.name());
  forged.first(std::uint64_t{1} << 40, 64);  // then nothing more arrives
  std::vector<std::byte> got;
  const Connection::Deadline d = Clock::now() + 50ms;
  EXPECT_EQ(r.recv_bytes(got, SIZE_MAX, &d), RecvResult::timeout);
  EXPECT_LT(got.capacity(), std::size_t{1} << 20);
  // Half a message was consumed: the direction stays failed.
  std::string s;
  const Connection::Deadline d2 = Clock::now() + 50ms;
  EXPECT_EQ(r.recv(s, &d2), RecvResult::corrupted);
}

TEST(Pipe, SenderTimingOutInsideAFragmentedMessageFailsItsDirection) {
  PipeOptions o;
  o.capacity = 4096;
  o.duplex = false;
  auto [r, w] = Pipe(o);
  const auto big = pattern(4 * w.max_frame_payload(), 3);  // more than the ring holds
  EXPECT_EQ(w.send_bytes_for(big, 50ms), SendResult::timeout);
  EXPECT_EQ(w.send(1), SendResult::corrupted);
  std::size_t size = 0;
  std::vector<std::byte> buf(big.size());
  EXPECT_EQ(r.recv_bytes_into_for(buf, 0, size, 50ms), RecvResult::timeout);
}

TEST(Pipe, StatisticsAreReadableThroughASegmentView) {
  SegmentGuard g(unique_name("pipe-stats"));
  auto [a, b] = Pipe(g.name());
  for (int i = 0; i < 5; ++i) ASSERT_EQ(a.send(std::uint64_t{1}), SendResult::ok);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.recv<std::uint64_t>(), 1u);
  std::byte buf[8];
  std::size_t n = 0;
  EXPECT_EQ(b.try_recv_bytes_into(buf, 0, n), RecvResult::empty);  // publishes its position
  ASSERT_EQ(b.send("x"), SendResult::ok);
  a.close();

  auto view = SegmentView::open(g.name());
  const PipeStats s = pipe_stats(view);
  EXPECT_TRUE(s.duplex);
  EXPECT_EQ(s.rings[1].messages_sent, 5u);
  EXPECT_EQ(s.rings[1].bytes_sent, 40u);
  EXPECT_EQ(s.rings[1].messages_received, 5u);
  EXPECT_EQ(s.rings[1].bytes_received, 40u);
  EXPECT_EQ(s.rings[1].depth_bytes, 0u);
  EXPECT_EQ(s.rings[0].messages_sent, 1u);
  EXPECT_GT(s.rings[0].depth_bytes, 0u);
  EXPECT_EQ(s.ends[1].owner.pid, ::getpid());
  EXPECT_TRUE(s.ends[1].owner_alive);
  EXPECT_TRUE(s.ends[0].closed);
  EXPECT_FALSE(s.ends[1].closed);

  auto shm_name = unique_name("not-a-pipe");
  SegmentGuard g2(shm_name);
  auto shm = SharedMemory::create(shm_name, 64);
  EXPECT_EQ(code_of([&] { (void)pipe_stats(SegmentView::open(shm_name)); }), Errc::wrong_kind);
}

// The sender publishes its counters only every few KiB of fast sends
// ([ring.stats]); pipe_stats() counts the frames past that point from
// their headers, so the figures are exact at any moment.
TEST(Pipe, StatisticsCountEveryMessageSentAlsoBetweenPublications) {
  SegmentGuard g(unique_name("pipe-live-stats"));
  auto [a, b] = Pipe(g.name());
  std::uint64_t sent = 0;
  for (const int burst : {1, 3, 255, 256, 257, 1000}) {
    for (int i = 0; i < burst; ++i) ASSERT_EQ(a.send(std::uint64_t{9}), SendResult::ok);
    sent += static_cast<std::uint64_t>(burst);
    const PipeStats s = pipe_stats(SegmentView::open(g.name()));
    EXPECT_EQ(s.rings[1].messages_sent, sent);
    EXPECT_EQ(s.rings[1].bytes_sent, 8 * sent);
    EXPECT_GE(s.rings[1].depth_bytes, 16 * static_cast<std::uint64_t>(burst));
    for (int i = 0; i < burst; ++i) EXPECT_EQ(b.recv<std::uint64_t>(), 9u);
  }
  // A message larger than the fast path takes (fragments) counts once.
  std::vector<std::byte> big(PipeOptions{}.capacity, std::byte{1});
  std::thread rx([&b] { EXPECT_EQ(b.recv_bytes().size(), PipeOptions{}.capacity); });
  ASSERT_EQ(a.send_bytes(big), SendResult::ok);
  rx.join();
  EXPECT_EQ(pipe_stats(SegmentView::open(g.name())).rings[1].messages_sent, sent + 1);
}

// [ring.stats] Each end counts a message with one add to a word of
// counts not yet added to its totals (RingCounts), and adds them when it
// publishes. Over many publications and laps of a small ring, through every
// path that counts (inlined sends and receives of a constant and of a
// run-time size, the general path of a try_ call, a fragmented message,
// peek() and release()), the totals stay exact.
TEST(Pipe, StatisticsStayExactThroughEveryPathOverManyPublications) {
  SegmentGuard g(unique_name("pipe-count-paths"));
  PipeOptions o;
  o.capacity = 4096;  // a publication every KiB, a lap every 4
  auto [a, b] = Pipe(g.name(), o);
  const std::vector<std::byte> mid(40, std::byte{2});
  const std::vector<std::byte> big(3000, std::byte{3});  // fragments: frames of 1 KiB at most
  std::uint64_t messages = 0, bytes = 0;
  std::vector<std::byte> buf(64);
  std::size_t n = 0;
  for (int round = 0; round < 200; ++round) {
    for (int i = 0; i < round % 7; ++i) ASSERT_EQ(a.send(std::uint64_t{1}), SendResult::ok);
    ASSERT_EQ(a.send_bytes(mid), SendResult::ok);
    ASSERT_EQ(a.try_send(std::uint32_t{4}), SendResult::ok);  // the general path
    messages += static_cast<std::uint64_t>(round % 7) + 2;
    bytes += 8 * static_cast<std::uint64_t>(round % 7) + 40 + 4;
    if (round % 50 == 0) {
      ASSERT_EQ(a.send_bytes(big), SendResult::ok);
      ++messages;
      bytes += big.size() + 8;  // and the total its first fragment carries
    }
    const PipeStats sent = pipe_stats(SegmentView::open(g.name()));
    ASSERT_EQ(sent.rings[1].messages_sent, messages) << "round " << round;
    ASSERT_EQ(sent.rings[1].bytes_sent, bytes) << "round " << round;

    for (int i = 0; i < round % 7; ++i) ASSERT_EQ(b.recv<std::uint64_t>(), 1u);
    ASSERT_EQ(b.recv_bytes_into(buf, 0, n), RecvResult::ok);
    ASSERT_EQ(n, mid.size());
    std::span<const std::byte> in;
    ASSERT_EQ(b.peek(in), RecvResult::ok);
    ASSERT_EQ(in.size(), 4u);
    b.release();
    if (round % 50 == 0) {
      ASSERT_EQ(b.recv_bytes().size(), big.size());
    }
    ASSERT_EQ(b.try_recv_bytes_into(buf, 0, n), RecvResult::empty);  // publishes its position
    const PipeStats got = pipe_stats(SegmentView::open(g.name()));
    ASSERT_EQ(got.rings[1].messages_received, messages) << "round " << round;
    ASSERT_EQ(got.rings[1].bytes_received, bytes) << "round " << round;
  }
}

// A moved-from or default-made end refuses every call, also once the pipe
// it came from is gone: its inlined paths test only its rings' limits,
// which the move turns off, and read no memory of the old pipe.
TEST(Pipe, AMovedFromEndRefusesEveryCallAfterItsPipeIsGone) {
  auto [a, b] = Pipe();
  {
    Connection a2 = std::move(a);
    Connection b2 = std::move(b);
    ASSERT_EQ(a2.send(std::uint64_t{5}), SendResult::ok);
    ASSERT_EQ(b2.recv<std::uint64_t>(), 5u);
    ASSERT_EQ(a2.send(std::uint64_t{6}), SendResult::ok);  // left in the ring
  }                                                        // the pipe's segment is unmapped here
  Connection never;
  for (Connection* c : {&a, &b, &never}) {
    const std::byte bytes[8]{};
    EXPECT_EQ(c->send(std::uint64_t{1}), SendResult::closed);
    EXPECT_EQ(c->send_bytes(bytes), SendResult::closed);
    std::uint64_t v = 0;
    EXPECT_EQ(c->recv(v), RecvResult::closed);
    std::byte buf[8];
    std::size_t n = 0;
    EXPECT_EQ(c->recv_bytes_into(buf, 0, n), RecvResult::closed);
  }
}

// A receive after peek() (no release) takes the peeked message, once.
TEST(Pipe, ReceiveAfterAPeekTakesThePeekedMessageOnce) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send(std::uint32_t{1}), SendResult::ok);
  ASSERT_EQ(a.send(std::uint32_t{2}), SendResult::ok);
  std::span<const std::byte> in;
  ASSERT_EQ(b.peek(in), RecvResult::ok);
  EXPECT_EQ(b.recv<std::uint32_t>(), 1u);
  b.release();  // nothing left to release
  EXPECT_EQ(b.recv<std::uint32_t>(), 2u);
  std::uint32_t v = 0;
  std::size_t n = 0;
  EXPECT_EQ(b.try_recv_bytes_into(std::as_writable_bytes(std::span(&v, 1)), 0, n),
            RecvResult::empty);
}

TEST(Pipe, StatisticsOffKeepsCountersAtZeroAndSaysSo) {
  SegmentGuard g(unique_name("pipe-nostats"));
  PipeOptions o;
  o.statistics = false;
  auto [a, b] = Pipe(g.name(), o);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(a.send(std::uint64_t{7}), SendResult::ok);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.recv<std::uint64_t>(), 7u);
  std::byte buf[8];
  std::size_t n = 0;
  EXPECT_EQ(b.try_recv_bytes_into(buf, 0, n), RecvResult::empty);  // publishes its position
  const PipeStats s = pipe_stats(SegmentView::open(g.name()));
  EXPECT_FALSE(s.statistics);
  EXPECT_EQ(s.rings[1].messages_sent, 0u);
  EXPECT_EQ(s.rings[1].bytes_sent, 0u);
  EXPECT_EQ(s.rings[1].messages_received, 0u);
  EXPECT_EQ(s.rings[1].depth_bytes, 0u);  // positions are kept either way
}

}  // namespace
}  // namespace shmbus
