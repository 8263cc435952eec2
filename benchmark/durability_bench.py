"""Throughput and round-trip latency of the daemon per journal durability policy, in one run.

    python benchmark/durability_bench.py [--repeats 3] [--rate 10000] [--duration 3]
                                         [--policies off,none,batch,interval,interval+ack]
                                         [--dir DIR] [--json PATH]

For each policy a daemon is started (``lltrade run --port 0``, pinned to one
CPU, its own journal directory and telemetry file), measured twice with
``benchmark/roundtrip.py``'s load generator, and stopped:

* **latency**: one connection, open loop at ``--rate`` orders per second; the
  round trip of every order from its planned send time to its
  ``OrderAccepted`` (coordinated omission corrected), p50, p99 and p99.9;
* **throughput**: ``--connections`` sessions each keeping ``--window`` orders
  in flight (closed loop); orders acknowledged per second, and the daemon's
  CPU time per order.

The policies (docs/journal.md): ``off`` (``--no-journal``, the baseline),
``none`` (one copy per batch into the memory-mapped segment, page cache),
``batch`` (an fdatasync per batch before its acks), ``interval`` (an fdatasync
every 5 ms; acks do not wait), ``interval+ack`` (the same with
``ack_after_sync = true``: acks wait for the sync; run from a copy of the
embedded configuration) and ``none-write`` (``none`` with one ``write(2)`` per
batch instead of the mapped segment, ``--no-journal-mmap``).  The journals are
written under ``--dir`` (default: the system's temp dir), so the syncing
policies measure that file system's fdatasync; its type is printed.

The machine is noisy, so the policies are interleaved: every round runs each
of them once, in an order rotated by one each round, and the table shows the
median of ``--repeats`` rounds and each policy's ratio to the journal-off
median.  Each figure keeps the load generator's verdict from roundtrip.py
(``LOADGEN``: the generator, not the daemon, set the figure; ``late``: its own
lateness is in the tail; ``window``: too few orders in flight) and notes a
round in which other processes used more than 5% of a core meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import roundtrip
from figures import fmt_ns, fmt_rate, fmt_ratio
from lltrade._telemetry import default_path
from lltrade.config import DEFAULT_CONFIG_TOML, load_config

BASELINE: Final = "off"
POLICIES: Final = ("off", "none", "batch", "interval", "interval+ack", "none-write")
LABELS: Final = {"off": "journal off"}  #: table names that differ from the policy's


# =====================================================================================
# Daemon command lines
# =====================================================================================


def ack_after_sync_config() -> str:
    """The embedded configuration with ``ack_after_sync = true`` in its ``[journal]``."""
    head = "[journal]\n"
    if DEFAULT_CONFIG_TOML.count(head) != 1 or "ack_after_sync" in DEFAULT_CONFIG_TOML:
        raise RuntimeError("the embedded configuration's [journal] section changed shape")
    return DEFAULT_CONFIG_TOML.replace(head, head + "ack_after_sync = true\n")


def policy_flags(policy: str, config_path: str | None) -> list[str]:
    """The ``lltrade run`` flags selecting ``policy``.

    ``config_path`` is the :func:`ack_after_sync_config` file, needed by
    ``interval+ack`` only.
    """
    if policy == "off":
        return ["--no-journal"]
    if policy == "interval+ack":
        if config_path is None:
            raise ValueError("interval+ack needs the ack_after_sync configuration file")
        return ["--config", config_path, "--durability", "interval"]
    if policy in ("none", "batch", "interval"):
        return ["--durability", policy]
    if policy == "none-write":
        return ["--durability", "none", "--no-journal-mmap"]
    raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")


def rotated(policies: Sequence[str], round_index: int) -> list[str]:
    """Round ``round_index``'s order: ``policies`` rotated left by ``round_index``."""
    k = round_index % len(policies) if policies else 0
    return [*policies[k:], *policies[:k]]


# =====================================================================================
# Figures: one measurement per policy and round; medians and ratios
# =====================================================================================


@dataclass
class Measurement:
    """One policy in one round: a latency run and a throughput run of one daemon."""

    policy: str
    round: int
    orders_per_s: float  #: throughput run: orders acknowledged per second
    us_per_order: float | None  #: throughput run: daemon CPU time per order (blocking mode)
    peak_verdict: str  #: roundtrip.peak_limit: ok, LOADGEN, window
    p50_ns: float  #: latency run, from the planned send time
    p99_ns: float
    p999_ns: float
    latency_rate: float  #: latency run: the rate achieved
    latency_verdict: str  #: roundtrip.GeneratorCheck: ok, late, LOADGEN
    rejected: int  #: orders rejected over both runs (none expected)
    other_cpu: float  #: cores other processes used meanwhile (the larger of the two runs)
    error: str | None = None

    @property
    def noisy(self) -> bool:
        """Other processes used more than roundtrip.OTHER_LOAD_LIMIT of a core meanwhile."""
        return self.other_cpu > roundtrip.OTHER_LOAD_LIMIT


@dataclass
class PolicySummary:
    """A policy's medians over the rounds that completed, and its ratios to the baseline."""

    policy: str
    rounds: int  #: rounds without an error
    orders_per_s: float | None
    orders_per_s_min: float | None
    orders_per_s_max: float | None
    us_per_order: float | None
    p50_ns: float | None
    p99_ns: float | None
    p999_ns: float | None
    rate_ratio: float | None = None  #: orders/s over the baseline's
    p50_ratio: float | None = None  #: p50 over the baseline's
    p99_ratio: float | None = None
    notes: list[str] = field(default_factory=list)


def short_error(error: str, width: int = 160) -> str:
    """One line of a possibly multi-line error (a daemon's log tail): its first and last."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "error"
    text = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"
    return text if len(text) <= width else text[: width - 3] + "..."


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None:
        return None
    return roundtrip.ratio(value, base)


def summarise(
    measurements: Sequence[Measurement], policies: Sequence[str], baseline: str = BASELINE
) -> list[PolicySummary]:
    """Per policy, in ``policies`` order: medians over its rounds without an error, ratios
    to ``baseline``'s medians (None without a baseline), and notes counting the rounds
    that failed or that a verdict other than ``ok`` or noise qualifies."""
    out: list[PolicySummary] = []
    for policy in policies:
        mine = [m for m in measurements if m.policy == policy]
        good = [m for m in mine if m.error is None]
        rates = [m.orders_per_s for m in good]
        s = PolicySummary(
            policy=policy,
            rounds=len(good),
            orders_per_s=_median(rates),
            orders_per_s_min=min(rates, default=None),
            orders_per_s_max=max(rates, default=None),
            us_per_order=_median([m.us_per_order for m in good]),
            p50_ns=_median([m.p50_ns for m in good]),
            p99_ns=_median([m.p99_ns for m in good]),
            p999_ns=_median([m.p999_ns for m in good]),
        )
        counts: dict[str, int] = {}
        noise = [m.other_cpu for m in mine if not m.error and m.noisy]
        for m in mine:
            keys = [f"error: {short_error(m.error)}"] if m.error else []
            if not m.error:  # a failed round's verdicts say nothing more
                keys += [f"throughput {m.peak_verdict}"] if m.peak_verdict != "ok" else []
                keys += [f"latency {m.latency_verdict}"] if m.latency_verdict != "ok" else []
                keys += [f"noisy (others used up to {max(noise):.0%} of a core)"] if m.noisy else []
                keys += [f"{m.rejected} rejected"] if m.rejected else []
            for key in keys:
                counts[key] = counts.get(key, 0) + 1
        s.notes = [f"{key} x{n}" for key, n in counts.items()]
        out.append(s)
    base = next((s for s in out if s.policy == baseline), None)
    if base is not None:
        for s in out:
            s.rate_ratio = _ratio(s.orders_per_s, base.orders_per_s)
            s.p50_ratio = _ratio(s.p50_ns, base.p50_ns)
            s.p99_ratio = _ratio(s.p99_ns, base.p99_ns)
    return out


def format_table(summaries: Sequence[PolicySummary], repeats: int) -> str:
    """The run's one table: a row per policy, medians of ``repeats`` rounds."""

    def rate(x: float | None) -> str:
        return "-" if x is None else fmt_rate(x)

    head = (
        f"{'policy':<13} {'orders/s':>10} {'vs off':>7} {'range':>21} {'us/order':>9} "
        f"{'p50':>9} {'vs off':>7} {'p99':>9} {'vs off':>7} {'p99.9':>9}  notes"
    )
    lines = [head, "-" * len(head)]
    for s in summaries:
        spread = (
            "-"
            if s.orders_per_s_min is None or s.orders_per_s_max is None
            else f"{rate(s.orders_per_s_min)}..{rate(s.orders_per_s_max)}"
        )
        us = "-" if s.us_per_order is None else f"{s.us_per_order:.2f}"
        lines.append(
            f"{LABELS.get(s.policy, s.policy):<13} {rate(s.orders_per_s):>10} "
            f"{fmt_ratio(s.rate_ratio):>7} {spread:>21} {us:>9} {fmt_ns(s.p50_ns):>9} "
            f"{fmt_ratio(s.p50_ratio):>7} {fmt_ns(s.p99_ns):>9} {fmt_ratio(s.p99_ratio):>7} "
            f"{fmt_ns(s.p999_ns):>9}  "
            + ("; ".join(s.notes) if s.notes else "")
            + (f" (only {s.rounds} of {repeats} rounds)" if s.rounds < repeats else "")
        )
    lines += [
        "",
        f"medians of {repeats} interleaved rounds; orders/s: closed loop, its range over the",
        "rounds, us/order: the daemon's CPU time per order; p50..p99.9: open-loop round trip",
        "from the planned send time; vs off: over the journal-off median.",
    ]
    return "\n".join(lines)


# =====================================================================================
# Running the daemons
# =====================================================================================


def filesystem_of(path: Path) -> str:
    """The file system type and mount point holding ``path`` (e.g. ``ext4 on /``)."""
    real = os.path.realpath(path)
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best.mountpoint)):
            best = part
    return f"{best.fstype} on {best.mountpoint}" if best else "unknown"


def measure(
    policy: str,
    round_index: int,
    args: argparse.Namespace,
    root: Path,
    config_path: str | None,
    price: int,
) -> Measurement:
    """Start a daemon under ``policy``, run the latency then the throughput load, stop it."""
    journal = root / f"journal-{policy}-{round_index}"
    name = f"lltrade-durability-{os.getpid()}-{round_index}-{policy.replace('+', '-')}"
    argv = [
        *roundtrip.daemon_argv(args.server_cpu, args.busy_poll, "uvloop"),
        *("--journal-dir", str(journal), "--telemetry-name", name),
        *policy_flags(policy, config_path),
    ]
    os.sync()  # the previous daemon's writeback must not land in this one's figures
    server = roundtrip.Server(f"daemon ({policy})", argv, args.all_cpus)
    try:
        server.wait_ready()
        lat = roundtrip.measure_latency(server, False, args.busy_poll, args, price)
        peak = roundtrip.measure_peak(server, False, args.busy_poll, args, price)
    finally:
        server.stop()
        with contextlib.suppress(OSError):  # left behind only by a daemon that was killed
            os.unlink(default_path(name))
        shutil.rmtree(journal, ignore_errors=True)
    errors = [f"{what}: {e}" for what, e in (("latency", lat.error), ("peak", peak.error)) if e]
    return Measurement(
        policy=policy,
        round=round_index,
        orders_per_s=peak.rate,
        us_per_order=peak.us_per_order,
        peak_verdict=peak.limit[0],
        p50_ns=lat.stats["p50_ns"],
        p99_ns=lat.stats["p99_ns"],
        p999_ns=lat.stats["p999_ns"],
        latency_rate=lat.achieved_rate,
        latency_verdict=lat.generator.verdict,
        rejected=lat.rejected + peak.rejected,
        other_cpu=max(lat.other_cpu, peak.other_cpu),
        error="; ".join(errors) or None,
    )


def failed(policy: str, round_index: int, error: str) -> Measurement:
    """A measurement that did not happen: it counts only as an error."""
    return Measurement(policy, round_index, 0.0, None, "ERROR", 0.0, 0.0, 0.0, 0.0, "ERROR", 0,
                       0.0, error)  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help=f"comma-separated, from {', '.join(POLICIES)} (default: all)",
    )
    p.add_argument("--rate", type=int, default=10_000, help="latency: orders/s (default 10000)")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (3)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    p.add_argument("--connections", type=int, default=4, help="throughput: sessions (4)")
    p.add_argument("--window", type=int, default=256, help="throughput: orders in flight (256)")
    p.add_argument("--busy-poll", action="store_true", help="daemons busy-poll (default: block)")
    p.add_argument("--server-cpu", type=int, help="CPU of the daemons (default: last usable)")
    p.add_argument("--client-cpu", type=int, help="CPU of the load generator (default: next)")
    p.add_argument(
        "--behind-pct",
        type=float,
        default=10.0,
        help="generator lateness tolerated, %% of the send interval (default 10)",
    )
    p.add_argument("--dir", help="where to write the journals (default: the system temp dir)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = p.parse_args(argv)
    args.policy_list = [x.strip() for x in args.policies.split(",") if x.strip()]
    unknown = [x for x in args.policy_list if x not in POLICIES]
    if unknown or not args.policy_list:
        p.error(f"--policies: choose from {', '.join(POLICIES)}, got {args.policies!r}")
    if args.repeats < 1 or args.rate < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--repeats and --rate must be >= 1, --duration > 0, --warmup >= 0")
    if args.connections < 1 or args.window < 1:
        p.error("--connections and --window must be >= 1")
    if args.dir is not None and not os.path.isdir(args.dir):
        p.error(f"--dir {args.dir}: no such directory")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.all_cpus = os.sched_getaffinity(0)
    args.server_cpu, args.client_cpu = roundtrip.pick_cpus(args)
    root = Path(tempfile.mkdtemp(prefix="lltrade-durability-", dir=args.dir))
    info = roundtrip.machine_info()
    command = shlex.join([sys.executable, *sys.argv])
    print(f"command: {command}")
    print(f"machine: {info['cpu']}, {info['cores']} cores (usable {info['cores_usable']})")
    print(
        f"python {info['python']}, uvloop {info['uvloop']}, commit {info['commit']}; daemons on "
        f"CPU {args.server_cpu}, load generator on CPU {args.client_cpu}, "
        + ("busy-polling" if args.busy_poll else "blocking")
    )
    print(f"journals in {root} ({filesystem_of(root)})")
    print(
        f"per daemon: open loop at {args.rate}/s on one connection, then {args.connections} x "
        f"{args.window} orders in flight; {args.warmup:g} s warm-up + {args.duration:g} s each"
    )
    print()
    measurements: list[Measurement] = []
    try:
        config_path = None
        if "interval+ack" in args.policy_list:
            path = root / "interval-ack.toml"
            path.write_text(ack_after_sync_config())
            if not load_config(path).journal.ack_after_sync:
                raise RuntimeError(f"{path}: ack_after_sync did not take")
            config_path = str(path)
        price = roundtrip.reference_price()
        t0 = time.monotonic()
        for r in range(args.repeats):
            for policy in rotated(args.policy_list, r):
                try:
                    m = measure(policy, r, args, root, config_path, price)
                except (OSError, RuntimeError) as exc:  # a daemon that would not start, ...
                    m = failed(policy, r, f"{type(exc).__name__}: {exc}")
                measurements.append(m)
                print(
                    f"round {r + 1}/{args.repeats} {LABELS.get(policy, policy):<13} "
                    f"{fmt_rate(m.orders_per_s):>10} ({m.peak_verdict}), p50 {fmt_ns(m.p50_ns)}, "
                    f"p99 {fmt_ns(m.p99_ns)} ({m.latency_verdict})"
                    + (f" noisy ({m.other_cpu:.0%})" if m.noisy else "")
                    + (f"  ERROR {short_error(m.error)}" if m.error else "")
                    + f"  [{time.monotonic() - t0:.0f} s]",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summaries = summarise(measurements, args.policy_list)
    print()
    print(format_table(summaries, args.repeats))
    first_error = next((m for m in measurements if m.error), None)
    if first_error is not None:
        print(f"\nfirst error ({first_error.policy}, round {first_error.round + 1}) in full:")
        print(first_error.error)
    if args.json:
        doc: dict[str, Any] = {
            "command": command,
            "machine": info,
            "journal_filesystem": filesystem_of(root.parent),
            "settings": {
                k: v for k, v in vars(args).items() if k not in ("all_cpus", "json", "policies")
            },
            "measurements": [{**asdict(m), "noisy": m.noisy} for m in measurements],
            "summary": [asdict(s) for s in summaries],
        }
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwritten: {args.json}")
    return 1 if any(m.error for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
