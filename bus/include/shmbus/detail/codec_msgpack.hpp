// msgpack-cxx set-up for shmbus/codec.hpp: the library itself and the
// adaptors it lacks (std::variant, std::chrono::duration, enums without
// MSGPACK_ADD_ENUM, trivially copyable structs without MSGPACK_DEFINE).
// Users include shmbus/codec.hpp, not this.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <complex>
#include <cstddef>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <msgpack.hpp>
#include <optional>
#include <set>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "shmbus/detail/type_tag.hpp"

namespace shmbus {

// Specialise as std::true_type for a type that has its own msgpack-cxx
// adaptor (pack, convert, object_with_zone).
template <class T>
struct is_msgpack_adapted : std::false_type {};

namespace detail {

template <class T, template <class...> class Tmpl>
struct is_spec : std::false_type {};
template <template <class...> class Tmpl, class... A>
struct is_spec<Tmpl<A...>, Tmpl> : std::true_type {};

template <class T>
concept HasMsgpackMembers = requires(T& m, const msgpack::object& o) {
  m.msgpack_unpack(o);
};

template <class T>
struct is_std_array : std::false_type {};
template <class E, std::size_t N>
struct is_std_array<std::array<E, N>> : std::true_type {};
template <class T>
struct is_duration : std::false_type {};
template <class R, class P>
struct is_duration<std::chrono::duration<R, P>> : std::true_type {};
template <class T>
struct is_time_point : std::false_type {};
template <class C, class D>
struct is_time_point<std::chrono::time_point<C, D>> : std::true_type {};

// The standard containers the direct encoder (codec_writer.hpp) and
// decoder (codec_reader.hpp) handle themselves, as msgpack-cxx's adaptors
// encode them. Element types whose containers msgpack-cxx writes as
// str/bin rather than as an array of numbers:
template <class T>
inline constexpr bool is_charlike =
    std::is_same_v<T, char> || std::is_same_v<T, signed char> || std::is_same_v<T, unsigned char> ||
    std::is_same_v<T, std::byte>;
// vector (not of bytes, not of bool), deque and list: an array.
template <class T>
struct is_sequence : std::false_type {};
template <class E, class A>
struct is_sequence<std::vector<E, A>>
    : std::bool_constant<!is_charlike<E> && !std::is_same_v<E, bool>> {};
template <class E, class A>
struct is_sequence<std::deque<E, A>> : std::true_type {};
template <class E, class A>
struct is_sequence<std::list<E, A>> : std::true_type {};
// std::array of other than bytes: an array.
template <class T>
struct is_direct_array : std::false_type {};
template <class E, std::size_t N>
struct is_direct_array<std::array<E, N>> : std::bool_constant<!is_charlike<E>> {};
// std::array of char, unsigned char or std::byte: bin (or str) in
// msgpack-cxx (signed char's is an array of integers).
template <class T>
struct is_byte_array : std::false_type {};
template <class E, std::size_t N>
struct is_byte_array<std::array<E, N>>
    : std::bool_constant<is_charlike<E> && !std::is_same_v<E, signed char>> {};
// set and unordered_set: an array of the keys.
template <class T>
struct is_set : std::false_type {};
template <class K, class C, class A>
struct is_set<std::set<K, C, A>> : std::true_type {};
template <class K, class H, class E, class A>
struct is_set<std::unordered_set<K, H, E, A>> : std::true_type {};
// map and unordered_map: a map.
template <class T>
struct is_map : std::false_type {};
template <class K, class V, class C, class A>
struct is_map<std::map<K, V, C, A>> : std::true_type {};
template <class K, class V, class H, class E, class A>
struct is_map<std::unordered_map<K, V, H, E, A>> : std::true_type {};

// Standard templates msgpack-cxx (or codec_msgpack.hpp) encodes field by
// field even when they are trivially copyable.
template <class T>
inline constexpr bool kStdCoded =
    is_std_array<T>::value || is_duration<T>::value || is_time_point<T>::value ||
    is_spec<T, std::pair>::value || is_spec<T, std::tuple>::value ||
    is_spec<T, std::optional>::value || is_spec<T, std::variant>::value ||
    is_spec<T, std::complex>::value;

// A trivially copyable class nested in a msgpack value, with no msgpack
// description of its own: carried as bin of its object bytes.
template <class T>
inline constexpr bool kRawNested =
    std::is_class_v<T>&& std::is_trivially_copyable_v<T> && !HasMsgpackMembers<T> &&
    !kStdCoded<T> && !is_msgpack_adapted<T>::value && !type_name<T>().starts_with("msgpack::");

// Big-endian (msgpack's byte order) unsigned integers of 1, 2, 4 or 8
// bytes: one load or store and a byte swap.
template <class U>
constexpr U to_big_endian(U v) noexcept {
  static_assert(std::is_unsigned_v<U> &&
                (sizeof(U) == 1 || sizeof(U) == 2 || sizeof(U) == 4 || sizeof(U) == 8));
  if constexpr (std::endian::native == std::endian::big || sizeof(U) == 1) {
    return v;
  } else if constexpr (sizeof(U) == 2) {
    return __builtin_bswap16(v);
  } else if constexpr (sizeof(U) == 4) {
    return __builtin_bswap32(v);
  } else {
    return __builtin_bswap64(v);
  }
}
template <class U>
void store_be(char* p, U v) noexcept {
  v = to_big_endian(v);
  std::memcpy(p, &v, sizeof(U));
}
template <class U>
U load_be(const char* p) noexcept {
  U v;
  std::memcpy(&v, p, sizeof(U));
  return to_big_endian(v);
}

}  // namespace detail
}  // namespace shmbus

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {

  // A trivially copyable struct without a msgpack description, inside a
  // msgpack value: bin of exactly sizeof(T) bytes (host layout).
  template <class T>
  struct pack<T, std::enable_if_t<shmbus::detail::kRawNested<T>>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const T& v) const {
      o.pack_bin(static_cast<std::uint32_t>(sizeof(T)));
      o.pack_bin_body(reinterpret_cast<const char*>(&v), static_cast<std::uint32_t>(sizeof(T)));
      return o;
    }
  };
  template <class T>
  struct convert<T, std::enable_if_t<shmbus::detail::kRawNested<T>>> {
    const msgpack::object& operator()(const msgpack::object& o, T& v) const {
      if (o.type != msgpack::type::BIN || o.via.bin.size != sizeof(T)) throw msgpack::type_error();
      std::memcpy(&v, o.via.bin.ptr, sizeof(T));
      return o;
    }
  };

  // An enum without MSGPACK_ADD_ENUM (which would be a full specialisation,
  // preferred over this): its underlying integer.
  template <class T>
  struct pack<T, std::enable_if_t<std::is_enum_v<T>>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const T& v) const {
      o.pack(static_cast<std::underlying_type_t<T>>(v));
      return o;
    }
  };
  template <class T>
  struct convert<T, std::enable_if_t<std::is_enum_v<T>>> {
    const msgpack::object& operator()(const msgpack::object& o, T& v) const {
      v = static_cast<T>(o.as<std::underlying_type_t<T>>());
      return o;
    }
  };

  // std::chrono::duration: its count(), in its own period.
  template <class R, class P>
  struct pack<std::chrono::duration<R, P>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const std::chrono::duration<R, P>& v) const {
      o.pack(v.count());
      return o;
    }
  };
  template <class R, class P>
  struct convert<std::chrono::duration<R, P>> {
    const msgpack::object& operator()(const msgpack::object& o,
                                      std::chrono::duration<R, P>& v) const {
      v = std::chrono::duration<R, P>(o.as<R>());
      return o;
    }
  };

  // std::chrono::time_point (any clock): msgpack's timestamp extension
  // (type -1), written as timestamp 96 (nanoseconds u32, seconds i64, big
  // endian); all three timestamp sizes are read. Python reads it as
  // msgpack.Timestamp. (msgpack-cxx's own adaptor needs Boost.)
  template <class C, class D>
  struct pack<std::chrono::time_point<C, D>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const std::chrono::time_point<C, D>& v) const {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(v.time_since_epoch());
      auto sec = std::chrono::duration_cast<std::chrono::seconds>(ns);
      if (sec > ns) sec -= std::chrono::seconds(1);  // floor: nanoseconds stay >= 0
      const auto nsec = static_cast<std::uint32_t>((ns - sec).count());
      char buf[12];
      shmbus::detail::store_be(buf, nsec);
      shmbus::detail::store_be(buf + 4, static_cast<std::uint64_t>(sec.count()));
      o.pack_ext(12, -1);
      o.pack_ext_body(buf, 12);
      return o;
    }
  };
  template <class C, class D>
  struct convert<std::chrono::time_point<C, D>> {
    const msgpack::object& operator()(const msgpack::object& o,
                                      std::chrono::time_point<C, D>& v) const {
      if (o.type != msgpack::type::EXT || o.via.ext.type() != -1) throw msgpack::type_error();
      const char* p = o.via.ext.data();
      std::int64_t sec = 0;
      std::uint32_t nsec = 0;
      switch (o.via.ext.size) {
        case 4:
          sec = shmbus::detail::load_be<std::uint32_t>(p);
          break;
        case 8: {
          const auto w = shmbus::detail::load_be<std::uint64_t>(p);
          nsec = static_cast<std::uint32_t>(w >> 34);
          sec = static_cast<std::int64_t>(w & 0x3ffffffffULL);
          break;
        }
        case 12:
          nsec = shmbus::detail::load_be<std::uint32_t>(p);
          sec = static_cast<std::int64_t>(shmbus::detail::load_be<std::uint64_t>(p + 4));
          break;
        default:
          throw msgpack::type_error();
      }
      if (nsec >= 1000000000u) throw msgpack::type_error();
      // Seconds beyond what nanoseconds hold (about +-292 years) do not fit.
      constexpr std::int64_t kMaxSec = std::numeric_limits<std::int64_t>::max() / 1000000000 - 1;
      if (sec > kMaxSec || sec < -kMaxSec) throw msgpack::type_error();
      const std::chrono::nanoseconds ns =
          std::chrono::seconds(sec) + std::chrono::nanoseconds(nsec);
      v = std::chrono::time_point<C, D>(std::chrono::duration_cast<D>(ns));
      return o;
    }
  };

  // std::variant: array [index, value].
  template <class... Ts>
  struct pack<std::variant<Ts...>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const std::variant<Ts...>& v) const {
      if (v.valueless_by_exception()) throw msgpack::type_error();
      o.pack_array(2);
      o.pack(static_cast<std::uint32_t>(v.index()));
      std::visit([&](const auto& x) { o.pack(x); }, v);
      return o;
    }
  };
  template <class... Ts>
  struct convert<std::variant<Ts...>> {
    using V = std::variant<Ts...>;
    template <std::size_t I>
    static void emplace(const msgpack::object& o, std::size_t index, V& v) {
      if constexpr (I < sizeof...(Ts)) {
        if (index != I) return emplace<I + 1>(o, index, v);
        std::variant_alternative_t<I, V> x{};
        o.convert(x);
        v.template emplace<I>(std::move(x));
      } else {
        throw msgpack::type_error();
      }
    }
    const msgpack::object& operator()(const msgpack::object& o, V& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
      emplace<0>(o.via.array.ptr[1], o.via.array.ptr[0].as<std::size_t>(), v);
      return o;
    }
  };

  }  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS)
}  // namespace msgpack
