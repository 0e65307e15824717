#!/usr/bin/env python3
"""Python's Manager().dict() get or set with KEYS keys: the peer rows of
bench/dict_bench.cpp (one proxy call per operation to the manager's server
process).

usage: py_mp_dict.py get|set ITERATIONS KEYS PARENT_CPU CHILD_CPU

Prints one line: p50_ns p99_ns p999_ns max_ns total_ns iterations
(the same percentile rule as the C++ LatencyRecorder: sorted[int(q*(n-1))]).
"""
import multiprocessing as mp
import os
import random
import sys
import time


def main():
    mode, iters, nkeys, pcpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.sched_setaffinity(0, {pcpu})
    with mp.Manager() as manager:
        d = manager.dict({f"key{i}": float(i) for i in range(nkeys)})
        keys = [f"key{random.randrange(nkeys)}" for _ in range(iters)]
        for k in keys[:100]:
            d.get(k)
        samples = []
        start = time.perf_counter_ns()
        if mode == "get":
            for k in keys:
                t0 = time.perf_counter_ns()
                d.get(k)
                samples.append(time.perf_counter_ns() - t0)
        else:
            for i, k in enumerate(keys):
                t0 = time.perf_counter_ns()
                d[k] = float(i)
                samples.append(time.perf_counter_ns() - t0)
        total = time.perf_counter_ns() - start
    samples.sort()
    q = lambda f: samples[int(f * (len(samples) - 1))]
    print(q(0.5), q(0.99), q(0.999), samples[-1], total, len(samples))


if __name__ == "__main__":
    main()
