// A shmbus queue read from a Boost.Asio io_context: its fileno() wrapped in
// a posix::stream_descriptor, async_wait(wait_read), drain with try_get
// until empty (which re-arms the descriptor), wait again. A child process
// puts the items; the loop ends when all have come. Exits 0 on success.
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdio>
#include <functional>
#include <string>

#include "shmbus/shmbus.hpp"

int main() {
  const std::string qname = "example-asio-" + std::to_string(::getpid());
  auto queue = shmbus::Queue<std::int64_t>::create(qname, {.capacity = 16});
  constexpr std::int64_t kItems = 1000;
  shmbus::Process producer([&] {
    for (std::int64_t i = 1; i <= kItems; ++i) {
      if (queue.put(i) != shmbus::QueueResult::ok) return 1;
    }
    return 0;
  });
  producer.start();

  boost::asio::io_context io;
  // The descriptor belongs to the queue handle: release() it before the
  // stream_descriptor would close it.
  boost::asio::posix::stream_descriptor sd(io, queue.fileno());
  std::int64_t count = 0, sum = 0;
  std::function<void(const boost::system::error_code&)> on_ready =
      [&](const boost::system::error_code& ec) {
        if (ec) return;
        std::int64_t v = 0;
        while (queue.try_get(v) == shmbus::QueueResult::ok) {
          ++count;
          sum += v;
        }
        if (count < kItems) sd.async_wait(boost::asio::posix::descriptor_base::wait_read, on_ready);
      };
  sd.async_wait(boost::asio::posix::descriptor_base::wait_read, on_ready);
  io.run();
  (void)sd.release();
  producer.join();
  shmbus::Queue<std::int64_t>::unlink(qname);
  std::printf("%lld items, sum %lld\n", static_cast<long long>(count), static_cast<long long>(sum));
  return count == kItems && sum == kItems * (kItems + 1) / 2 && *producer.exitcode() == 0 ? 0 : 1;
}
