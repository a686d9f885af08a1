#!/usr/bin/env python3
"""The time the processes of the sync path spend waiting for a core, from the kernel's scheduler
statistics (/proc/<pid>/task/<tid>/schedstat: time on a CPU, time runnable but waiting on a run
queue, and the number of times the thread was scheduled in, all since it started).

usage: sched.py snap NAME=PID[,PID...] ...   > snapshot.json
       sched.py diff BEFORE.json AFTER.json COMMANDS

snap records every thread of each named group of processes. diff counts, for each group, the
threads alive at both snapshots, and prints one JSON object: per group, its CPU time and its time
waiting for a core, per command, in microseconds, and the mean wait per time it was scheduled in.
"""
import json
import os
import sys


def snap(groups):
    out = {}
    for g in groups:
        name, pids = g.split("=", 1)
        threads = {}
        for pid in filter(None, pids.split(",")):
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        cpu, wait, slices = (int(x) for x in f.read().split())
                except (OSError, ValueError):
                    continue
                threads[tid] = [cpu, wait, slices]
        out[name] = threads
    return out


def diff(before, after, commands):
    out = {}
    for name, threads in after.items():
        cpu = wait = slices = 0
        for tid, (c1, w1, s1) in threads.items():
            if tid not in before.get(name, {}):
                continue
            c0, w0, s0 = before[name][tid]
            cpu, wait, slices = cpu + c1 - c0, wait + w1 - w0, slices + s1 - s0
        out[name] = {
            "cpu_us_per_cmd": cpu / 1000 / commands,
            "wait_us_per_cmd": wait / 1000 / commands,
            "wait_us_per_slice": wait / 1000 / slices if slices else 0.0,
            "slices_per_cmd": slices / commands,
        }
    return out


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "snap":
        json.dump(snap(sys.argv[2:]), sys.stdout)
    elif len(sys.argv) == 5 and sys.argv[1] == "diff":
        with open(sys.argv[2]) as f:
            before = json.load(f)
        with open(sys.argv[3]) as f:
            after = json.load(f)
        json.dump(diff(before, after, max(int(sys.argv[4]), 1)), sys.stdout)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
