// Dict, List and Namespace through a Bus: registered like every object,
// opened by name from another process, removed with the bus by its last
// user, swept by gc after its users were SIGKILLed; bus-inspector shows a
// store's entries, bytes, holders, readers and writer.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <nlohmann/json.hpp>
#include <string>

#include "shmbus/bus.hpp"
#include "shmbus/dict.hpp"
#include "shmbus/list.hpp"
#include "shmbus/namespace.hpp"
#include "shmbus/resource_tracker.hpp"
#include "shmbus/store_files.hpp"
#include "shmbus/store_stats.hpp"
#include "store_guard.hpp"
#include "test_support.hpp"

namespace shmbus::test {
namespace {

// Bus names may not contain '.': unique_name's are "t<pid>-<stem>-<n>".
struct BusStoresGuard {
  std::string bus;
  ~BusStoresGuard() {
    for (const auto& n : list_stores())
      if (n.rfind(bus + ".", 0) == 0) remove_store(n);
    GcOptions gc;
    gc.prefix = bus;
    (void)collect_garbage(gc);
  }
};

// SIGKILLs the children it holds when a test ends early (failed assertion).
struct Kids {
  std::vector<pid_t> pids;
  ~Kids() {
    for (pid_t p : pids) ::kill(p, SIGKILL);
    for (pid_t p : pids) (void)wait_child(p);
  }
};

bool exists(const std::string& store) { return ::access(store_path(store).c_str(), F_OK) == 0; }

TEST(BusContainers, RegisteredAndSharedWithAnotherProcess) {
  BusStoresGuard g{unique_name("bc")};
  {
    Bus bus{g.bus};
    auto d = bus.dict<std::string, double>("prices");
    auto l = bus.list<std::string>("log");
    auto ns = bus.namespace_("stats");
    d.set("EURUSD", 1.08);
    l.append("started");
    ns.set("count", 1);
    auto objs = bus.objects();
    auto kind_of = [&](const std::string& n) {
      auto it = std::find_if(objs.begin(), objs.end(), [&](auto& o) { return o.name == n; });
      return it == objs.end() ? std::string("missing") : std::string(to_string(it->kind));
    };
    EXPECT_EQ(kind_of("prices"), "dict");
    EXPECT_EQ(kind_of("log"), "list");
    EXPECT_EQ(kind_of("stats"), "namespace");

    pid_t child = fork_child([&]() -> int {
      Bus b{g.bus};
      auto cd = b.dict<std::string, double>("prices");
      if (cd.at("EURUSD") != 1.08) return 1;
      cd.set("GBPUSD", 1.27);
      b.list<std::string>("log").append("child");
      b.namespace_("stats").update<int>("count", [](int& v) { ++v; });
      // The wrong types are refused, naming the object.
      try {
        (void)b.dict<std::string, int>("prices");
        return 2;
      } catch (const Error& e) {
        if (e.code() != Errc::wrong_type) return 3;
      }
      return 0;
    });
    ChildStatus st = wait_child(child);
    ASSERT_TRUE(st.exited);
    ASSERT_EQ(st.code, 0);
    EXPECT_EQ(d.at("GBPUSD"), 1.27);
    EXPECT_EQ(l.to_vector(), (std::vector<std::string>{"started", "child"}));
    EXPECT_EQ(ns.get<int>("count"), 2);
    EXPECT_TRUE(exists(g.bus + ".prices"));
    // Still open here, so store_holders() names this process.
    auto holders = store_holders(g.bus + ".prices");
    EXPECT_NE(std::find(holders.begin(), holders.end(), ::getpid()), holders.end());
  }
  // The last user closed the bus: its stores went with it.
  EXPECT_FALSE(exists(g.bus + ".prices"));
  EXPECT_FALSE(exists(g.bus + ".log"));
  EXPECT_FALSE(exists(g.bus + ".stats"));
}

TEST(BusContainers, GcSweepsStoresOfABusWhoseUsersWereKilled) {
  BusStoresGuard g{unique_name("bcgc")};
  SharedBlock<std::atomic<int>> ready;
  pid_t child = fork_child([&]() -> int {
    Bus b{g.bus};
    auto d = b.dict<int, int>("d");
    d.set(1, 1);
    ready->store(1);
    for (;;) ::pause();
  });
  Kids kids{{child}};
  ASSERT_TRUE(poll_until([&] { return ready->load() == 1; }));
  // Alive and holding it: gc keeps it.
  GcOptions gc;
  gc.prefix = g.bus;
  (void)collect_garbage(gc);
  EXPECT_TRUE(exists(g.bus + ".d"));
  EXPECT_EQ(store_holders(g.bus + ".d"), std::vector<int>{child});
  ::kill(child, SIGKILL);
  ASSERT_EQ(wait_child(child).signal, SIGKILL);
  kids.pids.clear();
  EXPECT_TRUE(store_holders(g.bus + ".d").empty());
  auto actions = collect_garbage(gc);
  EXPECT_TRUE(std::any_of(actions.begin(), actions.end(),
                          [&](const GcAction& a) { return a.name == g.bus + ".d" && a.removed; }));
  EXPECT_FALSE(exists(g.bus + ".d"));
}

TEST(BusContainers, StandaloneStoresAreNeverSwept) {
  StoreGuard sg(unique_name("solo"));
  { Dict<int, int>{sg.name()}.set(1, 2); }
  (void)collect_garbage();
  EXPECT_TRUE(exists(sg.name()));
}

// A child that holds the write lock (inside a transaction, before its
// commit) and a read transaction in another: inspect_store names both.
std::atomic<int>* g_hold = nullptr;
void hold_before_commit() noexcept {
  g_hold[0].store(1);
  while (g_hold[1].load() == 0) {
  }
}

TEST(BusContainers, InspectorShowsEntriesBytesReadersAndWriter) {
  StoreGuard sg(unique_name("insp"));
  Dict<int, std::string> d{sg.name()};
  for (int i = 0; i < 100; ++i) d.set(i, "v" + std::to_string(i));
  SharedBlock<std::array<std::atomic<int>, 4>> flags;
  g_hold = flags->data();
  Kids kids;
  // The reader first: opening a store by name takes the write lock for a
  // moment (its setup transaction), which the held writer would deny.
  pid_t reader = fork_child([&]() -> int {
    detail::KvStore st(sg.name(), detail::KvStore::Mode::open, detail::StoreKind::dict,
                       detail::type_tag<int>(), detail::type_tag<std::string>(), {});
    st.read([&](const detail::ReadTxn&) {
      (*flags)[2].store(1);
      while ((*flags)[3].load() == 0) {
      }
    });
    return 0;
  });
  kids.pids.push_back(reader);
  ASSERT_TRUE(poll_until([&] { return (*flags)[2].load() == 1; }));
  pid_t writer = fork_child([&]() -> int {
    detail::g_kv_before_commit.store(&hold_before_commit, std::memory_order_relaxed);
    d.set(1000, "held");
    return 0;
  });
  kids.pids.push_back(writer);
  ASSERT_TRUE(poll_until([&] { return (*flags)[0].load() == 1; }));
  // This process has the store open: LMDB allows one environment per
  // process, so inspection is for another process (bus-inspector).
  EXPECT_EQ(code_of([&] { (void)inspect_store(sg.name()); }), Errc::invalid_argument);
  CommandResult r = run_inspector({"show", sg.name(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["kind"], "dict");
  EXPECT_EQ(j["entries"], 100);  // the held write is not committed
  EXPECT_GT(j["used_bytes"].get<std::uint64_t>(), 0u);
  EXPECT_GE(j["file_bytes"].get<std::uint64_t>(), j["used_bytes"].get<std::uint64_t>());
  EXPECT_EQ(j["writer"], writer);
  auto readers = j["readers"].get<std::vector<int>>();
  EXPECT_NE(std::find(readers.begin(), readers.end(), reader), readers.end()) << r.output;
  auto holders = j["holders"].get<std::vector<int>>();
  for (pid_t p : {::getpid(), writer, reader})
    EXPECT_NE(std::find(holders.begin(), holders.end(), p), holders.end()) << r.output;
  EXPECT_NE(j["value_type"].get<std::string>().find("string"), std::string::npos) << r.output;

  r = run_inspector({"show", sg.name()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("entries:   100"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("writer:    " + std::to_string(writer)), std::string::npos) << r.output;

  (*flags)[1].store(1);
  (*flags)[3].store(1);
  EXPECT_EQ(wait_child(writer).code, 0);
  EXPECT_EQ(wait_child(reader).code, 0);
  kids.pids.clear();
  r = run_inspector({"show", sg.name(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["entries"], 101);
  EXPECT_EQ(j["writer"], 0);
}

}  // namespace
}  // namespace shmbus::test
