#include "shmbus/pool.hpp"

#include <cxxabi.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include "shmbus/detail/futex.hpp"
#include "shmbus/pipe.hpp"
#include "shmbus/process.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/service.hpp"
#include "shmbus/topology.hpp"

namespace shmbus {
namespace detail {
namespace {

constexpr std::uint32_t kTaskMagic = 0x4c4f4f50;  // "POOL"
constexpr std::uint64_t kMaxReply = std::uint64_t{1} << 30;
constexpr std::size_t kMaxChunk = std::size_t{1} << 20;  // items
constexpr auto kLivenessTick = std::chrono::milliseconds(10);

// A task message: this header, the callable's state (`state_size` bytes),
// then `count` items of `arg_size` bytes, or (arg_size kPoolVariable) each
// a u32 length and that many bytes of codec message.
struct TaskHeader {
  std::uint32_t magic;
  std::uint32_t count;
  std::uint64_t job;
  std::uint64_t first;  // the job's index of the first item
  std::uint64_t fn;
  std::uint64_t invoker;
  std::uint64_t check;  // keyed_check() of the fields above and below
  std::uint32_t arg_size;
  std::uint32_t result_size;  // kPoolVariable: each a u32 length and a codec message
  std::uint32_t state_size;
  std::uint32_t reserved;
};

static_assert(sizeof(TaskHeader) == 64 && std::is_trivially_copyable_v<TaskHeader>);

enum class Outcome : std::uint32_t { ok, raised, rejected };

// A result message: this header, then `count` results of the task's
// result_size or (kPoolVariable) each a u32 length and a codec message
// (ok), or the exception (raised: the codec message of ExceptionRecord), or
// why (rejected).
struct ResultHeader {
  std::uint64_t job;
  std::uint64_t first;
  std::uint64_t failed;  // raised: the job's index of the item that threw
  std::uint32_t count;
  Outcome outcome;
};
static_assert(sizeof(ResultHeader) == 32 && std::is_trivially_copyable_v<ResultHeader>);

// Rung by a worker after each result it sends; the collector sleeps on it.
struct Doorbell {
  std::atomic<std::uint64_t> posted{0};  // results sent, ever
  WaitChannel channel{};
};

// One per worker slot, written only by the slot's current worker: how many
// tasks it has taken, so that when it dies the pool knows whether the
// oldest unanswered chunk had started (it fails) or not (it is handed on).
struct alignas(64) WorkerLine {
  std::atomic<std::uint64_t> taken{0};
};

// The doorbell, then one WorkerLine per slot, in a MAP_SHARED anonymous
// mapping made before the workers fork: only this pool's processes share it.
//
//   0      Doorbell { posted (workers RMW), channel (futex.hpp) }   line 0
//   64     WorkerLine[0] { taken (worker 0 writes) }                line 1
//   128    WorkerLine[1] ...
struct alignas(64) SharedBlock {
  Doorbell bell;
};
static_assert(sizeof(SharedBlock) == 64 && sizeof(WorkerLine) == 64);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

std::size_t shared_block_size(unsigned processes) {
  return sizeof(SharedBlock) + sizeof(WorkerLine) * processes;
}

// A keyed mix of what a worker will call: a task from anyone without the
// key (or a corrupted one) fails the check instead of jumping anywhere.
std::uint64_t keyed_check(std::uint64_t key, const TaskHeader& h) noexcept {
  std::uint64_t x = key;
  for (std::uint64_t v : {h.fn, h.invoker, (std::uint64_t{h.arg_size} << 32) | h.result_size,
                          std::uint64_t{h.state_size}}) {
    x ^= v;
    x *= 0x9e3779b97f4a7c15ULL;
    x ^= x >> 31;
  }
  return x;
}

std::uint64_t random_key() {
  std::uint64_t key = 0;
  if (::getrandom(&key, sizeof key, 0) != sizeof key) {
    throw Error(Errc::system, "pool", "getrandom failed for the task key");
  }
  return key;
}

std::string how_it_ended(std::optional<int> code) {
  if (!code) return "ended";
  if (*code < 0) return "was killed by signal " + std::to_string(-*code);
  return "exited with code " + std::to_string(*code);
}

std::string items_text(std::uint64_t first, std::uint32_t count) {
  if (count == 1) return "item " + std::to_string(first);
  return "items " + std::to_string(first) + ".." + std::to_string(first + count - 1);
}

// A task's exception as the worker sends it: its mangled type name (this
// program's typeid), what(), for a shmbus::Error its code (else
// kNotAnError), object and reason, and for a Service's CallFailed its
// maybe_executed(). (Workers are forks of the caller: one program, one
// record layout.)
using ExceptionRecord =
    std::tuple<std::string, std::string, std::uint8_t, std::string, std::string, bool>;
constexpr std::uint8_t kNotAnError = 0xff;

// The shmbus::Error types a record carries whole: rebuilt with their code,
// object and reason (and a CallFailed's flag), not by their what() alone.
bool carried_whole(const std::type_info& t) noexcept {
  return t == typeid(Error) || t == typeid(ServerGone) || t == typeid(CallTimedOut);
}

ExceptionRecord current_exception_record() {
  try {
    throw;
  } catch (const Error& e) {
    if (!carried_whole(typeid(e))) return {typeid(e).name(), e.what(), kNotAnError, {}, {}, false};
    const auto* call = dynamic_cast<const CallFailed*>(&e);
    return {typeid(e).name(), e.what(),   static_cast<std::uint8_t>(e.code()),
            e.object(),       e.reason(), call != nullptr && call->maybe_executed()};
  } catch (const std::exception& e) {
    return {typeid(e).name(), e.what(), kNotAnError, {}, {}, false};
  } catch (...) {
    const std::type_info* t = abi::__cxa_current_exception_type();
    return {t != nullptr ? t->name() : "", {}, kNotAnError, {}, {}, false};
  }
}

std::string demangled(const std::string& name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  std::string out = status == 0 && d != nullptr ? d : name;
  std::free(d);  // NOLINT(cppcoreguidelines-no-malloc): __cxa_demangle's buffer
  return out.empty() ? "an unknown type" : out;
}

// Mangled type name -> how to make one; the standard ones built in.
struct ExceptionRegistry {
  std::mutex mutex;
  std::unordered_map<std::string, PoolExceptionMaker> makers;
  ExceptionRegistry() {
    add<std::logic_error>();
    add<std::invalid_argument>();
    add<std::domain_error>();
    add<std::length_error>();
    add<std::out_of_range>();
    add<std::runtime_error>();
    add<std::range_error>();
    add<std::overflow_error>();
    add<std::underflow_error>();
    makers[typeid(std::exception).name()] = [](const std::string&) {
      return std::make_exception_ptr(std::exception());
    };
    makers[typeid(std::bad_alloc).name()] = [](const std::string&) {
      return std::make_exception_ptr(std::bad_alloc());
    };
  }
  template <class E>
  void add() {
    makers[typeid(E).name()] = [](const std::string& what) {
      return std::make_exception_ptr(E(what));
    };
  }
};
ExceptionRegistry& exception_registry() {
  static ExceptionRegistry registry;
  return registry;
}

// The exception the caller gets for a task's ExceptionRecord.
std::exception_ptr rebuild(const ExceptionRecord& record, const std::string& worker,
                           std::size_t item) {
  const auto& [type, what, code, object, reason, maybe_executed] = record;
  if (code != kNotAnError && code <= static_cast<std::uint8_t>(Errc::timed_out)) {
    const auto errc = static_cast<Errc>(code);
    if (type == typeid(Error).name()) return std::make_exception_ptr(Error(errc, object, reason));
    if (type == typeid(ServerGone).name() && errc == Errc::peer_dead)
      return std::make_exception_ptr(ServerGone(object, reason, maybe_executed));
    if (type == typeid(CallTimedOut).name() && errc == Errc::timed_out)
      return std::make_exception_ptr(CallTimedOut(object, reason, maybe_executed));
  }
  {
    ExceptionRegistry& r = exception_registry();
    const std::lock_guard lock(r.mutex);
    if (auto it = r.makers.find(type); it != r.makers.end()) return it->second(what);
  }
  return std::make_exception_ptr(RemoteError(worker, item, demangled(type), what));
}

// Where each of `count` variable-size records (a u32 length, then that many
// bytes) lies in `bytes`; false when they do not fill it exactly.
bool split_variable(std::span<const std::byte> bytes, std::uint32_t count,
                    std::vector<std::pair<std::size_t, std::size_t>>* at) {
  std::size_t pos = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint32_t size = 0;
    if (bytes.size() - pos < sizeof size) return false;
    std::memcpy(&size, bytes.data() + pos, sizeof size);
    pos += sizeof size;
    if (bytes.size() - pos < size) return false;
    if (at != nullptr) at->emplace_back(pos, size);
    pos += size;
  }
  return pos == bytes.size();
}

// Runs one task in a worker and writes its result message into `reply`.
void answer(std::span<const std::byte> task, std::uint64_t key, std::vector<std::byte>& reply) {
  ResultHeader r{};
  const auto finish_with = [&](Outcome outcome, std::span<const std::byte> payload) {
    r.outcome = outcome;
    reply.resize(sizeof r + payload.size());
    std::memcpy(reply.data(), &r, sizeof r);
    if (!payload.empty()) std::memcpy(reply.data() + sizeof r, payload.data(), payload.size());
  };
  const auto reject = [&](const std::string& why) {
    finish_with(Outcome::rejected, std::as_bytes(std::span(why.data(), why.size())));
  };
  if (task.size() < sizeof(TaskHeader)) {
    return reject("a task of " + std::to_string(task.size()) + " bytes, under its header");
  }
  TaskHeader h;
  std::memcpy(&h, task.data(), sizeof h);
  r.job = h.job;
  r.first = h.first;
  r.count = h.count;
  if (h.magic != kTaskMagic || h.check != keyed_check(key, h)) {
    return reject("a task without this pool's check");
  }
  const std::uint64_t body = task.size() - sizeof h;
  const bool fixed_results = h.result_size != kPoolVariable;
  const std::uint64_t results = fixed_results ? std::uint64_t{h.count} * h.result_size : 0;
  const auto items = task.subspan(sizeof h).subspan(std::min<std::uint64_t>(h.state_size, body));
  const bool items_fit = h.arg_size == kPoolVariable
                             ? split_variable(items, h.count, nullptr)
                             : items.size() == std::uint64_t{h.count} * h.arg_size;
  if (h.count == 0 || h.count > kMaxChunk || h.state_size > body || !items_fit ||
      results > kMaxReply) {
    return reject("a task of " + std::to_string(h.count) + " items of " +
                  std::to_string(h.arg_size) + " bytes and " + std::to_string(h.state_size) +
                  " bytes of state in " + std::to_string(body) + " bytes");
  }
  reply.resize(sizeof r);
  reply.reserve(sizeof r + results);
  const PoolTaskView view{h.fn, task.subspan(sizeof h, h.state_size), items, h.count, h.arg_size};
  PoolReplyWriter out{reply};
  try {
    reinterpret_cast<PoolInvoker>(h.invoker)(view, out);
  } catch (...) {
    r.failed = h.first + out.item;
    return finish_with(Outcome::raised, encode_message(current_exception_record()));
  }
  r.outcome = Outcome::ok;
  std::memcpy(reply.data(), &r, sizeof r);
}

}  // namespace

class PoolCore {
 public:
  explicit PoolCore(PoolOptions options);
  ~PoolCore();
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  std::shared_ptr<PoolJob> submit(const PoolCall& call, const std::vector<std::byte>& args,
                                  std::size_t items, std::size_t chunksize);
  bool wait(const std::function<bool()>& ready, const Clock::time_point* deadline);
  void close() noexcept { closed_ = true; }
  void terminate();
  void join();
  [[nodiscard]] unsigned processes() const noexcept { return processes_; }
  [[nodiscard]] std::vector<pid_t> pids() const;

 private:
  struct Chunk {
    std::shared_ptr<PoolJob> job;
    std::uint64_t job_id = 0;
    std::uint64_t first = 0;
    std::uint32_t count = 0;
    std::vector<std::byte> task;  // the message, header included
  };
  struct Worker {
    std::optional<Process> process;
    Connection conn;                // the parent's end
    Connection child;               // the worker's end, until it has forked
    std::deque<Chunk> outstanding;  // sent, not answered, oldest first
    unsigned given = 0;             // chunks sent (maxtasksperchild)
    unsigned answered = 0;
    bool ended = false;  // its end reported EOF, death or corruption
  };

  int work(Worker& w, WorkerLine& line);  // the worker process's loop
  void start_worker(std::size_t slot);
  void dispatch();
  void collect();
  void collect_from(Worker& w);
  void accept(Worker& w, std::span<const std::byte> reply);
  void check_workers();
  void retire(std::size_t slot);
  void fail(Chunk& c, const std::exception_ptr& e);
  // Queues `job`'s callback once it is done; run_callbacks() runs the queue
  // (from wait(), outside the loops that change jobs and workers).
  void note_progress(const std::shared_ptr<PoolJob>& job);
  void run_callbacks();
  void fail_all(const Error& e);
  void stop_workers();
  [[nodiscard]] bool idle() const;

  // Throws unless called by the process that made the pool: a forked copy
  // (a worker, or any child) must neither use nor stop its workers.
  void check_owner() const;

  PoolOptions options_;
  pid_t owner_ = this_process().pid;  // cached: getpid() is a system call
  unsigned processes_ = 0;
  CpuList cpus_;
  std::uint64_t key_ = 0;
  SharedBlock* shared_ = nullptr;
  WorkerLine* lines_ = nullptr;  // [processes_], after the doorbell
  std::size_t max_frame_ = 0;    // the largest message a pipe takes with try_send
  std::vector<std::unique_ptr<Worker>> workers_;
  std::deque<Chunk> pending_;
  std::uint64_t next_job_ = 1;
  unsigned started_ = 0;
  unsigned starts_without_work_ = 0;  // workers in a row that ended on their own, taskless
  bool closed_ = false;
  bool terminated_ = false;
  bool joined_ = false;
  std::optional<Error> broken_;
  Clock::time_point last_check_{};
  std::vector<std::byte> buffer_;                                  // collect()'s, reused
  std::vector<std::pair<std::size_t, std::size_t>> split_buffer_;  // accept()'s, reused
  std::vector<Worker*> dispatch_order_;                            // dispatch()'s, reused
  std::deque<std::shared_ptr<PoolJob>> callbacks_;  // done jobs whose on_done is to run
};

PoolCore::PoolCore(PoolOptions options) : options_(std::move(options)) {
  cpus_ = options_.cpus.empty() ? this_thread_cpus() : options_.cpus;
  if (cpus_.empty()) cpus_.push_back(0);
  processes_ = options_.processes != 0 ? options_.processes : static_cast<unsigned>(cpus_.size());
  if (processes_ > 1024) {
    throw Error(Errc::invalid_argument, "pool", std::to_string(processes_) + " processes");
  }
  key_ = random_key();
  void* block = ::mmap(nullptr, shared_block_size(processes_), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (block == MAP_FAILED) throw Error(Errc::system, "pool", "mmap of the doorbell failed");
  shared_ = static_cast<SharedBlock*>(block);
  new (&shared_->bell) Doorbell{};
  lines_ = reinterpret_cast<WorkerLine*>(shared_ + 1);
  for (unsigned i = 0; i < processes_; ++i) new (&lines_[i]) WorkerLine{};
  workers_.resize(processes_);
  try {
    for (std::size_t i = 0; i < processes_; ++i) start_worker(i);
  } catch (...) {
    stop_workers();
    ::munmap(shared_, shared_block_size(processes_));
    throw;
  }
  max_frame_ = workers_[0]->conn.max_frame_payload();
}

PoolCore::~PoolCore() {
  if (!joined_ && this_process().pid == owner_) terminate();
  ::munmap(shared_, shared_block_size(processes_));
}

void PoolCore::start_worker(std::size_t slot) {
  auto w = std::make_unique<Worker>();
  PipeOptions pipe;
  pipe.capacity = options_.pipe_capacity;
  std::tie(w->conn, w->child) = Pipe(pipe);
  ProcessOptions po;
  po.name = "PoolWorker-" + std::to_string(++started_);
  po.daemon = true;
  if (options_.pin) po.cpus = {cpus_[slot % cpus_.size()]};
  Worker* raw = w.get();
  WorkerLine& line = lines_[slot];
  // relaxed: no worker of this slot runs now; the fork orders it.
  line.taken.store(0, std::memory_order_relaxed);
  w->process.emplace([this, raw, &line] { return work(*raw, line); }, std::move(po));
  workers_[slot] = std::move(w);
  raw->process->start();
  raw->child.close();  // the parent's copy; the worker took its end
}

int PoolCore::work(Worker& w, WorkerLine& line) {
  if (options_.initializer) options_.initializer();  // throws: the worker exits 1
  std::vector<std::byte> task;
  std::vector<std::byte> reply;
  for (unsigned done = 0; options_.maxtasksperchild == 0 || done < options_.maxtasksperchild;
       ++done) {
    if (w.child.recv_bytes(task) != RecvResult::ok) return 0;  // the pool closed or died
    // [pool.taken] release: read by the parent once this process is dead
    // (it has been reaped, so every store of it is visible); single writer.
    line.taken.store(done + 1, std::memory_order_release);
    answer(task, key_, reply);
    if (w.child.send_bytes(reply) != SendResult::ok) return 0;
    // [pool.doorbell] seq_cst, after the result's publication: the
    // WaitChannel contract (futex.hpp); a collector that saw `posted`
    // change finds the result in the pipe.
    shared_->bell.posted.fetch_add(1, std::memory_order_seq_cst);
    notify(shared_->bell.channel);
  }
  w.child.close();
  shared_->bell.posted.fetch_add(1, std::memory_order_seq_cst);  // [pool.doorbell]
  notify(shared_->bell.channel);
  return 0;
}

void PoolCore::check_owner() const {
  if (this_process().pid != owner_) {
    throw Error(Errc::invalid_argument, "pool",
                "used from a forked copy (pid " + std::to_string(this_process().pid) +
                    "): a pool belongs to the process that made it, pid " + std::to_string(owner_));
  }
}

std::shared_ptr<PoolJob> PoolCore::submit(const PoolCall& call, const std::vector<std::byte>& args,
                                          std::size_t items, std::size_t chunksize) {
  check_owner();
  if (broken_) throw *broken_;
  if (closed_ || terminated_) throw Error(Errc::closed, "pool", "closed: it takes no new work");
  const auto too_large = [&](const char* what, std::size_t bytes) {
    return Error(Errc::too_large, "pool",
                 std::string(what) + " of " + std::to_string(bytes) +
                     " bytes; one task frame holds " +
                     std::to_string(max_frame_ - sizeof(TaskHeader)) +
                     (call.state.empty() ? std::string()
                                         : " with " + std::to_string(call.state.size()) +
                                               " bytes of the callable's state") +
                     " (raise PoolOptions::pipe_capacity)");
  };
  // Bytes of one frame left for items, after the header and the state
  // every chunk carries.
  const std::size_t room = max_frame_ - sizeof(TaskHeader);
  if (call.state.size() > room) throw too_large("a callable's state", call.state.size());
  const std::size_t item_room = room - call.state.size();
  const bool variable = call.arg_size == kPoolVariable;
  std::vector<std::pair<std::size_t, std::size_t>> at;  // variable: each item's bytes
  if (variable) {
    at.reserve(items);
    if (!split_variable(args, static_cast<std::uint32_t>(items), &at) || items > UINT32_MAX) {
      throw Error(Errc::invalid_argument, "pool", "packed arguments do not match the items");
    }
    for (const auto& [pos, size] : at) {
      if (size + sizeof(std::uint32_t) > item_room) throw too_large("arguments", size);
    }
  } else if (call.arg_size > item_room) {
    throw too_large("arguments", call.arg_size);
  }
  if (chunksize == 0)
    chunksize = std::max<std::size_t>(1, (items + 4 * processes_ - 1) / (4 * processes_));
  chunksize = std::min(chunksize, kMaxChunk);
  if (!variable && call.arg_size != 0) chunksize = std::min(chunksize, item_room / call.arg_size);
  if (call.result_size != kPoolVariable && call.result_size != 0 &&
      call.result_size + sizeof(ResultHeader) <= max_frame_) {
    chunksize = std::min(chunksize, (max_frame_ - sizeof(ResultHeader)) / call.result_size);
  }
  auto job = std::make_shared<PoolJob>();
  job->items = items;
  job->result_size = call.result_size;
  if (call.result_size == kPoolVariable) {
    job->results_at.resize(items);
  } else {
    job->results.resize(items * call.result_size);
  }
  job->state.assign(items, PoolJob::kWaiting);
  const std::uint64_t id = next_job_++;
  std::size_t offset = 0;  // in args, of the chunk's first item
  for (std::size_t first = 0; first < items;) {
    std::size_t count = std::min(chunksize, items - first);
    std::size_t bytes = count * call.arg_size;
    if (variable) {  // as many as fit in the frame (at least one: checked above)
      bytes = 0;
      count = 0;
      while (count < chunksize && first + count < items) {
        const std::size_t one = at[first + count].second + sizeof(std::uint32_t);
        if (count != 0 && bytes + one > item_room) break;
        bytes += one;
        ++count;
      }
    }
    TaskHeader h{};
    h.magic = kTaskMagic;
    h.count = static_cast<std::uint32_t>(count);
    h.job = id;
    h.first = first;
    h.fn = call.fn;
    h.invoker = reinterpret_cast<std::uintptr_t>(call.invoker);
    h.arg_size = call.arg_size;
    h.result_size = call.result_size;
    h.state_size = static_cast<std::uint32_t>(call.state.size());
    h.check = keyed_check(key_, h);
    Chunk c{job, id, first, h.count, std::vector<std::byte>(sizeof h + call.state.size() + bytes)};
    std::byte* p = c.task.data();
    std::memcpy(p, &h, sizeof h);
    if (!call.state.empty()) std::memcpy(p + sizeof h, call.state.data(), call.state.size());
    if (bytes != 0) std::memcpy(p + sizeof h + call.state.size(), args.data() + offset, bytes);
    pending_.push_back(std::move(c));
    ++job->chunks_left;
    first += count;
    offset += bytes;
  }
  dispatch();
  return job;
}

// Sends pending chunks, each to the worker with the fewest unanswered ones
// whose pipe has room now; never waits (a worker blocked on a full result
// pipe needs this process to collect).
void PoolCore::dispatch() {
  std::vector<Worker*>& order = dispatch_order_;
  while (!pending_.empty()) {
    order.clear();
    for (auto& w : workers_) {
      if (!w || w->ended) continue;
      const bool spent = options_.maxtasksperchild != 0 && w->given >= options_.maxtasksperchild;
      if (!spent) order.push_back(w.get());
    }
    std::stable_sort(order.begin(), order.end(), [](const Worker* a, const Worker* b) {
      return a->outstanding.size() < b->outstanding.size();
    });
    bool sent = false;
    for (Worker* w : order) {
      const SendResult r = w->conn.try_send_bytes(pending_.front().task);
      if (r == SendResult::full) continue;
      if (r != SendResult::ok) {
        w->ended = true;  // retired by the next check
        continue;
      }
      w->outstanding.push_back(std::move(pending_.front()));
      pending_.pop_front();
      ++w->given;
      sent = true;
      break;
    }
    if (!sent) return;
  }
}

void PoolCore::collect() {
  for (auto& w : workers_) {
    if (w && !w->ended) collect_from(*w);
  }
}

void PoolCore::collect_from(Worker& w) {
  while (w.conn.poll()) {
    const RecvResult r = w.conn.recv_bytes(buffer_);
    if (r != RecvResult::ok) {
      w.ended = true;  // EOF (maxtasksperchild), death or corruption
      return;
    }
    accept(w, buffer_);
    if (w.ended) return;
  }
}

void PoolCore::accept(Worker& w, std::span<const std::byte> reply) {
  ResultHeader h{};
  const bool fits = reply.size() >= sizeof h;
  if (fits) std::memcpy(&h, reply.data(), sizeof h);
  if (!fits || w.outstanding.empty() || h.job != w.outstanding.front().job_id ||
      h.first != w.outstanding.front().first || h.count != w.outstanding.front().count) {
    // Not the answer to the oldest chunk it was sent: stop trusting it.
    w.process->kill();
    w.ended = true;
    return;
  }
  Chunk c = std::move(w.outstanding.front());
  w.outstanding.pop_front();
  ++w.answered;
  starts_without_work_ = 0;
  PoolJob& job = *c.job;
  const std::string_view text(reinterpret_cast<const char*>(reply.data()) + sizeof h,
                              reply.size() - sizeof h);
  const std::string worker = w.process->name() + " (pid " + std::to_string(w.process->pid()) + ")";
  switch (h.outcome) {
    case Outcome::ok: {
      if (job.result_size == kPoolVariable) {
        std::vector<std::pair<std::size_t, std::size_t>>& at = split_buffer_;
        at.clear();
        const auto body = reply.subspan(sizeof h);
        if (!split_variable(body, c.count, &at)) {
          fail(c, std::make_exception_ptr(
                      Error(Errc::corrupted, worker,
                            "answered " + items_text(c.first, c.count) + " with " +
                                std::to_string(body.size()) + " bytes that are not " +
                                std::to_string(c.count) + " length-prefixed results")));
          return;
        }
        const std::size_t base = job.results.size();
        job.results.insert(job.results.end(), body.begin(), body.end());
        for (std::size_t i = 0; i < c.count; ++i)
          job.results_at[c.first + i] = {base + at[i].first, at[i].second};
      } else if (const std::size_t bytes = std::size_t{c.count} * job.result_size;
                 reply.size() - sizeof h != bytes) {
        fail(c,
             std::make_exception_ptr(Error(Errc::corrupted, worker,
                                           "answered " + items_text(c.first, c.count) + " with " +
                                               std::to_string(reply.size() - sizeof h) +
                                               " bytes, expected " + std::to_string(bytes))));
        return;
      } else if (bytes != 0) {
        std::memcpy(&job.results[c.first * job.result_size], text.data(), bytes);
      }
      for (std::size_t i = c.first; i < c.first + c.count; ++i) {
        job.state[i] = PoolJob::kArrived;
        job.arrivals.push_back(i);
      }
      --job.chunks_left;
      note_progress(c.job);
      return;
    }
    case Outcome::raised: {
      ExceptionRecord record;
      if (h.failed < c.first || h.failed - c.first >= c.count ||
          !decode_message(reply.subspan(sizeof h), record)) {
        fail(c,
             std::make_exception_ptr(Error(Errc::corrupted, worker,
                                           "answered " + items_text(c.first, c.count) +
                                               " with an exception record that does not decode")));
        return;
      }
      fail(c, rebuild(record, worker, h.failed));
      return;
    }
    case Outcome::rejected:
      fail(c, std::make_exception_ptr(
                  Error(Errc::corrupted, worker,
                        "rejected " + items_text(c.first, c.count) + ": " + std::string(text))));
      return;
  }
  fail(c, std::make_exception_ptr(Error(
              Errc::corrupted, worker,
              "answered with outcome " + std::to_string(static_cast<std::uint32_t>(h.outcome)))));
}

void PoolCore::fail(Chunk& c, const std::exception_ptr& e) {
  PoolJob& job = *c.job;
  for (std::size_t i = c.first; i < c.first + c.count; ++i) job.state[i] = PoolJob::kFailed;
  job.failures.emplace(c.first, std::pair<std::size_t, std::exception_ptr>(c.count, e));
  job.arrivals.push_back(c.first);
  if (!job.first_failure) job.first_failure = e;
  --job.chunks_left;
  note_progress(c.job);
}

void PoolCore::note_progress(const std::shared_ptr<PoolJob>& job) {
  if (!job->done() || !job->on_done || job->reported) return;
  job->reported = true;
  callbacks_.push_back(job);
}

void PoolCore::run_callbacks() {
  while (!callbacks_.empty()) {
    const std::shared_ptr<PoolJob> job = std::move(callbacks_.front());
    callbacks_.pop_front();
    job->on_done();  // may throw to the caller; the rest wait for the next call
  }
}

void PoolCore::fail_all(const Error& error) {
  const std::exception_ptr e = std::make_exception_ptr(error);
  for (auto& w : workers_) {
    if (!w) continue;
    for (auto& c : w->outstanding) fail(c, e);
    w->outstanding.clear();
  }
  for (auto& c : pending_) fail(c, e);
  pending_.clear();
}

// A worker that ended: its committed answers are collected, the chunk it
// was running fails, the chunks queued behind it (never started: a worker
// runs one at a time) go back to the front of the line, and a fresh worker
// takes the slot.
void PoolCore::retire(std::size_t slot) {
  Worker& w = *workers_[slot];
  w.ended = false;
  collect_from(w);
  // A worker that closed its end (maxtasksperchild) is exiting by itself.
  if ((!w.ended && w.process->is_alive()) || !w.process->join_for(std::chrono::seconds(5))) {
    w.process->kill();
  }
  w.process->join();
  const std::string worker = w.process->name() + " (pid " + std::to_string(w.process->pid()) + ")";
  const std::optional<int> code = w.process->exitcode();
  // [pool.taken] acquire: the worker is reaped; pairs with its store.
  const std::uint64_t taken = lines_[slot].taken.load(std::memory_order_acquire);
  if (!w.outstanding.empty() && taken > w.answered) {
    Chunk running = std::move(w.outstanding.front());
    w.outstanding.pop_front();
    fail(running, std::make_exception_ptr(Error(Errc::peer_dead, worker,
                                                how_it_ended(code) + " running " +
                                                    items_text(running.first, running.count))));
  }
  while (!w.outstanding.empty()) {
    pending_.push_front(std::move(w.outstanding.back()));
    w.outstanding.pop_back();
  }
  // A worker that ends on its own before finishing a task (its initializer
  // threw or crashed) counts toward a broken pool; one killed with SIGKILL
  // (by someone, or the OOM killer) says nothing about the pool's setup.
  if (w.answered != 0) {
    starts_without_work_ = 0;
  } else if (code != -SIGKILL) {
    ++starts_without_work_;
  }
  if (terminated_) return;
  if (starts_without_work_ > 2 * processes_) {
    broken_ = Error(Errc::peer_dead, "pool",
                    "broken: " + std::to_string(starts_without_work_) +
                        " workers in a row ended before finishing a task (the last " +
                        how_it_ended(code) + "; does the initializer throw?)");
    fail_all(*broken_);
    return;
  }
  start_worker(slot);
}

void PoolCore::check_workers() {
  last_check_ = Clock::now();
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    Worker& w = *workers_[i];
    if (w.ended || !w.process->is_alive()) retire(i);
    if (broken_) return;
  }
}

bool PoolCore::idle() const {
  return pending_.empty() && std::all_of(workers_.begin(), workers_.end(),
                                         [](const auto& w) { return w->outstanding.empty(); });
}

bool PoolCore::wait(const std::function<bool()>& ready, const Clock::time_point* deadline) {
  check_owner();
  const auto result_waiting = [this] {
    return std::any_of(workers_.begin(), workers_.end(),
                       [](const auto& w) { return !w->ended && w->conn.poll(); });
  };
  const WaitPolicy policy{};
  for (;;) {
    // [pool.doorbell] seq_cst: read before collecting, so a result sent
    // after this collection changes it and ends the sleep below.
    const std::uint64_t seen = shared_->bell.posted.load(std::memory_order_seq_cst);
    collect();
    if (!broken_ && !terminated_ && Clock::now() - last_check_ >= kLivenessTick) check_workers();
    dispatch();
    run_callbacks();
    if (ready()) return true;
    const auto now = Clock::now();
    if (deadline != nullptr && now >= *deadline) return false;
    Clock::time_point tick = now + kLivenessTick;
    if (deadline != nullptr) tick = std::min(tick, *deadline);
    // While spinning, the pipes are watched too: a result is seen with the
    // one line transfer that brings it, not after the doorbell's. Only the
    // doorbell ends a sleep ([wait.sleepers]: its load is the seq_cst one).
    (void)wait_until(
        shared_->bell.channel,
        [&] {
          return shared_->bell.posted.load(std::memory_order_seq_cst) != seen || result_waiting();
        },
        policy, &tick);
  }
}

void PoolCore::stop_workers() {
  for (auto& w : workers_) {
    if (!w || !w->process || w->process->pid() == 0) continue;
    w->process->terminate();
    if (!w->process->join_for(std::chrono::seconds(1))) {
      w->process->kill();
      w->process->join();
    }
  }
}

void PoolCore::terminate() {
  if (terminated_ || joined_ || this_process().pid != owner_)
    return;  // a forked copy leaves them be
  terminated_ = true;
  closed_ = true;
  stop_workers();
  fail_all(Error(Errc::closed, "pool", "terminated before the call finished"));
  joined_ = true;
}

void PoolCore::join() {
  check_owner();
  if (!closed_) throw Error(Errc::invalid_argument, "pool", "join() before close() or terminate()");
  if (joined_) return;
  (void)wait([this] { return idle() || broken_.has_value(); }, nullptr);
  for (auto& w : workers_) w->conn.close();  // a worker reads EOF and exits
  for (auto& w : workers_) {
    if (!w->process->join_for(std::chrono::seconds(5))) {
      w->process->kill();
      w->process->join();
    }
  }
  joined_ = true;
}

std::vector<pid_t> PoolCore::pids() const {
  std::vector<pid_t> out;
  for (const auto& w : workers_) out.push_back(w->process->pid());
  return out;
}

std::shared_ptr<PoolJob> pool_submit(PoolCore& core, PoolCall call, std::vector<std::byte> args,
                                     std::size_t items, std::size_t chunksize) {
  return core.submit(call, args, items, chunksize);
}

void pool_register_exception(const std::type_info& type, PoolExceptionMaker make) {
  ExceptionRegistry& r = exception_registry();
  const std::lock_guard lock(r.mutex);
  r.makers[type.name()] = make;
}

void pool_throw_decode(std::string_view type) {
  throw Error(Errc::decode_error, "pool",
              "a task's value did not decode as " + std::string(type) + ": " + last_decode_error());
}

bool pool_wait(PoolCore& core, const std::function<bool()>& ready,
               const Clock::time_point* deadline) {
  return core.wait(ready, deadline);
}

}  // namespace detail

RemoteError::RemoteError(std::string worker, std::size_t item, std::string type, std::string what)
    : Error(Errc::task_failed, std::move(worker),
            "item " + std::to_string(item) + " threw " + type + (what.empty() ? "" : ": " + what)),
      type_(std::move(type)),
      what_(std::move(what)),
      item_(item) {}

Pool::Pool(PoolOptions options) : core_(std::make_shared<detail::PoolCore>(std::move(options))) {}

Pool& Pool::operator=(Pool&& other) noexcept {
  if (this != &other) {
    if (core_) core_->terminate();
    core_ = std::move(other.core_);
  }
  return *this;
}

Pool::~Pool() {
  if (core_) core_->terminate();
}

void Pool::close() { core_->close(); }
void Pool::terminate() { core_->terminate(); }
void Pool::join() { core_->join(); }
unsigned Pool::processes() const noexcept { return core_->processes(); }
std::vector<pid_t> Pool::worker_pids() const { return core_->pids(); }

}  // namespace shmbus
