// Counting letters in chunks of a text in worker processes and merging
// their dicts: the seeds' multiprocessing example
//
//   def count_letters(text):
//       counts = {}
//       for char in text:
//           if char.isalpha():
//               counts[char.lower()] = counts.get(char.lower(), 0) + 1
//       return counts
//   ...
//   results = pool.map(count_letters, chunks)
//
// with the chunks (strings) on one queue and the counts (dicts) coming
// back on another; no byte packing.
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

using Counts = std::map<std::string, int>;

Counts count_letters(const std::string& text) {
  Counts counts;
  for (unsigned char c : text)
    if (std::isalpha(c)) ++counts[std::string(1, static_cast<char>(std::tolower(c)))];
  return counts;
}

int worker(shmbus::Queue<std::optional<std::string>>& chunks, shmbus::Queue<Counts>& results) {
  for (;;) {
    std::optional<std::string> chunk;
    if (chunks.get(chunk) != shmbus::QueueResult::ok) return 1;
    if (!chunk) return 0;  // the sentinel
    if (results.put(count_letters(*chunk)) != shmbus::QueueResult::ok) return 1;
  }
}

}  // namespace

int main() {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "The quick brown fox jumps over the lazy dog. ";
  const std::string stem = "example-letters-" + std::to_string(::getpid());
  auto chunks = shmbus::Queue<std::optional<std::string>>::create(stem + "-chunks");
  auto results = shmbus::Queue<Counts>::create(stem + "-results");

  constexpr int kWorkers = 4;
  std::vector<pid_t> pids;
  for (int i = 0; i < kWorkers; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(worker(chunks, results));
    pids.push_back(pid);
  }
  // Four chunks of about 2.3 KB each: far beyond a queue slot (240 B),
  // they travel through the queue's heap.
  const std::size_t step = text.size() / kWorkers + 1;
  for (std::size_t at = 0; at < text.size(); at += step)
    if (chunks.put(text.substr(at, step)) != shmbus::QueueResult::ok) return 1;
  Counts counts;
  for (int i = 0; i < kWorkers; ++i) {
    Counts part;
    if (results.get_for(part, std::chrono::seconds(10)) != shmbus::QueueResult::ok) return 1;
    for (const auto& [letter, n] : part) counts[letter] += n;
  }
  for (int i = 0; i < kWorkers; ++i)
    if (chunks.put(std::nullopt) != shmbus::QueueResult::ok) return 1;
  int ok = 1;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  for (const auto& [letter, n] : counts) std::printf("%s: %d\n", letter.c_str(), n);
  shmbus::Queue<std::optional<std::string>>::unlink(stem + "-chunks");
  shmbus::Queue<Counts>::unlink(stem + "-results");
  ok &= counts == count_letters(text);
  return ok ? 0 : 1;
}
