// detail::exit actions — what a process gives back when it ends cleanly.
//
// Handles that hold per-process state in shared memory (a pipe end's
// owner word, a Barrier party slot) register an action here; a clean exit
// runs them, so the peers see what a close would have shown them (EOF, a
// free party slot) instead of a death. They run once per process: in a
// shmbus::Process child after its callable returns (it leaves with
// _exit), and at exit() (atexit). A process killed by a signal runs none
// and reads as dead, as it should.
//
// Who may call what: add/remove from any thread (setup paths: they take a
// process-wide mutex and may allocate); run_exit_actions() from the
// exiting thread. The mutex is held across fork() (pthread_atfork), so a
// child never inherits it locked. An action must be noexcept and must not
// call add/remove.
#pragma once

namespace shmbus::detail {

using ExitAction = void (*)(void* key) noexcept;

// Registers (or replaces) the action for `key`. Never throws: without
// memory the action is skipped, and the object then reads as dead at exit.
void add_exit_action(void* key, ExitAction action) noexcept;
// Forgets `key` (the handle closed or moved); no-op if absent.
void remove_exit_action(void* key) noexcept;
// Runs every registered action once in this process.
void run_exit_actions() noexcept;

}  // namespace shmbus::detail
