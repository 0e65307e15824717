// Queue<T>, SimpleQueue<T>, JoinableQueue<T> of codec types: messages from
// 0 B to far beyond a slot (the heap), capacity in messages and bytes,
// decode errors, and the trivially copyable path left as it was.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/queue.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

static_assert(std::is_base_of_v<detail::TypedQueue<long>, Queue<long>>);
static_assert(std::is_base_of_v<detail::CodecQueue<std::string>, Queue<std::string>>);

TEST(QueueCodec, StringsOfEverySizeKeepOrder) {
  SegmentGuard g(unique_name("qs"));
  auto q = Queue<std::string>::create(g.name(), {.capacity = 64});
  const std::vector<std::size_t> sizes{0, 1, 16, 64, 239, 240, 241, 4096, 100000, 0, 5};
  std::thread producer([&] {
    for (std::size_t i = 0; i < sizes.size(); ++i)
      ASSERT_EQ(q.put(std::string(sizes[i], static_cast<char>('a' + i))), QueueResult::ok);
  });
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::string s;
    ASSERT_EQ(q.get_for(s, 10s), QueueResult::ok);
    EXPECT_EQ(s, std::string(sizes[i], static_cast<char>('a' + i))) << i;
  }
  producer.join();
  const QueueStats st = q.stats();
  EXPECT_EQ(st.committed, sizes.size());
  EXPECT_EQ(st.delivered, sizes.size());
  EXPECT_EQ(st.heap_in_use, 0u);
}

TEST(QueueCodec, CapacityIsStatedInMessagesAndBytes) {
  SegmentGuard g(unique_name("qc"));
  auto q = Queue<std::string>::create(
      g.name(), {.capacity = 8, .max_message = 120, .max_large_message = 4096, .heap_blocks = 2});
  EXPECT_EQ(q.capacity(), 8u);
  EXPECT_EQ(q.slot_size(), 120u);
  EXPECT_EQ(q.max_message(), 4096u);
  EXPECT_EQ(q.capacity_bytes(), 8u * 120u + 2u * 4096u);
  EXPECT_EQ(q.try_put(std::string(5000, 'x')), QueueResult::too_large);
  // Two large messages fill the heap: a third waits (try_: full).
  ASSERT_EQ(q.try_put(std::string(1000, 'a')), QueueResult::ok);
  ASSERT_EQ(q.try_put(std::string(1000, 'b')), QueueResult::ok);
  EXPECT_EQ(q.try_put(std::string(1000, 'c')), QueueResult::full);
  ASSERT_EQ(q.try_put(std::string(10, 'd')), QueueResult::ok);  // inline still fits
  std::string s;
  ASSERT_EQ(q.get(s), QueueResult::ok);
  EXPECT_EQ(s, std::string(1000, 'a'));
  ASSERT_EQ(q.try_put(std::string(1000, 'c')), QueueResult::ok);
}

TEST(QueueCodec, ContainersAndOpenByName) {
  SegmentGuard g(unique_name("qm"));
  using Dict = std::map<std::string, std::vector<int>>;
  auto q = Queue<Dict>::create(g.name());
  Queue<Dict> other(g.name());
  const Dict d{{"a", {1, 2}}, {"b", {}}};
  ASSERT_EQ(q.put(d), QueueResult::ok);
  Dict got;
  ASSERT_EQ(other.get(got), QueueResult::ok);
  EXPECT_EQ(got, d);
  EXPECT_EQ(other.try_get(got), QueueResult::empty);
  EXPECT_EQ(other.get_for(got, 1ms), QueueResult::timed_out);
  // Another payload type is refused at open.
  EXPECT_EQ(test::code_of([&] { Queue<std::vector<int>> wrong(g.name()); }), Errc::wrong_type);
}

TEST(QueueCodec, UndecodableMessageIsDecodeErrorAndTheQueueGoesOn) {
  SegmentGuard g(unique_name("qd"));
  auto q = Queue<std::vector<int>>::create(g.name());
  // A buggy or hostile producer writes bytes that are no msgpack array
  // (an array32 header announcing 2^32-1 elements) straight into the core.
  auto core = detail::QueueCore::open(g.name(), ObjectKind::queue,
                                      detail::type_tag<std::vector<int>>(), {});
  const std::byte junk[] = {std::byte{0xdd}, std::byte{0xff}, std::byte{0xff}, std::byte{0xff},
                            std::byte{0xff}};
  ASSERT_EQ(core.put(junk, nullptr, true), QueueResult::ok);
  ASSERT_EQ(q.put(std::vector<int>{7}), QueueResult::ok);
  std::vector<int> v;
  EXPECT_EQ(q.get(v), QueueResult::decode_error);
  EXPECT_FALSE(detail::last_decode_error().empty());
  ASSERT_EQ(q.get(v), QueueResult::ok);
  EXPECT_EQ(v, std::vector<int>{7});
}

TEST(QueueCodec, SimpleAndJoinableQueuesCarryStrings) {
  SegmentGuard g1(unique_name("sq")), g2(unique_name("jq"));
  auto sq = SimpleQueue<std::string>::create(g1.name());
  ASSERT_EQ(sq.put("Item 3"), QueueResult::ok);
  std::string s;
  ASSERT_EQ(sq.get(s), QueueResult::ok);
  EXPECT_EQ(s, "Item 3");
  EXPECT_TRUE(sq.empty());

  auto jq = JoinableQueue<std::vector<std::string>>::create(g2.name());
  ASSERT_EQ(jq.put({"a", "b"}), QueueResult::ok);
  std::vector<std::string> v;
  ASSERT_EQ(jq.get(v), QueueResult::ok);
  EXPECT_EQ(v, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(jq.join_for(0ms));
  ASSERT_EQ(jq.task_done(), QueueResult::ok);
  EXPECT_TRUE(jq.join_for(1s));
}

}  // namespace
}  // namespace shmbus
