#!/usr/bin/env bash
# Runs the whole system locally (private PostgreSQL, mock Kafka, state-processor, its projector, command-gateway)
# until signalled.
set -euo pipefail

# bash cannot trap a signal that was ignored when it started (as SIGINT is for anything launched with `&`
# from a script), so re-exec once, same pid, with INT/TERM/HUP back to their defaults.
if [[ ${RUN_SH_SIGNALS_RESET:-} != "$$" ]]; then
    export RUN_SH_SIGNALS_RESET=$$
    exec env --default-signal=INT,TERM,HUP "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

# Environment (relative paths are taken from the caller's working directory):
#   RUN_DIR    state and logs, kept between runs   (default: <repo>/run)
#   PG_DIR     the PostgreSQL cluster folder        (default: $RUN_DIR/pg)
#   HTTP_PORT  command-gateway port on 127.0.0.1    (default: 8080)
#   PROCESSOR_HTTP_PORT  state-processor /healthz, /readyz, /metrics (default: 8081; 0: any free port)
#   PROJECTOR_HTTP_PORT  the projector's (state-processor project) /healthz, /readyz, /metrics
#                        (default: 8082; 0: any free port)
#   KAFKA      mock (default): librdkafka's mock cluster; real: Apache Kafka from Maven Central,
#              data kept in $RUN_DIR/kafka, on KAFKA_PORT (default 9092) and the port after it
#   KAFKA_BOOTSTRAP  use this Kafka cluster and start none
#   TOPIC_PREFIX     prefix of the topic and consumer group names (default: none)
#   PG_PORT    PostgreSQL port on 127.0.0.1         (default: 54329)
#   BUILD      where the binaries are               (default: build)
#   STOP_TIMEOUT seconds each service gets to exit after SIGTERM before SIGKILL (default: 10)
#   DRAIN_TIMEOUT seconds the processor gets, at shutdown on run.sh's own mock cluster, to apply
#              what the gateway accepted before the cluster (memory only) goes (default: 15)
#   READY_TIMEOUT seconds every service gets to answer /readyz 200 before run.sh gives up (default: 120)
#   GATEWAY_ARGS extra command-gateway flags, space-separated, after the defaults (which they
#              override), e.g. "--auth.mode=jwt --auth.algorithm=HS256 --auth.key_file=secret"
#   RESTART_MAX  exits of the services within a minute that are started again (default: 5)
# SIGINT, SIGTERM or SIGHUP stops everything (PostgreSQL too) and exits 0. Once the system is up, a
# service that dies on its own is started again (its log is appended to); if one dies during the
# start, or the mock cluster dies, or more than RESTART_MAX exits come within a minute, everything
# is stopped and the exit status is 1.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_DIR=$(realpath -m -- "${RUN_DIR:-$REPO/run}")
BUILD=$(realpath -m -- "${BUILD:-build}")
HTTP_PORT=${HTTP_PORT:-8080}
PROCESSOR_HTTP_PORT=${PROCESSOR_HTTP_PORT:-8081}
PROJECTOR_HTTP_PORT=${PROJECTOR_HTTP_PORT:-8082}
KAFKA=${KAFKA:-mock}               # mock: librdkafka's mock cluster; real: Apache Kafka (kafka.sh)
KAFKA_PORT=${KAFKA_PORT:-9092}     # the real broker's port (its controller uses the next one)
KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-} # set: use this cluster, start none
KAFKA_IS_MOCK=${KAFKA_IS_MOCK:-0}  # 1: KAFKA_BOOTSTRAP is a mock cluster (tune fetches for it)
TOPIC_PREFIX=${TOPIC_PREFIX:-}     # prefix of topic and consumer group names
KAFKA_SH=$REPO/deploy/kafka/kafka.sh
REAL_KAFKA_STARTED=0
MOCK_ARGS=()
STATIC="" # set when the broker is this run's own (see below)
PG_PORT=${PG_PORT:-54329}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-15}
READY_TIMEOUT=${READY_TIMEOUT:-120}
PG_SH=$REPO/deploy/local/pg.sh

GATEWAY_BIN=$BUILD/command-gateway
PROCESSOR_BIN=$BUILD/state-processor
KAFKA_BIN=$BUILD/mock-kafka
BOOTSTRAP_FILE=$RUN_DIR/kafka.bootstrap
PIDS_FILE=$RUN_DIR/run.pids # the services of the run going on, for the next one if this one is killed
GATEWAY_LOG=$RUN_DIR/command-gateway.log
PROCESSOR_LOG=$RUN_DIR/state-processor.log
PROJECTOR_LOG=$RUN_DIR/projector.log
KAFKA_LOG=$RUN_DIR/mock-kafka.log

GATEWAY_PID=""
PROCESSOR_PID=""
PROJECTOR_PID=""
KAFKA_PID=""
PG_STARTED=0
CLEANED=0

log() { echo "run.sh: $*" >&2; }

show_logs() {
    local f n
    for f in "$KAFKA_LOG" "$PROCESSOR_LOG" "$PROJECTOR_LOG" "$GATEWAY_LOG" "${PG_DIR:-$RUN_DIR/pg}/postgres.log"; do
        [[ -s $f ]] || continue
        n=25
        [[ $f != */postgres.log ]] || n=10
        echo "----- last $n lines of $f -----" >&2
        tail -n "$n" "$f" >&2 || true
    done
}

fail() {
    log "error: $*"
    show_logs
    exit 1
}

# Sends SIGTERM, waits up to STOP_TIMEOUT seconds, then SIGKILL; reaps the child.
stop_pid() {
    local name=$1 pid=$2 i
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# The processor group's lag on the commands topic, from `state-processor lag`; empty when unknown.
commands_lag() {
    "$PROCESSOR_BIN" lag --pg.conninfo="$CONNINFO" --kafka.bootstrap.servers="$BOOTSTRAP" \
        --topic.prefix="$TOPIC_PREFIX" --group.id="${TOPIC_PREFIX}state-processor" \
        --projector.group="${TOPIC_PREFIX}projector" --json --timeout_ms=2000 --log.level=error \
        2>/dev/null 9>&- |
        grep -oE '"role":"processor","group":"[^"]*","topic":"[^"]*","lag":-?[0-9]+' |
        grep -oE -- '-?[0-9]+$'
}

# The mock cluster keeps its log in memory: a command the gateway accepted and the processor has
# not applied yet would go with it. With the gateway stopped, give the processor the time to
# apply what is left (bounded), then stop the rest.
drain_commands() {
    local deadline=$((SECONDS + DRAIN_TIMEOUT)) lag=""
    [[ -n $PROCESSOR_PID && -n ${CONNINFO:-} && -n ${BOOTSTRAP:-} ]] || return 0
    while kill -0 "$PROCESSOR_PID" 2>/dev/null; do
        lag=$(commands_lag)
        [[ $lag != 0 ]] || return 0
        if ((SECONDS >= deadline)); then
            log "warning: the processor still had ${lag:-an unknown number of} commands to apply after ${DRAIN_TIMEOUT}s; they go with the mock cluster"
            return 0
        fi
        sleep 0.2
    done
}

cleanup() {
    ((CLEANED == 0)) || return 0
    CLEANED=1
    trap '' INT TERM HUP # a second Ctrl-C must not cut the (bounded) shutdown short
    set +e
    [[ -n $KAFKA_PID ]] || ((PG_STARTED || REAL_KAFKA_STARTED)) || return 0 # nothing started
    stop_pid command-gateway "$GATEWAY_PID"
    [[ -z $KAFKA_PID ]] || drain_commands
    stop_pid projector "$PROJECTOR_PID"
    stop_pid state-processor "$PROCESSOR_PID"
    if [[ -n $KAFKA_PID ]]; then
        stop_pid mock-kafka "$KAFKA_PID"
        rm -f "$BOOTSTRAP_FILE"
    fi
    if ((REAL_KAFKA_STARTED)); then
        log "stopping Apache Kafka"
        "$KAFKA_SH" stop "$RUN_DIR/kafka" 9>&-
    fi
    if ((PG_STARTED)); then
        "$PG_SH" stop "$PG_DIR" 9>&-
    fi
    rm -f "$PIDS_FILE"
    log "stopped"
}

on_signal() {
    log "got SIG$1; shutting down"
    cleanup
    exit 0
}

trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

port_in_use() {
    if command -v ss >/dev/null 2>&1 && [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; then
        return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts a service in the background with its output in a log file; the lock fd is not inherited.
# The file is rewritten, or appended to with APPEND=1 (a service started again keeps the lines
# of its exit).
spawn() {
    local logf=$1
    shift
    if [[ ${APPEND:-0} == 1 ]]; then
        "$@" </dev/null >>"$logf" 2>&1 9>&- &
    else
        "$@" </dev/null >"$logf" 2>&1 9>&- &
    fi
}

name_of() {
    case $1 in
    "$KAFKA_PID") echo mock-kafka ;;
    "$PROCESSOR_PID") echo state-processor ;;
    "$PROJECTOR_PID") echo projector ;;
    "$GATEWAY_PID") echo command-gateway ;;
    *) echo "pid $1" ;;
    esac
}

# Fails when one of the started services has exited.
check_alive() {
    local pid rc
    for pid in "$KAFKA_PID" "$PROCESSOR_PID" "$PROJECTOR_PID" "$GATEWAY_PID"; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            fail "$(name_of "$pid") (pid $pid) exited unexpectedly with status $rc"
        fi
    done
}

# --- checks --------------------------------------------------------------------------------
for bin in "$GATEWAY_BIN" "$PROCESSOR_BIN" "$KAFKA_BIN"; do
    [[ -x $bin ]] || { log "error: $bin not found; build first (make all, or make run)"; exit 1; }
done
for p in "$HTTP_PORT" "$PG_PORT"; do
    if ! [[ $p =~ ^[1-9][0-9]{0,4}$ ]] || ((p > 65535)); then
        log "error: bad port '$p'"
        exit 1
    fi
done
if ! [[ $READY_TIMEOUT =~ ^[1-9][0-9]*$ ]]; then
    log "error: READY_TIMEOUT must be a positive number of seconds, not '$READY_TIMEOUT'"
    exit 1
fi
command -v curl >/dev/null 2>&1 || { log "error: curl is missing; run deploy/install-deps.sh"; exit 1; }

mkdir -p "$RUN_DIR"
exec 9>"$RUN_DIR/run.lock"
flock -n 9 || { log "error: another run.sh is already using $RUN_DIR"; exit 1; }

# --- what a killed run.sh left ---------------------------------------------------------------
# A run.sh killed with SIGKILL never ran its cleanup: its services go on, unsupervised, on the
# ports this one needs. run.pids names them (with their start times: a pid is reused, a start
# time is not); they are stopped as cleanup would have, the gateway first and, on the old mock
# cluster, the processor given DRAIN_TIMEOUT to apply what the gateway accepted. PostgreSQL is
# taken over as it runs (pg.sh start).
proc_start() { # pid: its start time in clock ticks since boot, empty when it is gone
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}
write_pids() {
    local entry name pid
    {
        echo "conninfo $CONNINFO"
        echo "bootstrap $BOOTSTRAP"
        echo "real-kafka $REAL_KAFKA_STARTED"
        for entry in "command-gateway $GATEWAY_PID" "state-processor $PROCESSOR_PID" \
            "projector $PROJECTOR_PID" "mock-kafka ${KAFKA_PID:-}"; do
            read -r name pid <<<"$entry"
            [[ -z $pid ]] || echo "$name $pid $(proc_start "$pid")"
        done
    } >"$PIDS_FILE.new" && mv "$PIDS_FILE.new" "$PIDS_FILE"
}
stop_previous() {
    [[ -s $PIDS_FILE ]] || return 0
    local key value start real=0 left=""
    local -A old=()
    while read -r key value start; do
        case $key in
        conninfo) CONNINFO=$value${start:+ $start} ;;
        bootstrap) BOOTSTRAP=$value ;;
        real-kafka) real=$value ;;
        *) [[ -z $value || $(proc_start "$value") != "$start" ]] || { old[$key]=$value; left+=" $key"; } ;;
        esac
    done <"$PIDS_FILE"
    if [[ -n $left ]] || ((real)); then
        log "the run.sh before this one was killed without stopping its services; stopping what is left:${left:- the broker}"
    fi
    stop_pid command-gateway "${old[command-gateway]:-}"
    if [[ -n ${old[mock-kafka]:-} && -n ${old[state-processor]:-} ]]; then
        PROCESSOR_PID=${old[state-processor]} KAFKA_PID=${old[mock-kafka]} drain_commands
    fi
    stop_pid projector "${old[projector]:-}"
    stop_pid state-processor "${old[state-processor]:-}"
    stop_pid mock-kafka "${old[mock-kafka]:-}"
    if ((real)); then
        "$KAFKA_SH" stop "$RUN_DIR/kafka" 9>&- || true
    fi
    rm -f "$PIDS_FILE" "$BOOTSTRAP_FILE"
    CONNINFO="" BOOTSTRAP=""
}
stop_previous

# As root the cluster runs as the postgres user, which must be able to reach it; when RUN_DIR is not
# reachable (e.g. a checkout under /root) the cluster lives in a fixed folder under /var/tmp instead.
if [[ -z ${PG_DIR:-} ]]; then
    PG_DIR=$RUN_DIR/pg
    if ((EUID == 0)) && id -u postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$RUN_DIR"; then
        PG_DIR=/var/tmp/cqrs-pg-$(printf '%s' "$RUN_DIR" | cksum | cut -d' ' -f1)
        log "the postgres user cannot reach $RUN_DIR; keeping the PostgreSQL cluster in $PG_DIR"
    fi
fi
PG_DIR=$(realpath -m -- "$PG_DIR")

if port_in_use "$HTTP_PORT"; then
    log "error: port $HTTP_PORT is already in use; stop what listens there or set HTTP_PORT"
    exit 1
fi
if ! "$PG_SH" status "$PG_DIR" 9>&- && port_in_use "$PG_PORT"; then
    log "error: port $PG_PORT is already in use; stop what listens there or set PG_PORT"
    exit 1
fi

# --- PostgreSQL ----------------------------------------------------------------------------
PG_STARTED=1 # from here on, cleanup stops the cluster (a no-op if it never came up)
CONNINFO=$("$PG_SH" start "$PG_DIR" "$PG_PORT" 9>&-) || fail "PostgreSQL did not start"
CONNINFO=$(tail -n 1 <<<"$CONNINFO")
PG_PID=$(head -n 1 "$PG_DIR/pgdata/postmaster.pid" 2>/dev/null || echo "?")

# --- Kafka ---------------------------------------------------------------------------------
start_mock_kafka() {
    rm -f "$BOOTSTRAP_FILE"
    spawn "$KAFKA_LOG" "$KAFKA_BIN" --brokers 1 --partitions 4 --topics commands,events,replies,commands.dlq \
        --bootstrap-file "$BOOTSTRAP_FILE"
    KAFKA_PID=$!
    BOOTSTRAP=""
    for ((i = 0; i < 100; i++)); do
        check_alive
        if [[ -s $BOOTSTRAP_FILE ]]; then
            # Read until two reads agree, in case the writer was caught mid-write.
            BOOTSTRAP=$(tr -d '[:space:]' <"$BOOTSTRAP_FILE")
            sleep 0.05
            [[ -n $BOOTSTRAP && $BOOTSTRAP == "$(tr -d '[:space:]' <"$BOOTSTRAP_FILE")" ]] && break
            BOOTSTRAP=""
        fi
        sleep 0.1
    done
    [[ -n $BOOTSTRAP ]] || fail "mock-kafka did not write $BOOTSTRAP_FILE within 10s"
}

if [[ -n $KAFKA_BOOTSTRAP ]]; then
    BOOTSTRAP=$KAFKA_BOOTSTRAP
    ((KAFKA_IS_MOCK == 0)) || MOCK_ARGS=(--kafka.fetch.wait.max.ms=5 --kafka.session.timeout.ms=6000)
    KAFKA_DESC="kafka            external  bootstrap $BOOTSTRAP"
elif [[ $KAFKA == real ]]; then
    REAL_KAFKA_STARTED=1
    BOOTSTRAP=$("$KAFKA_SH" start "$RUN_DIR/kafka" "$KAFKA_PORT" 9>&-) || fail "Apache Kafka did not start"
    # This broker is this run's alone, and its groups outlive a run: each service is the one
    # member of its group, with a static identity, so that after a run killed without a clean
    # stop the next one takes its partitions back at once, not after the dead member's session
    # (45 s) expires. An external cluster (KAFKA_BOOTSTRAP) may have other replicas in the same
    # groups, which must not share an identity: there each member is dynamic.
    STATIC=1
    KAFKA_DESC="apache-kafka     bootstrap $BOOTSTRAP  log $RUN_DIR/kafka/node1/broker.log"
elif [[ $KAFKA == mock ]]; then
    start_mock_kafka
    # The mock cluster holds every fetch for the full fetch.wait.max.ms (a broker answers as soon
    # as data arrives), so keep that short here; it costs only idle fetches on loopback. And it
    # ends a rebalance only when the session timeout expires: keep that short too, so that a
    # member joining later (a second replica) gets its partitions in seconds.
    MOCK_ARGS=(--kafka.fetch.wait.max.ms=5 --kafka.session.timeout.ms=6000)
    KAFKA_DESC="mock-kafka       pid $KAFKA_PID  bootstrap $BOOTSTRAP  log $KAFKA_LOG"
else
    fail "KAFKA must be mock or real, not '$KAFKA'"
fi

# --- services ------------------------------------------------------------------------------
start_processor() {
    spawn "$PROCESSOR_LOG" "$PROCESSOR_BIN" --pg.conninfo="$CONNINFO" --kafka.bootstrap.servers="$BOOTSTRAP" \
        --http.port="$PROCESSOR_HTTP_PORT" --topic.prefix="$TOPIC_PREFIX" --group.id="${TOPIC_PREFIX}state-processor" \
        "${MOCK_ARGS[@]}" ${STATIC:+--kafka.group.instance.id=local-state-processor}
    PROCESSOR_PID=$!
}
start_projector() {
    spawn "$PROJECTOR_LOG" "$PROCESSOR_BIN" project --pg.conninfo="$CONNINFO" --kafka.bootstrap.servers="$BOOTSTRAP" \
        --http.port="$PROJECTOR_HTTP_PORT" --topic.prefix="$TOPIC_PREFIX" --projector.group="${TOPIC_PREFIX}projector" \
        "${MOCK_ARGS[@]}" ${STATIC:+--kafka.group.instance.id=local-projector}
    PROJECTOR_PID=$!
}
# The embedded default runs without authentication (the gateway says so loudly in its log);
# deploy/ runs it with auth.mode=jwt.
start_gateway() {
    # shellcheck disable=SC2086 # GATEWAY_ARGS is a space-separated list of flags
    spawn "$GATEWAY_LOG" "$GATEWAY_BIN" --http.port="$HTTP_PORT" --pg.conninfo="$CONNINFO" \
        --kafka.bootstrap.servers="$BOOTSTRAP" --topic.prefix="$TOPIC_PREFIX" \
        --replies.group="${TOPIC_PREFIX}command-gateway" --auth.mode=off "${MOCK_ARGS[@]}" \
        ${STATIC:+--kafka.group.instance.id=local-command-gateway} ${GATEWAY_ARGS:-}
    GATEWAY_PID=$!
}
start_processor
start_projector
start_gateway
write_pids

# The port of a service's /readyz: the one it was given, or (0: any) the one its log names.
health_port() {
    local given=$1 logf=$2
    if [[ $given != 0 ]]; then
        echo "$given"
        return
    fi
    sed -n 's/.*"msg":"health and metrics".*"port":\([0-9]*\).*/\1/p' "$logf" 2>/dev/null | tail -n 1
}

# Waits until every service answers /readyz 200 (a gateway that cannot route replies would answer
# the first sync commands 202); says which ones it waits for every 5 s, and fails after
# READY_TIMEOUT seconds naming them.
wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) note=$((SECONDS + 5)) waiting name port logf why
    while true; do
        check_alive
        waiting=""
        why=""
        for name in command-gateway state-processor projector; do
            case $name in
            command-gateway) port=$HTTP_PORT logf=$GATEWAY_LOG ;;
            state-processor) port=$PROCESSOR_HTTP_PORT logf=$PROCESSOR_LOG ;;
            projector) port=$PROJECTOR_HTTP_PORT logf=$PROJECTOR_LOG ;;
            esac
            [[ $port != -1 ]] || continue # its health endpoint is off: nothing to ask
            port=$(health_port "$port" "$logf")
            if [[ -z $port ]] || ! curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null; then
                waiting+=" $name"
                if [[ $name == command-gateway && -n $port ]]; then
                    why=$(curl -s --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null || true)
                fi
            fi
        done
        [[ -n $waiting ]] || return 0
        if ((SECONDS >= deadline)); then
            fail "not ready within ${READY_TIMEOUT}s (/readyz):$waiting${why:+; command-gateway says $why}"
        fi
        if ((SECONDS >= note)); then
            log "waiting for$waiting to be ready (/readyz)${why:+; command-gateway says $why}"
            note=$((SECONDS + 5))
        fi
        sleep 0.2
    done
}
wait_ready

cat <<EOF
run.sh: the system is up (run folder $RUN_DIR)
  command-gateway  pid $GATEWAY_PID  http://127.0.0.1:$HTTP_PORT  log $GATEWAY_LOG
  state-processor  pid $PROCESSOR_PID  http://127.0.0.1:$PROCESSOR_HTTP_PORT/metrics  log $PROCESSOR_LOG
  projector        pid $PROJECTOR_PID  http://127.0.0.1:$PROJECTOR_HTTP_PORT/metrics  log $PROJECTOR_LOG
  $KAFKA_DESC
  postgresql       pid $PG_PID  127.0.0.1:$PG_PORT  data $PG_DIR/pgdata  log $PG_DIR/postgres.log
  conninfo         $CONNINFO
Try:
  curl -s -X POST localhost:$HTTP_PORT/v1/commands -H 'content-type: application/json' -d '{"type":"account.open","aggregate_id":"acc-1","payload":{"owner":"ada"}}'
Ctrl-C (or SIGTERM/SIGHUP to pid $$) stops everything.
EOF

# --- wait ----------------------------------------------------------------------------------
# A service that exits on its own (a crash, kill -9) is started again, as a supervisor would: the
# mock cluster holds the commands the gateway accepted and the processor has not applied, and
# stopping the stack would lose them with it. Its state is in PostgreSQL and Kafka, so the new
# one carries on where the old one stopped. More than RESTART_MAX exits within a minute is a
# service that cannot run: the stack stops. The mock cluster exiting stops it at once.
RESTART_MAX=${RESTART_MAX:-5}
RESTARTS=() # when services were started again, in SECONDS
restart() { # pid status
    local name recent=() t
    name=$(name_of "$1")
    for t in "${RESTARTS[@]}"; do
        ((SECONDS - t >= 60)) || recent+=("$t")
    done
    RESTARTS=("${recent[@]}" "$SECONDS")
    if ((${#RESTARTS[@]} > RESTART_MAX)); then
        fail "$name (pid $1) exited with status $2: more than $RESTART_MAX exits of the services within a minute"
    fi
    sleep 1 # not a crash loop at full speed
    case $name in
    state-processor) APPEND=1 start_processor ;;
    projector) APPEND=1 start_projector ;;
    command-gateway) APPEND=1 start_gateway ;;
    esac
    write_pids
    log "$name (pid $1) exited with status $2; started again as pid $!"
}
# A signal interrupts `wait` and runs its trap; otherwise `wait -n` returns when a service exits
# (it may be reaped there, or still be waited for here).
while true; do
    dead="" rc=0
    # shellcheck disable=SC2086 # KAFKA_PID is empty when Kafka is not ours: leave it out
    wait -n -p dead "$GATEWAY_PID" "$PROCESSOR_PID" "$PROJECTOR_PID" $KAFKA_PID || rc=$?
    if [[ -n $KAFKA_PID ]] && { [[ $dead == "$KAFKA_PID" ]] || ! kill -0 "$KAFKA_PID" 2>/dev/null; }; then
        fail "mock-kafka (pid $KAFKA_PID) exited unexpectedly"
    fi
    for pid in "$GATEWAY_PID" "$PROCESSOR_PID" "$PROJECTOR_PID"; do
        if [[ $pid == "$dead" ]]; then
            restart "$pid" "$rc"
        elif ! kill -0 "$pid" 2>/dev/null; then
            status=0
            wait "$pid" 2>/dev/null || status=$?
            restart "$pid" "$status"
        fi
    done
done
