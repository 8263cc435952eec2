"""Figures of a run, computed from the inputs: what the tables and targets show.

Daemon figures come from the telemetry log.  The log carries each
histogram's summary (count, avg, percentiles, max), not its buckets, so the
whole-run figures are each daemon run's *since start* summary on its last
line; with several daemon runs (restarts) the count and average are
combined exactly and each percentile and the maximum are the worst run's.
Round-trip figures come from the load generator's HdrHistograms.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Final, Literal

from report_inputs import (
    BenchmarkRun,
    LatencySummary,
    LoadgenResult,
    Record,
    Stats,
    TelemetryLog,
)

ORDER_LATENCY: Final = "order_latency_ns"
BATCH_TIME: Final = "batch_time_ns"
BATCH_SIZE: Final = "batch_size"
HOLE_FACTOR: Final = 2.5
"""Consecutive lines further apart than this many sampling intervals leave a hole."""


@dataclass
class DaemonRun:
    """The lines of one daemon process (same pid and start time), oldest first."""

    pid: int
    start_time_ns: int
    records: list[Record]


@dataclass
class Span:
    """A stretch of time the time charts mark, seconds since the epoch."""

    start: float
    end: float
    kind: Literal["restart", "no samples", "stale"]
    text: str


@dataclass
class Latency:
    """Latency figures in ns (None where unknown).

    ``runs`` is how many daemon runs were combined; above 1 the percentiles
    and maximum are the worst run's.
    """

    count: int
    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    p99_9: float | None
    max: float | None
    runs: int = 1
    p90: float | None = None
    p99_99: float | None = None


def split_runs(log: TelemetryLog) -> list[DaemonRun]:
    """The log's lines grouped by daemon process, in order."""
    runs: list[DaemonRun] = []
    for rec in log.records:
        if runs and (runs[-1].pid, runs[-1].start_time_ns) == (rec.pid, rec.start_time_ns):
            runs[-1].records.append(rec)
        else:
            runs.append(DaemonRun(rec.pid, rec.start_time_ns, [rec]))
    return runs


def sampling_interval(log: TelemetryLog) -> float:
    """The exporter's sampling interval: the median spacing of the lines (1 s if unknown)."""
    steps = [b.ts - a.ts for a, b in zip(log.records, log.records[1:], strict=False)]
    steps = [s for s in steps if s > 0]
    return statistics.median(steps) if steps else 1.0


def find_spans(log: TelemetryLog) -> list[Span]:
    """Restarts, holes in the sampling and stale heartbeats, in time order."""
    spans: list[Span] = []
    hole = HOLE_FACTOR * sampling_interval(log)
    prev: Record | None = None
    for rec in log.records:
        if prev is not None:
            restarted = (rec.pid, rec.start_time_ns) != (prev.pid, prev.start_time_ns)
            if rec.gap is not None:
                spans.append(
                    Span(
                        rec.gap.old_heartbeat_ns / 1e9,
                        rec.gap.new_start_time_ns / 1e9,
                        "restart",
                        f"daemon restart: pid {rec.gap.old_pid} -> {rec.gap.new_pid}, "
                        f"{rec.gap.seconds:.1f} s without telemetry",
                    )
                )
            elif restarted:  # restart the exporter did not see (it was restarted too)
                spans.append(
                    Span(
                        prev.ts,
                        max(prev.ts, min(rec.ts, rec.start_time_ns / 1e9)),
                        "restart",
                        f"daemon restart: pid {prev.pid} -> {rec.pid} (not seen by the exporter)",
                    )
                )
            elif rec.ts - prev.ts > hole:
                spans.append(
                    Span(
                        prev.ts,
                        rec.ts,
                        "no samples",
                        f"no telemetry lines for {rec.ts - prev.ts:.1f} s",
                    )
                )
        if rec.status != "ok":
            start = prev.ts if prev is not None else rec.ts - rec.interval_s
            if spans and spans[-1].kind == "stale" and abs(spans[-1].end - start) < 1e-6:
                spans[-1].end = rec.ts
            else:
                spans.append(Span(start, rec.ts, "stale", "daemon heartbeat stale"))
        prev = rec
    return spans


def _combine(stats: list[Stats]) -> Latency | None:
    """Since-start summaries of several daemon runs as one (see the module docstring)."""
    used = [s for s in stats if s.count > 0]
    if not used:
        return None
    count = sum(s.count for s in used)
    avgs = [(s.avg, s.count) for s in used if s.avg is not None]
    avg = sum(a * n for a, n in avgs) / sum(n for _, n in avgs) if avgs else None

    def worst(name: str) -> float | None:
        values = [getattr(s, name) for s in used if getattr(s, name) is not None]
        return max(values) if values else None

    return Latency(
        count=count,
        avg=avg,
        p50=worst("p50"),
        p95=worst("p95"),
        p99=worst("p99"),
        p99_9=worst("p99_9"),
        max=worst("max"),
        runs=len(used),
    )


def daemon_histogram(runs: list[DaemonRun], name: str) -> Latency | None:
    """A daemon histogram over the whole log: each run's since-start summary, combined."""
    stats: list[Stats] = []
    for run in runs:
        last = run.records[-1]
        hist = last.histograms.get(name)
        if hist is None and name == ORDER_LATENCY:
            stats.append(last.latency_ns_since_start)
        elif hist is not None:
            stats.append(hist.since_start)
    return _combine(stats)


@dataclass
class DaemonSummary:
    """What the telemetry log says about the run as a whole."""

    first_ts: float
    last_ts: float
    lines: int
    runs: int
    orders: int
    seconds: float  #: sum of the lines' intervals
    throughput_avg: float | None
    throughput_peak: float | None
    latency: Latency | None
    batch_time: Latency | None
    batch_size: Latency | None
    cpu_avg: float | None
    cpu_max: float | None
    host_cpu_avg: float | None
    rss_max: int | None
    host_total: int | None
    stale_lines: int


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise_log(log: TelemetryLog) -> DaemonSummary:
    """Whole-run figures from the telemetry log."""
    recs = log.records
    runs = split_runs(log)
    counted = [r for r in recs if r.orders is not None]
    orders = sum(r.orders or 0 for r in counted)
    seconds = sum(r.interval_s for r in counted)
    rates = [r.orders_per_s for r in recs if r.orders_per_s is not None]
    cpu = [r.cpu.daemon_ratio for r in recs if r.cpu.daemon_ratio is not None]
    host_cpu = [r.cpu.host_ratio for r in recs if r.cpu.host_ratio is not None]
    rss = [r.memory.daemon_rss_bytes for r in recs if r.memory.daemon_rss_bytes is not None]
    totals = [r.memory.host_total_bytes for r in recs if r.memory.host_total_bytes is not None]
    return DaemonSummary(
        first_ts=recs[0].ts,
        last_ts=recs[-1].ts,
        lines=len(recs),
        runs=len(runs),
        orders=orders,
        seconds=seconds,
        throughput_avg=orders / seconds if seconds > 0 else None,
        throughput_peak=max(rates) if rates else None,
        latency=daemon_histogram(runs, ORDER_LATENCY),
        batch_time=daemon_histogram(runs, BATCH_TIME),
        batch_size=daemon_histogram(runs, BATCH_SIZE),
        cpu_avg=_mean(cpu),
        cpu_max=max(cpu) if cpu else None,
        host_cpu_avg=_mean(host_cpu),
        rss_max=max(rss) if rss else None,
        host_total=totals[-1] if totals else None,
        stale_lines=sum(1 for r in recs if r.status != "ok"),
    )


# -- load generator -------------------------------------------------------------------------------


def _from_percentile_list(summary: LatencySummary, pct: float) -> float | None:
    """The smallest listed value at or above percentile ``pct`` (None if the list is empty)."""
    for level, value in sorted(summary.percentiles):
        if level >= pct:
            return value
    return None


def roundtrip(result: LoadgenResult, kind: str = "all") -> Latency | None:
    """Round-trip figures of one message type (``all`` by default), ns.

    p95 is not in the result's summary: it is read from the HdrHistogram, or
    from the percentile list when the histogram does not decode.
    """
    summary = result.doc.types.get(kind)
    if summary is None or summary.count == 0:
        return None
    hist = result.histograms.get(kind)
    if hist is not None and hist.get_total_count() > 0:
        p95: float | None = float(hist.get_value_at_percentile(95.0))
    else:
        p95 = _from_percentile_list(summary, 95.0)
    return Latency(
        count=summary.count,
        avg=summary.mean_ns,
        p50=summary.p50_ns,
        p95=p95,
        p99=summary.p99_ns,
        p99_9=summary.p99_9_ns,
        max=summary.max_ns,
        p90=summary.p90_ns,
        p99_99=summary.p99_99_ns,
    )


def percentile_curve(result: LoadgenResult, kind: str) -> list[tuple[float, float]]:
    """(percentile, value ns) points of the HDR percentile plot, from the histogram or list."""
    hist = result.histograms.get(kind)
    if hist is not None and hist.get_total_count() > 0:
        points = [
            (it.percentile_level_iterated_to, float(it.value_iterated_to))
            for it in hist.get_percentile_iterator(5)
        ]
    else:
        summary = result.doc.types.get(kind)
        points = sorted(summary.percentiles) if summary is not None else []
    return [(p, v) for p, v in points if p < 100.0]


# -- pytest-benchmark --------------------------------------------------------------------------

TELEMETRY_COST_KEY: Final = "ns_per_order"


@dataclass
class TelemetryCost:
    ns_per_order: float
    source: str  #: the benchmark it came from
    file: str = ""  #: the pytest-benchmark file that holds it


def telemetry_cost(runs: list[BenchmarkRun]) -> list[TelemetryCost]:
    """The telemetry write cost per order, from the newest pytest-benchmark file that has it.

    A benchmark states it in ``extra_info["ns_per_order"]``.  When no
    benchmark of a file does, one whose name mentions both ``telemetry`` and
    ``order`` is taken as timing ``extra_info["orders"]`` orders per call (1
    if absent) and its median is divided by that.  ``runs`` are oldest first.
    """
    for run in reversed(runs):
        stated: list[TelemetryCost] = []
        named: list[TelemetryCost] = []
        for bench in run.doc.benchmarks:
            value = bench.extra_info.get(TELEMETRY_COST_KEY)
            if isinstance(value, int | float) and not isinstance(value, bool):
                stated.append(TelemetryCost(float(value), bench.name, run.name))
                continue
            name = (bench.fullname or bench.name).lower()
            orders = bench.extra_info.get("orders", 1)
            if "telemetry" in name and "order" in name and isinstance(orders, int) and orders > 0:
                named.append(TelemetryCost(bench.stats.median * 1e9 / orders, bench.name, run.name))
        if stated or named:
            return stated or named
    return []
