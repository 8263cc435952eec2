"""The open-loop schedule and coordinated-omission maths of ``benchmark/roundtrip.py``.

Only the pure functions: planned send times, which orders are due, latency
from the planned time, what a stall of the load generator does to the
histogram, the generator checks and the frame-tag scanner.  No process,
no socket.
"""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

import roundtrip as rt
from lltrade.config import default_config
from lltrade.enums import STP, TIF, Side
from lltrade.protocol import CLIENT_DECODER, FrameReader, NewOrder, OrderAccepted, frame

S = 1_000_000_000
US = 1_000
MS = 1_000_000


# -- the schedule ------------------------------------------------------------------


def test_order_count_is_rate_times_seconds_rounded_down() -> None:
    assert rt.order_count(10_000, 5.0) == 50_000
    assert rt.order_count(10_000, 0.5) == 5_000
    assert rt.order_count(3, 1.0) == 3
    assert rt.order_count(3, 0.9) == 2
    assert rt.order_count(7, 0) == 0


@pytest.mark.parametrize(("rate", "seconds"), [(0, 1.0), (-5, 1.0), (10, -1.0)])
def test_order_count_refuses_nonsense(rate: int, seconds: float) -> None:
    with pytest.raises(ValueError):
        rt.order_count(rate, seconds)


def test_planned_times_are_evenly_spaced_from_the_start() -> None:
    planned = rt.planned_send_ns(5_000, 10_000, 4)
    assert planned.dtype == np.int64
    assert planned.tolist() == [5_000, 105_000, 205_000, 305_000]


def test_planned_times_do_not_drift_when_the_interval_is_not_whole_ns() -> None:
    rate = 3  # 333_333_333.3 ns apart
    planned = rt.planned_send_ns(0, rate, 3 * 1000 + 1)
    assert planned[:4].tolist() == [0, 333_333_333, 666_666_666, 1_000_000_000]
    # Order k * rate is due exactly k seconds after the start, however long the run.
    assert planned[3 * 1000] == 1000 * S
    gaps = np.diff(planned)
    assert set(gaps.tolist()) <= {333_333_333, 333_333_334}


def test_planned_times_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        rt.planned_send_ns(0, 0, 10)
    with pytest.raises(ValueError):
        rt.planned_send_ns(0, 10, -1)
    with pytest.raises(ValueError):
        rt.planned_send_ns(2**63 - 10, 1, 2)
    assert len(rt.planned_send_ns(0, 10, 0)) == 0


def test_due_by_releases_every_order_due_late_or_not() -> None:
    planned = rt.planned_send_ns(1_000, 10_000, 10).tolist()  # every 100 us from 1 us
    assert rt.due_by(planned, 999, 0) == 0  # nothing due yet
    assert rt.due_by(planned, 1_000, 0) == 1  # due exactly now
    assert rt.due_by(planned, 101_000, 1) == 2
    # The generator was held up 350 us: the four orders due meanwhile go at once.
    assert rt.due_by(planned, 451_000, 1) == 5
    assert rt.due_by(planned, 10 * S, 5) == 10  # never past the end


# -- latency from the planned send time -----------------------------------------------


def test_corrected_latency_counts_from_the_planned_time() -> None:
    planned = np.array([0, 100, 200])
    sent = np.array([0, 150, 200])  # the second order went out 50 ns late
    recv = np.array([30, 180, 230])
    assert rt.corrected_latencies(planned, recv).tolist() == [30, 80, 30]
    assert rt.naive_latencies(sent, recv).tolist() == [30, 30, 30]


def _stalled_run(
    rate: int, seconds: float, stall_at_s: float, stall_s: float, service_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planned, sent and received times of a run whose generator froze for ``stall_s``.

    The server always answers ``service_ns`` after a send.  Orders due during
    the freeze are all sent when it ends (as the open loop does).
    """
    planned = rt.planned_send_ns(0, rate, rt.order_count(rate, seconds))
    stall_start = int(stall_at_s * S)
    stall_end = stall_start + int(stall_s * S)
    frozen = (planned >= stall_start) & (planned < stall_end)
    sent = np.where(frozen, stall_end, planned)
    recv = sent + service_ns
    return planned, sent, recv


def test_a_generator_stall_shows_in_the_corrected_histogram_only() -> None:
    # 10k orders/s for 2 s; the generator freezes 50 ms at t = 1 s; answers take 10 us.
    planned, sent, recv = _stalled_run(10_000, 2.0, 1.0, 0.050, 10 * US)
    corrected = rt.histogram_of(rt.corrected_latencies(planned, recv))
    naive = rt.histogram_of(rt.naive_latencies(sent, recv))
    assert corrected.get_total_count() == naive.get_total_count() == 20_000
    # Uncorrected, the stall vanishes: every round trip looks like 10 us.
    assert naive.get_max_value() == naive.get_value_at_percentile(50)
    assert naive.values_are_equivalent(naive.get_max_value(), 10 * US)
    # Corrected, the 500 orders due in the 50 ms waited 50 ms down to 0.1 ms (+ 10 us):
    # a ramp, 2.5% of the run, so the p99 lands inside it (the top 200 of 500).
    assert corrected.values_are_equivalent(corrected.get_value_at_percentile(50), 10 * US)
    assert 29 * MS <= corrected.get_value_at_percentile(99) <= 31 * MS
    assert corrected.values_are_equivalent(corrected.get_max_value(), 50 * MS + 10 * US)
    over_1ms = sum(
        item.count_added_in_this_iter_step
        for item in corrected.get_recorded_iterator()
        if item.value_iterated_to > MS
    )
    assert 488 <= over_1ms <= 491  # (50 ms - 1 ms) / 100 us, give or take a bucket


def test_correction_agrees_with_hdrhistograms_own_for_a_closed_loop_stall() -> None:
    # HdrHistogram's record_corrected_value fills in the samples a closed-loop
    # client would have missed during one long response; the open loop measures
    # them directly.  Same stall, same histogram above the normal latency.
    planned, _, recv = _stalled_run(10_000, 2.0, 1.0, 0.050, 10 * US)
    ours = rt.histogram_of(rt.corrected_latencies(planned, recv))
    theirs = rt.new_histogram()
    interval = S // 10_000
    for _ in range(len(planned) - 500):
        theirs.record_value(10 * US)
    theirs.record_corrected_value(50 * MS + 10 * US, interval)
    for pct in (50, 90, 99, 99.9, 100):
        a, b = ours.get_value_at_percentile(pct), theirs.get_value_at_percentile(pct)
        assert abs(a - b) <= max(0.01 * b, 100 * US), (pct, a, b)


def test_histogram_clamps_into_the_trackable_range_and_encodes() -> None:
    hist = rt.histogram_of(np.array([-5, 0, 1, 120 * S]))
    assert hist.get_total_count() == 4
    assert hist.get_min_value() == 1
    assert hist.values_are_equivalent(hist.get_max_value(), 60 * S)
    copy = HdrHistogram.decode(hist.encode())
    assert copy.get_total_count() == 4
    s = rt.summarise(hist)
    assert set(s) == {"count", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"}


def test_ratio_and_achieved_rate() -> None:
    assert rt.ratio(30, 20) == 1.5
    assert rt.ratio(30, 0) is None
    planned = rt.planned_send_ns(0, 10_000, 1_000)
    assert rt.achieved_rate(int(planned[0]), int(planned[-1]), 1_000) == pytest.approx(10_000)
    assert rt.achieved_rate(0, 0, 1) == 0.0
    assert rt.achieved_rate(0, S, 0) == 0.0


# -- is the load generator the bottleneck? ---------------------------------------------


def test_a_generator_on_schedule_passes() -> None:
    planned = rt.planned_send_ns(0, 10_000, 10_000)
    check = rt.check_generator(10_000, planned, planned + 1 * US, 0.2, 10.0)
    assert check.bottleneck == [] and check.late == []
    assert check.verdict == "ok"


def test_a_generator_late_at_the_tail_is_reported_late() -> None:
    planned = rt.planned_send_ns(0, 10_000, 10_000)
    sent = planned.copy()
    sent[::50] += 40 * US  # 2% of the sends 40 us late, more than 10% of 100 us
    check = rt.check_generator(10_000, planned, sent, 0.2, 10.0)
    assert check.bottleneck == []
    assert check.verdict == "late"
    assert "p99 send lag" in check.late[0]


def test_a_generator_short_of_its_rate_or_saturated_is_the_bottleneck() -> None:
    planned = rt.planned_send_ns(0, 10_000, 10_000)
    slow = rt.planned_send_ns(0, 8_000, 10_000)  # it only managed 8k/s
    check = rt.check_generator(10_000, planned, slow, 0.5, 10.0)
    assert check.verdict == "LOADGEN"
    assert "short of" in check.bottleneck[0]
    busy = rt.check_generator(10_000, planned, planned, 0.95, 10.0)
    assert busy.verdict == "LOADGEN"
    assert "busy 95%" in busy.bottleneck[0]
    assert rt.check_generator(10_000, planned[:0], planned[:0], 0.0, 10.0).verdict == "LOADGEN"


def test_peak_names_what_limited_the_rate() -> None:
    assert rt.peak_limit(0.5, 1.0, busy_poll=False) == ("ok", "")
    assert rt.peak_limit(0.99, 1.0, busy_poll=False) == ("ok", "")  # both full: the server
    assert rt.peak_limit(1.0, 0.3, busy_poll=False)[0] == "LOADGEN"  # server had room
    assert rt.peak_limit(1.0, 1.0, busy_poll=True)[0] == "LOADGEN"  # a spinning server: can't tell
    assert rt.peak_limit(0.4, 1.0, busy_poll=True) == ("ok", "")
    verdict, why = rt.peak_limit(0.3, 0.6, busy_poll=False)  # neither full: too few in flight
    assert verdict == "window" and "--window" in why


def test_spin_gaps_and_noise_summary() -> None:
    turns, gaps = rt.spin_gaps(0.01, min_gap_ns=10 * US)
    assert turns > 0
    assert all(g >= 10 * US for g in gaps)
    summary = rt.noise_summary(2.0, [30 * US, 200 * US, 15 * US])
    assert summary["gaps_over_20us_per_s"] == 1.0
    assert summary["gaps_over_100us_per_s"] == 0.5
    assert summary["max_gap_ns"] == 200 * US
    assert summary["lost_share"] == pytest.approx(245 * US / (2 * S))


# -- the orders and the frame scanner ----------------------------------------------------


def test_orders_alternate_a_resting_buy_and_a_crossing_ioc_sell_inside_the_collar() -> None:
    price = rt.reference_price()
    demo = next(s for s in default_config().symbols if s.id == rt.SYMBOL)
    assert abs(price - demo.reference_price) <= (demo.limits.price_collar or 0)
    blob, offsets = rt.order_frames(6, 3, price)
    assert len(offsets) == 7 and offsets[-1] == len(blob)
    msgs = FrameReader(CLIENT_DECODER).feed(blob)
    assert [(m.seq, m.cl_ord_id) for m in msgs] == [(3 + i, 1 + i) for i in range(6)]
    assert all(isinstance(m, NewOrder) and m.qty == 1 and m.price == price for m in msgs)
    assert [(m.side, m.tif) for m in msgs[:2]] == [(Side.BUY, TIF.GTC), (Side.SELL, TIF.IOC)]
    assert all(m.stp == STP.NONE and not m.post_only for m in msgs)
    one = bytes(blob[offsets[4] : offsets[5]])
    assert one == frame(rt.order_for(4, 7, 5, price))


def test_count_tags_counts_complete_frames_and_stops_at_a_partial_one() -> None:
    acked = frame(OrderAccepted(1, 7, 70, 1, Side.BUY, 10_000, 1))
    order = frame(rt.order_for(1, 2, 2, 10_000))
    stream = acked + order + acked
    counts = [0] * 128
    used = rt.count_tags(stream[:-3], 0, counts)  # the last frame cut short
    assert used == len(acked) + len(order)
    assert counts[rt.TAG_ORDER_ACCEPTED] == 1 and counts[rt.TAG_NEW_ORDER] == 1
    used = rt.count_tags(stream, used, counts)  # the rest arrived
    assert used == len(stream)
    assert counts[rt.TAG_ORDER_ACCEPTED] == 2
    bad = b"\x02\x00\x00\x00\xc0\x00"  # a body that is not an array: counted under 0
    assert rt.count_tags(bad, 0, counts) == len(bad) and counts[0] == 1
    assert rt.count_tags(b"\x05\x00", 0, counts) == 0  # not even a whole header
