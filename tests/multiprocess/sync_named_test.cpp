// The primitives between separately started processes: each helper
// (tests/helpers/sync_peer.cpp) opens its objects by name, never by
// inheriting a handle. One test per user scenario.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using test::SegmentGuard;
using test::unique_name;
using namespace std::chrono_literals;

int exit_code(pid_t pid) {
  auto st = test::wait_child(pid);
  EXPECT_TRUE(st.exited) << "signal " << st.signal << " timed_out " << st.timed_out;
  return st.exited ? st.code : -1;
}

TEST(SyncNamed, ProducerSetsEventConsumerWaits) {
  SegmentGuard g(unique_name("ev"));
  auto ev = Event::create(g.name());
  pid_t consumer = test::spawn_helper("sync_peer", {"event-wait", g.name()});
  pid_t producer = test::spawn_helper("sync_peer", {"event-set", g.name()});
  EXPECT_EQ(exit_code(producer), 0);
  EXPECT_EQ(exit_code(consumer), 0);
  EXPECT_TRUE(ev.is_set());
}

TEST(SyncNamed, DoctorNotifiesAllPatients) {
  SegmentGuard gl(unique_name("ward.lock"));
  SegmentGuard gc(unique_name("ward"));
  SegmentGuard gf(unique_name("doctor-in"));
  auto lock = RLock::create(gl.name());
  auto cond = Condition::create(gc.name(), lock);
  auto flag = Value<int>::create(gf.name(), 0);
  std::vector<pid_t> patients;
  for (int i = 0; i < 3; ++i) {
    patients.push_back(test::spawn_helper("sync_peer", {"cond-wait", gc.name(), gf.name()}));
  }
  {
    std::unique_lock g(cond);
    flag.set(1);
    cond.notify_all();
  }
  for (pid_t p : patients) EXPECT_EQ(exit_code(p), 0);
}

TEST(SyncNamed, WorkersIncrementValueUnderLockExactly) {
  SegmentGuard g(unique_name("counter"));
  auto v = Value<long>::create(g.name(), 0);
  std::vector<pid_t> workers;
  for (int i = 0; i < 4; ++i) {
    workers.push_back(test::spawn_helper("sync_peer", {"value-inc", g.name(), "2500"}));
  }
  for (pid_t w : workers) EXPECT_EQ(exit_code(w), 0);
  EXPECT_EQ(v.get(), 10000);
}

TEST(SyncNamed, ThreeWorkersMeetAtBarrier) {
  SegmentGuard g(unique_name("meet"));
  auto b = Barrier::create(g.name(), 3);
  std::vector<pid_t> workers;
  for (int i = 0; i < 3; ++i)
    workers.push_back(test::spawn_helper("sync_peer", {"barrier", g.name()}));
  std::set<int> idx;
  for (pid_t w : workers) idx.insert(exit_code(w));
  EXPECT_EQ(idx, (std::set<int>{0, 1, 2}));
  EXPECT_FALSE(b.broken());
}

TEST(SyncNamed, SemaphoreTokensReachSeparateProcesses) {
  SegmentGuard g(unique_name("sem"));
  auto s = Semaphore::create(g.name(), 0);
  pid_t a = test::spawn_helper("sync_peer", {"sem-acquire", g.name()});
  pid_t b = test::spawn_helper("sync_peer", {"sem-acquire", g.name()});
  EXPECT_TRUE(s.release(2));
  EXPECT_EQ(exit_code(a), 0);
  EXPECT_EQ(exit_code(b), 0);
  EXPECT_EQ(s.get_value(), 0u);
}

TEST(SyncNamed, WrongKindFromHelperIsReported) {
  SegmentGuard g(unique_name("notevent"));
  auto l = Lock::create(g.name());
  pid_t p = test::spawn_helper("sync_peer", {"event-wait", g.name()});
  EXPECT_EQ(exit_code(p), 4);  // the helper caught Error(wrong_kind)
}

}  // namespace
}  // namespace shmbus
