// Topology discovery through hwloc, CPU pair selection, and pinning through
// sched_setaffinity. See topology.hpp for the contract.
#include "shmbus/topology.hpp"

#include <dirent.h>
#include <hwloc.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string_view>

#include "shmbus/error.hpp"

namespace shmbus {
namespace {

constexpr std::string_view kObject = "topology";

CpuList cpus_of(hwloc_const_bitmap_t set) {
  CpuList out;
  if (set == nullptr) return out;
  int id = hwloc_bitmap_first(set);
  while (id >= 0) {
    out.push_back(id);
    id = hwloc_bitmap_next(set, id);
  }
  return out;
}

std::string list_string(const CpuList& cpus) {
  std::string s;
  for (std::size_t i = 0; i < cpus.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(cpus[i]);
  }
  return s;
}

std::string size_string(std::uint64_t bytes) {
  if (bytes == 0) return "size unknown";
  if (bytes % (1024ull * 1024) == 0) return std::to_string(bytes / (1024ull * 1024)) + " MiB";
  if (bytes % 1024 == 0) return std::to_string(bytes / 1024) + " KiB";
  return std::to_string(bytes) + " B";
}

// The first "flags" line of /proc/cpuinfo names "hypervisor" under a VM.
bool under_hypervisor() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) return line.find(" hypervisor") != std::string::npos;
  }
  return false;
}

struct HwlocTopology {
  hwloc_topology_t t = nullptr;
  ~HwlocTopology() {
    if (t != nullptr) hwloc_topology_destroy(t);
  }
};

// An owned dynamic cpu_set_t for CPU indices up to `max_cpu`.
struct CpuSet {
  explicit CpuSet(int max_cpu)
      : count(std::max(max_cpu + 1, 1024)), size(CPU_ALLOC_SIZE(count)), set(CPU_ALLOC(count)) {
    if (set == nullptr) throw Error(Errc::system, std::string(kObject), "CPU_ALLOC failed");
    CPU_ZERO_S(size, set);
  }
  ~CpuSet() { CPU_FREE(set); }
  CpuSet(const CpuSet&) = delete;
  CpuSet& operator=(const CpuSet&) = delete;
  int count;
  std::size_t size;
  cpu_set_t* set;
};

std::unique_ptr<CpuSet> make_set(std::span<const int> cpus) {
  if (cpus.empty()) {
    throw Error(Errc::invalid_argument, std::string(kObject), "pinning to an empty cpu set");
  }
  int max_cpu = 0;
  for (int c : cpus) {
    if (c < 0) {
      throw Error(Errc::invalid_argument, std::string(kObject),
                  "cpu index " + std::to_string(c) + " is negative");
    }
    max_cpu = std::max(max_cpu, c);
  }
  auto s = std::make_unique<CpuSet>(max_cpu);
  for (int c : cpus) CPU_SET_S(static_cast<std::size_t>(c), s->size, s->set);
  return s;
}

[[noreturn]] void throw_affinity(int err, std::span<const int> cpus, const char* what) {
  CpuList l(cpus.begin(), cpus.end());
  std::string reason =
      std::string(what) + " to cpus {" + list_string(l) + "}: " + std::strerror(err);
  if (err == EINVAL) {
    throw Error(Errc::invalid_argument, std::string(kObject),
                reason + " (offline, or outside this process's cpuset)");
  }
  if (err == EPERM) throw Error(Errc::permission_denied, std::string(kObject), reason);
  throw Error(Errc::system, std::string(kObject), reason);
}

}  // namespace

const Topology& Topology::current() {
  static const Topology topo = discover();
  return topo;
}

Topology Topology::discover() {
  HwlocTopology h;
  if (hwloc_topology_init(&h.t) != 0) {
    throw Error(Errc::system, std::string(kObject), "hwloc_topology_init failed");
  }
  if (hwloc_topology_load(h.t) != 0) {
    throw Error(Errc::system, std::string(kObject),
                std::string("hwloc_topology_load failed: ") + std::strerror(errno));
  }
  hwloc_topology_t t = h.t;
  Topology topo;
  topo.packages_ = std::max(0, hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE));
  topo.pus_ = std::max(0, hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU));

  // NUMA nodes (memory children in hwloc 2: found by type, not by depth).
  const int nnuma = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
  std::vector<hwloc_obj_t> numa_objs;
  for (int i = 0; i < nnuma; ++i) {
    hwloc_obj_t o = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    numa_objs.push_back(o);
    topo.numa_.push_back(NumaNodeInfo{static_cast<int>(o->os_index),
                                      o->attr ? o->attr->numanode.local_memory : 0,
                                      cpus_of(o->cpuset)});
  }

  // Caches, every level and kind.
  std::vector<hwloc_obj_t> cache_objs;
  const hwloc_obj_type_t cache_types[] = {
      HWLOC_OBJ_L1CACHE, HWLOC_OBJ_L1ICACHE, HWLOC_OBJ_L2CACHE, HWLOC_OBJ_L2ICACHE,
      HWLOC_OBJ_L3CACHE, HWLOC_OBJ_L3ICACHE, HWLOC_OBJ_L4CACHE, HWLOC_OBJ_L5CACHE};
  for (hwloc_obj_type_t ct : cache_types) {
    const int n = hwloc_get_nbobjs_by_type(t, ct);
    for (int i = 0; i < n; ++i) {
      hwloc_obj_t o = hwloc_get_obj_by_type(t, ct, static_cast<unsigned>(i));
      CacheInfo c;
      c.level = static_cast<int>(o->attr->cache.depth);
      c.size_bytes = o->attr->cache.size;
      c.type = o->attr->cache.type == HWLOC_OBJ_CACHE_DATA          ? 'd'
               : o->attr->cache.type == HWLOC_OBJ_CACHE_INSTRUCTION ? 'i'
                                                                    : 'u';
      c.cpus = cpus_of(o->cpuset);
      cache_objs.push_back(o);
      topo.caches_.push_back(std::move(c));
    }
  }

  auto index_of_cache = [&](hwloc_obj_t core, int level) {
    for (std::size_t i = 0; i < cache_objs.size(); ++i) {
      const CacheInfo& c = topo.caches_[i];
      if (c.level == level && c.type != 'i' &&
          hwloc_bitmap_isincluded(core->cpuset, cache_objs[i]->cpuset)) {
        return static_cast<int>(i);
      }
    }
    return -1;
  };
  auto numa_of = [&](hwloc_obj_t core) {
    for (std::size_t i = 0; i < numa_objs.size(); ++i) {
      if (hwloc_bitmap_intersects(core->cpuset, numa_objs[i]->cpuset)) return static_cast<int>(i);
    }
    return 0;
  };

  // Cores; where hwloc reports none, each PU stands for a core.
  int ncores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
  const bool no_cores = ncores <= 0;
  const hwloc_obj_type_t core_type = no_cores ? HWLOC_OBJ_PU : HWLOC_OBJ_CORE;
  if (no_cores) ncores = topo.pus_;
  for (int i = 0; i < ncores; ++i) {
    hwloc_obj_t o = hwloc_get_obj_by_type(t, core_type, static_cast<unsigned>(i));
    CoreInfo c;
    c.index = i;
    hwloc_obj_t pkg = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_PACKAGE, o);
    c.package = pkg ? static_cast<int>(pkg->logical_index) : 0;
    c.numa_node = numa_of(o);
    c.l2 = index_of_cache(o, 2);
    c.l3 = index_of_cache(o, 3);
    c.cpus = cpus_of(o->cpuset);
    topo.cores_.push_back(std::move(c));
  }

  if (hwloc_obj_t pkg = hwloc_get_obj_by_type(t, HWLOC_OBJ_PACKAGE, 0)) {
    if (const char* m = hwloc_obj_get_info_by_name(pkg, "CPUModel")) {
      topo.cpu_model_ = m;
      while (!topo.cpu_model_.empty() && topo.cpu_model_.back() == ' ') topo.cpu_model_.pop_back();
    }
  }

  // What could not be seen.
  auto& notes = topo.notes_;
  if (topo.packages_ == 0) notes.emplace_back("no package (socket) information");
  if (no_cores) {
    notes.emplace_back("no core information: each hardware thread is counted as a core");
  }
  const bool any_smt = std::any_of(topo.cores_.begin(), topo.cores_.end(),
                                   [](const CoreInfo& c) { return c.cpus.size() > 1; });
  if (!any_smt && topo.cores_.size() > 1) {
    notes.emplace_back(
        "no SMT siblings seen: each core shows one hardware thread (SMT off or hidden)");
  }
  const bool any_l3 = std::any_of(topo.cores_.begin(), topo.cores_.end(),
                                  [](const CoreInfo& c) { return c.l3 >= 0; });
  if (topo.caches_.empty()) {
    notes.emplace_back("no cache information at all");
  } else if (!any_l3) {
    notes.emplace_back("no L3 cache reported");
  } else if (topo.cores_.size() > 1) {
    bool shared = false;
    for (std::size_t i = 0; i < topo.cores_.size() && !shared; ++i) {
      for (std::size_t j = i + 1; j < topo.cores_.size(); ++j) {
        if (topo.cores_[i].l3 >= 0 && topo.cores_[i].l3 == topo.cores_[j].l3) shared = true;
      }
    }
    if (!shared) {
      notes.emplace_back(
          "no L3 is shared between cores (each core reports its own L3): the real cache "
          "layout is hidden or cores share nothing below memory");
    }
  }
  if (under_hypervisor()) {
    notes.emplace_back(
        "under a hypervisor: cores and caches are what the VM advertises, and the host may "
        "move vCPUs between physical cores");
  }
  return topo;
}

const CoreInfo* Topology::core_of(int cpu) const noexcept {
  for (const CoreInfo& c : cores_) {
    if (std::find(c.cpus.begin(), c.cpus.end(), cpu) != c.cpus.end()) return &c;
  }
  return nullptr;
}

CpuPlacement Topology::pick_pair(Placement placement) const {
  CpuList allowed;
  try {
    allowed = this_thread_cpus();
  } catch (const Error&) {
    for (int i = 0; i < cpu_count(); ++i) allowed.push_back(i);
  }
  auto usable = [&](int cpu) { return std::binary_search(allowed.begin(), allowed.end(), cpu); };
  struct Cand {
    const CoreInfo* core;
    int cpu;
  };
  std::vector<Cand> cands;  // one usable cpu per core, in core order
  for (const CoreInfo& c : cores_) {
    for (int cpu : c.cpus) {
      if (usable(cpu)) {
        cands.push_back({&c, cpu});
        break;
      }
    }
  }
  auto l3_text = [&](int l3) {
    const CacheInfo& c = caches_[static_cast<std::size_t>(l3)];
    return "an L3 (" + size_string(c.size_bytes) + ", cpus {" + list_string(c.cpus) + "})";
  };
  auto cores_text = [](const Cand& a, const Cand& b) {
    return "cpus " + std::to_string(a.cpu) + " and " + std::to_string(b.cpu) +
           ": distinct physical cores " + std::to_string(a.core->index) + " and " +
           std::to_string(b.core->index);
  };
  CpuPlacement p;
  if (cands.size() >= 2) {
    p.distinct_cores = true;
    // Cores grouped by the L3 they share.
    std::vector<std::vector<Cand>> groups;
    for (const Cand& c : cands) {
      if (c.core->l3 < 0) continue;
      auto g = std::find_if(groups.begin(), groups.end(),
                            [&](const auto& v) { return v.front().core->l3 == c.core->l3; });
      if (g == groups.end()) {
        groups.push_back({c});
      } else {
        g->push_back(c);
      }
    }
    if (placement == Placement::near) {
      for (const auto& g : groups) {
        if (g.size() < 2) continue;
        // Leave cpu 0 (interrupts, housekeeping) out when the L3 has room.
        std::size_t first = (g.size() >= 3 && g[0].cpu == 0) ? 1 : 0;
        p.producer = g[first].cpu;
        p.consumer = g[first + 1].cpu;
        p.shares_l3 = true;
        p.why = cores_text(g[first], g[first + 1]) + " sharing " + l3_text(g[first].core->l3) +
                (first ? "; cpu 0 left to interrupts and housekeeping" : "");
        return p;
      }
      // No shared L3: two cores close together (same package and NUMA node).
      const Cand* a = &cands[0];
      const Cand* b = &cands[1];
      for (std::size_t j = 1; j < cands.size(); ++j) {
        if (cands[j].core->package == a->core->package &&
            cands[j].core->numa_node == a->core->numa_node) {
          b = &cands[j];
          break;
        }
      }
      p.producer = a->cpu;
      p.consumer = b->cpu;
      p.why =
          cores_text(*a, *b) + " in package " + std::to_string(a->core->package) +
          (a->core->package == b->core->package ? "" : " and " + std::to_string(b->core->package)) +
          "; no two usable cores share an L3 here" +
          (std::any_of(cores_.begin(), cores_.end(), [](const CoreInfo& c) { return c.l3 >= 0; })
               ? " (each core reports its own L3, as a VM often does)"
               : " (no L3 is reported)");
      return p;
    }
    // far: different packages first, then different L3s.
    for (std::size_t i = 0; i < cands.size(); ++i) {
      for (std::size_t j = i + 1; j < cands.size(); ++j) {
        if (cands[i].core->package != cands[j].core->package) {
          p.producer = cands[i].cpu;
          p.consumer = cands[j].cpu;
          p.why = cores_text(cands[i], cands[j]) + " in different packages (" +
                  std::to_string(cands[i].core->package) + " and " +
                  std::to_string(cands[j].core->package) + ")";
          return p;
        }
      }
    }
    for (std::size_t i = 0; i < cands.size(); ++i) {
      for (std::size_t j = i + 1; j < cands.size(); ++j) {
        if (cands[i].core->l3 != cands[j].core->l3) {
          p.producer = cands[i].cpu;
          p.consumer = cands[j].cpu;
          p.why = cores_text(cands[i], cands[j]) + " on different L3s";
          return p;
        }
      }
    }
    p.producer = cands[0].cpu;
    p.consumer = cands[1].cpu;
    p.shares_l3 = cands[0].core->l3 >= 0;
    p.why = cores_text(cands[0], cands[1]) +
            "; every usable core shares one L3 and one package, so no far placement exists here";
    return p;
  }
  if (cands.size() == 1) {
    CpuList mine;
    for (int cpu : cands[0].core->cpus) {
      if (usable(cpu)) mine.push_back(cpu);
    }
    if (mine.size() >= 2) {
      p.producer = mine[0];
      p.consumer = mine[1];
      p.shares_l3 = cands[0].core->l3 >= 0;
      p.why = "cpus " + std::to_string(mine[0]) + " and " + std::to_string(mine[1]) +
              ": hardware threads of one core (the only usable core); they share its L1 and "
              "L2, so figures will not match two distinct cores";
      return p;
    }
    p.producer = p.consumer = mine[0];
    p.why = "only cpu " + std::to_string(mine[0]) +
            " is usable: producer and consumer share it and take turns";
    return p;
  }
  // hwloc knows none of the usable cpus: fall back to the affinity mask.
  p.producer = allowed.empty() ? 0 : allowed[0];
  p.consumer = allowed.size() > 1 ? allowed[1] : p.producer;
  p.distinct_cores = false;
  p.why = "cpus " + std::to_string(p.producer) + " and " + std::to_string(p.consumer) +
          ": the first usable cpus; hwloc does not describe them, so whether they are distinct "
          "cores is unknown";
  return p;
}

std::string Topology::describe() const {
  auto plural = [](std::size_t n, const char* word) {
    return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
  };
  std::string s;
  if (!cpu_model_.empty()) s += cpu_model_ + "\n";
  s += plural(static_cast<std::size_t>(packages_), "package") + ", " +
       plural(cores_.size(), "core") + ", " +
       plural(static_cast<std::size_t>(pus_), "hardware thread") + ", " +
       plural(numa_.size(), "NUMA node") + "\n";
  for (const CoreInfo& c : cores_) {
    s += "  core " + std::to_string(c.index) + ": cpus {" + list_string(c.cpus) + "}, package " +
         std::to_string(c.package) + ", NUMA " + std::to_string(c.numa_node);
    for (int idx : {c.l2, c.l3}) {
      if (idx < 0) continue;
      const CacheInfo& k = caches_[static_cast<std::size_t>(idx)];
      s += ", L" + std::to_string(k.level) + " " + size_string(k.size_bytes) +
           (k.cpus.size() > c.cpus.size() ? " shared with cpus {" + list_string(k.cpus) + "}"
                                          : " own");
    }
    s += "\n";
  }
  for (const std::string& n : notes_) s += "  note: " + n + "\n";
  return s;
}

int cpu_count() noexcept {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

int process_cpu_count() noexcept {
  try {
    return std::max<int>(1, static_cast<int>(this_thread_cpus().size()));
  } catch (...) {
    return cpu_count();
  }
}

CpuList this_thread_cpus() {
  for (int count = 1024; count <= (1 << 20); count *= 4) {
    CpuSet s(count - 1);
    if (::sched_getaffinity(0, s.size, s.set) == 0) {
      CpuList out;
      for (int i = 0; i < s.count; ++i) {
        if (CPU_ISSET_S(static_cast<std::size_t>(i), s.size, s.set)) out.push_back(i);
      }
      return out;
    }
    if (errno != EINVAL) break;  // EINVAL: the kernel's mask is larger, grow
  }
  throw Error(Errc::system, std::string(kObject),
              std::string("sched_getaffinity: ") + std::strerror(errno));
}

void pin_this_thread(int cpu) { pin_this_thread(std::span<const int>(&cpu, 1)); }

void pin_this_thread(std::span<const int> cpus) {
  auto s = make_set(cpus);
  if (::sched_setaffinity(0, s->size, s->set) != 0) throw_affinity(errno, cpus, "pinning thread");
}

void pin_this_process(int cpu) { pin_this_process(std::span<const int>(&cpu, 1)); }

void pin_this_process(std::span<const int> cpus) {
  auto s = make_set(cpus);
  // The calling thread first, so that a refusal is reported before any
  // other thread moved.
  if (::sched_setaffinity(0, s->size, s->set) != 0) throw_affinity(errno, cpus, "pinning process");
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) {
    throw Error(Errc::system, std::string(kObject),
                std::string("opendir /proc/self/task: ") + std::strerror(errno));
  }
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    long tid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || tid <= 0) continue;
    if (::sched_setaffinity(static_cast<pid_t>(tid), s->size, s->set) != 0 && errno != ESRCH) {
      const int err = errno;
      ::closedir(dir);
      throw_affinity(err, cpus, "pinning process");
    }
  }
  ::closedir(dir);
}

}  // namespace shmbus
