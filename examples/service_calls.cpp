// Request and response over a Service, as a Manager's proxies do it: a
// server process answers "how long is this word?" for three clients at
// once, each with several calls in flight; one call gets an error back.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shmbus/process.hpp"
#include "shmbus/service.hpp"

using namespace std::chrono_literals;

int main() {
  const std::string name = "lengths-" + std::to_string(::getpid());
  shmbus::Service<std::string, std::size_t> lengths(name);

  std::vector<shmbus::Process> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([name, c] {
      shmbus::ServiceClient<std::string, std::size_t> client(name, 5s);
      std::vector<shmbus::PendingCall<std::string, std::size_t>> calls;
      for (const char* word : {"spam", "eggs", "bacon"}) calls.push_back(client.call_async(word));
      std::size_t total = 0;
      for (auto& call : calls) total += call.get_for(5s);
      try {
        (void)client.call("", 5s);  // the server refuses empty words
      } catch (const shmbus::Error& e) {
        std::printf("[client %d] refused as expected: %s\n", c, e.what());
      }
      std::printf("[client %d] total length %zu\n", c, total);
      return total == 13 ? 0 : 1;
    });
    clients.back().start();
  }

  for (int served = 0; served < 3 * 4; ++served) {
    auto request = lengths.take_for(5s);
    if (!request) return 1;
    if (request->value().empty())
      request->fail("empty word");
    else
      request->respond(request->value().size());
  }

  int failed = 0;
  for (auto& c : clients) {
    c.join();
    failed += c.exitcode() != 0;
  }
  return failed == 0 ? 0 : 1;
}
