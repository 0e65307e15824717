#!/usr/bin/env python3
"""Round trips through Python's multiprocessing between two processes pinned
to two CPUs: the peer figures of bench/peers_bench.cpp, codec_bench.cpp,
service_bench.cpp and bridge_bench.cpp.

usage: py_mp_rtt.py KIND ITERATIONS BYTES PARENT_CPU CHILD_CPU

KIND:
  pipe, queue    multiprocessing Pipe (send_bytes) / Queue, BYTES-long bytes
  pipe_dict      {"symbol": str, "prices": 8 floats, "qty": int} with
                 Connection.send (pickled), as bench/codec_bench.cpp's struct
                 (BYTES unused)
  listener       multiprocessing.connection Listener/Client with an authkey
                 over AF_UNIX (service_bench's peer row)
  listener_tcp   the same over TCP loopback (bridge_bench's peer row)
  manager        one proxy call: Manager().dict()'s get() of a BYTES-long
                 value, the Manager's server threads pinned to CHILD_CPU
                 (what a Service call replaces)

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


def echo_client(address, family, cpu):
    """The listener's child: connects as a Client and echoes until STOP."""
    with Client(address, family=family, authkey=AUTHKEY) as c:
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


def report(samples, total, iters, exitcode):
    """Prints the result line, or fails when the peer failed."""
    if exitcode != 0:
        sys.exit("echo child failed: exitcode %r" % exitcode)
    samples.sort()
    at = lambda q: samples[int(q * (len(samples) - 1))]
    print(at(0.50), at(0.99), at(0.999), samples[-1], total, iters)


def main():
    kind, iters, size, pcpu, ccpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4]), int(sys.argv[5])
    ctx = mp.get_context("fork")
    os.sched_setaffinity(0, {pcpu})
    msg = b"x" * size
    child = None
    if kind == "pipe":
        a, b = ctx.Pipe(duplex=True)
        ends = (a.send_bytes, a.recv_bytes), (b.recv_bytes, b.send_bytes)
    elif kind == "pipe_dict":
        msg = {"symbol": "EURUSD", "prices": [1.0 + i for i in range(8)], "qty": 42}
        a, b = ctx.Pipe(duplex=True)
        ends = (a.send, a.recv), (b.recv, b.send)
    elif kind in ("listener", "listener_tcp"):
        if kind == "listener":
            family, address = "AF_UNIX", "/tmp/shmbus-bench-%d.sock" % os.getpid()
        else:
            family, address = "AF_INET", ("127.0.0.1", 0)
        listener = Listener(address, family=family, authkey=AUTHKEY)
        child = ctx.Process(target=echo_client, args=(listener.address, family, ccpu),
                            daemon=True)
        child.start()
        conn = listener.accept()
        ends = (conn.send_bytes, conn.recv_bytes), None
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
    (send, recv), child_ends = ends
    if child_ends is not None:
        child = ctx.Process(target=echo, args=(*child_ends, ccpu), daemon=True)
        child.start()
    samples, total = round_trips(send, recv, msg, iters)
    send(STOP)
    child.join(10)
    report(samples, total, iters, child.exitcode)


if __name__ == "__main__":
    main()
