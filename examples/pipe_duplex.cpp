// A duplex pipe between a parent and its child (Python's
// `parent_conn, child_conn = multiprocessing.Pipe()`): the parent sends a
// greeting, the child answers on the same pipe.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "shmbus/pipe.hpp"

int main() {
  auto [parent_conn, child_conn] = shmbus::Pipe();  // anonymous, duplex

  const pid_t pid = ::fork();
  if (pid == 0) {
    std::printf("[Child] Waiting for a message from parent...\n");
    const std::string message = child_conn.recv_string();
    std::printf("[Child] Received: %s\n", message.c_str());
    if (child_conn.send("Hello from Child!") != shmbus::SendResult::ok) ::_exit(1);
    std::printf("[Child] Response sent!\n");
    std::fflush(stdout);
    ::_exit(0);
  }

  std::printf("[Parent] Sending a message to child...\n");
  if (parent_conn.send("Hello from Parent!") != shmbus::SendResult::ok) return 1;
  const std::string response = parent_conn.recv_string();
  std::printf("[Parent] Received: %s\n", response.c_str());

  int status = 0;
  ::waitpid(pid, &status, 0);
  std::printf("Communication complete!\n");
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 && response == "Hello from Child!" ? 0 : 1;
}
