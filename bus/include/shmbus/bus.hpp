// Bus — one name under which a service's channels and primitives live.
//
//   shmbus::Bus bus{"trading"};                       // open, or create
//   auto orders = bus.queue<Order>("orders", {.capacity = 4096});   // "trading.orders"
//   auto ready  = bus.event("ready");
//   for (const auto& o : bus.objects()) use(o);      // the registry
//
// Any process on the host may open the same bus by name. Objects are
// created or opened through the bus, kind and payload type checked, and
// recorded in the bus's registry segment, which bus-inspector lists.
//
// Lifetime (the resource tracker's policy for buses): a bus, and every
// object on it, lives while any process has the bus open; a queue whose
// producers all exited keeps what they put. Opening a bus nobody else holds
// sweeps objects of it whose processes are all dead (what killed users
// left); the last process to close it unlinks every
// object of the bus and the registry, so a bus whose processes exit
// normally leaves nothing in /dev/shm. Processes that are all SIGKILLed
// cannot clean up: `bus-inspector gc` (or the next Bus open) does. We chose
// sweeps over a tracker daemon: no extra process to start, monitor or
// lose, and the attachment tables already say who is alive.
//
// Threads: a Bus handle may be shared by threads of one process; its
// factories are setup calls and throw shmbus::Error.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmbus/barrier.hpp"
#include "shmbus/codec.hpp"
#include "shmbus/condition.hpp"
#include "shmbus/detail/registry.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/tracked.hpp"
#include "shmbus/error.hpp"
#include "shmbus/event.hpp"
#include "shmbus/listener.hpp"
#include "shmbus/lock.hpp"
#include "shmbus/object_kind.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/queue.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/semaphore.hpp"
#include "shmbus/shared_memory.hpp"
#include "shmbus/topic.hpp"
#include "shmbus/value.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// The containers (shmbus::containers, on LMDB; shmbus/dict.hpp, list.hpp,
// namespace.hpp): Bus's factories for them are defined there, so that
// libshmbus does not need LMDB.
template <Codable K, Codable V>
class Dict;
template <Codable T>
class List;
class Namespace;
struct StoreOptions;

struct BusObject {
  std::string name;       // within the bus ("orders")
  std::string full_name;  // segment name ("trading.orders")
  ObjectKind kind{};
  std::string type_name;
  std::uint64_t capacity = 0;
  ProcessId creator;
  std::uint64_t created_unix_ns = 0;
};

class Bus {
 public:
  // Opens the bus `name`, creating it if it does not exist.
  explicit Bus(std::string_view name, const SegmentOptions& options = {});
  Bus(Bus&&) noexcept = default;
  Bus& operator=(Bus&&) noexcept;  // closes this handle first
  ~Bus();

  // A forked child that inherited a Bus calls this to be counted as a user
  // (otherwise the parent's close may unlink what the child still uses).
  void attach();

  [[nodiscard]] const std::string& name() const noexcept { return registry_.name(); }

  // Every object registered in this bus (a consistent snapshot per entry).
  [[nodiscard]] std::vector<BusObject> objects() const;

  // Factories: each opens `object` of this bus or creates and registers
  // it; the arguments after the name apply only when it is created.
  SharedMemory shared_memory(std::string_view object, std::size_t size);
  Lock lock(std::string_view object);
  RLock rlock(std::string_view object);
  Semaphore semaphore(std::string_view object, std::uint32_t value = 1);
  BoundedSemaphore bounded_semaphore(std::string_view object, std::uint32_t value = 1);
  Event event(std::string_view object);
  // A Condition with its own RLock (the object "<object>.lock" beside it).
  Condition condition(std::string_view object);
  Barrier barrier(std::string_view object, std::uint32_t parties);
  template <class T>
  Value<T> value(std::string_view object, const T& init = T{});
  template <class T>
  Queue<T> queue(std::string_view object, const QueueOptions& options = {});
  template <class T>
  SimpleQueue<T> simple_queue(std::string_view object, const QueueOptions& options = {});
  template <class T>
  JoinableQueue<T> joinable_queue(std::string_view object, const QueueOptions& options = {});
  BytesQueue bytes_queue(std::string_view object, const QueueOptions& options = {});
  // One end of the pipe `object`: the first process to ask creates the
  // pipe with `options`; each end can be taken by one process only.
  Connection pipe(std::string_view object, PipeEnd end, const PipeOptions& options = {});
  template <class T>
  Array<T> array(std::string_view object, std::size_t size, const T& init = T{});
  // The topic `object` carrying T (std::byte: byte messages); take its
  // publisher() and subscribe() on the handle.
  template <class T = std::byte>
  Topic topic(std::string_view object, const TopicOptions& options = {});

  // The listener `object` (see listener.hpp): created and registered by
  // the first server; another process joins it with options.shared, else
  // gets Errc::already_exists while it lives. Its clients connect with
  // client(object).
  Listener listener(std::string_view object, const ListenerOptions& options = {});
  // Client(): a connection to this bus's listener `object`.
  Connection client(std::string_view object, std::optional<Clock::duration> timeout = std::nullopt,
                    const PipeOptions& options = {}) const;

  // The container `object` of this bus (a store file beside the bus's
  // segments, living and swept as they do). Defined in shmbus::containers:
  // include shmbus/dict.hpp (list.hpp, namespace.hpp) and link it.
  template <Codable K, Codable V>
  Dict<K, V> dict(std::string_view object);
  template <Codable K, Codable V>
  Dict<K, V> dict(std::string_view object, const StoreOptions& options);
  template <Codable T>
  List<T> list(std::string_view object);
  template <Codable T>
  List<T> list(std::string_view object, const StoreOptions& options);
  Namespace namespace_(std::string_view object);
  Namespace namespace_(std::string_view object, const StoreOptions& options);

  // Closes this handle; if it was the last open one, unlinks the bus and
  // all its objects. The destructor does the same.
  void close() noexcept;

  // Opens `object` of this bus, or creates it and registers it: the
  // building block of the typed factories. `create(full_name)` must create
  // exclusively (throw Errc::already_exists otherwise) and `open(full_name)`
  // must validate kind and type. Two processes racing get one object.
  template <class Object>
  Object open_or_create(std::string_view object, ObjectKind kind, detail::TypeTag type,
                        std::uint64_t capacity,
                        const std::function<Object(const std::string&)>& create,
                        const std::function<Object(const std::string&)>& open);

  // Reads the registry of the bus `name` without opening it (inspector).
  static std::vector<BusObject> list_objects(const SegmentView& registry_view);

 private:
  std::string full_name(std::string_view object) const;
  void register_object(std::string_view object, ObjectKind kind, detail::TypeTag type,
                       std::uint64_t capacity);
  [[nodiscard]] detail::Registry& registry() const noexcept {
    return *reinterpret_cast<detail::Registry*>(registry_.payload());
  }

  detail::Segment registry_;
};

template <class T>
Value<T> Bus::value(std::string_view object, const T& init) {
  return open_or_create<Value<T>>(
      object, ObjectKind::value, detail::type_tag<T>(), 1,
      [&](const std::string& full) { return Value<T>::create(full, init); },
      [](const std::string& full) { return Value<T>::open(full); });
}

template <class T>
Array<T> Bus::array(std::string_view object, std::size_t size, const T& init) {
  return open_or_create<Array<T>>(
      object, ObjectKind::array, detail::type_tag<T>(), size,
      [&](const std::string& full) { return Array<T>::create(full, size, init); },
      [](const std::string& full) { return Array<T>::open(full); });
}

template <class T>
Topic Bus::topic(std::string_view object, const TopicOptions& options) {
  return open_or_create<Topic>(
      object, ObjectKind::topic, Topic::tag_of<T>(), options.slots,
      [&](const std::string& full) { return Topic::create<T>(full, options); },
      [&](const std::string& full) { return Topic::open<T>(full, options.segment); });
}

template <class T>
Queue<T> Bus::queue(std::string_view object, const QueueOptions& options) {
  return open_or_create<Queue<T>>(
      object, ObjectKind::queue, detail::type_tag<T>(), options.capacity,
      [&](const std::string& full) { return Queue<T>::create(full, options); },
      [&](const std::string& full) { return Queue<T>(full, options); });
}

template <class T>
SimpleQueue<T> Bus::simple_queue(std::string_view object, const QueueOptions& options) {
  return open_or_create<SimpleQueue<T>>(
      object, ObjectKind::simple_queue, detail::type_tag<T>(), options.capacity,
      [&](const std::string& full) { return SimpleQueue<T>::create(full, options); },
      [&](const std::string& full) { return SimpleQueue<T>(full, options); });
}

template <class T>
JoinableQueue<T> Bus::joinable_queue(std::string_view object, const QueueOptions& options) {
  return open_or_create<JoinableQueue<T>>(
      object, ObjectKind::joinable_queue, detail::type_tag<T>(), options.capacity,
      [&](const std::string& full) { return JoinableQueue<T>::create(full, options); },
      [&](const std::string& full) { return JoinableQueue<T>(full, options); });
}

template <class Object>
Object Bus::open_or_create(std::string_view object, ObjectKind kind, detail::TypeTag type,
                           std::uint64_t capacity,
                           const std::function<Object(const std::string&)>& create,
                           const std::function<Object(const std::string&)>& open) {
  const std::string full = full_name(object);
  // A racing creator or a concurrent sweep can make each try fail the
  // other way; a few rounds settle it.
  for (int round = 0;; ++round) {
    try {
      Object made = create(full);
      detail::untrack(full);  // the bus decides when it goes, not its creator
      register_object(object, kind, type, capacity);
      return made;
    } catch (const Error& e) {
      if (e.code() != Errc::already_exists) throw;
    }
    try {
      return open(full);
    } catch (const Error& e) {
      if (e.code() != Errc::not_found || round >= 8) throw;
    }
  }
}

}  // namespace shmbus
