// Built against an installed shmbus through find_package(shmbus): proves
// the package exports its headers, libraries and dependencies.
#include <unistd.h>

#include <cstdio>
#include <shmbus/shmbus.hpp>
#include <string>

int main() {
  const std::string name = "consumer-" + std::to_string(::getpid());
  auto shm = shmbus::SharedMemory::create(name, 64);
  shm.buf()[0] = std::byte{42};
  auto again = shmbus::SharedMemory::open(name);
  shmbus::Queue<int> anonymous{{.capacity = 4}};  // needs nothing but the package
  int got = 0;
  const bool ok = again.buf()[0] == std::byte{42} && anonymous.put(7) == shmbus::QueueResult::ok &&
                  anonymous.get(got) == shmbus::QueueResult::ok && got == 7;
  shm.unlink();
  std::printf("consumer: shmbus %s %s\n", std::string(shmbus::version()).c_str(),
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
