// Who am I, who started me, and which of my children still run: the seeds'
//
//   def task(queue):
//       print(f"{current_process().name} took {queue.get()}")
//   for i in range(4):
//       Process(target=task, args=(queue,)).start()
//   for i in range(4): queue.put(i)
//   for process in active_children():
//       process.join()
//
// with current_process(), parent_process() and active_children(). Run it on
// its own: it exits 0 when each worker took one task under its own name.
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

int main() {
  shmbus::Queue<int> tasks{{.capacity = 8}};
  shmbus::Queue<std::string> took{{.capacity = 8}};  // "<worker name> took <task>"

  std::vector<shmbus::Process> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([&] {
      int task = 0;
      if (tasks.get(task) != shmbus::QueueResult::ok) return 1;
      const auto parent = shmbus::parent_process();  // the main process
      if (!parent || parent->name != "MainProcess") return 2;
      const std::string line = shmbus::current_process().name + " took " + std::to_string(task);
      return took.put(line) == shmbus::QueueResult::ok ? 0 : 3;
    });
    workers.back().start();
  }
  for (int i = 0; i < 4; ++i) (void)tasks.put(i);

  for (shmbus::Process* p : shmbus::active_children()) p->join();  // as the seed joins them
  int failed = 0;
  for (auto& w : workers) failed += *w.exitcode() != 0;

  std::set<std::string> lines;
  std::string line;
  while (took.try_get(line) == shmbus::QueueResult::ok) lines.insert(line);
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
  std::printf("%s: %zu workers answered, %d failed\n", shmbus::current_process().name.c_str(),
              lines.size(), failed);
  return lines.size() == 4 && failed == 0 ? 0 : 1;
}
