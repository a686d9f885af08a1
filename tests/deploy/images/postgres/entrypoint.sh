#!/bin/bash
# Initializes the cluster on the first start (user, password, database), then runs the server.
set -euo pipefail
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
as_pg() { runuser -u postgres -- "$@"; }
if [[ ! -s $PGDATA/PG_VERSION ]]; then
    user=${POSTGRES_USER:-postgres}
    pwfile=$(mktemp)
    cat "${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE is not set}" >"$pwfile"
    chown postgres "$pwfile"
    as_pg initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [[ -n ${POSTGRES_DB:-} && $POSTGRES_DB != postgres ]]; then
        as_pg psql -q -U "$user" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec runuser -u postgres -- postgres -D "$PGDATA"
