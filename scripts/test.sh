#!/usr/bin/env bash
# Runs every test: installs what they need (OpenSSH clients, debootstrap, jq, Python's venv,
# docker-compose and binutils for the package tests), checks the Docker engine, builds the
# workspace image and its offline base when either is missing, runs the suite with nextest,
# after fuzzing the HTTP API from its OpenAPI document (scripts/fuzz-api.sh).
# The end-to-end tests need the real engine and fail (never skip) without it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v ssh >/dev/null && command -v scp >/dev/null && command -v sftp >/dev/null || missing+=(openssh-client)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v docker >/dev/null || missing+=(docker.io)
command -v jq >/dev/null || missing+=(jq)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v objdump >/dev/null && command -v strip >/dev/null || missing+=(binutils)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    echo "the Docker engine is not answering; trying to start it"
    as_root service docker start >/dev/null 2>&1 || as_root systemctl start docker >/dev/null 2>&1 || true
    for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null || { echo "error: no Docker engine: the end-to-end tests need one" >&2; exit 1; }
fi

cargo build --locked
# The package and serve-image tests start from the offline base, the other tests from the image.
base="sandman-base:$(. /etc/os-release && echo "$VERSION_CODENAME")"
if ! docker image inspect gpu-workspace "$base" >/dev/null 2>&1; then
    echo "building the workspace image and $base (offline: debootstrap from this host's apt mirror)"
    as_root "${CARGO_TARGET_DIR:-target}/debug/sandman" image build --offline
fi

# The API fuzzing first, so that the suite's own summary closes the output.
status=0
scripts/fuzz-api.sh || status=$?
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "$@" || status=$?
else
    cargo test --locked --no-fail-fast "$@" || status=$?
fi
exit "$status"
