// The deadline contract as a property (issue 15): every timed call of every
// object returns by its deadline plus a small bound, whatever its shared
// memory holds. For each timed call, trials over a fresh object whose
// words a hostile peer sets to chosen and random values before the call
// and keeps rewriting while it waits; the call runs in a fresh forked
// process that opens the object by name (opening may fail with an Error:
// a clear answer), so a crash fails the trial (its signal is reported)
// and a hang is caught by the parent's deadline. Each failure prints the
// seed that reproduces it.
//
// SHMBUS_SOAK=1 runs ten times as many trials.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

constexpr auto kTimeout = 30ms;
// How far past its deadline a call may return: liveness slices are 10 ms;
// the rest is slack for sanitizer builds on a loaded 2-cpu machine.
constexpr auto kBound = 500ms;
// Child exit codes.
constexpr int kReturned = 0;  // the call returned in time
constexpr int kRefused = 1;   // opening or calling threw shmbus::Error, in time
constexpr int kOverdue = 3;   // returned after the bound

int trials() {
  const char* soak = std::getenv("SHMBUS_SOAK");
  return (soak != nullptr && soak[0] == '1') ? 300 : 30;
}

// A timed call under test: `make` creates the object (and whatever the
// parent must hold for the call to wait), `call` runs in the child: opens
// it by name and makes one call with kTimeout.
struct TimedCall {
  std::string label;
  std::function<std::shared_ptr<void>(const std::string&)> make;
  std::function<void(const std::string&)> call;
};

template <class T>
std::shared_ptr<void> hold(T value) {
  return std::make_shared<T>(std::move(value));
}

std::vector<TimedCall> timed_calls() {
  std::vector<TimedCall> calls;
  for (WaitStrategy s : {WaitStrategy::busy_poll, WaitStrategy::adaptive, WaitStrategy::blocking}) {
    const QueueOptions qo{.capacity = 4, .max_participants = 8, .policy = {.strategy = s}};
    const std::string tag(to_string(s));
    calls.push_back({"Queue.get_for/" + tag,
                     [qo](const std::string& n) { return hold(Queue<int>::create(n, qo)); },
                     [qo](const std::string& n) {
                       int v = 0;
                       (void)Queue<int>::open(n, qo).get_for(v, kTimeout);
                     }});
    calls.push_back(
        {"Queue.put_for/" + tag,
         [qo](const std::string& n) {
           auto q = Queue<int>::create(n, qo);
           while (q.try_put(1) == QueueResult::ok) {
           }
           return hold(std::move(q));
         },
         [qo](const std::string& n) { (void)Queue<int>::open(n, qo).put_for(2, kTimeout); }});
    calls.push_back({"Pipe.recv_for/" + tag,
                     [s](const std::string& n) {
                       return hold(Connection::create(n, PipeEnd::first,
                                                      {.capacity = 4096, .wait = {.strategy = s}}));
                     },
                     [](const std::string& n) {
                       auto c = Connection::open(n, PipeEnd::second);
                       int v = 0;
                       (void)c.recv_for(v, kTimeout);
                     }});
  }
  const QueueOptions heap{.capacity = 4,
                          .max_message = 64,
                          .max_large_message = 4096,
                          .heap_blocks = 2,
                          .max_participants = 8};
  calls.push_back({"BytesQueue.put_for(large)",
                   [heap](const std::string& n) {
                     auto q = BytesQueue::create(n, heap);
                     std::vector<std::byte> big(1000);
                     while (q.try_put(big) == QueueResult::ok) {
                     }
                     return hold(std::move(q));
                   },
                   [heap](const std::string& n) {
                     std::vector<std::byte> big(1000);
                     (void)BytesQueue(n, heap).put_for(big, kTimeout);
                   }});
  calls.push_back({"BytesQueue.get_for",
                   [heap](const std::string& n) { return hold(BytesQueue::create(n, heap)); },
                   [heap](const std::string& n) {
                     BytesQueue q(n, heap);
                     std::vector<std::byte> out(q.max_message());
                     std::size_t len = 0;
                     (void)q.get_for(out, len, kTimeout);
                   }});
  calls.push_back({"JoinableQueue.join_for",
                   [](const std::string& n) {
                     auto q = JoinableQueue<int>::create(n, {.capacity = 4});
                     (void)q.put(1);
                     return hold(std::move(q));
                   },
                   [](const std::string& n) { (void)JoinableQueue<int>(n).join_for(kTimeout); }});
  calls.push_back({"Pipe.send_for(full)",
                   [](const std::string& n) {
                     return hold(Connection::create(n, PipeEnd::first, {.capacity = 4096}));
                   },
                   [](const std::string& n) {
                     auto c = Connection::open(n, PipeEnd::second);
                     std::vector<std::byte> m(512);
                     for (int i = 0; i < 64 && c.try_send_bytes(m) == SendResult::ok; ++i) {
                     }
                     (void)c.send_bytes_for(m, kTimeout);
                   }});
  calls.push_back(
      {"Pipe.poll",
       [](const std::string& n) {
         return hold(Connection::create(n, PipeEnd::first, {.capacity = 4096}));
       },
       [](const std::string& n) { (void)Connection::open(n, PipeEnd::second).poll(kTimeout); }});
  calls.push_back({"wait(ends)",
                   [](const std::string& n) {
                     return hold(Connection::create(n, PipeEnd::first, {.capacity = 4096}));
                   },
                   [](const std::string& n) {
                     auto c = Connection::open(n, PipeEnd::second);
                     Connection* ends[] = {&c};
                     (void)shmbus::wait(ends, kTimeout);
                   }});
  calls.push_back({"Lock.acquire_for",
                   [](const std::string& n) {
                     auto l = Lock::create(n);
                     (void)l.acquire();
                     return hold(std::move(l));
                   },
                   [](const std::string& n) { (void)Lock::open(n).acquire_for(kTimeout); }});
  calls.push_back({"RLock.acquire_for",
                   [](const std::string& n) {
                     auto l = RLock::create(n);
                     (void)l.acquire();
                     return hold(std::move(l));
                   },
                   [](const std::string& n) { (void)RLock::open(n).acquire_for(kTimeout); }});
  calls.push_back({"Semaphore.acquire_for",
                   [](const std::string& n) { return hold(Semaphore::create(n, 0)); },
                   [](const std::string& n) { (void)Semaphore::open(n).acquire_for(kTimeout); }});
  calls.push_back(
      {"BoundedSemaphore.acquire_for",
       [](const std::string& n) { return hold(BoundedSemaphore::create(n, 0)); },
       [](const std::string& n) { (void)BoundedSemaphore::open(n).acquire_for(kTimeout); }});
  calls.push_back({"Event.wait_for", [](const std::string& n) { return hold(Event::create(n)); },
                   [](const std::string& n) { (void)Event::open(n).wait_for(kTimeout); }});
  calls.push_back({"Condition.wait_for",
                   [](const std::string& n) { return hold(Condition::create(n)); },
                   [](const std::string& n) {
                     auto c = Condition::open(n);
                     if (c.acquire() == LockResult::timeout) return;
                     (void)c.wait_for(kTimeout);
                   }});
  calls.push_back({"Barrier.wait_for",
                   [](const std::string& n) { return hold(Barrier::create(n, 2)); },
                   [](const std::string& n) { (void)Barrier::open(n).wait_for(kTimeout); }});
  // Wave 2: topics, listeners, services and the mixed wait.
  const TopicOptions to{.slots = 8, .max_message = 64};
  calls.push_back({"Topic.recv_for",
                   [to](const std::string& n) { return hold(Topic::create(n, to)); },
                   [](const std::string& n) {
                     auto sub = Topic::open(n).subscribe({.policy = SubscriberPolicy::lossy});
                     std::array<std::byte, 64> buf{};
                     std::size_t len = 0;
                     (void)sub.recv_for(buf, len, kTimeout);
                   }});
  calls.push_back({"Topic.publish_for(reliable full)",
                   [to](const std::string& n) {
                     // A reliable subscriber that never reads holds the ring full.
                     struct Held {
                       Topic topic;
                       Subscriber slow;
                     };
                     auto held = std::make_shared<Held>(Held{Topic::create(n, to), {}});
                     held->slow = held->topic.subscribe({.policy = SubscriberPolicy::reliable});
                     auto pub = held->topic.publisher();
                     std::array<std::byte, 8> m{};
                     while (pub.publish_for(m, 0ms) == PublishResult::ok) {
                     }
                     return std::shared_ptr<void>(held);
                   },
                   [](const std::string& n) {
                     auto pub = Topic::open(n).publisher();
                     std::array<std::byte, 8> m{};
                     (void)pub.publish_for(m, kTimeout);
                   }});
  calls.push_back(
      {"Listener.accept_for", [](const std::string& n) { return hold(Listener(n)); },
       [](const std::string& n) { (void)Listener(n, {.shared = true}).accept_for(kTimeout); }});
  calls.push_back({"Client(timeout)",
                   [](const std::string& n) { return hold(Listener(n)); },  // never accepts
                   [](const std::string& n) {
                     try {
                       (void)Client(n, kTimeout);
                     } catch (const Error& e) {
                       if (e.code() != Errc::timed_out) throw;  // timed out: returned in time
                     }
                   }});
  calls.push_back({"Service.take_for",
                   [](const std::string& n) { return hold(Service<int, int>(n)); },
                   [](const std::string& n) {
                     (void)Service<int, int>(n, {.listener = {.shared = true}}).take_for(kTimeout);
                   }});
  calls.push_back(
      {"wait(queue, event)",
       [](const std::string& n) { return hold(Queue<int>::create(n, {.capacity = 4})); },
       [](const std::string& n) {
         auto q = Queue<int>::open(n);
         Event never;  // anonymous: only the queue's memory is hostile
         (void)wait({Waitable(q), Waitable(never)}, kTimeout);
       }});
  return calls;
}

// The object's file, mapped read-write: what a hostile peer sees.
struct Scribbler {
  std::byte* base = nullptr;
  std::size_t size = 0;
  std::vector<std::size_t> offsets;  // 8-byte aligned, in the file
  std::mt19937_64 rng;

  Scribbler(const std::string& name, std::uint64_t seed) : rng(seed) {
    const int fd = ::open(test::shm_path(name).c_str(), O_RDWR);
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0) {
      size = static_cast<std::size_t>(st.st_size);
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) base = static_cast<std::byte*>(p);
    }
    if (fd >= 0) ::close(fd);
    if (base == nullptr) return;
    // Mostly the control words at the start of the payload, some anywhere
    // in it, now and then the header's attachment table.
    const std::size_t payload = size - detail::kHeaderSize;
    const int n = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < n; ++i) {
      std::size_t off = 0;
      switch (rng() % 8) {
        case 0:
          off = 256 + rng() % 64 * 8;  // attachment slots
          break;
        case 1:
        case 2:
          off = detail::kHeaderSize + rng() % (payload / 8) * 8;
          break;
        default:
          off = detail::kHeaderSize + rng() % std::min<std::size_t>(payload / 8, 128) * 8;
      }
      offsets.push_back(off);
    }
  }
  Scribbler(const Scribbler&) = delete;
  Scribbler& operator=(const Scribbler&) = delete;
  ~Scribbler() {
    if (base != nullptr) ::munmap(base, size);
  }

  std::uint64_t value(std::uint64_t old) {
    switch (rng() % 9) {
      case 0:
        return 0;
      case 1:
        return ~std::uint64_t{0};
      case 2:
        return old + 1;
      case 3:
        return old - 1;
      case 4:
        return old ^ (std::uint64_t{1} << (rng() % 64));
      case 5:
        return rng() % 16;
      case 6:
        return std::uint64_t{0x80000000u} << (rng() % 2 * 32);
      case 7:
        return (old & ~std::uint64_t{0xffffffff}) | (rng() & 0xffffffff);
      default:
        return rng();
    }
  }
  void scribble() {
    for (std::size_t off : offsets) {
      auto* word = reinterpret_cast<std::uint64_t*>(base + off);
      __atomic_store_n(word, value(__atomic_load_n(word, __ATOMIC_RELAXED)), __ATOMIC_RELAXED);
    }
  }
};

class DeadlineProperty : public ::testing::TestWithParam<std::size_t> {};

TEST_P(DeadlineProperty, TimedCallReturnsByItsDeadlineWhateverMemoryHolds) {
  const TimedCall call = timed_calls().at(GetParam());
  int returned = 0, refused = 0, overdue = 0, crashed = 0, hung = 0;
  for (int t = 0; t < trials(); ++t) {
    const std::uint64_t seed = (std::uint64_t{GetParam()} << 32) | static_cast<unsigned>(t);
    SegmentGuard g(unique_name("dlprop"));
    g.add(g.name() + ".lock");  // a Condition's lock
    struct DependentNames {     // a client's pipes, "<listener>.conn-..."
      std::string prefix;
      ~DependentNames() { test::remove_names_with_prefix(prefix); }
    } dependents{g.name() + "."};
    std::shared_ptr<void> object = call.make(g.name());
    Scribbler hostile(g.name(), seed);
    ASSERT_NE(hostile.base, nullptr);
    hostile.scribble();
    const pid_t pid = test::fork_child([&] {
      const auto start = Clock::now();
      int code = kReturned;
      try {
        call.call(g.name());
      } catch (const Error&) {
        code = kRefused;  // refusing the corrupted object is an answer
      }
      return Clock::now() - start <= kTimeout + kBound ? code : kOverdue;
    });
    // Keep rewriting the words while the call waits.
    const auto give_up = Clock::now() + 10s;
    int status = 0;
    pid_t r = 0;
    while ((r = ::waitpid(pid, &status, WNOHANG)) == 0 && Clock::now() < give_up) {
      if (hostile.rng() % 4 == 0) hostile.scribble();
      std::this_thread::sleep_for(200us);
    }
    if (r == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ++hung;
      ADD_FAILURE() << call.label << ": hung, seed " << seed;
    } else if (WIFSIGNALED(status)) {
      ++crashed;
      ADD_FAILURE() << call.label << ": died by signal " << WTERMSIG(status) << ", seed " << seed;
    } else if (WEXITSTATUS(status) == kReturned) {
      ++returned;
    } else if (WEXITSTATUS(status) == kRefused) {
      ++refused;
    } else {
      ++overdue;
      ADD_FAILURE() << call.label << ": returned after its deadline + bound (exit "
                    << WEXITSTATUS(status) << "), seed " << seed;
    }
  }
  // Both outcomes should occur: calls that waited on corrupted words, and
  // objects refused when opened.
  std::printf(
      "%s: %d trials: %d returned in time, %d refused with an error, %d overdue, "
      "%d crashed, %d hung\n",
      call.label.c_str(), trials(), returned, refused, overdue, crashed, hung);
  EXPECT_GT(returned, 0) << "no trial reached the call: the property tested nothing";
}

INSTANTIATE_TEST_SUITE_P(EveryTimedCall, DeadlineProperty,
                         ::testing::Range<std::size_t>(0, timed_calls().size()), [](const auto& p) {
                           std::string s = timed_calls().at(p.param).label;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

}  // namespace
}  // namespace shmbus
