#!/usr/bin/env python3
"""Round trips through Python's multiprocessing Pipe or Queue between two
processes pinned to two CPUs; the peer figures of bench/peers_bench.cpp.

usage: py_mp_rtt.py pipe|queue|pipe_dict ITERATIONS BYTES PARENT_CPU CHILD_CPU

pipe_dict sends {"symbol": str, "prices": 8 floats, "qty": int} with
Connection.send (pickled), as bench/codec_bench.cpp's struct (BYTES unused).

Prints one line: p50_ns p99_ns p999_ns max_ns total_ns iterations
(the same percentile rule as the C++ LatencyRecorder: sorted[int(q*(n-1))]).
"""
import multiprocessing as mp
import os
import sys
import time

STOP = b"S"


def echo_pipe(conn, cpu):
    os.sched_setaffinity(0, {cpu})
    while True:
        m = conn.recv_bytes()
        if m == STOP:
            return
        conn.send_bytes(m)


def echo_pipe_obj(conn, cpu):
    os.sched_setaffinity(0, {cpu})
    while True:
        m = conn.recv()
        if m == STOP:
            return
        conn.send(m)


def echo_queue(q_in, q_out, cpu):
    os.sched_setaffinity(0, {cpu})
    while True:
        m = q_in.get()
        if m == STOP:
            return
        q_out.put(m)


def main():
    kind, iters, size, pcpu, ccpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4]), int(sys.argv[5])
    ctx = mp.get_context("fork")
    os.sched_setaffinity(0, {pcpu})
    msg = b"x" * size
    samples = []
    clock = time.perf_counter_ns
    if kind == "pipe":
        a, b = ctx.Pipe(duplex=True)
        child = ctx.Process(target=echo_pipe, args=(b, ccpu), daemon=True)
        child.start()
        for _ in range(20):  # warm-up: the child is running and pinned
            a.send_bytes(msg)
            a.recv_bytes()
        t_start = clock()
        for _ in range(iters):
            t0 = clock()
            a.send_bytes(msg)
            a.recv_bytes()
            samples.append(clock() - t0)
        total = clock() - t_start
        a.send_bytes(STOP)
    elif kind == "pipe_dict":
        msg = {"symbol": "EURUSD", "prices": [1.0 + i for i in range(8)], "qty": 42}
        a, b = ctx.Pipe(duplex=True)
        child = ctx.Process(target=echo_pipe_obj, args=(b, ccpu), daemon=True)
        child.start()
        for _ in range(20):
            a.send(msg)
            a.recv()
        t_start = clock()
        for _ in range(iters):
            t0 = clock()
            a.send(msg)
            a.recv()
            samples.append(clock() - t0)
        total = clock() - t_start
        a.send(STOP)
    elif kind == "queue":
        q_in, q_out = ctx.Queue(), ctx.Queue()
        child = ctx.Process(target=echo_queue, args=(q_in, q_out, ccpu), daemon=True)
        child.start()
        for _ in range(20):
            q_in.put(msg)
            q_out.get()
        t_start = clock()
        for _ in range(iters):
            t0 = clock()
            q_in.put(msg)
            q_out.get()
            samples.append(clock() - t0)
        total = clock() - t_start
        q_in.put(STOP)
    else:
        sys.exit("unknown kind " + kind)
    child.join(10)
    if child.exitcode != 0:
        sys.exit("echo child failed: exitcode %r" % child.exitcode)
    samples.sort()
    at = lambda q: samples[int(q * (len(samples) - 1))]
    print(at(0.50), at(0.99), at(0.999), samples[-1], total, iters)


if __name__ == "__main__":
    main()
