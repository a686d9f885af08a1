#!/usr/bin/env bash
# Installs the Debian 12 packages the build, the tests and `make run` need; idempotent, never prompts.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config
    librdkafka-dev libevent-dev libjansson-dev libpq-dev uuid-dev libpcre2-dev check
    libjwt-dev libssl-dev
    postgresql curl procps
    python3 python3-pip python3-venv
    maven openjdk-17-jre-headless
    clang-format cppcheck clang-tidy
    clang-14 libclang-rt-14-dev libfuzzer-14-dev # make fuzz: libFuzzer with ASan + UBSan
    wrk nginx-light gnuplot-nox # make bench: load generator, HTTP baseline, plots
    docker-compose # make test: checks deploy/docker-compose.yml (config only; no engine runs)
    prometheus # make test: promtool checks the /metrics of the services (api/conformance)
)

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: dpkg/apt not found; this script targets Debian 12." >&2
    echo "install-deps: install these (or your distribution's equivalents) by hand: ${PACKAGES[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

as_root=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo -n) # -n: fail instead of prompting (CI has no stdin)
    else
        echo "install-deps: missing ${missing[*]}; run this script as root (sudo is not available)." >&2
        exit 1
    fi
fi

echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" </dev/null
# nginx is only a baseline that make bench runs on a loopback port of its own: where the package
# started its system service (port 80 on every address), stop and disable it.
if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null 2>&1 &&
    [[ -d /run/systemd/system ]]; then
    "${as_root[@]}" systemctl disable --now nginx.service >/dev/null 2>&1 || true
fi
# prometheus is there for its promtool only; the package starts a server on port 9090 of every
# address: stop and disable it too.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 &&
    [[ -d /run/systemd/system ]]; then
    "${as_root[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
echo "install-deps: done"
