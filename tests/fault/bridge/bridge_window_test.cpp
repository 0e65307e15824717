// The two crash windows of acknowledged forwarding, each hit exactly: a
// bridge process is SIGKILLed by a fault hook at one step of its take
// (the queue's held get, then the outbox) or of its apply (the queue's
// tagged put, then the inbox), restarted without the hook, and every
// message must then arrive exactly once, in order, with counters that say
// what happened (the source queue's `lost` and the inbox's
// `apply_uncertain` stay 0).
//
// The peer bridge runs in this process (the Listener side, on a thread
// that accepts each new connection); the bridge under test is a forked
// child (the Client side), sending (take) or receiving (apply). Every
// child is forked before this process starts a thread (the Listener's
// ZeroMQ threads, the peer bridge) and waits on a pipe until the test
// releases it: GCC 12's ASan allocator is not locked across fork(), so a
// child forked while another thread held it would deadlock in its first
// malloc (seen in CI's ASan run when the children were forked later).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/bridge/forwarder.hpp"
#include "shmbus/bridge/remote.hpp"
#include "shmbus/detail/fault.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/resource_tracker.hpp"
#include "shmbus/segment_info.hpp"
#include "test_support.hpp"

namespace {

namespace sb = shmbus::bridge;
namespace detail = shmbus::detail;
using namespace std::chrono_literals;
using shmbus::QueueResult;
using shmbus::test::SeqMsg;

constexpr std::uint32_t kMessages = 64;

// The child dies at the k-th time it reaches t_point.
detail::FaultPoint t_point{};
int t_countdown = 0;
void kill_at(detail::FaultPoint p) noexcept {
  if (p == t_point && --t_countdown == 0) ::raise(SIGKILL);
}

sb::ForwarderOptions fast(sb::ForwarderOptions o) {
  o.retransmit = 50ms;
  o.heartbeat = 20ms;
  o.peer_timeout = 1000ms;
  return o;
}

// One bridge under test: sending or receiving; dies at the k-th `point`
// if k > 0.
struct Bridge {
  bool sender;
  detail::FaultPoint point = detail::FaultPoint::get_claimed;
  int k = 0;
};

// Threads of this process (entries of /proc/self/task).
std::size_t threads() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

struct Pair {
  std::string u = shmbus::test::unique_name("bw");
  std::string bus_a = u + "-a";
  std::string bus_b = u + "-b";
  std::string name_a = u + "-fa";  // the sending bridge (bus A's orders)
  std::string name_b = u + "-fb";  // the receiving bridge (into bus B's orders)
  shmbus::test::SegmentGuard guard;
  sb::KeyPair ks = sb::KeyPair::generate();
  sb::KeyPair kc = sb::KeyPair::generate();
  std::optional<sb::Listener> listener;
  std::optional<shmbus::Queue<SeqMsg>> src, dst;
  std::atomic<bool> stop{false};
  std::thread peer;
  std::vector<pid_t> children;  // killed at the end if a failed check left one running
  std::vector<int> gates;       // the write end of each child's pipe (-1: released)

  // Forks one gated child per bridge, in that order, then makes the queues
  // and the listener.
  explicit Pair(std::initializer_list<Bridge> bridges) {
    EXPECT_EQ(threads(), 1u) << "a child forked now could inherit a held allocator lock";
    for (const Bridge& b : bridges) fork_gated(b);
    for (const std::string& n :
         {bus_a + ".orders", bus_b + ".orders", name_a + ".out.orders",
          name_b + ".in." + name_a + ".orders", name_a + ".bridge", name_b + ".bridge"})
      guard.add(n);
    src = shmbus::Queue<SeqMsg>::create(bus_a + ".orders", {.capacity = 256});
    dst = shmbus::Queue<SeqMsg>::create(bus_b + ".orders", {.capacity = 256});
    for (std::uint32_t i = 0; i < kMessages; ++i)
      EXPECT_EQ(src->try_put(SeqMsg{0, i, shmbus::test::checksum(0, i)}), QueueResult::ok);
    listener.emplace("tcp://127.0.0.1:0",
                     sb::ListenerOptions{.key = ks, .allowed_clients = {kc.public_key}});
  }
  // The peer bridge here: `sender` (it forwards bus A's orders) or the
  // receiver, serving each connection until a newer one arrives.
  void run_peer(bool sender) {
    peer = std::thread([this, sender] {
      sb::Forwarder f(fast(sender ? sb::ForwarderOptions{.name = name_a,
                                                         .bus = bus_a,
                                                         .queues = {"orders"},
                                                         .window = 8}
                                  : sb::ForwarderOptions{.name = name_b, .bus = bus_b}));
      std::optional<sb::Connection> cur, next;
      while (!stop) {
        if (!cur) cur = listener->accept_for(50ms);
        if (!cur) continue;
        (void)f.run(*cur, stop, [&] { return (next = listener->accept_for(0ms)).has_value(); });
        cur = std::move(next);
        next.reset();
      }
    });
  }
  // The bridge under test in a child, which first reads the listener's
  // endpoint from its pipe (EOF: the test ended without releasing it).
  void fork_gated(const Bridge& b) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    children.push_back(shmbus::test::fork_child([=, this]() -> int {
      ::close(fds[1]);
      // Earlier children's gates too (fork keeps them; only exec closes
      // O_CLOEXEC ends): each child then sees EOF once the test drops its.
      for (const int g : gates)
        if (g >= 0) ::close(g);
      std::string endpoint;
      char ch = 0;
      while (::read(fds[0], &ch, 1) == 1 && ch != '\n') endpoint += ch;
      if (ch != '\n') return 3;
      sb::Connection c = sb::Client(endpoint, {.key = kc, .server_key = ks.public_key}, 10s);
      sb::Forwarder f(fast(b.sender ? sb::ForwarderOptions{.name = name_a,
                                                           .bus = bus_a,
                                                           .queues = {"orders"},
                                                           .window = 8}
                                    : sb::ForwarderOptions{.name = name_b, .bus = bus_b}));
      if (b.k > 0) {
        t_point = b.point;
        t_countdown = b.k;
        detail::set_fault_hook(&kill_at);
      }
      std::atomic<bool> never{false};
      for (;;) (void)f.run(c, never);
    }));
    ::close(fds[0]);
    gates.push_back(fds[1]);
  }
  // Lets child i run; returns its pid.
  pid_t release(std::size_t i) {
    const std::string line = listener->endpoint() + "\n";
    EXPECT_EQ(::write(gates[i], line.data(), line.size()), static_cast<ssize_t>(line.size()));
    ::close(gates[i]);
    gates[i] = -1;
    return children[i];
  }
  ~Pair() {
    for (const int g : gates)
      if (g >= 0) ::close(g);
    for (const pid_t c : children)
      if (::waitpid(c, nullptr, WNOHANG) == 0) {  // still ours and running
        ::kill(c, SIGKILL);
        (void)shmbus::test::wait_child(c, 10s);
      }
    stop = true;
    if (peer.joinable()) peer.join();
  }
};

// Bus B's orders: 0..kMessages-1 once each, in order, then nothing more.
void expect_each_once_in_order(shmbus::Queue<SeqMsg>& q) {
  for (std::uint32_t i = 0; i < kMessages; ++i) {
    SeqMsg m{};
    ASSERT_EQ(q.get_for(m, 20s), QueueResult::ok) << "message " << i;
    ASSERT_EQ(m.seq, i);
    ASSERT_EQ(m.check, shmbus::test::checksum(0, i));
  }
  SeqMsg extra{};
  // The sender retransmits within 50 ms: a duplicate would show here.
  EXPECT_EQ(q.get_for(extra, 300ms), QueueResult::timed_out) << "duplicate " << extra.seq;
}

// Kills the child at the k-th `point`, restarts it clean, checks delivery.
struct Outcome {
  shmbus::QueueStats src, dst;
  sb::ChannelStats out;
  sb::InboundStats in;
};
Outcome kill_and_restart(bool sender, detail::FaultPoint point, int k) {
  Pair p{{sender, point, k}, {sender}};
  p.run_peer(!sender);
  const pid_t first = p.release(0);
  const auto st = shmbus::test::wait_child(first, 20s);
  EXPECT_EQ(st.signal, SIGKILL) << "the child never reached its fault point";
  const pid_t second = p.release(1);
  expect_each_once_in_order(*p.dst);
  // Acknowledged: the outbox holds nothing any more.
  EXPECT_TRUE(shmbus::test::poll_until(
      [&] { return sb::read_outbox(p.name_a, "orders").in_flight == 0; }, 10s));
  ::kill(second, SIGKILL);
  (void)shmbus::test::wait_child(second, 10s);
  return {p.src->stats(), p.dst->stats(), sb::read_outbox(p.name_a, "orders"),
          sb::read_inbox(p.name_b, p.name_a, "orders")};
}

}  // namespace

// Take: killed after the held get claimed the slot, before the copy: the
// queue's recovery gives the message back; the restart drops the outbox
// entry (take_interrupted) and takes it again.
TEST(BridgeWindow, ASendingBridgeKilledBeforeItsCopyLosesNothing) {
  const Outcome o = kill_and_restart(true, detail::FaultPoint::get_claimed, 5);
  EXPECT_EQ(o.src.lost, 0u);
  EXPECT_EQ(o.out.take_interrupted, 1u);
  EXPECT_EQ(o.src.delivered, kMessages);
}

// Killed after the copy and the outbox's length and position, before the
// release: the message is both in the outbox and (given back) in the
// queue; the restart sees the queue still holds its position and drops
// the outbox's copy.
TEST(BridgeWindow, ASendingBridgeKilledBeforeItsReleaseSendsOnce) {
  const Outcome o = kill_and_restart(true, detail::FaultPoint::get_copied, 5);
  EXPECT_EQ(o.src.lost, 0u);
  EXPECT_EQ(o.out.take_interrupted, 1u);
  EXPECT_EQ(o.src.delivered, kMessages);
}

// Killed after the release, before the record's counter: the message left
// the queue and the outbox holds it; the restart keeps and sends it.
TEST(BridgeWindow, ASendingBridgeKilledAfterItsReleaseKeepsTheMessage) {
  const Outcome o = kill_and_restart(true, detail::FaultPoint::get_released, 5);
  EXPECT_EQ(o.src.lost, 0u);
  EXPECT_EQ(o.out.take_interrupted, 0u);
  EXPECT_EQ(o.src.delivered, kMessages);
}

// Killed after the get returned, before the outbox's next sequence moved.
TEST(BridgeWindow, ASendingBridgeKilledBeforeItsOutboxCommitKeepsTheMessage) {
  const Outcome o = kill_and_restart(true, detail::FaultPoint::bridge_taken, 5);
  EXPECT_EQ(o.src.lost, 0u);
  EXPECT_EQ(o.out.take_interrupted, 0u);
  EXPECT_EQ(o.src.delivered, kMessages);
}

// Apply: killed after the tagged put claimed its slot, before publishing:
// the recovery drops the half-written slot and records DROPPED under the
// tag; the restart applies the retransmission.
TEST(BridgeWindow, AReceivingBridgeKilledBeforeItsPublishAppliesOnce) {
  const Outcome o = kill_and_restart(false, detail::FaultPoint::put_written, 5);
  EXPECT_EQ(o.in.apply_uncertain, 0u);
  EXPECT_EQ(o.dst.dropped, 1u);
  EXPECT_EQ(o.dst.committed, kMessages);
}

// Killed after publishing, before the record's counter: the recovery
// records LANDED; the restart marks it applied and drops the
// retransmission as a duplicate.
TEST(BridgeWindow, AReceivingBridgeKilledAfterItsPublishAppliesOnce) {
  const Outcome o = kill_and_restart(false, detail::FaultPoint::put_published, 5);
  EXPECT_EQ(o.in.apply_uncertain, 0u);
  EXPECT_GE(o.in.duplicates, 1u);
  EXPECT_EQ(o.dst.committed, kMessages);
}

// Killed after the put returned, before the inbox's applied sequence: the
// tag says LANDED (written by the put itself).
TEST(BridgeWindow, AReceivingBridgeKilledBeforeItsInboxCommitAppliesOnce) {
  const Outcome o = kill_and_restart(false, detail::FaultPoint::bridge_applied, 5);
  EXPECT_EQ(o.in.apply_uncertain, 0u);
  EXPECT_GE(o.in.duplicates, 1u);
  EXPECT_EQ(o.dst.committed, kMessages);
}

// gc (bus-inspector gc, a Bus's sweep) keeps a killed sending bridge's
// outbox while it holds unacknowledged messages, and its receiving
// inboxes always (their applied sequence stops duplicates); --force
// removes them; an outbox whose messages were all acknowledged goes.
TEST(BridgeWindow, GcKeepsAKilledBridgesOutboxWhileItHoldsUnacknowledgedMessages) {
  Pair p{{true}};
  // No queue on bus B yet: the receiver waits for it and acknowledges nothing.
  p.dst.reset();
  ASSERT_TRUE(shmbus::Queue<SeqMsg>::unlink(p.bus_b + ".orders"));
  p.run_peer(false);
  const pid_t child = p.release(0);
  const std::string outbox = p.name_a + ".out.orders";
  EXPECT_TRUE(shmbus::test::poll_until(
      [&] {
        try {
          return sb::read_outbox(p.name_a, "orders").in_flight == 8;
        } catch (const shmbus::Error&) {
          return false;  // not made yet
        }
      },
      10s));
  ::kill(child, SIGKILL);
  EXPECT_EQ(shmbus::test::wait_child(child, 10s).signal, SIGKILL);
  EXPECT_TRUE(shmbus::inspect_segment(outbox).abandoned());
  EXPECT_TRUE(shmbus::inspect_segment(outbox).keep);
  for (const auto& a : shmbus::collect_garbage({.prefix = p.name_a + ".out."}))
    ADD_FAILURE() << "gc removed " << a.name << " (" << a.reason << ")";
  EXPECT_EQ(sb::read_outbox(p.name_a, "orders").in_flight, 8u);  // still there
  const auto forced = shmbus::collect_garbage({.force = true, .prefix = p.name_a + ".out."});
  ASSERT_EQ(forced.size(), 1u);
  EXPECT_EQ(forced[0].name, outbox);
  EXPECT_TRUE(forced[0].removed);
  EXPECT_THROW((void)shmbus::inspect_segment(outbox), shmbus::Error);
}

TEST(BridgeWindow, GcRemovesAnAcknowledgedOutboxAndKeepsTheInbox) {
  Pair p{{true}};
  p.run_peer(false);
  const pid_t child = p.release(0);
  expect_each_once_in_order(*p.dst);
  EXPECT_TRUE(shmbus::test::poll_until(
      [&] { return sb::read_outbox(p.name_a, "orders").in_flight == 0; }, 10s));
  ::kill(child, SIGKILL);
  EXPECT_EQ(shmbus::test::wait_child(child, 10s).signal, SIGKILL);
  EXPECT_FALSE(shmbus::inspect_segment(p.name_a + ".out.orders").keep);
  const auto removed = shmbus::collect_garbage({.prefix = p.name_a + ".out."});
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_TRUE(removed[0].removed);
  // The inbox (its bridge still runs here, but it is marked regardless).
  EXPECT_TRUE(shmbus::inspect_segment(p.name_b + ".in." + p.name_a + ".orders").keep);
}
