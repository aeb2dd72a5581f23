#!/usr/bin/env bash
# The test to run on a GPU host, as root: does sandman see MIG the way nvidia-smi does?
#
#   scripts/device-check.sh [--sandman PATH] [--no-session] [--create-destroy]
#
# 1. Compares sandman's view (`gpu profiles --json`, `gpu ls --json`) with `nvidia-smi mig -lgip`
#    (profile names, ids, instance counts), `-lgipp` (placements), `-lgi` (GPU instances: id,
#    profile, placement) and `-lci` (compute instances, each a MIG device in sandman).
# 2. Unless --no-session: starts a session on the first MIG device (or whole GPU) and checks that
#    `nvidia-smi -L` inside its container shows exactly that device, then removes the session.
# 3. With --create-destroy (opt-in; needs exactly one GPU in MIG mode and no GPU instances on it):
#    with mig_mode = dynamic, creates sessions of each profile until every placement sandman can
#    use is taken, checking `nvidia-smi mig -lgi` after each, then removes them one by one,
#    checking that each instance is gone.
#
# It uses a scratch database and workspace root, never the installation's. Exit status: 0 when
# everything matches, 1 on any mismatch, 2 when it cannot run. The summary at the end is meant to
# be pasted into an issue.
set -uo pipefail

bin=target/release/sandman
session=1
create_destroy=0
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --sandman) bin=${2:?--sandman needs a path}; shift ;;
        --no-session) session=0 ;;
        --create-destroy) create_destroy=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "device-check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

die() { echo "device-check: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root: NVML shows GPU instances and placements only to root"
for tool in jq nvidia-smi "$bin"; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

state=$(mktemp -d)
sessions=()
cleanup() {
    for id in "${sessions[@]}"; do sm session rm "$id" --yes >/dev/null 2>&1; done
    rm -rf "$state"
}
trap cleanup EXIT
sm() { "$bin" --db "$state/sandman.db" --workspace-root "$state/workspaces" --gpu-backend nvml "$@"; }

summary=()
failures=0
ok() { summary+=("ok    $*"); }
bad() { summary+=("FAIL  $*"); failures=$((failures + 1)); }

# Each parser turns one nvidia-smi listing into sorted lines comparable with sandman's.
# -lgip: "name id max_instances"
parse_lgip() {
    awk '/^\|[[:space:]]+[0-9]+[[:space:]]+MIG[[:space:]]/ {
        gsub(/\|/, " "); split($5, t, "/"); print $3, $4, t[2] }' | sort -u
}
# -lgipp: "id start:size", one line per placement
parse_lgipp() {
    awk '/Profile ID/ {
        id = $5; s = $0; sub(/.*\{/, "", s); split(s, a, "\\}:"); n = split(a[1], st, ",")
        for (i = 1; i <= n; i++) print id, st[i] ":" a[2] + 0 }' | sort -u
}
# -lgi: "gpu gi name start:size"
parse_lgi() {
    awk '/^\|[[:space:]]+[0-9]+[[:space:]]+MIG[[:space:]]/ { gsub(/\|/, " "); print $1, $5, $3, $6 }' | sort -u
}
# -lci: "gpu gi ci name"
parse_lci() {
    awk '/^\|[[:space:]]+[0-9]+[[:space:]]+[0-9]+[[:space:]]+MIG[[:space:]]/ { gsub(/\|/, " "); print $1, $2, $6, $4 }' | sort -u
}

sandman_profiles() { jq -r '.profiles[] | "\(.name) \(.profile_id) \(.max_instances)"' | sort -u; }
sandman_placements() { jq -r '.profiles[] | .profile_id as $id | .placements[] | "\($id) \(.[0]):\(.[1])"' | sort -u; }
# GPU instances of sandman's MIG devices; a split one's devices are named "1c.3g.20gb".
sandman_gis() {
    jq -r '.gpus | to_entries[] | .key as $g | .value.mig_instances[]
        | "\($g) \(.gpu_instance_id) \(.profile | sub("^[0-9]+c\\."; "")) \(.placement_start):\(.memory_slices)"' | sort -u
}
sandman_cis() {
    jq -r '.gpus | to_entries[] | .key as $g | .value.mig_instances[]
        | "\($g) \(.gpu_instance_id) \(.compute_instance_id) \(.profile)"' | sort -u
}

# compare WHAT NVIDIA-SMI-LINES SANDMAN-LINES
compare() {
    local what=$1 theirs=$2 ours=$3
    if [ "$theirs" = "$ours" ]; then
        ok "$what: $(printf '%s' "$theirs" | grep -c . || true) line(s) match"
    else
        bad "$what differs (< nvidia-smi, > sandman):"
        while IFS= read -r line; do summary+=("        $line"); done \
            < <(diff <(printf '%s\n' "$theirs") <(printf '%s\n' "$ours") | grep '^[<>]')
    fi
}

smi() { nvidia-smi "$@" 2>&1; }
check_views() {
    local gpus profiles lci
    gpus=$(sm gpu ls --json) || { bad "sandman gpu ls failed: $gpus"; return; }
    profiles=$(sm gpu profiles --json) || { bad "sandman gpu profiles failed: $profiles"; return; }
    compare "profiles (name, id, instances)" "$(smi mig -lgip | parse_lgip)" "$(sandman_profiles <<<"$profiles")"
    compare "placements (profile id, start:size)" "$(smi mig -lgipp | parse_lgipp)" "$(sandman_placements <<<"$profiles")"
    lci=$(smi mig -lci | parse_lci)
    compare "compute instances (gpu, gi, ci, name)" "$lci" "$(sandman_cis <<<"$gpus")"
    # sandman lists MIG devices, which exist only for GPU instances with a compute instance.
    local with_ci lgi
    with_ci=$(awk '{ print $1 " " $2 }' <<<"$lci" | sort -u)
    lgi=$(smi mig -lgi | parse_lgi)
    compare "GPU instances with a compute instance (gpu, gi, name, start:size)" \
        "$(awk 'NR == FNR { keep[$0] = 1; next } ($1 " " $2) in keep' <(printf '%s\n' "$with_ci") <(printf '%s\n' "$lgi"))" \
        "$(sandman_gis <<<"$gpus")"
    local bare
    bare=$(awk 'NR == FNR { keep[$0] = 1; next } NF && !(($1 " " $2) in keep)' <(printf '%s\n' "$with_ci") <(printf '%s\n' "$lgi"))
    [ -z "$bare" ] || ok "GPU instances without compute instance (no MIG device; sandman keeps their slices free of new ones): $(tr '\n' ';' <<<"$bare")"
}

# Starts a session on DEVICE for USER (extra create flags after), prints its JSON.
start_session() {
    local user=$1
    shift
    sm session create --user "$user" --key-file "$state/$user.key" --json "$@"
}

check_session() {
    local device created id cid inside
    device=$(sm gpu ls --json | jq -r 'first(.gpus[] | if .mig_enabled then .mig_instances[0].uuid // empty else .uuid end) // empty')
    [ -n "$device" ] || { bad "session: no MIG device or GPU to give a session"; return; }
    created=$(start_session devcheck --gpu "$device") || { bad "session on $device: create failed: $created"; return; }
    id=$(jq -r .id <<<"$created")
    cid=$(jq -r .container_id <<<"$created")
    sessions+=("$id")
    inside=$(docker exec "$cid" nvidia-smi -L 2>&1)
    local uuids
    uuids=$(grep -o 'UUID: [^)]*' <<<"$inside" | sed 's/UUID: //')
    if [[ $device == MIG-* ]]; then
        uuids=$(grep '^MIG-' <<<"$uuids")
    fi
    if [ "$uuids" = "$device" ]; then
        ok "session container sees exactly $device"
    else
        bad "session container given $device sees: $(tr '\n' ' ' <<<"$inside")"
    fi
    sm session rm "$id" --yes >/dev/null && sessions=()
}

check_create_destroy() {
    local mig_gpus
    mig_gpus=$(sm gpu ls --json | jq '[.gpus[] | select(.mig_enabled)] | length')
    [ "$mig_gpus" = 1 ] || { bad "create/destroy: needs exactly one GPU in MIG mode (found $mig_gpus)"; return; }
    [ -z "$(smi mig -lgi | parse_lgi)" ] || { bad "create/destroy: the MIG GPU must hold no GPU instance"; return; }
    export SANDMAN_MIG_MODE=dynamic
    local profiles name slots n created id gi start size made
    profiles=$(sm gpu profiles --json)
    while read -r name slots; do
        made=()
        for ((n = 0; n < slots; n++)); do
            created=$(start_session "devcheck$n" --profile "$name") || { bad "create $name #$((n + 1)) failed: $created"; break; }
            id=$(jq -r .id <<<"$created")
            sessions+=("$id")
            made+=("$id")
            read -r gi start size < <(sm gpu ls --json | jq -r --arg u "$(jq -r .gpu_uuid <<<"$created")" \
                '.gpus[].mig_instances[] | select(.uuid == $u) | "\(.gpu_instance_id) \(.placement_start) \(.memory_slices)"')
            if smi mig -lgi | parse_lgi | awk -v gi="${gi:-x}" -v name="$name" -v at="${start:-x}:${size:-x}" \
                '$2 == gi && $3 == name && $4 == at { found = 1 } END { exit !found }'; then
                ok "created $name at $start:$size (GPU instance $gi)"
            else
                bad "created $name: sandman reports GPU instance ${gi:-?} at ${start:-?}:${size:-?}, nvidia-smi -lgi does not"
            fi
        done
        if created=$(start_session devcheck-extra --profile "$name" 2>&1); then
            sessions+=("$(jq -r .id <<<"$created")")
            bad "$name: a create beyond $slots placement(s) succeeded"
        else
            ok "$name: full after $slots, as expected"
        fi
        for id in "${made[@]}"; do
            sm session rm "$id" --yes >/dev/null || bad "removing session $id failed"
        done
        sessions=()
        if [ -z "$(smi mig -lgi | parse_lgi)" ]; then
            ok "$name: every instance destroyed"
        else
            bad "$name: instances left after removal: $(smi mig -lgi | parse_lgi | tr '\n' ';')"
            return
        fi
    done < <(jq -r '.profiles[] | "\(.name) \([.max_instances, (.placements | length)] | min)"' <<<"$profiles")
}

check_views
[ "$session" = 0 ] || check_session
[ "$create_destroy" = 0 ] || check_create_destroy

printf '\n### sandman device check\n\n```text\n'
printf '%s\n' "$(nvidia-smi --query-gpu=name,driver_version,mig.mode.current --format=csv,noheader 2>&1)"
printf '%s\n' "$("$bin" --version 2>&1)"
printf '%s\n' "${summary[@]}"
printf '%s\n' "$([ "$failures" = 0 ] && echo "all checks passed" || echo "$failures check(s) failed")"
printf '```\n'
[ "$failures" = 0 ]
