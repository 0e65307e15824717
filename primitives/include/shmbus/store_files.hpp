// Container store files, seen from outside: the sweeps, the Bus and the
// inspector find and judge Dict, List and Namespace stores (shmbus::
// containers, on LMDB) without linking LMDB.
//
// A store is not a segment: it is the LMDB data file
// /dev/shm/shmbus-kv.<name> and its lock file <...>-lock. Who has it open
// is read from the kernel, not from the file: LMDB holds a shared fcntl
// lock on its lock file's first byte for as long as a process has the
// store open, released by the kernel when the process dies. These
// functions read /proc/locks and stat() by path: they never open the lock
// file, since closing any descriptor of it would drop the calling
// process's own LMDB locks.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace shmbus {

// "/dev/shm/shmbus-kv.<name>": the data file of the store `name`.
[[nodiscard]] std::string store_path(std::string_view name);

// Names of every store in /dev/shm (without prefix), sorted.
[[nodiscard]] std::vector<std::string> list_stores();

// The processes that have the store open (this one included), by pid,
// sorted; empty when none does or there is no such store.
[[nodiscard]] std::vector<int> store_holders(const std::string& name);

// Unlinks the store's two files; false if there was no data file.
bool remove_store(const std::string& name);

}  // namespace shmbus
