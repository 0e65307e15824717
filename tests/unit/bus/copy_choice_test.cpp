// detail::CopyChoice: tries both copy modes, settles on the cheaper one,
// keeps exploring the other, follows a change of which is cheaper, and is
// not thrown off by one outlier.
#include "shmbus/detail/copy_choice.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>

namespace shmbus::detail {
namespace {

using std::chrono::nanoseconds;

constexpr std::size_t kMessage = 1 << 20;

// Runs `n` messages, each costing `cached_ns` or `streaming_ns` per byte
// by mode; returns how many used streaming.
int run(CopyChoice& c, int n, double cached_ns, double streaming_ns) {
  int streaming = 0;
  for (int i = 0; i < n; ++i) {
    const CopyMode m = c.next();
    const double per_byte = m == CopyMode::streaming ? streaming_ns : cached_ns;
    c.record(m, kMessage, nanoseconds(static_cast<long long>(per_byte * kMessage)));
    if (m == CopyMode::streaming) ++streaming;
  }
  return streaming;
}

TEST(CopyChoice, TriesEachModeOnceFirst) {
  CopyChoice c;
  EXPECT_EQ(c.next(), CopyMode::cached);
  c.record(CopyMode::cached, kMessage, nanoseconds(kMessage));
  EXPECT_EQ(c.next(), CopyMode::streaming);
  c.record(CopyMode::streaming, kMessage, nanoseconds(kMessage / 2));
  EXPECT_EQ(c.next(), CopyMode::streaming);  // now the cheaper one
}

TEST(CopyChoice, SettlesOnTheCheaperModeAndStillExploresTheOther) {
  const int n = 64 * static_cast<int>(CopyChoice::kExploreEvery);
  CopyChoice s;
  const int streaming = run(s, n, 0.06, 0.03);
  // Everything but the one seed and the explorations went streaming.
  EXPECT_GE(streaming, n - 1 - n / static_cast<int>(CopyChoice::kExploreEvery));
  EXPECT_LT(streaming, n);  // cached was tried again, not forgotten

  CopyChoice c;
  const int cached = n - run(c, n, 0.03, 0.06);
  EXPECT_GE(cached, n - 1 - n / static_cast<int>(CopyChoice::kExploreEvery));
  EXPECT_LT(cached, n);
}

TEST(CopyChoice, FollowsAChangeOfWhichModeIsCheaper) {
  CopyChoice c;
  (void)run(c, 200, 0.06, 0.03);  // "far": streaming wins
  EXPECT_EQ(c.next(), CopyMode::streaming);
  // The placement changes: cached now costs a third of streaming. Within
  // a few explorations the choice turns, and then stays.
  const int window = 8 * static_cast<int>(CopyChoice::kExploreEvery);
  (void)run(c, window, 0.01, 0.03);
  const int streaming = run(c, window, 0.01, 0.03);
  EXPECT_LE(streaming, window / static_cast<int>(CopyChoice::kExploreEvery) + 1);
  EXPECT_LT(c.cost(CopyMode::cached), c.cost(CopyMode::streaming));
}

TEST(CopyChoice, OneOutlierDoesNotBuryAMode) {
  CopyChoice c;
  (void)run(c, 100, 0.06, 0.03);
  // A streaming message preempted for 10 ms: 300x its usual cost.
  ASSERT_EQ(c.next(), CopyMode::streaming);
  c.record(CopyMode::streaming, kMessage, nanoseconds(10'000'000));
  EXPECT_LT(c.cost(CopyMode::streaming), c.cost(CopyMode::cached) * 1.5);
  // A couple of ordinary messages later streaming is ahead again.
  (void)run(c, 3, 0.06, 0.03);
  EXPECT_EQ(c.next(), CopyMode::streaming);
}

TEST(CopyChoice, AnEmptyMessageRecordsNothing) {
  CopyChoice c;
  c.record(CopyMode::cached, 0, nanoseconds(1000));
  EXPECT_EQ(c.cost(CopyMode::cached), 0.0);
  EXPECT_EQ(c.next(), CopyMode::cached);
}

}  // namespace
}  // namespace shmbus::detail
