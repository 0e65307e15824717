// A Namespace of counters shared by workers, as Python's
//   ns = manager.Namespace(); ns.done = 0; ns.errors = 0
// where each worker bumps its counters; update() makes each bump atomic
// (Python needs a Lock around `ns.done += 1`).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shmbus/namespace.hpp"

int main() {
  const std::string name = "example-ns-" + std::to_string(::getpid());
  shmbus::Namespace ns = shmbus::Namespace::create(name);  // named: any process may open it
  ns.set("done", 0L);
  ns.set("errors", 0L);
  ns.set("status", "running");

  constexpr int kWorkers = 4, kTasks = 100;
  std::vector<pid_t> workers;
  for (int w = 0; w < kWorkers; ++w) {
    pid_t p = ::fork();
    if (p == 0) {
      shmbus::Namespace mine = shmbus::Namespace::open(name);
      for (int t = 0; t < kTasks; ++t) {
        mine.update<long>("done", [](long& v) { ++v; });
        if (t % 10 == 0) mine.update<long>("errors", [](long& v) { ++v; });
      }
      _exit(0);
    }
    workers.push_back(p);
  }
  for (pid_t p : workers) ::waitpid(p, nullptr, 0);
  ns.set("status", "finished");
  const long done = ns.get<long>("done"), errors = ns.get<long>("errors");
  std::printf("Namespace(done=%ld, errors=%ld, status='%s')\n", done, errors,
              ns.get<std::string>("status").c_str());
  shmbus::Namespace::unlink(name);
  return done == kWorkers * kTasks && errors == kWorkers * (kTasks / 10) ? 0 : 1;
}
