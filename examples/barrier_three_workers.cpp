// Three workers meet at a Barrier: none passes until all have arrived; the
// last to arrive runs the action (Python's multiprocessing.Barrier example).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  const std::string name = "example-barrier-" + std::to_string(::getpid());
  auto barrier = shmbus::Barrier::create(name, 3);
  std::vector<pid_t> workers;
  for (int w = 1; w <= 3; ++w) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int code = 0;
      {
        auto b = shmbus::Barrier::open(name, [] { std::printf("all three arrived\n"); });
        std::printf("worker %d: working, then waiting at the barrier\n", w);
        std::fflush(stdout);
        auto r = b.wait_for(5s);
        if (r) {
          std::printf("worker %d: passed the barrier (arrival %u)\n", w, r.index);
        } else {
          std::printf("worker %d: barrier broken\n", w);
          code = 1;
        }
        std::fflush(stdout);
      }  // the handle deregisters this party
      _exit(code);
    }
    workers.push_back(pid);
  }
  int failures = 0;
  for (pid_t p : workers) {
    int status = 0;
    ::waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
  }
  shmbus::Barrier::unlink(name);
  return failures == 0 ? 0 : 1;
}
