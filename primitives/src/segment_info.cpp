#include "shmbus/segment_info.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <utility>

#include "shmbus/detail/segment.hpp"
#include "shmbus/error.hpp"

namespace shmbus {

namespace {

constexpr const char* kShmDir = "/dev/shm/";

std::string state_name(std::uint32_t state) {
  switch (static_cast<detail::SegmentState>(state)) {
    case detail::SegmentState::initialising:
      return "initialising";
    case detail::SegmentState::ready:
      return "ready";
    case detail::SegmentState::closed:
      return "closed";
  }
  return "unknown(" + std::to_string(state) + ")";
}

// Maps `name` read-only and fills `info` from its validated header.
// Returns the mapping (base, size); the caller unmaps it.
std::pair<void*, std::size_t> map_and_read(const std::string& name, SegmentInfo& info) {
  validate_name(name);
  std::string path = kShmDir + detail::os_name(name);
  // O_NONBLOCK: a FIFO named like ours must not block the open (fstat
  // below then refuses anything but a regular file).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) throw Error(Errc::not_found, name, "no shmbus object of that name");
    if (err == EACCES) throw Error(Errc::permission_denied, name, "open: permission denied");
    throw Error(Errc::system, name, std::string("open: ") + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(Errc::corrupted, name, "not a regular shared-memory file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < detail::kHeaderSize) {
    ::close(fd);
    throw Error(Errc::truncated, name,
                "file is " + std::to_string(size) + " bytes, smaller than a header");
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) {
    throw Error(Errc::system, name, std::string("mmap: ") + std::strerror(errno));
  }
  const auto* h = static_cast<const detail::SegmentHeader*>(base);
  try {
    // [segment.ready] acquire: pairs with the creator's release store.
    const std::uint32_t state = h->state.load(std::memory_order_acquire);
    info.name = name;
    info.state = state_name(state);
    if (state > static_cast<std::uint32_t>(detail::SegmentState::closed)) {
      throw Error(Errc::corrupted, name,
                  "header state " + std::to_string(state) + " is not a shmbus state");
    }
    info.modified_unix_ns = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ULL +
                            static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
    if (state == static_cast<std::uint32_t>(detail::SegmentState::initialising)) {
      // Only the creator and creation time are meaningful yet:
      // Segment::create() writes them (in that order) before running the
      // payload's init; 0 if not written so far. They are the identity
      // gc removes it by (Segment::unlink_if_same).
      info.total_size = size;
      info.creator = ProcessId::unpack(h->creator);
      info.created_unix_ns = h->created_unix_ns;
      info.creator_alive = info.creator.pid != 0 && is_alive(info.creator);
      return {base, size};
    }
    if (h->magic != detail::kMagic) {
      throw Error(Errc::corrupted, name, "bad magic: not a shmbus segment");
    }
    if (h->version != detail::kFormatVersion) {
      throw Error(Errc::wrong_version, name,
                  "format version " + std::to_string(h->version) + ", expected " +
                      std::to_string(detail::kFormatVersion));
    }
    if (h->total_size != size) {
      throw Error(Errc::truncated, name,
                  "file is " + std::to_string(size) + " bytes, header says " +
                      std::to_string(h->total_size));
    }
    if (h->payload_offset != detail::kHeaderSize || h->payload_size != size - detail::kHeaderSize ||
        h->attach_capacity == 0 || h->attach_capacity > detail::kMaxAttachSlots) {
      throw Error(Errc::corrupted, name, "inconsistent header sizes");
    }
    info.raw_kind = h->kind;
    info.kind = kind_from_u32(info.raw_kind);  // read once: a peer may rewrite it
    if (!info.kind) {
      throw Error(Errc::corrupted, name,
                  "header kind " + std::to_string(info.raw_kind) + " is not a shmbus kind");
    }
    info.type_name =
        readable_type_name({h->type_name, strnlen(h->type_name, detail::kTypeNameSize)});
    info.total_size = h->total_size;
    info.payload_size = h->payload_size;
    info.creator = ProcessId::unpack(h->creator);
    info.creator_alive = is_alive(info.creator);
    info.created_unix_ns = h->created_unix_ns;
    // acquire: pairs with Segment::set_keep's release.
    info.keep = h->keep.load(std::memory_order_acquire) != 0;
    // Read once: a peer may rewrite the header after the check above.
    const std::uint32_t capacity = std::min(h->attach_capacity, detail::kMaxAttachSlots);
    for (std::uint32_t i = 0; i < capacity; ++i) {
      // relaxed: an identity snapshot; see [segment.attach].
      std::uint64_t word = h->attached[i].load(std::memory_order_relaxed);
      if (word == 0) continue;
      ProcessId id = ProcessId::unpack(word);
      info.attached.push_back({id, is_alive(id)});
    }
  } catch (...) {
    ::munmap(base, size);
    throw;
  }
  return {base, size};
}

}  // namespace

bool SegmentInfo::abandoned() const noexcept {
  if (creator_alive) return false;
  return std::none_of(attached.begin(), attached.end(),
                      [](const AttachedProcess& p) { return p.alive; });
}

std::string readable_type_name(std::string_view spelled) {
  // Inline namespaces of the standard libraries first (GCC's std::__cxx11::,
  // libc++'s std::__1::), then the aliases people write.
  static constexpr std::pair<std::string_view, std::string_view> kSpellings[] = {
      {"std::__cxx11::", "std::"},
      {"std::__1::", "std::"},
      {"std::basic_string<char>", "std::string"},
      {"std::basic_string_view<char>", "std::string_view"},
  };
  const auto identifier = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == ':';
  };
  std::string out(spelled);
  for (const auto& [from, to] : kSpellings) {
    for (std::size_t at = out.find(from); at != std::string::npos; at = out.find(from, at)) {
      if (at > 0 && identifier(out[at - 1])) {  // a part of another name
        at += from.size();
        continue;
      }
      out.replace(at, from.size(), to);
      at += to.size();
    }
  }
  return out;
}

std::vector<std::string> list_segments() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(kShmDir);
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {
    std::string_view file = entry->d_name;
    if (file.starts_with(kNamePrefix) && file.size() > kNamePrefix.size()) {
      names.emplace_back(file.substr(kNamePrefix.size()));
    }
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

SegmentInfo inspect_segment(const std::string& name) {
  SegmentInfo info;
  auto [base, size] = map_and_read(name, info);
  ::munmap(base, size);
  return info;
}

SegmentView SegmentView::open(const std::string& name) {
  SegmentView view;
  auto [base, size] = map_and_read(name, view.info_);
  view.base_ = base;
  view.size_ = size;
  if (view.info_.state != "initialising") {
    view.payload_ = {static_cast<const std::byte*>(base) + detail::kHeaderSize,
                     size - detail::kHeaderSize};
  }
  return view;
}

SegmentView::SegmentView(SegmentView&& other) noexcept
    : info_(std::move(other.info_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      payload_(std::exchange(other.payload_, {})) {}

SegmentView& SegmentView::operator=(SegmentView&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, size_);
    info_ = std::move(other.info_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    payload_ = std::exchange(other.payload_, {});
  }
  return *this;
}

SegmentView::~SegmentView() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

}  // namespace shmbus
