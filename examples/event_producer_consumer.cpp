// A producer sets an Event that its consumer waits on (Python's
// multiprocessing.Event example). The consumer is a forked child that
// opens the Event by name.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "shmbus/shmbus.hpp"

using namespace std::chrono_literals;

int main() {
  const std::string name = "example-event-" + std::to_string(::getpid());
  auto ready = shmbus::Event::create(name);
  auto data = shmbus::Value<int>::create(name + ".data", 0);

  pid_t consumer = ::fork();
  if (consumer == 0) {
    auto ev = shmbus::Event::open(name);
    auto value = shmbus::Value<int>::open(name + ".data");
    std::printf("consumer: waiting for the event\n");
    if (!ev.wait_for(5s)) _exit(1);
    std::printf("consumer: event set, data = %d\n", value.get());
    std::fflush(stdout);
    _exit(value.get() == 42 ? 0 : 2);
  }
  std::printf("producer: preparing data\n");
  data.set(42);  // visible to whoever sees the event set
  ready.set();
  std::printf("producer: event set\n");
  std::fflush(stdout);
  int status = 0;
  ::waitpid(consumer, &status, 0);
  shmbus::Event::unlink(name);
  shmbus::Value<int>::unlink(name + ".data");
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
