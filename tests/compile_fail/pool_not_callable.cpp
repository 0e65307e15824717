// Must NOT compile: a std::function's target cannot reach a forked worker
// (the test expects the Pool's static_assert message, not a wall of
// template errors). Use a function, a lambda capturing values by copy, an
// MSGPACK_DEFINE function object or shmbus::partial instead.
#include <functional>
#include <vector>

#include "shmbus/pool.hpp"

int run(shmbus::Pool& pool) {
  std::function<int(int)> f = [](int x) { return x + 1; };
  return pool.apply(f, 1);
}
