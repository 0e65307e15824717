// A producer puts strings on a queue and a None sentinel; a consumer
// prints them until the sentinel: multiprocessing's
//
//   def producer(queue):
//       for i in range(5):
//           queue.put(f"Item {i}")
//       queue.put(None)  # Sentinel to indicate completion
//
//   def consumer(queue):
//       while True:
//           item = queue.get()
//           if item is None:
//               break
//           print(f"Consumed {item}")
//
// with no byte packing: std::optional<std::string> travels through the
// codec (a msgpack str, or nil for the sentinel).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "shmbus/shmbus.hpp"

int main() {
  const std::string name = "example-queue-strings-" + std::to_string(::getpid());
  auto queue = shmbus::Queue<std::optional<std::string>>::create(name);

  const pid_t producer = ::fork();
  if (producer == 0) {
    for (int i = 0; i < 5; ++i)
      if (queue.put("Item " + std::to_string(i)) != shmbus::QueueResult::ok) ::_exit(1);
    ::_exit(queue.put(std::nullopt) == shmbus::QueueResult::ok ? 0 : 1);  // the sentinel
  }
  const pid_t consumer = ::fork();
  if (consumer == 0) {
    int consumed = 0;
    for (;;) {
      std::optional<std::string> item;
      if (queue.get_for(item, std::chrono::seconds(10)) != shmbus::QueueResult::ok) ::_exit(1);
      if (!item) break;
      std::printf("Consumed %s\n", item->c_str());
      std::fflush(stdout);
      if (*item != "Item " + std::to_string(consumed++)) ::_exit(1);
    }
    ::_exit(consumed == 5 ? 0 : 1);
  }
  int ok = 1;
  for (pid_t pid : {producer, consumer}) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  shmbus::Queue<std::optional<std::string>>::unlink(name);
  return ok ? 0 : 1;
}
