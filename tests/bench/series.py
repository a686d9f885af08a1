#!/usr/bin/env python3
"""series.py: where in an open-loop run its slow answers were, for tests/bench/bench.sh.

usage: series.py FILE [FSPROBE]

FILE is what openloop writes with OPENLOOP_SERIES set: one line per answer (due time in s from
the run's start, latency in ms, ms from being sent, HTTP status). The run is cut into windows of
WINDOW_S by due time; a window is a stall when its median latency is STALL_X times the run's
median or more. Prints one JSON object: the run's median, the worst window (its start and its
median and largest latency), and the stalls (how many windows, the share of the answers in them,
and the start of the first). A p99 made by stalls comes from a few windows where every answer
was late; one spread over the run comes from single answers.

FSPROBE is what fsprobe.py printed for the same run: then each stall is also matched with the
disk's slow flushes, and the object counts the stalls that had one while their answers waited
(from BACKLOG_S before the window's first due time, for the backlog a stall leaves, to its last
due time plus its median latency).
"""
import json
import statistics
import sys

WINDOW_S = 0.25
STALL_X = 4.0
BACKLOG_S = 0.5


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    windows, start = {}, None
    for line in open(sys.argv[1]):
        if line.startswith("# start "):
            start = float(line.split()[2])
        if line.startswith("#"):
            continue
        due, latency = line.split()[:2]
        windows.setdefault(int(float(due) / WINDOW_S), []).append(float(latency))
    if not windows:
        sys.exit(f"series.py: {sys.argv[1]} has no answers")
    p50 = statistics.median(x for w in windows.values() for x in w)
    total = sum(len(w) for w in windows.values())
    medians = {k: statistics.median(w) for k, w in windows.items()}
    worst = max(medians, key=medians.get)
    stalls = sorted(k for k, m in medians.items() if m >= STALL_X * p50)
    flushed = None
    if len(sys.argv) == 3 and start is not None:
        slow = json.load(open(sys.argv[2]))["slow"]
        waited = lambda k: (start + k * WINDOW_S - BACKLOG_S,
                            start + (k + 1) * WINDOW_S + medians[k] / 1000)
        flushed = sum(1 for k in stalls
                      if any(t < waited(k)[1] and t + ms / 1000 > waited(k)[0] for t, ms in slow))
    print(json.dumps({
        "window_s": WINDOW_S,
        "stall_x": STALL_X,
        "p50_ms": round(p50, 3),
        "worst_at_s": worst * WINDOW_S,
        "worst_p50_ms": round(medians[worst], 3),
        "worst_max_ms": round(max(windows[worst]), 3),
        "stall_windows": len(stalls),
        "stall_share": round(sum(len(windows[k]) for k in stalls) / total, 4),
        "first_stall_at_s": stalls[0] * WINDOW_S if stalls else None,
        "stalls_with_slow_flush": flushed,
    }))


if __name__ == "__main__":
    main()
