// Python's Event example with an anonymous Event, as the seed writes it:
//
//   event = multiprocessing.Event()
//   p1 = Process(target=wait_for_event, args=(event,)); p2 = Process(target=set_event, ...)
#include <cstdio>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  shmbus::Event event;
  shmbus::Process waiter([&] {
    std::printf("waiter: waiting for the event\n");
    if (!event.wait_for(10s)) return 1;
    std::printf("waiter: the event is set, continuing\n");
    return 0;
  });
  shmbus::Process setter([&] {
    std::printf("setter: setting the event\n");
    event.set();
    return 0;
  });
  waiter.start();
  setter.start();
  waiter.join();
  setter.join();
  return waiter.exitcode() == 0 && setter.exitcode() == 0 && event.is_set() ? 0 : 1;
}
