// A Barrier(3) reused by two rounds of worker processes, with anonymous
// objects only, as the Python program would write it:
//
//   barrier = Barrier(3); hits = Value('l', 0)
//   for round in range(2):
//       workers = [Process(target=work, args=(barrier, hits)) for _ in range(3)]
//
// Each round's workers return cleanly, leaving the barrier free for the
// next round; nothing appears in /dev/shm.
#include <cstdio>
#include <vector>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  shmbus::Barrier barrier{3};
  shmbus::Value<long> hits{0};
  for (int round = 1; round <= 2; ++round) {
    std::vector<shmbus::Process> workers;
    for (int w = 1; w <= 3; ++w) {
      workers.emplace_back([&, round, w] {
        hits.fetch_add(1);
        const auto r = barrier.wait_for(5s);
        if (!r) {
          std::printf("round %d worker %d: barrier broken\n", round, w);
          return 1;
        }
        std::printf("round %d worker %d: passed (arrival %u)\n", round, w, r.index);
        return 0;
      });
      workers.back().start();
    }
    for (auto& p : workers) {
      p.join();
      if (p.exitcode() != 0) return 1;
    }
  }
  std::printf("%ld workers passed the barrier\n", hits.get());
  return hits.get() == 6 ? 0 : 1;
}
