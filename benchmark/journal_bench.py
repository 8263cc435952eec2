"""Journal benchmark: append throughput per durability policy, replay speed, snapshot cost.

    python benchmark/journal_bench.py [--commands 2000000] [--batch 4096] [--json [PATH]]

One seeded command stream (``lltrade.workload``'s replay mix) is cut into
batches of ``--batch`` commands and measured five ways:

* **engine only**: ``Engine.process`` per batch, no journal (the baseline);
* **journal + engine**, per durability policy (``none``, ``batch``,
  ``interval``, and ``none-write``: ``none`` with one ``write(2)`` per append
  instead of the memory-mapped segment): each batch is appended with
  ``JournalWriter.append_commands`` (a copy into the mapped segment; under
  ``batch`` an ``fdatasync`` too) and then processed,
  as the daemon does; under ``interval`` ``maybe_sync`` is called after every
  batch, standing in for the daemon's timer.  The overhead is against engine
  only; the latency of each append is timed too (p50, p99, max);
* **append only**, per policy: the journal's own throughput (commands/s, and MB/s
  of records written: the rows are packed, about 14 bytes a command);
* **replay**: ``lltrade.journal.recover`` of the whole journal into a fresh
  engine (read, verify every checksum, ``Engine.process``), with records of
  ``--batch`` commands and of ``--small-batch`` commands (a lightly loaded
  daemon writes small batches); the state hash must equal the live run's.
  The time to recover a 10M-command journal is extrapolated from it, or
  measured with ``--recovery-commands 10000000`` (generating the stream takes
  about 2.5 s per million commands);
* **snapshots**: ``engine_snapshot`` + ``write_snapshot`` and
  ``restore_engine`` for the stream's final book and for a deep book of
  ``--deep-orders`` resting orders: the engine stalls for ``engine_snapshot``.

The garbage collector is off while timing; throughput is the median of
``--repeats`` runs.  Journals are written under ``--dir`` (default: a
temporary directory in the system's temp dir), so the ``batch`` and
``interval`` figures are those of that file system's fdatasync.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import lltrade
from lltrade.journal import (
    Durability,
    JournalWriter,
    engine_snapshot,
    recover,
    restore_engine,
    write_snapshot,
)
from lltrade.workload import StreamGenerator, WorkloadSpec, generate

POLICIES: dict[str, tuple[Durability, bool]] = {
    "none": ("none", True),
    "none-write": ("none", False),  # the segment written with write(2), not mapped
    "batch": ("batch", True),
    "interval": ("interval", True),
}
"""Each measured policy: its durability, and whether the segment is memory-mapped."""
TEN_MILLION = 10_000_000


def open_writer(path: Path, policy: str, args: argparse.Namespace) -> JournalWriter:
    durability, mapped = POLICIES[policy]
    return JournalWriter(path, durability, args.interval_ms, args.segment_bytes, mapped=mapped)


def new_engine(spec: WorkloadSpec) -> lltrade.Engine:
    engine = lltrade.Engine()
    engine.add_book(0, spec.min_price, spec.max_price, spec.tick, spec.lot)
    return engine


def run_batch(engine: lltrade.Engine, rows: np.ndarray, events: list[np.ndarray]) -> None:
    """``engine.process`` of one batch, as the daemon loops over an early stop."""
    done, n = 0, len(rows)
    while done < n:
        try:
            engine.process(rows[done:], events[0])
        except ValueError:
            events[0] = np.zeros(len(events[0]) * 4, dtype=lltrade.EVENT_DTYPE)
            continue
        done += engine.commands_processed


def timed(
    fn: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None
) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``repeats`` runs (GC off) and its last result.

    ``setup`` runs untimed before each run (e.g. removing the previous journal).
    """
    times = []
    result = None
    for _ in range(repeats):
        if setup is not None:
            setup()
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return statistics.median(times), result


def percentiles(ns: list[int]) -> dict[str, float]:
    a = np.array(ns, dtype=np.float64) / 1e3
    return {
        "p50_us": float(np.percentile(a, 50)),
        "p99_us": float(np.percentile(a, 99)),
        "max_us": float(a.max()),
    }


def fresh_dir(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def remover(path: Path) -> Callable[[], None]:
    """A ``timed`` setup that removes ``path`` and flushes dirty pages first, so that
    one run's writeback does not land in the next run's timing."""

    def setup() -> None:
        shutil.rmtree(path, ignore_errors=True)
        os.sync()

    return setup


def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    spec = WorkloadSpec(commands=args.commands, seed=args.seed)
    t0 = time.perf_counter()
    workload = generate(spec)
    gen_s = time.perf_counter() - t0
    commands = workload.commands
    batches = [commands[i : i + args.batch] for i in range(0, len(commands), args.batch)]
    n = len(commands)
    out: dict[str, Any] = {
        "commands": n,
        "batch": args.batch,
        "batches": len(batches),
        "generate_s": gen_s,
        "dir": str(root),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }

    # -- engine only --------------------------------------------------------------------
    def engine_only() -> int:
        engine = new_engine(spec)
        events = [np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)]
        for rows in batches:
            run_batch(engine, rows, events)
        return engine.book(0).state_hash()

    secs, live_hash = timed(engine_only, args.repeats)
    assert live_hash == workload.state_hash(), "engine-only run disagrees with the model"
    out["engine_only"] = {"seconds": secs, "commands_per_s": n / secs}

    # -- journal + engine, and append only, per policy ---------------------------------
    out["journal_engine"] = {}
    out["append_only"] = {}
    for policy in POLICIES:
        latencies: list[int] = []

        path = root / f"je-{policy}"

        def with_engine(
            policy: str = policy, latencies: list[int] = latencies, path: Path = path
        ) -> int:
            engine = new_engine(spec)
            events = [np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)]
            latencies.clear()
            clock = time.perf_counter_ns
            with open_writer(path, policy, args) as writer:
                append, maybe_sync = writer.append_commands, writer.maybe_sync
                for rows in batches:
                    a = clock()
                    append(rows, time.time_ns())
                    latencies.append(clock() - a)
                    run_batch(engine, rows, events)
                    maybe_sync(time.monotonic_ns())
            return engine.book(0).state_hash()

        secs, h = timed(with_engine, args.repeats, remover(path))
        assert h == live_hash
        out["journal_engine"][policy] = {
            "seconds": secs,
            "commands_per_s": n / secs,
            "overhead_pct": 100.0 * (secs / out["engine_only"]["seconds"] - 1.0),
            "append_latency": percentiles(latencies),
        }

        path = root / f"ao-{policy}"

        def append_only(policy: str = policy, path: Path = path) -> int:
            with open_writer(path, policy, args) as writer:
                append, maybe_sync = writer.append_commands, writer.maybe_sync
                for rows in batches:
                    append(rows, time.time_ns())
                    maybe_sync(time.monotonic_ns())
            return writer.bytes_written

        secs, written = timed(append_only, args.repeats, remover(path))
        out["append_only"][policy] = {
            "seconds": secs,
            "commands_per_s": n / secs,
            "mb_per_s": written / 1e6 / secs,  # of records written (packed)
            "bytes_per_command": written / n,
        }

    # -- replay ---------------------------------------------------------------------------
    def replay_dir(path: Path) -> tuple[int, int]:
        engine = new_engine(spec)
        result = recover(engine, path, use_snapshot=False)
        assert result.commands == n, (result.commands, n)
        return engine.book(0).state_hash(), result.records

    out["replay"] = {}
    for label, size in (("batch", args.batch), ("small_batch", args.small_batch)):
        path = fresh_dir(root, f"replay-{size}")
        with JournalWriter(path, "none", segment_bytes=args.segment_bytes) as writer:
            for i in range(0, n, size):
                writer.append_commands(commands[i : i + size], 0)
        os.sync()  # replay reads from the page cache, without writeback going on
        secs, (h, records) = timed(lambda path=path: replay_dir(path), args.repeats)
        assert h == live_hash, "replay gave another state hash than the live run"
        out["replay"][label] = {
            "rows_per_record": size,
            "records": records,
            "seconds": secs,
            "commands_per_s": n / secs,
            "ten_million_s": TEN_MILLION * secs / n,
        }
        shutil.rmtree(path, ignore_errors=True)

    if args.recovery_commands:
        out["recovery_measured"] = measure_recovery(args, root)

    # -- snapshots --------------------------------------------------------------------------
    final = new_engine(spec)
    run_all(final, commands)
    out["snapshot"] = {
        "final_book": snapshot_cost(final, root / "snap-final", args.repeats),
        "deep_book": snapshot_cost(deep_engine(spec, args.deep_orders), root / "snap-deep", 1),
    }
    return out


def run_all(engine: lltrade.Engine, commands: np.ndarray) -> None:
    events = [np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)]
    for i in range(0, len(commands), 4096):
        run_batch(engine, commands[i : i + 4096], events)


def deep_engine(spec: WorkloadSpec, orders: int) -> lltrade.Engine:
    """A book with ``orders`` resting orders: bids below mid, asks above, 10 a level."""
    engine = new_engine(spec)
    rows = np.zeros(orders, dtype=lltrade.COMMAND_DTYPE)
    mid = spec.start()
    k = np.arange(orders)
    side = np.where(k % 2 == 0, int(lltrade.Side.BUY), int(lltrade.Side.SELL))
    level = k // 20 + 1
    rows["op"] = int(lltrade.Op.ADD)
    rows["order_id"] = k + 1
    rows["side"] = side
    rows["price"] = np.where(side == int(lltrade.Side.BUY), mid - level, mid + level)
    rows["qty"] = 1 + k % 7
    rows["protection"] = -1
    run_all(engine, rows)
    assert len(engine.book(0)) == orders
    return engine


def snapshot_cost(engine: lltrade.Engine, path: Path, repeats: int) -> dict[str, Any]:
    shutil.rmtree(path, ignore_errors=True)
    book = engine.book(0)
    capture_s, state = timed(lambda: engine_snapshot(engine), repeats)
    write_s, _ = timed(lambda: write_snapshot(path, 1, state, {}), repeats, remover(path))

    def restore() -> int:
        fresh = lltrade.Engine()
        fresh.add_book(0, book.min_price, book.max_price, book.tick, book.lot)
        restore_engine(fresh, state)
        return fresh.book(0).state_hash()

    restore_s, h = timed(restore, repeats)
    assert h == book.state_hash()
    shutil.rmtree(path, ignore_errors=True)
    return {
        "orders": len(book),
        "bytes": len(state),
        "engine_snapshot_ms": capture_s * 1e3,
        "write_snapshot_ms": write_s * 1e3,
        "restore_ms": restore_s * 1e3,
    }


def measure_recovery(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Write a journal of ``--recovery-commands`` commands, then time ``recover`` of it."""
    total = args.recovery_commands
    spec = WorkloadSpec(commands=total, seed=args.seed)
    gen = StreamGenerator(spec)
    path = fresh_dir(root, "recovery")
    live = new_engine(spec)
    events = [np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)]
    t0 = time.perf_counter()
    with JournalWriter(path, "none", segment_bytes=args.segment_bytes) as writer:
        left = total
        while left:
            chunk = gen.next(min(left, 1 << 20))
            for i in range(0, len(chunk), args.batch):
                rows = chunk[i : i + args.batch]
                writer.append_commands(rows, 0)
                run_batch(live, rows, events)
            left -= len(chunk)
    write_s = time.perf_counter() - t0
    os.sync()  # measure recovery from the page cache, not of the writeback
    engine = new_engine(spec)
    gc.disable()
    try:
        result = recover(engine, path, use_snapshot=False)
    finally:
        gc.enable()
    assert result.commands == total
    assert engine.book(0).state_hash() == live.book(0).state_hash()
    size = sum(p.stat().st_size for p in path.iterdir())
    shutil.rmtree(path, ignore_errors=True)
    return {
        "commands": total,
        "journal_bytes": size,
        "generate_and_write_s": write_s,
        "recover_s": result.seconds,
        "commands_per_s": total / result.seconds,
    }


def table(out: dict[str, Any]) -> str:
    lines = [
        f"lltrade journal benchmark: {out['commands']:,} commands in batches of "
        f"{out['batch']} ({out['batches']} batches), journal in {out['dir']}",
        "",
        f"{'run':<28} {'M commands/s':>13} {'overhead':>9} {'MB/s':>8} "
        f"{'append p50':>11} {'p99':>9} {'max':>9}",
    ]
    eo = out["engine_only"]
    lines.append(f"{'engine only (no journal)':<28} {eo['commands_per_s'] / 1e6:>13.2f}")
    for policy, r in out["journal_engine"].items():
        lat = r["append_latency"]
        lines.append(
            f"{'journal ' + policy + ' + engine':<28} {r['commands_per_s'] / 1e6:>13.2f} "
            f"{r['overhead_pct']:>8.1f}% {'':>8} {lat['p50_us']:>9.0f}us "
            f"{lat['p99_us']:>7.0f}us {lat['max_us']:>7.0f}us"
        )
    for policy, r in out["append_only"].items():
        lines.append(
            f"{'append only, ' + policy:<28} {r['commands_per_s'] / 1e6:>13.2f} {'':>9} "
            f"{r['mb_per_s']:>8.0f}"
        )
    head = f"{'replay (recover, no snapshot)':<34} {'M commands/s':>13} {'10M commands':>13}"
    lines += ["", head]
    for r in out["replay"].values():
        label = f"{r['rows_per_record']} rows/record ({r['records']:,} records)"
        lines.append(
            f"{label:<34} {r['commands_per_s'] / 1e6:>13.2f} {r['ten_million_s']:>11.2f} s"
        )
    if "recovery_measured" in out:
        r = out["recovery_measured"]
        lines.append(
            f"{'measured: ' + format(r['commands'], ',') + ' commands':<34} "
            f"{r['commands_per_s'] / 1e6:>13.2f} {r['recover_s']:>11.2f} s  "
            f"({r['journal_bytes'] / 1e6:,.0f} MB)"
        )
    lines += [
        "",
        f"{'snapshot':<12} {'orders':>9} {'bytes':>12} {'engine_snapshot':>16} "
        f"{'write+fsync':>12} {'restore':>9}",
    ]
    for name, r in out["snapshot"].items():
        lines.append(
            f"{name:<12} {r['orders']:>9,} {r['bytes']:>12,} {r['engine_snapshot_ms']:>13.1f} ms "
            f"{r['write_snapshot_ms']:>9.1f} ms {r['restore_ms']:>6.1f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=4096, help="commands per journal record")
    parser.add_argument(
        "--small-batch", type=int, default=16, help="commands per record, small-batch replay"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=5)
    parser.add_argument("--segment-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--deep-orders", type=int, default=100_000)
    parser.add_argument(
        "--recovery-commands",
        type=int,
        default=0,
        help="also write and recover a journal of this many commands (e.g. 10000000)",
    )
    parser.add_argument("--dir", help="where to write the journals (default: a temp dir)")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write JSON (to stdout without PATH)"
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="lltrade-journal-bench-", dir=args.dir))
    try:
        out = bench(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json == "-":
        print(json.dumps(out, indent=2))
    else:
        print(table(out))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
