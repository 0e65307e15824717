#include "shmbus/bus.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "shmbus/resource_tracker.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/store_files.hpp"

namespace shmbus {

namespace {

using detail::Registry;
using detail::RegistryEntry;

constexpr detail::TypeTag kRegistryTag = detail::type_tag<Registry>();

// Bus and object names are segment names without '.', so that
// "<bus>.<object>" is unambiguous.
void validate_part(std::string_view part, const char* what) {
  validate_name(part);
  if (part.find('.') != std::string_view::npos) {
    throw Error(Errc::invalid_name, std::string(part),
                std::string(what) + " names may not contain '.'");
  }
}

// Copies a NUL-terminated string out of a fixed field, never past it.
std::string field(const char* chars, std::size_t size) {
  return std::string(chars, strnlen(chars, size));
}

// Reads one entry if it is published; the seqlock re-check drops an entry
// removed while we copied it.
std::optional<BusObject> read_entry(const RegistryEntry& e, std::string_view bus) {
  // [registry.entry] acquire: pairs with the release store in register_object().
  if (e.published.load(std::memory_order_acquire) != 1) return std::nullopt;
  BusObject o;
  o.creator = ProcessId::unpack(e.owner.load(std::memory_order_relaxed));  // relaxed: checked below
  auto kind = kind_from_u32(e.kind);
  o.name = field(e.object, sizeof e.object);
  o.type_name = readable_type_name(field(e.type_name, sizeof e.type_name));
  o.capacity = e.capacity;
  o.created_unix_ns = e.created_unix_ns;
  // [registry.entry] acquire again: the copy above is whole only if no
  // removal (published 1 -> 0) happened meanwhile.
  if (e.published.load(std::memory_order_acquire) != 1) return std::nullopt;
  if (!kind || o.name.empty()) return std::nullopt;  // untrusted bytes: skip garbage
  o.kind = *kind;
  o.full_name = std::string(bus) + "." + o.name;
  return o;
}

bool is_store(ObjectKind kind) {
  return kind == ObjectKind::dict || kind == ObjectKind::list || kind == ObjectKind::namespace_;
}

// Whether the object's file is there: a segment, or a container's store.
bool object_exists(const BusObject& o) {
  const std::string path =
      is_store(o.kind) ? store_path(o.full_name) : "/dev/shm/" + detail::os_name(o.full_name);
  return ::access(path.c_str(), F_OK) == 0;
}

}  // namespace

Bus::Bus(std::string_view name, const SegmentOptions& caller_options) {
  validate_part(name, "bus");
  // The closing handshake counts users through the attachment table.
  SegmentOptions options = caller_options;
  options.attach = true;
  options.track = false;  // the bus's own lifetime rules (above) apply
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    detail::Segment seg;
    try {
      seg = detail::Segment::create(
          name, ObjectKind::bus_registry, kRegistryTag, sizeof(Registry),
          [](std::span<std::byte> p) {
            auto* r = new (p.data()) Registry{};
            r->entry_count = detail::kRegistryEntries;
          },
          options);
    } catch (const Error& e) {
      if (e.code() != Errc::already_exists) throw;
      try {
        seg = detail::Segment::open(name, ObjectKind::bus_registry, kRegistryTag, options);
      } catch (const Error& e2) {
        if (e2.code() != Errc::not_found) throw;
        continue;  // unlinked by a closing last user: create afresh
      }
    }
    if (seg.payload_size() < sizeof(Registry)) {
      throw Error(Errc::corrupted, std::string(name),
                  "registry payload of " + std::to_string(seg.payload_size()) + " bytes");
    }
    auto* r = reinterpret_cast<Registry*>(seg.payload());
    if (r->entry_count != detail::kRegistryEntries) {
      throw Error(Errc::corrupted, std::string(name),
                  "registry entry count " + std::to_string(r->entry_count));
    }
    // [registry.lifecycle] seq_cst, after our seq_cst attach in open():
    // a closer that stored its token before our attach is seen here.
    const std::uint64_t closer = r->closing.load(std::memory_order_seq_cst);
    const bool unlinked = seg.header().state.load(std::memory_order_seq_cst) ==
                          static_cast<std::uint32_t>(detail::SegmentState::closed);
    if (!unlinked && (closer == 0 || !is_alive(ProcessId::unpack(closer)))) {
      registry_ = std::move(seg);
      break;
    }
    // The last user is unlinking this bus: let it finish, then retry.
    seg.close();
    if (Clock::now() >= deadline) {
      throw Error(Errc::not_ready, std::string(name), "bus stayed in closing for 5 s");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // Sweep at attach: objects of this bus whose processes all died, and
  // registry entries whose object is gone or whose registrant died.
  GcOptions gc;
  gc.prefix = this->name() + ".";
  (void)collect_garbage(gc);
  Registry& reg = registry();
  for (auto& e : reg.entries) {
    const std::uint64_t owner = e.owner.load(std::memory_order_acquire);
    if (owner == 0) continue;
    auto o = read_entry(e, this->name());
    const bool stale =
        o ? !object_exists(*o)
          : e.published.load(std::memory_order_acquire) == 0 && !is_alive(ProcessId::unpack(owner));
    if (!stale) continue;
    // [registry.entry] release: readers see unpublished before the slot is free.
    e.published.store(0, std::memory_order_release);
    std::uint64_t expected = owner;
    e.owner.compare_exchange_strong(expected, 0, std::memory_order_release);
  }
}

Bus::~Bus() { close(); }

Bus& Bus::operator=(Bus&& other) noexcept {
  if (this != &other) {
    close();
    registry_ = std::move(other.registry_);
  }
  return *this;
}

void Bus::attach() { registry_.attach(); }

std::string Bus::full_name(std::string_view object) const {
  validate_part(object, "object");
  if (object.size() >= detail::kRegistryObjectName) {
    throw Error(Errc::invalid_name, std::string(object),
                "object names are at most " + std::to_string(detail::kRegistryObjectName - 1) +
                    " characters");
  }
  return name() + "." + std::string(object);
}

void Bus::register_object(std::string_view object, ObjectKind kind, detail::TypeTag type,
                          std::uint64_t capacity) {
  Registry& reg = registry();
  const std::uint64_t me = this_process().pack();
  for (const auto& e : reg.entries) {
    // An object made again under its name (a listener taken over from a
    // dead server) keeps its entry.
    if (auto o = read_entry(e, name()); o && o->name == object && o->kind == kind) return;
  }
  for (auto& e : reg.entries) {
    std::uint64_t expected = 0;
    // [registry.entry] acquire CAS: claims a free slot; its fields are ours
    // until we publish.
    if (!e.owner.compare_exchange_strong(expected, me, std::memory_order_acquire)) continue;
    e.kind = static_cast<std::uint32_t>(kind);
    e.capacity = capacity;
    e.type_fingerprint = type.fingerprint;
    e.created_unix_ns = detail::unix_time_ns();
    std::memset(e.object, 0, sizeof e.object);
    std::memcpy(e.object, object.data(), std::min(object.size(), sizeof e.object - 1));
    std::memset(e.type_name, 0, sizeof e.type_name);
    std::memcpy(e.type_name, type.name.data(), std::min(type.name.size(), sizeof e.type_name - 1));
    // [registry.entry] release: publishes the fields above.
    e.published.store(1, std::memory_order_release);
    return;
  }
  (void)detail::Segment::unlink(full_name(object));
  throw Error(Errc::invalid_argument, name(),
              "registry full: " + std::to_string(detail::kRegistryEntries) + " objects");
}

std::vector<BusObject> Bus::objects() const {
  std::vector<BusObject> out;
  for (const auto& e : registry().entries) {
    if (auto o = read_entry(e, name())) out.push_back(std::move(*o));
  }
  return out;
}

std::vector<BusObject> Bus::list_objects(const SegmentView& view) {
  std::vector<BusObject> out;
  if (view.info().kind != ObjectKind::bus_registry || view.payload().size() < sizeof(Registry)) {
    return out;
  }
  const auto* reg = reinterpret_cast<const Registry*>(view.payload().data());
  if (reg->entry_count != detail::kRegistryEntries) return out;
  for (const auto& e : reg->entries) {
    if (auto o = read_entry(e, view.info().name)) out.push_back(std::move(*o));
  }
  return out;
}

SharedMemory Bus::shared_memory(std::string_view object, std::size_t size) {
  return open_or_create<SharedMemory>(
      object, ObjectKind::shared_memory, detail::kBytesTag, size,
      [size](const std::string& full) { return SharedMemory::create(full, size); },
      [size](const std::string& full) {
        auto shm = SharedMemory::open(full);
        if (shm.size() != size) {
          throw Error(Errc::invalid_argument, full,
                      "exists with " + std::to_string(shm.size()) + " bytes, asked for " +
                          std::to_string(size));
        }
        return shm;
      });
}

Lock Bus::lock(std::string_view object) {
  return open_or_create<Lock>(
      object, ObjectKind::lock, detail::kBytesTag, 1,
      [](const std::string& full) { return Lock::create(full); },
      [](const std::string& full) { return Lock::open(full); });
}

RLock Bus::rlock(std::string_view object) {
  return open_or_create<RLock>(
      object, ObjectKind::rlock, detail::kBytesTag, 1,
      [](const std::string& full) { return RLock::create(full); },
      [](const std::string& full) { return RLock::open(full); });
}

Semaphore Bus::semaphore(std::string_view object, std::uint32_t value) {
  return open_or_create<Semaphore>(
      object, ObjectKind::semaphore, detail::kBytesTag, value,
      [value](const std::string& full) { return Semaphore::create(full, value); },
      [](const std::string& full) { return Semaphore::open(full); });
}

BoundedSemaphore Bus::bounded_semaphore(std::string_view object, std::uint32_t value) {
  return open_or_create<BoundedSemaphore>(
      object, ObjectKind::bounded_semaphore, detail::kBytesTag, value,
      [value](const std::string& full) { return BoundedSemaphore::create(full, value); },
      [](const std::string& full) { return BoundedSemaphore::open(full); });
}

Event Bus::event(std::string_view object) {
  return open_or_create<Event>(
      object, ObjectKind::event, detail::kBytesTag, 1,
      [](const std::string& full) { return Event::create(full); },
      [](const std::string& full) { return Event::open(full); });
}

Condition Bus::condition(std::string_view object) {
  return open_or_create<Condition>(
      object, ObjectKind::condition, detail::kBytesTag, 1,
      [](const std::string& full) { return Condition::create(full); },
      [](const std::string& full) { return Condition::open(full); });
}

Barrier Bus::barrier(std::string_view object, std::uint32_t parties) {
  return open_or_create<Barrier>(
      object, ObjectKind::barrier, detail::kBytesTag, parties,
      [parties](const std::string& full) { return Barrier::create(full, parties); },
      [](const std::string& full) { return Barrier::open(full); });
}

BytesQueue Bus::bytes_queue(std::string_view object, const QueueOptions& options) {
  return open_or_create<BytesQueue>(
      object, ObjectKind::queue, detail::kBytesTag, options.capacity,
      [&](const std::string& full) { return BytesQueue::create(full, options); },
      [&](const std::string& full) { return BytesQueue(full, options); });
}

Connection Bus::pipe(std::string_view object, PipeEnd end, const PipeOptions& options) {
  return open_or_create<Connection>(
      object, ObjectKind::pipe, detail::kBytesTag, options.capacity,
      [&](const std::string& full) { return Connection::create(full, end, options); },
      [&](const std::string& full) { return Connection::open(full, end); });
}

Listener Bus::listener(std::string_view object, const ListenerOptions& options) {
  return open_or_create<Listener>(
      object, ObjectKind::listener, detail::kBytesTag, options.backlog,
      [&](const std::string& full) {
        ListenerOptions o = options;
        o.shared = false;  // made here, or a live one's already_exists: open joins it
        return Listener(full, o);
      },
      [&](const std::string& full) {
        if (!options.shared) {
          throw Error(Errc::already_exists, full,
                      "a live listener has the name (ListenerOptions::shared joins it)");
        }
        return Listener(full, options);
      });
}

Connection Bus::client(std::string_view object, std::optional<Clock::duration> timeout,
                       const PipeOptions& options) const {
  return Client(full_name(object), timeout, options);
}

void Bus::close() noexcept {
  if (!registry_.valid()) return;
  Registry& reg = registry();
  detail::SegmentHeader& h = registry_.header();
  const std::string bus = name();
  const std::uint64_t me = this_process().pack();
  const bool counted = registry_.attached_here();
  registry_.detach();
  // A handle inherited across fork() without attach() was never counted:
  // it must not decide for the processes that are.
  if (!counted) {
    registry_.close();
    return;
  }
  const auto is_unlinked = [&h] {
    // [registry.lifecycle] seq_cst: the last closer stores `closed` before
    // it unlinks; a handle that sees it has nothing left to clean.
    return h.state.load(std::memory_order_seq_cst) ==
           static_cast<std::uint32_t>(detail::SegmentState::closed);
  };
  // Take the closing token; a dead holder's token may be taken over.
  for (int spin = 0;; ++spin) {
    if (is_unlinked()) {
      registry_.close();
      return;
    }
    std::uint64_t expected = 0;
    // [registry.lifecycle] seq_cst: pairs with the opener's attach + load.
    if (reg.closing.compare_exchange_strong(expected, me, std::memory_order_seq_cst)) break;
    if (!is_alive(ProcessId::unpack(expected)) &&
        reg.closing.compare_exchange_strong(expected, me, std::memory_order_seq_cst)) {
      break;
    }
    if (spin > 20000) {  // ~1 s: the holder is stuck; leave cleanup to gc
      registry_.close();
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  bool others = false;
  // Read once: the header is shared memory (validated at open, but a peer
  // could rewrite it since).
  const std::uint32_t capacity = std::min(h.attach_capacity, detail::kMaxAttachSlots);
  for (std::uint32_t i = 0; i < capacity; ++i) {
    // [registry.lifecycle] seq_cst: sees any opener that attached before
    // our token store.
    const std::uint64_t word = h.attached[i].load(std::memory_order_seq_cst);
    if (word != 0 && is_alive(ProcessId::unpack(word))) {
      others = true;
      break;
    }
  }
  if (others) {
    reg.closing.store(0, std::memory_order_seq_cst);  // [registry.lifecycle]
    registry_.close();
    return;
  }
  // Last user: mark the registry closed (so a late closer holding this
  // unlinked registry does nothing), unlink every object of the bus,
  // registered or not, then the registry. Openers that see our token or
  // the closed state retry, and create the bus afresh.
  h.state.store(static_cast<std::uint32_t>(detail::SegmentState::closed),
                std::memory_order_seq_cst);  // [registry.lifecycle]
  for (const auto& n : list_segments()) {
    if (n.size() > bus.size() && n.compare(0, bus.size() + 1, bus + ".") == 0) {
      try {
        (void)detail::Segment::unlink(n);
      } catch (...) {
      }
    }
  }
  for (const auto& n : list_stores()) {
    if (n.size() > bus.size() && n.compare(0, bus.size() + 1, bus + ".") == 0)
      (void)remove_store(n);
  }
  try {
    (void)detail::Segment::unlink(bus);
  } catch (...) {
  }
  registry_.close();
}

}  // namespace shmbus
