"""The telemetry region (lltrade._telemetry, docs/telemetry.md): layout, buckets, reader, stress.

The layout is checked byte by byte against the offsets docs/telemetry.md
publishes (read with ``struct``, as a reader in another language would), the
bucket index against two independent pure-Python definitions, and the
seqlock under load by a writer process and two reader processes that check
every snapshot they take.
"""

from __future__ import annotations

import bisect
import json
import math
import mmap
import os
import random
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lltrade import EVENT_DTYPE, EventKind
from lltrade._reports import ReportEncoder
from lltrade._telemetry import (
    LAYOUT_VERSION,
    MAGIC,
    MAX_EXPONENT,
    N_BUCKETS,
    SUB_BUCKET_BITS,
    OrderPathTelemetry,
    TelemetryError,
    TelemetryReader,
    TelemetryWriter,
    bucket_index,
    bucket_upper_bounds,
    default_path,
    percentile,
)

S, E = SUB_BUCKET_BITS, MAX_EXPONENT
M = 1 << S
HEADER = struct.Struct("<8sIIQQQIIQIIQIIQIIIIII")  # docs/telemetry.md, "Header"
HEADER_FIELDS = (
    "magic",
    "version",
    "header_size",
    "total_size",
    "start_time_ns",
    "heartbeat_ns",
    "pid",
    "n_metrics",
    "meta_offset",
    "meta_entry_size",
    "value_slot_size",
    "values_offset",
    "n_values",
    "n_histograms",
    "hist_offset",
    "hist_block_size",
    "hist_header_size",
    "hist_buckets",
    "hist_sub_bits",
    "hist_max_exp",
    "reserved0",
)
META = struct.Struct("<IIHHHH96s160s240s")  # docs/telemetry.md, "Metadata table"

METRICS = [
    ("counter", "orders_in", "Orders received.", ""),
    ("gauge", "open_orders", "Resting orders.", ""),
    ("histogram", "order_latency_ns", "Read to ack written, in ns.", 'stage="ack"'),
    ("counter", 'orders_rejected{reason="PRICE_COLLAR"}', "Rejects.", 'reason="PRICE_COLLAR"'),
    ("histogram", "batch_ns", "Batch processing time — ns.", ""),
    ("gauge", "best_bid.DEMO", "", 'symbol="DEMO"'),
]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "lltrade-telemetry"


@pytest.fixture
def writer(path: Path) -> Iterator[TelemetryWriter]:
    w = TelemetryWriter(path, METRICS)
    yield w
    w.close()


def header_of(data: bytes) -> dict[str, Any]:
    return dict(zip(HEADER_FIELDS, HEADER.unpack_from(data, 0), strict=True))


# -- buckets: two independent definitions -------------------------------------------------


def py_bucket(v: int) -> int:
    """The documented formula, in Python integers."""
    if v < M:
        return v
    if v >= 1 << E:
        return (E - S + 1) * M
    e = v.bit_length() - 1
    return (e - S + 1) * M + (v >> (e - S)) - M


def _lower_bounds() -> list[int]:
    """Every bucket's smallest value, by construction: width 1 below 2*M, then M per octave."""
    lows = list(range(2 * M))
    for e in range(S + 1, E):
        width = 1 << (e - S)
        lows.extend((1 << e) + k * width for k in range(M))
    lows.append(1 << E)  # the overflow bucket
    return lows


LOWS = _lower_bounds()


def boundary_values() -> list[int]:
    values = {0, 1, 2, 2**64 - 1, 2**63, 2**E - 1, 2**E, 2**E + 1}
    for e in range(64):
        values.update({(1 << e) - 1, 1 << e, (1 << e) + 1})
    for low in LOWS:
        values.update({low - 1, low, low + 1})
    return sorted(v for v in values if 0 <= v < 2**64)


def test_bucket_layout_constants() -> None:
    assert (S, E) == (5, 40)
    assert N_BUCKETS == (E - S + 1) * M + 1 == len(LOWS) == 1153


def test_bucket_index_matches_both_definitions_at_boundaries() -> None:
    for v in boundary_values():
        expected = bisect.bisect_right(LOWS, v) - 1
        assert py_bucket(v) == expected, v
        assert bucket_index(v) == expected, v


def test_bucket_index_random_values() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        v = rng.getrandbits(rng.randrange(1, 65))
        assert bucket_index(v) == py_bucket(v) == bisect.bisect_right(LOWS, v) - 1, v


def test_upper_bounds() -> None:
    ub = bucket_upper_bounds()
    assert ub.dtype == np.float64 and len(ub) == N_BUCKETS
    assert math.isinf(ub[-1])
    finite = [int(x) for x in ub[:-1]]
    assert finite == [low - 1 for low in LOWS[1:]]  # each bound is the next bucket's low - 1
    for i, upper in enumerate(finite):
        assert bucket_index(upper) == i and bucket_index(upper + 1) == i + 1
        width = upper - LOWS[i] + 1
        assert width == 1 if i < 2 * M else width * M <= LOWS[i]  # relative width <= 1/32
    with pytest.raises(ValueError, match="no such bucket layout"):
        bucket_upper_bounds(0, 40)


# -- layout ----------------------------------------------------------------------------


def test_layout_bytes_match_the_documented_offsets(writer: TelemetryWriter, path: Path) -> None:
    writer.add(writer.index("orders_in"), 7)
    writer.set(writer.index("open_orders"), -5)
    writer.record(writer.index("batch_ns"), 1000)
    data = path.read_bytes()
    h = header_of(data)
    assert h["magic"] == MAGIC == b"LLTRTEL\0"
    assert h["version"] == LAYOUT_VERSION == 1
    assert h["header_size"] == 256
    assert h["total_size"] == len(data) == writer.size
    assert h["pid"] == os.getpid()
    assert h["heartbeat_ns"] == h["start_time_ns"] > 0
    assert (h["n_metrics"], h["n_values"], h["n_histograms"]) == (6, 4, 2)
    assert (h["meta_offset"], h["meta_entry_size"], h["value_slot_size"]) == (256, 512, 64)
    assert h["values_offset"] == 256 + 6 * 512
    assert h["hist_offset"] == h["values_offset"] + 4 * 64
    assert (h["hist_block_size"], h["hist_header_size"], h["hist_buckets"]) == (9344, 64, 1153)
    assert (h["hist_sub_bits"], h["hist_max_exp"]) == (5, 40)
    assert h["total_size"] == h["hist_offset"] + 2 * 9344
    assert data[112:256] == bytes(144)  # reserved
    for off in ("meta_offset", "values_offset", "hist_offset"):
        assert h[off] % 64 == 0

    kind, slot, nlen, llen, hlen, _, name, labels, help_ = META.unpack_from(data, 256 + 3 * 512)
    assert (kind, slot) == (1, 2)  # counters and gauges share the value slots
    assert name[:nlen].decode() == 'orders_rejected{reason="PRICE_COLLAR"}'
    assert labels[:llen].decode() == 'reason="PRICE_COLLAR"'
    assert help_[:hlen].decode() == "Rejects."
    assert name[nlen:] == bytes(96 - nlen)
    kind, slot, nlen, *_ = META.unpack_from(data, 256 + 4 * 512)
    assert (kind, slot) == (3, 1)  # batch_ns: histogram block 1

    (counter,) = struct.unpack_from("<Q", data, h["values_offset"] + 0 * 64)
    (gauge,) = struct.unpack_from("<q", data, h["values_offset"] + 1 * 64)
    assert (counter, gauge) == (7, -5)
    block = h["hist_offset"] + 1 * 9344
    seq, count, total, vmin, vmax = struct.unpack_from("<5Q", data, block)
    assert (seq, count, total, vmin, vmax) == (2, 1, 1000, 1000, 1000)
    buckets = np.frombuffer(data, dtype="<u8", count=1153, offset=block + 64)
    assert buckets.sum() == 1 and buckets[bucket_index(1000)] == 1
    empty = h["hist_offset"]
    assert struct.unpack_from("<5Q", data, empty) == (0, 0, 0, 2**64 - 1, 0)


def test_round_trip(writer: TelemetryWriter, path: Path) -> None:
    assert [writer.index(m[1]) for m in METRICS] == [0, 1, 0, 2, 1, 3]
    assert writer.kind("best_bid.DEMO") == "gauge"
    writer.add(0)
    writer.add(0, 41)
    writer.add(2, 2**64 - 1)
    writer.set(1, 12)
    writer.set(3, -(2**63))
    lat = [3, 64, 1000, 1000, 123_456_789, 2**41]
    for v in lat:
        writer.record(0, v)
    batch = np.array([5, 500, 50_000], dtype=np.uint64)
    writer.record_many(1, batch)
    writer.record_many(1, batch[::2])  # strided
    writer.heartbeat(now_ns=1_700_000_000_000_000_000)

    reader = TelemetryReader(path)
    snap = reader.snapshot()
    assert set(snap) == {
        "pid",
        "start_time_ns",
        "heartbeat_ns",
        "counters",
        "gauges",
        "histograms",
        "meta",
    }
    assert snap["pid"] == os.getpid() == reader.pid
    assert snap["start_time_ns"] == reader.start_time_ns
    assert snap["heartbeat_ns"] == 1_700_000_000_000_000_000
    assert reader.heartbeat_age_s(now_ns=1_700_000_002_500_000_000) == 2.5
    assert snap["counters"] == {
        "orders_in": 42,
        'orders_rejected{reason="PRICE_COLLAR"}': 2**64 - 1,
    }
    assert snap["gauges"] == {"open_orders": 12, "best_bid.DEMO": -(2**63)}
    assert list(snap["meta"]) == [m[1] for m in METRICS]
    for kind, name, help_, labels in METRICS:
        assert snap["meta"][name] == (kind, help_, labels)

    h = snap["histograms"]["order_latency_ns"]
    assert (h["count"], h["sum"], h["min"], h["max"]) == (6, sum(lat), 3, 2**41)
    assert (h["labels"], h["help"]) == ('stage="ack"', "Read to ack written, in ns.")
    assert h["buckets"].dtype == np.uint64 and len(h["buckets"]) == N_BUCKETS
    expected = np.zeros(N_BUCKETS, dtype=np.uint64)
    for v in lat:
        expected[py_bucket(v)] += 1
    assert np.array_equal(h["buckets"], expected)
    assert h["buckets"][-1] == 1  # 2**41 ns: overflow
    assert np.array_equal(h["upper_bounds_ns"], bucket_upper_bounds())
    assert not h["upper_bounds_ns"].flags.writeable

    b = snap["histograms"]["batch_ns"]
    assert (b["count"], b["sum"], b["min"], b["max"]) == (5, 50_505 + 50_005, 5, 50_000)
    assert int(b["buckets"].sum()) == 5
    reader.close()
    assert reader.closed
    reader.close()
    with pytest.raises(TelemetryError, match="closed"):
        reader.snapshot()


def test_empty_histogram_and_no_metrics(path: Path) -> None:
    with TelemetryWriter(path, [("histogram", "h", "", "")]):
        h = TelemetryReader(path).snapshot()["histograms"]["h"]
        assert (h["count"], h["sum"], h["min"], h["max"]) == (0, 0, 0, 0)
        assert not h["buckets"].any()
    with TelemetryWriter(path, []) as w:
        assert w.size == 256
        snap = TelemetryReader(path).snapshot()
        assert snap["counters"] == snap["gauges"] == snap["histograms"] == snap["meta"] == {}


def test_writer_publishes_by_rename_and_cleans_up(path: Path) -> None:
    w = TelemetryWriter(path, METRICS, mode=0o600)
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind
    assert (os.stat(path).st_mode & 0o777) == 0o600
    w.close(unlink=True)
    assert not path.exists()
    w.close(unlink=True)  # idempotent
    assert w.closed
    with pytest.raises(FileNotFoundError):
        TelemetryWriter(path.parent / "missing-dir" / "x", METRICS)
    assert os.listdir(path.parent) == []


def test_writer_argument_errors(path: Path) -> None:
    bad: list[tuple[Any, str]] = [
        ([("timer", "x", "", "")], "kind must be one of"),
        ([("counter", "x", "")], r"must be \(kind, name, help, labels\)"),
        ([("counter", "", "", "")], "name must not be empty"),
        ([("counter", "x", "", ""), ("gauge", "x", "", "")], "declared twice"),
        ([("counter", "x" * 97, "", "")], "name is 97 bytes"),
        ([("counter", "x", "h" * 241, "")], "help is 241 bytes"),
        ([("counter", "x", "", "l" * 161)], "labels is 161 bytes"),
        ([("counter", "x\n", "", "")], "control characters"),
    ]
    for metrics, message in bad:
        with pytest.raises(ValueError, match=message):
            TelemetryWriter(path, metrics)
    with pytest.raises(TypeError, match="name must be a str"):
        TelemetryWriter(path, [("counter", 3, "", "")])
    assert not path.exists()


def test_writer_index_errors(writer: TelemetryWriter) -> None:
    with pytest.raises(KeyError, match="no metric named 'nope'"):
        writer.index("nope")
    with pytest.raises(ValueError, match="idx 1 is a gauge, not a counter"):
        writer.add(1)
    with pytest.raises(ValueError, match="idx 0 is a counter, not a gauge"):
        writer.set(0, 1)
    with pytest.raises(IndexError, match="not a counter or gauge index"):
        writer.add(4)
    with pytest.raises(IndexError, match="not a histogram index"):
        writer.record(2, 1)
    with pytest.raises(IndexError, match="not a histogram index"):
        writer.record(-1, 1)
    with pytest.raises(OverflowError):
        writer.record(0, -1)
    with pytest.raises(ValueError, match="dtype mismatch"):
        writer.record_many(0, np.array([1, 2], dtype=np.int64))
    writer.close()
    for call in (lambda: writer.add(0), lambda: writer.record(0, 1), writer.heartbeat):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_default_path() -> None:
    assert default_path("lltrade") == "/dev/shm/lltrade"
    for name in ("", "a/b", "..", "."):
        with pytest.raises(ValueError, match="plain file name"):
            default_path(name)


# -- percentiles --------------------------------------------------------------------------


def _hist(values: list[int]) -> dict[str, Any]:
    buckets = np.zeros(N_BUCKETS, dtype=np.uint64)
    for v in values:
        buckets[py_bucket(v)] += 1
    return {
        "count": len(values),
        "sum": sum(values),
        "min": min(values, default=0),
        "max": max(values, default=0),
        "buckets": buckets,
        "upper_bounds_ns": bucket_upper_bounds(),
    }


def test_percentile_exact_cases() -> None:
    h = _hist(list(range(1, 1001)))
    assert percentile(h, 0) == 1 and percentile(h, 100) == 1000
    assert percentile(h, 50) == 503  # rank 500 -> bucket [496, 503]
    assert percentile(h, 99.9) == 1000  # rank 999 -> bucket [992, 1007], clamped to max
    h = _hist([10] * 9 + [5_000])
    assert percentile(h, 90) == 10  # exact below 64 ns
    assert percentile(h, 90.1) == 5_000
    assert percentile(_hist([]), 50) == 0
    assert percentile(_hist([2**45, 2**45 + 1, 2**46]), 50) == 2**46  # overflow bucket: the max
    for q in (-1, 100.5, math.nan):
        with pytest.raises(ValueError, match="percentage"):
            percentile(h, q)


def test_percentile_error_bound_random() -> None:
    """Nearest rank, over-estimated by less than 1/32 of the value, never under."""
    rng = random.Random(7)
    for trial in range(300):
        n = rng.randrange(1, 400)
        values = [
            int(rng.lognormvariate(rng.uniform(3, 16), rng.uniform(0.1, 2))) for _ in range(n)
        ]
        h = _hist(values)
        ordered = sorted(values)
        for q in (0, 1, 25, 50, 90, 95, 99, 99.9, 100, rng.uniform(0, 100)):
            rank = max(1, math.ceil(q * n / 100 - 1e-9))
            true = ordered[rank - 1]
            got = percentile(h, q)
            assert true <= got <= true + true // M, (trial, q, true, got)
            delta = {k: h[k] for k in ("count", "buckets", "upper_bounds_ns")}  # no min/max
            got = percentile(delta, q)
            assert true <= got <= true + max(true // M, 0), (trial, q, true, got)


# -- the reader's refusals ------------------------------------------------------------------


def _reject(path: Path, data: bytes, message: str) -> None:
    path.write_bytes(data)
    with pytest.raises(TelemetryError, match=message):
        TelemetryReader(path)


def test_reader_refuses_absent_truncated_foreign_files(writer: TelemetryWriter, path: Path) -> None:
    good = path.read_bytes()
    other = path.parent / "other"
    with pytest.raises(TelemetryError, match="no telemetry file at"):
        TelemetryReader(path.parent / "absent")
    with pytest.raises(TelemetryError, match="not a regular file"):
        TelemetryReader(path.parent)
    _reject(other, b"", "truncated: 0 bytes, less than the 256-byte header")
    _reject(other, good[:100], "truncated: 100 bytes")
    _reject(other, good[: len(good) // 2], f"truncated: {len(good) // 2} bytes, its header says")
    _reject(other, b"GIF89a" + bytes(4000), "not an lltrade telemetry file")
    _reject(other, bytes(len(good)), "not initialised")
    patched = bytearray(good)
    patched[8] = 2
    _reject(other, bytes(patched), "layout version 2")

    def field(name: str, value: int) -> bytes:
        h = header_of(good)
        h[name] = value
        return HEADER.pack(*h.values()) + good[HEADER.size :]

    _reject(other, field("n_metrics", 10**6), "invalid layout: metadata")
    _reject(other, field("n_values", 1000), "invalid layout: value slots")
    _reject(other, field("values_offset", 257), "invalid layout: value slots")
    _reject(other, field("hist_sub_bits", 4), "invalid layout: buckets")
    _reject(other, field("hist_block_size", 64), "invalid layout: histograms")
    _reject(other, field("header_size", 10**9), "invalid layout: header size")
    meta = bytearray(good)
    struct.pack_into("<I", meta, 256, 9)  # kind of metric 0
    _reject(other, bytes(meta), "unknown kind 9")
    meta = bytearray(good)
    struct.pack_into("<I", meta, 256 + 4, 99)  # slot of metric 0
    _reject(other, bytes(meta), "value slot 99")
    meta = bytearray(good)
    struct.pack_into("<H", meta, 256 + 8, 500)  # name length of metric 0
    _reject(other, bytes(meta), "name length 500 exceeds 96")
    meta = bytearray(good)
    meta[256 + 16] = 0xFF
    _reject(other, bytes(meta), "name is not UTF-8")


def test_reader_gives_up_on_a_stuck_seqlock(writer: TelemetryWriter, path: Path) -> None:
    writer.record(0, 10)
    reader = TelemetryReader(path, max_retries=100)
    hist_offset = header_of(path.read_bytes())["hist_offset"]
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        struct.pack_into("<Q", m, hist_offset, 3)  # a writer that died inside an update
        with pytest.raises(TelemetryError, match="'order_latency_ns' stayed busy for 100"):
            reader.snapshot()
        struct.pack_into("<Q", m, hist_offset, 4)
        assert reader.snapshot()["histograms"]["order_latency_ns"]["count"] == 1
    with pytest.raises(ValueError, match="max_retries"):
        TelemetryReader(path, max_retries=0)


def test_reopen_when_the_file_is_replaced(path: Path) -> None:
    first = TelemetryWriter(path, [("counter", "a", "", "")])
    first.add(0, 1)
    reader = TelemetryReader(path)
    assert reader.reopen_if_replaced() is False
    old_start = reader.start_time_ns
    second = TelemetryWriter(path, [("counter", "b", "", ""), ("histogram", "h", "", "")])
    second.add(0, 2)
    assert reader.snapshot()["counters"] == {"a": 1}  # still the first file
    assert reader.reopen_if_replaced() is True
    assert reader.start_time_ns > old_start
    assert reader.snapshot()["counters"] == {"b": 2}
    assert reader.reopen_if_replaced() is False
    first.close(unlink=True)  # not its file any more: left alone
    assert path.exists()
    second.close(unlink=True)
    assert reader.reopen_if_replaced() is False  # gone: the old mapping stays readable
    assert reader.snapshot()["counters"] == {"b": 2}
    path.write_bytes(b"junk" * 100)
    with pytest.raises(TelemetryError, match="not an lltrade telemetry file"):
        reader.reopen_if_replaced()
    assert reader.snapshot()["counters"] == {"b": 2}  # still the old mapping


OPENER = """
import json, sys, time
from lltrade._telemetry import TelemetryError, TelemetryReader
path, seconds = sys.argv[1], float(sys.argv[2])
opened, errors = 0, []
print("ready", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        TelemetryReader(path).close()
        opened += 1
    except TelemetryError as exc:
        errors.append(str(exc))
print(json.dumps(dict(opened=opened, errors=errors[:3], n_errors=len(errors))))
"""


def test_a_file_being_replaced_is_never_seen_half_made(path: Path) -> None:
    """Creation by rename (client_python #1199): every open finds a complete file."""
    first = TelemetryWriter(path, METRICS)
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(path), "1.0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert opener.stdout is not None
        assert opener.stdout.readline().strip() == "ready"
        created = 0
        while opener.poll() is None:
            TelemetryWriter(path, METRICS).close()
            created += 1
        result = json.loads(opener.stdout.read())
    finally:
        if opener.poll() is None:
            opener.kill()
            opener.wait()
        if opener.stdout is not None:
            opener.stdout.close()
        first.close()
    assert result["n_errors"] == 0, result
    assert result["opened"] > 100 and created > 100, (result, created)
    assert os.listdir(path.parent) == [path.name]


# -- the daemon's order-path updates (OrderPathTelemetry) ---------------------------------------

PATH_METRICS = [
    ("counter", name, "", "")
    for name in ("orders_in", "orders_accepted", "orders_rejected", "fills", "cancels")
] + [
    ("counter", 'orders_rejected{reason="PRICE_COLLAR"}', "", 'reason="PRICE_COLLAR"'),
    ("counter", 'orders_rejected{reason="RATE_LIMITED"}', "", 'reason="RATE_LIMITED"'),
    ("gauge", "open_orders", "", ""),
    ("histogram", "order_latency_ns", "", ""),
    ("histogram", "batch_time_ns", "", ""),
    ("histogram", "batch_size", "", ""),
]


def _order_path(path: Path) -> tuple[TelemetryWriter, OrderPathTelemetry]:
    w = TelemetryWriter(path, PATH_METRICS)
    counters = {n: w.index(n) for n in ("orders_in", "orders_accepted", "orders_rejected")}
    counters |= {"fills": w.index("fills"), "cancels": w.index("cancels")}
    by_reason = {
        40: w.index('orders_rejected{reason="PRICE_COLLAR"}'),
        65: w.index('orders_rejected{reason="RATE_LIMITED"}'),
    }
    hists = {
        "latency": w.index("order_latency_ns"),
        "batch_time": w.index("batch_time_ns"),
        "batch_size": w.index("batch_size"),
    }
    return w, OrderPathTelemetry(w, counters, by_reason, **hists)


def test_order_path_counts_events_reasons_batches_and_reads(path: Path) -> None:
    w, tel = _order_path(path)
    kinds = [EventKind.ACCEPTED, EventKind.FILL, EventKind.FILL, EventKind.LEVEL]
    kinds += [EventKind.REJECTED, EventKind.REJECTED, EventKind.REJECTED, EventKind.CANCELLED]
    events = np.zeros(16, dtype=EVENT_DTYPE)
    events["kind"][: len(kinds)] = kinds
    events["reason"][4:7] = [40, 3, 999]  # a counted reason, an uncounted one, off the table
    events["kind"][len(kinds) :] = EventKind.ACCEPTED  # beyond n: not counted
    tel.batch(events, len(kinds), 5, 1_500)
    tel.read(4, 2_000)
    tel.read(0, 9_999)  # a read that carried no order records nothing
    tel.refused(65)
    tel.refused(40)
    tel.refused(7)  # counted in the total only
    snap = TelemetryReader(path).snapshot()
    c, hs = snap["counters"], snap["histograms"]
    assert (c["orders_in"], c["orders_accepted"], c["fills"], c["cancels"]) == (5, 1, 2, 1)
    assert c["orders_rejected"] == 3 + 3
    assert c['orders_rejected{reason="PRICE_COLLAR"}'] == 2
    assert c['orders_rejected{reason="RATE_LIMITED"}'] == 1
    latency = hs["order_latency_ns"]
    assert (latency["count"], latency["sum"], latency["min"], latency["max"]) == (
        4,
        8_000,
        2_000,
        2_000,
    )
    assert (hs["batch_time_ns"]["count"], hs["batch_time_ns"]["sum"]) == (1, 1_500)
    assert (hs["batch_size"]["count"], hs["batch_size"]["sum"]) == (1, 5)
    w.close()
    tel.batch(events, 1, 1, 1)  # after close: nothing happens, nothing crashes
    tel.read(1, 1)
    tel.refused(40)


def test_report_encoder_counts_each_batch_it_encodes(path: Path) -> None:
    """The daemon's way: ReportEncoder.encode counts in C what OrderPathTelemetry.batch does."""
    w, tel = _order_path(path)
    reports = ReportEncoder(4)
    reports.attach_telemetry(tel)
    events = np.zeros(4, dtype=EVENT_DTYPE)
    events["kind"] = [EventKind.ACCEPTED, EventKind.FILL, EventKind.REJECTED, EventKind.LEVEL]
    events["reason"][2] = 40
    routes = np.full((4, 2), -1, dtype=np.int64)  # nobody hears them: only counted
    ref_seqs = np.zeros(4, dtype=np.int64)
    reports.encode(events, 4, routes, ref_seqs, 0, 3, 700)
    reports.encode(events, 3, routes, ref_seqs)  # no commands: events counted, no batch
    reports.attach_telemetry(None)
    reports.encode(events, 4, routes, ref_seqs, 0, 3, 700)  # detached: nothing
    snap = TelemetryReader(path).snapshot()
    c, hs = snap["counters"], snap["histograms"]
    assert (c["orders_in"], c["orders_accepted"], c["fills"], c["orders_rejected"]) == (3, 2, 2, 2)
    assert c['orders_rejected{reason="PRICE_COLLAR"}'] == 2
    assert (hs["batch_time_ns"]["count"], hs["batch_time_ns"]["sum"]) == (1, 700)
    assert (hs["batch_size"]["count"], hs["batch_size"]["sum"]) == (1, 3)
    w.close()


def test_order_path_argument_errors(path: Path) -> None:
    w, tel = _order_path(path)
    events = np.zeros(4, dtype=EVENT_DTYPE)
    with pytest.raises(ValueError, match="at least n rows"):
        tel.batch(events, 5, 1, 1)
    with pytest.raises(ValueError, match="at least n rows"):
        tel.batch(np.zeros(4, dtype=np.int64), 1, 1, 1)
    counters = {n: 0 for n in ("orders_in", "orders_accepted", "orders_rejected", "fills")}
    with pytest.raises(KeyError, match="cancels"):
        OrderPathTelemetry(w, counters, {}, latency=0, batch_time=1, batch_size=2)
    counters["cancels"] = w.index("open_orders")  # a gauge
    with pytest.raises(ValueError, match="not a counter"):
        OrderPathTelemetry(w, counters, {}, latency=0, batch_time=1, batch_size=2)
    counters["cancels"] = w.index("cancels")
    with pytest.raises(ValueError, match=r"outside 0 \.\. 255"):
        OrderPathTelemetry(w, counters, {300: 0}, latency=0, batch_time=1, batch_size=2)
    with pytest.raises(IndexError, match="not a histogram index"):
        OrderPathTelemetry(w, counters, {}, latency=0, batch_time=1, batch_size=9)
    w.close()


# -- the hot path is plain C ------------------------------------------------------------------

BUILD = Path(__file__).resolve().parents[2] / "build/cython/src/lltrade/_telemetry.c"
PY_API = re.compile(r"\bPy(Object|Number|Long|Err|List|Tuple|Dict)_\w+|\bPy_(X?INC|X?DEC)REF\b")


@pytest.mark.parametrize(
    "name",
    [
        "tel_bucket",
        "tel_add",
        "tel_set",
        "tel_begin",
        "tel_put",
        "tel_end",
        "tel_record",
        "tel_heartbeat",
        "15TelemetryReader__copy_hist",
        "18OrderPathTelemetry_count_batch",
    ],
)
def test_hot_path_has_no_python_api(name: str) -> None:
    assert BUILD.exists(), f"{BUILD} is missing: run `make build` first"
    source = BUILD.read_text()
    head = re.compile(rf"^static [^;\n]*__pyx_f_7lltrade_10_telemetry_{name}\([^;]*$", re.M)
    match = head.search(source)
    assert match is not None, name
    body = re.sub(
        r"/\*.*?\*/", "", source[match.end() : source.index("\n}\n", match.end())], flags=re.S
    )
    assert not PY_API.search(body), f"{name} calls the Python C-API"


# -- stress: one writer process, two reader processes ------------------------------------------

STRESS_METRICS = [
    ("counter", "first", "", ""),
    ("counter", "second", "", ""),
    ("gauge", "lockstep", "", ""),
    ("gauge", "done", "", ""),
    ("histogram", "constant", "", ""),
    ("histogram", "pairs", "", ""),
]
V, V1, V2 = 1_000, 700, 150_000

WRITER = f"""
import json, sys, time
from lltrade._telemetry import TelemetryWriter
path, seconds, metrics = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
V, V1, V2 = {V}, {V1}, {V2}
w = TelemetryWriter(path, [tuple(m) for m in metrics])
add, set_, rec = w.add, w.set, w.record
print("ready", flush=True)
i = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for _ in range(500):
        rec(0, V)
        rec(1, V1)
        rec(1, V2)
        add(0)
        add(1)
        i += 1
        set_(2, i)
set_(3, 1)
print(i, flush=True)
"""

READER = f"""
import json, sys, time
import numpy as np
from lltrade._telemetry import TelemetryError, TelemetryReader, bucket_index
path, limit = sys.argv[1], float(sys.argv[2])
V, V1, V2 = {V}, {V1}, {V2}
bv, b1, b2 = bucket_index(V), bucket_index(V1), bucket_index(V2)
r = TelemetryReader(path)
ok = busy = 0
bad = []
last = dict(first=0, second=0, lockstep=0, constant=0, pairs=0)
seen = set()
deadline = time.monotonic() + limit
while time.monotonic() < deadline and len(bad) < 5:
    try:
        s = r.snapshot()
    except TelemetryError:
        busy += 1
        continue
    ok += 1
    c, g, h = s["counters"], s["gauges"], s["histograms"]
    hc, hp = h["constant"], h["pairs"]
    n = hc["count"]
    if not (hc["sum"] == n * V and int(hc["buckets"].sum()) == n == int(hc["buckets"][bv])
            and (n == 0 or hc["min"] == hc["max"] == V)):
        bad.append(["constant", n, hc["sum"], int(hc["buckets"].sum()), hc["min"], hc["max"]])
    n1, n2, n = int(hp["buckets"][b1]), int(hp["buckets"][b2]), hp["count"]
    if not (n1 + n2 == n == int(hp["buckets"].sum()) and n1 - n2 in (0, 1)
            and hp["sum"] == n1 * V1 + n2 * V2
            and (n == 0 or hp["min"] == V1) and hp["max"] == (V2 if n2 else V1 if n1 else 0)):
        bad.append(["pairs", n, n1, n2, hp["sum"], hp["min"], hp["max"]])
    # Slots are read last to first: the writer's earlier stores are never older.
    if not c["first"] >= c["second"] >= g["lockstep"]:
        bad.append(["order", c["first"], c["second"], g["lockstep"]])
    now = dict(first=c["first"], second=c["second"], lockstep=g["lockstep"],
               constant=hc["count"], pairs=hp["count"])
    if any(now[k] < last[k] for k in now):
        bad.append(["backwards", last, now])
    last = now
    seen.add(now["lockstep"])
    if g["done"]:
        break
print(json.dumps(dict(ok=ok, busy=busy, bad=bad, distinct=len(seen), last=last)))
"""


def test_stress_concurrent_writer_and_readers(path: Path) -> None:
    seconds = 2.0
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(seconds), json.dumps(STRESS_METRICS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    readers: list[subprocess.Popen[str]] = []
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        readers = [
            subprocess.Popen(
                [sys.executable, "-c", READER, str(path), str(seconds + 8)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        iterations = int(writer.stdout.readline())
        assert writer.wait(timeout=10) == 0
        results = [json.loads(r.communicate(timeout=10)[0]) for r in readers]
    finally:
        for proc in [writer, *readers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    assert iterations > 1_000
    print(f"writer: {iterations} iterations; readers: {results}")
    for res in results:
        assert res["bad"] == [], res
        assert res["ok"] >= 50, res  # snapshots taken while the writer ran
        assert res["distinct"] >= 10, res  # ... at many different points of its run
        assert res["busy"] <= res["ok"], res
        assert res["last"]["lockstep"] == iterations  # the final state, complete
        assert res["last"]["pairs"] == 2 * iterations
