// A process dies (SIGKILL) holding a Lock; the next acquirer does not hang:
// it gets the lock with LockResult::owner_died, repairs the shared state and
// marks it consistent.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  const std::string name = "example-robust-" + std::to_string(::getpid());
  auto lock = shmbus::Lock::create(name);
  auto held = shmbus::Event::create(name + ".held");

  pid_t holder = ::fork();
  if (holder == 0) {
    if (!shmbus::holds(lock.acquire())) _exit(1);
    held.set();
    for (;;) ::pause();  // dies holding the lock
  }
  if (!held.wait_for(5s)) return 1;
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  std::printf("holder %d killed while holding the lock\n", static_cast<int>(holder));

  int rc = 1;
  switch (lock.acquire_for(5s)) {
    case shmbus::LockResult::owner_died:
      std::printf("acquired with owner_died: repairing state, make_consistent()\n");
      lock.make_consistent();
      lock.release();
      rc = 0;
      break;
    case shmbus::LockResult::acquired:
      std::printf("unexpected: plain acquire\n");
      break;
    case shmbus::LockResult::timeout:
      std::printf("unexpected: timeout\n");
      break;
    case shmbus::LockResult::not_recoverable:
      std::printf("unexpected: not recoverable\n");
      break;
  }
  if (rc == 0 && lock.acquire_for(1s) == shmbus::LockResult::acquired) {
    std::printf("lock usable again\n");
    lock.release();
  } else {
    rc = 1;
  }
  shmbus::Lock::unlink(name);
  shmbus::Event::unlink(name + ".held");
  return rc;
}
