"""The exporter's pure parts: metric names and labels, histogram arithmetic."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from telemetry.source import HistogramSnapshot
from telemetry.stats import (
    cumulative_buckets,
    hist_stats,
    parse_labels,
    prometheus_name,
    split_name,
)

import fake_telemetry as fake


def hist_of(values: list[int], bounds: np.ndarray, inf_last: bool = False) -> HistogramSnapshot:
    ub = bounds.astype(np.float64)
    if inf_last:
        ub = np.append(ub, math.inf)
    buckets = np.zeros(len(ub), dtype=np.uint64)
    for v in values:
        buckets[min(int(np.searchsorted(ub, v, side="left")), len(ub) - 1)] += np.uint64(1)
    return {
        "count": len(values),
        "sum": sum(values),
        "min": min(values) if values else 0,
        "max": max(values) if values else 0,
        "buckets": buckets,
        "upper_bounds_ns": ub,
        "labels": "",
        "help": "",
    }


@pytest.mark.parametrize(
    ("key", "labels", "expected"),
    [
        ("orders_in", "", ("orders_in", {})),
        (
            'orders_rejected{reason="PRICE_COLLAR"}',
            "",
            ("orders_rejected", {"reason": "PRICE_COLLAR"}),
        ),
        (
            "orders_rejected.PRICE_COLLAR",
            'reason="PRICE_COLLAR"',
            ("orders_rejected", {"reason": "PRICE_COLLAR"}),
        ),
        ("best_bid.DEMO", 'symbol="DEMO"', ("best_bid", {"symbol": "DEMO"})),
        ('best_bid{symbol="DEMO"}', 'symbol="DEMO"', ("best_bid", {"symbol": "DEMO"})),
        ("x", 'a="1", b="two, three",c=plain', ("x", {"a": "1", "b": "two, three", "c": "plain"})),
    ],
)
def test_split_name(key: str, labels: str, expected: tuple[str, dict[str, str]]) -> None:
    assert split_name(key, labels) == expected


def test_parse_labels_escapes() -> None:
    assert parse_labels(r'msg="say \"hi\"",k="a\\b"') == {"msg": 'say "hi"', "k": "a\\b"}
    assert parse_labels("") == {}


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("order_latency_ns", ("lltrade_order_latency_seconds", 1e9)),
        ("batch_time_ns", ("lltrade_batch_time_seconds", 1e9)),
        ("sleep_ms", ("lltrade_sleep_seconds", 1e3)),
        ("batch_size", ("lltrade_batch_size", 1.0)),
        ("bytes_in", ("lltrade_received_bytes", 1.0)),
        ("bytes_out", ("lltrade_sent_bytes", 1.0)),
        ("fills_total", ("lltrade_fills", 1.0)),
        ("Weird-Name", ("lltrade_weird_name", 1.0)),
    ],
)
def test_prometheus_name(base: str, expected: tuple[str, float]) -> None:
    assert prometheus_name(base) == expected


@pytest.mark.parametrize("inf_last", [False, True])
def test_cumulative_buckets_are_exact_and_stable(inf_last: bool) -> None:
    rng = random.Random(11)
    values = [int(rng.lognormvariate(math.log(30_000), 1.0)) for _ in range(5_000)]
    hist = hist_of(values, fake.BOUNDS, inf_last)
    pairs = cumulative_buckets(hist)
    les = [le for le, _ in pairs]
    assert les == sorted(les) and len(set(les)) == len(les)
    assert all(math.isfinite(le) for le in les)
    assert len(pairs) <= 3 * 12 + 1  # a few per decade, not hundreds
    ordered = sorted(values)
    for le, n in pairs:
        assert n == sum(1 for v in ordered if v <= le), le
        assert le in set(fake.BOUNDS.astype(float))  # one of the histogram's own bounds
    # The bounds depend on the layout alone, not on the data.
    assert [le for le, _ in cumulative_buckets(hist_of([1], fake.BOUNDS, inf_last))] == les


def test_hist_stats_since_start() -> None:
    values = list(range(1, 1001))
    s = hist_stats(hist_of(values, fake.BOUNDS))
    assert s["count"] == 1000 and s["avg"] == pytest.approx(500.5)
    assert s["min"] == 1 and s["max"] == 1000
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99), ("p99_9", 99.9)):
        true = values[math.ceil(q * 10) - 1]
        assert true <= s[key] <= true * 1.07, key  # bucket resolution, never low
    assert s["p99_9"] <= 999 * 1.07  # rank 999 of 1000, not the maximum


def test_hist_stats_of_an_interval() -> None:
    before = [5, 7, 1_000_000]  # the max is older than the interval
    window = [20_000] * 99 + [40_000]
    h0 = hist_of(before, fake.BOUNDS)
    h1 = hist_of(before + window, fake.BOUNDS)
    s = hist_stats(h1, h0)
    assert s["count"] == 100 and s["avg"] == pytest.approx(20_200)
    assert 20_000 <= s["p50"] <= 20_000 * 1.07
    assert 40_000 <= s["max"] <= 40_000 * 1.07  # not the all-time 1 ms
    assert 20_000 * 0.93 <= s["min"] <= 20_000  # not the all-time 5
    empty = hist_stats(h1, h1)
    assert empty["count"] == 0 and all(empty[k] is None for k in ("avg", "p50", "max"))  # type: ignore[literal-required]


def test_hist_stats_when_the_max_is_new() -> None:
    h0 = hist_of([10, 20], fake.BOUNDS)
    h1 = hist_of([10, 20, 12_345], fake.BOUNDS)
    s = hist_stats(h1, h0)
    assert s["count"] == 1 and s["max"] == 12_345 and s["p50"] == 12_345


def test_hist_stats_overflow_bucket_reports_the_max() -> None:
    bounds = np.asarray([1, 2, 4, 8], dtype=np.uint64)
    hist: dict[str, Any] = dict(hist_of([1, 3, 100, 200], bounds, inf_last=True))
    s = hist_stats(hist)  # type: ignore[arg-type]
    assert s["p99"] == 200 and s["max"] == 200


def test_a_family_total_beside_its_labelled_members_is_not_counted_twice() -> None:
    from telemetry.collector import _without_total

    members = [({}, 10), ({"reason": "PRICE_COLLAR"}, 6), ({"reason": "RATE_LIMITED"}, 3)]
    out = _without_total(members, ["reason"])
    assert out == [
        ({"reason": "PRICE_COLLAR"}, 6),
        ({"reason": "RATE_LIMITED"}, 3),
        ({"reason": "other"}, 1),
    ]
    assert sum(v for _, v in out) == 10
    exact = [({}, 9), ({"reason": "PRICE_COLLAR"}, 9)]
    assert _without_total(exact, ["reason"]) == [({"reason": "PRICE_COLLAR"}, 9)]
    plain = [({}, 4)]
    assert _without_total(plain, []) == plain
