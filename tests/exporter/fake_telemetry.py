"""A stand-in for ``lltrade._telemetry``: a fake daemon writer and a reader with the same face.

The fake daemon keeps its counters, gauges and log-linear histograms in
memory and publishes them as one JSON file (written to a temporary name and
renamed, so a reader never sees half of it). ``TelemetryReader`` reads that
file and returns snapshot dicts shaped exactly like the real reader's, so
the exporter can be tested in-process (``backend()``) or as a subprocess
(``lltrade-telemetry --reader fake_telemetry`` with this folder on
``PYTHONPATH``).

Like a real mapping, a reader keeps showing the file it opened: a new
daemon's file at the same path is seen only after ``reopen_if_replaced()``,
and a removed file's last contents stay readable.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from typing import Any, Final

import numpy as np

from telemetry.source import Backend, HistogramSnapshot, Snapshot

MAGIC: Final = "fake-lltrade-telemetry/1"


class TelemetryError(Exception):
    """The file is absent, foreign or truncated."""


def hdr_bounds(sub_bits: int = 4, top_exponent: int = 36) -> np.ndarray:
    """Inclusive upper bounds of a log-linear histogram: exact below 2**(sub_bits + 1),
    then 2**sub_bits buckets per power of two (about 6 % wide) up to 2**top_exponent."""
    bounds = list(range(1, 2 ** (sub_bits + 1) + 1))
    for e in range(sub_bits + 1, top_exponent):
        step = 2 ** (e - sub_bits)
        bounds.extend(2**e + (k + 1) * step for k in range(2**sub_bits))
    return np.asarray(bounds, dtype=np.uint64)


BOUNDS: Final = hdr_bounds()

COUNTERS: Final = {
    "orders_in": "Orders read from sessions.",
    "orders_accepted": "Orders accepted by the engine.",
    "fills": "Fills sent.",
    "cancels": "Cancels done.",
    "bytes_in": "Bytes read from sessions.",
    "bytes_out": "Bytes written to sessions.",
    "sessions_opened": "Sessions logged on.",
    "malformed_frames": "Frames that did not decode.",
    "journal_records": "Journal records written.",
    "journal_bytes": "Journal bytes written.",
}
REJECT_REASONS: Final = ("PRICE_COLLAR", "RATE_LIMIT", "UNKNOWN_ORDER")
GAUGES: Final = {"open_orders": "Resting orders.", "sessions": "Sessions logged on."}
HISTOGRAMS: Final = {
    "order_latency_ns": "Order latency, read to ack written (ns).",
    "batch_time_ns": "Time to process one batch (ns).",
    "batch_size": "Orders per batch.",
}


def metric_specs(reject_key: str = "orders_rejected.{reason}") -> list[tuple[str, str, str, str]]:
    """The metrics the daemon will publish, as ``(kind, name, help, labels)``."""
    specs = [("counter", k, h, "") for k, h in COUNTERS.items()]
    for reason in REJECT_REASONS:  # one slot per label set
        key = reject_key.format(reason=reason)
        specs.append(("counter", key, "Orders rejected, by reason.", f'reason="{reason}"'))
    specs += [("gauge", k, h, "") for k, h in GAUGES.items()]
    for side in ("best_bid", "best_ask"):  # the other spelling: labels in the key
        help_text = f"{side.replace('_', ' ')} in ticks."
        specs.append(("gauge", f'{side}{{symbol="DEMO"}}', help_text, 'symbol="DEMO"'))
    specs += [("histogram", k, h, "") for k, h in HISTOGRAMS.items()]
    return specs


class Daemon:
    """What a daemon does to its telemetry, on top of ``add``, ``set`` and ``observe``."""

    reject_key = "orders_rejected.{reason}"
    pid: int
    start_time_ns: int
    gauges: dict[str, int]

    def add(self, name: str, n: int = 1) -> None:
        """Increase a counter."""
        raise NotImplementedError

    def set(self, name: str, value: int) -> None:
        """Set a gauge."""
        raise NotImplementedError

    def observe(self, name: str, value: int) -> None:
        """Record one value in a histogram."""
        raise NotImplementedError

    def trade(self, orders: int, rng: random.Random, latency_ns: float = 20_000.0) -> None:
        """Simulate ``orders`` orders: counters, a few rejects, latencies around ``latency_ns``."""
        self.add("orders_in", orders)
        rejected = orders // 50
        self.add("orders_accepted", orders - rejected)
        for i in range(rejected):
            reason = REJECT_REASONS[i % len(REJECT_REASONS)]
            self.add(self.reject_key.format(reason=reason))
        self.add("fills", orders // 3)
        self.add("cancels", orders // 5)
        self.add("bytes_in", 64 * orders)
        self.add("bytes_out", 96 * orders)
        self.add("journal_records", orders)
        self.add("journal_bytes", 48 * orders)
        batches = max(1, orders // 16)
        for _ in range(batches):
            self.observe("batch_size", max(1, orders // batches))
            self.observe("batch_time_ns", int(rng.lognormvariate(math.log(4_000), 0.4)))
        for _ in range(orders):
            tail = 8.0 if rng.random() < 0.005 else 1.0
            value = int(tail * rng.lognormvariate(math.log(latency_ns), 0.3))
            self.observe("order_latency_ns", value)
        self.open_orders = getattr(self, "open_orders", 0) + orders // 4
        self.set("open_orders", self.open_orders)
        self.set("sessions", 3)
        self.set('best_bid{symbol="DEMO"}', 10_020 + rng.randint(-3, 3))
        self.set('best_ask{symbol="DEMO"}', 10_025 + rng.randint(-3, 3))

    def beat(self, now_ns: int | None = None) -> None:
        """Update the heartbeat."""
        raise NotImplementedError

    def publish(self) -> None:
        """Make the updates visible to readers."""

    def remove(self) -> None:
        """Remove the file, as a daemon does when it stops."""
        raise NotImplementedError


class FakeDaemon(Daemon):
    """The fake writer: state in memory, written to ``path`` as JSON on ``publish()``.

    Parameters
    ----------
    path : str
        The telemetry file.
    pid : int, optional
        The daemon's pid (this process's by default, so psutil finds it).
    start_time_ns : int, optional
        Wall-clock start (now by default).
    """

    def __init__(self, path: str, pid: int | None = None, start_time_ns: int | None = None) -> None:
        self.path = path
        self.pid = os.getpid() if pid is None else pid
        self.start_time_ns = time.time_ns() if start_time_ns is None else start_time_ns
        self.heartbeat_ns = self.start_time_ns
        self.counters: dict[str, int] = {}
        self.gauges = {}
        self.meta: dict[str, tuple[str, str, str]] = {}
        self.buckets: dict[str, np.ndarray] = {}
        self.hstats: dict[str, list[int]] = {}  # count, sum, min, max
        for kind, name, help_text, labels in metric_specs(self.reject_key):
            self.meta[name] = (kind, help_text, labels)
            if kind == "counter":
                self.counters[name] = 0
            elif kind == "gauge":
                self.gauges[name] = 0
            else:
                self.buckets[name] = np.zeros(len(BOUNDS), dtype=np.uint64)
                self.hstats[name] = [0, 0, 0, 0]

    def add(self, name: str, n: int = 1) -> None:
        """Increase a counter."""
        self.counters[name] += n

    def set(self, name: str, value: int) -> None:
        """Set a gauge."""
        self.gauges[name] = value

    def observe(self, name: str, value: int) -> None:
        """Record one value in a histogram."""
        value = max(0, int(value))
        i = min(int(np.searchsorted(BOUNDS, value, side="left")), len(BOUNDS) - 1)
        self.buckets[name][i] += np.uint64(1)
        s = self.hstats[name]
        s[2] = value if s[0] == 0 else min(s[2], value)
        s[3] = max(s[3], value)
        s[0] += 1
        s[1] += value

    def beat(self, now_ns: int | None = None) -> None:
        """Update the heartbeat."""
        self.heartbeat_ns = time.time_ns() if now_ns is None else now_ns

    # -- the file -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The whole state as the file holds it."""
        hists = {}
        for name, b in self.buckets.items():
            count, total, lo, hi = self.hstats[name]
            hists[name] = {
                "count": count,
                "sum": total,
                "min": lo,
                "max": hi,
                "buckets": b.tolist(),
                "upper_bounds_ns": BOUNDS.tolist(),
                "labels": self.meta[name][2],
                "help": self.meta[name][1],
            }
        return {
            "magic": MAGIC,
            "pid": self.pid,
            "start_time_ns": self.start_time_ns,
            "heartbeat_ns": self.heartbeat_ns,
            "counters": self.counters,
            "gauges": self.gauges,
            "histograms": hists,
            "meta": {k: list(v) for k, v in self.meta.items()},
        }

    def publish(self) -> None:
        """Write the file (atomically: a temporary name, then a rename)."""
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Remove the file, as a daemon does when it stops."""
        os.unlink(self.path)


# -- the reader side: the face of lltrade._telemetry ----------------------------------------------


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise TelemetryError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise TelemetryError(f"{path}: truncated or unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("magic") != MAGIC:
        raise TelemetryError(f"{path}: not a telemetry file (bad magic)")
    return data


def _identity(data: dict[str, Any]) -> tuple[int, int]:
    return int(data["pid"]), int(data["start_time_ns"])


class TelemetryReader:
    """Reads a :class:`FakeDaemon`'s file; same methods as the real reader."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._data = _load(path)
        self.opens = 1

    def _refresh(self) -> None:
        try:
            data = _load(self.path)
        except TelemetryError:
            return  # removed or being replaced: the old mapping still shows the old daemon
        if _identity(data) == _identity(self._data):
            self._data = data

    def snapshot(self) -> Snapshot:
        """The same dicts as ``lltrade._telemetry.TelemetryReader.snapshot()``."""
        self._refresh()
        d = self._data
        hists: dict[str, HistogramSnapshot] = {}
        for name, h in d["histograms"].items():
            hists[name] = {
                "count": int(h["count"]),
                "sum": int(h["sum"]),
                "min": int(h["min"]),
                "max": int(h["max"]),
                "buckets": np.asarray(h["buckets"], dtype=np.uint64),
                "upper_bounds_ns": np.asarray(h["upper_bounds_ns"], dtype=np.uint64),
                "labels": h["labels"],
                "help": h["help"],
            }
        return {
            "pid": int(d["pid"]),
            "start_time_ns": int(d["start_time_ns"]),
            "heartbeat_ns": int(d["heartbeat_ns"]),
            "counters": {k: int(v) for k, v in d["counters"].items()},
            "gauges": {k: int(v) for k, v in d["gauges"].items()},
            "histograms": hists,
            "meta": {k: (v[0], v[1], v[2]) for k, v in d["meta"].items()},
        }

    def heartbeat_age_s(self, now_ns: int | None = None) -> float:
        """Seconds since the heartbeat."""
        self._refresh()
        now = time.time_ns() if now_ns is None else now_ns
        return max(0.0, (now - int(self._data["heartbeat_ns"])) / 1e9)

    def reopen_if_replaced(self) -> bool:
        """Open the file again if the path now holds another daemon's file."""
        try:
            data = _load(self.path)
        except TelemetryError:
            return False
        if _identity(data) == _identity(self._data):
            return False
        self._data = data
        self.opens += 1
        return True


def percentile(hist: HistogramSnapshot, q: float) -> float:
    """The ``q``-th percentile (0..100): the upper bound of the bucket it falls in."""
    count = int(hist["count"])
    if count == 0:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * count))
    i = int(np.searchsorted(np.cumsum(hist["buckets"]), rank, side="left"))
    return float(min(max(float(hist["upper_bounds_ns"][i]), hist["min"]), hist["max"]))


def backend() -> Backend:
    """This module as the exporter's reader backend."""
    return Backend(open=TelemetryReader, errors=(TelemetryError, OSError), name=__name__)


# -- the real writer behind the same face -----------------------------------------------------


class RealDaemon(Daemon):
    """The same simulated daemon writing through ``lltrade._telemetry.TelemetryWriter``.

    Rejects use the other spelling of a labelled slot
    (``orders_rejected{reason="PRICE_COLLAR"}``). Updates are visible at once;
    ``publish()`` does nothing. A new ``RealDaemon`` at the same path is a
    restarted daemon (same pid, new start time, new file).
    """

    reject_key = 'orders_rejected{{reason="{reason}"}}'

    def __init__(self, path: str) -> None:
        from lltrade._telemetry import TelemetryReader as RealReader
        from lltrade._telemetry import TelemetryWriter

        self.path = path
        self.writer = TelemetryWriter(path, metric_specs(self.reject_key))
        self.index = {spec[1]: self.writer.index(spec[1]) for spec in metric_specs(self.reject_key)}
        with RealReader(path) as reader:
            self.pid, self.start_time_ns = reader.pid, reader.start_time_ns
        self.gauges = {}

    def add(self, name: str, n: int = 1) -> None:
        """Increase a counter."""
        self.writer.add(self.index[name], n)

    def set(self, name: str, value: int) -> None:
        """Set a gauge."""
        self.gauges[name] = value
        self.writer.set(self.index[name], value)

    def observe(self, name: str, value: int) -> None:
        """Record one value in a histogram."""
        self.writer.record(self.index[name], max(0, int(value)))

    def beat(self, now_ns: int | None = None) -> None:
        """Update the heartbeat."""
        self.writer.heartbeat(now_ns)

    def remove(self) -> None:
        """Stop: unmap and unlink the file."""
        self.writer.close(unlink=True)

    def close(self) -> None:
        """Stop without removing the file (a crash, or a restart about to replace it)."""
        if not self.writer.closed:
            self.writer.close()
