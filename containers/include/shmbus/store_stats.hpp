// What a container's store holds and who uses it, for bus-inspector and
// tests: entries, bytes, the processes that have it open, the readers in a
// read transaction now, and the writer holding its write lock now.
//
// Reading it opens the store read-only for a moment (one LMDB read
// transaction: it never blocks a writer), after validating the file as an
// open does; the readers and the writer are read from the lock file before
// that open (LMDB's reader table and its robust writer mutex, layout of
// LMDB 0.9 on glibc), so the inspecting process is never among them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shmbus {

struct StoreStats {
  std::string name;
  std::string kind;  // "dict", "list", "namespace"
  std::string key_type, value_type;
  std::uint64_t entries = 0;
  std::uint64_t file_bytes = 0;  // the file (the map, reserved in /dev/shm)
  std::uint64_t used_bytes = 0;  // the pages the last commit uses
  std::vector<int> holders;      // pids that have it open (store_files.hpp)
  std::vector<int> readers;      // pids in a read transaction now
  int writer = 0;                // pid holding the write lock now; 0: none
};

// Throws Error: not_found, corrupted / truncated (a file an open would
// reject), invalid_argument when this process has the store open (LMDB
// allows one environment per file per process: use another process, as
// bus-inspector is), system.
[[nodiscard]] StoreStats inspect_store(const std::string& name);

}  // namespace shmbus
