// [pipe.copies] A pipe end copied into a forked child counts that copy, as
// Python counts a descriptor's: the owner's close is an end of file for
// the peer once every copy is gone (closed, the child exited, or killed),
// whether or not the child ever used the end; a live copy keeps it open.
//
// Children are held between steps by a gate (an OS pipe they read one byte
// from); the reader waits with a deadline, never a sleep.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/process.hpp"
#include "shmbus/wait_any.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::SegmentGuard;
using test::unique_name;
using test::wait_child;

// A one-shot gate: the child blocks in pass() until the parent open()s it.
struct Gate {
  int fd[2]{-1, -1};
  Gate() { EXPECT_EQ(::pipe(fd), 0); }
  ~Gate() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  void open() const { EXPECT_EQ(::write(fd[1], "g", 1), 1); }
  bool pass() const {
    char c = 0;
    return ::read(fd[0], &c, 1) == 1;
  }
};

// Nothing arrives and no end of file comes within `t` (a live copy holds
// the writer end): the timed receive runs to its deadline.
void expect_held(Connection& r, Clock::duration t = 50ms) {
  int x = 0;
  EXPECT_EQ(r.recv_for(x, t), RecvResult::timeout);
}

Errc code_of_recv(Connection& c) {
  try {
    (void)c.recv<int>();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no shmbus::Error thrown";
  return Errc::system;
}

// The Python idiom: the child never touches w and returns; the parent
// closes its w and reads to EOF.
TEST(PipeCopies, EofWhenAChildThatNeverUsedTheWriterReturns) {
  auto [r, w] = Pipe(false);
  Gate go;
  Process p([&go] { return go.pass() ? 0 : 1; });
  p.start();
  w.close();
  expect_held(r);  // the child holds its copy of w
  go.open();
  int x = 0;
  ASSERT_EQ(r.recv_for(x, 10s), RecvResult::eof);  // before the untimed recv below
  EXPECT_EQ(code_of_recv(r), Errc::closed);        // recv(): Error(closed), EOFError
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// The same child ended by _exit() (no exit actions close its copies): its
// death ends the copy.
TEST(PipeCopies, EofWhenAChildThatNeverUsedTheWriterExitsAbruptly) {
  auto [r, w] = Pipe(false);
  Gate go;
  const pid_t child = fork_child([&go] { return go.pass() ? 0 : 1; });
  w.close();
  expect_held(r);
  go.open();
  EXPECT_TRUE(wait_child(child).exited);
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
}

TEST(PipeCopies, EofWhenTheChildIsKilledWithoutUsingTheWriter) {
  for (auto strategy : {WaitStrategy::busy_poll, WaitStrategy::adaptive, WaitStrategy::blocking}) {
    PipeOptions o;
    o.duplex = false;
    o.wait.strategy = strategy;
    auto [r, w] = Pipe(o);
    Gate never;
    const pid_t child = fork_child([&never] { return never.pass() ? 0 : 1; });
    w.close();
    expect_held(r);
    ::kill(child, SIGKILL);
    EXPECT_EQ(wait_child(child).signal, SIGKILL);
    int x = 0;
    // The owner (this process) closed w cleanly; the copy died unused.
    EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
  }
}

// A copy holder's death changes nothing while the owner holds the end.
TEST(PipeCopies, AKilledCopyHolderIsNoDeathWhileTheOwnerHoldsTheEnd) {
  auto [r, w] = Pipe(false);
  Gate never;
  const pid_t child = fork_child([&never] { return never.pass() ? 0 : 1; });
  ::kill(child, SIGKILL);
  wait_child(child);
  expect_held(r);  // w is still open here
  ASSERT_EQ(w.send(5), SendResult::ok);
  EXPECT_EQ(r.recv<int>(), 5);
  w.close();
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
}

TEST(PipeCopies, EofWhileTheChildThatClosedItsCopyStillRuns) {
  auto [r, w] = Pipe(false);
  Gate closed;
  Gate go;
  const pid_t child = fork_child([&w = w, &closed, &go] {
    w.close();  // a copy: this process holds the end no more
    closed.open();
    return go.pass() ? 0 : 1;
  });
  ASSERT_TRUE(closed.pass());
  w.close();
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);  // the child still runs
  go.open();
  EXPECT_TRUE(wait_child(child).exited);
}

// Closed in the other order: the parent first, then the child's copy.
TEST(PipeCopies, EofWhenTheChildClosesItsCopyAfterTheParent) {
  auto [r, w] = Pipe(false);
  Gate go;
  Gate closed;
  const pid_t child = fork_child([&w = w, &go, &closed] {
    if (!go.pass()) return 1;
    w.close();
    closed.open();
    return go.pass() ? 0 : 2;
  });
  w.close();
  expect_held(r);
  go.open();
  ASSERT_TRUE(closed.pass());
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
  go.open();
  EXPECT_TRUE(wait_child(child).exited);
}

// A child that uses w takes it, as before: its messages, then its close.
TEST(PipeCopies, AChildThatUsesTheWriterOwnsItAsBefore) {
  auto [r, w] = Pipe(false);
  Gate go;
  const pid_t child = fork_child([&w = w, &go] {
    if (w.send(1) != SendResult::ok) return 1;
    if (!go.pass()) return 2;
    if (w.send(2) != SendResult::ok) return 3;
    w.close();
    return go.pass() ? 0 : 4;
  });
  EXPECT_EQ(r.recv<int>(), 1);
  w.close();  // not this process's end any more: changes nothing
  expect_held(r);
  go.open();
  EXPECT_EQ(r.recv<int>(), 2);
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
  go.open();
  EXPECT_TRUE(wait_child(child).exited);
}

// A child that uses w and is killed: peer_dead, as before.
TEST(PipeCopies, AKilledChildThatUsedTheWriterIsPeerDead) {
  auto [r, w] = Pipe(false);
  Gate never;
  const pid_t child = fork_child([&w = w, &never] {
    if (w.send(1) != SendResult::ok) return 1;
    return never.pass() ? 0 : 2;
  });
  EXPECT_EQ(r.recv<int>(), 1);
  w.close();
  ::kill(child, SIGKILL);
  wait_child(child);
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::peer_dead);
}

TEST(PipeCopies, EofOnlyAfterBothChildrenHoldingCopiesAreGone) {
  auto [r, w] = Pipe(false);
  Gate go_a;
  Gate go_b;
  const pid_t a = fork_child([&go_a] { return go_a.pass() ? 0 : 1; });
  const pid_t b = fork_child([&go_b] { return go_b.pass() ? 0 : 1; });
  w.close();
  expect_held(r);
  go_a.open();
  EXPECT_TRUE(wait_child(a).exited);
  expect_held(r);  // b still holds its copy
  ::kill(b, SIGKILL);
  wait_child(b);
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
  (void)go_b;
}

// A copy of a copy: the grandchild holds the end after the child exits.
TEST(PipeCopies, AGrandchildsCopyKeepsTheEndOpen) {
  auto [r, w] = Pipe(false);
  Gate started;
  Gate go;
  const pid_t child = fork_child([&started, &go] {
    const pid_t grandchild = fork_child([&go] { return go.pass() ? 0 : 1; });
    started.open();
    return grandchild > 0 ? 0 : 1;  // exits at once; the grandchild lives
  });
  ASSERT_TRUE(started.pass());
  EXPECT_TRUE(wait_child(child).exited);
  w.close();
  expect_held(r);
  go.open();  // the grandchild (not ours to reap) exits
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
}

TEST(PipeCopies, WaitReportsTheEndOnceTheLastCopyIsGone) {
  for (auto strategy : {WaitStrategy::busy_poll, WaitStrategy::adaptive, WaitStrategy::blocking}) {
    PipeOptions o;
    o.duplex = false;
    o.wait.strategy = strategy;
    auto [r, w] = Pipe(o);
    Gate go;
    const pid_t child = fork_child([&go] { return go.pass() ? 0 : 1; });
    w.close();
    std::vector<Connection*> ends{&r};
    EXPECT_TRUE(wait(ends, 50ms).empty());
    go.open();
    EXPECT_TRUE(wait_child(child).exited);
    const auto ready = wait(ends, 10s);
    ASSERT_EQ(ready.size(), 1u);
    EXPECT_TRUE(r.poll());
    int x = 0;
    EXPECT_EQ(r.try_recv(x), RecvResult::eof);
  }
}

// The duplex form: the parent's end, copied into a child that exits.
TEST(PipeCopies, DuplexEndCopiedIntoAChildThatExitsGivesEof) {
  auto [a, b] = Pipe();
  Gate go;
  Process p([&go] { return go.pass() ? 0 : 1; });
  p.start();
  b.close();
  go.open();
  int x = 0;
  EXPECT_EQ(a.recv_for(x, 10s), RecvResult::eof);
  EXPECT_EQ(a.send(1), SendResult::broken);
  p.join();
}

// The reader's own process's copies never count: a child that reads to EOF
// while it holds a copy of the writer (as README's parent/child example).
TEST(PipeCopies, TheReadersOwnCopyOfTheWriterDoesNotHoldIt) {
  auto [r, w] = Pipe(false);
  const pid_t child = fork_child([&r = r] {
    int x = 0;
    if (r.recv_for(x, 10s) != RecvResult::ok || x != 3) return 1;
    return r.recv_for(x, 10s) == RecvResult::eof ? 0 : 2;
  });
  ASSERT_EQ(w.send(3), SendResult::ok);
  w.close();
  const auto st = wait_child(child);
  EXPECT_TRUE(st.exited && st.code == 0) << st.code;
}

// A child whose parent released the end may take it and write.
TEST(PipeCopies, AChildTakesAnEndItsParentReleased) {
  auto [r, w] = Pipe(false);
  Gate go;
  const pid_t child = fork_child([&w = w, &go] {
    if (!go.pass()) return 1;
    if (w.send(9) != SendResult::ok) return 2;
    w.close();  // the owner now: its close is the end of file
    return 0;
  });
  w.close();
  go.open();
  EXPECT_EQ(r.recv<int>(), 9);
  EXPECT_TRUE(wait_child(child).exited);
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
}

// A Process(argv) child execs at once: it holds no copies.
TEST(PipeCopies, ASpawnedProgramHoldsNoCopy) {
  auto [r, w] = Pipe(false);
  Gate go;
  auto p = Process::spawn("sh", {"-c", "head -c 1 <&" + std::to_string(go.fd[0]) + " >/dev/null"});
  p.start();
  w.close();
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);  // the program still runs
  go.open();
  p.join();
}

// --- the copy table in shared memory -----------------------------------------

detail::PipeEndLine& line_of(detail::Segment& seg, int end) {
  return reinterpret_cast<detail::PipeControl*>(seg.payload())->ends[end];
}

detail::Segment open_raw(const std::string& name) {
  SegmentOptions so;
  so.attach = false;
  return detail::Segment::open(name, ObjectKind::pipe, detail::kBytesTag, so);
}

// Garbage in the copy slots (random words, a live pid with a wrong start
// time, a pid without one) names no live copy: the close is an EOF.
TEST(PipeCopies, GarbageInTheCopyTableCountsAsNoCopy) {
  std::mt19937_64 rng(20261207);
  for (int round = 0; round < 20; ++round) {
    SegmentGuard g(unique_name("pipe-copies-garbage"));
    auto [r, w] = Pipe(g.name(), false);
    auto seg = open_raw(g.name());
    auto& line = line_of(seg, 1);
    const ProcessId me = this_process();
    const std::uint64_t words[] = {
        rng(), ProcessId{me.pid, me.start_time + 1 + (rng() & 0xffff)}.pack(),
        ProcessId{me.pid, 0}.pack(), ProcessId{::getppid(), 0}.pack(), rng() | 1};
    for (auto& slot : line.copies) slot.store(words[rng() % std::size(words)]);
    line.owner_left.store(static_cast<std::uint32_t>(rng()));
    w.close();
    int x = 0;
    ASSERT_EQ(r.recv_for(x, 10s), RecvResult::eof) << "round " << round;
  }
}

// A slot that names a live process (garbage that happens to be valid)
// holds the end: no EOF, but every timed call still returns by its
// deadline.
TEST(PipeCopies, ACorruptSlotNamingALiveProcessOnlyDelaysTheEof) {
  SegmentGuard g(unique_name("pipe-copies-live"));
  auto [r, w] = Pipe(g.name(), false);
  Gate go;
  const pid_t child = fork_child([&go] { return go.pass() ? 0 : 1; });
  auto seg = open_raw(g.name());
  auto& line = line_of(seg, 1);
  const auto id = lookup_process(child);
  ASSERT_TRUE(id.has_value());
  for (auto& slot : line.copies) slot.store(id->pack());  // the child, three times
  w.close();
  expect_held(r);
  EXPECT_FALSE(r.poll(0ns));
  go.open();
  EXPECT_TRUE(wait_child(child).exited);
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::eof);
}

// More copies than slots: the end stops counting (uncounted) and behaves
// as before copies were counted: the parent's close of an end it never
// used leaves it to a child, so the reader gets no EOF from it.
TEST(PipeCopies, MoreCopiesThanSlotsFallBackToTheOwnersRule) {
  SegmentGuard g(unique_name("pipe-copies-full"));
  auto [r, w] = Pipe(g.name(), false);
  Gate go;
  std::vector<pid_t> kids;
  for (std::size_t i = 0; i <= detail::kEndCopySlots; ++i) {
    kids.push_back(fork_child([&go] { return go.pass() ? 0 : 1; }));
  }
  auto seg = open_raw(g.name());
  EXPECT_NE(line_of(seg, 1).uncounted.load(), 0u);
  w.close();
  for (std::size_t i = 0; i < kids.size(); ++i) go.open();
  for (pid_t k : kids) EXPECT_TRUE(wait_child(k).exited);
  expect_held(r);  // documented: the owner (alive) never used w
}

// Copies are registered only for ends the forking process holds: after a
// child took w, a second child's copy is not counted (its parent's copy
// was not either).
TEST(PipeCopies, ACopyOfAnEndAnotherProcessTookIsNotCounted) {
  SegmentGuard g(unique_name("pipe-copies-taken"));
  auto [r, w] = Pipe(g.name(), false);
  Gate go1;
  Gate took;
  const pid_t first = fork_child([&w = w, &took, &go1] {
    if (w.send(1) != SendResult::ok) return 1;
    took.open();
    return go1.pass() ? 0 : 2;
  });
  ASSERT_TRUE(took.pass());
  Gate go2;
  const pid_t second = fork_child([&go2] { return go2.pass() ? 0 : 1; });
  auto seg = open_raw(g.name());
  for (auto& slot : line_of(seg, 1).copies) {
    EXPECT_NE(ProcessId::unpack(slot.load()).pid, second);
  }
  go1.open();
  EXPECT_EQ(r.recv<int>(), 1);
  EXPECT_TRUE(wait_child(first).exited);  // _exit: w never closed, its owner died
  int x = 0;
  EXPECT_EQ(r.recv_for(x, 10s), RecvResult::peer_dead);  // second's copy does not hold it
  go2.open();
  wait_child(second);
}

}  // namespace
}  // namespace shmbus
