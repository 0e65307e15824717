// A store that starts small grows (the map doubles, under the flock of
// [kv.size]) while other processes read and write it: no reader sees a
// torn or missing value, no process faults, every write lands.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shmbus/dict.hpp"
#include "store_guard.hpp"
#include "test_support.hpp"

namespace shmbus::test {
namespace {

std::string value_of(int writer, int i) {
  return std::string(static_cast<std::size_t>(700 + i % 300), static_cast<char>('a' + writer)) +
         std::to_string(i);
}

TEST(DictGrowth, AStoreStartingAt64KiBGrowsWhileOthersReadAndWrite) {
  StoreGuard g(unique_name("grow"));
  StoreOptions small;
  small.map_size = 64 << 10;  // grows 64 KiB -> 8 MiB: seven doublings
  Dict<std::string, std::string> d{g.name(), small};
  d.set("ready", "1");
  constexpr int kWriters = 2, kReaders = 3, kPerWriter = 2500;
  std::vector<pid_t> writers, readers;
  for (int w = 0; w < kWriters; ++w)
    writers.push_back(fork_child([&, w]() -> int {
      auto mine = Dict<std::string, std::string>::open(g.name(), small);
      for (int i = 0; i < kPerWriter; ++i)
        mine.set("w" + std::to_string(w) + "-" + std::to_string(i), value_of(w, i));
      return 0;
    }));
  for (int r = 0; r < kReaders; ++r)
    readers.push_back(fork_child([&]() -> int {
      auto mine = Dict<std::string, std::string>::open(g.name(), small);
      // Until both writers are done: every key read holds its value.
      for (int round = 0;; ++round) {
        std::size_t done = 0;
        for (int w = 0; w < kWriters; ++w) {
          const std::string last = "w" + std::to_string(w) + "-" + std::to_string(kPerWriter - 1);
          if (mine.contains(last)) ++done;
          for (int i = round % 50; i < kPerWriter; i += 97) {
            auto v = mine.get("w" + std::to_string(w) + "-" + std::to_string(i));
            if (v && *v != value_of(w, i)) return 2;
          }
        }
        if (round % 10 == 0)
          for (const auto& [k, v] : mine.items())
            if (k != "ready" && v.empty()) return 3;
        if (done == kWriters) return 0;
      }
    }));
  for (pid_t p : writers) {
    ChildStatus st = wait_child(p, 120s);
    EXPECT_TRUE(st.exited && st.code == 0) << "writer: code " << st.code << " signal " << st.signal;
  }
  for (pid_t p : readers) {
    ChildStatus st = wait_child(p, 120s);
    EXPECT_TRUE(st.exited && st.code == 0) << "reader: code " << st.code << " signal " << st.signal;
  }
  EXPECT_EQ(d.size(), std::size_t{kWriters} * kPerWriter + 1);
  EXPECT_EQ(d.at("w1-2499"), value_of(1, 2499));
}

}  // namespace
}  // namespace shmbus::test
