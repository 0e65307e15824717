#!/usr/bin/env python3
"""Runs N copies of a program at once and checks they leave /dev/shm clean.

  run_copies.py [--copies N] [--runs R] -- PROGRAM [ARGS...]

Each of R rounds starts N copies together; every copy must exit 0 (two
copies of one program must not interfere: anonymous objects have no name
to collide on). Afterwards no shmbus object made by them may remain.

Where the host allows it (unprivileged user namespaces), the rounds run in
a private mount namespace with its own empty /dev/shm, so "nothing left"
is exact whatever else runs on the host. Otherwise they run on the host's
/dev/shm, and the check counts new shmbus objects whose creator (pid in the
header, offset 64) is dead: a leak by definition, and never an object of a
live test running beside this one.
"""
import os
import struct
import subprocess
import sys
from pathlib import Path

SHM = Path("/dev/shm")
PID_MASK = (1 << 22) - 1


def run_rounds(copies, runs, argv):
    for r in range(runs):
        procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for _ in range(copies)]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"round {r + 1}: exit codes {codes}", file=sys.stderr)
            return 1
    return 0


def creator_alive(path):
    try:
        with open(path, "rb") as f:
            f.seek(64)
            word = struct.unpack("<Q", f.read(8))[0]
    except (OSError, struct.error):
        return False
    pid = word & PID_MASK
    return pid != 0 and Path(f"/proc/{pid}").exists()


def main():
    args = sys.argv[1:]
    copies, runs, isolated = 2, 1, False
    while args and args[0] != "--":
        if args[0] == "--copies":
            copies, args = int(args[1]), args[2:]
        elif args[0] == "--runs":
            runs, args = int(args[1]), args[2:]
        elif args[0] == "--isolated":
            isolated, args = True, args[1:]
        else:
            print(__doc__, file=sys.stderr)
            return 2
    argv = args[1:]
    if isolated:
        subprocess.run(["mount", "-t", "tmpfs", "none", str(SHM)], check=True)
        rc = run_rounds(copies, runs, argv)
        left = sorted(p.name for p in SHM.iterdir())
        if left:
            print(f"left in /dev/shm: {left}", file=sys.stderr)
            return 1
        return rc
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
        return subprocess.run(["unshare", "-rm", sys.executable, __file__, "--copies",
                               str(copies), "--runs", str(runs), "--isolated", "--"] + argv
                              ).returncode
    before = {p.name for p in SHM.glob("shmbus.*")}
    rc = run_rounds(copies, runs, argv)
    left = sorted(p.name for p in SHM.glob("shmbus.*")
                  if p.name not in before and not creator_alive(p))
    if left:
        print(f"left in /dev/shm by dead creators: {left}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
