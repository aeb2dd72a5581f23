#!/usr/bin/env python3
"""Offline workspace image builds: time and size of each flavor.

For each flavor (full, minimal) `sandman image build --offline --rebuild-base` is timed from a
cold start (debootstrap of the flavor's packages from the host's apt mirror, import, then the
Dockerfile); then with the base kept and one input changed (a site CA, tests/e2e/fixtures/
site-ca.pem: the Dockerfile's last layer is rebuilt, as after most Dockerfile changes); then
with nothing changed (Docker's build cache answers). Recorded: the three times and the image's
size as `docker image inspect` reports it. Images are built under scratch tags (`sandman-bench-image-FLAVOR`), removed at the
end; the flavors' offline bases (`sandman-base:SUITE-HASH`) are kept, as a build keeps them.

Writes the section "## image build" of bench/results.md (other sections are left alone).
Exit status: 0 done, 2 a build failed. Needs root (debootstrap), Docker and cargo.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import replace_section  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "bench" / "results.md"
SECTION = "## image build"
FLAVORS = ("full", "minimal")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


SITE_CA = REPO_ROOT / "tests" / "e2e" / "fixtures" / "site-ca.pem"


def timed_build(sandman: str, flavor: str, tag: str, *extra: str) -> float:
    argv = [sandman, "image", "build", "--offline", "--quiet", "--flavor", flavor, "--tag", tag, *extra]
    log(f"$ {shlex.join(argv)}")
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"build failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def image_size(tag: str) -> int:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sandman", help="binary to use instead of building target/release/sandman")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args()

    sandman = args.sandman
    if not sandman:
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO_ROOT, check=True)
        sandman = str(REPO_ROOT / "target" / "release" / "sandman")
    load_before = os.getloadavg()[0]
    rows = []
    try:
        for flavor in FLAVORS:
            tag = f"sandman-bench-image-{flavor}"
            cold = timed_build(sandman, flavor, tag, "--rebuild-base")
            size = image_size(tag)
            changed = timed_build(sandman, flavor, tag, "--ca-cert", str(SITE_CA))
            unchanged = timed_build(sandman, flavor, tag, "--ca-cert", str(SITE_CA))
            rows.append((flavor, cold, changed, unchanged, size))
            log(f"{flavor}: cold {cold:.0f} s, last layer {changed:.0f} s, unchanged {unchanged:.0f} s, {size / 1e6:.0f} MB")
    finally:
        for flavor in FLAVORS:
            subprocess.run(["docker", "rmi", "-f", f"sandman-bench-image-{flavor}"], capture_output=True)
    load_after = os.getloadavg()[0]

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    suite = next(
        (l.split("=", 1)[1].strip('"') for l in Path("/etc/os-release").read_text().splitlines() if l.startswith("VERSION_CODENAME=")),
        "?",
    )
    lines = [
        SECTION,
        "",
        "`sandman image build --offline` per flavor (bench/image_build.py): a cold build (`--rebuild-base`: debootstrap "
        "of the flavor's packages from the host's apt mirror, import, the Dockerfile); the base kept and a site CA "
        "added (the Dockerfile's last layer rebuilt, as after most changes to it); nothing changed (Docker's build "
        "cache). Size as `docker image inspect` reports it, without a site CA.",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} CPUs, Linux {platform.release()}, Debian {suite}; load average "
        f"{load_before:.2f} before, {load_after:.2f} after (other builds on the host slow both alike)",
        f"- sandman: {commit}",
        "- Command: `python3 bench/image_build.py`",
        "",
        "| flavor | packages asked for | cold build | last layer rebuilt | nothing changed | image size |",
        "|---|---|---:|---:|---:|---:|",
    ]
    counts = {"full": "26 (sshd, CA store, images/toolset.txt)", "minimal": "2 (openssh-server, ca-certificates)"}
    for flavor, cold, changed, unchanged, size in rows:
        lines.append(
            f"| {flavor} | {counts[flavor]} | {cold:.0f} s | {changed:.0f} s | {unchanged:.0f} s | {size / 1e6:.0f} MB |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_results:
        replace_section(args.results, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
