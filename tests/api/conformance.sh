#!/usr/bin/env bash
# Checks the running system with third-party tools: the whole system is started with
# deploy/local/run.sh on free ports (mock Kafka, a small http.max_body and a rate limit so that 413
# and 429 can be reached), once with authentication on (HS256, scopes) and once with
# auth.mode=off, and each time tests/api/conformance.py
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

# shellcheck source=tests/api/stack.sh
source "$REPO/tests/api/stack.sh"
# shellcheck disable=SC2086 # PINS is a list of requirements
venv_install "$VENV" $PINS
if ! command -v promtool >/dev/null 2>&1; then
    log "promtool is missing; installing Debian's prometheus package"
    as_root=()
    ((EUID == 0)) || as_root=(sudo -n)
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        prometheus </dev/null >&2 || true
    command -v promtool >/dev/null 2>&1 || { log "error: could not install promtool (prometheus)"; exit 2; }
fi

cd "$REPO" # the services find schemas/ relative to it
SECRET=$TMP/jwt-secret
jwt_secret "$SECRET"
TOPIC_PREFIX=cf-
rc=0
# Once per authentication mode: the two documents differ (security schemes, 401 and 403).
for mode in jwt off; do
    HTTP_PORT=$(free_port)
    PROCESSOR_PORT=$(free_port)
    PROJECTOR_PORT=$(free_port)
    limits="--http.max_body=4096 --ratelimit.rate=20 --ratelimit.burst=300"
    if [[ $mode == jwt ]]; then
        stack_start "$TMP/$mode" "--auth.mode=jwt --auth.algorithm=HS256 --auth.key_file=$SECRET \
--auth.scopes=true $limits" || { rc=1; continue; }
        key=$SECRET
    else
        stack_start "$TMP/$mode" "--auth.mode=off $limits" || { rc=1; continue; }
        key=off
    fi

    log "auth.mode=$mode: openapi-core and CloudEvents ($PINS)"
    CONF_PROCESSOR_PID=$PROCESSOR_PID CONF_KAFKA_PID=$KAFKA_PID \
        "$VENV/bin/python" "$REPO/tests/api/conformance.py" "http://127.0.0.1:$HTTP_PORT" "$key" "$BOOTSTRAP" \
        "$TOPIC_PREFIX" </dev/null || rc=1

    # After the exchanges, so that every family has samples (histograms, labelled counters).
    log "auth.mode=$mode: $(promtool --version 2>&1 | head -n 1)"
    for svc in "command-gateway $HTTP_PORT" "state-processor $PROCESSOR_PORT" "projector $PROJECTOR_PORT"; do
        read -r name port <<<"$svc"
        if ! curl -fsS --max-time 10 "http://127.0.0.1:$port/metrics" >"$TMP/$mode/$name.metrics"; then
            log "FINDING: $name: GET /metrics failed"
            rc=1
            continue
        fi
        if out=$(promtool check metrics <"$TMP/$mode/$name.metrics" 2>&1); then
            log "$name /metrics: promtool finds nothing ($(grep -c '^# TYPE' "$TMP/$mode/$name.metrics") families)"
        else
            log "FINDING: $name /metrics: promtool check metrics:"
            echo "$out" >&2
            rc=1
        fi
    done
    stack_stop
done

if ((rc != 0)); then
    log "conformance problems found; stack logs in $TMP/{jwt,off}/run (kept)"
    CQRS_KEEP_TEST_DIR=1
fi
exit "$rc"
