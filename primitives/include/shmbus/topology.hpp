// shmbus topology — what the machine's CPUs look like, and pinning to them.
//
// Topology::current() asks hwloc once per process for the packages, physical
// cores, hardware threads (PUs), caches and NUMA nodes, and keeps a plain
// copy (no hwloc handle survives discovery, so the object is immutable and
// safe to read from any thread, and in a forked child).
//
// pick_pair() chooses a producer/consumer pair of CPUs on distinct physical
// cores, sharing an L3 where the machine has one (Placement::near) or on
// different L3s / packages (Placement::far), and says which and why in a
// sentence a human can read. On a machine where hwloc sees little (a small
// VM with no cache or SMT information) it still answers, and notes() lists
// what it could not see.
//
// Pinning: pin_this_thread() / pin_this_process() restrict the calling
// thread or every thread of the calling process to a set of CPUs
// (sched_setaffinity). A forked or spawned child inherits the calling
// thread's affinity. All of this is setup: failures throw shmbus::Error.
//
// Names follow Python where it has one: cpu_count() is os.cpu_count() /
// multiprocessing.cpu_count(); process_cpu_count() is os.process_cpu_count()
// (the CPUs this process may run on).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace shmbus {

// A set of CPUs by their OS index (as in /proc/cpuinfo, taskset, sched_*).
using CpuList = std::vector<int>;

struct CacheInfo {
  int level = 0;                 // 1, 2, 3 (4 for an L4)
  char type = 'u';               // 'd' data, 'i' instruction, 'u' unified
  std::uint64_t size_bytes = 0;  // 0 when hwloc does not know
  CpuList cpus;                  // the CPUs that share this cache
};

struct CoreInfo {
  int index = 0;      // logical index among the cores hwloc found
  int package = 0;    // logical index of its package (socket)
  int numa_node = 0;  // logical index of its NUMA node
  int l2 = -1;        // index into Topology::caches() of its L2, -1 if none
  int l3 = -1;        // index into Topology::caches() of its L3, -1 if none
  CpuList cpus;       // its hardware threads (PUs), OS indices
};

struct NumaNodeInfo {
  int os_index = 0;
  std::uint64_t memory_bytes = 0;
  CpuList cpus;
};

enum class Placement : std::uint8_t {
  near,  // distinct cores sharing an L3 (the fastest cache-line exchange)
  far,   // distinct cores on different L3s or packages, where there are some
};

// Where a producer and a consumer should run, and why.
struct CpuPlacement {
  int producer = 0;
  int consumer = 0;
  bool distinct_cores = false;  // false: both on one core (SMT or one CPU)
  bool shares_l3 = false;       // true: the two cores share an L3
  std::string why;              // one human sentence
};

class Topology {
 public:
  // The machine as hwloc sees it, discovered on first use (thread-safe);
  // throws Error(system) if hwloc cannot load a topology at all.
  static const Topology& current();
  // A fresh discovery (for tools that want to re-read the machine).
  static Topology discover();

  // Counts of what hwloc found.
  [[nodiscard]] int package_count() const noexcept { return packages_; }
  [[nodiscard]] int core_count() const noexcept { return static_cast<int>(cores_.size()); }
  [[nodiscard]] int pu_count() const noexcept { return pus_; }
  [[nodiscard]] int numa_node_count() const noexcept { return static_cast<int>(numa_.size()); }

  [[nodiscard]] const std::vector<CoreInfo>& cores() const noexcept { return cores_; }
  [[nodiscard]] const std::vector<CacheInfo>& caches() const noexcept { return caches_; }
  [[nodiscard]] const std::vector<NumaNodeInfo>& numa_nodes() const noexcept { return numa_; }
  // The core that holds `cpu`, or nullptr if hwloc does not know it.
  [[nodiscard]] const CoreInfo* core_of(int cpu) const noexcept;

  // A producer/consumer pair among the CPUs this process may run on (its
  // affinity mask at the time of the call). Never throws for a small
  // machine: with one CPU both sides get it, and `why` says so.
  [[nodiscard]] CpuPlacement pick_pair(Placement placement = Placement::near) const;

  // What hwloc could not see or what looks invented (e.g. "no SMT
  // information", "under a hypervisor: ..."); empty on a machine that
  // reports everything.
  [[nodiscard]] const std::vector<std::string>& notes() const noexcept { return notes_; }

  // The CPU model hwloc read (e.g. "AMD EPYC"), empty if unknown.
  [[nodiscard]] const std::string& cpu_model() const noexcept { return cpu_model_; }

  // A few lines for humans: "1 package, 2 cores, 2 hardware threads, ..."
  [[nodiscard]] std::string describe() const;

 private:
  Topology() = default;

  int packages_ = 0;
  int pus_ = 0;
  std::vector<CoreInfo> cores_;
  std::vector<CacheInfo> caches_;
  std::vector<NumaNodeInfo> numa_;
  std::vector<std::string> notes_;
  std::string cpu_model_;
};

// CPUs in the system (online), like os.cpu_count(); at least 1.
[[nodiscard]] int cpu_count() noexcept;
// CPUs the calling thread may run on, like os.process_cpu_count().
[[nodiscard]] int process_cpu_count() noexcept;

// The calling thread's current affinity (sorted OS indices); throws Error.
[[nodiscard]] CpuList this_thread_cpus();

// Restrict the calling thread to `cpus` (or to one cpu). Throws
// Error(invalid_argument) for an empty set or a negative index, and
// Error(permission_denied / invalid_argument / system) when the kernel
// refuses (a CPU outside the cgroup's cpuset, an offline CPU).
void pin_this_thread(int cpu);
void pin_this_thread(std::span<const int> cpus);

// The same for every thread of the calling process (each task in
// /proc/self/task); threads started afterwards inherit it from the thread
// that creates them.
void pin_this_process(int cpu);
void pin_this_process(std::span<const int> cpus);

}  // namespace shmbus
