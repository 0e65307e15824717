// Waiting for results from several workers and for their deaths in one
// place: the C++ counterpart of multiprocessing's
//
//   for r in wait(readers + [p.sentinel for p in procs]):
//       ...
//
// Four worker processes each send their results over their own pipe; one
// of them is killed halfway (SIGKILL). The parent waits on every pipe end
// and every worker's sentinel at once with shmbus::wait, takes each result
// as it comes, and learns of each exit (and of the killed worker's dead
// pipe) from the same call. Exits 0 when the books balance.
#include <csignal>
#include <cstdio>
#include <vector>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  constexpr int kWorkers = 4, kResults = 5, kVictim = 2;
  std::vector<shmbus::Connection> readers, writers;
  std::vector<shmbus::Process> procs;
  for (int i = 0; i < kWorkers; ++i) {
    auto [r, w] = shmbus::Pipe(false);  // r receives, w sends
    readers.push_back(std::move(r));
    writers.push_back(std::move(w));
    procs.emplace_back([i, &writers] {  // the child uses its inherited copy
      shmbus::Connection& out = writers[static_cast<std::size_t>(i)];
      for (int k = 0; k < kResults; ++k) {
        if (i == kVictim && k == kResults / 2) std::raise(SIGKILL);  // dies mid-way
        if (out.send(std::int32_t{i * 100 + k}) != shmbus::SendResult::ok) return 1;
      }
      out.close();  // EOF for the reader
      return 0;
    });
  }
  for (auto& p : procs) p.start();

  // Pipe ends first, then the sentinels: positions say which is which.
  std::vector<shmbus::Waitable> set;
  for (auto& r : readers) set.emplace_back(r);
  for (auto& p : procs) set.emplace_back(p);
  std::vector<bool> pipe_open(kWorkers, true), alive(kWorkers, true);
  int results = 0, exits = 0, dead_pipes = 0, eofs = 0;
  std::vector<std::size_t> ready;
  std::vector<shmbus::Waitable> live;
  while (exits < kWorkers || eofs + dead_pipes < kWorkers) {
    live.clear();  // what is still open, mapped back through `index`
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < set.size(); ++i) {
      const bool open = i < kWorkers ? pipe_open[i] : alive[i - kWorkers];
      if (open) {
        live.push_back(set[i]);
        index.push_back(i);
      }
    }
    shmbus::wait(live, ready, 10s);
    if (ready.empty()) {
      std::puts("nothing happened for 10 s");
      return 1;
    }
    for (std::size_t j : ready) {
      const std::size_t i = index[j];
      if (i >= kWorkers) {  // a sentinel: that worker ended
        auto& p = procs[i - kWorkers];
        p.join();
        alive[i - kWorkers] = false;
        ++exits;
        std::printf("worker %zu exited with %d\n", i - kWorkers, *p.exitcode());
        continue;
      }
      std::int32_t v = 0;
      switch (readers[i].recv(v)) {
        case shmbus::RecvResult::ok:
          ++results;
          break;
        case shmbus::RecvResult::eof:  // closed by a worker that returned
          pipe_open[i] = false;
          ++eofs;
          break;
        case shmbus::RecvResult::peer_dead:  // the killed worker's pipe
          pipe_open[i] = false;
          ++dead_pipes;
          break;
        default:
          return 1;
      }
    }
  }
  std::printf("%d results, %d workers exited, %d pipes at EOF, %d of a dead worker\n", results,
              exits, eofs, dead_pipes);
  const bool ok = results == (kWorkers - 1) * kResults + kResults / 2 &&
                  *procs[kVictim].exitcode() == -SIGKILL && dead_pipes == 1 && eofs == kWorkers - 1;
  return ok ? 0 : 1;
}
