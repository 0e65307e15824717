// Hangs found by an independent fault harness (issue 15), one regression
// test each: a call with a deadline returns by it, and a call without one
// returns when a peer dies or the object closes, whatever shared memory
// holds. Every call under test runs in a forked child that the test waits
// for with a deadline, so a hang fails the test instead of stalling it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <string>

#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/detail/queue_core.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/pool.hpp"
#include "shmbus/process.hpp"
#include "shmbus/queue.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

// A hostile peer's view of a named object: the whole file, mapped
// read-write with no validation.
class RawMapping {
 public:
  explicit RawMapping(const std::string& name) {
    const int fd = ::open(test::shm_path(name).c_str(), O_RDWR);
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0) {
      size_ = static_cast<std::size_t>(st.st_size);
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) base_ = static_cast<std::byte*>(p);
    }
    if (fd >= 0) ::close(fd);
  }
  RawMapping(const RawMapping&) = delete;
  RawMapping& operator=(const RawMapping&) = delete;
  ~RawMapping() {
    if (base_ != nullptr) ::munmap(base_, size_);
  }
  [[nodiscard]] bool ok() const { return base_ != nullptr; }
  template <class T>
  T& at(std::size_t offset) const {
    return *reinterpret_cast<T*>(base_ + detail::kHeaderSize + offset);
  }

 private:
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
};

// Runs `body` in a forked child; its exit code, or -1 if it was still
// running 10 s later (a hang: killed).
int in_child(const std::function<int()>& body) {
  const auto st = test::wait_child(test::fork_child(body), 10s);
  EXPECT_FALSE(st.timed_out) << "the call under test hung";
  return st.exited ? st.code : -1;
}

int as_int(QueueResult r) { return static_cast<int>(r); }

// The producer is killed between its claim and its publication.
void kill_producer_mid_put(Queue<int>& q) {
  const auto st = test::wait_child(test::fork_child([&] {
    detail::set_fault_hook([](detail::FaultPoint p) noexcept {
      if (p == detail::FaultPoint::put_claimed) ::raise(SIGKILL);
    });
    (void)q.put(7);
    return 0;
  }));
  ASSERT_EQ(st.signal, SIGKILL);
}

class DeadlineQueue : public ::testing::TestWithParam<WaitStrategy> {};

// Case 1: a queue closed after a producer died mid-put. get_for() spun at
// 100% CPU forever: the closed word counted as a change at every pass, so
// neither the deadline nor the repair of the dead claim ever ran.
TEST_P(DeadlineQueue, ClosedAfterProducerDiedMidPutRepairsAndReturnsClosed) {
  SegmentGuard g(unique_name("dlq"));
  auto q = Queue<int>::create(g.name(), {.capacity = 8, .policy = {.strategy = GetParam()}});
  kill_producer_mid_put(q);
  q.close();
  EXPECT_EQ(in_child([&] {
              int v = 0;
              return as_int(q.get_for(v, 200ms));
            }),
            as_int(QueueResult::closed));
  EXPECT_EQ(in_child([&] {
              int v = 0;
              return as_int(q.get(v));  // untimed: returns once the claim is repaired
            }),
            as_int(QueueResult::closed));
  EXPECT_EQ(q.stats().dropped, 1u);
}

// The same loop with a corrupted segment: closed set and the head slot
// held by a record no participant has. A fresh process that only opened
// the queue gets an error by its deadline, and an untimed get() too (one
// held for reading is stepped over, as a live reader's would be).
TEST_P(DeadlineQueue, CorruptedHeadInAClosedQueueIsAnErrorNotAHang) {
  SegmentGuard g(unique_name("dlqc"));
  const QueueOptions options{
      .capacity = 8, .max_participants = 4, .policy = {.strategy = GetParam()}};
  auto q = Queue<int>::create(g.name(), options);
  RawMapping raw(g.name());
  ASSERT_TRUE(raw.ok());
  auto& ctl = raw.at<detail::QueueControl>(0);
  auto& head = raw.at<detail::SlotHeader>(ctl.slots_offset);
  for (std::uint32_t rec : {4000u, 3u}) {  // beyond the records; a free record
    for (detail::SlotState st : {detail::SlotState::writing, detail::SlotState::reading}) {
      head.word.store(detail::slot_word(0, rec, st));
      ctl.dequeue_pos.store(0);
      ctl.closed.store(1);
      // A head held for writing by nobody can never be released; one held
      // for reading is stepped over (its reader took the message).
      const QueueResult expected =
          st == detail::SlotState::writing ? QueueResult::corrupted : QueueResult::closed;
      const auto result = [&](bool timed) {
        return in_child([&] {
          auto opened = Queue<int>::open(g.name(), options);
          int v = 0;
          return as_int(timed ? opened.get_for(v, 200ms) : opened.get(v));
        });
      };
      EXPECT_EQ(result(true), as_int(expected)) << rec << " " << int(st);
      EXPECT_EQ(result(false), as_int(expected)) << rec << " " << int(st);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, DeadlineQueue,
                         ::testing::Values(WaitStrategy::busy_poll, WaitStrategy::adaptive,
                                           WaitStrategy::blocking),
                         [](const auto& p) { return std::string(to_string(p.param)); });

// A writer that sends one message and is killed between messages.
pid_t writer_killed_after_one(Connection& w) {
  return test::fork_child([&] {
    (void)w.send(1);
    ::raise(SIGKILL);
    return 0;
  });
}

// Case 2: poll(timeout) / wait({end}, timeout) reported the dead writer as
// ready, but try_recv kept answering `empty`: the death was never seen by
// a call that does not wait.
TEST(DeadlinePipe, DeadWriterIsSeenByPollThenTryRecv) {
  for (int style = 0; style < 3; ++style) {
    auto [r, w] = Pipe(false);
    const pid_t child = writer_killed_after_one(w);
    w.close();
    int first = 0;
    ASSERT_EQ(r.recv_for(first, 10s), RecvResult::ok);
    EXPECT_EQ(test::wait_child(child).signal, SIGKILL);
    std::byte buf[64];
    std::size_t size = 0;
    RecvResult res = RecvResult::empty;
    const auto deadline = Clock::now() + 5s;
    while (res == RecvResult::empty && Clock::now() < deadline) {
      if (style == 0) (void)r.poll(20ms);
      if (style == 1) {
        Connection* ends[] = {&r};
        (void)shmbus::wait(ends, 20ms);
      }
      res = r.try_recv_bytes_into(buf, 0, size);  // style 2: try_recv alone
    }
    EXPECT_EQ(res, RecvResult::peer_dead) << "style " << style << ": " << to_string(res);
    EXPECT_TRUE(r.poll());  // a dead peer keeps the end ready
  }
}

// A writer that sends one message, waits until a hostile peer zeroed its
// end's owner word, then closes its end (or leaves with _exit, no close).
pid_t writer_outliving_its_owner_word(Connection& w, const std::string& name, bool close) {
  return test::fork_child([&w, name, close] {
    if (w.send(1) != SendResult::ok) return 1;
    RawMapping raw(name);
    auto& owner = raw.at<detail::PipeControl>(0).ends[1].owner;
    if (!test::poll_until([&] { return owner.load() == 0; }, 10s)) return 2;
    if (close) w.close();
    return 0;
  });
}

// Case 3: a hostile peer zeroes the sender end's owner word. The sender's
// close() must still mark its end closed (it took the end; an end is never
// given back), so the receiver reads end of file instead of timing out.
TEST(DeadlinePipe, ZeroedSenderOwnerStillEndsInEof) {
  SegmentGuard g(unique_name("dlp"));
  auto [r, w] = Pipe(g.name(), false);
  const pid_t child = writer_outliving_its_owner_word(w, g.name(), /*close=*/true);
  w.close();
  int first = 0;
  ASSERT_EQ(r.recv_for(first, 10s), RecvResult::ok);
  RawMapping raw(g.name());
  ASSERT_TRUE(raw.ok());
  raw.at<detail::PipeControl>(0).ends[1].owner.store(0);  // the hostile write
  EXPECT_EQ(test::wait_child(child).code, 0);
  int next = 0;
  EXPECT_EQ(r.recv_for(next, 5s), RecvResult::eof);
}

// The same hostile write, with a sender that exits without closing: the
// receiver watches the owner it saw before the write and reports the
// death. The receiver is in recv_for() (it has seen the owner) when the
// word is zeroed.
TEST(DeadlinePipe, ZeroedOwnerOfAnExitedSenderIsADeadPeer) {
  SegmentGuard g(unique_name("dlpx"));
  auto [r, w] = Pipe(g.name(), false);
  const pid_t child = writer_outliving_its_owner_word(w, g.name(), /*close=*/false);
  w.close();
  int first = 0;
  ASSERT_EQ(r.recv_for(first, 10s), RecvResult::ok);
  int none = 0;
  EXPECT_EQ(r.recv_for(none, 30ms), RecvResult::timeout);  // has checked the live owner
  RawMapping raw(g.name());
  ASSERT_TRUE(raw.ok());
  raw.at<detail::PipeControl>(0).ends[1].owner.store(0);
  EXPECT_EQ(test::wait_child(child).code, 0);
  EXPECT_EQ(r.recv_for(none, 5s), RecvResult::peer_dead);
}

// A task that never ends (its worker hangs, alive): the caller's timed
// wait returns by its deadline; so does a join_for() on a hung child.
long hang(long) {
  for (;;) ::pause();
}

TEST(DeadlinePool, WaitForReturnsWhileTheWorkerHangs) {
  Pool pool({.processes = 1});
  auto r = pool.apply_async(hang, 1L);
  const auto start = Clock::now();
  EXPECT_FALSE(r.wait_for(50ms));
  EXPECT_LT(Clock::now() - start, 50ms + 2s);
  pool.terminate();
}

TEST(DeadlineProcess, JoinForReturnsWhileTheChildHangs) {
  Process p([] { return static_cast<int>(hang(0)); });
  p.start();
  const auto start = Clock::now();
  EXPECT_FALSE(p.join_for(50ms));
  EXPECT_LT(Clock::now() - start, 50ms + 2s);
  p.kill();
  p.join();
}

// Case 4, in the library: opening an object whose name is a FIFO (anyone
// who can write /dev/shm can make one) is an error, not an open that
// waits for a writer forever.
TEST(DeadlineOpen, FifoNamedLikeAnObjectIsRefusedNotWaitedOn) {
  SegmentGuard g(unique_name("dlfifo"));
  ASSERT_EQ(::mkfifo(test::shm_path(g.name()).c_str(), 0600), 0);
  EXPECT_EQ(in_child([&] {
              return static_cast<int>(test::code_of([&] { (void)Queue<int>::open(g.name()); }));
            }),
            static_cast<int>(Errc::corrupted));
}

}  // namespace
}  // namespace shmbus
