#!/usr/bin/env bash
# make test-deploy: builds the image of deploy/Dockerfile with podman and
#  1. runs the services from it (migrate, a processor, the projector, a gateway) on a private
#     PostgreSQL and an Apache Kafka broker on the host, and sends commands end to end through
#     the containerized gateway;
#  2. runs the whole stack of deploy/docker-compose.yml with podman-compose (PostgreSQL, Kafka,
#     the migration, two processors, the projector, two gateways behind nginx, on a container
#     network of its own) and sends commands with a bearer token through nginx;
#  3. plays the manifests of deploy/k8s with `podman kube play` (the migration Job as a pod, three
#     processors, two projectors, two gateways) on a container network of its own, with PostgreSQL
#     and Kafka containers under the host names the ConfigMap gives, and sends commands with a
#     bearer token to each gateway pod. tests/deploy/kube_play.py says what it changes in the
#     manifests for podman 4.3, and why.
#
# No image registry is reachable from the machines this runs on, so the base image is made from
# Debian's packages (debootstrap --variant=minbase bookworm, then podman import) and given to the
# Dockerfile as its BASE; the compose file's third-party images are replaced by stand-ins built
# on it (tests/deploy/images/). The containers share the host's network (--network host) and every
# server listens on 127.0.0.1 only (the compose stack on its own container network, with its
# load balancer published on 127.0.0.1). podman runs with runc and this script's own containers.conf
# (CONTAINERS_CONF): crun fails on this kind of machine's cgroups, and the default ulimits cannot be
# applied inside its sandbox.
#
# Environment: BUILD (default build) holds the work folders; CQRS_DEBOOTSTRAP_MIRROR (default
# http://deb.debian.org/debian) the mirror of the base image; KEEP=1 keeps the containers' logs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
BUILD=${BUILD:-build}
MIRROR=${CQRS_DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=localhost/cqrs-debian:12
IMAGE=localhost/cqrs-pipeline:test
PG_SH=$REPO/deploy/local/pg.sh
KAFKA_SH=$REPO/deploy/kafka/kafka.sh
PACKAGES=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs podman-compose python3-yaml)

log() { echo "test-deploy: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# Runs CMD... until it succeeds, for up to SECONDS; 1 when the time is up. A wait on the
# condition: the 0.1 s pause only spaces the polls.
wait_until() { # SECONDS CMD...
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
# Whether command ID is applied, as $api answers GET /v1/commands/ID (with $auth, when set);
# the answer is left in $TMP/cmd.json.
applied() { # ID
    curl -s ${auth+"${auth[@]}"} "$api/v1/commands/$1" >"$TMP/cmd.json"
    grep -q '"status": *"applied"' "$TMP/cmd.json"
}
# Whether every URL answers 200.
all_200() { # URL...
    local url
    for url in "$@"; do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "$url") == 200 ]] || return 1
    done
}

# --- packages --------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) == "install ok installed" ]] ||
        missing+=("$pkg")
done
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing ${missing[*]}; run as root"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" </dev/null >/dev/null
fi

TMP=$(mktemp -d /tmp/cqrs-deploy.XXXXXX)
chmod 711 "$TMP" # pg.sh runs PostgreSQL as the postgres user, which must reach $TMP/pg
export CONTAINERS_CONF=$TMP/containers.conf
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

# The pods of deploy/k8s have the fixed names kube play gives them: what a run killed before its
# cleanup left would stop the next one.
kube_leftovers_rm() {
    podman pod ps --format '{{.Name}}' |
        grep -E '^(cqrs-migrate|(command-gateway|state-processor|projector)-pod-[0-9]+)$' |
        xargs -r podman pod rm -f >/dev/null 2>&1 || true
    podman secret rm cqrs-postgres cqrs-jwt >/dev/null 2>&1 || true
}

CONTAINERS=()
PROJECT=cqrs-deploy-test-$$
COMPOSE=()
KUBE=""
SECRETS=()
NETWORKS=()
cleanup() {
    local rc=$? c
    if [[ -n $KUBE ]]; then
        if ((rc != 0)) || [[ ${KEEP:-0} == 1 ]]; then
            for c in $(podman ps -a --format '{{.Names}}' |
                grep -E '^(cqrs-migrate|command-gateway|state-processor|projector)-' || true); do
                echo "==> container $c" >&2
                podman logs "$c" 2>&1 | tail -n 30 >&2 || true
            done
        fi
        podman kube down "$KUBE" >/dev/null 2>&1 || true
        kube_leftovers_rm
    fi
    for c in "${SECRETS[@]}"; do podman secret rm "$c" >/dev/null 2>&1 || true; done
    if ((${#COMPOSE[@]})); then
        if ((rc != 0)) || [[ ${KEEP:-0} == 1 ]]; then
            for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
                echo "==> container $c" >&2
                podman logs "$c" 2>&1 | tail -n 30 >&2 || true
            done
        fi
        "${COMPOSE[@]}" down -v -t 5 >/dev/null 2>&1 || true
        # podman-compose 1.0 leaves the project's network behind.
        podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
    fi
    for c in "${CONTAINERS[@]}"; do
        if ((rc != 0)) || [[ ${KEEP:-0} == 1 ]]; then
            echo "==> container $c" >&2
            podman logs "$c" 2>&1 | tail -n 40 >&2 || true
        fi
        podman rm -f -t 5 "$c" >/dev/null 2>&1 || true
    done
    for c in "${NETWORKS[@]}"; do podman network rm -f "$c" >/dev/null 2>&1 || true; done
    "$KAFKA_SH" stop "$TMP/kafka" >/dev/null 2>&1 || true
    "$PG_SH" stop "$TMP/pg" >/dev/null 2>&1 || true
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

# --- images ----------------------------------------------------------------------------------
if ! podman image exists "$BASE_IMAGE"; then
    rootfs=$TMP/rootfs
    log "making $BASE_IMAGE from Debian's packages (debootstrap, $MIRROR)"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$TMP/debootstrap.log" 2>&1 ||
        { tail -n 20 "$TMP/debootstrap.log" >&2; die "debootstrap failed"; }
    tar -C "$rootfs" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi
log "building $IMAGE from deploy/Dockerfile"
start=$SECONDS
podman build -q --network host --build-arg BASE="$BASE_IMAGE" -f deploy/Dockerfile -t "$IMAGE" . \
    >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; die "podman build failed"; }
log "built in $((SECONDS - start)) s"

# --- PostgreSQL and Kafka on the host's loopback ---------------------------------------------
# Each port is chosen once the one before it is taken.
pg_port=$("$KAFKA_SH" free-port 1)
PG_FSYNC=off "$PG_SH" start "$TMP/pg" "$pg_port" >/dev/null
"$KAFKA_SH" fetch
bootstrap=$("$KAFKA_SH" start "$TMP/kafka" "$("$KAFKA_SH" free-port 1)" 1)
http_port=$("$KAFKA_SH" free-port 1)
log "PostgreSQL on 127.0.0.1:$pg_port, Kafka on $bootstrap"

# Runs the image with the settings every service takes; the rest of the arguments are its command.
run() { # name args...
    local name=cqrs-test-$1-$$
    shift
    podman run -d --name "$name" --network host \
        -e CQRS_PG_CONNINFO="host=127.0.0.1 port=$pg_port user=postgres dbname=cqrs" \
        -e CQRS_KAFKA_BOOTSTRAP_SERVERS="$bootstrap" \
        -e CQRS_TOPICS_PARTITIONS=4 -e CQRS_TOPICS_REPLICATION=1 \
        "$IMAGE" "$@" >/dev/null
    CONTAINERS+=("$name")
}

podman run --rm --network host \
    -e CQRS_PG_CONNINFO="host=127.0.0.1 port=$pg_port user=postgres dbname=cqrs" \
    "$IMAGE" state-processor migrate || die "the migration container failed"
run processor state-processor
run projector state-processor project
run gateway command-gateway --http.host=127.0.0.1 --http.port="$http_port" --auth.mode=off

# --- a command end to end --------------------------------------------------------------------
ready=0
for ((i = 0; i < 600; i++)); do # up to 60 s
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/readyz") == 200 ]]; then
        ready=1
        break
    fi
    for c in "${CONTAINERS[@]}"; do
        [[ $(podman inspect -f '{{.State.Running}}' "$c") == true ]] || die "container $c exited"
    done
    sleep 0.1
done
((ready)) || die "the gateway in its container was not ready within 60 s"

api=http://127.0.0.1:$http_port
# Sync: 201 with the result once the processor (another container) has applied it. A command
# sent before the processor owns its partitions is answered 202; follow it then.
status=$(curl -s -o "$TMP/open.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"type":"account.open","aggregate_id":"acc-deploy","payload":{"owner":"ada"}}' \
    "$api/v1/commands")
[[ $status == 201 || $status == 202 ]] || { cat "$TMP/open.json" >&2; die "account.open: $status"; }
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["command_id"])' "$TMP/open.json")
wait_until 30 applied "$id" || { cat "$TMP/cmd.json" >&2; die "account.open not applied"; }
status=$(curl -s -o "$TMP/deposit.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"type":"account.deposit","aggregate_id":"acc-deploy","payload":{"amount":42}}' \
    "$api/v1/commands")
[[ $status == 200 ]] || { cat "$TMP/deposit.json" >&2; die "account.deposit: $status, not 200"; }
# The read side: the projector's row, read-your-writes through min_version.
status=$(curl -s -o "$TMP/read.json" -w '%{http_code}' \
    "$api/v1/aggregates/account/acc-deploy?min_version=2")
python3 - "$TMP/read.json" "$status" <<'EOF' || die "the projection read is wrong"
import json, sys
body = json.load(open(sys.argv[1]))
assert sys.argv[2] == "200", (sys.argv[2], body)
assert body["version"] == 2 and body["state"]["balance"] == 42, body
EOF
log "a command through the containers: account.open applied, account.deposit 200, the projection at version 2 with balance 42"
for c in "${CONTAINERS[@]}"; do podman rm -f -t 5 "$c" >/dev/null; done
CONTAINERS=()

# --- 2. the compose stack ----------------------------------------------------------------------
log "building the stand-ins of postgres, apache/kafka and nginx"
mkdir -p "$TMP/kafka-image"
cp -r tests/deploy/images/kafka/. "$TMP/kafka-image/"
cp -r "$("$KAFKA_SH" libs)" "$TMP/kafka-image/libs"
cp deploy/kafka/log4j.properties "$TMP/kafka-image/"
for img in postgres:tests/deploy/images/postgres kafka:$TMP/kafka-image nginx:tests/deploy/images/nginx; do
    name=${img%%:*}
    podman build -q --network host --build-arg BASE="$BASE_IMAGE" -t "localhost/cqrs-test-$name:latest" \
        "${img#*:}" >"$TMP/build-$name.log" 2>&1 ||
        { tail -n 30 "$TMP/build-$name.log" >&2; die "podman build of the $name stand-in failed"; }
done
podman tag "$IMAGE" localhost/cqrs-pipeline:latest

# The compose file and its secrets in a folder of their own: deploy/secrets is the user's.
mkdir -p "$TMP/deploy/secrets"
cp deploy/docker-compose.yml deploy/nginx.conf "$TMP/deploy/"
head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$TMP/deploy/secrets/pg-password"
echo "PGPASSWORD=$(cat "$TMP/deploy/secrets/pg-password")" >"$TMP/deploy/secrets/postgres.env"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/jwt-key.pem" 2>/dev/null
openssl pkey -in "$TMP/jwt-key.pem" -pubout -out "$TMP/deploy/secrets/jwt-public.pem"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jwt_head=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
jwt_body=$(printf '{"sub":"test-deploy","tenant":"acme","scope":"commands:write commands:read aggregates:read","exp":%d}' \
    $(($(date +%s) + 3600)) | b64url)
jwt_sig=$(printf '%s.%s' "$jwt_head" "$jwt_body" | openssl dgst -sha256 -sign "$TMP/jwt-key.pem" | b64url)
auth=(-H "Authorization: Bearer $jwt_head.$jwt_body.$jwt_sig")

lb_port=$("$KAFKA_SH" free-port 1)
export POSTGRES_IMAGE=localhost/cqrs-test-postgres:latest KAFKA_IMAGE=localhost/cqrs-test-kafka:latest
export NGINX_IMAGE=localhost/cqrs-test-nginx:latest CQRS_LB_PORT=$lb_port
COMPOSE=(podman-compose -p "$PROJECT" -f "$TMP/deploy/docker-compose.yml")
log "podman-compose up: deploy/docker-compose.yml, its load balancer on 127.0.0.1:$lb_port"
start=$SECONDS
"${COMPOSE[@]}" up -d --no-build >"$TMP/compose-up.log" 2>&1 ||
    { tail -n 40 "$TMP/compose-up.log" >&2; die "podman-compose up failed"; }
api=http://127.0.0.1:$lb_port
# Up to 180 s: Kafka and PostgreSQL start in their containers.
wait_until 180 all_200 "$api/readyz" || die "no gateway behind nginx was ready within 180 s"
log "the compose stack answered /readyz 200 through nginx $((SECONDS - start)) s after up"
status=$(curl -s -o /dev/null -w '%{http_code}' "$api/v1/aggregates/account")
[[ $status == 401 ]] || die "a read without a token through nginx: $status, not 401"

# POSTs body with the token and follows its command until applied; prints the POST's status.
post_applied() { # body
    local status id
    status=$(curl -s -o "$TMP/post.json" -w '%{http_code}' "${auth[@]}" \
        -H 'Content-Type: application/json' -d "$1" "$api/v1/commands")
    [[ $status == 20[012] ]] || { cat "$TMP/post.json" >&2; die "POST $1: $status"; }
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["command_id"])' "$TMP/post.json")
    wait_until 60 applied "$id" || { cat "$TMP/cmd.json" >&2; die "command $id not applied within 60 s"; }
    echo "$status"
}
# Reads the account AGG from $api with min_version=VERSION: 200, at VERSION, with BALANCE.
read_account() { # AGG VERSION BALANCE WHERE
    local status
    status=$(curl -s -o "$TMP/read.json" -w '%{http_code}' "${auth[@]}" \
        "$api/v1/aggregates/account/$1?min_version=$2")
    python3 - "$TMP/read.json" "$status" "$2" "$3" <<'EOF' || die "the projection read $4 is wrong"
import json, sys
body = json.load(open(sys.argv[1]))
assert sys.argv[2] == "200", (sys.argv[2], body)
assert body["version"] == int(sys.argv[3]) and body["state"]["balance"] == int(sys.argv[4]), body
EOF
}
# Opens the account AGG, deposits 10, 20, 30 and 40 synchronously (each answered 200), taking
# the APIs in turn, and reads the projection at version 5 with a balance of 100 from the last.
open_deposit_read() { # AGG WHERE API...
    local agg=$1 where=$2 amount n=0 status
    shift 2
    local apis=("$@")
    api=${apis[0]}
    post_applied "{\"type\":\"account.open\",\"aggregate_id\":\"$agg\",\"payload\":{\"owner\":\"ada\"}}" >/dev/null
    for amount in 10 20 30 40; do
        api=${apis[$((n++ % ${#apis[@]}))]}
        status=$(post_applied "{\"type\":\"account.deposit\",\"aggregate_id\":\"$agg\",\"payload\":{\"amount\":$amount}}")
        [[ $status == 200 ]] || die "a sync deposit $where was answered $status, not 200"
    done
    read_account "$agg" 5 100 "$where"
}
# Sync through nginx: whichever gateway takes a request, its reply finds it through Kafka.
open_deposit_read acc-compose "through nginx" "$api"
log "the compose stack: account.open applied, four sync deposits answered 200 through nginx, the projection at version 5 with balance 100"
"${COMPOSE[@]}" down -v -t 5 >/dev/null 2>&1 || true
podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
COMPOSE=()

# --- 3. the Kubernetes manifests with podman kube play ----------------------------------------
# PostgreSQL and Kafka, which the manifests take as given, run as containers on the network the
# pods join, under the host names of the ConfigMap (postgres, postgres-read; kafka for the
# ConfigMap's brokers, which --set replaces with the one broker here).
kube_leftovers_rm
NET=cqrs-kube-test-$$
podman network create "$NET" >/dev/null
NETWORKS+=("$NET")
mkdir -p "$TMP/kube/secrets/cqrs-postgres" "$TMP/kube/secrets/cqrs-jwt" "$TMP/kube/out"
# The value as kubectl create secret --from-file takes it: a trailing newline would be part of
# the password the services send.
printf '%s' "$(cat "$TMP/deploy/secrets/pg-password")" >"$TMP/kube/secrets/cqrs-postgres/password"
cp "$TMP/deploy/secrets/jwt-public.pem" "$TMP/kube/secrets/cqrs-jwt/jwt-public.pem"
chmod 644 "$TMP/kube/secrets/cqrs-postgres/password"
podman run -d --name "cqrs-kube-postgres-$$" --network "$NET" \
    --network-alias postgres --network-alias postgres-read \
    -e POSTGRES_DB=cqrs -e POSTGRES_USER=cqrs -e POSTGRES_PASSWORD_FILE=/run/pg-password \
    -v "$TMP/kube/secrets/cqrs-postgres/password:/run/pg-password:ro" \
    localhost/cqrs-test-postgres:latest >/dev/null
CONTAINERS+=("cqrs-kube-postgres-$$")
podman run -d --name "cqrs-kube-kafka-$$" --network "$NET" --network-alias kafka \
    -e KAFKA_NODE_ID=1 -e KAFKA_PROCESS_ROLES=broker,controller \
    -e KAFKA_LISTENERS=PLAINTEXT://:9092,CONTROLLER://:9093 \
    -e KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://kafka:9092 -e KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER \
    -e KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT \
    -e KAFKA_CONTROLLER_QUORUM_VOTERS=1@kafka:9093 -e KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1 \
    -e KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1 -e KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1 \
    -e KAFKA_AUTO_CREATE_TOPICS_ENABLE=false localhost/cqrs-test-kafka:latest >/dev/null
CONTAINERS+=("cqrs-kube-kafka-$$")

/usr/bin/python3 tests/deploy/kube_play.py --set CQRS_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
    --set CQRS_TOPICS_REPLICATION=1 "$TMP/kube/out" "$IMAGE" "$TMP/kube/secrets" deploy/k8s/*.yaml ||
    die "the manifests of deploy/k8s could not be made playable"
for f in "$TMP"/kube/out/secret-*.json; do
    name=$(basename "$f" .json)
    name=${name#secret-}
    podman secret create "$name" "$f" >/dev/null || die "podman secret create $name failed"
    SECRETS+=("$name")
done
KUBE=$TMP/kube/out/kube.yaml
log "podman kube play: deploy/k8s on the container network $NET"
start=$SECONDS
# Without systemd, podman cannot schedule the probes and says so for each; the script probes.
podman kube play --network "$NET" "$KUBE" >"$TMP/kube-play.log" 2>&1 ||
    { tail -n 40 "$TMP/kube-play.log" >&2; die "podman kube play failed"; }

pod_ip() { # pod
    local infra
    infra=$(podman pod inspect "$1" -f '{{.InfraContainerID}}') || return 1
    podman inspect "$infra" -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}"
}
gateways=()
for pod in command-gateway-pod-0 command-gateway-pod-1; do
    ip=$(pod_ip "$pod") || die "no pod $pod"
    gateways+=("http://$ip:8080")
done
migrated() {
    [[ $(podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' cqrs-migrate-migrate) == "exited 0" ]]
}
# Up to 180 s: Kafka and PostgreSQL start in their containers.
wait_until 180 migrated || die "the migration pod did not complete within 180 s ($(
    podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' cqrs-migrate-migrate))"
wait_until 180 all_200 "${gateways[0]}/readyz" "${gateways[1]}/readyz" ||
    die "the gateway pods were not both ready within 180 s"
log "deploy/k8s: the migration completed and both gateway pods answered /readyz 200 $((SECONDS - start)) s after kube play"
for pod in state-processor-pod-0 state-processor-pod-1 state-processor-pod-2 projector-pod-0 projector-pod-1; do
    [[ $(podman pod inspect -f '{{.State}}' "$pod") == Running ]] ||
        die "pod $pod is not running: $(podman pod inspect -f '{{.State}}' "$pod")"
done

# The manifests' gateways check the issuer and audience of a token.
jwt_body=$(printf '{"sub":"test-deploy","iss":"https://idp.example.com/","aud":"cqrs-api","tenant":"acme","scope":"commands:write commands:read aggregates:read","exp":%d}' \
    $(($(date +%s) + 3600)) | b64url)
jwt_sig=$(printf '%s.%s' "$jwt_head" "$jwt_body" | openssl dgst -sha256 -sign "$TMP/jwt-key.pem" | b64url)
auth=(-H "Authorization: Bearer $jwt_head.$jwt_body.$jwt_sig")
api=${gateways[0]}
status=$(curl -s -o /dev/null -w '%{http_code}' "$api/v1/aggregates/account")
[[ $status == 401 ]] || die "a read without a token from a gateway pod: $status, not 401"
# Alternating between the two gateway pods: each relays the answers of its own requests.
open_deposit_read acc-kube "by a gateway pod" "${gateways[@]}"
log "deploy/k8s: account.open applied, four sync deposits answered 200 by the two gateway pods, the projection at version 5 with balance 100"

# kill -9 of a gateway and a processor in their containers: the pods' restart policy (Always) starts
# them again on the same data, the gateway becomes ready by itself, and the aggregate goes on
# from where it was.
processor=http://$(pod_ip state-processor-pod-0):8081
# kill(1), not podman kill: podman restarts no container that a podman command stopped.
kill -KILL $(podman inspect -f '{{.State.Pid}}' command-gateway-pod-0-gateway state-processor-pod-0-processor)
killed=$SECONDS
api=${gateways[0]}
# The processor is ready once the group has given it partitions again: after the session of its
# killed self has timed out.
wait_until 120 all_200 "$api/readyz" "$processor/readyz" ||
    die "the gateway and the processor killed with SIGKILL were not both ready again within 120 s"
restarts=$(podman inspect -f '{{.RestartCount}}' command-gateway-pod-0-gateway state-processor-pod-0-processor | paste -sd' ')
for r in $restarts; do
    ((r >= 1)) || die "a killed container was not restarted (restart counts: $restarts)"
done
status=$(post_applied '{"type":"account.deposit","aggregate_id":"acc-kube","payload":{"amount":50}}')
[[ $status == 200 ]] || die "a sync deposit after the restart was answered $status, not 200"
read_account acc-kube 6 150 "after the restart"
log "deploy/k8s: a gateway and a processor killed with SIGKILL were restarted by their pods (restarts: $restarts), both ready again in $((SECONDS - killed)) s; a sync deposit then answered 200, the projection at version 6 with balance 150"
echo "test-deploy: passed"
