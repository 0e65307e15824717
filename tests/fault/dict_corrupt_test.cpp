// A peer that scribbles over a store does not crash or hang the processes
// that use it: every read API returns data or throws shmbus::Error, and so
// does every write. LMDB trusts its file (0.9 has no page checksums), so
// the store validates the meta page at every transaction, bounds what
// LMDB hands out by the map, bounds iteration, and runs LMDB's calls under
// a fault guard (containers/src/fault_guard.hpp) that turns a SIGSEGV,
// SIGBUS or LMDB assertion inside them into Error(corrupted).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "shmbus/dict.hpp"
#include "shmbus/list.hpp"
#include "shmbus/namespace.hpp"
#include "store_guard.hpp"
#include "test_support.hpp"

namespace shmbus::test {
namespace {

// LMDB 0.9's meta page: a 16-byte page header, then MDB_meta (its page
// size in the free DB's record at +40, mm_last_pg at +136).
constexpr std::size_t kPsizeAt = 16 + 24 + 0, kLastPgAt = 16 + 120;

std::uint32_t page_size(int fd) {
  std::uint32_t psize = 0;
  EXPECT_EQ(::pread(fd, &psize, 4, static_cast<off_t>(kPsizeAt)), 4);
  return psize;
}

// Runs `body` in a corrupting child on the store's file; waits for it.
void corrupt(const std::string& name, const std::function<void(int fd, std::uint32_t psize)>& f) {
  pid_t peer = fork_child([&]() -> int {
    const int fd = ::open(detail::KvStore::path_of(name).c_str(), O_RDWR);
    if (fd < 0) return 1;
    f(fd, page_size(fd));
    ::close(fd);
    return 0;
  });
  ChildStatus st = wait_child(peer);
  ASSERT_TRUE(st.exited);
  ASSERT_EQ(st.code, 0);
}

Dict<std::string, std::string> filled(const std::string& name) {
  Dict<std::string, std::string> d{name};
  std::vector<std::pair<std::string, std::string>> kv;
  for (int i = 0; i < 2000; ++i) kv.emplace_back("key" + std::to_string(i), std::string(40, 'v'));
  d.update(kv);
  return d;
}

TEST(DictCorrupt, ScribbledMetaPagesAreCorruptedErrorsForOpenReaders) {
  StoreGuard g(unique_name("corrupt"));
  auto d = filled(g.name());
  ASSERT_EQ(d.size(), 2000u);
  corrupt(g.name(), [](int fd, std::uint32_t psize) {
    const std::uint64_t huge = std::uint64_t{1} << 40;
    for (std::uint64_t page : {0u, 1u})
      (void)::pwrite(fd, &huge, 8, static_cast<off_t>(page * psize + kLastPgAt));
  });
  // This process still has the store open and mapped: no crash, an error.
  EXPECT_EQ(code_of([&] { (void)d.get("key1"); }), Errc::corrupted);
  EXPECT_EQ(code_of([&] { (void)d.items(); }), Errc::corrupted);
  EXPECT_EQ(code_of([&] { d.set("x", "y"); }), Errc::corrupted);
  // A fresh process's open refuses it (validated before LMDB maps it).
  pid_t opener = fork_child([&]() -> int {
    try {
      (void)Dict<std::string, std::string>::open(g.name());
    } catch (const Error& e) {
      return e.code() == Errc::truncated || e.code() == Errc::corrupted ? 0 : 2;
    }
    return 1;
  });
  ChildStatus st = wait_child(opener);
  ASSERT_TRUE(st.exited) << "signal " << st.signal;
  EXPECT_EQ(st.code, 0);
}

// ---- random corruption, each trial in a forked child with a deadline ----

// The bytes of a store's data file, trailing zero pages left off.
std::vector<char> image_of(const std::string& name) {
  const int fd = ::open(detail::KvStore::path_of(name).c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  std::vector<char> img(std::size_t{8} << 20);
  const ssize_t n = ::pread(fd, img.data(), img.size(), 0);
  ::close(fd);
  img.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!img.empty() && img.back() == 0) img.pop_back();
  img.resize((img.size() + 4095) / 4096 * 4096);
  return img;
}

void write_image(const std::string& name, const std::vector<char>& img) {
  const int fd = ::open(detail::KvStore::path_of(name).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, img.data(), img.size(), 0), static_cast<ssize_t>(img.size()));
  ::close(fd);
}

enum Damage : int { kPages, kBytes, kHeaders, kMeta, kCopies, kDamages };
const char* to_string(Damage d) {
  static const char* names[] = {"random pages", "random bytes", "page headers", "meta words",
                                "pages copied over others"};
  return names[d];
}

// Damages the store's file through a descriptor of its own: `used` bytes
// hold its pages.
void damage(const std::string& name, std::size_t used, Damage how, std::mt19937_64& rng) {
  const int fd = ::open(detail::KvStore::path_of(name).c_str(), O_RDWR);
  if (fd < 0) return;
  const std::uint32_t psize = page_size(fd);
  const std::uint64_t pages = std::max<std::uint64_t>(used / psize, 3);
  auto any_page = [&] { return 2 + rng() % (pages - 2); };  // a tree or free-list page
  auto garbage = [&](std::size_t n) {
    std::vector<char> b(n);
    for (char& c : b) c = static_cast<char>(rng());
    return b;
  };
  auto put = [&](const std::vector<char>& b, std::uint64_t at) {
    (void)::pwrite(fd, b.data(), b.size(), static_cast<off_t>(at));
  };
  switch (how) {
    case kPages:
      for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n; ++i)
        put(garbage(psize), any_page() * psize);
      break;
    case kBytes:
      for (int i = 0, n = 1 + static_cast<int>(rng() % 32); i < n; ++i)
        put(garbage(1), 2 * psize + rng() % (pages * psize - 2 * psize));
      break;
    case kHeaders:  // flags, lower/upper bounds and the first node offsets
      for (int i = 0, n = 1 + static_cast<int>(rng() % 3); i < n; ++i)
        put(garbage(16 + 2 * (rng() % 8)), any_page() * psize);
      break;
    case kMeta:  // one 8-byte word of a meta page's record
      put(garbage(8), (rng() % 2) * psize + 16 + 8 * (rng() % 18));
      break;
    case kCopies: {  // well-formed pages in the wrong places: loops, wrong kinds
      std::vector<char> b(psize);
      for (int i = 0, n = 1 + static_cast<int>(rng() % 3); i < n; ++i) {
        (void)::pread(fd, b.data(), psize, static_cast<off_t>(any_page() * psize));
        put(b, any_page() * psize);
      }
      break;
    }
    case kDamages:
      break;
  }
  ::close(fd);
}

// What the APIs met, as bits of the child's exit code.
constexpr int kSawFault = 1, kSawAssertion = 2, kSawRetired = 4;
int g_seen = 0;

// Runs one call: it returns data or throws shmbus::Error (anything else
// escapes and fails the child).
template <class F>
void attempt(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string r = e.reason();
    if (r.find("SIGSEGV") != std::string::npos || r.find("SIGBUS") != std::string::npos)
      g_seen |= kSawFault;
    if (r.find("consistency check") != std::string::npos) g_seen |= kSawAssertion;
    if (r.find("no longer writes") != std::string::npos) g_seen |= kSawRetired;
  }
}

using TestDict = Dict<std::string, std::string>;

// Writes to a damaged store run in builds without a sanitizer only: LMDB's
// write paths (mdb_put, the free list's save in mdb_txn_commit) then
// memcpy/memmove runs of garbage length, which ASan's and TSan's
// interceptors report (memcpy-param-overlap, a 57 MB read past the map)
// before the copy faults into the guard; in a plain build the copy runs
// until it faults (README, "Corrupted stores": such a copy may first
// overwrite memory mapped next to the store's map). Reads are run in
// every build.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kDamagedWrites = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kDamagedWrites = false;
#else
constexpr bool kDamagedWrites = true;
#endif
#else
constexpr bool kDamagedWrites = true;
#endif

void use_all(std::optional<TestDict>& d, std::optional<List<std::int64_t>>& l,
             std::optional<Namespace>& ns, std::mt19937_64& rng) {
  for (int round = 0; round < 2; ++round) {  // reads, a write each, reads again
    if (d) {
      for (int i = 0; i < 8; ++i)
        attempt([&] { (void)d->get("key" + std::to_string(rng() % 2000)); });
      attempt([&] { (void)d->get("big1"); });
      attempt([&] { (void)d->at("key5"); });
      attempt([&] { (void)d->contains("key1999"); });
      attempt([&] { (void)d->size(); });
      attempt([&] { (void)d->items(); });
      attempt([&] { (void)d->keys(); });
    }
    if (l) {
      attempt([&] { (void)l->size(); });
      attempt([&] { (void)l->at(static_cast<std::int64_t>(rng() % 1500)); });
      attempt([&] { (void)l->at(-1); });
      attempt([&] { (void)l->slice(10, 200); });
      attempt([&] { (void)l->slice(-5, 1 << 30); });
      attempt([&] { (void)l->to_vector(); });
      attempt([&] { (void)l->index(1400); });
      attempt([&] { (void)l->count(3); });
    }
    if (ns) {
      attempt([&] { (void)ns->find<std::int64_t>("counter7"); });
      attempt([&] { (void)ns->get<std::string>("label3", "none"); });
      attempt([&] { (void)ns->contains("counter1"); });
      attempt([&] { (void)ns->fields(); });
    }
    if (round == 1 || !kDamagedWrites) break;
    if (d) {
      attempt([&] { d->set("key" + std::to_string(rng() % 2000), "written"); });
      attempt([&] { (void)d->erase("key" + std::to_string(rng() % 2000)); });
      attempt([&] { d->update("key9", [](std::string& v) { v += "!"; }); });
    }
    if (l) {
      attempt([&] { l->append(7); });
      attempt([&] { (void)l->pop(); });
    }
    if (ns) attempt([&] { (void)ns->update<std::int64_t>("counter2", [](auto& v) { ++v; }); });
  }
}

TEST(DictCorrupt, RandomDamageToItsPagesIsAnErrorNeverACrashOrAHang) {
  StoreGuard g;
  const std::string dn = g.add(unique_name("pristine-d")), ln = g.add(unique_name("pristine-l")),
                    nn = g.add(unique_name("pristine-n"));
  // 1 MiB maps: quicker trials, and pages near the map's end, where a wild
  // offset leaves the map.
  StoreOptions small;
  small.map_size = std::size_t{1} << 20;
  {
    TestDict d{dn, small};
    std::vector<std::pair<std::string, std::string>> kv;
    for (int i = 0; i < 2000; ++i)
      kv.emplace_back("key" + std::to_string(i),
                      std::string(static_cast<std::size_t>(i % 90), 'v'));
    for (int i = 0; i < 3; ++i) kv.emplace_back("big" + std::to_string(i), std::string(9000, 'b'));
    d.update(kv);
    List<std::int64_t> l{ln, small};
    for (std::int64_t i = 0; i < 1500; ++i) l.append(i);
    Namespace ns{nn, small};
    for (int i = 0; i < 40; ++i) {
      ns.set("counter" + std::to_string(i), std::int64_t{i});
      ns.set("label" + std::to_string(i), std::string(static_cast<std::size_t>(i * 7), 'x'));
    }
  }
  const std::vector<char> images[] = {image_of(dn), image_of(ln), image_of(nn)};
  constexpr int kTrials = 250;
  int tally[8] = {};
  for (int trial = 0; trial < kTrials; ++trial) {
    const Damage how = static_cast<Damage>(trial % kDamages);
    StoreGuard copies;
    const std::string names[] = {copies.add(unique_name("dmg-d")), copies.add(unique_name("dmg-l")),
                                 copies.add(unique_name("dmg-n"))};
    for (int i = 0; i < 3; ++i) write_image(names[i], images[i]);
    pid_t child = fork_child([&]() -> int {
      std::mt19937_64 rng(0x5eed0000U + static_cast<unsigned>(trial));
      std::optional<TestDict> d;
      std::optional<List<std::int64_t>> l;
      std::optional<Namespace> ns;
      auto open_all = [&] {
        attempt([&] { d.emplace(TestDict::open(names[0], small)); });
        attempt([&] { l.emplace(List<std::int64_t>::open(names[1], small)); });
        attempt([&] { ns.emplace(Namespace::open(names[2], small)); });
      };
      // Half the trials damage stores this process has open and mapped,
      // half damage them before it opens them.
      const bool open_first = trial % 2 == 0;
      if (open_first) {
        open_all();
        if (!d || !l || !ns) return 10;  // the pristine copies must open
      }
      for (int i = 0; i < 3; ++i) damage(names[i], images[i].size(), how, rng);
      if (!open_first) open_all();
      use_all(d, l, ns, rng);
      return g_seen;
    });
    ChildStatus st = wait_child(child, 60s);
    ASSERT_FALSE(st.timed_out) << "trial " << trial << " (" << to_string(how) << "): hung";
    ASSERT_TRUE(st.exited) << "trial " << trial << " (" << to_string(how) << "): killed by signal "
                           << st.signal;
    ASSERT_TRUE(st.code >= 0 && st.code < 8)
        << "trial " << trial << " (" << to_string(how) << "): exit " << st.code;
    ++tally[st.code];
  }
  int faults = 0, assertions = 0, retired = 0;
  for (int c = 0; c < 8; ++c) {
    if (c & kSawFault) faults += tally[c];
    if (c & kSawAssertion) assertions += tally[c];
    if (c & kSawRetired) retired += tally[c];
  }
  std::cout << kTrials << " trials: " << faults << " caught a fault inside LMDB, " << assertions
            << " an LMDB assertion, " << retired << " retired a writer\n";
  // The damage must reach the guard, or this test no longer tests it.
  EXPECT_GT(faults + assertions, 0);
}

// ---- the guard itself, driven by a test hook at a known point ----

void raise_segv() noexcept { std::raise(SIGSEGV); }

TEST(DictCorrupt, AFaultInsideAReadIsCorruptedAndTheStoreStaysUsable) {
  StoreGuard g(unique_name("guard-read"));
  auto d = filled(g.name());
  // More faulted reads than the store has reader slots: each faulted read
  // transaction is aborted, not leaked.
  for (int i = 0; i < 1100; ++i) {
    detail::g_kv_inside_lmdb.store(raise_segv, std::memory_order_relaxed);
    try {
      (void)d.get("key1");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::corrupted);
      ASSERT_NE(e.reason().find("SIGSEGV"), std::string::npos) << e.reason();
    }
    detail::g_kv_inside_lmdb.store(nullptr, std::memory_order_relaxed);
  }
  EXPECT_EQ(d.get("key1"), std::string(40, 'v'));
  d.set("after", "ok");
  EXPECT_EQ(d.get("after"), "ok");
}

TEST(DictCorrupt, AFaultInsideAWriteRetiresTheStoreHereAndReleasesTheWriterLock) {
  StoreGuard g(unique_name("guard-write"));
  auto d = filled(g.name());
  int faulted[2], release[2];
  ASSERT_EQ(::pipe(faulted), 0);
  ASSERT_EQ(::pipe(release), 0);
  pid_t writer = fork_child([&]() -> int {
    ::close(faulted[0]);
    ::close(release[1]);
    auto mine = Dict<std::string, std::string>::open(g.name());
    detail::g_kv_inside_lmdb.store(raise_segv, std::memory_order_relaxed);
    if (code_of([&] { mine.set("k", "v"); }) != Errc::corrupted) return 2;
    detail::g_kv_inside_lmdb.store(nullptr, std::memory_order_relaxed);
    // Retired here: writes are refused, reads still work.
    if (code_of([&] { mine.set("k", "v"); }) != Errc::corrupted) return 3;
    if (mine.get("key1") != std::string(40, 'v')) return 4;
    char c = 1;
    if (::write(faulted[1], &c, 1) != 1) return 5;
    (void)::read(release[0], &c, 1);  // stay alive: LMDB must not need our death
    return 0;
  });
  ::close(faulted[1]);
  ::close(release[0]);
  char c = 0;
  ASSERT_EQ(::read(faulted[0], &c, 1), 1) << "the faulting writer did not get that far";
  // The faulted writer lives on and holds no lock: another process writes.
  pid_t other = fork_child([&]() -> int {
    auto theirs = Dict<std::string, std::string>::open(g.name());
    theirs.set("k", "from another process");
    return theirs.get("k") == "from another process" ? 0 : 1;
  });
  ChildStatus so = wait_child(other, 20s);
  ::close(release[1]);
  ChildStatus sw = wait_child(writer, 20s);
  ::close(faulted[0]);
  EXPECT_FALSE(so.timed_out) << "the writer lock was never released";
  EXPECT_TRUE(so.exited && so.code == 0) << so.code << " signal " << so.signal;
  EXPECT_TRUE(sw.exited && sw.code == 0) << sw.code << " signal " << sw.signal;
  EXPECT_EQ(d.get("k"), "from another process");
}

void user_handler(int) { ::_exit(42); }

TEST(DictCorrupt, AFaultOutsideTheStoreStillReachesTheProgramsHandlerOrKillsIt) {
  StoreGuard g(unique_name("guard-chain"));
  // A handler the program installed before the store's is still called.
  pid_t chained = fork_child([&]() -> int {
    std::signal(SIGSEGV, user_handler);
    Dict<std::string, int> d{g.name()};
    d.set("x", 1);
    std::raise(SIGSEGV);
    return 1;
  });
  ChildStatus sc = wait_child(chained, 20s);
  EXPECT_TRUE(sc.exited && sc.code == 42) << sc.code << " signal " << sc.signal;
  // With none, the fault ends the process: the default action, or the
  // sanitizer's report (its handler is the one the store's chains to).
  pid_t plain = fork_child([&]() -> int {
    Dict<std::string, int> d{g.name()};
    d.set("y", 2);
    std::raise(SIGSEGV);
    return 0;
  });
  ChildStatus sp = wait_child(plain, 20s);
  EXPECT_FALSE(sp.timed_out);
  EXPECT_TRUE((!sp.exited && sp.signal == SIGSEGV) || (sp.exited && sp.code != 0))
      << sp.code << " signal " << sp.signal;
}

}  // namespace
}  // namespace shmbus::test
