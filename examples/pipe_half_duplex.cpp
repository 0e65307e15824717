// A half-duplex pipe (Python's `recv_conn, send_conn = Pipe(duplex=False)`):
// one process sends and closes its end, another receives until end of file.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "shmbus/pipe.hpp"

int main() {
  auto [recv_conn, send_conn] = shmbus::Pipe(/*duplex=*/false);

  const pid_t sender = ::fork();
  if (sender == 0) {
    const auto r = send_conn.send("Hello from sender!");
    send_conn.close();  // the receiver gets end of file after the message
    ::_exit(r == shmbus::SendResult::ok ? 0 : 1);
  }
  const pid_t receiver = ::fork();
  if (receiver == 0) {
    const std::string message = recv_conn.recv_string();
    std::printf("Received: %s\n", message.c_str());
    std::string more;
    const auto r = recv_conn.recv(more);  // nothing more: end of file
    std::printf("Then: %s\n", std::string(shmbus::to_string(r)).c_str());
    recv_conn.close();
    std::fflush(stdout);
    ::_exit(message == "Hello from sender!" && r == shmbus::RecvResult::eof ? 0 : 1);
  }

  int s1 = 0, s2 = 0;
  ::waitpid(sender, &s1, 0);
  ::waitpid(receiver, &s2, 0);
  const bool ok = WIFEXITED(s1) && WEXITSTATUS(s1) == 0 && WIFEXITED(s2) && WEXITSTATUS(s2) == 0;
  return ok ? 0 : 1;
}
