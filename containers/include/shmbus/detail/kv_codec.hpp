// The key/value encoding of Dict, List and Namespace: the one seam to
// switch to the full codec (shmbus/codec.hpp: detail::encode_message /
// decode_message) when it lands. Until then: trivially copyable types as
// their bytes, std::string as its bytes.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

namespace shmbus::detail {

template <class T>
concept KvEncodable = std::is_trivially_copyable_v<T> || std::is_same_v<T, std::string>;

// Appends nothing: `out` becomes the encoding of `v` (its capacity is reused).
template <KvEncodable T>
void kv_encode(const T& v, std::string& out) {
  if constexpr (std::is_same_v<T, std::string>) {
    out.assign(v);
  } else {
    out.resize(sizeof(T));
    std::memcpy(out.data(), &v, sizeof(T));
  }
}

// Whether `in` decodes as a T (into `v`). The bytes come from shared memory:
// a size that is not exactly sizeof(T) is a decode failure, never a read past them.
template <KvEncodable T>
[[nodiscard]] bool kv_decode(std::span<const std::byte> in, T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    v.assign(reinterpret_cast<const char*>(in.data()), in.size());
    return true;
  } else {
    if (in.size() != sizeof(T)) return false;
    std::memcpy(&v, in.data(), sizeof(T));
    return true;
  }
}

// The bytes of an encoding, for the store.
inline std::span<const std::byte> kv_bytes(const std::string& s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

}  // namespace shmbus::detail
