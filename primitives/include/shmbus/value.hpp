// Value<T>, Array<T>, RawValue<T>, RawArray<T> — trivially copyable data in
// its own segment, after Python's multiprocessing.Value / Array (with a
// lock) and RawValue / RawArray (without).
//
//   auto hits = shmbus::Value<long>::create("hits", 0);
//   { std::scoped_lock g(hits.get_lock()); hits.set(hits.get() + 1); }
//   hits.fetch_add(1);                 // atomic, where atomic_ref<T> is lock-free
//   auto xs = shmbus::Array<double>::create("xs", 16);
//
// Who may call what: any thread of any process that opened the object (or
// inherited it across fork() and attach()ed). create/open throw
// shmbus::Error (Errc::wrong_type if T differs from the creator's; open()
// checks the recorded element count against the segment's size).
//
// Access: when std::atomic_ref<T> is always lock-free, get()/set() are
// seq_cst atomic accesses that take no lock, and fetch_add/fetch_sub/
// exchange/compare_exchange are atomic RMWs. Otherwise get()/set() copy
// the bytes under the object's lock (an RLock, as in Python, so they also
// work while the caller holds get_lock()); Raw* variants have no lock and
// then leave synchronisation to the caller. Compound updates (x = x + 1)
// need get_lock() (or an RMW).
//
// Memory ordering: everything written before set() (or before releasing
// get_lock()) is visible to a process whose get() reads that value (or
// that acquires get_lock() afterwards).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>

#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/error.hpp"
#include "shmbus/lock.hpp"

namespace shmbus {
namespace detail {

template <class T>
inline constexpr bool kAtomicCells =
    std::atomic_ref<T>::is_always_lock_free&& std::is_trivially_copyable_v<T>;

// The shared part of all four: a CellsHeader and `count` elements of T.
template <class T, ObjectKind Kind>
class Cells {
  static_assert(std::is_trivially_copyable_v<T>, "shared values must be trivially copyable");
  static_assert(alignof(T) <= kCellsOffset, "over-aligned element type");

 public:
  Cells() = default;

  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] const std::string& name() const noexcept { return segment_.name(); }
  void attach() { segment_.attach(); }
  static bool unlink(std::string_view name) { return Segment::unlink(name); }

 protected:
  static Cells make_created(std::string_view name, std::size_t count, const T& init,
                            const SegmentOptions& options) {
    if (count == 0 || count > (std::size_t{1} << 40) / sizeof(T)) {
      throw Error(Errc::invalid_argument, std::string(name), "element count out of range");
    }
    auto seg = Segment::create(
        name, Kind, type_tag<T>(), kCellsOffset + count * sizeof(T),
        [&](std::span<std::byte> p) {
          auto* h = new (p.data()) CellsHeader{};
          h->count = count;
          h->elem_size = sizeof(T);
          for (std::size_t i = 0; i < count; ++i) {
            std::memcpy(p.data() + kCellsOffset + i * sizeof(T), &init, sizeof(T));
          }
        },
        options);
    return Cells(std::move(seg));
  }
  static Cells make_opened(std::string_view name, const SegmentOptions& options) {
    return Cells(Segment::open(name, Kind, type_tag<T>(), options));
  }

  explicit Cells(Segment seg) : segment_(std::move(seg)) {
    // Untrusted: validate the recorded count and size against the mapping.
    if (segment_.payload_size() < kCellsOffset) {
      throw Error(Errc::truncated, segment_.name(), "payload smaller than the value header");
    }
    auto* h = reinterpret_cast<CellsHeader*>(segment_.payload());
    const std::uint64_t count = h->count;
    if (h->elem_size != sizeof(T) || count == 0 ||
        count > (segment_.payload_size() - kCellsOffset) / sizeof(T)) {
      throw Error(Errc::corrupted, segment_.name(), "element count or size does not fit");
    }
    count_ = static_cast<std::size_t>(count);
    header_ = h;
    data_ = reinterpret_cast<T*>(segment_.payload() + kCellsOffset);
  }

  T load_raw(std::size_t i) const noexcept {
    if constexpr (kAtomicCells<T>) {
      // [value.cell] seq_cst: pairs with store_raw()/RMWs in other processes.
      return std::atomic_ref<T>(data_[i]).load(std::memory_order_seq_cst);
    } else {
      T v;
      std::memcpy(&v, &data_[i], sizeof(T));
      return v;
    }
  }
  void store_raw(std::size_t i, const T& v) noexcept {
    if constexpr (kAtomicCells<T>) {
      // [value.cell] seq_cst: pairs with load_raw().
      std::atomic_ref<T>(data_[i]).store(v, std::memory_order_seq_cst);
    } else {
      std::memcpy(&data_[i], &v, sizeof(T));
    }
  }

  Segment segment_;
  CellsHeader* header_ = nullptr;
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace detail

// A single T with a lock.
template <class T>
class Value : public detail::Cells<T, ObjectKind::value> {
  using Base = detail::Cells<T, ObjectKind::value>;

 public:
  static Value create(std::string_view name, const T& init = T{},
                      const SegmentOptions& options = {}) {
    return Value(Base::make_created(name, 1, init, options));
  }
  static Value open(std::string_view name, const SegmentOptions& options = {}) {
    return Value(Base::make_opened(name, options));
  }

  Value() = default;

  [[nodiscard]] RLock& get_lock() noexcept { return lock_; }

  [[nodiscard]] T get() noexcept(detail::kAtomicCells<T>) {
    if constexpr (detail::kAtomicCells<T>) {
      return this->load_raw(0);
    } else {
      lock_.lock();
      T v = this->load_raw(0);
      lock_.unlock();
      return v;
    }
  }
  void set(const T& v) noexcept(detail::kAtomicCells<T>) {
    if constexpr (detail::kAtomicCells<T>) {
      this->store_raw(0, v);
    } else {
      lock_.lock();
      this->store_raw(0, v);
      lock_.unlock();
    }
  }
  // Atomic read-modify-writes (only where atomic_ref<T> is lock-free).
  T fetch_add(T d) noexcept requires(detail::kAtomicCells<T>&& std::is_arithmetic_v<T>) {
    // [value.cell] seq_cst RMW.
    return std::atomic_ref<T>(this->data_[0]).fetch_add(d, std::memory_order_seq_cst);
  }
  T fetch_sub(T d) noexcept requires(detail::kAtomicCells<T>&& std::is_arithmetic_v<T>) {
    // [value.cell] seq_cst RMW.
    return std::atomic_ref<T>(this->data_[0]).fetch_sub(d, std::memory_order_seq_cst);
  }
  T exchange(const T& v) noexcept requires detail::kAtomicCells<T> {
    // [value.cell] seq_cst RMW.
    return std::atomic_ref<T>(this->data_[0]).exchange(v, std::memory_order_seq_cst);
  }
  bool compare_exchange(T& expected, const T& desired) noexcept requires detail::kAtomicCells<T> {
    // [value.cell] seq_cst RMW.
    return std::atomic_ref<T>(this->data_[0])
        .compare_exchange_strong(expected, desired, std::memory_order_seq_cst);
  }

 private:
  explicit Value(Base b)
      : Base(std::move(b)), lock_(RLock::view(&this->header_->lock, this->name() + ":lock")) {}
  RLock lock_;
};

// A single T without a lock.
template <class T>
class RawValue : public detail::Cells<T, ObjectKind::value> {
  using Base = detail::Cells<T, ObjectKind::value>;

 public:
  static RawValue create(std::string_view name, const T& init = T{},
                         const SegmentOptions& options = {}) {
    return RawValue(Base::make_created(name, 1, init, options));
  }
  static RawValue open(std::string_view name, const SegmentOptions& options = {}) {
    return RawValue(Base::make_opened(name, options));
  }
  RawValue() = default;

  // Atomic (seq_cst) where atomic_ref<T> is lock-free, else a plain copy.
  [[nodiscard]] T get() const noexcept { return this->load_raw(0); }
  void set(const T& v) noexcept { this->store_raw(0, v); }

 private:
  explicit RawValue(Base b) : Base(std::move(b)) {}
};

// `size` elements of T with a lock. Indexes are checked: get/set out of
// range throw Errc::invalid_argument.
template <class T>
class Array : public detail::Cells<T, ObjectKind::array> {
  using Base = detail::Cells<T, ObjectKind::array>;

 public:
  static Array create(std::string_view name, std::size_t size, const T& init = T{},
                      const SegmentOptions& options = {}) {
    return Array(Base::make_created(name, size, init, options));
  }
  static Array open(std::string_view name, const SegmentOptions& options = {}) {
    return Array(Base::make_opened(name, options));
  }
  Array() = default;

  [[nodiscard]] RLock& get_lock() noexcept { return lock_; }

  [[nodiscard]] T get(std::size_t i) {
    check(i);
    if constexpr (detail::kAtomicCells<T>) {
      return this->load_raw(i);
    } else {
      std::scoped_lock g(lock_);
      return this->load_raw(i);
    }
  }
  void set(std::size_t i, const T& v) {
    check(i);
    if constexpr (detail::kAtomicCells<T>) {
      this->store_raw(i, v);
    } else {
      std::scoped_lock g(lock_);
      this->store_raw(i, v);
    }
  }
  T fetch_add(std::size_t i, T d) requires(detail::kAtomicCells<T>&& std::is_arithmetic_v<T>) {
    check(i);
    // [value.cell] seq_cst RMW.
    return std::atomic_ref<T>(this->data_[i]).fetch_add(d, std::memory_order_seq_cst);
  }

 private:
  explicit Array(Base b)
      : Base(std::move(b)), lock_(RLock::view(&this->header_->lock, this->name() + ":lock")) {}
  void check(std::size_t i) const {
    if (i >= this->count_) {
      throw Error(Errc::invalid_argument, this->name(), "array index out of range");
    }
  }
  RLock lock_;
};

// `size` elements of T without a lock.
template <class T>
class RawArray : public detail::Cells<T, ObjectKind::array> {
  using Base = detail::Cells<T, ObjectKind::array>;

 public:
  static RawArray create(std::string_view name, std::size_t size, const T& init = T{},
                         const SegmentOptions& options = {}) {
    return RawArray(Base::make_created(name, size, init, options));
  }
  static RawArray open(std::string_view name, const SegmentOptions& options = {}) {
    return RawArray(Base::make_opened(name, options));
  }
  RawArray() = default;

  [[nodiscard]] T get(std::size_t i) const {
    check(i);
    return this->load_raw(i);
  }
  void set(std::size_t i, const T& v) {
    check(i);
    this->store_raw(i, v);
  }

 private:
  explicit RawArray(Base b) : Base(std::move(b)) {}
  void check(std::size_t i) const {
    if (i >= this->count_) {
      throw Error(Errc::invalid_argument, this->name(), "array index out of range");
    }
  }
};

}  // namespace shmbus
