// Connection::send/recv of codec types (shmbus/codec.hpp): containers and
// user structs through one frame or many, the try_/_for forms, and a
// message that is not the T asked for (decode_error; the pipe stays usable).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "shmbus/pipe.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;

struct Quote {
  std::string symbol;
  std::vector<double> levels;
  int venue = 0;
  MSGPACK_DEFINE(symbol, levels, venue)
  bool operator==(const Quote&) const = default;
};

TEST(PipeCodec, ContainersAndStructsRoundTrip) {
  auto [a, b] = Pipe();
  const std::vector<int> ints{1, 2, 3};
  const std::map<std::string, std::vector<std::string>> dict{{"k", {"v1", "v2"}}, {"e", {}}};
  const Quote q{"EURUSD", {1, 2, 3, 4, 5, 6, 7, 8}, 3};
  ASSERT_EQ(a.send(ints), SendResult::ok);
  ASSERT_EQ(a.send(dict), SendResult::ok);
  ASSERT_EQ(a.send(q), SendResult::ok);
  ASSERT_EQ(a.send(std::vector<int>{}), SendResult::ok);
  EXPECT_EQ(b.recv<std::vector<int>>(), ints);
  EXPECT_EQ((b.recv<std::map<std::string, std::vector<std::string>>>()), dict);
  Quote got;
  ASSERT_EQ(b.recv(got), RecvResult::ok);
  EXPECT_EQ(got, q);
  EXPECT_TRUE(b.recv<std::vector<int>>().empty());
}

TEST(PipeCodec, StringsAndBytesTravelAsTheirBytes) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send(std::string("Item 3")), SendResult::ok);
  ASSERT_EQ(a.send(std::vector<std::byte>{std::byte{1}, std::byte{2}}), SendResult::ok);
  ASSERT_EQ(a.send(std::string()), SendResult::ok);
  EXPECT_EQ(b.recv<std::string>(), "Item 3");
  EXPECT_EQ(b.recv<std::vector<std::byte>>(), (std::vector<std::byte>{std::byte{1}, std::byte{2}}));
  EXPECT_EQ(b.recv_string(), "");
}

TEST(PipeCodec, MessageLargerThanAFrameIsGatheredAndDecoded) {
  auto [a, b] = Pipe(PipeOptions{.capacity = 4096});
  std::vector<std::string> big;
  for (int i = 0; i < 2000; ++i) big.push_back("item " + std::to_string(i));
  std::thread t([&, &a = a] { ASSERT_EQ(a.send(big), SendResult::ok); });
  EXPECT_EQ(b.recv<std::vector<std::string>>(), big);
  t.join();
}

TEST(PipeCodec, WrongTypeIsDecodeErrorAndThePipeStaysUsable) {
  auto [a, b] = Pipe();
  ASSERT_EQ(a.send(std::vector<std::string>{"not", "ints"}), SendResult::ok);
  ASSERT_EQ(a.send(std::vector<int>{7}), SendResult::ok);
  ASSERT_EQ(a.send(std::string("x")), SendResult::ok);
  try {
    (void)b.recv<std::vector<int>>();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::decode_error);
    EXPECT_EQ(e.object(), b.name());
    EXPECT_NE(e.reason().find("std::vector<int"), std::string::npos) << e.reason();
  }
  EXPECT_EQ(b.recv<std::vector<int>>(), std::vector<int>{7});
  std::map<int, int> m;
  EXPECT_EQ(b.recv(m), RecvResult::decode_error);  // "x" is no msgpack map
  std::vector<int> v;
  EXPECT_EQ(b.try_recv(v), RecvResult::empty);
}

TEST(PipeCodec, TimedAndTryFormsReportLikeTheByteCalls) {
  auto [a, b] = Pipe();
  std::vector<double> v;
  EXPECT_EQ(b.try_recv(v), RecvResult::empty);
  EXPECT_EQ(b.recv_for(v, 1ms), RecvResult::timeout);
  ASSERT_EQ(a.try_send(std::vector<double>{1.5}), SendResult::ok);
  ASSERT_EQ(a.send_for(std::vector<double>{2.5}, 1s), SendResult::ok);
  EXPECT_EQ(b.recv_for(v, 1s), RecvResult::ok);
  EXPECT_EQ(v, std::vector<double>{1.5});
  EXPECT_EQ(b.try_recv(v), RecvResult::ok);
  EXPECT_EQ(v, std::vector<double>{2.5});
  a.close();
  EXPECT_EQ(b.recv(v), RecvResult::eof);
  EXPECT_EQ(test::code_of([&, &b = b] { (void)b.recv<std::vector<double>>(); }), Errc::closed);
}

TEST(PipeCodec, TooLargeForThePipeIsRefusedBeforeSending) {
  auto [a, b] = Pipe(PipeOptions{.capacity = 4096, .max_message = 64});
  EXPECT_EQ(a.send(std::vector<int>(100, 1)), SendResult::too_large);
  ASSERT_EQ(a.send(std::vector<int>{1}), SendResult::ok);
  EXPECT_EQ(b.recv<std::vector<int>>(), std::vector<int>{1});
}

// A codec value is encoded straight into the ring (Connection::send_encoded);
// a small frame that would straddle a cache line moves to the next line's
// start, and one near the ring end, or past the producer's statistics
// point, takes the general path; a value that outgrows the room half way
// finishes in the thread's buffer. Every size from 1 to 60 encoded bytes at
// every 8-byte offset of a line, many times round a 4 KiB ring: each value
// arrives as sent.
TEST(PipeCodec, EncodedInPlaceAtEveryOffsetAndAcrossTheRingEnd) {
  auto [a, b] = Pipe(PipeOptions{.capacity = 4096});
  std::vector<int> got;
  std::string shift;
  for (int round = 0; round < 40; ++round) {
    for (std::size_t n = 0; n < 60; ++n) {
      const std::vector<int> sent(n, static_cast<int>(round * 100 + n) % 128);  // fixints
      ASSERT_EQ(a.send(sent), SendResult::ok);
      ASSERT_EQ(b.recv(got), RecvResult::ok) << round << " " << n;
      ASSERT_EQ(got, sent) << round << " " << n;
      // ~600 B: where the ring end is closer than that, the encoding
      // outgrows the room half way and finishes in the thread's buffer.
      const std::vector<int> large(120, 100000 + round);
      ASSERT_EQ(a.send(large), SendResult::ok);
      ASSERT_EQ(b.recv(got), RecvResult::ok);
      ASSERT_EQ(got, large) << round << " " << n;
      // One byte more each time: the next frame starts 8 bytes further on.
      ASSERT_EQ(a.send_bytes(std::as_bytes(std::span(shift.data(), shift.size() % 9))),
                SendResult::ok);
      ASSERT_EQ(b.recv(shift), RecvResult::ok);
      shift.push_back('x');
    }
  }
}

// A value the ring has no room for now is encoded into the thread's buffer
// and handed to the byte path: try_send reports full and a timed send
// times out, as send_bytes would; once the receiver drained the ring the
// same value goes through intact, behind the ones sent before.
TEST(PipeCodec, ValueWithoutRoomFailsOrTimesOutLikeAByteSend) {
  auto [a, b] = Pipe(PipeOptions{.capacity = 4096});
  const std::vector<std::byte> filler(400);
  int fillers = 0;
  while (a.try_send_bytes(filler) == SendResult::ok) ++fillers;  // full
  const std::vector<int> value(150, 100000);                     // ~750 B encoded: one frame
  EXPECT_EQ(a.try_send(value), SendResult::full);
  EXPECT_EQ(a.send_for(value, 20ms), SendResult::timeout);
  std::vector<std::byte> got;
  for (; fillers > 0; --fillers) ASSERT_EQ(b.recv_bytes(got), RecvResult::ok);
  ASSERT_EQ(a.try_send(value), SendResult::ok);
  EXPECT_EQ(b.recv<std::vector<int>>(), value);
}

}  // namespace
}  // namespace shmbus
