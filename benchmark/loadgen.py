"""lltrade's load generator: open-loop order flow against a running daemon, latency per type.

    python benchmark/loadgen.py [--host 127.0.0.1] [--port 9000] [--rate 10000] [--max]
        [--connections 2] [--processes 1] [--duration 10] [--warmup 2] [--symbols DEMO]
        [--mix passive=60,aggressive=20,cancel=15,replace=5] [--seed 1]
        [--account admin --secret S] [--output results/loadgen.json] [--no-progress] [--json]

``--rate`` messages per second (new orders, cancels and replaces together)
are planned on a fixed schedule over every connection of every worker
process and sent whether or not earlier ones were answered (open loop).
Each message's latency runs from its *planned* send time to its first
answer (``OrderAccepted``/``OrderRejected`` for a new order, ``Cancelled``
for a cancel, ``Replaced`` for a replace), which corrects coordinated
omission: a generator or a socket that held a message back cannot hide the
wait.  Only the last ``--duration`` seconds are measured.  ``--max`` steps
the rate up from ``--rate`` until a step is not sustainable and reports the
highest one that was.

The result file (JSON, ``schema: 1``, every histogram in HdrHistogram's
standard encoding) and the summary are described in ``benchmark/README.md``.
Exit status: 0 after a clean run, 1 when the run had errors (unanswered
messages, a dropped connection), 2 when it could not start (bad option, no
daemon, logon refused), 130 when interrupted, 143 on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Final, NoReturn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import fmt_rate
from lltrade.argtypes import positive_int, seconds
from lltrade.config import DEMO_SECRETS, default_config
from loadgen_machine import (
    cpu_seconds,
    daemon_cpus,
    daemon_process,
    machine_busy_seconds,
    machine_info,
    spinners,
    worker_cpus,
)
from loadgen_orders import DEFAULT_MIX, MixError, SymbolSpec, format_mix, parse_mix
from loadgen_report import document, merge_run, print_search, print_summary, write
from loadgen_schedule import order_count
from loadgen_session import SessionError, logon, logout, resolve_symbols
from loadgen_verdict import (
    BUSY_LIMIT,
    LAG_LIMIT_NS,
    P99_LIMIT_NS,
    Limits,
    RunFigures,
    next_rate,
    peak,
    step_ok,
)
from loadgen_worker import READY_TIMEOUT_S, WorkerPlan, worker_main

START_DELAY_NS: Final = 200_000_000  #: the schedule starts this long after every worker is ready
RESULT_GRACE_S: Final = 30.0  #: beyond the run's own length, before workers are given up on
NOISY_CORES: Final = 0.25  #: other processes using more than this make the machine noisy


class UsageError(Exception):
    """A bad option: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass
class Options:
    """Every option of a run (the result file's ``config``, less the secret)."""

    host: str = "127.0.0.1"
    port: int = 9000
    rate: int = 10_000
    max: bool = False
    connections: int = 2
    processes: int = 1
    duration: float = 10.0
    warmup: float = 2.0
    symbols: list[str] = field(default_factory=lambda: ["DEMO"])
    mix: str = DEFAULT_MIX
    seed: int = 1
    account: str = "admin"
    secret: str | None = None
    output: str = "results/loadgen.json"
    progress: bool = True
    json: bool = False
    cpu: list[int] | None = None
    max_resting: int = 1_000
    drain_timeout: float = 10.0
    lag_limit_us: float = LAG_LIMIT_NS / 1000
    p99_limit_us: float = P99_LIMIT_NS / 1000

    @property
    def limits(self) -> Limits:
        return Limits(
            busy_limit=BUSY_LIMIT,
            lag_limit_ns=int(self.lag_limit_us * 1000),
            p99_limit_ns=int(self.p99_limit_us * 1000),
        )

    def config(self) -> dict[str, Any]:
        """The options as recorded in the result file: everything but the secret."""
        d = asdict(self)
        del d["secret"]
        return d


SECONDS = seconds(86_400, zero=True)  # durations of a run: 0 .. a day


def _cpu_list(text: str) -> list[int]:
    try:
        cpus = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of CPU numbers: {text!r}") from None
    usable = os.sched_getaffinity(0)
    bad = [c for c in cpus if c not in usable]
    if not cpus or bad:
        raise argparse.ArgumentTypeError(
            f"CPUs {bad or text!r} are not usable here (usable: {sorted(usable)})"
        )
    return cpus


def build_parser() -> argparse.ArgumentParser:
    d = Options()
    p = _Parser(
        prog="loadgen.py",
        description="Open-loop load generator for the lltrade daemon: latency per message "
        "type from the planned send time, in HdrHistograms (benchmark/README.md).",
    )
    p.add_argument("--host", default=d.host, help="daemon address (%(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="daemon port (%(default)s)")
    p.add_argument(
        "--rate",
        type=positive_int,
        default=d.rate,
        help="messages per second over every connection (%(default)s); with --max, the first step",
    )
    p.add_argument(
        "--max", action="store_true", help="find the highest sustainable rate, from --rate up"
    )
    p.add_argument(
        "--connections", type=positive_int, default=d.connections, help="per process (2)"
    )
    p.add_argument(
        "--processes", type=positive_int, default=d.processes, help="worker processes (1)"
    )
    p.add_argument("--duration", type=SECONDS, default=d.duration, help="measured seconds (10)")
    p.add_argument("--warmup", type=SECONDS, default=d.warmup, help="unmeasured seconds first (2)")
    p.add_argument(
        "--symbols", default=",".join(d.symbols), help="comma-separated symbol names (DEMO)"
    )
    p.add_argument("--mix", default=d.mix, help="kind=weight,... (%(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (1)")
    p.add_argument("--account", default=d.account, help="account to log on as (admin)")
    p.add_argument("--secret", help="its secret (default: the demo secret of a demo account)")
    p.add_argument("--output", default=d.output, help="result file (%(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    p.add_argument(
        "--cpu",
        type=_cpu_list,
        help="CPUs for the worker processes, comma-separated, used in turn (default: the "
        "CPUs the daemon is not pinned to, when it is local and pinned)",
    )
    p.add_argument(
        "--max-resting",
        type=positive_int,
        default=d.max_resting,
        help="resting orders per connection; at this many a passive order becomes a cancel "
        "(%(default)s)",
    )
    p.add_argument(
        "--drain-timeout",
        type=SECONDS,
        default=d.drain_timeout,
        help="seconds to wait for answers after the last send (%(default)s)",
    )
    p.add_argument(
        "--lag-limit-us",
        type=float,
        default=d.lag_limit_us,
        help="p99 send lateness above which the generator is the bottleneck (%(default)s us)",
    )
    p.add_argument(
        "--p99-limit-us",
        type=float,
        default=d.p99_limit_us,
        help="p99 latency above which a rate is not sustainable (%(default)s us)",
    )
    return p


def parse_options(argv: list[str] | None) -> Options:
    """The options, checked; :class:`UsageError` (one line) for a bad one."""
    a = build_parser().parse_args(argv)
    try:
        parse_mix(a.mix)
    except MixError as exc:
        raise UsageError(f"--mix: {exc}") from None
    symbols = [s.strip() for s in a.symbols.split(",") if s.strip()]
    if not symbols:
        raise UsageError("--symbols: give at least one symbol name")
    if a.duration <= 0:
        raise UsageError("--duration must be > 0")
    if not 0 < a.port < 65536:
        raise UsageError(f"--port must be 1 .. 65535, got {a.port}")
    secret = a.secret if a.secret is not None else DEMO_SECRETS.get(a.account)
    if secret is None:
        raise UsageError(f"--secret: {a.account!r} is not a demo account, give its secret")
    if order_count(a.rate, a.warmup + a.duration) < 1:
        raise UsageError("--rate x (--warmup + --duration) plans no message at all")
    return Options(
        host=a.host,
        port=a.port,
        rate=a.rate,
        max=a.max,
        connections=a.connections,
        processes=a.processes,
        duration=a.duration,
        warmup=a.warmup,
        symbols=symbols,
        mix=format_mix(parse_mix(a.mix)),
        seed=a.seed,
        account=a.account,
        secret=secret,
        output=a.output,
        progress=not a.no_progress,
        json=a.json,
        cpu=a.cpu,
        max_resting=a.max_resting,
        drain_timeout=a.drain_timeout,
        lag_limit_us=a.lag_limit_us,
        p99_limit_us=a.p99_limit_us,
    )


def demo_limit_warnings(opts: Options, rate: int) -> list[str]:
    """What the demo config's account limits will refuse at this rate (a real config may differ)."""
    try:
        account = default_config().account(opts.account)
    except KeyError:
        return []
    if opts.secret != DEMO_SECRETS.get(opts.account):
        return []
    warnings = []
    sessions = opts.processes * opts.connections
    per_session = rate / sessions
    if per_session > account.limits.msg_rate_per_s:
        warnings.append(
            f"{fmt_rate(per_session)} per session is above {opts.account}'s msg_rate_per_s in "
            f"the demo config ({fmt_rate(account.limits.msg_rate_per_s)}): expect RATE_LIMITED "
            "rejects (use --account admin or more --connections)"
        )
    if sessions * opts.max_resting > account.limits.max_open_orders:
        warnings.append(
            f"{sessions} sessions x --max-resting {opts.max_resting} can pass {opts.account}'s "
            f"max_open_orders ({account.limits.max_open_orders}): expect MAX_OPEN_ORDERS rejects"
        )
    return warnings


def placement_warnings(opts: Options) -> list[str]:
    """Workers that will share a CPU (with each other or the daemon) keep a looser schedule."""
    daemon = daemon_process(opts.host, opts.port)
    cpus = worker_cpus(opts.cpu, daemon, opts.processes)
    spin = spinners(cpus, daemon_cpus(daemon), len(os.sched_getaffinity(0)))
    if all(spin):
        return []
    where = ", ".join("-" if c is None else str(c) for c in cpus)
    return [
        f"{spin.count(False)} of {len(spin)} worker(s) share a CPU (worker CPUs: {where}): "
        "they sleep between sends instead of spinning, so expect more send lag"
    ]


# =====================================================================================
# One run: worker processes, progress, merge
# =====================================================================================


class _Progress:
    """A tqdm bar on stderr when it is a terminal, else nothing."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread
            self.bar = tqdm(
                total=total, desc=label, unit="msg", unit_scale=True, file=sys.stderr, leave=False
            )

    def update(self, sent: int, answered: int) -> None:
        if self.bar is not None:
            self.bar.n = sent
            self.bar.set_postfix_str(f"answered {answered}", refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _plans(
    opts: Options,
    rate: int,
    specs: tuple[SymbolSpec, ...],
    cpus: list[int | None],
    spin: list[bool],
) -> list[WorkerPlan]:
    """One plan per worker process: its share of the run at ``rate``."""
    return [
        WorkerPlan(
            index=i,
            workers=opts.processes,
            connections=opts.connections,
            host=opts.host,
            port=opts.port,
            account=opts.account,
            secret=opts.secret or "",
            rate=rate,
            count=order_count(rate, opts.warmup + opts.duration),
            warm=order_count(rate, opts.warmup),
            mix=parse_mix(opts.mix),
            symbols=specs,
            seed=opts.seed,
            max_resting=opts.max_resting,
            cpu=cpus[i],
            spin=spin[i],
            drain_timeout_s=opts.drain_timeout,
        )
        for i in range(opts.processes)
    ]


def run_once(opts: Options, rate: int, label: str) -> dict[str, Any]:
    """Clean up, run the workers at ``rate``, clean up again; the merged figures.

    Raises :class:`SessionError` when the daemon cannot be used (before any
    load is sent).
    """
    pre = logon(opts.host, opts.port, opts.account, opts.secret or "", mass_cancel=True)
    try:
        specs = tuple(resolve_symbols(pre, opts.symbols))
    finally:
        logout(pre)
    daemon = daemon_process(opts.host, opts.port)
    cpus = worker_cpus(opts.cpu, daemon, opts.processes)
    spin = spinners(cpus, daemon_cpus(daemon), len(os.sched_getaffinity(0)))
    count = order_count(rate, opts.warmup + opts.duration)
    ctx = mp.get_context("spawn")  # fork is unsafe once threads exist (the service's)
    results_q: Any = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("q", 0, lock=False)
    progress = ctx.Array("q", 2 * opts.processes, lock=False)
    procs = [
        ctx.Process(
            target=worker_main,
            args=(plan, results_q, go, start, progress),
            name=f"loadgen-worker-{plan.index}",
            daemon=True,
        )
        for plan in _plans(opts, rate, specs, cpus, spin)
    ]
    results: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    bar = _Progress(opts.progress, count, label)
    daemon_cpu0 = machine_cpu0 = own_cpu0 = 0.0
    t0 = time.monotonic()
    try:
        for proc in procs:
            proc.start()
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ready < len(procs):
            item = _next(results_q, procs, deadline, "log on")
            if item is None:
                continue
            if item[0] == "error":
                raise SessionError(item[2])
            ready += 1
        start.value = time.perf_counter_ns() + START_DELAY_NS
        go.set()
        t0 = time.monotonic()
        daemon_cpu0 = cpu_seconds(daemon) or 0.0
        machine_cpu0, own_cpu0 = machine_busy_seconds(), time.process_time()
        deadline = time.monotonic() + (
            opts.warmup + opts.duration + opts.drain_timeout + RESULT_GRACE_S
        )
        finished = 0
        while finished < len(procs):
            try:
                item = _next(results_q, procs, deadline, "finish")
            except SessionError as exc:
                errors.append(str(exc))
                break
            if item is None:
                bar.update(sum(progress[0::2]), sum(progress[1::2]))
                continue
            kind, index, payload = item
            finished += 1
            if kind == "result":
                results[index] = payload
            else:
                errors.append(payload)
        bar.update(sum(progress[0::2]), sum(progress[1::2]))
        wall = max(time.monotonic() - t0, 1e-9)
        daemon_cpu1 = cpu_seconds(daemon)
        machine_cpu = machine_busy_seconds() - machine_cpu0
        own_cpu = time.process_time() - own_cpu0
    except BaseException:  # Ctrl-C or a failed start: no waiting for the workers
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        bar.close()
        if not go.is_set():
            start.value = -1  # tell waiting workers to give up
            go.set()
        for proc in procs:
            proc.join(timeout=10)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        results_q.close()
    with contextlib.suppress(SessionError):  # the figures matter more than the tidy-up
        logout(logon(opts.host, opts.port, opts.account, opts.secret or "", mass_cancel=True))
    if not results:
        raise SessionError("no worker finished: " + "; ".join(errors or ["unknown failure"]))
    ordered = [results[i] for i in sorted(results)]
    run = merge_run(ordered, rate, opts.duration, opts.limits, errors)
    # CPU over the run, in cores: the daemon's (when local) and everybody else's, so a
    # noisy machine shows in the figures.
    daemon_cpu = None if daemon_cpu1 is None else (daemon_cpu1 - daemon_cpu0) / wall
    workers_cpu = sum(r["cpu_s"] for r in ordered)
    other = machine_cpu - workers_cpu - own_cpu - (daemon_cpu or 0.0) * wall
    run["daemon_cpu"] = daemon_cpu
    run["other_cpu"] = max(other / wall, 0.0)
    run["worker_cpus"] = cpus
    run["worker_spin"] = spin
    run["daemon_pid"] = daemon.pid if daemon is not None else None
    if run["bottleneck"] and run["other_cpu"] > NOISY_CORES:
        run["bottleneck_reason"] += (
            f" (other processes used {run['other_cpu']:.1f} cores meanwhile: a busy machine)"
        )
    preempted = sum(w.get("preempted", 0) for w in run["generator"]["workers"])
    if run["bottleneck"] == "loadgen" and preempted:
        run["bottleneck_reason"] += f"; the workers were preempted {preempted} times"
    return run


def _next(q: Any, procs: list[Any], deadline: float, doing: str) -> tuple[str, int, Any] | None:
    """The next worker message, or None after a short wait (time to update the progress bar).

    Raises :class:`SessionError` if a worker died without a word or time ran out.
    """
    try:
        item: tuple[str, int, Any] = q.get(timeout=0.2)
        return item
    except queue.Empty:
        pass
    dead = [p for p in procs if p.exitcode not in (None, 0)]
    if dead:
        raise SessionError(
            f"{dead[0].name} exited with code {dead[0].exitcode} before it could {doing}"
        )
    if time.monotonic() > deadline:
        raise SessionError(f"the workers did not {doing} in time")
    return None


def _figures(run: dict[str, Any]) -> RunFigures:
    return RunFigures(
        target_rate=run["target_rate"],
        sent_rate=run["sent_rate"],
        achieved_rate=run["achieved_rate"],
        generator_busy=run["generator"]["busy"],
        lag_p99_ns=run["generator"]["send_lag_p99_ns"],
        p99_ns=run["types"]["all"]["p99_ns"],
        unanswered=run["unanswered"],
        errors=len(run["errors"]),
    )


def search_max(opts: Options) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Step the rate (``loadgen_verdict.next_rate``); the best passing run, and every step.

    The returned run is the highest sustainable one; its bottleneck is the
    one that stopped the search (the first failing rate above it), which
    says who limits the peak.
    """
    steps: list[tuple[int, bool]] = []
    table: list[dict[str, Any]] = []
    runs: dict[int, dict[str, Any]] = {}
    rate = next_rate(steps, opts.rate)
    while rate is not None:
        try:
            run = run_once(opts, rate, f"step {len(steps) + 1}: {fmt_rate(rate)}")
        except SessionError as exc:
            if not runs:
                raise
            # The daemon went away mid-search: keep what was measured, say why it stopped.
            print(f"step {len(steps) + 1}: {fmt_rate(rate)}: {exc}", file=sys.stderr)
            table.append(
                {
                    "rate": float(rate),
                    "achieved_rate": 0.0,
                    "p99_ns": 0,
                    "ok": False,
                    "bottleneck": None,
                    "reason": str(exc),
                }
            )
            steps.append((rate, False))
            runs[rate] = {**runs[max(runs)], "bottleneck": None, "bottleneck_reason": str(exc)}
            break
        ok = step_ok(_figures(run), opts.limits)
        steps.append((rate, ok))
        runs[rate] = run
        table.append(
            {
                "rate": float(rate),
                "achieved_rate": run["achieved_rate"],
                "p99_ns": run["types"]["all"]["p99_ns"],
                "ok": ok,
                "bottleneck": run["bottleneck"],
                "reason": run["bottleneck_reason"],
            }
        )
        print(
            f"step {len(steps)}: {fmt_rate(rate)} -> achieved {fmt_rate(run['achieved_rate'])}, "
            f"p99 {run['types']['all']['p99_ns'] / 1000:.0f} us: "
            + ("ok" if ok else f"not sustainable ({run['bottleneck_reason']})"),
            file=sys.stderr,
        )
        rate = next_rate(steps, opts.rate)
    best = peak(steps)
    if best is None:
        worst = runs[min(runs)]
        return worst, table
    run = dict(runs[best])
    above = [r for r, ok in steps if not ok and r > best]
    if above:
        stopper = runs[min(above)]
        why = stopper["bottleneck_reason"] or "; ".join(stopper["errors"]) or "errors"
        run["bottleneck"] = stopper["bottleneck"]
        run["bottleneck_reason"] = f"at {fmt_rate(min(above))}: {why}"
    return run, table


# =====================================================================================
# Main
# =====================================================================================


def _on_sigterm(signum: int, frame: object) -> None:
    print("loadgen: terminated", file=sys.stderr)
    raise SystemExit(128 + signum)  # unwinds through run_once, which stops the workers


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        opts = parse_options(argv)
    except UsageError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    started = time.time()
    summary_out = sys.stderr if opts.json else sys.stdout
    for warning in demo_limit_warnings(opts, opts.rate) + placement_warnings(opts):
        print(f"loadgen: warning: {warning}", file=sys.stderr)
    try:
        if opts.max:
            run, table = search_max(opts)
            max_search: list[dict[str, Any]] | None = table
        else:
            run = run_once(opts, opts.rate, fmt_rate(opts.rate))
            max_search = None
    except SessionError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130
    doc = document(started, opts.config(), machine_info(), run, max_search)
    write(doc, opts.output)
    if max_search is not None:
        best = peak([(int(s["rate"]), s["ok"]) for s in max_search])
        print_search(max_search, best, summary_out)
    print_summary(doc, summary_out)
    print(f"written: {opts.output}", file=summary_out)
    if opts.json:
        import json

        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
