#!/usr/bin/env bash
# Builds the Debian package: target/debian/sandman_<version>_<arch>.deb.
#
#   scripts/package-deb.sh                       # cargo build --release --locked, then package
#   scripts/package-deb.sh --binary PATH --out DIR   # package a binary built already
#   scripts/package-deb.sh --compress gzip       # faster than the default xz, for tests
#
# Holds /usr/bin/sandman, the man pages (man/), bash, zsh and fish completions (completions/),
# the systemd units (packaging/systemd; installed, never enabled), the commented
# /etc/sandman/config.toml (a conffile) and the maintainer scripts of packaging/debian, which
# create /var/lib/sandman and /srv/workspaces and never delete them. The units and the cron
# example name /usr/local/bin/sandman for source installs; the package rewrites that to
# /usr/bin/sandman. Needs dpkg-deb, objdump and strip (dpkg and binutils).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--binary PATH] [--out DIR] [--compress xz|gzip|none]" >&2; exit 2; }
binary=""
compress=xz
out="${CARGO_TARGET_DIR:-target}/debian"
while (($#)); do
    case "$1" in
        --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
        --compress)
            [ $# -ge 2 ] || usage
            case "$2" in xz | gzip | none) compress="$2" ;; *) echo "error: unknown compression '$2'" >&2; usage ;; esac
            shift 2 ;;
        *) echo "error: unknown argument '$1'" >&2; usage ;;
    esac
done
for tool in dpkg-deb objdump strip; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install dpkg binutils)" >&2; exit 1; }
done
if [ -z "$binary" ]; then
    cargo build --release --locked
    binary="${CARGO_TARGET_DIR:-target}/release/sandman"
fi
[ -f "$binary" ] && [ -x "$binary" ] || { echo "error: '$binary' is not an executable file" >&2; exit 2; }

crate_field() { sed -n "0,/^\[dependencies\]/s/^$1 = \"\(.*\)\"$/\1/p" Cargo.toml; }
version="$(crate_field version)-1"
summary="$(crate_field description)"
arch="$(dpkg --print-architecture)"

# Shared libraries the binary links: each must map to a package, so that a new one cannot slip
# into the binary without its dependency. glibc's floor is the newest symbol version used.
shlib_depends=()
for lib in $(objdump -p "$binary" | awk '$1 == "NEEDED" { print $2 }'); do
    case "$lib" in
        libc.so.6 | libm.so.6 | ld-linux*.so.*) ;;
        libgcc_s.so.1) shlib_depends+=("libgcc-s1") ;;
        *) echo "error: $binary links $lib, which this script does not map to a package" >&2; exit 1 ;;
    esac
done
glibc="$(objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
shlib_depends=("libc6 (>= $glibc)" "${shlib_depends[@]}")

stage="$(mktemp -d "${TMPDIR:-/tmp}/sandman-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/sandman"
umask 022

install -D -m 0755 "$binary" "$root/usr/bin/sandman"
strip --strip-unneeded "$root/usr/bin/sandman"

for page in man/*.1; do
    install -D -m 0644 "$page" "$root/usr/share/man/man1/$(basename "$page")"
    gzip -9n "$root/usr/share/man/man1/$(basename "$page")"
done
install -D -m 0644 completions/sandman.bash "$root/usr/share/bash-completion/completions/sandman"
install -D -m 0644 completions/_sandman "$root/usr/share/zsh/vendor-completions/_sandman"
install -D -m 0644 completions/sandman.fish "$root/usr/share/fish/vendor_completions.d/sandman.fish"

for unit in sandman.service sandman-reap.service sandman-reap.timer; do
    install -D -m 0644 "packaging/systemd/$unit" "$root/lib/systemd/system/$unit"
done
install -D -m 0644 packaging/config.toml "$root/etc/sandman/config.toml"
doc="$root/usr/share/doc/sandman"
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
install -D -m 0644 packaging/cron/sandman-reap "$doc/examples/cron.d-sandman-reap"
sed -i 's|/usr/local/bin/sandman|/usr/bin/sandman|g' "$root"/lib/systemd/system/* "$doc/examples/cron.d-sandman-reap"

install -d -m 0755 "$root/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
echo /etc/sandman/config.toml >"$root/DEBIAN/conffiles"
installed_size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
depends="$(IFS=,; echo "${shlib_depends[*]}" | sed 's/,/, /g')"
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@INSTALLED_SIZE@|$installed_size|" \
    -e "s|@SHLIB_DEPENDS@|$depends|" -e "s|@SUMMARY@|$summary|" \
    packaging/debian/control >"$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/sandman_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$deb" >/dev/null
echo "$deb"
