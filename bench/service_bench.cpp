// Service call round trips beside the pipe's, in one binary, pinned:
//
//   BM_Service_Busy_RTT/N, BM_Service_Block_RTT/N   one call of an N-byte
//       string request and response, client and server on the two cpus;
//       the response decoded into the caller's string (call(req, out, t))
//   BM_Service_BusyValue_RTT/N                      the same, the response
//       returned as a new string (call(req, t): one allocation more)
//   BM_Pipe_Busy_RTT/N, BM_Pipe_Block_RTT/N         the same bytes over a
//       bare pipe (send, echo, receive): the floor a call builds on
//   BM_Service_Clients_Calls/C                      calls/s of C client
//       processes calling one server (busy-poll), 16 calls each in flight;
//       the server pinned, client c pinned to the c-th other cpu (wrapping:
//       on 2 cpus all clients share the one the server does not use, and
//       the row then measures how that cpu is shared among them)
//   BM_Service_ClientsBlock_Calls/C                 the same, blocking pipes
//   BM_Service_ClientsBusyServerBlock_Calls/C       busy-poll clients, the
//       server blocking (ServiceOptions::wait): what not spinning costs it
//   BM_ZeroMQ_ReqRep_Block_RTT/N                    peers: ZeroMQ REQ/REP
//   BM_PyMpListener_Block_RTT/N                     over ipc://, Python's
//   BM_PyMpManager_Block_Call/N                     multiprocessing.connection
//       Listener/Client (AF_UNIX, authkey) and one Manager().dict() proxy
//       call (a Python child measures its own; SHMBUS_BENCH_PY_ITERS)
//
// Round trips report p50_ns etc. and a reference beside (floor / futex).
#include <benchmark/benchmark.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/service.hpp"
#include "shmbus/topology.hpp"

#ifdef SHMBUS_HAVE_ZMQ
#include "zmq_peer.hpp"
#endif

SHMBUS_BENCH_REFERENCES();

namespace shmbus::bench {
namespace {

using namespace std::chrono_literals;
using Echo = Service<std::string, std::string>;
using EchoClient = ServiceClient<std::string, std::string>;

PipeOptions options_for(WaitStrategy s) {
  PipeOptions o;
  o.wait.strategy = s;
  return o;
}

// A server that echoes until it gets an empty request (answered, then it
// returns).
void serve_echo(const std::string& name) {
  Echo server(name);
  for (;;) {
    auto req = server.take_for(30s);
    if (!req) return;
    const bool stop = req->value().empty();
    req->respond(req->value());
    if (stop) return;
  }
}

void service_rtt(benchmark::State& state, WaitStrategy strategy, bool into = true) {
  ReferenceBeside beside(state, reference_for(strategy));
  const auto& cpus = bench_cpus();
  const std::string name = bench_name("svc");
  const auto size = static_cast<std::size_t>(state.range(0));
  PinnedChild child(cpus.child, [&name] { serve_echo(name); });
  pin_this_thread(cpus.parent);
  std::optional<EchoClient> client;
  const auto give_up = Clock::now() + 10s;
  while (!client && Clock::now() < give_up) {
    try {
      client.emplace(name, 1s, options_for(strategy));
    } catch (const Error&) {  // not listening yet
    }
  }
  if (!client) {
    state.SkipWithError("no server");
    return;
  }
  const std::string msg(size, 'x');
  LatencyRecorder rec;
  const int warm = strategy == WaitStrategy::blocking ? kBlockWarmUp : kBusyWarmUp;
  for (int i = 0; i < warm; ++i) (void)client->call(msg, 10s);
  std::string back;  // into: as the pipe row's recv_bytes_into, no allocation per call
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    if (into)
      client->call(msg, back, 10s);
    else
      back = client->call(msg, 10s);
    if (back.size() != size) {
      state.SkipWithError("wrong response");
      break;
    }
    rec.add_ticks(ticks() - t0);
  }
  (void)client->call(std::string(), 10s);  // stops the server
  if (!child.join()) state.SkipWithError("server failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

void pipe_rtt(benchmark::State& state, WaitStrategy strategy) {
  pipe_round_trip(state, options_for(strategy));
}

void BM_Service_Busy_RTT(benchmark::State& s) { service_rtt(s, WaitStrategy::busy_poll); }
void BM_Service_BusyValue_RTT(benchmark::State& s) {
  service_rtt(s, WaitStrategy::busy_poll, false);
}
void BM_Service_Block_RTT(benchmark::State& s) { service_rtt(s, WaitStrategy::blocking); }
void BM_Pipe_Busy_RTT(benchmark::State& s) { pipe_rtt(s, WaitStrategy::busy_poll); }
void BM_Pipe_Block_RTT(benchmark::State& s) { pipe_rtt(s, WaitStrategy::blocking); }

// The cpus a client may be pinned to: every cpu the topology knows but the
// server's (bench_cpus().parent), or the server's own on a one-cpu host.
// Not this thread's affinity: an earlier row pinned it to the server's cpu.
std::vector<int> client_cpus() {
  std::vector<int> cpus;
  try {
    for (const CoreInfo& core : Topology::current().cores())
      for (int cpu : core.cpus)
        if (cpu != bench_cpus().parent) cpus.push_back(cpu);
  } catch (const Error&) {  // no topology: the pair's other cpu
  }
  if (cpus.empty()) cpus.push_back(bench_cpus().child);
  return cpus;
}

// C clients (forked, each pinned to a cpu other than the server's) make
// calls with 16 in flight each while the timed loop runs in the server
// (this process, pinned): calls/s served. A forked child inherits its
// parent's affinity, so unpinned clients would all have shared the
// server's one cpu (1.5-2 k calls/s busy-poll, each side spinning through
// the other's time slice: issue 18).
void clients_calls(benchmark::State& state, WaitStrategy strategy,
                   std::optional<WaitStrategy> server_wait = std::nullopt) {
  const int clients = static_cast<int>(state.range(0));
  const std::string name = bench_name("svcn");
  ServiceOptions options;
  if (server_wait) options.wait = WaitPolicy{.strategy = *server_wait};
  Echo server(name, options);
  pin_this_thread(bench_cpus().parent);
  const std::vector<int> cpus = client_cpus();
  std::vector<pid_t> kids;
  for (int c = 0; c < clients; ++c) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      (void)pin_this_thread(cpus[static_cast<std::size_t>(c) % cpus.size()]);
      try {
        EchoClient client(name, 10s, options_for(strategy));
        std::vector<PendingCall<std::string, std::string>> calls;
        for (;;) {
          calls.clear();
          for (int k = 0; k < 16; ++k) calls.push_back(client.call_async("0123456789abcdef"));
          for (auto& call : calls) (void)call.get_for(10s);
        }
      } catch (...) {
      }
      ::_exit(0);  // the server's end closing stops us
    }
    kids.push_back(pid);
  }
  for (auto _ : state) {
    auto req = server.take_for(10s);
    if (!req) {
      state.SkipWithError("no request");
      break;
    }
    req->respond(req->value());
  }
  for (pid_t k : kids) ::kill(k, SIGKILL);
  for (pid_t k : kids) ::waitpid(k, nullptr, 0);
  state.SetItemsProcessed(state.iterations());
}
void BM_Service_Clients_Calls(benchmark::State& s) { clients_calls(s, WaitStrategy::busy_poll); }
void BM_Service_ClientsBlock_Calls(benchmark::State& s) {
  clients_calls(s, WaitStrategy::blocking);
}
void BM_Service_ClientsBusyServerBlock_Calls(benchmark::State& s) {
  clients_calls(s, WaitStrategy::busy_poll, WaitStrategy::blocking);
}

#ifdef SHMBUS_HAVE_ZMQ
void BM_ZeroMQ_ReqRep_Block_RTT(benchmark::State& s) { zeromq_round_trip(s, ZMQ_REQ, ZMQ_REP); }
BENCHMARK(BM_ZeroMQ_ReqRep_Block_RTT)->Arg(64)->UseRealTime();
#endif

void BM_PyMpListener_Block_RTT(benchmark::State& s) { python_round_trip(s, "listener"); }
void BM_PyMpManager_Block_Call(benchmark::State& s) { python_round_trip(s, "manager"); }
BENCHMARK(BM_PyMpListener_Block_RTT)->Arg(64)->Iterations(python_iterations())->UseManualTime();
BENCHMARK(BM_PyMpManager_Block_Call)->Arg(64)->Iterations(python_iterations())->UseManualTime();

BENCHMARK(BM_Pipe_Busy_RTT)->Arg(64)->UseRealTime();
BENCHMARK(BM_Service_Busy_RTT)->Arg(64)->UseRealTime();
BENCHMARK(BM_Service_BusyValue_RTT)->Arg(64)->UseRealTime();
BENCHMARK(BM_Pipe_Block_RTT)->Arg(64)->UseRealTime();
BENCHMARK(BM_Service_Block_RTT)->Arg(64)->UseRealTime();
BENCHMARK(BM_Service_Clients_Calls)->Arg(1)->Arg(4)->UseRealTime();
BENCHMARK(BM_Service_ClientsBlock_Calls)->Arg(1)->Arg(4)->UseRealTime();
BENCHMARK(BM_Service_ClientsBusyServerBlock_Calls)->Arg(1)->Arg(4)->UseRealTime();

}  // namespace
}  // namespace shmbus::bench

BENCHMARK_MAIN();
