// bus-bridge: forwards named queues and topics between the buses of two
// hosts over ZeroMQ with CURVE keys (shmbus::bridge::Forwarder).
//
//   bus-bridge --gen-key server.key                    # prints the public key
//   bus-bridge --name east --bus trading --listen 'tcp://*:7000' --key server.key
//              --allow client.key.pub --forward orders
//   bus-bridge --name west --bus trading --connect tcp://east:7000 --key client.key
//              --server-key server.key.pub --forward orders --forward-topic ticks
// (one command each; --gen-key also writes FILE.pub, the public half)
//
// Each side drains its --forward queues into the same-named queue of the
// other side's bus, acknowledged, so a message leaves the local queue for
// good only once the other side put it (see forwarder.hpp for the exact
// guarantees). A bridge that is killed and restarted, or a link that breaks
// and comes back, resumes where it was. Each --forward-topic T[:lossy|:reliable]
// republishes the local topic T on the other side's bus (lossy, the default:
// never slows the local publisher; reliable: remote reliable subscribers
// hold it back; forwarder.hpp says exactly what holds). A key argument is a
// key file or a 40-character Z85 public key.
//
// Exit codes: 0 stopped by SIGINT/SIGTERM, 2 usage, 3 the peer refused our
// key, 4 a local setup error (missing queue, bad key file, ...).
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "shmbus/bridge/forwarder.hpp"

namespace {

namespace sb = shmbus::bridge;
using namespace std::chrono_literals;

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }  // relaxed: a flag

// A public key given as Z85 text, or read from a key file.
std::string public_key_arg(const std::string& arg) {
  if (arg.size() == sb::kZ85KeySize) {
    try {
      sb::check_z85_key(arg, "key");
      return arg;
    } catch (const shmbus::Error&) {  // not Z85: a file name
    }
  }
  return sb::KeyPair::load(arg).public_key;
}

// "ticks", "ticks:lossy" or "ticks:reliable".
sb::TopicForward topic_arg(const std::string& arg) {
  const auto colon = arg.rfind(':');
  if (colon == std::string::npos) return {arg};
  const std::string policy = arg.substr(colon + 1);
  if (policy != "lossy" && policy != "reliable")
    throw shmbus::Error(shmbus::Errc::invalid_argument, arg,
                        "--forward-topic takes TOPIC, TOPIC:lossy or TOPIC:reliable");
  return {arg.substr(0, colon),
          policy == "lossy" ? shmbus::SubscriberPolicy::lossy : shmbus::SubscriberPolicy::reliable};
}

void log_end(const sb::Forwarder& f, sb::RunEnd why) {
  std::fprintf(stderr, "bus-bridge %s: link ended (%s)", f.options().name.c_str(),
               std::string(sb::to_string(why)).c_str());
  for (const auto& c : f.outbound())
    std::fprintf(stderr, "; %s sent %llu in flight %llu", c.queue.c_str(),
                 static_cast<unsigned long long>(c.sent),
                 static_cast<unsigned long long>(c.in_flight));
  std::fprintf(stderr, "\n");
}

int serve(sb::Forwarder& f, const std::string& endpoint, const sb::ListenerOptions& lo) {
  sb::Listener l{endpoint, lo};
  std::fprintf(stderr, "bus-bridge %s: listening on %s\n", f.options().name.c_str(),
               l.endpoint().c_str());
  std::optional<sb::Connection> current;
  std::optional<sb::Connection> next;
  while (!g_stop.load(std::memory_order_relaxed)) {
    if (!current) {
      current = l.accept_for(200ms);
      if (!current) continue;
    }
    // A restarted peer connects anew: the new connection replaces this one.
    const sb::RunEnd why =
        f.run(*current, g_stop, [&] { return (next = l.accept_for(0ms)).has_value(); });
    if (why == sb::RunEnd::stopped) break;
    log_end(f, why);
    current = std::move(next);
    next.reset();
  }
  return 0;
}

int connect(sb::Forwarder& f, const std::string& endpoint, const sb::ClientOptions& co) {
  while (!g_stop.load(std::memory_order_relaxed)) {
    std::optional<sb::Connection> c;
    try {
      c = sb::Client(endpoint, co, 1s);
    } catch (const shmbus::Error& e) {
      if (e.code() == shmbus::Errc::permission_denied) {
        std::fprintf(stderr, "bus-bridge %s: %s\n", f.options().name.c_str(), e.what());
        return 3;
      }
      continue;  // not there (yet): try again
    }
    std::fprintf(stderr, "bus-bridge %s: connected to %s\n", f.options().name.c_str(),
                 endpoint.c_str());
    const sb::RunEnd why = f.run(*c, g_stop);
    if (why == sb::RunEnd::stopped) break;
    log_end(f, why);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bus-bridge: forward shmbus queues and topics between hosts (ZeroMQ + CURVE)"};
  std::string gen_key;
  sb::ForwarderOptions fo;
  std::string listen;
  std::string connect_to;
  std::string key_file;
  std::string server_key;
  std::vector<std::string> allow;
  std::vector<std::string> topics;
  app.add_option("--gen-key", gen_key, "write a new key pair to FILE, print its public key, exit");
  app.add_option("--name", fo.name, "this bridge's name (names its state in /dev/shm)");
  app.add_option("--bus", fo.bus, "the local bus: queue Q is the segment BUS.Q");
  app.add_option("--forward", fo.queues, "a local queue to drain to the peer (repeatable)");
  app.add_option("--forward-topic", topics,
                 "a local topic to republish on the peer's bus: T, T:lossy (default) or "
                 "T:reliable (repeatable)");
  app.add_option("--window", fo.window, "unacknowledged messages per channel");
  app.add_option("--listen", listen, "endpoint to listen on, e.g. tcp://*:7000");
  app.add_option("--connect", connect_to, "endpoint of the listening bridge");
  app.add_option("--key", key_file, "this bridge's key pair file");
  app.add_option("--server-key", server_key, "the listening bridge's public key (file or Z85)");
  app.add_option("--allow", allow, "a client public key (file or Z85) that may connect");
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  try {
    if (!gen_key.empty()) {
      const sb::KeyPair k = sb::KeyPair::generate();
      k.save(gen_key);
      sb::KeyPair{k.public_key, ""}.save(gen_key + ".pub");
      std::printf("%s\n", k.public_key.c_str());
      return 0;
    }
    if (listen.empty() == connect_to.empty() || key_file.empty()) {
      std::fprintf(stderr, "bus-bridge: give --key and one of --listen / --connect\n");
      return 2;
    }
    for (const std::string& t : topics) fo.topics.push_back(topic_arg(t));
    const sb::KeyPair key = sb::KeyPair::load(key_file);
    sb::Forwarder f{fo};
    if (!listen.empty()) {
      sb::ListenerOptions lo{.key = key};
      for (const std::string& a : allow) lo.allowed_clients.push_back(public_key_arg(a));
      return serve(f, listen, lo);
    }
    if (server_key.empty()) {
      std::fprintf(stderr, "bus-bridge: --connect needs --server-key\n");
      return 2;
    }
    return connect(f, connect_to,
                   sb::ClientOptions{.key = key, .server_key = public_key_arg(server_key)});
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "bus-bridge: %s\n", e.what());
    return 4;
  }
}
