// The seeds' letter count with a Pool, as multiprocessing writes it:
//
//   def count_letters(text):
//       counts = {}
//       for char in text:
//           if char.isalpha():
//               counts[char.lower()] = counts.get(char.lower(), 0) + 1
//       return counts
//
//   pool = multiprocessing.Pool(4)
//   chunks = [text[i:i+len(text)//4] for i in range(0, len(text), len(text)//4)]
//   results = pool.map(count_letters, chunks)
//
// The chunks (strings) go to the workers and the counts (maps) come back
// through the codec: no byte packing. A letter to skip, chosen after the
// workers started, travels in the lambda's capture.
//
// Run it on its own: it exits 0 when the merged counts are right.
#include <cctype>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

using Counts = std::map<char, int>;

Counts count_letters(const std::string& text) {
  Counts counts;
  for (unsigned char c : text)
    if (std::isalpha(c)) ++counts[static_cast<char>(std::tolower(c))];
  return counts;
}

}  // namespace

int main() {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "The quick brown fox jumps over the lazy dog. ";

  shmbus::Pool pool({.processes = 4});
  std::vector<std::string> chunks;
  const std::size_t step = text.size() / 4;
  for (std::size_t at = 0; at < text.size(); at += step) chunks.push_back(text.substr(at, step));
  const std::vector<Counts> results = pool.map(count_letters, chunks);

  Counts counts;
  for (const Counts& part : results)
    for (const auto& [letter, n] : part) counts[letter] += n;
  for (const auto& [letter, n] : counts) std::printf("%c: %d\n", letter, n);

  // State chosen now reaches the workers in the capture (a char: copied).
  const char skip = 'o';
  const std::vector<int> without = pool.map(
      [skip](const std::string& chunk) {
        int n = 0;
        for (unsigned char c : chunk) n += std::isalpha(c) && std::tolower(c) != skip;
        return n;
      },
      chunks);
  int letters = 0;
  for (int n : without) letters += n;

  pool.close();
  pool.join();
  const bool ok = counts == count_letters(text) && letters == 200 * (35 - 4);
  return ok ? 0 : 1;
}
