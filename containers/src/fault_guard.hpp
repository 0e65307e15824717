// The fault guard of the LMDB calls (kv_store.cpp): a SIGSEGV or SIGBUS
// raised inside an LMDB call of this thread, or an LMDB assertion that
// fails there, becomes an error return instead of a crash.
//
// Why: LMDB 0.9 trusts its file. It bounds page numbers by the last page
// its meta page names (mdb_page_get), but not what a page holds: garbage
// offsets and sizes inside a page make it read past the map (SIGSEGV) or
// trip its assertions (abort()). A store is a file in /dev/shm that any
// process with the permission can scribble on; the project's rule is an
// Error, never a crash.
//
// How: guarded(f) arms a per-thread sigjmp_buf around f (LMDB calls only:
// nothing that allocates, takes a lock or must unwind), and a process-wide
// SIGSEGV/SIGBUS handler (installed once, the first time a store opens)
// and LMDB's assert callback jump back to it. With no guard armed on the
// faulting thread the handler hands the signal to the handler it replaced
// (a sanitizer's, the program's) or to the default action, so a fault
// anywhere else crashes as it would without us: the previous handler runs
// with its own sa_mask (and SA_NODEFER) applied, SIG_IGN ignores a signal
// a process sent (a real fault, as in the kernel, gets the default
// action); its SA_RESETHAND and SA_ONSTACK are not reproduced. A program that installs
// its own SIGSEGV/SIGBUS handler after opening a store must chain to the
// previous one, or the stores lose this guard (as with a JVM's).
//
// What a jump leaves: a read transaction holds no lock (LMDB's readers
// take none while they read), so it is simply aborted. A write call
// (mdb_put, mdb_del, mdb_drop, mdb_txn_commit) may leave LMDB's
// transaction half-updated (a stack cursor linked into it), so that
// transaction is never aborted: kv_store.cpp retires the environment in
// this process and releases LMDB's writer mutex itself.
#pragma once

#include <lmdb.h>
#include <setjmp.h>

#include <atomic>
#include <string>

namespace shmbus::detail {

struct FaultState {
  // [kv.guard] Armed by guarded() on this thread, read by the signal handler
  // on this thread (a fault is delivered to the thread that faulted):
  // relaxed, with signal fences ordering it around the guarded calls.
  std::atomic<sigjmp_buf*> jump{nullptr};
  int signo = 0;            // SIGSEGV or SIGBUS; 0: an LMDB assertion
  void* address = nullptr;  // the faulting address
  char assertion[240] = {};
};
extern constinit thread_local FaultState t_fault;

// Installs the SIGSEGV/SIGBUS handler once per process.
void install_fault_handler();
// LMDB's assert callback (mdb_env_set_assert).
void on_lmdb_assert(MDB_env* env, const char* message);
// What the last jump of this thread caught, for an Error's text.
std::string describe_fault();

// Runs f; false if it faulted (f did not finish). f must not allocate,
// lock or throw.
template <class F>
[[nodiscard]] bool guarded(F&& f) noexcept {
  FaultState& s = t_fault;
  sigjmp_buf here;
  // No signal mask saved (no system call): the handler unblocks its signal.
  if (sigsetjmp(here, 0) != 0) return false;
  s.jump.store(&here, std::memory_order_relaxed);       // [kv.guard]
  std::atomic_signal_fence(std::memory_order_seq_cst);  // [kv.guard] armed before f
  f();
  std::atomic_signal_fence(std::memory_order_seq_cst);  // [kv.guard] f done before disarming
  s.jump.store(nullptr, std::memory_order_relaxed);     // [kv.guard]
  return true;
}

}  // namespace shmbus::detail
