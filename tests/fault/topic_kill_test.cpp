// Topic under SIGKILL: a publisher process and two subscriber processes
// (one reliable, one lossy) are killed at random points of the stream,
// 300 kills in all (120 under sanitizers), and replaced. This process
// holds a reliable and a lossy subscriber throughout and checks that no
// call hangs (every wait has a deadline and must end in a message or
// publisher_dead), that no message is torn (each carries its number and
// bytes derived from it), that the reliable subscriber gets every message
// number exactly once and in order across publisher takeovers, and that
// the lossy one's gaps add up to exactly missed(). Subscriber children run
// the same checks and exit non-zero on a violation (seen when they are
// reaped: exited instead of killed). The seed is printed;
// SHMBUS_TOPIC_SEED reruns one.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "shmbus/topic.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::SegmentGuard;
using test::unique_name;
using test::wait_child;

constexpr std::size_t kMax = 200;
constexpr std::uint64_t kBad = ~std::uint64_t{0};

std::size_t length_of(std::uint64_t i) { return 16 + (i * 37) % (kMax - 15); }
void fill(std::uint64_t i, std::byte* p, std::size_t n) {
  std::memcpy(p, &i, 8);
  for (std::size_t k = 8; k < n; ++k) p[k] = static_cast<std::byte>((i * 131 + k * 7) & 0xff);
}
std::uint64_t check(const std::byte* p, std::size_t n) {
  if (n < 16) return kBad;
  std::uint64_t i = 0;
  std::memcpy(&i, p, 8);
  if (n != length_of(i)) return kBad;
  for (std::size_t k = 8; k < n; ++k)
    if (p[k] != static_cast<std::byte>((i * 131 + k * 7) & 0xff)) return kBad;
  return i;
}

// Checks one subscriber's stream: reliable ones contiguous, lossy ones
// increasing with gaps that add up to missed().
struct StreamCheck {
  bool reliable;
  std::uint64_t next = kBad;  // the number expected next (kBad: none yet)
  std::uint64_t gaps = 0;
  std::uint64_t gap_events = 0;
  // False on a violation.
  bool take(std::uint64_t i) {
    if (i == kBad) return false;
    if (next != kBad) {
      if (i < next || (reliable && i != next)) return false;
      gaps += i - next;
      gap_events += i != next;
    }
    next = i + 1;
    return true;
  }
};

int publisher_main(const std::string& name) {
  auto pub = Topic::open(name).publisher();
  for (;;) {
    const std::uint64_t i = pub.published();
    const std::size_t n = length_of(i);
    auto slot = pub.loan_for(n, 20s);
    if (slot.size() != n) return 2;
    fill(i, slot.data(), n);
    if (pub.publish() != PublishResult::ok) return 3;
  }
}

int subscriber_main(const std::string& name, bool reliable) {
  auto sub = Topic::open(name).subscribe(
      {.policy = reliable ? SubscriberPolicy::reliable : SubscriberPolicy::lossy});
  StreamCheck c{reliable, sub.position()};
  std::array<std::byte, kMax> buf{};
  for (;;) {
    std::size_t n = 0;
    const ReceiveResult r = sub.recv_for(buf, n, 20s);
    if (r == ReceiveResult::publisher_dead) continue;
    if (r != ReceiveResult::ok) return 4;
    if (!c.take(check(buf.data(), n))) return 5;
    if (!reliable && c.gaps != sub.missed()) return 6;
  }
}

TEST(TopicKill, RandomKillsOfPublisherAndSubscribersNeverHangTearOrMiscount) {
  SegmentGuard g(unique_name("topickill"));
  std::uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("SHMBUS_TOPIC_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::printf("SHMBUS_TOPIC_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
#if defined(SHMBUS_SANITIZED)
  constexpr int kKills = 120;
#else
  constexpr int kKills = 300;
#endif
  auto topic = Topic::create(g.name(), {.slots = 64, .max_message = kMax, .max_subscribers = 8});
  auto rel = topic.subscribe();
  auto lossy = topic.subscribe({.policy = SubscriberPolicy::lossy});
  StreamCheck rc{true, rel.position()}, lc{false, lossy.position()};
  std::array<std::byte, kMax> buf{};
  const std::string name = g.name();
  std::array<pid_t, 3> kids{};  // publisher, reliable, lossy
  // Kills and reaps the children however the test ends.
  struct Reaper {
    std::array<pid_t, 3>& kids;
    ~Reaper() {
      for (pid_t& pid : kids) {
        if (pid <= 0) continue;
        ::kill(pid, SIGKILL);
        (void)wait_child(pid, 20s);
        pid = 0;
      }
    }
  } reaper{kids};
  auto spawn = [&](int role) {
    kids[static_cast<std::size_t>(role)] = fork_child([&name, role] {
      return role == 0 ? publisher_main(name) : subscriber_main(name, role == 1);
    });
  };
  for (int role = 0; role < 3; ++role) spawn(role);
  int kills[3] = {0, 0, 0};
  std::uint64_t publisher_deaths_seen = 0;
  // Receives from the reliable subscriber until a message or publisher_dead
  // (anything else is a hang or a violation); drains what lossy has.
  auto step = [&]() -> ReceiveResult {
    std::size_t n = 0;
    const ReceiveResult r = rel.recv_for(buf, n, 20s);
    if (r == ReceiveResult::ok) {
      EXPECT_TRUE(rc.take(check(buf.data(), n))) << "reliable stream broken at " << rc.next;
    }
    // The lossy subscriber reads in rare bursts, so the stream laps it.
    if (rng() % 512 == 0) {
      while (lossy.try_recv(buf, n) == ReceiveResult::ok) {
        EXPECT_TRUE(lc.take(check(buf.data(), n))) << "lossy stream broken at " << lc.next;
      }
    }
    return r;
  };
  for (int k = 0; k < kKills && !HasFailure(); ++k) {
    const std::uint64_t reads = 1 + rng() % 2000;
    for (std::uint64_t i = 0; i < reads; ++i) {
      // publisher_dead again until the replacement publisher takes over.
      const auto deadline = Clock::now() + 20s;
      ReceiveResult r;
      while ((r = step()) == ReceiveResult::publisher_dead && Clock::now() < deadline) {
      }
      ASSERT_EQ(r, ReceiveResult::ok) << "kill " << k << " read " << i;
    }
    const int victim = static_cast<int>(rng() % 3);
    const pid_t pid = kids[static_cast<std::size_t>(victim)];
    ::kill(pid, SIGKILL);
    const auto st = wait_child(pid, 20s);
    kids[static_cast<std::size_t>(victim)] = 0;
    ASSERT_EQ(st.signal, SIGKILL) << "role " << victim << " exited by itself, code " << st.code;
    ++kills[victim];
    if (victim == 0) {
      // Everything the dead publisher committed, then publisher_dead.
      ReceiveResult r;
      while ((r = step()) == ReceiveResult::ok) {
      }
      ASSERT_EQ(r, ReceiveResult::publisher_dead) << "kill " << k;
      ++publisher_deaths_seen;
    }
    spawn(victim);
  }
  for (pid_t& pid : kids) {
    ::kill(pid, SIGKILL);
    const auto st = wait_child(pid, 20s);
    pid = 0;
    EXPECT_EQ(st.signal, SIGKILL) << "a child exited by itself, code " << st.code;
  }
  ReceiveResult r;
  while ((r = step()) == ReceiveResult::ok) {
  }
  EXPECT_EQ(r, ReceiveResult::publisher_dead);
  std::size_t n = 0;
  while (lossy.try_recv(buf, n) == ReceiveResult::ok) EXPECT_TRUE(lc.take(check(buf.data(), n)));
  const TopicStats s = topic_stats(SegmentView::open(g.name()));
  // Exact counts: the reliable subscriber got every message; the lossy
  // one's gaps are its missed count, and it ends where the stream ends.
  EXPECT_EQ(rc.next, s.published);
  EXPECT_EQ(rel.received(), s.published);
  EXPECT_EQ(rc.gaps, 0u);
  EXPECT_EQ(lc.gaps, lossy.missed());
  EXPECT_EQ(lossy.received() + lossy.missed(), s.published);
  EXPECT_GE(lossy.lapped(), lc.gap_events);
  EXPECT_EQ(lossy.lapped() == 0, lossy.missed() == 0);
  // A publisher killed before it took the role over leaves it to the next.
  EXPECT_LE(s.takeovers, publisher_deaths_seen);
  EXPECT_GT(s.takeovers, 0u);
  EXPECT_GT(lossy.lapped(), 0u);  // the lossy checks above were exercised
  std::printf(
      "kills: publisher %d, reliable %d, lossy %d; messages %llu; lossy lapped %llu "
      "missed %llu; evictions %llu\n",
      kills[0], kills[1], kills[2], static_cast<unsigned long long>(s.published),
      static_cast<unsigned long long>(lossy.lapped()),
      static_cast<unsigned long long>(lossy.missed()),
      static_cast<unsigned long long>(s.evictions));
}

}  // namespace
}  // namespace shmbus
