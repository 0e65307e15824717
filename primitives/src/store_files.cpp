#include "shmbus/store_files.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace shmbus {

namespace {
constexpr std::string_view kDir = "/dev/shm/";
constexpr std::string_view kPrefix = "shmbus-kv.";
constexpr std::string_view kLockSuffix = "-lock";
}  // namespace

std::string store_path(std::string_view name) {
  return std::string(kDir) + std::string(kPrefix) + std::string(name);
}

std::vector<std::string> list_stores() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(std::string(kDir).c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {
    std::string_view file = entry->d_name;
    if (!file.starts_with(kPrefix) || file.size() == kPrefix.size()) continue;
    if (file.ends_with(kLockSuffix)) continue;  // the lock file of a store
    if (entry->d_type == DT_DIR) continue;      // an anonymous store's reopening
    names.emplace_back(file.substr(kPrefix.size()));
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<int> store_holders(const std::string& name) {
  std::vector<int> pids;
  struct stat st {};
  if (::stat((store_path(name) + std::string(kLockSuffix)).c_str(), &st) != 0) return pids;
  // /proc/locks: "<id>: POSIX  ADVISORY  READ  <pid> <maj>:<min>:<ino> <start> <end>"
  // (fs/locks.c; "->" lines are waiters, skipped). LMDB's environment
  // lock is the one starting at byte 0.
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, cls, mode, type, dev, start;
    int pid = 0;
    if (!(ls >> id >> cls)) continue;
    if (cls == "->") continue;
    if (!(ls >> mode >> type >> pid >> dev >> start)) continue;
    if (cls != "POSIX" || start != "0") continue;
    unsigned maj = 0, min = 0;
    unsigned long long ino = 0;
    if (std::sscanf(dev.c_str(), "%x:%x:%llu", &maj, &min, &ino) != 3) continue;
    if (ino != st.st_ino || maj != major(st.st_dev) || min != minor(st.st_dev)) continue;
    pids.push_back(pid);
  }
  std::sort(pids.begin(), pids.end());
  pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
  return pids;
}

bool remove_store(const std::string& name) {
  const std::string p = store_path(name);
  const bool had = ::unlink(p.c_str()) == 0;
  ::unlink((p + std::string(kLockSuffix)).c_str());
  return had;
}

}  // namespace shmbus
