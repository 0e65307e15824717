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
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/lock.hpp"
#include "shmbus/pipe.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using detail::FaultPoint;
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

}  // namespace
}  // namespace shmbus
