#include "fault_guard.hpp"

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <mutex>

namespace shmbus::detail {

constinit thread_local FaultState t_fault;

namespace {

// The handlers we replaced, for chaining: written once before ours is
// installed, only read afterwards.
struct sigaction g_prev_segv {};
struct sigaction g_prev_bus {};

// Async-signal-safe: atomics, pthread_sigmask, sigaction, raise, siglongjmp.
void on_signal(int sig, siginfo_t* info, void* context) {
  FaultState& s = t_fault;
  if (sigjmp_buf* to = s.jump.load(std::memory_order_relaxed); to != nullptr) {  // [kv.guard]
    s.jump.store(nullptr, std::memory_order_relaxed);                            // [kv.guard]
    s.signo = sig;
    s.address = info != nullptr ? info->si_addr : nullptr;
    // The kernel blocked `sig` for the handler; the jump does not restore
    // the mask (sigsetjmp saved none), so unblock it here.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    siglongjmp(*to, 1);
  }
  // Not ours: what would have happened without us.
  const struct sigaction& prev = sig == SIGSEGV ? g_prev_segv : g_prev_bus;
  if ((prev.sa_flags & SA_SIGINFO) != 0) {
    if (prev.sa_sigaction != nullptr) {
      prev.sa_sigaction(sig, info, context);
      return;
    }
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  // The default action: restore it; a fault happens again on return, a
  // signal sent by a process is raised again.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (info == nullptr || info->si_code <= 0) raise(sig);
}

}  // namespace

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
  });
}

void on_lmdb_assert(MDB_env* /*env*/, const char* message) {
  FaultState& s = t_fault;
  sigjmp_buf* to = s.jump.load(std::memory_order_relaxed);  // [kv.guard]
  if (to == nullptr) return;  // unguarded: LMDB prints it and aborts, as without us
  s.jump.store(nullptr, std::memory_order_relaxed);  // [kv.guard]
  s.signo = 0;
  s.address = nullptr;
  std::snprintf(s.assertion, sizeof s.assertion, "%s", message);
  siglongjmp(*to, 1);
}

std::string describe_fault() {
  const FaultState& s = t_fault;
  if (s.signo == 0) return std::string("LMDB's consistency check failed (") + s.assertion + ")";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s reading address %p inside LMDB",
                s.signo == SIGBUS ? "SIGBUS" : "SIGSEGV", s.address);
  return buf;
}

}  // namespace shmbus::detail
