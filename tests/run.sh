#!/usr/bin/env bash
# Runs every built test binary (unit, integration, e2e) and the script checks (OpenAPI, schemathesis,
# conformance, fuzz and bench smoke, deploy/) against one throwaway PostgreSQL server (a database per
# test), mock Kafka and Apache Kafka, several test programs at a time.
set -euo pipefail

# bash cannot trap a signal that was ignored when it started (SIGINT, when launched with `&` from a script);
# re-exec once, same pid, with INT/TERM/HUP back to their defaults so an interrupt always cleans up.
if [[ ${TESTS_RUN_SH_SIGNALS_RESET:-} != "$$" ]]; then
    export TESTS_RUN_SH_SIGNALS_RESET=$$
    exec env --default-signal=INT,TERM,HUP "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

# Environment:
#   BUILD               build folder holding tests/{unit,integration,e2e}/test_* (default: build)
#   JOBS                test programs run at the same time (default: 3); JOBS=1 runs them one by one
#   TEST_TIMEOUT        seconds each test program may run (default: 600)
#   CQRS_KEEP_TEST_DIR  set to 1 to keep the temporary folder (PostgreSQL, Kafka and test logs)
#   KAFKA_MODES         "mock real real3" (default): integration and e2e tests run against
#                       librdkafka's mock cluster and against a real Apache Kafka broker
#                       (deploy/kafka/kafka.sh); real3 (a 3-node cluster) runs FAILOVER_TESTS only
#   TESTS               run only these, named as in the output (e.g. "e2e/test_chaos unit/test_batch
#                       api/validate-openapi bench/smoke")
#   REPEAT              run each selected test this many times (default: 1)
#   FAILOVER_TESTS      the tests that also run on the 3-node cluster (default: e2e/test_broker_fault)
#   PRIVATE_PG_TESTS    tests that stop or kill PostgreSQL: each run gets a server of its own
#                       (default: e2e/test_chaos e2e/test_claims e2e/test_checker e2e/test_standby)
#   STANDBY_PG_TESTS    of those, the tests whose server has a synchronous streaming standby, to
#                       fail over to or read from (default: e2e/test_standby; with e2e/test_checker
#                       too, its nemesis fails PostgreSQL over among its faults: make soak
#                       SOAK_STANDBY=1)
#   KAFKA_FAULT_TESTS   tests that stop Apache Kafka nodes: on a real cluster, no other test runs on
#                       that cluster at the same time (default: e2e/test_broker_fault e2e/test_checker)
#   CQRS_CHECKER_SEED, CQRS_CHECKER_SECONDS  replay a seed of e2e/test_checker, or run it longer
# The tests get CQRS_TEST_PG_CONNINFO (the shared server; a test creates its own database there),
# CQRS_TEST_PG_DIR (and, with a standby, CQRS_TEST_PG_STANDBY_DIR and CQRS_TEST_PG_STANDBY_PORT),
# PG_FSYNC and PG_MAX_CONNECTIONS (for pg.sh), CQRS_TEST_KAFKA_BOOTSTRAP, CQRS_TEST_KAFKA_MODE, CQRS_SCHEMAS_DIR,
# CQRS_MIGRATIONS_DIR, CQRS_BUILD, CQRS_REPO and CQRS_TEST_JSON_SCHEMA_SUITE, run from the
# repository root, with CK_DEFAULT_TIMEOUT=60 and CK_FORK=yes. Each concurrent slot has a mock
# Kafka cluster of its own. A test's output is printed whole when it ends; the summary lists every
# result in a fixed order, the ten slowest test programs and the wall time. The durations are kept
# in $BUILD/tests/durations: the next run starts the longest first (tests/durations before that).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(realpath -m -- "${BUILD:-build}") # relative to the caller's directory (make runs from the repo root)
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
JOBS=${JOBS:-3}
KAFKA_MODES=${KAFKA_MODES:-mock real real3}
FAILOVER_TESTS=${FAILOVER_TESTS:-e2e/test_broker_fault}
PRIVATE_PG_TESTS=${PRIVATE_PG_TESTS:-e2e/test_chaos e2e/test_claims e2e/test_checker e2e/test_standby}
STANDBY_PG_TESTS=${STANDBY_PG_TESTS:-e2e/test_standby}
KAFKA_FAULT_TESTS=${KAFKA_FAULT_TESTS:-e2e/test_broker_fault e2e/test_checker}
PG_SH=$REPO/deploy/local/pg.sh
KAFKA_SH=$REPO/deploy/kafka/kafka.sh
DURATIONS=$BUILD/tests/durations
cd "$REPO"

log() { echo "tests/run.sh: $*" >&2; }

[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { log "error: JOBS must be a positive number, not '$JOBS'"; exit 1; }
WALL_START=$SECONDS

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
selected() { [[ -z ${TESTS:-} || " $TESTS " == *" $1 "* ]]; }
scripts=()
# docs/openapi.json and the document this build's gateway generates are valid OpenAPI 3.1
# (openapi-spec-validator from PyPI, pinned, in a virtualenv under the build folder).
! selected api/validate-openapi || scripts+=("$REPO/tests/api/validate-openapi.sh|api")
# make bench, a few seconds per comparison on the mock cluster, so that it cannot rot: it fails on
# any error answer, any command not applied, or a contender without a result.
! selected bench/smoke || scripts+=("$REPO/tests/bench/bench.sh|bench")
# The libFuzzer harnesses, 20 s each on their seed corpus, so that they cannot rot; the long runs
# are `make fuzz` (docs/fuzzing.md).
! selected fuzz/smoke || scripts+=("$REPO/tests/fuzz/run.sh|fuzz")
# schemathesis against the running system (its own stack, once with authentication on and once
# off): no 5xx, every answer as the served OpenAPI document says.
! selected api/schemathesis || scripts+=("$REPO/tests/api/schemathesis.sh|schemathesis")
# Third-party checks of the running system (its own stack): openapi-core on a recorded set of
# exchanges, the CloudEvents SDK on every message of the commands, events and dead-letter topics,
# promtool on the three /metrics.
! selected api/conformance || scripts+=("$REPO/tests/api/conformance.sh|conformance")
# deploy/: the compose file, the Kubernetes manifests, the systemd units and the Dockerfile.
! selected deploy/validate || scripts+=("$REPO/tests/deploy/validate.sh|deploy")
if ((${#tests[@]} == 0 && ${#scripts[@]} == 0)); then
    log "error: no test binaries${TESTS:+ named $TESTS} found under $BUILD/tests/{unit,integration,e2e} (build them with make tests)"
    echo "0 passed, 0 failed"
    exit 1
fi
[[ -x $BUILD/mock-kafka ]] || { log "error: $BUILD/mock-kafka not found (build it with make all)"; exit 1; }

# --- the runs ------------------------------------------------------------------------------
# Unit tests run once; integration and e2e tests once against each Kafka. A run is
# "path|mode|name"; R_* hold its attributes, by index.
R_PATH=() R_MODE=() R_NAME=() R_PRIVATE_PG=() R_LOCK=()
add_run() { # path mode
    local t=$1 mode=$2 name=${1#"$BUILD"/tests/} base lock="" private=0
    base=$name
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
    [[ " $PRIVATE_PG_TESTS " != *" $base "* ]] || private=1
    [[ $private == 0 || " $STANDBY_PG_TESTS " != *" $base "* ]] || private=2
    # A real cluster is shared by the tests that run on it (each has its own topics), except while
    # a test stops its nodes: then that test has it alone.
    if [[ $mode == real || $mode == real3 ]]; then
        lock="$mode:shared"
        [[ " $KAFKA_FAULT_TESTS " != *" $base "* ]] || lock="$mode:alone"
    fi
    R_PATH+=("$t") R_MODE+=("$mode") R_NAME+=("$name") R_PRIVATE_PG+=("$private") R_LOCK+=("$lock")
}
need_real=0 need_real3=0
for t in "${tests[@]}"; do
    for ((r = 0; r < ${REPEAT:-1}; r++)); do
        case $t in
        # no Kafka of the runner's in these (test_relay makes a mock cluster of its own)
        */tests/unit/* | */tests/integration/test_pgconn | */tests/integration/test_openapi | \
            */tests/integration/test_relay) add_run "$t" none ;;
        *)
            for mode in $KAFKA_MODES; do
                [[ $mode != real3 || " $FAILOVER_TESTS " == *" ${t#"$BUILD"/tests/} "* ]] || continue
                add_run "$t" "$mode"
                [[ $mode != real ]] || need_real=1
                [[ $mode != real3 ]] || need_real3=1
            done
            ;;
        esac
    done
done
for s in "${scripts[@]}"; do
    add_run "${s%|*}" "${s##*|}"
done
NRUNS=${#R_NAME[@]}

# The order in which runs start: longest first by the durations of the last run (unknown ones by
# kind: end-to-end and script checks first, unit tests last), so that the slots end together.
# A build folder without a full run yet takes tests/durations, measured once on a 2-core machine.
declare -A LAST=()
last=$DURATIONS
[[ -f $last ]] || last=$REPO/tests/durations
if [[ -f $last ]]; then
    while IFS=$'\t' read -r secs name; do
        [[ $secs =~ ^[0-9]+$ ]] && LAST[$name]=$secs
    done <"$last"
fi
ORDER=()
while read -r _ i; do ORDER+=("$i"); done < <(
    for ((i = 0; i < NRUNS; i++)); do
        n=${R_NAME[i]}
        if [[ -n ${LAST[$n]:-} ]]; then
            est=${LAST[$n]}
        else
            case $n in
            unit/*) est=2 ;;
            integration/*) est=30 ;;
            *) est=90 ;;
            esac
        fi
        printf '%d %d\n' "$est" "$i"
    done | sort -k1,1nr -k2,2n
)

# --- throwaway PostgreSQL, mock Kafka, Apache Kafka ----------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cqrs-test.XXXXXX")
chmod 711 "$TMP" # as root, PostgreSQL runs as the postgres user, which must traverse this folder
PG_DIR=$TMP/pg
PG_STARTED=0
MOCK_PIDS=()
KAFKA_STARTER=""
declare -A JOB_OF=() # running job pid -> run index
declare -A SLOT_OF=() # run index -> slot

# Sends SIGTERM to the processes, gives them TENTHS tenths of a second in all to exit, then
# SIGKILL; reaps them.
stop_all() { # tenths pid...
    local tenths=$1 pid i=0
    shift
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "$@"; do
        while ((i < tenths)) && kill -0 "$pid" 2>/dev/null; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
}

cleanup() {
    local rc=$?
    trap '' INT TERM HUP
    set +e
    # Interrupted: each job passes the SIGTERM on to its test (timeout sends SIGKILL 10s later)
    # and stops its own PostgreSQL.
    stop_all 200 "${!JOB_OF[@]}"
    if [[ -n $KAFKA_STARTER ]] && kill -0 "$KAFKA_STARTER" 2>/dev/null; then
        kill -TERM "$KAFKA_STARTER" 2>/dev/null
        wait "$KAFKA_STARTER" 2>/dev/null # after the kafka.sh start under way: then stopped below
    fi
    for k in "$TMP/kafka" "$TMP/kafka3"; do
        [[ ! -d $k ]] || "$KAFKA_SH" stop "$k"
    done
    stop_all 100 "${MOCK_PIDS[@]}"
    ((PG_STARTED == 0)) || "$PG_SH" stop "$PG_DIR" 2>/dev/null
    if [[ ${CQRS_KEEP_TEST_DIR:-} == 1 ]]; then
        log "kept $TMP (postgres log: $PG_DIR/postgres.log, test output: $TMP/jobs/*/output)"
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

# A free port below the kernel's ephemeral range: kafka.sh's choice (see free_port() there).
free_port() { "$KAFKA_SH" free-port 1; }

# The tests' servers skip fsync: a test kills PostgreSQL, never the machine, and what a killed
# server had written is kept by the kernel all the same. Exported: a test that starts a server
# again, or makes a standby, starts it the same way (a hot standby needs max_connections at
# least the primary's).
export PG_FSYNC=off PG_MAX_CONNECTIONS=400

# Starts a PostgreSQL server in DIR on a free port and prints its conninfo.
start_pg() { # dir
    local dir=$1 attempt port out
    for attempt in 1 2 3; do # the port may be taken between the check and the bind
        port=$(free_port) || return 1
        if out=$("$PG_SH" start "$dir" "$port"); then
            tail -n 1 <<<"$out"
            return 0
        fi
        log "PostgreSQL did not start on port $port (attempt $attempt)"
    done
    return 1
}

# Starts a synchronous streaming standby of the primary in PRIMARY_DIR in DIR on a free port;
# exports CQRS_TEST_PG_STANDBY_DIR and CQRS_TEST_PG_STANDBY_PORT.
start_standby() { # dir primary_dir
    local dir=$1 primary_port attempt port
    primary_port=$(sed -n 4p "$2/pgdata/postmaster.pid")
    for attempt in 1 2 3; do
        port=$(free_port) || return 1
        if "$PG_SH" standby "$dir" "$port" "$primary_port" >/dev/null &&
            "$PG_SH" sync "$2" '*'; then
            export CQRS_TEST_PG_STANDBY_DIR=$dir CQRS_TEST_PG_STANDBY_PORT=$port
            return 0
        fi
        log "the standby did not start on port $port (attempt $attempt)"
    done
    return 1
}

PG_STARTED=1
CONNINFO=$(start_pg "$PG_DIR") || { log "error: could not start PostgreSQL (log: $PG_DIR/postgres.log)"; exit 1; }

# One mock cluster per slot: cheap, and a slow test does not slow the mock cluster of another.
start_mock() { # slot
    local f=$TMP/mock-kafka-$1.bootstrap logf=$TMP/mock-kafka-$1.log pid bs="" i
    "$BUILD/mock-kafka" --brokers 1 --partitions 4 --topics commands,events,replies,commands.dlq \
        --bootstrap-file "$f" </dev/null >"$logf" 2>&1 &
    pid=$!
    MOCK_PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$logf" >&2
            log "error: mock-kafka exited before writing $f"
            return 1
        fi
        if [[ -s $f ]]; then
            # Read until two reads agree, in case the writer was caught mid-write.
            bs=$(tr -d '[:space:]' <"$f")
            [[ -n $bs && $bs == "$(tr -d '[:space:]' <"$f")" ]] && break
            bs=""
        fi
        sleep 0.1
    done
    [[ -n $bs ]] || { cat "$logf" >&2; log "error: mock-kafka did not write $f within 10s"; return 1; }
    MOCK_BOOTSTRAP[$1]=$bs
}
MOCK_BOOTSTRAP=()
for ((slot = 0; slot < JOBS; slot++)); do
    start_mock "$slot" || exit 1
done

# The real Apache Kafka broker and the 3-node cluster are started in the background, while the
# tests that need neither run; each is started once for the whole run (fetched on first use).
# Its bootstrap lands in $TMP/<dir>.bootstrap, or $TMP/<dir>.failed.
start_real() { # dir nodes
    local dir=$TMP/$1 nodes=$2 attempt port bs
    for attempt in 1 2 3; do # a port may be taken between free-port and the broker's bind
        port=$("$KAFKA_SH" free-port "$nodes") || break
        if bs=$("$KAFKA_SH" start "$dir" "$port" "$nodes"); then
            echo "$bs" >"$dir.bootstrap"
            return 0
        fi
        "$KAFKA_SH" stop "$dir"
        rm -rf "$dir"
        log "Apache Kafka ($nodes node(s)) did not start on port $port (attempt $attempt)"
    done
    touch "$dir.failed"
    return 1
}
if ((need_real || need_real3)); then
    (
        trap 'exit 143' TERM
        "$KAFKA_SH" fetch || { touch "$TMP/kafka.failed" "$TMP/kafka3.failed"; exit 1; }
        ((need_real == 0)) || start_real kafka 1 || true
        ((need_real3 == 0)) || start_real kafka3 3 || true
    ) </dev/null &
    KAFKA_STARTER=$!
fi

# The official JSON Schema test suite, for unit/test_jsonschema_suite (fetched once per build folder).
if ! CQRS_TEST_JSON_SCHEMA_SUITE=$("$REPO/tests/support/json-schema-suite.sh" "$BUILD/json-schema-test-suite"); then
    log "error: could not fetch the JSON Schema test suite; unit/test_jsonschema_suite will fail"
    CQRS_TEST_JSON_SCHEMA_SUITE=""
fi
export CQRS_TEST_JSON_SCHEMA_SUITE
export CQRS_TEST_PG_CONNINFO=$CONNINFO
export CQRS_TEST_PG_DIR=$PG_DIR
export CQRS_SCHEMAS_DIR=schemas/domains
export CQRS_MIGRATIONS_DIR=schemas/migrations
export CQRS_BUILD=$BUILD
export CQRS_REPO=$REPO
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-60}
export CK_FORK=${CK_FORK:-yes}
log "PostgreSQL: $CONNINFO; mock Kafka: ${MOCK_BOOTSTRAP[*]}; $NRUNS runs, $JOBS at a time"

# --- one run -------------------------------------------------------------------------------
# In a subshell: its own PostgreSQL if it needs one, the test under timeout, the exit status in
# <dir>/rc and the output in <dir>/output.
run_job() { # index slot
    local i=$1 slot=$2 dir=$TMP/jobs/$1 t=${R_PATH[$1]} mode=${R_MODE[$1]} rc=0 tpid pg=""
    local args=() pre=()
    mkdir -p "$dir"
    exec </dev/null >"$dir/output" 2>&1
    trap '[[ -z ${tpid:-} ]] || kill -TERM "$tpid" 2>/dev/null' TERM
    case $mode in
    real | real3)
        local kdir=$TMP/kafka
        [[ $mode == real ]] || kdir=$TMP/kafka3
        if [[ ! -s $kdir.bootstrap ]]; then
            echo "tests/run.sh: Apache Kafka ($mode) did not start; see the log above"
            echo 1 >"$dir/rc"
            return
        fi
        CQRS_TEST_KAFKA_BOOTSTRAP=$(<"$kdir.bootstrap")
        export CQRS_TEST_KAFKA_BOOTSTRAP CQRS_TEST_KAFKA_MODE=real
        export CQRS_TEST_KAFKA_DIR=$kdir CQRS_TEST_KAFKA_NODES=1 # fault tests use kafka.sh
        [[ $mode == real ]] || CQRS_TEST_KAFKA_NODES=3
        ;;
    *) export CQRS_TEST_KAFKA_BOOTSTRAP=${MOCK_BOOTSTRAP[slot]} CQRS_TEST_KAFKA_MODE=mock ;;
    esac
    if ((R_PRIVATE_PG[i])); then # the test stops PostgreSQL: a server of its own
        pg=$dir/pg
        if ! CQRS_TEST_PG_CONNINFO=$(start_pg "$pg"); then
            echo "tests/run.sh: could not start a PostgreSQL server for this test"
            "$PG_SH" stop "$pg" 2>/dev/null
            echo 1 >"$dir/rc"
            return
        fi
        export CQRS_TEST_PG_DIR=$pg
        # A synchronous standby: a commit returns once the standby has it, so a failover to it
        # loses nothing that was answered.
        if ((R_PRIVATE_PG[i] == 2)) && ! start_standby "$dir/pg-standby" "$pg"; then
            echo "tests/run.sh: could not start a standby PostgreSQL server for this test"
            "$PG_SH" stop "$pg" 2>/dev/null
            echo 1 >"$dir/rc"
            return
        fi
    fi
    [[ $mode != bench ]] || pre=(env BENCH_KAFKA=mock BENCH_SECONDS=2 BENCH_PAIRS=1 BENCH_COMMANDS=3000
        BENCH_ACCOUNTS=200 BENCH_PARKED=2000 BENCH_GROWTH="100 10000" BENCH_GROWN_ROWS=20000
        BENCH_GROWTH_COMMANDS=2000 BENCH_FLOOR_ROUNDS=10 BENCH_FLOOR_LOADED_ROUNDS=10 BENCH_SYNC_ROWS=2000
        BENCH_OUT="$dir/bench")
    [[ $mode != fuzz ]] || pre=(env FUZZ_SECONDS=20)
    [[ $mode != schemathesis ]] || pre=(env SCHEMATHESIS_EXAMPLES=20 "SCHEMATHESIS_SEED=${SCHEMATHESIS_SEED:-1}")
    if [[ $mode == api ]]; then # an empty document fails the check, so a failure here counts
        args=("$REPO/docs/openapi.json" "$dir/openapi.json" "$dir/openapi-auth-off.json")
        "$BUILD/command-gateway" --print-openapi >"$dir/openapi.json" 2>"$dir/print-openapi.log" ||
            { echo "command-gateway --print-openapi failed:"; cat "$dir/print-openapi.log"; }
        "$BUILD/command-gateway" --auth.mode=off --print-openapi >"$dir/openapi-auth-off.json" \
            2>"$dir/print-openapi.log" ||
            { echo "command-gateway --print-openapi failed:"; cat "$dir/print-openapi.log"; }
    fi
    # In the background so that the SIGTERM of an interrupted run is passed on at once.
    BUILD=$BUILD timeout -k 10 "$TEST_TIMEOUT" "${pre[@]}" "$t" "${args[@]}" &
    tpid=$!
    while true; do
        rc=0
        wait "$tpid" || rc=$?
        kill -0 "$tpid" 2>/dev/null || break # else the wait was cut short by a signal
    done
    [[ -z $pg ]] || "$PG_SH" stop "$pg" 2>/dev/null || true
    [[ ! -d $dir/pg-standby ]] || "$PG_SH" stop "$dir/pg-standby" 2>/dev/null || true
    echo "$rc" >"$dir/rc"
}

# --- run them, JOBS at a time --------------------------------------------------------------
R_STATUS=() R_TOOK=() R_WHY=() R_FOUND=() R_START=()
declare -A LOCKS=() # "real" / "real3" -> number of runs holding it; -1 while a run has it alone
FREE_SLOTS=()
for ((slot = 0; slot < JOBS; slot++)); do FREE_SLOTS+=("$slot"); done
pending=("${ORDER[@]}")
passed=0
failed=0

kafka_state() { # mode: ready, failed or starting
    if [[ -s $TMP/$1.bootstrap ]]; then
        echo ready
    elif [[ -e $TMP/$1.failed ]] || [[ -z $KAFKA_STARTER ]] || ! kill -0 "$KAFKA_STARTER" 2>/dev/null; then
        echo failed
    else
        echo starting
    fi
}

# Whether run i may start now (its cluster is up, or has failed, and its lock is free). A run that
# wants a cluster alone and waits for it keeps the runs after it from taking the cluster
# (DRAINING), so that it does not wait for every other run on that cluster.
declare -A DRAINING=()
can_start() {
    local i=$1 lock=${R_LOCK[$1]} key want held kdir
    [[ -n $lock ]] || return 0
    key=${lock%%:*} want=${lock##*:}
    kdir=kafka
    [[ $key == real ]] || kdir=kafka3
    [[ $(kafka_state "$kdir") != starting ]] || return 1
    held=${LOCKS[$key]:-0}
    if [[ $want == alone ]]; then
        ((held == 0)) && return 0
        DRAINING[$key]=1
        return 1
    fi
    ((held >= 0)) && [[ -z ${DRAINING[$key]:-} ]]
}

take_lock() { # i delta
    local lock=${R_LOCK[$1]} key
    [[ -n $lock ]] || return 0
    key=${lock%%:*}
    if [[ ${lock##*:} == alone ]]; then
        LOCKS[$key]=$((${2} > 0 ? -1 : 0))
    else
        LOCKS[$key]=$((${LOCKS[$key]:-0} + $2))
    fi
}

start_next() {
    local k i slot
    DRAINING=()
    for k in "${!pending[@]}"; do
        ((${#FREE_SLOTS[@]} > 0)) || return 0
        i=${pending[k]}
        can_start "$i" || continue
        slot=${FREE_SLOTS[0]}
        FREE_SLOTS=("${FREE_SLOTS[@]:1}")
        unset 'pending[k]'
        take_lock "$i" 1
        R_START[i]=$SECONDS
        run_job "$i" "$slot" &
        JOB_OF[$!]=$i
        SLOT_OF[$i]=$slot
    done
}

finish() { # pid
    local pid=$1 i=${JOB_OF[$1]} rc took why
    unset 'JOB_OF[$pid]'
    wait "$pid" 2>/dev/null || true
    FREE_SLOTS+=("${SLOT_OF[$i]}")
    take_lock "$i" -1
    rc=$(cat "$TMP/jobs/$i/rc" 2>/dev/null || echo 1)
    took=$((SECONDS - R_START[i]))
    R_TOOK[i]=$took
    if ((rc == 0)); then
        passed=$((passed + 1))
        R_STATUS[i]=PASS
        R_WHY[i]="${took}s"
    else
        failed=$((failed + 1))
        R_STATUS[i]=FAIL
        if ((rc == 124 || (rc == 137 && took >= TEST_TIMEOUT))); then
            why="timed out after ${TEST_TIMEOUT}s"
        elif ((rc > 128)); then
            why="killed by signal $((rc - 128))"
        else
            why="exit status $rc"
        fi
        R_WHY[i]="$why, ${took}s"
        # What the summary repeats of the output: Check's failures, schemathesis' findings,
        # errors; a CI log that keeps only the tail still says why.
        R_FOUND[i]=$(grep -E -e ':[FE]:' -e '^_+ .+ _+$' -e '^- [A-Z]' -e '^ +Received:' \
            -e '^\[[0-9]{3}\] ' -e 'error:|FAIL:|timed out|not ready|did not' \
            "$TMP/jobs/$i/output" 2>/dev/null | grep -v '"level":"\(info\|debug\)"' |
            head -n 8 | cut -c1-300 || true)
    fi
    echo "=== ${R_NAME[i]}"
    cat "$TMP/jobs/$i/output" 2>/dev/null || true
    echo "--- ${R_STATUS[i]}  ${R_NAME[i]}  (${R_WHY[i]})"
    [[ ${CQRS_KEEP_TEST_DIR:-} == 1 ]] || rm -rf "$TMP/jobs/$i"
}

while ((${#pending[@]} > 0 || ${#JOB_OF[@]} > 0)); do
    start_next
    if ((${#JOB_OF[@]} == 0)); then
        # Nothing runs and nothing may start: the runs left wait for a Kafka cluster to start.
        if [[ -n $KAFKA_STARTER ]] && kill -0 "$KAFKA_STARTER" 2>/dev/null; then
            wait "$KAFKA_STARTER" || true
            continue
        fi
        log "error: runs left that cannot start"
        break
    fi
    done_pid=""
    wait -n -p done_pid || true
    [[ -n $done_pid && -n ${JOB_OF[$done_pid]:-} ]] || continue # the Kafka starter ended
    finish "$done_pid"
done

for ((i = 0; i < ${#MOCK_PIDS[@]}; i++)); do
    if ! kill -0 "${MOCK_PIDS[i]}" 2>/dev/null; then
        log "warning: mock-kafka $i died during the run; later tests may have failed because of it"
        tail -n 20 "$TMP/mock-kafka-$i.log" >&2 || true
    fi
done

# The durations, for the order of the next run (only with every test: a partial run keeps them).
if [[ -z ${TESTS:-} ]] && mkdir -p "$(dirname "$DURATIONS")"; then
    for ((i = 0; i < NRUNS; i++)); do
        [[ -z ${R_TOOK[i]:-} ]] || printf '%s\t%s\n' "${R_TOOK[i]}" "${R_NAME[i]}"
    done >"$DURATIONS.tmp" && mv "$DURATIONS.tmp" "$DURATIONS"
fi

echo
echo "=== summary"
for ((i = 0; i < NRUNS; i++)); do
    echo "${R_STATUS[i]:-SKIP}  ${R_NAME[i]}  (${R_WHY[i]:-not run})"
done
echo
echo "=== slowest ten"
for ((i = 0; i < NRUNS; i++)); do
    [[ -z ${R_TOOK[i]:-} ]] || printf '%s %s\n' "${R_TOOK[i]}" "${R_NAME[i]}"
done | sort -k1,1nr | head -n 10 | while read -r secs name; do printf '%5ss  %s\n' "$secs" "$name"; done
if ((failed > 0)); then
    echo
    echo "=== failed"
    for ((i = 0; i < NRUNS; i++)); do
        [[ ${R_STATUS[i]:-} == FAIL ]] || continue
        echo "FAIL  ${R_NAME[i]}  (${R_WHY[i]})"
        [[ -z ${R_FOUND[i]:-} ]] || sed 's/^/      /' <<<"${R_FOUND[i]}"
    done
fi
echo
not_run=$((NRUNS - passed - failed))
wall=$((SECONDS - WALL_START))
left=""
((not_run == 0)) || left=", $not_run not run"
echo "$passed passed, $failed failed$left; wall time $((wall / 60))m$((wall % 60))s, $JOBS at a time"
if ((failed > 0 || not_run > 0)); then
    [[ ${CQRS_KEEP_TEST_DIR:-} == 1 ]] ||
        log "rerun with CQRS_KEEP_TEST_DIR=1 to keep the PostgreSQL, Kafka and test logs"
    exit 1
fi
