// A topic Subscriber in shmbus::wait() and behind fileno(): woken by a
// publication from another process (the waiter proven asleep first), by a
// publisher that closes or dies, at once for a closed handle; the
// descriptor is level-triggered and re-armed by a try_recv that finds
// nothing.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <string>
#include <vector>

#include "shmbus/event.hpp"
#include "shmbus/topic.hpp"
#include "shmbus/wait_any.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::poll_until;
using test::process_sleeping;
using test::SegmentGuard;
using test::unique_name;
using test::wait_child;

bool readable(int fd, std::chrono::milliseconds timeout = 0ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && (p.revents & POLLIN) != 0;
}

// A child that publishes `value` on `name` once this process sleeps, then
// closes its publisher (end of stream).
pid_t publish_when_asleep(const std::string& name, std::uint64_t value) {
  const pid_t parent = ::getpid();
  return fork_child([name, parent, value] {
    auto pub = Topic::open<std::uint64_t>(name).publisher();
    if (!poll_until([&] { return process_sleeping(parent); })) return 1;
    if (pub.publish(value) != PublishResult::ok) return 2;
    return 0;
  });
}

TEST(TopicWait, APublicationFromAnotherProcessWakesTheWait) {
  for (WaitStrategy st : {WaitStrategy::adaptive, WaitStrategy::blocking}) {
    SCOPED_TRACE(std::string(to_string(st)));
    SegmentGuard g(unique_name("twait"));
    SegmentGuard ge(unique_name("twaitev"));
    auto topic = Topic::create<std::uint64_t>(g.name(), {.wait = {.strategy = st}});
    auto sub = topic.subscribe();
    auto idle = Event::create(ge.name());
    std::vector<std::size_t> ready;
    wait({idle, sub}, ready, 5ms);
    EXPECT_TRUE(ready.empty());
    const pid_t child = publish_when_asleep(g.name(), 42);
    wait({idle, sub}, ready, 10s);
    EXPECT_EQ(ready, std::vector<std::size_t>{1});
    std::uint64_t v = 0;
    ASSERT_EQ(sub.try_recv(v), ReceiveResult::ok);
    EXPECT_EQ(v, 42u);
    EXPECT_EQ(wait_child(child, 20s).code, 0);
    // The child's publisher closed as it returned: the end is ready too.
    wait({idle, sub}, ready, 10s);
    EXPECT_EQ(ready, std::vector<std::size_t>{1});
    EXPECT_EQ(sub.try_recv(v), ReceiveResult::eof);
  }
}

TEST(TopicWait, ADeadPublisherOrAClosedHandleIsReady) {
  SegmentGuard g(unique_name("twait"));
  auto topic =
      Topic::create<std::uint64_t>(g.name(), {.wait = {.strategy = WaitStrategy::blocking}});
  auto sub = topic.subscribe();
  const std::string name = g.name();
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t child = fork_child([&] {
    auto pub = Topic::open<std::uint64_t>(name).publisher();
    char c = 0;
    if (::read(go[0], &c, 1) != 1) return 1;
    ::raise(SIGKILL);  // dies holding the role
    return 2;
  });
  // The child holds the publisher role (alive): nothing is ready.
  ASSERT_TRUE(
      poll_until([&] { return topic_stats(SegmentView::open(name)).publisher_alive; }, 20s));
  std::vector<std::size_t> ready;
  wait({sub}, ready, 5ms);
  EXPECT_TRUE(ready.empty());
  ASSERT_EQ(::write(go[1], "k", 1), 1);
  EXPECT_EQ(wait_child(child, 20s).signal, SIGKILL);
  wait({sub}, ready, 10s);  // the liveness check sees it within 10 ms
  EXPECT_EQ(ready, std::vector<std::size_t>{0});
  std::uint64_t v = 0;
  EXPECT_EQ(sub.recv_for(v, 10s), ReceiveResult::publisher_dead);
  ::close(go[0]);
  ::close(go[1]);

  Subscriber closed;
  wait({closed}, ready, 10s);
  EXPECT_EQ(ready, std::vector<std::size_t>{0});
  EXPECT_EQ(closed.try_recv(v), ReceiveResult::closed);
}

TEST(TopicFileno, ASubscriberPollsReadableWhileAMessageIsThere) {
  SegmentGuard g(unique_name("tfileno"));
  auto topic = Topic::create<std::uint64_t>(g.name());
  auto sub = topic.subscribe();
  const int fd = sub.fileno();
  EXPECT_EQ(sub.fileno(), fd);  // one per subscriber
  EXPECT_FALSE(readable(fd));
  const pid_t child = publish_when_asleep(g.name(), 7);
  ASSERT_TRUE(readable(fd, 10'000ms));
  std::uint64_t v = 0;
  ASSERT_EQ(sub.try_recv(v), ReceiveResult::ok);
  EXPECT_EQ(v, 7u);
  EXPECT_TRUE(readable(fd));  // level: not re-armed until a call finds nothing
  EXPECT_EQ(wait_child(child, 20s).code, 0);
  // The child's publisher closed: eof is readable too (and stays).
  ASSERT_TRUE(readable(fd, 10'000ms));
  EXPECT_EQ(sub.try_recv(v), ReceiveResult::eof);
  EXPECT_TRUE(readable(fd));

  // A new publisher in this process: a try_recv that finds nothing clears
  // the descriptor, the next publication sets it.
  auto pub = topic.publisher();
  EXPECT_EQ(sub.try_recv(v), ReceiveResult::empty);
  EXPECT_FALSE(readable(fd));
  ASSERT_EQ(pub.publish(std::uint64_t{8}), PublishResult::ok);
  ASSERT_TRUE(readable(fd, 10'000ms));
  ASSERT_EQ(sub.try_recv(v), ReceiveResult::ok);
  EXPECT_EQ(v, 8u);
  EXPECT_EQ(sub.try_recv(v), ReceiveResult::empty);
  EXPECT_FALSE(readable(fd));
  sub.close();  // stops the bridge thread before the segment goes
  EXPECT_THROW((void)sub.fileno(), Error);
}

}  // namespace
}  // namespace shmbus
