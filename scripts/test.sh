#!/usr/bin/env bash
# The README's test command: installs what is missing, then builds and runs
# every test in three builds — Release, ASan+UBSan, TSan — plus a short
# libFuzzer run under ASan. Exits non-zero if any build or test fails.
#   scripts/test.sh              all builds
#   scripts/test.sh release      one build (release | asan | tsan | fuzz)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh test || exit 1

builds=("$@")
if ((${#builds[@]} == 0)); then builds=(release asan tsan fuzz); fi
jobs=$(nproc)
failed=()

for b in "${builds[@]}"; do
  dir=$root/build/$b
  case $b in
    release) args=(-DCMAKE_BUILD_TYPE=Release) ;;
    asan)    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMBUS_SANITIZE=address,undefined
                   -DSHMBUS_BUILD_BENCH=OFF) ;;
    tsan)    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMBUS_SANITIZE=thread
                   -DSHMBUS_BUILD_BENCH=OFF) ;;
    fuzz)    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++
                   -DSHMBUS_BUILD_FUZZ=ON -DSHMBUS_BUILD_BENCH=OFF -DSHMBUS_BUILD_TESTS=OFF
                   -DSHMBUS_BUILD_EXAMPLES=OFF -DSHMBUS_BUILD_TOOLS=OFF) ;;
    *) echo "test: unknown build '$b'"; exit 2 ;;
  esac
  echo "=== [$b] configure + build ($dir)"
  mkdir -p "$dir"
  if ! cmake -S . -B "$dir" -G Ninja "${args[@]}" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"; failed+=("$b:configure"); continue
  fi
  if ! cmake --build "$dir" -j "$jobs"; then failed+=("$b:build"); continue; fi
  label=()
  if [[ $b == fuzz ]]; then label=(-L fuzz); else label=(-LE fuzz); fi
  echo "=== [$b] test"
  # TSan needs a fixed address layout on kernels with high mmap entropy.
  runner=()
  if [[ $b == tsan ]] && setarch "$(uname -m)" -R true 2>/dev/null; then
    runner=(setarch "$(uname -m)" -R)
  fi
  if ! "${runner[@]}" ctest --test-dir "$dir" "${label[@]}" --output-on-failure -j "$jobs" \
       --timeout 300; then
    failed+=("$b:test")
  fi
done

if ((${#failed[@]})); then
  echo "test: FAILED: ${failed[*]}"
  exit 1
fi
echo "test: all builds passed (${builds[*]})"
