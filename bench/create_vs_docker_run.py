#!/usr/bin/env python3
"""Time `sandman session create` against a bare `docker run` of the same hardened container.

A: `sandman session create --user benchN --json`, from process start until it returns. sandman
   returns only once the session's sshd sends its "SSH-" banner on the published host port.
B: `docker run -d` of the same image with the same hardening options, running sshd, from the
   start of `docker run` until the same banner is readable on its published port.

Runs are interleaved (A, B, A, B, ...) so that drift on the host affects both alike. The figure
of merit is median(A) / median(B); the target is at most 1.15.

Everything the benchmark makes (state directory, workspaces, sessions, containers, network) is
private to one run and removed at the end, also when a run fails or is interrupted.

Exit status: 0 target met, 1 target missed, 2 the benchmark could not run.
Python 3.11 standard library only. See bench/README.md.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import replace_section  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "bench" / "results.md"
IMAGE = "gpu-workspace"
TARGET_RATIO = 1.15
CONTAINER_SSH_PORT = 2222
# 65534 ('nobody') has a passwd entry in the image; sshd refuses to run as a uid without one.
BASELINE_UID = 65534
BASELINE_USER = "nobody"
# Same cadence as sandman's own readiness probe, so neither side polls faster.
POLL_INTERVAL_S = 0.010
READY_TIMEOUT_S = 60.0
# sshd with a host key it can read, made at start (sandman writes a prepared one instead).
BASELINE_SSHD = (
    'ssh-keygen -q -t ed25519 -N "" -f /tmp/hk && '
    "exec /usr/sbin/sshd -D -e -o Port=2222 -o HostKey=/tmp/hk -o UsePAM=no -o PidFile=none"
)

SECTION = "## create vs docker run"
INTRO = """\
How long `sandman session create` takes, compared with the least a container that serves SSH
can take on the same host: a bare `docker run -d` of the same image with the same hardening
options, timed until its sshd answers. Target: median(create) / median(docker run) <= 1.15.
"""


class BenchError(Exception):
    """A setup problem that stops the benchmark (exit status 2)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Small helpers around external commands


def run_cmd(argv: list[str], *, check: bool = True, env: dict | None = None, cwd=None):
    """Runs a command, capturing its output; raises BenchError with its stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise BenchError(
            f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


def docker_server_version() -> str:
    try:
        proc = run_cmd(["docker", "version", "--format", "{{.Server.Version}}"])
    except FileNotFoundError:
        raise BenchError("the docker CLI is not installed") from None
    return proc.stdout.strip()


def image_present(image: str) -> bool:
    return run_cmd(["docker", "image", "inspect", image], check=False).returncode == 0


def build_sandman() -> Path:
    """`cargo build --release`; its progress goes straight to our stderr."""
    log("building sandman (cargo build --release) ...")
    proc = subprocess.run(["cargo", "build", "--release"], cwd=REPO_ROOT, stdout=sys.stderr)
    if proc.returncode != 0:
        raise BenchError("cargo build --release failed")
    return REPO_ROOT / "target" / "release" / "sandman"


def ready_sandman(given: Path | None) -> Path:
    """The sandman binary to measure (the one given, or a release build made here), once the
    engine answers and the workspace image is present."""
    docker_server_version()  # fails early when the engine is unreachable
    sandman = given.resolve() if given else build_sandman()
    if not os.access(sandman, os.X_OK):
        raise BenchError(f"{sandman} is not an executable file")
    if not image_present(IMAGE):
        raise BenchError(
            f"the image {IMAGE} is not on this host; build it first with:\n"
            f"  {shlex.quote(str(sandman))} image build --offline"
        )
    return sandman


def run_create(argv: list[str], env: dict, what: str):
    """Runs a `session create ... --json`, noting when each progress line (standard error)
    appears. Returns (start, end, marks, answer); raises BenchError when it fails."""
    marks: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )

    def read_progress():
        for line in proc.stderr:
            marks.append((time.perf_counter(), line.rstrip("\n")))

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    try:
        out = proc.stdout.read()
        code = proc.wait()
        end = time.perf_counter()
    finally:
        # Interrupted: stop the create, so that cleanup does not race a half-made session.
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join()
    if code != 0:
        text = "\n".join(m for _, m in marks)
        raise BenchError(f"{what} failed (exit {code}):\n{text}")
    answer = json.loads(out)
    if not answer.get("session_id") or not answer.get("ssh_port"):
        raise BenchError(f"unexpected create answer: {out[:300]}")
    return start, end, marks, answer


def read_banner(port: int) -> bool:
    """True when something on localhost:port sends "SSH-" as its first four bytes."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            data = b""
            while len(data) < 4:
                chunk = sock.recv(4 - len(data))
                if not chunk:
                    return False
                data += chunk
            return data == b"SSH-"
    except OSError:
        return False


def wait_for_banner(port: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Polls every 10 ms. A TCP connect alone is not readiness: Docker's port proxy accepts
    connections before sshd listens, then closes them."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if read_banner(port):
            return
        time.sleep(POLL_INTERVAL_S)
    raise BenchError(f"no SSH banner on port {port} within {timeout:.0f}s")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def git_revision() -> str:
    proc = run_cmd(["git", "describe", "--always", "--dirty"], check=False, cwd=REPO_ROOT)
    return proc.stdout.strip() or "unknown"


# --------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class Sample:
    seconds: float
    # (phase name, seconds) in order; for A the phases are sandman's progress lines.
    phases: list[tuple[str, float]] = field(default_factory=list)


class Bench:
    def __init__(self, sandman: Path, ports: tuple[int, int]):
        self.sandman = sandman
        self.pid = os.getpid()
        self.network = f"sandman-bench-{self.pid}"
        self.label = f"sandman-bench={self.pid}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"sandman-bench-{self.pid}-"))
        # sandman gets the lower half of the range, the baseline the upper half, so they
        # never compete for a port.
        start, end = ports
        mid = (start + end) // 2
        self.sandman_ports = (start, mid)
        self.baseline_ports = (mid + 1, end)
        self.env = self._sandman_env()

    def _sandman_env(self) -> dict:
        """Our settings only: drop any SANDMAN_* from the caller's environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
        env["SANDMAN_NETWORK"] = self.network
        env["SANDMAN_SSH_HOST"] = "localhost"
        return env

    def sandman_argv(self, *args: str) -> list[str]:
        # An empty config file keeps /etc/sandman/config.toml out of the measurement.
        config = self.tmp / "config.toml"
        if not config.exists():
            config.write_text("")
        return [
            str(self.sandman),
            "--config", str(config),
            "--db", str(self.tmp / "state" / "sandman.db"),
            "--workspace-root", str(self.tmp / "workspaces"),
            "--ssh-port-start", str(self.sandman_ports[0]),
            "--ssh-port-end", str(self.sandman_ports[1]),
            *args,
        ]

    # -- A: sandman ---------------------------------------------------------------------------

    def time_sandman_create(self, user: str, api_log: bool = False) -> Sample:
        """Wall time of one create; stderr lines are time-stamped as they arrive to split the
        time into phases. With api_log, sandman also logs each Docker API request (debug
        logging costs a little, so such runs are not part of the timed figures)."""
        argv = self.sandman_argv("session", "create", "--user", user, "--json")
        env = dict(self.env, SANDMAN_LOG="debug") if api_log else self.env
        start, end, marks, answer = run_create(argv, env, f"sandman session create --user {user}")
        self.remove_session(answer["session_id"])
        return Sample(end - start, phases_from_marks(start, end, marks, user, api_log))

    def remove_session(self, session_id: str) -> None:
        run_cmd(self.sandman_argv("session", "rm", session_id, "--yes", "--json"), env=self.env)

    # -- B: docker run ------------------------------------------------------------------------

    def time_docker_run(self, tag: str) -> Sample:
        port = self._free_baseline_port()
        home = self.tmp / "baseline-homes" / tag
        home.mkdir(parents=True, mode=0o700)
        if os.geteuid() == 0:
            os.chown(home, BASELINE_UID, BASELINE_UID)
        else:
            home.chmod(0o777)
        name = f"sandman-bench-{self.pid}-baseline-{tag}"
        argv = baseline_run_argv(name, self.label, self.network, port, home)

        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        started = time.perf_counter()
        try:
            if proc.returncode != 0:
                raise BenchError(f"docker run failed: {proc.stderr.strip()}")
            try:
                wait_for_banner(port)
            except BenchError as e:
                logs = run_cmd(["docker", "logs", "--tail", "5", name], check=False)
                raise BenchError(f"baseline: {e}; container log: {logs.stderr.strip()}") from None
            end = time.perf_counter()
        finally:
            run_cmd(["docker", "rm", "-f", name], check=False)
        return Sample(
            end - start, [("docker run -d returns", started - start), ("until banner", end - started)]
        )

    def _free_baseline_port(self) -> int:
        for port in range(self.baseline_ports[0], self.baseline_ports[1] + 1):
            if port_is_free(port):
                return port
        raise BenchError(f"no free port in {self.baseline_ports[0]}-{self.baseline_ports[1]}")

    # -- cleanup ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Best effort, every step tried even when an earlier one fails."""
        def sandman(*args):
            return lambda: run_cmd(self.sandman_argv(*args), env=self.env)

        def containers(filter_):
            return lambda: self._remove_containers(["--filter", filter_])

        steps = [
            ("remove sessions", sandman("session", "rm", "--all", "--yes")),
            # Whatever a failed or killed create left behind.
            ("reap", sandman("reap", "--quiet")),
            ("remove baseline containers", containers(f"label={self.label}")),
            ("remove containers on the network", containers(f"network={self.network}")),
            ("remove firewall rules", sandman("firewall", "remove", "--quiet")),
            ("remove network", self._remove_network),
            ("remove temporary files", lambda: shutil.rmtree(self.tmp)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                log(f"warning: cleanup: {what}: {e}")

    def _remove_containers(self, filters: list[str]) -> None:
        ids = run_cmd(["docker", "ps", "-aq", *filters]).stdout.split()
        if ids:
            run_cmd(["docker", "rm", "-f", *ids])

    def _remove_network(self) -> None:
        exists = run_cmd(["docker", "network", "inspect", self.network], check=False)
        if exists.returncode == 0:
            run_cmd(["docker", "network", "rm", self.network])


def baseline_run_argv(name: str, label: str, network: str, port: int, home: Path) -> list[str]:
    """The same options sandman gives a session container (see src/runtime/docker.rs)."""
    user_home = f"/home/{BASELINE_USER}"
    return [
        "docker", "run", "-d",
        "--name", name,
        "--label", label,
        "--hostname", "sandman-bench",
        "--user", f"{BASELINE_UID}:{BASELINE_UID}",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true",
        "--pids-limit", "1024",
        "--init",
        "--network", network,
        "-p", f"0.0.0.0:{port}:{CONTAINER_SSH_PORT}",
        "-v", f"{home}:{user_home}:rw",
        "-w", user_home,
        "-e", f"USER={BASELINE_USER}",
        "-e", f"HOME={user_home}",
        "-e", "NVIDIA_VISIBLE_DEVICES=void",
        "--entrypoint", "",
        IMAGE,
        "sh", "-c", BASELINE_SSHD,
    ]


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# A Docker API request as sandman's debug log shows it: "... DEBUG unix://<hex socket>/<path>".
API_REQUEST = re.compile(r"DEBUG unix://[0-9a-f]+(/\S*)")
CONTAINER_ID = re.compile(r"/[0-9a-f]{64}(?=/|$)")


def phase_name(line: str, user: str, api_log: bool) -> str | None:
    """The phase a stderr line starts, or None for a line that starts none."""
    line = ANSI_ESCAPE.sub("", line)
    if line.startswith("Creating a session for") or line.startswith("  "):
        return line.strip().rstrip(".").replace(user, "<user>")
    if api_log and (m := API_REQUEST.search(line)):
        path = CONTAINER_ID.sub("/<id>", unquote(m.group(1)))
        path = re.sub(r"name=[^&]*", "name=<name>", path)
        path = re.sub(r'"name":\["[^"]*"\]', '"name":["<network>"]', path)
        return f"API {path}"
    return None


def phases_from_marks(start: float, end: float, marks, user: str, api_log: bool = False):
    """Each marked stderr line starts a phase that lasts until the next one (the last until
    exit); the time before the first is process start-up. Returns [(name, seconds)]."""
    phases = []
    name, since = "process start until first output", start
    for at, line in marks:
        next_name = phase_name(line, user, api_log)
        if next_name is None:
            continue
        phases.append((name, at - since))
        name, since = next_name, at
    phases.append((name + " (until exit)", end - since))
    return phases


# --------------------------------------------------------------------------------------------
# Figures and reports


def summary(values: list[float]) -> dict:
    return {
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
        "samples_s": values,
    }


def median_phases(samples: list[Sample]) -> list[tuple[str, float]]:
    """Median per phase, for phases every sample has (in the order of the first sample)."""
    names = [n for n, _ in samples[0].phases]
    common = [n for n in names if all(n in dict(s.phases) for s in samples)]
    return [(n, statistics.median(dict(s.phases)[n] for s in samples)) for n in common]


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "docker_server": docker_server_version(),
        # Other work on a small host shows up in the figures; note how busy it was.
        "load_average_1m": os.getloadavg()[0],
        "sandman_revision": git_revision(),
    }


def command_line() -> str:
    return shlex.join(["python3", *sys.argv])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def results_section(report: dict) -> str:
    a, b, m = report["sandman_create"], report["docker_run"], report["machine"]
    verdict = "met" if report["target_met"] else "**not met**"
    lines = [
        SECTION,
        "",
        INTRO,
        f"- Date: {report['date']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Docker Engine {m['docker_server']}; load average {m['load_average_1m']:.2f} at the end",
        f"- sandman: {report['sandman_binary']}"
        + (" (built here" if report["sandman_built"] else " (given;")
        + f" working tree at {m['sandman_revision']})",
        f"- Runs: {report['runs']} of each, interleaved A, B, A, B, ..., after "
        f"{report['warmup']} untimed warm-up of each",
        f"- Command: `{report['command']}`",
        "",
        "| | median | min | max |",
        "|---|---:|---:|---:|",
        f"| A: `sandman session create` | {ms(a['median_s'])} | {ms(a['min_s'])} | {ms(a['max_s'])} |",
        f"| B: `docker run -d` + SSH banner | {ms(b['median_s'])} | {ms(b['min_s'])} | {ms(b['max_s'])} |",
        "",
        f"Ratio median(A) / median(B): **{report['ratio']:.2f}**; target <= {report['target']:.2f} {verdict}.",
        "",
        "Where `sandman session create` spends its time (median of each phase, as marked by its "
        "progress lines):",
        "",
        "| phase | median |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {ms(sec)} |" for name, sec in report["sandman_phases"]]
    lines += ["", "Baseline phases (median):", "", "| phase | median |", "|---|---:|"]
    lines += [f"| `{name}` | {ms(sec)} |" for name, sec in report["docker_run_phases"]]
    if "sandman_api_phases" in report:
        lines += [
            "",
            f"Per Docker API request ({report['runs']} further creates with debug logging, median "
            f"{ms(report['sandman_api_runs_median_s'])}; each row lasts until the next row "
            "starts):",
            "",
            "| from | median |",
            "|---|---:|",
        ]
        lines += [f"| `{name}` | {ms(sec)} |" for name, sec in report["sandman_api_phases"]]
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


def update_results(path: Path, section: str) -> None:
    replace_section(path, SECTION, section)


def print_report(report: dict) -> None:
    a, b = report["sandman_create"], report["docker_run"]
    print(f"runs: {report['runs']} of each (interleaved), after {report['warmup']} warm-up")
    print(f"{'':34}{'median':>10}{'min':>10}{'max':>10}")
    for label, s in (("A  sandman session create", a), ("B  docker run -d + SSH banner", b)):
        print(f"{label:34}{ms(s['median_s']):>10}{ms(s['min_s']):>10}{ms(s['max_s']):>10}")
    verdict = "met" if report["target_met"] else "NOT met"
    print(f"ratio median(A)/median(B): {report['ratio']:.3f}  (target <= {report['target']}: {verdict})")
    print("sandman phases (median):")
    for name, sec in report["sandman_phases"]:
        print(f"  {ms(sec):>8}  {name}")
    print("docker run phases (median):")
    for name, sec in report["docker_run_phases"]:
        print(f"  {ms(sec):>8}  {name}")
    if "sandman_api_phases" in report:
        print("sandman, per Docker API request (median, until the next mark):")
        for name, sec in report["sandman_api_phases"]:
            print(f"  {ms(sec):>8}  {name}")


# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time `sandman session create` against a bare hardened `docker run`.",
    )
    p.add_argument("-n", "--runs", type=int, default=7, help="timed runs of each (at least 5; default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each first (default 1)")
    p.add_argument("--sandman", type=Path, help="sandman binary to time (default: build target/release/sandman)")
    p.add_argument("--ports", default="31000-31100", help="host ports to use, START-END (default 31000-31100)")
    p.add_argument("--target", type=float, default=TARGET_RATIO, help="highest acceptable ratio (default 1.15)")
    p.add_argument(
        "--api-breakdown", action="store_true",
        help="afterwards, run as many extra creates with sandman's Docker API requests logged "
        "and report the median time from each request to the next (not part of the ratio)",
    )
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
        p.error("--ports must look like 31000-31100")
    if not (1024 < start and end - start >= 3 and end < 65536):
        p.error("--ports needs at least 4 ports above 1024")
    args.port_range = (start, end)
    return args


def measure_api_breakdown(bench: Bench, runs: int) -> list[Sample]:
    """Extra, untimed creates with sandman's Docker API requests logged."""
    samples = []
    for i in range(1, runs + 1):
        samples.append(bench.time_sandman_create(f"benchapi{i}", api_log=True))
        log(f"API breakdown {i}/{runs}: {ms(samples[-1].seconds)}")
    return samples


def measure(bench: Bench, runs: int, warmup: int) -> tuple[list[Sample], list[Sample]]:
    # The first create also makes the network (with inter-container traffic off) that the
    # baseline then joins; warm-ups keep that and cold caches out of the figures.
    for i in range(warmup):
        log(f"warm-up {i + 1}/{warmup}")
        bench.time_sandman_create(f"benchw{i}")
        bench.time_docker_run(f"w{i}")
    a, b = [], []
    for i in range(1, runs + 1):
        a.append(bench.time_sandman_create(f"bench{i}"))
        b.append(bench.time_docker_run(str(i)))
        log(f"run {i}/{runs}: A {ms(a[-1].seconds)}, B {ms(b[-1].seconds)}")
    return a, b


def main() -> int:
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the cleanup in `finally` still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sandman = ready_sandman(args.sandman)
        bench = Bench(sandman, args.port_range)
        log(f"state in {bench.tmp}, network {bench.network}, ports {args.ports}")
        try:
            a, b = measure(bench, args.runs, args.warmup)
            api = measure_api_breakdown(bench, args.runs) if args.api_breakdown else []
        finally:
            bench.cleanup()
        machine = machine_info()
    except BenchError as e:
        log(f"error: {e}")
        return 2

    ratio = statistics.median(s.seconds for s in a) / statistics.median(s.seconds for s in b)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "sandman_binary": str(sandman.relative_to(REPO_ROOT) if sandman.is_relative_to(REPO_ROOT) else sandman),
        "sandman_built": args.sandman is None,
        "runs": args.runs,
        "warmup": args.warmup,
        "command": command_line(),
        "sandman_create": summary([s.seconds for s in a]),
        "docker_run": summary([s.seconds for s in b]),
        "ratio": ratio,
        "target": args.target,
        "target_met": ratio <= args.target,
        "sandman_phases": median_phases(a),
        "docker_run_phases": median_phases(b),
    }
    if api:
        report["sandman_api_phases"] = median_phases(api)
        report["sandman_api_runs_median_s"] = statistics.median(s.seconds for s in api)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if not args.no_results:
        update_results(args.results, results_section(report))
        log(f"results written to {args.results}")
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
