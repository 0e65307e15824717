// Topology: discovery gives a coherent picture, the pair pick stays within
// the usable cpus, and pinning takes effect (a forked child reads its own
// affinity back).
#include "shmbus/topology.hpp"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "shmbus/error.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using test::code_of;

int exit_code_of(const std::function<int()>& body) {
  auto st = test::wait_child(test::fork_child(body));
  EXPECT_TRUE(st.exited) << "signal " << st.signal;
  return st.code;
}

TEST(Topology, DiscoveryIsCoherent) {
  const Topology& t = Topology::current();
  EXPECT_GE(cpu_count(), 1);
  EXPECT_GE(process_cpu_count(), 1);
  EXPECT_LE(process_cpu_count(), cpu_count());
  ASSERT_GE(t.core_count(), 1);
  EXPECT_GE(t.pu_count(), t.core_count());
  EXPECT_GE(t.numa_node_count(), 1);
  std::size_t pus = 0;
  for (const CoreInfo& c : t.cores()) {
    EXPECT_FALSE(c.cpus.empty());
    pus += c.cpus.size();
    if (c.l3 >= 0) {
      ASSERT_LT(static_cast<std::size_t>(c.l3), t.caches().size());
      const CacheInfo& l3 = t.caches()[static_cast<std::size_t>(c.l3)];
      EXPECT_EQ(l3.level, 3);
      for (int cpu : c.cpus) {
        EXPECT_NE(std::find(l3.cpus.begin(), l3.cpus.end(), cpu), l3.cpus.end());
      }
    }
    for (int cpu : c.cpus) EXPECT_EQ(t.core_of(cpu), &c);
  }
  EXPECT_EQ(pus, static_cast<std::size_t>(t.pu_count()));
  // Every cpu we may run on is known to hwloc.
  for (int cpu : this_thread_cpus()) EXPECT_NE(t.core_of(cpu), nullptr) << cpu;
  EXPECT_EQ(t.core_of(1 << 20), nullptr);
  const std::string d = t.describe();
  EXPECT_NE(d.find("core"), std::string::npos) << d;
}

TEST(Topology, PairIsUsableAndExplained) {
  const Topology& t = Topology::current();
  const CpuList usable = this_thread_cpus();
  for (Placement pl : {Placement::near, Placement::far}) {
    const CpuPlacement p = t.pick_pair(pl);
    EXPECT_TRUE(std::binary_search(usable.begin(), usable.end(), p.producer));
    EXPECT_TRUE(std::binary_search(usable.begin(), usable.end(), p.consumer));
    EXPECT_FALSE(p.why.empty());
    std::size_t usable_cores = 0;
    for (const CoreInfo& c : t.cores()) {
      usable_cores += std::any_of(c.cpus.begin(), c.cpus.end(), [&](int cpu) {
        return std::binary_search(usable.begin(), usable.end(), cpu);
      });
    }
    if (usable_cores >= 2) {
      EXPECT_TRUE(p.distinct_cores);
      EXPECT_NE(t.core_of(p.producer), t.core_of(p.consumer)) << p.why;
    }
    if (p.shares_l3) {
      EXPECT_EQ(t.core_of(p.producer)->l3, t.core_of(p.consumer)->l3);
    }
  }
}

TEST(Topology, PairRespectsANarrowedAffinity) {
  const CpuList usable = this_thread_cpus();
  const int only = usable.back();
  EXPECT_EQ(exit_code_of([&] {
              pin_this_thread(only);
              CpuPlacement p = Topology::current().pick_pair();
              if (p.producer != only || p.consumer != only || p.distinct_cores) return 1;
              return p.why.find(std::to_string(only)) != std::string::npos ? 0 : 2;
            }),
            0);
}

TEST(Topology, PinnedChildReadsItsAffinityBack) {
  for (int cpu : this_thread_cpus()) {
    EXPECT_EQ(exit_code_of([cpu] {
                pin_this_thread(cpu);
                if (this_thread_cpus() != CpuList{cpu}) return 1;
                return ::sched_getcpu() == cpu ? 0 : 2;
              }),
              0)
        << "cpu " << cpu;
  }
}

TEST(Topology, PinProcessMovesEveryThread) {
  const int cpu = this_thread_cpus().front();
  EXPECT_EQ(exit_code_of([cpu] {
              std::atomic<int> phase{0};
              CpuList seen;
              std::thread other([&] {
                phase.store(1);
                while (phase.load() != 2) std::this_thread::yield();
                seen = this_thread_cpus();
              });
              while (phase.load() != 1) std::this_thread::yield();
              pin_this_process(cpu);
              phase.store(2);
              other.join();
              return seen == CpuList{cpu} && this_thread_cpus() == CpuList{cpu} ? 0 : 1;
            }),
            0);
}

TEST(Topology, BadPinsThrowAndChangeNothing) {
  const CpuList before = this_thread_cpus();
  EXPECT_EQ(code_of([] { pin_this_thread(std::span<const int>{}); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([] { pin_this_thread(-1); }), Errc::invalid_argument);
  // A cpu far beyond any online one: the kernel refuses (EINVAL).
  EXPECT_EQ(code_of([] { pin_this_thread(4000); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([] { pin_this_process(4000); }), Errc::invalid_argument);
  EXPECT_EQ(this_thread_cpus(), before);
}

}  // namespace
}  // namespace shmbus
