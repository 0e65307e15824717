// Pool under SIGKILL: workers killed at random points while an
// imap_unordered runs. Every item either arrives once with its right value
// or is named by exactly one Error(peer_dead) (the chunk its worker had
// started); nothing arrives twice, nothing is lost without an error, and
// the pool keeps its number of workers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "shmbus/pool.hpp"

namespace shmbus {
namespace {

std::int64_t slow_triple(std::int64_t x) {
  volatile std::int64_t sink = 0;
  for (int i = 0; i < 20000; ++i) sink = sink + i;  // tens of microseconds of work
  return 3 * x + 1;
}

// A process's state letter from /proc (R running, S sleeping, Z zombie:
// killed already, not yet noticed by the pool), or '?'.
char state_of(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return '?';
  int ignored = 0;
  char state = '?';
  if (std::fscanf(f, "%d %*s %c", &ignored, &state) != 2) state = '?';
  std::fclose(f);
  return state;
}

// "... running item N" -> N (chunksize 1: one item per failure).
std::int64_t failed_item(const std::string& what) {
  const auto at = what.find("running item ");
  if (at == std::string::npos) return -1;
  return std::stoll(what.substr(at + 13));
}

TEST(PoolKill, RandomWorkerKillsLoseNothingSilentlyAndDuplicateNothing) {
  constexpr std::int64_t kItems = 1500;
  constexpr int kKillEvery = 30;  // results between kill attempts
  Pool pool({.processes = 3});
  std::vector<std::int64_t> xs(kItems);
  for (std::int64_t i = 0; i < kItems; ++i) xs[static_cast<std::size_t>(i)] = i;
  auto it = pool.imap_unordered(slow_triple, xs, 1);
  std::mt19937 rng(11);
  std::set<std::int64_t> arrived, failed;
  int kills = 0;
  for (int step = 1;; ++step) {
    if (step % kKillEvery == 0) {
      // Mostly a worker that is running (likely inside a task), else any
      // live one: both the started-chunk and the idle paths are taken.
      const auto pids = pool.worker_pids();
      pid_t victim = pids[rng() % pids.size()];
      for (pid_t p : pids) {
        if (state_of(p) == 'R' && rng() % 4 != 0) victim = p;
      }
      const char state = state_of(victim);
      if (state != 'Z' && state != '?' && ::kill(victim, SIGKILL) == 0) ++kills;
    }
    try {
      const auto v = it.next();
      if (!v) break;
      ASSERT_EQ((*v - 1) % 3, 0);
      const std::int64_t x = (*v - 1) / 3;
      ASSERT_TRUE(arrived.insert(x).second) << "item " << x << " arrived twice";
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::peer_dead) << e.what();
      const std::int64_t x = failed_item(e.what());
      ASSERT_GE(x, 0) << e.what();
      ASSERT_TRUE(failed.insert(x).second) << "item " << x << " failed twice";
    }
  }
  std::printf("%d kills, %zu items failed, %zu arrived\n", kills, failed.size(), arrived.size());
  for (std::int64_t x : failed) EXPECT_EQ(arrived.count(x), 0u) << "item " << x;
  EXPECT_EQ(static_cast<std::int64_t>(arrived.size() + failed.size()), kItems);
  EXPECT_LE(static_cast<int>(failed.size()), kills);
  EXPECT_GT(kills, 0);
  EXPECT_EQ(pool.worker_pids().size(), 3u);
  EXPECT_EQ(pool.apply(slow_triple, std::int64_t{2}), 7);
}

}  // namespace
}  // namespace shmbus
