// service_cost — what one Service call costs beyond a pipe round trip of
// the same bytes, by step, for callgrind (issue 18):
//
//   valgrind --tool=callgrind --callgrind-out-file=svc.cg build/release/bench/service_cost
//   callgrind_annotate --inclusive=yes svc.cg | grep cost_
//
// One thread plays both ends, interleaved (no spin, no wait: every step
// finds its frame there), on busy-poll pipes as service_bench's busy rows:
//
//   cost_call_async   the client sends a request (ServiceClient::call_async)
//   cost_serve        the server takes it, responds with its value, and the
//                     request is destroyed (take_for, respond, ~ServiceRequest)
//   cost_get          the client reads the response into its string and the
//                     call is destroyed (get_for(out, t), ~PendingCall)
//   cost_call         the client's whole call (call(req, out, t)), its
//                     response already in the pipe: a Listener stands in for
//                     the server, writing the response frame (id, `last`,
//                     value) before the call and reading the request after
//                     it, both uncounted; with cost_serve, a call's cost
//   cost_pipe_send / cost_pipe_recv   the same bytes over a bare pipe, as
//                     service_bench's BM_Pipe_Busy_RTT: each called twice per
//                     round trip (there and back)
//
// Each wrapper runs kCalls times (plus a warm-up of 100 not counted apart:
// divide by kCalls + 100): its inclusive count divided by that is its cost
// per call. A call's cost beyond the pipe's is
//   cost_call + cost_serve - 2 * (cost_pipe_send + cost_pipe_recv),
// or with call_async: cost_call_async + cost_get in place of cost_call.
// Request and response are 64 B strings (std::string, as the bench); the
// `Pod` rows do the same with a 64 B trivially copyable struct.
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/pipe.hpp"
#include "shmbus/service.hpp"

namespace {

using namespace std::chrono_literals;
using shmbus::Connection;
using shmbus::RecvResult;
using shmbus::SendResult;

constexpr int kCalls = 10000;
constexpr int kWarm = 100;

struct Pod {
  std::array<std::byte, 64> bytes;
};

template <class T>
using Server = shmbus::Service<T, T>;
template <class T>
using Client = shmbus::ServiceClient<T, T>;
template <class T>
using Call = std::optional<shmbus::PendingCall<T, T>>;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "service_cost: %s failed\n", what);
  std::exit(1);
}

template <class T>
[[gnu::noipa]] void cost_call_async(Client<T>& client, const T& msg, Call<T>& call) {
  call.emplace(client.call_async(msg));
}
template <class T>
[[gnu::noipa]] void cost_serve(Server<T>& server) {
  auto req = server.take_for(1s);
  if (!req || !req->respond(req->value())) fail("serve");
}
template <class T>
[[gnu::noipa]] void cost_get(Call<T>& call, T& back) {
  call->get_for(back, 1s);
  call.reset();
}

template <class T>
[[gnu::noipa]] void cost_call(Client<T>& client, const T& msg, T& back) {
  client.call(msg, back, 1s);
}

[[gnu::noipa]] SendResult cost_pipe_send(Connection& c, std::span<const std::byte> m) noexcept {
  return c.send_bytes(m);
}
[[gnu::noipa]] RecvResult cost_pipe_recv(Connection& c, std::span<std::byte> b,
                                         std::size_t& n) noexcept {
  return c.recv_bytes_into(b, 0, n);
}

shmbus::PipeOptions busy() {
  shmbus::PipeOptions o;
  o.wait.strategy = shmbus::WaitStrategy::busy_poll;
  return o;
}

template <class T>
void service_rounds(const T& msg, const char* tag) {
  const std::string name = std::string("service_cost_") + tag + std::to_string(::getpid());
  Server<T> server(name);
  // Client() waits until the server accepted, which take_for() does: the
  // client connects from a thread of its own meanwhile.
  std::optional<Client<T>> client;
  std::atomic<bool> connected{false};  // release/acquire: `client` is made
  std::thread t([&] {
    client.emplace(name, 5s, busy());
    connected.store(true, std::memory_order_release);
  });
  while (!connected.load(std::memory_order_acquire)) (void)server.take_for(1ms);
  t.join();
  Call<T> call;
  T back{};
  for (int i = 0; i < kCalls + kWarm; ++i) {
    cost_call_async(*client, msg, call);
    cost_serve(server);
    cost_get(call, back);
  }
}

// cost_call: the server's part played on the raw pipe, uncounted.
template <class T>
void call_rounds(const T& msg, const char* tag) {
  const std::string name = std::string("service_cost_c") + tag + std::to_string(::getpid());
  shmbus::Listener listener(name);
  std::optional<Client<T>> client;
  std::atomic<bool> connected{false};  // release/acquire: `client` is made
  std::thread t([&] {
    client.emplace(name, 5s, busy());
    connected.store(true, std::memory_order_release);
  });
  std::optional<Connection> server;
  while (!server) server = listener.accept_for(1s);
  while (!connected.load(std::memory_order_acquire)) {
  }
  t.join();
  const std::span<const std::byte> value = shmbus::detail::encode_message(msg);
  std::vector<std::byte> response(sizeof(shmbus::detail::ServiceHeader) + value.size());
  std::copy(value.begin(), value.end(), response.begin() + sizeof(shmbus::detail::ServiceHeader));
  std::vector<std::byte> request(4096);
  std::size_t n = 0;
  T back{};
  for (std::uint64_t id = 1; id <= kCalls + kWarm; ++id) {  // a client's ids count from 1
    const shmbus::detail::ServiceHeader h{
        id, static_cast<std::uint32_t>(shmbus::detail::FrameKind::last), 0};
    std::memcpy(response.data(), &h, sizeof h);
    if (server->send_bytes(response) != SendResult::ok) fail("respond");
    cost_call(*client, msg, back);
    if (server->recv_bytes_into(request, 0, n) != RecvResult::ok) fail("take");
  }
}

void pipe_rounds() {
  auto [a, b] = shmbus::Pipe(busy());
  std::array<std::byte, 64> msg{}, mid{}, back{};
  std::size_t n = 0;
  for (int i = 0; i < kCalls + kWarm; ++i) {
    if (cost_pipe_send(a, msg) != SendResult::ok || cost_pipe_recv(b, mid, n) != RecvResult::ok ||
        cost_pipe_send(b, std::span(mid).first(n)) != SendResult::ok ||
        cost_pipe_recv(a, back, n) != RecvResult::ok)
      fail("pipe");
  }
}

}  // namespace

int main() {
  pipe_rounds();
  service_rounds(std::string(64, 'x'), "s");
  service_rounds(Pod{}, "p");
  call_rounds(std::string(64, 'x'), "s");
  call_rounds(Pod{}, "p");
  std::printf("service_cost: %d calls per wrapper and type (+%d warm)\n", kCalls, kWarm);
  return 0;
}
