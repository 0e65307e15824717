#include "shmbus/detail/kv_store.hpp"

#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "fault_guard.hpp"
#include "shmbus/detail/segment.hpp"  // validate_name
#include "shmbus/error.hpp"
#include "shmbus/store_files.hpp"
#include "shmbus/store_stats.hpp"

#if defined(SHMBUS_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace shmbus::detail {

std::string_view to_string(StoreKind kind) noexcept {
  switch (kind) {
    case StoreKind::dict:
      return "dict";
    case StoreKind::list:
      return "list";
    case StoreKind::ns:
      return "namespace";
  }
  return "unknown";
}

namespace {

constexpr std::string_view kPathPrefix = "/dev/shm/shmbus-kv.";
constexpr std::size_t kTxnPool = 8;  // reset read txns kept per environment
constexpr auto kOpenTimeout = std::chrono::milliseconds(1000);
// The encoding of keys and values (detail/kv_codec.hpp); "2": through the
// codec, numeric keys big-endian. A store of another format is wrong_version.
const std::string kFormat = "2";

// Bumped in every forked child. relaxed: read and written by the one thread
// that forked (atfork handlers) and compared by the threads of the child,
// which exist only after fork returned.
constinit std::atomic<std::uint64_t> g_fork_gen{0};

// The process's open environments, one per path (LMDB: never open one
// environment twice in a process: closing either copy would drop the
// process's fcntl lock on the lock file).
std::mutex g_registry_mu;
std::map<std::string, std::weak_ptr<KvStore::Env>, std::less<>>& registry() {
  static auto* r = new std::map<std::string, std::weak_ptr<KvStore::Env>, std::less<>>();
  return *r;
}

void register_atfork() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::pthread_atfork([] { g_registry_mu.lock(); }, [] { g_registry_mu.unlock(); },
                     [] {
                       g_registry_mu.unlock();
                       g_fork_gen.fetch_add(1, std::memory_order_relaxed);
                     });
  });
}

[[noreturn]] void throw_mdb(const std::string& name, const char* what, int rc) {
  Errc code = Errc::system;
  if (rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_PANIC ||
      rc == MDB_BAD_TXN || rc == MDB_INCOMPATIBLE || rc == MDB_CURSOR_FULL)
    code = Errc::corrupted;
  else if (rc == MDB_VERSION_MISMATCH)
    code = Errc::wrong_version;
  else if (rc == EACCES || rc == EPERM)
    code = Errc::permission_denied;
  else if (rc == MDB_TXN_FULL || rc == MDB_MAP_FULL || rc == ENOSPC)
    code = Errc::too_large;
  throw Error(code, name, std::string(what) + ": " + ::mdb_strerror(rc));
}

// A guarded LMDB call faulted (fault_guard.hpp): the store's file is not
// what LMDB wrote.
[[noreturn]] void throw_fault(const std::string& name, const char* what) {
  throw Error(Errc::corrupted, name,
              std::string(what) + ": the store's pages are corrupted (" + describe_fault() + ")");
}

// An entry takes at least 12 bytes of a leaf page (node header, a 1-byte
// key, padding, its slot): more entries than that fit in the map is a lie.
constexpr std::size_t kMinEntryBytes = 12;

MDB_val val(Bytes b) { return MDB_val{b.size(), const_cast<std::byte*>(b.data())}; }
Bytes bytes(const MDB_val& v) { return {static_cast<const std::byte*>(v.mv_data), v.mv_size}; }

// LMDB orders a transaction's page writes before the readers that see them
// (meta-page txnid, reader table) in code ThreadSanitizer does not see, but
// it does see the page memcpy's. These edges tell it what LMDB guarantees:
// [kv.tsan] every transaction begins with an acquire and ends with a
// release on its environment. No-ops outside TSan builds. (A writer also
// reuses pages of readers that ended after its begin: the tests suppress
// those reports, tests/support/test_support.cpp.)
inline void tsan_begin([[maybe_unused]] void* env) noexcept {
#if defined(SHMBUS_TSAN)
  __tsan_acquire(env);
#endif
}
inline void tsan_end([[maybe_unused]] void* env) noexcept {
#if defined(SHMBUS_TSAN)
  __tsan_release(env);
#endif
}

// Calls f(lo, hi, offset, dev, inode) for every mapping of this process.
template <class F>
void for_each_mapping(F&& f) {
  const int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    unsigned long lo = 0, hi = 0, off = 0, ino = 0;
    unsigned maj = 0, min = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s %lx %x:%x %lu", &lo, &hi, perms, &off, &maj, &min,
                    &ino) == 7)
      f(lo, hi, off, makedev(maj, min), static_cast<ino_t>(ino));
  }
}

// Raised by WriteTxn::put on MDB_MAP_FULL; write() grows the map and reruns.
struct MapFull {};

// Why MDB_WRITEMAP needs these two (the SIGBUS the kill test saw, found):
// with MDB_WRITEMAP, LMDB sets the data file's size to the map size with
// ftruncate() whenever a process maps it (mdb_env_open, and every
// mdb_env_set_mapsize). A process that computed its size from a stat()
// taken before another process grew the map then cut the file back under
// the grower, which faulted (SIGBUS) on its next page beyond the cut,
// often in mdb_txn_commit; ASan's slower opens widened the window. So every
// map-size change in every process happens under one cross-process lock,
// and reads the file's size under it: the file never shrinks.
//
// [kv.size] flock() on the data file (its own open file description, kept
// for the environment's life): exclusive, released by the kernel when the
// holder dies, so a process killed while resizing blocks nobody. Held
// around stat + mdb_env_open / mdb_env_set_mapsize + reserve only, never
// during a transaction.
class SizeLock {
 public:
  SizeLock(int fd, const std::string& name) : fd_(fd) {
    while (::flock(fd_, LOCK_EX) != 0)
      if (errno != EINTR)
        throw Error(Errc::system, name, std::string("flock: ") + std::strerror(errno));
  }
  SizeLock(const SizeLock&) = delete;
  SizeLock& operator=(const SizeLock&) = delete;
  ~SizeLock() { ::flock(fd_, LOCK_UN); }

 private:
  int fd_;
};

std::size_t size_of(int fd, const std::string& name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(Errc::system, name, std::strerror(errno));
  return static_cast<std::size_t>(st.st_size);
}

// With MDB_WRITEMAP a write to a page tmpfs cannot back is a SIGBUS, not
// an error: the whole map is reserved in the file (posix_fallocate), so
// that a full /dev/shm is Error(too_large) at open or growth instead.
void reserve(int fd, std::size_t bytes, const std::string& name) {
  if (int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)); rc != 0)
    throw Error(rc == ENOSPC ? Errc::too_large : Errc::system, name,
                "reserving " + std::to_string(bytes) +
                    " bytes for the map in /dev/shm: " + std::strerror(rc));
}

// The two meta pages of an LMDB data file (format of LMDB 0.9, lmdb.h's
// MDB_meta after a 16-byte page header), read with pread so that a bad file
// is rejected before LMDB maps it. LMDB trusts its file: a root or last page
// beyond the end of the file would be a SIGBUS or a wild read.
struct DbRecord {
  std::uint32_t pad;  // page size, in the free DB's record
  std::uint16_t flags, depth;
  std::uint64_t branch_pages, leaf_pages, overflow_pages, entries, root;
};
struct MetaPage {
  std::uint64_t pgno;
  std::uint16_t pad, flags, lower, upper;
  std::uint32_t magic, version;
  std::uint64_t address, mapsize;
  DbRecord dbs[2];
  std::uint64_t last_pg, txnid;
};
static_assert(sizeof(DbRecord) == 48 && offsetof(MetaPage, magic) == 16);
constexpr std::uint32_t kLmdbMagic = 0xBEEFC0DE;
constexpr std::uint64_t kNoRoot = ~std::uint64_t{0};

// Throws corrupted/truncated unless `fd` holds a plausible LMDB data file.
// An empty file is a store whose creator has not yet written it (true).
bool validate_file(int fd, const std::string& name) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(Errc::system, name, std::strerror(errno));
  if (st.st_size == 0) return false;
  MetaPage m0{};
  if (::pread(fd, &m0, sizeof m0, 0) != static_cast<ssize_t>(sizeof m0) || m0.magic != kLmdbMagic)
    throw Error(Errc::corrupted, name, "not an LMDB store (bad magic in meta page 0)");
  const std::uint64_t psize = m0.dbs[0].pad;
  if (psize < 512 || psize > 65536 || (psize & (psize - 1)) != 0)
    throw Error(Errc::corrupted, name, "meta page 0: page size " + std::to_string(psize));
  if (static_cast<std::uint64_t>(st.st_size) < 2 * psize)
    throw Error(Errc::truncated, name,
                "file is " + std::to_string(st.st_size) + " bytes, less than its two meta pages");
  MetaPage m1{};
  if (::pread(fd, &m1, sizeof m1, static_cast<off_t>(psize)) != static_cast<ssize_t>(sizeof m1) ||
      m1.magic != kLmdbMagic)
    throw Error(Errc::corrupted, name, "bad magic in meta page 1");
  // LMDB takes the page size from the newer meta page, and allocates a
  // page-sized buffer at open: both must agree.
  if (m1.dbs[0].pad != psize)
    throw Error(Errc::corrupted, name,
                "meta page 1: page size " + std::to_string(m1.dbs[0].pad) + ", meta page 0 says " +
                    std::to_string(psize));
  // The size that bounds the metas is read after them: a committing writer
  // extends the file before it writes a meta page, so a size read after the
  // metas covers every page they name (one read before them may be older:
  // a concurrent commit then read as a truncated file).
  if (::fstat(fd, &st) != 0) throw Error(Errc::system, name, std::strerror(errno));
  const std::uint64_t pages = static_cast<std::uint64_t>(st.st_size) / psize;
  for (const MetaPage* m : {&m0, &m1}) {
    const int which = m == &m0 ? 0 : 1;
    // A meta page LMDB may pick must lie inside the file.
    if (m->last_pg >= pages)
      throw Error(Errc::truncated, name,
                  "meta page " + std::to_string(which) + " uses page " +
                      std::to_string(m->last_pg) + " but the file holds " + std::to_string(pages) +
                      " pages");
    for (const DbRecord& db : m->dbs)
      if (db.root != kNoRoot && (db.root < 2 || db.root > m->last_pg))
        throw Error(Errc::corrupted, name,
                    "meta page " + std::to_string(which) + ": root page " +
                        std::to_string(db.root) + " outside 2.." + std::to_string(m->last_pg));
  }
  return true;
}

}  // namespace

// Where this process maps a store's data file: LMDB's map, and in a forked
// child also the parent's (abandoned, still mapped). LMDB 0.9 does not say
// where its map lies (mdb_env_info's me_mapaddr is the meta page's fixed
// address, 0), so they are read from /proc/self/maps at open and after a
// resize. A key or value LMDB hands out must lie inside one: the file is
// at least as large as any of them (it never shrinks), so reading it cannot
// fault. `largest` bounds how many entries the store can hold.
struct MapSpans {
  static constexpr std::size_t kMax = 4;
  std::array<Bytes, kMax> span{};
  std::size_t count = 0;
  std::size_t largest = 0;
};

// One LMDB environment of this process (shared by every KvStore handle on
// the same path). Fields are set once at open, except those noted.
struct KvStore::Env {
  MDB_env* env = nullptr;
  MDB_dbi data = 0;
  MDB_dbi meta = 0;
  std::uint64_t fork_gen = 0;  // the generation that opened it
  int data_fd = -1;            // anonymous only: the unlinked files, kept for
  int lock_fd = -1;            // children to reopen through /proc/self/fd
  int size_fd = -1;            // the data file, read-write: [kv.size] and reserve()
  std::size_t max_map = 0;
  std::string name;
  // shared: any transaction of this process; exclusive: changing the map
  // size (LMDB: no transaction of the process may be active then).
  std::shared_mutex resize_mu;
  std::mutex pool_mu;
  std::vector<MDB_txn*> pool;  // reset read txns, under pool_mu
  // This process's writers, one at a time (LMDB serialises them anyway):
  // none may begin once the environment is retired. Taken before resize_mu.
  std::mutex write_mu;
  // Retired after a write call faulted (fault_guard.hpp): LMDB's write
  // transaction is half-updated and cannot be aborted, so no write may
  // use this environment again in this process (reads still may).
  // [kv.retired] release: retire_why is written before; acquire: read after.
  std::atomic<bool> retired{false};
  std::string retire_why;
  dev_t lock_dev = 0;  // the lock file, to find LMDB's writer mutex
  ino_t lock_ino = 0;
  MapSpans maps;  // changed with resize_mu exclusive

  ~Env() {
    // In a forked child the parent's environment is abandoned, never
    // closed: mdb_env_close would free the parent's reader slots. A
    // retired one is leaked: its write transaction is half-updated.
    if (g_fork_gen.load(std::memory_order_relaxed) != fork_gen || env == nullptr) return;
    if (retired.load(std::memory_order_acquire)) return;  // [kv.retired]
    for (MDB_txn* t : pool) ::mdb_txn_abort(t);
    ::mdb_env_close(env);
    // After the env: closing a descriptor of the lock file first would
    // drop this process's fcntl lock on it.
    if (data_fd >= 0) ::close(data_fd);
    if (lock_fd >= 0) ::close(lock_fd);
    if (size_fd >= 0) ::close(size_fd);
  }

  void drain_pool() {
    std::scoped_lock g(pool_mu);
    for (MDB_txn* t : pool) ::mdb_txn_abort(t);
    pool.clear();
  }

  std::size_t current_map() const {
    MDB_envinfo info{};
    ::mdb_env_info(env, &info);
    return info.me_mapsize;
  }
  std::size_t file_size() const {
    int fd = -1;
    struct stat st {};
    if (::mdb_env_get_fd(env, &fd) != 0 || ::fstat(fd, &st) != 0) return 0;
    return static_cast<std::size_t>(st.st_size);
  }

  // Another process grew the map (MDB_MAP_RESIZED): adopt its size.
  void adopt_size() {
    std::unique_lock g(resize_mu);
    drain_pool();
    SizeLock sl(size_fd, name);  // [kv.size]
    // Not size 0 (the meta page's): the grower may not have committed its
    // new size yet. The file holds the largest map.
    if (int rc = ::mdb_env_set_mapsize(env, std::max(size_of(size_fd, name), current_map()));
        rc != 0)
      throw_mdb(name, "adopting the map size", rc);
    find_maps();
  }

  void grow() {
    std::unique_lock g(resize_mu);
    drain_pool();
    int dead = 0;
    ::mdb_reader_check(env, &dead);  // stale readers pin pages we could reuse
    SizeLock sl(size_fd, name);      // [kv.size]
    const std::size_t mine = current_map(), file = size_of(size_fd, name);
    std::size_t next = file;  // another process grew it: adopt that first
    if (file <= mine) {
      if (mine >= max_map)
        throw Error(Errc::too_large, name,
                    "store full at its maximum map size of " + std::to_string(max_map) +
                        " bytes (StoreOptions::max_map_size)");
      next = std::min(max_map, mine * 2);
      reserve(size_fd, next, name);
    }
    if (int rc = ::mdb_env_set_mapsize(env, next); rc != 0) throw_mdb(name, "growing the map", rc);
    find_maps();
  }

  // The mappings of the data file (see MapSpans), from /proc/self/maps.
  // With resize_mu exclusive, or before the Env is shared.
  void find_maps() {
    struct stat st {};
    if (::fstat(size_fd, &st) != 0) throw Error(Errc::system, name, std::strerror(errno));
    MapSpans found;
    for_each_mapping(
        [&](std::uintptr_t lo, std::uintptr_t hi, std::uint64_t off, dev_t dev, ino_t ino) {
          if (ino != st.st_ino || dev != st.st_dev || off != 0 || found.count == MapSpans::kMax)
            return;
          found.span[found.count++] = Bytes(reinterpret_cast<const std::byte*>(lo), hi - lo);
          found.largest = std::max<std::size_t>(found.largest, hi - lo);
        });
    if (found.count == 0)
      throw Error(Errc::system, name, "the store's map is not in /proc/self/maps");
    maps = found;
  }

  // Checks the meta page LMDB picked: a last page at or past the map's end
  // (a scribbled meta page) would make LMDB read outside the map. Called
  // with resize_mu shared, so the map stays; `map` is where it lies.
  // false: another process grew the map past ours (the file holds the
  // page): adopt its size first.
  bool checked_map(const std::string& who) const {
    MDB_envinfo info{};
    ::mdb_env_info(env, &info);
    MDB_stat st{};
    ::mdb_env_stat(env, &st);
    const std::size_t psize = std::max<unsigned>(st.ms_psize, 1);
    const std::size_t pages = info.me_mapsize / psize;
    if (info.me_last_pgno >= pages && info.me_last_pgno < size_of(size_fd, who) / psize)
      return false;
    if (info.me_last_pgno >= pages)
      throw Error(Errc::corrupted, who,
                  "the last commit uses page " + std::to_string(info.me_last_pgno) +
                      " but the map holds " + std::to_string(pages) + " pages");
    return true;
  }

  MDB_txn* take_read_txn() {
    MDB_txn* t = nullptr;
    {
      std::scoped_lock g(pool_mu);
      if (!pool.empty()) {
        t = pool.back();
        pool.pop_back();
      }
    }
    if (t != nullptr) {
      if (::mdb_txn_renew(t) == 0) {
        tsan_begin(env);  // [kv.tsan]
        return t;
      }
      ::mdb_txn_abort(t);
      t = nullptr;
    }
    int rc = ::mdb_txn_begin(env, nullptr, MDB_RDONLY, &t);
    if (rc == MDB_READERS_FULL) {
      int dead = 0;
      ::mdb_reader_check(env, &dead);
      rc = ::mdb_txn_begin(env, nullptr, MDB_RDONLY, &t);
    }
    if (rc == MDB_MAP_RESIZED) return nullptr;
    if (rc != 0) throw_mdb(name, "beginning a read", rc);
    tsan_begin(env);  // [kv.tsan]
    return t;
  }

  // A write call faulted inside LMDB: retire this environment (see
  // `retired`) and release LMDB's writer mutex, which this thread holds
  // and LMDB's half-updated transaction will never unlock: other writers,
  // here and in other processes, then get their own Error instead of
  // waiting for ever. Called with write_mu held.
  [[noreturn]] void retire(const std::string& why) {
    retire_why = why + "; this process no longer writes to the store";
    retired.store(true, std::memory_order_release);  // [kv.retired]
    release_writer_mutex();
    throw Error(Errc::corrupted, name, retire_why);
  }
  void throw_if_retired() const {
    if (retired.load(std::memory_order_acquire)) [[unlikely]]  // [kv.retired]
      throw Error(Errc::corrupted, name, retire_why);
  }

  // LMDB's writer mutex lies at byte 64 of the lock file (MDB_txninfo,
  // see read_lock_file below); LMDB keeps its mapping's address private,
  // so it is found in /proc/self/maps by the lock file's inode. Unlocked
  // only if this thread owns it (a robust mutex's word holds the owner's
  // tid); pthread_mutex_unlock also takes it off this thread's robust list.
  void release_writer_mutex() const {
    bool done = false;
    for_each_mapping(
        [&](std::uintptr_t lo, std::uintptr_t hi, std::uint64_t off, dev_t dev, ino_t ino) {
          if (done || ino != lock_ino || dev != lock_dev || off != 0 || hi - lo < 128) return;
          auto* mutex = reinterpret_cast<pthread_mutex_t*>(lo + 64);
          std::uint32_t word = 0;
          std::memcpy(&word, static_cast<const void*>(mutex), sizeof word);
          if ((word & 0x3fffffffU) != static_cast<std::uint32_t>(::gettid())) return;
          ::pthread_mutex_unlock(mutex);
          done = true;
        });
  }

  void give_back(MDB_txn* t) noexcept {
    tsan_end(env);  // [kv.tsan]
    ::mdb_txn_reset(t);
    std::scoped_lock g(pool_mu);
    if (pool.size() < kTxnPool) {
      pool.push_back(t);
      return;
    }
    ::mdb_txn_abort(t);
  }
};

namespace {

struct Opened {
  MDB_env* env = nullptr;
  ~Opened() {
    if (env != nullptr) ::mdb_env_close(env);
  }
};

// Opens `where` (a file with MDB_NOSUBDIR, or a directory) into `e`.
void open_env(KvStore::Env& e, const std::string& where, bool subdir, const StoreOptions& o) {
  Opened h;
  install_fault_handler();
  if (int rc = ::mdb_env_create(&h.env); rc != 0) throw_mdb(e.name, "mdb_env_create", rc);
  ::mdb_env_set_maxdbs(h.env, 2);
  ::mdb_env_set_maxreaders(h.env, o.max_readers);
  ::mdb_env_set_assert(h.env, on_lmdb_assert);
  const std::string data = subdir ? where + "/data.mdb" : where;
  // O_CREAT as mdb_env_open would: an anonymous store's file is new here.
  const int fd =
      ::open(data.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, static_cast<mode_t>(o.permissions));
  if (fd < 0)
    throw Error(errno == ENOENT ? Errc::not_found : Errc::system, e.name,
                data + ": " + std::strerror(errno));
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  } size_fd{fd};
  {
    SizeLock sl(fd, e.name);  // [kv.size]
    // Never below the file's size: LMDB sizes the file to the map it is
    // given (MDB_WRITEMAP), and a smaller one would cut off pages another
    // process has grown into.
    const std::size_t map = std::max(o.map_size, size_of(fd, e.name));
    if (int rc = ::mdb_env_set_mapsize(h.env, map); rc != 0)
      throw_mdb(e.name, "setting the map size", rc);
    // NOSYNC: tmpfs has no disk; a killed process loses nothing it
    // committed (the page cache is shared). NOTLS: read txns are not tied
    // to threads. WRITEMAP: a transaction writes its copied-on-write pages
    // (unreachable until its meta page commits them) in the map instead of
    // one pwrite each at commit: a set costs about 1 us instead of 8-9
    // (bench/dict_bench); [kv.size] makes it safe.
    const unsigned flags =
        MDB_NOTLS | MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP | (subdir ? 0u : MDB_NOSUBDIR);
    if (int rc =
            ::mdb_env_open(h.env, where.c_str(), flags, static_cast<mdb_mode_t>(o.permissions));
        rc != 0)
      throw_mdb(e.name, "opening the store", rc);
    MDB_envinfo info{};
    ::mdb_env_info(h.env, &info);
    reserve(fd, info.me_mapsize, e.name);
  }
  int dead = 0;
  ::mdb_reader_check(h.env, &dead);  // reclaim slots of dead processes
  struct stat lock {};
  if (::stat((subdir ? where + "/lock.mdb" : where + "-lock").c_str(), &lock) == 0) {
    e.lock_dev = lock.st_dev;
    e.lock_ino = lock.st_ino;
  }
  e.env = std::exchange(h.env, nullptr);
  e.size_fd = std::exchange(size_fd.fd, -1);
  e.find_maps();
  e.max_map = std::max(o.max_map_size, o.map_size);
  e.fork_gen = g_fork_gen.load(std::memory_order_relaxed);
}

std::string fingerprint_bytes(const TypeTag& t) {
  std::string s(sizeof t.fingerprint, '\0');
  std::memcpy(s.data(), &t.fingerprint, sizeof t.fingerprint);
  s.append(t.name.substr(0, 120));
  return s;
}

// MDB_MAP_RESIZED again after adopting the file's size, many times over: a
// meta page naming a map larger than the file (scribbled), not a grower.
void throw_if_resized_too_often(const std::string& name, int times) {
  if (times > 64)
    throw Error(Errc::corrupted, name,
                "LMDB keeps reporting a map larger than the file (MDB_MAP_RESIZED after adopting "
                "its size 64 times): its meta page is corrupted");
}

// Creates the databases and writes what the store is (creator), or checks it
// (opener, waiting a bounded time for the creator's first commit).
void setup_dbs(KvStore::Env& e, bool creator, StoreKind kind, const TypeTag& key,
               const TypeTag& value) {
  const std::string want_kind(1, static_cast<char>(kind));
  const std::string want_key = fingerprint_bytes(key), want_value = fingerprint_bytes(value);
  auto deadline = std::chrono::steady_clock::now() + kOpenTimeout;
  std::scoped_lock writers(e.write_mu);  // Env::write_mu
  e.throw_if_retired();
  for (int resized = 0;;) {
    MDB_txn* t = nullptr;
    if (int rc = ::mdb_txn_begin(e.env, nullptr, 0, &t); rc == MDB_MAP_RESIZED) {
      throw_if_resized_too_often(e.name, ++resized);
      e.adopt_size();  // another process grew the map since we mapped it
      continue;
    } else if (rc != 0) {
      throw_mdb(e.name, "beginning setup", rc);
    }
    MDB_dbi meta = 0;
    int rc = 0;
    // Without MDB_CREATE, mdb_dbi_open and mdb_get only read: a fault leaves
    // the transaction abortable. With it, mdb_dbi_open may write the
    // catalogue: a fault there is a faulted write (see fault_guard.hpp).
    if (!guarded([&] { rc = ::mdb_dbi_open(t, "meta", creator ? MDB_CREATE : 0u, &meta); })) {
      if (creator) e.retire("creating its meta database: " + describe_fault());
      ::mdb_txn_abort(t);
      throw_fault(e.name, "opening its meta database");
    }
    if (rc == MDB_NOTFOUND) {  // the creator has not committed yet
      ::mdb_txn_abort(t);
      // Its setup is a store's first commit: after one, no meta database
      // means a damaged catalogue, not a creator still at work.
      MDB_envinfo info{};
      ::mdb_env_info(e.env, &info);
      if (info.me_last_txnid > 0)
        throw Error(Errc::corrupted, e.name,
                    "the store has commits but no meta database (its pages are corrupted)");
      if (std::chrono::steady_clock::now() > deadline)
        throw Error(Errc::not_ready, e.name, "creator never finished initialising the store");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    if (rc != 0) {
      ::mdb_txn_abort(t);
      throw_mdb(e.name, "opening its meta database", rc);
    }
    bool put_faulted = false;
    auto check = [&](const char* k, const std::string& want) {
      MDB_val kv{std::strlen(k), const_cast<char*>(k)};
      MDB_val v{};
      int r = 0;
      if (!guarded([&] { r = ::mdb_get(t, meta, &kv, &v); })) throw_fault(e.name, "reading meta");
      if (r == MDB_NOTFOUND) {
        if (!creator) return std::string("no ") + k + " record";
        MDB_val nv{want.size(), const_cast<char*>(want.data())};
        int w = 0;
        if (!guarded([&] { w = ::mdb_put(t, meta, &kv, &nv, 0); })) {
          put_faulted = true;
          throw_fault(e.name, "writing meta");
        }
        if (w != 0) throw_mdb(e.name, "writing meta", w);
        return std::string();
      }
      if (r != 0) throw_mdb(e.name, "reading meta", r);
      if (v.mv_size > 4096)
        throw Error(
            Errc::corrupted, e.name,
            std::string("meta record ") + k + " of " + std::to_string(v.mv_size) + " bytes");
      std::string have(static_cast<const char*>(v.mv_data), v.mv_size);
      if (have == want) return std::string();
      if (std::strcmp(k, "kind") == 0) {
        std::string hk =
            have.size() == 1 ? std::string(to_string(static_cast<StoreKind>(have[0]))) : "unknown";
        return std::string("holds a ") + hk + ", expected a " + std::string(to_string(kind));
      }
      if (std::strcmp(k, "format") == 0)
        return "store format " + have.substr(0, 8) + ", expected " + want +
               " (made by another shmbus version)";
      auto nm = [](const std::string& s) { return s.size() > 8 ? s.substr(8) : std::string("?"); };
      return std::string(k) + " " + nm(have) + ", expected " + nm(want);
    };
    std::string why;
    Errc code = Errc::wrong_kind;
    try {
      why = check("kind", want_kind);
      if (why.empty()) {
        code = Errc::wrong_version;
        why = check("format", kFormat);
      }
      if (why.empty()) {
        code = Errc::wrong_type;
        why = check("key_type", want_key);
        if (why.empty()) why = check("value_type", want_value);
      }
    } catch (const Error& err) {
      if (put_faulted) e.retire(err.reason());
      ::mdb_txn_abort(t);
      throw;
    } catch (...) {
      ::mdb_txn_abort(t);
      throw;
    }
    if (!why.empty()) {
      ::mdb_txn_abort(t);
      throw Error(code, e.name, why);
    }
    MDB_dbi data = 0;
    if (!guarded([&] { rc = ::mdb_dbi_open(t, "data", MDB_CREATE, &data); }))
      e.retire("opening its data database (MDB_CREATE may write): " + describe_fault());
    if (rc != 0) {
      ::mdb_txn_abort(t);
      throw_mdb(e.name, "opening its data database", rc);
    }
    if (!guarded([&] { rc = ::mdb_txn_commit(t); }))
      e.retire("committing setup: the store's pages are corrupted (" + describe_fault() + ")");
    if (rc != 0) throw_mdb(e.name, "committing setup", rc);
    e.meta = meta;
    e.data = data;
    return;
  }
}

// Reopens an anonymous store in a forked child: LMDB wants paths, the
// files have none, so a private directory of symlinks to the inherited
// descriptors stands in for the few microseconds of mdb_env_open.
void reopen_anonymous(KvStore::Env& e, int data_fd, int lock_fd, const StoreOptions& o) {
  char dir[] = "/dev/shm/shmbus-kv.reopen-XXXXXX";
  if (::mkdtemp(dir) == nullptr) throw Error(Errc::system, e.name, std::strerror(errno));
  std::string d(dir);
  std::string data = d + "/data.mdb", lock = d + "/lock.mdb";
  int ok = ::symlink(("/proc/self/fd/" + std::to_string(data_fd)).c_str(), data.c_str());
  if (ok == 0) ok = ::symlink(("/proc/self/fd/" + std::to_string(lock_fd)).c_str(), lock.c_str());
  int err = errno;
  try {
    if (ok != 0) throw Error(Errc::system, e.name, std::string("symlink: ") + std::strerror(err));
    open_env(e, d, true, o);
  } catch (...) {
    ::unlink(data.c_str());
    ::unlink(lock.c_str());
    ::rmdir(dir);
    throw;
  }
  ::unlink(data.c_str());
  ::unlink(lock.c_str());
  ::rmdir(dir);
}

}  // namespace

std::string KvStore::path_of(std::string_view name) {
  return std::string(kPathPrefix) + std::string(name);
}

bool KvStore::unlink(std::string_view name) {
  validate_name(name);
  std::string p = path_of(name);
  bool had = ::unlink(p.c_str()) == 0;
  ::unlink((p + "-lock").c_str());
  return had;
}

KvStore::KvStore(std::string name, Mode mode, StoreKind kind, TypeTag key, TypeTag value,
                 const StoreOptions& opts)
    : name_(std::move(name)) {
  validate_name(name_);
  register_atfork();
  key_ = path_of(name_);
  std::scoped_lock g(g_registry_mu);
  if (auto it = registry().find(key_); it != registry().end()) {
    if (auto e = it->second.lock();
        e && e->fork_gen == g_fork_gen.load(std::memory_order_relaxed)) {
      if (mode == Mode::create)
        throw Error(Errc::already_exists, name_, "a store of that name exists (open here)");
      env_ = std::move(e);
      // Same process, same environment: the kind and types still must match.
      setup_dbs(*env_, false, kind, key, value);
      return;
    }
  }
  bool creator = false;
  int fd = -1;
  if (mode != Mode::open) {
    fd = ::open(key_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                static_cast<mode_t>(opts.permissions));
    if (fd >= 0)
      creator = true;
    else if (errno != EEXIST || mode == Mode::create)
      throw Error(errno == EEXIST ? Errc::already_exists : Errc::system, name_,
                  std::string("creating ") + key_ + ": " + std::strerror(errno));
  }
  if (!creator) {
    fd = ::open(key_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw Error(errno == ENOENT ? Errc::not_found : Errc::system, name_,
                  key_ + ": " + std::strerror(errno));
    try {
      validate_file(fd, name_);
    } catch (...) {
      ::close(fd);
      throw;
    }
  }
  ::close(fd);
  auto e = std::make_shared<Env>();
  e->name = name_;
  try {
    open_env(*e, key_, false, opts);
    setup_dbs(*e, creator, kind, key, value);
  } catch (...) {
    if (creator) unlink(name_);
    throw;
  }
  env_ = e;
  registry()[key_] = env_;
}

KvStore::KvStore(StoreKind kind, TypeTag key, TypeTag value, const StoreOptions& opts)
    : name_("(anonymous)") {
  register_atfork();
  static std::atomic<std::uint64_t> counter{0};
  std::random_device rd;
  // relaxed: only uniqueness matters.
  std::string stem = "anon-" + std::to_string(::getpid()) + "-" +
                     std::to_string(counter.fetch_add(1, std::memory_order_relaxed)) + "-" +
                     std::to_string(rd());
  key_ = path_of(stem);
  auto e = std::make_shared<Env>();
  e->name = name_;
  try {
    open_env(*e, key_, false, opts);
    setup_dbs(*e, true, kind, key, value);
    e->data_fd = ::open(key_.c_str(), O_RDONLY | O_CLOEXEC);
    e->lock_fd = ::open((key_ + "-lock").c_str(), O_RDONLY | O_CLOEXEC);
    if (e->data_fd < 0 || e->lock_fd < 0) throw Error(Errc::system, name_, std::strerror(errno));
  } catch (...) {
    ::unlink(key_.c_str());
    ::unlink((key_ + "-lock").c_str());
    throw;
  }
  ::unlink(key_.c_str());
  ::unlink((key_ + "-lock").c_str());
  e->max_map = std::max(opts.max_map_size, opts.map_size);
  env_ = std::move(e);
  std::scoped_lock g(g_registry_mu);
  registry()[key_] = env_;
}

KvStore::KvStore(KvStore&&) noexcept = default;
KvStore& KvStore::operator=(KvStore&&) noexcept = default;
KvStore::~KvStore() {
  if (!env_) return;  // moved from
  std::scoped_lock g(g_registry_mu);
  env_.reset();  // the last handle closes the environment here
  if (auto it = registry().find(key_); it != registry().end() && it->second.expired())
    registry().erase(it);
}

KvStore::Env& KvStore::env() const {
  if (env_->fork_gen == g_fork_gen.load(std::memory_order_relaxed)) [[likely]]
    return *env_;
  // A forked child: find this process's environment for the path, or open it.
  std::scoped_lock g(g_registry_mu);
  auto& slot = registry()[key_];
  if (auto e = slot.lock(); e && e->fork_gen == g_fork_gen.load(std::memory_order_relaxed)) {
    std::shared_ptr<Env> old = std::exchange(env_, std::move(e));
    return *env_;
  }
  auto e = std::make_shared<Env>();
  e->name = name_;
  StoreOptions o;
  {
    MDB_envinfo info{};
    ::mdb_env_info(env_->env, &info);  // reads the parent's struct, not the map
    o.map_size = info.me_mapsize;
    o.max_map_size = env_->max_map;
  }
  if (env_->data_fd >= 0) {
    reopen_anonymous(*e, env_->data_fd, env_->lock_fd, o);
    // Keep the inherited descriptors for our own children; never close
    // them here (see ~Env): the parent's Env still names them.
    e->data_fd = ::fcntl(env_->data_fd, F_DUPFD_CLOEXEC, 0);
    e->lock_fd = ::fcntl(env_->lock_fd, F_DUPFD_CLOEXEC, 0);
  } else {
    open_env(*e, key_, false, o);
  }
  e->data = env_->data;  // dbi handles are numbers fixed by the file's catalogue order
  e->meta = env_->meta;
  {
    // Re-open the DBIs properly in this environment.
    MDB_txn* t = nullptr;
    for (int rc, resized = 0; (rc = ::mdb_txn_begin(e->env, nullptr, MDB_RDONLY, &t)) != 0;) {
      if (rc != MDB_MAP_RESIZED) throw_mdb(name_, "reopening after fork", rc);
      throw_if_resized_too_often(name_, ++resized);
      e->adopt_size();  // another process grew the map since we mapped it
    }
    int rc = 0;
    if (!guarded([&] {
          rc = ::mdb_dbi_open(t, "meta", 0, &e->meta);
          if (rc == 0) rc = ::mdb_dbi_open(t, "data", 0, &e->data);
        })) {
      ::mdb_txn_abort(t);
      throw_fault(name_, "reopening after fork");
    }
    if (rc != 0) {
      ::mdb_txn_abort(t);
      throw_mdb(name_, "reopening after fork", rc);
    }
    if (rc = ::mdb_txn_commit(t); rc != 0) throw_mdb(name_, "reopening after fork", rc);
  }
  // The parent's Env stays referenced by nothing new; ~Env leaks it here.
  env_ = e;
  slot = e;
  return *env_;
}

std::size_t KvStore::map_size() const {
  MDB_envinfo info{};
  ::mdb_env_info(env().env, &info);
  return info.me_mapsize;
}

void KvStore::read_impl(FnRef<void(const ReadTxn&)> f) const {
  Env& e = env();
  for (;;) {
    std::shared_lock g(e.resize_mu);
    MDB_txn* t = e.checked_map(name_) ? e.take_read_txn() : nullptr;
    if (t == nullptr) {
      g.unlock();
      e.adopt_size();
      continue;
    }
    ReadTxn rt(t, e.data, &name_, &e.maps);
    try {
      f(rt);
    } catch (const Error& err) {
      // After a fault LMDB's read transaction may be half-way through a
      // page: abort it (a reader holds no lock) rather than reuse it.
      if (err.code() == Errc::corrupted) {
        tsan_end(e.env);  // [kv.tsan]
        ::mdb_txn_abort(t);
      } else {
        e.give_back(t);
      }
      throw;
    } catch (...) {
      e.give_back(t);
      throw;
    }
    e.give_back(t);
    return;
  }
}

namespace {
thread_local bool t_map_full = false;  // set by WriteTxn::put, read by write_impl
// Set by a WriteTxn call that faulted inside LMDB, read by write_impl: its
// transaction cannot be aborted (fault_guard.hpp), the environment retires.
thread_local bool t_write_faulted = false;
}  // namespace

void KvStore::write_impl(FnRef<void(WriteTxn&)> f) {
  Env& e = env();
  std::scoped_lock w(e.write_mu);
  e.throw_if_retired();
  for (;;) {
    std::shared_lock g(e.resize_mu);
    MDB_txn* t = nullptr;
    int rc = e.checked_map(name_) ? ::mdb_txn_begin(e.env, nullptr, 0, &t) : MDB_MAP_RESIZED;
    if (rc == MDB_MAP_RESIZED) {
      g.unlock();
      e.adopt_size();
      continue;
    }
    if (rc != 0) throw_mdb(name_, "beginning a write", rc);
    tsan_begin(e.env);  // [kv.tsan]
    WriteTxn wt(t, e.data, &name_, &e.maps);
    t_map_full = false;
    t_write_faulted = false;
    try {
      f(wt);
    } catch (const Error& err) {
      if (t_write_faulted) e.retire(err.reason());
      ::mdb_txn_abort(t);
      throw;
    } catch (...) {
      if (t_write_faulted) e.retire("a write faulted inside LMDB");
      ::mdb_txn_abort(t);
      // A MapFull (or what the callback made of it) means: grow and rerun.
      if (!t_map_full) throw;
      g.unlock();
      e.grow();
      continue;
    }
    if (t_write_faulted)  // the callback swallowed our Error
      e.retire("a write faulted inside LMDB: the store's pages are corrupted");
    if (t_map_full) {  // the callback swallowed our MapFull
      ::mdb_txn_abort(t);
      g.unlock();
      e.grow();
      continue;
    }
    if (KvHook h = g_kv_before_commit.load(std::memory_order_relaxed); h != nullptr) [[unlikely]]
      h();
    tsan_end(e.env);  // [kv.tsan]
    if (!guarded([&] { rc = ::mdb_txn_commit(t); }))
      e.retire("committing: the store's pages are corrupted (" + describe_fault() + ")");
    if (rc == MDB_MAP_FULL) {
      g.unlock();
      e.grow();
      continue;
    }
    if (rc != 0) throw_mdb(name_, "committing", rc);
    return;
  }
}

void testing_set_meta(KvStore& s, std::string_view key, std::string_view value) {
  KvStore::Env& e = s.env();
  std::scoped_lock w(e.write_mu);
  MDB_txn* t = nullptr;
  if (int rc = ::mdb_txn_begin(e.env, nullptr, 0, &t); rc != 0) throw_mdb(s.name(), "meta", rc);
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{value.size(), const_cast<char*>(value.data())};
  int rc = ::mdb_put(t, e.meta, &k, &v, 0);
  if (rc != 0) {
    ::mdb_txn_abort(t);
    throw_mdb(s.name(), "meta", rc);
  }
  if (rc = ::mdb_txn_commit(t); rc != 0) throw_mdb(s.name(), "meta", rc);
}

void ReadTxn::check_in_map(Bytes b, const char* what) const {
  const auto p = reinterpret_cast<std::uintptr_t>(b.data());
  for (std::size_t i = 0; i < maps_->count; ++i) {
    const Bytes m = maps_->span[i];
    const auto lo = reinterpret_cast<std::uintptr_t>(m.data());
    if (p >= lo && b.size() <= m.size() && p - lo <= m.size() - b.size()) [[likely]]
      return;
  }
  throw Error(Errc::corrupted, *name_,
              std::string(what) + ": LMDB returned " + std::to_string(b.size()) +
                  " bytes outside the store's map (its pages are corrupted)");
}

std::optional<Bytes> ReadTxn::get(Bytes key) const {
  MDB_val k = val(key), v{};
  int rc = 0;
  if (!guarded([&] {
        if (KvHook h = g_kv_inside_lmdb.load(std::memory_order_relaxed); h != nullptr) [[unlikely]]
          h();
        rc = ::mdb_get(static_cast<MDB_txn*>(txn_), dbi_, &k, &v);
      }))
    throw_fault(*name_, "get");
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) throw_mdb(*name_, "get", rc);
  check_in_map(bytes(v), "get");
  return bytes(v);
}

std::size_t ReadTxn::size() const {
  MDB_stat st{};
  int rc = 0;
  if (!guarded([&] { rc = ::mdb_stat(static_cast<MDB_txn*>(txn_), dbi_, &st); }))
    throw_fault(*name_, "size");
  if (rc != 0) throw_mdb(*name_, "stat", rc);
  if (st.ms_entries > maps_->largest / kMinEntryBytes)
    throw Error(Errc::corrupted, *name_,
                "the store says it holds " + std::to_string(st.ms_entries) +
                    " entries, more than its map of " + std::to_string(maps_->largest) +
                    " bytes can hold");
  return st.ms_entries;
}

namespace {
struct Cursor {
  MDB_cursor* c = nullptr;
  ~Cursor() {
    if (c != nullptr) ::mdb_cursor_close(c);
  }
};

// Opens a cursor (mdb_cursor_open reads the store's catalogue page).
void open_cursor(Cursor& cur, MDB_txn* txn, MDB_dbi dbi, const std::string& name) {
  int rc = 0;
  // A fault here leaks the cursor's allocation (corrupted store only).
  if (!guarded([&] { rc = ::mdb_cursor_open(txn, dbi, &cur.c); })) throw_fault(name, "cursor");
  if (rc != 0) throw_mdb(name, "cursor", rc);
}
}  // namespace

// Iteration is bounded whatever the pages hold: LMDB's cursor stack bounds a
// descent, and a tree whose pages loop back would yield a key again, which
// the strictly-increasing check refuses; so does a count past what the map
// can hold.
void ReadTxn::for_each(FnRef<bool(Bytes, Bytes)> f) const {
  Cursor cur;
  open_cursor(cur, static_cast<MDB_txn*>(txn_), dbi_, *name_);
  const std::size_t most = maps_->largest / kMinEntryBytes;
  std::size_t n = 0;
  Bytes prev;
  for (MDB_cursor_op op = MDB_FIRST;; op = MDB_NEXT) {
    MDB_val k{}, v{};
    int rc = 0;
    if (!guarded([&] { rc = ::mdb_cursor_get(cur.c, &k, &v, op); }))
      throw_fault(*name_, "iterating");
    if (rc == MDB_NOTFOUND) return;
    if (rc != 0) throw_mdb(*name_, "iterating", rc);
    const Bytes kb = bytes(k), vb = bytes(v);
    check_in_map(kb, "iterating");
    check_in_map(vb, "iterating");
    // LMDB's default order (mdb_cmp_memn): bytes, then length.
    if (n > 0 && !std::lexicographical_compare(prev.begin(), prev.end(), kb.begin(), kb.end()))
      throw Error(Errc::corrupted, *name_,
                  "iterating: entry " + std::to_string(n) +
                      "'s key is not greater than the one before (the store's pages are "
                      "corrupted)");
    if (++n > most)
      throw Error(Errc::corrupted, *name_,
                  "iterating: more entries than the map can hold (the store's pages are "
                  "corrupted)");
    prev = kb;
    if (!f(kb, vb)) return;
  }
}

std::optional<std::pair<Bytes, Bytes>> ReadTxn::last() const {
  Cursor cur;
  open_cursor(cur, static_cast<MDB_txn*>(txn_), dbi_, *name_);
  MDB_val k{}, v{};
  int rc = 0;
  if (!guarded([&] { rc = ::mdb_cursor_get(cur.c, &k, &v, MDB_LAST); }))
    throw_fault(*name_, "last");
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) throw_mdb(*name_, "last", rc);
  check_in_map(bytes(k), "last");
  check_in_map(bytes(v), "last");
  return std::pair{bytes(k), bytes(v)};
}

namespace {
// A write after one that faulted in this transaction (a callback that
// caught our Error and went on): LMDB's state is half-updated, never touch it.
void throw_if_write_faulted(const std::string& name) {
  if (t_write_faulted)
    throw Error(Errc::corrupted, name,
                "an earlier write of this update faulted inside LMDB (the store's pages are "
                "corrupted)");
}
}  // namespace

void WriteTxn::put(Bytes key, Bytes value) {
  throw_if_write_faulted(*name_);
  if (key.empty() || key.size() > 511)
    throw Error(Errc::invalid_argument, *name_,
                "key of " + std::to_string(key.size()) + " bytes (1..511 allowed)");
  MDB_val k = val(key), v = val(value);
  int rc = 0;
  if (!guarded([&] {
        if (KvHook h = g_kv_inside_lmdb.load(std::memory_order_relaxed); h != nullptr) [[unlikely]]
          h();
        rc = ::mdb_put(static_cast<MDB_txn*>(txn_), dbi_, &k, &v, 0);
      })) {
    t_write_faulted = true;
    throw_fault(*name_, "put");
  }
  if (rc == MDB_MAP_FULL) {
    t_map_full = true;
    throw MapFull{};
  }
  if (rc != 0) throw_mdb(*name_, "put", rc);
}

bool WriteTxn::erase(Bytes key) {
  throw_if_write_faulted(*name_);
  MDB_val k = val(key);
  int rc = 0;
  if (!guarded([&] { rc = ::mdb_del(static_cast<MDB_txn*>(txn_), dbi_, &k, nullptr); })) {
    t_write_faulted = true;
    throw_fault(*name_, "erase");
  }
  if (rc == MDB_NOTFOUND) return false;
  if (rc == MDB_MAP_FULL) {
    t_map_full = true;
    throw MapFull{};
  }
  if (rc != 0) throw_mdb(*name_, "erase", rc);
  return true;
}

void WriteTxn::clear() {
  throw_if_write_faulted(*name_);
  int rc = 0;
  if (!guarded([&] { rc = ::mdb_drop(static_cast<MDB_txn*>(txn_), dbi_, 0); })) {
    t_write_faulted = true;
    throw_fault(*name_, "clear");
  }
  if (rc == MDB_MAP_FULL) {
    t_map_full = true;
    throw MapFull{};
  }
  if (rc != 0) throw_mdb(*name_, "clear", rc);
}

}  // namespace shmbus::detail

namespace shmbus {

namespace {

// LMDB 0.9's lock file (mdb.c, MDB_txninfo) with glibc's pthread_mutex_t
// on x86-64/aarch64: the header line (magic, format, reader mutex, txnid,
// numreaders at 56), the writer mutex at 64 (its robust futex word, the
// owner's tid, first), the reader slots from 128, 64 bytes each (txnid,
// then pid). Validated as far as the file allows; the test that holds a
// write lock in a child checks the layout.
constexpr std::size_t kLockNumReaders = 56, kLockWriter = 64, kLockReaders = 128, kSlot = 64;
constexpr std::uint32_t kFutexTidMask = 0x3fffffff;

int tgid_of(int tid) {
  std::ifstream in("/proc/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Tgid:", 0) == 0) return std::atoi(line.c_str() + 5);
  return tid;  // gone: report the tid
}

void read_lock_file(const std::string& path, StoreStats& s) {
  // A separate process may pread this freely; this one holds no LMDB lock
  // on it yet (inspect_store opens the store after), so closing is safe.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::vector<char> buf(1 << 20);
  const ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
  ::close(fd);
  if (n < static_cast<ssize_t>(kLockReaders)) return;
  std::uint32_t magic = 0, lock = 0, nreaders = 0;
  std::memcpy(&magic, buf.data(), 4);
  if (magic != 0xBEEFC0DE) return;
  std::memcpy(&nreaders, buf.data() + kLockNumReaders, 4);
  std::memcpy(&lock, buf.data() + kLockWriter, 4);
  if ((lock & kFutexTidMask) != 0) s.writer = tgid_of(static_cast<int>(lock & kFutexTidMask));
  const std::size_t slots =
      std::min<std::size_t>(nreaders, (static_cast<std::size_t>(n) - kLockReaders) / kSlot);
  for (std::size_t i = 0; i < slots; ++i) {
    std::uint64_t txnid = 0;
    std::int32_t pid = 0;
    std::memcpy(&txnid, buf.data() + kLockReaders + i * kSlot, 8);
    std::memcpy(&pid, buf.data() + kLockReaders + i * kSlot + 8, 4);
    if (pid > 0 && txnid != ~std::uint64_t{0}) s.readers.push_back(pid);
  }
  std::sort(s.readers.begin(), s.readers.end());
  s.readers.erase(std::unique(s.readers.begin(), s.readers.end()), s.readers.end());
}

}  // namespace

StoreStats inspect_store(const std::string& name) {
  using namespace detail;
  validate_name(name);
  StoreStats s;
  s.name = name;
  const std::string path = KvStore::path_of(name);
  {
    // LMDB: a process opens an environment once, and closing any
    // descriptor of the lock file drops its locks. Inspect from another.
    std::scoped_lock g(g_registry_mu);
    if (auto it = registry().find(path); it != registry().end())
      if (auto e = it->second.lock();
          e && e->fork_gen == g_fork_gen.load(std::memory_order_relaxed))
        throw Error(Errc::invalid_argument, name,
                    "the store is open in this process: inspect it from another "
                    "(bus-inspector show)");
  }
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw Error(errno == ENOENT ? Errc::not_found : Errc::system, name,
                  path + ": " + std::strerror(errno));
    struct Close {
      int fd;
      ~Close() { ::close(fd); }
    } close{fd};
    if (!validate_file(fd, name)) throw Error(Errc::not_ready, name, "store not yet initialised");
    s.file_bytes = size_of(fd, name);
  }
  s.holders = store_holders(name);
  read_lock_file(path + "-lock", s);
  Opened h;
  install_fault_handler();
  if (int rc = ::mdb_env_create(&h.env); rc != 0) throw_mdb(name, "mdb_env_create", rc);
  ::mdb_env_set_maxdbs(h.env, 2);
  ::mdb_env_set_assert(h.env, on_lmdb_assert);
  ::mdb_env_set_mapsize(h.env, static_cast<std::size_t>(s.file_bytes));
  if (int rc = ::mdb_env_open(h.env, path.c_str(), MDB_RDONLY | MDB_NOSUBDIR | MDB_NOTLS, 0600);
      rc != 0)
    throw_mdb(name, "opening the store read-only", rc);
  MDB_txn* t = nullptr;
  if (int rc = ::mdb_txn_begin(h.env, nullptr, MDB_RDONLY, &t); rc != 0)
    throw_mdb(name, "beginning a read", rc);
  struct Abort {
    MDB_txn* t;
    ~Abort() { ::mdb_txn_abort(t); }
  } abort{t};
  // A read-only transaction: a fault (fault_guard.hpp) leaves it abortable.
  MDB_dbi meta = 0, data = 0;
  MDB_stat st{};
  int rc_meta = 0, rc_data = 0, rc_stat = 0;
  if (!guarded([&] {
        rc_meta = ::mdb_dbi_open(t, "meta", 0, &meta);
        if (rc_meta == 0) rc_data = ::mdb_dbi_open(t, "data", 0, &data);
        if (rc_meta == 0 && rc_data == 0) rc_stat = ::mdb_stat(t, data, &st);
      }))
    throw_fault(name, "reading the store");
  if (rc_meta != 0) throw_mdb(name, "meta database", rc_meta);
  if (rc_data != 0) throw_mdb(name, "data database", rc_data);
  if (rc_stat != 0) throw_mdb(name, "stat", rc_stat);
  s.entries = st.ms_entries;
  MDB_envinfo info{};
  ::mdb_env_info(h.env, &info);
  s.used_bytes = (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  auto record = [&](const char* k) {
    MDB_val kv{std::strlen(k), const_cast<char*>(k)}, v{};
    int rc = 0;
    std::array<char, 4096> buf{};
    // The copy too runs under the guard: the record may lie anywhere.
    if (!guarded([&] {
          rc = ::mdb_get(t, meta, &kv, &v);
          if (rc == 0 && v.mv_size <= buf.size()) std::memcpy(buf.data(), v.mv_data, v.mv_size);
        }))
      throw_fault(name, "reading meta");
    if (rc != 0 || v.mv_size > buf.size()) return std::string();
    return std::string(buf.data(), v.mv_size);
  };

  const std::string kind = record("kind");
  s.kind = kind.size() == 1 ? std::string(to_string(static_cast<StoreKind>(kind[0]))) : "unknown";
  auto type_of = [](const std::string& r) { return r.size() > 8 ? r.substr(8) : std::string(); };
  s.key_type = type_of(record("key_type"));
  s.value_type = type_of(record("value_type"));
  return s;
}

}  // namespace shmbus
