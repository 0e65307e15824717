// libFuzzer target: arbitrary bytes as a topic's shared state (publisher
// line, wake words, subscriber table, slots; with the first byte's low
// bit set, the config too) under a subscriber. Opening must validate or
// throw shmbus::Error; every receive must return a result, deliver at
// most max_message bytes, never read out of bounds (every byte handed out
// is read) and never block (only try_ calls and zero timeouts are made).
//
// topic.cpp is compiled into this target (below) so that libFuzzer's
// coverage instrumentation sees the read path; the linker then takes no
// topic object from the library archive.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../../bus/src/topic.cpp"  // NOLINT: instrumented copy, see above

namespace {

constexpr std::uint32_t kSlots = 16;
constexpr std::size_t kMaxMessage = 64;
constexpr std::uint32_t kSubscribers = 4;

const std::string& topic_name() {
  static const std::string name = [] {
    std::string n = "fuzz-topic-" + std::to_string(::getpid());
    shmbus::Topic::unlink(n);
    static shmbus::Topic keep = shmbus::Topic::create(
        n, {.slots = kSlots, .max_message = kMaxMessage, .max_subscribers = kSubscribers});
    std::atexit([] { shmbus::Topic::unlink("fuzz-topic-" + std::to_string(::getpid())); });
    return n;
  }();
  return name;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t mode = data[0];
  data += 1;
  size -= 1;
  const std::string& name = topic_name();
  auto seg = shmbus::detail::Segment::open(name, shmbus::ObjectKind::topic,
                                           shmbus::detail::kBytesTag, {.attach = false});
  std::byte* payload = seg.payload();
  const std::size_t total = seg.payload_size();
  // Keep a good config unless asked to fuzz it; fill the rest from the input.
  const std::size_t from = (mode & 1) != 0 ? 0 : sizeof(shmbus::detail::TopicConfig);
  shmbus::detail::TopicConfig good;
  std::memcpy(&good, payload, sizeof good);
  std::memset(payload + from, 0, total - from);
  std::memcpy(payload + from, data, std::min(size, total - from));
  try {
    auto topic = shmbus::Topic::open(name, {.open_timeout = std::chrono::milliseconds(0)});
    auto sub =
        topic.subscribe({.policy = (mode & 2) != 0 ? shmbus::SubscriberPolicy::lossy
                                                   : shmbus::SubscriberPolicy::reliable,
                         .history = static_cast<std::uint32_t>(mode >> 2) % (topic.history() + 1)});
    std::byte buf[kMaxMessage];
    unsigned sum = 0;
    for (int i = 0; i < 64; ++i) {
      std::size_t n = 0;
      shmbus::ReceiveResult r;
      if (i % 3 == 0) {
        std::span<const std::byte> msg;
        r = sub.try_peek(msg);
        if (r == shmbus::ReceiveResult::ok) {
          // The subscriber maps the topic at its own address: touch every
          // byte it hands out (outside its mapping that faults).
          if (msg.size() > kMaxMessage) std::abort();
          for (std::byte b : msg) sum += static_cast<unsigned>(b);
          (void)sub.release();
        }
      } else if (i % 3 == 1) {
        r = sub.try_recv(buf, n);
      } else {
        r = sub.recv_for(buf, n, std::chrono::nanoseconds(0));
      }
      if (r == shmbus::ReceiveResult::ok && n > kMaxMessage) std::abort();
      if (r != shmbus::ReceiveResult::ok && r != shmbus::ReceiveResult::too_small) break;
    }
    if (sum == 0xFFFFFFFFu) std::printf("unlikely\n");  // keep the reads
  } catch (const shmbus::Error&) {
  }
  std::memcpy(payload, &good, sizeof good);  // the next open validates a good config again
  return 0;
}
