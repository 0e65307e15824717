// Pool through the codec: string and container arguments and results,
// callables that carry state (capturing lambdas, MSGPACK_DEFINE function
// objects, shmbus::partial), and a task's exception coming back as its own
// type, a registered one, or RemoteError.
#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <typeinfo>
#include <vector>

#include "shmbus/pool.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;

using Counts = std::map<std::string, int>;

Counts count_words(const std::string& text) {
  Counts counts;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find(' ', at), text.size());
    if (end > at) ++counts[text.substr(at, end - at)];
    at = end + 1;
  }
  return counts;
}

std::string shout(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::size_t length_of(const std::string& s) { return s.size(); }

std::vector<int> repeat(int value, std::size_t times) { return std::vector<int>(times, value); }

std::string labelled(const std::string& label, const std::vector<int>& weights, int x) {
  int sum = 0;
  for (int w : weights) sum += w * x;
  return label + std::to_string(sum);
}

std::vector<std::string> words(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back("word" + std::string(static_cast<std::size_t>(i % 50), 'x'));
  return out;
}

TEST(PoolCodec, StringArgumentsAndResultsComeBackInOrderForAnyChunkSize) {
  Pool pool({.processes = 3});
  const auto xs = words(500);
  std::vector<std::string> want;
  std::vector<std::size_t> lengths;
  for (const auto& s : xs) {
    want.push_back(shout(s));
    lengths.push_back(s.size());
  }
  for (std::size_t chunk : {0u, 1u, 7u, 500u}) {
    EXPECT_EQ(pool.map(shout, xs, chunk), want) << "chunksize " << chunk;
    EXPECT_EQ(pool.map(length_of, xs, chunk), lengths) << "chunksize " << chunk;
  }
  EXPECT_EQ(pool.apply(shout, std::string()), "");
  EXPECT_EQ(pool.apply(shout, "a literal"), "A LITERAL");  // converted to the parameter's type
  EXPECT_TRUE(pool.map(shout, std::vector<std::string>{}).empty());
}

TEST(PoolCodec, ContainerArgumentsAndResultsTravel) {
  Pool pool({.processes = 2});
  const std::vector<std::string> texts{"a b a", "", "c c c b", "the end"};
  const auto counts = pool.map(count_words, texts);
  ASSERT_EQ(counts.size(), texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(counts[i], count_words(texts[i]));
  // A result that is a vector is one value (apply), or one per item (map).
  EXPECT_EQ(pool.apply(repeat, 7, std::size_t{3}), (std::vector<int>{7, 7, 7}));
  const std::vector<std::tuple<int, std::size_t>> args{{1, 2}, {2, 0}, {3, 1}};
  EXPECT_EQ(pool.starmap(repeat, args), (std::vector<std::vector<int>>{{1, 1}, {}, {3}}));
  auto r = pool.apply_async(
      [](const std::vector<std::string>& v) {
        return std::accumulate(v.begin(), v.end(), std::string());
      },
      std::vector<std::string>{"x", "y", "z"});
  EXPECT_EQ(r.get(), "xyz");
}

TEST(PoolCodec, ResultsLargerThanAFrameAndManySmallItemsArrive) {
  Pool pool({.processes = 2, .pipe_capacity = 64 << 10});
  // A result of 1 MiB: sent in fragments through a 64 KiB pipe.
  const auto big = pool.apply(repeat, 5, std::size_t{1} << 18);
  ASSERT_EQ(big.size(), std::size_t{1} << 18);
  EXPECT_EQ(big.front(), 5);
  EXPECT_EQ(big.back(), 5);
  // Many items whose arguments fill several frames: chunks are cut by size.
  std::vector<std::string> xs(300, std::string(1000, 'q'));
  const auto lens = pool.map(length_of, xs, 1000);
  EXPECT_EQ(lens, std::vector<std::size_t>(300, 1000));
  // One item larger than a frame is refused before anything is sent.
  EXPECT_EQ(test::code_of([&] { (void)pool.apply(length_of, std::string(100 << 10, 'z')); }),
            Errc::too_large);
  EXPECT_EQ(pool.apply(length_of, std::string(10, 'z')), 10u);
}

TEST(PoolCodec, ImapAndImapUnorderedYieldStrings) {
  Pool pool({.processes = 3});
  const auto xs = words(120);
  std::vector<std::string> ordered;
  for (const std::string& v : pool.imap(shout, xs, 4)) ordered.push_back(v);
  std::vector<std::string> want;
  for (const auto& s : xs) want.push_back(shout(s));
  EXPECT_EQ(ordered, want);
  std::multiset<std::string> any;
  auto it = pool.imap_unordered(shout, xs);
  while (auto v = it.next(10s)) any.insert(*v);
  EXPECT_EQ(any, std::multiset<std::string>(want.begin(), want.end()));
}

TEST(PoolCodec, ALambdaCapturingValuesMadeAfterTheForkCarriesThem) {
  Pool pool({.processes = 2});  // the workers fork here
  const int k = 7;              // made after: only the capture brings it
  const double offset = 0.5;
  const std::array<int, 3> table{10, 20, 30};
  const auto got = pool.map([k, offset, table](int x) { return k * x + offset + table[x % 3]; },
                            std::vector<int>{0, 1, 2, 3});
  EXPECT_EQ(got, (std::vector<double>{10.5, 27.5, 44.5, 31.5}));
  // With string arguments and results too.
  const char sep = '/';
  EXPECT_EQ(pool.apply([sep](const std::string& a, const std::string& b) { return a + sep + b; },
                       "usr", "lib"),
            "usr/lib");
}

// A function object whose state (a string, a map) travels as msgpack.
struct Translator {
  std::string prefix;
  std::map<std::string, std::string> table;
  std::string operator()(const std::string& word) const {
    auto it = table.find(word);
    return prefix + (it == table.end() ? word : it->second);
  }
  MSGPACK_DEFINE(prefix, table)
};

TEST(PoolCodec, AFunctionObjectWithMsgpackDefineCarriesItsState) {
  Pool pool({.processes = 2});
  const Translator t{"fr:", {{"cat", "chat"}, {"dog", "chien"}}};
  EXPECT_EQ(pool.map(t, std::vector<std::string>{"cat", "dog", "cow"}),
            (std::vector<std::string>{"fr:chat", "fr:chien", "fr:cow"}));
}

TEST(PoolCodec, PartialBindsStringsAndContainers) {
  Pool pool({.processes = 2});
  std::string label = "sum=";  // made after the fork
  const auto f = partial(labelled, label, std::vector<int>{1, 2, 3});
  EXPECT_EQ(pool.map(f, std::vector<int>{0, 1, 10}),
            (std::vector<std::string>{"sum=0", "sum=6", "sum=60"}));
  EXPECT_EQ(pool.apply(partial(labelled, "n", std::vector<int>{2}), 4), "n8");
  EXPECT_EQ(pool.apply(partial(labelled, "all", std::vector<int>{1}, 5)), "all5");
}

// What can travel, said at compile time.
static_assert(detail::PoolCallable<decltype(&shout)>);
static_assert(detail::PoolCallable<Translator>);
static_assert(!detail::PoolCallable<std::function<int(int)>>);

template <class E>
void expect_same_type(Pool& pool) {
  try {
    (void)pool.apply([](int x) -> int { throw E("what " + std::to_string(x)); }, 3);
    ADD_FAILURE() << "no exception for " << typeid(E).name();
  } catch (const E& e) {
    EXPECT_EQ(typeid(e), typeid(E));
    EXPECT_STREQ(e.what(), "what 3");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wanted " << typeid(E).name() << ", got " << typeid(e).name() << ": "
                  << e.what();
  }
}

TEST(PoolCodec, StandardExceptionsComeBackAsTheirOwnType) {
  Pool pool({.processes = 2});
  expect_same_type<std::runtime_error>(pool);
  expect_same_type<std::logic_error>(pool);
  expect_same_type<std::invalid_argument>(pool);
  expect_same_type<std::domain_error>(pool);
  expect_same_type<std::length_error>(pool);
  expect_same_type<std::out_of_range>(pool);
  expect_same_type<std::range_error>(pool);
  expect_same_type<std::overflow_error>(pool);
  expect_same_type<std::underflow_error>(pool);
  EXPECT_THROW((void)pool.apply([](int) -> int { throw std::bad_alloc(); }, 0), std::bad_alloc);
  // A shmbus::Error keeps its code, object and reason.
  try {
    (void)pool.apply([](int) -> int { throw Error(Errc::not_found, "orders", "no such queue"); },
                     0);
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
    EXPECT_EQ(e.object(), "orders");
    EXPECT_EQ(e.reason(), "no such queue");
  }
}

struct Registered : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct NotRegistered : std::logic_error {
  using std::logic_error::logic_error;
};

TEST(PoolCodec, ARegisteredExceptionComesBackAsItsTypeAndAnyOtherAsRemoteError) {
  register_exception<Registered>();
  Pool pool({.processes = 2});
  EXPECT_THROW((void)pool.apply([](int) -> int { throw Registered("mine"); }, 0), Registered);
  try {
    (void)pool.map(
        [](int x) -> int {
          if (x == 5) throw NotRegistered("five");
          return x;
        },
        std::vector<int>{0, 1, 2, 3, 4, 5, 6}, 2);
    ADD_FAILURE() << "no exception";
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.code(), Errc::task_failed);
    EXPECT_EQ(e.type_name(), "shmbus::(anonymous namespace)::NotRegistered");
    EXPECT_EQ(e.remote_what(), "five");
    EXPECT_EQ(e.item(), 5u);
    EXPECT_NE(std::string(e.what()).find("item 5"), std::string::npos) << e.what();
  }
  try {
    (void)pool.apply([](int x) -> int { throw x; }, 42);
    ADD_FAILURE() << "no exception";
  } catch (const RemoteError& e) {
    EXPECT_EQ(e.type_name(), "int");
    EXPECT_EQ(e.remote_what(), "");
  }
  // The callback gets the same exception.
  std::string seen;
  (void)pool.apply_async([](int) -> int { throw std::out_of_range("oor"); }, 0)
      .then(
          [](int) {},
          [&](const std::exception& e) { seen = typeid(e).name() + std::string(":") + e.what(); });
  pool.close();
  pool.join();
  EXPECT_EQ(seen, typeid(std::out_of_range).name() + std::string(":oor"));
}

}  // namespace
}  // namespace shmbus
