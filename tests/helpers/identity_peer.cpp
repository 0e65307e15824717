// A spawn()ed executable that checks what current_process() and
// parent_process() tell it:
//
//   identity_peer NAME PARENT_NAME   exit 0 if this process is NAME (pid
//                                    getpid()) and its parent PARENT_NAME
//                                    (pid getppid()); 1 if it is not NAME,
//                                    3 if its parent is not PARENT_NAME
//   identity_peer orphan FD PARENT_PID NAME PARENT_NAME
//                                    the same, asked only once its parent
//                                    PARENT_PID died (re-parented, 10 s
//                                    limit, else 4); the exit code also
//                                    written to FD
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "shmbus/process.hpp"

namespace {

int check(const char* name, const char* parent_name, pid_t parent_pid) {
  const shmbus::ProcessIdentity self = shmbus::current_process();
  const auto parent = shmbus::parent_process();
  if (self.name != name || self.pid != ::getpid()) {
    std::fprintf(stderr, "identity_peer: current_process() is '%s' (pid %d)\n", self.name.c_str(),
                 static_cast<int>(self.pid));
    return 1;
  }
  if (!parent || parent->name != parent_name || parent->pid != parent_pid) {
    std::fprintf(stderr, "identity_peer: parent_process() is %s\n",
                 parent ? parent->name.c_str() : "nullopt");
    return 3;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3) return check(argv[1], argv[2], ::getppid());
  if (argc != 6 || std::string(argv[1]) != "orphan") return 2;
  const int fd = std::atoi(argv[2]);
  const auto first_parent = static_cast<pid_t>(std::atoi(argv[3]));
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::getppid() == first_parent && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polls for its re-parenting
  const char code =
      static_cast<char>(::getppid() == first_parent ? 4 : check(argv[4], argv[5], first_parent));
  (void)!::write(fd, &code, 1);
  return code;
}
