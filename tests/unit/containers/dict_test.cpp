// Dict<K, V>: Python dict semantics, snapshots, atomic updates, growth,
// fork, and bad stores.
#include "shmbus/dict.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include "store_guard.hpp"
#include "test_support.hpp"

namespace shmbus::test {
namespace {

TEST(Dict, BehavesAsPythonDictWhenNamed) {
  StoreGuard g(unique_name("dict"));
  Dict<std::string, double> d{g.name()};
  EXPECT_TRUE(d.empty());
  EXPECT_FALSE(d.get("a").has_value());
  EXPECT_EQ(code_of([&] { (void)d.at("a"); }), Errc::not_found);
  d.set("a", 1.5);
  d.set("b", 2.5);
  EXPECT_EQ(d.at("a"), 1.5);
  EXPECT_EQ(d.get("zz", 9.0), 9.0);
  EXPECT_TRUE(d.contains("b"));
  EXPECT_EQ(d.size(), 2u);
  EXPECT_EQ(d.setdefault("a", 7.0), 1.5);
  EXPECT_EQ(d.setdefault("c", 7.0), 7.0);
  EXPECT_EQ(d.at("c"), 7.0);
  EXPECT_TRUE(d.erase("c"));
  EXPECT_FALSE(d.erase("c"));
  EXPECT_EQ(d.pop("b"), 2.5);
  EXPECT_FALSE(d.pop("b").has_value());
  d.set("b", 2.5);
  EXPECT_EQ(d.pop("b", 8.0), 2.5);  // Python's d.pop(k, default)
  EXPECT_EQ(d.pop("b", 8.0), 8.0);
  EXPECT_FALSE(d.contains("b"));
  d.update({{"x", 1.0}, {"y", 2.0}});
  auto items = d.items();
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0], (std::pair<std::string, double>{"a", 1.5}));
  EXPECT_EQ(items[1].first, "x");
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"a", "x", "y"}));
  EXPECT_EQ(d.update("a", [](double& v) { v *= 2; }), 3.0);
  EXPECT_EQ(d.update(
                "new", [](double& v) { v += 1; }, 10.0),
            11.0);
  d.clear();
  EXPECT_EQ(d.size(), 0u);
}

TEST(Dict, SecondHandleInSameProcessSeesWritesWhenOpenedByName) {
  StoreGuard g(unique_name("dict"));
  auto a = Dict<int, std::string>::create(g.name());
  auto b = Dict<int, std::string>::open(g.name());
  a.set(1, "one");
  EXPECT_EQ(b.at(1), "one");
  EXPECT_EQ(code_of([&] { (void)Dict<int, std::string>::create(g.name()); }), Errc::already_exists);
}

TEST(Dict, OpenFailsWithNotFoundWhenNoStore) {
  EXPECT_EQ(code_of([&] { (void)Dict<int, int>::open(unique_name("none")); }), Errc::not_found);
  EXPECT_EQ(code_of([&] { (void)Dict<int, int>{"bad/name"}; }), Errc::invalid_name);
}

TEST(Dict, OpenFailsWithWrongTypeWhenTypesDiffer) {
  StoreGuard g(unique_name("dict"));
  {
    Dict<int, double> d{g.name()};
    d.set(1, 2.0);
  }
  EXPECT_EQ(code_of([&] { (void)Dict<int, float>::open(g.name()); }), Errc::wrong_type);
  EXPECT_EQ(code_of([&] { (void)Dict<std::string, double>::open(g.name()); }), Errc::wrong_type);
}

TEST(Dict, TransactionIsAllOrNothingWhenItThrows) {
  Dict<std::string, long> d;
  d.set("a", 1);
  EXPECT_THROW(d.transaction([](auto& tx) {
    tx.set("a", 100);
    tx.set("b", 200);
    throw std::runtime_error("abort");
  }),
               std::runtime_error);
  EXPECT_EQ(d.at("a"), 1);
  EXPECT_FALSE(d.contains("b"));
  long sum = d.transaction([](auto& tx) {
    tx.set("b", 2);
    return *tx.get("a") + *tx.get("b");
  });
  EXPECT_EQ(sum, 3);
  EXPECT_EQ(d.at("b"), 2);
}

TEST(Dict, ItemsIsOneSnapshotWhileAWriterCommits) {
  // A writer thread keeps keys a and b equal, one transaction per step; each
  // items() must see them equal.
  Dict<std::string, long> d;
  d.update({{"a", 0}, {"b", 0}});
  std::atomic<bool> stop{false};
  std::thread w([&] {
    for (long i = 1; !stop.load(std::memory_order_relaxed); ++i)
      d.transaction([&](auto& tx) {
        tx.set("a", i);
        tx.set("b", i);
      });
  });
  for (int i = 0; i < 2000; ++i) {
    auto items = d.items();
    ASSERT_EQ(items.size(), 2u);
    ASSERT_EQ(items[0].second, items[1].second);
  }
  stop = true;
  w.join();
}

TEST(Dict, GrowsPastItsMapWhenFilled) {
  StoreOptions o;
  o.map_size = 256 << 10;  // 256 KiB
  Dict<int, std::string> d{o};
  std::string big(1000, 'x');
  for (int i = 0; i < 2000; ++i) d.set(i, big);  // ~2 MB of values
  EXPECT_EQ(d.size(), 2000u);
  EXPECT_EQ(d.at(1999), big);
}

TEST(Dict, OpeningWithASmallerMapKeepsWhatAGrownStoreHolds) {
  // The opener asks for less map than the store has grown to: it must not
  // cut the file (LMDB sizes a WRITEMAP file to the map it is given).
  StoreGuard g(unique_name("dict"));
  StoreOptions small;
  small.map_size = 256 << 10;
  Dict<int, std::string> a{g.name(), small};
  std::string big(1000, 'x');
  for (int i = 0; i < 2000; ++i) a.set(i, big);
  pid_t pid = fork_child([&] {
    Dict<int, std::string> b = Dict<int, std::string>::open(g.name(), small);
    for (int i = 2000; i < 2500; ++i) b.set(i, big);
    return b.size() == 2500 ? 0 : 1;
  });
  auto st = wait_child(pid);
  ASSERT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  EXPECT_EQ(a.size(), 2500u);
  EXPECT_EQ(a.at(0), big);
  EXPECT_EQ(a.at(2499), big);
}

TEST(Dict, SaysSoWhenFullAtItsMaximum) {
  StoreOptions o;
  o.map_size = 256 << 10;
  o.max_map_size = 512 << 10;
  Dict<int, std::string> d{o};
  std::string big(1000, 'x');
  Errc c = code_of([&] {
    for (int i = 0; i < 5000; ++i) d.set(i, big);
  });
  EXPECT_EQ(c, Errc::too_large);
  EXPECT_EQ(d.at(0), big);  // still usable
}

TEST(Dict, ChildSeesAndWritesAnonymousDictWhenForked) {
  Dict<int, long> d;
  d.set(1, 10);
  (void)d.get(1);  // warm the parent's read txn pool
  pid_t pid = fork_child([&] {
    if (d.at(1) != 10) return 2;
    d.update(1, [](long& v) { v += 5; });
    d.set(2, 20);
    return 0;
  });
  auto st = wait_child(pid);
  ASSERT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  EXPECT_EQ(d.at(1), 15);
  EXPECT_EQ(d.at(2), 20);
}

TEST(Dict, ChildSeesNamedDictWhenForkedAndGrandchildToo) {
  StoreGuard g(unique_name("dict"));
  Dict<int, long> d{g.name()};
  d.set(1, 1);
  pid_t pid = fork_child([&] {
    d.update(1, [](long& v) { v += 1; });
    pid_t gc = fork_child([&] {
      d.update(1, [](long& v) { v += 1; });
      return 0;
    });
    auto s = wait_child(gc);
    return s.exited && s.code == 0 ? 0 : 3;
  });
  auto st = wait_child(pid);
  ASSERT_TRUE(st.exited);
  EXPECT_EQ(st.code, 0);
  EXPECT_EQ(d.at(1), 3);
}

TEST(Dict, ValueOfWrongSizeIsWrongTypeError) {
  // Plant a 3-byte value under key 7 through the raw store (as a buggy or
  // hostile peer could) where Dict<int, double> expects 8 bytes.
  StoreGuard g(unique_name("dict"));
  {
    detail::KvStore s(g.name(), detail::KvStore::Mode::create, detail::StoreKind::dict,
                      detail::type_tag<int>(), detail::type_tag<double>(), {});
    std::string k;
    detail::kv_encode_key(7, k);
    s.write([&](detail::WriteTxn& t) {
      t.put(detail::kv_bytes(k), std::as_bytes(std::span("abc", 3)));
    });
  }
  Dict<int, double> d{g.name()};
  EXPECT_EQ(code_of([&] { (void)d.get(7); }), Errc::wrong_type);
  EXPECT_EQ(code_of([&] { (void)d.items(); }), Errc::wrong_type);
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(Dict, GarbageFileIsCorruptedErrorNamingIt) {
  StoreGuard g(unique_name("dict"));
  write_file(detail::KvStore::path_of(g.name()), std::string(10000, '\x5a'));
  try {
    Dict<int, int> d = Dict<int, int>::open(g.name());
    FAIL() << "opened garbage";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::corrupted);
    EXPECT_EQ(e.object(), g.name());
  }
}

TEST(Dict, TruncatedFileIsErrorNamingIt) {
  StoreGuard g(unique_name("dict"));
  {
    Dict<int, std::string> d{g.name()};
    for (int i = 0; i < 500; ++i) d.set(i, std::string(500, 'v'));
  }
  std::string path = detail::KvStore::path_of(g.name());
  for (off_t size : {off_t{5000}, off_t{100}, off_t{64 << 10}}) {
    ASSERT_EQ(::truncate(path.c_str(), size), 0);
    try {
      Dict<int, std::string> d = Dict<int, std::string>::open(g.name());
      FAIL() << "opened a file truncated to " << size;
    } catch (const Error& e) {
      EXPECT_TRUE(e.code() == Errc::truncated || e.code() == Errc::corrupted)
          << to_string(e.code());
      EXPECT_EQ(e.object(), g.name());
    }
  }
}

TEST(Dict, CorruptedRootPageIsCorruptedError) {
  StoreGuard g(unique_name("dict"));
  {
    Dict<int, int> d{g.name()};
    d.set(1, 1);
  }
  std::string path = detail::KvStore::path_of(g.name());
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  // Main DB root of both meta pages (page header 16 + magic/version 8 +
  // address/mapsize 16 + free DB 48 + 40 into the main DB record).
  std::uint64_t bad = 1u << 30;
  for (off_t page : {off_t{0}, off_t{4096}})
    ASSERT_EQ(::pwrite(fd, &bad, sizeof bad, page + 16 + 24 + 48 + 40), 8);
  ::close(fd);
  EXPECT_EQ(code_of([&] { (void)Dict<int, int>::open(g.name()); }), Errc::corrupted);
}

}  // namespace
}  // namespace shmbus::test
