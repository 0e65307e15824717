// Must NOT compile: a type that is neither trivially copyable nor known to
// the codec gets the codec's one static_assert (tests/CMakeLists.txt checks
// the compiler's message).
#include "shmbus/pipe.hpp"
#include "shmbus/queue.hpp"

struct Handle {
  Handle() = default;
  Handle(const Handle&) {}  // not trivially copyable, no MSGPACK_DEFINE
};

void send_it(shmbus::Connection& c) { (void)c.send(Handle{}); }
void queue_it() { (void)shmbus::Queue<Handle>::create("never"); }
