// JoinableQueue: the producer puts tasks and join()s until every worker
// called task_done() for each, then stops the workers — multiprocessing's
//
//   queue = JoinableQueue()
//   def worker(queue):
//       while True:
//           task = queue.get(); ...; queue.task_done()
//   for task in tasks: queue.put(task)
//   queue.join()
//
// Here the workers are stopped with close() instead of terminate().
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

int main() {
  const std::string name = "example-joinable-" + std::to_string(::getpid());
  auto queue = shmbus::JoinableQueue<int>::create(name, {.capacity = 16});
  // A counter the workers bump, to show join() waited for the work itself.
  auto* processed = static_cast<std::atomic<int>*>(::mmap(nullptr, sizeof(std::atomic<int>),
                                                          PROT_READ | PROT_WRITE,
                                                          MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (processed == MAP_FAILED) return 1;

  constexpr int kWorkers = 4, kTasks = 40;
  std::vector<pid_t> pids;
  for (int i = 0; i < kWorkers; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (;;) {
        int task = 0;
        const auto r = queue.get(task);
        if (r == shmbus::QueueResult::closed) ::_exit(0);
        if (r != shmbus::QueueResult::ok) ::_exit(1);
        processed->fetch_add(1);  // "process the task"
        if (queue.task_done() != shmbus::QueueResult::ok) ::_exit(2);
      }
    }
    pids.push_back(pid);
  }

  for (int t = 0; t < kTasks; ++t)
    if (queue.put(t) != shmbus::QueueResult::ok) return 1;
  queue.join();  // every task got task_done()
  const int done = processed->load();
  std::printf("join() returned after %d of %d tasks were processed\n", done, kTasks);

  queue.close();  // stop the workers
  int ok = done == kTasks;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  shmbus::JoinableQueue<int>::unlink(name);
  return ok ? 0 : 1;
}
