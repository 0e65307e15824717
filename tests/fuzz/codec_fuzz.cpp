// libFuzzer target: arbitrary bytes as a message decoded by the codec
// (shmbus/codec.hpp), as a receiver of an untrusted pipe or queue would.
// Decoding must fail cleanly (false) or produce a value that encodes and
// decodes back to itself; never read out of bounds (ASan: the message sits
// in an exactly-sized buffer), crash, or allocate beyond the input's size
// times a small factor (libFuzzer's -rss_limit_mb and -malloc_limit_mb).
// The direct decoder (detail/codec_reader.hpp) is also checked against
// msgpack-cxx's object tree: whatever the tree decodes, the direct decoder
// decodes to the same value (compared as encodings); and what decodes is
// encoded by the direct encoder into msgpack-cxx's packer's bytes exactly.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "shmbus/codec.hpp"

namespace {

struct Order {
  std::string symbol;
  std::vector<double> prices;
  int qty = 0;
  std::optional<std::map<std::string, std::int64_t>> tags;
  MSGPACK_DEFINE(symbol, prices, qty, tags)
};

struct Pod {
  std::uint32_t a;
  std::uint16_t b;
};

// Fields the direct decoder reads itself, and some it leaves to the tree.
struct Nested {
  std::array<int, 3> a{};
  std::variant<int, std::string> v;
  std::vector<char> bytes;
  Order inner;
  std::chrono::milliseconds ms{};
  MSGPACK_DEFINE(a, v, bytes, inner, ms)
};

struct Mapped {
  std::string name;
  std::vector<std::int16_t> values;
  MSGPACK_DEFINE_MAP(name, values)
};

// msgpack-cxx's object tree, then convert: the decoder before the direct one.
template <class T>
bool tree_decode(std::span<const std::byte> msg, T& out) {
  msgpack::zone zone;
  msgpack::object o;
  if (!shmbus::detail::unpack_bounded(msg, zone, o)) return false;
  try {
    o.convert(out);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// Two encodings of what should be one value are the same when their bytes
// are, or when msgpack-cxx's object tree makes them the same: the tree
// holds a float32 as a double, so it quiets a signalling NaN that the
// direct decoder keeps bit for bit (both are that NaN).
bool same_value(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  if (a == b) return true;
  const auto through_tree = [](const std::vector<std::byte>& e) {
    const msgpack::object_handle h =
        msgpack::unpack(reinterpret_cast<const char*>(e.data()), e.size());
    msgpack::sbuffer packed;
    msgpack::pack(packed, h.get());
    return std::string(packed.data(), packed.size());
  };
  return through_tree(a) == through_tree(b);
}

// CompareTree false: T holds a std::array of char / unsigned char, whose
// msgpack-cxx convert reads N bytes from a shorter str (past the message:
// the direct decoder reads those itself; the tree cannot be the reference).
template <class T, bool CompareTree = true>
void check(std::span<const std::byte> msg) {
  T v{};
  const bool direct = shmbus::detail::decode_message(msg, v);
  if constexpr (CompareTree && shmbus::wire_format_v<T> == shmbus::WireFormat::msgpack) {
    T t{};
    if (tree_decode(msg, t) && (!direct || !same_value(shmbus::encode(v), shmbus::encode(t))))
      std::abort();
  }
  if (!direct) return;
  if constexpr (shmbus::wire_format_v<T> == shmbus::WireFormat::msgpack) {
    // The direct encoder (detail/codec_writer.hpp) writes msgpack-cxx's
    // packer's bytes exactly.
    msgpack::sbuffer packed;
    msgpack::pack(packed, v);
    const std::span<const std::byte> mine = shmbus::detail::encode_msgpack(v);
    if (mine.size() != packed.size() || std::memcmp(mine.data(), packed.data(), mine.size()) != 0)
      std::abort();
  }
  // What decoded must survive a round trip of its own encoding (compared
  // as encodings: a NaN is not equal to itself, its bytes are).
  const std::vector<std::byte> again = shmbus::encode(v);
  T w{};
  if (!shmbus::detail::decode_message(std::span<const std::byte>(again), w)) std::abort();
  if (shmbus::encode(w) != again) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned which = data[0] % 13;
  // An exact-size copy so ASan sees any read past the message's end.
  std::unique_ptr<std::byte[]> copy(new std::byte[size - 1]);
  std::memcpy(copy.get(), data + 1, size - 1);
  const std::span<const std::byte> msg(copy.get(), size - 1);
  switch (which) {
    case 0:
      check<std::vector<std::int64_t>>(msg);
      break;
    case 1:
      check<std::map<std::string, std::vector<std::string>>>(msg);
      break;
    case 2:
      check<Order>(msg);
      break;
    case 3:
      check<std::vector<Order>>(msg);
      break;
    case 4:
      check<std::variant<int, std::string, std::vector<bool>>>(msg);
      break;
    case 5:
      check<std::tuple<std::string, std::vector<Pod>, std::optional<int>>>(msg);
      break;
    case 6:
      check<std::vector<std::chrono::system_clock::time_point>>(msg);
      break;
    case 7:
      check<std::vector<std::vector<std::vector<std::string>>>>(msg);
      break;
    case 8:
      check<std::tuple<std::int8_t, std::uint16_t, float, bool, std::chrono::milliseconds>>(msg);
      break;
    case 9:
      check<std::tuple<std::map<std::int32_t, std::deque<std::string>>, std::set<std::string>,
                       std::list<double>, std::array<std::uint16_t, 4>>>(msg);
      break;
    case 10:
      check<std::vector<Nested>>(msg);
      break;
    case 12:
      check<std::tuple<std::array<char, 4>, std::array<unsigned char, 3>, std::array<std::byte, 2>,
                       std::array<std::uint8_t, 4>>,
            false>(msg);
      break;
    default:
      check<std::pair<Mapped, std::optional<std::vector<std::uint64_t>>>>(msg);
      break;
  }
  return 0;
}
