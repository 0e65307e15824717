#!/usr/bin/env python3
"""Round trips through Python's multiprocessing.connection Listener/Client
with an authkey over TCP loopback (what shmbus::bridge replaces): a forked
echo child connects as the Client; the parent accepts and measures. The
peer row of bench/bridge_bench.cpp.

usage: py_mp_listener.py ITERATIONS BYTES PARENT_CPU CHILD_CPU

Prints one line: p50_ns p99_ns p999_ns max_ns total_ns iterations
(the same percentile rule as the C++ LatencyRecorder).
"""
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Client, Listener

STOP = b"S"
KEY = b"shmbus-bench-authkey"


def echo(address, cpu):
    os.sched_setaffinity(0, {cpu})
    with Client(address, authkey=KEY) as c:
        while True:
            m = c.recv_bytes()
            if m == STOP:
                return
            c.send_bytes(m)


def main():
    iters, size, pcpu, ccpu = (int(a) for a in sys.argv[1:5])
    os.sched_setaffinity(0, {pcpu})
    msg = b"x" * size
    with Listener(("127.0.0.1", 0), authkey=KEY) as listener:
        child = mp.get_context("fork").Process(target=echo, args=(listener.address, ccpu),
                                               daemon=True)
        child.start()
        with listener.accept() as c:
            clock = time.perf_counter_ns
            for _ in range(20):
                c.send_bytes(msg)
                c.recv_bytes()
            samples = []
            t_start = clock()
            for _ in range(iters):
                t0 = clock()
                c.send_bytes(msg)
                c.recv_bytes()
                samples.append(clock() - t0)
            total = clock() - t_start
            c.send_bytes(STOP)
        child.join(10)
    if child.exitcode != 0:
        sys.exit("echo child failed: exitcode %r" % child.exitcode)
    samples.sort()
    at = lambda q: samples[int(q * (len(samples) - 1))]
    print(at(0.50), at(0.99), at(0.999), samples[-1], total, iters)


if __name__ == "__main__":
    main()
