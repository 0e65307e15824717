#include "shmbus/shared_memory.hpp"

#include "shmbus/error.hpp"

namespace shmbus {

namespace {
detail::Segment make_block(detail::SegmentName name, std::size_t size,
                           const SegmentOptions& options) {
  if (size == 0) {
    throw Error(Errc::invalid_argument, std::string(name.value_or("")),
                "size must be at least 1 byte");
  }
  return detail::Segment::make(name, ObjectKind::shared_memory, detail::kBytesTag, size, {},
                               options);
}
}  // namespace

SharedMemory::SharedMemory(std::size_t size) : segment_(make_block(std::nullopt, size, {})) {}

SharedMemory SharedMemory::create(std::string_view name, std::size_t size,
                                  const SegmentOptions& options) {
  return SharedMemory(make_block(name, size, options));
}

SharedMemory SharedMemory::open(std::string_view name, const SegmentOptions& options) {
  return SharedMemory(
      detail::Segment::open(name, ObjectKind::shared_memory, detail::kBytesTag, options));
}

SharedMemory SharedMemory::open_or_create(std::string_view name, std::size_t size,
                                          const SegmentOptions& options) {
  // Another process may create or unlink the name between our two tries;
  // a few rounds settle any such race.
  for (int round = 0;; ++round) {
    try {
      return create(name, size, options);
    } catch (const Error& e) {
      if (e.code() != Errc::already_exists) throw;
    }
    try {
      SharedMemory shm = open(name, options);
      if (shm.size() != size) {
        throw Error(Errc::invalid_argument, std::string(name),
                    "exists with " + std::to_string(shm.size()) + " bytes, asked for " +
                        std::to_string(size));
      }
      return shm;
    } catch (const Error& e) {
      if (e.code() != Errc::not_found || round >= 8) throw;
    }
  }
}

}  // namespace shmbus
