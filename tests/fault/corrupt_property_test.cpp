// Corrupted objects as a property: for every named kind, a copy of a live
// object's /dev/shm file is corrupted (bits flipped, bytes and words
// overwritten, truncated to a random length, zeroed), then a fresh forked
// process opens the copy by name and makes every call that does not wait
// (sizes, try_ puts and gets, loads and stores, try_acquire, is_set,
// try_accept, close, unlink ...), reads it the way bus-inspector does
// (inspect_segment, object_stats, a gc of its name) and the parent
// runs bus-inspector on it. Each must give a shmbus::Error or a valid
// answer: a crash (or a sanitizer report, which exits nonzero) or a hang
// fails the trial, and each failure prints the seed that reproduces it.
// The timed calls under corruption are deadline_property_test's; the
// containers' stores are dict_corrupt_test's.
//
// The copy, not the object itself: a process that has a file mapped dies
// of SIGBUS when the file is truncated under it, whatever the library
// does, so the original (whose creator, the parent, stays alive and
// recorded in the copy's header) is never touched.
//
// SHMBUS_SOAK=1 runs ten times as many seeds.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "shmbus/detail/sync_state.hpp"
#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

// Child exit codes.
constexpr int kAnswered = 0;  // every call returned
constexpr int kRefused = 10;  // opening or a call threw shmbus::Error (1: a sanitizer's report)

int seeds() {
  const char* soak = std::getenv("SHMBUS_SOAK");
  return (soak != nullptr && soak[0] == '1') ? 300 : 30;
}

// A kind under test: `make` creates the object under a name and gives it
// some state (the parent holds what it returns while the copy is tested);
// `use` runs in the child on the corrupted copy's name; `last` (optional:
// unlinking it) runs in another child once the copy has been inspected.
// `retarget` (optional) makes the copy refer to its own copied files
// instead of the original's, given (original, copy), and returns the
// copied file that the seed may corrupt instead of the main one.
struct Kind {
  std::string label;
  std::function<std::shared_ptr<void>(const std::string&)> make;
  std::function<void(const std::string&)> use;
  std::function<void(const std::string&)> last = {};
  std::function<std::string(const std::string&, const std::string&)> retarget = {};
};

template <class T>
std::shared_ptr<void> hold(T value) {
  return std::make_shared<T>(std::move(value));
}

template <class Q>
void use_queue(Q& q) {
  (void)q.qsize();
  (void)q.empty();
  (void)q.full();
  int v = 0;
  for (int i = 0; i < 3; ++i) (void)q.try_get(v);
  for (int i = 0; i < 3; ++i) (void)q.try_put(i);
  (void)q.try_get(v);
  (void)q.get_for(v, 0ms);
  (void)q.put_for(7, 0ms);
  q.close();
}

std::vector<Kind> kinds() {
  std::vector<Kind> k;
  const QueueOptions qo{.capacity = 8, .max_participants = 8};
  k.push_back({"Pipe",
               [](const std::string& n) {
                 auto c = Connection::create(n, PipeEnd::first, {.capacity = 4096});
                 for (int i = 0; i < 5; ++i) (void)c.try_send(i);
                 (void)c.try_send(std::string(300, 'x'));
                 return hold(std::move(c));
               },
               [](const std::string& n) {
                 auto c = Connection::open(n, PipeEnd::second);
                 (void)c.poll();
                 int v = 0;
                 (void)c.try_recv(v);
                 std::array<std::byte, 512> buf{};
                 std::size_t len = 0;
                 for (int i = 0; i < 8; ++i) (void)c.try_recv_bytes_into(buf, 0, len);
                 std::span<const std::byte> msg;
                 const Clock::time_point now = Clock::now();
                 if (c.peek(msg, &now) == RecvResult::ok) c.release();
                 (void)c.try_send(1);
                 (void)c.try_send_bytes(std::as_bytes(std::span(buf)));
                 c.close();
               },
               [](const std::string& n) { (void)unlink_pipe(n); }});
  k.push_back({"Queue",
               [qo](const std::string& n) {
                 auto q = Queue<int>::create(n, qo);
                 for (int i = 0; i < 5; ++i) (void)q.try_put(i);
                 return hold(std::move(q));
               },
               [qo](const std::string& n) {
                 auto q = Queue<int>::open(n, qo);
                 use_queue(q);
               }});
  k.push_back(
      {"Queue<string>",
       [](const std::string& n) {
         auto q = Queue<std::string>::create(
             n, {.capacity = 8, .max_message = 64, .max_large_message = 4096, .heap_blocks = 4});
         (void)q.try_put("small");
         (void)q.try_put(std::string(1000, 'L'));
         return hold(std::move(q));
       },
       [](const std::string& n) {
         auto q = Queue<std::string>::open(n);
         (void)q.qsize();
         std::string s;
         for (int i = 0; i < 3; ++i) (void)q.try_get(s);
         (void)q.try_put(std::string(2000, 'M'));
         (void)q.try_get(s);
         q.close();
       }});
  k.push_back({"SimpleQueue",
               [qo](const std::string& n) {
                 auto q = SimpleQueue<int>::create(n, qo);
                 (void)q.put(1);
                 return hold(std::move(q));
               },
               [qo](const std::string& n) {
                 auto q = SimpleQueue<int>::open(n, qo);
                 (void)q.empty();
                 q.close();  // then get drains and put refuses: neither waits
                 int v = 0;
                 (void)q.get(v);
                 (void)q.get(v);
                 (void)q.put(2);
               }});
  k.push_back({"JoinableQueue",
               [qo](const std::string& n) {
                 auto q = JoinableQueue<int>::create(n, qo);
                 for (int i = 0; i < 3; ++i) (void)q.try_put(i);
                 return hold(std::move(q));
               },
               [qo](const std::string& n) {
                 auto q = JoinableQueue<int>::open(n, qo);
                 int v = 0;
                 (void)q.try_get(v);
                 for (int i = 0; i < 3; ++i) (void)q.task_done();
                 (void)q.join_for(0ms);
                 use_queue(q);
               }});
  const QueueOptions heap{.capacity = 8,
                          .max_message = 64,
                          .max_large_message = 4096,
                          .heap_blocks = 4,
                          .max_participants = 8};
  k.push_back({"BytesQueue",
               [heap](const std::string& n) {
                 auto q = BytesQueue::create(n, heap);
                 std::vector<std::byte> small(40), big(1500);
                 (void)q.try_put(small);
                 (void)q.try_put(big);
                 return hold(std::move(q));
               },
               [heap](const std::string& n) {
                 auto q = BytesQueue::open(n, heap);
                 (void)q.qsize();
                 (void)q.full();
                 std::vector<std::byte> out(q.max_message()), big(3000);
                 std::size_t len = 0;
                 for (int i = 0; i < 3; ++i) (void)q.try_get(out, len);
                 (void)q.try_put(big);
                 (void)q.try_get(out, len);
                 q.close();
               }});
  k.push_back({"Lock", [](const std::string& n) { return hold(Lock::create(n)); },
               [](const std::string& n) {
                 auto l = Lock::open(n);
                 (void)l.locked();
                 (void)l.owner_died();
                 (void)l.info();
                 if (holds(l.try_acquire())) l.release();
                 l.make_consistent();
               },
               [](const std::string& n) { (void)Lock::unlink(n); }});
  k.push_back({"RLock",
               [](const std::string& n) {
                 auto l = RLock::create(n);
                 return hold(std::move(l));
               },
               [](const std::string& n) {
                 auto l = RLock::open(n);
                 if (holds(l.try_acquire())) {
                   if (holds(l.try_acquire())) l.release();
                   l.release();
                 }
               }});
  k.push_back({"Semaphore", [](const std::string& n) { return hold(Semaphore::create(n, 2)); },
               [](const std::string& n) {
                 auto s = Semaphore::open(n);
                 (void)s.get_value();
                 if (s.try_acquire()) (void)s.release();
                 (void)s.release(3);
                 (void)s.try_acquire();
               }});
  k.push_back({"BoundedSemaphore",
               [](const std::string& n) { return hold(BoundedSemaphore::create(n, 2)); },
               [](const std::string& n) {
                 auto s = BoundedSemaphore::open(n);
                 (void)s.get_value();
                 if (s.try_acquire()) (void)s.try_release();
                 (void)s.try_release(5);
                 try {
                   s.release();
                 } catch (const Error&) {  // over its bound: ValueError's answer
                 }
               }});
  k.push_back({"Event",
               [](const std::string& n) {
                 auto e = Event::create(n);
                 e.set();
                 return hold(std::move(e));
               },
               [](const std::string& n) {
                 auto e = Event::open(n);
                 (void)e.is_set();
                 (void)e.try_wait();
                 (void)e.wait_for(0ms);
                 e.clear();
                 e.set();
               }});
  // The copy records its lock by name: renamed to the copied lock's, so the
  // child uses (and a seed may corrupt) the copy's lock, never the original.
  k.push_back({"Condition",
               [](const std::string& n) { return hold(Condition::create(n)); },
               [](const std::string& n) {
                 auto c = Condition::open(n);
                 if (c.lock_name() != n + ".lock") {
                   throw Error(Errc::corrupted, n, "the copy opened another lock");
                 }
                 if (c.try_lock()) {
                   c.notify(2);
                   c.notify_all();
                   (void)c.wait_for(0ms);
                   c.release();
                 }
               },
               {},
               [](const std::string&, const std::string& copy) {
                 const std::string lock = copy + ".lock";
                 const int fd = ::open(test::shm_path(copy).c_str(), O_RDWR);
                 if (fd < 0) throw std::runtime_error("no copy of " + copy);
                 const auto len = static_cast<std::uint32_t>(lock.size());
                 const off_t at = static_cast<off_t>(detail::kHeaderSize);
                 const bool ok =
                     ::pwrite(fd, &len, 4, at + offsetof(detail::ConditionState, name_len)) == 4 &&
                     ::pwrite(fd, lock.data(), lock.size(),
                              at + offsetof(detail::ConditionState, lock_name)) ==
                         static_cast<ssize_t>(lock.size());
                 ::close(fd);
                 if (!ok) throw std::runtime_error("could not rename the copy's lock");
                 return lock;
               }});
  k.push_back({"Barrier", [](const std::string& n) { return hold(Barrier::create(n, 3)); },
               [](const std::string& n) {
                 auto b = Barrier::open(n);
                 (void)b.n_waiting();
                 (void)b.broken();
                 (void)b.wait_for(0ms);
                 b.reset();
                 b.abort();
               }});
  k.push_back({"Value",
               [](const std::string& n) { return hold(Value<std::int64_t>::create(n, 42)); },
               [](const std::string& n) {
                 auto v = Value<std::int64_t>::open(n);
                 (void)v.get();
                 v.set(7);
                 (void)v.fetch_add(1);
                 if (holds(v.get_lock().try_acquire())) v.get_lock().release();
               }});
  struct Wide {  // not lock-free: get() and set() copy under the value's lock
    std::uint64_t a, b, c, d;
  };
  k.push_back({"Value<Wide>",
               [](const std::string& n) {
                 return hold(Value<Wide>::create(n, Wide{1, 2, 3, 4}));
               },
               [](const std::string& n) {
                 auto v = Value<Wide>::open(n);
                 // get()/set() wait for the lock (a scribbled word may name
                 // a live process): taken first without waiting.
                 if (holds(v.get_lock().try_acquire())) {
                   Wide w = v.get();
                   v.set(Wide{w.d, w.c, w.b, w.a});
                   v.get_lock().release();
                 }
                 (void)v.get_lock().info();
               }});
  k.push_back({"Array",
               [](const std::string& n) { return hold(Array<double>::create(n, 16, 1.5)); },
               [](const std::string& n) {
                 auto a = Array<double>::open(n);
                 double sum = 0;
                 for (std::size_t i = 0; i < a.size(); ++i) sum += a[i];
                 for (double x : a) sum += x;
                 if (a.size() > 0) a[a.size() - 1] = sum;
                 if (holds(a.get_lock().try_acquire())) {  // view() waits for it
                   {
                     auto view = a.view();
                     (void)view.size();
                   }
                   a.get_lock().release();
                 }
               }});
  k.push_back({"SharedMemory",
               [](const std::string& n) { return hold(SharedMemory::create(n, 1000)); },
               [](const std::string& n) {
                 auto m = SharedMemory::open(n);
                 auto b = m.buf();
                 if (b.size() != m.size())
                   throw Error(Errc::corrupted, n, "buf() and size() differ");
                 for (std::byte& x : b) x = std::byte{1};
                 m.close();
                 (void)m.size();
               },
               [](const std::string& n) { SharedMemory::open(n).unlink(); }});
  const TopicOptions to{.slots = 8, .max_message = 64};
  k.push_back(
      {"Topic",
       [to](const std::string& n) {
         auto t = Topic::create(n, to);
         auto sub = t.subscribe({.policy = SubscriberPolicy::reliable});
         {
           auto pub = t.publisher();  // one at a time: the child takes the role next
           std::array<std::byte, 16> m{};
           for (int i = 0; i < 5; ++i) (void)pub.try_publish(m);
         }
         struct Held {
           Topic topic;
           Subscriber sub;
         };
         return std::shared_ptr<void>(std::make_shared<Held>(Held{std::move(t), std::move(sub)}));
       },
       [](const std::string& n) {
         auto t = Topic::open(n);
         auto lossy = t.subscribe({.policy = SubscriberPolicy::lossy, .history = 4});
         std::array<std::byte, 64> buf{};
         std::size_t len = 0;
         for (int i = 0; i < 10; ++i) (void)lossy.try_recv(buf, len);
         std::span<const std::byte> msg;
         if (lossy.try_peek(msg) == ReceiveResult::ok) lossy.release();
         auto reliable = t.subscribe();
         (void)reliable.try_recv(buf, len);
         auto pub = t.publisher();
         for (int i = 0; i < 10; ++i) (void)pub.try_publish(buf);
         (void)lossy.try_recv(buf, len);
         lossy.close();
         reliable.close();
         pub.close();
       }});
  k.push_back({"Listener", [](const std::string& n) { return hold(Listener(n)); },
               [](const std::string& n) {
                 Listener l(n, {.shared = true});
                 (void)l.try_accept();
                 (void)l.accept_for(0ms);
                 l.close();
               }});
  k.push_back({"Service", [](const std::string& n) { return hold(Service<int, int>(n)); },
               [](const std::string& n) {
                 Service<int, int> s(n, {.listener = {.shared = true}});
                 (void)s.take_for(0ms);
               }});
  k.push_back({"Bus registry",
               [](const std::string& n) {
                 Bus bus(n);
                 (void)bus.queue<int>("q");
                 (void)bus.event("e");
                 (void)bus.value<int>("v", 3);
                 return hold(std::move(bus));
               },
               [](const std::string& n) {
                 (void)Bus::list_objects(SegmentView::open(n));
                 Bus bus(n);
                 (void)bus.objects();
                 auto q = bus.queue<int>("q");
                 (void)q.qsize();
                 (void)bus.event("e").is_set();
                 (void)bus.value<int>("v").get();
                 (void)bus.lock("new");
                 bus.close();
               }});
  return k;
}

// Copies every file of object `from` ("shmbus.<from>" and "shmbus.<from>.*":
// a Condition's lock, a bus's objects) to the same names under `to`.
void copy_object(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  const std::string src = test::shm_path(from);
  const std::string dst = test::shm_path(to);
  for (const auto& e : fs::directory_iterator("/dev/shm")) {
    const std::string p = e.path().string();
    if (p == src || p.starts_with(src + ".")) {
      fs::copy_file(p, dst + p.substr(src.size()), fs::copy_options::overwrite_existing);
    }
  }
}

// Corrupts the file at `path` one of several ways; says which.
std::string corrupt(const std::string& path, std::uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + 1);
  const int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return "(no file)";
  struct stat st {};
  ::fstat(fd, &st);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t header = detail::kHeaderSize;
  const std::uint64_t payload = size > header ? size - header : 0;
  // Where to hit: mostly the payload's control words, some anywhere.
  auto offset = [&]() -> std::uint64_t {
    switch (rng() % 4) {
      case 0:
        return rng() % size;
      case 1:
        return rng() % std::min<std::uint64_t>(size, header);
      default:
        return payload == 0 ? rng() % size
                            : header + rng() % std::min<std::uint64_t>(payload, 2048);
    }
  };
  auto write = [&](std::uint64_t off, const void* p, std::size_t n) {
    if (off + n > size) n = off < size ? size - off : 0;
    (void)!::pwrite(fd, p, n, static_cast<off_t>(off));
  };
  std::string what;
  switch (rng() % 8) {
    case 0: {
      const int n = 1 + static_cast<int>(rng() % 16);
      for (int i = 0; i < n; ++i) {
        const std::uint64_t off = offset();
        unsigned char b = 0;
        (void)!::pread(fd, &b, 1, static_cast<off_t>(off));
        b ^= static_cast<unsigned char>(1u << (rng() % 8));
        write(off, &b, 1);
      }
      what = std::to_string(n) + " bits flipped";
      break;
    }
    case 1: {
      std::vector<unsigned char> bytes(1 + rng() % 64);
      for (auto& b : bytes) b = static_cast<unsigned char>(rng());
      write(offset(), bytes.data(), bytes.size());
      what = std::to_string(bytes.size()) + " random bytes";
      break;
    }
    case 2:
    case 3: {
      const int n = 1 + static_cast<int>(rng() % 6);
      for (int i = 0; i < n; ++i) {
        const std::uint64_t off = offset() & ~std::uint64_t{7};
        std::uint64_t old = 0;
        (void)!::pread(fd, &old, 8, static_cast<off_t>(off));
        const std::array<std::uint64_t, 8> values{0,
                                                  ~std::uint64_t{0},
                                                  old + 1,
                                                  old - 1,
                                                  old ^ (std::uint64_t{1} << (rng() % 64)),
                                                  rng() % 16,
                                                  std::uint64_t{0x80000000u} << (rng() % 2 * 32),
                                                  rng()};
        const std::uint64_t v = values[rng() % values.size()];
        write(off, &v, 8);
      }
      what = std::to_string(n) + " words overwritten";
      break;
    }
    case 4: {
      std::uint64_t len = 0;
      switch (rng() % 3) {
        case 0:
          len = rng() % (header + 1);
          break;
        case 1:
          len = header + (payload == 0 ? 0 : rng() % payload);
          break;
        default:
          len = size - 1 - rng() % std::min<std::uint64_t>(size, 64);
      }
      (void)!::ftruncate(fd, static_cast<off_t>(len));
      what = "truncated to " + std::to_string(len);
      break;
    }
    case 5: {
      const std::vector<unsigned char> zeros(size, 0);
      write(0, zeros.data(), zeros.size());
      what = "zeroed";
      break;
    }
    case 6: {
      const std::vector<unsigned char> zeros(payload, 0);
      write(header, zeros.data(), zeros.size());
      what = "payload zeroed";
      break;
    }
    default: {
      (void)!::ftruncate(fd, static_cast<off_t>(size + 4096 * (1 + rng() % 4)));
      what = "grown";
    }
  }
  ::close(fd);
  return what;
}

class CorruptProperty : public ::testing::TestWithParam<std::size_t> {};

TEST_P(CorruptProperty, EveryCallAnswersOrRefusesWhateverTheFileHolds) {
  const Kind kind = kinds().at(GetParam());
  int answered = 0, refused = 0, failed = 0;
  for (int t = 0; t < seeds(); ++t) {
    const std::uint64_t seed = (std::uint64_t{GetParam()} << 32) | static_cast<unsigned>(t);
    SegmentGuard g(unique_name("cprop"));
    const std::string copy = g.add(g.name() + "-copy");
    struct DependentNames {  // "<name>.lock", a bus's objects, a client's pipes
      std::string a, b;
      ~DependentNames() {
        test::remove_names_with_prefix(a);
        test::remove_names_with_prefix(b);
      }
    } dependents{g.name() + ".", copy + "."};
    std::shared_ptr<void> object = kind.make(g.name());
    copy_object(g.name(), copy);
    // A kind with a dependent file (a Condition's lock) has it corrupted
    // instead on odd seeds.
    std::string target = copy;
    if (kind.retarget) {
      const std::string dependent = kind.retarget(g.name(), copy);
      if (t % 2 == 1) target = dependent;
    }
    const std::string what =
        corrupt(test::shm_path(target), seed) + (target == copy ? "" : " in " + target);
    const std::string where = kind.label + " (" + what + "), seed " + std::to_string(seed);

    const pid_t pid = test::fork_child([&] {
      int code = kAnswered;
      try {
        kind.use(copy);
      } catch (const Error& e) {
        code = kRefused;
        if (std::getenv("SHMBUS_VERBOSE") != nullptr) std::fprintf(stderr, "%s\n", e.what());
      }
      // What bus-inspector reads, in this process (sanitizers see it).
      try {
        (void)inspect_segment(copy);
        (void)object_stats(SegmentView::open(copy));
        if (kind.label == "Listener" || kind.label == "Service") (void)listener_connections(copy);
      } catch (const Error&) {
      }
      // The tracker's sweep of its name, a dry run (the real one follows
      // bus-inspector's runs: it may unlink the copy).
      (void)collect_garbage({.dry_run = true, .prefix = copy});
      return code;
    });
    const test::ChildStatus st = test::wait_child(pid, 20s);
    if (st.timed_out) {
      ++failed;
      ADD_FAILURE() << where << ": hung";
    } else if (!st.exited) {
      ++failed;
      ADD_FAILURE() << where << ": died by signal " << st.signal;
    } else if (st.code == kAnswered) {
      ++answered;
    } else if (st.code == kRefused) {
      ++refused;
    } else {
      ++failed;
      ADD_FAILURE() << where << ": exit " << st.code
                    << " (a sanitizer's report, or an exception other than Error)";
    }
    // bus-inspector on it: its own object every seed, the host scans now and then.
    std::vector<std::vector<std::string>> runs{{"show", copy}, {"show", copy, "--json"}};
    if (t % 5 == 0) runs.push_back({"list"});
    if (t % 5 == 1) runs.push_back({"doctor"});
    if (t % 5 == 2) runs.push_back({"gc", "--dry-run"});
    for (const auto& args : runs) {
      const test::CommandResult r = test::run_inspector(args, 20s);
      // 0 ok, 1 no such object, 3 invalid segment, 4 doctor found problems.
      const bool ok = r.exit_code == 0 || r.exit_code == 1 || r.exit_code == 3 ||
                      (args[0] == "doctor" && r.exit_code == 4);
      EXPECT_TRUE(ok && !r.timed_out) << where << ": bus-inspector " << args[0] << " exit "
                                      << r.exit_code << (r.timed_out ? " (hung)" : "");
    }
    // Then the calls that remove it (after the inspector saw it).
    if (kind.last) {
      const test::ChildStatus lst = test::wait_child(test::fork_child([&] {
                                                       try {
                                                         kind.last(copy);
                                                       } catch (const Error&) {
                                                         return kRefused;
                                                       }
                                                       return kAnswered;
                                                     }),
                                                     20s);
      EXPECT_TRUE(!lst.timed_out && lst.exited && (lst.code == kAnswered || lst.code == kRefused))
          << where << ": unlink " << (lst.timed_out ? "hung" : "failed") << " (exit " << lst.code
          << ", signal " << lst.signal << ")";
    }
    // The real sweep, which also unlinks the copy if its header is invalid.
    const test::ChildStatus gc =
        test::wait_child(test::fork_child([&] {
                           (void)collect_garbage({.include_invalid = true, .prefix = copy});
                           return kAnswered;
                         }),
                         20s);
    EXPECT_TRUE(!gc.timed_out && gc.exited && gc.code == kAnswered)
        << where << ": gc " << (gc.timed_out ? "hung" : "failed") << " (exit " << gc.code
        << ", signal " << gc.signal << ")";
  }
  std::printf("%s: %d seeds: %d answered, %d refused with an error, %d failed\n",
              kind.label.c_str(), seeds(), answered, refused, failed);
  EXPECT_GT(answered, 0) << "no seed got past opening: the property tested nothing";
}

INSTANTIATE_TEST_SUITE_P(EveryKind, CorruptProperty,
                         ::testing::Range<std::size_t>(0, kinds().size()), [](const auto& p) {
                           std::string s = kinds().at(p.param).label;
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

}  // namespace
}  // namespace shmbus
