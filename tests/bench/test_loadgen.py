"""The load generator (``benchmark/loadgen*.py``): its maths, its file, and one short real run.

The pure parts are checked with exact numbers: the open-loop schedule and
its split over workers and connections, the coordinated-omission
correction, the HDR bucketing against ``HdrHistogram.record_value``, the
mix, the prices, the bottleneck rules and the ``--max`` search.  Then the
command itself: its one-line errors, and a two-second run against a daemon
this module starts on a free port (tmp journal, its own telemetry name).
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

import loadgen
import loadgen_machine as machine
import loadgen_orders as orders
import loadgen_report as report
import loadgen_schedule as sched
import loadgen_verdict as verdict

from daemon_process import running_daemon

BENCH = Path(__file__).resolve().parents[2] / "benchmark"
LOADGEN = BENCH / "loadgen.py"

S = 1_000_000_000
US = 1_000
MS = 1_000_000


# -- the schedule ------------------------------------------------------------------------


def test_planned_times_are_integer_exact_and_do_not_drift() -> None:
    assert sched.planned_send_ns(5_000, 10_000, 4).tolist() == [5_000, 105_000, 205_000, 305_000]
    planned = sched.planned_send_ns(0, 3, 3 * 1000 + 1)  # 333_333_333.3 ns apart
    assert planned[:4].tolist() == [0, 333_333_333, 666_666_666, 1_000_000_000]
    assert planned[3000] == 1000 * S
    assert set(np.diff(planned).tolist()) == {333_333_333, 333_333_334}
    assert sched.order_count(10_000, 2.5) == 25_000
    assert sched.order_count(3, 0.9) == 2
    for bad in ((0, 1.0), (10, -1.0)):
        with pytest.raises(ValueError):
            sched.order_count(*bad)


def test_workers_share_the_global_schedule_exactly() -> None:
    rate, count, workers = 7_000, 1_003, 3
    planned = sched.planned_send_ns(100, rate, count)
    shares = [sched.worker_share(count, w, workers) for w in range(workers)]
    assert shares == [335, 334, 334] and sum(shares) == count
    for w in range(workers):
        mine = [sched.worker_planned_ns(100, rate, k, w, workers) for k in range(shares[w])]
        assert mine == planned[w::workers].tolist()
    # The measured window starts at a global index: each worker's share of it.
    warm = 500
    assert [sched.worker_share(warm, w, workers) for w in range(workers)] == [167, 167, 166]
    assert sched.worker_share(2, 2, 3) == 0
    with pytest.raises(ValueError):
        sched.worker_share(10, 3, 3)


def test_each_connection_stream_is_evenly_spaced_at_its_share_of_the_rate() -> None:
    # 2 workers x 2 connections at 40k/s: every stream runs at 10k/s, 100 us apart.
    rate, workers, conns = 40_000, 2, 2
    for w in range(workers):
        times = [sched.worker_planned_ns(0, rate, k, w, workers) for k in range(40)]
        for c in range(conns):
            stream = times[c::conns]
            assert set(np.diff(stream).tolist()) == {100 * US}
            assert stream[0] == (w + c * workers) * 25 * US


def test_due_by_releases_every_late_message_at_once() -> None:
    planned = sched.planned_send_ns(1_000, 10_000, 10).tolist()
    assert sched.due_by(planned, 999, 0) == 0
    assert sched.due_by(planned, 1_000, 0) == 1
    assert sched.due_by(planned, 451_000, 1) == 5  # held up 350 us: four go at once
    assert sched.due_by(planned, 10 * S, 5) == 10


# -- coordinated omission ----------------------------------------------------------------


def test_a_stall_is_measured_from_the_planned_time_and_hidden_from_the_actual_one() -> None:
    # 10k/s for 1 s; the generator freezes 10 ms at 0.5 s; the daemon answers in 20 us.
    planned = sched.planned_send_ns(0, 10_000, 10_000)
    frozen = (planned >= 500 * MS) & (planned < 510 * MS)
    sent = np.where(frozen, 510 * MS, planned)
    recv = sent + 20 * US
    corrected = sched.corrected_latencies(planned, recv)
    naive = sched.naive_latencies(sent, recv)
    assert int(frozen.sum()) == 100
    assert set(naive.tolist()) == {20 * US}  # uncorrected, the stall vanishes
    # Corrected: the 100 held messages waited 10 ms, 9.9 ms, ... 0.1 ms (+ 20 us).
    held = corrected[frozen]
    assert held.tolist() == [10 * MS - i * 100 * US + 20 * US for i in range(100)]
    assert int((corrected > MS).sum()) == 91
    hist = sched.histogram_of(corrected)
    assert hist.get_total_count() == 10_000
    assert hist.values_are_equivalent(hist.get_value_at_percentile(50), 20 * US)
    assert hist.values_are_equivalent(hist.get_max_value(), 10 * MS + 20 * US)
    # p99.5 is the 9950th smallest of 10k: past 9900 prompt answers, held message 50 (5.02 ms).
    assert hist.values_are_equivalent(hist.get_value_at_percentile(99.5), 5_020 * US)


def test_achieved_rate_counts_the_last_interval() -> None:
    planned = sched.planned_send_ns(0, 10_000, 1_000)
    assert sched.achieved_rate(0, int(planned[-1]), 1_000) == pytest.approx(10_000)
    assert sched.achieved_rate(0, 0, 1) == 0.0
    assert sched.achieved_rate(5, 4, 10) == 0.0


# -- HDR histograms --------------------------------------------------------------------


def test_our_bucketing_matches_hdrhistogram_record_value() -> None:
    rng = np.random.default_rng(7)
    values = np.exp(rng.uniform(0, np.log(70 * S), 20_000)).astype(np.int64)
    edges = [-5, 0, 1, 2, 2047, 2048, 2049, 4095, 4096, 2**35 - 1, 2**35, 60 * S, 61 * S]
    values = np.concatenate([values, np.array(edges, dtype=np.int64)])
    theirs = sched.new_histogram()
    for v in np.clip(values, 1, 60 * S).tolist():
        theirs.record_value(v)
    recorder = sched.LatencyRecorder()  # the generator's loop: one value at a time
    for v in values.tolist():
        recorder.record(v)
    assert len(recorder) == len(values)
    for ours in (recorder.histogram(), sched.histogram_of(values)):  # and an array at once
        assert ours.get_total_count() == theirs.get_total_count() == len(values)
        assert list(ours.counts) == list(theirs.counts)
        assert ours.get_min_value() == theirs.get_min_value() == 1
        assert ours.get_max_value() == theirs.get_max_value()
        assert ours.get_mean_value() == theirs.get_mean_value()
        for pct in (1, 50, 90, 99, 99.9, 99.99, 100):
            assert ours.get_value_at_percentile(pct) == theirs.get_value_at_percentile(pct)


def test_summary_and_encoding_round_trip_and_merge() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(10 * US, 2 * MS, 5_000)
    b = rng.integers(50 * US, 40 * MS, 3_000)
    whole = sched.histogram_of(np.concatenate([a, b]))
    summary = sched.latency_summary(whole)
    decoded = HdrHistogram.decode(summary["hdr"])
    assert summary["count"] == decoded.get_total_count() == 8_000
    for key, pct in sched.SUMMARY_PERCENTILES:
        assert summary[key] == decoded.get_value_at_percentile(pct), key
    assert summary["max_ns"] == decoded.get_max_value()
    assert summary["mean_ns"] == pytest.approx(decoded.get_mean_value())
    pcts = summary["percentiles"]
    assert pcts[0][0] == 0.0 and pcts[-1] == [100.0, summary["max_ns"]]
    assert all(x[0] <= y[0] and x[1] <= y[1] for x, y in itertools.pairwise(pcts))
    merged = sched.merge_encoded(
        [sched.histogram_of(a).encode().decode(), sched.histogram_of(b).encode().decode()]
    )
    assert list(merged.counts) == list(whole.counts)
    empty = sched.latency_summary(sched.new_histogram())
    assert empty["count"] == 0 and empty["percentiles"] == [] and empty["p99_ns"] == 0


# -- the mix, the prices, the live orders ----------------------------------------------------


def test_parse_mix_normalises_and_orders_the_kinds() -> None:
    assert orders.parse_mix(orders.DEFAULT_MIX) == pytest.approx((0.6, 0.2, 0.15, 0.05))
    assert orders.parse_mix("cancel=1, passive=3") == pytest.approx((0.75, 0, 0.25, 0))
    assert orders.format_mix(orders.parse_mix("passive=1,aggressive=1")) == (
        "passive=50,aggressive=50,cancel=0,replace=0"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("passive=60,bogus=5", "unknown kind 'bogus'"),
        ("passive=60,passive=5", "given twice"),
        ("passive=lots", "not a number"),
        ("passive=-1", ">= 0"),
        ("passive=inf", "finite"),
        ("passive=0,cancel=0", "add up to 0"),
        ("passive", "not kind=weight"),
        ("", "empty"),
    ],
)
def test_parse_mix_names_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(orders.MixError, match=says):
        orders.parse_mix(text)


def test_draws_follow_the_mix_and_the_seed() -> None:
    mix = orders.parse_mix(orders.DEFAULT_MIX)
    d = orders.draw(np.random.default_rng([1, 0]), mix, 3, 100_000)
    shares = np.bincount(d.kind, minlength=4) / 100_000
    assert shares == pytest.approx(mix, abs=0.01)
    assert set(d.symbol) == {0, 1, 2} and set(d.side) == {1, 2}
    assert min(d.level) == 1 and max(d.level) == orders.DEPTH
    assert max(d.lots) == orders.PASSIVE_LOTS and max(d.aggressive_lots) == orders.AGGRESSIVE_LOTS
    again = orders.draw(np.random.default_rng([1, 0]), mix, 3, 100_000)
    assert again.kind == d.kind and again.pick == d.pick
    only_cancels = orders.draw(np.random.default_rng(0), (0.0, 0.0, 1.0, 0.0), 1, 1_000)
    assert set(only_cancels.kind) == {orders.CANCEL}


def test_prices_rest_on_the_grid_inside_the_band_and_aggressive_ones_cross() -> None:
    demo = orders.SymbolSpec(1, "DEMO", 1, 1, 1, 10_000_000, 10_000)
    assert demo.passive_price(1, 3) == 9_997 and demo.passive_price(2, 3) == 10_003
    assert demo.aggressive_price(1) == 10_000 + orders.DEPTH
    assert demo.aggressive_price(2) == 10_000 - orders.DEPTH
    acme = orders.SymbolSpec(2, "ACME", 5, 10, 5, 1_000_000, 25_003)  # reference off the tick
    assert acme.base == 25_000
    assert acme.passive_price(1, 2) == 24_990 and acme.passive_price(2, 2) == 25_010
    edge = orders.SymbolSpec(3, "EDGE", 5, 1, 5, 40, 10)
    assert edge.passive_price(1, 4) == 5 and edge.passive_price(2, 9) == 40
    assert edge.aggressive_price(2) == 5


def test_live_orders_add_forget_pick() -> None:
    live = orders.LiveOrders()
    for cl in (1, 2, 3):
        live.add(cl, cl % 2, 1 + cl % 2)
    assert len(live) == 3 and live.pick(4) == (2, 0, 1)
    live.forget(1)
    live.forget(99)  # unknown: ignored
    assert len(live) == 2 and 1 not in live and 3 in live
    assert {live.pick(i)[0] for i in range(4)} == {2, 3}
    live.forget(2)
    live.forget(3)
    assert len(live) == 0


def test_workers_spin_only_on_a_cpu_of_their_own() -> None:
    spinners = machine.spinners
    assert spinners([0], {1}, 2) == [True]  # the daemon on 1, the worker alone on 0
    assert spinners([0, 0], {1}, 2) == [False, False]  # two workers on one CPU
    assert spinners([1], {1}, 2) == [False]  # --cpu put it on the daemon's CPU
    assert spinners([0, 1, 2], {3}, 4) == [True, True, True]
    assert spinners([None], None, 2) == [True]  # unpinned, room for everyone
    assert spinners([None, None], None, 2) == [True, True]
    assert spinners([None, None, None], None, 2) == [False, False, False]
    assert spinners([None, 0], {1}, 2) == [False, True]


# -- who limited the run; --max ---------------------------------------------------------


def _figures(**changes: Any) -> Any:
    base = {
        "target_rate": 10_000.0,
        "sent_rate": 10_000.0,
        "achieved_rate": 9_990.0,
        "generator_busy": 0.3,
        "lag_p99_ns": 20 * US,
        "p99_ns": 300 * US,
        "unanswered": 0,
        "errors": 0,
    }
    return verdict.RunFigures(**{**base, **changes})


def test_bottleneck_rules() -> None:
    assert verdict.classify(_figures()) == (None, None)
    # 1. A saturated worker: short of the rate, or on schedule but reading answers late.
    who, why = verdict.classify(_figures(sent_rate=8_000.0, generator_busy=0.97))
    assert who == "loadgen" and "sent 8.0 k/s" in why and "busy 97%" in why
    who, why = verdict.classify(_figures(generator_busy=0.93))
    assert who == "loadgen" and "busy 93%" in why and "read answers late" in why
    # ... comes before anything the daemon did: the daemon's figures then mean nothing.
    both = _figures(generator_busy=1.0, achieved_rate=5_000.0, p99_ns=40 * MS, unanswered=9)
    assert verdict.classify(both)[0] == "loadgen"
    # 2. The generator had CPU to spare, the daemon fell behind.
    who, why = verdict.classify(_figures(unanswered=3))
    assert who == "daemon" and "3 messages were never answered" in why
    who, why = verdict.classify(_figures(achieved_rate=7_000.0))
    assert who == "daemon" and "7.0 k/s" in why
    who, why = verdict.classify(_figures(p99_ns=25 * MS, lag_p99_ns=2 * MS))
    assert who == "daemon" and "25.00 ms" in why
    # 3. The daemon kept up, the sends were late: the tail is mostly the generator's.
    who, why = verdict.classify(_figures(lag_p99_ns=3 * MS, p99_ns=4 * MS))
    assert who == "loadgen" and "send lag 3.00 ms" in why
    assert verdict.classify(_figures(lag_p99_ns=250 * US)) == (None, None)  # at the limit
    assert verdict.classify(_figures(lag_p99_ns=251 * US))[0] == "loadgen"  # p99 300 us
    # Late, but the daemon's own tail is far longer: no bottleneck, a note.
    who, why = verdict.classify(_figures(lag_p99_ns=600 * US, p99_ns=3 * MS))
    assert who is None and why.startswith("note:") and "600.00 us" in why
    # Within the tolerances: nobody.
    assert verdict.classify(_figures(sent_rate=9_600.0, achieved_rate=9_600.0))[0] is None
    assert verdict.classify(_figures(generator_busy=0.89))[0] is None
    limits = verdict.Limits(lag_limit_ns=10 * US, p99_limit_ns=200 * US)
    assert verdict.classify(_figures(lag_p99_ns=5 * US, p99_ns=150 * US), limits)[0] is None
    assert verdict.classify(_figures(lag_p99_ns=11 * US, p99_ns=20 * US), limits)[0] == "loadgen"
    assert verdict.classify(_figures(lag_p99_ns=11 * US, p99_ns=150 * US), limits)[0] is None
    assert verdict.classify(_figures(lag_p99_ns=5 * US), limits)[0] == "daemon"
    assert verdict.step_ok(_figures()) and not verdict.step_ok(_figures(errors=1))


def test_workers_on_one_cpu_add_up() -> None:
    assert verdict.busiest_cpu([(0, 0.5), (0, 0.45), (1, 0.3)]) == pytest.approx(0.95)
    assert verdict.busiest_cpu([(None, 0.5), (None, 0.45)]) == 0.5  # unpinned: each alone
    assert verdict.busiest_cpu([(2, 0.2), (None, 0.7)]) == 0.7
    assert verdict.busiest_cpu([]) == 0.0
    assert verdict.busiest_cpu([(0, 0.7), (0, 0.6)]) == 1.0


def test_a_max_step_fails_on_capacity_not_on_a_noisy_machine() -> None:
    assert verdict.step_ok(_figures(lag_p99_ns=600 * US, p99_ns=3 * MS))  # a note only
    # Late sends with the generator idle: the machine's noise, not the rate.
    late = _figures(lag_p99_ns=3 * MS, p99_ns=4 * MS, generator_busy=0.1)
    assert verdict.classify(late)[0] == "loadgen" and verdict.step_ok(late)
    assert not verdict.step_ok(_figures(generator_busy=0.95))  # saturated
    assert not verdict.step_ok(_figures(achieved_rate=6_000.0))  # the daemon fell behind
    assert not verdict.step_ok(_figures(p99_ns=11 * MS))
    assert not verdict.step_ok(_figures(unanswered=1))


def test_max_search_steps_up_then_bisects() -> None:
    passes = {10_000, 20_000, 40_000, 60_000, 65_000}
    steps: list[tuple[int, bool]] = []
    tried = []
    while (rate := verdict.next_rate(steps, 10_000)) is not None:
        tried.append(rate)
        steps.append((rate, rate in passes))
    assert tried == [10_000, 20_000, 40_000, 80_000, 60_000, 70_000, 65_000]
    assert verdict.peak(steps) == 65_000


def test_max_search_steps_down_when_the_first_rate_fails() -> None:
    steps: list[tuple[int, bool]] = []
    tried = []
    while (rate := verdict.next_rate(steps, 1_000)) is not None:
        tried.append(rate)
        steps.append((rate, rate <= 250))
    assert tried == [1_000, 500, 250, 380, 320, 290, 270]  # stops within 10% of 250
    assert verdict.peak(steps) == 250
    assert verdict.next_rate([(150, False)], 150) is None  # nothing above min_rate left
    assert verdict.nice_rate(37_412) == 37_000 and verdict.nice_rate(42.4) == 42


# -- the result file --------------------------------------------------------------------


def _worker_result(index: int, latencies: dict[str, list[int]], start: int) -> dict[str, Any]:
    hists = {t: sched.histogram_of(np.array(v)).encode().decode() for t, v in latencies.items()}
    n = {t: len(v) for t, v in latencies.items()}
    return {
        "worker": index,
        "measured": sum(n.values()),
        "sent": n,
        "answered": n,
        "rejected": {"new_order": 1, "cancel": 0, "replace": 0},
        "rejected_reasons": {"UNKNOWN_ORDER": 1},
        "unanswered": 0,
        "errors": [],
        "mismatched": 0,
        "hist": hists,
        "lag_hist": sched.histogram_of(np.array([1 * US] * 10)).encode().decode(),
        "window_start_ns": start,
        "last_sent_ns": start + 999 * MS,
        "last_answer_ns": start + 999 * MS,
        "busy_share": 0.25 * (index + 1),
    }


def test_result_document_has_schema_1_and_merges_the_workers(tmp_path: Path) -> None:
    lat = {"new_order": [50 * US] * 800, "cancel": [70 * US] * 150, "replace": [90 * US] * 50}
    workers = [_worker_result(0, lat, 10 * S), _worker_result(1, lat, 10 * S + 50 * US)]
    run = report.merge_run(workers, 2_000, 1.0, verdict.Limits(), [])
    options = loadgen.parse_options(["--rate", "2000", "--duration", "1"])
    doc = report.document(123.5, options.config(), {"cpu": "x", "cores": 2}, run, None)
    path = tmp_path / "sub" / "r.json"
    report.write(doc, str(path))
    got = json.loads(path.read_text())
    assert got["schema"] == 1 and got["tool"] == "lltrade-loadgen" and got["started"] == 123.5
    assert "secret" not in got["config"] and got["config"]["rate"] == 2_000
    assert got["sent"] == got["answered"] == 2_000 and got["rejected"] == 2
    assert got["target_rate"] == 2_000.0 and got["duration_s"] == 1.0
    # From the earliest window start to the latest answer, over 2000 intervals.
    span = (999 * MS + 50 * US) * 2_000 / 1_999
    assert got["achieved_rate"] == pytest.approx(2_000 * S / span)
    assert got["errors"] == [] and got["bottleneck"] is None and got["max_search"] is None
    assert got["machine"] == {"cpu": "x", "cores": 2}
    assert set(got["types"]) == {"new_order", "cancel", "replace", "all"}
    for name, count, value in (("new_order", 1600, 50), ("cancel", 300, 70), ("all", 2000, 90)):
        t = got["types"][name]
        assert t["count"] == count
        keys = ("mean_ns", "p50_ns", "p90_ns", "p99_ns", "p99_9_ns", "p99_99_ns", "max_ns")
        assert set(t) == {"count", *keys, "hdr", "percentiles"}
        hist = HdrHistogram.decode(t["hdr"])
        assert hist.get_total_count() == count
        assert hist.values_are_equivalent(t["max_ns"], value * US)
        assert t["percentiles"][-1][0] == 100.0
    assert got["generator"]["busy"] == 0.5
    assert got["rejected_reasons"] == {"UNKNOWN_ORDER": 2}


# -- the command --------------------------------------------------------------------------


def _loadgen(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOADGEN), "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_clear_line(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("loadgen: "), out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


def test_a_bad_mix_or_no_daemon_is_one_line_and_exit_2(tmp_path: Path) -> None:
    _one_clear_line(_loadgen("--mix", "passive=60,typo=3"), "--mix", "unknown kind 'typo'")
    port = _free_port()
    out = _loadgen("--port", str(port), "--output", str(tmp_path / "r.json"))
    _one_clear_line(out, f"cannot reach the daemon at 127.0.0.1:{port}")
    assert not (tmp_path / "r.json").exists()


@pytest.fixture(scope="module")
def daemon_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loadgen-daemon") / "daemon.log"


@pytest.fixture(scope="module")
def daemon_port(daemon_log: Path) -> Iterator[int]:
    """A daemon process on a free port: tmp journal, its own telemetry name; stopped after."""
    with running_daemon(daemon_log, "loadgen") as port:
        yield port


def test_logon_refused_or_unknown_symbol_is_one_line_and_exit_2(daemon_port: int) -> None:
    port = str(daemon_port)
    out = _loadgen("--port", port, "--account", "alice", "--secret", "wrong")
    _one_clear_line(out, "logon as 'alice'", "rejected: BAD_CREDENTIALS")
    out = _loadgen("--port", port, "--symbols", "DEMO,NOPE")
    _one_clear_line(out, "does not trade NOPE", "DEMO")


def _sessions_ended(log: Path) -> list[str]:
    """The reasons the daemon logged for the sessions that ended, in order."""
    return [
        json.loads(line)["reason"]
        for line in log.read_text().splitlines()
        if '"session ended"' in line
    ]


def test_a_short_run_answers_every_message_and_writes_the_file(
    daemon_port: int, daemon_log: Path, tmp_path: Path
) -> None:
    ended_before = len(_sessions_ended(daemon_log))
    output = tmp_path / "results" / "loadgen.json"
    out = _loadgen(
        *("--port", str(daemon_port), "--rate", "3000", "--duration", "1.5", "--warmup", "0.5"),
        *("--connections", "2", "--processes", "2", "--symbols", "DEMO,ACME,BTC-USD"),
        *("--output", str(output), "--json"),
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    printed = json.loads(out.stdout)
    doc = json.loads(output.read_text())
    assert printed == doc
    assert doc["schema"] == 1 and doc["errors"] == []
    assert doc["sent"] == 4_500  # 3000/s x 1.5 s measured, over 2 processes x 2 connections
    assert doc["answered"] == doc["sent"]
    assert doc["sent_by_type"] == doc["answered_by_type"]
    assert doc["types"]["all"]["count"] == doc["sent"]
    for t in ("new_order", "cancel", "replace"):
        assert doc["types"][t]["count"] == doc["sent_by_type"][t] > 0, t
    assert sum(doc["types"][t]["count"] for t in ("new_order", "cancel", "replace")) == 4_500
    assert len(doc["generator"]["workers"]) == 2
    assert doc["bottleneck"] in (None, "loadgen", "daemon")  # timing: not asserted
    all_hist = HdrHistogram.decode(doc["types"]["all"]["hdr"])
    assert all_hist.get_total_count() == 4_500
    assert doc["types"]["all"]["p50_ns"] > 0
    assert "p99.99" in out.stderr and "written:" in out.stderr  # the summary, on stderr
    # Clean-up, 2 x 2 worker sessions, clean-up again: every one logged out in sequence.
    ended = _sessions_ended(daemon_log)[ended_before:]
    assert ended == ["LOGOUT"] * 6
