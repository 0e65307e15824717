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
// A process killed holding the lock: whichever call takes the lock over
// next (get(), set(), view(), or get_lock() by any form, std::scoped_lock
// included) repairs it, and the object stays usable. A value that is not
// lock-free may then be torn (part old, part new) if the process died
// writing it (inside set(), a[i] = ..., or holding a View); that is
// reported, never returned: until the value is written whole again, get()
// of it (and view()) throws Error(Errc::peer_dead, "... a process died
// writing it ..."), and torn() says so. Value::set() and Array::set(i)
// write whole (set(i) clears element i's report; a View's covers every
// element); clear_torn() accepts the bytes as they are, e.g.
//
//   struct Quote { double bid, ask, last, size; };   // not lock-free
//   shmbus::Value<Quote> quote{Quote{1, 2, 1.5, 10}};
//   if (quote.torn()) {      // a writer died: look at the bytes, then decide
//     std::scoped_lock g(quote.get_lock());
//     quote.clear_torn();    // get() returns the bytes as they are now
//     if (const Quote q = quote.get(); !(q.bid <= q.ask)) quote.set(Quote{});
//   }
//
// (under get_lock() nobody writes between clear_torn() and the check; a
// lock that is not recoverable also throws peer_dead, from every call, so
// test torn(), not the error code, to tell the two apart). Two writers
// that die writing different elements of an Array before either is
// rewritten report every element, as a View does.
//
// Why an exception: Python has no equivalent (its Value can be torn and
// says nothing); a result type would change get()'s signature for every
// T, while a throw reaches code that never thought of it, is already what
// a not-recoverable lock does, and clears with the ordinary write. The
// lock of a dead holder that was not writing (holding get_lock() between
// set()s) is repaired with no report: nothing can be torn. Lock-free T
// (atomic cells) are never torn and pay nothing; the others pay two plain
// stores and two loads per write ([cells.writing], the cache line of the
// element count) and one load per read, all under the lock they already take.
// Raw* objects have no lock and report nothing. acquire() of get_lock()
// still returns LockResult::owner_died to the process that took it over,
// for code whose own invariants span several cells (lock.hpp); the lock is
// already consistent then, so get_lock().owner_died() reads false and
// make_consistent() has nothing left to do.
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
#include <utility>
#include <vector>

#include "shmbus/detail/fault.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/detail/sync_state.hpp"
#include "shmbus/error.hpp"
#include "shmbus/lock.hpp"

namespace shmbus {
namespace detail {

template <class T>
inline constexpr bool kAtomicCells =
    std::atomic_ref<T>::is_always_lock_free&& std::is_trivially_copyable_v<T>;

// Holds a Value's or Array's lock for get()/set(): acquire() (a takeover
// from a dead holder repairs itself, lock.hpp), throws Errc::peer_dead for
// a lock already not recoverable, and releases without re-checking the
// owner (this thread took it) and without throwing.
class CellsGuard {
 public:
  explicit CellsGuard(RLock& lock) : lock_(lock) {
    if (!holds(lock.acquire())) lock.lock();  // not recoverable: lock() throws
  }
  CellsGuard(const CellsGuard&) = delete;
  CellsGuard& operator=(const CellsGuard&) = delete;
  ~CellsGuard() { lock_.release_held_(); }

 private:
  RLock& lock_;
};

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

  // [cells.writing] Under the lock, before the bytes of `what` (i + 1 for
  // element i, kCellsAll for all) are written; returns the mark to put
  // back after (a View may be open around a set() of the same thread).
  // Only a process that takes the lock over from this one, dead, reads the
  // mark; live readers hold the lock, whose [mutex.word] release/acquire
  // orders all of it. What must hold is this process's own program order,
  // for it may die at any instruction: the compiler barrier keeps the mark
  // before the bytes (and the bytes before the clear in end_write()); the
  // stores themselves are drained by the time another process can see
  // this one dead (the kernel has stopped it). On x86 and ARM alike this
  // costs the two plain stores and no fence instruction.
  std::uint64_t begin_write(std::uint64_t what) noexcept {
    // relaxed (both): under the lock, see above.
    const std::uint64_t prev = header_->writing.load(std::memory_order_relaxed);
    header_->writing.store(prev == 0 || prev == what ? what : kCellsAll, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    fault_point(FaultPoint::cells_writing);
    return prev;
  }
  // [cells.writing] The bytes of `what` are whole: a torn report of just
  // them is cleared, and the mark goes back to `prev`.
  void end_write(std::uint64_t what, std::uint64_t prev) noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    // relaxed (all): under the lock.
    // A write of the only element covers any report, a corrupted one too.
    const std::uint64_t t = header_->torn.load(std::memory_order_relaxed);
    if (t != 0 && (t == what || count_ == 1)) {
      header_->torn.store(0, std::memory_order_relaxed);
    }
    header_->writing.store(prev, std::memory_order_relaxed);
  }
  // [cells.writing] A View opens: counted among the holder's open Views
  // (`outermost`: this View's acquire took the lock, so none is open; a
  // count left by a corrupted header is not carried over), and marks
  // `what`. Views may end in any order, so none puts back a mark: the
  // last to end clears it (no write is under way around a View: set()
  // runs to completion in between).
  void begin_view(std::uint64_t what, bool outermost) noexcept {
    // relaxed: under the lock, as begin_write().
    const std::uint64_t open = outermost ? 0 : header_->views.load(std::memory_order_relaxed);
    header_->views.store(open + 1, std::memory_order_relaxed);
    (void)begin_write(what);
  }
  void end_view(std::uint64_t what) noexcept {
    // relaxed: under the lock.
    const std::uint64_t open = header_->views.load(std::memory_order_relaxed);
    const std::uint64_t left = open == 0 ? 0 : open - 1;
    header_->views.store(left, std::memory_order_relaxed);
    end_write(what, left == 0 ? 0 : what);
  }
  // Under the lock: whether element i (kCellsAll: any) may be torn. A torn
  // field that names no element (corrupted) counts as all of them.
  [[nodiscard]] bool torn_at(std::uint64_t i) const noexcept {
    // relaxed: under the lock ([mutex.word] orders it).
    const std::uint64_t t = header_->torn.load(std::memory_order_relaxed);
    return t != 0 && (i == kCellsAll || t == i + 1 || t > count_);
  }
  [[noreturn]] void throw_torn() const {
    throw Error(Errc::peer_dead, segment_.name(),
                "a process died writing it, so it may be torn (part old, part new): write it "
                "whole or clear_torn()");
  }
  // Value/Array: torn() and clear_torn() under `lock`.
  [[nodiscard]] bool torn_under(RLock& lock) {
    if constexpr (kAtomicCells<T>) {
      return false;
    } else {
      CellsGuard g(lock);
      return torn_at(kCellsAll);
    }
  }
  void clear_torn_under(RLock& lock) {
    if constexpr (!kAtomicCells<T>) {
      CellsGuard g(lock);
      // relaxed: under the lock.
      header_->torn.store(0, std::memory_order_relaxed);
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
      detail::CellsGuard g(lock_);
      if (this->torn_at(0)) this->throw_torn();
      return this->load_raw(0);
    }
  }
  void set(const T& v) noexcept(detail::kAtomicCells<T>) {
    if constexpr (detail::kAtomicCells<T>) {
      this->store_raw(0, v);
    } else {
      detail::CellsGuard g(lock_);
      const std::uint64_t prev = this->begin_write(1);
      this->store_raw(0, v);
      this->end_write(1, prev);
    }
  }
  // Whether a process died inside set() (its value may be torn) and
  // nothing has set() or clear_torn()ed it since; get() then throws. Always
  // false where atomic_ref<T> is lock-free. Takes the lock.
  [[nodiscard]] bool torn() { return this->torn_under(lock_); }
  // Accepts the value as it is (after checking it under get_lock()).
  void clear_torn() { this->clear_torn_under(lock_); }
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
      : Base(std::move(b)),
        lock_(RLock::view(&this->header_->lock, this->name() + ":lock", this->header_)) {}
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
  // View lives (Python's `with a.get_lock(): a[:]`). Throws as get() does
  // while any element may be torn. For a T that is not lock-free, a process
  // that dies holding a View leaves every element possibly torn (a View
  // may write anywhere; a count of one: the element).
  class View : public std::span<T> {
   public:
    explicit View(Array& array) : std::span<T>(array.data_, array.count_) {
      std::unique_lock g(array.lock_);
      if constexpr (!detail::kAtomicCells<T>) {
        if (array.torn_at(detail::kCellsAll)) array.throw_torn();
        what_ = array.count_ == 1 ? 1 : detail::kCellsAll;
        array.begin_view(what_, array.lock_.depth() == 1);
      }
      array_ = &array;
      g.release();
    }
    View(View&& o) noexcept
        : std::span<T>(o), array_(std::exchange(o.array_, nullptr)), what_(o.what_) {}
    View& operator=(View&&) = delete;
    // Never throws: a View destroyed by a thread (or forked child) that
    // does not hold the lock leaves it alone.
    ~View() {
      if (array_ == nullptr || !array_->lock_.is_owned()) return;
      if constexpr (!detail::kAtomicCells<T>) array_->end_view(what_);
      array_->lock_.release_owned_();
    }

   private:
    Array* array_ = nullptr;
    std::uint64_t what_ = 0;
  };
  [[nodiscard]] View view() { return View(*this); }

  [[nodiscard]] T get(std::size_t i) {
    check(i);
    if constexpr (detail::kAtomicCells<T>) {
      return this->load_raw(i);
    } else {
      detail::CellsGuard g(lock_);
      if (this->torn_at(i)) this->throw_torn();
      return this->load_raw(i);
    }
  }
  void set(std::size_t i, const T& v) {
    check(i);
    if constexpr (detail::kAtomicCells<T>) {
      this->store_raw(i, v);
    } else {
      detail::CellsGuard g(lock_);
      const std::uint64_t prev = this->begin_write(i + 1);
      this->store_raw(i, v);
      this->end_write(i + 1, prev);
    }
  }
  // Whether a process died writing an element (inside set(i), a[i] = ...,
  // or holding a View) and it has not been written whole or clear_torn()ed
  // since; get() of such an element, and view(), then throw. set(i) clears
  // the report of element i; a report of every element (a View's) only
  // clear_torn() clears. Always false where atomic_ref<T> is lock-free.
  [[nodiscard]] bool torn() { return this->torn_under(lock_); }
  void clear_torn() { this->clear_torn_under(lock_); }
  T fetch_add(std::size_t i, T d) requires(detail::kAtomicCells<T>&& std::is_arithmetic_v<T>) {
    check(i);
    // [value.cell] seq_cst RMW.
    return std::atomic_ref<T>(this->data_[i]).fetch_add(d, std::memory_order_seq_cst);
  }

 private:
  explicit Array(Base b)
      : Base(std::move(b)),
        lock_(RLock::view(&this->header_->lock, this->name() + ":lock", this->header_)) {}
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
