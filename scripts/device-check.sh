#!/usr/bin/env bash
# Read-only GPU check for a host with an NVIDIA GPU: what sandman reads through NVML, beside what
# nvidia-smi says. Changes nothing: no MIG mode toggle, no instance created or destroyed.
# Usage: scripts/device-check.sh [path/to/sandman]   (default: target/release/sandman)
set -uo pipefail
bin=${1:-target/release/sandman}
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
# A scratch database: the check must not touch a real installation's state.
run() { "$bin" --db "$state/sandman.db" --gpu-backend nvml "$@"; }

section() { printf '\n===== %s =====\n' "$*"; }
section "nvidia-smi -L";            nvidia-smi -L
section "nvidia-smi mig -lgip";     nvidia-smi mig -lgip
section "nvidia-smi mig -lgi";      nvidia-smi mig -lgi 2>&1
section "sandman gpu ls --json";    run gpu ls --json
section "sandman gpu profiles --json"; run gpu profiles --json
section "sandman gpu available --json"; run gpu available --json
section "sandman doctor (gpu rows)"; run doctor 2>&1 | grep -Ei 'gpu|mig' || true
