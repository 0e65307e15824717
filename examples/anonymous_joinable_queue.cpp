// Python's JoinableQueue example with anonymous objects: workers call
// task_done() per item; the producer's join() returns when all are done.
#include <cstdio>
#include <vector>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  shmbus::JoinableQueue<int> tasks;
  shmbus::Array<int> done_by(2);
  std::vector<shmbus::Process> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      for (int item = 0;;) {
        if (tasks.get(item) != shmbus::QueueResult::ok) return 1;
        if (item < 0) return tasks.task_done() == shmbus::QueueResult::ok ? 0 : 1;
        done_by.fetch_add(static_cast<std::size_t>(w), 1);
        if (tasks.task_done() != shmbus::QueueResult::ok) return 1;
      }
    });
    workers.back().start();
  }
  for (int i = 0; i < 20; ++i) (void)tasks.put(i);
  if (!tasks.join_for(10s)) return 1;
  std::printf("all 20 tasks done (%d and %d per worker)\n", done_by[0] + 0, done_by[1] + 0);
  for (std::size_t w = 0; w < workers.size(); ++w) (void)tasks.put(-1);
  int failures = 0;
  for (auto& p : workers) {
    p.join();
    if (p.exitcode() != 0) ++failures;
  }
  return failures == 0 && done_by[0] + done_by[1] == 20 ? 0 : 1;
}
