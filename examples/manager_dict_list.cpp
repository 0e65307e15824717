// Python's Manager example, without a server process:
//
//   d = manager.dict(); l = manager.list(range(10))
//   def f(d, l): d[1] = '1'; d['2'] = 2; d[0.25] = None; l.reverse()
//   p = Process(target=f, args=(d, l)); p.start(); p.join()
//   print(d)   # {0.25: None, 1: '1', '2': 2}
//   print(l)   # [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
//
// C++ keys and values have one type each, so the dict maps strings to
// strings; then five workers fill a list at their own index, as
// `shared_list[index] = index * index`, and five append, as
// `shared_list.append(value)`.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shmbus/dict.hpp"
#include "shmbus/list.hpp"

int main() {
  shmbus::Dict<std::string, std::string> d;  // anonymous: shared with children
  shmbus::List<long> l;
  for (long i = 0; i < 10; ++i) l.append(i);

  pid_t p = ::fork();
  if (p == 0) {  // f(d, l): the child reopens both stores on first use
    d.set("1", "1");
    d.set("2", "2");
    d.set("0.25", "None");
    l.reverse();
    _exit(0);
  }
  ::waitpid(p, nullptr, 0);

  std::printf("{");
  const char* sep = "";
  for (const auto& [k, v] : d.items()) {
    std::printf("%s%s: %s", sep, k.c_str(), v.c_str());
    sep = ", ";
  }
  std::printf("}\n[");
  std::vector<long> all = l.to_vector();
  for (std::size_t i = 0; i < all.size(); ++i) std::printf("%s%ld", i ? ", " : "", all[i]);
  std::printf("]\n");
  bool ok =
      d.size() == 3 && d.at("2") == "2" && all == std::vector<long>{9, 8, 7, 6, 5, 4, 3, 2, 1, 0};

  // update_shared_list(shared_list, index): shared_list[index] = index * index
  shmbus::List<long> squares;
  squares.extend({0, 0, 0, 0, 0});
  shmbus::List<long> appended;
  std::vector<pid_t> workers;
  for (long i = 0; i < 5; ++i) {
    pid_t w = ::fork();
    if (w == 0) {
      squares.set(i, i * i);
      appended.append(i);
      _exit(0);
    }
    workers.push_back(w);
  }
  for (pid_t w : workers) ::waitpid(w, nullptr, 0);
  std::vector<long> sq = squares.to_vector();
  std::vector<long> ap = appended.to_vector();
  std::printf("Updated shared list: [%ld, %ld, %ld, %ld, %ld]\n", sq[0], sq[1], sq[2], sq[3],
              sq[4]);
  appended.sort();  // appended in whatever order the workers ran
  ap = appended.to_vector();
  std::printf("Appended by workers (sorted): %zu values\n", ap.size());
  ok = ok && sq == std::vector<long>{0, 1, 4, 9, 16} && ap == std::vector<long>{0, 1, 2, 3, 4};
  return ok ? 0 : 1;
}
