// detail::fork_wiped_word — process-local words that read 0 in every child
// the kernel forks, however it was made.
//
// A cache of "who am I" (this_process(), a queue handle's record cache)
// is refreshed in a fork() child by a pthread_atfork handler, but a child
// made by _Fork() or a raw clone() without CLONE_VM runs no handler and
// would go on as its parent. These words live in pages marked
// MADV_WIPEONFORK (Linux 4.14): the kernel hands any child zeroed copies,
// so a cache kept in one reads "empty" there and is refilled on the slow
// path, at no cost to the fast path beyond reading the word itself.
//
// Where madvise refuses (an older kernel, a seccomp filter) the words are
// ordinary memory: fork() children are still covered by the atfork
// handlers, _Fork()/clone() children are not (README, Known gaps).
//
// Who may call what: allocate/free from any thread (setup paths: a
// process-wide mutex, may allocate); the words themselves are the
// caller's (atomic_ref for shared use between threads).
#pragma once

#include <cstdint>
#include <memory>

namespace shmbus::detail {

// A zeroed word, or throws std::bad_alloc. Freed words are reused (and
// zeroed by free_fork_wiped_word).
[[nodiscard]] std::uint64_t* allocate_fork_wiped_word();
void free_fork_wiped_word(std::uint64_t* word) noexcept;
// Whether the kernel wipes these words in a child (MADV_WIPEONFORK took).
[[nodiscard]] bool fork_wiping_works() noexcept;

struct ForkWipedDeleter {
  void operator()(std::uint64_t* w) const noexcept { free_fork_wiped_word(w); }
};
using ForkWipedWord = std::unique_ptr<std::uint64_t, ForkWipedDeleter>;
[[nodiscard]] inline ForkWipedWord make_fork_wiped_word() {
  return ForkWipedWord(allocate_fork_wiped_word());
}

}  // namespace shmbus::detail
