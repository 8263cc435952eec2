"""What the report says: the sections of ``report.md`` and ``index.html``, from the figures."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime

from figures import fmt_ns, fmt_rate
from report_charts import Chart
from report_inputs import BenchmarkRun, Inputs, LoadgenResult
from report_render import Block, Bullets, Document, Image, Section, Table
from report_summary import (
    DaemonSummary,
    Latency,
    Span,
    TelemetryCost,
    roundtrip,
    split_runs,
)
from report_targets import Verdict

LATENCY_COLUMNS = ["count", "avg", "p50", "p95", "p99", "p99.9", "max"]


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_count(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_value(verdict: Verdict) -> str:
    if verdict.value is None:
        return "-"
    if verdict.target.stat == "ns_per_order":
        return f"{verdict.value:.1f} ns"
    return fmt_ns(verdict.value)


def latency_row(name: str, lat: Latency | None, in_ns: bool = True) -> list[str]:
    """A histogram's summary as a table row; ``in_ns`` false for a count (batch size)."""
    if lat is None:
        return [name, "0"] + ["-"] * (len(LATENCY_COLUMNS) - 1)
    values = [lat.avg, lat.p50, lat.p95, lat.p99, lat.p99_9, lat.max]
    if in_ns:
        return [name, fmt_count(lat.count), *(fmt_ns(v) for v in values)]
    return [name, fmt_count(lat.count), *("-" if v is None else f"{v:,.1f}" for v in values)]


def run_section(inputs: Inputs, summary: DaemonSummary, notes: list[str]) -> Section:
    log = inputs.telemetry
    pids = ", ".join(str(r.pid) for r in split_runs(log))
    items = [
        f"telemetry log {os.path.basename(log.path)}: {summary.lines} valid line(s) "
        f"of {log.lines}, daemon pid(s) {pids}",
    ]
    items += [f"load-generator result {lg.name}" for lg in inputs.loadgens]
    items += [f"pytest-benchmark {b.name}" for b in inputs.benchmarks]
    blocks: list[Block] = [
        f"From {utc(summary.first_ts)} to {utc(summary.last_ts)} "
        f"({summary.last_ts - summary.first_ts:.0f} s of telemetry).",
        Bullets(items),
    ]
    if notes:
        blocks.append("How the run was made:")
        blocks.append(Bullets(notes))
    return Section("Run", blocks)


def targets_section(verdicts: list[Verdict]) -> Section:
    rows = [
        [
            v.target.name,
            v.target.origin,
            v.source,
            fmt_value(v),
            v.target.limit_text,
            v.status,
            v.note,
        ]
        for v in verdicts
    ]
    counts = Counter(v.status for v in verdicts)
    return Section(
        "Targets",
        [
            f"{counts['pass']} pass, {counts['fail']} fail, {counts['no data']} no data. "
            "The daemon histogram times an order from its read to its ack written "
            "(inside the daemon); the load generator times the client's round trip from "
            "each order's planned send time. Round-trip targets marked busy-poll are "
            "defined for a daemon that busy-polls.",
            Table(
                ["target", "from", "source of the figure", "measured", "target", "result", "note"],
                rows,
                status_column=5,
            ),
        ],
    )


def daemon_section(summary: DaemonSummary, spans: list[Span]) -> Section:
    cpu = "-" if summary.cpu_avg is None else f"{100 * summary.cpu_avg:.0f}% of a core"
    cpu_max = "-" if summary.cpu_max is None else f"{100 * summary.cpu_max:.0f}% of a core"
    host = "-" if summary.host_cpu_avg is None else f"{100 * summary.host_cpu_avg:.0f}%"
    rss = "-" if summary.rss_max is None else f"{summary.rss_max / 2**20:.1f} MiB"
    throughput = [
        ["orders read", fmt_count(summary.orders)],
        ["seconds covered by the lines", f"{summary.seconds:.1f} s"],
        [
            "throughput, average",
            "-" if summary.throughput_avg is None else fmt_rate(summary.throughput_avg),
        ],
        [
            "throughput, best interval",
            "-" if summary.throughput_peak is None else fmt_rate(summary.throughput_peak),
        ],
        ["daemon CPU, average / highest", f"{cpu} / {cpu_max}"],
        ["host CPU, average", host],
        ["daemon resident memory, highest", rss],
        ["daemon runs (restarts)", f"{summary.runs} ({summary.runs - 1})"],
        ["lines with a stale heartbeat", str(summary.stale_lines)],
    ]
    worst = ""
    if summary.latency is not None and summary.latency.runs > 1:
        worst = (
            f" With {summary.latency.runs} daemon runs, count and average cover them all; "
            "the percentiles and max are the worst run's."
        )
    blocks: list[Block] = [
        Table(["figure", "value"], throughput),
        "Histograms since each daemon's start, as of its last line in the log "
        "(latency: read to ack written; batch: processing one batch)." + worst,
        Table(
            ["histogram", *LATENCY_COLUMNS],
            [
                latency_row("order latency", summary.latency),
                latency_row("batch time", summary.batch_time),
                latency_row("batch size (commands)", summary.batch_size, in_ns=False),
            ],
        ),
    ]
    marked = [s for s in spans if s.kind != "stale"]
    if marked:
        blocks.append("Breaks in the log, shaded on the time charts:")
        blocks.append(Bullets([f"{utc(s.start)} to {utc(s.end)}: {s.text}" for s in marked]))
    return Section("Daemon (telemetry log)", blocks)


def loadgen_section(lg: LoadgenResult) -> Section:
    d = lg.doc
    cfg = d.config
    facts = []
    if d.started is not None:
        facts.append(f"started {utc(d.started)}")
    if d.duration_s is not None:
        facts.append(f"measured for {d.duration_s:.1f} s")
    if cfg.get("connections") is not None:
        facts.append(f"{cfg['connections']} connection(s)")
    rate = "max search" if d.target_rate is None else fmt_rate(d.target_rate)
    achieved = "-" if d.achieved_rate is None else fmt_rate(d.achieved_rate)
    facts.append(f"target rate {rate}, achieved {achieved}")
    facts.append(
        f"sent {fmt_count(d.sent)}, answered {fmt_count(d.answered)}, "
        f"rejected {fmt_count(d.rejected)}"
    )
    if d.bottleneck:
        facts.append(f"bottleneck: {d.bottleneck} ({d.bottleneck_reason or 'no reason given'})")
    else:
        facts.append("bottleneck: none detected")
    if d.errors:
        facts.append(f"errors: {'; '.join(d.errors[:5])}")
    rows = []
    for kind in d.types:
        lat = roundtrip(lg, kind)
        if lat is None:
            rows.append([kind, "0"] + ["-"] * 9)
            continue
        rows.append(
            [
                kind,
                fmt_count(lat.count),
                *(
                    fmt_ns(v)
                    for v in (
                        lat.avg,
                        lat.p50,
                        lat.p90,
                        lat.p95,
                        lat.p99,
                        lat.p99_9,
                        lat.p99_99,
                        lat.max,
                    )
                ),
            ]
        )
    blocks: list[Block] = [
        Bullets(facts),
        Table(
            ["message", "count", "mean", "p50", "p90", "p95", "p99", "p99.9", "p99.99", "max"],
            rows,
        ),
    ]
    if d.max_search:
        blocks.append("Search for the sustainable peak (--max):")
        blocks.append(
            Table(
                ["rate tried", "achieved", "p99", "sustained"],
                [
                    [fmt_rate(s.rate), fmt_rate(s.achieved_rate), fmt_ns(s.p99_ns), str(s.ok)]
                    for s in d.max_search
                ],
            )
        )
    return Section(f"Load generator ({lg.name})", blocks)


def benchmark_section(run: BenchmarkRun, costs: list[TelemetryCost]) -> Section:
    rows = [
        [
            b.name,
            fmt_ns(b.stats.median * 1e9),
            fmt_rate(b.stats.ops),
            str(b.stats.rounds),
        ]
        for b in run.doc.benchmarks
    ]
    when = f" ({run.doc.datetime})" if run.doc.datetime else ""
    blocks: list[Block] = [
        f"{len(rows)} benchmark(s){when}; median time per call and calls per second.",
        Table(["benchmark", "median", "ops", "rounds"], rows),
    ]
    mine = [c for c in costs if c.file == run.name]
    if mine:
        blocks.append(
            "Telemetry cost per order: "
            + ", ".join(f"{c.ns_per_order:.1f} ns ({c.source})" for c in mine)
            + "."
        )
    return Section(f"pytest-benchmark ({run.name})", blocks)


def charts_section(charts: list[Chart], missing: list[str]) -> Section:
    blocks: list[Block] = [Image(c.file, c.title, c.caption) for c in charts]
    if missing:
        blocks.append(Bullets([f"not drawn: {m}" for m in missing]))
    return Section("Charts", blocks)


def build_document(
    inputs: Inputs,
    summary: DaemonSummary,
    spans: list[Span],
    verdicts: list[Verdict],
    costs: list[TelemetryCost],
    charts: list[Chart],
    missing: list[str],
    notes: list[str],
) -> Document:
    doc = Document("lltrade performance report")
    doc.sections.append(run_section(inputs, summary, notes))
    if inputs.warnings:
        doc.sections.append(Section("Warnings", [Bullets(inputs.warnings)]))
    doc.sections.append(targets_section(verdicts))
    doc.sections.append(daemon_section(summary, spans))
    doc.sections.extend(loadgen_section(lg) for lg in inputs.loadgens)
    doc.sections.extend(benchmark_section(b, costs) for b in inputs.benchmarks)
    doc.sections.append(charts_section(charts, missing))
    return doc
