// The library's version string, for tools and diagnostics.
#pragma once

#include <string_view>

namespace shmbus {
[[nodiscard]] std::string_view version() noexcept;
}  // namespace shmbus
