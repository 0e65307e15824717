// shmbus::wait over several pipe ends (multiprocessing.connection.wait):
// ready ends in the order given, a sleeper woken by whichever end gets a
// message, EOF and dead peers count as ready, timeouts, misuse.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <csignal>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "shmbus/pipe.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;

struct Pipes {
  std::vector<Connection> mine;    // ends this process waits on
  std::vector<Connection> theirs;  // ends a child (or this test) sends on
  std::vector<Connection*> waited;
  Pipes(int n, WaitStrategy strategy) {
    PipeOptions o;
    o.wait.strategy = strategy;
    o.capacity = 4096;
    for (int i = 0; i < n; ++i) {
      auto [a, b] = Pipe(o);
      mine.push_back(std::move(a));
      theirs.push_back(std::move(b));
    }
    for (auto& c : mine) waited.push_back(&c);
  }
};

TEST(PipeWait, ReturnsTheReadyEndsInTheOrderGiven) {
  Pipes p(3, WaitStrategy::adaptive);
  EXPECT_TRUE(wait(p.waited, 0ms).empty());
  ASSERT_EQ(p.theirs[2].send(std::int32_t{2}), SendResult::ok);
  ASSERT_EQ(p.theirs[0].send(std::int32_t{0}), SendResult::ok);
  EXPECT_EQ(wait(p.waited), (std::vector<Connection*>{p.waited[0], p.waited[2]}));
  std::int32_t v = -1;
  ASSERT_EQ(p.mine[0].recv(v), RecvResult::ok);
  EXPECT_EQ(wait(p.waited, 1s), (std::vector<Connection*>{p.waited[2]}));
  // Into a vector it clears and reuses.
  std::vector<Connection*> ready{p.waited[1], p.waited[1]};
  wait(p.waited, ready, 1s);
  EXPECT_EQ(ready, (std::vector<Connection*>{p.waited[2]}));
  ASSERT_EQ(p.mine[2].recv(v), RecvResult::ok);
  wait(p.waited, ready, 0ms);
  EXPECT_TRUE(ready.empty());
}

TEST(PipeWait, ATimeoutReturnsNothingAfterItsTime) {
  Pipes p(2, WaitStrategy::blocking);
  const auto t0 = Clock::now();
  EXPECT_TRUE(wait(p.waited, 30ms).empty());
  EXPECT_GE(Clock::now() - t0, 30ms);
}

class PipeWaitSleeping : public ::testing::TestWithParam<WaitStrategy> {};

// One child sends on one end at a time, each only once the parent sleeps
// in wait() (busy-poll ends: while it spins), and waits for the parent's
// acknowledgement on that end before the next. (One child for all: a child
// that exits makes its ends ready, its peer being dead.)
TEST_P(PipeWaitSleeping, AChildsMessageOnAnyEndWakesTheWaiter) {
  Pipes p(5, GetParam());
  const pid_t parent = ::getpid();
  constexpr std::array<std::int32_t, 3> kTargets{3, 0, 4};
  pid_t child = test::fork_child([&] {
    for (std::int32_t target : kTargets) {
      Connection& end = p.theirs[static_cast<std::size_t>(target)];
      if (GetParam() != WaitStrategy::busy_poll &&
          !test::poll_until([&] { return test::process_sleeping(parent); }))
        return 1;
      std::int32_t ack = -1;
      if (end.send(target) != SendResult::ok || end.recv(ack) != RecvResult::ok || ack != target)
        return 2;
    }
    return 0;
  });
  for (std::int32_t target : kTargets) {
    const auto ready = wait(p.waited, 10s);
    ASSERT_EQ(ready, (std::vector<Connection*>{p.waited[static_cast<std::size_t>(target)]}));
    std::int32_t v = -1;
    ASSERT_EQ(ready[0]->recv(v), RecvResult::ok);
    EXPECT_EQ(v, target);
    ASSERT_EQ(ready[0]->send(v), SendResult::ok);
  }
  EXPECT_EQ(test::wait_child(child).code, 0);
}

INSTANTIATE_TEST_SUITE_P(Strategies, PipeWaitSleeping,
                         ::testing::Values(WaitStrategy::blocking, WaitStrategy::adaptive,
                                           WaitStrategy::busy_poll),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST(PipeWait, EofAndADeadPeerAreReady) {
  Pipes p(3, WaitStrategy::adaptive);
  int killed_ready[2];
  ASSERT_EQ(::pipe(killed_ready), 0);
  // The child takes its ends of pipes 0 and 1 (by sending), closes pipe 0,
  // and is killed holding pipe 1.
  pid_t child = test::fork_child([&] {
    if (p.theirs[1].send(std::int32_t{1}) != SendResult::ok) return 1;
    if (p.theirs[0].send(std::int32_t{0}) != SendResult::ok) return 3;
    p.theirs[0].close();
    char c = 'r';
    if (::write(killed_ready[1], &c, 1) != 1) return 2;
    for (;;) ::pause();
  });
  char c;
  ASSERT_EQ(::read(killed_ready[0], &c, 1), 1);
  std::int32_t v = -1;
  ASSERT_EQ(p.mine[1].recv(v), RecvResult::ok);  // pipe 1 now empty
  EXPECT_EQ(wait(p.waited, 10s), (std::vector<Connection*>{p.waited[0]}));
  ASSERT_EQ(p.mine[0].recv(v), RecvResult::ok);
  EXPECT_EQ(wait(p.waited, 10s), (std::vector<Connection*>{p.waited[0]}));  // EOF
  ASSERT_EQ(p.mine[0].recv(v), RecvResult::eof);
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
  std::vector<Connection*> rest{p.waited[1], p.waited[2]};
  EXPECT_EQ(wait(rest, 10s), (std::vector<Connection*>{p.waited[1]}));  // dead peer
  EXPECT_EQ(p.mine[1].recv(v), RecvResult::peer_dead);
  ::close(killed_ready[0]);
  ::close(killed_ready[1]);
}

TEST(PipeWait, EndsThatCannotReceiveAreRefused) {
  auto [r, w] = Pipe(false);  // r receives, w sends
  std::vector<Connection*> send_only{&w};
  EXPECT_EQ(test::code_of([&] { (void)wait(send_only, 0ms); }), Errc::invalid_argument);
  r.close();
  std::vector<Connection*> closed{&r};
  EXPECT_EQ(test::code_of([&] { (void)wait(closed, 0ms); }), Errc::invalid_argument);
  std::vector<Connection*> null{nullptr};
  EXPECT_EQ(test::code_of([&] { (void)wait(null, 0ms); }), Errc::invalid_argument);
  EXPECT_EQ(test::code_of([&] { (void)wait({}); }), Errc::invalid_argument);
  EXPECT_TRUE(wait({}, 1ms).empty());
  Pipes many(129, WaitStrategy::adaptive);
  EXPECT_EQ(test::code_of([&] { (void)wait(many.waited, 0ms); }), Errc::invalid_argument);
}

// A child scatters messages over eight pipes; the parent takes whatever
// wait() says is ready until it has them all, each pipe in order.
TEST(PipeWait, EveryMessageOfAScatteredStreamArrivesThroughWait) {
  constexpr int kPipes = 8;
  constexpr std::uint32_t kMessages = 20000;
  Pipes p(kPipes, WaitStrategy::adaptive);
  pid_t child = test::fork_child([&] {
    std::mt19937 rng(7);
    std::array<std::uint32_t, kPipes> seq{};
    for (std::uint32_t i = 0; i < kMessages; ++i) {
      const auto k = static_cast<std::uint32_t>(rng() % kPipes);
      if (p.theirs[k].send(test::SeqMsg{k, seq[k], test::checksum(k, seq[k])}) != SendResult::ok)
        return 1;
      ++seq[k];
    }
    for (auto& c : p.theirs) c.close();
    return 0;
  });
  std::array<std::uint32_t, kPipes> next{};
  std::uint32_t got = 0;
  int open = kPipes;
  std::vector<Connection*> live = p.waited;
  while (open > 0) {
    const auto ready = wait(live, 10s);
    ASSERT_FALSE(ready.empty()) << "nothing ready for 10 s with " << got << " received";
    for (Connection* c : ready) {
      test::SeqMsg m{};
      const RecvResult r = c->recv(m);
      if (r == RecvResult::eof) {
        std::erase(live, c);
        --open;
        continue;
      }
      ASSERT_EQ(r, RecvResult::ok);
      ASSERT_EQ(m.check, test::checksum(m.producer, m.seq));
      ASSERT_EQ(c, p.waited[m.producer]);
      ASSERT_EQ(m.seq, next[m.producer]++);
      ++got;
    }
  }
  EXPECT_EQ(got, kMessages);
  EXPECT_EQ(test::wait_child(child).code, 0);
}

}  // namespace
}  // namespace shmbus
