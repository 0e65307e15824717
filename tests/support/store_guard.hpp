// RAII removal of container stores (/dev/shm/shmbus-kv.<name>) that a test
// made, even when an assertion failed.
#pragma once

#include <string>
#include <vector>

#include "shmbus/detail/kv_store.hpp"
#include "test_support.hpp"

namespace shmbus::test {

class StoreGuard {
 public:
  StoreGuard() = default;
  explicit StoreGuard(std::string name) { add(std::move(name)); }
  StoreGuard(const StoreGuard&) = delete;
  StoreGuard& operator=(const StoreGuard&) = delete;
  ~StoreGuard() {
    for (const auto& n : names_) detail::KvStore::unlink(n);
  }
  const std::string& add(std::string name) {
    names_.push_back(std::move(name));
    return names_.back();
  }
  [[nodiscard]] const std::string& name(std::size_t i = 0) const { return names_.at(i); }

 private:
  std::vector<std::string> names_;
};

}  // namespace shmbus::test
