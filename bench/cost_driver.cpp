// Per-call instruction counts for callgrind (deterministic under load, where
// timings are not): each mode runs N round trips in one thread, both ends in
// this process, inside a function callgrind can be told to count alone:
//
//   valgrind --tool=callgrind --toggle-collect='*run_*' build/release/bench/cost_driver service
//   10000
//
// then divide the total by N. Modes:
//   service  Service<string,string> call of a 64 B string, the server in the
//            same thread (call_async, take_for, respond, get_for)
//   service_into  the same, the response decoded into the caller's string
//            (get_for(out, timeout))
//   service_idle  a server's take_for(0) with one connected client and no
//            request (count with --toggle-collect='*run_service_idle*')
//   struct   {string, vector<double>(8), int} sent a -> b, echoed b -> a
//            (prices 1..8: whole, positive fixints on the wire)
//   struct_frac  the same with prices that are not whole (float64s)
//   pod      a 64 B trivially copyable message the same way
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "codec_types.hpp"
#include "shmbus/codec.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/service.hpp"

namespace {

using namespace std::chrono_literals;

using shmbus::bench::make_fractional_quote;
using shmbus::bench::make_quote;
using shmbus::bench::Pod64;

template <class T>
[[gnu::noinline]] int run_pipe(shmbus::Connection& a, shmbus::Connection& b, const T& msg, int n) {
  T mid{}, back{};
  for (int i = 0; i < n; ++i) {
    if (a.send(msg) != shmbus::SendResult::ok || b.recv(mid) != shmbus::RecvResult::ok ||
        b.send(mid) != shmbus::SendResult::ok || a.recv(back) != shmbus::RecvResult::ok)
      return 1;
  }
  return 0;
}

template <class T>
int pipe_mode(const T& msg, int n) {
  auto [a, b] = shmbus::Pipe();
  run_pipe(a, b, msg, 100);  // warm: first touches of the ring
  return run_pipe(a, b, msg, n);
}

using Echo = shmbus::Service<std::string, std::string>;
using EchoClient = shmbus::ServiceClient<std::string, std::string>;

[[gnu::noinline]] int run_service(Echo& server, EchoClient& client, const std::string& msg, int n,
                                  bool into) {
  std::string back;
  for (int i = 0; i < n; ++i) {
    auto call = client.call_async(msg);
    auto req = server.take_for(1s);
    if (!req || !req->respond(req->value())) return 1;
    if (into)
      call.get_for(back, 1s);
    else
      back = call.get_for(1s);
    if (back.size() != msg.size()) return 1;
  }
  return 0;
}

// A take that finds no request: what a busy server pays on its way to
// spinning (or waiting) after each response (take_for(0): no wait).
[[gnu::noinline]] int run_service_idle(Echo& server, int n) {
  for (int i = 0; i < n; ++i)
    if (server.take_for(0s)) return 1;
  return 0;
}

int service_mode(int n, bool into, bool idle = false) {
  const std::string name = "cost_driver_" + std::to_string(::getpid());
  Echo server(name);
  // Client() waits until the server accepted, which take_for() does: the
  // client connects from a thread of its own meanwhile.
  std::optional<EchoClient> client;
  std::atomic<bool> connected{false};
  std::thread t([&] {
    client.emplace(name, 5s);
    connected.store(true, std::memory_order_release);
  });
  while (!connected.load(std::memory_order_acquire)) (void)server.take_for(1ms);
  t.join();
  if (idle) {
    (void)run_service_idle(server, 100);
    return run_service_idle(server, n);
  }
  const std::string msg(64, 'x');
  if (run_service(server, *client, msg, 100, into) != 0) return 1;
  return run_service(server, *client, msg, n, into);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(
        stderr,
        "usage: cost_driver service|service_into|service_idle|struct|struct_frac|pod [N]\n");
    return 2;
  }
  const int n = argc > 2 ? std::atoi(argv[2]) : 10000;
  if (std::strcmp(argv[1], "service") == 0) return service_mode(n, false);
  if (std::strcmp(argv[1], "service_into") == 0) return service_mode(n, true);
  if (std::strcmp(argv[1], "service_idle") == 0) return service_mode(n, false, true);
  if (std::strcmp(argv[1], "struct") == 0) return pipe_mode(make_quote(), n);
  if (std::strcmp(argv[1], "struct_frac") == 0) return pipe_mode(make_fractional_quote(), n);
  if (std::strcmp(argv[1], "pod") == 0) return pipe_mode(Pod64{}, n);
  std::fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
