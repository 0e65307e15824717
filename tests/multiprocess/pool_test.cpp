// Pool: map/starmap/imap/apply across forked workers, failures that come
// back as errors (a throwing task, a killed worker, a throwing
// initializer), worker replacement, and the close/join/terminate lifetime.
#include "shmbus/pool.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "shmbus/service.hpp"
#include "shmbus/topology.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;

std::int64_t square(std::int64_t x) { return x * x; }
pid_t whoami(int) { return ::getpid(); }

struct Point {
  double x;
  double y;
};
double weighted(int n, double w, Point p) { return n * w + p.x - p.y; }

int fails_at_13(int x) {
  if (x == 13) throw std::runtime_error("thirteen is unlucky");
  return x + 1;
}

// Ends its own worker the hard way when it meets 7.
int dies_at_7(int x) {
  if (x == 7) ::raise(SIGKILL);
  return x;
}

int g_initialised = 0;  // set in each worker by its initializer
int initialised(int) { return g_initialised; }

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Everything an imap iterator yields: its values, and the errors its
// next() threw on the way (shmbus::Error, and the what() of others).
struct Drained {
  std::vector<int> values;
  std::vector<Error> errors;
  std::vector<std::string> others;
};
Drained drain(IMapIterator<int>& it) {
  Drained d;
  for (;;) {
    try {
      auto v = it.next();
      if (!v) return d;
      d.values.push_back(*v);
    } catch (const Error& e) {
      d.errors.push_back(e);
    } catch (const std::exception& e) {
      d.others.emplace_back(e.what());
    }
  }
}

TEST(Pool, MapReturnsEveryResultInOrderForAnyChunkSize) {
  Pool pool({.processes = 3});
  std::vector<std::int64_t> xs(1000);
  std::iota(xs.begin(), xs.end(), -500);
  std::vector<std::int64_t> want;
  for (auto x : xs) want.push_back(x * x);
  for (std::size_t chunk : {0u, 1u, 7u, 1000u, 5000u}) {
    EXPECT_EQ(pool.map(square, xs, chunk), want) << "chunksize " << chunk;
  }
  EXPECT_TRUE(pool.map(square, std::vector<std::int64_t>{}).empty());
}

TEST(Pool, TasksRunInTheWorkersNotTheCaller) {
  Pool pool({.processes = 2});
  const auto workers = pool.worker_pids();
  ASSERT_EQ(workers.size(), 2u);
  EXPECT_EQ(pool.processes(), 2u);
  const pid_t ran = pool.apply(whoami, 0);
  EXPECT_NE(ran, ::getpid());
  EXPECT_NE(std::find(workers.begin(), workers.end(), ran), workers.end());
  // A captureless lambda travels like a function.
  EXPECT_EQ(pool.apply([](int a, int b) { return a * 10 + b; }, 4, 2), 42);
}

TEST(Pool, StarmapUnpacksTuplesPairsAndArrays) {
  Pool pool({.processes = 2});
  std::vector<std::tuple<int, double, Point>> args;
  for (int i = 0; i < 50; ++i) args.emplace_back(i, 0.5, Point{1.0 * i, 2.0});
  const auto got = pool.starmap(weighted, args);
  ASSERT_EQ(got.size(), args.size());
  for (int i = 0; i < 50; ++i) EXPECT_DOUBLE_EQ(got[i], i * 0.5 + i - 2.0);

  std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}};
  EXPECT_EQ(pool.starmap([](int a, int b) { return a + b; }, pairs), (std::vector<int>{3, 7}));
  std::vector<std::array<int, 3>> triples{{1, 2, 3}, {4, 5, 6}};
  EXPECT_EQ(pool.starmap([](int a, int b, int c) { return a * b * c; }, triples),
            (std::vector<int>{6, 120}));
}

TEST(Pool, ImapInOrderAndImapUnorderedDeliverEveryResult) {
  Pool pool({.processes = 3});
  const auto xs = iota(300);
  std::vector<int> ordered;
  for (int v : pool.imap([](int x) { return 2 * x; }, xs, 4)) ordered.push_back(v);
  std::vector<int> want;
  for (int x : xs) want.push_back(2 * x);
  EXPECT_EQ(ordered, want);

  std::vector<int> any;
  auto it = pool.imap_unordered([](int x) { return 2 * x; }, xs);
  while (auto v = it.next()) any.push_back(*v);
  std::sort(any.begin(), any.end());
  EXPECT_EQ(any, want);
}

TEST(Pool, AnExceptionInATaskComesBackAsItsOwnType) {
  Pool pool({.processes = 2});
  try {
    (void)pool.map(fails_at_13, iota(40), 5);
    ADD_FAILURE() << "map did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(typeid(e), typeid(std::runtime_error));
    EXPECT_STREQ(e.what(), "thirteen is unlucky");
  }
  auto r = pool.apply_async(fails_at_13, 13);
  r.wait();
  EXPECT_FALSE(r.successful());
  EXPECT_THROW((void)r.get(), std::runtime_error);
  // The pool goes on working.
  EXPECT_EQ(pool.apply(fails_at_13, 1), 2);
}

// A task that ends the way a Service call can: by item, a ServerGone or a
// CallTimedOut, each with both answers of maybe_executed().
int fails_like_a_call(int x) {
  switch (x) {
    case 0:
      throw ServerGone("svc", "the server died", false);
    case 1:
      throw ServerGone("svc", "the server died", true);
    case 2:
      throw CallTimedOut("svc", "no response by the deadline", false);
    case 3:
      throw CallTimedOut("svc", "no response by the deadline", true);
    default:
      return x;
  }
}

TEST(Pool, AServiceCallsFailureComesBackWithItsTypeAndWhetherItMayHaveRun) {
  Pool pool({.processes = 2});
  for (int x = 0; x < 4; ++x) {
    SCOPED_TRACE(x);
    try {
      (void)pool.apply(fails_like_a_call, x);
      ADD_FAILURE() << "apply did not throw";
    } catch (const CallFailed& e) {
      EXPECT_EQ(typeid(e), x < 2 ? typeid(ServerGone) : typeid(CallTimedOut));
      EXPECT_EQ(e.code(), x < 2 ? Errc::peer_dead : Errc::timed_out);
      EXPECT_EQ(e.maybe_executed(), x % 2 == 1);
      EXPECT_EQ(e.object(), "svc");
    }
  }
}

TEST(Pool, ImapThrowsOnceForAFailedChunkAndGoesOn) {
  Pool pool({.processes = 2});
  auto it = pool.imap(fails_at_13, iota(20), 1);
  const Drained d = drain(it);
  EXPECT_TRUE(d.errors.empty());
  ASSERT_EQ(d.others.size(), 1u);
  EXPECT_EQ(d.others[0], "thirteen is unlucky");
  std::vector<int> want;
  for (int x = 0; x < 20; ++x) {
    if (x != 13) want.push_back(x + 1);
  }
  EXPECT_EQ(d.values, want);
}

TEST(Pool, AKilledWorkerFailsOnlyItsChunkAndIsReplaced) {
  Pool pool({.processes = 2});
  const auto before = pool.worker_pids();
  auto it = pool.imap_unordered(dies_at_7, iota(30), 1);
  Drained d = drain(it);
  ASSERT_EQ(d.errors.size(), 1u);
  const std::string what = d.errors[0].what();
  EXPECT_EQ(d.errors[0].code(), Errc::peer_dead);
  EXPECT_NE(what.find("signal 9"), std::string::npos) << what;
  EXPECT_NE(what.find("item 7"), std::string::npos) << what;
  std::vector<int> got = std::move(d.values);
  std::sort(got.begin(), got.end());
  std::vector<int> want = iota(30);
  want.erase(want.begin() + 7);
  EXPECT_EQ(got, want);  // every other item exactly once
  const auto after = pool.worker_pids();
  ASSERT_EQ(after.size(), 2u);
  EXPECT_NE(after, before);
  EXPECT_EQ(pool.map(square, std::vector<std::int64_t>{3, 4}), (std::vector<std::int64_t>{9, 16}));
}

TEST(Pool, AWorkerKilledFromOutsideIsReplacedAndWorkGoesOn) {
  Pool pool({.processes = 2});
  const pid_t victim = pool.worker_pids()[0];
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  // It died before taking a task: what it was given goes to the other
  // worker and to its replacement, and nothing fails.
  std::vector<std::int64_t> xs(200, 3);
  EXPECT_EQ(pool.map(square, xs, 1), std::vector<std::int64_t>(200, 9));
  const auto now = pool.worker_pids();
  ASSERT_EQ(now.size(), 2u);
  EXPECT_EQ(std::count(now.begin(), now.end(), victim), 0);
  EXPECT_EQ(pool.map(square, xs), std::vector<std::int64_t>(200, 9));
}

Pool* g_pool = nullptr;  // for a task that tries to use its own pool
int uses_its_pool(int x) { return static_cast<int>(g_pool->apply(square, std::int64_t{x})); }

TEST(Pool, AForkedCopyCannotUseOrStopThePool) {
  // One task per worker: the second worker is forked after g_pool is set.
  Pool pool({.processes = 1, .maxtasksperchild = 1});
  g_pool = &pool;
  EXPECT_EQ(pool.apply(square, 1), 1);
  // The worker's copy refuses (a shmbus::Error comes back as itself).
  EXPECT_EQ(test::code_of([&] { (void)pool.apply(uses_its_pool, 2); }), Errc::invalid_argument);
  pid_t child = test::fork_child([&] {
    if (test::code_of([&] { (void)pool.apply(square, 2); }) != Errc::invalid_argument) return 1;
    pool.terminate();  // leaves the parent's workers alone
    return 0;
  });
  EXPECT_EQ(test::wait_child(child).code, 0);
  EXPECT_EQ(pool.apply(square, 3), 9);
  g_pool = nullptr;
}

TEST(Pool, InitializerRunsInEveryWorkerBeforeItsTasks) {
  Pool pool({.processes = 2, .initializer = [] { g_initialised = 42; }});
  for (int v : pool.map(initialised, iota(20), 1)) EXPECT_EQ(v, 42);
  EXPECT_EQ(g_initialised, 0);  // not in the caller
}

TEST(Pool, AThrowingInitializerBreaksThePoolWithAClearError) {
  Pool pool({.processes = 2, .initializer = [] { throw std::runtime_error("no config"); }});
  Errc first = test::code_of([&] { (void)pool.map(square, std::vector<std::int64_t>(8, 1), 1); });
  EXPECT_EQ(first, Errc::peer_dead);
  // Every replacement fails the same way until the pool calls itself broken.
  for (int i = 0; i < 20; ++i) {
    try {
      (void)pool.apply(square, 1);
    } catch (const Error& e) {
      if (std::string(e.what()).find("broken") != std::string::npos) {
        SUCCEED();
        return;
      }
      EXPECT_EQ(e.code(), Errc::peer_dead);
    }
  }
  ADD_FAILURE() << "the pool never said it was broken";
}

TEST(Pool, MaxTasksPerChildStartsFreshWorkers) {
  Pool pool({.processes = 1, .maxtasksperchild = 2});
  const auto pids = pool.map(whoami, iota(10), 1);
  const std::set<pid_t> distinct(pids.begin(), pids.end());
  EXPECT_EQ(distinct.size(), 5u);
  for (std::size_t i = 0; i + 1 < pids.size(); i += 2) EXPECT_EQ(pids[i], pids[i + 1]);
}

TEST(Pool, CloseThenJoinFinishesSubmittedWork) {
  Pool pool({.processes = 2});
  EXPECT_EQ(test::code_of([&] { pool.join(); }), Errc::invalid_argument);
  auto a = pool.map_async(square, std::vector<std::int64_t>{1, 2, 3});
  auto b = pool.apply_async(square, 5);
  pool.close();
  EXPECT_EQ(test::code_of([&] { (void)pool.apply_async(square, 1); }), Errc::closed);
  pool.join();
  ASSERT_TRUE(a.ready());
  EXPECT_EQ(a.get(), (std::vector<std::int64_t>{1, 4, 9}));
  EXPECT_EQ(b.get(), 25);
}

TEST(Pool, TerminateFailsWhatIsUnfinished) {
  Pool pool({.processes = 1});
  auto stuck = pool.apply_async([] {
    for (;;) ::pause();  // until the pool kills it
  });
  EXPECT_FALSE(stuck.wait_for(20ms));
  pool.terminate();
  EXPECT_TRUE(stuck.ready());
  EXPECT_EQ(test::code_of([&] { stuck.get(); }), Errc::closed);
  pool.join();  // fine after terminate
}

TEST(Pool, VoidFunctionsAndResultsThatOutliveThePool) {
  AsyncResult<void> r = [] {
    Pool pool({.processes = 1});
    auto done = pool.apply_async([](int) {}, 1);
    done.wait();
    return done;
  }();
  EXPECT_TRUE(r.successful());
  r.get();
}

TEST(Pool, CallbacksRunInTheCallerAsResultsAreCollected) {
  Pool pool({.processes = 2});
  std::vector<int> values;
  std::vector<std::string> errors;
  for (int x = 0; x < 20; ++x) {
    // The results are dropped: the callbacks still run, once each.
    (void)pool.apply_async(fails_at_13, x)
        .then([&](int v) { values.push_back(v); },
              [&](const std::exception& e) { errors.emplace_back(e.what()); });
  }
  int lists = 0;
  int voids = 0;
  (void)pool.map_async(square, std::vector<std::int64_t>{1, 2, 3})
      .then([&](const std::vector<std::int64_t>& v) {
        EXPECT_EQ(v, (std::vector<std::int64_t>{1, 4, 9}));
        ++lists;
      });
  (void)pool.apply_async([](int) {}, 0).then([&] { ++voids; });
  EXPECT_TRUE(values.empty());  // nothing runs outside a call into the pool
  pool.close();
  pool.join();  // collects, and runs the callbacks here
  std::sort(values.begin(), values.end());
  std::vector<int> want;
  for (int x = 0; x < 20; ++x) {
    if (x != 13) want.push_back(x + 1);
  }
  EXPECT_EQ(values, want);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("thirteen is unlucky"), std::string::npos) << errors[0];
  EXPECT_EQ(lists, 1);
  EXPECT_EQ(voids, 1);
}

TEST(Pool, ThenOnAResultAlreadyDoneRunsAtOnce) {
  Pool pool({.processes = 1});
  auto r = pool.apply_async(square, 6);
  EXPECT_EQ(r.get(), 36);
  std::int64_t seen = 0;
  r.then([&](std::int64_t v) { seen = v; });
  EXPECT_EQ(seen, 36);
}

TEST(Pool, ArgumentsLargerThanAFrameAreRefused) {
  struct Big {
    std::array<char, 64 << 10> bytes;
  };
  Pool pool({.processes = 1, .pipe_capacity = 64 << 10});
  Big big{};
  EXPECT_EQ(test::code_of([&] { (void)pool.apply([](Big b) { return b.bytes[0]; }, big); }),
            Errc::too_large);
}

// The one cpu a worker may run on, or -1 if it may run on several.
int only_cpu(int) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1) return -1;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) return c;
  }
  return -1;
}

TEST(Pool, PinnedWorkersRunOnTheCpusGiven) {
  const CpuList allowed = this_thread_cpus();
  ASSERT_FALSE(allowed.empty());
  Pool pool({.processes = 3, .cpus = {allowed.back()}, .pin = true});
  for (int c : pool.map(only_cpu, iota(12), 1)) EXPECT_EQ(c, allowed.back());

  Pool spread({.cpus = allowed, .pin = true});
  EXPECT_EQ(spread.processes(), allowed.size());
  std::set<int> used;
  for (int c : spread.map(only_cpu, iota(static_cast<int>(allowed.size()) * 8), 1)) {
    EXPECT_NE(std::find(allowed.begin(), allowed.end(), c), allowed.end()) << c;
    used.insert(c);
  }
  EXPECT_EQ(used.size(), allowed.size());  // every worker got chunks, each on its own cpu
}

}  // namespace
}  // namespace shmbus
