// The key/value encoding of Dict, List and Namespace: the codec's
// (shmbus/codec.hpp), so that a container carries what a typed channel
// carries: trivially copyable types as their bytes, std::string as its
// bytes, everything else (std::vector, std::map, MSGPACK_DEFINE structs,
// ...) as one MessagePack value.
//
// Keys are the exception that keeps iteration order sane: integers and
// floating point are stored big-endian with the sign flipped, so that the
// store's byte order is their numeric order (Dict<int, V>::items() comes
// out sorted as a std::map's would); std::string keys are their bytes
// (lexicographic order, as std::string's operator<). Any other key type is
// its codec bytes: a stable order, not a meaningful one.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "shmbus/codec.hpp"

namespace shmbus::detail {

// Keys stored in numeric order (see above). bool stays a 1-byte raw value.
template <class T>
concept OrderedNumber =
    (std::is_integral_v<T> && !std::is_same_v<T, bool>) || std::is_floating_point_v<T>;

template <OrderedNumber T>
constexpr auto ordered_bits(T v) noexcept {
  using U = std::conditional_t<
      sizeof(T) == 1, std::uint8_t,
      std::conditional_t<sizeof(T) == 2, std::uint16_t,
                         std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>>;
  static_assert(sizeof(U) == sizeof(T), "an integer or float of 1, 2, 4 or 8 bytes");
  U u = std::bit_cast<U>(v);
  constexpr U sign = U(U{1} << (sizeof(U) * 8 - 1));
  if constexpr (std::is_floating_point_v<T>)
    u = (u & sign) != 0 ? U(~u) : U(u | sign);  // negatives reversed, below positives
  else if constexpr (std::is_signed_v<T>)
    u = U(u ^ sign);
  return u;
}

template <OrderedNumber T>
constexpr T from_ordered_bits(decltype(ordered_bits(T{})) u) noexcept {
  using U = decltype(u);
  constexpr U sign = U(U{1} << (sizeof(U) * 8 - 1));
  if constexpr (std::is_floating_point_v<T>)
    u = (u & sign) != 0 ? U(u & U(~sign)) : U(~u);
  else if constexpr (std::is_signed_v<T>)
    u = U(u ^ sign);
  return std::bit_cast<T>(u);
}

// `out` becomes the value encoding of `v` (its capacity is reused: no
// allocation once warm for fixed-size types).
template <Codable T>
void kv_encode(const T& v, std::string& out) {
  std::span<const std::byte> b = encode_message(v);
  out.assign(reinterpret_cast<const char*>(b.data()), b.size());
}

// Whether `in` decodes as a T (into `v`); last_decode_error() says why not.
// The bytes come from shared memory: checked, never read past.
template <Codable T>
[[nodiscard]] bool kv_decode(std::span<const std::byte> in, T& v) noexcept {
  return decode_message(in, v);
}

// The key encoding: ordered numbers big-endian (see above), else the value's.
template <Codable T>
void kv_encode_key(const T& k, std::string& out) {
  if constexpr (OrderedNumber<T>) {
    auto u = ordered_bits(k);
    out.resize(sizeof u);
    for (std::size_t i = 0; i < sizeof u; ++i)
      out[i] = static_cast<char>((u >> (8 * (sizeof u - 1 - i))) & 0xff);
  } else {
    kv_encode(k, out);
  }
}

template <Codable T>
[[nodiscard]] bool kv_decode_key(std::span<const std::byte> in, T& k) noexcept {
  if constexpr (OrderedNumber<T>) {
    using U = decltype(ordered_bits(T{}));
    if (in.size() != sizeof(U)) {
      set_decode_error("key size differs from the type's size");
      return false;
    }
    U u = 0;
    for (std::byte b : in) u = U((u << 8) | static_cast<U>(b));
    k = from_ordered_bits<T>(u);
    return true;
  } else {
    return kv_decode(in, k);
  }
}

// The bytes of an encoding, for the store.
inline std::span<const std::byte> kv_bytes(const std::string& s) noexcept {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

}  // namespace shmbus::detail
