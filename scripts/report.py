#!/usr/bin/env python3
"""Turns Google Benchmark JSON files from shmbus's bench suites into a report.

usage: report.py --json-dir DIR [--out DIR] [--mode quick|full] [--date D]
                 [--cpu-model M] [--no-plots]

Writes into --out (default: the parent of --json-dir):
  report.md        one table per suite (every benchmark against the floor of
                   the same binary run), a summary across suites and, when
                   shmbus channels are present, each channel against each peer
  latency.png      round-trip percentiles by transport      (needs matplotlib)
  throughput.png   streaming rate by message size            (needs matplotlib)

Benchmarks are paired by name: BM_<Transport>_<Mode>_<Measure>/<bytes>.
Round trips (Measure RTT) are compared with BM_Floor_CacheLine_RTT (one cache
line bounced between the two processes) and BM_Futex_Raw_RTT (a bare futex
wake-up ping-pong) from the same JSON file, by their p50_ns counters; the
primary ratio is the futex one for Block modes and the floor one otherwise.
A round trip that measured its own reference beside it (bench_support's
ReferenceBeside: counters floor_ns, x_floor, floor_drift or futex_ns, x_futex,
futex_drift) is read against that one instead, since the host moves the
vCPUs and the suite's floor may be minutes old; its drift (reference after /
before the benchmark) is shown, and rows beyond DRIFT_LIMIT are flagged.
Without matplotlib the tables are still written and the report says the plots
were skipped. Only the standard library is needed for the tables.
"""
import argparse
import datetime
import json
import math
import os
import re
import sys

FLOOR = "Floor"
FUTEX = "Futex"
MEMCPY = "Memcpy"
# BM_Paired_<Subject>Vs<Peer>_<Mode>_<Measure>/<bytes>: a subject and its
# peer alternated in blocks in one timed loop (bench_support's
# paired_blocks), reported by their own counters (ratio, near_ratio, ...).
PAIRED = "Paired"
# shmbus's own transports; every other name (but the references) is a peer.
SHMBUS = {
    "Pipe", "PipeNoStats", "PipeNoCoalesce", "PipeAdaptive", "PipeWait8", "Queue", "QueueBlocking", "Lock", "RLock", "Event",
    "Semaphore", "BoundedSemaphore", "Condition", "Barrier", "Value", "Array", "Pool",
}
# Sketches of a design to come, measured beside what ships (not peers).
SKETCH = {"LaneSketch", "LaneClaim"}
SHMBUS_FROM_ENV = os.environ.get("SHMBUS_REPORT_TRANSPORTS", "")
SHMBUS |= {p for p in SHMBUS_FROM_ENV.split(",") if p}

SUFFIX = re.compile(r"^(real_time|manual_time|process_time|iterations:\d+|min_time:.*|"
                    r"repeats:\d+|threads:\d+)$")
TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
# A reference beside a benchmark that moved more than this (after / before)
# while the benchmark ran makes its ratio unreliable.
DRIFT_LIMIT = 0.20
# A paired row with fewer block pairs than this (a loaded host stretches a
# block: Google Benchmark then stops after a handful) is flagged unreliable.
MIN_PAIRS = 20
# A paired row's near or far median counts only from this share of its pairs.
MIN_SHARE = 0.10
# A paired row whose ratio's p90 / p10 exceeds this is flagged unreliable.
MAX_SPREAD = 2.0


class Beside:
    """The reference a benchmark measured right before and after itself."""

    def __init__(self, against, ref_ns, ratio, drift):
        self.against = against  # "floor" or "futex"
        self.ref_ns = ref_ns
        self.ratio = ratio
        self.drift = drift

    @property
    def unreliable(self):
        return self.drift is None or abs(self.drift - 1.0) > DRIFT_LIMIT


class Bench:
    """One benchmark result, parsed from its name and counters."""

    def __init__(self, suite, entry):
        self.suite = suite
        run_name = entry.get("run_name") or entry["name"]
        parts = [p for p in run_name.split("/") if not SUFFIX.match(p)]
        self.base = parts[0]
        self.args = parts[1:]
        self.size = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.name = "/".join(parts)
        words = self.base[3:].split("_") if self.base.startswith("BM_") else [self.base]
        self.transport = words[0]
        self.measure = "RTT" if words[-1] == "RTT" else (
            "Stream" if any(w.endswith("Stream") for w in words) else words[-1])
        self.mode = words[1] if len(words) >= 3 else ("Stream" if self.measure == "Stream"
                                                       else "")
        self.error = entry.get("error_message") if entry.get("error_occurred") else None
        unit = TO_NS.get(entry.get("time_unit", "ns"), 1.0)
        self.real_ns = float(entry.get("real_time", 0.0)) * unit
        self.p50 = entry.get("p50_ns")
        self.p99 = entry.get("p99_ns")
        self.p999 = entry.get("p999_ns")
        self.max = entry.get("max_ns")
        self.items = entry.get("items_per_second")
        self.bytes = entry.get("bytes_per_second")
        self.iterations = entry.get("iterations")
        self.counters = entry
        self.beside = {}
        for against in ("floor", "futex"):
            x = entry.get("x_" + against)
            if x is not None and not self.error:
                self.beside[against] = Beside(against, entry.get(against + "_ns"), float(x),
                                              entry.get(against + "_drift"))

    @property
    def kind(self):
        if self.transport == PAIRED:
            return "paired"
        if self.transport in (FLOOR, FUTEX, MEMCPY):
            return "reference"
        if self.transport in SKETCH:
            return "sketch"
        return "shmbus" if self.transport in SHMBUS else "peer"

    @property
    def label(self):
        return self.name[3:] if self.name.startswith("BM_") else self.name

    @property
    def blocking(self):
        return self.mode == "Block" or self.transport == FUTEX


class Suite:
    def __init__(self, path):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.truncated = False
        with open(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except ValueError:
            # A suite killed by its time limit leaves the array unclosed:
            # keep the runs it finished.
            data = json.loads(text.rstrip().rstrip(",") + "\n  ]\n}")
            self.truncated = True
        self.context = data.get("context", {})
        self.benches = self._pick(data.get("benchmarks", []))
        self.floor = self._ref(FLOOR)
        self.futex = self._ref(FUTEX)

    def _pick(self, entries):
        # Per run: the median aggregate when repetitions were run, else the
        # first (only) iteration entry. Order of first appearance is kept.
        order, chosen = [], {}
        for e in entries:
            key = e.get("run_name") or e["name"]
            if key not in chosen:
                order.append(key)
                chosen[key] = None
            if e.get("run_type") == "aggregate":
                if e.get("aggregate_name") == "median":
                    chosen[key] = e
            elif chosen[key] is None:
                chosen[key] = e
        return [Bench(self.name, chosen[k]) for k in order if chosen[k] is not None]

    def _ref(self, transport):
        for b in self.benches:
            if b.transport == transport and b.p50 and not b.error:
                return b
        return None

    def ratio(self, b, ref):
        if ref is None or b.p50 is None or b.error or not ref.p50:
            return None
        return b.p50 / ref.p50

    def ratio_to(self, b, against):
        """(ratio, Beside or None): b against "floor" or "futex", from the
        reference measured beside b when it has one, else from this suite's."""
        if against in b.beside:
            return b.beside[against].ratio, b.beside[against]
        return self.ratio(b, self.futex if against == "futex" else self.floor), None

    @property
    def has_beside(self):
        return any(b.beside for b in self.benches)


def fmt_ns(v):
    if v is None:
        return "—"
    v = float(v)
    if v < 1e3:
        return "%.0f ns" % v
    if v < 1e6:
        return "%.1f µs" % (v / 1e3)
    if v < 1e9:
        return "%.1f ms" % (v / 1e6)
    return "%.2f s" % (v / 1e9)


def fmt_ratio(r, bold=False):
    if r is None:
        return "—"
    if r < 0.1:
        s = "%.2g" % r
    else:
        s = "%.2f" % r if r < 10 else ("%.1f" % r if r < 100 else "%.0f" % r)
    s += "×"
    return "**%s**" % s if bold else s


def fmt_rate(v, unit=""):
    if v is None:
        return "—"
    v = float(v)
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if v >= div:
            return "%.2f%s%s" % (v / div, suffix, unit)
    return "%.0f %s" % (v, unit)


def fmt_drift(beside):
    """'+3%' (after / before - 1), with the verdict when beyond DRIFT_LIMIT."""
    if beside is None:
        return "—"
    if beside.drift is None:
        return "? **unreliable**"
    s = "%+.0f%%" % ((beside.drift - 1.0) * 100)
    return s + " **unreliable**" if beside.unreliable else s


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def suite_tables(s):
    out = []
    ctx = s.context
    pair = ctx.get("shmbus_cpus", "?")
    why = ctx.get("shmbus_cpus_why", "")
    load = ctx.get("load_avg")
    out.append("## %s\n" % s.name)
    meta = "Run %s, cpus %s" % (ctx.get("date", "?"), pair)
    if why:
        meta += " (%s)" % why
    if load:
        meta += "; load average at start %s" % ", ".join("%.2f" % x for x in load)
    if ctx.get("library_build_type") == "debug":
        meta += "; Google Benchmark library built as debug"
    out.append(meta + ".\n")
    if s.truncated:
        out.append("**This suite did not finish** (killed at its time limit or crashed): "
                   "only the benchmarks it completed are shown.\n")
    if s.floor:
        out.append("Floor (one cache line bounced, p50): %s. Raw futex round trip (p50): %s.\n"
                   % (fmt_ns(s.floor.p50), fmt_ns(s.futex.p50 if s.futex else None)))
    else:
        out.append("No BM_Floor_CacheLine_RTT in this run: ratios to the floor are missing.\n")

    besides = [x for b in s.benches for x in b.beside.values()]
    ranges = []
    for against in ("floor", "futex"):
        refs = [x.ref_ns for x in besides if x.against == against and x.ref_ns]
        if refs:
            lo, hi = fmt_ns(min(refs)), fmt_ns(max(refs))
            ranges.append("the %s %s" % (against, lo if lo == hi else "%s–%s" % (lo, hi)))
    if ranges:
        out.append("Measured beside the round trips (p50): %s.\n" % "; ".join(ranges))

    rtts = [b for b in s.benches if b.measure == "RTT" and b.kind != "paired"]
    if rtts:
        beside_col = s.has_beside
        extra = " reference beside (drift) |" if beside_col else ""
        out.append("| round trip | kind | p50 | p99 | p99.9 | max | × floor | × futex |" + extra)
        out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" +
                   (" ---: |" if beside_col else ""))
        for b in rtts:
            if b.error:
                out.append("| %s | %s | error: %s | | | | | |%s" % (
                    b.label, b.kind, b.error, " |" if beside_col else ""))
                continue
            (rf, bf), (rx, bx) = s.ratio_to(b, "floor"), s.ratio_to(b, "futex")
            row = "| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                b.label, b.kind, fmt_ns(b.p50), fmt_ns(b.p99), fmt_ns(b.p999), fmt_ns(b.max),
                fmt_ratio(rf, bold=not b.blocking), fmt_ratio(rx, bold=b.blocking))
            if beside_col:
                x = bf or bx
                row += (" %s %s (%s) |" % (fmt_ns(x.ref_ns), x.against, fmt_drift(x)) if x
                        else " — |")
            out.append(row)
        out.append("")
        out.extend(against_pipe(s, rtts))
        out.append("Bold: the ratio that matters for the mode (busy and adaptive round trips "
                   "against the floor, blocking ones against the raw futex).%s\n" % (
                       " A round trip with a reference beside it is divided by that reference "
                       "(measured right before and right after it, the mean of the two), the "
                       "other ratio by the suite's reference above; drift is after / before, "
                       "and beyond ±%.0f%% the row is unreliable." % (DRIFT_LIMIT * 100)
                       if beside_col else ""))

    streams = [b for b in s.benches if b.measure == "Stream" and b.kind != "paired"]
    if streams:
        # The peer a stream is measured against: the queues' issue names
        # Boost.Interprocess message_queue, the pipe's Boost.Lockfree
        # spsc_queue; a row is compared with the peer's row of the same
        # shape (1P1C, ...) and message size.
        peer = ("BoostIpcMq" if any(b.transport == "BoostIpcMq" for b in streams)
                else "BoostLockfree")
        def shape(b):
            return b.base.split("_Stream", 1)[1] if "_Stream" in b.base else ""
        refs = {(shape(b), b.size): b for b in streams if b.transport == peer and not b.error}
        out.append("| stream | kind | msg/s | bytes/s | × %s (same shape and size) |" % peer)
        out.append("| --- | --- | ---: | ---: | ---: |")
        for b in streams:
            if b.error:
                out.append("| %s | %s | error: %s | | |" % (b.label, b.kind, b.error))
                continue
            ref = refs.get((shape(b), b.size))
            r = (b.items / ref.items) if (ref and b.items and ref.items) else None
            out.append("| %s | %s | %s | %s | %s |" % (
                b.label, b.kind, fmt_rate(b.items), fmt_rate(b.bytes, "B"), fmt_ratio(r)))
        out.append("")
        out.append("Rates above 1× beat %s of the same shape and message size in the same "
                   "run.\n" % ("Boost.Interprocess message_queue" if peer == "BoostIpcMq"
                               else "Boost.Lockfree's spsc_queue"))

    others = [b for b in s.benches if b.measure not in ("RTT", "Stream") and b.kind != "paired"]
    if others:
        out.append("| other | kind | time per iteration | items/s |")
        out.append("| --- | --- | ---: | ---: |")
        for b in others:
            out.append("| %s | %s | %s | %s |" % (
                b.label, b.kind, "error: %s" % b.error if b.error else fmt_ns(b.real_ns),
                fmt_rate(b.items)))
        out.append("")
    return out


def against_pipe(s, rtts):
    """Lines comparing each other shmbus busy round trip with the pipe's of
    the same size in the same suite (the queue's issue holds its busy round
    trip against the SPSC pipe's): each over its own floor, so a floor that
    moved between the two does not enter the ratio."""
    pipes = {b.size: b for b in rtts
             if b.transport == "Pipe" and b.mode == "Busy" and not b.error}
    out = []
    for b in rtts:
        pipe = pipes.get(b.size)
        if (b.error or pipe is None or b is pipe or b.kind != "shmbus" or b.mode != "Busy"):
            continue
        (rb, _), (rp, _) = s.ratio_to(b, "floor"), s.ratio_to(pipe, "floor")
        if rb and rp:
            out.append("%s against %s (each over its floor): **%s** (%s / %s).\n" % (
                b.label, pipe.label, fmt_ratio(rb / rp), fmt_ratio(rb), fmt_ratio(rp)))
    return out


# The open performance aims that a paired row measures: (issue, aim, limit,
# rate). A round trip's aim is ratio <= limit (subject time / peer time);
# a stream's (rate True) is the subject's rate / the peer's >= limit, i.e.
# 1 / ratio. Rows "near and far" are judged on both placements' medians.
AIMS = {
    "BM_Paired_TopicVsPipe_Busy_RTT/64":
        ("19", "topic busy round trip ≤ 1.1× the pipe's, near and far", 1.1, False),
    "BM_Paired_PipeVsFloor_Busy_RTT/64":
        ("22", "pipe busy round trip 64 B ≤ 1.15× the floor, near and far", 1.15, False),
    "BM_Paired_PipeVsBoostLockfree_Stream/8":
        ("22", "pipe stream 8 B ≥ 1.5× Boost.Lockfree's rate", 1.5, True),
    "BM_Paired_PipeVsBoostLockfree_Stream/64":
        ("22", "pipe stream 64 B ≥ 2× Boost.Lockfree's rate", 2.0, True),
    "BM_Paired_WaitAny64VsLinuxEpoll64_Block_RTT/8":
        ("17", "blocking wait() over 64 ≤ 1.1× epoll_wait over 64", 1.1, False),
}


class Paired:
    """A BM_Paired_* row: its subject, peer and per-pair ratio counters."""

    def __init__(self, suite, b):
        self.suite = suite
        self.b = b
        c = b.counters
        words = b.base[3:].split("_")
        self.subject, _, self.peer = words[1].partition("Vs") if len(words) > 1 else ("?", "", "?")
        self.stream = b.measure == "Stream"
        get = lambda k: c.get(k)
        self.ratio = get("ratio")
        self.p10, self.p90 = get("ratio_p10"), get("ratio_p90")
        self.near, self.far = get("near_ratio"), get("far_ratio")
        self.near_share = get("near_share")
        # A placement held by under MIN_SHARE of the pairs is left out: on a
        # loaded host a preempted floor block reads "far" in a near run.
        if self.near_share is not None:
            if self.near_share < MIN_SHARE:
                self.near = None
            if self.near_share > 1 - MIN_SHARE:
                self.far = None
        self.floor_ns = get("floor_ns")
        self.subject_ns, self.peer_ns = get("subject_p50_ns"), get("peer_p50_ns")
        self.pairs = get("pairs")
        self.aim = AIMS.get(b.name)
        self.few = not self.pairs or self.pairs < MIN_PAIRS
        # The 10th-90th percentile band wider than MAX_SPREAD: preemptions
        # hit so many blocks that the median is no longer one placement's.
        self.wide = bool(self.p10 and self.p90 and self.p90 / self.p10 > MAX_SPREAD)

    def shown(self, r):
        """A ratio as the aim reads it: the rate ratio for streams."""
        if r is None or r <= 0:
            return None
        return 1.0 / r if self.stream else r

    def met(self, r):
        r = self.shown(r)
        if r is None or self.aim is None:
            return None
        return r >= self.aim[2] if self.aim[3] else r <= self.aim[2]

    def placement(self):
        share = self.near_share
        if share is None:
            return "?"
        if share >= 1 - MIN_SHARE:
            return "near"
        if share <= MIN_SHARE:
            return "far"
        return "mixed (%.0f%% near)" % (100 * share)


def paired_rows(suites):
    return [Paired(s, b) for s in suites for b in s.benches
            if b.kind == "paired" and not b.error and b.counters.get("ratio")]


def paired_tables(suites):
    """The paired rows' table, and each aim they measure with its status."""
    rows = paired_rows(suites)
    errors = [(s, b) for s in suites for b in s.benches if b.kind == "paired" and b.error]
    out = []
    if not rows and not errors:
        return out
    out.append("## Paired ratios: the subject and its peer alternated in blocks, same "
               "placement\n")
    out.append("Each row ran its subject and its peer in one timed loop, in the same two "
               "processes on the same pinned cpus, alternating short blocks of each (which "
               "goes first alternates too); a block pair saw one placement of the vCPUs, so "
               "the ratio is the median over block pairs of subject / peer time, with its "
               "10th–90th percentiles. Streams show rates instead (peer time / subject time: "
               "> 1 means the subject is faster). The floor (one cache line's round trip, "
               "ran beside each pair or before and after) shows the placement: near ≈ 100 "
               "ns, far ≈ 400 ns; near and far columns are the medians over the pairs of "
               "each (shown from %.0f%% of the pairs). Fewer than %d pairs (a loaded host stretches each block) and the row "
               "is **unreliable**, as it is when its p90 is over %.0f× its p10 (preemptions in "
               "many blocks).\n" % (100 * MIN_SHARE, MIN_PAIRS, MAX_SPREAD))
    out.append("| row | suite | subject p50 | peer p50 | ratio (p10–p90) | near | far | floor | "
               "placement | pairs |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for p in rows:
        lo, hi = p.shown(p.p10), p.shown(p.p90)
        if p.stream:
            lo, hi = hi, lo
        rng = " (%s–%s)" % (fmt_ratio(lo), fmt_ratio(hi)) if lo and hi else ""
        out.append("| %s | %s | %s | %s | **%s**%s | %s | %s | %s | %s | %s |" % (
            p.b.label, p.suite.name, fmt_ns(p.subject_ns), fmt_ns(p.peer_ns),
            fmt_ratio(p.shown(p.ratio)), rng, fmt_ratio(p.shown(p.near)),
            fmt_ratio(p.shown(p.far)), fmt_ns(p.floor_ns), p.placement(),
            ("%d" % p.pairs + (" **unreliable**" if p.few or p.wide else "")) if p.pairs
            else "?"))
    for s, b in errors:
        out.append("| %s | %s | error: %s | | | | | | | |" % (b.label, s.name, b.error))
    out.append("")

    aimed = [p for p in rows if p.aim]
    if aimed:
        out.append("## Where each performance aim stands (paired rows)\n")
        out.append("| issue | aim | paired figure | status |")
        out.append("| --- | --- | --- | --- |")
        for p in aimed:
            issue, aim, _, _ = p.aim
            fig = "%s (%s)" % (fmt_ratio(p.shown(p.ratio)), p.placement())
            parts = []
            for name, r in (("near", p.near), ("far", p.far)):
                if r is not None:
                    parts.append("%s %s" % (name, fmt_ratio(p.shown(r))))
            if parts:
                fig += "; " + ", ".join(parts)
            if "near and far" in aim:
                judged = [(name, p.met(r)) for name, r in (("near", p.near), ("far", p.far))]
                seen = [(n, m) for n, m in judged if m is not None]
                missing = [n for n, m in judged if m is None]
                status = ", ".join("%s %s" % (n, "met" if m else "**not met**") for n, m in seen)
                if missing:
                    status += "; %s not drawn" % " and ".join(missing)
            else:
                m = p.met(p.ratio)
                status = "met" if m else "**not met**"
            if p.few:
                status += " (%d pairs: unreliable)" % (p.pairs or 0)
            elif p.wide:
                status += " (p10–p90 too wide: unreliable)"
            out.append("| %s | %s | %s | %s |" % (issue, aim, fig, status))
        out.append("")
    return out


def summary_tables(suites):
    """Across suites: every round trip by its ratio to its own suite's floor
    (or futex), and each shmbus channel against each peer."""
    out = []
    rows = []
    for s in suites:
        for b in s.benches:
            if b.measure != "RTT" or b.error or b.kind in ("reference", "paired"):
                continue
            against = "futex" if b.blocking else "floor"
            r, beside = s.ratio_to(b, against)
            if r is not None:
                rows.append((b, s, r, against, beside))
    if not rows:
        return out
    n_beside = sum(1 for x in rows if x[4])
    out.append("## Summary: round trips against their own floor\n")
    if n_beside:
        out.append("Ratios come from a reference measured beside each benchmark: the floor "
                   "(busy and adaptive round trips) or the raw futex (blocking ones), measured "
                   "right before and right after the benchmark on the same cpus, the mean of "
                   "the two. Rows marked \"suite\" had none and are divided by the reference "
                   "their suite ran earlier in the same binary. Drift is the reference after / "
                   "before the benchmark: beyond ±%.0f%% the host moved the vCPUs while it ran "
                   "and the row is **unreliable**.\n" % (DRIFT_LIMIT * 100))
    else:
        out.append("Each row is divided by the reference measured in the same binary run, so "
                   "rows from different suites compare.\n")
    out.append("| round trip | suite | kind | p50 | ratio | against | reference p50 | drift |")
    out.append("| --- | --- | --- | ---: | ---: | --- | ---: | ---: |")
    for b, s, r, against, beside in sorted(rows, key=lambda x: (x[3], x[2])):
        if beside:
            ref_ns, where = beside.ref_ns, "beside"
        else:
            ref = s.futex if against == "futex" else s.floor
            ref_ns, where = (ref.p50 if ref else None), "suite"
        out.append("| %s | %s | %s | %s | %s | %s (%s) | %s | %s |" % (
            b.label, s.name, b.kind, fmt_ns(b.p50), fmt_ratio(r), against, where,
            fmt_ns(ref_ns), fmt_drift(beside)))
    out.append("")
    unreliable = [x for x in rows if x[4] and x[4].unreliable]
    if unreliable:
        out.append("%d of %d round trips with a reference beside them are unreliable (drift "
                   "beyond ±%.0f%%).\n" % (len(unreliable), n_beside, DRIFT_LIMIT * 100))

    chans = [x for x in rows if x[0].kind == "shmbus"]
    peers = [x for x in rows if x[0].kind == "peer"]
    if chans and peers:
        out.append("## shmbus channels against each peer (round trip p50)\n")
        out.append("A cell is how many times longer the peer's round trip takes than the "
                   "channel's, both normalised to their own reference (the raw futex when both "
                   "block, else the floor; the one measured beside the benchmark where there is "
                   "one, else the suite's; > 1: shmbus is faster).\n")
        out.append("| channel | " + " | ".join(p[0].label for p in peers) + " |")
        out.append("| --- |" + " ---: |" * len(peers))
        for c in chans:
            cells = []
            for p in peers:
                # Two blocking round trips compare through the futex, anything
                # else through the floor.
                against = "futex" if c[0].blocking and p[0].blocking else "floor"
                cr, cb = c[1].ratio_to(c[0], against)
                pr, pb = p[1].ratio_to(p[0], against)
                cell = fmt_ratio(pr / cr) if (cr and pr) else "—"
                if (cb and cb.unreliable) or (pb and pb.unreliable):
                    cell += " (unreliable)"
                cells.append(cell)
            out.append("| %s | %s |" % (c[0].label, " | ".join(cells)))
        out.append("")
    return out


def plot(suites, out_dir):
    """Writes latency.png and throughput.png; returns their names, or raises
    ImportError when matplotlib is missing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    seen_refs = set()
    rtts = []
    for s in suites:
        for b in s.benches:
            if b.measure != "RTT" or b.error or b.p50 is None or b.kind == "paired":
                continue
            if b.kind == "reference":
                if b.transport in seen_refs:
                    continue
                seen_refs.add(b.transport)
            rtts.append(b)
    if rtts:
        rtts.sort(key=lambda b: b.p50)
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(rtts) + 1.5))
        ys = range(len(rtts))
        h = 0.27
        for i, (attr, label) in enumerate((("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"))):
            vals = [getattr(b, attr) or float("nan") for b in rtts]
            ax.barh([y + (i - 1) * h for y in ys], vals, height=h, label=label)
        ax.set_yticks(list(ys))
        ax.set_yticklabels(["%s (%s)" % (b.label, b.suite) if b.kind != "reference" else b.label
                            for b in rtts], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("round trip (ns, log scale)")
        floors = [b for b in rtts if b.transport == FLOOR]
        if floors:
            ax.axvline(floors[0].p50, color="k", linestyle=":", linewidth=1,
                       label="floor p50")
        ax.set_title("Round-trip latency percentiles by transport (lower is better)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "latency.png"), dpi=110)
        plt.close(fig)
        written.append("latency.png")

    lines = {}
    for s in suites:
        for b in s.benches:
            if (b.measure == "Stream" and not b.error and b.size and b.items
                    and b.kind != "paired"):
                lines.setdefault((b.transport, b.suite), []).append(b)
    if lines:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for (transport, suite), bs in sorted(lines.items()):
            bs.sort(key=lambda b: b.size)
            label = "%s (%s)" % (transport, suite)
            ax1.plot([b.size for b in bs], [b.items for b in bs], marker="o", label=label)
            ax2.plot([b.size for b in bs], [b.bytes or float("nan") for b in bs], marker="o",
                     label=label)
        for ax, ylabel in ((ax1, "messages per second"), (ax2, "bytes per second")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("message size (bytes)")
            ax.set_ylabel(ylabel)
            ax.grid(which="both", alpha=0.3)
        ax1.legend(fontsize=7)
        fig.suptitle("Streaming throughput by message size (higher is better)")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "throughput.png"), dpi=110)
        plt.close(fig)
        written.append("throughput.png")
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json-dir", required=True, help="folder of <suite>.json files")
    ap.add_argument("--out", help="report folder (default: parent of --json-dir)")
    ap.add_argument("--mode", default="", help="quick or full, for the title")
    ap.add_argument("--date", help="date for the title (default: from the JSON)")
    ap.add_argument("--cpu-model", help="CPU model (default: from /proc/cpuinfo)")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)

    out_dir = args.out or os.path.dirname(os.path.abspath(args.json_dir))
    os.makedirs(out_dir, exist_ok=True)
    files = sorted(f for f in os.listdir(args.json_dir) if f.endswith(".json"))
    suites = []
    problems = []
    for f in files:
        try:
            suites.append(Suite(os.path.join(args.json_dir, f)))
        except (OSError, ValueError, KeyError) as e:
            problems.append("%s: unreadable (%s)" % (f, e))
    if not suites:
        print("report: no benchmark JSON in %s" % args.json_dir, file=sys.stderr)
        return 1

    date = args.date or (suites[0].context.get("date", "")[:10] or
                         datetime.date.today().isoformat())
    model = args.cpu_model or cpu_model()
    ncpu = suites[0].context.get("num_cpus", "?")
    lines = ["# shmbus benchmark report", ""]
    lines.append("%s%s on %s (%s CPUs). Suites: %s." % (
        date, " (%s mode)" % args.mode if args.mode else "", model, ncpu,
        ", ".join(s.name for s in suites)))
    lines.append("")
    if any(s.has_beside for s in suites):
        lines.append("Figures from a shared or virtual machine are noisy: read each row as a "
                     "ratio to its reference, not as an absolute time. Ratios come from a "
                     "reference measured beside each benchmark (right before and after it), "
                     "since this host moves the vCPUs and the floor can change several-fold "
                     "within one suite's run; rows without one use the floor of the same "
                     "binary run.")
    else:
        lines.append("Figures from a shared or virtual machine are noisy: read each row as a "
                     "ratio to the floor measured in the same binary run, not as an absolute "
                     "time.")
    lines.append("")
    for p in problems:
        lines.append("- skipped %s" % p)
    if problems:
        lines.append("")

    plots_note = None
    plots = []
    if args.no_plots:
        plots_note = "Plots skipped (--no-plots)."
    else:
        try:
            plots = plot(suites, out_dir)
        except ImportError as e:
            plots_note = ("Plots skipped: matplotlib is not importable by %s (%s); "
                          "install python3-matplotlib (scripts/deps.sh bench)."
                          % (sys.executable, e))
    if plots_note:
        lines += [plots_note, ""]
    for p in plots:
        lines += ["![%s](%s)" % (p[:-4], p), ""]

    lines += paired_tables(suites)
    lines += summary_tables(suites)
    for s in suites:
        lines += suite_tables(s)
    lines.append("Raw Google Benchmark JSON: %s" % ", ".join(
        os.path.relpath(s.path, out_dir) for s in suites))
    lines.append("")

    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    if plots_note:
        print("report: %s" % plots_note)
    print("report: wrote %s%s" % (path, "".join(", " + os.path.join(out_dir, p)
                                               for p in plots)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
