// Deterministic kill points (issue 15): a pipe writer or reader, and a
// lock holder, SIGKILLed at each labelled step of send, recv, close,
// acquire and release (detail/fault.hpp), on a random operation of its
// run. The survivor never hangs: every untimed call returns once the peer
// is dead, with every message committed before the death delivered once,
// in order, intact, and then peer_dead. Each test prints how many kills
// landed at each point (the states it reached); the queue's points are
// driven the same way in queue_kill_test.
//
// SHMBUS_SOAK=1 runs ten times as many kills.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/condition.hpp"
#include "shmbus/detail/fault.hpp"
#include "shmbus/event.hpp"
#include "shmbus/inspect.hpp"
#include "shmbus/lock.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/value.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using detail::FaultPoint;
using test::code_of;
using test::SegmentGuard;
using test::unique_name;

int kills_per_point() {
  const char* soak = std::getenv("SHMBUS_SOAK");
  return (soak != nullptr && soak[0] == '1') ? 200 : 20;
}

// Armed in the victim only: SIGKILL at the n-th time `point` comes.
FaultPoint g_point{};
int g_countdown = 0;
void arm(FaultPoint point, int nth) {
  g_point = point;
  g_countdown = nth;
  detail::set_fault_hook([](FaultPoint p) noexcept {
    if (p == g_point && --g_countdown == 0) ::raise(SIGKILL);
  });
}

const char* point_name(FaultPoint p) {
  switch (p) {
    case FaultPoint::send_reserved:
      return "send_reserved";
    case FaultPoint::send_written:
      return "send_written";
    case FaultPoint::recv_peeked:
      return "recv_peeked";
    case FaultPoint::close_begun:
      return "close_begun";
    case FaultPoint::lock_taken:
      return "lock_taken";
    case FaultPoint::lock_releasing:
      return "lock_releasing";
    case FaultPoint::cells_writing:
      return "cells_writing";
    default:
      return "queue point";
  }
}

void report(const char* test, const std::map<FaultPoint, int>& kills) {
  std::printf("%s: states reached:", test);
  for (const auto& [p, n] : kills) std::printf(" %s=%d", point_name(p), n);
  std::printf("\n");
}

// Message i: `size` bytes, every byte derived from i (a torn or misplaced
// message fails the check).
std::vector<std::byte> message(int i, std::size_t size) {
  std::vector<std::byte> m(size);
  for (std::size_t k = 0; k < size; ++k) m[k] = static_cast<std::byte>((i * 131 + k * 7) & 0xff);
  return m;
}
std::size_t size_of(int i) {
  return i % 5 == 4 ? 10000 : static_cast<std::size_t>(i % 64) * 3;  // some fragmented
}

// A writer killed at a send step, on its n-th send (or in close()): the
// reader gets messages 0..k-1 intact and in order, then peer_dead, from an
// untimed recv.
TEST(KillPoints, PipeWriterKilledAtEachSendStep) {
  std::mt19937 rng(42);
  std::map<FaultPoint, int> kills;
  test::SharedBlock<std::atomic<int>> done;  // messages the writer finished sending
  for (FaultPoint point :
       {FaultPoint::send_reserved, FaultPoint::send_written, FaultPoint::close_begun}) {
    for (int round = 0; round < kills_per_point(); ++round) {
      auto [r, w] = Pipe(PipeOptions{.duplex = false, .capacity = 4096});
      // A fragmented message passes a send point once per fragment.
      const int nth = point == FaultPoint::close_begun ? 1 : 1 + static_cast<int>(rng() % 60);
      const int total = point == FaultPoint::close_begun ? 1 + static_cast<int>(rng() % 20) : 40;
      done->store(0);
      const pid_t writer = test::fork_child([&] {
        arm(point, nth);
        for (int i = 0; i < total; done->store(++i)) {
          // try_ sends, and waiting ones when the ring is full: both take
          // the out-of-line path the points are on.
          if (w.try_send_bytes(message(i, size_of(i))) == SendResult::ok) continue;
          if (w.send_bytes_for(message(i, size_of(i)), 10s) != SendResult::ok) return 1;
        }
        w.close();
        return 0;
      });
      w.close();
      int got = 0;
      RecvResult end = RecvResult::ok;
      for (;;) {
        std::vector<std::byte> m;
        end = r.recv_bytes(m);  // untimed: must return when the writer dies
        if (end != RecvResult::ok) break;
        ASSERT_EQ(m, message(got, size_of(got))) << "message " << got << " torn or out of order";
        ++got;
      }
      const auto st = test::wait_child(writer);
      ASSERT_EQ(st.signal, SIGKILL) << point_name(point) << " never came";
      EXPECT_EQ(end, RecvResult::peer_dead) << to_string(end);
      // Every message whose send returned arrived; the one being sent
      // (possibly some of its fragments committed) did not.
      EXPECT_EQ(got, done->load()) << point_name(point);
      ++kills[point];
    }
  }
  report("PipeWriterKilledAtEachSendStep", kills);
}

// A reader killed between reading a frame and releasing its space, on
// its n-th receive: the writer, sending until the ring is full, gets
// peer_dead from an untimed send instead of waiting for room forever.
TEST(KillPoints, PipeReaderKilledBetweenPeekAndRelease) {
  std::mt19937 rng(7);
  std::map<FaultPoint, int> kills;
  for (int round = 0; round < kills_per_point(); ++round) {
    auto [r, w] = Pipe(PipeOptions{.duplex = false, .capacity = 4096});
    const int nth = 1 + static_cast<int>(rng() % 20);
    const pid_t reader = test::fork_child([&] {
      arm(FaultPoint::recv_peeked, nth);
      for (;;) {
        std::vector<std::byte> m;
        if (r.recv_bytes(m) != RecvResult::ok) return 1;
      }
    });
    r.close();
    SendResult res = SendResult::ok;
    for (int i = 0; res == SendResult::ok; ++i) res = w.send_bytes(message(i, 200));
    EXPECT_EQ(res, SendResult::peer_dead) << to_string(res);
    EXPECT_EQ(test::wait_child(reader).signal, SIGKILL);
    ++kills[FaultPoint::recv_peeked];
  }
  report("PipeReaderKilledBetweenPeekAndRelease", kills);
}

// A lock holder killed between taking the word and writing its identity,
// or between clearing its identity and freeing the word: the next
// acquirer gets owner_died (untimed acquire() returns it), and the lock
// works again after make_consistent().
TEST(KillPoints, LockHolderKilledInsideAcquireAndRelease) {
  std::map<FaultPoint, int> kills;
  for (FaultPoint point : {FaultPoint::lock_taken, FaultPoint::lock_releasing}) {
    for (int round = 0; round < kills_per_point(); ++round) {
      SegmentGuard g(unique_name("kplock"));
      auto lock = Lock::create(g.name());
      const pid_t holder = test::fork_child([&] {
        auto mine = Lock::open(g.name());
        arm(point, 1 + round % 3);
        for (int i = 0; i < 3; ++i) {
          if (mine.acquire() != LockResult::acquired) return 1;
          mine.release();
        }
        return 2;
      });
      EXPECT_EQ(test::wait_child(holder).signal, SIGKILL) << point_name(point);
      EXPECT_EQ(lock.acquire(), LockResult::owner_died) << point_name(point);
      lock.make_consistent();
      lock.release();
      EXPECT_EQ(lock.acquire_for(1s), LockResult::acquired);
      lock.release();
      ++kills[point];
    }
  }
  report("LockHolderKilledInsideAcquireAndRelease", kills);
}

struct Wide {  // not lock-free: Value<Wide> copies under its lock
  std::uint64_t a, b, c, d;
  bool operator==(const Wide&) const = default;
};

// Runs `body` in a child armed to die at the first cells_writing point.
void die_writing(const std::function<void()>& body) {
  const pid_t writer = test::fork_child([&] {
    arm(FaultPoint::cells_writing, 1);
    body();
    return 2;  // the point never came
  });
  ASSERT_EQ(test::wait_child(writer).signal, SIGKILL);
}

// Killed between marking the value and writing its bytes: every later
// get() (in any process) throws peer_dead and torn() says so, until a
// whole set(); the lock is repaired, not left not recoverable.
TEST(KillPoints, ValueWriterKilledBetweenMarkAndBytesIsReportedUntilSetWhole) {
  SegmentGuard g(unique_name("kpval"));
  auto v = Value<Wide>::create(g.name(), Wide{1, 1, 1, 1});
  die_writing([&] { Value<Wide>::open(g.name()).set(Wide{2, 2, 2, 2}); });
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(code_of([&] { (void)v.get(); }), Errc::peer_dead) << "get " << i;
    EXPECT_TRUE(v.torn()) << i;
  }
  const pid_t other = test::fork_child([&] {
    auto mine = Value<Wide>::open(g.name());
    return code_of([&] { (void)mine.get(); }) == Errc::peer_dead && mine.torn() ? 0 : 1;
  });
  EXPECT_EQ(test::wait_child(other).code, 0) << "another process reads it silently";
  v.set(Wide{3, 3, 3, 3});
  EXPECT_FALSE(v.torn());
  EXPECT_EQ(v.get(), (Wide{3, 3, 3, 3}));
  EXPECT_EQ(v.get_lock().acquire_for(1s), LockResult::acquired);
  v.get_lock().release();
}

// The same death taken over by std::scoped_lock on get_lock() (lock()):
// the lock is repaired (later calls work, not peer_dead "not recoverable")
// and the report still reaches get(); clear_torn() accepts the bytes.
TEST(KillPoints, ValueLockTakenOverByScopedLockIsRepairedAndKeepsTheReport) {
  SegmentGuard g(unique_name("kpvsl"));
  auto v = Value<Wide>::create(g.name(), Wide{1, 1, 1, 1});
  die_writing([&] { Value<Wide>::open(g.name()).set(Wide{2, 2, 2, 2}); });
  { std::scoped_lock lk(v.get_lock()); }
  EXPECT_EQ(code_of([&] { (void)v.get(); }), Errc::peer_dead);
  EXPECT_FALSE(v.get_lock().info().not_recoverable);
  {
    std::scoped_lock lk(v.get_lock());
    v.clear_torn();
    EXPECT_EQ(v.get(), (Wide{1, 1, 1, 1}));  // the bytes the writer never reached
  }
  EXPECT_FALSE(v.torn());
}

// The same through a Condition made on the Value's lock (Python's
// Condition(v.get_lock())): its takeover repairs the lock and keeps the
// report, as get_lock()'s own does.
TEST(KillPoints, ValueLockTakenOverThroughAConditionIsRepairedAndKeepsTheReport) {
  SegmentGuard g(unique_name("kpvcd"));
  auto v = Value<Wide>::create(g.name(), Wide{1, 1, 1, 1});
  die_writing([&] { Value<Wide>::open(g.name()).set(Wide{2, 2, 2, 2}); });
  Condition c(v.get_lock());
  { std::unique_lock lk(c); }
  EXPECT_EQ(code_of([&] { (void)v.get(); }), Errc::peer_dead);
  EXPECT_FALSE(v.get_lock().info().not_recoverable);
  v.set(Wide{3, 3, 3, 3});
  EXPECT_EQ(v.get(), (Wide{3, 3, 3, 3}));
}

// A process whose main thread has exited (as after pthread_exit(): /proc shows the
// process a zombie) while another of its threads holds a lock is alive:
// the lock is not taken over until that thread has ended too.
TEST(KillPoints, ALockHeldByAThreadOfAProcessWhoseMainThreadExitedIsNotTakenOver) {
  SegmentGuard g(unique_name("kpzom"));
  auto lock = Lock::create(g.name());
  Event held, release;  // anonymous: shared with the child
  const pid_t child = test::fork_child([&] {
    std::thread([&] {
      auto mine = Lock::open(g.name());
      mine.lock();
      held.set();
      (void)release.wait_for(60s);
      mine.unlock();
      ::_exit(0);  // no atexit handlers of the test binary in this child
    }).detach();
    ::syscall(SYS_exit, 0);  // this thread only (pthread_exit would unwind fork_child)
    return 0;
  });
  ASSERT_TRUE(held.wait_for(30s));
  const auto zombie = [&] {
    char path[48];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(child));
    std::FILE* f = std::fopen(path, "r");
    if (f == nullptr) return false;
    char buf[512] = {};
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    const char* close_paren = std::strrchr(buf, ')');
    return n > 0 && close_paren != nullptr && close_paren[1] == ' ' && close_paren[2] == 'Z';
  };
  ASSERT_TRUE(test::poll_until(zombie));
  EXPECT_TRUE(lookup_process(child).has_value()) << "a thread still runs";
  EXPECT_EQ(lock.acquire_for(50ms), LockResult::timeout);
  release.set();
  EXPECT_EQ(test::wait_child(child).code, 0);
  EXPECT_EQ(lock.acquire_for(10s), LockResult::acquired);
  lock.unlock();
}

// A holder of get_lock() that was not writing leaves nothing torn, and a
// scoped_lock that takes it over leaves the lock usable.
TEST(KillPoints, ValueLockHolderKilledOutsideAWriteIsRepairedWithNoReport) {
  SegmentGuard g(unique_name("kpvlk"));
  auto v = Value<Wide>::create(g.name(), Wide{4, 4, 4, 4});
  const pid_t holder = test::fork_child([&] {
    auto mine = Value<Wide>::open(g.name());
    mine.get_lock().lock();
    mine.set(Wide{5, 5, 5, 5});  // whole, under the held lock
    ::raise(SIGKILL);
    return 2;
  });
  ASSERT_EQ(test::wait_child(holder).signal, SIGKILL);
  { std::scoped_lock lk(v.get_lock()); }
  EXPECT_FALSE(v.torn());
  EXPECT_EQ(v.get(), (Wide{5, 5, 5, 5}));
  v.set(Wide{6, 6, 6, 6});
  EXPECT_EQ(v.get(), (Wide{6, 6, 6, 6}));
}

// Array: a writer killed inside set(2) taints element 2 only (set(2)
// clears it); one killed holding a View taints every element (only
// clear_torn() clears it, and view() throws meanwhile).
TEST(KillPoints, ArrayWriterKilledReportsTheElementItWroteAViewAll) {
  SegmentGuard g(unique_name("kparr"));
  auto a = Array<Wide>::create(g.name(), 4, Wide{1, 1, 1, 1});
  die_writing([&] { Array<Wide>::open(g.name()).set(2, Wide{2, 2, 2, 2}); });
  EXPECT_EQ(code_of([&] { (void)a.get(2); }), Errc::peer_dead);
  EXPECT_EQ(code_of([&] { (void)a.view(); }), Errc::peer_dead);
  EXPECT_EQ(a.get(1), (Wide{1, 1, 1, 1}));
  EXPECT_TRUE(a.torn());
  a[2] = Wide{3, 3, 3, 3};
  EXPECT_FALSE(a.torn());
  EXPECT_EQ(a.view()[2], (Wide{3, 3, 3, 3}));

  die_writing([&] {
    auto mine = Array<Wide>::open(g.name());
    auto view = mine.view();
    view[0] = Wide{9, 9, 9, 9};
  });
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(code_of([&] { (void)a.get(i); }), Errc::peer_dead) << i;
  }
  a.set(0, Wide{7, 7, 7, 7});
  EXPECT_TRUE(a.torn()) << "a View's report is cleared by one element";
  {
    std::scoped_lock lk(a.get_lock());
    a.clear_torn();
    auto view = a.view();
    EXPECT_EQ(view[0], (Wide{7, 7, 7, 7}));
  }
  EXPECT_EQ(a.get(3), (Wide{1, 1, 1, 1}));
}

// What bus-inspector's doctor lists for the object `name`, ';'-joined.
std::string doctor_problems(const std::string& name) {
  std::string all;
  for (const std::string& p : object_stats(SegmentView::open(name)).problems) all += p + ";";
  return all;
}

// bus-inspector (object_stats, what `doctor` lists) names a value a dead
// writer may have torn: before the takeover by its dead holder's mark,
// after it by the report, and nothing once the element is written whole.
TEST(KillPoints, InspectorNamesTheElementADeadWriterMayHaveTorn) {
  SegmentGuard g(unique_name("kpins"));
  auto a = Array<Wide>::create(g.name(), 4, Wide{1, 1, 1, 1});
  const auto problems = [&] { return doctor_problems(g.name()); };
  EXPECT_EQ(problems(), "");
  die_writing([&] { Array<Wide>::open(g.name()).set(2, Wide{2, 2, 2, 2}); });
  EXPECT_NE(problems().find("died writing element 2"), std::string::npos) << problems();
  EXPECT_EQ(a.get(1), (Wide{1, 1, 1, 1}));  // takes the lock over
  EXPECT_NE(problems().find("torn: a process died writing element 2"), std::string::npos)
      << problems();
  a.set(2, Wide{3, 3, 3, 3});
  EXPECT_EQ(problems(), "");
}

// doctor names an Array whose recorded count no longer fits its file, as
// every open of it fails on (value.hpp: "element count or size does not fit").
TEST(KillPoints, InspectorNamesAnArrayWhoseCountDoesNotFitItsPayload) {
  SegmentGuard g(unique_name("kpcnt"));
  auto a = Array<Wide>::create(g.name(), 4, Wide{1, 1, 1, 1});
  const auto problems = [&] { return doctor_problems(g.name()); };
  EXPECT_EQ(problems(), "");
  const int fd = ::open(test::shm_path(g.name()).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const std::uint64_t count = 1'000'000;  // a stray write over the header's count
  ASSERT_EQ(
      ::pwrite(fd, &count, sizeof count,
               static_cast<off_t>(detail::kHeaderSize + offsetof(detail::CellsHeader, count))),
      static_cast<ssize_t>(sizeof count));
  ::close(fd);
  EXPECT_NE(problems().find("corrupted: 1000000 elements of 32 B do not fit"), std::string::npos)
      << problems();
  EXPECT_EQ(code_of([&] { (void)Array<Wide>::open(g.name()); }), Errc::corrupted);
}

// Two Views of one thread may end in any order: one killed holding the
// second after the first ended still reports every element; and once both
// ended, a holder killed outside a write reports nothing.
TEST(KillPoints, ViewsEndedOutOfOrderKeepTheMarkUntilTheLastEnds) {
  SegmentGuard g(unique_name("kpvoo"));
  auto a = Array<Wide>::create(g.name(), 4, Wide{1, 1, 1, 1});
  const pid_t killed_in_second = test::fork_child([&] {
    auto mine = Array<Wide>::open(g.name());
    std::optional<Array<Wide>::View> first(mine.view());
    auto second = mine.view();
    first.reset();
    second[1] = Wide{8, 8, 8, 8};
    ::raise(SIGKILL);
    return 2;
  });
  ASSERT_EQ(test::wait_child(killed_in_second).signal, SIGKILL);
  EXPECT_EQ(code_of([&] { (void)a.get(3); }), Errc::peer_dead);
  EXPECT_TRUE(a.torn());
  a.clear_torn();

  const pid_t killed_after_both = test::fork_child([&] {
    auto mine = Array<Wide>::open(g.name());
    mine.get_lock().lock();
    {
      std::optional<Array<Wide>::View> first(mine.view());
      auto second = mine.view();
      first.reset();
      second[1] = Wide{9, 9, 9, 9};
    }
    ::raise(SIGKILL);  // holding get_lock(), writing nothing
    return 2;
  });
  ASSERT_EQ(test::wait_child(killed_after_both).signal, SIGKILL);
  EXPECT_FALSE(a.torn());
  EXPECT_EQ(a.get(1), (Wide{9, 9, 9, 9}));
}

// A View held across a Condition wait on the array's lock keeps its mark:
// another process's View, opened and ended meanwhile, does not clear it,
// so the holder killed writing after the wait is still reported.
TEST(KillPoints, AViewHeldAcrossAConditionWaitKeepsItsMark) {
  SegmentGuard g(unique_name("kpvcw"));
  auto a = Array<Wide>::create(g.name(), 4, Wide{1, 1, 1, 1});
  Condition c(a.get_lock());  // anonymous: shared with the child
  test::SharedBlock<std::atomic<int>> waiting;
  const pid_t writer = test::fork_child([&] {
    auto view = a.view();
    view[1] = Wide{8, 8, 8, 8};
    waiting->store(1);
    while (!c.wait_for(10s)) {
    }
    view[2] = Wide{8, 8, 8, 8};
    ::raise(SIGKILL);
    return 2;
  });
  ASSERT_TRUE(test::poll_until([&] { return waiting->load() == 1; }));
  {
    auto mine = a.view();  // taken once the writer's wait released the lock
    EXPECT_EQ(mine[1], (Wide{8, 8, 8, 8}));
    c.notify();
  }
  ASSERT_EQ(test::wait_child(writer).signal, SIGKILL);
  EXPECT_EQ(code_of([&] { (void)a.get(3); }), Errc::peer_dead);
  EXPECT_TRUE(a.torn());
}

}  // namespace
}  // namespace shmbus
