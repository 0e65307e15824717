#!/usr/bin/env bash
# Queue soak: the 4x4 multi-process run with 1,000,000 messages per
# producer, and the SIGKILL fault suite at ten times its default size
# (1200 producer kills, 1000 consumer kills, 300 large-message kills),
# repeated ROUNDS times (default 3). Not part of ctest: minutes, not seconds.
#
#   tests/soak_queue.sh [build-dir] [rounds]
set -euo pipefail
build="${1:-build/rel}"
rounds="${2:-3}"
for bin in multiprocess_queue_mpmc_test fault_queue_kill_test; do
  if [[ ! -x "$build/tests/$bin" ]]; then
    echo "missing $build/tests/$bin: build it first" >&2
    exit 2
  fi
done
export SHMBUS_SOAK=1
for ((i = 1; i <= rounds; ++i)); do
  echo "== soak round $i/$rounds"
  "$build/tests/multiprocess_queue_mpmc_test" --gtest_filter='*FourByFour*'
  "$build/tests/fault_queue_kill_test"
done
echo "queue soak: $rounds rounds passed"
