// Test helper, started by fork+exec as an unrelated process:
//   shm_peer NAME write TEXT     opens NAME, writes TEXT at offset 0, exits 0
//   shm_peer NAME expect TEXT    opens NAME, exits 0 iff it begins with TEXT
//   shm_peer NAME hold           opens NAME, writes "held" at offset 64, then
//                                waits to be killed (never exits by itself)
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "shmbus/shmbus.hpp"

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string name = argv[1], verb = argv[2];
  try {
    auto shm = shmbus::SharedMemory::open(name);
    auto* bytes = reinterpret_cast<char*>(shm.buf().data());
    if (verb == "write" && argc == 4) {
      std::memcpy(bytes, argv[3], std::strlen(argv[3]) + 1);
      return 0;
    }
    if (verb == "expect" && argc == 4) {
      return std::strncmp(bytes, argv[3], std::strlen(argv[3])) == 0 ? 0 : 1;
    }
    if (verb == "hold") {
      std::memcpy(bytes + 64, "held", 5);
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 3;
  }
  return 2;
}
