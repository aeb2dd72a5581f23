#!/usr/bin/env python3
"""Time one `sandman reap --json` pass over N running sessions against `docker inspect` of the
same N containers.

A reap pass lists sandman's containers, reads each running session's activity (its SSH
connections from the container's /proc, its cgroup CPU time, its GPU processes where it has a
GPU), probes each session's sshd for its banner, records what it saw, writes warnings and
`~/.sandman/expires_at` notices where due (one `docker exec` as the user per session that needs
one) and checks the firewall rules. The least any reaper must do is ask the engine about every
container once: `docker inspect` of the N containers, one command.

- First pass: the first `sandman reap --json` after the creates, which writes every session's
  `~/.sandman/expires_at` notice; reported on its own.
- Then passes interleaved with the baseline (A, B, A, B, ...); medians, and the ratio
  median(reap) / median(docker inspect). No target: recorded for planning.
- Also: an empty pass (no sessions), before the creates, for the part that does not grow with N.

Everything the benchmark makes (state directory, workspaces, sessions, containers, network,
firewall rules) is private to one run and removed at the end, also when a run fails or is
interrupted.

Exit status: 0 measured, 2 the benchmark could not run (or a pass reaped or failed something).
Python 3.11 standard library only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The sibling modules are imported from source; no __pycache__ is left in the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from create_vs_docker_run import (  # noqa: E402
    REPO_ROOT,
    BenchError,
    log,
    machine_info,
    ms,
    ready_sandman,
    run_cmd,
    summary,
)
from results_file import replace_section  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "bench" / "results.md"
SECTION = "## reap pass"
INTRO = """\
The wall time of one `sandman reap --json` pass over N running sessions (engine `docker`, no
GPUs), compared with the least a reaper must do: `docker inspect` of the same N containers, one
command. A pass also reads each session's SSH connections and CPU time, probes its sshd, records
what it saw, writes warnings and `~/.sandman/expires_at` notices when due (the first pass after
the creates writes every session's notice through `docker exec`) and checks the firewall rules.
No target: recorded for planning.
"""


class Bench:
    def __init__(self, sandman: Path, ports: tuple[int, int]):
        self.sandman = sandman
        self.pid = os.getpid()
        self.network = f"sandman-bench-reap-{self.pid}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"sandman-bench-reap-{self.pid}-"))
        self.ports = ports
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
        self.env["SANDMAN_NETWORK"] = self.network
        self.env["SANDMAN_SSH_HOST"] = "127.0.0.1"
        # Our settings only; no GPU (no NVML on most hosts; a GPU session adds one NVML read);
        # small limits so that N sessions fit any host.
        (self.tmp / "config.toml").write_text(
            'gpu_backend = "none"\n\n[limits]\nmemory = "1g"\ncpus = 1\nshm_size = "256m"\n'
        )
        self.sessions: list[dict] = []

    def sandman_argv(self, *args: str) -> list[str]:
        return [
            str(self.sandman),
            "--config", str(self.tmp / "config.toml"),
            "--engine", "docker",
            "--db", str(self.tmp / "state" / "sandman.db"),
            "--workspace-root", str(self.tmp / "workspaces"),
            "--ssh-port-start", str(self.ports[0]),
            "--ssh-port-end", str(self.ports[1]),
            *args,
        ]

    def run_sandman(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return run_cmd(self.sandman_argv(*args), env=env or self.env)

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

    def create_sessions(self, n: int) -> list[float]:
        took = []
        for i in range(1, n + 1):
            start = time.perf_counter()
            out = self.run_sandman("session", "create", "--user", f"reap{i}", "--json").stdout
            took.append(time.perf_counter() - start)
            answer = json.loads(out)
            if not answer.get("container_id"):
                raise BenchError(f"unexpected create answer: {out[:300]}")
            self.sessions.append(answer)
            log(f"session {i}/{n}: {ms(took[-1])}")
        return took

    def time_reap(self) -> tuple[float, dict]:
        start = time.perf_counter()
        proc = subprocess.run(self.sandman_argv("reap", "--json"), env=self.env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"sandman reap failed (exit {proc.returncode}): {proc.stderr.strip()}")
        report = json.loads(proc.stdout)
        removed = {k: v for k, v in report.items() if isinstance(v, list) and v and k != "oom_kills"}
        if removed or report.get("busy"):
            raise BenchError(f"a reap pass over healthy sessions did something: {proc.stdout.strip()}")
        return took, report

    def time_inspect(self) -> float:
        ids = [s["container_id"] for s in self.sessions]
        start = time.perf_counter()
        proc = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True)
        took = time.perf_counter() - start
        if proc.returncode != 0 or len(json.loads(proc.stdout)) != len(ids):
            raise BenchError(f"docker inspect failed: {proc.stderr.strip()}")
        return took

    def notices_written(self) -> int:
        """Sessions whose home (bound from the workspace root) holds `.sandman/expires_at`."""
        root = self.tmp / "workspaces"
        return sum((root / s["ssh_user"] / ".sandman" / "expires_at").is_file() for s in self.sessions)

    def signals(self) -> dict:
        """How many sessions the passes saw activity in, by signal (none expected: nobody is
        logged in and sshd idles)."""
        rows = json.loads(self.run_sandman("session", "list", "--json").stdout)
        seen: dict[str, int] = {}
        for r in rows:
            key = r.get("last_activity_signal") or "none"
            seen[key] = seen.get(key, 0) + 1
        return seen

    def trace_pass(self) -> list[str]:
        """One more pass with sandman's debug log, its lines stamped with ms since the start."""
        env = dict(self.env, SANDMAN_LOG="debug")
        start = time.perf_counter()
        proc = subprocess.Popen(self.sandman_argv("reap", "--json"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        # Response bodies in the debug log run to kilobytes: the first 160 characters of each.
        lines = [f"{(time.perf_counter() - start) * 1000:7.1f} ms  {line.rstrip()[:160]}"
                 for line in proc.stderr if line.strip()]
        proc.wait()
        lines.append(f"{(time.perf_counter() - start) * 1000:7.1f} ms  (exit {proc.returncode})")
        return lines

    def cleanup(self) -> None:
        """Best effort, every step tried even when an earlier one fails."""
        instance = self.instance_id()

        def containers(filter_):
            def remove():
                ids = run_cmd(["docker", "ps", "-aq", "--filter", filter_]).stdout.split()
                if ids:
                    run_cmd(["docker", "rm", "-f", *ids])
            return remove

        steps = [
            ("remove sessions", lambda: self.run_sandman("session", "rm", "--all", "--yes")),
            ("reap", lambda: self.run_sandman("reap", "--quiet")),
            ("remove containers on the network", containers(f"network={self.network}")),
        ]
        if instance:
            steps.append(("remove containers of the instance", containers(f"label=sandman.instance={instance}")))
        steps += [
            ("remove firewall rules", lambda: self.run_sandman("firewall", "remove", "--quiet")),
            ("remove network", self._remove_network),
            ("remove temporary files", lambda: shutil.rmtree(self.tmp)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                log(f"warning: cleanup: {what}: {e}")

    def _remove_network(self) -> None:
        if run_cmd(["docker", "network", "inspect", self.network], check=False).returncode == 0:
            run_cmd(["docker", "network", "rm", self.network])


def measure(bench: Bench, n: int, passes: int, empty_passes: int, trace: bool) -> dict:
    # Before any session: the first call makes the database; then the part of a pass that does
    # not grow with N.
    bench.time_reap()
    empty = [bench.time_reap()[0] for _ in range(empty_passes)]
    log(f"empty passes: {', '.join(ms(s) for s in empty)}")
    creates = bench.create_sessions(n)
    if bench.notices_written():
        raise BenchError("a notice was written before the first pass")
    first, _ = bench.time_reap()
    notices = bench.notices_written()
    log(f"first pass: {ms(first)}; notices written: {notices}/{n}")
    a, b = [], []
    for i in range(1, passes + 1):
        a.append(bench.time_reap()[0])
        b.append(bench.time_inspect())
        log(f"pass {i}/{passes}: reap {ms(a[-1])}, docker inspect {ms(b[-1])}")
    result = {
        "sessions": n,
        "creates_s": creates,
        "empty_pass": summary(empty),
        "first_pass_s": first,
        "notices_after_first_pass": notices,
        "reap": summary(a),
        "docker_inspect": summary(b),
        "ratio": statistics.median(a) / statistics.median(b),
        "signals_after": bench.signals(),
    }
    # One more pass, untimed, with sandman's debug log: where a pass spends its time.
    result["trace"] = bench.trace_pass()
    result["breakdown"] = breakdown(result["trace"])
    if not trace:
        del result["trace"]
    return result


def breakdown(trace: list[str]) -> list[tuple[str, float]]:
    """Splits the debug pass at its "activity read ... took_ms=N" line and at the firewall
    check's network inspect after it; [] when the log does not have them."""
    def at(line: str) -> float:
        return float(line.split(" ms", 1)[0]) / 1000

    read = next((i for i, l in enumerate(trace) if "activity read" in l and "took_ms=" in l), None)
    if read is None:
        return []
    took = int(trace[read].split("took_ms=", 1)[1].split()[0]) / 1000
    fw = next((i for i in range(read + 1, len(trace)) if "/networks/" in trace[i]), None)
    end = at(trace[-1])
    if fw is None:
        return []
    return [
        ("start, database, identity check, listing", at(trace[read]) - took),
        ("reading activity (inspect, /proc, cgroup), all sessions at once", took),
        ("sshd probes (all at once), records, notices", at(trace[fw]) - at(trace[read])),
        ("firewall check, exit", end - at(trace[fw])),
    ]


def results_section(report: dict) -> str:
    m, a, b, e = report["machine"], report["reap"], report["docker_inspect"], report["empty_pass"]
    n = report["sessions"]
    signals = ", ".join(f"{k}: {v}" for k, v in sorted(report["signals_after"].items()))
    lines = [
        SECTION,
        "",
        INTRO,
        f"- Date: {report['date']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Docker Engine {m['docker_server']}; load average {m['load_average_1m']:.2f} at the end",
        f"- sandman: {report['sandman_binary']}"
        + (" (built here;" if report["sandman_built"] else " (given;")
        + f" working tree at {m['sandman_revision']})",
        f"- Sessions: {n} running, idle (nobody logged in), no GPU; created in "
        f"{ms(statistics.median(report['creates_s']))} each (median)",
        f"- Passes: the first after the creates, then {report['passes']} of each, interleaved "
        f"reap, inspect, reap, ...; {report['empty_passes']} empty passes before the creates",
        f"- Command: `{report['command']}`",
        "",
        "| | median | min | max |",
        "|---|---:|---:|---:|",
        f"| `sandman reap --json`, {n} sessions | {ms(a['median_s'])} | {ms(a['min_s'])} | {ms(a['max_s'])} |",
        f"| `docker inspect` of the {n} containers | {ms(b['median_s'])} | {ms(b['min_s'])} | {ms(b['max_s'])} |",
        f"| `sandman reap --json`, no sessions | {ms(e['median_s'])} | {ms(e['min_s'])} | {ms(e['max_s'])} |",
        "",
        f"Ratio median(reap) / median(docker inspect): **{report['ratio']:.2f}**.",
        "",
        f"First pass after the creates (writes every session's `~/.sandman/expires_at` through "
        f"`docker exec`): **{ms(report['first_pass_s'])}**; notices written: "
        f"{report['notices_after_first_pass']} of {n}.",
        "",
        f"Activity the passes recorded afterwards (`last_activity_signal` per session): {signals}.",
        "",
    ]
    if report.get("breakdown"):
        lines += [
            f"Where one more pass (untimed, with sandman's debug log) spent its "
            f"{ms(sum(s for _, s in report['breakdown']))}, by the times of its log lines:",
            "",
            "| part | time |",
            "|---|---:|",
        ]
        lines += [f"| {name} | {ms(sec)} |" for name, sec in report["breakdown"]]
        lines.append("")
    lines += [
        "Samples, in run order (ms): reap "
        + ", ".join(f"{s * 1000:.0f}" for s in a["samples_s"])
        + "; inspect "
        + ", ".join(f"{s * 1000:.0f}" for s in b["samples_s"])
        + "; empty "
        + ", ".join(f"{s * 1000:.0f}" for s in e["samples_s"])
        + ".",
        "",
    ]
    return "\n".join(lines)


def print_report(report: dict) -> None:
    a, b, e, n = report["reap"], report["docker_inspect"], report["empty_pass"], report["sessions"]
    print(f"{n} sessions; {report['passes']} passes of each (interleaved)")
    print(f"{'':36}{'median':>10}{'min':>10}{'max':>10}")
    for label, s in ((f"sandman reap --json ({n} sessions)", a), (f"docker inspect ({n} containers)", b),
                     ("sandman reap --json (no sessions)", e)):
        print(f"{label:36}{ms(s['median_s']):>10}{ms(s['min_s']):>10}{ms(s['max_s']):>10}")
    print(f"ratio median(reap)/median(docker inspect): {report['ratio']:.2f}")
    print(f"first pass after the creates: {ms(report['first_pass_s'])} "
          f"(notices written: {report['notices_after_first_pass']}/{n})")
    print(f"activity recorded afterwards: {report['signals_after']}")
    for name, sec in report.get("breakdown", []):
        print(f"  {ms(sec):>8}  {name}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time a `sandman reap` pass against `docker inspect` of its containers.")
    p.add_argument("-s", "--sessions", type=int, default=8, help="running sessions (default 8)")
    p.add_argument("-n", "--passes", type=int, default=7, help="timed passes of each after the first (at least 3; default 7)")
    p.add_argument("--empty-passes", type=int, default=5, help="passes timed before any session exists (default 5)")
    p.add_argument("--sandman", type=Path, help="sandman binary to time (default: build target/release/sandman)")
    p.add_argument("--ports", default="31400-31499", help="host ports for the sessions, START-END (default 31400-31499)")
    p.add_argument("--trace", action="store_true",
                   help="print the debug pass's log on stderr, each line with its time")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown file to update (default bench/results.md)")
    p.add_argument("--no-results", action="store_true", help="do not update the results file")
    args = p.parse_args()
    if not 1 <= args.sessions <= 64:
        p.error("--sessions must be 1 to 64")
    if args.passes < 3:
        p.error("--passes must be at least 3")
    if args.empty_passes < 1:
        p.error("--empty-passes must be at least 1")
    try:
        start, end = (int(x) for x in args.ports.split("-", 1))
    except ValueError:
        p.error("--ports must look like 31400-31499")
    if not (1024 < start <= end < 65536 and end - start + 1 >= args.sessions):
        p.error(f"--ports needs at least {args.sessions} ports above 1024")
    args.port_range = (start, end)
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sandman = ready_sandman(args.sandman)
        bench = Bench(sandman, args.port_range)
        log(f"state in {bench.tmp}, network {bench.network}, ports {args.ports}")
        try:
            result = measure(bench, args.sessions, args.passes, args.empty_passes, args.trace)
        finally:
            bench.cleanup()
        machine = machine_info()
    except BenchError as e:
        log(f"error: {e}")
        return 2

    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "sandman_binary": str(sandman.relative_to(REPO_ROOT) if sandman.is_relative_to(REPO_ROOT) else sandman),
        "sandman_built": args.sandman is None,
        "passes": args.passes,
        "empty_passes": args.empty_passes,
        "command": shlex.join(["python3", *sys.argv]),
        **result,
    }
    if "trace" in report:
        log("debug pass:")
        for line in report["trace"]:
            log(f"  {line}")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if not args.no_results:
        replace_section(args.results, SECTION, results_section(report))
        log(f"results written to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
