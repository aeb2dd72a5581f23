#!/usr/bin/env python3
"""Time `sandman --engine swarm session create` against a raw `docker service create` of the
same hardened container, on a single-node swarm on loopback.

A: `sandman --engine swarm session create --user uN --json`, from process start until it
   returns. sandman returns only once the session's sshd sends its "SSH-" banner on the port
   published (in host mode) on the node running the task.
B: `docker service create -d` of the same image (by its id, as sandman names it) with a
   comparable hardened spec (a user, every capability dropped, an init process, the same
   memory, CPU, pids, /dev/shm and log limits, the port published in host mode, restart
   condition none, the same swarm network), running sshd, from the start of the command until
   the same banner is readable on its published port.

Runs are interleaved (A, B, A, B, ...) so that drift on the host affects both alike. The figure
of merit is median(A) / median(B); the target is at most 1.15 (as for one host).

The swarm: when the engine is in none, the benchmark makes a single-node swarm on loopback and
leaves it at the end (and removes `docker_gwbridge` when its init made it); an engine already in
a swarm is used as it is and kept. It holds the lock file the swarm tests hold
(/tmp/sandman-swarm-test.lock), so it never inits or leaves a swarm under a test.

Everything else the benchmark makes (state directory, workspaces, sessions, services, configs,
secrets, networks, firewall rules) is private to one run and removed at the end, also when a run
fails or is interrupted.

Exit status: 0 target met, 1 target missed, 2 the benchmark could not run.
Python 3.11 standard library only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import http.client
import json
import os
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
import urllib.parse
from pathlib import Path

# The sibling modules are imported from source; no __pycache__ is left in the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from create_vs_docker_run import (  # noqa: E402
    BASELINE_SSHD,
    BASELINE_UID,
    BASELINE_USER,
    CONTAINER_SSH_PORT,
    IMAGE,
    REPO_ROOT,
    BenchError,
    Sample,
    log,
    machine_info,
    median_phases,
    ms,
    phases_from_marks,
    port_is_free,
    ready_sandman,
    run_cmd,
    run_create,
    summary,
    wait_for_banner,
)
from results_file import replace_section  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "bench" / "results.md"
TARGET_RATIO = 1.15
SWARM_LOCK = "/tmp/sandman-swarm-test.lock"
# The limits both sides get: written into the benchmark's config file for sandman, given as
# flags to the baseline.
MEMORY = "2g"
CPUS = "1"
SHM_SIZE = "1g"
SHM_BYTES = 1 << 30
PIDS = 1024
LOG_SIZE = "10m"
LOG_FILES = 3
# How long a removed service's task may take to stop and free its port (not timed).
STOP_WAIT_S = 30.0
# The baseline polls its task's state, then the banner, every 10 ms (see time_service_create).
POLL_INTERVAL_S = 0.010
READY_TIMEOUT_S = 60.0

SECTION = "## swarm create vs docker service create"
INTRO = """\
How long `sandman --engine swarm session create` takes on a single-node swarm on loopback,
compared with a raw `docker service create -d` of the same image with a comparable hardened
spec, timed until its sshd answers on the port published in host mode. Target (as for one
host): median(create) / median(service create) <= 1.15.
"""


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to the Docker engine's socket (standard library only)."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise BenchError(f"DOCKER_HOST={host}: the baseline reads task states over a unix socket only")
    return host[len("unix://"):]


def wait_for_task_running(service: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Asks the engine for the service's tasks every 10 ms (one HTTP request on its socket,
    as sandman does every 100 ms) until one runs; a task that ended is an error."""
    conn = UnixHTTPConnection(engine_socket())
    query = urllib.parse.quote(json.dumps({"service": [service]}))
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline:
            conn.request("GET", f"/tasks?filters={query}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise BenchError(f"GET /tasks: {resp.status} {body[:200]!r}")
            states = [((t.get("Status") or {}).get("State"), (t.get("Status") or {}).get("Err")) for t in json.loads(body)]
            if any(state == "running" for state, _ in states):
                return
            ended = [f"{state}: {err}" for state, err in states
                     if state in ("failed", "rejected", "shutdown", "complete", "orphaned", "remove")]
            if ended:
                raise BenchError(f"the baseline's task ended: {'; '.join(ended)}")
            time.sleep(POLL_INTERVAL_S)
    finally:
        conn.close()
    raise BenchError(f"the task of {service} did not run within {timeout:.0f}s")


def docker_try(*args: str) -> str | None:
    proc = run_cmd(["docker", *args], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


class Swarm:
    """A single-node swarm for the benchmark: holds the swarm tests' lock; makes the swarm only
    when the engine is in none, and then leaves it (and its docker_gwbridge) at the end."""

    def __init__(self):
        self.lock = open(SWARM_LOCK, "a")  # noqa: SIM115 - held until leave()
        log(f"waiting for {SWARM_LOCK} ...")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.created = False
        self.gwbridge_made = False
        try:
            state = run_cmd(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.strip()
            if state == "inactive":
                self.gwbridge_made = docker_try("network", "inspect", "docker_gwbridge") is None
                log("making a single-node swarm on 127.0.0.1")
                run_cmd(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1",
                         "--listen-addr", "127.0.0.1:2377"])
                self.created = True
            elif state != "active":
                raise BenchError(f"the engine's swarm state is {state!r}; neither inactive nor active")
            manager = run_cmd(["docker", "info", "--format", "{{.Swarm.ControlAvailable}}"]).stdout.strip()
            if manager != "true":
                raise BenchError("this engine is a swarm worker; run the benchmark on a manager")
        except BaseException:
            self.leave()
            raise

    def leave(self) -> None:
        try:
            if self.created:
                log("leaving the swarm this benchmark made")
                run_cmd(["docker", "swarm", "leave", "--force"], check=False)
                if self.gwbridge_made:
                    # Its endpoints go with the swarm a moment later: retry a little.
                    for _ in range(20):
                        if docker_try("network", "inspect", "docker_gwbridge") is None:
                            break
                        if docker_try("network", "rm", "docker_gwbridge") is not None:
                            break
                        time.sleep(0.5)
                    else:
                        log("warning: cleanup: docker_gwbridge could not be removed")
                self.created = False
        finally:
            if not self.lock.closed:
                fcntl.flock(self.lock, fcntl.LOCK_UN)
                self.lock.close()


class Bench:
    def __init__(self, sandman: Path, ports: tuple[int, int]):
        self.sandman = sandman
        self.pid = os.getpid()
        # A swarm-scoped network; sandman also makes its configuration network `<name>-local`.
        self.network = f"sandman-bench-swarm-{self.pid}"
        self.label = f"sandman-bench={self.pid}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"sandman-bench-swarm-{self.pid}-"))
        start, end = ports
        mid = (start + end) // 2
        self.sandman_ports = (start, mid)
        self.baseline_ports = (mid + 1, end)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
        self.env["SANDMAN_NETWORK"] = self.network
        self.env["SANDMAN_SSH_HOST"] = "127.0.0.1"
        # Our settings only (not /etc/sandman/config.toml), with fixed limits the baseline copies.
        (self.tmp / "config.toml").write_text(
            f"pids_limit = {PIDS}\n\n[limits]\n"
            f'memory = "{MEMORY}"\ncpus = {CPUS}\nshm_size = "{SHM_SIZE}"\n'
            f'log_size = "{LOG_SIZE}"\nlog_files = {LOG_FILES}\n'
        )
        self.image_id = run_cmd(["docker", "image", "inspect", IMAGE, "--format", "{{.Id}}"]).stdout.strip()
        self.baseline_services: list[str] = []

    def sandman_argv(self, *args: str) -> list[str]:
        return [
            str(self.sandman),
            "--config", str(self.tmp / "config.toml"),
            "--engine", "swarm",
            "--db", str(self.tmp / "state" / "sandman.db"),
            "--workspace-root", str(self.tmp / "workspaces"),
            "--ssh-port-start", str(self.sandman_ports[0]),
            "--ssh-port-end", str(self.sandman_ports[1]),
            *args,
        ]

    def instance_id(self) -> str | None:
        db = self.tmp / "state" / "sandman.db"
        if not db.exists():
            return None
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()
            return row[0] if row else None
        except sqlite3.Error:
            return None

    # -- A: sandman ---------------------------------------------------------------------------

    def time_sandman_create(self, user: str) -> Sample:
        argv = self.sandman_argv("session", "create", "--user", user, "--json")
        start, end, marks, answer = run_create(argv, self.env, f"sandman --engine swarm session create --user {user}")
        run_cmd(self.sandman_argv("session", "rm", answer["session_id"], "--yes", "--json"), env=self.env)
        return Sample(end - start, phases_from_marks(start, end, marks, user))

    # -- B: docker service create -------------------------------------------------------------

    def time_service_create(self, tag: str) -> Sample:
        port = self._free_baseline_port()
        home = self.tmp / "baseline-homes" / tag
        home.mkdir(parents=True, mode=0o700)
        if os.geteuid() == 0:
            os.chown(home, BASELINE_UID, BASELINE_UID)
        else:
            home.chmod(0o777)
        name = f"sandman-bench-{self.pid}-svc-{tag}"
        argv = baseline_service_argv(name, self.label, self.network, port, home, self.image_id)
        self.baseline_services.append(name)
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        returned = time.perf_counter()
        try:
            if proc.returncode != 0:
                raise BenchError(f"docker service create failed: {proc.stderr.strip()}")
            # The task first: `--detach` returns before its container exists, and a probe of the
            # published port before then makes the host ask for the container's address on the
            # bridge too early; the neighbour entry stays incomplete until the kernel asks again
            # a second later, so every probe in between hangs (sandman waits the same way).
            wait_for_task_running(name)
            running = time.perf_counter()
            try:
                wait_for_banner(port)
            except BenchError as e:
                tasks = docker_try("service", "ps", "--no-trunc", "--format", "{{.CurrentState}} {{.Error}}", name)
                raise BenchError(f"baseline: {e}; task: {tasks}") from None
            end = time.perf_counter()
        finally:
            self._remove_service(name)
        return Sample(end - start, [("docker service create -d returns", returned - start),
                                    ("until the task runs", running - returned),
                                    ("until banner", end - running)])

    def _remove_service(self, name: str) -> None:
        """Removes a baseline service and waits until its task's container is gone (its port
        free), as sandman's removal does."""
        run_cmd(["docker", "service", "rm", name], check=False)
        deadline = time.perf_counter() + STOP_WAIT_S
        while time.perf_counter() < deadline:
            left = run_cmd(["docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}"],
                           check=False).stdout.split()
            if not left:
                break
            time.sleep(0.2)
        else:
            log(f"warning: the task of {name} has not stopped within {STOP_WAIT_S:.0f}s")

    def _free_baseline_port(self) -> int:
        for port in range(self.baseline_ports[0], self.baseline_ports[1] + 1):
            if port_is_free(port):
                return port
        raise BenchError(f"no free port in {self.baseline_ports[0]}-{self.baseline_ports[1]}")

    # -- cleanup ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Best effort, every step tried even when an earlier one fails; the swarm stays (the
        caller leaves it, if it made it)."""
        instance = self.instance_id()

        def sandman(*args):
            return lambda: run_cmd(self.sandman_argv(*args), env=self.env)

        steps = [
            ("remove sessions", sandman("session", "rm", "--all", "--yes")),
            ("reap", sandman("reap", "--quiet")),
            ("remove services", lambda: self._remove_labelled("service", instance)),
            ("remove configs", lambda: self._remove_labelled("config", instance)),
            ("remove secrets", lambda: self._remove_labelled("secret", instance)),
            ("remove firewall rules", sandman("firewall", "remove", "--quiet")),
            ("remove networks", self._remove_networks),
            ("remove temporary files", lambda: shutil.rmtree(self.tmp)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                log(f"warning: cleanup: {what}: {e}")

    def _remove_labelled(self, kind: str, instance: str | None) -> None:
        """Services, configs or secrets of this run: the baseline's by label, sandman's by its
        instance label."""
        labels = [self.label] + ([f"sandman.instance={instance}"] if instance else [])
        for label in labels:
            listed = run_cmd(["docker", kind, "ls", "-q", "--filter", f"label={label}"], check=False)
            ids = listed.stdout.split()
            if kind == "service":
                for name in ids:
                    self._remove_service(name)
            elif ids:
                run_cmd(["docker", kind, "rm", *ids])

    def _remove_networks(self) -> None:
        # The swarm network once its tasks' containers are gone, then its configuration network.
        deadline = time.perf_counter() + 20
        for net in (self.network, f"{self.network}-local"):
            while docker_try("network", "inspect", net) is not None:
                if docker_try("network", "rm", net) is not None:
                    break
                if time.perf_counter() > deadline:
                    raise BenchError(f"network {net} could not be removed")
                time.sleep(0.25)


def baseline_service_argv(name: str, label: str, network: str, port: int, home: Path, image_id: str) -> list[str]:
    """A hardened service like sandman's (see src/engine/swarm.rs), keyed at start instead of
    taking its files as configs and a secret."""
    user_home = f"/home/{BASELINE_USER}"
    bind = f"type=bind,source={home},target={user_home}"
    return [
        "docker", "service", "create", "--detach",
        # Named by its id, as sandman names it: no registry is asked (none is reachable here).
        "--no-resolve-image",
        "--name", name,
        "--label", label,
        "--container-label", label,
        "--hostname", "sandman-bench",
        "--user", f"{BASELINE_UID}:{BASELINE_UID}",
        "--cap-drop", "ALL",
        "--init",
        "--limit-memory", MEMORY,
        "--limit-cpu", CPUS,
        "--limit-pids", str(PIDS),
        "--mount", f"type=tmpfs,target=/dev/shm,tmpfs-size={SHM_BYTES},tmpfs-mode=1777",
        "--mount", bind,
        "--mount", f"type=bind,source={home},target=/workspace",
        "--workdir", user_home,
        "--env", f"USER={BASELINE_USER}",
        "--env", f"HOME={user_home}",
        "--env", "LANG=C.UTF-8",
        "--env", "NVIDIA_VISIBLE_DEVICES=void",
        "--log-driver", "json-file",
        "--log-opt", f"max-size={LOG_SIZE}",
        "--log-opt", f"max-file={LOG_FILES}",
        "--stop-grace-period", "1s",
        "--restart-condition", "none",
        "--replicas", "1",
        "--network", network,
        "--publish", f"published={port},target={CONTAINER_SSH_PORT},mode=host",
        "--entrypoint", "sh",
        image_id,
        "-c", BASELINE_SSHD,
    ]


# --------------------------------------------------------------------------------------------


def measure(bench: Bench, runs: int, warmup: int) -> tuple[list[Sample], list[Sample]]:
    # The first create also makes the swarm network (and its configuration network) that the
    # baseline then joins; warm-ups keep that and cold caches out of the figures.
    for i in range(warmup):
        log(f"warm-up {i + 1}/{warmup}")
        bench.time_sandman_create(f"u{i}w")
        bench.time_service_create(f"w{i}")
    a, b = [], []
    for i in range(1, runs + 1):
        a.append(bench.time_sandman_create(f"u{i}"))
        b.append(bench.time_service_create(str(i)))
        log(f"run {i}/{runs}: A {ms(a[-1].seconds)}, B {ms(b[-1].seconds)}")
    return a, b


def results_section(report: dict) -> str:
    a, b, m = report["sandman_create"], report["service_create"], report["machine"]
    verdict = "met" if report["target_met"] else "**not met**"
    lines = [
        SECTION,
        "",
        INTRO,
        f"- Date: {report['date']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Docker Engine {m['docker_server']}; load average {m['load_average_1m']:.2f} at the end",
        f"- Swarm: {'made for the run on 127.0.0.1 and left afterwards' if report['swarm_made'] else 'the engine’s own, kept'}",
        f"- sandman: {report['sandman_binary']}"
        + (" (built here;" if report["sandman_built"] else " (given;")
        + f" working tree at {m['sandman_revision']})",
        f"- Limits on both sides: memory {MEMORY}, {CPUS} CPU, {PIDS} pids, /dev/shm {SHM_SIZE}, "
        f"log {LOG_SIZE} x {LOG_FILES}",
        f"- Runs: {report['runs']} of each, interleaved A, B, A, B, ..., after "
        f"{report['warmup']} untimed warm-up of each; the baseline polls its task's state "
        "(`GET /tasks` on the engine's socket), then the banner, every 10 ms",
        f"- Command: `{report['command']}`",
        "",
        "| | median | min | max |",
        "|---|---:|---:|---:|",
        f"| A: `sandman --engine swarm session create` | {ms(a['median_s'])} | {ms(a['min_s'])} | {ms(a['max_s'])} |",
        f"| B: `docker service create -d` + SSH banner | {ms(b['median_s'])} | {ms(b['min_s'])} | {ms(b['max_s'])} |",
        "",
        f"Ratio median(A) / median(B): **{report['ratio']:.2f}**; target <= {report['target']:.2f} {verdict}.",
        "",
        "Where the swarm create spends its time (median of each phase, as marked by its progress "
        "lines; `starting container` covers the configs and secret, the service and the wait "
        "for its task to run):",
        "",
        "| phase | median |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {ms(sec)} |" for name, sec in report["sandman_phases"]]
    lines += ["", "Baseline phases (median):", "", "| phase | median |", "|---|---:|"]
    lines += [f"| `{name}` | {ms(sec)} |" for name, sec in report["service_create_phases"]]
    lines += [
        "",
        "Samples, in run order (ms): A "
        + ", ".join(f"{s * 1000:.0f}" for s in a["samples_s"])
        + "; B "
        + ", ".join(f"{s * 1000:.0f}" for s in b["samples_s"])
        + ".",
        "",
    ]
    return "\n".join(lines)


def print_report(report: dict) -> None:
    a, b = report["sandman_create"], report["service_create"]
    print(f"runs: {report['runs']} of each (interleaved), after {report['warmup']} warm-up")
    print(f"{'':44}{'median':>10}{'min':>10}{'max':>10}")
    for label, s in (("A  sandman --engine swarm session create", a),
                     ("B  docker service create -d + SSH banner", b)):
        print(f"{label:44}{ms(s['median_s']):>10}{ms(s['min_s']):>10}{ms(s['max_s']):>10}")
    verdict = "met" if report["target_met"] else "NOT met"
    print(f"ratio median(A)/median(B): {report['ratio']:.3f}  (target <= {report['target']}: {verdict})")
    print("sandman phases (median):")
    for name, sec in report["sandman_phases"]:
        print(f"  {ms(sec):>8}  {name}")
    print("service create phases (median):")
    for name, sec in report["service_create_phases"]:
        print(f"  {ms(sec):>8}  {name}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time `sandman --engine swarm session create` against a raw hardened `docker service create`.",
    )
    p.add_argument("-n", "--runs", type=int, default=7, help="timed runs of each (at least 5; default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each first (default 1)")
    p.add_argument("--sandman", type=Path, help="sandman binary to time (default: build target/release/sandman)")
    p.add_argument("--ports", default="31200-31300", help="host ports to use, START-END (default 31200-31300)")
    p.add_argument("--target", type=float, default=TARGET_RATIO, help="highest acceptable ratio (default 1.15)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown file to update (default bench/results.md)")
    p.add_argument("--no-results", action="store_true", help="do not update the results file")
    args = p.parse_args()
    if args.runs < 5:
        p.error("--runs must be at least 5")
    if args.warmup < 0:
        p.error("--warmup cannot be negative")
    try:
        start, end = (int(x) for x in args.ports.split("-", 1))
    except ValueError:
        p.error("--ports must look like 31200-31300")
    if not (1024 < start and end - start >= 3 and end < 65536):
        p.error("--ports needs at least 4 ports above 1024")
    args.port_range = (start, end)
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    swarm = None
    try:
        sandman = ready_sandman(args.sandman)
        swarm = Swarm()
        swarm_made = swarm.created
        try:
            bench = Bench(sandman, args.port_range)
            log(f"state in {bench.tmp}, network {bench.network}, ports {args.ports}")
            try:
                a, b = measure(bench, args.runs, args.warmup)
            finally:
                bench.cleanup()
        finally:
            swarm.leave()
        machine = machine_info()
    except BenchError as e:
        log(f"error: {e}")
        return 2

    ratio = statistics.median(s.seconds for s in a) / statistics.median(s.seconds for s in b)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "swarm_made": swarm_made,
        "sandman_binary": str(sandman.relative_to(REPO_ROOT) if sandman.is_relative_to(REPO_ROOT) else sandman),
        "sandman_built": args.sandman is None,
        "runs": args.runs,
        "warmup": args.warmup,
        "command": shlex.join(["python3", *sys.argv]),
        "sandman_create": summary([s.seconds for s in a]),
        "service_create": summary([s.seconds for s in b]),
        "ratio": ratio,
        "target": args.target,
        "target_met": ratio <= args.target,
        "sandman_phases": median_phases(a),
        "service_create_phases": median_phases(b),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if not args.no_results:
        replace_section(args.results, SECTION, results_section(report))
        log(f"results written to {args.results}")
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
