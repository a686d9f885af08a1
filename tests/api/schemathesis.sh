#!/usr/bin/env bash
# Runs schemathesis (PyPI, pinned, in a virtualenv under the build folder) against the OpenAPI
# document the running gateway serves: the whole system is started with deploy/local/run.sh on
# free ports, the gateway with authentication on (HS256, scopes required) and schemathesis
# sending a valid token. Every check runs: no 5xx, every status, header and body as documented.
#
# Environment:
#   BUILD                build folder (default: build)
#   SCHEMATHESIS_EXAMPLES  examples per operation (default: 50)
#   SCHEMATHESIS_SEED    random seed (default: one per run, printed)
#   SCHEMATHESIS_MAX_TIME  time budget of the run in seconds (default: 180)
# Exit status: 0 when schemathesis finds nothing, 1 when it does or the stack does not start,
# 2 when schemathesis could not be installed.
set -euo pipefail

PIN=schemathesis==4.32.5
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(realpath -m -- "${BUILD:-build}")
VENV=$BUILD/venv-schemathesis
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-50}
SEED=${SCHEMATHESIS_SEED:-$RANDOM$RANDOM}
log() { echo "schemathesis.sh: $*" >&2; }

if [[ ! -x $VENV/bin/st || $(cat "$VENV/.installed" 2>/dev/null) != "$PIN" ]]; then
    log "installing $PIN into $VENV"
    rm -rf "$VENV"
    mkdir -p "$BUILD"
    if ! python3 -m venv "$VENV" >&2 ||
        ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$PIN" >&2; then
        log "error: could not install $PIN (python3-venv installed? PyPI reachable?)"
        rm -rf "$VENV"
        exit 2
    fi
    echo "$PIN" >"$VENV/.installed"
fi

cd "$REPO" # the services find schemas/ relative to it
TMP=$(mktemp -d /tmp/cqrs-schemathesis.XXXXXX)
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
SECRET=$TMP/jwt-secret
python3 -c 'import secrets; print(secrets.token_hex(32), end="")' >"$SECRET"
TOKEN=$(python3 - "$SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret = open(sys.argv[1], "rb").read()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "schemathesis", "tenant": "schemathesis", "exp": int(time.time()) + 3600,
                       "scope": "commands:write commands:read aggregates:read"}).encode())
sig = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + sig).decode())
PY
)

RUN_DIR=$TMP/run BUILD=$BUILD HTTP_PORT=$HTTP_PORT PG_PORT=$(free_port) PROCESSOR_HTTP_PORT=0 \
    PROJECTOR_HTTP_PORT=0 KAFKA_PORT=$(free_port) TOPIC_PREFIX=st- \
    GATEWAY_ARGS="--auth.mode=jwt --auth.algorithm=HS256 --auth.key_file=$SECRET --auth.scopes=true" \
    "$REPO/deploy/local/run.sh" </dev/null >"$TMP/run.log" 2>&1 &
STACK_PID=$!
for ((i = 0; i < 600; i++)); do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null && break
    kill -0 "$STACK_PID" 2>/dev/null || break
    sleep 0.2
done
if ! curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/readyz"; then
    log "error: the stack did not become ready"
    tail -n 30 "$TMP/run.log" >&2
    exit 1
fi

log "schemathesis $PIN: $EXAMPLES examples per operation, seed $SEED"
rc=0
"$VENV/bin/st" --no-color --config-file "$REPO/tests/api/schemathesis.toml" run "http://127.0.0.1:$HTTP_PORT/openapi.json" --checks all \
    --exclude-checks positive_data_acceptance,unsupported_method \
    --max-examples "$EXAMPLES" --max-time "${SCHEMATHESIS_MAX_TIME:-180}" --seed "$SEED" \
    --workers 2 --request-timeout 40 \
    -H "Authorization: Bearer $TOKEN" </dev/null || rc=$?
if ((rc != 0)); then
    log "schemathesis found problems (exit $rc); stack logs in $TMP/run (kept)"
    CQRS_KEEP_TEST_DIR=1
fi
exit "$rc"
