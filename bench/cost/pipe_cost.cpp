// pipe_cost — the pipe's inlined send and receive paths, each behind one
// non-inlined wrapper, for counting and reading them (issue 22):
//
//   valgrind --tool=callgrind --callgrind-out-file=pipe.cg build/release/bench/pipe_cost
//   callgrind_annotate --inclusive=yes pipe.cg | grep cost_
//
// Each wrapper (noipa: no constant is propagated into it, so the span
// wrappers see a run-time size) is called kRounds * 16 times (16 sends, then 16 receives,
// on a pipe of 256 KiB, as BM_Pipe_OneCore_SendRecv does), once on a
// busy-poll pipe and once on an adaptive one (the default; template
// argument A = 1, a row of its own): its
// inclusive instruction count divided by that is the cost per call, the
// wrapper's entry and return and every out-of-line slow path it reaches
// (the sender's [ring.stats] publication, the receiver's publication of
// its read position) included. `objdump -d --no-show-raw-insn -C` of this
// binary shows what each call runs: see the comment block above
// Connection::fast_send() in connection.hpp for what each instruction
// group is for. Read the disassembly for loads and stores too: on one
// core they bound a send and a receive (see there).
//
// The peer, in the same harness and shape: cost_boost_push/pop wrap
// Boost.Lockfree's spsc_queue push(Msg<N>) and pop(Msg<N>&) (issue 22's
// target: the pipe's one-core send + receive at most twice its time).
#include <array>
#include <boost/lockfree/spsc_queue.hpp>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>

#include "shmbus/pipe.hpp"

namespace {

using shmbus::Connection;
using shmbus::RecvResult;
using shmbus::SendResult;

constexpr int kRounds = 10000;

template <std::size_t N>
struct Msg {
  std::array<std::byte, N> bytes;
};

// N only names the size a wrapper is used with, A whether its pipe is
// adaptive (A = 1; 0: busy-poll): a separate row in callgrind each.
template <std::size_t N, int A>
[[gnu::noipa]] SendResult cost_send_bytes(Connection& c, std::span<const std::byte> m) noexcept {
  return c.send_bytes(m);
}
template <std::size_t N, int A>
[[gnu::noipa]] RecvResult cost_recv_bytes_into(Connection& c, std::span<std::byte> b,
                                               std::size_t& n) noexcept {
  return c.recv_bytes_into(b, 0, n);
}
template <std::size_t N, int A>
[[gnu::noipa]] SendResult cost_send_typed(Connection& c, const Msg<N>& m) noexcept {
  return c.send(m);
}
template <std::size_t N, int A>
[[gnu::noipa]] RecvResult cost_recv_typed(Connection& c, Msg<N>& m) noexcept {
  return c.recv(m);
}

template <std::size_t N>
using BoostQueue = boost::lockfree::spsc_queue<Msg<N>, boost::lockfree::capacity<4096>>;
template <std::size_t N>
[[gnu::noipa]] bool cost_boost_push(BoostQueue<N>& q, const Msg<N>& m) noexcept {
  return q.push(m);
}
template <std::size_t N>
[[gnu::noipa]] bool cost_boost_pop(BoostQueue<N>& q, Msg<N>& m) noexcept {
  return q.pop(m);
}

shmbus::PipeOptions options(int adaptive) {
  shmbus::PipeOptions o;
  o.wait.strategy =
      adaptive != 0 ? shmbus::WaitStrategy::adaptive : shmbus::WaitStrategy::busy_poll;
  o.capacity = std::size_t{256} << 10;
  return o;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "pipe_cost: %s failed\n", what);
  std::exit(1);
}

template <std::size_t N, int A>
void bytes_rounds() {
  auto [a, b] = shmbus::Pipe(options(A));
  std::array<std::byte, N> msg{}, buf{};
  std::size_t n = 0;
  for (int r = 0; r < kRounds; ++r) {
    for (int i = 0; i < 16; ++i)
      if (cost_send_bytes<N, A>(a, msg) != SendResult::ok) fail("send_bytes");
    for (int i = 0; i < 16; ++i)
      if (cost_recv_bytes_into<N, A>(b, buf, n) != RecvResult::ok || n != N)
        fail("recv_bytes_into");
  }
}

template <std::size_t N, int A>
void typed_rounds() {
  auto [a, b] = shmbus::Pipe(options(A));
  Msg<N> m{}, r{};
  for (int k = 0; k < kRounds; ++k) {
    for (int i = 0; i < 16; ++i)
      if (cost_send_typed<N, A>(a, m) != SendResult::ok) fail("send");
    for (int i = 0; i < 16; ++i)
      if (cost_recv_typed<N, A>(b, r) != RecvResult::ok) fail("recv");
  }
}

template <std::size_t N>
void boost_rounds() {
  auto q = std::make_unique<BoostQueue<N>>();
  Msg<N> m{}, r{};
  for (int k = 0; k < kRounds; ++k) {
    for (int i = 0; i < 16; ++i)
      if (!cost_boost_push<N>(*q, m)) fail("boost push");
    for (int i = 0; i < 16; ++i)
      if (!cost_boost_pop<N>(*q, r)) fail("boost pop");
  }
}

}  // namespace

int main() {
  bytes_rounds<8, 0>();
  bytes_rounds<64, 0>();
  typed_rounds<8, 0>();
  typed_rounds<64, 0>();
  bytes_rounds<8, 1>();
  bytes_rounds<64, 1>();
  typed_rounds<8, 1>();
  typed_rounds<64, 1>();
  boost_rounds<8>();
  boost_rounds<64>();
  std::printf("pipe_cost: %d calls per wrapper and size\n", kRounds * 16);
  return 0;
}
