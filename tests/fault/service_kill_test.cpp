// A server SIGKILLed in the middle of calls, 200 times (SHMBUS_SOAK=1:
// 2,000): every pending call of the client ends with its response or with
// peer_dead, never at its timeout, and each restarted server serves the
// same client's next calls.
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
  int answered = 0, died = 0;
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
    for (int k = 1; k < 8; ++k) calls.push_back(client->call_async(round + k));
    for (int k = 0; k < 8; ++k) {
      try {
        EXPECT_EQ(calls[static_cast<std::size_t>(k)].get_for(30s), 2 * (round + k));
        ++answered;
      } catch (const Error& e) {
        ASSERT_EQ(e.code(), Errc::peer_dead) << "round " << round << ": " << e.what();
        ++died;
      }
    }
    EXPECT_EQ(test::wait_child(server).signal, SIGKILL) << "round " << round;
  }
  std::printf("%d server kills: %d calls answered, %d ended by the death\n", rounds(), answered,
              died);
  EXPECT_GE(died, rounds());  // each death ended at least the call it had taken
}

}  // namespace
}  // namespace shmbus
