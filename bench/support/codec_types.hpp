// The codec benches' messages (codec_bench.cpp, cost_driver.cpp): a struct
// of a string, 8 doubles and an int, and its 64 B trivially copyable
// reference.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "shmbus/codec.hpp"

namespace shmbus::bench {
// Internal to each bench binary, as a user's own message type in one file
// is: the compiler inlines its encode and decode as it would there (with
// external linkage the struct round trip read ~130 instructions more).
namespace {  // NOLINT(google-build-namespaces)

struct Quote {
  std::string symbol;
  std::vector<double> prices;
  int qty = 0;
  MSGPACK_DEFINE(symbol, prices, qty)
};

struct Pod64 {
  std::array<std::uint64_t, 8> words;
};
static_assert(sizeof(Pod64) == 64);

Quote make_quote() { return Quote{"EURUSD", {1, 2, 3, 4, 5, 6, 7, 8}, 42}; }
// The same with prices that are not whole numbers (float64 on the wire,
// where make_quote()'s are positive fixints).
Quote make_fractional_quote() {
  return Quote{"EURUSD", {1.0842, 1.0843, 1.0841, 1.0845, 1.0839, 1.0844, 1.0846, 1.0840}, 42};
}

}  // namespace
}  // namespace shmbus::bench
