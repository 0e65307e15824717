#!/usr/bin/env bash
# The README's main command: installs what the peers and plots need, builds
# in Release (build/release), runs every bench/*_bench suite core-pinned,
# and writes a report folder: report.md (tables as ratios to the floor of
# the same run), json/<suite>.json (raw Google Benchmark output) and PNG plots.
#   scripts/bench.sh                 quick mode (default, under 2 minutes on 2 cores)
#   scripts/bench.sh --full          longer runs, 3 repetitions (medians)
#   scripts/bench.sh --out DIR       report folder (default report/<UTC date>)
# Environment: SHMBUS_BENCH_CPUS="a,b" overrides the topology's cpu pair.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=quick
out=""
while (($#)); do
  case $1 in
    --quick) mode=quick ;;
    --full) mode=full ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --out=*) out=${1#--out=} ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument '$1' (use --quick, --full, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-report/$(date -u +%Y-%m-%d)}
start=$(date +%s)

scripts/deps.sh bench

build=$root/build/release
echo "=== bench: configure + build Release ($build)"
mkdir -p "$build"
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$build.configure.log" 2>&1; then
  cat "$build.configure.log"; exit 1
fi
targets=()
for src in bench/*_bench.cpp; do targets+=("$(basename "$src" .cpp)"); done
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

case $mode in
  quick) gb=(--benchmark_min_time=0.05); per_suite=100; export SHMBUS_BENCH_PY_ITERS=${SHMBUS_BENCH_PY_ITERS:-2000} ;;
  full)  gb=(--benchmark_min_time=0.5 --benchmark_repetitions=3)
         per_suite=600; export SHMBUS_BENCH_PY_ITERS=${SHMBUS_BENCH_PY_ITERS:-20000} ;;
esac
mkdir -p "$out/json"
rm -f "$out"/json/*.json
n=${#targets[@]}
i=0
failed=()
for t in "${targets[@]}"; do
  i=$((i + 1))
  echo "=== bench [$i/$n] $t ($mode mode)"
  # Console lines on the terminal as each benchmark ends; JSON to the file.
  if ! timeout "$per_suite" "$build/bench/$t" "${gb[@]}" \
       --benchmark_out="$out/json/$t.json" --benchmark_out_format=json; then
    echo "bench: $t failed or ran past ${per_suite}s; its JSON may be partial" >&2
    failed+=("$t")
  fi
done

# A python3 that can import matplotlib draws the plots; any python3 writes the tables.
py=""
for cand in /usr/bin/python3 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import matplotlib' 2>/dev/null; then py=$cand; break; fi
done
if [[ -z $py ]]; then
  py=$(command -v /usr/bin/python3 || command -v python3)
fi
echo "=== bench: report ($py)"
"$py" scripts/report.py --json-dir "$out/json" --out "$out" --mode "$mode"
echo "bench: done in $(( $(date +%s) - start )) s; report in $out/report.md"
if ((${#failed[@]})); then
  echo "bench: suites with problems: ${failed[*]}" >&2
  exit 1
fi
