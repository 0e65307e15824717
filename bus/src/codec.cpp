// The non-template half of shmbus/codec.hpp: this thread's buffers and the
// bounded msgpack unpack every decoder goes through.
#include "shmbus/codec.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>

namespace shmbus::detail {

namespace {
thread_local std::string t_decode_error;
}  // namespace

const std::string& last_decode_error() noexcept { return t_decode_error; }

void set_decode_error(const char* why) noexcept {
  try {
    t_decode_error = why;
  } catch (...) {
    t_decode_error.clear();  // out of memory: no reason, still an error
  }
}

msgpack::zone& decode_zone() noexcept {
  thread_local msgpack::zone zone;
  return zone;
}

void EncodeBuffer::grow(std::size_t more) {
  if (more > SIZE_MAX / 2 - size) throw std::bad_alloc();
  const std::size_t cap = std::max({size + more, capacity * 2, std::size_t{256}});
  std::unique_ptr<char[]> bigger(new char[cap]);
  if (size != 0) std::memcpy(bigger.get(), data.get(), size);
  data = std::move(bigger);
  capacity = cap;
}

EncodeBuffer& encode_buffer() noexcept {
  thread_local EncodeBuffer buffer;
  return buffer;
}

char* SpillWriter::spill(std::size_t n) {
  EncodeBuffer& b = encode_buffer();
  if (!spilled_) {  // the bytes so far move to the thread's buffer
    b.size = 0;
    if (p_ != begin_) b.write(begin_, size());
    spilled_ = true;
  } else {
    b.size = size();  // begin_ is b.data already
  }
  if (n > b.capacity - b.size) b.grow(n);
  begin_ = b.data.get();
  p_ = begin_ + b.size;
  end_ = begin_ + b.capacity;
  return p_;
}

msgpack::object unpack_one(std::span<const std::byte> msg, msgpack::zone& zone, std::size_t depth,
                           std::size_t& used) {
  // Each element, key, value and byte takes at least one byte of the
  // message, so no declared size can be larger than the message itself:
  // the zone never allocates more than a small multiple of msg.size()
  // (sizeof(msgpack::object) per element), whatever the header claims.
  const std::size_t n = msg.size();
  const msgpack::unpack_limit limit(n, n / 2, n, n, n, depth);
  used = 0;
  // Strings and bins point into the message (no copy): the caller
  // converts before the message is released.
  return msgpack::unpack(
      zone, reinterpret_cast<const char*>(msg.data()), n, used,
      [](msgpack::type::object_type, std::size_t, void*) { return true; }, nullptr, limit);
}

bool unpack_bounded(std::span<const std::byte> msg, msgpack::zone& zone,
                    msgpack::object& out) noexcept {
  const std::size_t n = msg.size();
  std::size_t off = 0;
  try {
    out = unpack_one(msg, zone, kMaxDecodeDepth, off);
  } catch (const msgpack::insufficient_bytes&) {
    set_decode_error("truncated msgpack value");
    return false;
  } catch (const msgpack::depth_size_overflow&) {
    set_decode_error("msgpack nesting deeper than the limit");
    return false;
  } catch (const msgpack::size_overflow&) {
    set_decode_error("a msgpack length runs past the message's end");
    return false;
  } catch (const msgpack::parse_error&) {
    set_decode_error("not a msgpack value");
    return false;
  } catch (const std::bad_alloc&) {
    set_decode_error("out of memory while decoding");
    return false;
  } catch (const std::exception& e) {
    set_decode_error(e.what());
    return false;
  }
  if (off != n) {
    set_decode_error("bytes after the msgpack value");
    return false;
  }
  return true;
}

}  // namespace shmbus::detail
