// The containers' examples in README.md ("In use") and the public headers'
// comments, compiled and run as written.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "shmbus/dict.hpp"
#include "shmbus/list.hpp"
#include "shmbus/namespace.hpp"
#include "store_guard.hpp"

namespace shmbus::test {
namespace {

TEST(ContainersDocs, ReadmeExampleRunsAsWritten) {
  StoreGuard g("prices");
  g.add("stats");
  Dict<std::string, double>::unlink("prices");
  Namespace::unlink("stats");
  // --- README.md, In use ---
  shmbus::Dict<std::string, double> prices{"prices"};  // named: open or create
  prices.set("EURUSD", 1.08);
  double p = prices.at("EURUSD");  // Error(not_found) if absent
  std::optional<double> q = prices.get("GBPUSD");
  prices.update("hits", [](double& v) { v += 1; });  // atomic read-modify-write
  prices.transaction([](auto& tx) {
    tx.set("bid", 1.07);
    tx.set("ask", 1.09);
  });                                                                              // one commit
  for (const auto& [k, v] : prices.items()) std::printf("%s %g\n", k.c_str(), v);  // a snapshot

  shmbus::List<long> l;  // anonymous: shared with fork() children
  l.extend({0, 1, 2, 3});
  if (fork() == 0) {
    l.reverse();
    _exit(0);
  }  // the child reopens the store itself
  shmbus::Namespace ns{"stats"};
  ns.set("count", 1);
  ns.update<int>("count", [](int& v) { ++v; });
  int c = ns.get<int>("count");  // get<double> here: Error(wrong_type)
  // --- end ---
  ::wait(nullptr);
  EXPECT_EQ(p, 1.08);
  EXPECT_FALSE(q.has_value());
  EXPECT_EQ(prices.at("hits"), 1.0);
  EXPECT_EQ(prices.size(), 4u);
  EXPECT_EQ(l.to_vector(), (std::vector<long>{3, 2, 1, 0}));
  EXPECT_EQ(c, 2);
}

TEST(ContainersDocs, HeaderExamplesRunAsWritten) {
  StoreGuard g(unique_name("prices"));
  g.add(unique_name("results"));
  g.add(unique_name("stats"));
  {  // dict.hpp
    shmbus::Dict<std::string, double> prices{g.name(0)};
    prices.set("EURUSD", 1.08);
    double p = prices.at("EURUSD");
    prices.update("hits", [](double& v) { v += 1; });
    prices.transaction([](auto& tx) {
      tx.set("bid", 1.07);
      tx.set("ask", 1.09);
    });
    for (auto& [k, v] : prices.items()) std::printf("%s %g\n", k.c_str(), v);
    EXPECT_EQ(p, 1.08);
  }
  {  // list.hpp
    shmbus::List<long> l{g.name(1)};
    l.append(4);
    l.extend({5, 6});
    l.reverse();
    std::vector<long> all = l.to_vector();  // or l.slice(begin, end)
    long last = l.pop();
    EXPECT_EQ(all, (std::vector<long>{6, 5, 4}));
    EXPECT_EQ(last, 4);
  }
  {  // namespace.hpp
    shmbus::Namespace ns{g.name(2)};
    ns.set("count", 1);
    int c = ns.get<int>("count");
    ns.update<int>("count", [](int& v) { ++v; });
    ns.set("label", std::string("run 7"));
    EXPECT_EQ(c, 1);
    EXPECT_EQ(ns.get<int>("count"), 2);
  }
}

}  // namespace
}  // namespace shmbus::test
