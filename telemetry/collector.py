"""``/metrics``: a prometheus-client custom collector over the telemetry snapshot.

Not prometheus-client's multiprocess mode (it locks and parses JSON keys on
every scrape): each scrape takes one consistent snapshot of the daemon's
file and yields metric families built from it (STYLE.md, "Telemetry in
shared memory"). Names follow Prometheus conventions: an ``lltrade_``
prefix, base units (``lltrade_order_latency_seconds``), ``_total`` on
counters, ``_ratio`` for fractions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from telemetry import __version__
from telemetry.source import Snapshot, Source
from telemetry.stats import cumulative_buckets, prometheus_name, split_name


def _without_total(
    members: list[tuple[dict[str, str], int]], names: list[str]
) -> list[tuple[dict[str, str], int]]:
    """A labelled counter family whose unlabelled member is its total (``orders_rejected``
    beside ``orders_rejected{reason=...}``): that member would make ``sum()`` count twice, so
    it is replaced by what the labelled members do not cover, as ``<label>="other"``."""
    total = [v for labels, v in members if not labels]
    labelled = [(labels, v) for labels, v in members if labels]
    if not names or not total or not labelled:
        return members
    rest = int(total[0]) - sum(int(v) for _, v in labelled)
    return labelled + ([({names[0]: "other"}, rest)] if rest > 0 else [])


def _help(meta: dict[str, tuple[str, str, str]], key: str, fallback: str) -> str:
    entry = meta.get(key)
    return (entry[1] if entry and entry[1] else fallback).strip() or fallback


def _in_base_unit(doc: str, divisor: float) -> str:
    """The daemon's help text, with its unit changed to seconds where the value was."""
    if divisor == 1.0:
        return doc
    doc = _UNIT_RE.sub("", doc).rstrip(" .")
    return f"{doc} (seconds)."


# prometheus-client's Go-style float formatting (``1e-06``), as client_golang writes ``le``;
# untyped upstream, hence the annotation.
_go_float: Callable[[float], str] = floatToGoString
_UNIT_RE: Final = re.compile(
    r"\s*[(\[]?\b(in )?(ns|us|µs|ms|nanoseconds|microseconds|milliseconds)\b[)\]]?"
)


def _labels(meta: dict[str, tuple[str, str, str]], key: str) -> str:
    entry = meta.get(key)
    return entry[2] if entry else ""


class _Family:
    """Slots of one family gathered before the family is built (label names vary)."""

    def __init__(self, name: str, divisor: float, doc: str) -> None:
        self.name, self.divisor, self.doc = name, divisor, doc
        self.members: list[tuple[dict[str, str], Any]] = []

    def label_names(self) -> list[str]:
        names: dict[str, None] = {}
        for labels, _ in self.members:
            names.update(dict.fromkeys(labels))
        return list(names)


def _group(
    values: dict[str, Any], meta: dict[str, tuple[str, str, str]], kind: str, labels_of: Any
) -> dict[str, _Family]:
    families: dict[str, _Family] = {}
    for key, value in sorted(values.items()):
        base, labels = split_name(key, labels_of(key))
        name, divisor = prometheus_name(base)
        family = families.get(name)
        if family is None:
            doc = _help(meta, key, f"lltrade daemon {kind} {base}")
            family = families[name] = _Family(name, divisor, _in_base_unit(doc, divisor))
        family.members.append((labels, value))
    return families


def snapshot_families(snapshot: Snapshot) -> Iterator[Metric]:
    """The daemon's counters, gauges and histograms as Prometheus metric families.

    Parameters
    ----------
    snapshot : Snapshot
        One read of the telemetry file.

    Yields
    ------
    Metric
        ``CounterMetricFamily`` (exposed with ``_total``), ``GaugeMetricFamily``
        and ``HistogramMetricFamily`` with cumulative buckets ending in ``+Inf``.
    """
    meta = snapshot["meta"]
    by_meta: Callable[[str], str] = lambda key: _labels(meta, key)  # noqa: E731
    for fam in _group(snapshot["counters"], meta, "counter", by_meta).values():
        names = fam.label_names()
        counter = CounterMetricFamily(fam.name, fam.doc, labels=names)
        for labels, value in _without_total(fam.members, names):
            counter.add_metric([labels.get(n, "") for n in names], int(value) / fam.divisor)
        yield counter
    for fam in _group(snapshot["gauges"], meta, "gauge", by_meta).values():
        names = fam.label_names()
        gauge = GaugeMetricFamily(fam.name, fam.doc, labels=names)
        for labels, value in fam.members:
            gauge.add_metric([labels.get(n, "") for n in names], int(value) / fam.divisor)
        yield gauge
    hists = snapshot["histograms"]
    for fam in _group(hists, meta, "histogram", lambda k: hists[k].get("labels", "")).values():
        names = fam.label_names()
        doc = next((h["help"] for _, h in fam.members if h.get("help")), "")
        doc = _in_base_unit(doc, fam.divisor) if doc else fam.doc
        histogram = HistogramMetricFamily(fam.name, doc, labels=names)
        for labels, hist in fam.members:
            buckets: list[tuple[str, float]] = [
                (_go_float(le / fam.divisor), float(n)) for le, n in cumulative_buckets(hist)
            ]
            buckets.append(("+Inf", float(hist["count"])))
            histogram.add_metric(
                [labels.get(n, "") for n in names], buckets, int(hist["sum"]) / fam.divisor
            )
        yield histogram


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def system_families(system: dict[str, Any]) -> Iterator[Metric]:
    """The daemon process's and the host's figures from :class:`SystemSampler`.

    Parameters
    ----------
    system : dict
        The latest ``SystemSampler.sample()`` result (empty before the first).

    Yields
    ------
    Metric
    """
    daemon = system.get("daemon")
    if daemon and "cpu_ratio" in daemon:
        cpu = CounterMetricFamily(
            "lltrade_daemon_cpu_seconds", "CPU time used by the daemon.", labels=["mode"]
        )
        cpu.add_metric(["user"], daemon["cpu_user_s"])
        cpu.add_metric(["system"], daemon["cpu_system_s"])
        yield cpu
        yield _gauge(
            "lltrade_daemon_cpu_ratio",
            "Daemon CPU over the last interval (1 = one core fully busy).",
            daemon["cpu_ratio"],
        )
        core = GaugeMetricFamily(
            "lltrade_daemon_core_cpu_ratio",
            "Load of each core the daemon may run on (its pinned core), last interval.",
            labels=["core"],
        )
        for c, ratio in daemon["core_ratio"].items():
            core.add_metric([c], ratio)
        yield core
        yield _gauge(
            "lltrade_daemon_resident_memory_bytes", "Daemon resident set size.", daemon["rss_bytes"]
        )
        yield _gauge("lltrade_daemon_threads", "Daemon OS threads.", daemon["threads"])
    host = system.get("host")
    if not host:
        return
    yield _gauge(
        "lltrade_host_cpu_ratio",
        "Host CPU over the last interval (1 = all cores).",
        host["cpu_ratio"],
    )
    yield _gauge("lltrade_host_cpus", "Host logical CPUs.", host["cpu_count"])
    yield _gauge("lltrade_host_memory_total_bytes", "Host memory.", host["memory_total_bytes"])
    yield _gauge("lltrade_host_memory_used_bytes", "Host memory used.", host["memory_used_bytes"])
    yield _gauge(
        "lltrade_host_memory_available_bytes",
        "Host memory available without swapping.",
        host["memory_available_bytes"],
    )
    io = (
        ("net", "bytes_sent", "lltrade_host_network_transmit_bytes", "Bytes sent, all NICs."),
        ("net", "bytes_recv", "lltrade_host_network_receive_bytes", "Bytes received, all NICs."),
        ("disk", "read_bytes", "lltrade_host_disk_read_bytes", "Bytes read, all disks."),
        ("disk", "write_bytes", "lltrade_host_disk_written_bytes", "Bytes written, all disks."),
    )
    for group, key, name, doc in io:
        if host.get(group):
            yield CounterMetricFamily(name, doc, value=host[group][key])


class TelemetryCollector(Collector):
    """Everything ``/metrics`` serves: exporter state, the daemon's metrics, system figures.

    Parameters
    ----------
    source : Source
        The daemon's telemetry file; read once per scrape.
    system : callable
        Returns the latest system figures (cached by the sampler thread).
    """

    def __init__(self, source: Source, system: Callable[[], dict[str, Any]]) -> None:
        self.source = source
        self.system = system

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families of one scrape."""
        reading = self.source.read()
        info = InfoMetricFamily("lltrade_exporter", "The telemetry exporter.")
        info.add_metric([], {"version": __version__, "shm_path": self.source.path})
        yield info
        yield _gauge("lltrade_up", "1 when the daemon's heartbeat is fresh.", int(reading.ok))
        status = GaugeMetricFamily(
            "lltrade_telemetry_status",
            "State of the telemetry file (1 for the current one).",
            labels=["status"],
        )
        for name in ("ok", "stale", "absent", "unreadable"):
            status.add_metric([name], int(reading.status == name))
        yield status
        yield CounterMetricFamily(
            "lltrade_daemon_restarts",
            "Daemon restarts (new pid or start time) seen by the exporter.",
            value=self.source.restarts,
        )
        snap = reading.snapshot
        if snap is not None:
            yield _gauge(
                "lltrade_daemon_start_time_seconds",
                "Daemon start, seconds since the epoch.",
                snap["start_time_ns"] / 1e9,
            )
            yield _gauge(
                "lltrade_heartbeat_age_seconds",
                "Age of the daemon's heartbeat in the telemetry file.",
                reading.heartbeat_age_s or 0.0,
            )
            daemon = InfoMetricFamily("lltrade_daemon", "The daemon publishing the telemetry.")
            daemon.add_metric([], {"pid": str(snap["pid"])})
            yield daemon
            yield from snapshot_families(snap)
        yield from system_families(self.system())
