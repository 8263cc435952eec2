"""Histogram arithmetic and metric naming, free of any I/O.

The daemon's histograms are log-linear (HDR-style): ``buckets[i]`` counts
the observations ``v`` with ``upper_bounds_ns[i - 1] < v <= upper_bounds_ns[i]``
(an infinite or missing last bound is an overflow bucket). Counts and sums
only grow, so the difference of two snapshots is the histogram of what
happened in between: that is how the exporter gets per-interval percentiles
without the daemon doing any extra work.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final, TypedDict

import numpy as np
import numpy.typing as npt

from telemetry.source import HistogramSnapshot

PERCENTILES: Final = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))
"""The percentiles reported everywhere: JSON key and quantile in percent."""

PREFIX: Final = "lltrade_"

# Prometheus wants the unit last and in base units; a few daemon names say it
# the other way round.
_RENAMES: Final = {"bytes_in": "received_bytes", "bytes_out": "sent_bytes"}
_UNIT_DIVISORS: Final = (("_ns", 1e9), ("_us", 1e6), ("_ms", 1e3))
_LABEL_RE: Final = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,]*)\s*,?')
_INVALID_RE: Final = re.compile(r"[^a-zA-Z0-9_:]")


class HistStats(TypedDict):
    """Summary of a histogram (values in the histogram's unit; None when empty)."""

    count: int
    avg: float | None
    min: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    p99_9: float | None
    max: float | None


# -- names and labels -----------------------------------------------------------------------


def parse_labels(text: str) -> dict[str, str]:
    """Labels written as ``reason="PRICE_COLLAR",symbol="DEMO"`` (quotes optional).

    Parameters
    ----------
    text : str
        The label string of the metric's metadata, or the part between braces.

    Returns
    -------
    dict
        Label name to value, in order; empty for an empty string.
    """
    labels: dict[str, str] = {}
    text = text.strip().strip("{}")
    pos = 0
    while pos < len(text):
        match = _LABEL_RE.match(text, pos)
        if match is None or match.end() == pos:
            break
        value = match.group(2).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        labels[match.group(1)] = value
        pos = match.end()
    return labels


def split_name(key: str, labels_text: str = "") -> tuple[str, dict[str, str]]:
    """The metric family and labels of one telemetry slot.

    The daemon publishes one slot per label set; its key may carry the labels
    (``orders_rejected{reason="PRICE_COLLAR"}``) or a suffix
    (``orders_rejected.PRICE_COLLAR``), and the metadata's label string says
    which labels it has.

    Parameters
    ----------
    key : str
        The slot's name in the snapshot.
    labels_text : str
        Its labels from the metadata (may be empty).

    Returns
    -------
    tuple
        ``(base, labels)``: the name shared by the family, and this slot's labels.
    """
    labels = parse_labels(labels_text)
    base = key
    if "{" in key:
        base, _, rest = key.partition("{")
        for name, value in parse_labels(rest).items():
            labels.setdefault(name, value)
    elif labels:
        for sep in ".:/":
            if sep in key:
                base = key.split(sep, 1)[0]
                break
    return base, labels


def prometheus_name(base: str) -> tuple[str, float]:
    """Prometheus name for a daemon metric and the divisor to its base unit.

    ``order_latency_ns`` becomes ``lltrade_order_latency_seconds`` (divide by
    1e9); ``bytes_in`` becomes ``lltrade_received_bytes``. Counter families
    get their ``_total`` from prometheus-client.

    Parameters
    ----------
    base : str
        The family name from :func:`split_name`.

    Returns
    -------
    tuple
        ``(name, divisor)``.
    """
    name = _INVALID_RE.sub("_", base).lower().strip("_") or "unnamed"
    name = _RENAMES.get(name, name)
    divisor = 1.0
    for suffix, div in _UNIT_DIVISORS:
        if name.endswith(suffix):
            name, divisor = name[: -len(suffix)] + "_seconds", div
            break
    if name.endswith("_total"):
        name = name[: -len("_total")]
    if name[0].isdigit():
        name = "_" + name
    return PREFIX + name, divisor


# -- histograms -------------------------------------------------------------------------------


def finite_bounds(hist: HistogramSnapshot) -> npt.NDArray[np.float64]:
    """The finite upper bounds of a histogram's buckets, as floats."""
    bounds = np.asarray(hist["upper_bounds_ns"], dtype=np.float64)
    n = min(len(bounds), len(hist["buckets"]))
    bounds = bounds[:n]
    return bounds[np.isfinite(bounds)]


def cumulative_buckets(
    hist: HistogramSnapshot, targets_per_decade: tuple[float, ...] = (1.0, 2.0, 5.0)
) -> list[tuple[float, int]]:
    """Cumulative ``(le, count)`` pairs for a Prometheus histogram, without ``+Inf``.

    Every ``le`` is one of the histogram's own bucket bounds, so each count is
    exact. A log-linear histogram has hundreds of buckets; only the bound
    nearest below each 1-2-5 step is kept, which depends on the layout alone,
    so the series stay the same from one scrape to the next.

    Parameters
    ----------
    hist : HistogramSnapshot
        One histogram of a snapshot.
    targets_per_decade : tuple of float
        The steps within each power of ten.

    Returns
    -------
    list of (float, int)
        Increasing bounds (in the histogram's unit) and the number of
        observations at or below each.
    """
    bounds = finite_bounds(hist)
    if len(bounds) == 0:
        return []
    cum = np.cumsum(np.asarray(hist["buckets"], dtype=np.uint64)[: len(bounds)])
    positive = bounds[bounds > 0]
    if len(positive) == 0:
        return [(float(bounds[-1]), int(cum[-1]))]
    lo, hi = float(positive[0]), float(bounds[-1])
    targets = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in targets_per_decade
    ]
    picks = np.searchsorted(bounds, np.asarray(targets), side="right") - 1
    keep = sorted({int(i) for i in picks if i >= 0} | {len(bounds) - 1})
    return [(float(bounds[i]), int(cum[i])) for i in keep]


def _percentile(
    buckets: npt.NDArray[np.uint64],
    bounds: npt.NDArray[np.float64],
    count: int,
    q: float,
    lo: float,
    hi: float,
    lo_exact: bool,
) -> float:
    rank = max(1, math.ceil(Fraction(repr(q)) * count / 100))  # exact: p99.9 of 1000 is 999th
    if rank >= count:
        return hi
    if rank == 1 and lo_exact:
        return lo
    cum = np.cumsum(buckets)
    i = int(np.searchsorted(cum, rank, side="left"))
    value = float(bounds[i]) if i < len(bounds) else hi
    return min(max(value, lo), hi)


def hist_stats(hist: HistogramSnapshot, prev: HistogramSnapshot | None = None) -> HistStats:
    """Count, average, min, p50/p95/p99/p99.9 and max of a histogram.

    With ``prev``, of the observations made between the two snapshots: the
    average is exact (from the sums); percentiles are the upper bound of the
    bucket they fall in, clamped to the observed range; the maximum is exact
    when it grew in the interval and otherwise the bound of the highest
    bucket that moved (at most the all-time maximum); the minimum likewise
    (exact when it fell in the interval, else the lower edge of the lowest
    bucket that moved).

    Parameters
    ----------
    hist : HistogramSnapshot
        The newer snapshot.
    prev : HistogramSnapshot, optional
        The older snapshot of the same histogram of the same daemon.

    Returns
    -------
    HistStats
    """
    buckets = np.asarray(hist["buckets"], dtype=np.uint64)
    count, total = int(hist["count"]), int(hist["sum"])
    lo, hi = float(hist["min"]), float(hist["max"])
    if prev is not None and int(prev["count"]) > 0:
        buckets = buckets - np.asarray(prev["buckets"], dtype=np.uint64)
        count -= int(prev["count"])
        total -= int(prev["sum"])
    if count <= 0:
        return HistStats(
            count=0, avg=None, min=None, p50=None, p95=None, p99=None, p99_9=None, max=None
        )
    bounds = np.asarray(hist["upper_bounds_ns"], dtype=np.float64)[: len(buckets)]
    lo_exact = True
    if prev is not None and int(prev["count"]) > 0:
        moved = np.flatnonzero(buckets)
        if float(prev["max"]) < hi:
            pass  # the all-time maximum was set in this interval
        elif len(moved) and moved[-1] < len(bounds) and math.isfinite(bounds[moved[-1]]):
            hi = min(hi, float(bounds[moved[-1]]))
        if float(prev["min"]) <= lo:  # not set in this interval: the bucket's lower edge
            lo_exact = False
            if len(moved) and moved[0] > 0:
                lo = max(lo, float(bounds[moved[0] - 1]) + 1)
    p = {key: _percentile(buckets, bounds, count, q, lo, hi, lo_exact) for key, q in PERCENTILES}
    return HistStats(
        count=count,
        avg=total / count,
        min=lo,
        p50=p["p50"],
        p95=p["p95"],
        p99=p["p99"],
        p99_9=p["p99_9"],
        max=hi,
    )
