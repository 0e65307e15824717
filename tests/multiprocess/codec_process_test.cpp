// Codec values between real processes: a forked child sends containers and
// user structs through a pipe and strings of mixed sizes through a queue;
// the parent checks every one.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "shmbus/pipe.hpp"
#include "shmbus/queue.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::fork_child;
using test::SegmentGuard;
using test::unique_name;
using test::wait_child;

struct Job {
  std::string name;
  std::vector<double> args;
  int id = 0;
  MSGPACK_DEFINE(name, args, id)
  bool operator==(const Job&) const = default;
};

Job job(int i) {
  return Job{"job-" + std::to_string(i), std::vector<double>(static_cast<std::size_t>(i % 9), i),
             i};
}
std::string text(int i) {
  return std::string(static_cast<std::size_t>((i * 997) % 3000), static_cast<char>('a' + i % 26));
}

TEST(CodecProcess, ChildSendsStructsAndDictsThroughAPipe) {
  auto [parent, child] = Pipe();
  const pid_t pid = fork_child([&, &child = child] {
    for (int i = 0; i < 2000; ++i)
      if (child.send(job(i)) != SendResult::ok) return 1;
    std::map<std::string, int> totals{{"jobs", 2000}};
    if (child.send(totals) != SendResult::ok) return 2;
    // The parent's reply, decoded in the child.
    return child.recv<std::vector<std::string>>() == std::vector<std::string>{"done"} ? 0 : 3;
  });
  for (int i = 0; i < 2000; ++i) ASSERT_EQ(parent.recv<Job>(), job(i)) << i;
  EXPECT_EQ((parent.recv<std::map<std::string, int>>()),
            (std::map<std::string, int>{{"jobs", 2000}}));
  ASSERT_EQ(parent.send(std::vector<std::string>{"done"}), SendResult::ok);
  const auto st = wait_child(pid);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
}

TEST(CodecProcess, QueueOfStringsOfMixedSizesAcrossProcesses) {
  SegmentGuard g(unique_name("cq"));
  auto q = Queue<std::string>::create(g.name(), {.capacity = 16, .heap_blocks = 4});
  const pid_t pid = fork_child([&] {
    Queue<std::string> mine(g.name());
    for (int i = 0; i < 3000; ++i)
      if (mine.put(text(i)) != QueueResult::ok) return 1;
    return 0;
  });
  for (int i = 0; i < 3000; ++i) {
    std::string s;
    ASSERT_EQ(q.get_for(s, 30s), QueueResult::ok);
    ASSERT_EQ(s, text(i)) << i;
  }
  const auto st = wait_child(pid);
  EXPECT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
}

}  // namespace
}  // namespace shmbus
