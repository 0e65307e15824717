// Primitives benchmarks: shmbus Lock / Event / Semaphore / Condition beside
// process-shared robust pthread mutex + condvar, POSIX named semaphores,
// Boost.Interprocess interprocess_mutex / interprocess_condition and
// eventfd, two processes pinned to bench_cpus(), one binary run. Read each
// figure as a ratio to BM_Futex_Raw_RTT (two kernel wake-ups per round
// trip, like every *_Block_RTT here) and BM_Floor_CacheLine_RTT; every
// round trip also carries the one measured right before and after itself
// (ReferenceBeside in ping_pong).
//
//   *_Uncontended_AcqRel   one acquire + release, one process, no contention
//   *_Handoff_RTT          lock passed to the other process and back
//   *_Block_RTT            set/release/notify -> the other side running ->
//                          reply: two wake-ups of a sleeping process
//   *_Adaptive_RTT         the same with shmbus's default adaptive wait
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/sync/interprocess_condition.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <cerrno>

#include "bench_support.hpp"
#include "shmbus/shmbus.hpp"

SHMBUS_BENCH_REFERENCES();

namespace shmbus::bench {
namespace {

constexpr WaitPolicy kBlocking{WaitStrategy::blocking, {}};

struct Control {
  alignas(64) std::atomic<std::uint32_t> stop;
};

// Parent: ping(), then wait_pong(); child: wait_ping(), pong(). Each round
// trip is recorded; the child stops when it sees `stop` after a ping.
// `strategy` picks the warm-up and the reference measured beside it (the
// floor for busy / adaptive waits, the raw futex for blocking ones).
template <class Ping, class WaitPing, class Pong, class WaitPong>
void ping_pong(benchmark::State& state, Ping ping, WaitPing wait_ping, Pong pong,
               WaitPong wait_pong, WaitStrategy strategy = WaitStrategy::blocking) {
  ReferenceBeside beside(state, reference_for(strategy));
  const int warm_up = strategy == WaitStrategy::blocking ? kBlockWarmUp : kBusyWarmUp;
  const auto& cpus = bench_cpus();
  auto shm = SharedMemory::create(bench_name("ctl"), sizeof(Control));
  shm.unlink();
  auto* ctl = new (shm.buf().data()) Control{};
  PinnedChild child(cpus.child, [&] {
    for (;;) {
      wait_ping();
      // acquire: pairs with the parent's release store before its last ping.
      if (ctl->stop.load(std::memory_order_acquire) != 0) return;
      pong();
    }
  });
  pin_this_thread(cpus.parent);
  for (int i = 0; i < warm_up; ++i) {  // untimed: the child running and pinned
    ping();
    wait_pong();
  }
  LatencyRecorder rec;
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    ping();
    wait_pong();
    rec.add_ticks(ticks() - t0);
  }
  ctl->stop.store(1, std::memory_order_release);
  ping();
  if (!child.join()) state.SkipWithError("child failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

// ---- Uncontended acquire + release ----

void BM_Lock_Uncontended_AcqRel(benchmark::State& state) {
  const auto name = bench_name("lock");
  auto lock = Lock::create(name);
  Lock::unlink(name);
  for (auto _ : state) {
    auto r = lock.acquire();
    benchmark::DoNotOptimize(r);
    lock.release();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RLock_Uncontended_AcqRel(benchmark::State& state) {
  const auto name = bench_name("rlock");
  auto lock = RLock::create(name);
  RLock::unlink(name);
  for (auto _ : state) {
    auto r = lock.acquire();
    benchmark::DoNotOptimize(r);
    lock.release();
  }
  state.SetItemsProcessed(state.iterations());
}

struct PthreadPair {
  pthread_mutex_t mutex;
  pthread_cond_t cond;
  int turn;
};

void init_pthread(PthreadPair* p) {
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&p->mutex, &ma);
  pthread_mutexattr_destroy(&ma);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cond, &ca);
  pthread_condattr_destroy(&ca);
  p->turn = 0;
}

void BM_PthreadRobustMutex_Uncontended_AcqRel(benchmark::State& state) {
  auto shm = SharedMemory::create(bench_name("pth"), sizeof(PthreadPair));
  shm.unlink();
  auto* p = new (shm.buf().data()) PthreadPair{};
  init_pthread(p);
  for (auto _ : state) {
    int r = pthread_mutex_lock(&p->mutex);
    benchmark::DoNotOptimize(r);
    pthread_mutex_unlock(&p->mutex);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_BoostIpcMutex_Uncontended_AcqRel(benchmark::State& state) {
  namespace bip = boost::interprocess;
  auto shm = SharedMemory::create(bench_name("bip"), sizeof(bip::interprocess_mutex));
  shm.unlink();
  auto* m = new (shm.buf().data()) bip::interprocess_mutex;
  for (auto _ : state) {
    m->lock();
    m->unlock();
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- Lock hand-off: a Lock may be released by any process (Python's
// semantics), so two Locks act as binary semaphores passing a turn. ----

void lock_handoff(benchmark::State& state, const WaitPolicy& policy) {
  const auto a = bench_name("ping");
  const auto b = bench_name("pong");
  auto ping = Lock::create(a);
  auto pong = Lock::create(b);
  Lock::unlink(a);
  Lock::unlink(b);
  ping.set_wait_policy(policy);
  pong.set_wait_policy(policy);
  (void)ping.acquire();  // held: the child blocks on it until released
  (void)pong.acquire();
  ping_pong(
      state, [&] { ping.release(); }, [&] { (void)ping.acquire(); }, [&] { pong.release(); },
      [&] { (void)pong.acquire(); }, policy.strategy);
}
void BM_Lock_Block_Handoff_RTT(benchmark::State& state) { lock_handoff(state, kBlocking); }
void BM_Lock_Adaptive_Handoff_RTT(benchmark::State& state) { lock_handoff(state, WaitPolicy{}); }

// ---- Event set -> waiter running ----

void event_rtt(benchmark::State& state, const WaitPolicy& policy) {
  const auto a = bench_name("ev-ping");
  const auto b = bench_name("ev-pong");
  auto ping = Event::create(a);
  auto pong = Event::create(b);
  Event::unlink(a);
  Event::unlink(b);
  ping.set_wait_policy(policy);
  pong.set_wait_policy(policy);
  ping_pong(
      state, [&] { ping.set(); },
      [&] {
        ping.wait();
        ping.clear();
      },
      [&] { pong.set(); },
      [&] {
        pong.wait();
        pong.clear();
      },
      policy.strategy);
}
void BM_Event_Block_RTT(benchmark::State& state) { event_rtt(state, kBlocking); }
void BM_Event_Adaptive_RTT(benchmark::State& state) { event_rtt(state, WaitPolicy{}); }

// ---- Semaphore ping-pong ----

void semaphore_rtt(benchmark::State& state, const WaitPolicy& policy) {
  const auto a = bench_name("sem-ping");
  const auto b = bench_name("sem-pong");
  auto ping = Semaphore::create(a, 0);
  auto pong = Semaphore::create(b, 0);
  Semaphore::unlink(a);
  Semaphore::unlink(b);
  ping.set_wait_policy(policy);
  pong.set_wait_policy(policy);
  ping_pong(
      state, [&] { ping.release(); }, [&] { ping.acquire(); }, [&] { pong.release(); },
      [&] { pong.acquire(); }, policy.strategy);
}
void BM_Semaphore_Block_RTT(benchmark::State& state) { semaphore_rtt(state, kBlocking); }
void BM_Semaphore_Adaptive_RTT(benchmark::State& state) { semaphore_rtt(state, WaitPolicy{}); }

void BM_PosixSem_Block_RTT(benchmark::State& state) {
  const auto a = "/" + bench_name("psem-ping");
  const auto b = "/" + bench_name("psem-pong");
  sem_t* ping = sem_open(a.c_str(), O_CREAT | O_EXCL, 0600, 0);
  sem_t* pong = sem_open(b.c_str(), O_CREAT | O_EXCL, 0600, 0);
  sem_unlink(a.c_str());
  sem_unlink(b.c_str());
  if (ping == SEM_FAILED || pong == SEM_FAILED) {
    state.SkipWithError("sem_open failed");
    return;
  }
  auto wait = [](sem_t* s) {
    while (sem_wait(s) != 0 && errno == EINTR) {
    }
  };
  ping_pong(
      state, [&] { sem_post(ping); }, [&] { wait(ping); }, [&] { sem_post(pong); },
      [&] { wait(pong); });
  sem_close(ping);
  sem_close(pong);
}

void BM_Eventfd_Block_RTT(benchmark::State& state) {
  int ping = ::eventfd(0, EFD_CLOEXEC);
  int pong = ::eventfd(0, EFD_CLOEXEC);
  auto post = [](int fd) {
    std::uint64_t one = 1;
    benchmark::DoNotOptimize(::write(fd, &one, sizeof one));
  };
  auto wait = [](int fd) {
    std::uint64_t v = 0;
    benchmark::DoNotOptimize(::read(fd, &v, sizeof v));
  };
  ping_pong(
      state, [&] { post(ping); }, [&] { wait(ping); }, [&] { post(pong); }, [&] { wait(pong); });
  ::close(ping);
  ::close(pong);
}

// ---- Condition ping-pong: a turn variable under the lock, one condition ----

void BM_Condition_Block_RTT(benchmark::State& state) {
  const auto ln = bench_name("cv-lock");
  const auto cn = bench_name("cv");
  auto lock = Lock::create(ln);
  auto cond = Condition::create(cn, lock);
  Lock::unlink(ln);
  Condition::unlink(cn);
  cond.set_wait_policy(kBlocking);
  auto shm = SharedMemory::create(bench_name("turn"), 64);
  shm.unlink();
  auto* turn = reinterpret_cast<int*>(shm.buf().data());  // under the lock
  auto* stop = reinterpret_cast<int*>(shm.buf().data()) + 1;
  ping_pong(
      state,
      [&] {
        std::unique_lock g(cond);
        *turn = 1;
        cond.notify();
      },
      [&] {
        std::unique_lock g(cond);
        cond.wait([&] { return *turn == 1 || *stop != 0; });
      },
      [&] {
        std::unique_lock g(cond);
        *turn = 0;
        cond.notify();
      },
      [&] {
        std::unique_lock g(cond);
        cond.wait([&] { return *turn == 0; });
      });
}

void BM_PthreadCond_Block_RTT(benchmark::State& state) {
  auto shm = SharedMemory::create(bench_name("pthcv"), sizeof(PthreadPair));
  shm.unlink();
  auto* p = new (shm.buf().data()) PthreadPair{};
  init_pthread(p);
  auto set_turn = [p](int t) {
    pthread_mutex_lock(&p->mutex);
    p->turn = t;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mutex);
  };
  auto wait_turn = [p](int t) {
    pthread_mutex_lock(&p->mutex);
    while (p->turn != t && p->turn != 2) pthread_cond_wait(&p->cond, &p->mutex);
    pthread_mutex_unlock(&p->mutex);
  };
  ping_pong(
      state, [&] { set_turn(1); }, [&] { wait_turn(1); }, [&] { set_turn(0); },
      [&] { wait_turn(0); });
}

void BM_BoostIpcCond_Block_RTT(benchmark::State& state) {
  namespace bip = boost::interprocess;
  struct Pair {
    bip::interprocess_mutex mutex;
    bip::interprocess_condition cond;
    int turn = 0;
  };
  auto shm = SharedMemory::create(bench_name("bipcv"), sizeof(Pair));
  shm.unlink();
  auto* p = new (shm.buf().data()) Pair;
  auto set_turn = [p](int t) {
    bip::scoped_lock<bip::interprocess_mutex> g(p->mutex);
    p->turn = t;
    p->cond.notify_one();
  };
  auto wait_turn = [p](int t) {
    bip::scoped_lock<bip::interprocess_mutex> g(p->mutex);
    while (p->turn != t) p->cond.wait(g);
  };
  ping_pong(
      state, [&] { set_turn(1); }, [&] { wait_turn(1); }, [&] { set_turn(0); },
      [&] { wait_turn(0); });
}

}  // namespace
}  // namespace shmbus::bench

using namespace shmbus::bench;
BENCHMARK(BM_Lock_Uncontended_AcqRel);
BENCHMARK(BM_RLock_Uncontended_AcqRel);
BENCHMARK(BM_PthreadRobustMutex_Uncontended_AcqRel);
BENCHMARK(BM_BoostIpcMutex_Uncontended_AcqRel);
BENCHMARK(BM_Lock_Block_Handoff_RTT)->UseRealTime();
BENCHMARK(BM_Lock_Adaptive_Handoff_RTT)->UseRealTime();
BENCHMARK(BM_Event_Block_RTT)->UseRealTime();
BENCHMARK(BM_Event_Adaptive_RTT)->UseRealTime();
BENCHMARK(BM_Semaphore_Block_RTT)->UseRealTime();
BENCHMARK(BM_Semaphore_Adaptive_RTT)->UseRealTime();
BENCHMARK(BM_PosixSem_Block_RTT)->UseRealTime();
BENCHMARK(BM_Eventfd_Block_RTT)->UseRealTime();
BENCHMARK(BM_Condition_Block_RTT)->UseRealTime();
BENCHMARK(BM_PthreadCond_Block_RTT)->UseRealTime();
BENCHMARK(BM_BoostIpcCond_Block_RTT)->UseRealTime();
BENCHMARK_MAIN();
