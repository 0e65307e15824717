// The reference figures alone: the cache-line floor and a raw futex
// ping-pong between two pinned processes.
#include "bench_support.hpp"

SHMBUS_BENCH_REFERENCES();
BENCHMARK_MAIN();
