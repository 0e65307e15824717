// shmbus channels in an epoll loop, next to anything else a service polls:
// two pipes, a queue and a child process's sentinel in one epoll set,
// through fileno(). A child sends on both pipes and puts on the queue, then
// exits; the loop drains each channel while it is readable (level
// triggered: a descriptor stays readable until a call on that handle finds
// nothing) and stops when the child's sentinel fires and everything has
// come. Exits 0 when every message arrived once.
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "shmbus/shmbus.hpp"

int main() {
  const std::string qname = "example-epoll-" + std::to_string(::getpid());
  auto queue = shmbus::Queue<std::int32_t>::create(qname, {.capacity = 64});
  auto [a_rx, a_tx] = shmbus::Pipe(false);
  auto [b_rx, b_tx] = shmbus::Pipe(false);
  constexpr int kEach = 100;

  shmbus::Process child([&] {
    for (std::int32_t i = 0; i < kEach; ++i) {
      if (a_tx.send(i) != shmbus::SendResult::ok || b_tx.send(i) != shmbus::SendResult::ok ||
          queue.put(i) != shmbus::QueueResult::ok)
        return 1;
    }
    a_tx.close();
    b_tx.close();
    return 0;
  });
  child.start();

  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  enum Tag : std::uint64_t { kPipeA, kPipeB, kQueue, kChild };
  auto add = [&](int fd, Tag tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered
    ev.data.u64 = tag;
    return ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
  };
  if (!add(a_rx.fileno(), kPipeA) || !add(b_rx.fileno(), kPipeB) || !add(queue.fileno(), kQueue) ||
      !add(child.sentinel(), kChild))
    return 1;

  int from_a = 0, from_b = 0, from_queue = 0;
  bool a_eof = false, b_eof = false, child_done = false;
  auto drain = [](shmbus::Connection& c, int& count, bool& eof) {
    while (c.poll()) {  // poll() false re-arms the descriptor
      std::int32_t v = 0;
      const auto r = c.recv(v);
      if (r == shmbus::RecvResult::ok) {
        ++count;
      } else {
        eof = true;  // EOF (or a dead peer): stop watching it
        return false;
      }
    }
    return true;
  };
  while (!(child_done && a_eof && b_eof && from_queue == kEach)) {
    epoll_event events[4];
    const int n = ::epoll_wait(ep, events, 4, 10'000);
    if (n <= 0) {
      std::puts("nothing for 10 s");
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      switch (events[i].data.u64) {
        case kPipeA:
          if (!drain(a_rx, from_a, a_eof)) ::epoll_ctl(ep, EPOLL_CTL_DEL, a_rx.fileno(), nullptr);
          break;
        case kPipeB:
          if (!drain(b_rx, from_b, b_eof)) ::epoll_ctl(ep, EPOLL_CTL_DEL, b_rx.fileno(), nullptr);
          break;
        case kQueue: {
          std::int32_t v = 0;
          while (queue.try_get(v) == shmbus::QueueResult::ok) ++from_queue;  // empty re-arms
          break;
        }
        case kChild:
          ::epoll_ctl(ep, EPOLL_CTL_DEL, child.sentinel(), nullptr);
          child.join();
          child_done = true;
          break;
      }
    }
  }
  ::close(ep);
  shmbus::Queue<std::int32_t>::unlink(qname);
  std::printf("pipe a: %d, pipe b: %d, queue: %d, child exit code %d\n", from_a, from_b, from_queue,
              *child.exitcode());
  return from_a == kEach && from_b == kEach && *child.exitcode() == 0 ? 0 : 1;
}
