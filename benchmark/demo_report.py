"""A short demonstration run, end to end, that leaves a performance report in a folder.

    python benchmark/demo_report.py [--duration 20] [--rate 2000] [--output DIR]

What ``make report`` runs.  It starts a daemon (``lltrade run`` on a free
port, a temporary journal, its own telemetry file), the telemetry exporter
logging one line a second, drives the daemon with ``benchmark/loadgen.py``
for ``--warmup`` + ``--duration`` seconds, stops everything (whatever
happened), then runs ``benchmark/plots.py`` over the telemetry log, the
load-generator result and the newest pytest-benchmark JSON under
``results/benchmarks/`` if there is one, and prints where the report is.
The output folder (``results/report-<timestamp>/`` by default) also keeps
the daemon's and the exporter's logs.

Exit status: 0 when every step worked; 1 when one failed (the report is
still written when there is a telemetry log to make it from); 2 when the
daemon could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from types import FrameType
from typing import IO, Final

HERE: Final = os.path.dirname(os.path.abspath(__file__))
ROOT: Final = os.path.dirname(HERE)
LOADGEN: Final = os.path.join(HERE, "loadgen.py")
PLOTS: Final = os.path.join(HERE, "plots.py")
HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 15.0
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> Callable[[], None]:
    """``preexec_fn``: the child gets SIGTERM if this script dies without stopping it."""
    libc_name = ctypes.util.find_library("c")

    def setup() -> None:
        if libc_name:
            ctypes.CDLL(libc_name).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


class Child:
    """A child process whose stderr goes to a file; stopped by :meth:`stop`, whatever happens."""

    def __init__(self, name: str, argv: list[str], log_path: str) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(),
            cwd=ROOT,
        )

    def log_records(self) -> list[dict[str, object]]:
        """The JSON log lines written so far (others are skipped)."""
        out = []
        with open(self.log_path, "rb") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        out.append(record)
        return out

    def tail(self, lines: int = 5) -> str:
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a timeout; the exit status (None if it would not die)."""
        status: int | None = self.proc.poll()
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    status = self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    status = None
        self._log.close()
        return status


def wait_listening(daemon: Child) -> int:
    """The daemon's order-entry port, from its ``listening`` log line."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for record in daemon.log_records():
            if record.get("msg") == "listening":
                address = record.get("address")
                if isinstance(address, list) and len(address) == 2:
                    return int(address[1])
        if daemon.proc.poll() is not None:
            raise RuntimeError(
                f"the daemon exited with status {daemon.proc.returncode} before listening:\n"
                + daemon.tail()
            )
        time.sleep(0.05)
    raise RuntimeError(f"the daemon did not listen within {START_TIMEOUT:.0f} s")


def newest_benchmark_json(directory: str) -> str | None:
    """The most recently written pytest-benchmark JSON file under ``directory``, if any."""
    files = glob.glob(os.path.join(directory, "**", "*.json"), recursive=True)
    return max(files, key=os.path.getmtime) if files else None


def default_output() -> str:
    return os.path.join(ROOT, "results", time.strftime("report-%Y%m%d-%H%M%S"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="demo_report.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds of measured load (20)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before (2)")
    p.add_argument("--rate", type=int, default=2000, help="messages per second (2000)")
    p.add_argument("--connections", type=int, default=2, help="load-generator sessions (2)")
    p.add_argument("--output", metavar="DIR", help="report folder (results/report-<timestamp>)")
    p.add_argument(
        "--durability",
        choices=("none", "batch", "interval"),
        default="none",
        help="the daemon's journal durability policy (none)",
    )
    p.add_argument("--busy-poll", action="store_true", help="run the daemon busy-polling")
    p.add_argument(
        "--benchmarks",
        metavar="DIR",
        default=os.path.join(ROOT, "results", "benchmarks"),
        help="where make bench saves pytest-benchmark JSON (results/benchmarks)",
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.rate <= 0 or args.connections < 1:
        p.error("--duration and --rate must be positive, --warmup >= 0, --connections >= 1")
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the children


def run_load(args: argparse.Namespace, port: int, result_path: str) -> str | None:
    """Run the load generator; None on success, else what went wrong."""
    if not os.path.exists(LOADGEN):
        return "benchmark/loadgen.py is missing: the report has no load-generator figures"
    argv = [
        sys.executable,
        LOADGEN,
        "--host",
        HOST,
        "--port",
        str(port),
        "--rate",
        str(args.rate),
        "--duration",
        f"{args.duration:g}",
        "--warmup",
        f"{args.warmup:g}",
        "--connections",
        str(args.connections),
        "--output",
        result_path,
        "--no-progress",
    ]
    timeout = args.warmup + args.duration + 60.0
    try:
        status = subprocess.run(
            argv, cwd=ROOT, timeout=timeout, check=False, preexec_fn=_die_with_parent()
        ).returncode
    except subprocess.TimeoutExpired:
        return f"the load generator did not finish within {timeout:.0f} s"
    if status != 0:
        return f"the load generator exited with status {status}"
    if not os.path.exists(result_path):
        return "the load generator wrote no result file"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    from lltrade._telemetry import default_path

    out_dir = os.path.abspath(args.output or default_output())
    os.makedirs(out_dir, exist_ok=True)
    telemetry_log = os.path.join(out_dir, "telemetry.jsonl")
    loadgen_result = os.path.join(out_dir, "loadgen.json")
    for stale in (telemetry_log, loadgen_result):  # the exporter appends: start afresh
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    name = f"lltrade-report-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    shm_path = default_path(name)
    tmp = tempfile.mkdtemp(prefix="lltrade-report-")
    problems: list[str] = []
    daemon_argv = [
        sys.executable,
        "-m",
        "lltrade",
        "run",
        "--host",
        HOST,
        "--port",
        "0",
        "--journal-dir",
        os.path.join(tmp, "journal"),
        "--telemetry-name",
        name,
        "--durability",
        args.durability,
    ]
    if args.busy_poll:
        daemon_argv.append("--busy-poll")
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) >= 2:
        # The daemon on a core of its own (the load generator pins itself to the others),
        # as it runs in production: the figures are the daemon's, not the scheduler's.
        daemon_argv += ["--cpu", str(usable[-1])]
    daemon: Child | None = None
    exporter: Child | None = None
    try:
        print(f"demo_report: starting the daemon (telemetry {shm_path})", flush=True)
        daemon = Child("daemon", daemon_argv, os.path.join(out_dir, "daemon.log"))
        try:
            port = wait_listening(daemon)
        except RuntimeError as exc:
            print(f"demo_report: {exc}", file=sys.stderr)
            return 2
        exporter = Child(
            "exporter",
            [
                sys.executable,
                "-m",
                "telemetry",
                "--host",
                HOST,
                "--port",
                "0",
                "--shm-path",
                shm_path,
                "--interval",
                "1",
                "--log",
                telemetry_log,
            ],
            os.path.join(out_dir, "exporter.log"),
        )
        time.sleep(1.5)  # a first line or two before the load starts
        print(
            f"demo_report: daemon on {HOST}:{port}; load generator at {args.rate} messages/s "
            f"for {args.warmup:g} + {args.duration:g} s",
            flush=True,
        )
        problem = run_load(args, port, loadgen_result)
        if problem:
            problems.append(problem)
        time.sleep(1.5)  # the exporter's line for the last interval of load
    finally:
        for child in (exporter, daemon):
            if child is not None and child.stop() not in (0, -signal.SIGTERM):
                problems.append(f"the {child.name} did not stop cleanly (see {child.log_path})")
        with contextlib.suppress(FileNotFoundError):
            os.remove(shm_path)  # left behind only if the daemon was killed
        shutil.rmtree(tmp, ignore_errors=True)

    for problem in problems:
        print(f"demo_report: {problem}", file=sys.stderr)
    if not os.path.exists(telemetry_log):
        print("demo_report: the exporter wrote no telemetry log; no report", file=sys.stderr)
        return 1
    inputs = [telemetry_log]
    if os.path.exists(loadgen_result):
        inputs.append(loadgen_result)
    bench = newest_benchmark_json(args.benchmarks)
    if bench:
        inputs.append(bench)
    mode = "busy-polling" if args.busy_poll else "blocking"
    notes = [
        f"demo run (benchmark/demo_report.py): one daemon, {mode} event loop, "
        f"journal durability {args.durability}, on a temporary journal, "
        + (f"pinned to CPU {usable[-1]}" if len(usable) >= 2 else "on the only CPU"),
        f"load: {args.rate} messages/s over {args.connections} connection(s) for "
        f"{args.warmup:g} s of warm-up and {args.duration:g} s measured",
    ]
    if bench is None:
        where = os.path.relpath(args.benchmarks, ROOT)
        notes.append(f"no pytest-benchmark JSON under {where} (make bench writes it)")
    plots_argv = [sys.executable, PLOTS, *inputs, "--output", out_dir]
    for note in notes:
        plots_argv += ["--note", note]
    status = subprocess.run(plots_argv, cwd=ROOT, check=False).returncode
    if status != 0:
        return status
    print(f"demo_report: the report is in {out_dir} (index.html, report.md)")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children were stopped on the way out
        print("demo_report: interrupted", file=sys.stderr)
        sys.exit(130)
