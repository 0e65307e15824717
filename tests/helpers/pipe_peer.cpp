// shmbus_helper_pipe_peer NAME END COUNT — an unrelated process for the
// pipe tests: takes END ("first" or "second") of the pipe NAME by name,
// echoes COUNT messages (each back with its bytes reversed), then closes.
// Exit codes: 0 done, 2 bad arguments, 3 open failed (any other error),
// 4 receive/send failed, 5 the end is already taken (Errc::already_exists).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "shmbus/pipe.hpp"

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  const std::string end = argv[2];
  const long count = std::strtol(argv[3], nullptr, 10);
  if (end != "first" && end != "second") return 2;
  try {
    auto c = shmbus::Connection::open(
        argv[1], end == "first" ? shmbus::PipeEnd::first : shmbus::PipeEnd::second);
    for (long i = 0; i < count; ++i) {
      std::vector<std::byte> msg = c.recv_bytes();
      std::reverse(msg.begin(), msg.end());
      if (c.send_bytes(msg) != shmbus::SendResult::ok) return 4;
    }
    c.close();
  } catch (const shmbus::Error& e) {
    std::fprintf(stderr, "pipe_peer: %s\n", e.what());
    return e.code() == shmbus::Errc::already_exists ? 5 : 3;
  }
  return 0;
}
