#!/usr/bin/env bash
# Checks that OpenAPI documents are valid OpenAPI 3.1 with openapi-spec-validator from PyPI, installed at a pinned version into a virtualenv under the build folder.
set -euo pipefail

# Usage: tests/api/validate-openapi.sh [FILE...]      (default: docs/openapi.json)
# Environment:
#   BUILD   build folder; the virtualenv is $BUILD/venv-openapi, reused while the pin is unchanged (default: build)
#   PYTHON  interpreter that creates the virtualenv (default: python3; on Debian it needs python3-venv)
# Exit status: 0 when every file is valid, 1 when one is not (the validator's reasons are printed), 2 when the
# validator could not be installed.

VALIDATOR=openapi-spec-validator==0.9.0

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(realpath -m -- "${BUILD:-build}") # relative to the caller's directory, as in tests/run.sh
VENV=$BUILD/venv-openapi
log() { echo "validate-openapi.sh: $*" >&2; }

files=("$@")
((${#files[@]} > 0)) || files=("$REPO/docs/openapi.json")

# The stamp names what the virtualenv holds; a different pin (or a half-made virtualenv) starts it afresh.
if [[ ! -x $VENV/bin/openapi-spec-validator || $(cat "$VENV/.installed" 2>/dev/null) != "$VALIDATOR" ]]; then
    log "installing $VALIDATOR into $VENV"
    rm -rf "$VENV"
    mkdir -p "$BUILD"
    if ! "${PYTHON:-python3}" -m venv "$VENV" >&2; then
        log "error: '${PYTHON:-python3} -m venv' failed (on Debian: apt-get install python3-venv)"
        rm -rf "$VENV"
        exit 2
    fi
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$VALIDATOR" >&2; then
        log "error: pip could not install $VALIDATOR (is PyPI reachable?)"
        rm -rf "$VENV"
        exit 2
    fi
    echo "$VALIDATOR" >"$VENV/.installed"
fi

rc=0
for f in "${files[@]}"; do
    # --schema 3.1: a document that claims another version fails instead of being checked as that version.
    if out=$("$VENV/bin/openapi-spec-validator" --schema 3.1 --validation-errors all "$f" 2>&1); then
        log "$f: valid OpenAPI 3.1 ($VALIDATOR)"
    else
        rc=1
        # Some messages quote the whole document: keep the start of each line.
        log "$f: NOT valid OpenAPI 3.1 ($VALIDATOR):"
        cut -c 1-400 <<<"$out" >&2
    fi
done
exit "$rc"
