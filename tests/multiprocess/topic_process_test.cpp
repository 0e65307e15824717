// Topic between real processes: subscribers in other processes receive
// every message (reliable) or an exactly counted subset (lossy); a dead
// reliable subscriber is evicted and never blocks the publisher; a dead
// publisher's subscribers get everything it committed, then
// publisher_dead, and a new publisher takes over (also after dying in the
// middle of a loan); handles inherited across fork take their role over;
// codec structs reach a subscriber in another process.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/topic.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::poll_until;
using test::SegmentGuard;
using test::unique_name;
using test::wait_child;

std::size_t live_subscribers(const std::string& name) {
  return topic_stats(SegmentView::open(name)).subscribers.size();
}

TEST(TopicProcess, SubscribersInOtherProcessesReceiveEverything) {
  SegmentGuard g(unique_name("topic"));
#if defined(SHMBUS_SANITIZED)
  constexpr std::uint64_t kCount = 20000;
#else
  constexpr std::uint64_t kCount = 200000;
#endif
  auto topic = Topic::create<std::uint64_t>(g.name(), {.slots = 256});
  std::vector<pid_t> kids;
  for (int k = 0; k < 3; ++k) {
    const bool lossy = k == 2;
    kids.push_back(fork_child([&, lossy] {
      auto t = Topic::open<std::uint64_t>(g.name());
      auto sub =
          t.subscribe({.policy = lossy ? SubscriberPolicy::lossy : SubscriberPolicy::reliable});
      std::uint64_t v = 0, expect = 0, gaps = 0;
      for (;;) {
        const ReceiveResult r = sub.recv_for(v, 30s);
        if (r == ReceiveResult::eof) break;
        if (r != ReceiveResult::ok) return 2;
        if (v < expect || (!lossy && v != expect)) return 3;
        gaps += v - expect;
        expect = v + 1;
      }
      if (expect != kCount || gaps != sub.missed()) return 4;
      return sub.received() + sub.missed() == kCount ? 0 : 5;
    }));
  }
  ASSERT_TRUE(poll_until([&] { return live_subscribers(g.name()) == 3; }));
  auto pub = topic.publisher();
  for (std::uint64_t i = 0; i < kCount; ++i) ASSERT_EQ(pub.publish_for(i, 30s), PublishResult::ok);
  pub.close();
  for (pid_t k : kids) {
    const auto st = wait_child(k, 60s);
    EXPECT_TRUE(st.exited && st.code == 0) << "child " << k << " code " << st.code;
  }
}

TEST(TopicProcess, DeadReliableSubscriberIsEvictedAndNeverBlocksThePublisher) {
  SegmentGuard g(unique_name("topic"));
  auto topic = Topic::create<std::uint64_t>(g.name(), {.slots = 8});
  const pid_t kid = fork_child([&] {
    auto sub = Topic::open<std::uint64_t>(g.name()).subscribe();
    ::raise(SIGKILL);  // dies holding a reliable record at position 0
    return 0;
  });
  const auto st = wait_child(kid);
  ASSERT_EQ(st.signal, SIGKILL);
  ASSERT_EQ(live_subscribers(g.name()), 1u);  // the dead one's record
  auto pub = topic.publisher();
  for (std::uint64_t i = 0; i < 32; ++i) ASSERT_EQ(pub.publish_for(i, 10s), PublishResult::ok);
  const TopicStats s = topic_stats(SegmentView::open(g.name()));
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(s.subscribers.size(), 0u);
  EXPECT_GE(s.blocked_publishes, 1u);
  EXPECT_EQ(s.reliable_marked, 0u);  // [topic.reliable] its mark went with it
}

// [topic.reliable] A reliable subscriber killed between marking its
// record and saying it is reliable leaves a mark on a record that holds
// nothing back: the publisher frees that record at its next scan (so it
// stops reading it every ring), counting no eviction, and never waits.
void die_at_join(detail::FaultPoint p) noexcept {
  if (p == detail::FaultPoint::subscribe_claimed) ::raise(SIGKILL);
}

TEST(TopicProcess, SubscriberKilledMidJoinLeavesNoMarkBehind) {
  SegmentGuard g(unique_name("topic"));
  auto topic = Topic::create<std::uint64_t>(g.name(), {.slots = 8});
  const pid_t kid = fork_child([&] {
    detail::set_fault_hook(&die_at_join);
    auto sub = Topic::open<std::uint64_t>(g.name()).subscribe();
    return 1;  // not reached
  });
  const auto st = wait_child(kid);
  ASSERT_EQ(st.signal, SIGKILL);
  ASSERT_EQ(topic_stats(SegmentView::open(g.name())).reliable_marked, 1u);
  auto pub = topic.publisher();  // its first scan finds the dead mark
  for (std::uint64_t i = 0; i < 20; ++i) ASSERT_EQ(pub.try_publish(i), PublishResult::ok);
  const TopicStats s = topic_stats(SegmentView::open(g.name()));
  EXPECT_EQ(s.reliable_marked, 0u);
  EXPECT_EQ(s.evictions, 0u);  // it never was reliable
  EXPECT_EQ(s.blocked_publishes, 0u);
  auto sub = topic.subscribe();  // a live reliable subscriber is marked again
  EXPECT_EQ(topic_stats(SegmentView::open(g.name())).reliable_marked, 1u);
}

TEST(TopicProcess, DeadPublisherDeliversWhatItCommittedThenIsReplaced) {
  SegmentGuard g(unique_name("topic"));
  auto topic = Topic::create<std::uint64_t>(g.name(), {.slots = 256});
  auto sub = topic.subscribe();
  const pid_t kid = fork_child([&] {
    auto pub = Topic::open<std::uint64_t>(g.name()).publisher();
    for (std::uint64_t i = 0; i < 100; ++i)
      if (pub.publish(i) != PublishResult::ok) return 2;
    auto slot = pub.loan(8);  // dies half way through message 100
    std::memset(slot.data(), 0xee, 4);
    ::raise(SIGKILL);
    return 0;
  });
  std::uint64_t v = 0;
  for (std::uint64_t i = 0; i < 100; ++i) {
    ASSERT_EQ(sub.recv_for(v, 10s), ReceiveResult::ok);
    ASSERT_EQ(v, i);
  }
  EXPECT_EQ(sub.recv_for(v, 10s), ReceiveResult::publisher_dead);
  EXPECT_EQ(wait_child(kid).signal, SIGKILL);
  auto pub = topic.publisher();  // takes over from the dead one
  ASSERT_EQ(pub.publish(std::uint64_t{100}), PublishResult::ok);
  ASSERT_EQ(sub.recv_for(v, 10s), ReceiveResult::ok);
  EXPECT_EQ(v, 100u);
  EXPECT_EQ(pub.published(), 101u);
  EXPECT_EQ(topic_stats(SegmentView::open(g.name())).takeovers, 1u);
}

TEST(TopicProcess, HandlesInheritedAcrossForkTakeTheirRoleOver) {
  SegmentGuard g(unique_name("topic"));
  auto topic = Topic::create<std::uint64_t>(g.name());
  auto pub = topic.publisher();
  auto sub = topic.subscribe();
  auto child_sub = topic.subscribe();
  const pid_t reader = fork_child([&] {
    std::uint64_t v = 0;
    for (std::uint64_t i = 0; i < 10; ++i)
      if (child_sub.recv_for(v, 10s) != ReceiveResult::ok || v != i) return 2;
    return child_sub.recv_for(v, 10s) == ReceiveResult::eof ? 0 : 3;
  });
  const pid_t writer = fork_child([&] {
    for (std::uint64_t i = 0; i < 10; ++i)
      if (pub.publish(i) != PublishResult::ok) return 2;
    pub.close();
    return 0;
  });
  std::uint64_t v = 0;
  for (std::uint64_t i = 0; i < 10; ++i) {
    ASSERT_EQ(sub.recv_for(v, 10s), ReceiveResult::ok);
    EXPECT_EQ(v, i);
  }
  EXPECT_EQ(sub.recv_for(v, 10s), ReceiveResult::eof);
  const auto w = wait_child(writer);
  EXPECT_TRUE(w.exited && w.code == 0);
  const auto r = wait_child(reader);
  EXPECT_TRUE(r.exited && r.code == 0) << r.code;
}

// A codec struct (MessagePack through shmbus/codec.hpp).
struct Quote {
  std::string venue;
  std::map<std::string, std::vector<double>> book;
  bool operator==(const Quote&) const = default;
  MSGPACK_DEFINE(venue, book)
};
Quote quote(int i) {
  return Quote{std::string(static_cast<std::size_t>(i % 5), 'v'), {{"bid", {1.0 * i}}}};
}

TEST(TopicProcess, CodecStructsReachASubscriberInAnotherProcess) {
  SegmentGuard g(unique_name("tcodec"));
  auto topic = Topic::create<Quote>(g.name(), {.slots = 16, .max_message = 512});
  const std::string name = g.name();
  // The child subscribes before the parent publishes: a handshake topic
  // says it is ready.
  SegmentGuard ready(unique_name("tcodecready"));
  auto ready_topic = Topic::create<int>(ready.name());
  auto ready_sub = ready_topic.subscribe();
  const pid_t child = fork_child([&] {
    auto sub = Topic::open<Quote>(name).subscribe();
    auto ack = Topic::open<int>(ready.name()).publisher();
    if (ack.publish(1) != PublishResult::ok) return 1;
    for (int i = 0; i < 200; ++i) {
      Quote o;
      if (sub.recv_for(o, 20s) != ReceiveResult::ok) return 2;
      if (!(o == quote(i))) return 3;
    }
    return 0;
  });
  int one = 0;
  ASSERT_EQ(ready_sub.recv_for(one, 20s), ReceiveResult::ok);
  auto pub = topic.publisher();
  for (int i = 0; i < 200; ++i) ASSERT_EQ(pub.publish_for(quote(i), 20s), PublishResult::ok);
  const auto st = wait_child(child, 30s);
  EXPECT_EQ(st.code, 0);
}

}  // namespace
}  // namespace shmbus
