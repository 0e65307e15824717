// Keys and values of Dict, List and Namespace go through the codec:
// strings, containers and MSGPACK_DEFINE structs; numeric keys iterate in
// numeric order; a value that does not decode as the declared type is
// Error(wrong_type) naming the container and the type; a store of another
// encoding format is Error(wrong_version).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "shmbus/dict.hpp"
#include "shmbus/list.hpp"
#include "shmbus/namespace.hpp"
#include "store_guard.hpp"
#include "test_support.hpp"

namespace shmbus::test {
namespace {

struct Order {
  std::string symbol;
  std::vector<double> fills;
  int qty = 0;
  bool operator==(const Order&) const = default;
  MSGPACK_DEFINE(symbol, fills, qty)
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ContainerCodec, DictCarriesStringsVectorsAndStructsWhenNamed) {
  StoreGuard g(unique_name("codec"));
  Dict<std::string, std::vector<int>> d{g.name()};
  d.set("primes", {2, 3, 5, 7});
  d.set("empty", {});
  EXPECT_EQ(d.at("primes"), (std::vector<int>{2, 3, 5, 7}));
  EXPECT_TRUE(d.at("empty").empty());
  d.update("primes", [](std::vector<int>& v) { v.push_back(11); });
  EXPECT_EQ(d.at("primes").back(), 11);

  StoreGuard g2(unique_name("codec"));
  Dict<std::pair<std::string, int>, Order> orders{g2.name()};
  Order o{"EURUSD", {1.07, 1.08}, 3};
  orders.set({"a", 1}, o);
  EXPECT_EQ(orders.at({"a", 1}), o);
  auto items = orders.items();
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].first, (std::pair<std::string, int>{"a", 1}));
  EXPECT_EQ(items[0].second, o);

  Dict<std::string, std::map<std::string, double>> nested;  // anonymous
  nested.set("m", {{"x", 1.5}});
  EXPECT_EQ(nested.at("m").at("x"), 1.5);
}

TEST(ContainerCodec, IntegerKeysIterateInNumericOrder) {
  Dict<int, int> d;
  for (int k : {5, -1, 300, 0, -70000, 256, std::numeric_limits<int>::min(),
                std::numeric_limits<int>::max()})
    d.set(k, k);
  EXPECT_EQ(d.keys(), (std::vector<int>{std::numeric_limits<int>::min(), -70000, -1, 0, 5, 256, 300,
                                        std::numeric_limits<int>::max()}));
  Dict<std::uint64_t, int> u;
  for (std::uint64_t k : {std::uint64_t{1} << 40, std::uint64_t{255}, std::uint64_t{256}})
    u.set(k, 0);
  EXPECT_EQ(u.keys(), (std::vector<std::uint64_t>{255, 256, std::uint64_t{1} << 40}));
}

TEST(ContainerCodec, FloatingKeysIterateInNumericOrder) {
  Dict<double, int> d;
  for (double k : {2.5, -0.5, 0.0, -1e300, 1e-300, -std::numeric_limits<double>::infinity(),
                   std::numeric_limits<double>::infinity()})
    d.set(k, 0);
  EXPECT_EQ(d.keys(),
            (std::vector<double>{-std::numeric_limits<double>::infinity(), -1e300, -0.5, 0.0,
                                 1e-300, 2.5, std::numeric_limits<double>::infinity()}));
  EXPECT_TRUE(d.contains(-0.5));
}

TEST(ContainerCodec, ListAndNamespaceCarryCodecTypes) {
  List<std::vector<std::string>> l;
  l.append({"a", "b"});
  l.append({});
  l.insert(0, {"z"});
  EXPECT_EQ(l.at(0), (std::vector<std::string>{"z"}));
  EXPECT_EQ(l.index({"a", "b"}), 1u);
  l.sort();
  EXPECT_EQ(l.at(0), (std::vector<std::string>{}));

  Namespace ns;
  ns.set("order", Order{"X", {1.0}, 2});
  ns.set("tags", std::vector<std::string>{"fast"});
  EXPECT_EQ(ns.get<Order>("order").qty, 2);
  EXPECT_EQ(ns.get<std::vector<std::string>>("tags").at(0), "fast");
  EXPECT_EQ(code_of([&] { (void)ns.get<std::string>("order"); }), Errc::wrong_type);
}

TEST(ContainerCodec, UndecodableValueIsWrongTypeNamingStoreAndType) {
  // A peer plants bytes that are no msgpack std::vector<int> (a buggy or
  // hostile writer through the raw store).
  StoreGuard g(unique_name("codec"));
  Dict<std::string, std::vector<int>> d{g.name()};
  {
    detail::KvStore s(g.name(), detail::KvStore::Mode::open, detail::StoreKind::dict,
                      detail::type_tag<std::string>(), detail::type_tag<std::vector<int>>(), {});
    s.write([&](detail::WriteTxn& t) {
      t.put(std::as_bytes(std::span("k", 1)), std::as_bytes(std::span("\xc1\xff", 2)));
    });
  }
  EXPECT_EQ(code_of([&] { (void)d.get("k"); }), Errc::wrong_type);
  const std::string why = message_of([&] { (void)d.items(); });
  EXPECT_NE(why.find(g.name()), std::string::npos) << why;
  EXPECT_NE(why.find("does not decode as"), std::string::npos) << why;
  EXPECT_NE(why.find(std::string(detail::type_name<std::vector<int>>())), std::string::npos) << why;
}

TEST(ContainerCodec, StoreOfAnotherFormatIsWrongVersion) {
  // A store whose "format" record differs (made by an older shmbus whose
  // keys were host-order bytes) is refused at open, not misread.
  StoreGuard g(unique_name("codec"));
  { Dict<int, int> d{g.name()}; }
  {
    // Rewrite the meta record through LMDB's own database name.
    detail::KvStore s(g.name(), detail::KvStore::Mode::open, detail::StoreKind::dict,
                      detail::type_tag<int>(), detail::type_tag<int>(), {});
    detail::testing_set_meta(s, "format", "1");
  }
  EXPECT_EQ(code_of([&] { (void)Dict<int, int>::open(g.name()); }), Errc::wrong_version);
}

}  // namespace
}  // namespace shmbus::test
