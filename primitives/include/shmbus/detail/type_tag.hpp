// Payload type fingerprints: size, alignment and a hash of the type's name,
// so that Queue<Tick> opened as Queue<Quote> fails at open, not at read.
#pragma once

#include <cstdint>
#include <string_view>

namespace shmbus::detail {

struct TypeTag {
  std::uint64_t fingerprint = 0;
  std::string_view name;  // for messages and bus-inspector; may be truncated
};

constexpr std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

template <class T>
constexpr std::string_view type_name() noexcept {
  // GCC and Clang spell the template argument in __PRETTY_FUNCTION__ as
  // "... [with T = Tick]" / "... [T = Tick]".
  std::string_view f = __PRETTY_FUNCTION__;
  auto start = f.find("T = ");
  if (start == std::string_view::npos) return f;
  start += 4;
  auto end = f.find_first_of(";]", start);
  return f.substr(start, end - start);
}

template <class T>
constexpr TypeTag type_tag() noexcept {
  constexpr std::string_view name = type_name<T>();
  std::uint64_t h = fnv1a(name);
  h ^= (std::uint64_t{sizeof(T)} << 32) ^ std::uint64_t{alignof(T)};
  return TypeTag{h == 0 ? 1 : h, name};
}

// For byte-oriented objects (SharedMemory, bytes queues, pipes).
inline constexpr TypeTag kBytesTag{fnv1a("bytes"), "bytes"};

}  // namespace shmbus::detail
