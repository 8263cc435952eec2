"""pytest-benchmark suites of the telemetry writer (``make bench``).

The cost the daemon pays to publish: a counter add and a histogram record
through the ``def`` methods (as a Python caller pays them), the same updates
inlined in C (``bench_order``: three ``tel_add`` and one ``tel_record`` per
order, looped in C a million times a round; target <= 50 ns an order), a
batch recorded with ``record_many``, and the daemon's whole telemetry update
for a read that carried one order (``DaemonTelemetry.batch`` + ``read``, in C).
Every benchmark then reads the shared-memory file back and checks that each
update landed exactly once.  ``benchmark/telemetry_bench.py`` prints the same
figures, and the loop's own cost, from the command line.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import lltrade
from lltrade._telemetry import (
    TelemetryReader,
    TelemetryWriter,
    bench_order,
    bucket_index,
    default_path,
)
from lltrade.enums import EventKind
from lltrade.metrics import DaemonTelemetry

METRICS = [
    ("counter", "orders_in", "Orders received.", ""),
    ("counter", "orders_accepted", "Orders accepted.", ""),
    ("counter", "bytes_in", "Bytes received.", ""),
    ("histogram", "order_latency_ns", "Read to ack written, ns.", ""),
]
C_LOOP = 1_000_000  # orders per round of the C loop
ROUNDS, ITERATIONS, WARMUP = 100, 1000, 5


@pytest.fixture
def writer() -> Iterator[TelemetryWriter]:
    """A telemetry file in shared memory (where the daemon keeps its own), removed after."""
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        w = TelemetryWriter(os.path.join(tmp, "lltrade-bench"), METRICS)
        try:
            yield w
        finally:
            w.close(unlink=True)


def snapshot(writer: TelemetryWriter) -> dict[str, Any]:
    reader = TelemetryReader(writer.path)
    try:
        return reader.snapshot()
    finally:
        reader.close()


def calls() -> int:
    """How many times ``benchmark.pedantic`` calls its target with the module's settings:
    every iteration of every round, and once more for the result when it iterates."""
    return (ROUNDS + WARMUP) * ITERATIONS + 1


def test_counter_add(benchmark: Any, writer: TelemetryWriter) -> None:
    """``writer.add(idx, v)`` called from Python."""
    idx = writer.index("bytes_in")
    benchmark.pedantic(
        writer.add, args=(idx, 48), rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=WARMUP
    )
    snap = snapshot(writer)
    assert snap["counters"] == {"orders_in": 0, "orders_accepted": 0, "bytes_in": 48 * calls()}


def test_histogram_record(benchmark: Any, writer: TelemetryWriter) -> None:
    """``writer.record(idx, ns)`` called from Python."""
    idx = writer.index("order_latency_ns")
    value = 12_345
    benchmark.pedantic(
        writer.record, args=(idx, value), rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=WARMUP
    )
    hist = snapshot(writer)["histograms"]["order_latency_ns"]
    n = calls()
    assert (hist["count"], hist["sum"], hist["min"], hist["max"]) == (n, n * value, value, value)
    buckets = np.asarray(hist["buckets"])
    assert buckets[bucket_index(value)] == n and buckets.sum() == n


def test_record_many_4096(benchmark: Any, writer: TelemetryWriter) -> None:
    """``writer.record_many`` of 4096 latencies: one call for a batch."""
    idx = writer.index("order_latency_ns")
    values = (100 + np.arange(4096, dtype=np.uint64) * np.uint64(37)).astype(np.uint64)
    benchmark.pedantic(writer.record_many, args=(idx, values), rounds=ROUNDS, warmup_rounds=WARMUP)
    benchmark.extra_info["values"] = len(values)
    hist = snapshot(writer)["histograms"]["order_latency_ns"]
    runs = ROUNDS + WARMUP
    assert hist["count"] == runs * len(values)
    assert hist["sum"] == runs * int(values.sum())
    assert (hist["min"], hist["max"]) == (int(values.min()), int(values.max()))


def test_order_inline_c(benchmark: Any, writer: TelemetryWriter) -> None:
    """One order's updates compiled in (3 x ``tel_add`` + ``tel_record``), a C loop of
    a million orders a round (its xorshift value generator included)."""
    c0, c1, c2 = (writer.index(m[1]) for m in METRICS[:3])
    hist = writer.index("order_latency_ns")
    rounds = 20
    benchmark.pedantic(bench_order, args=(writer, c0, c1, c2, hist, C_LOOP), rounds=rounds,
                       warmup_rounds=1)  # fmt: skip
    benchmark.extra_info["orders"] = C_LOOP
    benchmark.extra_info["ns_per_order"] = benchmark.stats.stats.median * 1e9 / C_LOOP
    n = (rounds + 1) * C_LOOP
    snap = snapshot(writer)
    assert snap["counters"] == {"orders_in": n, "orders_accepted": n, "bytes_in": 48 * n}
    h = snap["histograms"]["order_latency_ns"]
    assert h["count"] == n and 100 <= h["min"] <= h["max"] <= 100 + 0xFFFF


def test_daemon_update_one_order(benchmark: Any) -> None:
    """The daemon's telemetry for a read carrying one order that the book accepted:
    ``DaemonTelemetry.batch`` of its engine call (an ACCEPTED and a LEVEL event) and
    ``DaemonTelemetry.read``: what telemetry costs an order when the load is light."""
    name = f"lltrade-bench-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tel = DaemonTelemetry(name, {1: "DEMO"})
    try:
        events = np.zeros(2, dtype=lltrade.EVENT_DTYPE)
        events["kind"] = [EventKind.ACCEPTED, EventKind.LEVEL]
        batch, read = tel.batch, tel.read

        def one_order() -> None:
            batch(events, 2, 1, 2_500)
            read(1, 9_000)

        benchmark.pedantic(one_order, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=WARMUP)
        reader = TelemetryReader(default_path(name))
        try:
            snap = reader.snapshot()
        finally:
            reader.close()
    finally:
        tel.close()
    n = calls()
    counters = snap["counters"]
    assert counters["orders_in"] == counters["orders_accepted"] == n
    assert counters["orders_rejected"] == counters["fills"] == counters["cancels"] == 0
    histograms = snap["histograms"]
    latency, batch_time = histograms["order_latency_ns"], histograms["batch_time_ns"]
    assert latency["count"] == batch_time["count"] == histograms["batch_size"]["count"] == n
    assert (latency["sum"], batch_time["sum"]) == (9_000 * n, 2_500 * n)
    assert not os.path.exists(default_path(name))
