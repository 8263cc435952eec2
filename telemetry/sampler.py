"""The sampler thread: one snapshot per interval, turned into one telemetry record.

A record holds the interval's figures (throughput, latency percentiles from
the difference of two histogram snapshots, counter rates), the since-start
figures, the gauges and the process and host figures. The sampler appends
each record to the telemetry log as one JSON line (the input of
``benchmark/plots.py``; the schema is in ``docs/telemetry-log.md``), keeps
the last ones for the dashboard and serves the newest as ``/latest``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import IO, Any, Final

from telemetry.source import Gap, Reading, Snapshot, Source
from telemetry.stats import HistStats, hist_stats, split_name
from telemetry.system import SystemSampler

SCHEMA_VERSION: Final = 1
THROUGHPUT_COUNTER: Final = "orders_in"
"""Orders per second are the rate of this counter."""
LATENCY_HISTOGRAM: Final = "order_latency_ns"
"""The latency figures are this histogram's (read to ack written, ns)."""

log = logging.getLogger("lltrade.telemetry")


def _round(stats: HistStats) -> dict[str, Any]:
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in stats.items()}


def _empty_stats() -> dict[str, Any]:
    keys = ("avg", "min", "p50", "p95", "p99", "p99_9", "max")
    return {"count": 0, **dict.fromkeys(keys)}


def _same_run(now: Snapshot, prev: Snapshot) -> bool:
    """The same daemon, and nothing went backwards (else the counts restarted)."""
    if (now["pid"], now["start_time_ns"]) != (prev["pid"], prev["start_time_ns"]):
        return False
    if any(int(v) < int(prev["counters"].get(k, 0)) for k, v in now["counters"].items()):
        return False
    old = prev["histograms"]
    return all(
        int(h["count"]) >= int(old[k]["count"]) for k, h in now["histograms"].items() if k in old
    )


def _gap_json(gaps: list[Gap]) -> dict[str, Any] | None:
    if not gaps:
        return None
    out = gaps[-1].as_json()
    out["old_pid"] = gaps[0].old_pid
    out["old_heartbeat_ns"] = gaps[0].old_heartbeat_ns
    out["seconds"] = round(sum(g.seconds for g in gaps), 6)
    out["restarts"] = len(gaps)
    return out


def build_record(
    reading: Reading,
    prev: Reading | None,
    system: dict[str, Any],
    *,
    restarts: int = 0,
    gaps: list[Gap] | None = None,
) -> dict[str, Any]:
    """One telemetry record (a line of the telemetry log) from two readings.

    Parameters
    ----------
    reading : Reading
        The newer reading; must carry a snapshot.
    prev : Reading or None
        The previous reading of the same daemon; None (first sample, or the
        daemon restarted) measures the interval from the daemon's start.
    system : dict
        ``SystemSampler.sample()`` taken with this reading.
    restarts : int
        Daemon restarts the exporter has seen so far.
    gaps : list of Gap, optional
        Restarts seen since the previous record.

    Returns
    -------
    dict
        The record; ``docs/telemetry-log.md`` describes every field.
    """
    snap = reading.snapshot
    if snap is None:
        raise ValueError("reading has no snapshot")
    uptime_s = max(0.0, (reading.taken_ns - int(snap["start_time_ns"])) / 1e9)
    base: Snapshot | None = None
    interval_s = uptime_s
    if prev is not None and prev.snapshot is not None and _same_run(snap, prev.snapshot):
        base = prev.snapshot
        interval_s = max(reading.taken_mono - prev.taken_mono, 0.0)
    meta = snap["meta"]

    counters = {k: int(v) for k, v in sorted(snap["counters"].items())}
    deltas = {k: v - (int(base["counters"].get(k, 0)) if base else 0) for k, v in counters.items()}
    totals: dict[str, int] = {}
    exact: set[str] = set()  # families with an unlabelled member: it is their total
    for key, value in counters.items():
        family = split_name(key, meta.get(key, ("", "", ""))[2])[0]
        if key == family:
            totals[family] = value
            exact.add(family)
        elif family not in exact:
            totals[family] = totals.get(family, 0) + value

    def per_s(n: float, seconds: float) -> float | None:
        return round(n / seconds, 3) if seconds > 0 else None

    histograms: dict[str, Any] = {}
    for name, hist in sorted(snap["histograms"].items()):
        old = base["histograms"].get(name) if base else None
        histograms[name] = {
            "interval": _round(hist_stats(hist, old)),
            "since_start": _round(hist_stats(hist)),
        }
    latency = histograms.get(LATENCY_HISTOGRAM, {})
    orders = deltas.get(THROUGHPUT_COUNTER)
    daemon = system.get("daemon") or {}
    host = system.get("host") or {}
    return {
        "schema": SCHEMA_VERSION,
        "ts": round(reading.taken_ns / 1e9, 6),
        "interval_s": round(interval_s, 6),
        "from_start": base is None,
        "status": reading.status,
        "pid": int(snap["pid"]),
        "start_time_ns": int(snap["start_time_ns"]),
        "uptime_s": round(uptime_s, 3),
        "heartbeat_age_s": (
            None if reading.heartbeat_age_s is None else round(reading.heartbeat_age_s, 6)
        ),
        "orders": orders,
        "orders_per_s": None if orders is None else per_s(orders, interval_s),
        "orders_per_s_since_start": (
            None
            if THROUGHPUT_COUNTER not in counters
            else per_s(counters[THROUGHPUT_COUNTER], uptime_s)
        ),
        "latency_ns": latency.get("interval", _empty_stats()),
        "latency_ns_since_start": latency.get("since_start", _empty_stats()),
        "histograms": histograms,
        "counters": counters,
        "counter_totals": dict(sorted(totals.items())),
        "counter_rates": {k: per_s(d, interval_s) for k, d in deltas.items()},
        "gauges": {k: int(v) for k, v in sorted(snap["gauges"].items())},
        "cpu": {
            "daemon_ratio": daemon.get("cpu_ratio"),
            "daemon_cores": daemon.get("cores"),
            "daemon_pinned": daemon.get("pinned"),
            "core_ratio": daemon.get("core_ratio"),
            "host_ratio": host.get("cpu_ratio"),
            "host_cpus": host.get("cpu_count"),
        },
        "memory": {
            "daemon_rss_bytes": daemon.get("rss_bytes"),
            "host_total_bytes": host.get("memory_total_bytes"),
            "host_used_bytes": host.get("memory_used_bytes"),
            "host_available_bytes": host.get("memory_available_bytes"),
        },
        "net": host.get("net"),
        "disk": host.get("disk"),
        "daemon_restarts": restarts,
        "gap": _gap_json(gaps or []),
    }


class Sampler:
    """Samples the source every ``interval_s`` on its own thread.

    Parameters
    ----------
    source : Source
        The daemon's telemetry file.
    interval_s : float
        Seconds between samples.
    log_path : str, optional
        Telemetry log to append one JSON line per record to.
    history : int
        Records kept in memory for the dashboard.
    """

    def __init__(
        self, source: Source, interval_s: float, log_path: str | None = None, history: int = 600
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.log_path = log_path
        self._log: IO[str] | None = (
            open(log_path, "a", encoding="utf-8", buffering=1) if log_path else None  # noqa: SIM115
        )
        self._system = SystemSampler()
        self._lock = threading.Lock()
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self._prev: Reading | None = None
        self._last: Reading = Reading("absent", "not sampled yet")  # until start()
        self._last_system: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0

    # -- what the HTTP side reads -------------------------------------------------------------

    @property
    def last_reading(self) -> Reading:
        """The newest reading, with or without a snapshot."""
        return self._last

    def system(self) -> dict[str, Any]:
        """The newest process and host figures (empty before the first sample)."""
        return self._last_system

    def latest(self) -> dict[str, Any] | None:
        """The newest record, if any."""
        with self._lock:
            return self._history[-1] if self._history else None

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` records (all kept ones by default), oldest first."""
        with self._lock:
            records = list(self._history)
        return records if limit is None else records[-limit:] if limit > 0 else []

    # -- sampling -------------------------------------------------------------------------------

    def sample_once(self) -> dict[str, Any] | None:
        """Take one sample now; returns the record (None when there is no snapshot)."""
        reading = self.source.read()
        snap = reading.snapshot
        self._last_system = self._system.sample(None if snap is None else int(snap["pid"]))
        self._last = reading
        self.samples += 1
        if snap is None:
            return None
        gaps = self.source.take_gaps()
        record = build_record(
            reading, self._prev, self._last_system, restarts=self.source.restarts, gaps=gaps
        )
        for gap in gaps:
            log.warning("daemon restarted", extra={"gap": gap.as_json()})
        self._prev = reading
        with self._lock:
            self._history.append(record)
        self._write(record)
        return record

    def _write(self, record: dict[str, Any]) -> None:
        if self._log is None:
            return
        try:
            self._log.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
        except (OSError, ValueError) as exc:  # a full disk must not stop the exporter
            log.error(
                "cannot write the telemetry log", extra={"path": self.log_path, "error": str(exc)}
            )

    def _sample_safely(self) -> None:
        try:
            self.sample_once()
        except Exception:  # keep sampling whatever one sample did
            log.exception("sampling failed")

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._sample_safely()
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # fell behind (suspended, overloaded): skip, don't burst
                next_at = now + self.interval_s

    def start(self) -> None:
        """Take a first sample now, then start the sampling thread."""
        self._sample_safely()
        self._thread = threading.Thread(target=self._run, name="telemetry-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the log."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 * self.interval_s + 5)
        if self._log is not None:
            self._log.close()
            self._log = None
