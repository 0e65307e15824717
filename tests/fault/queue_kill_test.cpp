// Queue crash safety: producers and consumers killed with SIGKILL at
// random points of put/get. After every kill the survivor checks that the
// queue still moves (a marker message goes through, the dead peer's claim
// repaired either by the survivor's own waiting or by recover_dead()) and
// that the exactly-once accounting holds:
//   committed == delivered + lost + depth, depth == 0 once drained,
//   peer_deaths == kills, and nothing a consumer saw came twice.
//
// 120 producer kills + 100 consumer kills + 30 large-message kills by
// default; SHMBUS_SOAK=1 runs
// ten times as many (tests/soak_queue.sh).
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "shmbus/detail/futex.hpp"
#include "shmbus/queue.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using shmbus::QueueResult;
using shmbus::test::fork_child;
using shmbus::test::SegmentGuard;
using shmbus::test::unique_name;
using shmbus::test::wait_child;

struct Msg {
  std::uint32_t round;  // kMarker for the survivor's marker
  std::uint32_t seq;
  std::uint64_t check;
};
constexpr std::uint32_t kMarker = 0xffffffffu;

std::uint64_t checksum(std::uint32_t r, std::uint32_t s) {
  return (std::uint64_t{r} * 0x9E3779B97F4A7C15ULL) ^ (std::uint64_t{s} * 0xC2B2AE3D27D4EB4FULL) ^
         1;
}

int scale() {
  const char* soak = std::getenv("SHMBUS_SOAK");
  return (soak != nullptr && soak[0] == '1') ? 10 : 1;
}

struct Shared {
  std::atomic<std::uint64_t> progress;    // victim's completed operations
  std::atomic<std::uint64_t> seen[4096];  // consumer victim: bitmap of seqs it got
};

Shared* make_shared_block() {
  void* p =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<Shared*>(p);
}

// Self-kill at an exact point inside put/get (set in the victim only).
shmbus::detail::FaultPoint g_point{};
int g_countdown = 0;
void self_kill(shmbus::detail::FaultPoint p) noexcept {
  if (p == g_point && --g_countdown == 0) ::raise(SIGKILL);
}
void arm(shmbus::detail::FaultPoint p, int after) {
  g_point = p;
  g_countdown = after;
  shmbus::detail::set_fault_hook(&self_kill);
}

// Ends the victim with SIGKILL: either it kills itself at an armed fault
// point (self_killed), or we kill it once it finished `ops` operations
// plus a random number of pause instructions, so the signal lands anywhere
// in put/get. `meanwhile` keeps the survivor's side of the queue moving.
void end_victim(pid_t pid, Shared* sh, bool self_killed, std::uint64_t ops, unsigned spins,
                const std::function<void()>& meanwhile) {
  const auto deadline = shmbus::Clock::now() + 30s;
  int status = 0;
  bool reaped = false;
  while (shmbus::Clock::now() < deadline) {
    if (self_killed) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        reaped = true;
        break;
      }
    } else if (sh->progress.load() >= ops) {
      break;
    }
    meanwhile();
  }
  if (!reaped) {
    for (unsigned i = 0; i < spins; ++i) shmbus::detail::cpu_relax();
    ::kill(pid, SIGKILL);
    const auto st = wait_child(pid, 30s);
    ASSERT_EQ(st.signal, SIGKILL) << "victim exited on its own: code " << st.code;
  } else {
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }
}

TEST(QueueFault, ProducerKilledAnywhereInPut) {
  SegmentGuard g(unique_name("fp"));
  auto q = shmbus::Queue<Msg>::create(
      g.name(), {.capacity = 8, .liveness_interval = std::chrono::milliseconds(1)});
  Shared* sh = make_shared_block();
  ASSERT_NE(sh, nullptr);
  std::mt19937 rng(12345);
  const int rounds = 120 * scale();
  std::uint64_t received = 0;
  for (int round = 0; round < rounds; ++round) {
    sh->progress.store(0);
    const auto r = static_cast<std::uint32_t>(round);
    // Two rounds in three die at an exact point of put, one at a random time.
    const bool exact = round % 3 != 0;
    const auto point = static_cast<shmbus::detail::FaultPoint>(rng() % 3);
    const int after = static_cast<int>(1 + rng() % 20);
    const pid_t victim = fork_child([&] {
      if (exact) arm(point, after);
      for (std::uint32_t i = 0;; ++i) {
        if (q.put({r, i, checksum(r, i)}) != QueueResult::ok) return 3;
        sh->progress.fetch_add(1);
      }
    });
    std::int64_t last = -1;
    bool bad = false;
    auto take = [&](const Msg& m) {
      ++received;
      if (m.round == kMarker) return true;
      if (m.round != r || m.check != checksum(m.round, m.seq) || std::int64_t{m.seq} <= last)
        bad = true;
      last = m.seq;
      return false;
    };
    const std::uint64_t ops = 1 + rng() % 40;
    end_victim(victim, sh, exact, ops, static_cast<unsigned>(rng() % 4000), [&] {
      Msg m{};
      if (q.try_get(m) == QueueResult::ok) take(m);
    });
    // The queue must still move: half the rounds rely on the survivor's
    // own waiting to notice the dead claimer, half repair explicitly.
    if (round % 2 == 0) (void)q.recover_dead();
    bool marker = false;
    for (;;) {  // the marker goes in once a slot frees up
      const QueueResult res = q.try_put({kMarker, 0, 0});
      if (res == QueueResult::ok) break;
      ASSERT_EQ(res, QueueResult::full);
      Msg m{};
      ASSERT_EQ(q.get_for(m, 5s), QueueResult::ok) << "queue stuck after kill in round " << round;
      ASSERT_FALSE(take(m));
    }
    while (!marker) {
      Msg m{};
      ASSERT_EQ(q.get_for(m, 5s), QueueResult::ok) << "queue stuck after kill in round " << round;
      marker = take(m);
    }
    ASSERT_TRUE(marker);
    ASSERT_FALSE(bad) << "order/checksum violated in round " << round;
    // A dead participant's counters settle when its record is recovered.
    (void)q.recover_dead();
    const auto s = q.stats();
    ASSERT_EQ(s.depth, 0u);
    ASSERT_EQ(s.committed, s.delivered + s.lost) << "round " << round;
    ASSERT_EQ(s.delivered, received);
    ASSERT_EQ(s.lost, 0u);  // no consumer died
  }
  (void)q.recover_dead();
  const auto s = q.stats();
  EXPECT_EQ(s.peer_deaths, static_cast<std::uint64_t>(rounds));
  // Exact-point kills (two rounds in three) all land mid-put.
  EXPECT_GE(s.interrupted, static_cast<std::uint64_t>(rounds - (rounds + 2) / 3));
  EXPECT_GE(s.interrupted, s.dropped);
  std::printf("producer kills: %d, interrupted %llu, committed %llu, dropped %llu\n", rounds,
              static_cast<unsigned long long>(s.interrupted),
              static_cast<unsigned long long>(s.committed),
              static_cast<unsigned long long>(s.dropped));
  ::munmap(sh, sizeof(Shared));
}

TEST(QueueFault, ConsumerKilledAnywhereInGet) {
  SegmentGuard g(unique_name("fc"));
  auto q = shmbus::Queue<Msg>::create(
      g.name(), {.capacity = 8, .liveness_interval = std::chrono::milliseconds(1)});
  Shared* sh = make_shared_block();
  ASSERT_NE(sh, nullptr);
  std::mt19937 rng(777);
  const int rounds = 100 * scale();
  std::uint64_t parent_got = 0, victim_recorded = 0, prev_slack = 0, prev_lost = 0;
  for (int round = 0; round < rounds; ++round) {
    sh->progress.store(0);
    for (auto& w : sh->seen) w.store(0);
    const auto r = static_cast<std::uint32_t>(round);
    const bool exact = round % 3 != 0;
    const auto point = static_cast<shmbus::detail::FaultPoint>(3 + rng() % 3);
    const int after = static_cast<int>(1 + rng() % 20);
    const pid_t victim = fork_child([&] {
      if (exact) arm(point, after);
      for (;;) {
        Msg m{};
        if (q.get(m) != QueueResult::ok) return 3;
        if (m.round == r && m.seq < 4096 * 64) sh->seen[m.seq / 64].fetch_or(1ULL << (m.seq % 64));
        sh->progress.fetch_add(1);
      }
    });
    std::uint32_t next = 0;
    const std::uint64_t ops = 1 + rng() % 40;
    end_victim(victim, sh, exact, ops, static_cast<unsigned>(rng() % 4000), [&] {
      if (next < 4096 * 64 && q.try_put({r, next, checksum(r, next)}) == QueueResult::ok) ++next;
    });
    victim_recorded += sh->progress.load();
    if (round % 2 == 0) (void)q.recover_dead();
    // Marker through the queue: everything before it drains to us. The
    // survivor is now the only consumer, so it makes room itself.
    auto take = [&](const Msg& m) {
      ++parent_got;
      if (m.round == kMarker) return true;
      EXPECT_EQ(m.round, r);
      EXPECT_EQ(m.check, checksum(m.round, m.seq));
      const bool dup = (sh->seen[m.seq / 64].load() >> (m.seq % 64)) & 1;
      EXPECT_FALSE(dup) << "seq " << m.seq << " delivered twice in round " << round;
      return false;
    };
    // A full ring with a slot held by the dead consumer frees up once a
    // waiter (our get_for) notices the death, so retry the put.
    for (const auto until = shmbus::Clock::now() + 5s;;) {
      const QueueResult res = q.try_put({kMarker, 0, 0});
      if (res == QueueResult::ok) break;
      ASSERT_EQ(res, QueueResult::full);
      ASSERT_LT(shmbus::Clock::now(), until) << "queue stuck after kill in round " << round;
      Msg m{};
      if (q.get_for(m, 5ms) == QueueResult::ok) {
        ASSERT_FALSE(take(m));
      }
    }
    for (bool marker = false; !marker;) {
      Msg m{};
      ASSERT_EQ(q.get_for(m, 5s), QueueResult::ok) << "queue stuck after kill in round " << round;
      marker = take(m);
    }
    ASSERT_FALSE(HasFailure()) << "round " << round;
    // A dead participant's counters settle when its record is recovered
    // (by a stuck waiter, by recover_dead(), or when the record is reused).
    (void)q.recover_dead();
    const auto s = q.stats();
    ASSERT_EQ(s.depth, 0u);
    ASSERT_EQ(s.committed, s.delivered + s.lost) << "round " << round;
    // The victim may die after get() returned but before recording it:
    // at most one delivery per round unaccounted for by the two sides, and
    // at most one message lost (the one it held when killed).
    const std::uint64_t seen_by_sides = parent_got + victim_recorded;
    ASSERT_GE(s.delivered, seen_by_sides);
    ASSERT_LE(s.delivered - seen_by_sides, prev_slack + 1) << "round " << round;
    prev_slack = s.delivered - seen_by_sides;
    ASSERT_LE(s.lost, prev_lost + 1) << "round " << round;
    prev_lost = s.lost;
  }
  const auto s = q.stats();
  EXPECT_EQ(s.peer_deaths, static_cast<std::uint64_t>(rounds));
  EXPECT_GE(s.interrupted, static_cast<std::uint64_t>(rounds - (rounds + 2) / 3));
  EXPECT_GE(s.interrupted, s.lost);
  EXPECT_EQ(s.dropped, 0u);
  std::printf("consumer kills: %d, interrupted %llu, committed %llu, lost %llu\n", rounds,
              static_cast<unsigned long long>(s.interrupted),
              static_cast<unsigned long long>(s.committed),
              static_cast<unsigned long long>(s.lost));
  ::munmap(sh, sizeof(Shared));
}

// Large messages through the heap: producers and consumers killed at the
// exact points of a large put/get (and at random times) never leak a heap
// block, and the survivor's large messages keep going through.
TEST(QueueFault, LargeMessagesNeverLeakHeapBlocks) {
  SegmentGuard g(unique_name("fh"));
  auto q =
      shmbus::BytesQueue::create(g.name(), {.capacity = 4,
                                            .max_message = 16,
                                            .max_large_message = 1000,
                                            .heap_blocks = 3,
                                            .liveness_interval = std::chrono::milliseconds(1)});
  Shared* sh = make_shared_block();
  ASSERT_NE(sh, nullptr);
  std::mt19937 rng(4242);
  const int rounds = 30 * scale();
  std::vector<std::byte> big(900, std::byte{0x5a}), out(q.max_message());
  std::size_t n = 0;
  for (int round = 0; round < rounds; ++round) {
    sh->progress.store(0);
    const bool producer = round % 2 == 0;
    const bool exact = round % 3 != 0;
    const auto point = static_cast<shmbus::detail::FaultPoint>((producer ? 0 : 3) + rng() % 3);
    const int after = static_cast<int>(1 + rng() % 6);
    const pid_t victim = fork_child([&] {
      if (exact) arm(point, after);
      std::vector<std::byte> buf(q.max_message());
      std::size_t len = 0;
      for (;;) {
        const QueueResult res = producer ? q.put(big) : q.get(buf, len);
        if (res != QueueResult::ok) return 3;
        sh->progress.fetch_add(1);
      }
    });
    end_victim(victim, sh, exact, 1 + rng() % 6, static_cast<unsigned>(rng() % 4000), [&] {
      if (producer)
        (void)q.try_get(out, n);
      else
        (void)q.try_put(big);
    });
    (void)q.recover_dead();
    // Drain, then the heap is all free again and a large message moves.
    while (q.try_get(out, n) == QueueResult::ok) {
    }
    ASSERT_EQ(q.stats().heap_in_use, 0u) << "heap block leaked in round " << round;
    ASSERT_EQ(q.put_for(big, 5s), QueueResult::ok);
    ASSERT_EQ(q.get_for(out, n, 5s), QueueResult::ok);
    ASSERT_EQ(n, big.size());
    const auto s = q.stats();
    ASSERT_EQ(s.committed, s.delivered + s.lost) << "round " << round;
  }
  EXPECT_EQ(q.stats().peer_deaths, static_cast<std::uint64_t>(rounds));
  ::munmap(sh, sizeof(Shared));
}

// Chaos: 2 producers and 2 consumers run concurrently while random ones
// are SIGKILLed and replaced (no fault hooks: wherever the signal lands).
// Survivors repair on their own. At the end the queue is closed and
// drained; nothing is delivered twice, per-producer order holds at every
// consumer, and every acknowledged put was delivered or counted lost
// (allowing one per killed consumer that died between get() returning and
// recording the message).
TEST(QueueFault, ConcurrentProducersAndConsumersKilledAtRandom) {
  constexpr std::uint32_t kMaxProducers = 64, kMaxSeq = 1 << 16;
  struct Book {
    std::atomic<std::uint32_t> errors;
    std::atomic<std::uint32_t> acked[kMaxProducers];  // last seq whose put returned ok
    std::atomic<std::uint64_t> progress[8];           // per live process slot
    std::atomic<std::uint8_t> seen[kMaxProducers][kMaxSeq];
  };
  void* mem =
      ::mmap(nullptr, sizeof(Book), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* book = static_cast<Book*>(mem);
  SegmentGuard g(unique_name("chaos"));
  auto q = shmbus::Queue<Msg>::create(
      g.name(), {.capacity = 16, .liveness_interval = std::chrono::milliseconds(1)});
  std::mt19937 rng(99);
  std::uint32_t next_producer = 0;
  auto spawn = [&](int slot) -> pid_t {
    book->progress[slot].store(0);
    if (slot < 2) {  // producer
      const std::uint32_t id = next_producer++;
      return fork_child([&, id, slot] {
        for (std::uint32_t i = 1; i < kMaxSeq; ++i) {
          if (q.put({id, i, checksum(id, i)}) != QueueResult::ok) return 0;  // closed
          book->acked[id].store(i);
          book->progress[slot].fetch_add(1);
        }
        // Out of sequence numbers (a fast queue on a host that starves the
        // parent): wait to be killed like the others, as the parent expects.
        for (;;) ::pause();
      });
    }
    return fork_child([&, slot] {
      std::vector<std::uint32_t> last(kMaxProducers, 0);
      for (;;) {
        Msg m{};
        const QueueResult r = q.get(m);
        if (r == QueueResult::closed) return 0;
        if (r != QueueResult::ok || m.round >= kMaxProducers || m.seq >= kMaxSeq ||
            m.check != checksum(m.round, m.seq) || m.seq <= last[m.round]) {
          book->errors.fetch_add(1);
          continue;
        }
        last[m.round] = m.seq;
        if (book->seen[m.round][m.seq].fetch_add(1) != 0) book->errors.fetch_add(1);
        book->progress[slot].fetch_add(1);
      }
    });
  };
  pid_t pids[4];
  for (int i = 0; i < 4; ++i) pids[i] = spawn(i);
  const int kills = 40 * scale();
  int consumer_kills = 0;
  for (int k = 0; k < kills && next_producer + 2 < kMaxProducers; ++k) {
    const int victim = static_cast<int>(rng() % 4);
    const std::uint64_t ops = 1 + rng() % 200;
    const auto until = shmbus::Clock::now() + 10s;
    while (book->progress[victim].load() < ops && shmbus::Clock::now() < until) ::sched_yield();
    ::kill(pids[victim], SIGKILL);
    const auto st = wait_child(pids[victim], 30s);
    ASSERT_EQ(st.signal, SIGKILL) << "victim " << victim << " exited with " << st.code;
    consumer_kills += victim >= 2;
    pids[victim] = spawn(victim);
  }
  // Stop: kill the producers too, then close; consumers drain and leave.
  for (int i = 0; i < 2; ++i) {
    ::kill(pids[i], SIGKILL);
    (void)wait_child(pids[i], 30s);
  }
  q.close();
  for (int i = 2; i < 4; ++i) {
    const auto st = wait_child(pids[i], 30s);
    EXPECT_TRUE(st.exited && st.code == 0) << "consumer did not finish after close";
  }
  (void)q.recover_dead();
  EXPECT_EQ(book->errors.load(), 0u) << "duplicate, reordered or corrupt message";
  const auto s = q.stats();
  EXPECT_EQ(s.depth, 0u);
  EXPECT_EQ(s.committed, s.delivered + s.lost);
  std::uint64_t missing = 0, recorded = 0;
  for (std::uint32_t p = 0; p < next_producer; ++p) {
    const std::uint32_t acked = book->acked[p].load();
    for (std::uint32_t i = 1; i < kMaxSeq; ++i) {
      const bool seen = book->seen[p][i].load() != 0;
      recorded += seen;
      if (i <= acked && !seen) ++missing;
    }
  }
  EXPECT_LE(missing, s.lost + static_cast<std::uint64_t>(consumer_kills));
  EXPECT_LE(recorded, s.delivered);
  EXPECT_GT(recorded, 0u);
  std::printf(
      "chaos kills: %d (+2 final), consumer kills %d, committed %llu, dropped %llu, lost %llu\n",
      kills, consumer_kills, static_cast<unsigned long long>(s.committed),
      static_cast<unsigned long long>(s.dropped), static_cast<unsigned long long>(s.lost));
  ::munmap(mem, sizeof(Book));
}

}  // namespace

// The bridge's held get (QueueCore::get_held): a getter killed after its
// claim and before its release (at each of the two steps) gives its
// message back. A consumer that meanwhile took the next message still
// gets the given-back one (dequeue_pos moved back to it), nothing is
// counted lost, and the getter's `length` and `position` say what a
// restarted caller needs: the position from the claim on, the length
// once copied.
TEST(QueueFault, AHeldGetKilledBeforeItsReleaseGivesTheMessageBack) {
  for (const auto point :
       {shmbus::detail::FaultPoint::get_claimed, shmbus::detail::FaultPoint::get_copied}) {
    const std::string name = unique_name("qheld");
    SegmentGuard guard(name);
    auto q = shmbus::Queue<Msg>::create(name, {.capacity = 8});
    for (std::uint32_t i = 0; i < 6; ++i)
      ASSERT_EQ(q.try_put(Msg{0, i, checksum(0, i)}), QueueResult::ok);
    struct Out {
      std::size_t length;
      std::uint64_t position;
    };
    auto* out = static_cast<Out*>(
        ::mmap(nullptr, sizeof(Out), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(out, MAP_FAILED);
    const pid_t child = fork_child([&]() -> int {
      auto core = shmbus::detail::QueueCore::open(name, shmbus::ObjectKind::queue,
                                                  shmbus::detail::type_tag<Msg>(), {});
      std::byte buf[sizeof(Msg)];
      std::size_t n = 0;
      std::uint64_t pos = 0;
      if (core.get_held(buf, n, pos) != QueueResult::ok || pos != 0) return 1;  // message 0
      out->length = ~std::size_t{0};
      out->position = ~std::uint64_t{0};
      arm(point, 1);
      (void)core.get_held(buf, out->length, out->position);  // message 1: killed
      return 2;
    });
    EXPECT_EQ(wait_child(child).signal, SIGKILL);
    // The position is stored at the claim, before anything is copied or
    // freed; the length once the copy is done.
    EXPECT_EQ(out->position, 1u);
    EXPECT_EQ(out->length,
              point == shmbus::detail::FaultPoint::get_claimed ? ~std::size_t{0} : sizeof(Msg));
    Msg m{};
    ASSERT_EQ(q.try_get(m), QueueResult::ok);  // the hint had moved past 1
    EXPECT_EQ(m.seq, 2u);
    EXPECT_EQ(q.recover_dead(), 1u);
    for (std::uint32_t want : {1u, 3u, 4u, 5u}) {
      ASSERT_EQ(q.try_get(m), QueueResult::ok) << "want " << want;
      EXPECT_EQ(m.seq, want);
      EXPECT_EQ(m.check, checksum(0, want));
    }
    EXPECT_EQ(q.try_get(m), QueueResult::empty);
    const shmbus::QueueStats s = q.stats();
    EXPECT_EQ(s.lost, 0u);
    EXPECT_EQ(s.delivered, 6u);
    EXPECT_EQ(s.committed, 6u);
    ::munmap(out, sizeof(Out));
  }
}

// A process held at a fault point: it says so, then waits for `go` (at
// most 30 s, so a failed test cannot leave it spinning). Set in the one
// child that is to stop there.
struct Hold {
  std::atomic<int> held;
  std::atomic<int> go;
  std::atomic<std::uint32_t> got;  // what the held consumer then took
};
Hold* g_hold = nullptr;
shmbus::detail::FaultPoint g_hold_point{};
void hold_here(shmbus::detail::FaultPoint p) noexcept {
  if (p != g_hold_point) return;
  g_hold->held.store(1);
  const auto deadline = shmbus::Clock::now() + 30s;
  while (g_hold->go.load() == 0 && shmbus::Clock::now() < deadline) shmbus::detail::cpu_relax();
}
void arm_hold(shmbus::detail::FaultPoint p, Hold* h) {
  g_hold = h;
  g_hold_point = p;
  shmbus::detail::set_fault_hook(&hold_here);
}

// [queue.giveback] against a consumer stepping past the claimed slot: a
// consumer C reads the head slot READING (claimed by held getter H2) and
// is held before it moves the read position past it; H2 is killed and its
// message given back (FULL again at the head, where the read position
// already is, so the recovery has nothing to move); then C moves the read
// position past the given-back message. Without the re-check after that
// move the message would sit behind the read position: no get would ever
// find it (the final get_for times out). The read position is at H2's
// slot because H1's earlier give-back moved it back there.
TEST(QueueFault, AConsumerSteppingPastAHeldClaimLeavesNoGivenBackMessageBehind) {
  using shmbus::detail::FaultPoint;
  const std::string name = unique_name("qpass");
  SegmentGuard guard(name);
  auto q = shmbus::Queue<Msg>::create(name, {.capacity = 8});
  for (std::uint32_t i = 0; i < 3; ++i)
    ASSERT_EQ(q.try_put(Msg{0, i, checksum(0, i)}), QueueResult::ok);
  shmbus::test::SharedBlock<Hold> h2_hold, c_hold;
  const auto held_getter = [&](auto arm_it) {
    return fork_child([&, arm_it]() -> int {
      auto core = shmbus::detail::QueueCore::open(name, shmbus::ObjectKind::queue,
                                                  shmbus::detail::type_tag<Msg>(), {});
      std::byte buf[sizeof(Msg)];
      std::size_t n = 0;
      std::uint64_t pos = ~std::uint64_t{0};
      arm_it();
      (void)core.get_held(buf, n, pos);
      return 2;  // not killed
    });
  };
  // H1 takes message 0 with a held get and is killed inside it: read
  // position 1 after its claim.
  const pid_t h1 = held_getter([] { arm(FaultPoint::get_claimed, 1); });
  ASSERT_EQ(wait_child(h1).signal, SIGKILL);
  // H2 claims message 1 (read position 2) and stays there, alive.
  const pid_t h2 = held_getter([&] { arm_hold(FaultPoint::get_claimed, &*h2_hold); });
  ASSERT_TRUE(shmbus::test::poll_until([&] { return h2_hold->held.load() == 1; }, 20s));
  // H1's message given back: FULL at 0, the read position back to 0.
  ASSERT_EQ(q.recover_dead(), 1u);
  Msg m{};
  ASSERT_EQ(q.try_get(m), QueueResult::ok);  // read position 0 -> 1
  ASSERT_EQ(m.seq, 0u);
  // C: its get finds slot 1 READING (H2) and stops before stepping past.
  const pid_t c = fork_child([&]() -> int {
    arm_hold(FaultPoint::get_passing, &*c_hold);
    Msg got{};
    if (q.try_get(got) != QueueResult::ok || got.check != checksum(0, got.seq)) return 1;
    c_hold->got.store(got.seq);
    return 0;
  });
  ASSERT_TRUE(shmbus::test::poll_until([&] { return c_hold->held.load() == 1; }, 20s));
  ::kill(h2, SIGKILL);
  ASSERT_EQ(wait_child(h2).signal, SIGKILL);
  ASSERT_EQ(q.recover_dead(), 1u);  // message 1 FULL again at 1
  c_hold->go.store(1);
  const auto cs = wait_child(c);
  ASSERT_TRUE(cs.exited && cs.code == 0) << "code " << cs.code << " signal " << cs.signal;
  // C took one of 1 and 2 (1 with the re-check), this process the other.
  const std::uint32_t first = c_hold->got.load();
  ASSERT_TRUE(first == 1 || first == 2) << first;
  ASSERT_EQ(q.get_for(m, 5s), QueueResult::ok) << "message " << 3 - first << " left behind";
  EXPECT_EQ(m.seq, 3 - first);
  EXPECT_EQ(m.check, checksum(0, m.seq));
  EXPECT_EQ(q.try_get(m), QueueResult::empty);
  const shmbus::QueueStats s = q.stats();
  EXPECT_EQ(s.lost, 0u);
  EXPECT_EQ(s.delivered, 3u);
  EXPECT_EQ(s.committed, 3u);
}

// The bridge's tagged put (QueueCore::put_tagged): a putter killed before
// its publication leaves DROPPED under its tag, one killed after it
// LANDED (decided by the recovery); an unknown tag is `none`.
TEST(QueueFault, ATaggedPutKilledLeavesItsOutcomeInTheRecords) {
  using shmbus::detail::FaultPoint;
  using shmbus::detail::TagState;
  const std::string name = unique_name("qtag");
  SegmentGuard guard(name);
  auto q = shmbus::Queue<Msg>::create(name, {.capacity = 8});
  auto core = shmbus::detail::QueueCore::open(name, shmbus::ObjectKind::queue,
                                              shmbus::detail::type_tag<Msg>(), {});
  const std::uint64_t tags[] = {0x1234, 0x5678};
  const FaultPoint points[] = {FaultPoint::put_written, FaultPoint::put_published};
  for (int i = 0; i < 2; ++i) {
    const pid_t child = fork_child([&]() -> int {
      auto c = shmbus::detail::QueueCore::open(name, shmbus::ObjectKind::queue,
                                               shmbus::detail::type_tag<Msg>(), {});
      const Msg m{1, static_cast<std::uint32_t>(i), checksum(1, i)};
      arm(points[i], 1);
      (void)c.put_tagged(std::as_bytes(std::span(&m, 1)), tags[i]);
      return 2;
    });
    EXPECT_EQ(wait_child(child).signal, SIGKILL);
    EXPECT_EQ(core.tagged_outcome(tags[i]), TagState::none);  // pending: not decided yet
    EXPECT_EQ(core.recover_dead(), 1u);
    // Read before the next child: it takes the freed record and its own
    // tagged put replaces the word (a restarted bridge reads first).
    EXPECT_EQ(core.tagged_outcome(tags[i]), i == 0 ? TagState::dropped : TagState::landed);
  }
  EXPECT_EQ(core.tagged_outcome(0x9abc), TagState::none);
  const Msg ok{2, 0, checksum(2, 0)};
  EXPECT_EQ(core.put_tagged(std::as_bytes(std::span(&ok, 1)), 0x9abc), QueueResult::ok);
  EXPECT_EQ(core.tagged_outcome(0x9abc), TagState::landed);
  Msg m{};
  ASSERT_EQ(q.try_get(m), QueueResult::ok);
  EXPECT_EQ(m.round, 1u);  // the published one
  EXPECT_EQ(m.seq, 1u);
  ASSERT_EQ(q.try_get(m), QueueResult::ok);
  EXPECT_EQ(m.round, 2u);
  const shmbus::QueueStats s = q.stats();
  EXPECT_EQ(s.dropped, 1u);
  EXPECT_EQ(s.committed, 2u);
}
