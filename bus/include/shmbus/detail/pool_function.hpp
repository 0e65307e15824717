// Internals of shmbus::Pool (pool.hpp): what a submitted call becomes
// (PoolJob), how a callable and its arguments travel to a worker
// (PoolFunction: the callable's address and state, each item's arguments,
// and an invoker that restores them there and runs a chunk), and the two
// calls the templates make into the pool (pool_submit, pool_wait).
//
// A callable is one of three kinds (PoolCallableTraits):
//   a function (plain, or a captureless lambda)   its address
//   a function object that is trivially copyable  its address (none) and its
//     (a lambda capturing values by copy), or      object: bytes, or one
//     that has MSGPACK_DEFINE                      msgpack value
//   shmbus::partial(f, bound...)                  f's address and the bound
//                                                  values through the codec
// Arguments and results whose types are all trivially copyable keep the
// fixed-size memcpy layout; any other go through the codec, one message
// (u32 length, then the bytes) per item.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmbus/codec.hpp"
#include "shmbus/error.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

template <class F, class... Bound>
class Partial;

namespace detail {

// An item size that says "variable: each item is a u32 length and a codec
// message" (in PoolCall and the task header).
inline constexpr std::uint32_t kPoolVariable = 0xffffffffu;

// What a submitted call made of: per item its state, its result bytes, and
// the failed chunks. Owned by the pool's collector and the caller's handle.
struct PoolJob {
  std::size_t items = 0;
  std::uint32_t result_size = 0;   // kPoolVariable: results_at says where each is
  std::size_t chunks_left = 0;     // chunks neither answered nor failed
  std::vector<std::byte> results;  // items * result_size, or the variable results appended
  std::vector<std::pair<std::size_t, std::size_t>> results_at;  // variable: offset, size per item
  std::vector<std::uint8_t> state;   // per item: kWaiting, kArrived, kFailed
  std::deque<std::size_t> arrivals;  // arrived items, and failed chunks' first items, in order
  std::map<std::size_t, std::pair<std::size_t, std::exception_ptr>> failures;  // first -> count
  std::exception_ptr first_failure;
  std::function<void()> on_done;  // AsyncResult::then(): run once, when done()
  bool reported = false;          // on_done has run (or been queued to)
  bool list = false;              // map/starmap/imap: the value is the vector of results

  static constexpr std::uint8_t kWaiting = 0, kArrived = 1, kFailed = 2;
  [[nodiscard]] bool finished() const noexcept { return chunks_left == 0; }
  [[nodiscard]] bool done() const noexcept { return first_failure || finished(); }
};

// A chunk as the worker's invoker sees it, validated by the worker: `count`
// items in `items`, each arg_size bytes or (kPoolVariable) a u32 length and
// that many bytes.
struct PoolTaskView {
  std::uintptr_t fn = 0;
  std::span<const std::byte> state;  // the callable's state (partial, function object)
  std::span<const std::byte> items;
  std::uint32_t count = 0;
  std::uint32_t arg_size = 0;
};

// Where the invoker appends results; `item` is the one running (so that
// the worker names the item an exception came from).
struct PoolReplyWriter {
  std::vector<std::byte>& bytes;
  std::uint32_t item = 0;
  std::byte* grow(std::size_t n) {
    const std::size_t at = bytes.size();
    bytes.resize(at + n);
    return bytes.data() + at;
  }
};

// Runs one chunk in a worker: restores the callable, then for each item
// unpacks the arguments, calls, appends the result. Throws what the
// callable throws (writer.item says which item).
using PoolInvoker = void (*)(const PoolTaskView& task, PoolReplyWriter& out);

struct PoolCall {
  std::uintptr_t fn = 0;
  PoolInvoker invoker = nullptr;
  std::uint32_t arg_size = 0;     // one item's packed arguments, or kPoolVariable
  std::uint32_t result_size = 0;  // one item's result (0 for void), or kPoolVariable
  std::vector<std::byte> state;   // the callable's state, sent with every chunk
};

class PoolCore;
// `args`: `items` items, each call.arg_size bytes or (kPoolVariable) a u32
// length and that many bytes.
[[nodiscard]] std::shared_ptr<PoolJob> pool_submit(PoolCore& core, PoolCall call,
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
// Throws Error(decode_error) naming the type a result did not decode as.
[[noreturn]] void pool_throw_decode(std::string_view type);

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

template <class... T>
struct TypeList {};

// Drops the first N types of a list.
template <std::size_t N, class L>
struct DropFront;
template <class L>
struct DropFront<0, L> {
  using type = L;
};
template <std::size_t N, class A, class... Rest>
requires(N > 0) struct DropFront<N, TypeList<A, Rest...>> : DropFront<N - 1, TypeList<Rest...>> {
};

// R and the parameters of a function pointer or a call operator.
template <class S>
struct Signature;
template <class R, class... A>
struct Signature<R (*)(A...)> {
  using Result = R;
  using Args = TypeList<A...>;
};
template <class R, class... A>
struct Signature<R (*)(A...) noexcept> : Signature<R (*)(A...)> {};
#define SHMBUS_POOL_MEMBER_SIGNATURE(QUALIFIERS) \
  template <class C, class R, class... A>        \
  struct Signature<R (C::*)(A...) QUALIFIERS> {  \
    using Result = R;                            \
    using Args = TypeList<A...>;                 \
  };
SHMBUS_POOL_MEMBER_SIGNATURE()
SHMBUS_POOL_MEMBER_SIGNATURE(const)
SHMBUS_POOL_MEMBER_SIGNATURE(noexcept)
SHMBUS_POOL_MEMBER_SIGNATURE(const noexcept)
#undef SHMBUS_POOL_MEMBER_SIGNATURE

// A plain function, a function pointer or a captureless lambda.
template <class F>
concept PoolFunctionLike = requires(F f) {
  {+f};
  requires std::is_function_v<std::remove_pointer_t<decltype(+f)>>;
};

// A function object with one call operator whose state the codec carries:
// trivially copyable (its bytes), or described for msgpack.
template <class F>
concept PoolFunctionObject = std::is_class_v<F> && !PoolFunctionLike<F> && requires {
  &F::operator();
}
&&(std::is_trivially_copyable_v<F> || (HasMsgpackMembers<F> && std::is_default_constructible_v<F>));

template <class F>
struct is_partial : std::false_type {};
template <class F, class... B>
struct is_partial<Partial<F, B...>> : std::true_type {};

template <class F>
concept PoolCallable = PoolFunctionLike<F> || PoolFunctionObject<F> || is_partial<F>::value;

// How each kind of callable travels: Restored is what the worker calls.
template <class F>
struct PoolCallableTraits;

template <PoolFunctionLike F>
struct PoolCallableTraits<F> {
  using Pointer = decltype(+std::declval<F>());
  using Sig = Signature<Pointer>;
  using Restored = Pointer;
  static std::uintptr_t address(const F& f) { return reinterpret_cast<std::uintptr_t>(+f); }
  static void save(const F&, std::vector<std::byte>&) {}
  static Restored restore(std::uintptr_t fn, std::span<const std::byte>) {
    return reinterpret_cast<Pointer>(fn);
  }
};

template <PoolFunctionObject F>
struct PoolCallableTraits<F> {
  using Sig = Signature<decltype(&F::operator())>;
  using Restored = F;
  static std::uintptr_t address(const F&) { return 0; }
  static void save(const F& f, std::vector<std::byte>& out) {
    const auto bytes = encode_message(f);
    out.assign(bytes.begin(), bytes.end());
  }
  static Restored restore(std::uintptr_t, std::span<const std::byte> state) {
    if constexpr (std::is_trivially_copyable_v<F>) {
      if (state.size() != sizeof(F)) pool_throw_decode(type_name<F>());
      return load<F>(state.data());
    } else {
      F f{};
      if (!decode_message(state, f)) pool_throw_decode(type_name<F>());
      return f;
    }
  }
};

template <class G, class... B>
struct PoolCallableTraits<Partial<G, B...>> {
  using Pointer = G;
  struct Sig {
    using Result = typename Signature<G>::Result;
    using Args = typename DropFront<sizeof...(B), typename Signature<G>::Args>::type;
  };
  using Bound = std::tuple<B...>;
  // The worker's copy: the function and its bound values, decoded once a chunk.
  struct Restored {
    G g;
    Bound bound;
    template <class... A>
    decltype(auto) operator()(A&&... a) {
      return std::apply(
          [&](auto&... b) -> decltype(auto) { return g(b..., std::forward<A>(a)...); }, bound);
    }
  };
  static std::uintptr_t address(const Partial<G, B...>& p) {
    return reinterpret_cast<std::uintptr_t>(p.function());
  }
  static void save(const Partial<G, B...>& p, std::vector<std::byte>& out) {
    const auto bytes = encode_message(p.bound());
    out.assign(bytes.begin(), bytes.end());
  }
  static Restored restore(std::uintptr_t fn, std::span<const std::byte> state) {
    Restored r{reinterpret_cast<G>(fn), {}};
    if (!decode_message(state, r.bound)) pool_throw_decode(type_name<Bound>());
    return r;
  }
};

template <class T>
inline constexpr bool kPoolRaw = std::is_void_v<T> || std::is_trivially_copyable_v<T>;

// The codec message of one item's arguments: the msgpack array of them
// (what a std::tuple of them encodes as), packed straight from the values.
template <class... Args, class... In>
std::span<const std::byte> encode_pool_args(In&&... in) {
  EncodeBuffer& b = encode_buffer();
  b.size = 0;
  msgpack::packer<EncodeBuffer> pk(b);
  pk.pack_array(static_cast<std::uint32_t>(sizeof...(Args)));
  const auto one = [&pk]<class Arg, class V>(V&& v) {
    if constexpr (std::is_same_v<std::remove_cvref_t<V>, Arg>) {
      pk.pack(v);
    } else {
      pk.pack(Arg(std::forward<V>(v)));
    }
  };
  (one.template operator()<std::decay_t<Args>>(std::forward<In>(in)), ...);
  return std::as_bytes(std::span<const char>(b.data.get(), b.size));
}

template <class Kind, class R, class ArgList>
struct PoolFunctionImpl;

template <class Kind, class R, class... Args>
struct PoolFunctionImpl<Kind, R, TypeList<Args...>> {
  using Result = R;
  static_assert(kPoolRaw<R> || Codable<R>,
                "shmbus::Pool: a result is sent back through the codec: make it trivially "
                "copyable, a std container or string, or give it MSGPACK_DEFINE");
  static_assert((Codable<std::decay_t<Args>> && ...),
                "shmbus::Pool: arguments are sent through the codec: make them trivially "
                "copyable, std containers or strings, or give them MSGPACK_DEFINE");
  static constexpr bool kRawArgs = (std::is_trivially_copyable_v<std::decay_t<Args>> && ...);
  static constexpr auto kAt = packed_offsets<std::decay_t<Args>...>();
  static constexpr std::uint32_t kArgSize =
      kRawArgs ? static_cast<std::uint32_t>((std::size_t{0} + ... + sizeof(std::decay_t<Args>)))
               : kPoolVariable;
  static constexpr std::uint32_t kResultSize = [] {
    if constexpr (std::is_void_v<R>) {
      return std::uint32_t{0};
    } else if constexpr (std::is_trivially_copyable_v<R>) {
      return static_cast<std::uint32_t>(sizeof(R));
    } else {
      return kPoolVariable;
    }
  }();

  // Appends one item's arguments to `out`.
  template <class... In>
  static void pack(std::vector<std::byte>& out, In&&... in) {
    static_assert(sizeof...(In) == sizeof...(Args), "shmbus::Pool: wrong number of arguments");
    if constexpr (kRawArgs) {
      const std::size_t at = out.size();
      out.resize(at + kArgSize);
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        (store<std::decay_t<Args>>(out.data() + at + kAt[I], std::forward<In>(in)), ...);
      }
      (std::index_sequence_for<Args...>{});
    } else {
      const auto msg = encode_pool_args<Args...>(std::forward<In>(in)...);
      const auto size = static_cast<std::uint32_t>(msg.size());
      const std::size_t at = out.size();
      out.resize(at + sizeof size + msg.size());
      std::memcpy(out.data() + at, &size, sizeof size);
      std::memcpy(out.data() + at + sizeof size, msg.data(), msg.size());
    }
  }

  static void run(const PoolTaskView& task, PoolReplyWriter& out) {
    auto f = Kind::restore(task.fn, task.state);
    std::size_t at = 0;
    for (out.item = 0; out.item < task.count; ++out.item) {
      if constexpr (kRawArgs) {
        const std::byte* in = task.items.data() + at;
        at += kArgSize;
        [&]<std::size_t... I>(std::index_sequence<I...>) {
          finish(out, [&] { return f(load<std::decay_t<Args>>(in + kAt[I])...); });
        }
        (std::index_sequence_for<Args...>{});
      } else {
        std::uint32_t size = 0;  // validated by the worker before the call
        std::memcpy(&size, task.items.data() + at, sizeof size);
        const auto msg = task.items.subspan(at + sizeof size, size);
        at += sizeof size + size;
        std::tuple<std::decay_t<Args>...> args;
        if (!decode_message(msg, args)) pool_throw_decode(type_name<decltype(args)>());
        finish(out, [&] {
          return std::apply([&](auto&... a) -> R { return f(std::move(a)...); }, args);
        });
      }
    }
  }

  static PoolCall call(const typename Kind::Callable& f) {
    PoolCall c{Kind::address(f), &run, kArgSize, kResultSize, {}};
    Kind::save(f, c.state);
    return c;
  }

 private:
  // Calls and appends the result (fixed: its bytes; variable: u32 + message).
  template <class Call>
  static void finish(PoolReplyWriter& out, Call&& call) {
    if constexpr (std::is_void_v<R>) {
      call();
    } else if constexpr (std::is_trivially_copyable_v<R>) {
      const R r = call();
      std::memcpy(out.grow(sizeof r), &r, sizeof r);
    } else {
      const R r = call();
      const auto msg = encode_message(r);
      const auto size = static_cast<std::uint32_t>(msg.size());
      std::byte* p = out.grow(sizeof size + msg.size());
      std::memcpy(p, &size, sizeof size);
      if (!msg.empty()) std::memcpy(p + sizeof size, msg.data(), msg.size());
    }
  }
  template <class T, class In>
  static void store(std::byte* p, In&& v) {
    const T t(std::forward<In>(v));
    std::memcpy(p, &t, sizeof t);
  }
};

template <class F>
struct PoolTraitsOf : PoolCallableTraits<F> {
  using Callable = F;
};

template <class F>
struct PoolFunctionFor {
  // The one error a callable that cannot go to a worker gets.
  static_assert(PoolCallable<F>,
                "shmbus::Pool: a task's callable must reach a worker process: use a function or "
                "a captureless lambda, a lambda that captures trivially copyable values by copy, "
                "a function object with MSGPACK_DEFINE, or shmbus::partial(f, values...) to bind "
                "strings and containers (a std::function or a generic lambda cannot travel)");
  using Traits = PoolTraitsOf<F>;
  using type = PoolFunctionImpl<Traits, typename Traits::Sig::Result, typename Traits::Sig::Args>;
};
template <class F>
using PoolFunctionOf = typename PoolFunctionFor<std::decay_t<F>>::type;

template <class T>
inline constexpr bool is_vector = false;
template <class T>
inline constexpr bool is_vector<std::vector<T>> = true;

// Item i's result.
template <class R>
R job_value(const PoolJob& job, std::size_t i) {
  if constexpr (std::is_trivially_copyable_v<R>) {
    return load<R>(&job.results[i * sizeof(R)]);
  } else {
    const auto [at, size] = job.results_at[i];
    R out{};
    if (!decode_message(std::span<const std::byte>(job.results).subspan(at, size), out))
      pool_throw_decode(type_name<R>());
    return out;
  }
}

// The results of a job.
template <class R>
std::vector<R> job_values(const PoolJob& job) {
  std::vector<R> out;
  out.reserve(job.items);
  for (std::size_t i = 0; i < job.items; ++i) out.push_back(job_value<R>(job, i));
  return out;
}

}  // namespace detail

// Python's functools.partial for a Pool task: f with its first arguments
// bound. The bound values travel with each chunk through the codec
// (strings, containers, MSGPACK_DEFINE structs), so this is how a task
// takes state a capture could not carry:
//
//   std::string count_in(const std::string& word, const std::string& text);
//   pool.map(shmbus::partial(count_in, word), texts);
//
// f is a plain function or a captureless lambda.
template <class F, class... Bound>
class Partial {
 public:
  Partial(F f, Bound... bound) : f_(f), bound_(std::move(bound)...) {}
  [[nodiscard]] F function() const noexcept { return f_; }
  [[nodiscard]] const std::tuple<Bound...>& bound() const noexcept { return bound_; }

 private:
  F f_;
  std::tuple<Bound...> bound_;
};

template <class F, class... B>
auto partial(F f, B&&... bound) {
  static_assert(detail::PoolFunctionLike<F>,
                "shmbus::partial: bind a plain function or a captureless lambda");
  using G = decltype(+f);
  using Params = typename detail::Signature<G>::Args;
  return [&]<class... P>(detail::TypeList<P...>) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      using Tuple = std::tuple<std::decay_t<P>...>;
      return Partial<G, std::decay_t<std::tuple_element_t<I, Tuple>>...>(
          +f, std::decay_t<std::tuple_element_t<I, Tuple>>(std::forward<B>(bound))...);
    }
    (std::index_sequence_for<B...>{});
  }(Params{});
}

}  // namespace shmbus
