// What README and header examples may use without declaring it: the
// names a reader supplies (their message types, their handlers, their
// data). check_examples.py compiles every example after this prelude.
// Add a name here when an example needs one; keep examples themselves
// free of scaffolding.
#pragma once

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <shmbus/bridge/forwarder.hpp>  // the bridge's headers need no ZeroMQ headers
#include <shmbus/bridge/keys.hpp>
#include <shmbus/bridge/remote.hpp>
#include <shmbus/bridge/status.hpp>
#include <shmbus/shmbus.hpp>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace example_prelude {

struct Order {
  long id = 0;
  long qty = 0;
};
struct Tick {
  long time = 0;
  double price = 0;
};
template <class... A>
void handle(A&&...) {}
template <class... A>
void use(A&&...) {}
template <class... A>
void show(A&&...) {}
inline void repair() {}
inline void repair_book() {}
inline int work() { return 0; }
inline int run_consumer() { return 0; }
inline std::vector<long> xs;
inline long total = 0;
inline const std::byte* pixels = nullptr;
inline std::size_t n = 0;
inline shmbus::Connection from_a, from_b, from_c;
inline std::vector<shmbus::Connection*> ready;
// Declared, never defined: examples are only compiled.
extern shmbus::Connection conn, other;
extern shmbus::Queue<int> results, tasks, queue;
extern shmbus::Event stop_event;
extern shmbus::Process worker;
extern shmbus::Bus bus;
inline int sock = -1, ep = -1, item = 0;

}  // namespace example_prelude

using namespace example_prelude;
