#include "shmbus/list.hpp"

namespace shmbus::detail {

IndexKey index_key(std::uint64_t i) noexcept {
  IndexKey k{};
  for (int b = 7; b >= 0; --b, i >>= 8) k[static_cast<std::size_t>(b)] = std::byte(i & 0xff);
  return k;
}

std::uint64_t normalise_index(const std::string& store, std::int64_t i, std::uint64_t size) {
  const auto n = static_cast<std::int64_t>(size);
  std::int64_t j = i < 0 ? i + n : i;
  if (j < 0 || j >= n)
    throw Error(
        Errc::invalid_argument, store,
        "list index " + std::to_string(i) + " out of range (size " + std::to_string(size) + ")");
  return static_cast<std::uint64_t>(j);
}

std::uint64_t clamp_index(std::int64_t i, std::uint64_t size) noexcept {
  const auto n = static_cast<std::int64_t>(size);
  std::int64_t j = i < 0 ? i + n : i;
  return static_cast<std::uint64_t>(std::clamp<std::int64_t>(j, 0, n));
}

void throw_not_in_list(const std::string& store) {
  throw Error(Errc::not_found, store, "value is not in the list");
}

}  // namespace shmbus::detail
