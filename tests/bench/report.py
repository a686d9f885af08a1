#!/usr/bin/env python3
"""Turns tests/bench/bench.sh's results.jsonl into results.md (medians, ranges, ratios to the
baselines of the same run, CPU per request) and, when gnuplot is installed, one SVG per
comparison with every round's figure.

usage: report.py RESULTS OUT KAFKA SECONDS CONNS COMMANDS ACCOUNTS BATCH [ONLY]
ONLY names the comparisons run (http apply growth sync parked; default: all).
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def by_name(rows, bench):
    out = {}
    for r in rows:
        if r["bench"] == bench:
            out.setdefault(r["name"], []).append(r)
    return out


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def rng(rows, key, fmt="{:.0f}"):
    vals = [r[key] for r in rows]
    return (fmt + "–" + fmt).format(min(vals), max(vals))


# The contenders of comparison 1, in the table's order: the name bench.sh records, the label.
HTTP_CONTENDERS = {
    "gateway": "command-gateway (optimistic)",
    "gateway1": "command-gateway, one worker",
    "bare202k": "bare202 with Kafka",
    "bare202": "bare202",
    "nginx": "nginx `return 202`",
}


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f", {kib / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} × {cpu}{mem}, Linux {platform.release()}"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def plot(out, name, title, ylabel, series, columns=None):
    """series: {label: [values]}; one SVG bar chart, a group of bars per label, one bar per
    value, titled by columns (default: round 1, round 2, ...)."""
    if not shutil.which("gnuplot"):
        return None
    data = os.path.join(out, name + ".dat")
    labels = list(series)
    rounds = max(len(v) for v in series.values())
    with open(data, "w") as f:
        for i, label in enumerate(labels):
            vals = series[label] + [0] * (rounds - len(series[label]))
            f.write('"%s" %s\n' % (label, " ".join("%.1f" % v for v in vals)))
    svg = os.path.join(out, name + ".svg")
    titles = columns or ["round %d" % (i + 1) for i in range(rounds)]
    cols = " , ".join(
        "'%s' using %d:xtic(1) title '%s'" % (data, i + 2, titles[i]) for i in range(rounds))
    script = f"""
set terminal svg size 800,360 font 'sans,11'
set output '{svg}'
set title '{title}'
set ylabel '{ylabel}'
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set grid ytics
set key outside right top
plot {cols}
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(data)
    return os.path.basename(svg)


def main():
    path, out, kafka, secs, conns, commands, accounts, batch = sys.argv[1:9]
    only = (sys.argv[9] if len(sys.argv) > 9 else "http apply growth sync parked").split()
    rows = load(path)
    md = []
    md.append("# Benchmark results\n")
    md.append(f"- Machine: {machine()}")
    md.append(f"- Kafka: {'Apache Kafka, one broker' if kafka == 'real' else 'librdkafka mock cluster'}"
              f"; {version(['psql', '--version'])}; {version(['wrk', '--version']).split(' Copyright')[0]}; "
              f"{version(['nginx', '-v'])}")
    md.append(f"- HTTP: wrk -t2 -c{conns}, {secs} s per run, tests/bench/post.lua; the gateway "
              "with its defaults (one worker per core, linger.ms 0, max.in.flight 1, acks all)")
    md.append(f"- Applying: {commands} commands over {accounts} accounts in a 4-partition topic; "
              f"batch.max {batch}; PostgreSQL defaults of pg.sh (synchronous_commit on)")
    md.append("")

    http = by_name(rows, "http")
    if http:
        md.append("## 1. HTTP intake (requests per second)\n")
        md.append("| server | median | range | ratio to bare202 | ratio to nginx | p50 ms | p99 ms "
                  "| CPU µs/req (server, PostgreSQL, Kafka) | server's CPU ratio to bare202's "
                  "| not 202 |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        base = med(http["bare202"], "rps") if "bare202" in http else None
        base_cpu = med(http["bare202"], "cpu_us_per_req") if "bare202" in http else None
        ngx = med(http["nginx"], "rps") if "nginx" in http else None
        for name in HTTP_CONTENDERS:
            if name not in http:
                continue
            rs = http[name]
            m = med(rs, "rps")
            cpu = "%.0f, %.0f, %.0f" % (med(rs, "cpu_us_per_req"), med(rs, "pg_cpu_us_per_req"),
                                        med(rs, "kafka_cpu_us_per_req"))
            md.append(f"| {HTTP_CONTENDERS[name]} | {m:.0f} | {rng(rs, 'rps')} | "
                      f"{m / base:.2f} | {m / ngx:.2f} | {med(rs, 'p50_ms'):.2f} | "
                      f"{med(rs, 'p99_ms'):.2f} | {cpu} | "
                      f"{med(rs, 'cpu_us_per_req') / base_cpu:.2f} | "
                      f"{sum(r['not_202'] + r['errors'] for r in rs)} |")
        svg = plot(out, "http", "HTTP intake", "requests/s",
                   {HTTP_CONTENDERS[n].replace("`", ""):
                    [r["rps"] for r in sorted(http[n], key=lambda r: r["round"])]
                    for n in HTTP_CONTENDERS if n in http})
        if svg:
            md.append(f"\n![HTTP intake, every round]({svg})")
        md.append("")

    apply = by_name(rows, "apply")
    if apply:
        md.append("## 2. Applying commands (commands per second)\n")
        names = list(apply)
        proc = apply.get("state-processor")
        md.append("| contender | median | range | processor ÷ this | CPU µs/cmd (process, "
                  "PostgreSQL, Kafka) | peak RSS |")
        md.append("|---|---|---|---|---|---|")
        pm = med(proc, "cps") if proc else None
        for name in names:
            rs = apply[name]
            m = med(rs, "cps")
            if name == "state-processor":
                cpu = "%.0f, %.0f, %.0f" % (med(rs, "cpu_us_per_cmd"), med(rs, "pg_cpu_us_per_cmd"),
                                            med(rs, "kafka_cpu_us_per_cmd"))
                rss = "%.1f MiB" % (max(r["peak_rss_kib"] for r in rs) / 1024)
            else:
                cpu = "–, %.0f, –" % med(rs, "pg_cpu_us_per_cmd")
                rss = ""
            ratio = f"{pm / m:.2f}" if pm else ""
            md.append(f"| {name} | {m:.0f} | {rng(rs, 'cps')} | {ratio} | {cpu} | {rss} |")
        if proc:
            md.append("")
            md.append("Commands applied per processor run (of those in the topic): " +
                      ", ".join(str(r["applied"]) for r in proc) +
                      "; commands per transaction, on average: " +
                      ", ".join(f"{r['mean_batch']:.0f}" for r in proc))
            turns = [r["turns_ms"] for r in proc if r.get("turns_ms")]
            if turns:
                md.append("")
                md.append("A batch's turns, mean ms per batch in each run (the processor's "
                          "histograms): " + "; ".join(
                              ", ".join(f"{k} {t[k]:.1f}" for k in ("reads", "apply", "writes",
                                                                    "commit") if k in t)
                              for t in turns))
        svg = plot(out, "apply", "Applying commands", "commands/s",
                   {n: [r["cps"] for r in sorted(apply[n], key=lambda r: r["round"])]
                    for n in names})
        if svg:
            md.append(f"\n![Applying commands, every round]({svg})")
        md.append("")

    growth = by_name(rows, "growth")
    growth_pgb = by_name(rows, "growth_pgbench")
    sync = [r for r in rows if r["bench"] == "sync"]
    if sync:
        md.append("## 3. Sync end to end, open loop (latency from when each request was due)\n")
        conns = lambda r: r.get("conns", 64)
        most = max(conns(r) for r in sync if r["fraction"] == 1)
        top = [r for r in sync if r["fraction"] == 1 and conns(r) == most]
        top64 = [r for r in sync if r["fraction"] == 1 and conns(r) != most]
        md.append(f"Highest rate reached (closed loop, {most} connections): median "
                  f"{med(top, 'reached'):.0f}/s, range {rng(top, 'reached')}, p50 "
                  f"{med(top, 'p50_ms'):.1f} ms, p99 {med(top, 'p99_ms'):.1f} ms; the loads below "
                  f"are fractions of it.")
        if top64:
            md.append(f"With {conns(top64[0])} connections, where the requests in flight bound the "
                      f"rate (Little's law): median {med(top64, 'reached'):.0f}/s, range "
                      f"{rng(top64, 'reached')}, p50 {med(top64, 'p50_ms'):.1f} ms.")
        md.append("")
        md.append("| load | rate asked | reached | p50 ms | p99 ms | p99.9 ms | max ms | not 200 "
                  "| unanswered |")
        md.append("|---|---|---|---|---|---|---|---|---|")
        fracs = sorted({r["fraction"] for r in sync if r["fraction"] < 1})
        lat = {}
        for f in fracs:
            rs = [r for r in sync if r["fraction"] == f]
            md.append(f"| {f * 100:.0f}% | {med(rs, 'rate'):.0f}/s | {med(rs, 'reached'):.0f}/s | "
                      f"{med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} | "
                      f"{med(rs, 'p999_ms'):.2f} | {med(rs, 'max_ms'):.1f} | "
                      f"{sum(r['other'] + r['failed'] for r in rs)} | "
                      f"{sum(r['unanswered'] for r in rs)} |")
            lat[f"{f * 100:.0f}%"] = [med(rs, k) for k in ("p50_ms", "p99_ms", "p999_ms")]
        md.append("\nMedians over the rounds; the rounds interleave the loads.\n")
        if all(r.get("series") for r in sync):
            s0, f0 = sync[0]["series"], sync[0].get("fsync") or {}
            md.append("Where the slow answers were (tests/bench/series.py): windows of "
                      f"{s0['window_s'] * 1000:.0f} ms by due time; a stall is a window whose "
                      f"median latency is {s0.get('stall_x', 4):g} × the run's or more. Beside "
                      "each run, the disk's flush latency (tests/bench/fsprobe.py: a page written "
                      "and flushed with fdatasync() at a fixed period on PostgreSQL's "
                      f"filesystem), the flushes slower than {f0.get('slow_ms', 50):g} ms, and "
                      "the stalls that had one while their answers waited.\n")
            md.append("| run | p99 ms | worst window: at s, p50 ms, max ms | stalls | answers in "
                      "them | disk flush p99, max ms | slow flushes | stalls with one |")
            md.append("|---|---|---|---|---|---|---|---|")
            num = lambda x, d=1: "–" if x is None else f"{x:.{d}f}"
            for r in sync:
                sr, fs = r["series"], r.get("fsync") or {}
                name = "max" if r["fraction"] == 1 else f"{r['fraction'] * 100:.0f}%"
                md.append(f"| {name}, {conns(r)} conns, round {r['round']} | {r['p99_ms']:.1f} | "
                          f"{sr['worst_at_s']:.2f}, {sr['worst_p50_ms']:.1f}, "
                          f"{sr['worst_max_ms']:.1f} | {sr['stall_windows']} | "
                          f"{sr['stall_share'] * 100:.1f}% | {num(fs.get('p99_ms'))}, "
                          f"{num(fs.get('max_ms'))} | {num(fs.get('slow'), 0)} | "
                          f"{num(sr.get('stalls_with_slow_flush'), 0)} |")
            md.append("")
        half = [r for r in sync if r["fraction"] == 0.5]

        def floor_paragraph(rs, intro, against):
            # A floor's medians (hops, commit, their sums) and the 50% sync latency against them.
            k50, c50 = med(rs, "kafka_p50_us") / 1000, med(rs, "commit_p50_us") / 1000
            k99, c99 = med(rs, "kafka_p99_us") / 1000, med(rs, "commit_p99_us") / 1000
            f50, f99 = k50 + c50, k99 + c99
            md.append(f"{intro}: two Kafka hops p50 {k50:.2f} ms, p99 {k99:.2f} ms; one commit "
                      f"p50 {c50:.2f} ms, p99 {c99:.2f} ms; together p50 {f50:.2f} ms, p99 "
                      f"{f99:.2f} ms.")
            md.append(against(med(half, "p50_ms") / f50, med(half, "p99_ms") / f99) + "\n"
                      if half else "")
        floor = [r for r in rows if r["bench"] == "floor"]
        if floor:
            floor_paragraph(floor, f"The floor of the path (tests/bench/floor.c, "
                            f"{floor[0]['rounds']} round trips and commits, one at a time, median "
                            f"over the rounds)",
                            lambda p50, p99: f"At 50% load: p50 {p50:.1f} × the floor's p50, p99 "
                                             f"{p99:.1f} × the floor's p99.")
        loaded = [r for r in rows if r["bench"] == "floor_loaded"]
        counted = [r for r in loaded if r["overlapped"]]
        if counted:
            floor_paragraph(counted, f"The same floor measured during the 50% runs "
                            f"({counted[0]['rounds']} round trips and commits in each, "
                            f"{len(counted)} of {len(loaded)} ended within their run)",
                            lambda p50, p99: f"The sync latency at 50% load is p50 {p50:.1f} × "
                                             f"and p99 {p99:.1f} × this floor under load.")
        elif loaded:
            md.append(f"The floor measured during the 50% runs outlasted every one of them "
                      f"({len(loaded)}): not counted.\n")
        md.append("Where the time goes: the mean of each stage in ms, from the services' own "
                  "histograms (the median over the rounds). The transits are measured from the "
                  "Kafka timestamps, which have millisecond resolution.\n")
        md.append("| load | gateway: request | produce → Kafka ack | produce → reply "
                  "| command transit | processor batch | of it, COMMIT | reply transit |")
        md.append("|---|---|---|---|---|---|---|---|")
        loads = [("max", top)] + ([(f"max, {conns(top64[0])} conns", top64)] if top64 else []) + \
            [(f"{f * 100:.0f}%", [r for r in sync if r["fraction"] == f]) for f in fracs]
        for name, rs in loads:
            cell = lambda k: f"{statistics.median(r['stages'][k]['mean_ms'] for r in rs):.2f}"
            md.append(f"| {name} | " + " | ".join(
                cell(k) for k in ("request", "kafka_ack", "reply_wait", "command_transit",
                                  "batch", "commit", "reply_transit")) + " |")
        if all(r.get("sched") for r in sync):
            groups = ("gateway", "processor", "postgresql", "kafka")
            md.append("\nWaiting for a core: for each process of the path, from the kernel's "
                      "scheduler statistics of its threads (tests/bench/sched.py), the CPU time "
                      "and the time runnable but waiting on a run queue, in µs per command, and "
                      "the mean wait each time a thread was scheduled in (median over the "
                      "rounds).\n")
            md.append("| load | " + " | ".join(f"{g}: CPU, wait, per wake-up" for g in groups) +
                      " |")
            md.append("|---|" + "---|" * len(groups))
            for name, rs in loads:
                cell = lambda g, k: statistics.median(r["sched"][g][k] for r in rs)
                md.append(f"| {name} | " + " | ".join(
                    f"{cell(g, 'cpu_us_per_cmd'):.0f}, {cell(g, 'wait_us_per_cmd'):.0f}, "
                    f"{cell(g, 'wait_us_per_slice'):.0f}" for g in groups) + " |")
        svg = plot(out, "sync", "Sync latency by load", "ms", lat, ["p50", "p99", "p99.9"])
        if svg:
            md.append(f"\n![Sync latency by load]({svg})")
        md.append("")

    if any(r["bench"] in ("parked", "rss") for r in rows):
        md.append("## 4. Memory\n")
    for r in rows:
        if r["bench"] == "parked":
            grown = r["rss_kib"] - r["rss_before_kib"]
            md.append(f"- Gateway RSS with {r['parked']} sync requests parked: "
                      f"{r['rss_kib'] / 1024:.1f} MiB ({r['rss_before_kib'] / 1024:.1f} MiB before, "
                      f"{grown / max(r['parked'], 1):.1f} KiB per request)")
        if r["bench"] == "rss":
            md.append(f"- RSS of the {r['name']}: {r['kib'] / 1024:.1f} MiB")
    if growth:
        md.append("\n## 5. Cost growth (commands per second)\n")
        first = next(iter(growth.values()))
        md.append(f"The processor applying {first[0]['total']} deposits, each to an account "
                  "chosen so that consecutive ones are far apart, in databases of growing size; "
                  "after each of its runs, pgbench runs the same statements with the same "
                  "scattered deposits, batched and pipelined, on the same database: what "
                  "PostgreSQL alone makes of the growth.\n")
        md.append("| database | median | range | ÷ the first | CPU µs/cmd (process, PostgreSQL, "
                  "Kafka) | commands per transaction | peak RSS | pgbench | its ÷ the first "
                  "| processor ÷ pgbench |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        base = med(first, "cps")
        pgb_first = next(iter(growth_pgb.values()), None)
        for name, rs in growth.items():
            m = med(rs, "cps")
            cpu = "%.0f, %.0f, %.0f" % (med(rs, "cpu_us_per_cmd"), med(rs, "pg_cpu_us_per_cmd"),
                                        med(rs, "kafka_cpu_us_per_cmd"))
            pgb = growth_pgb.get(name)
            vs = (f"{med(pgb, 'cps'):.0f} ({med(pgb, 'pg_cpu_us_per_cmd'):.0f} µs) | "
                  f"{med(pgb, 'cps') / med(pgb_first, 'cps'):.2f} | {m / med(pgb, 'cps'):.2f}"
                  if pgb else "– | – | –")
            md.append(f"| {name} | {m:.0f} | {rng(rs, 'cps')} | {m / base:.2f} | {cpu} | "
                      f"{med(rs, 'mean_batch'):.0f} | "
                      f"{max(r['peak_rss_kib'] for r in rs) / 1024:.1f} MiB | {vs} |")
        svg = plot(out, "growth", "Cost growth", "commands/s",
                   {n: [r["cps"] for r in sorted(rs, key=lambda r: r["round"])]
                    for n, rs in growth.items()})
        if svg:
            md.append(f"\n![Cost growth, every round]({svg})")
        md.append("")

    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))

    # A run with errors measured something else: it fails.
    problems = []
    for name, rs in http.items():
        for r in rs:
            if r["requests"] == 0 or r["not_202"] or r["errors"]:
                problems.append(f"{name} round {r['round']}: {r['requests']} requests, "
                                f"{r['not_202']} not 202, {r['errors']} socket errors")
    for r in apply.get("state-processor", []):
        if r["applied"] != int(commands):
            problems.append(f"state-processor round {r['round']}: {r['applied']} of {commands} "
                            "commands applied")
    for name, rs in growth.items():
        for r in rs:
            if r["applied"] != r["total"]:
                problems.append(f"{name} round {r['round']}: {r['applied']} of {r['total']} "
                                "commands applied")
    for r in sync:
        if r["fraction"] < 1 and (r["failed"] or r["unanswered"]):
            problems.append(f"sync at {r['fraction']:.0%}: {r['failed']} failed, "
                            f"{r['unanswered']} unanswered")
    if "http" in only and not set(HTTP_CONTENDERS) <= set(http):
        problems.append("an HTTP contender has no result")
    if "apply" in only and len(apply) != 3:
        problems.append("an applying contender has no result")
    if "growth" in only and (not growth or set(growth) != set(growth_pgb)):
        problems.append("a cost growth contender has no result")
    if "sync" in only and not sync:
        problems.append("the sync comparison has no result")
    if "sync" in only and not [r for r in rows if r["bench"] == "floor"]:
        problems.append("the floor of the sync path has no result")
    if "parked" in only and not any(r["bench"] == "parked" for r in rows):
        problems.append("the parked measurement has no result")
    for p in problems:
        print("report: invalid run: " + p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
