// Forwarder (bus-bridge's engine) in one process: two Forwarders on two
// threads, joined by a remote Connection over loopback, between two bus
// names. Order and acknowledgement, a full remote queue pausing forwarding
// with memory bounded by the window, a remote queue that appears late;
// topics republished on the other bus, reliable (back-pressure through
// both rings and the window) and lossy (never holding the publisher, every
// source message either delivered or counted as a gap).
#include "shmbus/bridge/forwarder.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "shmbus/bridge/remote.hpp"
#include "shmbus/bridge/status.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/topic.hpp"
#include "test_support.hpp"

namespace sb = shmbus::bridge;
using namespace std::chrono_literals;
using shmbus::PublishResult;
using shmbus::QueueResult;
using shmbus::ReceiveResult;
using shmbus::test::SeqMsg;

namespace {

// Two forwarders running over one connection until destroyed.
struct Link {
  std::string u = shmbus::test::unique_name("fw");
  std::string bus_a = u + "-a";
  std::string bus_b = u + "-b";
  std::string name_a = u + "-fa";
  std::string name_b = u + "-fb";
  shmbus::test::SegmentGuard guard;
  sb::KeyPair ks = sb::KeyPair::generate();
  sb::KeyPair kc = sb::KeyPair::generate();
  std::optional<sb::Listener> listener;
  sb::Connection client;
  sb::Connection server;
  std::optional<sb::Forwarder> fa;
  std::optional<sb::Forwarder> fb;
  std::atomic<bool> stop{false};
  std::thread ta;
  std::thread tb;

  Link() {
    guard.add(bus_a + ".orders");
    guard.add(bus_b + ".orders");
    guard.add(name_a + ".out.orders");
    guard.add(name_b + ".in." + name_a + ".orders");
    guard.add(name_a + ".bridge");
    guard.add(name_b + ".bridge");
    guard.add(bus_a + ".ticks");
    guard.add(bus_b + ".ticks");
    guard.add(name_b + ".tin." + name_a + ".ticks");
  }
  void start(std::size_t window, std::vector<std::string> queues = {"orders"},
             std::vector<sb::TopicForward> topics = {}) {
    listener.emplace("tcp://127.0.0.1:0",
                     sb::ListenerOptions{.key = ks, .allowed_clients = {kc.public_key}});
    std::thread t([&] {
      client = sb::Client(listener->endpoint(), {.key = kc, .server_key = ks.public_key}, 10s);
    });
    server = listener->accept();
    t.join();
    fa.emplace(sb::ForwarderOptions{.name = name_a,
                                    .bus = bus_a,
                                    .queues = std::move(queues),
                                    .topics = std::move(topics),
                                    .window = window});
    fb.emplace(sb::ForwarderOptions{.name = name_b, .bus = bus_b});
    ta = std::thread([&] { (void)fa->run(client, stop); });
    tb = std::thread([&] { (void)fb->run(server, stop); });
  }
  ~Link() {
    stop = true;
    if (ta.joinable()) ta.join();
    if (tb.joinable()) tb.join();
  }
  [[nodiscard]] std::uint64_t in_flight() const {
    return sb::read_outbox(name_a, "orders").in_flight;
  }
  [[nodiscard]] sb::InboundStats ticks_in() const {
    return sb::read_topic_inbox(name_b, name_a, "ticks");
  }
  // The topic bridge B made on bus B for A's "ticks" (once its hello came).
  [[nodiscard]] shmbus::Topic remote_ticks() const {
    std::optional<shmbus::Topic> t;
    EXPECT_TRUE(shmbus::test::poll_until([&] {
      try {
        t = shmbus::Topic::open<SeqMsg>(bus_b + ".ticks");
        return true;
      } catch (const shmbus::Error&) {
        return false;
      }
    }));
    return t ? *t : shmbus::Topic{};
  }
};

void expect_in_order(shmbus::Queue<SeqMsg>& q, std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) {
    SeqMsg m{};
    ASSERT_EQ(q.get_for(m, 20s), QueueResult::ok) << "message " << i;
    ASSERT_EQ(m.seq, i);
    ASSERT_EQ(m.check, shmbus::test::checksum(m.producer, m.seq));
  }
}

// Publishes messages from..n-1 on one thread while `sub` (on the other
// bus) must receive 0..n-1 in order, each checksum intact.
void publish_and_expect_in_order(shmbus::Publisher& pub, shmbus::Subscriber& sub,
                                 std::uint32_t from, std::uint32_t n) {
  std::thread producer([&] {
    for (std::uint32_t i = from; i < n; ++i)
      ASSERT_EQ(pub.publish_for(SeqMsg{0, i, shmbus::test::checksum(0, i)}, 20s),
                PublishResult::ok);
  });
  for (std::uint32_t i = 0; i < n; ++i) {
    SeqMsg m{};
    const ReceiveResult r = sub.recv_for(m, 20s);
    EXPECT_EQ(r, ReceiveResult::ok) << "message " << i;
    EXPECT_EQ(m.seq, i);
    EXPECT_EQ(m.check, shmbus::test::checksum(0, i));
    if (r != ReceiveResult::ok || m.seq != i) break;
  }
  producer.join();
}

}  // namespace

TEST(Forwarder, DeliversInOrderAndIsAcknowledged) {
  Link l;
  auto src = shmbus::Queue<SeqMsg>::create(l.bus_a + ".orders", {.capacity = 256});
  auto dst = shmbus::Queue<SeqMsg>::create(l.bus_b + ".orders", {.capacity = 256});
  l.start(64);
  const std::uint32_t n = 5000;
  std::thread producer([&] {
    for (std::uint32_t i = 0; i < n; ++i)
      ASSERT_EQ(src.put(SeqMsg{0, i, shmbus::test::checksum(0, i)}), QueueResult::ok);
  });
  expect_in_order(dst, n);
  producer.join();
  EXPECT_TRUE(shmbus::test::poll_until([&] { return l.in_flight() == 0; }));
  EXPECT_EQ(sb::read_outbox(l.name_a, "orders").acked, n);
  EXPECT_EQ(sb::read_inbox(l.name_b, l.name_a, "orders").applied, n);
  SeqMsg extra{};
  EXPECT_EQ(dst.try_get(extra), QueueResult::empty);  // nothing twice
  // What bus-inspector shows of both bridges (published when idle).
  ASSERT_TRUE(shmbus::test::poll_until([&] {
    const auto a = sb::read_status(l.name_a);
    return a.channels.size() == 1 && a.channels[0].acked == n;
  }));
  const sb::BridgeStatus a = sb::read_status(l.name_a);
  EXPECT_EQ(a.link, sb::LinkState::ready);
  EXPECT_EQ(a.peer, l.name_b);
  EXPECT_EQ(a.links, 1u);
  EXPECT_NE(a.last_rx_ns, 0u);
  EXPECT_TRUE(a.channels[0].outbound);
  EXPECT_EQ(a.channels[0].messages, n);
  EXPECT_EQ(a.channels[0].in_flight, 0u);
  ASSERT_TRUE(shmbus::test::poll_until([&] {
    const auto b = sb::read_status(l.name_b);
    return b.channels.size() == 1 && b.channels[0].messages == n;
  }));
  const sb::BridgeStatus b = sb::read_status(l.name_b);
  EXPECT_EQ(b.peer, l.name_a);
  EXPECT_FALSE(b.channels[0].outbound);
  EXPECT_EQ(b.channels[0].name, "orders");
  const auto stats = sb::bridge_object_stats(shmbus::SegmentView::open(l.name_a + ".bridge"));
  EXPECT_TRUE(stats.problems.empty());
  EXPECT_NE(std::find(stats.counters.begin(), stats.counters.end(),
                      std::pair<std::string, std::uint64_t>{"out.orders.sent", n}),
            stats.counters.end());
}

TEST(Forwarder, AFullRemoteQueuePausesWithinTheWindow) {
  Link l;
  auto src = shmbus::Queue<SeqMsg>::create(l.bus_a + ".orders", {.capacity = 512});
  auto dst = shmbus::Queue<SeqMsg>::create(l.bus_b + ".orders", {.capacity = 4});
  const std::size_t window = 16;
  l.start(window);
  const std::uint32_t n = 300;
  for (std::uint32_t i = 0; i < n; ++i)
    ASSERT_EQ(src.put(SeqMsg{0, i, shmbus::test::checksum(0, i)}), QueueResult::ok);
  // Nobody reads bus B: the bridge fills its queue, holds at most a window
  // of unacknowledged messages, and leaves the rest in the source queue.
  // Settled: the queue full and acknowledged, a window taken beyond it.
  ASSERT_TRUE(shmbus::test::poll_until(
      [&] { return dst.full() && src.qsize() == n - dst.capacity() - window; }));
  EXPECT_EQ(l.in_flight(), window);
  EXPECT_EQ(sb::read_outbox(l.name_a, "orders").acked, dst.capacity());
  // The backlog as bus-inspector shows it.
  EXPECT_TRUE(shmbus::test::poll_until([&] {
    const auto s = sb::read_status(l.name_a);
    return s.channels.size() == 1 && s.channels[0].in_flight == window;
  }));
  expect_in_order(dst, n);  // reading resumes the flow, in order
  EXPECT_TRUE(shmbus::test::poll_until([&] { return l.in_flight() == 0; }));
}

TEST(Forwarder, WaitsForARemoteQueueThatAppearsLate) {
  Link l;
  auto src = shmbus::Queue<SeqMsg>::create(l.bus_a + ".orders", {.capacity = 64});
  l.start(8);
  for (std::uint32_t i = 0; i < 20; ++i)
    ASSERT_EQ(src.put(SeqMsg{0, i, shmbus::test::checksum(0, i)}), QueueResult::ok);
  ASSERT_TRUE(shmbus::test::poll_until([&] { return l.in_flight() == 8; }));
  auto dst = shmbus::Queue<SeqMsg>::create(l.bus_b + ".orders", {.capacity = 64});
  expect_in_order(dst, 20);
}

TEST(Forwarder, ARemoteQueueOfAnotherTypeIsNotFed) {
  Link l;
  auto src = shmbus::Queue<SeqMsg>::create(l.bus_a + ".orders", {.capacity = 64});
  auto dst = shmbus::Queue<int>::create(l.bus_b + ".orders", {.capacity = 64});
  l.start(8);
  for (std::uint32_t i = 0; i < 20; ++i)
    ASSERT_EQ(src.put(SeqMsg{0, i, shmbus::test::checksum(0, i)}), QueueResult::ok);
  // The window fills and stays unacknowledged: nothing lands in the int queue.
  ASSERT_TRUE(shmbus::test::poll_until([&] { return l.in_flight() == 8; }));
  int v = 0;
  EXPECT_EQ(dst.get_for(v, 100ms), QueueResult::timed_out);
}

TEST(Forwarder, AMissingLocalQueueIsASetupError) {
  const std::string u = shmbus::test::unique_name("fw");
  EXPECT_EQ(shmbus::test::code_of(
                [&] { sb::Forwarder f{{.name = u, .bus = u + "-a", .queues = {"nope"}}}; }),
            shmbus::Errc::not_found);
}

TEST(Forwarder, RepublishesATopicForRemoteSubscribersInOrder) {
  Link l;
  auto src = shmbus::Topic::create<SeqMsg>(l.bus_a + ".ticks", {.slots = 64});
  auto pub = src.publisher();
  l.start(32, {}, {{"ticks", shmbus::SubscriberPolicy::reliable}});
  // Made by bridge B with A's geometry and type.
  shmbus::Topic dst = l.remote_ticks();
  EXPECT_EQ(dst.slots(), 64u);
  auto sub = dst.subscribe({.policy = shmbus::SubscriberPolicy::reliable});
  const std::uint32_t n = 3000;
  publish_and_expect_in_order(pub, sub, 0, n);
  EXPECT_EQ(sub.missed(), 0u);
  EXPECT_TRUE(shmbus::test::poll_until([&] { return l.ticks_in().applied == n; }));
  EXPECT_EQ(l.ticks_in().gaps, 0u);
  SeqMsg extra{};
  EXPECT_EQ(sub.try_recv(extra), ReceiveResult::empty);  // nothing twice
  EXPECT_TRUE(shmbus::test::poll_until([&] {
    const auto a = sb::read_status(l.name_a);
    return a.channels.size() == 1 && a.channels[0].topic && a.channels[0].acked == n &&
           a.channels[0].in_flight == 0;
  }));
}

TEST(Forwarder, AReliableTopicHoldsThePublisherThroughBothRingsAndTheWindow) {
  Link l;
  const std::uint32_t slots = 8;
  const std::size_t window = 16;
  auto src = shmbus::Topic::create<SeqMsg>(l.bus_a + ".ticks", {.slots = slots});
  auto pub = src.publisher();
  l.start(window, {}, {{"ticks", shmbus::SubscriberPolicy::reliable}});
  shmbus::Topic dst = l.remote_ticks();
  auto sub = dst.subscribe({.policy = shmbus::SubscriberPolicy::reliable});
  // Nobody reads on bus B: its ring fills, bridge A holds a window beyond
  // it, A's ring fills behind the bridge's subscription, and the publisher
  // is held: at most both rings and the window were published.
  std::uint32_t published = 0;
  auto fill = [&] {
    while (pub.try_publish(SeqMsg{0, published, shmbus::test::checksum(0, published)}) ==
           PublishResult::ok)
      ++published;
  };
  // Held only once bridge A has a whole window in flight: before that it
  // may still take a frame off A's ring after a fill() found it full.
  ASSERT_TRUE(shmbus::test::poll_until([&] {
    fill();
    const sb::BridgeStatus a = sb::read_status(l.name_a);
    return l.ticks_in().applied == slots && a.channels.size() == 1 &&
           a.channels[0].in_flight == window;
  }));
  fill();
  EXPECT_LE(published, 2 * slots + window);
  EXPECT_EQ(pub.try_publish(SeqMsg{}), PublishResult::full);
  EXPECT_EQ(l.ticks_in().applied, slots);  // B's reliable subscriber holds bridge B
  // Reading on B lets everything through, in order, nothing lost.
  publish_and_expect_in_order(pub, sub, published, 500);
  EXPECT_EQ(l.ticks_in().gaps, 0u);
}

TEST(Forwarder, ALossyTopicNeverHoldsThePublisherAndCountsWhatItMissed) {
  Link l;
  const std::uint32_t slots = 8;
  auto src = shmbus::Topic::create<SeqMsg>(l.bus_a + ".ticks", {.slots = slots});
  auto pub = src.publisher();
  l.start(16, {}, {{"ticks", shmbus::SubscriberPolicy::lossy}});
  shmbus::Topic dst = l.remote_ticks();
  auto sub = dst.subscribe({.policy = shmbus::SubscriberPolicy::reliable});
  // B's reliable subscriber reads nothing yet: the bridge is held there,
  // so its lossy subscription on A is lapped; A's publisher never waits.
  const std::uint32_t n = 2000;
  for (std::uint32_t i = 0; i < n; ++i)
    ASSERT_EQ(pub.try_publish(SeqMsg{0, i, shmbus::test::checksum(0, i)}), PublishResult::ok);
  // Every source message is either delivered (in order, once) or a gap.
  std::uint64_t received = 0;
  std::optional<std::uint32_t> first;
  std::uint32_t last = 0;
  while (last != n - 1) {
    SeqMsg m{};
    ASSERT_EQ(sub.recv_for(m, 20s), ReceiveResult::ok) << "after " << received;
    ASSERT_EQ(m.check, shmbus::test::checksum(0, m.seq));
    if (first) {
      ASSERT_GT(m.seq, last);
    }
    if (!first) first = m.seq;
    last = m.seq;
    ++received;
  }
  EXPECT_TRUE(shmbus::test::poll_until([&] {
    return received + l.ticks_in().gaps == n;  // the bridge subscribed before message 0
  })) << "received "
      << received << " gaps " << l.ticks_in().gaps << " first " << *first;
  EXPECT_GT(l.ticks_in().gaps, 0u);
  EXPECT_LT(received, n);
}

TEST(Forwarder, AMissingLocalTopicIsASetupError) {
  const std::string u = shmbus::test::unique_name("fw");
  EXPECT_EQ(shmbus::test::code_of(
                [&] { sb::Forwarder f{{.name = u, .bus = u + "-a", .topics = {{"nope"}}}}; }),
            shmbus::Errc::not_found);
}
