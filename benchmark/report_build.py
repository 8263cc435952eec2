"""Compute the figures, draw the charts and write ``report.md`` and ``index.html``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from figures import fmt_ns
from report_charts import (
    Chart,
    batch_over_time,
    cpu_memory_over_time,
    latency_distribution,
    latency_over_time,
    throughput_over_time,
)
from report_content import build_document, fmt_value
from report_inputs import Inputs
from report_render import to_html, to_markdown
from report_summary import DaemonSummary, find_spans, roundtrip, summarise_log, telemetry_cost
from report_targets import RoundTrip, Verdict, evaluate


@dataclass
class Report:
    out_dir: str
    summary: DaemonSummary
    verdicts: list[Verdict]
    charts: list[Chart]

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal: the run and each verdict."""
        s = self.summary
        lat = s.latency
        lines = [
            f"telemetry: {s.lines} lines, {s.orders:,} orders, "
            f"daemon latency p50 {fmt_ns(lat.p50 if lat else None)} "
            f"p99 {fmt_ns(lat.p99 if lat else None)}"
        ]
        for v in self.verdicts:
            lines.append(
                f"  {v.status:<7} {v.target.name} {v.target.limit_text}: "
                f"{fmt_value(v)} [{v.source}]"
            )
        return lines


def write_report(inputs: Inputs, out_dir: str, notes: list[str]) -> Report:
    """Write the charts, ``report.md`` and ``index.html`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    log = inputs.telemetry
    summary = summarise_log(log)
    spans = find_spans(log)
    roundtrips = [
        RoundTrip(
            lg.name,
            roundtrip(lg),
            "the load generator was the bottleneck" if lg.doc.bottleneck == "loadgen" else "",
        )
        for lg in inputs.loadgens
    ]
    costs = telemetry_cost(inputs.benchmarks)
    verdicts = evaluate(summary.latency, roundtrips, costs)

    charts: list[Chart] = []
    missing: list[str] = []
    drawn = [
        (
            "latency percentiles over time (no order was timed)",
            latency_over_time(log, spans, out_dir),
        ),
        ("throughput over time (no interval figures)", throughput_over_time(log, spans, out_dir)),
        (
            "latency distribution (no histogram)",
            latency_distribution(inputs.loadgens, summary.latency, out_dir),
        ),
        ("batch processing time (no batch was timed)", batch_over_time(log, spans, out_dir)),
        ("CPU and memory (no process figures)", cpu_memory_over_time(log, spans, out_dir)),
    ]
    for why, chart in drawn:
        if chart is None:
            missing.append(why)
        else:
            charts.append(chart)

    doc = build_document(inputs, summary, spans, verdicts, costs, charts, missing, notes)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(to_markdown(doc))
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(to_html(doc))
    return Report(out_dir, summary, verdicts, charts)
