// detail::WakeSlot: the machine-wide table of per-thread wake words. See
// detail/wake_slot.hpp.
#include "shmbus/detail/wake_slot.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "shmbus/detail/futex.hpp"
#include "shmbus/detail/pipe_format.hpp"
#include "shmbus/process_id.hpp"

namespace shmbus::detail {
namespace {

// The table this process maps, once ([wake.table]); never unmapped (a
// ring may name one of its slots as long as the process runs).
constinit std::atomic<WakeTable*> g_table{nullptr};
// Set once the mapping was tried (it failed when g_table stayed null).
constinit std::atomic<bool> g_tried{false};
// Bumped by use_wake_table_for_testing(): every thread claims again.
constinit std::atomic<std::uint32_t> g_epoch{0};
constinit std::atomic<std::uint64_t> g_wakes{0};
// Set by stop_redirecting(): this process's waits sleep on ring words.
constinit std::atomic<bool> g_no_redirect{false};
pthread_mutex_t g_map_mutex = PTHREAD_MUTEX_INITIALIZER;
// For tests: called under g_map_mutex before the table is opened.
constinit std::atomic<void (*)()> g_open_hook{nullptr};

// A fork while another thread holds g_map_mutex (opening the table) would
// leave the child a locked mutex that nobody there unlocks: its first
// wake would hang. So fork takes it first and both sides unlock it.
void lock_map() noexcept { (void)::pthread_mutex_lock(&g_map_mutex); }
void unlock_map() noexcept { (void)::pthread_mutex_unlock(&g_map_mutex); }
// Registers the handlers once, before the mutex is first taken.
void lock_map_first_time() noexcept {
  static const bool registered = ::pthread_atfork(&lock_map, &unlock_map, &unlock_map) == 0;
  (void)registered;
  lock_map();
}
char g_name[128] = "";  // under g_map_mutex; "": default_table_name()

// This user's table: shmbus-wake-slots.<euid>.
void default_table_name(char (&name)[128]) noexcept {
  std::snprintf(name, sizeof name, "shmbus-wake-slots.%u", static_cast<unsigned>(::geteuid()));
}

// Opens the table at /dev/shm/<name>, making it if it is not there: made
// whole under a private name, then linked into place (atomic), so an
// opener never sees a half-made table. Null when it cannot be had or is
// not one (size, magic, version, slot count or size differ); `transient`
// then says whether a later try may succeed (out of descriptors or memory).
WakeTable* open_table(const char* name, bool& transient) noexcept {
  transient = false;
  const auto note = [&transient] {
    transient = errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == EINTR;
  };
  char path[192];
  std::snprintf(path, sizeof path, "/dev/shm/%s", name);
  int fd = ::open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    char tmp[224];
    std::snprintf(tmp, sizeof tmp, "%s.%d.%ld", path, static_cast<int>(::getpid()),
                  static_cast<long>(::syscall(SYS_gettid)));
    const int t = ::open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (t < 0) {
      note();
      return nullptr;
    }
    WakeTableHeader h{};
    h.magic = kWakeTableMagic;
    h.version = kWakeTableVersion;
    h.slot_count = kWakeSlotCount;
    h.slot_size = sizeof(WakeSlot);
    // 0600 (as created): this user's table only (see wake_slot.hpp).
    const bool made = ::ftruncate(t, sizeof(WakeTable)) == 0 &&
                      ::pwrite(t, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h);
    // EEXIST: another process linked its table first; use that one.
    const bool linked = made && (::link(tmp, path) == 0 || errno == EEXIST);
    (void)::unlink(tmp);
    ::close(t);
    if (!linked) return nullptr;
    fd = ::open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0) {
    note();
    return nullptr;
  }
  struct stat st {};
  void* at = MAP_FAILED;
  // Ours and writable by nobody else: a table another user made or may
  // write is not used (it could steal or scribble over our wake-ups).
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
      (st.st_mode & (S_IWGRP | S_IWOTH)) == 0 &&
      st.st_size == static_cast<off_t>(sizeof(WakeTable))) {
    at = ::mmap(nullptr, sizeof(WakeTable), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (at == MAP_FAILED) note();
  }
  ::close(fd);
  if (at == MAP_FAILED) return nullptr;
  // Untrusted: copied out before it is compared.
  WakeTableHeader h{};
  std::memcpy(&h, at, sizeof h);
  if (h.magic != kWakeTableMagic || h.version != kWakeTableVersion ||
      h.slot_count != kWakeSlotCount || h.slot_size != sizeof(WakeSlot)) {
    ::munmap(at, sizeof(WakeTable));
    return nullptr;
  }
  return static_cast<WakeTable*>(at);
}

WakeTable* table() noexcept {
  // [wake.table] acquire: pairs with the release store below; the mapping
  // is whole before the pointer is seen.
  if (WakeTable* t = g_table.load(std::memory_order_acquire); t != nullptr) [[likely]]
    return t;
  // relaxed: a stale false only takes the mutex below.
  if (g_tried.load(std::memory_order_relaxed)) return nullptr;
  lock_map_first_time();
  // relaxed (both): under the mutex, which orders them.
  WakeTable* t = g_table.load(std::memory_order_relaxed);
  if (t == nullptr && !g_tried.load(std::memory_order_relaxed)) {
    bool transient = false;
    if (g_name[0] == '\0') default_table_name(g_name);
    // relaxed: set by a test before the threads it holds here start.
    if (auto* hook = g_open_hook.load(std::memory_order_relaxed); hook != nullptr) hook();
    t = open_table(g_name, transient);
    g_table.store(t, std::memory_order_release);  // [wake.table]
    // Out of descriptors or memory: try again at the next wake (a sender
    // that gave up would leave redirecting receivers to their slices).
    g_tried.store(t != nullptr || !transient, std::memory_order_relaxed);
  }
  (void)::pthread_mutex_unlock(&g_map_mutex);
  return t;
}

// One thread's claim. Freed when the thread ends, unless a fork made this
// a copy of another process's claim.
struct Claim {
  WakeTable* table = nullptr;
  std::uint32_t id = 0;  // 0: none
  std::uint64_t fork_gen = 0;
  std::uint32_t epoch = 0;
  bool tried = false;  // a claim was tried with this table, fork and epoch

  ~Claim() { release(); }
  void release() noexcept {
    if (id == 0 || fork_gen != fork_generation()) return;
    // This process's id now, not the one at the claim: a child made by a
    // raw clone() or _Fork() runs no atfork handler (fork_generation() is
    // unchanged) and holds a copy of its parent's claim; freeing only a
    // slot this process owns leaves the parent's live slot alone.
    std::uint64_t mine = this_process().pack();
    // relaxed: nothing else is published with a free slot; a sender's
    // late wake of it is a spurious wake-up for its next owner.
    (void)table->slots[id - 1].owner.compare_exchange_strong(mine, 0, std::memory_order_relaxed,
                                                             std::memory_order_relaxed);
    id = 0;
  }
  void claim(WakeTable* t) noexcept {
    table = t;
    const std::uint64_t owner = this_process().pack();
    const auto tid = static_cast<std::uint64_t>(::syscall(SYS_gettid));
    // Start at a spot of our own, so that threads do not all fight for slot 1.
    const std::uint32_t start = static_cast<std::uint32_t>((tid * 2654435761U) % kWakeSlotCount);
    // First a free slot, then one whose owner died (reclaimed by CAS: of
    // two reclaimers one wins).
    for (int pass = 0; pass < 2 && id == 0; ++pass) {
      for (std::uint32_t k = 0; k < kWakeSlotCount; ++k) {
        const std::uint32_t i = (start + k) % kWakeSlotCount;
        auto& o = t->slots[i].owner;
        // relaxed: the CAS below decides.
        std::uint64_t seen = o.load(std::memory_order_relaxed);
        if (pass == 0 ? seen != 0 : (seen == 0 || is_alive(ProcessId::unpack(seen)))) continue;
        // relaxed: the slot's word carries no data; who owns it is all.
        if (o.compare_exchange_strong(seen, owner, std::memory_order_relaxed,
                                      std::memory_order_relaxed)) {
          id = i + 1;
          break;
        }
      }
    }
  }
};
thread_local Claim t_claim;

}  // namespace

ThreadWakeSlot this_thread_wake_slot() noexcept {
  // relaxed: a hint; a wait that still redirects after another thread set
  // it misses at most one more wake-up (and sets it again).
  if (g_no_redirect.load(std::memory_order_relaxed)) [[unlikely]]
    return {};
  Claim& c = t_claim;
  // relaxed: a test changes the epoch before other threads wait.
  const std::uint32_t epoch = g_epoch.load(std::memory_order_relaxed);
  if (!c.tried || c.fork_gen != fork_generation() || c.epoch != epoch) [[unlikely]] {
    c.release();
    c.id = 0;
    c.tried = true;
    c.fork_gen = fork_generation();
    c.epoch = epoch;
    if (WakeTable* t = table(); t != nullptr) c.claim(t);
  }
  if (c.id == 0) return {};
  return {c.id, &c.table->slots[c.id - 1].word};
}

bool wake_slot(std::uint32_t id) noexcept {
  if (id == 0 || id > kWakeSlotCount) return false;  // untrusted
  WakeTable* t = table();
  if (t == nullptr) return false;
  auto& w = t->slots[id - 1].word;
  // [ring.redirect] seq_cst RMW: the waiter read the word before it armed
  // the ring whose mark we saw, so the new value differs from the one its
  // futex_waitv compares: it returns at once or is woken below.
  w.fetch_add(1, std::memory_order_seq_cst);
  // Every sleeper on it: normally its one owner; after a crash or a fork
  // two threads may believe it theirs, and a wake for nobody is harmless.
  // Shared futex (no PRIVATE flag): the word is in a segment many
  // processes map.
  (void)futex_wake(w);
  g_wakes.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic for tests
  return true;
}

void stop_redirecting() noexcept {
  g_no_redirect.store(true, std::memory_order_relaxed);  // relaxed: see this_thread_wake_slot()
}

std::uint64_t wake_slot_wakes() noexcept {
  return g_wakes.load(std::memory_order_relaxed);  // relaxed: a statistic
}

void set_wake_table_open_hook_for_testing(void (*hook)()) {
  g_open_hook.store(hook, std::memory_order_relaxed);  // relaxed: see table()
}

void use_wake_table_for_testing(const std::string& os_name) {
  lock_map_first_time();
  if (os_name.empty()) {
    default_table_name(g_name);
  } else {
    std::snprintf(g_name, sizeof g_name, "%s", os_name.c_str());
  }
  // relaxed (all): a test calls this before other threads wait.
  g_table.store(nullptr, std::memory_order_relaxed);
  g_tried.store(false, std::memory_order_relaxed);
  g_no_redirect.store(false, std::memory_order_relaxed);
  g_epoch.fetch_add(1, std::memory_order_relaxed);
  (void)::pthread_mutex_unlock(&g_map_mutex);
}

}  // namespace shmbus::detail
