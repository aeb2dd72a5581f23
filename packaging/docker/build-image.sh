#!/usr/bin/env bash
# Builds the serve image from packaging/docker/Dockerfile, offline: FROM the base that
# `sandman image build --offline` made, with a binary built on this host.
#
#   packaging/docker/build-image.sh [--binary PATH] [--tag TAG] [--base IMAGE]
#
# Defaults: the release binary (cargo build --release --locked), sandman-serve:latest, and the
# base sandman-base:<this host's Debian release>. The context holds the binary alone, so
# nothing else of the tree is sent to the engine.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { echo "usage: $0 [--binary PATH] [--tag TAG] [--base IMAGE]" >&2; exit 2; }
binary=""
tag="sandman-serve:latest"
base="sandman-base:$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")"
while (($#)); do
    case "$1" in
        --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
        --tag) [ $# -ge 2 ] || usage; tag="$2"; shift 2 ;;
        --base) [ $# -ge 2 ] || usage; base="$2"; shift 2 ;;
        *) echo "error: unknown argument '$1'" >&2; usage ;;
    esac
done
if ! docker image inspect "$base" >/dev/null 2>&1; then
    echo "error: base image $base is missing: build it with \`sandman image build --offline\`" >&2
    exit 1
fi
if [ -z "$binary" ]; then
    cargo build --release --locked
    binary="${CARGO_TARGET_DIR:-target}/release/sandman"
fi
[ -f "$binary" ] && [ -x "$binary" ] || { echo "error: '$binary' is not an executable file" >&2; exit 2; }

context="$(mktemp -d "${TMPDIR:-/tmp}/sandman-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
install -m 0755 "$binary" "$context/sandman"
strip --strip-unneeded "$context/sandman"
docker build --quiet --build-arg "BASE=$base" -f packaging/docker/Dockerfile -t "$tag" "$context" >/dev/null
echo "$tag"
