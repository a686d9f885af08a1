# shellcheck shell=bash
# Sourced by the scripts of tests/api/: a pinned virtualenv and the whole system on free ports.
# The caller sets REPO, BUILD and log(), and `set -euo pipefail`.

# venv_install VENV PIN...: installs the pins into VENV unless its stamp names them already; exits 2
# when it cannot.
venv_install() {
    local venv=$1
    shift
    if [[ ! -x $venv/bin/python || $(cat "$venv/.installed" 2>/dev/null) != "$*" ]]; then
        log "installing $* into $venv"
        rm -rf "$venv"
        mkdir -p "$BUILD"
        if ! python3 -m venv "$venv" >&2 ||
            ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@" >&2; then
            log "error: could not install $* (python3-venv installed? PyPI reachable?)"
            rm -rf "$venv"
            exit 2
        fi
        echo "$*" >"$venv/.installed"
    fi
}

# A free port below the kernel's ephemeral range: kafka.sh's choice (see free_port() there).
free_port() { "$REPO/deploy/kafka/kafka.sh" free-port 1; }

# The temporary folder of the run, removed at exit unless CQRS_KEEP_TEST_DIR=1; the stacks started
# by stack_start are stopped at exit.
TMP=$(mktemp -d "/tmp/cqrs-$(basename "$0" .sh).XXXXXX")
STACK_PIDS=()
stack_cleanup() {
    local pid
    for pid in "${STACK_PIDS[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ ${CQRS_KEEP_TEST_DIR:-} == 1 ]] || rm -rf "$TMP"
}
trap stack_cleanup EXIT

# stack_start DIR GATEWAY_ARGS: starts deploy/local/run.sh with its state in DIR, the gateway on
# HTTP_PORT (set by the caller), the processor and projector on PROCESSOR_PORT and PROJECTOR_PORT
# (0: any), TOPIC_PREFIX as set; waits until every service is ready. Returns 1 (after printing the
# end of its log) when it does not become ready; BOOTSTRAP is then the Kafka bootstrap address,
# PROCESSOR_PID and KAFKA_PID the pids of the state-processor and of the mock cluster.
# shellcheck disable=SC2034 # BOOTSTRAP, PROCESSOR_PID, KAFKA_PID are for the caller
stack_start() {
    local dir=$1 args=$2 pid i
    mkdir -p "$dir"
    RUN_DIR=$dir/run BUILD=$BUILD HTTP_PORT=$HTTP_PORT PG_PORT=$(free_port) \
        PROCESSOR_HTTP_PORT=${PROCESSOR_PORT:-0} PROJECTOR_HTTP_PORT=${PROJECTOR_PORT:-0} \
        KAFKA_PORT=$(free_port) TOPIC_PREFIX=${TOPIC_PREFIX:-} GATEWAY_ARGS=$args \
        "$REPO/deploy/local/run.sh" </dev/null >"$dir/run.log" 2>&1 &
    pid=$!
    STACK_PIDS+=("$pid")
    for ((i = 0; i < 600; i++)); do
        stack_ready && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if ! stack_ready || [[ ! -s $dir/run/kafka.bootstrap ]]; then
        log "error: the stack did not become ready"
        tail -n 30 "$dir/run.log" >&2
        return 1
    fi
    BOOTSTRAP=$(tr -d '[:space:]' <"$dir/run/kafka.bootstrap")
    # The pids of the services, from the banner run.sh prints once all are ready.
    for ((i = 0; i < 100; i++)); do
        grep -q 'the system is up' "$dir/run.log" && break
        sleep 0.1
    done
    PROCESSOR_PID=$(sed -n 's/^  state-processor  *pid \([0-9]*\).*/\1/p' "$dir/run.log")
    KAFKA_PID=$(sed -n 's/^  mock-kafka  *pid \([0-9]*\).*/\1/p' "$dir/run.log")
}

# stack_stop: stops the last stack stack_start started.
stack_stop() {
    local pid=${STACK_PIDS[-1]}
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'STACK_PIDS[-1]'
}

stack_ready() {
    local p
    for p in "$HTTP_PORT" ${PROCESSOR_PORT:-} ${PROJECTOR_PORT:-}; do
        [[ $p != 0 ]] || continue
        curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$p/readyz" 2>/dev/null || return 1
    done
}

# jwt_secret FILE: writes a fresh HS256 secret.
jwt_secret() { python3 -c 'import secrets; print(secrets.token_hex(32), end="")' >"$1"; }
