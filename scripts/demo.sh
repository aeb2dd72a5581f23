#!/usr/bin/env bash
# The main job, end to end: install what a fresh Debian host lacks, build sandman, build the
# workspace image (again when its definition changed), start a session for the user `demo`,
# prove the login works, and print the ssh command. Run as root on a Docker host.
set -euo pipefail
cd "$(dirname "$0")/.."

user=${SANDMAN_DEMO_USER:-demo}
dir=${SANDMAN_DEMO_DIR:-$PWD/.demo}
key="$dir/$user.key"

source scripts/lib.sh
# What a fresh Debian host with Docker lacks: debootstrap for the image, the ssh client for the
# login check, python3 to read sandman's JSON, iptables for the sessions' firewall rules.
install_missing debootstrap:debootstrap ssh:openssh-client python3:python3 iptables:iptables

cargo build --release --locked
bin=$(target_dir)/release/sandman
install -d -m 0700 "$dir"

# --offline needs no registry: the base is debootstrapped from this host's apt mirror.
ensure_workspace_image "$bin"

# One session per user: end an earlier demo session first (its workspace is kept).
old=$("$bin" session list --json | python3 -c "import json,sys; print(' '.join(s['id'] for s in json.load(sys.stdin) if s['user_id']=='$user'))")
[ -z "$old" ] || "$bin" session rm --yes $old
rm -f "$key"

# Users connect to this host by name; fall back to loopback where the name does not resolve.
host=${SANDMAN_SSH_HOST:-$(hostname)}
getent hosts "$host" >/dev/null || host=127.0.0.1
SANDMAN_SSH_HOST=$host "$bin" session create --user "$user" --key-file "$key" --json >"$dir/session.json"
port=$(python3 -c "import json; print(json.load(open('$dir/session.json'))['ssh_port'])")
python3 -c "import json; print(json.load(open('$dir/session.json'))['known_hosts'])" >"$dir/known_hosts"

ssh_opts=(-i "$key" -p "$port" -o UserKnownHostsFile="$dir/known_hosts" -o StrictHostKeyChecking=yes)
echo
echo "Logged in once to check: $(ssh "${ssh_opts[@]}" -o BatchMode=yes "$user@$host" 'echo "$(whoami) on $(hostname), home $HOME"')"
echo
echo "Session ready. Log in with:"
echo "  ssh ${ssh_opts[*]} $user@$host"
