// wait_cost — what one side of the 64-channel round trip of
// bench/wait_any_bench.cpp executes per call, in one thread, for counting
// with callgrind (issue 17):
//
//   valgrind --tool=callgrind --callgrind-out-file=wait.cg build/release/bench/wait_cost
//   callgrind_annotate --inclusive=yes wait.cg | grep cost_
//
// Each wrapper is called kCalls times (cost_send twice that, the blocking
// ones a sixteenth); its inclusive instruction count divided by that is
// the cost per call (entry and return included).
//   cost_send                one 8 B send on the active pipe (both rows' peer)
//   cost_recv_plain          recv() of it on one pipe, no wait(): the plain peer
//   cost_wait64_busy         wait() over 64 busy-poll pipe ends, the message
//                            already there on the one used last time (the
//                            [wait.hint] path; every 16th call a whole pass)
//   cost_recv_after_wait     the recv() that follows it
//   cost_wait64_pass         wait() over the same 64 with a zero timeout and
//                            the active end moving every call: a whole pass
//   cost_wait64_block        wait() over 64 blocking ends with nothing there:
//                            the sleep's arm, fence, re-check, futex_waitv and
//                            disarm; a fault hook at sleeper_counted sends the
//                            message (so futex_waitv returns at once: no sleep)
//   cost_recv_after_block    the recv() that follows it
//
// `wait_cost time` instead times (wall clock, no callgrind) the blocking
// form over 1, 64 and 127 ends, which callgrind cannot weigh: its cost is
// mostly the kernel's, one futex key per word per futex_waitv (a page-table
// walk with interrupts off for a shared futex: docs/performance.md).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/wait_any.hpp"

namespace {

using shmbus::Connection;
using shmbus::RecvResult;
using shmbus::SendResult;
using shmbus::Waitable;

constexpr int kCalls = 16 * 10000;
constexpr std::size_t kChannels = 64;
constexpr std::size_t kActive = kChannels / 2;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "wait_cost: %s failed\n", what);
  std::exit(1);
}

[[gnu::noipa]] SendResult cost_send(Connection& c, std::uint64_t v) noexcept { return c.send(v); }
[[gnu::noipa]] RecvResult cost_recv_plain(Connection& c, std::uint64_t& v) noexcept {
  return c.recv(v);
}
[[gnu::noipa]] RecvResult cost_recv_after_wait(Connection& c, std::uint64_t& v) noexcept {
  return c.recv(v);
}
[[gnu::noipa]] RecvResult cost_recv_after_block(Connection& c, std::uint64_t& v) noexcept {
  return c.recv(v);
}
[[gnu::noipa]] void cost_wait64_busy(std::span<const Waitable> set,
                                     std::vector<std::size_t>& ready) noexcept {
  shmbus::wait(set, ready);
}
[[gnu::noipa]] void cost_wait64_pass(std::span<const Waitable> set,
                                     std::vector<std::size_t>& ready) noexcept {
  shmbus::wait(set, ready, shmbus::Clock::duration::zero());
}
[[gnu::noipa]] void cost_wait64_block(std::span<const Waitable> set,
                                      std::vector<std::size_t>& ready) noexcept {
  shmbus::wait(set, ready);
}

struct Pipes {
  std::vector<Connection> tx, rx;
  explicit Pipes(shmbus::WaitStrategy s, std::size_t n) {
    shmbus::PipeOptions o;
    o.wait.strategy = s;
    o.capacity = 4096;
    for (std::size_t i = 0; i < n; ++i) {
      auto [a, b] = shmbus::Pipe(o);
      tx.push_back(std::move(a));
      rx.push_back(std::move(b));
    }
  }
};

void plain_rounds() {
  Pipes p(shmbus::WaitStrategy::busy_poll, 1);
  std::uint64_t v = 0;
  for (int k = 0; k < kCalls; ++k) {
    if (cost_send(p.tx[0], k) != SendResult::ok) fail("send");
    if (cost_recv_plain(p.rx[0], v) != RecvResult::ok || v != std::uint64_t(k)) fail("recv");
  }
}

void wait_rounds() {
  Pipes p(shmbus::WaitStrategy::busy_poll, kChannels);
  std::vector<Waitable> set(p.rx.begin(), p.rx.end());
  std::vector<std::size_t> ready;
  ready.reserve(kChannels);
  std::uint64_t v = 0;
  for (int k = 0; k < kCalls; ++k) {
    if (cost_send(p.tx[kActive], k) != SendResult::ok) fail("send");
    cost_wait64_busy(set, ready);
    if (ready.size() != 1 || ready[0] != kActive) fail("wait");
    if (cost_recv_after_wait(p.rx[kActive], v) != RecvResult::ok || v != std::uint64_t(k))
      fail("recv");
  }
  for (int k = 0; k < kCalls; ++k) {
    const std::size_t at = std::size_t(k) % kChannels;
    if (p.tx[at].send(std::uint64_t(k)) != SendResult::ok) fail("send");
    cost_wait64_pass(set, ready);
    if (ready.size() != 1 || ready[0] != at) fail("wait pass");
    if (p.rx[at].recv(v) != RecvResult::ok) fail("recv");
  }
}

Connection* g_hook_sender = nullptr;
std::uint64_t g_hook_value = 0;
void send_when_counted(shmbus::detail::FaultPoint p) noexcept {
  if (p == shmbus::detail::FaultPoint::sleeper_counted && g_hook_sender != nullptr)
    (void)g_hook_sender->send(g_hook_value);
}

// Returns the wall-clock ns per call (wait() and the recv() after it).
double block_rounds(std::size_t ends = kChannels) {
  Pipes p(shmbus::WaitStrategy::blocking, ends);
  std::vector<Waitable> set(p.rx.begin(), p.rx.end());
  std::vector<std::size_t> ready;
  ready.reserve(ends);
  std::uint64_t v = 0;
  const std::size_t active = ends / 2;
  g_hook_sender = &p.tx[active];
  shmbus::detail::set_fault_hook(&send_when_counted);
  const auto t0 = std::chrono::steady_clock::now();
  for (int k = 0; k < kCalls / 16; ++k) {
    g_hook_value = std::uint64_t(k);
    cost_wait64_block(set, ready);
    if (ready.size() != 1 || ready[0] != active) fail("blocking wait");
    if (cost_recv_after_block(p.rx[active], v) != RecvResult::ok || v != std::uint64_t(k))
      fail("recv after blocking wait");
  }
  const std::chrono::duration<double, std::nano> took = std::chrono::steady_clock::now() - t0;
  shmbus::detail::set_fault_hook(nullptr);
  g_hook_sender = nullptr;
  return took.count() / (kCalls / 16);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "time") == 0) {
    for (int r = 0; r < 3; ++r) {
      const double one = block_rounds(1), many = block_rounds(kChannels), most = block_rounds(127);
      std::printf("blocking wait() + recv, ns per call: 1 end %.0f, 64 ends %.0f, 127 ends %.0f\n",
                  one, many, most);
    }
    return 0;
  }
  plain_rounds();
  wait_rounds();
  (void)block_rounds();
  std::printf("wait_cost: %d calls per wrapper (%d for the blocking ones)\n", kCalls, kCalls / 16);
  return 0;
}
