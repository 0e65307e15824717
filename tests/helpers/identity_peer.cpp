// A spawn()ed executable that checks what current_process() and
// parent_process() tell it:
//
//   identity_peer NAME PARENT_NAME   exit 0 if this process is NAME (pid
//                                    getpid()) and its parent PARENT_NAME
//                                    (pid getppid()); 1 if it is not NAME,
//                                    3 if its parent is not PARENT_NAME
#include <unistd.h>

#include <cstdio>
#include <string>

#include "shmbus/process.hpp"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const shmbus::ProcessIdentity self = shmbus::current_process();
  const auto parent = shmbus::parent_process();
  if (self.name != argv[1] || self.pid != ::getpid()) {
    std::fprintf(stderr, "identity_peer: current_process() is '%s' (pid %d)\n", self.name.c_str(),
                 static_cast<int>(self.pid));
    return 1;
  }
  if (!parent || parent->name != argv[2] || parent->pid != ::getppid()) {
    std::fprintf(stderr, "identity_peer: parent_process() is %s\n",
                 parent ? parent->name.c_str() : "nullopt");
    return 3;
  }
  return 0;
}
