#include "shmbus/detail/fork_wiped.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <new>
#include <vector>

namespace shmbus::detail {
namespace {

constexpr std::size_t kChunkBytes = 4096;
constexpr std::size_t kWordsPerChunk = kChunkBytes / sizeof(std::uint64_t);

struct Pool {
  std::mutex m;
  std::vector<std::uint64_t*> free;  // under m
  // relaxed: a flag read for information; chunks are made under m.
  std::atomic<bool> wiping{true};
};
Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: words may be freed during exit
  return *p;
}

// Under pool().m: maps a chunk, marks it wipe-on-fork, hands out its words.
void grow(Pool& p) {
  void* a =
      ::mmap(nullptr, kChunkBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) throw std::bad_alloc();
  if (::madvise(a, kChunkBytes, MADV_WIPEONFORK) != 0)
    p.wiping.store(false, std::memory_order_relaxed);
  auto* words = static_cast<std::uint64_t*>(a);
  p.free.reserve(p.free.size() + kWordsPerChunk);
  for (std::size_t i = kWordsPerChunk; i-- > 0;) p.free.push_back(words + i);
}

}  // namespace

std::uint64_t* allocate_fork_wiped_word() {
  Pool& p = pool();
  std::lock_guard lock(p.m);
  if (p.free.empty()) grow(p);
  std::uint64_t* w = p.free.back();
  p.free.pop_back();
  return w;
}

void free_fork_wiped_word(std::uint64_t* word) noexcept {
  if (word == nullptr) return;
  // relaxed: the owner is done with it; the mutex orders the reuse.
  std::atomic_ref(*word).store(0, std::memory_order_relaxed);
  Pool& p = pool();
  std::lock_guard lock(p.m);
  try {
    p.free.push_back(word);
  } catch (...) {  // without memory the word is leaked, never reused twice
  }
}

bool fork_wiping_works() noexcept {
  Pool& p = pool();
  {
    std::lock_guard lock(p.m);
    try {
      if (p.free.empty()) grow(p);
    } catch (...) {
      return false;
    }
  }
  return p.wiping.load(std::memory_order_relaxed);
}

}  // namespace shmbus::detail
