#!/usr/bin/env python3
"""Where the time of a sync command goes, from the services' own histograms: the difference
between two scrapes of /metrics (before and after a run) of the gateway and the processor.

usage: stages.py GATEWAY_BEFORE GATEWAY_AFTER PROCESSOR_BEFORE PROCESSOR_AFTER
Prints one JSON object: for each stage, its mean and median (interpolated within the histogram's
bucket) in milliseconds and the number of observations in the run. Fails when a stage is missing
or saw nothing: every sync command passes through all of them.
"""
import json
import sys

# (stage, histogram): in the order a command meets them.
GATEWAY = [
    ("request", "gateway_http_request_duration_seconds"),
    ("kafka_ack", "gateway_kafka_ack_seconds"),
    ("reply_wait", "gateway_reply_wait_seconds"),
    ("reply_transit", "gateway_reply_transit_seconds"),
]
PROCESSOR = [
    ("command_transit", "processor_command_transit_seconds"),
    ("batch", "processor_batch_duration_seconds"),
    ("commit", "processor_commit_duration_seconds"),
]


def parse(path):
    """{histogram: {"buckets": [(le, cumulative)], "sum": s, "count": n}}"""
    out = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            if "_bucket{le=" in name:
                base, le = name.split("_bucket{le=")
                le = le.strip('"}')
                h = out.setdefault(base, {"buckets": [], "sum": 0.0, "count": 0})
                h["buckets"].append((float("inf") if le == "+Inf" else float(le), int(value)))
            elif name.endswith("_sum"):
                out.setdefault(name[:-4], {"buckets": [], "sum": 0.0, "count": 0})["sum"] = float(value)
            elif name.endswith("_count"):
                out.setdefault(name[:-6], {"buckets": [], "sum": 0.0, "count": 0})["count"] = int(value)
    return out


def stage(before, after, name):
    a, b = after.get(name), before.get(name, {"buckets": [], "sum": 0.0, "count": 0})
    if not a:
        sys.exit(f"stages.py: no histogram {name} in the metrics")
    n = a["count"] - b["count"]
    if n <= 0:
        sys.exit(f"stages.py: {name} observed nothing during the run")
    prev = dict(b["buckets"])
    cum = [(le, c - prev.get(le, 0)) for le, c in a["buckets"]]
    # The median, interpolated linearly within the bucket that holds it.
    half, lo, below = n / 2, 0.0, 0
    p50 = None
    for le, c in cum:
        if c >= half:
            width = (le - lo) if le != float("inf") else 0
            p50 = lo + width * ((half - below) / (c - below) if c > below else 0)
            break
        lo, below = le, c
    return {"count": n, "mean_ms": (a["sum"] - b["sum"]) / n * 1000, "p50_ms": p50 * 1000}


def main():
    gb, ga, pb, pa = (parse(p) for p in sys.argv[1:5])
    out = {}
    for stages, before, after in ((GATEWAY, gb, ga), (PROCESSOR, pb, pa)):
        for key, name in stages:
            out[key] = stage(before, after, name)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
