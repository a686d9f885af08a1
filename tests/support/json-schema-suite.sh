#!/usr/bin/env bash
# Puts the official JSON-Schema-Test-Suite in DEST (default: build/json-schema-test-suite); prints DEST.
#
# Debian 12's json-schema-test-suite package stops at draft 7. The suite's draft 2020-12 files
# ship inside the source distribution of the Python jsonschema package (its json/ folder is the
# suite), so they come from PyPI through pip, pinned and checked by hash. Nothing is installed:
# `pip download` only fetches the archive.
set -euo pipefail

VERSION=4.23.0
SHA256=d71497fef26351a33265337fa77ffeb82423f3ea21283cd9467bb03999266bc4
DEST=$(realpath -m -- "${1:-build/json-schema-test-suite}")

if [[ -f $DEST/.version && $(cat "$DEST/.version") == "$VERSION" ]]; then
    echo "$DEST"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --dest "$work" "jsonschema==$VERSION" </dev/null >&2
archive=$work/jsonschema-$VERSION.tar.gz
if ! echo "$SHA256  $archive" | sha256sum --check --status; then
    echo "json-schema-suite.sh: $archive does not have the pinned SHA-256 $SHA256" >&2
    exit 1
fi
tar -xzf "$archive" -C "$work" "jsonschema-$VERSION/json"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$work/jsonschema-$VERSION/json" "$DEST"
echo "$VERSION" >"$DEST/.version"
echo "$DEST"
