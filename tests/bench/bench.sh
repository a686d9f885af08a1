#!/usr/bin/env bash
# make bench: the pipeline measured side by side with baselines on the same machine, in one run.
# Each comparison runs its contenders interleaved (A B C A B C ...) BENCH_PAIRS times and reports
# the median and range of each, their ratio to the baseline, and the CPU time per request of each
# process involved (from /proc).
#
#   1. HTTP intake: command-gateway in optimistic mode (Prefer: respond-async: validated, claimed
#      in PostgreSQL, produced to Kafka, answered 202), with its default workers and with one,
#      against bare202 (one libevent thread that answers 202), bare202 with Kafka (each body
#      produced, answered from its delivery report) and nginx `return 202`, with the same wrk
#      script and connections.
#   2. Applying commands: state-processor draining a pre-filled commands topic against pgbench
#      running the processor's statements (tests/bench/pgbench.sh), one command per transaction
#      on one connection, and batched with pipelining. The processor's peak RSS is recorded.
#   3. Sync end to end, open loop (tests/bench/openloop.c, latency from when each request was
#      due): the highest rate reached (closed loop with BENCH_SYNC_CONNS connections, and with
#      64), then 25, 50, 75 and 90% of it, each run's slow answers placed in time
#      (tests/bench/series.py); and
#      the floor of the path (tests/bench/floor.c: two bare Kafka hops and one commit), alone and
#      during the 50% runs; and the CPU time and the time waiting for a core of every thread of
#      the path's processes (tests/bench/sched.py).
#   4. The gateway's RSS with BENCH_PARKED sync requests waiting (the processor stopped).
#   5. Cost growth: the processor applying deposits spread over 1k, 100k and 1M accounts, and
#      over 1M with the commands and outbox tables grown to millions of rows; after each of its
#      runs, pgbench running its statements with the same deposits on the same database.
#
# Environment:
#   BUILD           where the binaries are (default: build)
#   BENCH_KAFKA     real (default): Apache Kafka from Maven Central; mock: librdkafka's mock cluster
#   BENCH_SECONDS   length of each HTTP run (default: 15)
#   BENCH_PAIRS     rounds of each comparison (default: 3)
#   BENCH_CONNS     HTTP connections (default: 64)
#   BENCH_COMMANDS  commands in the topic the processor drains (default: 50000)
#   BENCH_ACCOUNTS  accounts they are spread over (default: 1000)
#   BENCH_PARKED    sync requests held while the processor is stopped (default: 10000)
#   BENCH_BATCH     the processor's batch.max, and the commands per batched pgbench transaction
#                   (default: 500, batch.max's default)
#   BENCH_OUT       results folder (default: $BUILD/bench): results.md, results.jsonl, *.svg
#   BENCH_GROWTH    the account counts of comparison 5 (default: "1000 100000 1000000")
#   BENCH_GROWN_ROWS  rows in commands and outbox for its last contender (default: 2000000)
#   BENCH_GROWTH_COMMANDS  deposits each of its runs applies (default: 20000)
#   BENCH_ONLY      the comparisons to run, of: http apply growth sync parked (default: all)
#   BENCH_FLAGS     extra flags for every gateway and processor (e.g. --kafka.linger.ms=0)
#   BENCH_GATEWAY_FLAGS  extra flags for the gateways only (e.g. --workers=1)
#   BENCH_SYNC_CONNS  connections of the sync runs: enough that the rate they reach is bounded by
#                   the pipeline, not by the requests they can have in flight (default: 512)
#   BENCH_KAFKA_DIR a folder for the broker's data (default: beside PostgreSQL's, in the
#                   benchmark's temporary folder), e.g. /dev/shm to keep its writes off the disk
#                   that PostgreSQL's commits flush
#   BENCH_SYNC_ROWS rows in commands and outbox before the sync runs, as in a database that has
#                   served for a while (default: 200000; 0: empty tables)
#   BENCH_FLOOR_ROUNDS  round trips (and commits) of each floor measurement (default: 1000)
#   BENCH_FLOOR_LOADED_ROUNDS  the same, for the floor measured during each 50% sync run
#                   (default: 200)
#   BENCH_PROFILE   a folder: each processor drain and each gateway run of 1 is recorded there
#                   by `perf record` with DWARF call graphs (perf-<group>.data, perf-gateway-<round>.data)
#   BENCH_PG_STATEMENTS  1: PostgreSQL loads pg_stat_statements (planning tracked too), and each
#                   processor drain and pgbench run of 2 and 5 writes where PostgreSQL's time went,
#                   by statement, per command, to statements/<bench>-<round>-<contender>.txt
#   BENCH_QUICK     1: the headline ratios in a few minutes (one round, 5 s runs, 20,000
#                   commands, comparisons 1 to 3); the settings above still override it
set -euo pipefail

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    : "${BENCH_SECONDS:=5}" "${BENCH_PAIRS:=1}" "${BENCH_COMMANDS:=20000}"
    : "${BENCH_ONLY:=http apply sync}"
fi

if [[ ${BENCH_SH_SIGNALS_RESET:-} != "$$" ]]; then
    export BENCH_SH_SIGNALS_RESET=$$
    exec env --default-signal=INT,TERM,HUP "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(realpath -m -- "${BUILD:-build}")
BENCH_KAFKA=${BENCH_KAFKA:-real}
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
WARMUP_S=$(((SECONDS_PER_RUN + 2) / 3)) # a run before the rounds, not recorded
PAIRS=${BENCH_PAIRS:-3}
CONNS=${BENCH_CONNS:-64}
COMMANDS=${BENCH_COMMANDS:-50000}
PARKED=${BENCH_PARKED:-10000}
ONLY=${BENCH_ONLY:-http apply growth sync parked}
wants() { [[ " $ONLY " == *" $1 "* ]]; }
ACCOUNTS=${BENCH_ACCOUNTS:-1000}
BATCH=${BENCH_BATCH:-500} # the processor's batch.max (its default) and pgbench's batch
OUT=$(realpath -m -- "${BENCH_OUT:-$BUILD/bench}")
PG_SH=$REPO/deploy/local/pg.sh
KAFKA_SH=$REPO/deploy/kafka/kafka.sh
cd "$REPO"

log() { echo "bench: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in wrk nginx pgbench psql python3; do
    command -v "$tool" >/dev/null || die "$tool not found (make bench installs it: deploy/install-deps.sh)"
done
for bin in command-gateway state-processor mock-kafka bench/bare202 bench/fill bench/openloop; do
    [[ -x $BUILD/$bin ]] || die "$BUILD/$bin not found (make bench builds it)"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cqrs-bench.XXXXXX")
chmod 711 "$TMP"
# The broker's data: beside PostgreSQL's by default, elsewhere with BENCH_KAFKA_DIR.
KDIR=$TMP/kafka
if [[ -n ${BENCH_KAFKA_DIR:-} ]]; then
    KDIR=$(mktemp -d "$BENCH_KAFKA_DIR/cqrs-bench-kafka.XXXXXX")
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
PIDS=()
PG_STARTED=0

cleanup() {
    local rc=$? p
    trap '' INT TERM HUP
    set +e
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    [[ ! -d $KDIR/node1 ]] || "$KAFKA_SH" stop "$KDIR"
    [[ $KDIR == "$TMP/kafka" ]] || rm -rf "$KDIR"
    ((PG_STARTED == 0)) || "$PG_SH" stop "$TMP/pg" 2>/dev/null
    if ((rc != 0)); then
        log "failed; logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU time (user + system) of the processes, in clock ticks.
cpu_ticks() {
    local total=0 p f
    for p in "$@"; do
        [[ -r /proc/$p/stat ]] || continue
        f=$(sed 's/^.*) //' "/proc/$p/stat")
        read -r -a a <<<"$f"
        total=$((total + a[11] + a[12])) # fields 14 and 15 (utime, stime), after pid and comm
    done
    echo "$total"
}
TICK=$(getconf CLK_TCK)

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# CPU time of PostgreSQL in clock ticks: the postmaster's own and that of its children that
# ended (it reaps them: cutime, cstime), plus the live children's. A backend that ends between
# two samples moves from the second term to the first, so differences stay right.
pg_cpu() {
    local master f total p
    master=$(head -n 1 "$TMP/pg/pgdata/postmaster.pid")
    f=$(sed 's/^.*) //' "/proc/$master/stat")
    read -r -a a <<<"$f"
    total=$((a[11] + a[12] + a[13] + a[14]))
    for p in $(ps -o pid= --ppid "$master"); do
        total=$((total + $(cpu_ticks "$p")))
    done
    echo "$total"
}

wait_http() { # port path
    local i
    for ((i = 0; i < 600; i++)); do
        curl -fs -o /dev/null "http://127.0.0.1:$1$2" && return 0
        sleep 0.1
    done
    return 1
}

# --- PostgreSQL and Kafka ------------------------------------------------------------------
PG_STARTED=1
STATEMENTS=${BENCH_PG_STATEMENTS:-0}
[[ $STATEMENTS == 1 ]] && export PG_PRELOAD=pg_stat_statements
CONNINFO=$("$PG_SH" start "$TMP/pg" "$(free_port)" | tail -n 1) || die "PostgreSQL did not start"
if [[ $STATEMENTS == 1 ]]; then
    psql -q "$CONNINFO" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
        -c "ALTER SYSTEM SET pg_stat_statements.track_planning = on" \
        -c "SELECT pg_reload_conf()" >/dev/null || die "pg_stat_statements could not be set up"
fi
if [[ $BENCH_KAFKA == real ]]; then
    BOOTSTRAP=""
    for attempt in 1 2 3; do
        # A port can be taken between kafka.sh free-port and the broker's bind: 3 tries.
        BOOTSTRAP=$("$KAFKA_SH" start "$KDIR" "$("$KAFKA_SH" free-port)") && break
        BOOTSTRAP=""
        "$KAFKA_SH" stop "$KDIR" 2>/dev/null || true
        rm -rf "${KDIR:?}"/*
        log "Apache Kafka did not start (attempt $attempt of 3)"
    done
    [[ -n $BOOTSTRAP ]] || die "Apache Kafka did not start"
    KAFKA_PIDS() { cat "$KDIR/node1/pid"; }
else
    "$BUILD/mock-kafka" --brokers 1 --partitions 4 --bootstrap-file "$TMP/kafka.bootstrap" \
        </dev/null >"$TMP/mock-kafka.log" 2>&1 &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    for ((i = 0; i < 100; i++)); do
        [[ -s $TMP/kafka.bootstrap ]] && break
        sleep 0.1
    done
    sleep 0.1
    BOOTSTRAP=$(tr -d '[:space:]' <"$TMP/kafka.bootstrap")
    [[ -n $BOOTSTRAP ]] || die "mock-kafka did not start"
    KAFKA_PIDS() { echo "$MOCK_PID"; }
fi
KAFKA_ARGS=(--kafka.bootstrap.servers="$BOOTSTRAP")
read -r -a EXTRA_FLAGS <<<"${BENCH_FLAGS:-}"
KAFKA_ARGS+=("${EXTRA_FLAGS[@]}")
read -r -a GW_FLAGS <<<"${BENCH_GATEWAY_FLAGS:-}"
# The mock cluster holds each fetch for the whole fetch.wait.max.ms, and ends a rebalance only
# when the session timeout expires.
[[ $BENCH_KAFKA == real ]] || KAFKA_ARGS+=(--kafka.fetch.wait.max.ms=5 --kafka.session.timeout.ms=6000)
log "PostgreSQL: $CONNINFO; Kafka ($BENCH_KAFKA): $BOOTSTRAP"

# A fresh database with the schema: the processor applies the migrations at start.
make_db() { # name
    psql -q "$CONNINFO" -c "CREATE DATABASE $1" >/dev/null
    echo "${CONNINFO/dbname=cqrs/dbname=$1}"
}
# Starts build/BINARY on CONNINFO with the Kafka flags and FLAGS, its log in $TMP/LOG.log; sets
# STARTED to its pid, which is stopped on exit.
# BENCH_PROFILE: perf records a process (DWARF call graphs) from profile_start to profile_stop.
PROFILE_PID=""
profile_start() { # pid name
    [[ -n ${BENCH_PROFILE:-} ]] || return 0
    mkdir -p "$BENCH_PROFILE"
    perf record -q --call-graph dwarf,16384 -F 999 -p "$1" -o "$BENCH_PROFILE/perf-$2.data" \
        2>/dev/null &
    PROFILE_PID=$!
}
profile_stop() {
    [[ -n $PROFILE_PID ]] || return 0
    kill -INT "$PROFILE_PID"
    wait "$PROFILE_PID" || true
    PROFILE_PID=""
}

start_service() { # binary log conninfo flags...
    local bin=$1 name=$2 db=$3
    shift 3
    "$BUILD/$bin" --pg.conninfo="$db" "${KAFKA_ARGS[@]}" "$@" >"$TMP/$name.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}
migrate() { # conninfo
    local port pid
    port=$(free_port)
    start_service state-processor migrate "$1" --topic.prefix=migrate- --group.id=migrate \
        --http.port="$port"
    pid=$STARTED
    wait_http "$port" /readyz || die "state-processor did not become ready (see $TMP/migrate.log)"
    kill -TERM "$pid"
    wait "$pid" || true
}

record() { # json object
    echo "$1" >>"$RESULTS"
}

# The broker is a JVM, started cold: for its first minute or so of traffic its JIT compilers take
# a large share of the two cores everything here is measured on (at 100 sync commands/s, 0.85 of
# a core against 0.14 once compiled). Before any comparison, bare ping-pongs through it (floor.c)
# until its compiler threads have used under a tenth of a core over a whole round of them, at most
# 20 rounds.
jit_ticks() { # the CPU time of the broker's compiler threads, in clock ticks
    local t sum=0
    for t in /proc/"$(KAFKA_PIDS)"/task/*; do
        [[ $(cat "$t/comm" 2>/dev/null) == C[12]\ Compiler* ]] || continue
        # utime and stime, counted after the ")" that ends the thread's name
        sum=$((sum + $(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')))
    done
    echo "$sum"
}
if [[ $BENCH_KAFKA == real ]]; then
    WARM_DB=$(make_db bench_warm)
    for ((w = 1; w <= 20; w++)); do
        j0=$(jit_ticks) t0=$(date +%s%N)
        "$BUILD/bench/floor" "$BOOTSTRAP" "warm$w-" "$WARM_DB" 2000 >/dev/null ||
            die "the broker's warm-up failed"
        j1=$(jit_ticks) t1=$(date +%s%N)
        ((10 * (j1 - j0) * 1000000000 / TICK < t1 - t0)) && break
    done
    ((w <= 20)) || log "the broker's compilers had not settled after 20 rounds; measuring anyway"
    record "{\"bench\": \"broker_warmup\", \"rounds\": $((w > 20 ? 20 : w)), \"settled\": $([[ $w -le 20 ]] && echo true || echo false)}"
fi

# --- 1. HTTP intake --------------------------------------------------------------------------
if wants http; then
GW_DB=$(make_db bench_gateway)
migrate "$GW_DB"
GW_PORT=$(free_port)
start_service command-gateway gateway "$GW_DB" --topic.prefix=bench- --http.port="$GW_PORT" \
    --log.level=warn --auth.mode=off "${GW_FLAGS[@]}"
GW_PID=$STARTED
wait_http "$GW_PORT" /readyz || die "command-gateway did not become ready (see $TMP/gateway.log)"
# The same with one worker: one loop, as bare202 has, on two cores the broker and PostgreSQL share.
GW1_PORT=$(free_port)
start_service command-gateway gateway1 "$GW_DB" --topic.prefix=bench- --http.port="$GW1_PORT" \
    --log.level=warn --auth.mode=off "${GW_FLAGS[@]}" --workers=1
GW1_PID=$STARTED
wait_http "$GW1_PORT" /readyz || die "command-gateway did not become ready (see $TMP/gateway1.log)"

BARE_PORT=$(free_port)
"$BUILD/bench/bare202" "$BARE_PORT" >"$TMP/bare202.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
# bare202 that also hands each body to Kafka and answers from its delivery report.
BAREK_PORT=$(free_port)
"$BUILD/bench/bare202" "$BAREK_PORT" "$BOOTSTRAP" bench-bare202 >"$TMP/bare202k.log" 2>&1 &
BAREK_PID=$!
PIDS+=("$BAREK_PID")

NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            client_max_body_size 1m;
            default_type application/json;
            return 202 '{"command_id":"00000000-0000-4000-8000-000000000000","status":"accepted","aggregate_type":"account","aggregate_id":"bench-0000","idempotency_key":"00000000-0000-4000-8000-000000000000"}\n';
        }
    }
}
EOF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
sleep 0.5
for p in "$BARE_PORT" "$BAREK_PORT" "$NGINX_PORT"; do
    wait_http "$p" / || die "a baseline server did not start on port $p"
done
nginx_pids() { echo "$NGINX_PID" $(ps -o pid= --ppid "$NGINX_PID"); }

# One wrk run against a server: appends a result line. The gateway's runs also count the CPU of
# PostgreSQL and Kafka, which it drives.
http_run() { # name port round
    local name=$1 port=$2 round=$3 pids=() out t0 t1 k0 k1 g0 g1 pg0 pg1
    case $name in
    gateway) pids=("$GW_PID") ;;
    gateway1) pids=("$GW1_PID") ;;
    bare202) pids=("$BARE_PID") ;;
    bare202k) pids=("$BAREK_PID") ;;
    nginx) read -r -a pids <<<"$(nginx_pids)" ;;
    esac
    read -r -a kp <<<"$(KAFKA_PIDS)"
    g0=$(cpu_ticks "${pids[@]}")
    pg0=$(pg_cpu)
    k0=$(cpu_ticks "${kp[@]}")
    [[ $name != gateway ]] || profile_start "$GW_PID" "gateway-$round"
    out=$(wrk -t2 -c"$CONNS" -d"${SECONDS_PER_RUN}s" -s tests/bench/post.lua \
        "http://127.0.0.1:$port/v1/commands" 2>&1) || die "wrk failed: $out"
    profile_stop
    g1=$(cpu_ticks "${pids[@]}")
    pg1=$(pg_cpu)
    k1=$(cpu_ticks "${kp[@]}")
    local line
    line=$(grep '^RESULT ' <<<"$out") || die "wrk printed no result: $out"
    python3 - "$name" "$round" "$line" "$((g1 - g0))" "$((pg1 - pg0))" "$((k1 - k0))" "$TICK" \
        >>"$RESULTS" <<'EOF'
import json, sys
name, rnd, line, cpu, pg, kafka, tick = sys.argv[1:]
f = dict(kv.split("=") for kv in line.split()[1:])
n = int(f["requests"])
secs = int(f["duration_us"]) / 1e6
per = lambda ticks: int(ticks) / int(tick) * 1e6 / n if n else 0
print(json.dumps({"bench": "http", "name": name, "round": int(rnd), "requests": n,
                  "rps": n / secs, "not_202": int(f["not_202"]), "errors": int(f["errors"]),
                  "p50_ms": int(f["p50_us"]) / 1000, "p99_ms": int(f["p99_us"]) / 1000,
                  "cpu_us_per_req": per(cpu), "pg_cpu_us_per_req": per(pg),
                  "kafka_cpu_us_per_req": per(kafka)}))
EOF
    tail -n 1 "$RESULTS" >&2
}

log "1. HTTP intake: ${PAIRS} rounds of ${SECONDS_PER_RUN}s, $CONNS connections"
# Not recorded: the broker's JVM compiles its hot paths in the first seconds of load, and the
# first round would measure that.
for p in "$GW_PORT" "$GW1_PORT" "$BAREK_PORT"; do
    wrk -t2 -c"$CONNS" -d"$WARMUP_S"s -s tests/bench/post.lua "http://127.0.0.1:$p/v1/commands" \
        >/dev/null 2>&1 || die "the warm-up run failed"
done
for ((r = 1; r <= PAIRS; r++)); do
    http_run bare202 "$BARE_PORT" "$r"
    http_run gateway "$GW_PORT" "$r"
    http_run bare202k "$BAREK_PORT" "$r"
    http_run gateway1 "$GW1_PORT" "$r"
    http_run nginx "$NGINX_PORT" "$r"
done
GW_RSS=$(rss_kib "$GW_PID")
kill -TERM "$GW_PID" "$GW1_PID" "$BARE_PID" "$BAREK_PID" "$NGINX_PID"
wait "$GW_PID" "$GW1_PID" "$BARE_PID" "$BAREK_PID" "$NGINX_PID" 2>/dev/null || true
PIDS=("${PIDS[@]/$GW_PID/}")
record "{\"bench\": \"rss\", \"name\": \"gateway after the intake runs\", \"kib\": $GW_RSS}"
fi

# Every applying run starts from a checkpoint, so that none pays for writing out the pages that
# the runs and set-up before it dirtied; each pays for its own (and for the full-page images of
# the pages it touches first).
fresh_checkpoint() { # conninfo
    psql -q "$1" -c CHECKPOINT >/dev/null || die "CHECKPOINT failed"
}

# One processor draining the topic PREFIXcommands (TOTAL messages) into DB as group GROUP: appends
# a result line {"bench": BENCH, "name": NAME, ...} with EXTRA (JSON members) merged in.
drain_run() { # bench name round db prefix group total extra
    local bench=$1 name=$2 round=$3 db=$4 prefix=$5 group=$6 total=$7 extra=$8
    local port pid t0="" t1="" first=0 peak=0 rss c0 c1 pg0 pg1 k0 k1 now n since i
    port=$(free_port)
    fresh_checkpoint "$db"
    since=$(psql -qAt "$db" -c "SELECT now()") # what this run applies finishes after it
    read -r -a kp <<<"$(KAFKA_PIDS)"
    statements_reset
    start_service state-processor "$group" "$db" --topic.prefix="$prefix" --group.id="$group" \
        --http.port="$port" --log.level=warn --batch.max="$BATCH"
    pid=$STARTED
    profile_start "$pid" "$group"
    # Timed from the first stored offset to the last: start-up and the group join are left out.
    for ((i = 0; i < 6000; i++)); do
        n=$(psql -qAt "$db" -c "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = '$group'" 2>/dev/null || echo 0)
        now=$(date +%s.%N)
        rss=$(rss_kib "$pid")
        ((rss > peak)) && peak=$rss
        if [[ -z $t0 ]] && ((n > 0)); then
            t0=$now first=$n
            c0=$(cpu_ticks "$pid")
            pg0=$(pg_cpu)
            k0=$(cpu_ticks "${kp[@]}")
        fi
        if ((n >= total)); then
            t1=$now
            break
        fi
        sleep 0.05
    done
    [[ -n $t1 ]] || die "the processor did not drain the topic (see $TMP/$group.log)"
    c1=$(cpu_ticks "$pid")
    pg1=$(pg_cpu)
    k1=$(cpu_ticks "${kp[@]}")
    local batches metrics # transactions, over the whole run: the mean batch is total / batches
    metrics=$(curl -fs "http://127.0.0.1:$port/metrics")
    batches=$(awk '$1 == "processor_batches_total" {print $2}' <<<"$metrics")
    # A batch's turns, mean ms each: {"reads": ms, "apply": ms, "writes": ms, "commit": ms}
    extra=$(awk -v extra="$extra" '
        match($1, /^processor_(reads|apply|writes|commit)_duration_seconds_(sum|count)$/) {
            split(substr($1, 11), a, "_duration_seconds_")
            v[a[1] "_" a[2]] = $2
        }
        END {
            s = ""
            n = split("reads apply writes commit", ph, " ")
            for (i = 1; i <= n; i++)
                if (v[ph[i] "_count"] > 0)
                    s = s sprintf("%s\"%s\": %.2f", s == "" ? "" : ", ", ph[i],
                                  v[ph[i] "_sum"] * 1000 / v[ph[i] "_count"])
            e = extra
            sub(/^[{]/, "", e)
            sub(/[}]$/, "", e)
            printf "{\"turns_ms\": {%s}%s%s}", s, e == "" ? "" : ", ", e
        }' <<<"$metrics")
    profile_stop
    kill -TERM "$pid"
    wait "$pid" || true
    statements_dump "$bench" "$name" "$round" "$db" "$total"
    local applied
    applied=$(psql -qAt "$db" -c "SELECT count(*) FROM commands WHERE status = 'applied' AND finished_at >= '$since'")
    python3 - "$bench" "$name" "$round" "$t0" "$t1" "$first" "$total" "$((c1 - c0))" \
        "$((pg1 - pg0))" "$((k1 - k0))" "$TICK" "$peak" "$applied" "${batches:-0}" "$extra" \
        >>"$RESULTS" <<'EOF'
import json, sys
bench, name, rnd, t0, t1, first, total, cpu, pg, kafka, tick, peak, applied, batches, extra = \
    sys.argv[1:]
n = int(total) - int(first)
secs = float(t1) - float(t0)
per = lambda ticks: int(ticks) / int(tick) * 1e6 / n if n else 0
r = {"bench": bench, "name": name, "round": int(rnd), "commands": n, "total": int(total),
     "cps": n / secs if secs > 0 else 0, "applied": int(applied),
     "cpu_us_per_cmd": per(cpu), "pg_cpu_us_per_cmd": per(pg),
     "kafka_cpu_us_per_cmd": per(kafka), "peak_rss_kib": int(peak), "batches": int(batches),
     "mean_batch": int(total) / int(batches) if int(batches) else 0}
r.update(json.loads(extra or "{}"))
print(json.dumps(r))
EOF
    tail -n 1 "$RESULTS" >&2
}

# Waits (5 s at most) until no live backend serves the database of conninfo: a backend's CPU is
# final once it has exited, counted by pg_cpu() as a child's (a zombie) or in cutime (reaped).
backends_gone() { # conninfo
    local master dbname i
    master=$(head -n 1 "$TMP/pg/pgdata/postmaster.pid")
    dbname=$(sed -n 's/.*dbname=\([^ ]*\).*/\1/p' <<<"$1")
    for ((i = 0; i < 100; i++)); do
        ps -o args= --ppid "$master" | grep -q "^postgres: [^ ]* $dbname " || return 0
        sleep 0.05
    done
    return 1
}

# BENCH_PG_STATEMENTS: statements_reset before a run, statements_dump after it: PostgreSQL's
# planning and execution time in the database of conninfo by statement, per command of the run.
statements_reset() {
    [[ $STATEMENTS == 1 ]] || return 0
    psql -q "$CONNINFO" -c "SELECT pg_stat_statements_reset()" >/dev/null
}
statements_dump() { # bench name round conninfo commands
    [[ $STATEMENTS == 1 ]] || return 0
    local dbname file
    dbname=$(sed -n 's/.*dbname=\([^ ]*\).*/\1/p' <<<"$4")
    mkdir -p "$OUT/statements"
    file="$OUT/statements/$1-$3-$(tr -cs 'a-z0-9' '-' <<<"${2,,}" | sed 's/-$//').txt"
    psql -q "$CONNINFO" -v n="$5" -v db="$dbname" >"$file" <<'EOF'
SELECT s.calls,
       round((s.total_plan_time * 1000 / :n)::numeric, 1) AS plan_us_per_cmd,
       round((s.total_exec_time * 1000 / :n)::numeric, 1) AS exec_us_per_cmd,
       left(regexp_replace(s.query, '\s+', ' ', 'g'), 90) AS statement
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = :'db'
ORDER BY s.total_plan_time + s.total_exec_time DESC LIMIT 15;
SELECT round((sum(s.total_plan_time) * 1000 / :n)::numeric, 1) AS plan_us_per_cmd,
       round((sum(s.total_exec_time) * 1000 / :n)::numeric, 1) AS exec_us_per_cmd
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = :'db';
EOF
}

# pgbench running the processor's statements (tests/bench/pgbench.sh) on the database db.
pgbench_run() { # bench name script transactions commands-per-transaction round db
    local bench=$1 name=$2 script=$3 tx=$4 per=$5 round=$6 db=$7 out pg0 pg1
    fresh_checkpoint "$db"
    statements_reset
    pg0=$(pg_cpu)
    out=$(pgbench -n -c 1 -j 1 -M prepared -t "$tx" -f "$script" "$db" 2>&1) ||
        die "pgbench failed: $out"
    backends_gone "$db" || die "pgbench's PostgreSQL backend did not exit"
    pg1=$(pg_cpu)
    statements_dump "$bench" "$name" "$round" "$db" $((tx * per))
    python3 - "$bench" "$name" "$round" "$tx" "$per" "$((pg1 - pg0))" "$TICK" "$out" >>"$RESULTS" <<'EOF'
import json, re, sys
bench, name, rnd, tx, per_tx, pg, tick, out = sys.argv[1:]
m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
tps = float(m.group(1))
n = int(tx) * int(per_tx)
print(json.dumps({"bench": bench, "name": name, "round": int(rnd), "commands": n,
                  "cps": tps * int(per_tx),
                  "pg_cpu_us_per_cmd": int(pg) / int(tick) * 1e6 / n}))
EOF
    tail -n 1 "$RESULTS" >&2
}

# --- 2. Applying commands ----------------------------------------------------------------------
if wants apply; then
log "2. Applying commands: $ACCOUNTS accounts opened, then $((COMMANDS - ACCOUNTS)) deposits"
TOTAL=$("$BUILD/bench/fill" "$BOOTSTRAP" procbench-commands 4 "$ACCOUNTS" $((COMMANDS - ACCOUNTS))) ||
    die "filling the commands topic failed"

proc_run() { # round
    drain_run apply state-processor "$1" "$(make_db "bench_proc_$1")" procbench- \
        "procbench-$1" "$TOTAL" ""
}

PGB_DB=$(make_db bench_pgbench)
migrate "$PGB_DB"
psql -q "$PGB_DB" -c "CREATE SEQUENCE pgbench_version" \
    -c "INSERT INTO aggregates (tenant, type, id, version, state) SELECT 'default', 'account', 'bench-' || g, 1, jsonb_build_object('owner', 'owner ' || g, 'balance', 0) FROM generate_series(0, $ACCOUNTS - 1) g" >/dev/null
tests/bench/pgbench.sh 1 "$ACCOUNTS" sequential >"$TMP/one.sql"
tests/bench/pgbench.sh "$BATCH" "$ACCOUNTS" pipelined >"$TMP/batched.sql"

ONE_TX=$(((COMMANDS + 9) / 10)) # a tenth of the commands: one at a time is slow
BATCHED_TX=$(((COMMANDS + BATCH - 1) / BATCH))
for ((r = 1; r <= PAIRS; r++)); do
    pgbench_run apply "pgbench, one command per transaction" "$TMP/one.sql" "$ONE_TX" 1 "$r" \
        "$PGB_DB"
    proc_run "$r"
    pgbench_run apply "pgbench, $BATCH per transaction, pipelined" "$TMP/batched.sql" \
        "$BATCHED_TX" "$BATCH" "$r" "$PGB_DB"
done

fi

# Rows as the processor writes them, for other aggregates: finished now, so that the purge of
# the commands past their retention leaves them; the outbox rows are published. Command ids are
# time-ordered like the gateway's (UUIDv7, one a millisecond up to now); keys are random, as a
# client would choose them.
grow_tables() { # conninfo rows
    psql -q "$1" -c "INSERT INTO commands (id, tenant, idempotency_key, type, aggregate_type, aggregate_id, status, http_status, result, version, finished_at) SELECT (lpad(to_hex((extract(epoch FROM now()) * 1000)::bigint - $2 + g), 12, '0') || '7' || substr(h, 14, 3) || '8' || substr(h, 18, 15))::uuid, 'default', gen_random_uuid()::text, 'account.deposit', 'account', 'old-' || g, 'applied', 200, jsonb_build_object('command_id', gen_random_uuid(), 'status', 'applied', 'aggregate_type', 'account', 'aggregate_id', 'old-' || g, 'version', 2, 'state', jsonb_build_object('owner', 'owner ' || g, 'balance', 1, 'status', 'open')), 2, now() FROM (SELECT g, md5(random()::text) AS h FROM generate_series(1, $2) g) s" \
        -c "INSERT INTO outbox (tenant, aggregate_type, aggregate_id, version, event_type, command_id, payload, published_at) SELECT 'default', 'account', 'old-' || g, 2, 'account.deposited', gen_random_uuid(), jsonb_build_object('amount', 1, 'balance', 1), now() FROM generate_series(1, $2) g" \
        -c "VACUUM ANALYZE commands" -c "VACUUM ANALYZE outbox" >/dev/null
}

# --- 5. Cost growth: more aggregates, bigger tables --------------------------------------------
if wants growth; then
read -r -a GROWTH <<<"${BENCH_GROWTH:-1000 100000 1000000}"
GROWN=${BENCH_GROWN_ROWS:-2000000}
DEPOSITS=${BENCH_GROWTH_COMMANDS:-20000}
BIGGEST=${GROWTH[${#GROWTH[@]} - 1]}
log "5. Cost growth: $DEPOSITS deposits over ${GROWTH[*]} accounts; over $BIGGEST with $GROWN rows in commands and outbox"

# pgbench's outbox rows take their versions from a sequence far above the processor's.
seed_accounts() { # conninfo count
    psql -q "$1" -c "CREATE SEQUENCE pgbench_version START 1000000000" -c "INSERT INTO aggregates (tenant, type, id, version, state) SELECT 'default', 'account', 'bench-' || g, 1, jsonb_build_object('owner', 'owner ' || g, 'balance', 0, 'status', 'open') FROM generate_series(0, $2 - 1) g" \
        -c "VACUUM ANALYZE aggregates" >/dev/null
}
G_DBS=() G_NAMES=() G_SPREAD=() G_EXTRA=()
for n in "${GROWTH[@]}"; do
    db=$(make_db "bench_growth_$n")
    migrate "$db"
    seed_accounts "$db" "$n"
    G_DBS+=("$db") G_NAMES+=("$n aggregates") G_SPREAD+=("$n")
    G_EXTRA+=("{\"aggregates\": $n, \"grown_rows\": 0}")
done
db=$(make_db bench_growth_grown)
migrate "$db"
seed_accounts "$db" "$BIGGEST"
t0=$(date +%s)
grow_tables "$db" "$GROWN"
log "commands and outbox grown to $GROWN rows each in $(($(date +%s) - t0)) s"
G_DBS+=("$db") G_NAMES+=("$BIGGEST aggregates, $GROWN rows in commands and outbox")
G_SPREAD+=("$BIGGEST") G_EXTRA+=("{\"aggregates\": $BIGGEST, \"grown_rows\": $GROWN}")

for i in "${!G_DBS[@]}"; do
    tests/bench/pgbench.sh "$BATCH" "${G_SPREAD[$i]}" pipelined scattered >"$TMP/growth-$i.sql"
done
for ((r = 1; r <= PAIRS; r++)); do
    for i in "${!G_DBS[@]}"; do
        total=$("$BUILD/bench/fill" "$BOOTSTRAP" "growth-$i-$r-commands" 4 0 "$DEPOSITS" \
            "${G_SPREAD[$i]}") || die "filling the commands topic failed"
        drain_run growth "${G_NAMES[$i]}" "$r" "${G_DBS[$i]}" "growth-$i-$r-" "growth-$i-$r" \
            "$total" "${G_EXTRA[$i]}"
        # The same statements, deposits and database without the processor: what PostgreSQL
        # alone makes of the growth.
        pgbench_run growth_pgbench "${G_NAMES[$i]}" "$TMP/growth-$i.sql" \
            $(((DEPOSITS + BATCH - 1) / BATCH)) "$BATCH" "$r" "${G_DBS[$i]}"
    done
done
fi

# --- 3. Sync end to end, open loop; 4. the gateway with 10,000 parked requests -----------------
if wants sync || wants parked; then
log "3. Sync end to end: the highest rate, then 25/50/75/90% of it, open loop"
SYNC_DB=$(make_db bench_sync)
SYNC_HTTP=$(free_port)
start_service state-processor sync-processor "$SYNC_DB" --topic.prefix=sync- --group.id=sync \
    --http.port="$SYNC_HTTP" --log.level=warn
SYNC_PROC=$STARTED
wait_http "$SYNC_HTTP" /readyz || die "state-processor did not become ready (see $TMP/sync-processor.log)"
SYNC_PORT=$(free_port)
start_service command-gateway sync-gateway "$SYNC_DB" --topic.prefix=sync- \
    --http.port="$SYNC_PORT" --log.level=warn --auth.mode=off "${GW_FLAGS[@]}"
SYNC_GW=$STARTED
wait_http "$SYNC_PORT" /readyz || die "command-gateway did not become ready (see $TMP/sync-gateway.log)"
"$BUILD/bench/fill" "$BOOTSTRAP" sync-commands 4 "$ACCOUNTS" 0 >/dev/null || die "opening the accounts failed"
for ((i = 0; i < 600; i++)); do
    n=$(psql -qAt "$SYNC_DB" -c "SELECT count(*) FROM aggregates")
    ((n >= ACCOUNTS)) && break
    sleep 0.1
done
((n >= ACCOUNTS)) || die "the accounts were not opened"
# A database that has served for a while: rows in commands and outbox, statistics taken.
SYNC_ROWS=${BENCH_SYNC_ROWS:-200000}
if ((SYNC_ROWS > 0)); then
    grow_tables "$SYNC_DB" "$SYNC_ROWS"
    psql -q "$SYNC_DB" -c "VACUUM ANALYZE aggregates" >/dev/null
    log "commands and outbox grown to $SYNC_ROWS rows each"
fi

scrape() { # suffix: both services' metrics, for the stages of a run
    curl -fs -o "$TMP/gateway.$1.metrics" "http://127.0.0.1:$SYNC_PORT/metrics" &&
        curl -fs -o "$TMP/processor.$1.metrics" "http://127.0.0.1:$SYNC_HTTP/metrics" ||
        die "the services' metrics could not be read"
}
# Every thread of the path's processes, for the time each waited for a core (sched.py).
sched_snap() { # file
    local master
    master=$(head -n 1 "$TMP/pg/pgdata/postmaster.pid")
    python3 tests/bench/sched.py snap "gateway=$SYNC_GW" "processor=$SYNC_PROC" \
        "postgresql=$master,$(ps -o pid= --ppid "$master" | tr -s ' \n' ',')" \
        "kafka=$(KAFKA_PIDS | tr ' ' ',')" >"$1" || die "the scheduler statistics could not be read"
}
# One open-loop run; the result carries the stages of its commands (tests/bench/stages.py), the
# path's processes' time on and waiting for a core (tests/bench/sched.py), the disk's flush
# latency beside it (tests/bench/fsprobe.py) and where its slow answers were, with the slow
# flushes among them (tests/bench/series.py; each answer's latency and each slow flush are kept
# in $OUT/series).
openloop_run() { # rate fraction round conns
    local out stages sched fsync probe series=$OUT/series/sync-$2-$4-$3
    scrape before
    sched_snap "$TMP/sched.before.json"
    python3 tests/bench/fsprobe.py "$TMP/pg/pgdata" "$SECONDS_PER_RUN" >"$series.fsync.json" &
    probe=$!
    out=$(OPENLOOP_SERIES=$series.txt "$BUILD/bench/openloop" "$SYNC_PORT" "$1" \
        "$SECONDS_PER_RUN" "$4" "$ACCOUNTS") || die "openloop failed: $out"
    wait "$probe" || die "the disk's flushes could not be timed"
    sched_snap "$TMP/sched.after.json"
    scrape after
    stages=$(python3 tests/bench/stages.py "$TMP"/gateway.{before,after}.metrics \
        "$TMP"/processor.{before,after}.metrics) || die "the stages could not be computed"
    sched=$(python3 tests/bench/sched.py diff "$TMP"/sched.{before,after}.json \
        "$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["ok"])' "$out")") ||
        die "the scheduler statistics could not be compared"
    fsync=$(python3 -c 'import json, sys; f = json.load(open(sys.argv[1])); f["slow"] = len(f["slow"]); print(json.dumps(f))' \
        "$series.fsync.json") || die "the disk's flushes could not be read"
    series=$(python3 tests/bench/series.py "$series.txt" "$series.fsync.json") ||
        die "the run's series could not be read"
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); r.update(bench="sync", fraction=float(sys.argv[2]), round=int(sys.argv[3]), conns=int(sys.argv[4]), stages=json.loads(sys.argv[5]), sched=json.loads(sys.argv[6]), series=json.loads(sys.argv[7]), fsync=json.loads(sys.argv[8])); print(json.dumps(r))' \
        "$out" "$2" "$3" "$4" "$stages" "$sched" "$series" "$fsync" >>"$RESULTS"
    tail -n 1 "$RESULTS" >&2
}
fi
if wants sync; then
"$BUILD/bench/openloop" "$SYNC_PORT" 0 "$WARMUP_S" 64 "$ACCOUNTS" >/dev/null ||
    die "the warm-up run failed"
rm -rf "$OUT/series" && mkdir -p "$OUT/series"
# The highest rate: a closed loop with SYNC_CONNS connections, which the pipeline's batches, not
# the requests in flight, bound; and with 64, where Little's law does (64 over the latency).
SYNC_CONNS=${BENCH_SYNC_CONNS:-512}
MAX_RATES=()
for ((r = 1; r <= PAIRS; r++)); do
    openloop_run 0 1 "$r" 64
    openloop_run 0 1 "$r" "$SYNC_CONNS"
    MAX_RATES+=("$(tail -n 1 "$RESULTS" | python3 -c 'import json, sys; print(json.load(sys.stdin)["reached"])')")
done
MAX_RATE=$(printf '%s\n' "${MAX_RATES[@]}" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
for ((r = 1; r <= PAIRS; r++)); do
    # The floor of the path, in the same round: two bare Kafka hops and one commit (floor.c).
    "$BUILD/bench/floor" "$BOOTSTRAP" "floor$r-" "$SYNC_DB" "${BENCH_FLOOR_ROUNDS:-1000}" |
        python3 -c 'import json, sys; r = json.load(sys.stdin); r["round"] = int(sys.argv[1]); print(json.dumps(r))' \
            "$r" >>"$RESULTS" || die "the floor could not be measured"
    tail -n 1 "$RESULTS" >&2
    for f in 0.25 0.5 0.75 0.9; do
        if [[ $f != 0.5 ]]; then
            openloop_run "$(python3 -c "print(round($MAX_RATE * $f))")" "$f" "$r" "$SYNC_CONNS"
            continue
        fi
        # The same floor during the 50% run: what the load on the machine's cores makes of the
        # bare hops and the commit. It counts only if it ended before the run did.
        "$BUILD/bench/floor" "$BOOTSTRAP" "floorload$r-" "$SYNC_DB" \
            "${BENCH_FLOOR_LOADED_ROUNDS:-200}" >"$TMP/floor-loaded.json" &
        floor_pid=$!
        openloop_run "$(python3 -c "print(round($MAX_RATE * $f))")" "$f" "$r" "$SYNC_CONNS"
        overlapped=true
        kill -0 "$floor_pid" 2>/dev/null && overlapped=false
        wait "$floor_pid" || die "the floor under load could not be measured"
        python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); r.update(bench="floor_loaded", round=int(sys.argv[2]), fraction=0.5, overlapped=sys.argv[3] == "true"); print(json.dumps(r))' \
            "$TMP/floor-loaded.json" "$r" "$overlapped" >>"$RESULTS"
        tail -n 1 "$RESULTS" >&2
    done
done

fi
if wants parked; then
log "4. The gateway with $PARKED sync requests parked (the processor stopped)"
kill -STOP "$SYNC_PROC"
before=$(rss_kib "$SYNC_GW")
"$BUILD/bench/openloop" "$SYNC_PORT" "$PARKED" 1 "$PARKED" "$ACCOUNTS" >"$TMP/parked.json" 2>&1 &
PARK_PID=$!
parked=0
for ((i = 0; i < 100; i++)); do
    sleep 0.1
    parked=$(curl -fs "http://127.0.0.1:$SYNC_PORT/metrics" | awk '$1 == "gateway_parked_requests" {print $2}')
    ((${parked:-0} >= PARKED)) && break
done
during=$(rss_kib "$SYNC_GW")
kill -CONT "$SYNC_PROC"
wait "$PARK_PID" || die "openloop failed with parked requests: $(cat "$TMP/parked.json")"
record "{\"bench\": \"parked\", \"name\": \"gateway\", \"parked\": ${parked:-0}, \"rss_before_kib\": $before, \"rss_kib\": $during}"
tail -n 1 "$RESULTS" >&2
fi

# --- the report --------------------------------------------------------------------------------
python3 tests/bench/report.py "$RESULTS" "$OUT" "$BENCH_KAFKA" "$SECONDS_PER_RUN" "$CONNS" \
    "$COMMANDS" "$ACCOUNTS" "$BATCH" "$ONLY"
log "results: $OUT/results.md"
