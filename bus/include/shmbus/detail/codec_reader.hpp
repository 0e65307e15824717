// The codec's direct msgpack decoder (shmbus/codec.hpp): reads a message
// straight into T, without msgpack-cxx's object tree, for the types the
// codec carries most (numbers, bools, enums, strings, vectors, lists,
// deques, arrays, sets, maps, optionals, pairs, tuples, durations, raw
// nested structs and MSGPACK_DEFINE structs, nested in any way). Any other
// value (a variant, a time point, a bin-coded char container, a type with
// its own adaptor, MSGPACK_DEFINE_MAP) is parsed by msgpack-cxx's bounded
// unpack and converted as before, for that value only.
//
// Untrusted input: every length is checked against the bytes left before
// anything is read or allocated (a container of n elements needs n bytes),
// nesting is bounded by kMaxDecodeDepth, and a value of another shape is
// msgpack::type_error. Users include shmbus/codec.hpp, not this.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "shmbus/detail/codec_msgpack.hpp"

#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace shmbus::detail {

// msgpack-cxx's bounded unpack of the one value at the start of `msg`
// (codec.cpp); `used` is how many bytes it took. Throws msgpack's unpack
// errors.
msgpack::object unpack_one(std::span<const std::byte> msg, msgpack::zone& zone, std::size_t depth,
                           std::size_t& used);
msgpack::zone& decode_zone() noexcept;

class MsgpackReader {
 public:
  MsgpackReader(std::span<const std::byte> msg, std::size_t max_depth) noexcept
      : p_(reinterpret_cast<const unsigned char*>(msg.data())),
        end_(p_ + msg.size()),
        max_depth_(max_depth) {}

  [[nodiscard]] bool at_end() const noexcept { return p_ == end_; }
  // Whether some value went through msgpack-cxx's tree (decode_zone()).
  [[nodiscard]] bool used_zone() const noexcept { return used_zone_; }

  template <class T>
  void read(T& v) {
    if constexpr (std::is_same_v<T, bool>) {
      const unsigned char b = byte();
      if (b != 0xc2 && b != 0xc3) throw msgpack::type_error();
      v = b == 0xc3;
    } else if constexpr (std::is_integral_v<T> || std::is_floating_point_v<T>) {
      // A positive fixint (0..127, how msgpack-cxx writes small counts and
      // whole-number doubles) fits every integer and floating type.
      if (p_ != end_ && *p_ <= 0x7f) [[likely]] {
        v = static_cast<T>(*p_++);
        return;
      }
      if constexpr (std::is_integral_v<T>)
        read_integer(v);
      else
        read_float(v);
    } else if constexpr (std::is_enum_v<T>) {
      std::underlying_type_t<T> u{};
      read_integer(u);
      v = static_cast<T>(u);
    } else if constexpr (std::is_same_v<T, std::string>) {
      const std::size_t n = string_header();
      v.assign(reinterpret_cast<const char*>(take(n)), n);
    } else if constexpr (is_sequence<T>::value) {
      read_sequence(v);
    } else if constexpr (is_direct_array<T>::value) {
      const std::size_t n = array_header();
      if (n > v.size()) throw msgpack::type_error();
      Nest nest(*this);
      for (std::size_t i = 0; i < n; ++i) read(v[i]);
    } else if constexpr (is_byte_array<T>::value) {
      // bin or str of at most N bytes (what msgpack-cxx accepts), copied,
      // the rest zeroed. Not msgpack-cxx's convert: from a str it copies
      // N bytes whatever the str's length (a read past the str, past the
      // message, or through a null pointer for an empty one).
      const std::size_t n = string_header();
      if (n > v.size()) throw msgpack::type_error();
      const unsigned char* at = take(n);
      if (n != 0) std::memcpy(v.data(), at, n);
      if (n != v.size()) std::memset(v.data() + n, 0, (v.size() - n) * sizeof(v[0]));
    } else if constexpr (is_set<T>::value) {
      const std::size_t n = array_header();
      Nest nest(*this);
      v.clear();
      for (std::size_t i = 0; i < n; ++i) {
        typename T::key_type k{};
        read(k);
        v.insert(std::move(k));
      }
    } else if constexpr (is_map<T>::value) {
      const std::size_t n = map_header();
      Nest nest(*this);
      v.clear();
      for (std::size_t i = 0; i < n; ++i) {
        typename T::key_type k{};
        typename T::mapped_type m{};
        read(k);
        read(m);
        v.insert_or_assign(std::move(k), std::move(m));
      }
    } else if constexpr (is_spec<T, std::optional>::value) {
      if (peek() == 0xc0) {
        ++p_;
        v.reset();
      } else {
        read(v.emplace());
      }
    } else if constexpr (is_spec<T, std::pair>::value) {
      if (array_header() != 2) throw msgpack::type_error();
      Nest nest(*this);
      read(v.first);
      read(v.second);
    } else if constexpr (is_spec<T, std::tuple>::value) {
      read_tuple(v);
    } else if constexpr (is_duration<T>::value) {
      typename T::rep count{};
      read(count);
      v = T(count);
    } else if constexpr (kRawNested<T>) {
      if (bin_header() != sizeof(T)) throw msgpack::type_error();
      std::memcpy(&v, take(sizeof(T)), sizeof(T));
    } else if constexpr (HasMsgpackMembers<T> &&
                         requires(const T& t, FieldReader& f) { t.msgpack_pack(f); }) {
      read_fields(v);
    } else {
      read_tree(v);
    }
  }

  // Steps over one value of any kind.
  void skip() {
    const unsigned char b = byte();
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return;
    if (b >= 0x80 && b <= 0x8f) return skip_items(2 * std::size_t{b & 0x0fu});
    if (b >= 0x90 && b <= 0x9f) return skip_items(b & 0x0fu);
    if (b >= 0xa0 && b <= 0xbf) return (void)take(b & 0x1fu);
    switch (b) {
      case 0xc4:
      case 0xd9:
        return (void)take(be<std::uint8_t>());
      case 0xc5:
      case 0xda:
        return (void)take(be<std::uint16_t>());
      case 0xc6:
      case 0xdb:
        return (void)take(be<std::uint32_t>());
      case 0xc7:
        return (void)take(std::size_t{be<std::uint8_t>()} + 1);
      case 0xc8:
        return (void)take(std::size_t{be<std::uint16_t>()} + 1);
      case 0xc9:
        return (void)take(std::size_t{be<std::uint32_t>()} + 1);
      case 0xca:
        return (void)take(4);
      case 0xcb:
        return (void)take(8);
      case 0xcc:
      case 0xd0:
        return (void)take(1);
      case 0xcd:
      case 0xd1:
        return (void)take(2);
      case 0xce:
      case 0xd2:
        return (void)take(4);
      case 0xcf:
      case 0xd3:
        return (void)take(8);
      case 0xd4:
        return (void)take(2);
      case 0xd5:
        return (void)take(3);
      case 0xd6:
        return (void)take(5);
      case 0xd7:
        return (void)take(9);
      case 0xd8:
        return (void)take(17);
      case 0xdc:
        return skip_items(be<std::uint16_t>());
      case 0xdd:
        return skip_items(be<std::uint32_t>());
      case 0xde:
        return skip_items(2 * std::size_t{be<std::uint16_t>()});
      case 0xdf:
        return skip_items(2 * std::size_t{be<std::uint32_t>()});
      default:
        throw msgpack::parse_error("not a msgpack value");  // 0xc1
    }
  }

  // Stands in for msgpack-cxx's packer in an MSGPACK_DEFINE struct's
  // msgpack_pack(): each field it is handed is read in place (the fields
  // are the object's own, checked by address; anything else, or a map
  // form, falls back to the object tree).
  struct FieldReader {
    MsgpackReader& r;
    const std::byte* begin;  // the object being read
    const std::byte* end;
    std::size_t present = 0;  // elements in the message's array
    std::size_t fields = 0;   // fields handed over so far
    void pack_array(std::uint32_t) { present = r.array_header(); }
    void pack_map(std::uint32_t) { throw NeedsTree{}; }
    template <class X>
    FieldReader& pack(const X& x) {
      const auto* at = reinterpret_cast<const std::byte*>(&x);
      if (at < begin || at + sizeof(X) > end) throw NeedsTree{};
      // The object is the caller's non-const `v`: writing through it is sound.
      if (fields++ < present) r.read(const_cast<X&>(x));
      return *this;
    }
  };

 private:
  struct NeedsTree {};
  // One level of nesting, for the depth bound.
  struct Nest {
    MsgpackReader& r;
    explicit Nest(MsgpackReader& reader) : r(reader) {
      if (++r.depth_ > r.max_depth_)
        throw msgpack::depth_size_overflow("msgpack nesting deeper than the limit");
    }
    ~Nest() { --r.depth_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;
  };

  [[noreturn]] static void truncated() {
    throw msgpack::insufficient_bytes("truncated msgpack value");
  }
  [[nodiscard]] std::size_t left() const noexcept { return static_cast<std::size_t>(end_ - p_); }
  unsigned char peek() const {
    if (p_ == end_) truncated();
    return *p_;
  }
  unsigned char byte() {
    if (p_ == end_) truncated();
    return *p_++;
  }
  const unsigned char* take(std::size_t n) {
    if (n > left()) truncated();
    const unsigned char* at = p_;
    p_ += n;
    return at;
  }
  template <class U>
  U be() {
    const unsigned char* at = take(sizeof(U));
    return load_be<U>(reinterpret_cast<const char*>(at));
  }

  void skip_items(std::size_t n) {
    if (n > left()) truncated();  // each item takes a byte at least
    Nest nest(*this);
    for (std::size_t i = 0; i < n; ++i) skip();
  }

  // A container's element count, never more than the bytes left.
  std::size_t counted(std::size_t n, std::size_t bytes_each) {
    if (n > left() / bytes_each) truncated();
    return n;
  }
  std::size_t array_header() {
    const unsigned char b = byte();
    if (b >= 0x90 && b <= 0x9f) return counted(b & 0x0fu, 1);
    if (b == 0xdc) return counted(be<std::uint16_t>(), 1);
    if (b == 0xdd) return counted(be<std::uint32_t>(), 1);
    throw msgpack::type_error();
  }
  std::size_t map_header() {
    const unsigned char b = byte();
    if (b >= 0x80 && b <= 0x8f) return counted(b & 0x0fu, 2);
    if (b == 0xde) return counted(be<std::uint16_t>(), 2);
    if (b == 0xdf) return counted(be<std::uint32_t>(), 2);
    throw msgpack::type_error();
  }
  // str or bin (msgpack-cxx reads a std::string from either).
  std::size_t string_header() {
    const unsigned char b = byte();
    if (b >= 0xa0 && b <= 0xbf) return b & 0x1fu;
    switch (b) {
      case 0xd9:
      case 0xc4:
        return be<std::uint8_t>();
      case 0xda:
      case 0xc5:
        return be<std::uint16_t>();
      case 0xdb:
      case 0xc6:
        return be<std::uint32_t>();
      default:
        throw msgpack::type_error();
    }
  }
  std::size_t bin_header() {
    switch (byte()) {
      case 0xc4:
        return be<std::uint8_t>();
      case 0xc5:
        return be<std::uint16_t>();
      case 0xc6:
        return be<std::uint32_t>();
      default:
        throw msgpack::type_error();
    }
  }

  template <class T>
  void read_integer(T& v) {
    const unsigned char b = byte();
    bool negative = false;
    std::uint64_t u = 0;
    std::int64_t s = 0;
    if (b <= 0x7f) {
      u = b;
    } else if (b >= 0xe0) {
      negative = true;
      s = static_cast<std::int8_t>(b);
    } else {
      switch (b) {
        case 0xcc:
          u = be<std::uint8_t>();
          break;
        case 0xcd:
          u = be<std::uint16_t>();
          break;
        case 0xce:
          u = be<std::uint32_t>();
          break;
        case 0xcf:
          u = be<std::uint64_t>();
          break;
        case 0xd0:
          s = static_cast<std::int8_t>(be<std::uint8_t>());
          negative = true;
          break;
        case 0xd1:
          s = static_cast<std::int16_t>(be<std::uint16_t>());
          negative = true;
          break;
        case 0xd2:
          s = static_cast<std::int32_t>(be<std::uint32_t>());
          negative = true;
          break;
        case 0xd3:
          s = static_cast<std::int64_t>(be<std::uint64_t>());
          negative = true;
          break;
        default:
          throw msgpack::type_error();
      }
      if (negative && s >= 0) {  // a signed encoding of a non-negative value
        negative = false;
        u = static_cast<std::uint64_t>(s);
      }
    }
    if (negative) {
      if constexpr (std::is_unsigned_v<T>) {
        throw msgpack::type_error();
      } else {
        if (s < std::numeric_limits<T>::min()) throw msgpack::type_error();
        v = static_cast<T>(s);
      }
    } else {
      if (u > static_cast<std::make_unsigned_t<T>>(std::numeric_limits<T>::max()))
        throw msgpack::type_error();
      v = static_cast<T>(u);
    }
  }

  template <class T>
  void read_float(T& v) {
    const unsigned char b = peek();
    if (b == 0xca) {
      ++p_;
      v = static_cast<T>(std::bit_cast<float>(be<std::uint32_t>()));
    } else if (b == 0xcb) {
      ++p_;
      v = static_cast<T>(std::bit_cast<double>(be<std::uint64_t>()));
    } else {  // an integral value, as msgpack-cxx writes 1.0
      std::int64_t s = 0;
      std::uint64_t u = 0;
      if (b <= 0x7f || b == 0xcc || b == 0xcd || b == 0xce || b == 0xcf) {
        read_integer(u);
        v = static_cast<T>(u);
      } else {
        read_integer(s);
        v = static_cast<T>(s);
      }
    }
  }

  template <class T>
  void read_sequence(T& v) {
    const std::size_t n = array_header();
    Nest nest(*this);
    if constexpr (is_spec<T, std::vector>::value) {
      v.resize(n);
      if constexpr (std::is_arithmetic_v<typename T::value_type>)  // not bool: is_sequence
        read_numbers(v.data(), n);
      else
        for (auto& e : v) read(e);
    } else {
      v.clear();
      for (std::size_t i = 0; i < n; ++i) read(v.emplace_back());
    }
  }

  // n numbers into out, in a loop that keeps its position and the end in
  // registers: a positive fixint (how msgpack-cxx writes small whole
  // numbers; eight in a row at once into doubles) and a float64 / float32
  // into a double / float directly; any other encoding through read().
  // Each element's bytes are checked against the message's end.
  template <class E>
  void read_numbers(E* out, std::size_t n) {
    const unsigned char* p = p_;
    const unsigned char* const end = end_;  // in a register: read() below may not change it
    for (std::size_t i = 0; i < n; ++i) {
      if (p == end) truncated();
      const unsigned char b = *p;
      if (b <= 0x7f) [[likely]] {
#if defined(__SSE2__) && defined(__x86_64__)
        if constexpr (std::is_same_v<E, double>) {
          // Eight fixints in a row (one load, one test) become eight
          // doubles with four conversions.
          std::uint64_t eight;
          if (n - i >= 8 && end - p >= 8 &&
              (std::memcpy(&eight, p, 8), (eight & 0x8080808080808080u) == 0)) {
            const __m128i zero = _mm_setzero_si128();
            const __m128i w16 =
                _mm_unpacklo_epi8(_mm_cvtsi64_si128(static_cast<long long>(eight)), zero);
            const __m128i lo = _mm_unpacklo_epi16(w16, zero);
            const __m128i hi = _mm_unpackhi_epi16(w16, zero);
            _mm_storeu_pd(out + i, _mm_cvtepi32_pd(lo));
            _mm_storeu_pd(out + i + 2, _mm_cvtepi32_pd(_mm_shuffle_epi32(lo, 0x4e)));
            _mm_storeu_pd(out + i + 4, _mm_cvtepi32_pd(hi));
            _mm_storeu_pd(out + i + 6, _mm_cvtepi32_pd(_mm_shuffle_epi32(hi, 0x4e)));
            p += 8;
            i += 7;
            continue;
          }
        }
#endif
        out[i] = static_cast<E>(b);
        ++p;
        continue;
      }
      if constexpr (std::is_same_v<E, double>) {
        if (b == 0xcb && end - p >= 9) [[likely]] {
          out[i] =
              std::bit_cast<double>(load_be<std::uint64_t>(reinterpret_cast<const char*>(p + 1)));
          p += 9;
          continue;
        }
      } else if constexpr (std::is_same_v<E, float>) {
        if (b == 0xca && end - p >= 5) [[likely]] {
          out[i] =
              std::bit_cast<float>(load_be<std::uint32_t>(reinterpret_cast<const char*>(p + 1)));
          p += 5;
          continue;
        }
      }
      p_ = p;
      read(out[i]);
      p = p_;
    }
    p_ = p;
  }

  template <class... E>
  void read_tuple(std::tuple<E...>& v) {
    const std::size_t n = array_header();
    Nest nest(*this);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((I < n ? read(std::get<I>(v)) : void()), ...);
    }
    (std::index_sequence_for<E...>{});
    for (std::size_t i = sizeof...(E); i < n; ++i) skip();
  }

  template <class T>
  void read_fields(T& v) {
    const unsigned char* start = p_;
    try {
      FieldReader f{*this, reinterpret_cast<const std::byte*>(&v),
                    reinterpret_cast<const std::byte*>(&v) + sizeof(T)};
      Nest nest(*this);
      v.msgpack_pack(f);
      for (std::size_t i = f.fields; i < f.present; ++i) skip();
    } catch (const NeedsTree&) {
      p_ = start;
      read_tree(v);
    }
  }

  // msgpack-cxx's path for one value: its object tree, then convert.
  template <class T>
  void read_tree(T& v) {
    std::size_t used = 0;
    used_zone_ = true;
    const msgpack::object o =
        unpack_one(std::as_bytes(std::span(p_, left())), decode_zone(), max_depth_ - depth_, used);
    p_ += used;
    o.convert(v);
  }

  const unsigned char* p_;
  const unsigned char* end_;
  std::size_t depth_ = 0;
  std::size_t max_depth_;
  bool used_zone_ = false;
};

}  // namespace shmbus::detail
