// shmbus codec — how a typed channel turns a value into a message and back.
//
// Every typed channel (Connection::send/recv<T>, Queue<T>, SimpleQueue<T>,
// JoinableQueue<T>) picks one of three wire formats per type, at compile
// time (never a run-time branch):
//
//   WireFormat::raw      trivially copyable T: the object's bytes, memcpy'd
//                        (the path shmbus always had, bit for bit).
//   WireFormat::bytes    std::string and std::vector<std::byte> at the top
//                        level: their bytes, no header (what send_bytes()
//                        sends; Python reads them with recv_bytes()).
//   WireFormat::msgpack  everything else the codec knows: one MessagePack
//                        value (msgpack-cxx), readable from Python with
//                        python3-msgpack (`msgpack.unpackb(conn.recv_bytes())`).
//
// What msgpack carries (any nesting):
//   bool, integers, floating point       nil/bool/int/float, smallest encoding
//   std::string                          str (bytes as given; Python decodes UTF-8)
//   vector, array, list, deque, set,     array
//     unordered_set, pair, tuple
//   vector<char>, array<char, N>,        bin
//     vector<std::byte>
//   map, unordered_map                   map
//   optional                             nil or the value
//   variant<Ts...>                       array [index, value]
//   chrono::duration<Rep, P>             its count() (an int or float, in P units)
//   chrono::time_point                   timestamp ext (-1), msgpack-cxx's
//   enums (without MSGPACK_ADD_ENUM)     their underlying integer
//   a user struct with MSGPACK_DEFINE    array of its fields in order
//     (MSGPACK_DEFINE_MAP)               (map of field name -> value)
//   a trivially copyable struct nested   bin of its object bytes (host layout)
//     in a container, without MSGPACK_DEFINE
//
// A type that is none of these fails to compile with one static_assert
// saying what to add. A type with a hand-written msgpack-cxx adaptor
// (msgpack::adaptor::pack/convert/object_with_zone) opts in by
// specialising shmbus::is_msgpack_adapted<T> as std::true_type.
//
// Decoding reads the message straight into T (detail/codec_reader.hpp: no
// msgpack object tree for numbers, strings, std containers, optionals,
// tuples and MSGPACK_DEFINE structs; msgpack-cxx's unpack and convert for
// any other value). It treats the message as untrusted: every array, map,
// str, bin and ext length is bounded by the bytes left in the message, the
// nesting depth by kMaxDecodeDepth, and the whole message must be one
// value. A message that does not decode as T is a decode error (the
// channel reports it and stays usable), never a crash or an out-of-bounds
// read. Allocation is bounded by the message: at most about
// max(24, sizeof(element)) bytes per message byte (a declared container of
// n elements needs n bytes of message; msgpack-cxx sizes a vector before
// converting its elements).
#pragma once

#include <array>
#include <chrono>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "shmbus/detail/codec_msgpack.hpp"
#include "shmbus/detail/codec_reader.hpp"
#include "shmbus/detail/codec_writer.hpp"
#include "shmbus/detail/type_tag.hpp"
#include "shmbus/error.hpp"

namespace shmbus {

enum class WireFormat : std::uint8_t { raw, bytes, msgpack };

// Deepest nesting a decoder accepts (arrays and maps inside each other).
inline constexpr std::size_t kMaxDecodeDepth = 64;

namespace detail {

// Whether msgpack (with the adaptors in codec_msgpack.hpp) encodes T.
template <class T>
struct encodable
    : std::bool_constant<std::is_arithmetic_v<T> || std::is_enum_v<T> || kRawNested<T> ||
                         HasMsgpackMembers<T> || is_msgpack_adapted<T>::value> {};
template <class T>
inline constexpr bool encodable_v = encodable<std::remove_cv_t<T>>::value;

template <class C, class Tr, class A>
struct encodable<std::basic_string<C, Tr, A>> : std::bool_constant<std::is_same_v<C, char>> {};
template <class E, class A>
struct encodable<std::vector<E, A>> : std::bool_constant<encodable_v<E>> {};
template <class E, class A>
struct encodable<std::list<E, A>> : std::bool_constant<encodable_v<E>> {};
template <class E, class A>
struct encodable<std::deque<E, A>> : std::bool_constant<encodable_v<E>> {};
template <class E, std::size_t N>
struct encodable<std::array<E, N>> : std::bool_constant<encodable_v<E>> {};
template <class K, class C, class A>
struct encodable<std::set<K, C, A>> : std::bool_constant<encodable_v<K>> {};
template <class K, class H, class E, class A>
struct encodable<std::unordered_set<K, H, E, A>> : std::bool_constant<encodable_v<K>> {};
template <class K, class V, class C, class A>
struct encodable<std::map<K, V, C, A>> : std::bool_constant<encodable_v<K> && encodable_v<V>> {};
template <class K, class V, class H, class E, class A>
struct encodable<std::unordered_map<K, V, H, E, A>>
    : std::bool_constant<encodable_v<K> && encodable_v<V>> {};
template <class E>
struct encodable<std::optional<E>> : std::bool_constant<encodable_v<E>> {};
template <class A, class B>
struct encodable<std::pair<A, B>> : std::bool_constant<encodable_v<A> && encodable_v<B>> {};
template <class... Ts>
struct encodable<std::tuple<Ts...>> : std::bool_constant<(encodable_v<Ts> && ...)> {};
template <class... Ts>
struct encodable<std::variant<Ts...>>
    : std::bool_constant<sizeof...(Ts) != 0 && (encodable_v<Ts> && ...)> {};
template <class R, class P>
struct encodable<std::chrono::duration<R, P>> : std::bool_constant<std::is_arithmetic_v<R>> {};
template <class C, class D>
struct encodable<std::chrono::time_point<C, D>> : std::true_type {};

}  // namespace detail

// The wire format of T at the top level of a message (see above).
template <class T>
inline constexpr WireFormat wire_format_v =
    std::is_trivially_copyable_v<T> ? WireFormat::raw
    : std::is_same_v<T, std::string> || std::is_same_v<T, std::vector<std::byte>>
        ? WireFormat::bytes
        : WireFormat::msgpack;

// T can travel through a typed channel.
template <class T>
concept Codable = std::is_trivially_copyable_v<T> ||
    (std::is_default_constructible_v<T>&& detail::encodable_v<T>);

namespace detail {

// The one compile-time error a type that cannot travel gets.
template <class T>
constexpr void require_codable() noexcept {
  static_assert(Codable<T>,
                "shmbus: this type cannot be sent. Make it trivially copyable, give it "
                "MSGPACK_DEFINE(field, ...) (msgpack-cxx; and a default constructor), use "
                "std containers of such types, or write a msgpack-cxx adaptor and specialise "
                "shmbus::is_msgpack_adapted<T> as std::true_type.");
}

// The message bytes of a bytes-format value.
template <class T>
std::span<const std::byte> bytes_of(const T& v) noexcept {
  return std::as_bytes(std::span(v.data(), v.size()));
}

// The reason the last decode in this thread failed ("" if none did).
const std::string& last_decode_error() noexcept;
void set_decode_error(const char* why) noexcept;

// msgpack's unpack with limits from the message's own size (codec.cpp).
// Returns false (and sets last_decode_error) on any malformed input.
bool unpack_bounded(std::span<const std::byte> msg, msgpack::zone& zone,
                    msgpack::object& out) noexcept;
// A zone this thread reuses for decoding (cleared after each message).
msgpack::zone& decode_zone() noexcept;

// This thread's encode buffer: emptied at each encode, its memory reused
// (msgpack's packer calls write()).
struct EncodeBuffer {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
  std::size_t capacity = 0;
  void write(const char* p, std::size_t n) {
    if (n > capacity - size) grow(n);
    std::memcpy(data.get() + size, p, n);
    size += n;
  }
  void grow(std::size_t more);  // to at least size + more (doubling)
};
EncodeBuffer& encode_buffer() noexcept;

// Encodes v as one msgpack value into this thread's buffer; the span is
// valid until the next encode in this thread. Throws std::bad_alloc, or
// msgpack::container_size_overflow for a container above 2^32-1 elements.
template <class T>
std::span<const std::byte> encode_msgpack(const T& v) {
  SpillWriter w({});  // no room: the first byte goes to the thread's buffer
  write_value(w, v);
  return w.bytes();
}

// Writes v's message (its wire format) into `w`. Throws what
// encode_msgpack() throws.
template <class T>
void encode_into(SpillWriter& w, const T& v) {
  if constexpr (!Codable<T>) {
    require_codable<T>();  // the one error; nothing below is instantiated
  } else if constexpr (wire_format_v<T> == WireFormat::raw) {
    w.write(reinterpret_cast<const char*>(&v), sizeof(T));
  } else if constexpr (wire_format_v<T> == WireFormat::bytes) {
    w.write(reinterpret_cast<const char*>(v.data()), v.size());
  } else {
    write_value(w, v);  // detail/codec_writer.hpp: msgpack-cxx's bytes
  }
}

// The message for v in its wire format (raw and bytes: v's own bytes).
template <class T>
std::span<const std::byte> encode_message(const T& v) {
  if constexpr (!Codable<T>) {
    require_codable<T>();  // the one error; nothing below is instantiated
    return {};
  } else if constexpr (wire_format_v<T> == WireFormat::raw)
    return std::as_bytes(std::span<const T, 1>(&v, 1));
  else if constexpr (wire_format_v<T> == WireFormat::bytes)
    return bytes_of(v);
  else
    return encode_msgpack(v);
}

// Decodes a whole message into `out`; false (last_decode_error() says
// why) when it is not a T. Never throws; `out` is unspecified on false.
template <class T>
bool decode_message(std::span<const std::byte> msg, T& out) noexcept {
  if constexpr (!Codable<T>) {
    require_codable<T>();  // the one error; nothing below is instantiated
    return false;
  } else if constexpr (wire_format_v<T> == WireFormat::raw) {
    if (msg.size() != sizeof(T)) {
      set_decode_error("message size differs from the type's size");
      return false;
    }
    std::memcpy(&out, msg.data(), sizeof(T));
    return true;
  } else {
    try {
      if constexpr (wire_format_v<T> == WireFormat::bytes) {
        using E = typename T::value_type;
        out.assign(reinterpret_cast<const E*>(msg.data()),
                   reinterpret_cast<const E*>(msg.data()) + msg.size());
        return true;
      } else {
        // Straight into `out` (codec_reader.hpp); a value the reader
        // leaves to msgpack-cxx builds its tree in decode_zone().
        MsgpackReader reader(msg, kMaxDecodeDepth);
        struct Clear {
          const MsgpackReader& r;
          ~Clear() {
            if (r.used_zone()) decode_zone().clear();
          }
        } clear{reader};
        reader.read(out);
        if (!reader.at_end()) {
          set_decode_error("bytes after the msgpack value");
          return false;
        }
        return true;
      }
    } catch (const msgpack::type_error&) {
      set_decode_error("the message holds a value of another shape (msgpack type_error)");
    } catch (const msgpack::insufficient_bytes&) {
      set_decode_error("truncated msgpack value");
    } catch (const msgpack::depth_size_overflow&) {
      set_decode_error("msgpack nesting deeper than the limit");
    } catch (const msgpack::size_overflow&) {
      set_decode_error("a msgpack length runs past the message's end");
    } catch (const msgpack::parse_error&) {
      set_decode_error("not a msgpack value");
    } catch (const std::bad_alloc&) {
      set_decode_error("out of memory while decoding");
    } catch (const std::exception& e) {
      set_decode_error(e.what());
    }
    return false;
  }
}

}  // namespace detail

// A value's message, as a channel would send it (a copy: for tests, files,
// other transports).
template <class T>
[[nodiscard]] std::vector<std::byte> encode(const T& v) {
  auto s = detail::encode_message(v);
  return {s.begin(), s.end()};
}

// Decodes a message made by encode() or by any channel's sender; throws
// Error(decode_error, `object`, "expected <T>: <why>") when it is not a T.
template <class T>
[[nodiscard]] T decode(std::span<const std::byte> message, std::string_view object = "codec") {
  T out{};
  if (!detail::decode_message(message, out))
    throw Error(
        Errc::decode_error, std::string(object),
        "expected " + std::string(detail::type_name<T>()) + ": " + detail::last_decode_error());
  return out;
}

}  // namespace shmbus
