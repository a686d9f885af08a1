#!/usr/bin/env python3
"""fsprobe.py: the disk's fdatasync() latency while a run goes on, for tests/bench/bench.sh.

usage: fsprobe.py DIR SECONDS

Every PERIOD_S for SECONDS, writes one 8 KiB page to a file in DIR (the filesystem that holds
PostgreSQL's WAL) and times its fdatasync(), as a commit's WAL flush is timed. Prints one JSON
object: the count and percentiles in ms, and each flush slower than SLOW_MS with its wall-clock
start (s since the epoch) and duration, so that series.py can say which of a run's stalls had a
slow flush of the disk beside them. The probe adds about a hundred small flushes a second to
the hundreds PostgreSQL makes under the sync load.
"""
import json
import os
import sys
import time

PERIOD_S = 0.01  # a sampling period between probes, not a wait for a condition
SLOW_MS = 50.0
PAGE = b"\0" * 8192
SPAN = 16 << 20  # the file's size: its pages are overwritten in turn


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path = os.path.join(sys.argv[1], f"fsprobe.{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    lat, slow, offset = [], [], 0
    try:
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end:
            wall, t0 = time.time(), time.monotonic()
            os.pwrite(fd, PAGE, offset)
            os.fdatasync(fd)
            ms = (time.monotonic() - t0) * 1000
            offset = (offset + len(PAGE)) % SPAN
            lat.append(ms)
            if ms > SLOW_MS:
                slow.append([round(wall, 3), round(ms, 1)])
            # Not a wait for a condition: a fixed sampling period is the thing wanted here, the
            # disk's flush latency sampled at even times through the run.
            time.sleep(PERIOD_S)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    pct = lambda p: round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 3) if lat else None
    print(json.dumps({"n": len(lat), "p50_ms": pct(50), "p99_ms": pct(99),
                      "max_ms": round(lat[-1], 3) if lat else None, "slow_ms": SLOW_MS,
                      "slow": slow}))


if __name__ == "__main__":
    main()
