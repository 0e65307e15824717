#!/usr/bin/env python3
"""Round trips through Python's multiprocessing Pipe or Queue between two
processes pinned to two CPUs; the peer figures of bench/peers_bench.cpp.

usage: py_mp_rtt.py pipe|queue|pipe_dict|listener ITERATIONS BYTES PARENT_CPU CHILD_CPU

pipe_dict sends {"symbol": str, "prices": 8 floats, "qty": int} with
Connection.send (pickled), as bench/codec_bench.cpp's struct (BYTES unused). listener: a
multiprocessing.connection Listener/Client pair with an authkey over TCP
loopback (the peer row of bench/bridge_bench.cpp).

Prints one line: p50_ns p99_ns p999_ns max_ns total_ns iterations
(the same percentile rule as the C++ LatencyRecorder: sorted[int(q*(n-1))]).
"""
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Client, Listener

STOP = b"S"
AUTHKEY = b"shmbus-bench-authkey"


def echo(recv, send, cpu):
    """The child: sends back what it receives until STOP."""
    os.sched_setaffinity(0, {cpu})
    while True:
        m = recv()
        if m == STOP:
            return
        send(m)


def echo_client(address, cpu):
    """The listener's child: connects as a Client and echoes until STOP."""
    with Client(address, authkey=AUTHKEY) as c:
        echo(c.recv_bytes, c.send_bytes, cpu)


def round_trips(send, recv, msg, iters):
    """Untimed warm-up (the child is running and pinned), then `iters`
    timed round trips: (samples, total_ns)."""
    clock = time.perf_counter_ns
    for _ in range(20):
        send(msg)
        recv()
    samples = []
    t_start = clock()
    for _ in range(iters):
        t0 = clock()
        send(msg)
        recv()
        samples.append(clock() - t0)
    return samples, clock() - t_start


def main():
    kind, iters, size, pcpu, ccpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4]), int(sys.argv[5])
    ctx = mp.get_context("fork")
    os.sched_setaffinity(0, {pcpu})
    msg = b"x" * size
    if kind == "pipe":
        a, b = ctx.Pipe(duplex=True)
        ends = (a.send_bytes, a.recv_bytes), (b.recv_bytes, b.send_bytes)
    elif kind == "pipe_dict":
        msg = {"symbol": "EURUSD", "prices": [1.0 + i for i in range(8)], "qty": 42}
        a, b = ctx.Pipe(duplex=True)
        ends = (a.send, a.recv), (b.recv, b.send)
    elif kind == "listener":
        listener = Listener(("127.0.0.1", 0), authkey=AUTHKEY)
        child = ctx.Process(target=echo_client, args=(listener.address, ccpu), daemon=True)
        child.start()
        conn = listener.accept()
        ends = (conn.send_bytes, conn.recv_bytes), None
    elif kind == "queue":
        q_in, q_out = ctx.Queue(), ctx.Queue()
        ends = (q_in.put, q_out.get), (q_in.get, q_out.put)
    else:
        sys.exit("unknown kind " + kind)
    (send, recv), child_ends = ends
    if child_ends is not None:
        child = ctx.Process(target=echo, args=(*child_ends, ccpu), daemon=True)
        child.start()
    samples, total = round_trips(send, recv, msg, iters)
    send(STOP)
    child.join(10)
    if child.exitcode != 0:
        sys.exit("echo child failed: exitcode %r" % child.exitcode)
    samples.sort()
    at = lambda q: samples[int(q * (len(samples) - 1))]
    print(at(0.50), at(0.99), at(0.999), samples[-1], total, iters)


if __name__ == "__main__":
    main()
