#!/usr/bin/env python3
"""pgwatch.py: where PostgreSQL's CPU goes during the sync runs of tests/bench/bench.sh.

    pgwatch.py record FILE   every 2 s until stopped: the CPU time of every PostgreSQL process
                             of the machine, named by its session's application_name (the
                             services name theirs) or backend type; pg_stat_statements' counters
                             when the database has them (BENCH_PG_STATEMENTS=1); the openloop
                             run under way. One JSON line per sample.
    pgwatch.py report FILE   for each openloop rate: each session's CPU time per command, and
                             each statement's calls, planning and execution time per command.

Run the first beside `BENCH_ONLY=sync BENCH_PG_STATEMENTS=1 tests/bench/bench.sh`, then the
second. pg_stat_statements' times are elapsed times: on a busy machine they include the waits for
a core.
"""
import collections
import json
import os
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def processes():
    """pid -> (command line, CPU seconds) of every process."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(pid)] = (cmd, (int(fields[11]) + int(fields[12])) / HZ)
    return out


def psql(port, sql):
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "cqrs",
                        "-AtF", "\t", "-c", sql], capture_output=True, text=True, timeout=5)
    return [line.split("\t") for line in r.stdout.splitlines()] if r.returncode == 0 else []


def record(path):
    with open(path, "w") as out:
        while True:
            procs = processes()
            port = None
            for cmd, _ in procs.values():
                if cmd.startswith("/usr/lib/postgresql") and " -D " in cmd:
                    try:
                        with open(cmd.split(" -D ")[1].split()[0] + "/postmaster.pid") as f:
                            port = f.read().split("\n")[3]
                    except (OSError, IndexError):
                        pass
            names, stmts = {}, {}
            if port:
                for pid, name in psql(port, "SELECT pid, coalesce(nullif(application_name, ''), "
                                            "backend_type) FROM pg_stat_activity"):
                    names[int(pid)] = name
                for q, calls, plan, exe, text in psql(
                        port, "SELECT queryid, calls, total_plan_time, total_exec_time, "
                              "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
                              "FROM pg_stat_statements"):
                    stmts[q] = [int(calls), float(plan), float(exe), text]
            loop = [c for c, _ in procs.values() if "/bench/openloop " in c]
            out.write(json.dumps({
                "t": time.time(), "openloop": loop[0] if loop else None, "stmts": stmts,
                "pg": {str(pid): [names.get(pid, cmd), cpu] for pid, (cmd, cpu) in procs.items()
                       if cmd.startswith("postgres")}}) + "\n")
            out.flush()
            # Not a wait for a condition: a fixed sampling period is the thing wanted here. The
            # report divides the difference of two consecutive samples by the time between them.
            time.sleep(2)


def report(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    secs = collections.defaultdict(float)
    cpu = collections.defaultdict(lambda: collections.defaultdict(float))
    stmt = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0, 0.0, ""]))
    for a, b in zip(rows, rows[1:]):
        if not a["openloop"] or a["openloop"] != b["openloop"]:
            continue
        rate = int(a["openloop"].split()[2])  # openloop PORT RATE SECONDS CONNS ACCOUNTS
        if rate == 0:  # the closed-loop run for the highest rate
            continue
        secs[rate] += b["t"] - a["t"]
        for pid, (name, t) in b["pg"].items():
            if pid in a["pg"]:
                cpu[rate][name if not name.startswith("postgres:") else "other"] += \
                    t - a["pg"][pid][1]
        for q, (calls, plan, exe, text) in b["stmts"].items():
            if q in a["stmts"]:
                s = stmt[rate][q]
                s[0] += calls - a["stmts"][q][0]
                s[1] += plan - a["stmts"][q][1]
                s[2] += exe - a["stmts"][q][2]
                s[3] = text
    for rate in sorted(secs):
        n = rate * secs[rate]
        total = sum(cpu[rate].values())
        print(f"## {rate}/s, {secs[rate]:.0f} s: PostgreSQL {total / secs[rate]:.2f} cores, "
              f"{total / n * 1e6:.0f} µs of CPU per command\n")
        print("| session | CPU µs per command |\n|---|---|")
        for name, t in sorted(cpu[rate].items(), key=lambda x: -x[1]):
            if t / n * 1e6 >= 1:
                print(f"| {name} | {t / n * 1e6:.0f} |")
        if stmt[rate]:
            print("\n| calls per command | planning µs per command | execution µs per command "
                  "| planning µs per call | statement |\n|---|---|---|---|---|")
            for calls, plan, exe, text in sorted(stmt[rate].values(),
                                                 key=lambda s: -(s[1] + s[2]))[:12]:
                if calls:
                    print(f"| {calls / n:.2f} | {plan * 1000 / n:.0f} | {exe * 1000 / n:.0f} | "
                          f"{plan * 1000 / calls:.0f} | `{text[:70]}` |")
        print()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("record", "report"):
        sys.exit(__doc__)
    (record if sys.argv[1] == "record" else report)(sys.argv[2])
