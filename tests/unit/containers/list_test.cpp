// List<T> and Namespace: Python list and Namespace semantics, one
// transaction per call, shared with forked children.
#include "shmbus/list.hpp"

#include <gtest/gtest.h>

#include "shmbus/namespace.hpp"
#include "store_guard.hpp"
#include "test_support.hpp"

namespace shmbus::test {
namespace {

using V = std::vector<long>;

TEST(List, BehavesAsPythonListWhenNamed) {
  StoreGuard g(unique_name("list"));
  List<long> l{g.name()};
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(code_of([&] { (void)l.pop(); }), Errc::invalid_argument);
  l.append(1);
  l.extend({2, 3, 4});
  EXPECT_EQ(l.to_vector(), (V{1, 2, 3, 4}));
  EXPECT_EQ(l.at(0), 1);
  EXPECT_EQ(l.at(-1), 4);
  EXPECT_EQ(code_of([&] { (void)l.at(4); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { (void)l.at(-5); }), Errc::invalid_argument);
  l.set(1, 20);
  l.insert(0, 0);
  l.insert(100, 5);  // clamped: appends
  l.insert(-1, 9);   // before the last
  EXPECT_EQ(l.to_vector(), (V{0, 1, 20, 3, 4, 9, 5}));
  EXPECT_EQ(l.pop(), 5);
  EXPECT_EQ(l.pop(0), 0);
  EXPECT_EQ(l.pop(-2), 4);
  EXPECT_EQ(l.to_vector(), (V{1, 20, 3, 9}));
  EXPECT_EQ(l.index(3), 2u);
  EXPECT_EQ(code_of([&] { (void)l.index(77); }), Errc::not_found);
  EXPECT_EQ(l.slice(1, 3), (V{20, 3}));
  EXPECT_EQ(l.slice(-2, 100), (V{3, 9}));
  EXPECT_EQ(l.slice(3, 1), V{});
  l.reverse();
  EXPECT_EQ(l.to_vector(), (V{9, 3, 20, 1}));
  l.sort();
  EXPECT_EQ(l.to_vector(), (V{1, 3, 9, 20}));
  l.sort(std::greater<>{});
  EXPECT_EQ(l.to_vector(), (V{20, 9, 3, 1}));
  EXPECT_EQ(l.count(9), 1u);
  l.clear();
  EXPECT_EQ(l.size(), 0u);
}

TEST(List, HoldsStringsAndOrdersPastTwoHundredFiftySix) {
  List<std::string> l;
  for (int i = 0; i < 300; ++i) l.append(std::to_string(i));
  EXPECT_EQ(l.at(299), "299");
  EXPECT_EQ(l.at(256), "256");
  auto all = l.to_vector();
  ASSERT_EQ(all.size(), 300u);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(all[static_cast<std::size_t>(i)], std::to_string(i));
}

TEST(List, EveryAppendLandsOnceWhenChildrenAppendAtOnce) {
  List<long> l;
  std::vector<pid_t> kids;
  for (long c = 0; c < 4; ++c)
    kids.push_back(fork_child([&, c] {
      for (long i = 0; i < 200; ++i) l.append(c * 1000 + i);
      return 0;
    }));
  for (pid_t k : kids) {
    auto st = wait_child(k);
    ASSERT_TRUE(st.exited);
    ASSERT_EQ(st.code, 0);
  }
  auto all = l.to_vector();
  ASSERT_EQ(all.size(), 800u);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
  EXPECT_EQ(all.front(), 0);
  EXPECT_EQ(all.back(), 3199);
}

TEST(List, OpeningADictStoreAsAListIsWrongKind) {
  StoreGuard g(unique_name("list"));
  { List<long> l{g.name()}; }
  EXPECT_EQ(code_of([&] { (void)Namespace::open(g.name()); }), Errc::wrong_kind);
}

TEST(Namespace, FieldsKeepTheirTypes) {
  StoreGuard g(unique_name("ns"));
  Namespace ns{g.name()};
  ns.set("count", 1);
  ns.set("label", "run 7");
  ns.set("ratio", 0.5);
  EXPECT_EQ(ns.get<int>("count"), 1);
  EXPECT_EQ(ns.get<std::string>("label"), "run 7");
  EXPECT_EQ(ns.get<double>("ratio"), 0.5);
  EXPECT_EQ(code_of([&] { (void)ns.get<double>("count"); }), Errc::wrong_type);
  EXPECT_EQ(code_of([&] { (void)ns.get<int>("missing"); }), Errc::not_found);
  EXPECT_EQ(ns.get<int>("missing", 42), 42);
  EXPECT_EQ(ns.update<int>("count", [](int& v) { v += 10; }), 11);
  EXPECT_TRUE(ns.contains("label"));
  EXPECT_TRUE(ns.erase("label"));
  EXPECT_FALSE(ns.contains("label"));
  EXPECT_EQ(ns.fields(), (std::vector<std::string>{"count", "ratio"}));
  Namespace again = Namespace::open(g.name());
  EXPECT_EQ(again.get<int>("count"), 11);
}

TEST(Namespace, CountersFromChildrenAllCountWhenForked) {
  Namespace ns;
  ns.set("hits", 0L);
  std::vector<pid_t> kids;
  for (int c = 0; c < 4; ++c)
    kids.push_back(fork_child([&] {
      for (int i = 0; i < 250; ++i) ns.update<long>("hits", [](long& v) { ++v; });
      return 0;
    }));
  for (pid_t k : kids) {
    auto st = wait_child(k);
    ASSERT_TRUE(st.exited);
    ASSERT_EQ(st.code, 0);
  }
  EXPECT_EQ(ns.get<long>("hits"), 1000);
}

}  // namespace
}  // namespace shmbus::test
