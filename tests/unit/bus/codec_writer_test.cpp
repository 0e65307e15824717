// The codec's direct encoder (detail/codec_writer.hpp) writes exactly the
// bytes msgpack-cxx's packer writes (the wire format must not change:
// Python and msgpack-cxx's own unpacker read what they read before), for
// every kind of value it writes itself and for those it hands to the packer,
// into the thread's buffer and into a room too small for the value.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <initializer_list>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "shmbus/codec.hpp"

namespace {

struct Quote {
  std::string symbol;
  std::vector<double> prices;
  int qty = 0;
  MSGPACK_DEFINE(symbol, prices, qty)
};

struct Raw {
  std::uint32_t a;
  std::uint16_t b;
};

enum class Side : std::int16_t { buy = 1, sell = -300 };

struct Wide {
  std::array<float, 3> f{};
  std::list<std::int64_t> l;
  std::deque<std::uint8_t> d;
  std::set<std::string> s;
  std::map<std::string, std::vector<Quote>> m;
  std::optional<Raw> raw;
  std::pair<bool, char> pc;
  std::tuple<short, unsigned, long long> t;
  std::chrono::milliseconds ms{};
  std::chrono::duration<double> secs{};
  Side side = Side::buy;
  std::variant<int, std::string> v;              // packer's (variant adaptor)
  std::vector<char> bytes;                       // packer's (bin)
  std::vector<bool> flags;                       // packer's (array of bool)
  std::chrono::system_clock::time_point when{};  // packer's (timestamp)
  MSGPACK_DEFINE(f, l, d, s, m, raw, pc, t, ms, secs, side, v, bytes, flags, when)
};

struct Mapped {
  std::string name;
  std::vector<std::int16_t> values;
  MSGPACK_DEFINE_MAP(name, values)
};

// A hand-written msgpack_pack() that calls the packer's own members.
struct HandWritten {
  std::string text;
  template <class Packer>
  void msgpack_pack(Packer& pk) const {
    pk.pack_array(2);
    pk.pack_nil();
    pk.pack_str(static_cast<std::uint32_t>(text.size()));
    pk.pack_str_body(text.data(), static_cast<std::uint32_t>(text.size()));
  }
  void msgpack_unpack(const msgpack::object&) {}
};

template <class T>
std::vector<std::byte> packer_bytes(const T& v) {
  msgpack::sbuffer b;
  msgpack::pack(b, v);
  const auto* p = reinterpret_cast<const std::byte*>(b.data());
  return {p, p + b.size()};
}

template <class T>
std::vector<std::byte> writer_bytes(const T& v) {
  const std::span<const std::byte> m = shmbus::detail::encode_msgpack(v);
  return {m.begin(), m.end()};
}

std::string hex(const std::vector<std::byte>& b) {
  std::string s;
  char buf[4];
  for (std::byte x : b) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(x));
    s += buf;
  }
  return s;
}

#define EXPECT_SAME_BYTES(v) EXPECT_EQ(hex(writer_bytes(v)), hex(packer_bytes(v))) << #v;

const std::vector<double> kDoubles = {0.0,
                                      -0.0,
                                      1.0,
                                      -1.0,
                                      127.0,
                                      128.0,
                                      255.0,
                                      256.0,
                                      65535.0,
                                      65536.0,
                                      -32.0,
                                      -33.0,
                                      -128.0,
                                      -129.0,
                                      -32768.0,
                                      -32769.0,
                                      4294967295.0,
                                      4294967296.0,
                                      -2147483648.0,
                                      -2147483649.0,
                                      0x1p53,
                                      0x1p62,
                                      0x1p63,
                                      0x1.fffffffffffffp63,
                                      -0x1p63,
                                      -0x1.0000000000001p63,
                                      0.5,
                                      -0.5,
                                      1.0842,
                                      -1e300,
                                      1e300,
                                      2147483647.5,
                                      -2147483648.5,
                                      std::numeric_limits<double>::quiet_NaN(),
                                      -std::numeric_limits<double>::quiet_NaN(),
                                      std::numeric_limits<double>::infinity(),
                                      -std::numeric_limits<double>::infinity(),
                                      std::numeric_limits<double>::denorm_min(),
                                      std::numeric_limits<double>::min(),
                                      1e-300};

TEST(CodecWriter, NumbersAreMsgpackCxxsBytes) {
  for (double d : kDoubles) {
    EXPECT_SAME_BYTES(d);
    // A float of 2^64 would take msgpack-cxx's packer into undefined
    // behaviour (see below).
    const auto f = static_cast<float>(d);
    if (!(std::fabs(f) >= 0x1p64f)) {
      EXPECT_SAME_BYTES(f);
    }
  }
  for (std::int64_t i :
       std::initializer_list<std::int64_t>{0LL,
                                           1LL,
                                           127LL,
                                           128LL,
                                           255LL,
                                           256LL,
                                           65535LL,
                                           65536LL,
                                           4294967295LL,
                                           4294967296LL,
                                           -1LL,
                                           -32LL,
                                           -33LL,
                                           -128LL,
                                           -129LL,
                                           -32768LL,
                                           -32769LL,
                                           -2147483648LL,
                                           -2147483649LL,
                                           std::numeric_limits<std::int64_t>::min(),
                                           std::numeric_limits<std::int64_t>::max()}) {
    EXPECT_SAME_BYTES(i);
    EXPECT_SAME_BYTES(static_cast<std::uint64_t>(i));
    EXPECT_SAME_BYTES(static_cast<int>(i));
    EXPECT_SAME_BYTES(static_cast<unsigned>(i));
    EXPECT_SAME_BYTES(static_cast<short>(i));
    EXPECT_SAME_BYTES(static_cast<std::uint16_t>(i));
    EXPECT_SAME_BYTES(static_cast<signed char>(i));
    EXPECT_SAME_BYTES(static_cast<unsigned char>(i));
    EXPECT_SAME_BYTES(static_cast<char>(i));
    EXPECT_SAME_BYTES(static_cast<long>(i));
  }
  EXPECT_SAME_BYTES(true);
  EXPECT_SAME_BYTES(false);
  EXPECT_SAME_BYTES(Side::sell);
  EXPECT_SAME_BYTES(std::chrono::nanoseconds(-5'000'000'000));
}

// msgpack-cxx's own test of 2^64 converts it to uint64_t (undefined
// behaviour); the writer writes float64, what x86-64 builds of msgpack-cxx
// write too. Compared with the wire bytes, not with the packer.
TEST(CodecWriter, TwoToThe64IsFloat64) {
  const std::vector<std::byte> b = writer_bytes(0x1p64);
  ASSERT_EQ(b.size(), 9u);
  EXPECT_EQ(hex(b), "cb43f0000000000000");
  EXPECT_EQ(hex(writer_bytes(0x1p64f)), "ca5f800000");
}

TEST(CodecWriter, VectorsOfDoublesInEveryMixAreMsgpackCxxsBytes) {
  // Every pair of the values above, at even and odd positions, so that the
  // two-at-a-time path sees each mix.
  std::vector<double> all;
  for (double a : kDoubles)
    for (double b : kDoubles) {
      all.push_back(a);
      all.push_back(b);
    }
  EXPECT_SAME_BYTES(all);
  all.insert(all.begin(), 3.0);
  EXPECT_SAME_BYTES(all);
  for (std::size_t n : {0u, 1u, 2u, 3u, 15u, 16u, 63u, 64u, 65u, 129u, 70000u}) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i)
      v[i] = i % 3 == 0 ? static_cast<double>(i) : static_cast<double>(i) * 0.25;
    EXPECT_SAME_BYTES(v);
    std::array<double, 5> a{1, 2.5, -3, 1e20, 7};
    EXPECT_SAME_BYTES(a);
    const std::vector<float> f(v.begin(), v.end());
    EXPECT_SAME_BYTES(f);
    const std::vector<int> i(v.begin(), v.end());
    EXPECT_SAME_BYTES(i);
  }
}

TEST(CodecWriter, StringsAndContainersAreMsgpackCxxsBytes) {
  for (std::size_t n : {0u, 1u, 31u, 32u, 255u, 256u, 65535u, 65536u, 100000u}) {
    const std::string s(n, 'x');
    EXPECT_SAME_BYTES(std::vector<std::string>{s});
    EXPECT_SAME_BYTES(std::make_tuple(s, n));
    std::vector<int> v(n, -1);
    EXPECT_SAME_BYTES(v);
    std::map<int, int> m;
    for (std::size_t i = 0; i < n && i < 70000; i += 1 + i / 4) m[static_cast<int>(i)] = -1;
    EXPECT_SAME_BYTES(m);
  }
  EXPECT_SAME_BYTES((std::unordered_map<std::string, std::optional<int>>{{"a", 1}, {"b", {}}}));
  EXPECT_SAME_BYTES((std::unordered_set<int>{1, 2, 3}));
  EXPECT_SAME_BYTES((std::array<std::string, 2>{"", "z"}));
  EXPECT_SAME_BYTES((std::array<char, 3>{'a', 'b', 'c'}));
  EXPECT_SAME_BYTES((std::vector<unsigned char>{1, 2}));
  EXPECT_SAME_BYTES((std::vector<std::byte>{std::byte{1}}));
  EXPECT_SAME_BYTES((std::vector<signed char>{-1, 2}));
  EXPECT_SAME_BYTES((std::vector<std::vector<std::optional<std::pair<int, std::string>>>>{
      {std::nullopt, std::make_pair(-7, std::string("q"))}, {}}));
  EXPECT_SAME_BYTES(std::tuple<>{});
  std::vector<Raw> raws(300, Raw{1, 2});  // bin8 each, an array16 of them
  EXPECT_SAME_BYTES(raws);
}

TEST(CodecWriter, StructsAreMsgpackCxxsBytes) {
  const Quote q{"EURUSD", {1, 2, 3, 4, 5, 6, 7, 8}, 42};
  EXPECT_SAME_BYTES(q);
  EXPECT_SAME_BYTES((Quote{"GBPUSD", {1.2641, 1.2643, -0.0, 1e9, 0.5}, -70000}));
  EXPECT_SAME_BYTES(Quote{});
  Wide w;
  w.f = {1.5f, 2.0f, -0.0f};
  w.l = {-1, 1LL << 40};
  w.d = {0, 200};
  w.s = {"a", std::string(40, 'b')};
  w.m["k"] = {q, q};
  w.raw = Raw{7, 8};
  w.pc = {true, 'x'};
  w.t = {-300, 70000u, -(1LL << 35)};
  w.ms = std::chrono::milliseconds(-12);
  w.secs = std::chrono::duration<double>(0.25);
  w.side = Side::sell;
  w.v = std::string("variant");
  w.bytes = {'a', 'b'};
  w.flags = {true, false, true};
  w.when =
      std::chrono::system_clock::time_point(std::chrono::nanoseconds(1'700'000'000'123'456'789));
  EXPECT_SAME_BYTES(w);
  EXPECT_SAME_BYTES(std::vector<Wide>(2, w));
  EXPECT_SAME_BYTES((Mapped{"n", {1, -2, 300}}));
  EXPECT_SAME_BYTES((std::vector<HandWritten>{{"one"}, {std::string(40, 't')}}));
}

// Into a ring's room: a value that outgrows the room continues in the
// thread's buffer, whatever the room's size; the bytes are the same. Each
// room is its own allocation of exactly its size, so a write past it is a
// heap overflow ASan reports; the vector of 150 numbers spills at each of
// its 64-number batches' edges.
template <class T>
void expect_same_bytes_in_every_room(const T& value) {
  const std::vector<std::byte> want = packer_bytes(value);
  for (std::size_t n = 0; n <= want.size() + 64; ++n) {
    const auto room = std::make_unique<std::byte[]>(n);
    shmbus::detail::SpillWriter sw(std::span<std::byte>(room.get(), n));
    shmbus::detail::write_value(sw, value);
    const std::span<const std::byte> got = sw.bytes();
    EXPECT_EQ(hex({got.begin(), got.end()}), hex(want)) << "room " << n;
    if (!sw.spilled()) {
      EXPECT_EQ(got.data(), room.get()) << "room " << n;
      EXPECT_GE(n, want.size());
    }
  }
}

TEST(CodecWriter, AValueOutgrowingItsRoomAtAnyPointIsTheSameBytes) {
  Wide w;
  w.l = {1, 2, 3};
  w.m["key"] = {Quote{"EURUSD", {1.25, 2, 3}, 42}};
  w.v = 5;
  expect_same_bytes_in_every_room(w);
  std::vector<double> numbers(150);
  for (std::size_t i = 0; i < numbers.size(); ++i)
    numbers[i] = i % 3 == 0 ? static_cast<double>(i) : static_cast<double>(i) + 0.5;
  expect_same_bytes_in_every_room(numbers);
  expect_same_bytes_in_every_room(std::vector<std::int64_t>(150, -70000));
}

// msgpack-cxx's unpacker reads the writer's bytes back to the same value.
TEST(CodecWriter, MsgpackCxxReadsTheWritersBytesBack) {
  const Quote q{"GBPUSD", {1.2641, 7, -0.5, 1e300}, -5};
  const std::span<const std::byte> m = shmbus::detail::encode_msgpack(q);
  const msgpack::object_handle h =
      msgpack::unpack(reinterpret_cast<const char*>(m.data()), m.size());
  const Quote back = h.get().as<Quote>();
  EXPECT_EQ(back.symbol, q.symbol);
  EXPECT_EQ(back.prices, q.prices);
  EXPECT_EQ(back.qty, q.qty);
}

TEST(CodecWriter, LengthsAbove2To32Minus1AreContainerSizeOverflow) {
  // The count check runs before any byte is reserved: a fake size is enough.
  EXPECT_THROW((void)shmbus::detail::wire::count(std::size_t{1} << 32),
               msgpack::container_size_overflow);
  EXPECT_EQ(shmbus::detail::wire::count(0xffffffffu), 0xffffffffu);
}

}  // namespace
