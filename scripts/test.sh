#!/usr/bin/env bash
# Runs every test: installs what they need (OpenSSH clients, rsync, tmux, git, debootstrap, jq,
# Python's venv, ansible-core into target/ansible-venv, docker-compose and binutils for the
# package tests), checks the Docker engine, builds the workspace image when it is missing or out
# of date (and its offline base when missing), fuzzes the HTTP API from its OpenAPI document
# (scripts/fuzz-api.sh), then runs the suite with nextest (the swarm tests last, on their own).
# The end-to-end tests need the real engine and fail (never skip) without it.
set -euo pipefail
cd "$(dirname "$0")/.."

ANSIBLE_CORE_VERSION=2.19.14

source scripts/lib.sh

# The clients the end-to-end tests drive (OpenSSH, rsync, tmux, git), debootstrap for the
# image, Python's venv for schemathesis and ansible-core, iptables for the sessions' firewall,
# iproute2 and nsenter for the second swarm node's network namespace.
install_missing ssh:openssh-client scp:openssh-client sftp:openssh-client debootstrap:debootstrap \
    docker:docker.io jq:jq rsync:rsync tmux:tmux git:git venv:python3-venv \
    docker-compose:docker-compose objdump:binutils strip:binutils iptables:iptables \
    ip:iproute2 nsenter:util-linux dockerd:docker.io

if ! docker info >/dev/null 2>&1; then
    echo "the Docker engine is not answering; trying to start it"
    as_root service docker start >/dev/null 2>&1 || as_root systemctl start docker >/dev/null 2>&1 || true
    for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null || { echo "error: no Docker engine: the end-to-end tests need one" >&2; exit 1; }
fi

cargo build --locked
ensure_workspace_image "$(target_dir)/debug/sandman"
# The package and serve-image tests start from the minimal offline base, sandman-base:<release>.
base="sandman-base:$(. /etc/os-release && echo "$VERSION_CODENAME")"
if ! docker image inspect "$base" >/dev/null 2>&1; then
    echo "building $base (the minimal flavor's offline base)"
    as_root "$(target_dir)/debug/sandman" image build --offline --flavor minimal --tag gpu-workspace-minimal
fi
# Ansible for the end-to-end client tests (tests/e2e/clients.rs), which fail without it.
venv_with "$(target_dir)/ansible-venv" ansible-core "$ANSIBLE_CORE_VERSION"

# The API fuzzing first, so that the suite's own summary closes the output.
status=0
scripts/fuzz-api.sh || status=$?
# The swarm tests put the engine in a swarm for a while; they run after the rest, one at a time
# (.config/nextest.toml), so that no other test meets an engine in swarm mode.
if [ $# -gt 0 ]; then
    cargo nextest run --locked --no-fail-fast "$@" || status=$?
elif cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast -E 'not test(/^swarm::/)' || status=$?
    cargo nextest run --locked --no-fail-fast -E 'test(/^swarm::/)' || status=$?
else
    cargo test --locked --no-fail-fast -- --skip swarm:: || status=$?
    cargo test --locked --no-fail-fast --test e2e -- --test-threads 1 swarm:: || status=$?
fi
exit "$status"
