#!/usr/bin/env bash
# Keeps the module table of docs/architecture.md current: fails when a module (the stem of a .c or
# .h file) under common/, command-gateway/ or state-processor/ has no row, or when a row names a
# module that no longer exists; and keeps the layers: fails when a file includes from a folder
# above its own.
#
# The table is the one under "## Modules": its first column names a folder (`common/core/`), left
# empty on the rows that follow in the same folder; its second column names the folder's modules
# in backticks (`kafka`, `kafka_consumer`).
#
# Usage: tests/docs/check-architecture.sh [REPO]      (default: the repository holding this script)
set -euo pipefail

REPO=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
DOC=$REPO/docs/architecture.md
[[ -f $DOC ]] || { echo "check-architecture: no $DOC" >&2; exit 1; }

# The modules the tree has: folder/stem, once per .c/.h pair.
actual=$(cd "$REPO" && find common command-gateway state-processor -name '*.[ch]' -type f |
         sed 's/\.[ch]$//' | LC_ALL=C sort -u)

# The modules the table names.
documented=$(awk '
    /^## / { inside = ($0 == "## Modules") ; next }
    !inside || !/^\|/ { next }
    {
        n = split($0, cell, "|")
        if (n < 4 || cell[3] ~ /^ *module *$/ || cell[3] ~ /^-+$/) next
        if (match(cell[2], /`[^`]+`/)) folder = substr(cell[2], RSTART + 1, RLENGTH - 2)
        if (folder == "") { print "row without a folder: " $0 > "/dev/stderr"; bad = 1; next }
        sub(/\/$/, "", folder)
        mods = cell[3]
        found = 0
        while (match(mods, /`[^`]+`/)) {
            print folder "/" substr(mods, RSTART + 1, RLENGTH - 2)
            mods = substr(mods, RSTART + RLENGTH)
            found = 1
        }
        if (!found) { print "row without a module: " $0 > "/dev/stderr"; bad = 1 }
    }
    END { exit bad }
' "$DOC" | LC_ALL=C sort -u)

missing=$(LC_ALL=C comm -23 <(echo "$actual") <(echo "$documented"))
stale=$(LC_ALL=C comm -13 <(echo "$actual") <(echo "$documented"))
rc=0
if [[ -n $missing ]]; then
    echo "check-architecture: modules missing from the table in docs/architecture.md:" >&2
    awk '{ print "  " $0 }' <<<"$missing" >&2
    rc=1
fi
if [[ -n $stale ]]; then
    echo "check-architecture: docs/architecture.md names modules that do not exist:" >&2
    awk '{ print "  " $0 }' <<<"$stale" >&2
    rc=1
fi

# The layers (docs/architecture.md, "Layers"): the folders a file may include from, by its own
# folder. A file always includes from its own folder; nothing includes from above its layer.
COMMON="core kafka pg jsonschema domain http"
allowed_for() { # folder of a file, relative to the repository
    case $1 in
    common/core) echo "core" ;;
    common/kafka | common/pg | common/jsonschema) echo "core" ;;
    common/domain) echo "core jsonschema" ;;
    common/http) echo "core domain" ;;
    command-gateway) echo "$COMMON" ;;
    state-processor/loop) echo "$COMMON" ;;
    state-processor/processor | state-processor/projector) echo "$COMMON loop" ;;
    state-processor/ops | state-processor/ops/*) echo "$COMMON loop processor projector ops" ;;
    state-processor) echo "$COMMON loop processor projector ops" ;;
    *) echo "?" ;;
    esac
}
layering=""
while IFS= read -r file; do
    dir=$(dirname "$file")
    own=${dir#common/}
    own=${own#state-processor/}
    allowed=" $(allowed_for "$dir") "
    while IFS= read -r inc; do
        [[ -n $inc ]] || continue
        top=${inc%%/*}
        [[ $inc == */* ]] || continue # a file of the same folder
        [[ $inc == "$own"/* ]] && continue
        [[ $allowed == *" $top "* ]] || layering+="  $file includes $inc"$'\n'
    done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$REPO/$file")
done < <(cd "$REPO" && find common command-gateway state-processor -name '*.[ch]' -type f | LC_ALL=C sort)
if [[ -n $layering ]]; then
    echo "check-architecture: includes across the layers, from a lower layer to a higher one:" >&2
    printf '%s' "$layering" >&2
    rc=1
fi
((rc == 0)) && echo "check-architecture: $(wc -l <<<"$actual") modules, all in docs/architecture.md; no include against the layers"
exit $rc
