// N workers increment a shared Value under its lock; the total is exact
// (Python's `with counter.get_lock(): counter.value += 1`).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <vector>

#include "shmbus/shmbus.hpp"

int main() {
  const std::string name = "example-counter-" + std::to_string(::getpid());
  auto counter = shmbus::Value<long>::create(name, 0);
  constexpr int kWorkers = 4;
  constexpr int kIncrements = 10000;

  std::vector<pid_t> workers;
  for (int w = 0; w < kWorkers; ++w) {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto c = shmbus::Value<long>::open(name);
      for (int i = 0; i < kIncrements; ++i) {
        std::scoped_lock g(c.get_lock());
        c.set(c.get() + 1);
      }
      _exit(0);
    }
    workers.push_back(pid);
  }
  for (pid_t p : workers) ::waitpid(p, nullptr, 0);
  const long total = counter.get();
  std::printf("counter = %ld (expected %d)\n", total, kWorkers * kIncrements);
  shmbus::Value<long>::unlink(name);
  return total == kWorkers * kIncrements ? 0 : 1;
}
