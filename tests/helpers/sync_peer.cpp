// A separately started process for the primitives' multi-process tests: it
// opens objects by name (never inherits them) and does one thing.
//
//   sync_peer event-wait NAME           exit 0 once set (10 s limit, else 1)
//   sync_peer event-set NAME            sets it, exit 0
//   sync_peer lock-hold LOCK READY      acquires LOCK, sets Event READY, then
//                                       sleeps until killed
//   sync_peer value-inc VALUE N         N increments of Value<long> under its lock
//   sync_peer barrier NAME              exit = arrival index, 100 if broken
//   sync_peer barrier-hang NAME READY   opens (registers), sets READY, never
//                                       arrives (to be killed)
//   sync_peer cond-wait COND FLAG       waits on Condition until Value<int>
//                                       FLAG != 0, exit 0 (10 s limit, else 1)
//   sync_peer sem-acquire NAME          acquires one token (10 s limit), exit 0
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: sync_peer MODE NAME [ARG]\n");
    return 2;
  }
  const std::string mode = argv[1];
  const std::string name = argv[2];
  const std::string arg = argc > 3 ? argv[3] : "";
  try {
    if (mode == "event-wait") {
      auto ev = shmbus::Event::open(name);
      return ev.wait_for(10s) ? 0 : 1;
    }
    if (mode == "event-set") {
      shmbus::Event::open(name).set();
      return 0;
    }
    if (mode == "lock-hold") {
      auto lock = shmbus::Lock::open(name);
      auto ready = shmbus::Event::open(arg);
      if (!shmbus::holds(lock.acquire())) return 3;
      ready.set();
      for (;;) ::pause();
    }
    if (mode == "value-inc") {
      auto v = shmbus::Value<long>::open(name);
      const long n = std::strtol(arg.c_str(), nullptr, 10);
      for (long i = 0; i < n; ++i) {
        std::scoped_lock g(v.get_lock());
        v.set(v.get() + 1);
      }
      return 0;
    }
    if (mode == "barrier") {
      auto b = shmbus::Barrier::open(name);
      auto r = b.wait_for(10s);
      return r ? static_cast<int>(r.index) : 100;
    }
    if (mode == "barrier-hang") {
      auto b = shmbus::Barrier::open(name);
      shmbus::Event::open(arg).set();
      for (;;) ::pause();
    }
    if (mode == "cond-wait") {
      auto cond = shmbus::Condition::open(name);
      auto flag = shmbus::Value<int>::open(arg);
      std::unique_lock g(cond);
      return cond.wait_for([&] { return flag.get() != 0; }, 10s) ? 0 : 1;
    }
    if (mode == "sem-acquire") {
      auto sem = shmbus::Semaphore::open(name);
      return sem.acquire_for(10s) ? 0 : 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sync_peer %s: %s\n", mode.c_str(), e.what());
    return 4;
  }
  std::fprintf(stderr, "sync_peer: unknown mode %s\n", mode.c_str());
  return 2;
}
