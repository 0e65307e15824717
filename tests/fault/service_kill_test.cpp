// A server SIGKILLed in the middle of calls, 200 times (SHMBUS_SOAK=1:
// 2,000): every pending call of the client ends with its response or with
// ServerGone (peer_dead), never at its timeout, each telling whether the
// server had taken it (the call it died holding: maybe executed; those it
// never read: not executed), and each restarted server serves the same
// client's next calls.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <random>
#include <vector>

#include "shmbus/service.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

int rounds() {
  const char* soak = std::getenv("SHMBUS_SOAK");
  return (soak != nullptr && soak[0] == '1') ? 2000 : 200;
}

TEST(ServiceKill, ServerKilledMidCallAnswersEveryPendingCall) {
  SegmentGuard g(unique_name("svkill"));
  std::mt19937 rng(99);
  std::optional<ServiceClient<int, int>> client;
  constexpr int kCalls = 8;  // pending when the server dies
  int answered = 0, died = 0, taken_at_death = 0;
  for (int round = 0; round < rounds(); ++round) {
    const int serve = static_cast<int>(rng() % 6);  // answers before it dies mid-call
    const pid_t server = test::fork_child([&] {
      Service<int, int> s(g.name());
      for (int i = 0;; ++i) {
        auto req = s.take_for(10s);
        if (!req) return 1;
        if (i == serve) ::raise(SIGKILL);  // took a request, never answers it
        req->respond(req->value() * 2);
      }
    });
    // Connect (or, with the client from the last round, reconnect on the
    // first call) once the new server has the name.
    std::vector<PendingCall<int, int>> calls;
    ASSERT_TRUE(test::poll_until([&] {
      try {
        if (!client) client.emplace(g.name(), 50ms);
        calls.push_back(client->call_async(round));
        return true;
      } catch (const Error& e) {
        // Not up yet: no listener, the dead one's, or not accepting yet.
        if (e.code() != Errc::not_found && e.code() != Errc::peer_dead &&
            e.code() != Errc::timed_out && e.code() != Errc::closed)
          throw;
        return false;
      }
    })) << "round "
        << round;
    for (int k = 1; k < kCalls; ++k) calls.push_back(client->call_async(round + k));
    // The server answers calls 0..serve-1, dies holding call `serve`, and
    // never reads the rest: each call says exactly that.
    for (int k = 0; k < kCalls; ++k) {
      auto& call = calls[static_cast<std::size_t>(k)];
      if (k < serve) {
        EXPECT_EQ(call.get_for(30s), 2 * (round + k)) << "round " << round << " call " << k;
        ++answered;
        continue;
      }
      try {
        (void)call.get_for(30s);
        ADD_FAILURE() << "round " << round << " call " << k << ": answered by a dead server";
      } catch (const ServerGone& e) {
        EXPECT_EQ(e.maybe_executed(), k == serve)
            << "round " << round << " call " << k << ": " << e.what();
        ++died;
        taken_at_death += k == serve ? 1 : 0;
      }
      // Anything else (timed_out: a call left hanging) fails the test.
    }
    EXPECT_EQ(test::wait_child(server).signal, SIGKILL) << "round " << round;
  }
  std::printf("%d server kills: %d calls answered, %d ended by the death (%d of them taken)\n",
              rounds(), answered, died, taken_at_death);
  EXPECT_EQ(answered + died, kCalls * rounds());
  EXPECT_EQ(taken_at_death, rounds());  // each death ended the call it had taken, as taken
}

}  // namespace
}  // namespace shmbus
