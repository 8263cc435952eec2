"""Cost of the telemetry hot path on the daemon's side (the writer).

    python benchmark/telemetry_bench.py [--n 20000000] [--repeats 5] [--dir /dev/shm]

Prints ns per operation, the best of ``--repeats`` runs, with the garbage
collector off:

* the inline Cython path (``tel_add`` / ``tel_record`` of _telemetry.pxd,
  what the daemon's Cython modules compile in), looped in C by
  ``bench_record`` and ``bench_order``.  The figures include the loop and its
  xorshift value generator, printed alone (``bench_loop``) for reference; it
  is not subtracted, since the CPU overlaps it with the updates;
* the ``def`` wrappers called from Python (``add``, ``record``), as a Python
  caller pays them, loop included;
* ``record_many`` per value, for a batch recorded at once;
* what telemetry adds to the daemon's order path, per order: for a read
  carrying one order (one engine call with its ACCEPTED and LEVEL events) and
  for one carrying 64 (128 events), ``ReportEncoder.encode`` with the
  telemetry attached (it counts the events in C) plus ``DaemonTelemetry.read``,
  minus ``encode`` without telemetry: the medians of ``--repeats`` interleaved
  runs (target: <= 50 ns per order);
* one ``TelemetryReader.snapshot()`` of the same file, for scale.

"One order" is the updates an order needs: three counter adds and one
histogram record (target: <= 50 ns).  Unless ``--busy-reader`` is given, no
reader runs meanwhile; with it, a reader process snapshots in a loop, so the
writer's cache lines bounce between cores as they do under a live exporter
(more often than under one: an exporter reads once a second).  The reader's
successful and busy snapshots are counted: a writer that updates one
histogram every few ns without a pause starves a seqlock reader, which then
gives up with ``TelemetryError`` after ``max_retries`` attempts; the daemon
never records like that for long (docs/telemetry.md, "Readers").
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lltrade import EVENT_DTYPE, EventKind
from lltrade._reports import ReportEncoder
from lltrade._telemetry import (
    TelemetryError,
    TelemetryReader,
    TelemetryWriter,
    bench_loop,
    bench_order,
    bench_record,
)
from lltrade.metrics import DaemonTelemetry

METRICS = [
    ("counter", "orders_in", "Orders received.", ""),
    ("counter", "orders_accepted", "Orders accepted.", ""),
    ("counter", "bytes_in", "Bytes received.", ""),
    ("gauge", "open_orders", "Resting orders.", ""),
    ("histogram", "order_latency_ns", "Read to ack written, ns.", ""),
]


def best_ns(fn: Callable[[], object], n: int, repeats: int) -> float:
    """Best time per operation over ``repeats`` calls of ``fn`` doing ``n`` operations."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def busy_reader(path: str, stop: Any, done: Any) -> None:
    """Snapshot until ``stop``; put (consistent snapshots, busy snapshots) in ``done``."""
    reader = TelemetryReader(path)
    ok = busy = 0
    while not stop.is_set():
        try:
            reader.snapshot()
            ok += 1
        except TelemetryError:
            busy += 1
    done.put((ok, busy))


def daemon_order_path(path: str, py_n: int, repeats: int) -> list[tuple[str, float]]:
    """ns per order the daemon's telemetry adds to its order path, for 1- and 64-order reads.

    The daemon's calls per read, as it makes them: ``ReportEncoder.encode`` of the engine
    call's events (which counts them in C with the telemetry attached) and
    ``DaemonTelemetry.read``.  Timed with the telemetry attached and without it (encode
    alone, no read call), interleaved; the cost is the difference of the medians.
    """
    tel = DaemonTelemetry(path, {1: "DEMO"})
    reports = ReportEncoder(4)
    rows = []
    try:
        read = tel.read
        for orders in (1, 64):
            events = np.zeros(2 * orders, dtype=EVENT_DTYPE)
            events["kind"][0::2] = EventKind.ACCEPTED
            events["kind"][1::2] = EventKind.LEVEL
            routes = np.full((len(events), 2), -1, dtype=np.int64)  # nobody: nothing encoded
            refs = np.zeros(orders, dtype=np.int64)
            reads = py_n // orders

            args = (events, len(events), routes, refs, 0, orders)
            lat = [1_500 + (i & 0xFF) for i in range(reads)]

            def with_telemetry(
                a: tuple[Any, ...] = args, m: int = reads, lat: list[int] = lat
            ) -> None:
                enc, k = reports.encode, a[5]
                for i in range(m):
                    enc(*a, 900)
                    read(k, lat[i])

            def without(a: tuple[Any, ...] = args, m: int = reads, lat: list[int] = lat) -> None:
                enc, k = reports.encode, a[5]
                for i in range(m):
                    enc(*a, 900)
                    k + lat[i]  # the read's arguments, without the call

            on, off = [], []
            for _ in range(repeats):
                reports.attach_telemetry(tel.order_path)
                on.append(best_ns(with_telemetry, reads * orders, 1))
                reports.attach_telemetry(None)
                off.append(best_ns(without, reads * orders, 1))
            cost = statistics.median(on) - statistics.median(off)
            rows.append((f"daemon telemetry, {orders}-order reads, per order", cost))
    finally:
        reports.attach_telemetry(None)
        tel.close()
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20_000_000, help="operations per C-loop run")
    p.add_argument("--py-n", type=int, default=1_000_000, help="operations per Python-loop run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    p.add_argument("--busy-reader", action="store_true", help="snapshot in a loop meanwhile")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n, py_n, repeats = args.n, args.py_n, args.repeats
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "lltrade-bench")
        writer = TelemetryWriter(path, METRICS)
        c0, c1, c2 = (writer.index(m[1]) for m in METRICS[:3])
        hist = writer.index("order_latency_ns")
        ctx = multiprocessing.get_context("spawn")
        stop, done = ctx.Event(), ctx.Queue()
        reader_proc = None
        reader_counts = (0, 0)
        if args.busy_reader:
            reader_proc = ctx.Process(target=busy_reader, args=(path, stop, done))
            reader_proc.start()
            time.sleep(0.5)
        gc.collect()
        gc.disable()
        try:
            loop = best_ns(lambda: bench_loop(n), n, repeats)
            record = best_ns(lambda: bench_record(writer, hist, n), n, repeats)
            order = best_ns(lambda: bench_order(writer, c0, c1, c2, hist, n), n, repeats)

            add, rec = writer.add, writer.record

            def py_order() -> None:
                for i in range(py_n):
                    add(c0)
                    add(c1)
                    add(c2, 48)
                    rec(hist, 100 + (i & 0xFFFF))

            def py_record() -> None:
                for i in range(py_n):
                    rec(hist, 100 + (i & 0xFFFF))

            def py_loop() -> None:
                for i in range(py_n):
                    100 + (i & 0xFFFF)  # the loop's own cost

            values = (100 + np.arange(py_n, dtype=np.uint64) % np.uint64(65536)).astype(np.uint64)
            py_base = best_ns(py_loop, py_n, repeats)
            py_rec = best_ns(py_record, py_n, repeats)
            py_ord = best_ns(py_order, py_n, repeats)
            many = best_ns(lambda: writer.record_many(hist, values), py_n, repeats)
            daemon_rows = daemon_order_path(os.path.join(tmp, "lltrade-daemon"), py_n, repeats)
        finally:
            gc.enable()
            stop.set()
            if reader_proc is not None:
                reader_counts = done.get()
                reader_proc.join()
        reader = TelemetryReader(path)
        snap = best_ns(reader.snapshot, 1, 200)
        reader.close()
        writer.close(unlink=True)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", end="")
    if args.busy_reader:
        ok, busy = reader_counts
        print(f", a reader snapshotting meanwhile: {ok} consistent, {busy} gave up busy")
    else:
        print(", no reader meanwhile")
    rows = [
        ("inline tel_record (Cython)", record),
        ("inline one order: 3 x tel_add + tel_record", order),
        ("  C loop + value generator alone (included)", loop),
        ("def record(idx, v)", py_rec),
        ("def one order: 3 x add + record", py_ord),
        ("  Python loop alone (included above)", py_base),
        ("def record_many, per value", many),
        *daemon_rows,
        ("reader snapshot() (5 metrics), per call", snap),
    ]
    for label, ns in rows:
        print(f"{label:<48} {ns:10.1f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
