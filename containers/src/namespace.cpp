#include "shmbus/namespace.hpp"

#include <cstring>

#include "shmbus/bus.hpp"
#include "shmbus/error.hpp"

namespace shmbus {

namespace {
constexpr detail::TypeTag kFieldTag{detail::fnv1a("namespace-field"), "namespace-field"};
}

Namespace::Namespace(const StoreOptions& opts)
    : store_(detail::StoreKind::ns, detail::type_tag<std::string>(), kFieldTag, opts) {}

Namespace::Namespace(std::string name, const StoreOptions& opts)
    : Namespace(std::move(name), detail::KvStore::Mode::open_or_create, opts) {}

Namespace::Namespace(std::string name, detail::KvStore::Mode mode, const StoreOptions& opts)
    : store_(std::move(name), mode, detail::StoreKind::ns, detail::type_tag<std::string>(),
             kFieldTag, opts) {}

Namespace Namespace::create(std::string name, const StoreOptions& opts) {
  return Namespace(std::move(name), detail::KvStore::Mode::create, opts);
}

Namespace Namespace::open(std::string name, const StoreOptions& opts) {
  return Namespace(std::move(name), detail::KvStore::Mode::open, opts);
}

detail::Bytes Namespace::key(std::string_view field) {
  if (field.empty() || field.size() > 511)
    throw Error(Errc::invalid_argument, std::string(field), "a field name is 1..511 bytes");
  return std::as_bytes(std::span<const char>(field.data(), field.size()));
}

void Namespace::throw_missing(std::string_view field) const {
  throw Error(Errc::not_found, store_.name(), "no field '" + std::string(field) + "'");
}

detail::Bytes Namespace::payload(std::string_view field, detail::Bytes stored,
                                 const detail::TypeTag& want) const {
  std::uint64_t fp = 0;
  if (stored.size() >= sizeof fp) std::memcpy(&fp, stored.data(), sizeof fp);
  if (stored.size() < sizeof fp || fp != want.fingerprint)
    throw Error(Errc::wrong_type, store_.name(),
                "field '" + std::string(field) + "' was not set as " + std::string(want.name) +
                    " (" + std::to_string(stored.size()) + " bytes stored)");
  return stored.subspan(sizeof fp);
}

bool Namespace::contains(std::string_view field) const {
  return store_.read([&](const detail::ReadTxn& t) { return t.get(key(field)).has_value(); });
}

bool Namespace::erase(std::string_view field) {
  return store_.write([&](detail::WriteTxn& t) { return t.erase(key(field)); });
}

std::vector<std::string> Namespace::fields() const {
  return store_.read([](const detail::ReadTxn& t) {
    std::vector<std::string> out;
    t.for_each([&](detail::Bytes k, detail::Bytes) {
      out.emplace_back(reinterpret_cast<const char*>(k.data()), k.size());
      return true;
    });
    return out;
  });
}

Namespace Bus::namespace_(std::string_view object, const StoreOptions& options) {
  return open_or_create<Namespace>(
      object, ObjectKind::namespace_, kFieldTag, options.map_size,
      [&](const std::string& full) { return Namespace::create(full, options); },
      [&](const std::string& full) { return Namespace::open(full, options); });
}

Namespace Bus::namespace_(std::string_view object) { return namespace_(object, StoreOptions{}); }

}  // namespace shmbus
