"""The report's PNG charts (matplotlib, Agg: no display needed).

Time charts share one x axis, seconds since the log's first line; a line is
broken wherever the log is (a daemon restart, a hole in the sampling) and
those stretches are shaded, as are stretches of stale heartbeats.  A chart
with nothing to draw is not written; its caller says so in the report.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FixedLocator, FuncFormatter

from report_inputs import LoadgenResult, Record, TelemetryLog
from report_summary import (
    BATCH_SIZE,
    BATCH_TIME,
    HOLE_FACTOR,
    Latency,
    Span,
    percentile_curve,
    sampling_interval,
)

SIZE: Final = (10.0, 4.6)
TALL: Final = (10.0, 6.4)
DPI: Final = 100
SPAN_COLOURS: Final = {"restart": "#d62728", "no samples": "#7f7f7f", "stale": "#ff7f0e"}
SPAN_ALPHA: Final = {"restart": 0.18, "no samples": 0.18, "stale": 0.12}
PERCENTILE_TICKS: Final = (0.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999)


@dataclass
class Chart:
    file: str  #: file name inside the output folder
    title: str
    caption: str


Getter = Callable[[Record], float | None]


def _series(log: TelemetryLog, get: Getter, t0: float) -> tuple[list[float], list[float]]:
    """x (s since t0) and y per line, NaN-separated where the log breaks."""
    hole = HOLE_FACTOR * sampling_interval(log)
    xs: list[float] = []
    ys: list[float] = []
    prev: Record | None = None
    for rec in log.records:
        if prev is not None and (
            (rec.pid, rec.start_time_ns) != (prev.pid, prev.start_time_ns)
            or rec.ts - prev.ts > hole
        ):
            xs.append(math.nan)
            ys.append(math.nan)
        value = get(rec)
        xs.append(rec.ts - t0)
        ys.append(math.nan if value is None else float(value))
        prev = rec
    return xs, ys


def _has_data(ys: Sequence[float]) -> bool:
    return any(not math.isnan(y) for y in ys)


def _from_zero(ax: Axes, *series: Sequence[float]) -> None:
    """A y axis from 0 with headroom above the highest point."""
    top = max((y for ys in series for y in ys if not math.isnan(y)), default=1.0)
    ax.set_ylim(0.0, top * 1.15 if top > 0 else 1.0)


def _shade(ax: Axes, spans: list[Span], t0: float, labelled: set[str]) -> None:
    for span in spans:
        label = None
        if span.kind not in labelled:
            labelled.add(span.kind)
            label = "stale heartbeat" if span.kind == "stale" else span.kind
        ax.axvspan(
            span.start - t0,
            span.end - t0,
            color=SPAN_COLOURS[span.kind],
            alpha=SPAN_ALPHA[span.kind],
            label=label,
            lw=0,
        )


def _time_axis(ax: Axes, t0: float, t1: float) -> None:
    """Label the time axis; every time chart spans the whole log, so they line up."""
    ax.set_xlim(0.0, max(t1 - t0, 1.0))
    start = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    ax.set_xlabel(f"seconds since {start}")
    ax.grid(True, which="major", alpha=0.3)


def _save(fig: Any, out_dir: str, file: str) -> str:
    path = os.path.join(out_dir, file)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _us(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e3


def latency_over_time(log: TelemetryLog, spans: list[Span], out_dir: str) -> Chart | None:
    """Order latency per interval: p50, p99, p99.9 and max (daemon histogram)."""
    t0 = log.records[0].ts
    lines = [
        ("p50", lambda r: _us(r.latency_ns.p50)),
        ("p99", lambda r: _us(r.latency_ns.p99)),
        ("p99.9", lambda r: _us(r.latency_ns.p99_9)),
        ("max", lambda r: _us(r.latency_ns.max)),
    ]
    series = [(name, *_series(log, get, t0)) for name, get in lines]
    if not any(_has_data(ys) for _, _, ys in series):
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    for name, xs, ys in series:
        ax.plot(xs, ys, marker=".", label=name)
    ax.set_yscale("log")
    ax.set_ylabel("read to ack written (µs)")
    ax.set_title("Order latency per interval (daemon histogram)")
    _shade(ax, spans, t0, set())
    _time_axis(ax, t0, log.records[-1].ts)
    ax.legend(loc="upper left", fontsize="small")
    _save(fig, out_dir, "latency.png")
    return Chart(
        "latency.png",
        "Latency percentiles over time",
        "The daemon's order latency (read to ack written) in each sampling interval: "
        "p50, p99, p99.9 and max, log scale.",
    )


def throughput_over_time(log: TelemetryLog, spans: list[Span], out_dir: str) -> Chart | None:
    """Orders read per second in each interval."""
    t0 = log.records[0].ts
    xs, ys = _series(log, lambda r: r.orders_per_s, t0)
    if not _has_data(ys):
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    ax.plot(xs, ys, marker=".", label="orders/s")
    ax.set_ylabel("orders read per second")
    _from_zero(ax, ys)
    ax.set_title("Throughput per interval (daemon counter orders_in)")
    _shade(ax, spans, t0, set())
    _time_axis(ax, t0, log.records[-1].ts)
    ax.legend(loc="upper left", fontsize="small")
    _save(fig, out_dir, "throughput.png")
    return Chart(
        "throughput.png",
        "Throughput over time",
        "Orders the daemon read per second in each sampling interval.",
    )


def _percentile_axis(ax: Axes, top: float) -> None:
    ax.set_xscale("log")
    ticks = [1.0 / (1.0 - p / 100.0) for p in PERCENTILE_TICKS if 1.0 / (1.0 - p / 100.0) <= top]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100.0 * (1.0 - 1.0 / x):g}%"))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlim(1.0, max(top, 10.0))
    ax.set_xlabel("percentile")


def latency_distribution(
    loadgens: list[LoadgenResult], daemon: Latency | None, out_dir: str
) -> Chart | None:
    """The HDR percentile plot: x is 1/(1-p) on a log axis, y the latency at p."""
    curves: list[tuple[str, list[tuple[float, float]], dict[str, Any]]] = []
    for lg in loadgens:
        for kind in lg.doc.types:
            points = percentile_curve(lg, kind)
            if points:
                style = {"lw": 2.0} if kind == "all" else {"lw": 1.0, "ls": "--"}
                curves.append((f"round trip {kind} ({lg.name})", points, style))
    daemon_points = []
    if daemon is not None:
        for p, value in ((50.0, daemon.p50), (95.0, daemon.p95), (99.0, daemon.p99)):
            if value is not None:
                daemon_points.append((p, value))
        if daemon.p99_9 is not None:
            daemon_points.append((99.9, daemon.p99_9))
    if not curves and not daemon_points:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    top = 10.0
    for label, points, style in curves:
        xs = [1.0 / (1.0 - p / 100.0) for p, _ in points]
        ax.plot(xs, [v / 1e3 for _, v in points], label=label, **style)
        top = max(top, *xs)
    if daemon_points:
        xs = [1.0 / (1.0 - p / 100.0) for p, _ in daemon_points]
        ax.plot(
            xs,
            [v / 1e3 for _, v in daemon_points],
            "o",
            color="black",
            label="daemon read to ack written (p50, p95, p99, p99.9)",
        )
        top = max(top, *xs)
    _percentile_axis(ax, top * 1.5)
    ax.set_yscale("log")
    ax.set_ylabel("latency (µs)")
    ax.set_title("Latency by percentile")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    _save(fig, out_dir, "distribution.png")
    sources = []
    if curves:
        sources.append("the load generator's round-trip HdrHistograms (lines)")
    if daemon_points:
        sources.append("the daemon's own histogram over the run (points)")
    return Chart(
        "distribution.png",
        "Latency distribution (HDR percentile plot)",
        "Latency at each percentile, x axis 1/(1-p) on a log scale, from "
        + " and ".join(sources)
        + ".",
    )


def batch_over_time(log: TelemetryLog, spans: list[Span], out_dir: str) -> Chart | None:
    """Batch processing time and batch size per interval."""
    t0 = log.records[0].ts

    def stat(hist: str, key: str, scale: float = 1.0) -> Getter:
        def get(r: Record) -> float | None:
            h = r.histograms.get(hist)
            value = None if h is None else getattr(h.interval, key)
            return None if value is None else value / scale

        return get

    times = [(k, *_series(log, stat(BATCH_TIME, k, 1e3), t0)) for k in ("p50", "p99", "max")]
    sizes = [(k, *_series(log, stat(BATCH_SIZE, k), t0)) for k in ("avg", "p99", "max")]
    if not any(_has_data(ys) for _, _, ys in times + sizes):
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=TALL, sharex=True)
    for name, xs, ys in times:
        top.plot(xs, ys, marker=".", label=name)
    top.set_yscale("log")
    top.set_ylabel("batch time (µs)")
    top.set_title("Batch processing per interval (daemon histograms)")
    for name, xs, ys in sizes:
        bottom.plot(xs, ys, marker=".", label=name)
    bottom.set_yscale("log")  # a burst after a stall dwarfs the usual handful
    bottom.set_ylabel("commands per batch")
    labelled: set[str] = set()
    for ax in (top, bottom):
        _shade(ax, spans, t0, labelled)
        ax.legend(loc="upper left", fontsize="small")
        ax.grid(True, alpha=0.3)
    _time_axis(bottom, t0, log.records[-1].ts)
    _save(fig, out_dir, "batch.png")
    return Chart(
        "batch.png",
        "Batch processing time",
        "Time to process one batch of commands (journal, engine, encoders; p50, p99, max) "
        "and commands per batch (average, p99, max) in each sampling interval.",
    )


def cpu_memory_over_time(log: TelemetryLog, spans: list[Span], out_dir: str) -> Chart | None:
    """CPU of the daemon and the host, and the daemon's resident memory."""
    t0 = log.records[0].ts

    def pct(v: float | None) -> float | None:
        return None if v is None else 100.0 * v

    cpu = [
        ("daemon (100% = one core)", *_series(log, lambda r: pct(r.cpu.daemon_ratio), t0)),
        ("host (100% = every core)", *_series(log, lambda r: pct(r.cpu.host_ratio), t0)),
    ]
    rss = _series(
        log,
        lambda r: None if r.memory.daemon_rss_bytes is None else r.memory.daemon_rss_bytes / 2**20,
        t0,
    )
    if not any(_has_data(ys) for _, _, ys in cpu) and not _has_data(rss[1]):
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=TALL, sharex=True)
    for name, xs, ys in cpu:
        top.plot(xs, ys, marker=".", label=name)
    top.set_ylabel("CPU (%)")
    _from_zero(top, *(ys for _, _, ys in cpu))
    top.set_title("CPU and memory")
    bottom.plot(*rss, marker=".", label="daemon resident memory")
    bottom.set_ylabel("MiB")
    _from_zero(bottom, rss[1])
    labelled: set[str] = set()
    for ax in (top, bottom):
        _shade(ax, spans, t0, labelled)
        ax.legend(loc="upper left", fontsize="small")
        ax.grid(True, alpha=0.3)
    _time_axis(bottom, t0, log.records[-1].ts)
    _save(fig, out_dir, "cpu_memory.png")
    return Chart(
        "cpu_memory.png",
        "CPU and memory over time",
        "CPU used by the daemon process (100% = one core) and by the whole host "
        "(100% = every core), and the daemon's resident memory.",
    )
