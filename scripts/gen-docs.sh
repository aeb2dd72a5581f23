#!/usr/bin/env bash
# Regenerates completions/ and man/ from the command-line definition.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/sandman"
mkdir -p completions
"$bin" completions bash >completions/sandman.bash
"$bin" completions zsh >completions/_sandman
"$bin" completions fish >completions/sandman.fish
rm -rf man && "$bin" man --dir man
echo "completions/ and man/ regenerated"
