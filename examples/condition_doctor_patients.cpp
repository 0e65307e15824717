// A doctor notify_all()s patients waiting on a Condition (the seed's
// doctor/patient example). Patients are forked children that open the
// Condition (and through it, its Lock) by name.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <vector>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  const std::string base = "example-ward-" + std::to_string(::getpid());
  auto lock = shmbus::Lock::create(base + ".lock");
  auto cond = shmbus::Condition::create(base, lock);
  auto doctor_in = shmbus::Value<int>::create(base + ".in", 0);
  auto waiting = shmbus::Semaphore::create(base + ".waiting", 0);

  std::vector<pid_t> patients;
  for (int i = 1; i <= 3; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto c = shmbus::Condition::open(base);
      auto in = shmbus::Value<int>::open(base + ".in");
      auto w = shmbus::Semaphore::open(base + ".waiting");
      std::unique_lock g(c);
      std::printf("patient %d: waiting for the doctor\n", i);
      std::fflush(stdout);
      w.release();
      const bool seen = c.wait_for([&] { return in.get() != 0; }, 5s);
      std::printf("patient %d: %s\n", i, seen ? "seen by the doctor" : "gave up");
      std::fflush(stdout);
      _exit(seen ? 0 : 1);
    }
    patients.push_back(pid);
  }
  for (int i = 0; i < 3; ++i) {
    if (!waiting.acquire_for(5s)) return 1;
  }
  {
    std::unique_lock g(cond);
    std::printf("doctor: arrived, notifying all patients\n");
    std::fflush(stdout);
    doctor_in.set(1);
    cond.notify_all();
  }
  int failures = 0;
  for (pid_t p : patients) {
    int status = 0;
    ::waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
  }
  for (const char* s : {"", ".lock", ".in", ".waiting"}) shmbus::Lock::unlink(base + s);
  return failures == 0 ? 0 : 1;
}
