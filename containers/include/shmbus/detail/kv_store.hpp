// KvStore: the LMDB environment under Dict, List and Namespace.
//
// One store is one LMDB environment in a single file on tmpfs
// (MDB_NOSUBDIR): /dev/shm/shmbus-kv.<name> and its lock file
// /dev/shm/shmbus-kv.<name>-lock. It holds two databases: "meta" (what the
// store is: kind and key/value type fingerprints, checked at open) and
// "data" (the entries).
//
// Who may call what: a KvStore may be shared by the threads of a process
// (MDB_NOTLS; an in-process shared_mutex guards map resizes). After fork()
// the child must not touch the parent's MDB_env (LMDB's rule): every call
// compares a fork generation (bumped by a pthread_atfork child handler) and
// the child reopens the store lazily on its first call. The parent's
// environment is abandoned in the child, never closed there: closing it
// would free the parent's reader slots.
//
// Consistency (LMDB's): a read() sees one committed snapshot; a write()
// is one transaction, all of it or none of it visible, serialised across
// processes by LMDB's robust writer mutex. A writer killed at any
// instruction leaves the last committed state; readers never block writers.
// No fences here: LMDB's mutexes and its meta-page txnid order everything.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "shmbus/detail/type_tag.hpp"

namespace shmbus {

// Options of a container's store.
struct StoreOptions {
  // Initial map size: the store grows past it by doubling while others
  // have it open, up to max_map_size (then Error(too_large)). The map is
  // reserved in /dev/shm (the file is that big, its pages allocated: a
  // full /dev/shm is Error(too_large) at open or growth, never a SIGBUS).
  std::size_t map_size = std::size_t{8} << 20;
  std::size_t max_map_size = std::size_t{64} << 30;
  unsigned permissions = 0600;
  // Reader slots in the lock file (a process uses one per concurrent read).
  unsigned max_readers = 1022;
};

namespace detail {

enum class StoreKind : std::uint8_t { dict = 1, list = 2, ns = 3 };
std::string_view to_string(StoreKind kind) noexcept;

// A non-owning callable reference: no allocation per call.
template <class Sig>
class FnRef;
template <class R, class... A>
class FnRef<R(A...)> {
 public:
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FnRef>) FnRef(F&& f)
  noexcept  // NOLINT: implicit by design
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...);
        }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

using Bytes = std::span<const std::byte>;
struct MapSpans;  // where this process maps a store's file (kv_store.cpp)

// One read transaction (a snapshot). Valid only inside read()/write().
//
// A store's file may have been scribbled on (shared memory is untrusted):
// every call here either returns what the file holds or throws
// Error(corrupted) naming what was wrong; it never crashes or hangs
// (the guarantee and its limits: README, "Corrupted stores"). Every key
// and value handed out lies inside the store's map; iteration yields
// strictly increasing keys, at most as many as the map could hold.
class ReadTxn {
 public:
  // The value under `key`, pointing into the map: valid until the callback returns.
  [[nodiscard]] std::optional<Bytes> get(Bytes key) const;
  [[nodiscard]] std::size_t size() const;
  // Every entry in key order; stop early by returning false.
  void for_each(FnRef<bool(Bytes key, Bytes value)> f) const;
  // The last entry (greatest key), if any.
  [[nodiscard]] std::optional<std::pair<Bytes, Bytes>> last() const;
  [[nodiscard]] const std::string& name() const noexcept { return *name_; }

 protected:
  ReadTxn(void* txn, unsigned dbi, const std::string* name, const MapSpans* maps) noexcept
      : txn_(txn), dbi_(dbi), name_(name), maps_(maps) {}
  // Throws corrupted unless `b` (a key or value LMDB returned) lies in a
  // mapping of the store's file.
  void check_in_map(Bytes b, const char* what) const;
  void* txn_;  // MDB_txn*
  unsigned dbi_;
  const std::string* name_;
  const MapSpans* maps_;  // fixed while a transaction runs (resizes wait for it)
  friend class KvStore;
};

// One write transaction: reads see its own writes.
class WriteTxn : public ReadTxn {
 public:
  void put(Bytes key, Bytes value);
  bool erase(Bytes key);  // whether it was there
  void clear();

 private:
  using ReadTxn::ReadTxn;
  friend class KvStore;
};

class KvStore {
 public:
  enum class Mode : std::uint8_t { create, open, open_or_create };

  // Named: /dev/shm/shmbus-kv.<name>. Throws Error: invalid_name,
  // already_exists / not_found (create / open), wrong_kind, wrong_type,
  // corrupted or truncated (a file LMDB or we reject), system.
  KvStore(std::string name, Mode mode, StoreKind kind, TypeTag key, TypeTag value,
          const StoreOptions& opts);
  // Anonymous: a unique file unlinked right after open; forked children
  // reach it through descriptors they inherit.
  KvStore(StoreKind kind, TypeTag key, TypeTag value, const StoreOptions& opts);
  KvStore(KvStore&&) noexcept;
  KvStore& operator=(KvStore&&) noexcept;
  KvStore(const KvStore&) = delete;
  KvStore& operator=(const KvStore&) = delete;
  ~KvStore();

  // Removes a named store's files; false if there were none.
  static bool unlink(std::string_view name);
  // The file a named store lives in.
  static std::string path_of(std::string_view name);

  template <class F>
  decltype(auto) read(F&& f) const {
    using R = std::invoke_result_t<F&, const ReadTxn&>;
    if constexpr (std::is_void_v<R>) {
      read_impl([&](const ReadTxn& t) { f(t); });
    } else {
      std::optional<R> out;
      read_impl([&](const ReadTxn& t) { out.emplace(f(t)); });
      return R(std::move(*out));
    }
  }
  // `f` may run more than once: when the map is full its transaction is
  // aborted, the map grows, and `f` runs again on a fresh transaction.
  template <class F>
  decltype(auto) write(F&& f) {
    using R = std::invoke_result_t<F&, WriteTxn&>;
    if constexpr (std::is_void_v<R>) {
      write_impl([&](WriteTxn& t) { f(t); });
    } else {
      std::optional<R> out;
      write_impl([&](WriteTxn& t) { out.emplace(f(t)); });
      return R(std::move(*out));
    }
  }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  struct Env;  // this process's LMDB environment for one path (kv_store.cpp)
  // Current map size in bytes (grows).
  [[nodiscard]] std::size_t map_size() const;

 private:
  friend void testing_set_meta(KvStore& s, std::string_view key, std::string_view value);
  Env& env() const;  // reopens it first in a forked child
  void read_impl(FnRef<void(const ReadTxn&)> f) const;
  void write_impl(FnRef<void(WriteTxn&)> f);
  std::string name_;  // user-visible: the name, or "(anonymous)"
  std::string key_;   // the path it was opened at: one Env per path per process
  mutable std::shared_ptr<Env> env_;
};

// Test hook: overwrites one record of the store's "meta" database (kind,
// format, key_type, value_type), as another shmbus version might have made it.
void testing_set_meta(KvStore& s, std::string_view key, std::string_view value);

// Test hook: runs inside write() after the callback, before the commit
// (a process killed there must leave the old state). relaxed: a test sets
// it before it forks the process it targets.
using KvHook = void (*)() noexcept;
inline constinit std::atomic<KvHook> g_kv_before_commit{nullptr};

// Test hook: runs inside the fault guard of every get and put, just before
// LMDB's call (a test raises SIGSEGV there to stand for a fault inside
// LMDB). relaxed: set before the calls it targets, in the same thread or
// before a fork.
inline constinit std::atomic<KvHook> g_kv_inside_lmdb{nullptr};

}  // namespace detail
}  // namespace shmbus
