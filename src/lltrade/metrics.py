"""The daemon's telemetry: its metric set and how the daemon feeds it.

The shared-memory writer (``lltrade._telemetry``, docs/telemetry.md) is
updated by :class:`~lltrade._telemetry.OrderPathTelemetry` in C: one call per
engine call and one per read, never per event from Python; the gauges, the
byte and journal counters and the heartbeat are refreshed by the daemon's
100 ms tick.  The
sidecar exporter (``lltrade-telemetry``) reads the file; nothing here ever
waits for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from lltrade._telemetry import OrderPathTelemetry, TelemetryWriter, default_path
from lltrade.enums import Reason
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
        by_reason = {
            int(r): w.index(f'orders_rejected{{reason="{r.name}"}}') for r in _REJECT_REASONS
        }
        self.open_orders = w.index("open_orders")
        self.sessions = w.index("sessions")
        self.best = {
            sid: (
                w.index(f'best_bid{{symbol="{sym}"}}'),
                w.index(f'best_ask{{symbol="{sym}"}}'),
            )
            for sid, sym in symbols.items()
        }
        self.order_path = order_path = OrderPathTelemetry(
            w,
            self.idx,
            by_reason,
            latency=w.index("order_latency_ns"),
            batch_time=w.index("batch_time_ns"),
            batch_size=w.index("batch_size"),
        )
        # The order path calls these C methods directly (no Python frame between); the
        # daemon attaches order_path to its ReportEncoder, which counts each batch in C.
        self.batch = order_path.batch  #: (events, n, n_commands, elapsed_ns), per engine call
        self.read = order_path.read  #: (orders, elapsed_ns), per read: latency once per order
        self.rejected = order_path.refused  #: (reason), a refusal before the engine
        self.writer.heartbeat()

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
