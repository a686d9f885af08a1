#!/usr/bin/env bash
# Runs a private PostgreSQL cluster kept in a folder: start DIR PORT | stop DIR | status DIR | conninfo DIR [PORT],
# and streaming standbys of it: standby DIR PORT PRIMARY_PORT | promote DIR | sync DIR NAMES | kill DIR.
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: pg.sh start DIR PORT     initdb DIR/pgdata if needed, start on 127.0.0.1:PORT, create database cqrs,
                                print the conninfo on stdout (a no-op when already running on PORT)
       pg.sh stop DIR [MODE]    stop the cluster (pg_ctl stop -m MODE: fast, the default, or immediate,
                                which kills the server like a crash); a no-op when it is not running
       pg.sh status DIR         exit 0 when the cluster is running
       pg.sh conninfo DIR [PORT] print the conninfo (PORT defaults to the running cluster's port)
       pg.sh standby DIR PORT PRIMARY_PORT
                                make DIR a streaming standby of the server on 127.0.0.1:PRIMARY_PORT
                                (pg_basebackup; DIR's data, if any, is replaced), start it on PORT and
                                wait until it streams; its application_name is DIR's base name
       pg.sh promote DIR        promote the standby in DIR to a primary (pg_ctl promote, waits)
       pg.sh sync DIR NAMES     on the primary in DIR: synchronous_standby_names = NAMES (ALTER SYSTEM,
                                reloaded; '' for none, '*' for any standby)
       pg.sh kill DIR           kill -9 the server's postmaster (a crash of the machine, as far as this
                                server knows) and wait until it and its processes are gone

The socket, the data (DIR/pgdata) and the server log (DIR/postgres.log) live in DIR.
As root the server runs as the `postgres` user: DIR is created and chowned to postgres, so every
parent of DIR must be traversable (o+x) by postgres; /tmp, /var/tmp or a repo under /home or /work
are fine, anything under /root is not.
Environment: PG_BINDIR overrides where initdb/pg_ctl/psql are found; at start, PG_FSYNC (on, the
default, or off: for throwaway test servers, which may be killed but not lose the machine) and
PG_MAX_CONNECTIONS (default 100) set those two settings, and PG_PRELOAD (default none)
shared_preload_libraries (make bench's BENCH_PG_STATEMENTS loads pg_stat_statements).
EOF
    exit 2
}

log() { echo "pg.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

find_bindir() {
    local dir
    if [[ -n ${PG_BINDIR:-} ]]; then
        echo "$PG_BINDIR"
        return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then
            echo "$dir"
            return
        fi
    fi
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -1)
    if [[ -n $dir && -x $dir/initdb ]]; then
        echo "$dir"
        return
    fi
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return
    fi
    die "cannot find the PostgreSQL server binaries (initdb, pg_ctl); run deploy/install-deps.sh or set PG_BINDIR"
}

# Runs a command as the cluster owner: the postgres user when we are root, else ourselves.
# Runs from / so a cwd the postgres user cannot read (e.g. /root) does not matter.
as_owner() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

conninfo_for() { echo "host=127.0.0.1 port=$1 user=postgres dbname=cqrs"; }

check_port() {
    if ! [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] || (($1 > 65535)); then
        die "bad port '$1'"
    fi
}

# Port of the running cluster, from line 4 of postmaster.pid.
running_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null; }

is_running() { [[ -f $DATA/PG_VERSION ]] && as_owner "$BINDIR/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

# As root: fails, naming the path, when the postgres user cannot reach DIR (checked from / down).
check_traversable() {
    local p="" part rest=${DIR#/}
    while [[ $rest == */* ]]; do
        part=${rest%%/*}
        rest=${rest#*/}
        p=$p/$part
        [[ -e $p ]] || return 0
        if ! runuser -u postgres -- test -x "$p"; then
            die "the postgres user cannot traverse '$p' (mode $(stat -c %A "$p"), owner $(stat -c %U "$p")), so it" \
                "cannot use $DIR; pick a DIR whose parents are all o+x (e.g. under /var/tmp) or chmod o+x '$p'"
        fi
    done
}

# As root, prepares DIR for the postgres user, or explains why it cannot.
prepare_dir_as_root() {
    id -u postgres >/dev/null 2>&1 || die "user 'postgres' does not exist; run deploy/install-deps.sh"
    [[ -L $DIR ]] && die "$DIR is a symlink; pass a real directory"
    if [[ -e $DIR ]]; then
        local owner
        owner=$(stat -c %U "$DIR")
        [[ $owner == root || $owner == postgres ]] || die "$DIR belongs to '$owner'; refusing to chown it"
    fi
    check_traversable
    mkdir -p "$DIR"
    check_traversable # again: a restrictive umask may have made new parents unreadable
    if [[ -n $(find "$DIR" ! -user postgres -print -quit) ]]; then
        chown -R postgres:postgres "$DIR"
    fi
    chmod 700 "$DIR"
}

# Escapes a value for a single-quoted postgresql.conf string.
conf_quote() { printf "'%s'" "${1//\'/\'\'}"; }

cmd_start() {
    local port=$1
    check_port "$port"
    PG_FSYNC=${PG_FSYNC:-on}
    PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-100}
    [[ $PG_FSYNC == on || $PG_FSYNC == off ]] || die "PG_FSYNC must be on or off, not '$PG_FSYNC'"
    [[ $PG_MAX_CONNECTIONS =~ ^[1-9][0-9]{0,4}$ ]] || die "bad PG_MAX_CONNECTIONS '$PG_MAX_CONNECTIONS'"
    PG_PRELOAD=${PG_PRELOAD:-}
    [[ $PG_PRELOAD =~ ^[a-z_,]*$ ]] || die "bad PG_PRELOAD '$PG_PRELOAD' (library names, comma-separated)"
    # A Unix socket path is limited to 107 bytes: DIR/.s.PGSQL.PORT must fit.
    ((${#DIR} + 18 <= 107)) || die "DIR is too long for a Unix socket path (${#DIR} bytes): $DIR"

    if ((EUID == 0)); then
        prepare_dir_as_root
    else
        mkdir -p "$DIR"
        chmod 700 "$DIR"
    fi

    if is_running; then
        local cur
        cur=$(running_port)
        [[ $cur == "$port" ]] || die "the cluster in $DIR is already running on port $cur, not $port; stop it first"
        log "already running in $DIR on port $port"
        conninfo_for "$port"
        return
    fi

    if [[ ! -f $DATA/PG_VERSION ]]; then
        log "initdb $DATA"
        rm -rf "$DATA"
        if ! as_owner "$BINDIR/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=trust >"$DIR/initdb.log" 2>&1; then
            cat "$DIR/initdb.log" >&2
            die "initdb failed (log: $DIR/initdb.log)"
        fi
        printf "\n# Local development settings, rewritten by deploy/local/pg.sh at every start.\ninclude_if_exists = 'local.conf'\n" |
            as_owner tee -a "$DATA/postgresql.conf" >/dev/null
    fi

    # Settings that depend on DIR and PORT are rewritten at every start, so a moved DIR or a new port just works.
    as_owner tee "$DATA/local.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = $(conf_quote "$DIR")
max_connections = $PG_MAX_CONNECTIONS
shared_preload_libraries = '$PG_PRELOAD'
shared_buffers = 128MB
fsync = $PG_FSYNC
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF

    log "starting PostgreSQL on 127.0.0.1:$port (data $DATA, log $DIR/postgres.log)"
    if ! as_owner "$BINDIR/pg_ctl" start -D "$DATA" -l "$DIR/postgres.log" -w -t 60 >/dev/null; then
        tail -n 20 "$DIR/postgres.log" >&2 || true
        die "pg_ctl start failed (log: $DIR/postgres.log)"
    fi

    local admin="host=127.0.0.1 port=$port user=postgres dbname=postgres connect_timeout=10"
    local exists
    exists=$("$BINDIR/psql" -X -q -tA -v ON_ERROR_STOP=1 -d "$admin" \
        -c "SELECT 1 FROM pg_database WHERE datname = 'cqrs'" </dev/null)
    if [[ $exists != 1 ]]; then
        log "creating database cqrs"
        "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$admin" -c "CREATE DATABASE cqrs" </dev/null >/dev/null
    fi
    conninfo_for "$port"
}

# Runs SQL on the server in DIR (as the superuser, on its port).
psql_dir() {
    local port
    port=$(running_port)
    [[ -n $port ]] || die "no cluster running in $DIR"
    "$BINDIR/psql" -X -q -tA -v ON_ERROR_STOP=1 \
        -d "host=127.0.0.1 port=$port user=postgres dbname=postgres connect_timeout=10" "$@" </dev/null
}

cmd_standby() {
    local port=$1 primary=$2 name i
    check_port "$port"
    check_port "$primary"
    name=$(basename "$DIR")
    [[ $name =~ ^[A-Za-z0-9_-]+$ ]] || die "the base name of DIR ('$name') must be letters, digits, - or _"
    if is_running; then
        cmd_stop immediate
    fi
    if ((EUID == 0)); then
        prepare_dir_as_root
    else
        mkdir -p "$DIR"
        chmod 700 "$DIR"
    fi
    rm -rf "$DATA"
    log "pg_basebackup from 127.0.0.1:$primary into $DATA"
    if ! as_owner "$BINDIR/pg_basebackup" -D "$DATA" -X stream -c fast -R \
        -d "host=127.0.0.1 port=$primary user=postgres application_name=$name" \
        >"$DIR/basebackup.log" 2>&1; then
        cat "$DIR/basebackup.log" >&2
        die "pg_basebackup failed (log: $DIR/basebackup.log)"
    fi
    # pg_basebackup -R wrote primary_conninfo (with application_name) and standby.signal.
    cmd_start "$port" >/dev/null
    for ((i = 0; i < 300; i++)); do
        [[ $(psql_dir -c "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") == 1 ]] &&
            { log "standby $name streams from 127.0.0.1:$primary"; conninfo_for "$port"; return; }
        sleep 0.1
    done
    die "the standby in $DIR does not stream from 127.0.0.1:$primary after 30 s (log: $DIR/postgres.log)"
}

cmd_promote() {
    is_running || die "no cluster running in $DIR"
    log "promoting the standby in $DIR"
    as_owner "$BINDIR/pg_ctl" promote -D "$DATA" -w -t 60 >/dev/null
}

cmd_sync() {
    local names=$1 quoted
    quoted=$(conf_quote "$names")
    psql_dir -c "ALTER SYSTEM SET synchronous_standby_names = $quoted" -c "SELECT pg_reload_conf()" >/dev/null
    log "synchronous_standby_names = $quoted ($DIR)"
}

cmd_kill() {
    local pid kids i
    pid=$(sed -n 1p "$DATA/postmaster.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || { log "not running ($DIR)"; return; }
    # Its children, named now: once the postmaster is gone they belong to init.
    kids=$(pgrep -P "$pid" | tr '\n' ' ')
    log "kill -9 PostgreSQL's postmaster $pid ($DIR)"
    kill -9 "$pid" 2>/dev/null || true
    # Its backends notice that the postmaster is gone and exit on their own.
    for ((i = 0; i < 300; i++)); do
        # shellcheck disable=SC2086 # a list of pids
        kill -0 "$pid" $kids 2>/dev/null || return 0
        sleep 0.1
    done
    die "PostgreSQL's processes in $DIR are still there 30 s after kill -9"
}

cmd_stop() {
    local mode=${1:-fast}
    [[ $mode == fast || $mode == immediate ]] || die "bad stop mode '$mode' (fast or immediate)"
    if ! is_running; then
        log "not running ($DIR)"
        return
    fi
    log "stopping PostgreSQL in $DIR (-m $mode)"
    if [[ $mode == immediate ]]; then
        as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 >/dev/null
        return
    fi
    if ! as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null; then
        log "fast shutdown timed out; using immediate"
        as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m immediate -w -t 30 >/dev/null
    fi
}

(($# >= 2)) || usage
CMD=$1
DIR=$2
[[ -n $DIR ]] || usage
DIR=$(realpath -m -- "$DIR")
DATA=$DIR/pgdata
BINDIR=$(find_bindir)
# Our conninfo strings are explicit; keep libpq environment defaults from changing them.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGSSLMODE PGPASSWORD PGPASSFILE

case $CMD in
start)
    (($# == 3)) || usage
    cmd_start "$3"
    ;;
stop)
    (($# == 2 || $# == 3)) || usage
    cmd_stop "${3:-}"
    ;;
status)
    (($# == 2)) || usage
    is_running
    ;;
standby)
    (($# == 4)) || usage
    cmd_standby "$3" "$4"
    ;;
promote)
    (($# == 2)) || usage
    cmd_promote
    ;;
sync)
    (($# == 3)) || usage
    cmd_sync "$3"
    ;;
kill)
    (($# == 2)) || usage
    cmd_kill
    ;;
conninfo)
    (($# == 2 || $# == 3)) || usage
    if (($# == 3)); then
        check_port "$3"
        conninfo_for "$3"
    else
        port=$(running_port)
        if [[ -z $port ]] || ! is_running; then
            die "no cluster running in $DIR; pass PORT"
        fi
        conninfo_for "$port"
    fi
    ;;
*) usage ;;
esac
