// Every named kind opened as every other kind: the open (or the first call
// that needs the object) throws shmbus::Error naming what differed
// (wrong_kind, wrong_type, or already_exists where the opener creates),
// never crashes, hangs or hands back a working handle. Each open runs in a
// forked child, so a crash or hang fails only its own pair.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shmbus/shmbus.hpp"
#include "test_support.hpp"

namespace shmbus {
namespace {

using namespace std::chrono_literals;
using test::SegmentGuard;
using test::unique_name;

// A kind: `make` creates it under a name (the parent holds it), `open`
// opens an existing object of that name as this kind and uses it once.
struct Kind {
  std::string label;
  std::function<std::shared_ptr<void>(const std::string&)> make;
  std::function<void(const std::string&)> open;
};

template <class T>
std::shared_ptr<void> hold(T value) {
  return std::make_shared<T>(std::move(value));
}

std::vector<Kind> kinds() {
  std::vector<Kind> k;
  k.push_back({"Pipe",
               [](const std::string& n) { return hold(Connection::create(n, PipeEnd::first)); },
               [](const std::string& n) { (void)Connection::open(n, PipeEnd::second).poll(); }});
  k.push_back({"Queue<int>", [](const std::string& n) { return hold(Queue<int>::create(n)); },
               [](const std::string& n) { (void)Queue<int>::open(n).qsize(); }});
  k.push_back({"Queue<double>", [](const std::string& n) { return hold(Queue<double>::create(n)); },
               [](const std::string& n) { (void)Queue<double>::open(n).qsize(); }});
  k.push_back({"Queue<std::string>",
               [](const std::string& n) { return hold(Queue<std::string>::create(n)); },
               [](const std::string& n) {
                 std::string s;
                 (void)Queue<std::string>::open(n).try_get(s);
               }});
  k.push_back({"SimpleQueue<int>",
               [](const std::string& n) { return hold(SimpleQueue<int>::create(n)); },
               [](const std::string& n) { (void)SimpleQueue<int>::open(n).empty(); }});
  k.push_back({"JoinableQueue<int>",
               [](const std::string& n) { return hold(JoinableQueue<int>::create(n)); },
               [](const std::string& n) { (void)JoinableQueue<int>::open(n).join_for(0ms); }});
  k.push_back({"BytesQueue", [](const std::string& n) { return hold(BytesQueue::create(n)); },
               [](const std::string& n) { (void)BytesQueue::open(n).qsize(); }});
  k.push_back({"Lock", [](const std::string& n) { return hold(Lock::create(n)); },
               [](const std::string& n) { (void)Lock::open(n).try_acquire(); }});
  k.push_back({"RLock", [](const std::string& n) { return hold(RLock::create(n)); },
               [](const std::string& n) { (void)RLock::open(n).try_acquire(); }});
  k.push_back({"Semaphore", [](const std::string& n) { return hold(Semaphore::create(n, 1)); },
               [](const std::string& n) { (void)Semaphore::open(n).try_acquire(); }});
  k.push_back({"BoundedSemaphore",
               [](const std::string& n) { return hold(BoundedSemaphore::create(n, 1)); },
               [](const std::string& n) { (void)BoundedSemaphore::open(n).try_acquire(); }});
  k.push_back({"Event", [](const std::string& n) { return hold(Event::create(n)); },
               [](const std::string& n) { (void)Event::open(n).is_set(); }});
  k.push_back({"Condition", [](const std::string& n) { return hold(Condition::create(n)); },
               [](const std::string& n) { (void)Condition::open(n).try_acquire(); }});
  k.push_back({"Barrier", [](const std::string& n) { return hold(Barrier::create(n, 2)); },
               [](const std::string& n) { (void)Barrier::open(n).n_waiting(); }});
  k.push_back({"Value<int>", [](const std::string& n) { return hold(Value<int>::create(n, 1)); },
               [](const std::string& n) { (void)Value<int>::open(n).get(); }});
  k.push_back({"Value<double>",
               [](const std::string& n) { return hold(Value<double>::create(n, 1.0)); },
               [](const std::string& n) { (void)Value<double>::open(n).get(); }});
  k.push_back({"Array<int>", [](const std::string& n) { return hold(Array<int>::create(n, 4)); },
               [](const std::string& n) { (void)Array<int>::open(n).get(0); }});
  k.push_back({"SharedMemory",
               [](const std::string& n) { return hold(SharedMemory::create(n, 4096)); },
               [](const std::string& n) { (void)SharedMemory::open(n).size(); }});
  k.push_back({"Topic", [](const std::string& n) { return hold(Topic::create(n)); },
               [](const std::string& n) { (void)Topic::open(n).subscribe(); }});
  k.push_back({"Listener", [](const std::string& n) { return hold(Listener(n)); },
               [](const std::string& n) {
                 (void)Listener(n, {.shared = true}).try_accept();
                 (void)Client(n, 20ms);
               }});
  return k;
}

TEST(WrongKind, EveryKindOpenedAsEveryOtherIsAClearErrorNeverACrash) {
  const std::vector<Kind> all = kinds();
  int refused = 0;
  for (const Kind& made : all) {
    for (const Kind& opened : all) {
      if (made.label == opened.label) continue;
      SegmentGuard g(unique_name("wk"));
      g.add(g.name() + ".lock");
      struct DependentNames {
        std::string prefix;
        ~DependentNames() { test::remove_names_with_prefix(prefix); }
      } dependents{g.name() + "."};
      std::shared_ptr<void> object = made.make(g.name());
      const pid_t pid = test::fork_child([&] {
        try {
          opened.open(g.name());
        } catch (const Error& e) {
          const Errc c = e.code();
          if (c == Errc::wrong_kind || c == Errc::wrong_type || c == Errc::already_exists) return 0;
          std::fprintf(stderr, "%s opened as %s: %s (%s)\n", made.label.c_str(),
                       opened.label.c_str(), e.what(), std::string(to_string(c)).c_str());
          return 2;
        }
        return 1;  // opened and used: a handle on the wrong kind
      });
      const test::ChildStatus st = test::wait_child(pid, 20s);
      EXPECT_FALSE(st.timed_out) << made.label << " opened as " << opened.label << ": hung";
      EXPECT_EQ(st.signal, 0) << made.label << " opened as " << opened.label << ": signal "
                              << st.signal;
      if (st.exited && st.code == 1)
        ADD_FAILURE() << made.label << " opened as " << opened.label << ": no error";
      if (st.exited && st.code == 2)
        ADD_FAILURE() << made.label << " opened as " << opened.label << ": unclear error";
      if (st.exited && st.code == 0) ++refused;
    }
  }
  std::printf("%d wrong-kind opens refused\n", refused);
}

}  // namespace
}  // namespace shmbus
