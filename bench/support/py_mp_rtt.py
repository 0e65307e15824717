#!/usr/bin/env python3
"""Round trips through Python's multiprocessing Pipe or Queue between two
processes pinned to two CPUs; the peer figures of bench/peers_bench.cpp.

usage: py_mp_rtt.py pipe|queue|pipe_dict|listener|manager ITERATIONS BYTES PARENT_CPU CHILD_CPU

pipe_dict sends {"symbol": str, "prices": 8 floats, "qty": int} with
Connection.send (pickled), as bench/codec_bench.cpp's struct (BYTES unused).
listener: multiprocessing.connection Listener/Client over AF_UNIX with an
authkey, bytes echoed (bench/service_bench.cpp's peer row).
manager: one proxy call, Manager().dict()'s get() of a BYTES-long value (the
Manager's server process pinned to CHILD_CPU): what a Service call replaces.

Prints one line: p50_ns p99_ns p999_ns max_ns total_ns iterations
(the same percentile rule as the C++ LatencyRecorder: sorted[int(q*(n-1))]).
"""
import multiprocessing as mp
import os
import sys
import time

STOP = b"S"


def echo(recv, send, cpu):
    """The child: sends back what it receives until STOP."""
    os.sched_setaffinity(0, {cpu})
    while True:
        m = recv()
        if m == STOP:
            return
        send(m)


def listener_echo(address, authkey, cpu):
    """The child of `listener`: a Client that echoes until STOP."""
    from multiprocessing.connection import Client
    os.sched_setaffinity(0, {cpu})
    with Client(address, family="AF_UNIX", authkey=authkey) as c:
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
        from multiprocessing.connection import Listener
        address = "/tmp/shmbus-bench-%d.sock" % os.getpid()
        authkey = b"shmbus-bench"
        listener = Listener(address, family="AF_UNIX", authkey=authkey)
        child = ctx.Process(target=listener_echo, args=(address, authkey, ccpu), daemon=True)
        child.start()
        conn = listener.accept()
        samples, total = round_trips(conn.send_bytes, conn.recv_bytes, msg, iters)
        conn.send_bytes(STOP)
        child.join(10)
        listener.close()
        report(samples, total, iters, child.exitcode)
        return
    elif kind == "manager":
        manager = ctx.Manager()
        d = manager.dict()
        d["k"] = msg
        server = manager._process.pid  # each of its threads (one per connection)
        for tid in os.listdir("/proc/%d/task" % server):
            os.sched_setaffinity(int(tid), {ccpu})
        samples, total = round_trips(lambda m: None, lambda: d.get("k"), msg, iters)
        manager.shutdown()
        report(samples, total, iters, 0)
        return
    elif kind == "queue":
        q_in, q_out = ctx.Queue(), ctx.Queue()
        ends = (q_in.put, q_out.get), (q_in.get, q_out.put)
    else:
        sys.exit("unknown kind " + kind)
    (send, recv), (child_recv, child_send) = ends
    child = ctx.Process(target=echo, args=(child_recv, child_send, ccpu), daemon=True)
    child.start()
    samples, total = round_trips(send, recv, msg, iters)
    send(STOP)
    child.join(10)
    report(samples, total, iters, child.exitcode)


def report(samples, total, iters, exitcode):
    """Prints the result line, or fails when the peer failed."""
    if exitcode != 0:
        sys.exit("echo child failed: exitcode %r" % exitcode)
    samples.sort()
    at = lambda q: samples[int(q * (len(samples) - 1))]
    print(at(0.50), at(0.99), at(0.999), samples[-1], total, iters)


if __name__ == "__main__":
    main()
