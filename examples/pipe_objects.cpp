// Objects through a duplex Pipe, as multiprocessing's conn.send(obj) /
// conn.recv() with pickling: the parent sends a list and a dict, the
// child answers with a struct; no byte packing, the codec carries them
// (msgpack: a Python peer could read them with msgpack.unpackb).
//
//   def child(conn):
//       words = conn.recv()                      # ['apple', 'kiwi', 'fig']
//       prices = conn.recv()                     # {'apple': 1.2, ...}
//       conn.send({'count': len(words), 'total': sum(prices[w] for w in words),
//                  'longest': max(words, key=len)})
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

struct Summary {
  int count = 0;
  double total = 0;
  std::string longest;
  MSGPACK_DEFINE_MAP(count, total, longest)  // a dict in Python: {'count': ..., ...}
};

int child(shmbus::Connection& conn) {
  const auto words = conn.recv<std::vector<std::string>>();
  const auto prices = conn.recv<std::map<std::string, double>>();
  Summary s;
  for (const auto& w : words) {
    ++s.count;
    s.total += prices.at(w);
    if (w.size() > s.longest.size()) s.longest = w;
  }
  return conn.send(s) == shmbus::SendResult::ok ? 0 : 1;
}

}  // namespace

int main() {
  auto [parent_conn, child_conn] = shmbus::Pipe();
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(child(child_conn));

  const std::vector<std::string> words{"apple", "kiwi", "fig"};
  const std::map<std::string, double> prices{{"apple", 1.25}, {"kiwi", 0.5}, {"fig", 2.0}};
  if (parent_conn.send(words) != shmbus::SendResult::ok ||
      parent_conn.send(prices) != shmbus::SendResult::ok)
    return 1;
  const auto s = parent_conn.recv<Summary>();
  std::printf("count %d, total %.2f, longest %s\n", s.count, s.total, s.longest.c_str());
  int status = 0;
  ::waitpid(pid, &status, 0);
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && s.count == 3 &&
                  s.total == 3.75 && s.longest == "apple";
  return ok ? 0 : 1;
}
