// libFuzzer target: the service framing from both sides. The input is a
// run of frames (a length byte, then that many bytes; a frame's first 16
// bytes are the header: id, kind). A hostile client sends them to a real
// Service server, which must take only well-formed requests (answering
// each), drop the client on a protocol error, and return from every
// zero-timeout take; a hostile server sends them (ids steered onto the
// real calls in flight) to a real ServiceClient, whose calls must end with
// a value, a clear shmbus::Error or a timeout, never a crash or a wait
// past the deadline. Everything runs in this process: connections are
// made once and made again after a drop.
//
// service.cpp is compiled into this target (below) so that libFuzzer's
// coverage instrumentation sees the framing; the linker then takes no
// service object from the library archive.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../../bus/src/service.cpp"  // NOLINT: instrumented copy, see above

namespace {

using namespace std::chrono_literals;
using Echo = shmbus::Service<std::string, std::string>;
using EchoClient = shmbus::ServiceClient<std::string, std::string>;

// Runs `connect` on a thread while `accept_step` is called here until the
// connection is made (Client() returns once the server accepted).
template <class Connect, class AcceptStep>
void connect_beside(Connect connect, AcceptStep accept_step) {
  std::atomic<bool> done{false};
  std::thread t([&] {
    connect();
    // release: pairs with the acquire below; the connection is in place.
    done.store(true, std::memory_order_release);
  });
  while (!done.load(std::memory_order_acquire)) accept_step();
  t.join();
}

std::vector<std::span<const std::uint8_t>> frames_of(const std::uint8_t* data, std::size_t size) {
  std::vector<std::span<const std::uint8_t>> frames;
  while (size > 0) {
    const std::size_t n = std::min<std::size_t>(data[0], size - 1);
    frames.emplace_back(data + 1, n);
    data += 1 + n;
    size -= 1 + n;
  }
  return frames;
}

std::span<const std::byte> bytes(std::span<const std::uint8_t> s) { return std::as_bytes(s); }

// A real server and a hostile client's raw end.
struct ServerSide {
  std::string name = "fuzz-svc-" + std::to_string(::getpid());
  Echo server{name, {.respond_timeout = 0ms}};
  std::optional<shmbus::Connection> hostile;

  void connect() {
    hostile.reset();
    connect_beside([&] { hostile = shmbus::Client(name, 5s); },
                   [&] { (void)server.take_for(1ms); });
  }
  void run(const std::vector<std::span<const std::uint8_t>>& frames) {
    if (!hostile || server.clients() == 0) connect();
    for (auto f : frames) (void)hostile->try_send_bytes(bytes(f));
    std::vector<std::byte> drain;
    for (int turn = 0; turn < 8; ++turn) {
      auto req = server.take_for(0ms);  // must return at once
      if (req) (void)req->respond(req->value(), (turn & 1) == 0);
      while (hostile->poll() && hostile->recv_bytes(drain) == shmbus::RecvResult::ok) {
      }
      if (!req) break;
    }
  }
};

// A hostile server's raw end and a real client.
struct ClientSide {
  std::string name = "fuzz-svcc-" + std::to_string(::getpid());
  shmbus::Listener listener{name};
  std::optional<shmbus::Connection> hostile;
  std::optional<EchoClient> client;

  void connect() {
    hostile.reset();
    client.reset();
    connect_beside([&] { client.emplace(name, 5s); },
                   [&] {
                     if (auto c = listener.accept_for(1ms)) hostile = std::move(*c);
                   });
  }
  void run(const std::vector<std::span<const std::uint8_t>>& frames) {
    if (!client || !hostile) connect();
    try {
      std::vector<shmbus::PendingCall<std::string, std::string>> calls;
      for (int i = 0; i < 3; ++i) calls.push_back(client->call_async("q"));
      std::vector<std::byte> frame;
      while (hostile->poll() && hostile->recv_bytes(frame) == shmbus::RecvResult::ok) {
      }
      for (auto f : frames) {
        frame.assign(bytes(f).begin(), bytes(f).end());
        if (frame.size() >= sizeof(std::uint64_t) && !calls.empty()) {
          // Steer the id onto a call in flight (most of the time).
          std::uint64_t id = 0;
          std::memcpy(&id, frame.data(), sizeof id);
          if ((id & 0xC0) != 0xC0) {
            id = calls[id % calls.size()].id();
            std::memcpy(frame.data(), &id, sizeof id);
          }
        }
        (void)hostile->try_send_bytes(frame);
      }
      for (auto& call : calls) {
        try {
          (void)call.get_for(0ms);
        } catch (const shmbus::Error&) {  // timed out, failed, undecodable: all answers
        }
      }
    } catch (const shmbus::Error&) {  // the connection went: made again next time
      client.reset();
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ServerSide server_side;
  static ClientSide client_side;
  const auto frames = frames_of(data, size);
  server_side.run(frames);
  client_side.run(frames);
  return 0;
}
