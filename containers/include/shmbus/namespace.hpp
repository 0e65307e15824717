// shmbus::Namespace — named fields shared by processes without a server, as
// multiprocessing.Manager().Namespace() (crash-safe, on LMDB; see dict.hpp
// for the store, its consistency, fork and crash guarantees).
//
//   shmbus::Namespace ns{"stats"};                 // named: open or create
//   ns.set("count", 1);                              // ns.count = 1
//   int c = ns.get<int>("count");                    // Error(not_found) if unset
//   ns.update<int>("count", [](int& v) { ++v; });    // atomic read-modify-write
//   ns.set("label", std::string("run 7"));
//
// Each field remembers the type it was set with: get<double>("count") on
// a field set as int is Error(wrong_type), not a reinterpretation. Fields
// are any type a typed channel carries (shmbus/codec.hpp).
#pragma once

#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/detail/kv_codec.hpp"
#include "shmbus/detail/kv_store.hpp"
#include "shmbus/detail/type_tag.hpp"

namespace shmbus {

class Namespace {
 public:
  // Anonymous: shared with forked children.
  explicit Namespace(const StoreOptions& opts = {});
  explicit Namespace(std::string name, const StoreOptions& opts = {});
  static Namespace create(std::string name, const StoreOptions& opts = {});
  static Namespace open(std::string name, const StoreOptions& opts = {});
  static bool unlink(std::string_view name) { return detail::KvStore::unlink(name); }

  template <Codable T>
  void set(std::string_view field, const T& v) {
    std::string b = encode(v);
    store_.write([&](detail::WriteTxn& t) { t.put(key(field), detail::kv_bytes(b)); });
  }
  // String literals are stored as std::string.
  void set(std::string_view field, const char* v) { set(field, std::string(v)); }

  // Error(not_found) when the field was never set (Python's AttributeError).
  template <Codable T>
  [[nodiscard]] T get(std::string_view field) const {
    std::optional<T> v = find<T>(field);
    if (!v) throw_missing(field);
    return std::move(*v);
  }
  template <Codable T>
  [[nodiscard]] T get(std::string_view field, const T& fallback) const {
    return find<T>(field).value_or(fallback);
  }
  template <Codable T>
  [[nodiscard]] std::optional<T> find(std::string_view field) const {
    return store_.read([&](const detail::ReadTxn& t) -> std::optional<T> {
      std::optional<detail::Bytes> b = t.get(key(field));
      if (!b) return std::nullopt;
      return decode<T>(field, *b);
    });
  }
  // Atomic read-modify-write of one field; fn may run more than once.
  template <Codable T, class F>
  T update(std::string_view field, F&& fn, const T& initial = T{}) {
    return store_.write([&](detail::WriteTxn& t) {
      std::optional<detail::Bytes> b = t.get(key(field));
      T v = b ? decode<T>(field, *b) : initial;
      fn(v);
      std::string out = encode(v);
      t.put(key(field), detail::kv_bytes(out));
      return v;
    });
  }
  [[nodiscard]] bool contains(std::string_view field) const;
  bool erase(std::string_view field);  // del ns.field
  [[nodiscard]] std::vector<std::string> fields() const;

  [[nodiscard]] const std::string& name() const noexcept { return store_.name(); }

 private:
  Namespace(std::string name, detail::KvStore::Mode mode, const StoreOptions& opts);
  static detail::Bytes key(std::string_view field);  // checks 1..511 bytes
  [[noreturn]] void throw_missing(std::string_view field) const;
  // The payload after the 8-byte type fingerprint, or Error(wrong_type).
  detail::Bytes payload(std::string_view field, detail::Bytes stored,
                        const detail::TypeTag& want) const;

  template <class T>
  static std::string encode(const T& v) {
    std::string body;
    detail::kv_encode(v, body);
    const std::uint64_t fp = detail::type_tag<T>().fingerprint;
    std::string out(sizeof fp, '\0');
    std::memcpy(out.data(), &fp, sizeof fp);
    return out + body;
  }
  template <class T>
  T decode(std::string_view field, detail::Bytes stored) const {
    detail::Bytes body = payload(field, stored, detail::type_tag<T>());
    T v{};
    if (!detail::kv_decode(body, v)) payload(field, {}, detail::type_tag<T>());  // throws
    return v;
  }

  detail::KvStore store_;
};

}  // namespace shmbus
