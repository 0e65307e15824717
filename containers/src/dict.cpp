#include "shmbus/dict.hpp"

#include "shmbus/codec.hpp"

namespace shmbus::detail {

void throw_undecodable(const std::string& store, std::size_t size, std::string_view type) {
  throw Error(Errc::wrong_type, store,
              "a stored entry of " + std::to_string(size) + " bytes does not decode as " +
                  std::string(type) + " (" + last_decode_error() + ")");
}

void throw_missing_key(const std::string& store) {
  throw Error(Errc::not_found, store, "no such key");
}

}  // namespace shmbus::detail
