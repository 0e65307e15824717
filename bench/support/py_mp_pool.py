#!/usr/bin/env python3
"""Python's multiprocessing.Pool, the peer of bench/pool_bench.cpp.

usage: py_mp_pool.py apply CALLS PARENT_CPU CHILD_CPU
       py_mp_pool.py map CALLS ITEMS PARENT_CPU CPU,CPU,...
       py_mp_pool.py map_strings CALLS ITEMS PARENT_CPU CPU,CPU,...

apply: Pool(1), its worker pinned to CHILD_CPU, apply(f, (x,)) CALLS times.
map:   one worker pinned to each CPU, map(f, range(ITEMS)) CALLS times.
map_strings: the same with upper(s) over ITEMS strings of 15..63 characters
       (the items of BM_Pool_MapStrings).
Prints one line per call: p50_ns p99_ns p999_ns max_ns total_ns calls
(the same percentile rule as the C++ LatencyRecorder: sorted[int(q*(n-1))]).
"""
import multiprocessing as mp
import os
import sys
import time


def f(x):
    return x * x


def upper(s):
    return s.upper()


def pin_next(counter, cpus):
    with counter.get_lock():
        i = counter.value
        counter.value += 1
    os.sched_setaffinity(0, {cpus[i % len(cpus)]})


def main():
    kind, calls = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context("fork")
    if kind == "apply":
        pcpu, cpus, items = int(sys.argv[3]), [int(sys.argv[4])], 1
    elif kind in ("map", "map_strings"):
        items, pcpu = int(sys.argv[3]), int(sys.argv[4])
        cpus = [int(c) for c in sys.argv[5].split(",")]
    else:
        sys.exit("unknown kind " + kind)
    counter = ctx.Value("i", 0)
    samples = []
    clock = time.perf_counter_ns
    with ctx.Pool(len(cpus), initializer=pin_next, initargs=(counter, cpus)) as pool:
        os.sched_setaffinity(0, {pcpu})
        xs = list(range(items))
        fn = f
        if kind == "map_strings":
            xs = [("s%d" % i).ljust(15 + i % 49, "x") for i in range(items)]
            fn = upper
        for _ in range(20):  # warm-up: the workers run and are pinned
            pool.apply(f, (3,)) if kind == "apply" else pool.map(fn, xs)
        t_start = clock()
        for _ in range(calls):
            t0 = clock()
            pool.apply(f, (3,)) if kind == "apply" else pool.map(fn, xs)
            samples.append(clock() - t0)
        total = clock() - t_start
    samples.sort()
    at = lambda q: samples[int(q * (len(samples) - 1))]
    print(at(0.50), at(0.99), at(0.999), samples[-1], total, calls)


if __name__ == "__main__":
    main()
