// shmbus::Dict<K, V> — a dict shared by processes without a server, as
// multiprocessing.Manager().dict() (crash-safe, on LMDB).
//
//   shmbus::Dict<std::string, double> prices{"prices"};   // named: open or create
//   prices.set("EURUSD", 1.08);
//   double p = prices.at("EURUSD");                        // Error(not_found) if absent
//   prices.update("hits", [](double& v) { v += 1; });      // atomic read-modify-write
//   prices.transaction([](auto& tx) {                       // several keys, one commit
//     tx.set("bid", 1.07);
//     tx.set("ask", 1.09);
//   });
//   for (auto& [k, v] : prices.items()) std::printf("%s %g\n", k.c_str(), v);  // a snapshot
//
// Who may call what: any number of processes and threads, at once. Every
// call is one LMDB transaction: a reader sees a committed snapshot and never
// waits for a writer; writers take LMDB's robust cross-process writer lock
// in turn. A writer killed at any instruction leaves the last committed
// state (its own transaction never happened) and the lock free for the next.
// After fork() the child reopens the store on its first call (LMDB forbids
// sharing an environment across fork), so a Dict made before fork works in
// the child; do not race the child's first call from several threads.
//
// Memory ordering: everything one call committed is visible to every call
// of any process that starts after it returned.
//
// Where it lives: a named Dict is the file /dev/shm/shmbus-kv.<name> (and
// its lock file <...>-lock); it outlives its processes until Dict::unlink.
// An anonymous Dict (default constructor) is a file unlinked right after it
// was opened, shared with forked children only.
//
// Keys and values: whatever a typed channel carries (shmbus/codec.hpp:
// trivially copyable types, std::string, std containers, MSGPACK_DEFINE
// structs); an encoded key is 1..511 bytes. Iteration is in key order:
// numeric for integer and floating keys, lexicographic for std::string,
// the encoding's bytes for others (detail/kv_codec.hpp). A value that does
// not decode as V (a peer wrote other bytes) is Error(wrong_type) naming
// the store and V. Calls throw Error when the
// store fails (corrupted, full at StoreOptions::max_map_size); they are
// not noexcept: each is a transaction, not a ring slot.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "shmbus/bus.hpp"
#include "shmbus/detail/kv_codec.hpp"
#include "shmbus/detail/kv_store.hpp"
#include "shmbus/detail/type_tag.hpp"
#include "shmbus/error.hpp"

namespace shmbus {

namespace detail {
// Error(wrong_type) for a stored value that does not decode as `type`.
[[noreturn]] void throw_undecodable(const std::string& store, std::size_t size,
                                    std::string_view type);
// Error(not_found) for a missing key.
[[noreturn]] void throw_missing_key(const std::string& store);
}  // namespace detail

template <Codable K, Codable V>
class Dict {
 public:
  // The typed view of one write transaction (Dict::transaction).
  class Txn {
   public:
    [[nodiscard]] std::optional<V> get(const K& k) const {
      return Dict::find(*tx_, enc_key(k, kbuf_));
    }
    void set(const K& k, const V& v) { tx_->put(enc_key(k, kbuf_), enc(v, vbuf_)); }
    bool erase(const K& k) { return tx_->erase(enc_key(k, kbuf_)); }
    [[nodiscard]] bool contains(const K& k) const {
      return tx_->get(enc_key(k, kbuf_)).has_value();
    }
    [[nodiscard]] std::size_t size() const { return tx_->size(); }
    void clear() { tx_->clear(); }

   private:
    explicit Txn(detail::WriteTxn& tx) : tx_(&tx) {}
    detail::WriteTxn* tx_;
    mutable std::string kbuf_, vbuf_;
    friend class Dict;
  };

  // Anonymous: shared with forked children.
  explicit Dict(const StoreOptions& opts = {})
      : store_(detail::StoreKind::dict, detail::type_tag<K>(), detail::type_tag<V>(), opts) {}
  // Named: opens the store, creating it if there is none.
  explicit Dict(std::string name, const StoreOptions& opts = {})
      : Dict(std::move(name), detail::KvStore::Mode::open_or_create, opts) {}
  static Dict create(std::string name, const StoreOptions& opts = {}) {
    return Dict(std::move(name), detail::KvStore::Mode::create, opts);
  }
  static Dict open(std::string name, const StoreOptions& opts = {}) {
    return Dict(std::move(name), detail::KvStore::Mode::open, opts);
  }
  // Removes a named store; processes that have it open keep using it.
  static bool unlink(std::string_view name) { return detail::KvStore::unlink(name); }

  [[nodiscard]] std::optional<V> get(const K& k) const {
    return store_.read([&](const detail::ReadTxn& t) { return find(t, enc_key(k, key_buf())); });
  }
  [[nodiscard]] V get(const K& k, const V& fallback) const { return get(k).value_or(fallback); }
  // d[k]: Error(not_found) when absent, as Python's KeyError.
  [[nodiscard]] V at(const K& k) const {
    std::optional<V> v = get(k);
    if (!v) detail::throw_missing_key(store_.name());
    return std::move(*v);
  }
  [[nodiscard]] bool contains(const K& k) const {
    return store_.read(
        [&](const detail::ReadTxn& t) { return t.get(enc_key(k, key_buf())).has_value(); });
  }
  [[nodiscard]] std::size_t size() const {
    return store_.read([](const detail::ReadTxn& t) { return t.size(); });
  }
  [[nodiscard]] bool empty() const { return size() == 0; }

  void set(const K& k, const V& v) {
    store_.write([&](detail::WriteTxn& t) { t.put(enc_key(k, key_buf()), enc(v, val_buf())); });
  }
  // The value under k, first setting it to `fallback` if there is none.
  V setdefault(const K& k, const V& fallback) {
    return store_.write([&](detail::WriteTxn& t) {
      std::string kb;
      std::optional<V> have = find(t, enc_key(k, kb));
      if (have) return std::move(*have);
      std::string vb;
      t.put(detail::kv_bytes(kb), enc(fallback, vb));
      return fallback;
    });
  }
  // Whether k was there.
  bool erase(const K& k) {
    return store_.write([&](detail::WriteTxn& t) { return t.erase(enc_key(k, key_buf())); });
  }
  // Removes k and returns its value, if any.
  std::optional<V> pop(const K& k) {
    return store_.write([&](detail::WriteTxn& t) {
      std::string kb;
      std::optional<V> have = find(t, enc_key(k, kb));
      if (have) t.erase(detail::kv_bytes(kb));
      return have;
    });
  }
  // Python's d.pop(k, default): k's value, removed, or `fallback`.
  V pop(const K& k, const V& fallback) { return pop(k).value_or(fallback); }
  void clear() {
    store_.write([](detail::WriteTxn& t) { t.clear(); });
  }

  // Atomic read-modify-write of one key: fn(V&) sees the committed value
  // (or `initial` when absent) and what it leaves is stored; returns it.
  // fn may run more than once (when the store has to grow): keep it pure.
  template <class F>
  V update(const K& k, F&& fn, const V& initial = V{}) {
    return store_.write([&](detail::WriteTxn& t) {
      std::string kb, vb;
      V v = find(t, enc_key(k, kb)).value_or(initial);
      fn(v);
      t.put(detail::kv_bytes(kb), enc(v, vb));
      return v;
    });
  }
  // Python's dict.update(other): every pair in one transaction.
  void update(const std::vector<std::pair<K, V>>& pairs) {
    store_.write([&](detail::WriteTxn& t) {
      std::string kb, vb;
      for (const auto& [k, v] : pairs) t.put(enc_key(k, kb), enc(v, vb));
    });
  }
  void update(std::initializer_list<std::pair<K, V>> pairs) {
    update(std::vector<std::pair<K, V>>(pairs));
  }
  // Several reads and writes as one transaction: fn(Txn&); all or nothing
  // (an exception from fn aborts it). fn may run more than once.
  template <class F>
  decltype(auto) transaction(F&& fn) {
    return store_.write([&](detail::WriteTxn& t) {
      Txn tx(t);
      return fn(tx);
    });
  }

  // One consistent snapshot, in key-byte order.
  [[nodiscard]] std::vector<std::pair<K, V>> items() const {
    return store_.read([&](const detail::ReadTxn& t) {
      std::vector<std::pair<K, V>> out;
      out.reserve(t.size());
      t.for_each([&](detail::Bytes kb, detail::Bytes vb) {
        std::pair<K, V> p;
        if (!detail::kv_decode_key(kb, p.first))
          detail::throw_undecodable(store_.name(), kb.size(), detail::type_name<K>());
        p.second = decode(vb);
        out.push_back(std::move(p));
        return true;
      });
      return out;
    });
  }
  [[nodiscard]] std::vector<K> keys() const {
    std::vector<K> out;
    for (auto& p : items()) out.push_back(std::move(p.first));
    return out;
  }
  [[nodiscard]] std::vector<V> values() const {
    std::vector<V> out;
    for (auto& p : items()) out.push_back(std::move(p.second));
    return out;
  }

  [[nodiscard]] const std::string& name() const noexcept { return store_.name(); }

 private:
  Dict(std::string name, detail::KvStore::Mode mode, const StoreOptions& opts)
      : store_(std::move(name), mode, detail::StoreKind::dict, detail::type_tag<K>(),
               detail::type_tag<V>(), opts) {}

  static detail::Bytes enc(const V& v, std::string& buf) {
    detail::kv_encode(v, buf);
    return detail::kv_bytes(buf);
  }
  static detail::Bytes enc_key(const K& k, std::string& buf) {
    detail::kv_encode_key(k, buf);
    return detail::kv_bytes(buf);
  }
  // Per-thread buffers for the one-key calls (no allocation once warm).
  static std::string& key_buf() {
    thread_local std::string b;
    return b;
  }
  static std::string& val_buf() {
    thread_local std::string b;
    return b;
  }
  static V decode_as(detail::Bytes b, const std::string& store) {
    V v{};
    if (!detail::kv_decode(b, v))
      detail::throw_undecodable(store, b.size(), detail::type_name<V>());
    return v;
  }
  V decode(detail::Bytes b) const { return decode_as(b, store_.name()); }
  static std::optional<V> find(const detail::ReadTxn& t, detail::Bytes key) {
    std::optional<detail::Bytes> b = t.get(key);
    if (!b) return std::nullopt;
    return decode_as(*b, t.name());
  }

  detail::KvStore store_;
};

// Bus's factory (declared in bus.hpp): the dict `object` of the bus, a
// store named "<bus>.<object>"; `options` apply when it is created.
template <Codable K, Codable V>
Dict<K, V> Bus::dict(std::string_view object, const StoreOptions& options) {
  return open_or_create<Dict<K, V>>(
      object, ObjectKind::dict, detail::type_tag<std::pair<K, V>>(), options.map_size,
      [&](const std::string& full) { return Dict<K, V>::create(full, options); },
      [&](const std::string& full) { return Dict<K, V>::open(full, options); });
}
template <Codable K, Codable V>
Dict<K, V> Bus::dict(std::string_view object) {
  return dict<K, V>(object, StoreOptions{});
}

}  // namespace shmbus
