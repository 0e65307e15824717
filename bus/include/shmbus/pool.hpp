// shmbus::Pool — multiprocessing.Pool: forked worker processes that run
// functions on arguments and send the results back.
//
//   int square(int x) { return x * x; }
//
//   shmbus::Pool pool({.processes = 4});
//   std::vector<int> squares = pool.map(square, std::vector{1, 2, 3});  // {1, 4, 9}
//   shmbus::AsyncResult<int> r = pool.apply_async(square, 7);
//   int y = r.get();                                                     // 49
//   int z = pool.apply_async(square, 8).get(5s);  // Error(timed_out) if not done by then
//   for (int v : pool.imap_unordered(square, xs)) use(v);                // as they finish
//   int k = 3;                                                           // state: a capture
//   auto scaled = pool.map([k](int x) { return k * x; }, xs);
//   std::vector<std::string> words{"a", "bc"};                           // strings, containers
//   std::vector<std::size_t> sizes =
//       pool.map([](const std::string& s) { return s.size(); }, words);
//   pool.close();
//   pool.join();
//
// What travels. Workers are forked copies of this program, forked when the
// pool starts (or replaces one): they see this program's memory as it was
// then, so anything a task needs that was made later must travel with it,
// as Python pickles a task:
//   - a plain function or a captureless lambda: by its address (Python
//     pickles a function by its name);
//   - a lambda that captures by copy, or any trivially copyable function
//     object: its bytes, sent with each chunk. Capture values (numbers,
//     arrays, trivially copyable structs), never references or pointers:
//     those would point into the worker's own memory;
//   - a function object with MSGPACK_DEFINE (strings, containers in it):
//     its fields, through the codec (Python pickles the instance);
//   - shmbus::partial(f, values...): f by address, the bound values through
//     the codec (Python's functools.partial).
// A std::function, a generic lambda or a lambda capturing a std::string
// does not compile (one static_assert says what to use instead).
// Arguments and results: any type the codec carries (shmbus/codec.hpp:
// strings, std containers, MSGPACK_DEFINE structs...). When every argument
// (and the result) is trivially copyable they are copied as bytes into the
// task and result messages, as before the codec; otherwise each item is
// one codec message. Every task carries a check keyed by a random number
// the pool's processes hold in private memory only: a worker calls nothing
// this pool did not send. `initializer` (any callable) runs in each worker
// before its first task.
//
// How. Each worker has its own anonymous duplex Pipe (tasks in, results
// out). Work is cut into chunks (map's `chunksize`; by default a call's
// items make about four chunks per worker, as in Python, and a chunk's
// arguments and results each fit in one frame of the pipe). A chunk goes
// to the worker with the fewest unanswered chunks as soon as its pipe has
// room, so work proceeds while the caller does something else; results
// are collected whenever the caller is inside the pool (get, wait, map,
// next, join), and a caller waiting for them sleeps on one futex that the
// workers ring.
//
// Failures. A task that throws fails its chunk, and get(), map() or the
// iterator's next() throws what it threw, rebuilt in the caller: a
// standard exception (std::runtime_error, logic_error, invalid_argument,
// out_of_range, ...) as the same type with the same what(), a
// shmbus::Error with its code, object and reason (a Service's ServerGone
// and CallTimedOut as themselves, maybe_executed() kept), a type given to
// register_exception<E>() as an E, and any other as RemoteError
// (Error(task_failed)) naming the worker, the item, the type (demangled)
// and its what(). A worker that dies (a crash, SIGKILL) fails the chunk it
// was running with Error(peer_dead) naming its pid and how it ended; chunks
// queued behind it go to other workers, and a new worker takes its place.
// More than twice `processes` workers in a row that end on their own
// before finishing a chunk (an initializer that throws or crashes; SIGKILL
// does not count) break the pool: what is left fails with Error(peer_dead)
// and submitting throws. Workers are daemons: they die with the parent.
//
// Lifetime. close() takes no more work; join() (after close() or
// terminate()) waits for all submitted work, then for the workers to exit.
// terminate() kills the workers at once and fails unfinished results with
// Error(closed); the destructor terminates, as leaving Python's `with
// Pool()` does. Results and iterators keep what they need alive.
//
// Threads and forks: a Pool and its results are used by one thread at a
// time; the workers are forked from the calling thread (see process.hpp).
// A pool belongs to the process that made it: in a forked copy (one of its
// workers, or any child) every call throws Error(invalid_argument), except
// terminate() and the destructor, which leave the workers alone there.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "shmbus/detail/pool_function.hpp"
#include "shmbus/error.hpp"
#include "shmbus/topology.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// A task's exception that the caller's process cannot rebuild as its own
// type (neither a standard exception nor one given to
// register_exception()): Error(task_failed) naming the worker and the
// item, with the original type's name (demangled) and what().
class RemoteError : public Error {
 public:
  RemoteError(std::string worker, std::size_t item, std::string type, std::string what);
  // "MyError", "int", "my::ns::Failure".
  [[nodiscard]] const std::string& type_name() const noexcept { return type_; }
  // The original what() ("" for a type not derived from std::exception).
  [[nodiscard]] const std::string& remote_what() const noexcept { return what_; }
  // The job's index of the item that threw (map: the item's position).
  [[nodiscard]] std::size_t item() const noexcept { return item_; }

 private:
  std::string type_;
  std::string what_;
  std::size_t item_;
};

namespace detail {
using PoolExceptionMaker = std::exception_ptr (*)(const std::string& what);
void pool_register_exception(const std::type_info& type, PoolExceptionMaker make);
}  // namespace detail

// Makes an exception of exactly type E thrown by a task come back to the
// caller as an E made from its what() (as Python re-raises a task's
// exception). The standard ones are registered already: std::exception,
// logic_error, invalid_argument, domain_error, length_error, out_of_range,
// runtime_error, range_error, overflow_error, underflow_error, bad_alloc;
// shmbus::Error comes back with its code, object and reason. Call it in
// the process that makes the pool (any time before the failure is read).
template <class E>
void register_exception() {
  static_assert(std::is_base_of_v<std::exception, E> && std::is_constructible_v<E, std::string>,
                "shmbus::register_exception<E>: E derives from std::exception and is "
                "constructible from its what() (a std::string)");
  detail::pool_register_exception(
      typeid(E), [](const std::string& what) { return std::make_exception_ptr(E(what)); });
}

struct PoolOptions {
  unsigned processes = 0;               // 0: one per cpu of `cpus`
  std::function<void()> initializer{};  // runs in each worker before its first task
  unsigned maxtasksperchild = 0;        // chunks a worker runs before a fresh one replaces it
  CpuList cpus{};                       // empty: those the calling thread may run on
  bool pin = false;                     // worker i runs only on cpus[i % cpus.size()]
  std::size_t pipe_capacity = std::size_t{256} << 10;  // bytes per direction, a power of two
};

// The result of apply_async / map_async / starmap_async (Python's AsyncResult).
template <class T>
class AsyncResult {
 public:
  // Waits, then returns the value or throws the first failure (what the
  // task threw: see the file comment).
  T get() {
    wait();
    if (job_->first_failure) std::rethrow_exception(job_->first_failure);
    return value_of(*job_);
  }
  // Python's get(timeout): waits at most `timeout`, then throws
  // Error(timed_out) (Python: multiprocessing.TimeoutError); the call goes
  // on and a later get() returns its value.
  T get(Clock::duration timeout) {
    if (!wait_for(timeout)) throw Error(Errc::timed_out, "AsyncResult", "get: not ready in time");
    return get();
  }
  // Python's callback= and error_callback=: `on_value(value)` (no argument
  // for void) or `on_error(e)` runs once the call is done, with the
  // failure as a `const std::exception&` or a std::exception_ptr. The
  // pool has no thread of its own: callbacks run in the calling thread
  // during a later call into the pool (get, wait, map, next, join...), as
  // results are collected, or here if the call is done already. What a
  // callback throws leaves that pool call. The result may be dropped after.
  template <class OnValue, class OnError = std::nullptr_t>
  AsyncResult& then(OnValue on_value, OnError on_error = nullptr) {
    detail::PoolJob* job = job_.get();  // the job owns this function: no cycle
    job_->on_done = [job, v = std::move(on_value), e = std::move(on_error)]() mutable {
      if (job->first_failure) {
        if constexpr (std::is_invocable_v<OnError&, std::exception_ptr>) {
          e(job->first_failure);
        } else if constexpr (!std::is_null_pointer_v<OnError>) {
          static_assert(std::is_invocable_v<OnError&, const std::exception&>,
                        "shmbus::AsyncResult::then: on_error takes const std::exception& or "
                        "std::exception_ptr (a task's exception comes back as its own type)");
          try {
            std::rethrow_exception(job->first_failure);
          } catch (const std::exception& failure) {
            e(failure);
          }
        }
      } else if constexpr (std::is_void_v<T>) {
        v();
      } else {
        v(value_of(*job));
      }
    };
    if (job_->done()) detail::pool_report(*job_);
    return *this;
  }
  void wait() { (void)wait_until(nullptr); }
  [[nodiscard]] bool wait_for(Clock::duration timeout) {
    const auto deadline = detail::deadline_after(timeout);
    return wait_until(&deadline);
  }
  [[nodiscard]] bool wait_until(Clock::time_point deadline) { return wait_until(&deadline); }
  // Done, with a value or a failure; collects what has arrived, never waits.
  [[nodiscard]] bool ready() {
    const auto now = Clock::now();
    return wait_until(&now);
  }
  // Throws Error(invalid_argument) when not ready (Python: ValueError).
  [[nodiscard]] bool successful() {
    if (!ready()) throw Error(Errc::invalid_argument, "AsyncResult", "not ready");
    return !job_->first_failure;
  }

 private:
  friend class Pool;
  AsyncResult(std::shared_ptr<detail::PoolCore> core, std::shared_ptr<detail::PoolJob> job)
      : core_(std::move(core)), job_(std::move(job)) {}
  static T value_of(const detail::PoolJob& job) {
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (detail::is_vector<T>) {
      if (job.list) return detail::job_values<typename T::value_type>(job);
      return detail::job_value<T>(job, 0);
    } else {
      return detail::job_value<T>(job, 0);
    }
  }
  bool wait_until(const Clock::time_point* deadline) {
    return detail::pool_wait(
        *core_, [this] { return job_->done(); }, deadline);
  }

  std::shared_ptr<detail::PoolCore> core_;
  std::shared_ptr<detail::PoolJob> job_;
};

// imap / imap_unordered: the results one at a time, in order or as they
// finish. A failed chunk throws once from next() and is skipped after.
template <class R>
class IMapIterator {
 public:
  // The next result, waiting for it; nullopt after the last.
  std::optional<R> next() { return next_until(nullptr); }
  // Python's next(timeout): waits at most `timeout`, then throws
  // Error(timed_out) (Python: multiprocessing.TimeoutError); the result
  // still comes with a later call.
  std::optional<R> next(Clock::duration timeout) {
    const Clock::time_point deadline = detail::deadline_after(timeout);
    return next_until(&deadline);
  }

  // For range-for: for (R v : pool.imap(f, xs)).
  struct Sentinel {};
  class Iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    R operator*() const { return *value_; }
    Iterator& operator++() {
      value_ = owner_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(Sentinel) const { return !value_; }

   private:
    friend class IMapIterator;
    explicit Iterator(IMapIterator* owner) : owner_(owner), value_(owner->next()) {}
    IMapIterator* owner_;
    std::optional<R> value_;
  };
  Iterator begin() { return Iterator(this); }
  Sentinel end() { return {}; }

 private:
  friend class Pool;
  IMapIterator(std::shared_ptr<detail::PoolCore> core, std::shared_ptr<detail::PoolJob> job,
               bool unordered)
      : core_(std::move(core)), job_(std::move(job)), unordered_(unordered) {}

  std::optional<R> next_until(const Clock::time_point* deadline) {
    if (unordered_) return next_unordered(deadline);
    if (next_ >= job_->items) return std::nullopt;
    if (!detail::pool_wait(
            *core_, [this] { return job_->state[next_] != detail::PoolJob::kWaiting; }, deadline))
      throw Error(Errc::timed_out, "imap", "next: no result within the timeout");
    if (job_->state[next_] == detail::PoolJob::kFailed) throw_failure_at(next_);
    return detail::job_value<R>(*job_, next_++);
  }
  std::optional<R> next_unordered(const Clock::time_point* deadline) {
    if (taken_ == job_->items) return std::nullopt;
    if (!detail::pool_wait(
            *core_, [this] { return !job_->arrivals.empty(); }, deadline))
      throw Error(Errc::timed_out, "imap_unordered", "next: no result within the timeout");
    const std::size_t i = job_->arrivals.front();
    job_->arrivals.pop_front();
    if (job_->state[i] == detail::PoolJob::kFailed) throw_failure_at(i);
    ++taken_;
    return detail::job_value<R>(*job_, i);
  }
  [[noreturn]] void throw_failure_at(std::size_t item) {
    auto it = std::prev(job_->failures.upper_bound(item));
    const auto& [count, error] = it->second;
    next_ = it->first + count;  // ordered: skip the failed chunk
    taken_ += count;            // unordered: it will never arrive
    std::rethrow_exception(error);
  }

  std::shared_ptr<detail::PoolCore> core_;
  std::shared_ptr<detail::PoolJob> job_;
  bool unordered_;
  std::size_t next_ = 0;   // ordered: the next item to return
  std::size_t taken_ = 0;  // unordered: items returned or skipped
};

class Pool {
 public:
  // Starts the workers; throws Error(invalid_argument) for bad options and
  // Error(system) when a worker cannot be started.
  explicit Pool(PoolOptions options = {});
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) noexcept;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();  // terminate()

  // f(args...) in a worker. Submitting to a closed pool throws Error(closed);
  // one item's arguments (with the callable's state) too large for one
  // frame of the pipe throw Error(too_large). Results of any size come back.
  template <class F, class... A>
  auto apply_async(F f, A&&... args) {
    using Fn = detail::PoolFunctionOf<F>;
    std::vector<std::byte> packed;
    Fn::pack(packed, std::forward<A>(args)...);
    return AsyncResult<typename Fn::Result>(
        core_, detail::pool_submit(*core_, Fn::call(f), std::move(packed), 1, 1));
  }
  template <class F, class... A>
  auto apply(F f, A&&... args) {
    return apply_async(f, std::forward<A>(args)...).get();
  }

  // f(item) for every item, results in order. chunksize 0: about four
  // chunks per worker.
  template <class F, std::ranges::input_range Range>
  auto map_async(F f, Range&& items, std::size_t chunksize = 0) {
    return submit_list(f, items, chunksize, [](std::vector<std::byte>& out, auto&& item) {
      detail::PoolFunctionOf<F>::pack(out, std::forward<decltype(item)>(item));
    });
  }
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& items, std::size_t chunksize = 0) {
    return map_async(f, std::forward<Range>(items), chunksize).get();
  }

  // f(a, b, ...) for every tuple-like item (std::tuple, std::pair, std::array).
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F f, Range&& items, std::size_t chunksize = 0) {
    return submit_list(f, items, chunksize, [](std::vector<std::byte>& out, auto&& item) {
      std::apply(
          [&out](auto&&... a) {
            detail::PoolFunctionOf<F>::pack(out, std::forward<decltype(a)>(a)...);
          },
          std::forward<decltype(item)>(item));
    });
  }
  template <class F, std::ranges::input_range Range>
  auto starmap(F f, Range&& items, std::size_t chunksize = 0) {
    return starmap_async(f, std::forward<Range>(items), chunksize).get();
  }

  // f(item) for every item, the results one at a time: in order (imap) or
  // as they finish (imap_unordered). The items are read at once.
  template <class F, std::ranges::input_range Range>
  auto imap(F f, Range&& items, std::size_t chunksize = 1) {
    return iterate(f, items, chunksize, false);
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F f, Range&& items, std::size_t chunksize = 1) {
    return iterate(f, items, chunksize, true);
  }

  void close();
  void terminate();
  // After close() or terminate() (else Error(invalid_argument)).
  void join();

  [[nodiscard]] unsigned processes() const noexcept;
  // The workers' pids now (a dead worker's replacement has a new one).
  [[nodiscard]] std::vector<pid_t> worker_pids() const;

 private:
  template <class F, class Range, class Pack>
  auto submit_list(F f, Range& items, std::size_t chunksize, Pack pack) {
    using Fn = detail::PoolFunctionOf<F>;
    std::vector<std::byte> packed;
    if constexpr (Fn::kRawArgs && std::ranges::sized_range<Range>)
      packed.reserve(std::ranges::size(items) * Fn::kArgSize);
    std::size_t n = 0;
    for (auto&& item : items) {
      pack(packed, std::forward<decltype(item)>(item));
      ++n;
    }
    auto job = detail::pool_submit(*core_, Fn::call(f), std::move(packed), n, chunksize);
    job->list = true;
    using R = typename Fn::Result;
    using T = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    return AsyncResult<T>(core_, std::move(job));
  }
  template <class F, class Range>
  auto iterate(F f, Range& items, std::size_t chunksize, bool unordered) {
    using R = typename detail::PoolFunctionOf<F>::Result;
    static_assert(!std::is_void_v<R>, "shmbus::Pool: imap of a function returning void");
    auto result = submit_list(f, items, chunksize, [](std::vector<std::byte>& out, auto&& item) {
      detail::PoolFunctionOf<F>::pack(out, std::forward<decltype(item)>(item));
    });
    return IMapIterator<R>(std::move(result.core_), std::move(result.job_), unordered);
  }

  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace shmbus
