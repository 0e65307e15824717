// shmbus::List<T> — a list shared by processes without a server, as
// multiprocessing.Manager().list() (crash-safe, on LMDB; see dict.hpp for
// the store, its consistency, fork and crash guarantees).
//
//   shmbus::List<long> l{"results"};          // named: open or create
//   l.append(4);
//   l.extend({5, 6});
//   l.reverse();                               // one transaction
//   std::vector<long> all = l.to_vector();     // or l.slice(begin, end)
//   long last = l.pop();                       // Error(invalid_argument) when empty
//
// Each call is one transaction: concurrent appends from many processes
// each land once, and a reader sees the list before or after a reverse(),
// never half of it. Entry i is stored under the key i (8 bytes, big-endian,
// so the store's order is the list's): get/set/append/pop at the end cost
// one key; insert/pop in the middle move the entries after it, as a Python
// list does. Indices are Python's: negative ones count from the end.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "shmbus/bus.hpp"
#include "shmbus/detail/kv_codec.hpp"
#include "shmbus/detail/kv_store.hpp"
#include "shmbus/detail/type_tag.hpp"
#include "shmbus/error.hpp"

namespace shmbus {

namespace detail {
using IndexKey = std::array<std::byte, 8>;
IndexKey index_key(std::uint64_t i) noexcept;
// Python's index rules: i in [-size, size) becomes [0, size); otherwise
// Error(invalid_argument) naming the list, the index and the size.
std::uint64_t normalise_index(const std::string& store, std::int64_t i, std::uint64_t size);
// Python's slice bounds: clamped to [0, size].
std::uint64_t clamp_index(std::int64_t i, std::uint64_t size) noexcept;
[[noreturn]] void throw_undecodable(const std::string& store, std::size_t size,
                                    std::string_view type);
[[noreturn]] void throw_not_in_list(const std::string& store);
}  // namespace detail

template <Codable T>
class List {
 public:
  // Anonymous: shared with forked children.
  explicit List(const StoreOptions& opts = {})
      : store_(detail::StoreKind::list, detail::type_tag<std::uint64_t>(), detail::type_tag<T>(),
               opts) {}
  explicit List(std::string name, const StoreOptions& opts = {})
      : List(std::move(name), detail::KvStore::Mode::open_or_create, opts) {}
  static List create(std::string name, const StoreOptions& opts = {}) {
    return List(std::move(name), detail::KvStore::Mode::create, opts);
  }
  static List open(std::string name, const StoreOptions& opts = {}) {
    return List(std::move(name), detail::KvStore::Mode::open, opts);
  }
  static bool unlink(std::string_view name) { return detail::KvStore::unlink(name); }

  [[nodiscard]] std::size_t size() const {
    return store_.read([](const detail::ReadTxn& t) { return t.size(); });
  }
  [[nodiscard]] bool empty() const { return size() == 0; }

  // l[i]
  [[nodiscard]] T at(std::int64_t i) const {
    return store_.read([&](const detail::ReadTxn& t) {
      return get_at(t, detail::normalise_index(store_.name(), i, t.size()));
    });
  }
  // l[i] = v
  void set(std::int64_t i, const T& v) {
    store_.write([&](detail::WriteTxn& t) {
      put_at(t, detail::normalise_index(store_.name(), i, t.size()), v);
    });
  }
  void append(const T& v) {
    store_.write([&](detail::WriteTxn& t) { put_at(t, t.size(), v); });
  }
  void extend(const std::vector<T>& vs) {
    store_.write([&](detail::WriteTxn& t) {
      std::uint64_t n = t.size();
      for (const T& v : vs) put_at(t, n++, v);
    });
  }
  void extend(std::initializer_list<T> vs) { extend(std::vector<T>(vs)); }
  // Inserts before index i (clamped, as Python's insert).
  void insert(std::int64_t i, const T& v) {
    store_.write([&](detail::WriteTxn& t) {
      std::uint64_t n = t.size();
      std::uint64_t at = detail::clamp_index(i, n);
      for (std::uint64_t j = n; j > at; --j) put_at(t, j, get_at(t, j - 1));
      put_at(t, at, v);
    });
  }
  // Removes and returns l[i] (the last by default).
  T pop(std::int64_t i = -1) {
    return store_.write([&](detail::WriteTxn& t) {
      std::uint64_t n = t.size();
      std::uint64_t at = detail::normalise_index(store_.name(), i, n);
      T out = get_at(t, at);
      for (std::uint64_t j = at; j + 1 < n; ++j) put_at(t, j, get_at(t, j + 1));
      auto k = detail::index_key(n - 1);
      t.erase(k);
      return out;
    });
  }
  // The first index holding v; Error(not_found) when none (Python's ValueError).
  [[nodiscard]] std::size_t index(const T& v) const {
    return store_.read([&](const detail::ReadTxn& t) {
      std::optional<std::size_t> found;
      std::size_t i = 0;
      t.for_each([&](detail::Bytes, detail::Bytes vb) {
        if (decode(vb) == v) {
          found = i;
          return false;
        }
        ++i;
        return true;
      });
      if (!found) detail::throw_not_in_list(store_.name());
      return *found;
    });
  }
  [[nodiscard]] std::size_t count(const T& v) const {
    auto all = to_vector();
    return static_cast<std::size_t>(std::count(all.begin(), all.end(), v));
  }
  // l[begin:end] as a vector (Python's clamping; one snapshot).
  [[nodiscard]] std::vector<T> slice(std::int64_t begin, std::int64_t end) const {
    return store_.read([&](const detail::ReadTxn& t) {
      std::uint64_t n = t.size();
      std::uint64_t b = detail::clamp_index(begin, n), e = detail::clamp_index(end, n);
      std::vector<T> out;
      for (std::uint64_t j = b; j < e; ++j) out.push_back(get_at(t, j));
      return out;
    });
  }
  [[nodiscard]] std::vector<T> to_vector() const {
    return store_.read([&](const detail::ReadTxn& t) {
      std::vector<T> out;
      out.reserve(t.size());
      t.for_each([&](detail::Bytes, detail::Bytes vb) {
        out.push_back(decode(vb));
        return true;
      });
      return out;
    });
  }
  void reverse() {
    rewrite([](std::vector<T>& v) { std::reverse(v.begin(), v.end()); });
  }
  template <class Less = std::less<>>
  void sort(Less less = {}) {
    rewrite([&](std::vector<T>& v) { std::stable_sort(v.begin(), v.end(), less); });
  }
  void clear() {
    store_.write([](detail::WriteTxn& t) { t.clear(); });
  }

  [[nodiscard]] const std::string& name() const noexcept { return store_.name(); }

 private:
  List(std::string name, detail::KvStore::Mode mode, const StoreOptions& opts)
      : store_(std::move(name), mode, detail::StoreKind::list, detail::type_tag<std::uint64_t>(),
               detail::type_tag<T>(), opts) {}

  T decode(detail::Bytes b) const {
    T v{};
    if (!detail::kv_decode(b, v))
      detail::throw_undecodable(store_.name(), b.size(), detail::type_name<T>());
    return v;
  }
  T get_at(const detail::ReadTxn& t, std::uint64_t i) const {
    auto k = detail::index_key(i);
    std::optional<detail::Bytes> b = t.get(k);
    // Keys 0..size-1 are all there unless the store was tampered with.
    if (!b) detail::throw_undecodable(store_.name(), 0, "a list entry (index missing)");
    return decode(*b);
  }
  void put_at(detail::WriteTxn& t, std::uint64_t i, const T& v) {
    std::string vb;
    detail::kv_encode(v, vb);
    auto k = detail::index_key(i);
    t.put(k, detail::kv_bytes(vb));
  }
  // Reads every entry, lets f reorder them, writes them back: one transaction.
  template <class F>
  void rewrite(F&& f) {
    store_.write([&](detail::WriteTxn& t) {
      std::vector<T> all;
      all.reserve(t.size());
      t.for_each([&](detail::Bytes, detail::Bytes vb) {
        all.push_back(decode(vb));
        return true;
      });
      f(all);
      for (std::uint64_t j = 0; j < all.size(); ++j) put_at(t, j, all[j]);
    });
  }

  detail::KvStore store_;
};

// Bus's factory (declared in bus.hpp): the list `object` of the bus.
template <Codable T>
List<T> Bus::list(std::string_view object, const StoreOptions& options) {
  return open_or_create<List<T>>(
      object, ObjectKind::list, detail::type_tag<T>(), options.map_size,
      [&](const std::string& full) { return List<T>::create(full, options); },
      [&](const std::string& full) { return List<T>::open(full, options); });
}
template <Codable T>
List<T> Bus::list(std::string_view object) {
  return list<T>(object, StoreOptions{});
}

}  // namespace shmbus
