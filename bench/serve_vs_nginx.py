#!/usr/bin/env python3
"""GET /sessions from `sandman serve` against the same JSON served as a static file by nginx.

A scratch database gets N stored sessions (rows only: a list needs no containers). `sandman
serve` (release build) answers GET /sessions with its token check, CORS headers and request
log; nginx serves the bytes serve returned, as a file. wrk loads each in turn on loopback with
the same threads, connections and duration, for several interleaved rounds. Recorded: the
median requests/s of each, their ratio, and serve's resident memory (VmRSS and the peak VmHWM
from /proc) after the runs.

Targets: serve >= 0.5x nginx's requests/s; serve's VmHWM <= 30 MiB.

The scratch server's Docker host is a socket that does not exist: its reaper would otherwise
remove the stored sessions, whose containers do not exist either. Listing never asks Docker.

Writes the section "## serve vs nginx" of bench/results.md (other sections are left alone).
Exit status: 0 both targets met, 1 a target missed, 2 the benchmark could not run.
Needs wrk and nginx (installed with apt-get when missing and running as root).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import replace_section  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "bench" / "results.md"
SECTION = "## serve vs nginx"
TARGET_RATIO = 0.5
TARGET_HWM_MIB = 30.0
TOKEN = "bench-token-0123456789abcdef0123456789"


class BenchError(Exception):
    """A setup problem that stops the benchmark (exit status 2)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise BenchError(f"`{shlex.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ensure_tools() -> None:
    missing = [p for p, cmd in (("wrk", "wrk"), ("nginx", "nginx")) if not shutil.which(cmd) and not Path(f"/usr/sbin/{cmd}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BenchError(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", *missing], env=env)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def build_sandman() -> Path:
    log("building sandman (cargo build --release --locked) ...")
    proc = subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO_ROOT, stdout=sys.stderr)
    if proc.returncode != 0:
        raise BenchError("cargo build --release failed")
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "release" / "sandman"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_database(db: Path, n: int) -> None:
    """N users and N running sessions, shaped like real ones (half with a MIG slice)."""
    now = int(time.time())
    conn = sqlite3.connect(db)
    with conn:
        for i in range(n):
            user = f"bench{i:04d}"
            conn.execute("INSERT INTO users (name, uid, host_key, created_at) VALUES (?, ?, ?, ?)",
                         (user, 30000 + i, "host-key", now))
            mig = i % 2 == 0
            conn.execute(
                """INSERT INTO sessions (id, user_name, state, ssh_port, container_id, container_ip, image,
                   gpu_uuid, mig_profile, ttl_minutes, created_at, expires_at, workspace, host_key_fingerprint)
                   VALUES (?, ?, 'running', ?, ?, ?, 'gpu-workspace', ?, ?, 60, ?, ?, ?, ?)""",
                (
                    f"{i * 2654435761 % 2**32:08x}-0000-4000-8000-{i:012x}",
                    user,
                    10000 + i,
                    os.urandom(32).hex(),
                    f"172.30.{i // 250}.{i % 250 + 2}",
                    f"MIG-{i:08x}-1111-5222-8333-{i:012x}" if mig else None,
                    "3g.71gb" if mig else None,
                    now,
                    now + 86400,
                    f"/srv/workspaces/{user}",
                    "SHA256:" + os.urandom(32).hex()[:43],
                ),
            )
    conn.close()


def get(url: str, token: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def wait_for(url: str, proc: subprocess.Popen | None, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited ({proc.returncode}) before answering")
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not answer {url} within 30 s")


def wrk(url: str, args, token: str | None) -> tuple[float, float]:
    """Requests/s and mean latency (ms) of one wrk run."""
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    out = run(argv + [url]).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if not rps or not lat:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    if non2xx:
        raise BenchError(f"{non2xx.group(1)} answers were not 2xx from {url}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[lat.group(2)]
    return float(rps.group(1)), float(lat.group(1)) * scale


def memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) for k in ("VmRSS", "VmHWM")}


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nginx_v = subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO_ROOT)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "nginx": nginx_v.split("/", 1)[-1],
        "wrk": (wrk_v.stdout + wrk_v.stderr).split()[1] if (wrk_v.stdout + wrk_v.stderr).split() else "?",
        "revision": rev.stdout.strip() or "unknown",
    }


class Servers:
    """The scratch sandman serve and nginx, and everything they need; removed by close()."""

    def __init__(self, sandman: Path, sessions: int):
        self.tmp = Path(tempfile.mkdtemp(prefix="sandman-bench-serve-"))
        self.serve: subprocess.Popen | None = None
        self.nginx_conf = self.tmp / "nginx.conf"
        self.nginx_started = False
        try:
            self._start(sandman, sessions)
        except BaseException:
            self.close()
            raise

    def _start(self, sandman: Path, sessions: int) -> None:
        tmp = self.tmp
        config = tmp / "config.toml"
        config.write_text("")
        db = tmp / "state" / "sandman.db"
        base = [str(sandman), "--config", str(config), "--db", str(db), "--workspace-root", str(tmp / "workspaces")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
        env["DOCKER_HOST"] = f"unix://{tmp}/no-docker.sock"  # see the module docstring
        run(base + ["session", "list"], env=env)  # makes the database and its schema
        fill_database(db, sessions)
        tokens = tmp / "api-tokens"
        tokens.write_text(TOKEN + "\n")
        tokens.chmod(0o600)

        self.serve_port = free_port()
        self.serve_log = open(tmp / "serve.log", "w")
        self.serve = subprocess.Popen(
            base + ["serve", "--port", str(self.serve_port), "--bind", "127.0.0.1", "--token-file", str(tokens)],
            env=env, stdout=subprocess.DEVNULL, stderr=self.serve_log,
        )
        self.serve_url = f"http://127.0.0.1:{self.serve_port}"
        wait_for(f"{self.serve_url}/healthz", self.serve, "sandman serve")
        body = get(f"{self.serve_url}/sessions", TOKEN)
        count = len(json.loads(body))
        if count != sessions:
            raise BenchError(f"GET /sessions listed {count} sessions, not {sessions}")
        self.body_bytes = len(body)

        # nginx's workers drop root: the tree must be world-readable.
        www = tmp / "www"
        www.mkdir()
        (www / "sessions").write_bytes(body)
        for p in (tmp, www):
            p.chmod(0o755)
        (www / "sessions").chmod(0o644)
        self.nginx_port = free_port()
        self.nginx_conf.write_text(f"""
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{self.nginx_port};
        root {www};
        location = /sessions {{ default_type application/json; }}
    }}
}}
""")
        run([nginx_bin(), "-c", str(self.nginx_conf), "-p", str(tmp)])
        self.nginx_started = True
        self.nginx_url = f"http://127.0.0.1:{self.nginx_port}"
        wait_for(f"{self.nginx_url}/sessions", None, "nginx")
        if get(f"{self.nginx_url}/sessions") != body:
            raise BenchError("nginx does not serve the same bytes")

    def close(self) -> None:
        if self.nginx_started:
            subprocess.run([nginx_bin(), "-c", str(self.nginx_conf), "-p", str(self.tmp), "-s", "stop"], capture_output=True)
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.serve.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def section(r: dict) -> str:
    m = r["machine"]
    s, n = r["serve"], r["nginx"]
    met = lambda ok: "met" if ok else "**not met**"
    rounds = lambda xs: ", ".join(f"{x:.0f}" for x in xs)
    return "\n".join([
        SECTION,
        "",
        f"GET /sessions with {r['sessions']:,} stored sessions ({r['body_bytes'] / 1024:.0f} KiB of JSON) on "
        "loopback: `sandman serve` (release build, default settings: 8 workers, token check, CORS headers, "
        "a log line per request) against nginx serving the same bytes as a static file (sendfile, access log "
        "on). Same wrk load on each, rounds interleaved. Targets: serve >= 0.5x nginx's requests/s; serve's "
        "peak resident memory <= 30 MiB.",
        "",
        f"- Date: {r['date']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}; nginx {m['nginx']}, wrk {m['wrk']}; "
        f"load average {r['load'][0]:.2f} before, {r['load'][1]:.2f} after (other work on the host affects both alike)",
        f"- sandman: {m['revision']}",
        f"- Load: `wrk -t{r['threads']} -c{r['connections']} -d{r['duration']}s`, {r['rounds']} rounds of each",
        f"- Command: `{r['command']}`",
        "",
        "| | requests/s (median) | each round | mean latency (median) |",
        "|---|---:|---|---:|",
        f"| `sandman serve` | {statistics.median(s['rps']):.0f} | {rounds(s['rps'])} | {statistics.median(s['latency_ms']):.1f} ms |",
        f"| nginx, static file | {statistics.median(n['rps']):.0f} | {rounds(n['rps'])} | {statistics.median(n['latency_ms']):.1f} ms |",
        "",
        f"Ratio serve / nginx (medians): **{r['ratio']:.2f}**; target >= {TARGET_RATIO} {met(r['ratio_met'])}.",
        "",
        f"serve's memory after the runs: VmRSS {r['memory']['VmRSS'] / 1024:.1f} MiB, peak VmHWM "
        f"{r['memory']['VmHWM'] / 1024:.1f} MiB; target <= {TARGET_HWM_MIB:.0f} MiB {met(r['memory_met'])}.",
        "",
    ])


def update_results(path: Path, text: str) -> None:
    replace_section(path, SECTION, text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each (default 3)")
    p.add_argument("--sandman", type=Path, help="sandman binary (default: build the release one)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--no-results", action="store_true", help="do not update the results file")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        ensure_tools()
        sandman = args.sandman.resolve() if args.sandman else build_sandman()
        load_before = os.getloadavg()[0]
        servers = Servers(sandman, args.sessions)
        try:
            log(f"serve on {servers.serve_url}, nginx on {servers.nginx_url}, {servers.body_bytes} bytes per answer")
            wrk(f"{servers.serve_url}/sessions", argparse.Namespace(threads=1, connections=4, duration=1), TOKEN)
            wrk(f"{servers.nginx_url}/sessions", argparse.Namespace(threads=1, connections=4, duration=1), None)
            results = {"serve": {"rps": [], "latency_ms": []}, "nginx": {"rps": [], "latency_ms": []}}
            for i in range(args.rounds):
                order = ["serve", "nginx"] if i % 2 == 0 else ["nginx", "serve"]
                for name in order:
                    url = f"{servers.serve_url if name == 'serve' else servers.nginx_url}/sessions"
                    rps, lat = wrk(url, args, TOKEN if name == "serve" else None)
                    results[name]["rps"].append(rps)
                    results[name]["latency_ms"].append(lat)
                    log(f"round {i + 1}/{args.rounds}: {name} {rps:.0f} requests/s, {lat:.1f} ms")
            memory = memory_kib(servers.serve.pid)
            body_bytes = servers.body_bytes
        finally:
            servers.close()
        info = machine()
    except BenchError as e:
        log(f"error: {e}")
        return 2

    ratio = statistics.median(results["serve"]["rps"]) / statistics.median(results["nginx"]["rps"])
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info,
        "load": (load_before, os.getloadavg()[0]),
        "sessions": args.sessions,
        "body_bytes": body_bytes,
        "threads": args.threads,
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "command": shlex.join(["python3", *sys.argv]),
        **results,
        "ratio": ratio,
        "ratio_met": ratio >= TARGET_RATIO,
        "memory": memory,
        "memory_met": memory["VmHWM"] / 1024 <= TARGET_HWM_MIB,
    }
    text = section(report)
    print(text)
    if not args.no_results:
        update_results(args.results, text)
        log(f"results written to {args.results}")
    return 0 if report["ratio_met"] and report["memory_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
