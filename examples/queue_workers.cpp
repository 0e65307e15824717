// Worker processes fed by a task queue, answering on a result queue, shut
// down with one sentinel per worker: the C++ counterpart of
// multiprocessing's classic
//
//   def worker(input, output):
//       for func, args in iter(input.get, 'STOP'):
//           output.put(calculate(func, args))
//
// Run it on its own: it forks its workers and exits 0 when every result
// came back once.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"

namespace {

enum class Op : std::int32_t { mul, plus, stop };

struct Task {
  Op op;
  std::int32_t a, b;
  std::int32_t id;
};

struct Result {
  std::int32_t id;
  std::int64_t value;
  pid_t worker;
};

int worker(shmbus::Queue<Task>& input, shmbus::Queue<Result>& output) {
  for (;;) {
    Task t{};
    if (input.get(t) != shmbus::QueueResult::ok) return 1;
    if (t.op == Op::stop) return 0;  // the sentinel
    const std::int64_t v = t.op == Op::mul ? std::int64_t{t.a} * t.b : std::int64_t{t.a} + t.b;
    if (output.put({t.id, v, ::getpid()}) != shmbus::QueueResult::ok) return 1;
  }
}

}  // namespace

int main() {
  const std::string stem = "example-queue-workers-" + std::to_string(::getpid());
  const std::string tasks_name = stem + "-tasks", results_name = stem + "-results";
  auto tasks = shmbus::Queue<Task>::create(tasks_name, {.capacity = 64});
  auto results = shmbus::Queue<Result>::create(results_name, {.capacity = 64});

  constexpr int kWorkers = 4, kTasks = 20;
  std::vector<pid_t> pids;
  for (int i = 0; i < kWorkers; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(worker(tasks, results));  // the child uses the inherited handles
    pids.push_back(pid);
  }

  for (int i = 0; i < kTasks; ++i) {
    const Task t{i % 2 == 0 ? Op::mul : Op::plus, i, 7, i};
    if (tasks.put(t) != shmbus::QueueResult::ok) return 1;
  }
  std::vector<int> seen(kTasks, 0);
  int ok = 1;
  for (int i = 0; i < kTasks; ++i) {
    Result r{};
    if (results.get_for(r, std::chrono::seconds(10)) != shmbus::QueueResult::ok) return 1;
    const std::int64_t expect = r.id % 2 == 0 ? std::int64_t{r.id} * 7 : r.id + 7;
    ok &= r.value == expect && ++seen[r.id] == 1;
    std::printf("task %2d -> %3lld (worker %d)\n", r.id, static_cast<long long>(r.value), r.worker);
  }
  for (int i = 0; i < kWorkers; ++i)
    if (tasks.put({Op::stop, 0, 0, -1}) != shmbus::QueueResult::ok) return 1;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  shmbus::Queue<Task>::unlink(tasks_name);
  shmbus::Queue<Result>::unlink(results_name);
  std::printf("%s\n", ok ? "all results received once" : "FAILED");
  return ok ? 0 : 1;
}
