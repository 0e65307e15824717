// Internals of shmbus::Pool (pool.hpp): what a submitted call becomes
// (PoolJob), how a function and its arguments travel to a worker
// (PoolFunction: a function pointer, packed trivially copyable arguments, an
// invoker that unpacks them there), and the two calls the templates make
// into the pool (pool_submit, pool_wait).
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmbus/error.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {
namespace detail {

// What a submitted call made of: per item its state, its result bytes, and
// the failed chunks. Owned by the pool's collector and the caller's handle.
struct PoolJob {
  std::size_t items = 0;
  std::size_t result_size = 0;
  std::size_t chunks_left = 0;       // chunks neither answered nor failed
  std::vector<std::byte> results;    // items * result_size
  std::vector<std::uint8_t> state;   // per item: kWaiting, kArrived, kFailed
  std::deque<std::size_t> arrivals;  // arrived items, and failed chunks' first items, in order
  std::map<std::size_t, std::pair<std::size_t, Error>> failures;  // first item -> count, error
  std::optional<Error> first_failure;
  std::function<void()> on_done;  // AsyncResult::then(): run once, when done()
  bool reported = false;          // on_done has run (or been queued to)

  static constexpr std::uint8_t kWaiting = 0, kArrived = 1, kFailed = 2;
  [[nodiscard]] bool finished() const noexcept { return chunks_left == 0; }
  [[nodiscard]] bool done() const noexcept { return first_failure || finished(); }
};

// Runs one item in a worker: unpacks the arguments, calls, packs the result.
using PoolInvoker = void (*)(std::uintptr_t fn, const std::byte* args, std::byte* result);

struct PoolCall {
  std::uintptr_t fn = 0;
  PoolInvoker invoker = nullptr;
  std::size_t arg_size = 0;     // one item's packed arguments
  std::size_t result_size = 0;  // one item's result (0 for void)
};

class PoolCore;
[[nodiscard]] std::shared_ptr<PoolJob> pool_submit(PoolCore& core, const PoolCall& call,
                                                   std::vector<std::byte> args, std::size_t items,
                                                   std::size_t chunksize);
// Runs `job`'s on_done now, once (a job that was done before then()).
inline void pool_report(PoolJob& job) {
  if (job.reported || !job.on_done) return;
  job.reported = true;
  job.on_done();
}
// Collects results until ready() or the deadline (nullptr: none).
bool pool_wait(PoolCore& core, const std::function<bool()>& ready,
               const Clock::time_point* deadline);

template <class T>
T load(const std::byte* p) noexcept {
  std::array<std::byte, sizeof(T)> raw;
  std::memcpy(raw.data(), p, sizeof(T));
  return std::bit_cast<T>(raw);
}

template <class... A>
constexpr std::array<std::size_t, sizeof...(A)> packed_offsets() {
  std::array<std::size_t, sizeof...(A)> at{};
  std::size_t next = 0, i = 0;
  ((at[i++] = next, next += sizeof(A)), ...);
  return at;
}

template <class F>
struct PoolFunction;

template <class R, class... Args>
struct PoolFunction<R (*)(Args...)> {
  using Result = R;
  static_assert(std::is_void_v<R> || std::is_trivially_copyable_v<R>,
                "shmbus::Pool: a result is copied between processes: make it trivially copyable");
  static_assert((std::is_trivially_copyable_v<std::decay_t<Args>> && ...),
                "shmbus::Pool: arguments are copied between processes: make them trivially "
                "copyable");
  static constexpr auto kAt = packed_offsets<std::decay_t<Args>...>();
  static constexpr std::size_t kArgSize = (std::size_t{0} + ... + sizeof(std::decay_t<Args>));
  static constexpr std::size_t kResultSize = [] {
    if constexpr (std::is_void_v<R>) {
      return std::size_t{0};
    } else {
      return sizeof(R);
    }
  }();

  template <class... In>
  static void pack(std::byte* out, In&&... in) {
    static_assert(sizeof...(In) == sizeof...(Args), "shmbus::Pool: wrong number of arguments");
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (store<std::decay_t<Args>>(out + kAt[I], std::forward<In>(in)), ...);
    }
    (std::index_sequence_for<Args...>{});
  }

  static void invoke(std::uintptr_t fn, const std::byte* in, std::byte* out) {
    auto* f = reinterpret_cast<R (*)(Args...)>(fn);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      if constexpr (std::is_void_v<R>) {
        f(load<std::decay_t<Args>>(in + kAt[I])...);
      } else {
        const R r = f(load<std::decay_t<Args>>(in + kAt[I])...);
        std::memcpy(out, &r, sizeof r);
      }
    }
    (std::index_sequence_for<Args...>{});
  }

  static PoolCall call(R (*f)(Args...)) {
    return {reinterpret_cast<std::uintptr_t>(f), &invoke, kArgSize, kResultSize};
  }

 private:
  template <class T, class In>
  static void store(std::byte* p, In&& v) {
    const T t(std::forward<In>(v));
    std::memcpy(p, &t, sizeof t);
  }
};

// The function pointer a plain function or captureless lambda decays to.
template <class F>
using PoolFunctionOf = PoolFunction<decltype(+std::declval<F>())>;

template <class F>
concept PoolRunnable = requires(F f) {
  {+f};
  requires std::is_function_v<std::remove_pointer_t<decltype(+f)>>;
};

template <class T>
inline constexpr bool is_vector = false;
template <class T>
inline constexpr bool is_vector<std::vector<T>> = true;

// The results of a job, read out of its bytes.
template <class R>
std::vector<R> job_values(const PoolJob& job) {
  std::vector<R> out;
  out.reserve(job.items);
  for (std::size_t i = 0; i < job.items; ++i) out.push_back(load<R>(&job.results[i * sizeof(R)]));
  return out;
}

}  // namespace detail

}  // namespace shmbus
