// IMapIterator::next(timeout), Python's imap iterator next(timeout): a
// result not there by the deadline throws Error(timed_out) and comes with
// a later call. Tasks are held at a gate (a Linux pipe the workers read,
// inherited when they were forked) until the test opens it. The same for
// AsyncResult::get(timeout).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "shmbus/pool.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;

int g_gate = -1;  // read end: each task takes one byte before it returns

int gated_double(int x) {
  char c = 0;
  return ::read(g_gate, &c, 1) == 1 ? 2 * x : -1;
}

void imap_next_times_out_then_delivers(bool unordered) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  g_gate = fds[0];
  {
    Pool pool({.processes = 2});
    const std::vector<int> xs{1, 2, 3};
    auto it = unordered ? pool.imap_unordered(gated_double, xs) : pool.imap(gated_double, xs);
    EXPECT_EQ(test::code_of([&] { (void)it.next(1ms); }), Errc::timed_out);
    EXPECT_EQ(test::code_of([&] { (void)it.next(0ms); }), Errc::timed_out);
    const char open[3] = {1, 1, 1};
    ASSERT_EQ(::write(fds[1], open, 3), 3);
    std::vector<int> got;
    while (auto v = it.next(30s)) got.push_back(*v);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, (std::vector<int>{2, 4, 6}));
    pool.close();
    pool.join();
  }
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(PoolImap, NextWithTimeoutThrowsTimedOutThenDeliversInOrder) {
  imap_next_times_out_then_delivers(false);
}

TEST(PoolImap, NextWithTimeoutThrowsTimedOutThenDeliversUnordered) {
  imap_next_times_out_then_delivers(true);
}

// AsyncResult::get(timeout), Python's AsyncResult.get(timeout): the same.
TEST(PoolAsyncResult, GetWithTimeoutThrowsTimedOutThenDelivers) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  g_gate = fds[0];
  {
    Pool pool({.processes = 1});
    auto r = pool.apply_async(gated_double, 21);
    EXPECT_EQ(test::code_of([&] { (void)r.get(1ms); }), Errc::timed_out);
    EXPECT_EQ(test::code_of([&] { (void)r.get(0ms); }), Errc::timed_out);
    const char open = 1;
    ASSERT_EQ(::write(fds[1], &open, 1), 1);
    EXPECT_EQ(r.get(30s), 42);
    EXPECT_EQ(r.get(0ms), 42);  // done: no wait
    pool.close();
    pool.join();
  }
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace shmbus
