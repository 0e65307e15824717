// Value<T>, Array<T>, RawValue<T>, RawArray<T> — trivially copyable data in
// its own segment, after Python's multiprocessing.Value / Array (with a
// lock) and RawValue / RawArray (without).
//
//   shmbus::Value<long> hits{0};       // anonymous, as Value('l', 0)
//   { std::scoped_lock g(hits.get_lock()); hits.set(hits.get() + 1); }
//   hits.fetch_add(1);                 // atomic, where atomic_ref<T> is lock-free
//   shmbus::Array<int> a{1, 2, 3};     // anonymous, as Array('i', [1, 2, 3])
//   a[0] = a[1] + a[2];
//   for (int x : a) std::printf("%d\n", x);
//   { auto v = a.view(); std::ranges::sort(v); }   // a std::span under the lock
//   auto xs = shmbus::Array<double>::create("xs", 16);   // named
//
// Anonymous objects (constructed without a name) live in unnamed memory
// that fork()ed children share; nothing appears in /dev/shm. Array<int>
// a{3} is one element, 3 (an initializer list, as std::vector); Array<int>
// a(3) is three zeros.
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
// A process killed holding the lock (inside set(), or holding get_lock())
// leaves the bytes as they were at its death, as with a Raw* object: a
// value that is not lock-free may be torn (part old, part new), and
// nothing reports it. The next get(), set() or view() takes the lock over
// (make_consistent) and the object stays usable. Only the process whose
// own acquire() takes the lock over first sees LockResult::owner_died;
// a get_lock() taken with lock() (std::scoped_lock) takes it over without
// repairing it, and its unlock leaves it not recoverable (every later
// call: Errc::peer_dead; README Known gaps).
//
// Memory ordering: everything written before set() (or before releasing
// get_lock()) is visible to a process whose get() reads that value (or
// that acquires get_lock() afterwards).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/error.hpp"
#include "shmbus/lock.hpp"

namespace shmbus {
namespace detail {

template <class T>
inline constexpr bool kAtomicCells =
    std::atomic_ref<T>::is_always_lock_free&& std::is_trivially_copyable_v<T>;

// The lock of get()/set() and view(): a holder that died inside them (or
// holding get_lock()) is taken over, not left for the unlock to make the
// lock not recoverable for every later call: the cells are all the state
// there is, as the dead holder left them. lock() throws Errc::peer_dead
// for a lock already not recoverable.
inline void lock_cells(RLock& lock) {
  const LockResult r = lock.acquire();
  if (r == LockResult::owner_died) {
    lock.make_consistent();
  } else if (!holds(r)) {
    lock.lock();
  }
}

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
  // `values` (count of them) or, when null, `count` copies of `init`.
  static Cells make_created(SegmentName name, std::size_t count, const T& init,
                            const SegmentOptions& options, const T* values = nullptr) {
    if (count == 0 || count > (std::size_t{1} << 40) / sizeof(T)) {
      throw Error(Errc::invalid_argument, std::string(name.value_or("")),
                  "element count out of range");
    }
    auto seg = Segment::make(
        name, Kind, type_tag<T>(), kCellsOffset + count * sizeof(T),
        [&](std::span<std::byte> p) {
          auto* h = new (p.data()) CellsHeader{};
          h->count = count;
          h->elem_size = sizeof(T);
          for (std::size_t i = 0; i < count; ++i) {
            std::memcpy(p.data() + kCellsOffset + i * sizeof(T), values ? &values[i] : &init,
                        sizeof(T));
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

  // An anonymous value, as Python's Value(typecode, init): unnamed memory
  // that fork()ed children share.
  Value() : Value(T{}) {}
  explicit Value(const T& init) : Value(Base::make_created(std::nullopt, 1, init, {})) {}

  [[nodiscard]] RLock& get_lock() noexcept { return lock_; }

  [[nodiscard]] T get() noexcept(detail::kAtomicCells<T>) {
    if constexpr (detail::kAtomicCells<T>) {
      return this->load_raw(0);
    } else {
      detail::lock_cells(lock_);
      T v = this->load_raw(0);
      lock_.unlock();
      return v;
    }
  }
  void set(const T& v) noexcept(detail::kAtomicCells<T>) {
    if constexpr (detail::kAtomicCells<T>) {
      this->store_raw(0, v);
    } else {
      detail::lock_cells(lock_);
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
  // An anonymous raw value, as Python's RawValue(typecode, init).
  RawValue() : RawValue(T{}) {}
  explicit RawValue(const T& init) : RawValue(Base::make_created(std::nullopt, 1, init, {})) {}

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
  // Anonymous arrays, as Python's Array(typecode, size_or_initializer):
  // `size` copies of `init`, the listed values, or a copy of a range.
  explicit Array(std::size_t size, const T& init = T{})
      : Array(Base::make_created(std::nullopt, size, init, {})) {}
  Array(std::initializer_list<T> values)
      : Array(Base::make_created(std::nullopt, values.size(), T{}, {}, values.begin())) {}
  template <std::ranges::forward_range R>
  requires(!std::is_same_v<std::remove_cvref_t<R>, Array> &&
           std::is_convertible_v<std::ranges::range_reference_t<R>, T>) explicit Array(R&& values)
      : Array(from_range(values)) {}

  [[nodiscard]] RLock& get_lock() noexcept { return lock_; }

  // a[i] reads and writes element i as get()/set() do (checked).
  class Element {
   public:
    operator T() const { return array_->get(i_); }  // NOLINT: a reference's conversion
    Element& operator=(const T& v) {
      array_->set(i_, v);
      return *this;
    }
    Element& operator=(const Element& other) { return *this = static_cast<T>(other); }

   private:
    friend class Array;
    Element(Array* array, std::size_t i) : array_(array), i_(i) {}
    Array* array_;
    std::size_t i_;
  };
  [[nodiscard]] Element operator[](std::size_t i) { return Element(this, i); }
  [[nodiscard]] T operator[](std::size_t i) const { return const_cast<Array*>(this)->get(i); }

  // Iterates over the values, each read as get() reads it.
  class const_iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using iterator_category = std::forward_iterator_tag;
    const_iterator() = default;
    T operator*() const { return array_->get(i_); }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    const_iterator operator++(int) {
      auto old = *this;
      ++i_;
      return old;
    }
    bool operator==(const const_iterator& o) const { return i_ == o.i_; }

   private:
    friend class Array;
    const_iterator(Array* array, std::size_t i) : array_(array), i_(i) {}
    Array* array_ = nullptr;
    std::size_t i_ = 0;
  };
  [[nodiscard]] const_iterator begin() const { return {const_cast<Array*>(this), 0}; }
  [[nodiscard]] const_iterator end() const { return {const_cast<Array*>(this), this->count_}; }

  // The elements as a std::span, with the array's lock held while the
  // View lives (Python's `with a.get_lock(): a[:]`).
  class View : public std::span<T> {
   public:
    explicit View(Array& array)
        : std::span<T>(array.data_, array.count_),
          guard_((detail::lock_cells(array.lock_), array.lock_), std::adopt_lock) {}

   private:
    std::unique_lock<RLock> guard_;
  };
  [[nodiscard]] View view() { return View(*this); }

  [[nodiscard]] T get(std::size_t i) {
    check(i);
    if constexpr (detail::kAtomicCells<T>) {
      return this->load_raw(i);
    } else {
      detail::lock_cells(lock_);
      std::scoped_lock g(std::adopt_lock, lock_);
      return this->load_raw(i);
    }
  }
  void set(std::size_t i, const T& v) {
    check(i);
    if constexpr (detail::kAtomicCells<T>) {
      this->store_raw(i, v);
    } else {
      detail::lock_cells(lock_);
      std::scoped_lock g(std::adopt_lock, lock_);
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
  template <class R>
  static Base from_range(R& values) {
    std::vector<T> copy;
    for (auto&& v : values) copy.push_back(static_cast<T>(v));
    return Base::make_created(std::nullopt, copy.size(), T{}, {}, copy.data());
  }
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
  // An anonymous raw array, as Python's RawArray(typecode, size).
  explicit RawArray(std::size_t size, const T& init = T{})
      : RawArray(Base::make_created(std::nullopt, size, init, {})) {}
  RawArray(std::initializer_list<T> values)
      : RawArray(Base::make_created(std::nullopt, values.size(), T{}, {}, values.begin())) {}

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
