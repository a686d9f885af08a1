#!/usr/bin/env bash
# Runs every built test binary (unit, then integration, then e2e) against a throwaway PostgreSQL and mock Kafka,
# then checks the OpenAPI document (tests/api/validate-openapi.sh).
set -euo pipefail

# bash cannot trap a signal that was ignored when it started (SIGINT, when launched with `&` from a script);
# re-exec once, same pid, with INT/TERM/HUP back to their defaults so an interrupt always cleans up.
if [[ ${TESTS_RUN_SH_SIGNALS_RESET:-} != "$$" ]]; then
    export TESTS_RUN_SH_SIGNALS_RESET=$$
    exec env --default-signal=INT,TERM,HUP "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

# Environment:
#   BUILD               build folder holding tests/{unit,integration,e2e}/test_* (default: build)
#   TEST_TIMEOUT        seconds each test binary may run (default: 600)
#   CQRS_KEEP_TEST_DIR  set to 1 to keep the temporary folder (PostgreSQL and mock-kafka logs)
#   KAFKA_MODES         "mock real" (default): integration and e2e tests run against librdkafka's
#                       mock cluster and against a real Apache Kafka broker (deploy/kafka/kafka.sh)
#   TESTS               run only these, named as in the output (e.g. "e2e/test_chaos unit/test_batch
#                       api/validate-openapi bench/smoke")
#   REPEAT              run each selected test this many times in a row (default: 1)
#   FAILOVER_TESTS      the tests that also run on the 3-node cluster (default: e2e/test_broker_fault)
#   CQRS_CHECKER_SEED, CQRS_CHECKER_SECONDS  replay a seed of e2e/test_checker, or run it longer
# The tests get CQRS_TEST_PG_CONNINFO, CQRS_TEST_KAFKA_BOOTSTRAP, CQRS_SCHEMAS_DIR, CQRS_MIGRATIONS_DIR,
# CQRS_BUILD, CQRS_REPO and CQRS_TEST_JSON_SCHEMA_SUITE, run from the repository root, with CK_DEFAULT_TIMEOUT=60 and CK_FORK=yes.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(realpath -m -- "${BUILD:-build}") # relative to the caller's directory (make runs from the repo root)
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
# Integration and e2e tests run once per Kafka listed here; real3 (a 3-node cluster) runs only the
# tests in FAILOVER_TESTS (make soak sets it to the checker alone).
KAFKA_MODES=${KAFKA_MODES:-mock real real3}
FAILOVER_TESTS=${FAILOVER_TESTS:-e2e/test_broker_fault}
PG_SH=$REPO/deploy/local/pg.sh
cd "$REPO"

log() { echo "tests/run.sh: $*" >&2; }

# --- find the tests ------------------------------------------------------------------------
tests=()
for kind in unit integration e2e; do
    for t in "$BUILD/tests/$kind"/test_*; do
        [[ -f $t && -x $t ]] || continue # also skips the unmatched pattern of an empty folder
        [[ -z ${TESTS:-} || " $TESTS " == *" $kind/$(basename "$t") "* ]] || continue
        tests+=("$t")
    done
done
# The OpenAPI check and the benchmark's smoke are scripts, not test binaries: they run unless
# TESTS leaves them out.
openapi_check=0
[[ -n ${TESTS:-} && " $TESTS " != *" api/validate-openapi "* ]] || openapi_check=1
bench_smoke=0
[[ -n ${TESTS:-} && " $TESTS " != *" bench/smoke "* ]] || bench_smoke=1
fuzz_smoke=0
[[ -n ${TESTS:-} && " $TESTS " != *" fuzz/smoke "* ]] || fuzz_smoke=1
schemathesis=0
[[ -n ${TESTS:-} && " $TESTS " != *" api/schemathesis "* ]] || schemathesis=1
conformance=0
[[ -n ${TESTS:-} && " $TESTS " != *" api/conformance "* ]] || conformance=1
deploy_check=0
[[ -n ${TESTS:-} && " $TESTS " != *" deploy/validate "* ]] || deploy_check=1
if ((${#tests[@]} == 0 && openapi_check == 0 && bench_smoke == 0 && fuzz_smoke == 0 &&
    schemathesis == 0 && conformance == 0 && deploy_check == 0)); then
    log "error: no test binaries${TESTS:+ named $TESTS} found under $BUILD/tests/{unit,integration,e2e} (build them with make tests)"
    echo "0 passed, 0 failed"
    exit 1
fi
[[ -x $BUILD/mock-kafka ]] || { log "error: $BUILD/mock-kafka not found (build it with make all)"; exit 1; }

# --- throwaway PostgreSQL and mock Kafka ---------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cqrs-test.XXXXXX")
chmod 711 "$TMP" # as root, PostgreSQL runs as the postgres user, which must traverse this folder
PG_DIR=$TMP/pg
KAFKA_PID=""
TEST_PID=""
PG_STARTED=0

cleanup() {
    local rc=$? i
    trap '' INT TERM HUP
    set +e
    if [[ -n $TEST_PID ]]; then # interrupted: timeout passes the SIGTERM on to the test
        kill -TERM "$TEST_PID" 2>/dev/null
        for ((i = 0; i < 150; i++)); do # timeout itself sends SIGKILL after 10s
            kill -0 "$TEST_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$TEST_PID" 2>/dev/null
        wait "$TEST_PID" 2>/dev/null
    fi
    for k in "$TMP/kafka" "$TMP/kafka3"; do
        [[ ! -d $k ]] || "$REPO/deploy/kafka/kafka.sh" stop "$k"
    done
    if [[ -n $KAFKA_PID ]] && kill -0 "$KAFKA_PID" 2>/dev/null; then
        kill -TERM "$KAFKA_PID" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            kill -0 "$KAFKA_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$KAFKA_PID" 2>/dev/null
    fi
    [[ -z $KAFKA_PID ]] || wait "$KAFKA_PID" 2>/dev/null
    ((PG_STARTED == 0)) || "$PG_SH" stop "$PG_DIR" 2>/dev/null
    if [[ ${CQRS_KEEP_TEST_DIR:-} == 1 ]]; then
        log "kept $TMP (postgres log: $PG_DIR/postgres.log, mock-kafka log: $TMP/mock-kafka.log)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

port_in_use() {
    if command -v ss >/dev/null 2>&1 && [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; then
        return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A random free port in 20000-60000.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + ((RANDOM << 15) | RANDOM) % 40001))
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    log "error: found no free port in 20000-60000"
    return 1
}

PG_STARTED=1
CONNINFO=""
for attempt in 1 2 3; do # the port may be taken between the check and the bind
    port=$(free_port)
    if out=$("$PG_SH" start "$PG_DIR" "$port"); then
        CONNINFO=$(tail -n 1 <<<"$out")
        break
    fi
    log "PostgreSQL did not start on port $port (attempt $attempt)"
done
[[ -n $CONNINFO ]] || { log "error: could not start PostgreSQL (log: $PG_DIR/postgres.log)"; exit 1; }

BOOTSTRAP_FILE=$TMP/kafka.bootstrap
"$BUILD/mock-kafka" --brokers 1 --partitions 4 --topics commands,events,replies,commands.dlq \
    --bootstrap-file "$BOOTSTRAP_FILE" </dev/null >"$TMP/mock-kafka.log" 2>&1 &
KAFKA_PID=$!
BOOTSTRAP=""
for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$KAFKA_PID" 2>/dev/null; then
        cat "$TMP/mock-kafka.log" >&2
        log "error: mock-kafka exited before writing $BOOTSTRAP_FILE"
        exit 1
    fi
    if [[ -s $BOOTSTRAP_FILE ]]; then
        BOOTSTRAP=$(tr -d '[:space:]' <"$BOOTSTRAP_FILE")
        sleep 0.05 # make sure the writer was not caught mid-write
        [[ -n $BOOTSTRAP && $BOOTSTRAP == "$(tr -d '[:space:]' <"$BOOTSTRAP_FILE")" ]] && break
        BOOTSTRAP=""
    fi
    sleep 0.1
done
if [[ -z $BOOTSTRAP ]]; then
    cat "$TMP/mock-kafka.log" >&2
    log "error: mock-kafka did not write $BOOTSTRAP_FILE within 10s"
    exit 1
fi

# The real Apache Kafka broker, started once for the whole run (fetched on first use).
REAL_BOOTSTRAP=""
REAL3_BOOTSTRAP=""
if [[ " $KAFKA_MODES " == *" real "* ]]; then # real3 starts its own cluster below
    for attempt in 1 2 3; do # a port may be taken between free-port and the broker's bind
        port=$("$REPO/deploy/kafka/kafka.sh" free-port) || exit 1
        if REAL_BOOTSTRAP=$("$REPO/deploy/kafka/kafka.sh" start "$TMP/kafka" "$port"); then
            break
        fi
        REAL_BOOTSTRAP=""
        "$REPO/deploy/kafka/kafka.sh" stop "$TMP/kafka"
        rm -rf "$TMP/kafka"
        log "Apache Kafka did not start on port $port (attempt $attempt)"
    done
    [[ -n $REAL_BOOTSTRAP ]] || { log "error: could not start Apache Kafka"; exit 1; }
fi

# The official JSON Schema test suite, for unit/test_jsonschema_suite (fetched once per build folder).
if ! CQRS_TEST_JSON_SCHEMA_SUITE=$("$REPO/tests/support/json-schema-suite.sh" "$BUILD/json-schema-test-suite"); then
    log "error: could not fetch the JSON Schema test suite; unit/test_jsonschema_suite will fail"
    CQRS_TEST_JSON_SCHEMA_SUITE=""
fi
export CQRS_TEST_JSON_SCHEMA_SUITE
export CQRS_TEST_PG_CONNINFO=$CONNINFO
export CQRS_TEST_PG_DIR=$PG_DIR # the chaos test restarts this server once
export CQRS_SCHEMAS_DIR=schemas/domains
export CQRS_MIGRATIONS_DIR=schemas/migrations
export CQRS_BUILD=$BUILD
export CQRS_REPO=$REPO
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-60}
export CK_FORK=${CK_FORK:-yes}
log "PostgreSQL: $CONNINFO; Kafka: mock $BOOTSTRAP, real ${REAL_BOOTSTRAP:-(not started)}"

# --- run them ------------------------------------------------------------------------------
passed=0
failed=0
results=()
# Unit tests run once; integration and e2e tests once against each Kafka.
runs=()
for t in "${tests[@]}"; do
    for ((r = 0; r < ${REPEAT:-1}; r++)); do
        case $t in
        # no Kafka in these
        */tests/unit/* | */tests/integration/test_pgconn | */tests/integration/test_openapi) runs+=("$t|none") ;;
        *)
            for mode in $KAFKA_MODES; do
                [[ $mode != real3 || " $FAILOVER_TESTS " == *" ${t#"$BUILD"/tests/} "* ]] || continue
                runs+=("$t|$mode")
            done
            ;;
        esac
    done
done
# docs/openapi.json and the document this build's gateway generates are valid OpenAPI 3.1
# (openapi-spec-validator from PyPI, pinned, in a virtualenv under the build folder).
((openapi_check == 0)) || runs+=("$REPO/tests/api/validate-openapi.sh|api")
# make bench, a few seconds per comparison on the mock cluster, so that it cannot rot: it fails on
# any error answer, any command not applied, or a contender without a result.
((bench_smoke == 0)) || runs+=("$REPO/tests/bench/bench.sh|bench")
# The libFuzzer harnesses, 20 s each on their seed corpus, so that they cannot rot; the long runs
# are `make fuzz` (docs/fuzzing.md).
((fuzz_smoke == 0)) || runs+=("$REPO/tests/fuzz/run.sh|fuzz")
# schemathesis against the running system (its own stack, once with authentication on and once
# off): no 5xx, every answer as the served OpenAPI document says.
((schemathesis == 0)) || runs+=("$REPO/tests/api/schemathesis.sh|schemathesis")
# Third-party checks of the running system (its own stack): openapi-core on a recorded set of
# exchanges, the CloudEvents SDK on every message of the commands, events and dead-letter topics,
# promtool on the three /metrics.
((conformance == 0)) || runs+=("$REPO/tests/api/conformance.sh|conformance")
# deploy/: the compose file, the Kubernetes manifests, the systemd units and the Dockerfile.
((deploy_check == 0)) || runs+=("$REPO/tests/deploy/validate.sh|deploy")
for run in "${runs[@]}"; do
    t=${run%|*}
    mode=${run##*|}
    name=${t#"$BUILD"/tests/}
    case $mode in
    mock) export CQRS_TEST_KAFKA_BOOTSTRAP=$BOOTSTRAP CQRS_TEST_KAFKA_MODE=mock ;;
    real)
        export CQRS_TEST_KAFKA_BOOTSTRAP=$REAL_BOOTSTRAP CQRS_TEST_KAFKA_MODE=real
        export CQRS_TEST_KAFKA_DIR=$TMP/kafka CQRS_TEST_KAFKA_NODES=1 # fault tests use kafka.sh
        ;;
    real3)
        if [[ -z $REAL3_BOOTSTRAP ]]; then # started on first use, for the failover tests only
            port=$("$REPO/deploy/kafka/kafka.sh" free-port 3) || exit 1
            REAL3_BOOTSTRAP=$("$REPO/deploy/kafka/kafka.sh" start "$TMP/kafka3" "$port" 3) ||
                { log "error: could not start the 3-node Apache Kafka cluster"; exit 1; }
        fi
        export CQRS_TEST_KAFKA_BOOTSTRAP=$REAL3_BOOTSTRAP CQRS_TEST_KAFKA_MODE=real
        export CQRS_TEST_KAFKA_DIR=$TMP/kafka3 CQRS_TEST_KAFKA_NODES=3
        ;;
    *) export CQRS_TEST_KAFKA_BOOTSTRAP=$BOOTSTRAP CQRS_TEST_KAFKA_MODE=mock ;;
    esac
    case $mode in
    none) ;;
    api) name=api/$(basename "$t" .sh) ;;
    bench) name=bench/smoke ;;
    fuzz) name=fuzz/smoke ;;
    schemathesis) name=api/schemathesis ;;
    conformance) name=api/conformance ;;
    deploy) name=deploy/validate ;;
    real3) name="$name [3-node kafka]" ;;
    *) name="$name [$mode kafka]" ;;
    esac
    echo "=== $name"
    start=$SECONDS
    rc=0
    args=()
    pre=()
    [[ $mode != bench ]] || pre=(env BENCH_KAFKA=mock BENCH_SECONDS=2 BENCH_PAIRS=1 BENCH_COMMANDS=3000
        BENCH_ACCOUNTS=200 BENCH_PARKED=2000 BENCH_GROWTH="100 10000" BENCH_GROWN_ROWS=20000
        BENCH_GROWTH_COMMANDS=2000 BENCH_OUT="$TMP/bench")
    [[ $mode != fuzz ]] || pre=(env FUZZ_SECONDS=20)
    [[ $mode != schemathesis ]] || pre=(env SCHEMATHESIS_EXAMPLES=20 SCHEMATHESIS_SEED=${SCHEMATHESIS_SEED:-1})
    if [[ $mode == api ]]; then # an empty document fails the check, so a failure here counts
        args=("$REPO/docs/openapi.json" "$TMP/openapi.json" "$TMP/openapi-auth-off.json")
        "$BUILD/command-gateway" --print-openapi >"$TMP/openapi.json" 2>"$TMP/print-openapi.log" ||
            { log "command-gateway --print-openapi failed:"; cat "$TMP/print-openapi.log" >&2; }
        "$BUILD/command-gateway" --auth.mode=off --print-openapi >"$TMP/openapi-auth-off.json" \
            2>"$TMP/print-openapi.log" ||
            { log "command-gateway --print-openapi failed:"; cat "$TMP/print-openapi.log" >&2; }
    fi
    # In the background so that a signal to this script is handled at once, not after the test ends.
    BUILD=$BUILD timeout -k 10 "$TEST_TIMEOUT" "${pre[@]}" "$t" "${args[@]}" </dev/null &
    TEST_PID=$!
    wait "$TEST_PID" || rc=$?
    TEST_PID=""
    took="$((SECONDS - start))s"
    if ((rc == 0)); then
        passed=$((passed + 1))
        results+=("PASS  $name  ($took)")
    else
        failed=$((failed + 1))
        if ((rc == 124 || (rc == 137 && SECONDS - start >= TEST_TIMEOUT))); then
            why="timed out after ${TEST_TIMEOUT}s"
        elif ((rc > 128)); then
            why="killed by signal $((rc - 128))"
        else
            why="exit status $rc"
        fi
        results+=("FAIL  $name  ($why, $took)")
    fi
done

if ! kill -0 "$KAFKA_PID" 2>/dev/null; then
    log "warning: mock-kafka died during the run; later tests may have failed because of it"
    tail -n 20 "$TMP/mock-kafka.log" >&2 || true
fi

echo
echo "=== summary"
printf '%s\n' "${results[@]}"
echo "$passed passed, $failed failed"
if ((failed > 0)); then
    [[ ${CQRS_KEEP_TEST_DIR:-} == 1 ]] ||
        log "rerun with CQRS_KEEP_TEST_DIR=1 to keep the PostgreSQL and mock-kafka logs"
    exit 1
fi
