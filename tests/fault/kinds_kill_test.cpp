// SIGKILL at a random point of the calls of the kinds no other kill test
// covers (Semaphore, Event, Condition, Value and Array with their lock,
// JoinableQueue, Listener accept, Topic subscribe): a child loops over the
// calls, counting its rounds in shared memory; the parent kills it after a
// random number of rounds (somewhere inside a call, or between two) and
// checks, by a deadline, the outcome the headers and README document for
// the survivors. Each failure prints its seed.
//
// SHMBUS_SOAK=1 runs ten times as many kills.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string>

#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

int kills() {
  const char* soak = std::getenv("SHMBUS_SOAK");
  return (soak != nullptr && soak[0] == '1') ? 100 : 10;
}

// Runs `loop` in a child (it bumps *rounds once per round, forever) and
// SIGKILLs it after a random number of rounds, at a random spin offset.
void kill_at_random(std::uint64_t seed,
                    const std::function<void(std::atomic<std::uint64_t>&)>& loop) {
  std::mt19937_64 rng(seed);
  test::SharedBlock<std::atomic<std::uint64_t>> rounds;
  const pid_t pid = test::fork_child([&] {
    loop(*rounds);
    return 0;
  });
  const std::uint64_t after = 1 + rng() % 200;
  if (!test::poll_until([&] { return rounds->load() >= after; }, 20s)) {
    ::kill(pid, SIGKILL);  // never left looping
    (void)test::wait_child(pid, 20s);
    FAIL() << "seed " << seed << ": the child never got going";
  }
  for (std::uint64_t spin = rng() % 20000; spin > 0; --spin) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  ::kill(pid, SIGKILL);
  const test::ChildStatus st = test::wait_child(pid, 20s);
  ASSERT_EQ(st.signal, SIGKILL) << "seed " << seed;
}

TEST(KindsKill, SemaphoreUserKilledAnywhereLeavesACountWithinItsBound) {
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("ksem"));
    auto sem = BoundedSemaphore::create(g.name(), 2);
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      auto mine = BoundedSemaphore::open(g.name());
      for (;;) {
        mine.acquire();
        (void)mine.try_release();
        rounds.fetch_add(1);
      }
    });
    // A unit the dead child held is gone, as in Python; the count is never
    // above its bound, and what is left can be taken and given back.
    const std::uint32_t left = sem.get_value();
    EXPECT_LE(left, 2u) << "seed " << k;
    for (std::uint32_t i = 0; i < left; ++i) EXPECT_TRUE(sem.acquire_for(5s)) << "seed " << k;
    EXPECT_FALSE(sem.try_acquire()) << "seed " << k;
    EXPECT_TRUE(sem.try_release(left)) << "seed " << k;
  }
}

TEST(KindsKill, EventUserKilledAnywhereLeavesItUsable) {
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("kev"));
    auto ev = Event::create(g.name());
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      auto mine = Event::open(g.name());
      for (;;) {
        mine.set();
        (void)mine.wait_for(1ms);
        mine.clear();
        (void)mine.wait_for(0ms);
        rounds.fetch_add(1);
      }
    });
    ev.clear();
    EXPECT_FALSE(ev.wait_for(1ms)) << "seed " << k;
    ev.set();
    EXPECT_TRUE(ev.wait_for(5s)) << "seed " << k;
  }
}

TEST(KindsKill, ConditionUserKilledAnywhereGivesTheLockBackOrOwnerDied) {
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("kcond"));
    g.add(g.name() + ".lock");
    auto cond = Condition::create(g.name());
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      auto mine = Condition::open(g.name());
      for (;;) {
        mine.lock();
        (void)mine.wait_for(100us);  // releases the lock while it waits
        mine.notify();
        mine.unlock();
        rounds.fetch_add(1);
      }
    });
    // Whether it died holding the lock (owner_died) or not (acquired), the
    // survivor gets it by the deadline, and wait/notify still work.
    const LockResult r = cond.acquire();
    ASSERT_TRUE(holds(r)) << "seed " << k;
    if (r == LockResult::owner_died) {  // killed holding it: the survivor repairs
      if (cond.get_lock() != nullptr) cond.get_lock()->make_consistent();
      if (cond.get_rlock() != nullptr) cond.get_rlock()->make_consistent();
    }
    EXPECT_FALSE(cond.wait_for(1ms)) << "seed " << k;  // nobody notifies
    cond.notify_all();
    cond.release();
    pid_t waiter = test::fork_child([&] {
      auto mine = Condition::open(g.name());
      mine.lock();
      const bool woken = mine.wait_for(10s);
      mine.unlock();
      return woken ? 0 : 1;
    });
    // Notify until the waiter has been woken (it may not be waiting yet).
    int status = 0;
    const bool reaped = test::poll_until(
        [&] {
          if (holds(cond.acquire_for(1s))) {
            cond.notify();
            cond.release();
          }
          return ::waitpid(waiter, &status, WNOHANG) == waiter;
        },
        20s);
    if (!reaped) {
      ::kill(waiter, SIGKILL);
      (void)test::wait_child(waiter, 20s);
    }
    ASSERT_TRUE(reaped) << "seed " << k << ": the waiter was never woken";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "seed " << k << ": the waiter's lock or wait failed";
  }
}

struct Wide {  // not lock-free: Value<Wide> copies under its lock
  std::uint64_t a, b, c, d;
};

// 4 KiB, so that a kill lands inside the copy under the lock often: a
// value torn there must be reported, never returned.
struct Page {
  std::uint64_t w[512];
  bool whole() const {
    return std::all_of(std::begin(w), std::end(w), [&](auto x) { return x == w[0]; });
  }
};
Page page(std::uint64_t i) {
  Page p;
  std::fill(std::begin(p.w), std::end(p.w), i);
  return p;
}

TEST(KindsKill, ValueWriterKilledAnywhereIsNeverReadTornAndStaysUsable) {
  int reported = 0;
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("kval"));
    auto v = Value<Page>::create(g.name(), page(0));
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      auto mine = Value<Page>::open(g.name());
      for (std::uint64_t i = 1;; ++i) {
        mine.set(page(i));
        rounds.fetch_add(1);
      }
    });
    // The child may have died inside set(), in the middle of the bytes:
    // get() returns a whole value or throws peer_dead (torn() true), the
    // same every time, and a set() makes it whole again.
    for (int i = 0; i < 2; ++i) {
      Page got{};
      std::optional<Errc> c;
      try {
        got = v.get();
      } catch (const Error& e) {
        c = e.code();
      }
      if (!c) {
        EXPECT_TRUE(got.whole()) << "seed " << k << ": a torn value was returned";
        EXPECT_FALSE(v.torn()) << "seed " << k;
      } else {
        EXPECT_EQ(*c, Errc::peer_dead) << "seed " << k;
        EXPECT_TRUE(v.torn()) << "seed " << k;
        if (i == 0) ++reported;
      }
    }
    EXPECT_NO_THROW(v.set(page(7))) << "seed " << k;
    EXPECT_NO_THROW(EXPECT_EQ(v.get().w[511], 7u)) << "seed " << k;
  }
  std::printf("ValueWriterKilledAnywhere: %d of %d kills left a report\n", reported, kills());
}

// The same for an Array written through a[i] = ... and through a View.
TEST(KindsKill, ArrayWriterKilledAnywhereIsNeverReadTornAndStaysUsable) {
  int reported = 0;
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("karr"));
    auto a = Array<Page>::create(g.name(), 3, page(0));
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      auto mine = Array<Page>::open(g.name());
      for (std::uint64_t i = 1;; ++i) {
        if (i % 2 == 0) {
          mine[i % 3] = page(i);
        } else {
          auto view = mine.view();
          view[i % 3] = page(i);
        }
        rounds.fetch_add(1);
      }
    });
    bool any = false;
    for (std::size_t j = 0; j < a.size(); ++j) {
      try {
        EXPECT_TRUE(a.get(j).whole()) << "seed " << k << ": element " << j << " returned torn";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), Errc::peer_dead) << "seed " << k;
        EXPECT_TRUE(a.torn()) << "seed " << k;
        any = true;
      }
    }
    if (any) ++reported;
    for (std::size_t j = 0; j < a.size(); ++j) EXPECT_NO_THROW(a.set(j, page(7))) << "seed " << k;
    if (a.torn()) a.clear_torn();  // a View's report covers every element
    EXPECT_NO_THROW(EXPECT_EQ(a.view()[2].w[511], 7u)) << "seed " << k;
  }
  std::printf("ArrayWriterKilledAnywhere: %d of %d kills left a report\n", reported, kills());
}

// Deterministic: killed holding the lock. get() took it over with
// owner_died, its unlock made the lock not recoverable and every later
// get() and set() threw Errc::peer_dead.
TEST(KindsKill, ValueLockHolderKilledLeavesGetSetAndViewUsable) {
  SegmentGuard g(unique_name("kvlk")), gr(unique_name("kvlk-ready"));
  auto v = Value<Wide>::create(g.name(), Wide{1, 2, 3, 4});
  auto a = Array<Wide>::create(g.add(g.name() + "-a"), 4);
  auto ready = Event::create(gr.name());
  const pid_t holder = test::fork_child([&] {
    auto mine = Value<Wide>::open(g.name());
    auto arr = Array<Wide>::open(g.name() + "-a");
    mine.get_lock().lock();
    arr.get_lock().lock();
    Event::open(gr.name()).set();
    for (;;) ::pause();
    return 0;
  });
  ASSERT_TRUE(ready.wait_for(10s));
  ::kill(holder, SIGKILL);
  ASSERT_EQ(test::wait_child(holder).signal, SIGKILL);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NO_THROW(EXPECT_EQ(v.get().c, 3u)) << "get " << i;
    EXPECT_NO_THROW(v.set(Wide{1, 2, 3, 4})) << "set " << i;
    EXPECT_NO_THROW(a.set(1, Wide{5, 5, 5, 5})) << "Array set " << i;
    EXPECT_NO_THROW(EXPECT_EQ(a.get(1).a, 5u)) << "Array get " << i;
    EXPECT_NO_THROW(EXPECT_EQ(a.view().size(), 4u)) << "Array view " << i;
  }
  EXPECT_EQ(v.get_lock().acquire_for(1s), LockResult::acquired);
  v.get_lock().release();
}

TEST(KindsKill, JoinableQueueConsumerKilledAnywhereLosesNoCountOfTheRest) {
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("kjq"));
    auto q = JoinableQueue<int>::create(g.name(), {.capacity = 64});
    test::SharedBlock<std::atomic<std::uint64_t>> done;  // task_done() calls that returned ok
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      auto mine = JoinableQueue<int>::open(g.name());
      for (;;) {
        (void)mine.put(1);
        int v = 0;
        if (mine.get(v) == QueueResult::ok && mine.task_done() == QueueResult::ok)
          done->fetch_add(1);
        rounds.fetch_add(1);
      }
    });
    // Settle the dead child's record: every task_done() it returned ok for
    // is counted (one more if it died between the count and its return),
    // and it got at most one item it never finished.
    (void)q.recover_dead();
    QueueStats s = q.stats();
    EXPECT_GE(s.tasks_done, done->load()) << "seed " << k;
    EXPECT_LE(s.tasks_done, done->load() + 1) << "seed " << k;
    ASSERT_LE(s.tasks_done, s.delivered) << "seed " << k;
    const std::uint64_t undone = s.delivered - s.tasks_done;
    EXPECT_LE(undone, 1u) << "seed " << k;
    EXPECT_LE(s.lost, 1u) << "seed " << k;
    // The survivor drains what is left (at most the child's one item put
    // and not got), each get answered by a task_done; then the books
    // balance exactly (a slot a killed put left is stepped over).
    int v = 0;
    int drained = 0;
    while (q.try_get(v) == QueueResult::ok) {
      ++drained;
      EXPECT_EQ(q.task_done(), QueueResult::ok) << "seed " << k;
    }
    EXPECT_LE(drained, 1) << "seed " << k;
    s = q.stats();
    EXPECT_EQ(s.depth, 0u) << "seed " << k;
    EXPECT_EQ(s.committed, s.delivered + s.lost) << "seed " << k;
    EXPECT_EQ(s.delivered - s.tasks_done, undone) << "seed " << k;
    // An item the child got and never finished holds join() (as Python's)
    // until someone calls task_done() for it; one call more is value_error.
    EXPECT_EQ(q.join_for(undone == 0 ? 5s : 20ms), undone == 0) << "seed " << k;
    for (std::uint64_t i = 0; i < undone; ++i) {
      EXPECT_EQ(q.task_done(), QueueResult::ok) << "seed " << k;
    }
    EXPECT_EQ(q.task_done(), QueueResult::value_error) << "seed " << k;
    EXPECT_TRUE(q.join_for(5s)) << "seed " << k;
    s = q.stats();
    EXPECT_EQ(s.tasks_done + s.lost, s.committed) << "seed " << k;
  }
}

TEST(KindsKill, ListenerServerKilledAnywhereInAcceptGivesClientsAnError) {
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("klis"));
    struct Prefix {
      std::string p;
      ~Prefix() { test::remove_names_with_prefix(p); }
    } dependents{g.name() + "."};
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      Listener l(g.name());
      for (;;) {
        if (auto c = l.accept_for(1ms)) c->close();
        rounds.fetch_add(1);
      }
    });
    // A client of the dead server: an Error (not a hang) by its deadline;
    // or, once the name is free, a new server takes it.
    try {
      auto c = Client(g.name(), 2s);
      ADD_FAILURE() << "seed " << k << ": connected to a dead server";
    } catch (const Error&) {
    }
    EXPECT_NO_THROW({ Listener again(g.name()); }) << "seed " << k;
  }
}

TEST(KindsKill, SubscriberKilledAnywhereInSubscribeNeverBlocksThePublisher) {
  for (int k = 0; k < kills(); ++k) {
    SegmentGuard g(unique_name("ktop"));
    auto topic = Topic::create(g.name(), {.slots = 8, .max_message = 16});
    kill_at_random(k, [&](std::atomic<std::uint64_t>& rounds) {
      auto t = Topic::open(g.name());
      for (;;) {
        auto s = t.subscribe({.policy = SubscriberPolicy::reliable});
        s.close();
        rounds.fetch_add(1);
      }
    });
    // A reliable subscriber that died half joined is evicted: publishing
    // more than the ring holds, while a live reliable one reads, succeeds.
    auto live = topic.subscribe({.policy = SubscriberPolicy::reliable});
    auto pub = topic.publisher();
    std::array<std::byte, 16> m{}, buf{};
    std::size_t len = 0;
    for (int i = 0; i < 40; ++i) {
      ASSERT_EQ(pub.publish_for(m, 5s), PublishResult::ok) << "seed " << k << ", message " << i;
      ASSERT_EQ(live.recv_for(buf, len, 5s), ReceiveResult::ok) << "seed " << k;
    }
  }
}

}  // namespace
}  // namespace shmbus
