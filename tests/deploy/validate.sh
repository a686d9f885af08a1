#!/usr/bin/env bash
# Validates deploy/ statically (no container engine or cluster runs here):
#   - deploy/docker-compose.yml with `docker-compose config` (Debian's docker-compose), with
#     placeholder secret files;
#   - deploy/k8s/*.yaml against the Kubernetes API schemas, strictly (unknown fields fail), with
#     kubernetes-validate (PyPI, pinned, in a virtualenv under the build folder);
#   - deploy/systemd/*.service with `systemd-analyze verify`, their ExecStart pointed at this
#     build's binaries; any message fails;
#   - every CQRS_ variable a service container is given (in deploy/k8s its env and the ConfigMaps
#     it takes with envFrom; in the compose file its environment) is a setting of that service's
#     command, as its --help lists them (kafka.* goes to librdkafka): a service refuses to start
#     on a key that is not its own;
#   - every gateway replica can own a reply partition (ADR 0019): in deploy/k8s the autoscaler's
#     maxReplicas plus the rollout's maxSurge, and in the compose file the gateway services, are
#     at most the topics' CQRS_TOPICS_PARTITIONS;
#   - deploy/Dockerfile: multi-stage, the final stage on debian:12-slim (by default, when the
#     base is a build argument) as a non-root numeric
#     user, every COPY source present in the repository, nothing fetched with ADD.
# Exit status: 0 when all pass, 1 otherwise (each failure is printed), 2 when a tool is missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(realpath -m -- "${BUILD:-build}")
KUBE_PIN=kubernetes-validate==1.37.0
KUBE_VERSION=1.30.0
VENV=$BUILD/venv-kubernetes-validate
log() { echo "validate.sh: $*" >&2; }
TMP=$(mktemp -d /tmp/cqrs-deploy.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
failed=0

command -v docker-compose >/dev/null || { log "docker-compose not found (make deps)"; exit 2; }
command -v systemd-analyze >/dev/null || { log "systemd-analyze not found"; exit 2; }

# --- docker compose ---
mkdir -p "$TMP/deploy/secrets"
cp "$REPO/deploy/docker-compose.yml" "$REPO/deploy/nginx.conf" "$REPO/deploy/Dockerfile" "$TMP/deploy/"
touch "$TMP/deploy/secrets/pg-password" "$TMP/deploy/secrets/jwt-public.pem" "$TMP/deploy/secrets/postgres.env"
if out=$(cd "$TMP/deploy" && docker-compose -f docker-compose.yml config 2>&1); then
    log "deploy/docker-compose.yml: valid"
else
    log "deploy/docker-compose.yml: INVALID"
    echo "$out" >&2
    failed=1
fi

# --- Kubernetes ---
if [[ ! -x $VENV/bin/kubernetes-validate || $(cat "$VENV/.installed" 2>/dev/null) != "$KUBE_PIN" ]]; then
    log "installing $KUBE_PIN into $VENV"
    rm -rf "$VENV"
    mkdir -p "$BUILD"
    if ! python3 -m venv "$VENV" >&2 ||
        ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$KUBE_PIN" >&2; then
        log "error: could not install $KUBE_PIN"
        rm -rf "$VENV"
        exit 2
    fi
    echo "$KUBE_PIN" >"$VENV/.installed"
fi
if out=$("$VENV/bin/kubernetes-validate" --strict -k "$KUBE_VERSION" "$REPO"/deploy/k8s/*.yaml 2>&1); then
    log "deploy/k8s: $(grep -c ' passed ' <<<"$out") resources valid against Kubernetes $KUBE_VERSION (strict)"
else
    log "deploy/k8s: INVALID"
    grep -v ' passed ' <<<"$out" >&2 || true
    failed=1
fi

# --- the settings each service is given are its own ---
if ! "$VENV/bin/python" - "$REPO" "$BUILD" <<'PY'
import glob, os, re, subprocess, sys
import yaml

repo, build = sys.argv[1:3]
known = {}


def settings(command):
    """The CQRS_ variables the command (its binary and subcommand) takes, from its --help."""
    words = [w for w in command[:2] if not w.startswith("-")]
    key = tuple(words)
    if key not in known:
        out = subprocess.run([os.path.join(build, words[0])] + words[1:] + ["--help"],
                             capture_output=True, text=True, check=False).stdout
        known[key] = set(re.findall(r"\bCQRS_[A-Z0-9_]+\b", out))
        if not known[key]:
            sys.exit(f"validate.sh: {' '.join(words)} --help lists no settings")
    return known[key]


def check(where, command, names):
    bad = sorted(n for n in names if n.startswith("CQRS_") and not n.startswith("CQRS_KAFKA_")
                 and n not in settings(command))
    words = " ".join(w for w in command[:2] if not w.startswith("-"))
    for n in bad:
        errors.append(f"{where}: {n} is not a setting of `{words}`, which would refuse to start")
    return len(names)


errors, checked = [], 0
docs = []
for path in sorted(glob.glob(os.path.join(repo, "deploy/k8s/*.yaml"))):
    with open(path) as f:
        docs += [d for d in yaml.safe_load_all(f) if d]
maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
for d in docs:
    spec = d.get("spec", {})
    if d.get("kind") != "Pod":
        spec = spec.get("template", {}).get("spec", {})
    for c in spec.get("containers", []):
        command = c.get("command", []) + c.get("args", [])
        if not command or command[0] not in ("command-gateway", "state-processor"):
            continue
        names = [e["name"] for e in c.get("env", [])]
        for src in c.get("envFrom", []):
            names += list(maps.get(src.get("configMapRef", {}).get("name"), {}))
        checked += check(f"deploy/k8s {d['kind']} {d['metadata']['name']}", command, names)
with open(os.path.join(repo, "deploy/docker-compose.yml")) as f:
    compose = yaml.safe_load(f)
for name, svc in compose.get("services", {}).items():
    command = svc.get("command") or []
    if command and command[0] in ("command-gateway", "state-processor"):
        env = svc.get("environment") or {}
        names = [e.split("=", 1)[0] for e in env] if isinstance(env, list) else list(env)
        checked += check(f"deploy/docker-compose.yml {name}", command, names)
for e in errors:
    print(f"validate.sh: {e}", file=sys.stderr)
if not errors:
    print(f"validate.sh: deploy/k8s, deploy/docker-compose.yml: {checked} settings given to "
          "services, each one of its own", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
then
    failed=1
fi

# --- gateway replicas against reply partitions ---
# A replica with no reply partition never becomes ready: during a rollout at maxReplicas one
# surge pod more must still find one, or a rollout with maxUnavailable 0 never ends.
value_of() { sed -n "s/^ *$1: *\"\{0,1\}\([0-9]*\)\"\{0,1\}.*/\1/p" "$2" | head -n 1; }
k8s_parts=$(value_of CQRS_TOPICS_PARTITIONS "$REPO/deploy/k8s/config.yaml")
k8s_max=$(value_of maxReplicas "$REPO/deploy/k8s/gateway.yaml")
k8s_surge=$(sed -n 's/.*maxSurge: *\([0-9]*\).*/\1/p' "$REPO/deploy/k8s/gateway.yaml" | head -n 1)
if [[ -z $k8s_parts || -z $k8s_max || -z $k8s_surge ]]; then
    log "deploy/k8s: cannot read CQRS_TOPICS_PARTITIONS, the gateway's maxReplicas or maxSurge"
    failed=1
elif ((k8s_max + k8s_surge > k8s_parts)); then
    log "deploy/k8s: gateway maxReplicas $k8s_max + maxSurge $k8s_surge > $k8s_parts reply partitions (CQRS_TOPICS_PARTITIONS)"
    failed=1
else
    log "deploy/k8s: at most $((k8s_max + k8s_surge)) gateway replicas for $k8s_parts reply partitions"
fi
compose_parts=$(value_of CQRS_TOPICS_PARTITIONS "$REPO/deploy/docker-compose.yml")
compose_gateways=$(grep -cE '^  gateway-[0-9]+:' "$REPO/deploy/docker-compose.yml" || true)
if [[ -z $compose_parts ]] || ((compose_gateways == 0 || compose_gateways > compose_parts)); then
    log "deploy/docker-compose.yml: $compose_gateways gateways for ${compose_parts:-?} reply partitions (CQRS_TOPICS_PARTITIONS)"
    failed=1
else
    log "deploy/docker-compose.yml: $compose_gateways gateways for $compose_parts reply partitions"
fi

# --- systemd ---
for f in "$REPO"/deploy/systemd/*.service; do
    sed "s|/usr/local/bin/|$BUILD/|g" "$f" >"$TMP/$(basename "$f")"
done
out=$(systemd-analyze verify "$TMP"/*.service 2>&1) || true
if [[ -z $out ]]; then
    log "deploy/systemd: $(find "$REPO/deploy/systemd" -name '*.service' | wc -l) units verified"
else
    log "deploy/systemd: systemd-analyze verify reported:"
    echo "$out" >&2
    failed=1
fi

# --- Dockerfile ---
if ! python3 - "$REPO" <<'PY'
import os, re, sys
repo = sys.argv[1]
lines, cont = [], ""
for raw in open(os.path.join(repo, "deploy/Dockerfile")):
    line = raw.rstrip("\n")
    if not cont and (not line.strip() or line.lstrip().startswith("#")):
        continue
    cont += line.rstrip("\\") + " "
    if not line.endswith("\\"):
        lines.append(cont.strip())
        cont = ""
errors = []
stages = [l for l in lines if l.upper().startswith("FROM ")]
if len(stages) < 2:
    errors.append("not a multi-stage build")
# The base may be a build argument (ARG BASE=debian:12-slim, FROM ${BASE}): its default counts.
args = {}
for l in lines:
    m = re.fullmatch(r"ARG\s+(\w+)=(\S+)", l)
    if m:
        args[m.group(1)] = m.group(2)
final = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
               stages[-1]) if stages else ""
if stages and not re.match(r"FROM debian:12-slim\b", final):
    errors.append("final stage is not debian:12-slim: " + stages[-1])
last = lines[lines.index(stages[-1]):] if stages else []
users = [l.split(None, 1)[1] for l in last if l.upper().startswith("USER ")]
if not users or not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]):
    errors.append("final stage does not end as a numeric non-root USER")
for l in lines:
    word = l.split(None, 1)[0].upper()
    if word == "ADD" and re.search(r"https?://", l):
        errors.append("ADD fetches a URL: " + l)
    if word == "COPY" and "--from=" not in l:
        for src in l.split()[1:-1]:
            if not os.path.exists(os.path.join(repo, src)):
                errors.append("COPY source missing from the repository: " + src)
for e in errors:
    print("validate.sh: deploy/Dockerfile: " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
then
    failed=1
else
    log "deploy/Dockerfile: multi-stage, non-root, sources present"
fi
exit "$failed"
