"""The daemon's telemetry: its metric set and how the daemon feeds it.

The shared-memory writer (``lltrade._telemetry``, docs/telemetry.md) is
updated once per batch and once per read, never per event from Python; the
gauges and the heartbeat are refreshed by the daemon's 100 ms tick.  The
sidecar exporter (``lltrade-telemetry``) reads the file; nothing here ever
waits for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from lltrade._telemetry import TelemetryWriter, default_path
from lltrade.enums import EventKind, Reason
from lltrade.protocol import SessionReason

_COUNTERS = (
    ("orders_in", "Order messages admitted to the engine"),
    ("orders_accepted", "Orders accepted by the books"),
    ("orders_rejected", "Order messages rejected (gate, book or journal)"),
    ("fills", "Fill events (one per side of a match)"),
    ("cancels", "Cancelled events"),
    ("bytes_in", "Bytes received from clients"),
    ("bytes_out", "Bytes written to clients"),
    ("sessions_opened", "Successful logons"),
    ("malformed_frames", "Frames that did not decode"),
    ("journal_records", "Journal records written"),
    ("journal_bytes", "Journal bytes written"),
)
_HISTOGRAMS = (
    ("order_latency_ns", "Read of a client's frames to its answers written, per order"),
    ("batch_time_ns", "Engine batch processing time"),
    ("batch_size", "Commands per engine batch"),
)
_KINDS = len(EventKind) + 1
# Every reason an order message can be refused with, one counter each.
_REJECT_REASONS = [r for r in Reason if 1 <= r < 20 or 40 <= r < 60] + [SessionReason.RATE_LIMITED]


class DaemonTelemetry:
    """Publishes the daemon's counters, gauges and histograms.

    Parameters
    ----------
    name
        The shared-memory file name (under /dev/shm) or an absolute path.
    symbols
        Symbol id -> name, for the per-symbol best bid/ask gauges.
    """

    def __init__(self, name: str, symbols: Mapping[int, str]) -> None:
        metrics: list[tuple[str, str, str | None, str | None]] = [
            ("counter", n, h, None) for n, h in _COUNTERS
        ]
        for reason in _REJECT_REASONS:
            label = f'reason="{reason.name}"'
            metrics.append(
                ("counter", f"orders_rejected{{{label}}}", "Order messages rejected", label)
            )
        metrics += [
            ("gauge", "open_orders", "Resting orders over all books", None),
            ("gauge", "sessions", "Sessions logged on", None),
        ]
        for sym in symbols.values():
            label = f'symbol="{sym}"'
            metrics.append(("gauge", f"best_bid{{{label}}}", "Best bid price", label))
            metrics.append(("gauge", f"best_ask{{{label}}}", "Best ask price", label))
        metrics += [("histogram", n, h, None) for n, h in _HISTOGRAMS]
        path = name if os.path.isabs(name) else default_path(name)
        self.writer = TelemetryWriter(path, metrics)
        w = self.writer
        self.idx = {n: w.index(n) for n, _ in _COUNTERS}
        self.by_reason = np.full(1 << 16, -1, dtype=np.int64)
        for reason in _REJECT_REASONS:
            self.by_reason[int(reason)] = w.index(f'orders_rejected{{reason="{reason.name}"}}')
        self.open_orders = w.index("open_orders")
        self.sessions = w.index("sessions")
        self.best = {
            sid: (
                w.index(f'best_bid{{symbol="{sym}"}}'),
                w.index(f'best_ask{{symbol="{sym}"}}'),
            )
            for sid, sym in symbols.items()
        }
        self.latency = w.index("order_latency_ns")
        self.batch_time = w.index("batch_time_ns")
        self.batch_size = w.index("batch_size")
        # One read's latency is recorded once per order it carried: from this
        # buffer, so a read allocates nothing.
        self._latencies = np.zeros(4096, dtype=np.uint64)
        self.writer.heartbeat()

    def batch(
        self, n_commands: int, kinds: np.ndarray, reasons: np.ndarray, elapsed_ns: int
    ) -> None:
        """One engine batch: its size, time and what its events were."""
        w, idx = self.writer, self.idx
        counts = np.bincount(kinds, minlength=_KINDS)
        if counts[EventKind.REJECTED]:
            for reason in reasons[kinds == EventKind.REJECTED]:
                slot = int(self.by_reason[reason])
                if slot >= 0:
                    w.add(slot)
        w.add(idx["orders_in"], n_commands)
        w.add(idx["orders_accepted"], int(counts[EventKind.ACCEPTED]))
        w.add(idx["orders_rejected"], int(counts[EventKind.REJECTED]))
        w.add(idx["fills"], int(counts[EventKind.FILL]))
        w.add(idx["cancels"], int(counts[EventKind.CANCELLED]))
        w.record(self.batch_time, elapsed_ns)
        w.record(self.batch_size, n_commands)

    def read(self, nbytes: int, orders: int, elapsed_ns: int) -> None:
        """One read handled: bytes in, and its latency once per order it carried."""
        if nbytes:
            self.writer.add(self.idx["bytes_in"], nbytes)
        buf = self._latencies
        while orders > 0:
            n = min(orders, len(buf))
            buf[:n] = elapsed_ns
            self.writer.record_many(self.latency, buf[:n])
            orders -= n

    def rejected(self, reason: int) -> None:
        """A refusal decided before the engine (gate, session or journal)."""
        self.writer.add(self.idx["orders_rejected"])
        slot = int(self.by_reason[reason])
        if slot >= 0:
            self.writer.add(slot)

    def add(self, name: str, v: int = 1) -> None:
        self.writer.add(self.idx[name], v)

    def tick(
        self, open_orders: int, sessions: int, best: Mapping[int, tuple[int | None, int | None]]
    ) -> None:
        """Gauges and the heartbeat (the exporter's /health reads its age)."""
        w = self.writer
        w.set(self.open_orders, open_orders)
        w.set(self.sessions, sessions)
        for sid, (bid, ask) in best.items():
            bid_idx, ask_idx = self.best[sid]
            w.set(bid_idx, bid or 0)
            w.set(ask_idx, ask or 0)
        w.heartbeat()

    def close(self) -> None:
        self.writer.close(unlink=True)
