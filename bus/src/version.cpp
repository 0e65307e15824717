#include "shmbus/version.hpp"

namespace shmbus {
std::string_view version() noexcept { return "0.1.0"; }
}  // namespace shmbus
