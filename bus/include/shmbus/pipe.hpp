// shmbus::Pipe — multiprocessing.Pipe(duplex) over shared memory.
//
//   auto [a, b] = shmbus::Pipe();          // anonymous duplex: shared by fork()
//   auto [r, w] = shmbus::Pipe(false);     // half-duplex: r receives, w sends
//
//   // Unrelated processes: one creates and takes an end, the other opens
//   // the other end by name (a second taker gets Errc::already_exists).
//   auto c = shmbus::Connection::create("orders", shmbus::PipeEnd::first);
//   auto d = shmbus::Connection::open("orders", shmbus::PipeEnd::second);
//
// Pipe(name) makes a named pipe whose two ends this process holds (for it
// and its forked children, which take the end they use); unlink_pipe()
// removes the name. Pipe() without a name is anonymous, like
// multiprocessing's pipes: unnamed memory (memfd_create) that fork()ed
// children share, nothing in /dev/shm.
//
// A duplex pipe is two SPSC rings (one per direction), a half-duplex pipe
// one. Each ring carries variable-length framed messages; a small message
// and its publication share one cache line, so a busy-polling receiver
// gets it with a single cache-line transfer (see detail/spsc_ring.hpp).
//
// Setup (Pipe, Connection::create/open, pipe_stats) throws shmbus::Error.
// Statistics are written by the side that owns them and can be read at any
// time, read-only, through pipe_stats() (bus-inspector does).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmbus/connection.hpp"
#include "shmbus/detail/segment.hpp"
#include "shmbus/process_id.hpp"
#include "shmbus/segment_info.hpp"
#include "shmbus/wait.hpp"

namespace shmbus {

// Creates a pipe and returns its two ends (end first, end second). In a
// half-duplex pipe the first end receives and the second sends.
[[nodiscard]] std::pair<Connection, Connection> Pipe(std::string_view name,
                                                     const PipeOptions& options);
[[nodiscard]] std::pair<Connection, Connection> Pipe(std::string_view name, bool duplex = true);
[[nodiscard]] std::pair<Connection, Connection> Pipe(const PipeOptions& options);
[[nodiscard]] std::pair<Connection, Connection> Pipe(bool duplex = true);

// multiprocessing.connection.wait for pipe ends: waits until at least one
// of `ends` can recv without waiting (a message is there, the peer closed,
// or the peer died) or `timeout` passes (none: forever), and returns those
// ends in the order given (empty on timeout). It waits as the ends'
// strategies do: busy-polls if one of them busy-polls (its sender wakes
// nobody), else spins like an adaptive end (none if one blocks), then
// sleeps on every ring at once (ends armed like a sleeping recv(); two
// ends or more share one futex word, the thread's wake slot, which their
// senders wake: see "How it waits" in wait_any.hpp).
// At most 128 ends; one that cannot receive (closed, moved from, the send
// end of a half-duplex pipe, taken by another process) throws
// Error(invalid_argument), as does a longer list, or an empty one without
// a timeout (with one, it sleeps that long, as Python's wait([], t) does).
[[nodiscard]] std::vector<Connection*> wait(std::span<Connection* const> ends,
                                            std::optional<Clock::duration> timeout = std::nullopt);
// The same into `ready` (cleared first), reusing its capacity: no
// allocation once it has held all of `ends`, for a loop on a fast path.
void wait(std::span<Connection* const> ends, std::vector<Connection*>& ready,
          std::optional<Clock::duration> timeout = std::nullopt);

// Removes a named pipe's name (open ends keep working). False if absent.
bool unlink_pipe(std::string_view name);

// Live statistics of one direction (ring) of a pipe.
struct PipeRingStats {
  std::uint64_t capacity = 0;
  // The sender publishes these every few KiB of sends; pipe_stats() adds
  // the frames it wrote since, counted from their headers: exact.
  std::uint64_t messages_sent = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t blocked_sends = 0;      // sends that slept for room
  std::uint64_t messages_received = 0;  // published lazily by the receiver
  std::uint64_t bytes_received = 0;
  std::uint64_t blocked_recvs = 0;  // receives that slept for data
  // Bytes between the receiver's published read position and the sender's
  // write position: an upper bound (the receiver publishes lazily, at the
  // latest every quarter ring and whenever it finds the ring empty).
  std::uint64_t depth_bytes = 0;
};

struct PipeEndStats {
  ProcessId owner;  // pid 0: not taken
  bool owner_alive = false;
  bool closed = false;
  std::uint32_t peer_deaths = 0;  // times this end saw its peer dead
};

struct PipeStats {
  bool duplex = false;
  bool statistics = true;  // false: the message/byte counters stay 0
  std::uint64_t max_message = 0;
  WaitStrategy strategy = WaitStrategy::adaptive;
  // rings[e] flows into end e (sent by the other end).
  std::array<PipeRingStats, 2> rings{};
  std::array<PipeEndStats, 2> ends{};
};

// Reads a pipe's statistics from a read-only view without writing or
// blocking. Throws Error(wrong_kind) for another object and
// Error(corrupted) for a pipe whose control block does not validate.
[[nodiscard]] PipeStats pipe_stats(const SegmentView& view);

}  // namespace shmbus
