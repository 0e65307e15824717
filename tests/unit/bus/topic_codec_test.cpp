// Topic of codec types (shmbus/codec.hpp): strings, containers and
// MSGPACK_DEFINE structs reach every subscriber (reliable and lossy; the
// forked case is in tests/multiprocess/topic_process_test.cpp); a message that is not a T is
// consumed as decode_error; an encoding above max_message is too_large and publishes nothing; the
// trivially copyable path keeps its bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "shmbus/topic.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

struct Order {
  std::string symbol;
  std::vector<double> prices;
  std::map<std::string, int> tags;
  bool operator==(const Order&) const = default;
  MSGPACK_DEFINE(symbol, prices, tags)
};

Order order(int i) {
  return Order{"SYM" + std::to_string(i),
               std::vector<double>(static_cast<std::size_t>(i % 7), 0.5 * i),
               {{"n", i}, {"odd", i % 2}}};
}

TEST(TopicCodec, StructsReachReliableAndLossySubscribersInOrder) {
  SegmentGuard g(unique_name("tcodec"));
  auto topic = Topic::create<Order>(g.name(), {.slots = 64, .max_message = 512});
  auto rel = topic.subscribe();
  auto lossy = topic.subscribe({.policy = SubscriberPolicy::lossy});
  auto pub = topic.publisher();
  for (int i = 0; i < 40; ++i) ASSERT_EQ(pub.publish(order(i)), PublishResult::ok) << i;
  for (auto* s : {&rel, &lossy}) {
    for (int i = 0; i < 40; ++i) {
      Order o;
      ASSERT_EQ(s->try_recv(o), ReceiveResult::ok) << i;
      EXPECT_EQ(o, order(i));
    }
    Order o;
    EXPECT_EQ(s->try_recv(o), ReceiveResult::empty);
  }
  EXPECT_EQ(encode(order(3)).size() <= 512, true);
}

TEST(TopicCodec, StringsAndContainersTravelWithTheirShape) {
  SegmentGuard g(unique_name("tcodec"));
  auto topic = Topic::create<std::vector<std::string>>(g.name(), {.max_message = 1024});
  auto sub = topic.subscribe();
  auto pub = topic.publisher();
  const std::vector<std::string> words{"", "a", std::string(300, 'z'), "end"};
  ASSERT_EQ(pub.publish(words), PublishResult::ok);
  ASSERT_EQ(pub.try_publish(std::vector<std::string>{}), PublishResult::ok);
  ASSERT_EQ(pub.publish_for(std::vector<std::string>{"x"}, 1s), PublishResult::ok);
  std::vector<std::string> got;
  ASSERT_EQ(sub.recv(got), ReceiveResult::ok);
  EXPECT_EQ(got, words);
  ASSERT_EQ(sub.try_recv(got), ReceiveResult::ok);
  EXPECT_TRUE(got.empty());
  ASSERT_EQ(sub.recv_for(got, 1s), ReceiveResult::ok);
  EXPECT_EQ(got, std::vector<std::string>{"x"});
  EXPECT_EQ(sub.recv_for(got, 1ms), ReceiveResult::timeout);

  // std::string is its bytes (the codec's bytes format): what a byte
  // subscriber reads is exactly the characters.
  SegmentGuard g2(unique_name("tcodec"));
  auto strings = Topic::create<std::string>(g2.name(), {.max_message = 64});
  auto s2 = strings.subscribe();
  auto p2 = strings.publisher();
  ASSERT_EQ(p2.publish(std::string("hello")), PublishResult::ok);
  ASSERT_EQ(p2.publish(std::string()), PublishResult::ok);
  std::vector<std::byte> raw;
  ASSERT_EQ(s2.recv(raw), ReceiveResult::ok);
  ASSERT_EQ(raw.size(), 5u);
  EXPECT_EQ(std::memcmp(raw.data(), "hello", 5), 0);
  std::string s = "stale";
  ASSERT_EQ(s2.try_recv(s), ReceiveResult::ok);
  EXPECT_EQ(s, "");
}

TEST(TopicCodec, MessageThatIsNotATIsConsumedAsDecodeError) {
  SegmentGuard g(unique_name("tcodec"));
  auto topic = Topic::create<Order>(g.name(), {.max_message = 256});
  auto sub = topic.subscribe();
  auto pub = topic.publisher();
  const std::byte junk[] = {std::byte{0xc1}, std::byte{0x00}};  // 0xc1: never valid msgpack
  ASSERT_EQ(pub.publish(std::span<const std::byte>(junk)), PublishResult::ok);
  ASSERT_EQ(pub.publish(std::vector<int>{1, 2}), PublishResult::ok);  // another shape
  ASSERT_EQ(pub.publish(order(5)), PublishResult::ok);
  Order o;
  EXPECT_EQ(sub.try_recv(o), ReceiveResult::decode_error);
  EXPECT_FALSE(detail::last_decode_error().empty());
  EXPECT_EQ(sub.try_recv(o), ReceiveResult::decode_error);
  ASSERT_EQ(sub.try_recv(o), ReceiveResult::ok);  // the stream goes on
  EXPECT_EQ(o, order(5));
  EXPECT_EQ(sub.received(), 3u);
  EXPECT_EQ(to_string(ReceiveResult::decode_error), "decode_error");
}

TEST(TopicCodec, EncodingAboveMaxMessageIsTooLargeAndPublishesNothing) {
  SegmentGuard g(unique_name("tcodec"));
  auto topic = Topic::create<std::vector<int>>(g.name(), {.max_message = 32});
  auto sub = topic.subscribe();
  auto pub = topic.publisher();
  EXPECT_EQ(pub.publish(std::vector<int>(100, 7)), PublishResult::too_large);
  EXPECT_EQ(pub.try_publish(std::vector<int>(100, 7)), PublishResult::too_large);
  EXPECT_EQ(pub.published(), 0u);
  ASSERT_EQ(pub.publish(std::vector<int>{1, 2, 3}), PublishResult::ok);
  std::vector<int> v;
  ASSERT_EQ(sub.try_recv(v), ReceiveResult::ok);
  EXPECT_EQ(v, (std::vector<int>{1, 2, 3}));
}

TEST(TopicCodec, TriviallyCopyableKeepsItsBytesAndAWrongSizeStays) {
  struct Tick {
    std::uint64_t seq;
    double price;
  };
  static_assert(noexcept(std::declval<Publisher&>().publish(Tick{})));
  static_assert(noexcept(std::declval<Subscriber&>().recv(std::declval<Tick&>())));
  SegmentGuard g(unique_name("tcodec"));
  auto topic = Topic::create<Tick>(g.name());
  auto sub = topic.subscribe();
  auto pub = topic.publisher();
  ASSERT_EQ(pub.publish(Tick{7, 1.25}), PublishResult::ok);
  std::vector<std::byte> raw;
  ASSERT_EQ(sub.recv(raw), ReceiveResult::ok);
  ASSERT_EQ(raw.size(), sizeof(Tick));  // its object bytes, no header
  Tick t{};
  std::memcpy(&t, raw.data(), sizeof t);
  EXPECT_EQ(t.seq, 7u);
  ASSERT_EQ(pub.publish(std::string_view("abc")), PublishResult::ok);
  EXPECT_EQ(sub.try_recv(t), ReceiveResult::size_mismatch);
  EXPECT_EQ(sub.try_recv(t), ReceiveResult::size_mismatch);  // it stays
  std::string s;
  ASSERT_EQ(sub.try_recv(s), ReceiveResult::ok);
  EXPECT_EQ(s, "abc");
}

}  // namespace
}  // namespace shmbus
