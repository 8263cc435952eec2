"""The open-loop schedule and the coordinated-omission maths of the load generator (pure).

Messages are planned on one global schedule: message ``i`` of a run at
``rate`` per second is due ``floor(i * 1e9 / rate)`` ns after the start, in
integer arithmetic, so the schedule never drifts.  With ``W`` worker
processes, worker ``w`` owns the messages ``w, w + W, w + 2W, ...``; within a
worker, its ``k``-th message goes out on connection ``k % C``.  Every stream
(worker, connection) is then itself evenly spaced at ``rate / (W * C)``.

Latency is measured from a message's *planned* send time to its first
answer: a message the generator (or a full socket) held back waits against
the figure instead of vanishing from it (coordinated omission).

Latencies go into HdrHistograms (1 ns .. 60 s, 3 significant digits),
bucketed exactly as ``HdrHistogram.record_value`` does but cheaper: one
small closure per value in the generator's loop (:class:`LatencyRecorder`),
one numpy pass for an array (:func:`histogram_of`);
``tests/bench/test_loadgen.py`` checks both against ``record_value``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from hdrh.histogram import HdrHistogram

NS_PER_S: Final = 1_000_000_000
HIST_LOWEST_NS: Final = 1
HIST_HIGHEST_NS: Final = 60 * NS_PER_S
HIST_DIGITS: Final = 3
PERCENTILE_TICKS: Final = 5  #: ticks per half distance of the percentile distribution
SUMMARY_PERCENTILES: Final = (
    ("p50_ns", 50.0),
    ("p90_ns", 90.0),
    ("p99_ns", 99.0),
    ("p99_9_ns", 99.9),
    ("p99_99_ns", 99.99),
)


# =====================================================================================
# The schedule
# =====================================================================================


def order_count(rate: int, seconds: float) -> int:
    """Messages an open loop at ``rate`` per second plans in ``seconds`` (rounded down)."""
    if rate < 1:
        raise ValueError(f"rate must be >= 1 message/s, got {rate}")
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    return int(rate * seconds)


def planned_send_ns(start_ns: int, rate: int, count: int) -> np.ndarray:
    """Planned send times of ``count`` messages at ``rate`` per second from ``start_ns``.

    Message ``i`` is due at ``start_ns + floor(i * 1e9 / rate)``, in integer
    arithmetic: no drift however long the run (message ``k * rate`` is due
    exactly ``k`` seconds after the start).
    """
    if rate < 1:
        raise ValueError(f"rate must be >= 1 message/s, got {rate}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count and (count - 1) * NS_PER_S > np.iinfo(np.int64).max - start_ns:
        raise ValueError("schedule overflows int64 nanoseconds")
    i = np.arange(count, dtype=np.int64)
    return start_ns + (i * NS_PER_S) // rate


def worker_share(count: int, worker: int, workers: int) -> int:
    """How many of the first ``count`` global messages belong to ``worker`` of ``workers``."""
    if not 0 <= worker < workers:
        raise ValueError(f"worker must be in 0 .. {workers - 1}, got {worker}")
    return max(0, (count - worker + workers - 1) // workers)


def worker_planned_ns(start_ns: int, rate: int, k: int, worker: int, workers: int) -> int:
    """Planned send time of ``worker``'s ``k``-th message (global ``worker + k * workers``)."""
    return start_ns + ((worker + k * workers) * NS_PER_S) // rate


def due_by(planned: Sequence[int], now_ns: int, released: int) -> int:
    """Index one past the last message due at ``now_ns``, searching from ``released``.

    Every message before the returned index is due (``planned[i] <= now_ns``);
    an open loop sends them all now, however late, instead of skipping any.
    """
    return bisect.bisect_right(planned, now_ns, released)


def corrected_latencies(planned_ns: np.ndarray, recv_ns: np.ndarray) -> np.ndarray:
    """Round trips measured from the planned send time (coordinated-omission corrected)."""
    return np.asarray(recv_ns, dtype=np.int64) - np.asarray(planned_ns, dtype=np.int64)


def naive_latencies(sent_ns: np.ndarray, recv_ns: np.ndarray) -> np.ndarray:
    """Round trips measured from the actual send time (what coordinated omission hides)."""
    return np.asarray(recv_ns, dtype=np.int64) - np.asarray(sent_ns, dtype=np.int64)


def achieved_rate(first_ns: int, last_ns: int, count: int) -> float:
    """Events per second when ``count`` events span ``first_ns .. last_ns``.

    The span is counted as ``count`` intervals (the last event's interval
    included), so ``count`` events exactly on a ``rate`` schedule give ``rate``.
    """
    if count < 1 or last_ns < first_ns:
        return 0.0
    span = (last_ns - first_ns) * count / max(count - 1, 1) if count > 1 else 0
    return count * NS_PER_S / span if span > 0 else 0.0


# =====================================================================================
# Histograms
# =====================================================================================


def new_histogram() -> HdrHistogram:
    """An empty latency histogram: ns, 1 ns .. 60 s, 3 significant digits."""
    return HdrHistogram(HIST_LOWEST_NS, HIST_HIGHEST_NS, HIST_DIGITS)


_LAYOUT: Final = new_histogram()  # bucket layout shared by every histogram made here


def counts_index(values: np.ndarray) -> np.ndarray:
    """HdrHistogram's counts-array index of each value (already clamped to the range).

    The same arithmetic as ``HdrHistogram._counts_index_for``: the bucket is
    the bit length of ``value | sub_bucket_mask`` past the sub-bucket
    magnitude, the sub-bucket the value shifted down by the bucket.  The bit
    length comes from ``frexp``, exact for values below 2**53.
    """
    v = np.asarray(values, dtype=np.int64)
    h = _LAYOUT
    bit_length = np.frexp((v | h.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = bit_length - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    sub_bucket = v >> (bucket + h.unit_magnitude)
    index: np.ndarray = ((bucket + 1) << h.sub_bucket_half_count_magnitude) + (
        sub_bucket - h.sub_bucket_half_count
    )
    return index


class LatencyRecorder:
    """Counts latencies in ns straight into HdrHistogram's buckets, one call per value.

    ``record(value)`` is a closure over a plain list of counts (a few hundred
    ns, the same cost every time: no buffer to flush, so no pause in the
    load generator's loop).  The index is HdrHistogram's own arithmetic, as
    in :func:`counts_index`, for this layout (lowest value 1, so no unit
    shift); a value outside 1 ns .. 60 s is clamped.
    """

    __slots__ = ("counts", "record")

    def __init__(self) -> None:
        counts = [0] * _LAYOUT.counts_len
        mask = _LAYOUT.sub_bucket_mask
        half_magnitude = _LAYOUT.sub_bucket_half_count_magnitude
        first_bucket = half_magnitude + 1
        half_count = _LAYOUT.sub_bucket_half_count
        lowest, highest = HIST_LOWEST_NS, HIST_HIGHEST_NS

        def record(value: int) -> None:
            if value < lowest:
                value = lowest
            elif value > highest:
                value = highest
            bucket = (value | mask).bit_length() - first_bucket
            counts[((bucket + 1) << half_magnitude) + (value >> bucket) - half_count] += 1

        self.counts = counts
        self.record = record

    def __len__(self) -> int:
        return sum(self.counts)

    def histogram(self) -> HdrHistogram:
        """An HdrHistogram of everything recorded."""
        return histogram_from_counts(np.array(self.counts, dtype=np.int64))


assert _LAYOUT.unit_magnitude == 0  # LatencyRecorder.record relies on it


def histogram_from_counts(counts: np.ndarray) -> HdrHistogram:
    """An HdrHistogram holding ``counts`` (indexed like its counts array)."""
    hist = new_histogram()
    record = hist.record_value
    value_of = hist.get_value_from_index
    for index in np.flatnonzero(counts).tolist():
        record(value_of(index), int(counts[index]))
    return hist


def histogram_of(latencies_ns: np.ndarray) -> HdrHistogram:
    """A histogram of ``latencies_ns``, each clamped into the trackable range (vectorised)."""
    v = np.clip(np.asarray(latencies_ns, dtype=np.int64), HIST_LOWEST_NS, HIST_HIGHEST_NS)
    return histogram_from_counts(np.bincount(counts_index(v), minlength=_LAYOUT.counts_len))


def merge_encoded(encoded: Sequence[str]) -> HdrHistogram:
    """Decode each histogram (``HdrHistogram.encode()`` form) and add them up."""
    total = new_histogram()
    for blob in encoded:
        total.add(HdrHistogram.decode(blob))
    return total


def percentile_distribution(hist: HdrHistogram) -> list[list[float]]:
    """The HDR percentile distribution: ``[percentile, value_ns]`` pairs up to 100."""
    if hist.get_total_count() == 0:
        return []
    return [
        [float(item.percentile_level_iterated_to), int(item.value_iterated_to)]
        for item in hist.get_percentile_iterator(PERCENTILE_TICKS)
    ]


def latency_summary(hist: HdrHistogram) -> dict[str, Any]:
    """One type's figures for the result file: count, mean, percentiles, max, the encoding."""
    summary: dict[str, Any] = {
        "count": hist.get_total_count(),
        "mean_ns": float(hist.get_mean_value()) if hist.get_total_count() else 0.0,
    }
    for key, pct in SUMMARY_PERCENTILES:
        summary[key] = int(hist.get_value_at_percentile(pct))
    summary["max_ns"] = int(hist.get_max_value())
    summary["hdr"] = hist.encode().decode("ascii")
    summary["percentiles"] = percentile_distribution(hist)
    return summary
