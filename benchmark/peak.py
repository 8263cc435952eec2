"""The daemon's peak order throughput, driven by a load generator in C.

    python benchmark/peak.py [--connections 8] [--window 256] [--duration 5] [--warmup 1]
                             [--modes blocking,busy-poll] [--journals off,none] [--json PATH]

The Python load generators (``roundtrip.py --peak``, ``loadgen.py --max``)
saturate their own core before the daemon's.  This one is ``blast.c`` (beside
this file), built with the system C compiler into ``build/blast``: per
connection it keeps ``--window`` orders in flight, a new one for each
answer, the same alternating GTC buy / IOC sell of 1 lot of DEMO at 100.00 as
``roundtrip.py``, from the demo ``admin`` account (its sessions' rate limit is 1M
messages/s each: a row that passes it shows ``rejected`` answers, counted but
cheaper than orders).  The daemon (``lltrade run
--port 0``, pinned to one CPU) and the generator (pinned to another) run as
separate processes; each row is one daemon per mode and journal setting, run
one after the other in the same invocation, ``--repeats`` rounds interleaved,
medians reported; a row's ratio to the journal off is the median of its ratio
to the journal-off run of the same round (slow drifts of a shared machine cancel out).

Per row: orders answered per second during the measured ``--duration``
seconds after ``--warmup``; the daemon's CPU time per answered order over the
whole run (blocking mode only: a busy-polling daemon uses its whole core
whatever the load); the generator's CPU share.  ``LOADGEN`` marks a row whose
generator used more than 90% of its core: the figure is then a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lltrade.config import DEMO_SECRETS
from lltrade.protocol import PROTOCOL_VERSION, Logon, encode_frame
from roundtrip import JOURNALS, Server, daemon_argv, journal_argv, machine_info

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path(__file__).resolve().parent / "blast.c"
BINARY = ROOT / "build" / "blast"
ACCOUNT = "admin"
BUSY_LIMIT = 0.9


def build_blast() -> Path:
    """Compile blast.c into build/blast when the binary is missing or older than the source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("peak.py: no C compiler (cc or gcc) to build benchmark/blast.c")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([cc, "-O2", "-Wall", "-o", str(BINARY), str(SOURCE)], check=True)
    return BINARY


def logon_hex() -> str:
    out = bytearray()
    encode_frame(Logon(1, PROTOCOL_VERSION, ACCOUNT, DEMO_SECRETS[ACCOUNT]), out)
    return out.hex()


def pinned_to(cpu: int | None) -> Any:
    return None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))


def run_row(
    mode: str, journal: str, args: argparse.Namespace, cpus: tuple[int | None, int | None]
) -> dict[str, Any]:
    """One daemon, one blast run against it."""
    server_cpu, client_cpu = cpus
    argv = daemon_argv(server_cpu, mode == "busy-poll", "uvloop")
    journal_dir = tempfile.mkdtemp(prefix="lltrade-peak-", dir=args.dir)
    name = f"lltrade-peak-{os.getpid()}"
    argv += ["--telemetry-name", name, *journal_argv(journal, journal_dir)]
    all_cpus = set(os.sched_getaffinity(0))
    server = Server(f"daemon {mode} journal {journal}", argv, all_cpus)
    try:
        host, port = server.wait_ready()
        cpu_before = sum(server.cpu_seconds())
        blast = subprocess.run(
            [
                str(BINARY),
                host,
                str(port),
                str(args.connections),
                str(args.window),
                str(args.warmup),
                str(args.duration),
                *[logon_hex()] * args.connections,
            ],
            capture_output=True,
            text=True,
            timeout=args.warmup + args.duration + 60,
            preexec_fn=pinned_to(client_cpu),
        )
        daemon_cpu = sum(server.cpu_seconds()) - cpu_before
    finally:
        server.stop()
        shutil.rmtree(journal_dir, ignore_errors=True)
    try:
        result = json.loads(blast.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"peak.py: blast failed: {blast.stderr.strip() or blast.stdout}") from None
    if "error" in result:
        raise SystemExit(f"peak.py: blast: {result['error']}")
    rate = result["answered"] / result["seconds"]
    generator_share = result["cpu_s"] / result["seconds"]
    per_order = daemon_cpu / result["answered_total"] if mode == "blocking" else None
    return {
        "mode": mode,
        "journal": journal,
        "rate": rate,
        "rejected": result["rejected"],
        "daemon_us_per_order": None if per_order is None else per_order * 1e6,
        "generator_cpu": generator_share,
        "limit": "LOADGEN" if generator_share > BUSY_LIMIT else "daemon",
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    # 8 sessions: each stays well under the admin account's 1M messages/s rate limit.
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--window", type=int, default=256, help="orders in flight per connection")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default="blocking,busy-poll")
    p.add_argument(
        "--journals",
        default="off,none",
        help=f"comma-separated, of: {', '.join(JOURNALS)} (-write: write(2), not mmap)",
    )
    p.add_argument("--dir", default=None, help="where the journals go (default: temp dir)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.journals = [j for j in args.journals.split(",") if j]
    for m in args.modes:
        if m not in ("blocking", "busy-poll"):
            p.error(f"--modes: {m!r} is not blocking or busy-poll")
    for j in args.journals:
        if j not in JOURNALS:
            p.error(f"--journals: {j!r} is not one of {', '.join(JOURNALS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    build_blast()
    usable = sorted(os.sched_getaffinity(0))
    cpus = (usable[-1], usable[-2]) if len(usable) >= 2 else (None, None)
    rows = [(m, j) for m in args.modes for j in args.journals]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {r: [] for r in rows}
    for round_no in range(args.repeats):
        for mode, journal in rows[round_no % len(rows) :] + rows[: round_no % len(rows)]:
            row = run_row(mode, journal, args, cpus)
            results[(mode, journal)].append(row)
            print(
                f"round {round_no + 1}/{args.repeats} {mode:<9} journal {journal:<8} "
                f"{row['rate'] / 1e3:8.1f} k/s ({row['limit']}), {row['rejected']} rejected",
                flush=True,
            )
    info = machine_info()
    print(
        f"\n{info.get('cpu', '?')}; daemon on CPU {cpus[0]}, blast on CPU {cpus[1]}; "
        f"{args.connections} connections x {args.window} in flight"
    )
    print(f"{'mode':<10} {'journal':<9} {'orders/s':>12} {'vs off':>7} {'us/order':>9} limit")
    summary = []
    for mode, journal in rows:
        runs = results[(mode, journal)]
        rate = statistics.median(r["rate"] for r in runs)
        per = [r["daemon_us_per_order"] for r in runs if r["daemon_us_per_order"] is not None]
        us = statistics.median(per) if per else None
        base = results.get((mode, "off"))
        # Paired: each round's rate over the journal-off rate of the same round (run next
        # to it), then the median; slow drifts of a shared machine cancel out.
        ratio = (
            statistics.median(r["rate"] / b["rate"] for r, b in zip(runs, base, strict=True))
            if base
            else None
        )
        limits = sorted({r["limit"] for r in runs})
        summary.append(
            {
                "mode": mode,
                "journal": journal,
                "rate": rate,
                "vs_off": ratio,
                "daemon_us_per_order": us,
                "limits": limits,
                "runs": runs,
            }
        )
        print(
            f"{mode:<10} {journal:<9} {rate / 1e3:10.1f} k/s "
            f"{'' if ratio is None else f'{ratio:6.2f}x':>7} "
            f"{'-' if us is None else f'{us:.3f}':>9} {','.join(limits)}"
        )
    print(
        "medians of the rounds; vs off: the median of each round's ratio to the journal "
        "off of that round; us/order: the daemon's CPU time per answered order (blocking "
        "mode); LOADGEN: the generator's core was saturated (a lower bound)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_bytes(
            msgspec.json.format(msgspec.json.encode({"machine": info, "rows": summary}))
        )
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
