// The Bus: registry, creation races between processes, and the lifetime
// policy (normal exit leaves nothing; SIGKILLed users are swept by gc).
#include "shmbus/bus.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "shmbus/resource_tracker.hpp"
#include "shmbus/segment_info.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;

// Bus names may not contain '.'; unique_name's are '-' separated.
std::string bus_name(const char* stem) { return test::unique_name(stem); }

// Every /dev/shm object of the bus `name` (registry and objects).
std::vector<std::string> leftovers(const std::string& name) {
  std::vector<std::string> out;
  for (const auto& n : list_segments()) {
    if (n == name || n.starts_with(name + ".")) out.push_back(n);
  }
  return out;
}

// Removes whatever a failed test left of a bus.
struct BusGuard {
  std::string name;
  ~BusGuard() {
    for (const auto& n : leftovers(name)) (void)remove_segment(n);
  }
};

TEST(Bus, ObjectsCreatedInOneProcessOpenInAnother) {
  BusGuard g{bus_name("bus")};
  Bus bus(g.name);
  auto shm = bus.shared_memory("frame", 256);
  std::memcpy(shm.buf().data(), "pixels", 7);
  pid_t child = test::fork_child([&] {
    Bus other(g.name);
    auto same = other.shared_memory("frame", 256);
    if (std::strcmp(reinterpret_cast<const char*>(same.buf().data()), "pixels") != 0) return 1;
    auto objects = other.objects();
    if (objects.size() != 1 || objects[0].name != "frame") return 2;
    if (objects[0].kind != ObjectKind::shared_memory) return 3;
    return 0;
  });
  auto st = test::wait_child(child);
  ASSERT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  ASSERT_EQ(bus.objects().size(), 1u);
  EXPECT_EQ(bus.objects()[0].full_name, g.name + ".frame");
}

TEST(Bus, ChannelsAndPrimitivesOpenFromAnotherProcess) {
  BusGuard g{bus_name("mixed")};
  Bus bus(g.name);
  auto orders = bus.queue<std::int64_t>("orders", {.capacity = 64});
  auto ctl = bus.pipe("ctl", PipeEnd::first);
  auto ready = bus.event("ready");
  auto lock = bus.lock("book");
  auto hits = bus.value<std::int64_t>("hits", 0);
  ASSERT_EQ(orders.put(41), QueueResult::ok);
  pid_t child = test::fork_child([&] {
    Bus other(g.name);
    auto q = other.queue<std::int64_t>("orders");
    auto pipe_end = other.pipe("ctl", PipeEnd::second);
    auto ev = other.event("ready");
    auto lk = other.lock("book");
    auto v = other.value<std::int64_t>("hits");
    std::int64_t x = 0;
    if (q.get_for(x, 5s) != QueueResult::ok || x != 41) return 1;
    {
      std::scoped_lock held(lk);
      v.set(v.get() + 1);
    }
    if (q.put(x + 1) != QueueResult::ok) return 2;
    if (pipe_end.send(std::string("hello")) != SendResult::ok) return 5;
    ev.set();
    // Opening with the wrong payload type is a clear error.
    try {
      (void)other.queue<double>("orders");
      return 3;
    } catch (const Error& e) {
      if (e.code() != Errc::wrong_type) return 4;
    }
    return 0;
  });
  ASSERT_TRUE(ready.wait_for(10s));
  std::int64_t back = 0;
  ASSERT_EQ(orders.get_for(back, 5s), QueueResult::ok);
  EXPECT_EQ(back, 42);
  EXPECT_EQ(hits.get(), 1);
  EXPECT_EQ(ctl.recv_string(), "hello");
  auto st = test::wait_child(child);
  ASSERT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  std::vector<std::string> kinds;
  for (const auto& o : bus.objects()) kinds.emplace_back(to_string(o.kind));
  std::sort(kinds.begin(), kinds.end());
  EXPECT_EQ(kinds, (std::vector<std::string>{"event", "lock", "pipe", "queue", "value"}));
}

TEST(Bus, ListenerIsRegisteredSharedOnRequestAndReachedByClient) {
  BusGuard g{bus_name("busl")};
  Bus bus(g.name);
  Listener server = bus.listener("quotes");
  EXPECT_EQ(test::code_of([&] { (void)bus.listener("quotes"); }), Errc::already_exists);
  Listener second = bus.listener("quotes", {.shared = true});  // joins the first
  const pid_t kid = test::fork_child([&] {
    Bus other(g.name);
    Connection c = other.client("quotes", 10s);
    return c.send(7) == SendResult::ok ? 0 : 1;
  });
  auto conn = server.accept_for(10s);
  ASSERT_TRUE(conn.has_value());
  int got = 0;
  EXPECT_EQ(conn->recv_for(got, 10s), RecvResult::ok);
  EXPECT_EQ(got, 7);
  EXPECT_EQ(test::wait_child(kid).code, 0);
  const auto objects = bus.objects();
  ASSERT_EQ(objects.size(), 1u);  // one entry, however many servers
  EXPECT_EQ(objects[0].kind, ObjectKind::listener);
}

TEST(Bus, WrongSizeOrBadNamesAreClearErrors) {
  BusGuard g{bus_name("busbad")};
  Bus bus(g.name);
  auto shm = bus.shared_memory("buf", 64);
  EXPECT_THROW((void)bus.shared_memory("buf", 128), Error);
  EXPECT_THROW((void)bus.shared_memory("has.dot", 8), Error);
  EXPECT_THROW(Bus("bad.bus"), Error);
}

TEST(Bus, LongObjectNamesAreRejectedNotTruncated) {
  BusGuard g{bus_name("long")};
  Bus bus(g.name);
  EXPECT_EQ(test::code_of([&] { (void)bus.event(std::string(128, 'e')); }), Errc::invalid_name);
  auto ok = bus.event(std::string(100, 'e'));
  ASSERT_EQ(bus.objects().size(), 1u);
  EXPECT_EQ(bus.objects()[0].name, std::string(100, 'e'));
}

TEST(Bus, ForkedChildCountsOnlyAfterAttach) {
  BusGuard g{bus_name("inherit")};
  auto bus = std::make_unique<Bus>(g.name);
  auto shm = bus->shared_memory("data", 64);
  // Without attach(), an inherited handle's close decides nothing.
  pid_t quiet = test::fork_child([&] {
    bus->close();
    return leftovers(g.name).size() == 2 ? 0 : 1;
  });
  EXPECT_EQ(test::wait_child(quiet).code, 0);
  // With attach(), the child is a user: the parent's close leaves the bus
  // to it, and the child, closing last, unlinks everything.
  int up[2], down[2];  // child -> parent "attached", parent -> child "closed"
  ASSERT_EQ(::pipe(up), 0);
  ASSERT_EQ(::pipe(down), 0);
  pid_t user = test::fork_child([&] {
    bus->attach();
    char c = 'a';
    if (::write(up[1], &c, 1) != 1) return 1;
    if (::read(down[0], &c, 1) != 1) return 2;  // until the parent has closed
    if (leftovers(g.name).size() != 2) return 3;
    bus->close();
    return leftovers(g.name).empty() ? 0 : 4;
  });
  char c;
  ASSERT_EQ(::read(up[0], &c, 1), 1);
  bus.reset();
  EXPECT_EQ(leftovers(g.name).size(), 2u);
  ASSERT_EQ(::write(down[1], "g", 1), 1);
  EXPECT_EQ(test::wait_child(user).code, 0);
  for (int fd : {up[0], up[1], down[0], down[1]}) ::close(fd);
  EXPECT_TRUE(leftovers(g.name).empty());
}

TEST(Bus, CreationRaceEndsWithOneObjectAndOneEntry) {
  BusGuard g{bus_name("race")};
  Bus bus(g.name);  // keeps the bus open while the children race
  constexpr int kRacers = 6;
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < kRacers; ++i) {
    kids.push_back(test::fork_child([&] {
      ::close(go[1]);
      char c;
      if (::read(go[0], &c, 1) != 0) return 5;  // wait for the start (EOF)
      Bus mine(g.name);
      auto shm = mine.shared_memory("contested", 4096);
      shm.buf()[static_cast<std::size_t>(::getpid()) % 4096] = std::byte{1};
      return 0;
    }));
  }
  ::close(go[0]);
  ::close(go[1]);  // everybody starts now
  for (pid_t k : kids) {
    auto st = test::wait_child(k);
    EXPECT_TRUE(st.exited);
    EXPECT_EQ(st.code, 0);
  }
  auto objects = bus.objects();
  ASSERT_EQ(objects.size(), 1u);
  EXPECT_EQ(objects[0].name, "contested");
}

// A bus lives while any process has it open, and so does every object on
// it: a queue whose only users exited (or were killed) keeps what they put
// through later opens of the bus and through `bus-inspector gc`.
TEST(Bus, ObjectsOutliveTheirProcessesWhileTheBusIsOpen) {
  BusGuard g{bus_name("keep")};
  Bus bus(g.name);  // holds the bus open; never opens the queues itself
  pid_t exits = test::fork_child([&] {
    Bus mine(g.name);
    auto q = mine.queue<int>("left", {.capacity = 16});
    for (int i = 0; i < 3; ++i) {
      if (q.put(i) != QueueResult::ok) return 1;
    }
    return 0;
  });
  ASSERT_EQ(test::wait_child(exits).code, 0);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t killed = test::fork_child([&] {
    Bus mine(g.name);
    auto q = mine.queue<int>("dropped", {.capacity = 16});
    if (q.put(7) != QueueResult::ok) return 1;
    char c = 'r';
    if (::write(ready[1], &c, 1) != 1) return 2;
    for (;;) ::pause();  // until killed
  });
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ::close(ready[1]);
  ::kill(killed, SIGKILL);
  ASSERT_EQ(test::wait_child(killed).signal, SIGKILL);

  auto r = test::run_inspector({"gc"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(leftovers(g.name).size(), 3u) << r.output;
  pid_t reader = test::fork_child([&] {
    Bus mine(g.name);  // opening sweeps, and must keep both queues
    auto left = mine.queue<int>("left");
    auto dropped = mine.queue<int>("dropped");
    int x = -1;
    for (int i = 0; i < 3; ++i) {
      if (left.get_for(x, 5s) != QueueResult::ok || x != i) return 10 + i;
    }
    if (dropped.get_for(x, 5s) != QueueResult::ok || x != 7) return 20;
    return mine.objects().size() == 2 ? 0 : 30;
  });
  EXPECT_EQ(test::wait_child(reader).code, 0);
  EXPECT_EQ(bus.objects().size(), 2u);
}

TEST(Bus, NormalExitOfEveryProcessLeavesNothing) {
  BusGuard g{bus_name("clean")};
  pid_t a = test::fork_child([&] {
    Bus bus(g.name);
    auto x = bus.shared_memory("x", 64);
    auto y = bus.shared_memory("y", 64);
    return 0;
  });
  ASSERT_EQ(test::wait_child(a).code, 0);
  EXPECT_TRUE(leftovers(g.name).empty());

  // Two processes: the one that closes last cleans up.
  {
    Bus first(g.name);
    auto x = first.shared_memory("x", 64);
    pid_t b = test::fork_child([&] {
      Bus second(g.name);
      auto y = second.shared_memory("y", 64);
      return 0;
    });
    ASSERT_EQ(test::wait_child(b).code, 0);
    EXPECT_EQ(leftovers(g.name).size(), 3u);  // the first process still uses the bus
  }
  EXPECT_TRUE(leftovers(g.name).empty());
}

TEST(Bus, SigkilledUsersAreSweptByGcAndLiveOnesAreKept) {
  BusGuard dead{bus_name("dead")};
  BusGuard live{bus_name("live")};
  Bus keep(live.name);
  auto kept = keep.shared_memory("kept", 64);
  // Three users of the dead bus, all holding it open, then all killed.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < 3; ++i) {
    kids.push_back(test::fork_child([&, i] {
      Bus bus(dead.name);
      auto shm = bus.shared_memory("obj" + std::to_string(i), 64);
      Bus other(live.name);  // also attach to the live bus
      char c = 'r';
      if (::write(ready[1], &c, 1) != 1) return 1;
      for (;;) ::pause();  // until killed
    }));
  }
  for (int i = 0; i < 3; ++i) {
    char c;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
  }
  ::close(ready[0]);
  ::close(ready[1]);
  for (pid_t k : kids) ::kill(k, SIGKILL);
  for (pid_t k : kids) EXPECT_EQ(test::wait_child(k).signal, SIGKILL);
  EXPECT_EQ(leftovers(dead.name).size(), 4u);

  auto r = test::run_inspector({"gc"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(leftovers(dead.name).empty()) << r.output;
  EXPECT_EQ(leftovers(live.name).size(), 2u);  // live process still attached
}

// Finds `key` in a stats object of bus-inspector's JSON ("counters" or "gauges").
std::int64_t stat(const nlohmann::json& j, const char* group, const std::string& key) {
  const auto& g = j.at("stats").at(group);
  EXPECT_TRUE(g.contains(key)) << j.dump(2);
  return g.contains(key) ? g[key].get<std::int64_t>() : -1;
}

TEST(Bus, InspectorShowsDepthCountersAndDeadPeers) {
  BusGuard g{bus_name("live")};
  Bus bus(g.name);
  auto orders = bus.queue<int>("orders", {.capacity = 16});
  auto ctl = bus.pipe("ctl", PipeEnd::first);
  // A child takes the other end of the pipe, sends two messages, puts one
  // order, then is killed.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = test::fork_child([&] {
    Bus other(g.name);
    auto end = other.pipe("ctl", PipeEnd::second);
    auto q = other.queue<int>("orders");
    if (end.send(std::string("one")) != SendResult::ok) return 1;
    if (end.send(std::string("two")) != SendResult::ok) return 2;
    if (q.put(7) != QueueResult::ok) return 3;
    char c = 'r';
    if (::write(ready[1], &c, 1) != 1) return 4;
    for (;;) ::pause();
  });
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(orders.put(8), QueueResult::ok);
  ::kill(child, SIGKILL);
  EXPECT_EQ(test::wait_child(child).signal, SIGKILL);

  auto q = test::run_inspector({"show", g.name + "/orders", "--json"});
  ASSERT_EQ(q.exit_code, 0) << q.output;
  const auto qj = nlohmann::json::parse(q.output);
  EXPECT_EQ(stat(qj, "gauges", "depth"), 2);
  EXPECT_EQ(stat(qj, "counters", "committed"), 2);
  EXPECT_EQ(stat(qj, "counters", "delivered"), 0);

  auto p = test::run_inspector({"show", g.name + "/ctl", "--json"});
  ASSERT_EQ(p.exit_code, 0) << p.output;
  const auto pj = nlohmann::json::parse(p.output);
  EXPECT_EQ(stat(pj, "counters", "end0.peer_messages_out"), 2);
  EXPECT_GT(stat(pj, "gauges", "end0.depth_bytes"), 0);
  EXPECT_EQ(stat(pj, "gauges", "end1.owner_pid"), child);
  bool dead_peer = false;
  for (const auto& problem : pj["stats"]["problems"]) {
    dead_peer = dead_peer || problem.get<std::string>().find("dead process") != std::string::npos;
  }
  EXPECT_TRUE(dead_peer) << p.output;
  bool child_dead = false;
  for (const auto& a : pj["attached"])
    child_dead = child_dead || (a["pid"] == child && !a["alive"]);
  EXPECT_TRUE(child_dead);

  // The survivor still reads everything committed, then EOF.
  EXPECT_EQ(ctl.recv_string(), "one");
  EXPECT_EQ(ctl.recv_string(), "two");
  std::array<std::byte, 16> buf{};
  std::size_t n = 0;
  EXPECT_EQ(ctl.recv_bytes_into_for(buf, 0, n, 5s), RecvResult::peer_dead);
}

TEST(Bus, InspectorShowsTheRegistry) {
  BusGuard g{bus_name("insp")};
  Bus bus(g.name);
  auto a = bus.shared_memory("alpha", 64);
  auto r = test::run_inspector({"show", g.name, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["kind"], "bus_registry");
  ASSERT_EQ(j["objects"].size(), 1u);
  EXPECT_EQ(j["objects"][0]["name"], "alpha");
  EXPECT_EQ(j["objects"][0]["kind"], "shared_memory");

  auto obj = test::run_inspector({"show", g.name + "/alpha", "--json"});
  ASSERT_EQ(obj.exit_code, 0) << obj.output;
  EXPECT_EQ(nlohmann::json::parse(obj.output)["name"], g.name + ".alpha");
}

}  // namespace
}  // namespace shmbus
