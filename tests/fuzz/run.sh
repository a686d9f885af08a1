#!/usr/bin/env bash
# Runs each libFuzzer harness in tests/fuzz on its seed corpus for a bounded time (or number of
# runs), under AddressSanitizer + UndefinedBehaviorSanitizer. Fails on any crash, leak, sanitizer
# report or timeout, naming the input libFuzzer saved. Prints one summary line per harness.
#
#   BUILD         build folder holding fuzz/<harness> (default: build)
#   FUZZ_SECONDS  time per harness (default: 20)
#   FUZZ_RUNS     executions per harness instead of a time (e.g. 10000000)
#   FUZZ_JOBS     harnesses run at once (default: 1)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
[[ $BUILD == /* ]] || BUILD=$REPO/$BUILD
SECONDS_EACH=${FUZZ_SECONDS:-20}
HARNESSES=(fuzz_intake fuzz_decode fuzz_httpd)
export CQRS_SCHEMAS_DIR=$REPO/schemas/domains

run_one() {
    local name=$1 bin=$BUILD/fuzz/$1 work=$BUILD/fuzz/corpus-${1#fuzz_}
    local seed=$REPO/tests/fuzz/corpus/${1#fuzz_} log=$BUILD/fuzz/$1.log
    [[ -x $bin ]] || { echo "fuzz: $bin not built (make fuzz)" >&2; return 1; }
    mkdir -p "$work" "$BUILD/fuzz/artifacts"
    local limit=(-max_total_time="$SECONDS_EACH")
    [[ -z ${FUZZ_RUNS:-} ]] || limit=(-runs="$FUZZ_RUNS")
    local start=$SECONDS rc=0
    # Inputs found go to the working corpus; the seed corpus in git is only read.
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
        -artifact_prefix="$BUILD/fuzz/artifacts/$name-" "$work" "$seed" >"$log" 2>&1 || rc=$?
    local runs cov
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    if ((rc != 0)); then
        tail -n 40 "$log" >&2
        echo "fuzz: $name FAILED (exit $rc) after ${runs:-?} runs; input saved under $BUILD/fuzz/artifacts/ (log $log)" >&2
        return 1
    fi
    echo "fuzz: $name: ${runs:-?} runs in $((SECONDS - start)) s, ${cov:-cov: ?}, corpus $(find "$work" -type f | wc -l) inputs, no crash"
}

failed=0
pids=()
for h in "${HARNESSES[@]}"; do
    if ((${FUZZ_JOBS:-1} > 1)); then
        run_one "$h" &
        pids+=($!)
    else
        run_one "$h" || failed=1
    fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit "$failed"
