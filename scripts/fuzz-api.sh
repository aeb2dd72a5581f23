#!/usr/bin/env bash
# Fuzzes `sandman serve` from its own OpenAPI document (GET /openapi.json) with schemathesis:
# every operation, valid and invalid input, unsupported methods, missing auth, and stateful
# sequences (create, then get, extend, remove). Fails on any 5xx or other check failure, on a
# hang (a per-request timeout and a time limit for the run), if the server does not stop cleanly
# on SIGTERM, or if anything is left behind: after DELETE /sessions no row, no container and
# nothing for `sandman reap` to find. Its cleanup removes the scratch network's firewall rules.
#
# Runs against the real Docker engine with a scratch database, workspace root, network and a
# small port range. Installs schemathesis into a virtual environment under the cargo target
# directory (once). FUZZ_MAX_EXAMPLES (default 50) bounds the test cases per operation.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-50}"
source scripts/lib.sh
target=$(target_dir)
venv="$target/fuzz-venv"
venv_with "$venv" schemathesis "$ST_VERSION"

cargo build --locked --quiet
bin="$target/debug/sandman"

tmp=$(mktemp -d /tmp/sandman-fuzz-XXXXXX)
network="sandman-fuzz-$(basename "$tmp" | cut -d- -f3)"
printf 'network = "%s"\nssh_host = "127.0.0.1"\n' "$network" >"$tmp/config.toml"
token="fuzz-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" >"$tmp/api-tokens"
chmod 600 "$tmp/api-tokens"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Ten SSH ports above the blocks the end-to-end tests use: creates beyond that get 409.
settings=(--db "$tmp/state/sandman.db" --workspace-root "$tmp/workspaces"
    --ssh-port-start 56100 --ssh-port-end 56109)
export SANDMAN_CONFIG="$tmp/config.toml"
sandman() { "$bin" "${settings[@]}" "$@"; }
instance() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT value FROM meta WHERE key = '"'"'instance_id'"'"'").fetchone()[0])' \
        "$tmp/state/sandman.db" 2>/dev/null
}

serve_pid=""
cleanup() {
    if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -KILL "$serve_pid" 2>/dev/null || true
    fi
    sandman session rm --all --yes --quiet >/dev/null 2>&1 || true
    id=$(instance || true)
    if [ -n "$id" ]; then
        docker ps -aq --filter "label=sandman.instance=$id" | xargs -r docker rm -f >/dev/null 2>&1 || true
    fi
    # The firewall rules the creates installed for the scratch network, then the network.
    sandman firewall remove >/dev/null 2>&1 || true
    docker network rm "$network" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# The binary itself in the background (not the function), so that $! is its pid.
"$bin" "${settings[@]}" serve --port "$port" --bind 127.0.0.1 --token-file "$tmp/api-tokens" \
    >/dev/null 2>"$tmp/serve.log" &
serve_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$base/healthz" 2>/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$tmp/serve.log"; echo "error: sandman serve exited" >&2; exit 1; }
    sleep 0.2
done

echo "fuzzing $base with schemathesis $ST_VERSION, at most $MAX_EXAMPLES cases per operation"
# positive_data_acceptance is left out: the document cannot express the value rules the service
# applies (reserved user names, images present on this host, GPUs present, one session per
# user, free ports), so schema-valid requests are rightly refused with 400 or 409.
status=0
# Run from the scratch directory: schemathesis keeps a .schemathesis/ directory where it runs.
(cd "$tmp" && timeout 900 "$venv/bin/st" run "$base/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --max-examples "$MAX_EXAMPLES" \
    --request-timeout 90 \
    --workers 2 \
    --seed "${FUZZ_SEED:-$RANDOM}" \
    --no-color) || status=$?
if [ "$status" = 124 ]; then
    echo "error: schemathesis did not finish within 15 minutes (a hang?)" >&2
fi

# Still answering, then nothing left behind once the sessions are removed.
leftover=""
api() { python3 - "$@" <<'PY'
import json, sys, urllib.request
method, url, token = sys.argv[1:4]
req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
with urllib.request.urlopen(req, timeout=120) as r:
    print(r.status, r.read().decode())
PY
}
api DELETE "$base/sessions" "$token" >/dev/null || leftover="DELETE /sessions failed"
rows=$(api GET "$base/sessions" "$token" | cut -d' ' -f2-)
[ "$rows" = "[]" ] || leftover="$leftover; sessions left: $rows"
kill -TERM "$serve_pid"
if ! wait "$serve_pid"; then
    leftover="$leftover; sandman serve did not exit 0 on SIGTERM"
fi
serve_pid=""
report=$(sandman reap --dry-run --json)
echo "$report" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(sum(len(r[k]) for k in ("expired","abandoned","vanished","orphans")))' ||
    leftover="$leftover; left for the reaper: $report"
containers=$(docker ps -aq --filter "label=sandman.instance=$(instance)")
[ -z "$containers" ] || leftover="$leftover; containers left: $containers"
if grep -E "panicked|internal error" "$tmp/serve.log"; then
    leftover="$leftover; the server log shows a panic or an internal error"
fi

echo "answers by status during the run:"
grep -o 'status=[0-9]*' "$tmp/serve.log" | sort | uniq -c | sed 's/^/  /'

if [ -n "$leftover" ]; then
    echo "error: ${leftover#; }" >&2
    exit 1
fi
if [ "$status" != 0 ]; then
    echo "error: schemathesis found problems (exit $status); server log: see above" >&2
    tail -n 40 "$tmp/serve.log" >&2
    exit 1
fi
echo "fuzzing passed: no failures, nothing left behind"
