#!/usr/bin/env bash
# Fetches Apache Kafka from Maven Central and runs a KRaft broker (or a 3-node cluster) on loopback.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: kafka.sh fetch                      download the broker jars into $KAFKA_HOME/libs (once)
       kafka.sh libs                       fetch, then print the folder of the jars
       kafka.sh start DIR PORT [NODES]      format and start NODES (1 or 3) combined broker+controller
                                            nodes on 127.0.0.1:PORT.. with data and logs in DIR;
                                            prints the bootstrap servers on stdout
       kafka.sh stop DIR                    stop every node started in DIR (SIGTERM, then SIGKILL)
       kafka.sh restart-node DIR N          stop node N (1-based) and start it again on its data
       kafka.sh stop-node DIR N... | start-node DIR N...
                                            stop or start the nodes named, all at once
       kafka.sh free-port [NODES]           print a PORT for start whose ports (2 per node) are
                                            all free on 127.0.0.1 now

KAFKA_HOME (default <repo>/.kafka, git-ignored) holds the jars; the version is pinned in
deploy/kafka/pom.xml. Node i listens on PORT+2(i-1) (clients) and PORT+2(i-1)+1 (controller).
USAGE
    exit 2
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KAFKA_HOME=${KAFKA_HOME:-$REPO/.kafka}
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
LIBS=$KAFKA_HOME/libs-$VERSION

log() { echo "kafka.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

fetch() {
    if [[ -f $LIBS/.complete ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "maven is missing (deploy/install-deps.sh installs it)"
    command -v java >/dev/null 2>&1 || die "java is missing (deploy/install-deps.sh installs it)"
    log "fetching Apache Kafka $VERSION from Maven Central into $LIBS"
    rm -rf "$LIBS.tmp"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$LIBS.tmp" </dev/null >&2 || die "mvn could not fetch the broker"
    touch "$LIBS.tmp/.complete"
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_port() { echo $(($2 + 2 * ($1 - 1))); } # node, base port -> client port

# Writes DIR/nodeN/server.properties for node n of count, with base port.
write_config() {
    local dir=$1 n=$2 count=$3 base=$4 voters="" i
    for ((i = 1; i <= count; i++)); do
        voters+="${voters:+,}$i@127.0.0.1:$(($(node_port "$i" "$base") + 1))"
    done
    local port rf
    port=$(node_port "$n" "$base")
    rf=$((count < 3 ? count : 3))
    mkdir -p "$dir/node$n/data"
    cat >"$dir/node$n/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/node$n/data
num.partitions=4
default.replication.factor=$rf
min.insync.replicas=$((rf > 1 ? 2 : 1))
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$((rf > 1 ? 2 : 1))
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.flush.interval.messages=9223372036854775807
PROPS
}

# True while pid runs. A node killed with SIGKILL is reparented to PID 1 once kafka.sh has exited;
# where PID 1 does not reap (a container's init that is not one), it stays a zombie, which kill -0
# still finds: look at its state as well.
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null || true)
    [[ $state != Z && $state != X ]]
}

start_node() {
    local dir=$1 n=$2
    [[ -f $dir/node$n/server.properties ]] || die "node $n has no configuration in $dir"
    if [[ -f $dir/node$n/pid ]] && alive "$(cat "$dir/node$n/pid")"; then
        return 0
    fi
    # A modest heap: up to three brokers share this machine with the tests.
    KAFKA_HEAP=${KAFKA_HEAP:--Xms128m -Xmx512m}
    # shellcheck disable=SC2086 # KAFKA_HEAP is a list of JVM options
    # wait_node reads the log from here: a restarted node's log holds its earlier starts too.
    wc -l <"$dir/node$n/broker.log" 2>/dev/null >"$dir/node$n/log.mark" || echo 0 >"$dir/node$n/log.mark"
    nohup java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$HERE/log4j.properties" -cp "$LIBS/*" \
        kafka.Kafka "$dir/node$n/server.properties" </dev/null >>"$dir/node$n/broker.log" 2>&1 &
    echo $! >"$dir/node$n/pid"
}

wait_node() {
    local dir=$1 n=$2 port i
    port=$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$dir/node$n/server.properties")
    for ((i = 0; i < 600; i++)); do
        if tail -n +"$(($(cat "$dir/node$n/log.mark" 2>/dev/null || echo 0) + 1))" "$dir/node$n/broker.log" 2>/dev/null |
            grep -q "Transition from STARTING to STARTED" && port_open "$port"; then
            return 0
        fi
        if ! alive "$(cat "$dir/node$n/pid")"; then
            tail -n 30 "$dir/node$n/broker.log" >&2
            die "node $n exited during start-up"
        fi
        sleep 0.1
    done
    tail -n 30 "$dir/node$n/broker.log" >&2
    die "node $n did not start within 60 s"
}

stop_node() {
    local dir=$1 n=$2 pid i
    [[ -f $dir/node$n/pid ]] || return 0
    pid=$(cat "$dir/node$n/pid")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "node $n did not stop within 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/node$n/pid"
}

nodes_in() { find "$1" -maxdepth 1 -name 'node*' -type d 2>/dev/null | wc -l; }

# A base port whose count ports can all be bound on 127.0.0.1 now: a bind sees the local ends of
# connections too, which a look at the listeners misses. The ports lie below the kernel's
# ephemeral range (ip_local_port_range), so that while a node is stopped in a fault test no
# outgoing connection and no port-0 bind elsewhere on the machine can take its port. A port can
# still be taken between this check and the broker's bind, so callers retry the start.
free_port() {
    python3 - "$1" <<'PY'
import random, socket, sys
count = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
top = low if low > 12000 else 60000
for _ in range(500):
    base = random.randrange(10000, top - count)
    held = []
    try:
        for p in range(base, base + count):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", p))
        print(base)
        sys.exit(0)
    except OSError:
        pass
    finally:
        for s in held:
            s.close()
sys.exit("kafka.sh: found no free ports")
PY
}

cmd=${1:-}
case $cmd in
fetch)
    fetch
    ;;
libs)
    fetch
    echo "$LIBS"
    ;;
start)
    [[ $# -ge 3 ]] || usage
    dir=$(realpath -m -- "$2")
    base=$3
    count=${4:-1}
    if ! [[ $base =~ ^[0-9]+$ ]] || ((base <= 1024 || base >= 65000)); then
        die "bad port '$base'"
    fi
    [[ $count == 1 || $count == 3 ]] || die "NODES must be 1 or 3"
    fetch
    mkdir -p "$dir"
    cluster_id=""
    [[ -f $dir/cluster.id ]] && cluster_id=$(cat "$dir/cluster.id")
    if [[ -z $cluster_id ]]; then
        cluster_id=$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
        [[ -n $cluster_id ]] || die "kafka.tools.StorageTool random-uuid failed"
        echo "$cluster_id" >"$dir/cluster.id"
    fi
    for ((n = 1; n <= count; n++)); do
        if [[ ! -f $dir/node$n/data/meta.properties ]]; then
            write_config "$dir" "$n" "$count" "$base"
            java -Dlog4j.configuration="file:$HERE/log4j.properties" -cp "$LIBS/*" \
                kafka.tools.StorageTool format -t "$cluster_id" \
                -c "$dir/node$n/server.properties" >>"$dir/node$n/broker.log" 2>&1 ||
                die "formatting node $n failed (see $dir/node$n/broker.log)"
        fi
        start_node "$dir" "$n"
    done
    bootstrap=""
    for ((n = 1; n <= count; n++)); do
        wait_node "$dir" "$n"
        bootstrap+="${bootstrap:+,}127.0.0.1:$(node_port "$n" "$base")"
    done
    log "Apache Kafka $VERSION up: $count node(s), bootstrap $bootstrap, logs in $dir/node*/broker.log"
    echo "$bootstrap"
    ;;
free-port)
    count=${2:-1}
    [[ $count == 1 || $count == 3 ]] || die "NODES must be 1 or 3"
    free_port $((2 * count))
    ;;
stop)
    [[ $# -ge 2 ]] || usage
    dir=$(realpath -m -- "$2")
    # All at once: a node stopped after the others would wait for a controller quorum that is gone.
    for ((n = 1; n <= $(nodes_in "$dir"); n++)); do
        stop_node "$dir" "$n" &
    done
    wait
    ;;
stop-node | start-node | restart-node)
    [[ $# -ge 3 ]] || usage
    dir=$(realpath -m -- "$2")
    shift 2
    [[ $cmd == restart-node && $# -ne 1 ]] && usage
    # All at once, as for stop and start: a node waits for a controller quorum of the others.
    if [[ $cmd != start-node ]]; then
        for n in "$@"; do
            stop_node "$dir" "$n" &
        done
        wait
    fi
    if [[ $cmd != stop-node ]]; then
        for n in "$@"; do
            start_node "$dir" "$n"
        done
        for n in "$@"; do
            wait_node "$dir" "$n"
        done
    fi
    ;;
*)
    usage
    ;;
esac
