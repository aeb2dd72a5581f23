# Shell helpers shared by the scripts (sourced, not run): root, host packages, Python tools in
# virtual environments under the cargo target directory, the workspace image.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# install_missing COMMAND:PACKAGE...: installs with apt-get the package of each command that is
# not found (also looked for in /usr/sbin, where debootstrap lives). The command `venv` stands
# for Python's venv module, which is no command.
install_missing() {
    local pair missing=()
    for pair in "$@"; do
        case "${pair%%:*}" in
            venv) python3 -c 'import venv, ensurepip' 2>/dev/null ;;
            *) command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] ;;
        esac || missing+=("${pair#*:}")
    done
    ((${#missing[@]})) || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The cargo target directory, as an absolute path.
target_dir() {
    local target="${CARGO_TARGET_DIR:-target}"
    case "$target" in /*) echo "$target" ;; *) echo "$PWD/$target" ;; esac
}

# venv_with DIR PACKAGE VERSION: a virtual environment at DIR holding PACKAGE==VERSION from
# PyPI, made (or remade) only when it does not hold that version already.
venv_with() {
    local dir=$1 package=$2 version=$3 have
    have=$("$dir/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$package" 2>/dev/null || true)
    [ "$have" = "$version" ] && return 0
    echo "installing $package $version into $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$package==$version"
}

# ensure_workspace_image SANDMAN: builds gpu-workspace offline unless the image already carries
# the digest of today's Dockerfile and build inputs (its sandman.image.digest label), so that a
# changed image definition is never tested or used through an old image.
ensure_workspace_image() {
    local bin=$1 want have
    want=$("$bin" image build --offline --print-digest)
    have=$(docker image inspect -f '{{index .Config.Labels "sandman.image.digest"}}' gpu-workspace 2>/dev/null || true)
    if [ "$want" = "$have" ]; then
        return 0
    fi
    if [ -z "$have" ]; then
        echo "building the workspace image (offline: debootstrap from this host's apt mirror)"
    else
        echo "rebuilding the workspace image: its build inputs changed (${have:-no digest} -> $want)"
    fi
    as_root "$bin" image build --offline
}
