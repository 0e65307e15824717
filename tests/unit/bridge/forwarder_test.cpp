// Forwarder (bus-bridge's engine) in one process: two Forwarders on two
// threads, joined by a remote Connection over loopback, between two bus
// names. Order and acknowledgement, a full remote queue pausing forwarding
// with memory bounded by the window, a remote queue that appears late.
#include "shmbus/bridge/forwarder.hpp"

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "shmbus/bridge/remote.hpp"
#include "shmbus/queue.hpp"
#include "test_support.hpp"

namespace sb = shmbus::bridge;
using namespace std::chrono_literals;
using shmbus::QueueResult;
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
  }
  void start(std::size_t window) {
    listener.emplace("tcp://127.0.0.1:0",
                     sb::ListenerOptions{.key = ks, .allowed_clients = {kc.public_key}});
    std::thread t([&] {
      client = sb::Client(listener->endpoint(), {.key = kc, .server_key = ks.public_key}, 10s);
    });
    server = listener->accept();
    t.join();
    fa.emplace(
        sb::ForwarderOptions{.name = name_a, .bus = bus_a, .queues = {"orders"}, .window = window});
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
};

void expect_in_order(shmbus::Queue<SeqMsg>& q, std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) {
    SeqMsg m{};
    ASSERT_EQ(q.get_for(m, 20s), QueueResult::ok) << "message " << i;
    ASSERT_EQ(m.seq, i);
    ASSERT_EQ(m.check, shmbus::test::checksum(m.producer, m.seq));
  }
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
