#!/usr/bin/env bash
# Checks the running system with third-party tools: the whole system is started with
# deploy/local/run.sh on free ports (mock Kafka, authentication on, a small http.max_body and a
# rate limit so that 413 and 429 can be reached), then tests/api/conformance.py
#   - sends a recorded set of requests covering every operation and every status the gateway can
#     be made to answer, and validates each answer (and each request meant to be valid) with
#     openapi-core against the /openapi.json the gateway serves;
#   - writes two commands the processor dead-letters straight to the commands topic, then reads
#     the commands, events and dead-letter topics from the beginning with confluent-kafka and
#     parses every message with the CloudEvents SDK's Kafka binding (binary mode);
# and `promtool check metrics` (Debian's prometheus package) checks the /metrics of the gateway,
# the state-processor and the projector.
#
# Environment:
#   BUILD   build folder (default: build); the virtualenv is $BUILD/venv-conformance
# Exit status: 0 when no tool finds anything, 1 when one does or the stack does not start, 2 when
# a tool could not be installed.
set -euo pipefail

PINS="openapi-core==0.23.1 cloudevents==2.2.0 confluent-kafka==2.16.1"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(realpath -m -- "${BUILD:-build}")
VENV=$BUILD/venv-conformance
log() { echo "conformance.sh: $*" >&2; }

if [[ ! -x $VENV/bin/python || $(cat "$VENV/.installed" 2>/dev/null) != "$PINS" ]]; then
    log "installing $PINS into $VENV"
    rm -rf "$VENV"
    mkdir -p "$BUILD"
    # shellcheck disable=SC2086 # PINS is a list of requirements
    if ! python3 -m venv "$VENV" >&2 ||
        ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input $PINS >&2; then
        log "error: could not install $PINS (python3-venv installed? PyPI reachable?)"
        rm -rf "$VENV"
        exit 2
    fi
    echo "$PINS" >"$VENV/.installed"
fi
if ! command -v promtool >/dev/null 2>&1; then
    log "promtool is missing; installing Debian's prometheus package"
    as_root=()
    ((EUID == 0)) || as_root=(sudo -n)
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        prometheus </dev/null >&2 || true
    command -v promtool >/dev/null 2>&1 || { log "error: could not install promtool (prometheus)"; exit 2; }
fi

cd "$REPO" # the services find schemas/ relative to it
TMP=$(mktemp -d /tmp/cqrs-conformance.XXXXXX)
STACK_PID=""
cleanup() {
    if [[ -n $STACK_PID ]]; then
        kill -INT "$STACK_PID" 2>/dev/null || true
        wait "$STACK_PID" 2>/dev/null || true
    fi
    [[ ${CQRS_KEEP_TEST_DIR:-} == 1 ]] || rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
PROCESSOR_PORT=$(free_port)
PROJECTOR_PORT=$(free_port)
SECRET=$TMP/jwt-secret
python3 -c 'import secrets; print(secrets.token_hex(32), end="")' >"$SECRET"
PREFIX=cf-

RUN_DIR=$TMP/run BUILD=$BUILD HTTP_PORT=$HTTP_PORT PG_PORT=$(free_port) PROCESSOR_HTTP_PORT=$PROCESSOR_PORT \
    PROJECTOR_HTTP_PORT=$PROJECTOR_PORT KAFKA_PORT=$(free_port) TOPIC_PREFIX=$PREFIX \
    GATEWAY_ARGS="--auth.mode=jwt --auth.algorithm=HS256 --auth.key_file=$SECRET --auth.scopes=true --http.max_body=4096 --ratelimit.rate=20 --ratelimit.burst=300" \
    "$REPO/deploy/local/run.sh" </dev/null >"$TMP/run.log" 2>&1 &
STACK_PID=$!
ready() {
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null &&
        curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PROCESSOR_PORT/readyz" 2>/dev/null &&
        curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PROJECTOR_PORT/readyz" 2>/dev/null
}
for ((i = 0; i < 600; i++)); do
    ready && break
    kill -0 "$STACK_PID" 2>/dev/null || break
    sleep 0.2
done
if ! ready || [[ ! -s $TMP/run/kafka.bootstrap ]]; then
    log "error: the stack did not become ready"
    tail -n 30 "$TMP/run.log" >&2
    exit 1
fi
BOOTSTRAP=$(tr -d '[:space:]' <"$TMP/run/kafka.bootstrap")

rc=0
log "openapi-core and CloudEvents ($PINS)"
"$VENV/bin/python" "$REPO/tests/api/conformance.py" "http://127.0.0.1:$HTTP_PORT" "$SECRET" "$BOOTSTRAP" "$PREFIX" \
    </dev/null || rc=1

# After the exchanges, so that every family has samples (histograms, labelled counters).
log "promtool ($(promtool --version 2>&1 | head -n 1))"
for svc in "command-gateway $HTTP_PORT" "state-processor $PROCESSOR_PORT" "projector $PROJECTOR_PORT"; do
    read -r name port <<<"$svc"
    if ! curl -fsS --max-time 10 "http://127.0.0.1:$port/metrics" >"$TMP/$name.metrics"; then
        log "FINDING: $name: GET /metrics failed"
        rc=1
        continue
    fi
    if out=$(promtool check metrics <"$TMP/$name.metrics" 2>&1); then
        log "$name /metrics: promtool finds nothing ($(grep -c '^# TYPE' "$TMP/$name.metrics") families)"
    else
        log "FINDING: $name /metrics: promtool check metrics:"
        echo "$out" >&2
        rc=1
    fi
done

if ((rc != 0)); then
    log "conformance problems found; stack logs in $TMP/run (kept)"
    CQRS_KEEP_TEST_DIR=1
fi
exit "$rc"
