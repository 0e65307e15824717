// Python's `with semaphore:` over an anonymous Semaphore: at most two of
// five workers are inside at once.
#include <cstdio>
#include <mutex>
#include <vector>

#include "shmbus/shmbus.hpp"

int main() {
  shmbus::Semaphore slots{2};
  shmbus::Value<int> inside{0};
  shmbus::Value<int> most{0};
  std::vector<shmbus::Process> workers;
  for (int w = 1; w <= 5; ++w) {
    workers.emplace_back([&, w] {
      std::scoped_lock guard(slots);  // with slots:
      const int now = inside.fetch_add(1) + 1;
      {
        std::scoped_lock g(most.get_lock());
        if (now > most.get()) most.set(now);
      }
      std::printf("worker %d inside (%d in all)\n", w, now);
      inside.fetch_sub(1);
      return 0;
    });
    workers.back().start();
  }
  int failures = 0;
  for (auto& p : workers) {
    p.join();
    if (p.exitcode() != 0) ++failures;
  }
  return failures == 0 && most.get() <= 2 ? 0 : 1;
}
