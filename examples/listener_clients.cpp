// A server and several clients (Python's multiprocessing.connection
// Listener / Client): each client connects on its own duplex pipe, sends a
// message, reads the server's answer and says "quit"; the server serves
// them in turn and sees each one's close as end of file.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shmbus/listener.hpp"
#include "shmbus/process.hpp"

int main() {
  // Unique per run, so two copies of this program never meet.
  const std::string address = "quotes-" + std::to_string(::getpid());
  shmbus::Listener listener(address);

  std::vector<shmbus::Process> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([address, i] {
      shmbus::Connection conn = shmbus::Client(address);
      if (conn.send("hello from client " + std::to_string(i)) != shmbus::SendResult::ok) return 1;
      std::printf("[client %d] %s\n", i, conn.recv_string().c_str());
      return conn.send("quit") == shmbus::SendResult::ok ? 0 : 1;
    });
    clients.back().start();
  }

  for (int served = 0; served < 3; ++served) {
    shmbus::Connection conn = listener.accept();
    for (;;) {
      std::string msg;
      if (conn.recv(msg) != shmbus::RecvResult::ok || msg == "quit") break;  // quit, or EOF
      if (conn.send("Received: " + msg) != shmbus::SendResult::ok) break;
    }
  }

  int failed = 0;
  for (auto& c : clients) {
    c.join();
    failed += c.exitcode() != 0;
  }
  std::printf("served 3 clients, %d failed\n", failed);
  return failed == 0 ? 0 : 1;
}
