// The codec's direct msgpack encoder (shmbus/codec.hpp), the mirror of the
// decoder in codec_reader.hpp: writes a value's MessagePack bytes itself,
// with one room check per value (a whole vector of numbers: one per 64
// elements), strings and bins with one memcpy, instead of msgpack-cxx's
// packer (a check and a copy per header and per number).
//
// The bytes are msgpack-cxx's, exactly (tests/unit/bus/codec_writer_test.cpp
// compares them with msgpack::pack's; the fuzz target does for every value
// it decodes): integers in their smallest encoding chosen by value
// (positive ones unsigned, whatever the C++ type), a float or double whose
// value is a whole number in [-2^63, 2^64) as that integer, any other as
// float32 / float64, str / array / map / bin headers in their smallest
// form. It covers numbers, bools, enums, std::string, vectors, lists,
// deques, arrays, sets, maps, optionals, pairs, tuples, durations, raw
// nested structs and MSGPACK_DEFINE structs (their own msgpack_pack()
// lists the fields, so the user's declaration stays msgpack-cxx's, as in
// the decoder's FieldReader); anything else (a variant, a time point, a
// char container as bin, vector<bool>, a type with its own adaptor) is
// packed by msgpack-cxx's packer into the same writer, for that value only.
//
// Users include shmbus/codec.hpp, not this.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <list>
#include <map>
#include <memory>
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

// The whole-number rule for floats above is msgpack-cxx's from 4.1.2 (its
// PR 1018) until 7.0.0 (reverted there): the bytes match only those.
static_assert(MSGPACK_VERSION_MAJOR > 4 ||
                  (MSGPACK_VERSION_MAJOR == 4 &&
                   (MSGPACK_VERSION_MINOR > 1 ||
                    (MSGPACK_VERSION_MINOR == 1 && MSGPACK_VERSION_REVISION >= 2))),
              "shmbus's codec writes msgpack-cxx 4.1.2-6.x's bytes: needs msgpack-cxx >= 4.1.2");
static_assert(
    MSGPACK_VERSION_MAJOR < 7,
    "msgpack-cxx 7 writes whole floats as floats: shmbus's codec writes 4.1.2-6.x's bytes");

#if defined(__SSE2__) && defined(__x86_64__)
#define SHMBUS_CODEC_SSE2 1
#include <emmintrin.h>
#endif

namespace shmbus::detail {

// Writes a message into a span (a frame begun in a ring) and, once it does
// not fit there, carries on in this thread's EncodeBuffer (the bytes
// written so far copied there first). The direct encoder reserves room for
// a value, writes it unchecked and commits; msgpack-cxx's packer calls
// write().
class SpillWriter {
 public:
  explicit SpillWriter(std::span<std::byte> room) noexcept
      : begin_(reinterpret_cast<char*>(room.data())), p_(begin_), end_(begin_ + room.size()) {}
  SpillWriter(const SpillWriter&) = delete;
  SpillWriter& operator=(const SpillWriter&) = delete;

  // At least n writable bytes at the returned address (the span's, or the
  // thread's buffer's once spilled); commit() says where writing stopped.
  // Throws std::bad_alloc.
  [[nodiscard]] char* reserve(std::size_t n) {
    if (n <= static_cast<std::size_t>(end_ - p_)) [[likely]]
      return p_;
    return spill(n);
  }
  void commit(char* end) noexcept { p_ = end; }
  void write(const char* s, std::size_t n) {
    if (n == 0) return;
    char* q = reserve(n);
    std::memcpy(q, s, n);
    p_ = q + n;
  }

  // Whether the message went to the thread's buffer.
  [[nodiscard]] bool spilled() const noexcept { return spilled_; }
  // The length written so far.
  [[nodiscard]] std::size_t size() const noexcept { return static_cast<std::size_t>(p_ - begin_); }
  // The message written so far: in the span, or (spilled) in the thread's
  // buffer, valid until the next encode in this thread.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return std::as_bytes(std::span<const char>(begin_, size()));
  }

 private:
  char* spill(std::size_t n);  // codec.cpp
  char* begin_;
  char* p_;
  char* end_;
  bool spilled_ = false;
};

template <class T>
void write_value(SpillWriter& w, const T& v);

namespace wire {

// A big-endian store (the wire's byte order) of 1, 2, 4 or 8 bytes.
template <class U>
inline char* put_be(char* q, U v) noexcept {
  store_be(q, v);
  return q + sizeof(U);
}
inline char* put_tagged(char* q, unsigned char tag) noexcept {
  *q = static_cast<char>(tag);
  return q + 1;
}
template <class U>
inline char* put_tagged(char* q, unsigned char tag, U v) noexcept {
  *q = static_cast<char>(tag);
  return put_be(q + 1, v);
}

// A non-negative integer: fixint, uint8, 16, 32 or 64 (at most 9 bytes).
inline char* put_uint(char* q, std::uint64_t u) noexcept {
  if (u < 0x80) [[likely]]
    return put_tagged(q, static_cast<unsigned char>(u));
  if (u < 0x100) {
    q = put_tagged(q, 0xcc);
    return put_tagged(q, static_cast<unsigned char>(u));
  }
  if (u < 0x10000) return put_tagged(q, 0xcd, static_cast<std::uint16_t>(u));
  if (u < 0x100000000) return put_tagged(q, 0xce, static_cast<std::uint32_t>(u));
  return put_tagged(q, 0xcf, u);
}
// Any integer: non-negative ones as put_uint, negative ones as negative
// fixint, int8, 16, 32 or 64 (msgpack-cxx's choice by value).
inline char* put_int(char* q, std::int64_t s) noexcept {
  if (s >= 0) [[likely]]
    return put_uint(q, static_cast<std::uint64_t>(s));
  if (s >= -32) return put_tagged(q, static_cast<unsigned char>(s));
  if (s >= -128) {
    q = put_tagged(q, 0xd0);
    return put_tagged(q, static_cast<unsigned char>(s));
  }
  if (s >= -32768) return put_tagged(q, 0xd1, static_cast<std::uint16_t>(s));
  if (s >= -2147483648LL) return put_tagged(q, 0xd2, static_cast<std::uint32_t>(s));
  return put_tagged(q, 0xd3, static_cast<std::uint64_t>(s));
}
// A float or double: a whole value in [-2^63, 2^64) as that integer (what
// msgpack-cxx's pack_float/pack_double test: -0.0 is 0), any other (NaN,
// infinities, fractions, beyond) as float32 / float64. msgpack-cxx's own
// test converts 2^64 to uint64_t (undefined; an x86-64 build without AVX-512
// reads it as not whole, so float64, which is what this writes; with
// AVX-512's vcvttsd2usi msgpack-cxx writes an integer instead).
template <class F>
inline char* put_float_rest(char* q, F f) noexcept {
  const double d = f;
  if (d >= 0x1p63 && d < 0x1p64)  // whole: above 2^53 every double is
    return put_uint(q, static_cast<std::uint64_t>(d));
  if constexpr (sizeof(F) == 4)
    return put_tagged(q, 0xca, std::bit_cast<std::uint32_t>(f));
  else
    return put_tagged(q, 0xcb, std::bit_cast<std::uint64_t>(d));
}
template <class F>
inline char* put_float(char* q, F f) noexcept {
  const double d = f;  // exact: every float is a double
#if defined(SHMBUS_CODEC_SSE2)
  // cvttsd2si: the truncated value, or INT64_MIN for NaN and anything
  // outside [-2^63, 2^63) (defined, unlike the C++ conversion), which
  // reads back equal only for -2^63 itself, a whole value.
  const std::int64_t i = _mm_cvttsd_si64(_mm_set_sd(d));
  if (static_cast<double>(i) == d) [[likely]] {
    if (static_cast<std::uint64_t>(i) < 0x80) [[likely]]
      return put_tagged(q, static_cast<unsigned char>(i));
    return put_int(q, i);
  }
#else
  if (d >= -0x1p63 && d < 0x1p63) {
    const auto i = static_cast<std::int64_t>(d);
    if (static_cast<double>(i) == d) return put_int(q, i);
  }
#endif
  return put_float_rest(q, f);
}

// n doubles (the caller reserved 9 each), as put_float writes them. With
// SSE2, two at a time: both whole in [0, 128) (positive fixints) or both
// fractions within +-2^31 (float64) are written without the per-value
// test; any other pair one value at a time.
inline char* put_doubles(char* q, const double* d, std::size_t n) noexcept {
  std::size_t i = 0;
#if defined(SHMBUS_CODEC_SSE2)
  for (; i + 2 <= n; i += 2) {
    const __m128d x = _mm_loadu_pd(d + i);
    // Truncated to int32, or INT32_MIN for NaN and beyond +-2^31.
    const __m128i t = _mm_cvttpd_epi32(x);
    const int whole = _mm_movemask_pd(_mm_cmpeq_pd(x, _mm_cvtepi32_pd(t)));
    const auto lanes = static_cast<std::uint64_t>(_mm_cvtsi128_si64(t));
    if (whole == 3 && (lanes & 0xffffff80ffffff80u) == 0) {  // two fixints
      q[0] = static_cast<char>(lanes);
      q[1] = static_cast<char>(lanes >> 32);
      q += 2;
      continue;
    }
    if (whole == 0 && static_cast<std::uint32_t>(lanes) != 0x80000000u &&
        (lanes >> 32) != 0x80000000u) {  // two fractions, in int32 range
      q = put_tagged(q, 0xcb, std::bit_cast<std::uint64_t>(d[i]));
      q = put_tagged(q, 0xcb, std::bit_cast<std::uint64_t>(d[i + 1]));
      continue;
    }
    q = put_float(q, d[i]);
    q = put_float(q, d[i + 1]);
  }
#endif
  for (; i < n; ++i) q = put_float(q, d[i]);
  return q;
}

// Headers, smallest form. Lengths are at most 2^32-1 (checked by count()).
inline char* put_str_header(char* q, std::uint32_t n) noexcept {
  if (n < 32) return put_tagged(q, static_cast<unsigned char>(0xa0 | n));
  if (n < 0x100) {
    q = put_tagged(q, 0xd9);
    return put_tagged(q, static_cast<unsigned char>(n));
  }
  if (n < 0x10000) return put_tagged(q, 0xda, static_cast<std::uint16_t>(n));
  return put_tagged(q, 0xdb, n);
}
inline char* put_bin_header(char* q, std::uint32_t n) noexcept {
  if (n < 0x100) {
    q = put_tagged(q, 0xc4);
    return put_tagged(q, static_cast<unsigned char>(n));
  }
  if (n < 0x10000) return put_tagged(q, 0xc5, static_cast<std::uint16_t>(n));
  return put_tagged(q, 0xc6, n);
}
// array (fix 0x90, 16 0xdc, 32 0xdd) or map (0x80, 0xde, 0xdf).
inline char* put_container_header(char* q, std::uint32_t n, bool map) noexcept {
  if (n < 16) return put_tagged(q, static_cast<unsigned char>((map ? 0x80 : 0x90) | n));
  if (n < 0x10000) return put_tagged(q, map ? 0xde : 0xdc, static_cast<std::uint16_t>(n));
  return put_tagged(q, map ? 0xdf : 0xdd, n);
}
inline constexpr std::size_t kMaxHeader = 5;

// A container's length as msgpack-cxx checks it (its
// checked_get_container_size): above 2^32-1 throws.
inline std::uint32_t count(std::size_t n) {
  if (n > 0xffffffffu) throw msgpack::container_size_overflow("container size overflow");
  return static_cast<std::uint32_t>(n);
}

// Integer types with a msgpack-cxx adaptor (char8_t and the like have none).
template <class T>
inline constexpr bool is_packed_integer = std::is_integral_v<T> &&
                                          sizeof(T) <= 8 /* no __int128 */ &&
                                          !std::is_same_v<T, bool> && !std::is_same_v<T, char8_t> &&
                                          !std::is_same_v<T, char16_t> &&
                                          !std::is_same_v<T, char32_t>;

template <class T>
struct is_duration_of_number : std::false_type {};
template <class R, class P>
struct is_duration_of_number<std::chrono::duration<R, P>>
    : std::bool_constant<std::is_same_v<R, bool> || is_packed_integer<R> ||
                         std::is_same_v<R, float> || std::is_same_v<R, double>> {};

// The most bytes a number-like value takes (0: not a number this writer
// writes unchecked). Enums without a user adaptor are their underlying
// integer (MSGPACK_ADD_ENUM and codec_msgpack.hpp's adaptor alike).
template <class T>
constexpr std::size_t max_number_bytes() noexcept {
  if constexpr (std::is_same_v<T, bool>) {
    return 1;
  } else if constexpr (is_packed_integer<T> || std::is_same_v<T, double>) {
    return 9;
  } else if constexpr (std::is_same_v<T, float>) {
    return 9;  // a whole float may be a uint64
  } else if constexpr (std::is_enum_v<T>) {
    if constexpr (is_msgpack_adapted<T>::value)
      return 0;
    else
      return max_number_bytes<std::underlying_type_t<T>>();
  } else if constexpr (is_duration_of_number<T>::value) {
    return max_number_bytes<typename T::rep>();
  } else {
    return 0;
  }
}
template <class T>
inline constexpr std::size_t kMaxNumber = max_number_bytes<T>();

// Writes a number-like value unchecked (the caller reserved kMaxNumber).
template <class T>
inline char* put_number(char* q, const T& v) noexcept {
  if constexpr (std::is_same_v<T, bool>) {
    return put_tagged(q, v ? 0xc3 : 0xc2);
  } else if constexpr (std::is_floating_point_v<T>) {
    return put_float(q, v);
  } else if constexpr (std::is_enum_v<T>) {
    return put_number(q, static_cast<std::underlying_type_t<T>>(v));
  } else if constexpr (is_duration_of_number<T>::value) {
    return put_number(q, v.count());
  } else if constexpr (std::is_signed_v<T>) {
    return put_int(q, static_cast<std::int64_t>(v));
  } else {
    return put_uint(q, static_cast<std::uint64_t>(v));
  }
}

// A msgpack array of the elements.
template <class T>
inline constexpr bool is_array_like =
    is_sequence<T>::value || is_direct_array<T>::value || is_set<T>::value;

// Numbers written per room check in a container of numbers (bounds the
// room asked for beyond the bytes written: at most 9 per element).
inline constexpr std::size_t kNumbersPerCheck = 64;

// n numbers from `it` (the caller reserved kMaxNumber each).
template <class It>
char* put_numbers(char* q, It& it, std::size_t n) noexcept {
  using E = std::iter_value_t<It>;
  if constexpr (std::is_same_v<E, double> && std::contiguous_iterator<It>) {
    q = put_doubles(q, std::to_address(it), n);
    it += static_cast<std::iter_difference_t<It>>(n);
  } else {
    for (std::size_t i = 0; i < n; ++i, ++it) q = put_number(q, *it);
  }
  return q;
}

template <class C>
void write_array(SpillWriter& w, const C& c) {
  using E = typename C::value_type;
  const std::uint32_t n = count(c.size());
  if constexpr (kMaxNumber<E> != 0) {
    auto it = c.begin();
    if (n <= kNumbersPerCheck) [[likely]] {  // one room check
      char* q = put_container_header(w.reserve(kMaxHeader + n * kMaxNumber<E>), n, false);
      w.commit(put_numbers(q, it, n));
      return;
    }
    w.commit(put_container_header(w.reserve(kMaxHeader), n, false));
    for (std::size_t left = n; left != 0;) {
      const std::size_t batch = left < kNumbersPerCheck ? left : kNumbersPerCheck;
      w.commit(put_numbers(w.reserve(batch * kMaxNumber<E>), it, batch));
      left -= batch;
    }
  } else {
    w.commit(put_container_header(w.reserve(kMaxHeader), n, false));
    for (const auto& e : c) write_value(w, e);
  }
}

// Stands in for msgpack-cxx's packer in an MSGPACK_DEFINE struct's
// msgpack_pack(): each field it is handed goes to write_value(). It is a
// packer over the same writer, so a hand-written msgpack_pack() that calls
// the packer's other members (pack_str, pack_nil, ...) writes through it
// too.
class FieldWriter : public msgpack::packer<SpillWriter> {
 public:
  explicit FieldWriter(SpillWriter& w) noexcept : msgpack::packer<SpillWriter>(w), w_(w) {}
  template <class X>
  FieldWriter& pack(const X& x) {
    write_value(w_, x);
    return *this;
  }
  FieldWriter& pack_array(std::uint32_t n) {
    w_.commit(put_container_header(w_.reserve(kMaxHeader), n, false));
    return *this;
  }
  FieldWriter& pack_map(std::uint32_t n) {
    w_.commit(put_container_header(w_.reserve(kMaxHeader), n, true));
    return *this;
  }

 private:
  SpillWriter& w_;
};

}  // namespace wire

// Writes v as one msgpack value (msgpack-cxx's bytes). Throws
// std::bad_alloc, msgpack::container_size_overflow for a container or
// string above 2^32-1 elements or bytes, and what msgpack-cxx's adaptors
// throw for the values left to them.
template <class T>
void write_value(SpillWriter& w, const T& v) {
  using namespace wire;
  if constexpr (is_msgpack_adapted<T>::value) {
    msgpack::packer<SpillWriter>(w).pack(v);  // the user's own adaptor
  } else if constexpr (kMaxNumber<T> != 0) {
    w.commit(put_number(w.reserve(kMaxNumber<T>), v));
  } else if constexpr (std::is_same_v<T, std::string>) {
    const std::uint32_t n = count(v.size());
    char* q = put_str_header(w.reserve(kMaxHeader + n), n);
    if (n != 0) std::memcpy(q, v.data(), n);
    w.commit(q + n);
  } else if constexpr (is_array_like<T>) {
    write_array(w, v);
  } else if constexpr (is_map<T>::value) {
    w.commit(put_container_header(w.reserve(kMaxHeader), count(v.size()), true));
    for (const auto& [k, m] : v) {
      write_value(w, k);
      write_value(w, m);
    }
  } else if constexpr (is_spec<T, std::optional>::value) {
    if (v)
      write_value(w, *v);
    else
      w.commit(put_tagged(w.reserve(1), 0xc0));
  } else if constexpr (is_spec<T, std::pair>::value) {
    w.commit(put_tagged(w.reserve(1), 0x92));
    write_value(w, v.first);
    write_value(w, v.second);
  } else if constexpr (is_spec<T, std::tuple>::value) {
    w.commit(put_container_header(w.reserve(kMaxHeader), std::tuple_size_v<T>, false));
    std::apply([&w](const auto&... e) { (write_value(w, e), ...); }, v);
  } else if constexpr (kRawNested<T>) {
    char* q = put_bin_header(w.reserve(kMaxHeader + sizeof(T)), sizeof(T));
    std::memcpy(q, &v, sizeof(T));
    w.commit(q + sizeof(T));
  } else if constexpr (HasMsgpackMembers<T>) {
    FieldWriter f(w);
    v.msgpack_pack(f);
  } else {
    msgpack::packer<SpillWriter>(w).pack(v);  // msgpack-cxx's adaptor for T
  }
}

}  // namespace shmbus::detail
