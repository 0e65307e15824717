#include "shmbus/detail/exit_actions.hpp"

#include <pthread.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>

namespace shmbus::detail {

namespace {

struct Registry {
  std::mutex m;
  std::unordered_map<void*, ExitAction> actions;  // under m
  pid_t ran_in = 0;                               // under m: a process that ran them
};

// Never destroyed: handles in static storage unregister during static
// destruction, after any destructor of ours would have run.
Registry& registry() {
  static auto* r = new Registry;
  return *r;
}

void lock_for_fork() noexcept { registry().m.lock(); }
void unlock_after_fork() noexcept { registry().m.unlock(); }

void install_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    (void)registry();
    ::pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
    std::atexit(run_exit_actions);
  });
}

}  // namespace

void add_exit_action(void* key, ExitAction action) noexcept {
  try {
    install_once();
    Registry& r = registry();
    std::scoped_lock g(r.m);
    r.actions[key] = action;
  } catch (...) {
    // Out of memory: this handle reads as dead at exit (documented above).
  }
}

void remove_exit_action(void* key) noexcept {
  Registry& r = registry();
  std::scoped_lock g(r.m);
  r.actions.erase(key);
}

void run_exit_actions() noexcept {
  Registry& r = registry();
  std::scoped_lock g(r.m);
  const pid_t me = ::getpid();
  if (r.ran_in == me) return;
  r.ran_in = me;
  for (const auto& [key, action] : r.actions) action(key);
}

}  // namespace shmbus::detail
