// Python's producer/consumer over an anonymous Queue, ended by a sentinel
// (None in Python, -1 here).
#include <cstdio>

#include "shmbus/shmbus.hpp"

int main() {
  shmbus::Queue<int> q{{.capacity = 16}};
  constexpr int kSentinel = -1;
  shmbus::Value<long> sum{0};
  shmbus::Process consumer([&] {
    for (int item = 0;;) {
      if (q.get(item) != shmbus::QueueResult::ok) return 1;
      if (item == kSentinel) return 0;
      sum.fetch_add(item);
    }
  });
  consumer.start();
  for (int i = 1; i <= 100; ++i) {
    if (q.put(i) != shmbus::QueueResult::ok) return 1;
  }
  if (q.put(kSentinel) != shmbus::QueueResult::ok) return 1;
  consumer.join();
  std::printf("consumer summed %ld\n", sum.get());
  return consumer.exitcode() == 0 && sum.get() == 5050 ? 0 : 1;
}
