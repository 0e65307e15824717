// Market-data fan-out over a Topic: one feed process publishes ticks; a
// risk engine subscribes reliably (it must see every tick, so the feed
// waits for it), a dashboard subscribes lossy (it only wants fresh prices
// and never slows the feed: when it falls a ring behind it skips ahead and
// counts what it missed), and a late joiner asks for the last 8 ticks
// published before it came.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "shmbus/bus.hpp"

struct Tick {
  std::uint64_t seq;
  char symbol[8];
  double price;
};

int main() {
  const std::string bus_name = "example-market-" + std::to_string(::getpid());
  shmbus::Bus bus{bus_name};
  auto ticks = bus.topic<Tick>("ticks", {.slots = 64, .history = 16});
  constexpr std::uint64_t kTicks = 10000;

  // Both subscribe before the feed starts, so the reliable one is owed
  // every tick; the children inherit their handles across fork.
  auto risk = ticks.subscribe({.policy = shmbus::SubscriberPolicy::reliable});
  auto dashboard = ticks.subscribe({.policy = shmbus::SubscriberPolicy::lossy});

  const pid_t risk_pid = ::fork();
  if (risk_pid == 0) {
    Tick t{};
    std::uint64_t expected = 0;
    double notional = 0;
    while (risk.recv(t) == shmbus::ReceiveResult::ok) {
      if (t.seq != expected++) ::_exit(1);  // reliable: every tick, in order
      notional += t.price;
    }
    std::printf("[risk] %llu ticks, none missed, notional %.1f\n",
                static_cast<unsigned long long>(risk.received()), notional);
    std::fflush(stdout);
    ::_exit(risk.received() == kTicks ? 0 : 1);
  }
  const pid_t dash_pid = ::fork();
  if (dash_pid == 0) {
    Tick t{};
    std::uint64_t last = 0;
    while (dashboard.recv(t) == shmbus::ReceiveResult::ok) {
      last = t.seq;
      if (t.seq % 2000 == 0) ::usleep(2000);  // a slow redraw now and then
    }
    std::printf("[dashboard] shown %llu, lapped %llu times, missed %llu, last tick %llu\n",
                static_cast<unsigned long long>(dashboard.received()),
                static_cast<unsigned long long>(dashboard.lapped()),
                static_cast<unsigned long long>(dashboard.missed()),
                static_cast<unsigned long long>(last));
    std::fflush(stdout);
    // received + missed is exactly what was published.
    ::_exit(dashboard.received() + dashboard.missed() == kTicks ? 0 : 1);
  }
  // The children took these over; closing the parent's copies (unused
  // since the fork) leaves the children's subscriptions alone.
  risk.close();
  dashboard.close();

  auto feed = ticks.publisher();
  for (std::uint64_t i = 0; i < kTicks; ++i) {
    const Tick t{i, "ACME", 100.0 + static_cast<double>(i % 100) / 100};
    if (feed.publish(t) != shmbus::PublishResult::ok) return 1;
  }
  // A late joiner: the last 8 ticks published before it joined.
  auto late = ticks.subscribe({.policy = shmbus::SubscriberPolicy::lossy, .history = 8});
  Tick t{};
  int replayed = 0;
  while (late.try_recv(t) == shmbus::ReceiveResult::ok) ++replayed;
  std::printf("[late joiner] replayed %d ticks of history, the last #%llu\n", replayed,
              static_cast<unsigned long long>(t.seq));
  feed.close();  // subscribers get eof once they have read everything

  int ok = replayed == 8 && t.seq == kTicks - 1;
  for (pid_t pid : {risk_pid, dash_pid}) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  std::printf("fan-out %s\n", ok ? "complete" : "FAILED");
  return ok ? 0 : 1;
}
