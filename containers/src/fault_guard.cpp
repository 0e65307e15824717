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
  // Not ours: what would have happened without us. SIG_DFL and SIG_IGN
  // are values of the handler whatever the flags say (the union's two
  // members share the pointer), so they are tested before any call.
  const struct sigaction& prev = sig == SIGSEGV ? g_prev_segv : g_prev_bus;
  const bool real_fault = info != nullptr && info->si_code > 0;  // not sent by a process
  if (prev.sa_handler == SIG_IGN && !real_fault) return;         // ignored, as it was
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    // As the kernel would run it: its sa_mask blocked, and `sig` too
    // unless SA_NODEFER (blocked already, for our handler). SA_RESETHAND
    // and SA_ONSTACK of the previous action are not reproduced.
    sigset_t old;
    pthread_sigmask(SIG_BLOCK, &prev.sa_mask, &old);
    if ((prev.sa_flags & SA_NODEFER) != 0) {
      sigset_t self;
      sigemptyset(&self);
      sigaddset(&self, sig);
      pthread_sigmask(SIG_UNBLOCK, &self, nullptr);
    }
    if ((prev.sa_flags & SA_SIGINFO) != 0) {
      prev.sa_sigaction(sig, info, context);
    } else {
      prev.sa_handler(sig);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return;
  }
  // The default action (a real fault ignored gets it too, as the kernel
  // does): restore it; a fault happens again on return, a signal sent by
  // a process is raised again.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (!real_fault) raise(sig);
}

}  // namespace

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    // The previous actions are read before ours goes in: a fault on
    // another thread just after the install finds them set (read in the
    // same call, they were written only after ours was live). A handler
    // the program changes between our read and our install is lost.
    sigaction(SIGSEGV, nullptr, &g_prev_segv);
    sigaction(SIGBUS, nullptr, &g_prev_bus);
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
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
