// A pool of worker processes, as multiprocessing's
//
//   def f(x): return x * x
//   with Pool(4) as p:
//       print(p.map(f, range(10)))
//       print(p.apply_async(f, (20,)).get(timeout=1))
//       for y in p.imap_unordered(f, range(10)): ...
//
// Run it on its own: it exits 0 when every result came back right.
#include <cstdio>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

long f(long x) { return x * x; }

long checked_sqrt(long x) {
  if (x < 0) throw std::domain_error("negative");
  long r = 0;
  while ((r + 1) * (r + 1) <= x) ++r;
  return r;
}

}  // namespace

int main() {
  using namespace std::chrono_literals;
  shmbus::Pool pool({.processes = 4});

  std::vector<long> xs(10);
  std::iota(xs.begin(), xs.end(), 0);
  const std::vector<long> squares = pool.map(f, xs);
  for (long y : squares) std::printf("%ld ", y);
  std::printf("\n");

  shmbus::AsyncResult<long> r = pool.apply_async(f, 20L);
  if (!r.wait_for(1s) || r.get() != 400) return 1;

  long sum = 0;
  for (long y : pool.imap_unordered(f, xs)) sum += y;
  if (sum != 285) return 2;

  // An exception in a worker comes back to the caller as its own type.
  try {
    (void)pool.map(checked_sqrt, std::vector<long>{4, 9, -1});
    return 3;
  } catch (const std::domain_error& e) {
    std::printf("as expected: %s\n", e.what());
  }

  pool.close();
  pool.join();
  return squares[9] == 81 ? 0 : 4;
}
