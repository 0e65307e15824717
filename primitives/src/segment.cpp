#include "shmbus/detail/segment.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>
#include <thread>
#include <utility>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/tracked.hpp"
#include "shmbus/error.hpp"
#include "shmbus/wait.hpp"

namespace bip = boost::interprocess;

namespace shmbus {

std::string_view to_string(ObjectKind kind) noexcept {
  switch (kind) {
    case ObjectKind::shared_memory:
      return "shared_memory";
    case ObjectKind::lock:
      return "lock";
    case ObjectKind::rlock:
      return "rlock";
    case ObjectKind::semaphore:
      return "semaphore";
    case ObjectKind::bounded_semaphore:
      return "bounded_semaphore";
    case ObjectKind::event:
      return "event";
    case ObjectKind::condition:
      return "condition";
    case ObjectKind::barrier:
      return "barrier";
    case ObjectKind::value:
      return "value";
    case ObjectKind::array:
      return "array";
    case ObjectKind::pipe:
      return "pipe";
    case ObjectKind::queue:
      return "queue";
    case ObjectKind::simple_queue:
      return "simple_queue";
    case ObjectKind::joinable_queue:
      return "joinable_queue";
    case ObjectKind::bus_registry:
      return "bus_registry";
    case ObjectKind::topic:
      return "topic";
    case ObjectKind::listener:
      return "listener";
    case ObjectKind::dict:
      return "dict";
    case ObjectKind::list:
      return "list";
    case ObjectKind::namespace_:
      return "namespace";
    case ObjectKind::bridge:
      return "bridge";
  }
  return "unknown";
}

std::optional<ObjectKind> kind_from_u32(std::uint32_t raw) noexcept {
  auto kind = static_cast<ObjectKind>(raw);
  if (to_string(kind) == "unknown") return std::nullopt;
  return kind;
}

void validate_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    throw Error(Errc::invalid_name, std::string(name),
                "name must be 1 to " + std::to_string(kMaxNameLength) + " characters, got " +
                    std::to_string(name.size()));
  }
  if (name.front() == '.') {
    throw Error(Errc::invalid_name, std::string(name), "name must not start with '.'");
  }
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      throw Error(Errc::invalid_name, std::string(name),
                  std::string("character '") + c + "' is not in [A-Za-z0-9._-]");
    }
  }
}

namespace detail {

std::string os_name(std::string_view name) { return std::string(kNamePrefix) + std::string(name); }

std::uint64_t unix_time_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

namespace {

[[noreturn]] void rethrow_boost(const bip::interprocess_exception& e, std::string_view name,
                                std::string_view doing) {
  std::string object(name);
  switch (e.get_error_code()) {
    case bip::not_found_error:
    case bip::not_such_file_or_directory:
      throw Error(Errc::not_found, object, "no shmbus object of that name");
    case bip::already_exists_error:
      throw Error(Errc::already_exists, object, "an object of that name exists");
    case bip::security_error:
      throw Error(Errc::permission_denied, object, std::string(doing) + ": permission denied");
    default:
      break;
  }
  int err = e.get_native_error();
  throw Error(Errc::system, object,
              std::string(doing) + ": " + (err ? std::strerror(err) : e.what()));
}

std::string describe_kind(std::uint32_t raw) {
  auto kind = kind_from_u32(raw);
  return kind ? std::string(to_string(*kind)) : "unknown kind " + std::to_string(raw);
}

}  // namespace

// A created segment's Boost.Interprocess region, or our own mmap() of an
// anonymous segment or of one we opened.
struct Segment::Mapping {
  bip::mapped_region region;
  void* mapped = nullptr;
  std::size_t mapped_size = 0;

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (mapped != nullptr) ::munmap(mapped, mapped_size);
  }
  [[nodiscard]] void* address() const noexcept {
    return mapped != nullptr ? mapped : region.get_address();
  }
  [[nodiscard]] std::size_t size() const noexcept {
    return mapped != nullptr ? mapped_size : region.get_size();
  }
};

Segment::Segment(std::string name, std::shared_ptr<Mapping> mapping)
    : name_(std::move(name)),
      mapping_(std::move(mapping)),
      base_(static_cast<std::byte*>(mapping_->address())),
      size_(mapping_->size()) {}

Segment Segment::share() const {
  if (base_ == nullptr) return Segment();
  return Segment(name_, mapping_);
}

Segment::Segment(Segment&& other) noexcept
    : name_(std::move(other.name_)),
      mapping_(std::move(other.mapping_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      attached_pid_(std::exchange(other.attached_pid_, 0)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    close();
    name_ = std::move(other.name_);
    mapping_ = std::move(other.mapping_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    attached_pid_ = std::exchange(other.attached_pid_, 0);
  }
  return *this;
}

Segment::Segment() noexcept = default;

Segment::~Segment() { close(); }

void Segment::close() noexcept {
  if (base_ == nullptr) return;
  detach();
  mapping_.reset();
  base_ = nullptr;
  size_ = 0;
}

namespace {

std::uint32_t attach_capacity(std::string_view name, const SegmentOptions& options) {
  std::uint32_t capacity = options.max_attached == 0 ? kMaxAttachSlots : options.max_attached;
  if (capacity > kMaxAttachSlots) {
    throw Error(
        Errc::invalid_argument, std::string(name),
        "max_attached " + std::to_string(capacity) + " exceeds " + std::to_string(kMaxAttachSlots));
  }
  return capacity;
}

}  // namespace

void Segment::initialise(Segment& seg, ObjectKind kind, TypeTag type, std::uint32_t capacity,
                         const Init& init, const SegmentOptions& options) {
  // The memory is fresh (zero-filled); only this process maps it until
  // state becomes ready, so plain writes suffice below.
  auto* h = new (seg.base_) SegmentHeader{};
  h->magic = kMagic;
  h->version = kFormatVersion;
  h->kind = static_cast<std::uint32_t>(kind);
  h->type_fingerprint = type.fingerprint;
  h->total_size = seg.size_;
  h->payload_offset = kHeaderSize;
  h->payload_size = seg.size_ - kHeaderSize;
  h->attach_capacity = capacity;
  h->creator = this_process().pack();
  h->created_unix_ns = unix_time_ns();
  std::size_t n = std::min(type.name.size(), kTypeNameSize - 1);
  std::memcpy(h->type_name, type.name.data(), n);
  h->type_name[n] = '\0';
  if (init) init(seg.payload_span());
  if (options.attach) seg.attach();
  // [segment.ready] release: every header field and the payload initialised
  // above become visible before `ready`. Pairs with the acquire in open().
  h->state.store(static_cast<std::uint32_t>(SegmentState::ready), std::memory_order_release);
}

Segment Segment::create(std::string_view name, ObjectKind kind, TypeTag type,
                        std::size_t payload_size, const Init& init, const SegmentOptions& options) {
  validate_name(name);
  const std::uint32_t capacity = attach_capacity(name, options);
  const std::string os = os_name(name);
  const std::size_t total = kHeaderSize + payload_size;
  auto mapping = std::make_shared<Mapping>();
  try {
    bip::permissions perm(options.permissions);
    bip::shared_memory_object shm(bip::create_only, os.c_str(), bip::read_write, perm);
    try {
      shm.truncate(static_cast<bip::offset_t>(total));
      mapping->region = bip::mapped_region(shm, bip::read_write, 0, total);
    } catch (...) {
      bip::shared_memory_object::remove(os.c_str());
      throw;
    }
  } catch (const bip::interprocess_exception& e) {
    rethrow_boost(e, name, "create");
  }

  Segment seg(std::string(name), std::move(mapping));
  try {
    initialise(seg, kind, type, capacity, init, options);
  } catch (...) {
    unlink(name);
    throw;
  }
  if (options.track) {
    const SegmentHeader& h = seg.header();
    track_created(name, h.creator, h.created_unix_ns);
  }
  return seg;
}

Segment Segment::create_anonymous(ObjectKind kind, TypeTag type, std::size_t payload_size,
                                  const Init& init, const SegmentOptions& options) {
  const std::string what = "anonymous " + std::string(to_string(kind));
  const std::uint32_t capacity = attach_capacity(what, options);
  const std::size_t total = kHeaderSize + payload_size;
  // The memfd's name shows only in /proc/<pid>/maps ("/memfd:shmbus.queue").
  const std::string label = std::string(kNamePrefix) + std::string(to_string(kind));
  const int fd = ::memfd_create(label.c_str(), MFD_CLOEXEC);
  if (fd < 0) throw Error(Errc::system, what, std::string("memfd_create: ") + std::strerror(errno));
  auto mapping = std::make_shared<Mapping>();
  void* base = MAP_FAILED;
  if (::ftruncate(fd, static_cast<off_t>(total)) == 0) {
    base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  const int err = errno;
  // The mapping keeps the memory; no descriptor stays open per object.
  ::close(fd);
  if (base == MAP_FAILED) {
    throw Error(Errc::system, what,
                "sizing or mapping " + std::to_string(total) + " bytes: " + std::strerror(err));
  }
  mapping->mapped = base;
  mapping->mapped_size = total;
  Segment seg(std::string(), std::move(mapping));
  initialise(seg, kind, type, capacity, init, options);
  return seg;
}

Segment Segment::make(SegmentName name, ObjectKind kind, TypeTag type, std::size_t payload_size,
                      const Init& init, const SegmentOptions& options) {
  if (name) return create(*name, kind, type, payload_size, init, options);
  return create_anonymous(kind, type, payload_size, init, options);
}

namespace {

// Opens "/dev/shm/<os>" and maps all of it when it holds at least a
// header: {base (nullptr if not mapped), file size}. Non-blocking and
// regular files only: a FIFO or device named like an object must not hang
// or feed us (a blocking open of a FIFO waits for a writer forever).
std::pair<void*, std::size_t> map_existing(const std::string& os, const std::string& object) {
  // shm_open adds O_NOFOLLOW and O_CLOEXEC.
  const int fd = ::shm_open(os.c_str(), O_RDWR | O_NONBLOCK, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) throw Error(Errc::not_found, object, "no shmbus object of that name");
    if (err == EACCES) throw Error(Errc::permission_denied, object, "open: permission denied");
    throw Error(Errc::system, object, std::string("open: ") + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(Errc::corrupted, object, "not a regular shared-memory file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size >= kHeaderSize) {
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(Errc::system, object, std::string("mmap: ") + std::strerror(err));
    }
    ::close(fd);  // the mapping keeps the memory
    return {base, size};
  }
  ::close(fd);
  return {nullptr, size};
}

}  // namespace

Segment Segment::open(std::string_view name, ObjectKind kind, TypeTag type,
                      const SegmentOptions& options) {
  validate_name(name);
  const std::string os = os_name(name);
  const std::string object(name);
  const auto deadline = detail::deadline_after(options.open_timeout);  // saturated
  auto pause = std::chrono::microseconds(50);

  for (;;) {
    auto mapping = std::make_shared<Mapping>();
    const auto [base, size] = map_existing(os, object);
    mapping->mapped = base;
    mapping->mapped_size = base != nullptr ? size : 0;

    if (size >= kHeaderSize) {
      const auto* h = static_cast<const SegmentHeader*>(mapping->address());
      // [segment.ready] acquire: pairs with the creator's release store;
      // after it every header field below is set and stable.
      auto state = h->state.load(std::memory_order_acquire);
      if (state > static_cast<std::uint32_t>(SegmentState::closed)) {
        throw Error(Errc::corrupted, object,
                    "header state " + std::to_string(state) + " is not a shmbus state");
      }
      if (state != static_cast<std::uint32_t>(SegmentState::initialising)) {
        if (h->magic != kMagic) {
          throw Error(Errc::corrupted, object, "bad magic: not a shmbus segment");
        }
        if (h->version != kFormatVersion) {
          throw Error(Errc::wrong_version, object,
                      "format version " + std::to_string(h->version) + ", expected " +
                          std::to_string(kFormatVersion));
        }
        if (h->kind != static_cast<std::uint32_t>(kind)) {
          throw Error(
              Errc::wrong_kind, object,
              "holds a " + describe_kind(h->kind) + ", expected a " + std::string(to_string(kind)));
        }
        if (h->type_fingerprint != type.fingerprint) {
          std::string stored(h->type_name, strnlen(h->type_name, kTypeNameSize));
          throw Error(Errc::wrong_type, object,
                      "payload type '" + stored + "', expected '" + std::string(type.name) + "'");
        }
        if (h->total_size != size) {
          throw Error(Errc::truncated, object,
                      "file is " + std::to_string(size) + " bytes, header says " +
                          std::to_string(h->total_size));
        }
        if (h->payload_offset != kHeaderSize || h->payload_size != size - kHeaderSize ||
            h->attach_capacity == 0 || h->attach_capacity > kMaxAttachSlots) {
          throw Error(Errc::corrupted, object, "inconsistent header sizes");
        }
        Segment seg(object, std::move(mapping));
        if (options.attach) seg.attach();
        return seg;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      if (size > 0 && size < kHeaderSize) {
        throw Error(Errc::truncated, object,
                    "file is " + std::to_string(size) + " bytes, smaller than a header");
      }
      throw Error(Errc::not_ready, object,
                  "creator did not publish ready within " +
                      std::to_string(options.open_timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

namespace {
struct Identity {
  std::uint64_t creator;
  std::uint64_t created_unix_ns;
};

// [segment.unlink] See Segment::unlink(). `expect`: the identity the name
// must still have (nullptr: any). Tests hold a remover between its check
// and its unlink at FaultPoint::unlink_checked.
bool unlink_locked(std::string_view name, const Identity* expect) {
  validate_name(name);
  const std::string os = os_name(name);
  // O_NONBLOCK: a FIFO named like an object must not block the open.
  const int fd = ::shm_open(os.c_str(), O_RDONLY | O_NONBLOCK, 0);
  if (fd < 0) {
    if (errno == ENOENT || expect != nullptr) return false;
    // Not readable by us (another user's): removing it needs no lock, as
    // we could not have judged its contents either.
    untrack(name);
    return ::shm_unlink(os.c_str()) == 0;
  }
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_fd{fd};
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) return false;
  }
  // The name may have been removed and made again between our open and
  // our lock: then the file we hold is not the one it names.
  struct stat held {
  }, named{};
  const std::string path = "/dev/shm/" + os;
  if (::fstat(fd, &held) != 0 || ::stat(path.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
      held.st_dev != named.st_dev)
    return false;
  if (expect != nullptr) {
    if (!S_ISREG(held.st_mode) || held.st_size < static_cast<off_t>(kHeaderSize)) return false;
    void* m = ::mmap(nullptr, kHeaderSize, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return false;
    const auto* h = static_cast<const SegmentHeader*>(m);
    // Set once before ready (creator, then created_unix_ns): read plainly.
    // A segment whose creator is still writing them does not match a
    // dead creator's identity; one whose creator died matches what
    // inspect_segment() read of it (gc's judgement).
    const bool same =
        h->creator == expect->creator && h->created_unix_ns == expect->created_unix_ns;
    ::munmap(m, kHeaderSize);
    if (!same) return false;
  }
  fault_point(FaultPoint::unlink_checked);
  untrack(name);
  return ::shm_unlink(os.c_str()) == 0;
}
}  // namespace

bool Segment::unlink(std::string_view name) { return unlink_locked(name, nullptr); }

bool Segment::unlink_if_same(std::string_view name, std::uint64_t creator,
                             std::uint64_t created_unix_ns) {
  const Identity id{creator, created_unix_ns};
  return unlink_locked(name, &id);
}

bool Segment::unlink_own_name() const {
  if (!valid() || name_.empty()) return false;
  const SegmentHeader& h = header();
  return unlink_if_same(name_, h.creator, h.created_unix_ns);
}

void Segment::attach() {
  // Each handle holds its own slot, so a process with two handles stays
  // recorded until both are gone. A handle inherited across fork() is not
  // this process's entry: attached_pid_ names the process that made it.
  ProcessId me = this_process();
  if (attached_pid_ == me.pid) return;
  SegmentHeader& h = header();
  const std::uint64_t word = me.pack();
  const std::uint32_t capacity = std::min(h.attach_capacity, kMaxAttachSlots);
  // First pass: a free slot. Second pass: a slot whose process is dead.
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t i = 0; i < capacity; ++i) {
      // relaxed: the slot's value is only an identity; nothing else is
      // published through it.
      std::uint64_t seen = h.attached[i].load(std::memory_order_relaxed);
      bool take = pass == 0 ? seen == 0 : (seen != 0 && !is_alive(ProcessId::unpack(seen)));
      // [segment.attach] seq_cst CAS: claims the slot against other
      // attachers, and orders the attach before whatever the caller reads
      // next (Bus relies on it: [registry.lifecycle]).
      if (take && h.attached[i].compare_exchange_strong(seen, word, std::memory_order_seq_cst)) {
        attached_pid_ = me.pid;
        return;
      }
    }
  }
  throw Error(Errc::attach_table_full, name_,
              "all " + std::to_string(capacity) + " attachment slots hold live processes");
}

bool Segment::attached_here() const noexcept {
  return base_ != nullptr && attached_pid_ != 0 && attached_pid_ == this_process().pid;
}

void Segment::detach() noexcept {
  if (base_ == nullptr || attached_pid_ == 0) return;
  ProcessId me = this_process();
  const bool mine = attached_pid_ == me.pid;  // false in a forked child
  attached_pid_ = 0;
  if (!mine) return;
  SegmentHeader& h = header();
  const std::uint64_t word = me.pack();
  const std::uint32_t capacity = std::min(h.attach_capacity, kMaxAttachSlots);
  for (std::uint32_t i = 0; i < capacity; ++i) {
    std::uint64_t expected = word;
    // [segment.attach] seq_cst: see attach().
    if (h.attached[i].compare_exchange_strong(expected, 0, std::memory_order_seq_cst)) return;
  }
}

}  // namespace detail
}  // namespace shmbus
