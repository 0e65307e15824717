// The codec (shmbus/codec.hpp): wire format chosen per type at compile
// time, round trips of every built-in type, user structs, and untrusted
// input that must fail as a decode error.
#include "shmbus/codec.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include "shmbus/pipe.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

struct Tick {
  int id;
  double px;
};

struct Order {
  std::string symbol;
  std::vector<double> prices;
  int qty = 0;
  MSGPACK_DEFINE(symbol, prices, qty)
  bool operator==(const Order&) const = default;
};

struct Named {
  std::string name;
  int age = 0;
  MSGPACK_DEFINE_MAP(name, age)
  bool operator==(const Named&) const = default;
};

enum class Side : std::uint8_t { buy = 1, sell = 2 };

struct NotCodable {
  NotCodable() = default;
  NotCodable(const NotCodable&) {}  // not trivially copyable, no MSGPACK_DEFINE
};

static_assert(shmbus::wire_format_v<Tick> == shmbus::WireFormat::raw);
static_assert(shmbus::wire_format_v<std::chrono::nanoseconds> == shmbus::WireFormat::raw);
static_assert(shmbus::wire_format_v<std::string> == shmbus::WireFormat::bytes);
static_assert(shmbus::wire_format_v<std::vector<std::byte>> == shmbus::WireFormat::bytes);
static_assert(shmbus::wire_format_v<std::vector<int>> == shmbus::WireFormat::msgpack);
static_assert(shmbus::wire_format_v<Order> == shmbus::WireFormat::msgpack);
static_assert(shmbus::Codable<std::map<std::string, std::vector<Tick>>>);
static_assert(shmbus::Codable<std::variant<int, std::string>>);
static_assert(shmbus::Codable<std::tuple<int, std::string, std::optional<double>>>);
static_assert(!shmbus::Codable<NotCodable>);
static_assert(!shmbus::Codable<std::vector<NotCodable>>);

template <class T>
T round_trip(const T& v) {
  return shmbus::decode<T>(shmbus::encode(v));
}

TEST(Codec, TriviallyCopyableIsItsBytes) {
  const Tick t{7, 1.5};
  const auto m = shmbus::encode(t);
  ASSERT_EQ(m.size(), sizeof(Tick));
  EXPECT_EQ(std::memcmp(m.data(), &t, sizeof t), 0);
  const Tick back = shmbus::decode<Tick>(m);
  EXPECT_EQ(back.id, 7);
  EXPECT_EQ(back.px, 1.5);
}

TEST(Codec, StringIsItsBytes) {
  const auto m = shmbus::encode(std::string("Item 3"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), m.size()), "Item 3");
  EXPECT_EQ(round_trip(std::string()), "");
}

TEST(Codec, StdTypesRoundTrip) {
  EXPECT_EQ(round_trip(std::vector<int>{1, -2, 3}), (std::vector<int>{1, -2, 3}));
  EXPECT_EQ(round_trip(std::vector<std::string>{"a", "", "ccc"}),
            (std::vector<std::string>{"a", "", "ccc"}));
  std::map<std::string, int> m{{"x", 1}, {"y", 2}};
  EXPECT_EQ(round_trip(m), m);
  std::unordered_map<int, std::string> u{{1, "one"}, {2, "two"}};
  EXPECT_EQ(round_trip(u), u);
  std::set<long> s{3, 1, 2};
  EXPECT_EQ(round_trip(s), s);
  std::optional<std::string> o = "opt", none;
  EXPECT_EQ(round_trip(o), o);
  EXPECT_EQ(round_trip(none), none);
  std::pair<std::string, int> p{"p", 4};
  EXPECT_EQ(round_trip(p), p);
  std::tuple<int, std::string, double> t{1, "two", 3.0};
  EXPECT_EQ(round_trip(t), t);
  std::variant<int, std::string> v1 = 5, v2 = std::string("five");
  EXPECT_EQ(round_trip(v1), v1);
  EXPECT_EQ(round_trip(v2), v2);
  std::vector<std::chrono::milliseconds> d{1ms, 2s};
  EXPECT_EQ(round_trip(d), d);
  std::vector<std::chrono::system_clock::time_point> tp{std::chrono::system_clock::now()};
  EXPECT_EQ(round_trip(tp), tp);
  std::vector<Side> sides{Side::buy, Side::sell};
  EXPECT_EQ(round_trip(sides), sides);
  std::array<std::string, 2> a{"x", "y"};
  EXPECT_EQ(round_trip(a), a);
}

TEST(Codec, NestedTriviallyCopyableTravelsAsBin) {
  std::map<std::string, std::vector<Tick>> m{{"a", {{1, 1.0}, {2, 2.0}}}, {"b", {}}};
  auto back = round_trip(m);
  ASSERT_EQ(back.size(), 2u);
  ASSERT_EQ(back["a"].size(), 2u);
  EXPECT_EQ(back["a"][1].id, 2);
  EXPECT_EQ(back["a"][1].px, 2.0);
}

TEST(Codec, UserStructsRoundTrip) {
  const Order o{"EURUSD", {1, 2, 3, 4, 5, 6, 7, 8}, 42};
  EXPECT_EQ(round_trip(o), o);
  const Named n{"Ada", 36};
  EXPECT_EQ(round_trip(n), n);
  std::vector<Order> many{o, o};
  EXPECT_EQ(round_trip(many), many);
}

TEST(Codec, WrongTypeIsDecodeErrorNamingTheType) {
  const auto m = shmbus::encode(std::vector<std::string>{"a"});
  try {
    (void)shmbus::decode<std::map<int, int>>(m, "chan");
    FAIL() << "no error";
  } catch (const shmbus::Error& e) {
    EXPECT_EQ(e.code(), shmbus::Errc::decode_error);
    EXPECT_EQ(e.object(), "chan");
    EXPECT_NE(e.reason().find("std::map"), std::string::npos) << e.reason();
  }
  // A struct with fewer fields than the message: msgpack-cxx fills what it
  // has; a message of another shape (a string where an array is) fails.
  EXPECT_EQ(shmbus::test::code_of([&] { (void)shmbus::decode<Order>(shmbus::encode(Named{})); }),
            shmbus::Errc::decode_error);
}

TEST(Codec, RawOfTheWrongSizeIsDecodeError) {
  const std::vector<std::byte> m(sizeof(Tick) + 1);
  EXPECT_EQ(shmbus::test::code_of([&] { (void)shmbus::decode<Tick>(m); }),
            shmbus::Errc::decode_error);
}

std::vector<std::byte> bytes(std::initializer_list<unsigned> v) {
  std::vector<std::byte> out;
  for (unsigned b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

TEST(Codec, HostileLengthsAreDecodeErrors) {
  using V = std::vector<int>;
  auto bad = [](const std::vector<std::byte>& m) {
    return shmbus::test::code_of([&] { (void)shmbus::decode<V>(m); });
  };
  // array32 announcing 2^32-1 elements in a 5-byte message: refused by the
  // limit before any allocation.
  EXPECT_EQ(bad(bytes({0xdd, 0xff, 0xff, 0xff, 0xff})), shmbus::Errc::decode_error);
  // str32 of 4 GiB, bin32, map32: the same.
  EXPECT_EQ(
      shmbus::test::code_of([] {
        (void)shmbus::decode<std::vector<std::string>>(bytes({0x91, 0xdb, 0xff, 0xff, 0xff, 0xff}));
      }),
      shmbus::Errc::decode_error);
  EXPECT_EQ(shmbus::test::code_of([] {
              (void)shmbus::decode<std::map<int, int>>(bytes({0xdf, 0x7f, 0xff, 0xff, 0xff}));
            }),
            shmbus::Errc::decode_error);
  // truncated: an array of 3 with 2 elements.
  EXPECT_EQ(bad(bytes({0x93, 0x01, 0x02})), shmbus::Errc::decode_error);
  // trailing bytes after the value.
  EXPECT_EQ(bad(bytes({0x91, 0x01, 0x01})), shmbus::Errc::decode_error);
  // empty message, reserved byte 0xc1.
  EXPECT_EQ(bad({}), shmbus::Errc::decode_error);
  EXPECT_EQ(bad(bytes({0xc1})), shmbus::Errc::decode_error);
  // nesting deeper than kMaxDecodeDepth.
  std::vector<std::byte> deep(shmbus::kMaxDecodeDepth + 10, std::byte{0x91});
  deep.push_back(std::byte{0x01});
  EXPECT_EQ(bad(deep), shmbus::Errc::decode_error);
  // An out-of-range variant index.
  EXPECT_EQ(shmbus::test::code_of([] {
              (void)shmbus::decode<std::variant<int, std::string>>(bytes({0x92, 0x07, 0x01}));
            }),
            shmbus::Errc::decode_error);
}

// A std::array of bytes from a str shorter than the array, at the very end
// of the message: msgpack-cxx's convert copies the array's length from the
// str (a read past the message: ASan's heap-buffer-overflow, or a null
// pointer for an empty str; found by tests/fuzz/codec_fuzz.cpp). The
// decoder copies the str's bytes and zeroes the rest.
TEST(Codec, ByteArrayFromAShortStrReadsOnlyTheStr) {
  using V = std::vector<std::array<unsigned char, 4>>;
  const std::vector<std::byte> one = bytes({0x91, 0xa1, 0x78});  // ["x"]
  EXPECT_EQ(shmbus::decode<V>(one), (V{{0x78, 0, 0, 0}}));
  const std::vector<std::byte> empty = bytes({0x91, 0xa0});  // [""]
  EXPECT_EQ(shmbus::decode<V>(empty), (V{{0, 0, 0, 0}}));
  const std::vector<std::byte> bin = bytes({0x91, 0xc4, 0x02, 0x01, 0x02});  // [bin 2]
  EXPECT_EQ(shmbus::decode<V>(bin), (V{{1, 2, 0, 0}}));
  using C = std::vector<std::array<char, 2>>;
  EXPECT_EQ(shmbus::decode<C>(bytes({0x91, 0xa1, 0x61})), (C{{'a', 0}}));
  // Longer than the array: a decode error.
  EXPECT_EQ(shmbus::test::code_of([] {
              (void)shmbus::decode<V>(bytes({0x91, 0xa5, 0x61, 0x62, 0x63, 0x64, 0x65}));
            }),
            shmbus::Errc::decode_error);
  // What the encoder writes (bin of 4) decodes back.
  const V v{{1, 2, 3, 4}, {5, 6, 7, 8}};
  EXPECT_EQ(shmbus::decode<V>(shmbus::encode(v)), v);
}

TEST(Codec, AcceptsWhatPythonPacks) {
  // msgpack.packb(["Item", [1.5, 2.5], 7]) as Python writes it (floats as
  // float64 by default).
  const auto m = bytes({0x93, 0xa4, 'I', 't',  'e',  'm',  0x92, 0xcb, 0x3f, 0xf8, 0, 0, 0,
                        0,    0,    0,   0xcb, 0x40, 0x04, 0,    0,    0,    0,    0, 0, 0x07});
  const Order o = shmbus::decode<Order>(m);
  EXPECT_EQ(o, (Order{"Item", {1.5, 2.5}, 7}));
}

// Messages a C++ sender put through a pipe, read by Python's msgpack
// (python3-msgpack), when the machine has it.
TEST(Codec, PythonMsgpackDecodesWhatCppSends) {
  // Debian's python3-msgpack is in /usr/bin/python3's path (a python3
  // earlier in PATH, e.g. pyenv's, may not see it).
  std::string python;
  for (const char* p : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(p) + " -c 'import msgpack' 2>/dev/null").c_str()) == 0) {
      python = p;
      break;
    }
  if (python.empty()) GTEST_SKIP() << "python3-msgpack is not installed";
  const Order o{"EURUSD", {1, 2, 3, 4, 5, 6, 7, 8}, 42};
  std::map<std::string, std::variant<int, std::string>> mixed{{"a", 1}, {"b", std::string("x")}};
  const Named n{"Ada", 36};
  const std::string path = "/tmp/" + shmbus::test::unique_name("codec") + ".bin";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  auto [tx, rx] = shmbus::Pipe();
  ASSERT_EQ(tx.send(o), shmbus::SendResult::ok);
  ASSERT_EQ(tx.send(mixed), shmbus::SendResult::ok);
  ASSERT_EQ(tx.send(n), shmbus::SendResult::ok);
  for (int i = 0; i < 3; ++i) {
    const std::vector<std::byte> m = rx.recv_bytes();  // the bytes on the wire
    const std::uint32_t len = static_cast<std::uint32_t>(m.size());
    std::fwrite(&len, sizeof len, 1, f);
    std::fwrite(m.data(), 1, m.size(), f);
  }
  std::fclose(f);
  const std::string py =
      "import msgpack, struct, sys\n"
      "d = open(sys.argv[1], 'rb').read(); out = []; i = 0\n"
      "while i < len(d):\n"
      "  (n,) = struct.unpack_from('<I', d, i); i += 4\n"
      "  out.append(msgpack.unpackb(d[i:i+n], raw=False)); i += n\n"
      "assert out[0] == ['EURUSD', [1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0], 42], out[0]\n"
      "assert out[1] == {'a': [0, 1], 'b': [1, 'x']}, out[1]\n"
      "assert out[2] == {'name': 'Ada', 'age': 36}, out[2]\n";
  const std::string script = path + ".py";
  f = std::fopen(script.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(py.c_str(), f);
  std::fclose(f);
  const int rc = std::system((python + " " + script + " " + path).c_str());
  std::remove(path.c_str());
  std::remove(script.c_str());
  EXPECT_EQ(rc, 0);
}

}  // namespace
