// Queue benchmarks: shmbus::Queue against its peers, in the same binary, on
// the same cores, with 64-byte messages.
//
//   BM_<T>_Stream_<P>P<C>C/64   throughput: P producer and C consumer
//                               processes (forked per iteration, timed from
//                               a futex "go" to the last consumer's exit)
//   BM_<T>_Busy_RTT/64          round trip, both sides spinning
//   BM_<T>_Block_RTT/64         round trip, both sides sleeping in the kernel
//
// Peers (T):
//   Queue          shmbus::Queue<Msg> (adaptive policy for streams)
//   BoostIpcMq     boost::interprocess::message_queue (shared-memory ring
//                  under an interprocess mutex + condition variables)
//   PosixMq        mq_send/mq_receive (kernel queue; capacity is capped by
//                  /proc/sys/fs/mqueue/msg_max, 10 by default)
//   MutexCondvar   a 1024-slot ring in shared memory under one
//                  PTHREAD_PROCESS_SHARED mutex and two condition variables
//   BoostLockfree  boost::lockfree::queue<Msg, capacity<1024>>: with a
//                  compile-time capacity its nodes live in an array inside
//                  the object and are linked by 16-bit tagged indices, not
//                  pointers, so it can live in shared memory (placement-new
//                  in a MAP_SHARED mapping). It has no blocking: consumers
//                  and producers spin with a pause, and it has no crash
//                  safety (a process killed inside push/pop can leave a node
//                  off both lists). Not usable with a runtime capacity (the
//                  node allocator then uses the heap of one process).
//
//   LaneSketch     not a peer: a sketch of the layout the queue's issue needs
//                  (per-producer lanes), measured beside the queue so the gap
//                  shows in every run. See the struct's comment.
//   LaneClaim      not a peer: the same lanes with the queue's own slot claim
//                  (consumers CAS the slot word), the layout that keeps the
//                  queue's crash repair as it is.
//
//   QueueBlocking  shmbus::Queue with the blocking policy (no spinning), the
//                  better choice when processes outnumber cores.
//   BM_Queue_OneCore_PutGet/N   one thread puts 16 N-byte items, then gets
//                               them back: put/get's own cost, no cache line
//                               moving between cores (the pipe's and
//                               Boost.Lockfree spsc_queue's are in pipe_bench)
//
//   Pipe           a half-duplex shmbus::Pipe per direction (busy-poll), the
//                  SPSC channel the queue's busy round trip is held against
//                  (issue: within 1.5x of the pipe's), measured in this run.
//
// The references BM_Floor_CacheLine_RTT and BM_Futex_Raw_RTT run in the same
// binary (SHMBUS_BENCH_REFERENCES): read the RTT figures as ratios to them.
// Busy-poll RTT is compared with the cache-line floor here and with
// BM_Pipe_Busy_RTT/64 of this binary (the pipe suite has more sizes). On a shared, oversubscribed
// VM run with --benchmark_repetitions=N --benchmark_enable_random_interleaving
// so that the ratios compare figures taken at the same time.
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/lockfree/queue.hpp>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "shmbus/detail/futex.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/topology.hpp"

SHMBUS_BENCH_REFERENCES();

namespace {

using shmbus::bench::bench_cpus;
using shmbus::bench::bench_name;
using shmbus::bench::LatencyRecorder;
using shmbus::bench::pin_this_thread;
using shmbus::bench::ticks;

struct Msg {
  std::uint64_t seq;
  std::uint32_t producer;
  std::uint32_t stop;  // 1: sentinel
  char pad[48];
};
static_assert(sizeof(Msg) == 64);

template <class T>
T* map_shared() {
  void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  return new (p) T();
}
template <class T>
void unmap_shared(T* p) {
  if (p == nullptr) return;
  p->~T();
  ::munmap(p, sizeof(T));
}

// ---- transports --------------------------------------------------------------

template <shmbus::WaitStrategy S>
struct ShmbusQueue {
  std::string name = bench_name("queue");
  shmbus::Queue<Msg> q;
  explicit ShmbusQueue(std::size_t cap)
      : q(shmbus::Queue<Msg>::create(
            name, {.capacity = cap, .policy = {S, std::chrono::microseconds(50)}})) {
    shmbus::Queue<Msg>::unlink(name);  // forked children keep their mapping
  }
  void put(const Msg& m) { (void)q.put(m); }
  void get(Msg& m) { (void)q.get(m); }
};

// One direction of a round trip: the receive and send ends of a
// half-duplex pipe (each process uses one of them after the fork).
struct ShmbusPipe {
  std::pair<shmbus::Connection, shmbus::Connection> ends;  // (receives, sends)
  explicit ShmbusPipe(std::size_t /*cap: the ring's default size*/)
      : ends(shmbus::Pipe(shmbus::PipeOptions{
            .duplex = false, .wait = {.strategy = shmbus::WaitStrategy::busy_poll}})) {}
  void put(const Msg& m) { (void)ends.second.send(m); }
  void get(Msg& m) { (void)ends.first.recv(m); }
};

struct BoostIpcMq {
  std::string name = bench_name("bipc");
  std::unique_ptr<boost::interprocess::message_queue> mq;
  explicit BoostIpcMq(std::size_t cap) {
    boost::interprocess::message_queue::remove(name.c_str());
    mq = std::make_unique<boost::interprocess::message_queue>(boost::interprocess::create_only,
                                                              name.c_str(), cap, sizeof(Msg));
  }
  ~BoostIpcMq() { boost::interprocess::message_queue::remove(name.c_str()); }
  void put(const Msg& m) { mq->send(&m, sizeof m, 0); }
  void get(Msg& m) {
    std::size_t n = 0;
    unsigned prio = 0;
    mq->receive(&m, sizeof m, n, prio);
  }
};

struct PosixMq {
  std::string name = "/" + bench_name("pmq");
  mqd_t mq = static_cast<mqd_t>(-1);
  explicit PosixMq(std::size_t /*cap: capped by msg_max*/) {
    mq_attr attr{};
    attr.mq_maxmsg = 10;  // the default /proc/sys/fs/mqueue/msg_max
    attr.mq_msgsize = sizeof(Msg);
    ::mq_unlink(name.c_str());
    mq = ::mq_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
    ::mq_unlink(name.c_str());  // children inherit the descriptor
  }
  ~PosixMq() {
    if (mq != static_cast<mqd_t>(-1)) ::mq_close(mq);
  }
  bool ok() const { return mq != static_cast<mqd_t>(-1); }
  void put(const Msg& m) {
    while (::mq_send(mq, reinterpret_cast<const char*>(&m), sizeof m, 0) != 0 && errno == EINTR) {
    }
  }
  void get(Msg& m) {
    while (::mq_receive(mq, reinterpret_cast<char*>(&m), sizeof m, nullptr) < 0 && errno == EINTR) {
    }
  }
};

struct MutexCondvarRing {
  static constexpr std::size_t kCap = 1024;
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  std::size_t head = 0, tail = 0;  // under mu
  Msg slots[kCap];
  MutexCondvarRing() {
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&mu, &ma);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    pthread_cond_init(&not_empty, &ca);
    pthread_cond_init(&not_full, &ca);
  }
};

struct MutexCondvar {
  MutexCondvarRing* r = map_shared<MutexCondvarRing>();
  explicit MutexCondvar(std::size_t) {}
  ~MutexCondvar() { unmap_shared(r); }
  void put(const Msg& m) {
    pthread_mutex_lock(&r->mu);
    while (r->tail - r->head == MutexCondvarRing::kCap) pthread_cond_wait(&r->not_full, &r->mu);
    r->slots[r->tail++ % MutexCondvarRing::kCap] = m;
    pthread_cond_signal(&r->not_empty);
    pthread_mutex_unlock(&r->mu);
  }
  void get(Msg& m) {
    pthread_mutex_lock(&r->mu);
    while (r->tail == r->head) pthread_cond_wait(&r->not_empty, &r->mu);
    m = r->slots[r->head++ % MutexCondvarRing::kCap];
    pthread_cond_signal(&r->not_full);
    pthread_mutex_unlock(&r->mu);
  }
};

using LockfreeQ = boost::lockfree::queue<Msg, boost::lockfree::capacity<1024>>;
struct BoostLockfree {
  LockfreeQ* q = map_shared<LockfreeQ>();
  explicit BoostLockfree(std::size_t) {}
  ~BoostLockfree() { unmap_shared(q); }
  void put(const Msg& m) {
    while (!q->bounded_push(m)) shmbus::detail::cpu_relax();
  }
  void get(Msg& m) {
    while (!q->pop(m)) shmbus::detail::cpu_relax();
  }
};

// The sketches below copy a message out of line, as a library's put/get
// does (its size known only at run time). Inlined, `sl.payload = m` let
// the compiler drop the copy of the bytes the harness never reads: the
// consumer then touched one of the slot's two lines and streamed about 2x
// faster (LaneClaim 1P1C, one run), which made these sketches look better
// than any real queue can be.
[[gnu::noinline]] void copy_msg(Msg* to, const Msg* from) {
  volatile std::size_t n = sizeof(Msg);  // a run-time size, as put/get see it
  std::memcpy(to, from, n);
}

// LaneSketch: MPMC as one SPSC lane per producer. A producer owns its lane
// and publishes a slot by a plain release store of the slot's sequence (no
// read-modify-write, so nothing on its path waits for the line the consumer
// is polling); a consumer copies the slot at a lane's head and then takes
// it with a CAS of the head word (position << 12 | taker), after writing the
// previous taker into taken_by[] so every take stays attributable (the cost
// a crash-safe version would pay). After each publication the producer
// checks a sleepers count behind only a compiler barrier, as the pipe's
// adaptive sender does ([fence.asym] in futex.hpp): what a sleep-capable
// version pays per message, with consumers paying membarrier before they
// sleep. This sketch's consumers spin and yield and never sleep. (Publishing
// with an exchange instead, the other way to order the publication before
// that check, made this sketch slower than shmbus::Queue: 6.5-6.9 M vs
// 8.8-9.1 M msg/s 1P1C, against 16.8-17.0 M, 2-vCPU VM, one run.)
// Also missing: crash repair, close, capacity across lanes (each lane holds
// kCap), the copy racing a producer that reuses a slot another consumer
// took (the failed CAS discards it, but it is a data race in C++ terms).
// Lanes are handed out per process in turn, kLanes >= the most producers
// of a shape, so no two producers of one iteration share one.
struct alignas(64) SketchSlot {
  std::atomic<std::uint64_t> seq;  // position + 1 once published
  Msg payload;
};
struct SketchLane {
  static constexpr std::uint64_t kCap = 1024;
  alignas(64) std::atomic<std::uint64_t> head{0};  // position << 12 | taker
  alignas(64) std::atomic<std::uint64_t> taken_by[kCap];
  SketchSlot slots[kCap];
};
struct SketchLanes {
  static constexpr unsigned kLanes = 8;
  alignas(64) std::atomic<std::uint32_t> producers{0};
  alignas(64) std::atomic<std::uint32_t> consumers{0};
  alignas(64) shmbus::detail::WaitChannel not_empty{};  // consumers never sleep here
  SketchLane lanes[kLanes];
};
struct LaneSketch {
  SketchLanes* s = map_shared<SketchLanes>();
  // Per process (each forked child has its own copy).
  SketchLane* lane = nullptr;
  std::uint64_t tail = 0, cached_head = 0;
  std::uint64_t taker = ~std::uint64_t{0};
  unsigned next = 0;

  explicit LaneSketch(std::size_t /*cap: kCap per lane*/) {}
  ~LaneSketch() { unmap_shared(s); }
  static void pause(unsigned i) {
    shmbus::detail::cpu_relax();
    if ((i & 255) == 0) ::sched_yield();
  }
  void put(const Msg& m) {
    if (lane == nullptr) {
      lane = &s->lanes[s->producers.fetch_add(1) % SketchLanes::kLanes];
      // Positions go on from the lane's last user (an earlier iteration).
      cached_head = lane->head.load(std::memory_order_acquire) >> 12;
      tail = cached_head;
      while (lane->slots[tail % SketchLane::kCap].seq.load(std::memory_order_acquire) == tail + 1)
        ++tail;
    }
    // acquire: pairs with the taker's CAS; the slot's old copy is done.
    for (unsigned i = 1; tail - cached_head >= SketchLane::kCap; ++i) {
      cached_head = lane->head.load(std::memory_order_acquire) >> 12;
      if (tail - cached_head >= SketchLane::kCap) pause(i);
    }
    // The harness sends its stop messages after every producer is done; in
    // one FIFO they come after all data, across lanes they must wait for
    // the other lanes to drain (else a consumer stops with data left).
    for (unsigned i = 1; m.stop != 0 && !others_drained(); ++i) pause(i);
    SketchSlot& sl = lane->slots[tail % SketchLane::kCap];
    copy_msg(&sl.payload, &m);
    sl.seq.store(tail + 1, std::memory_order_release);  // release: the payload
    ++tail;
    shmbus::detail::asymmetric_light_fence();
    // relaxed: ordered by [fence.asym] against a sleeper's count and membarrier.
    if (shmbus::detail::sleeper_count(s->not_empty.sleepers.load(std::memory_order_relaxed)) != 0)
      shmbus::detail::notify(s->not_empty);
  }
  bool others_drained() const {
    for (const SketchLane& l : s->lanes) {
      if (&l == lane) continue;
      const std::uint64_t p = l.head.load(std::memory_order_acquire) >> 12;
      if (l.slots[p % SketchLane::kCap].seq.load(std::memory_order_acquire) == p + 1) return false;
    }
    return true;
  }
  void get(Msg& m) {
    if (taker == ~std::uint64_t{0}) {
      taker = s->consumers.fetch_add(1) & 0xfffu;
      next = static_cast<unsigned>(taker);
    }
    for (unsigned i = 1;; ++i, pause(i)) {
      for (unsigned k = 0; k < SketchLanes::kLanes; ++k) {
        SketchLane& l = s->lanes[(next + k) % SketchLanes::kLanes];
        // acquire: pairs with the previous taker's CAS.
        for (std::uint64_t h = l.head.load(std::memory_order_acquire);;) {
          const std::uint64_t p = h >> 12;
          SketchSlot& sl = l.slots[p % SketchLane::kCap];
          // acquire: pairs with the producer's release of the payload.
          if (sl.seq.load(std::memory_order_acquire) != p + 1) break;
          copy_msg(&m, &sl.payload);
          l.taken_by[(p - 1) % SketchLane::kCap].store(h, std::memory_order_relaxed);
          // acq_rel: releases the slot to the producer; on failure h is reloaded.
          if (l.head.compare_exchange_strong(h, ((p + 1) << 12) | taker,
                                             std::memory_order_acq_rel)) {
            next = (next + k) % SketchLanes::kLanes;
            return;
          }
        }
      }
    }
  }
};

// LaneClaim: lanes as in LaneSketch, but a consumer claims the slot itself
// (CAS FULL(p) -> READING(p, taker)), copies, and stores EMPTY(p + kCap),
// as the queue's Vyukov slots do; the lane's head is only a hint. This is
// the lane layout that keeps the queue's crash repair as it is (a claim
// names its claimer in the slot word). The producer still publishes with a
// plain store; it checks the slot word for EMPTY(p) before writing.
struct LaneClaim {
  static constexpr std::uint64_t kEmpty = 0, kFull = 2, kReading = 3;
  static constexpr std::uint64_t word(std::uint64_t pos, std::uint64_t taker, std::uint64_t st) {
    return pos << 16 | taker << 3 | st;
  }
  struct Lanes {
    alignas(64) std::atomic<std::uint32_t> producers{0};
    alignas(64) std::atomic<std::uint32_t> consumers{0};
    alignas(64) shmbus::detail::WaitChannel not_empty{};
    SketchLane lanes[SketchLanes::kLanes];  // head: the hint; seq: the slot word
  };
  Lanes* s = map_shared<Lanes>();
  SketchLane* lane = nullptr;
  std::uint64_t tail = 0;
  std::uint64_t taker = ~std::uint64_t{0};
  unsigned next = 0;

  explicit LaneClaim(std::size_t) {
    for (SketchLane& l : s->lanes)
      for (std::uint64_t i = 0; i < SketchLane::kCap; ++i) l.slots[i].seq.store(word(i, 0, kEmpty));
  }
  ~LaneClaim() { unmap_shared(s); }
  void put(const Msg& m) {
    if (lane == nullptr) {
      lane = &s->lanes[s->producers.fetch_add(1) % SketchLanes::kLanes];
      tail = lane->head.load(std::memory_order_acquire);
      while (slot_state(tail) != kEmpty) ++tail;
    }
    SketchSlot& sl = lane->slots[tail % SketchLane::kCap];
    // acquire: pairs with the consumer's EMPTY store; the old copy is done.
    for (unsigned i = 1; sl.seq.load(std::memory_order_acquire) != word(tail, 0, kEmpty); ++i)
      LaneSketch::pause(i);
    for (unsigned i = 1; m.stop != 0 && !others_drained(); ++i) LaneSketch::pause(i);
    copy_msg(&sl.payload, &m);
    sl.seq.store(word(tail, 0, kFull), std::memory_order_release);  // release: the payload
    ++tail;
    shmbus::detail::asymmetric_light_fence();
    if (shmbus::detail::sleeper_count(s->not_empty.sleepers.load(std::memory_order_relaxed)) != 0)
      shmbus::detail::notify(s->not_empty);
  }
  std::uint64_t slot_state(std::uint64_t pos) const {
    const std::uint64_t w = lane->slots[pos % SketchLane::kCap].seq.load(std::memory_order_acquire);
    return (w >> 16) == pos ? (w & 7) : kReading;
  }
  bool others_drained() const {
    for (const SketchLane& l : s->lanes) {
      if (&l == lane) continue;
      // The hint may lag: walk past what is taken or freed to the first
      // slot not published yet; a message on the way means not drained.
      for (std::uint64_t p = l.head.load(std::memory_order_acquire);; ++p) {
        const std::uint64_t w = l.slots[p % SketchLane::kCap].seq.load(std::memory_order_acquire);
        if (w == word(p, 0, kFull)) return false;
        if (!((w >> 16) > p || ((w >> 16) == p && (w & 7) == kReading))) break;
      }
    }
    return true;
  }
  void get(Msg& m) {
    if (taker == ~std::uint64_t{0}) {
      taker = s->consumers.fetch_add(1) & 0xfffu;
      next = static_cast<unsigned>(taker);
    }
    for (unsigned i = 1;; ++i, LaneSketch::pause(i)) {
      for (unsigned k = 0; k < SketchLanes::kLanes; ++k) {
        SketchLane& l = s->lanes[(next + k) % SketchLanes::kLanes];
        for (;;) {
          const std::uint64_t p = l.head.load(std::memory_order_relaxed);
          SketchSlot& sl = l.slots[p % SketchLane::kCap];
          std::uint64_t w = word(p, 0, kFull);
          if (sl.seq.compare_exchange_strong(w, word(p, taker, kReading),
                                             std::memory_order_acquire)) {
            std::uint64_t e = p;
            l.head.compare_exchange_strong(e, p + 1, std::memory_order_relaxed);
            copy_msg(&m, &sl.payload);
            sl.seq.store(word(p + SketchLane::kCap, 0, kEmpty), std::memory_order_release);
            next = (next + k) % SketchLanes::kLanes;
            return;
          }
          // Taken at p, or freed for a later lap: help the hint on. (READING of
          // the previous lap means p is not published yet.)
          if ((w >> 16) > p || ((w >> 16) == p && (w & 7) == kReading)) {
            std::uint64_t e = p;
            l.head.compare_exchange_strong(e, p + 1, std::memory_order_relaxed);
            continue;
          }
          break;  // empty (or not yet published)
        }
      }
    }
  }
};

// ---- harness -------------------------------------------------------------------

struct Control {
  alignas(64) std::atomic<std::uint32_t> go{0};
  alignas(64) std::atomic<std::uint32_t> ready{0};
  alignas(64) std::atomic<std::uint32_t> producers_done{0};
  alignas(64) std::atomic<std::uint32_t> errors{0};
};

pid_t fork_fn(int cpu, const std::function<int()>& fn) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (cpu >= 0) pin_this_thread(cpu);
    ::_exit(fn());
  }
  return pid;
}

void wait_go(Control* c) {
  c->ready.fetch_add(1, std::memory_order_acq_rel);  // acq_rel: counted by the parent
  // acquire: pairs with the parent's release store of go.
  while (c->go.load(std::memory_order_acquire) == 0) shmbus::detail::futex_wait(c->go, 0, nullptr);
}

template <class X>
void stream(benchmark::State& state, int producers, int consumers) {
  constexpr std::uint64_t kMessages = 200'000;  // per iteration, all producers together
  X x(1024);
  Control* c = map_shared<Control>();
  const auto& cpus = bench_cpus();
  const bool pin = producers == 1 && consumers == 1;
  for (auto _ : state) {
    c->go.store(0);
    c->ready.store(0);
    c->producers_done.store(0);
    std::vector<pid_t> cons, prods;
    for (int i = 0; i < consumers; ++i)
      cons.push_back(fork_fn(pin ? cpus.child : -1, [&] {
        wait_go(c);
        std::vector<std::uint64_t> last(static_cast<std::size_t>(producers), 0);
        for (;;) {
          Msg m{};
          x.get(m);
          if (m.stop != 0) return 0;
          if (m.producer >= static_cast<std::uint32_t>(producers) || m.seq <= last[m.producer])
            c->errors.fetch_add(1);
          else
            last[m.producer] = m.seq;
        }
      }));
    for (int p = 0; p < producers; ++p)
      prods.push_back(fork_fn(pin ? cpus.parent : -1, [&, p] {
        wait_go(c);
        const std::uint64_t n = kMessages / static_cast<std::uint64_t>(producers);
        Msg m{};
        m.producer = static_cast<std::uint32_t>(p);
        for (std::uint64_t i = 1; i <= n; ++i) {
          m.seq = i;
          x.put(m);
        }
        if (c->producers_done.fetch_add(1) + 1 == static_cast<std::uint32_t>(producers)) {
          Msg stop{};
          stop.stop = 1;
          for (int k = 0; k < consumers; ++k) x.put(stop);
        }
        return 0;
      }));
    while (c->ready.load() != static_cast<std::uint32_t>(producers + consumers)) ::sched_yield();
    const auto t0 = std::chrono::steady_clock::now();
    c->go.store(1, std::memory_order_release);  // release: pairs with wait_go's acquire
    shmbus::detail::futex_wake(c->go);
    for (pid_t pid : cons) ::waitpid(pid, nullptr, 0);
    const auto t1 = std::chrono::steady_clock::now();
    for (pid_t pid : prods) ::waitpid(pid, nullptr, 0);
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  if (c->errors.load() != 0) state.SkipWithError("order violated");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kMessages));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kMessages * sizeof(Msg)));
  unmap_shared(c);
}

// `ref`: the reference measured beside the round trip (the floor for
// busy/adaptive transports, the raw futex for blocking ones).
template <class X>
void rtt(benchmark::State& state, shmbus::bench::Reference ref) {
  shmbus::bench::ReferenceBeside beside(state, ref);  // before the echo child is forked
  const auto& cpus = bench_cpus();
  X ping(64), pong(64);
  shmbus::bench::PinnedChild child(cpus.child, [&] {
    for (;;) {
      Msg m{};
      ping.get(m);
      pong.put(m);
      if (m.stop != 0) return;
    }
  });
  pin_this_thread(cpus.parent);
  LatencyRecorder rec;
  Msg m{};
  const int warm = ref == shmbus::bench::Reference::futex ? shmbus::bench::kBlockWarmUp
                                                          : shmbus::bench::kBusyWarmUp;
  for (int i = 0; i < warm; ++i) {
    ++m.seq;
    ping.put(m);
    Msg r{};
    pong.get(r);
  }
  for (auto _ : state) {
    const std::uint64_t t0 = ticks();
    ++m.seq;
    ping.put(m);
    Msg r{};
    pong.get(r);
    rec.add_ticks(ticks() - t0);
    if (r.seq != m.seq) state.SkipWithError("echo mismatch");
  }
  m.stop = 1;
  ping.put(m);
  pong.get(m);
  if (!child.join()) state.SkipWithError("echo child failed");
  rec.report(state);
  state.SetItemsProcessed(state.iterations());
}

using QueueAdaptive = ShmbusQueue<shmbus::WaitStrategy::adaptive>;
using QueueBusy = ShmbusQueue<shmbus::WaitStrategy::busy_poll>;
// --- One core: what put/get cost, with no cache line to move --------------

template <std::size_t N>
struct Item {
  unsigned char bytes[N];
};

// As BM_Pipe_OneCore_SendRecv (pipe_bench): 16 puts, then 16 gets, on one
// pinned thread, through a busy-poll queue.
template <std::size_t N>
void BM_Queue_OneCore_PutGet(benchmark::State& state) {
  shmbus::pin_this_thread(bench_cpus().parent);
  shmbus::Queue<Item<N>> q(
      shmbus::QueueOptions{.capacity = 64, .policy = {shmbus::WaitStrategy::busy_poll, {}}});
  Item<N> m{}, r{};
  while (state.KeepRunningBatch(16)) {
    for (int i = 0; i < 16; ++i)
      if (q.try_put(m) != shmbus::QueueResult::ok) state.SkipWithError("put failed");
    for (int i = 0; i < 16; ++i)
      if (q.try_get(r) != shmbus::QueueResult::ok) state.SkipWithError("get failed");
  }
  benchmark::DoNotOptimize(r);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Queue_OneCore_PutGet<8>)->Name("BM_Queue_OneCore_PutGet/8");
BENCHMARK(BM_Queue_OneCore_PutGet<64>)->Name("BM_Queue_OneCore_PutGet/64");

using QueueBlock = ShmbusQueue<shmbus::WaitStrategy::blocking>;

template <class X>
void register_streams(const std::string& t) {
  std::vector<std::pair<int, int>> shapes{{1, 1}, {2, 2}, {4, 4}};
  if (shmbus::cpu_count() >= 16) shapes.emplace_back(8, 8);  // scaling runs on big hosts
  for (auto [p, c] : shapes) {
    const std::string n =
        "BM_" + t + "_Stream_" + std::to_string(p) + "P" + std::to_string(c) + "C";
    benchmark::RegisterBenchmark(n.c_str(), [p, c](benchmark::State& s) { stream<X>(s, p, c); })
        ->Arg(64)
        ->UseManualTime()
        ->MinTime(0.3);
  }
}

[[maybe_unused]] const bool registered = [] {
  register_streams<QueueAdaptive>("Queue");
  register_streams<QueueBlock>("QueueBlocking");
  register_streams<BoostIpcMq>("BoostIpcMq");
  register_streams<PosixMq>("PosixMq");
  register_streams<MutexCondvar>("MutexCondvar");
  register_streams<BoostLockfree>("BoostLockfree");
  register_streams<LaneSketch>("LaneSketch");
  register_streams<LaneClaim>("LaneClaim");
  using shmbus::bench::Reference;
  auto r = [](const char* n, void (*fn)(benchmark::State&, Reference), Reference ref) {
    benchmark::RegisterBenchmark(n, fn, ref)->Arg(64)->UseRealTime();
  };
  r("BM_Queue_Busy_RTT", rtt<QueueBusy>, Reference::floor);
  r("BM_Queue_Block_RTT", rtt<QueueBlock>, Reference::futex);
  r("BM_Queue_Adaptive_RTT", rtt<QueueAdaptive>, Reference::floor);
  r("BM_Pipe_Busy_RTT", rtt<ShmbusPipe>, Reference::floor);
  r("BM_BoostLockfree_Busy_RTT", rtt<BoostLockfree>, Reference::floor);
  r("BM_LaneSketch_Busy_RTT", rtt<LaneSketch>, Reference::floor);
  r("BM_LaneClaim_Busy_RTT", rtt<LaneClaim>, Reference::floor);
  r("BM_BoostIpcMq_Block_RTT", rtt<BoostIpcMq>, Reference::futex);
  r("BM_PosixMq_Block_RTT", rtt<PosixMq>, Reference::futex);
  r("BM_MutexCondvar_Block_RTT", rtt<MutexCondvar>, Reference::futex);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
