// Dict under SIGKILL: writers killed at random points of their updates
// (and exactly between a transaction's last write and its commit) leave
// every key holding a value some writer committed, never a torn one;
// multi-key transactions stay all-or-nothing; the survivors never hang on
// the writer lock a dead process held; readers killed mid-read cost nothing.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "shmbus/dict.hpp"
#include "store_guard.hpp"
#include "test_support.hpp"

namespace shmbus::test {
namespace {

struct Rec {
  std::uint64_t writer;
  std::uint64_t seq;
  std::uint64_t check;
};
std::uint64_t rec_check(std::uint64_t w, std::uint64_t s) {
  return checksum(static_cast<std::uint32_t>(w), static_cast<std::uint32_t>(s)) ^ 0xABCDEFull;
}

constexpr int kWriters = 2;
struct Progress {
  std::atomic<std::uint64_t> attempting[kWriters];  // seq a writer is about to commit
  std::atomic<std::uint64_t> committed[kWriters];   // seq a writer saw commit
  std::atomic<std::uint64_t> pair_commits;          // "a","b" increments seen committed
  std::atomic<std::uint64_t> pair_attempts;
  std::atomic<std::uint64_t> reads;  // items() snapshots a reader checked
  std::atomic<int> bad_reads;
  std::atomic<int> die_before_commit[kWriters];  // seq at which the hook kills; 0: none
};

Progress* g_progress = nullptr;
int g_writer = -1;
std::uint64_t g_seq = 0;

void kill_before_commit() noexcept {
  // relaxed: a flag from the test; a late sight only delays the kill.
  int at = g_progress->die_before_commit[g_writer].load(std::memory_order_relaxed);
  if (at > 0 && static_cast<int>(g_seq) >= at) ::raise(SIGKILL);
}

std::string wkey(int w) { return "w" + std::to_string(w); }

[[noreturn]] void writer_loop(Dict<std::string, Rec>& d, Progress& p, int w) {
  g_progress = &p;
  g_writer = w;
  detail::g_kv_before_commit.store(&kill_before_commit, std::memory_order_relaxed);
  for (std::uint64_t seq = p.committed[w].load() + 1;; ++seq) {
    g_seq = seq;
    p.attempting[w].store(seq);
    p.pair_attempts.fetch_add(1);
    d.transaction([&](auto& tx) {
      tx.set(wkey(w), Rec{std::uint64_t(w), seq, rec_check(w, seq)});
      Rec a = tx.get("a").value_or(Rec{});
      Rec b = tx.get("b").value_or(Rec{});
      tx.set("a", Rec{0, a.seq + 1, rec_check(0, a.seq + 1)});
      tx.set("b", Rec{0, b.seq + 1, rec_check(0, b.seq + 1)});
    });
    p.committed[w].store(seq);
    p.pair_commits.fetch_add(1);
  }
}

// Checks the store against what the writers said; "" when it holds. The
// surviving writer keeps committing: lower bounds are read before the
// snapshot, upper bounds after it.
std::string check_store(const Dict<std::string, Rec>& d, const Progress& p) {
  const std::uint64_t pair_lo = p.pair_commits.load();
  std::uint64_t lo[kWriters];
  for (int w = 0; w < kWriters; ++w) lo[w] = p.committed[w].load();
  auto items = d.items();  // one snapshot
  const std::uint64_t pair_hi = p.pair_attempts.load();
  std::uint64_t hi[kWriters];
  for (int w = 0; w < kWriters; ++w) hi[w] = p.attempting[w].load();
  Rec a{}, b{};
  std::uint64_t seq[kWriters] = {};
  for (const auto& [k, r] : items) {
    if (r.check != rec_check(r.writer, r.seq)) return "torn record under " + k;
    if (k == "a") a = r;
    if (k == "b") b = r;
    for (int w = 0; w < kWriters; ++w)
      if (k == wkey(w)) seq[w] = r.seq;
  }
  if (a.seq != b.seq) return "a=" + std::to_string(a.seq) + " b=" + std::to_string(b.seq);
  if (a.seq < pair_lo || a.seq > pair_hi)
    return "a=" + std::to_string(a.seq) + " outside [" + std::to_string(pair_lo) + ", " +
           std::to_string(pair_hi) + "]";
  for (int w = 0; w < kWriters; ++w)
    if (seq[w] < lo[w] || seq[w] > hi[w])
      return wkey(w) + " seq " + std::to_string(seq[w]) + " outside [" + std::to_string(lo[w]) +
             ", " + std::to_string(hi[w]) + "]";
  return "";
}

// SIGKILLs every child it holds when the test ends, even on a failed
// assertion (children also die with the test process: PR_SET_PDEATHSIG).
struct Children {
  std::vector<pid_t> pids;
  ~Children() {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, SIGKILL);
    for (pid_t p : pids)
      if (p > 0) (void)wait_child(p, 30s);
  }
};

TEST(DictKill, EveryKeyHoldsACommittedValueWhenWritersAreKilledAtRandom) {
  const int kills = std::getenv("SHMBUS_DICT_KILLS") != nullptr
                        ? std::atoi(std::getenv("SHMBUS_DICT_KILLS"))
                    : std::getenv("SHMBUS_SOAK") != nullptr ? 5000
                                                            : 600;
  StoreGuard g(unique_name("dkill"));
  Dict<std::string, Rec> d{g.name()};
  SharedBlock<Progress> p;
  std::mt19937_64 rng(std::random_device{}());
  std::printf("%d writer kills\n", kills);

  auto spawn = [&](int w, bool inherit) {
    return fork_child([&, w, inherit]() -> int {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (inherit) writer_loop(d, *p, w);  // the parent's handle: reopened lazily
      Dict<std::string, Rec> mine = Dict<std::string, Rec>::open(g.name());
      writer_loop(mine, *p, w);
    });
  };
  auto reader = [&] {
    return fork_child([&]() -> int {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (;;) {
        auto items = d.items();
        for (const auto& [k, r] : items)
          if (r.check != rec_check(r.writer, r.seq)) p->bad_reads.fetch_add(1);
        p->reads.fetch_add(1);
      }
    });
  };

  Children kids;
  kids.pids.assign(kWriters + 1, 0);
  pid_t* pids = kids.pids.data();  // [0, kWriters): writers; [kWriters]: the reader
  pid_t& rd = kids.pids[kWriters];
  for (int w = 0; w < kWriters; ++w) pids[w] = spawn(w, w == 0);
  rd = reader();
  int done = 0, hook_kills = 0, random_kills = 0, reader_kills = 0;
  while (done < kills) {
    int w = static_cast<int>(rng() % kWriters);
    std::uint64_t from = p->committed[w].load();
    bool by_hook = rng() % 3 == 0;
    if (by_hook) {
      // The writer dies between its last put and its commit.
      int at = static_cast<int>(p->attempting[w].load() + 2 + rng() % 20);
      p->die_before_commit[w].store(at);
      ChildStatus st = wait_child(pids[w], 30s);
      ASSERT_FALSE(st.timed_out) << "writer " << w << " never reached seq " << at;
      pids[w] = 0;
      ASSERT_EQ(st.signal, SIGKILL);
      ++hook_kills;
    } else {
      // Random: after it committed a random few more, plus a random spin.
      std::uint64_t target = from + 1 + rng() % 8;
      ASSERT_TRUE(poll_until([&] { return p->committed[w].load() >= target; }, 30s))
          << "writer " << w << " stuck at " << p->committed[w].load();
      auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 300);
      while (std::chrono::steady_clock::now() < spin_until) {
      }
      ::kill(pids[w], SIGKILL);
      ChildStatus st = wait_child(pids[w], 30s);
      pids[w] = 0;
      ASSERT_EQ(st.signal, SIGKILL);
      ++random_kills;
    }
    ++done;
    if (std::getenv("SHMBUS_DICT_TRACE") != nullptr)
      std::fprintf(stderr, "kill %d writer %d hook %d committed %llu/%llu\n", done, w, by_hook,
                   static_cast<unsigned long long>(p->committed[0].load()),
                   static_cast<unsigned long long>(p->committed[1].load()));
    std::string why = check_store(d, *p);
    ASSERT_EQ(why, "") << "after kill " << done;
    // The other writer must still make progress: no lock left held.
    int other = (w + 1) % kWriters;
    std::uint64_t o = p->committed[other].load();
    ASSERT_TRUE(poll_until([&] { return p->committed[other].load() > o; }, 30s))
        << "writer " << other << " hung after writer " << w << " was killed (kill " << done << ")";
    // The dead writer's next life resumes after what it committed.
    p->attempting[w].store(std::max(p->attempting[w].load(), p->committed[w].load()));
    {
      std::optional<Rec> r = d.get(wkey(w));
      if (r) p->committed[w].store(r->seq);  // it may have committed its last attempt
    }
    p->die_before_commit[w].store(0);
    pids[w] = spawn(w, rng() % 2 == 0);
    if (done % 25 == 0) {  // a reader killed mid-read now and then
      std::uint64_t r0 = p->reads.load();
      ASSERT_TRUE(poll_until([&] { return p->reads.load() > r0; }, 30s));
      ::kill(rd, SIGKILL);
      (void)wait_child(rd, 30s);
      rd = 0;
      ++reader_kills;
      rd = reader();
    }
  }
  for (pid_t& pid : kids.pids) {
    ::kill(pid, SIGKILL);
    (void)wait_child(pid, 30s);
    pid = 0;
  }
  EXPECT_EQ(check_store(d, *p), "");
  EXPECT_EQ(p->bad_reads.load(), 0);
  std::printf(
      "writer kills: %d random + %d before commit; reader kills %d; pair commits %llu, "
      "reads %llu\n",
      random_kills, hook_kills, reader_kills,
      static_cast<unsigned long long>(p->pair_commits.load()),
      static_cast<unsigned long long>(p->reads.load()));
  EXPECT_EQ(random_kills + hook_kills, kills);  // 600 by default: the issue asks 500+
}

}  // namespace
}  // namespace shmbus::test
