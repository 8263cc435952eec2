"""The latency targets and their verdicts: pass, fail, or no data.

Issue #6 sets three targets on order latency (average < 500 µs, p95 < 1 ms,
p99 < 2 ms) without saying which latency; they are judged on every figure
the inputs offer: the daemon's own histogram (read to ack written) and each
load-generator result (client round trip).  The project's own targets name
their figure: the daemon's p99, the round trip's p50 and p99 (defined for a
busy-polling daemon), and the telemetry cost per order (pytest-benchmark).
A target whose input is missing is "no data", never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from report_summary import Latency, TelemetryCost

Source = Literal["daemon", "roundtrip", "telemetry"]
Status = Literal["pass", "fail", "no data"]

DAEMON_SOURCE: Final = "daemon histogram (read to ack written)"
ROUNDTRIP_SOURCE: Final = "load generator round trip"
TELEMETRY_SOURCE: Final = "pytest-benchmark"


@dataclass(frozen=True)
class Target:
    """One target: ``stat`` of the figures from ``sources`` must stay below ``limit_ns``."""

    name: str
    stat: str  #: a Latency attribute (avg, p50, p95, p99), or ns_per_order
    limit_ns: float
    strict: bool  #: ``<`` when true, ``<=`` otherwise
    sources: tuple[Source, ...]
    origin: str

    @property
    def limit_text(self) -> str:
        op = "<" if self.strict else "≤"
        value = self.limit_ns
        if value >= 1e6:
            return f"{op} {value / 1e6:g} ms"
        if value >= 1e3:
            return f"{op} {value / 1e3:g} us"
        return f"{op} {value:g} ns"

    def met_by(self, value: float) -> bool:
        return value < self.limit_ns if self.strict else value <= self.limit_ns


TARGETS: Final = (
    Target("average latency", "avg", 500e3, True, ("roundtrip", "daemon"), "issue #6"),
    Target("p95 latency", "p95", 1e6, True, ("roundtrip", "daemon"), "issue #6"),
    Target("p99 latency", "p99", 2e6, True, ("roundtrip", "daemon"), "issue #6"),
    Target("daemon read to write p99", "p99", 5e3, False, ("daemon",), "project"),
    Target("round trip p50 (busy-poll)", "p50", 12e3, False, ("roundtrip",), "project"),
    Target("round trip p99 (busy-poll)", "p99", 50e3, False, ("roundtrip",), "project"),
    Target("telemetry cost per order", "ns_per_order", 50.0, False, ("telemetry",), "project"),
)


@dataclass(frozen=True)
class RoundTrip:
    """One load-generator result's figures (all message types together)."""

    name: str  #: the result file's name
    figures: Latency | None
    note: str = ""  #: said beside its verdicts (the generator was the bottleneck)


@dataclass
class Verdict:
    target: Target
    source: str  #: where the figure comes from, for the reader
    value: float | None
    status: Status
    note: str = ""


def _judge(target: Target, source: str, value: float | None, note: str = "") -> Verdict:
    if value is None:
        return Verdict(target, source, None, "no data", note)
    return Verdict(target, source, value, "pass" if target.met_by(value) else "fail", note)


def evaluate(
    daemon: Latency | None,
    roundtrips: list[RoundTrip],
    telemetry: list[TelemetryCost],
    targets: tuple[Target, ...] = TARGETS,
) -> list[Verdict]:
    """One verdict per target and source of figures.

    Parameters
    ----------
    daemon : Latency or None
        The daemon's order latency over the log (None: no order was timed).
    roundtrips : list of RoundTrip
        Each load-generator result, all message types together.
    telemetry : list of TelemetryCost
        Telemetry cost figures found in the pytest-benchmark files.
    """
    out: list[Verdict] = []
    for target in targets:
        for source in target.sources:
            if source == "daemon":
                note = ""
                if daemon is not None and daemon.runs > 1 and target.stat != "avg":
                    note = f"worst of {daemon.runs} daemon runs"
                value = None if daemon is None else getattr(daemon, target.stat)
                out.append(_judge(target, DAEMON_SOURCE, value, note))
            elif source == "roundtrip":
                if not roundtrips:
                    out.append(_judge(target, ROUNDTRIP_SOURCE, None, "no load-generator result"))
                for rt in roundtrips:
                    value = None if rt.figures is None else getattr(rt.figures, target.stat)
                    out.append(_judge(target, f"{ROUNDTRIP_SOURCE} ({rt.name})", value, rt.note))
            else:
                if not telemetry:
                    out.append(
                        _judge(target, TELEMETRY_SOURCE, None, "no telemetry benchmark given")
                    )
                for cost in telemetry:
                    out.append(
                        _judge(target, f"{TELEMETRY_SOURCE} ({cost.source})", cost.ns_per_order)
                    )
    return out
