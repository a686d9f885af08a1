#!/usr/bin/env bash
# Runs schemathesis (PyPI, pinned, in a virtualenv under the build folder) against the OpenAPI
# document the running gateway serves, once per authentication mode: the whole system is started
# with deploy/local/run.sh on free ports, first with authentication on (HS256, scopes required,
# schemathesis sending a valid token), then with auth.mode=off (the document without security).
# Every check runs: no 5xx, every status, header and body as documented.
#
# Environment:
#   BUILD                build folder (default: build)
#   SCHEMATHESIS_EXAMPLES  examples per operation (default: 50)
#   SCHEMATHESIS_SEED    random seed (default: one per run, printed)
#   SCHEMATHESIS_MAX_TIME  time budget in seconds of both runs together, split evenly (default: 180)
#   SCHEMATHESIS_AUTH_MODES  the modes to run (default: "jwt off")
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

# shellcheck source=tests/api/stack.sh
source "$REPO/tests/api/stack.sh"
venv_install "$VENV" "$PIN"

cd "$REPO" # the services find schemas/ relative to it
SECRET=$TMP/jwt-secret
jwt_secret "$SECRET"
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

# shellcheck disable=SC2206 # a space-separated list
MODES=(${SCHEMATHESIS_AUTH_MODES:-jwt off})
MAX_TIME=$((${SCHEMATHESIS_MAX_TIME:-180} / ${#MODES[@]}))
rc=0
for mode in "${MODES[@]}"; do
    HTTP_PORT=$(free_port)
    TOPIC_PREFIX=st-
    auth=()
    if [[ $mode == jwt ]]; then
        args="--auth.mode=jwt --auth.algorithm=HS256 --auth.key_file=$SECRET --auth.scopes=true"
        auth=(-H "Authorization: Bearer $TOKEN")
    else
        args="--auth.mode=off"
    fi
    stack_start "$TMP/$mode" "$args" || { rc=1; continue; }
    log "schemathesis $PIN, auth.mode=$mode: $EXAMPLES examples per operation, at most ${MAX_TIME}s, seed $SEED"
    # One worker: with two, hypothesis parses lambdas' source with ast.parse() in both threads at
    # once, and CPython 3.11 (gh-106905) then fails at random with "SystemError: AST constructor
    # recursion depth mismatch", a runtime error of the tool that fails the run.
    mrc=0
    "$VENV/bin/st" --no-color --config-file "$REPO/tests/api/schemathesis.toml" run "http://127.0.0.1:$HTTP_PORT/openapi.json" --checks all \
        --exclude-checks positive_data_acceptance,unsupported_method \
        --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --seed "$SEED" \
        --workers 1 --request-timeout 40 \
        "${auth[@]}" </dev/null || mrc=$?
    stack_stop
    if ((mrc != 0)); then
        log "schemathesis found problems with auth.mode=$mode (exit $mrc); stack logs in $TMP/$mode/run (kept)"
        CQRS_KEEP_TEST_DIR=1
        rc=1
    fi
done
exit "$rc"
