// Built when the installed package has the bridge component
// (find_package(shmbus COMPONENTS bridge)): proves shmbus::bridge carries
// its headers and ZeroMQ to a consumer.
#include <cstdio>
#include <shmbus/bridge/remote.hpp>

int main() {
  namespace sb = shmbus::bridge;
  const sb::KeyPair server = sb::KeyPair::generate();
  const sb::KeyPair client = sb::KeyPair::generate();
  sb::Listener l{"tcp://127.0.0.1:0", {.key = server, .allowed_clients = {client.public_key}}};
  bool ok = l.endpoint().rfind("tcp://127.0.0.1:", 0) == 0;
  std::printf("consumer: shmbus::bridge listening on %s %s\n", l.endpoint().c_str(),
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
