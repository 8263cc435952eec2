"""The telemetry exporter end to end: HTTP endpoints, /metrics, the log, restarts, the dashboard.

Every exporter here listens on 127.0.0.1 port 0 and is fed either by the
fake daemon of ``fake_telemetry`` (JSON file, fake reader) or by the real
``lltrade._telemetry`` writer and reader (``kind`` "real"); the endpoint
tests run on both. ``promtool`` and ``chromium`` come from Debian
(``make sysdeps``); a missing one fails the test.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from telemetry.exporter import Exporter
from telemetry.source import Backend, load_backend

import fake_telemetry as fake

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "artifacts"
INTERVAL = 0.2  # seconds; /health turns stale after 3 of them
SCRIPT = Path(sys.executable).parent / "lltrade-telemetry"


# -- helpers ----------------------------------------------------------------------------------


def real_module_expected() -> bool:
    """The real reader is part of this tree (then it must import: not built is a failure)."""
    return (ROOT / "src" / "lltrade" / "_telemetry.pyx").exists()


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> tuple[int, Any]:
    status, headers, body = get(url)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def log_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam: Any, suffix: str = "") -> list[Sample]:
    return [s for s in fam.samples if s.name == fam.name + suffix]


class Feeder:
    """Trades and heartbeats on a thread, as a running daemon would."""

    def __init__(self, daemon: fake.Daemon, orders: int = 40, period: float = 0.05) -> None:
        self.daemon, self.orders, self.period = daemon, orders, period
        self.rng = random.Random(7)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with self._lock:
                self.daemon.trade(self.orders, self.rng)
                self.daemon.beat()
                self.daemon.publish()

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture(params=["fake", "real"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "real" and not real_module_expected():
        pytest.skip("lltrade._telemetry is not part of this tree")
    return str(request.param)


@pytest.fixture
def shm(tmp_path: Path) -> str:
    return str(tmp_path / "lltrade")


def new_daemon(kind: str, path: str) -> fake.Daemon:
    return fake.RealDaemon(path) if kind == "real" else fake.FakeDaemon(path)


def backend_of(kind: str) -> Backend:
    return load_backend() if kind == "real" else fake.backend()


@pytest.fixture
def daemon(kind: str, shm: str) -> Iterator[fake.Daemon]:
    d = new_daemon(kind, shm)
    d.trade(500, random.Random(1))
    d.beat()
    d.publish()
    yield d
    if isinstance(d, fake.RealDaemon):
        d.close()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "telemetry.jsonl"


@pytest.fixture
def exporter(kind: str, shm: str, log_path: Path) -> Iterator[Exporter]:
    ex = Exporter(
        shm_path=shm,
        backend=backend_of(kind),
        interval_s=INTERVAL,
        host="127.0.0.1",
        port=0,
        log_path=str(log_path),
    )
    with ex:
        yield ex


def wait_records(ex: Exporter, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    return wait_for(f"{n} records", lambda: len(h := ex.sampler.history()) >= n and h, timeout)


# -- the command ------------------------------------------------------------------------------


def test_console_script_is_installed_and_documents_its_options() -> None:
    out = subprocess.run(
        [str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for option in ("--port", "--shm-path", "--interval", "--log", "--host"):
        assert option in out
    assert "8000" in out and "/dev/shm/lltrade" in out and "127.0.0.1" in out


def test_missing_reader_module_is_a_clear_start_up_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(SCRIPT), "--port", "0", "--reader", "no_such_telemetry_module"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "cannot load the telemetry reader no_such_telemetry_module" in proc.stderr


@pytest.mark.parametrize("reader", ["fake_telemetry", "lltrade._telemetry"])
def test_command_serves_then_stops_on_sigterm(reader: str, tmp_path: Path) -> None:
    if reader == "lltrade._telemetry" and not real_module_expected():
        pytest.skip("lltrade._telemetry is not part of this tree")
    shm, log = str(tmp_path / "lltrade"), tmp_path / "telemetry.jsonl"
    d = fake.FakeDaemon(shm) if reader == "fake_telemetry" else fake.RealDaemon(shm)
    d.trade(100, random.Random(2))
    d.beat()
    d.publish()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    args = [str(SCRIPT), "--port", "0", "--interval", str(INTERVAL), "--shm-path", shm]
    args += ["--log", str(log), "--reader", reader]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            entry = json.loads(line)
            assert entry["level"] != "error", entry
            if entry["msg"] == "serving":
                url = entry["url"]
        assert url is not None and url.startswith("http://127.0.0.1:")
        with Feeder(d):
            _, body = wait_for(
                "200 from /health", lambda: (r := get_json(url + "/health"))[0] == 200 and r
            )
            assert body["status"] == "ok" and body["pid"] == d.pid
            wait_for("two log lines", lambda: len(log_lines(log)) >= 2)
            if reader == "lltrade._telemetry":
                # The exporter maps the daemon's file read-only: it cannot disturb it.
                maps = Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
                perms = [line.split()[1] for line in maps if line.endswith(shm)]
                assert perms and all(p.startswith("r-") for p in perms), perms
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        if isinstance(d, fake.RealDaemon):
            d.close()
    assert all(line["pid"] == d.pid for line in log_lines(log))


# -- /metrics -----------------------------------------------------------------------------------


def check_histogram(fam: Any, observed: list[int] | None = None) -> None:
    """Cumulative buckets ending in +Inf, consistent with _count; exact against ``observed``."""
    assert fam.type == "histogram"
    buckets = samples(fam, "_bucket")
    les = [b.labels["le"] for b in buckets]
    assert les[-1] == "+Inf"
    bounds = [float(le) for le in les[:-1]]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
    counts = [b.value for b in buckets]
    assert counts == sorted(counts), "bucket counts must be cumulative"
    (count,) = samples(fam, "_count")
    assert counts[-1] == count.value
    if observed is not None:
        assert count.value == len(observed)
        values = np.sort(np.asarray(observed, dtype=np.float64))
        for le, n in zip(bounds, counts, strict=False):
            assert n == np.searchsorted(values, le * 1e9 * (1 + 1e-12), side="right"), le


def test_metrics_parse_back(kind: str, daemon: fake.Daemon, exporter: Exporter) -> None:
    wait_records(exporter, 1)
    daemon.beat()
    daemon.publish()
    status, headers, body = get(exporter.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = families(body.decode())

    assert fams["lltrade_up"].samples[0].value == 1
    expected_counters = {
        "lltrade_orders_in": "orders_in",
        "lltrade_orders_accepted": "orders_accepted",
        "lltrade_fills": "fills",
        "lltrade_cancels": "cancels",
        "lltrade_received_bytes": "bytes_in",
        "lltrade_sent_bytes": "bytes_out",
        "lltrade_sessions_opened": "sessions_opened",
        "lltrade_malformed_frames": "malformed_frames",
        "lltrade_journal_records": "journal_records",
        "lltrade_journal_bytes": "journal_bytes",
    }
    snap = exporter.source.read().snapshot
    assert snap is not None
    for name, key in expected_counters.items():
        fam = fams[name]
        assert fam.type == "counter"
        (sample,) = fam.samples
        assert sample.name == name + "_total"
        assert sample.value == snap["counters"][key]
    assert fams["lltrade_orders_in"].samples[0].value == 500
    rejected = fams["lltrade_orders_rejected"]
    assert rejected.type == "counter"
    assert {s.labels["reason"] for s in rejected.samples} == set(fake.REJECT_REASONS)
    assert sum(s.value for s in rejected.samples) == 500 // 50
    for gauge in ("lltrade_open_orders", "lltrade_sessions"):
        assert fams[gauge].type == "gauge"
    bid = fams["lltrade_best_bid"]
    assert bid.type == "gauge" and bid.samples[0].labels == {"symbol": "DEMO"}

    for name in ("lltrade_order_latency_seconds", "lltrade_batch_time_seconds"):
        check_histogram(fams[name])
        assert "seconds" in fams[name].documentation
    check_histogram(fams["lltrade_batch_size"])
    latency = fams["lltrade_order_latency_seconds"]
    hist = snap["histograms"]["order_latency_ns"]
    (total,) = samples(latency, "_sum")
    assert total.value == pytest.approx(int(hist["sum"]) / 1e9)
    # Each cumulative count is exact: the le bounds are the daemon's own bucket bounds.
    bounds = np.asarray(hist["upper_bounds_ns"], dtype=np.float64)
    cum = np.cumsum(np.asarray(hist["buckets"], dtype=np.uint64))
    for b in samples(latency, "_bucket")[:-1]:
        i = int(np.argmin(np.abs(bounds - float(b.labels["le"]) * 1e9)))
        assert math.isclose(bounds[i], float(b.labels["le"]) * 1e9, rel_tol=1e-9)
        assert b.value == cum[i]

    assert fams["lltrade_daemon_restarts"].type == "counter"
    assert fams["lltrade_daemon_info"].samples[0].labels["pid"] == str(daemon.pid)
    exporter_info = fams["lltrade_exporter_info"]  # an info metric, read back as a gauge
    assert exporter_info.samples[0].labels["shm_path"] == exporter.source.path
    for name in (
        "lltrade_daemon_cpu_seconds",
        "lltrade_daemon_cpu_ratio",
        "lltrade_daemon_core_cpu_ratio",
        "lltrade_daemon_resident_memory_bytes",
        "lltrade_host_cpu_ratio",
        "lltrade_host_memory_used_bytes",
        "lltrade_host_memory_available_bytes",
        "lltrade_host_network_receive_bytes",
        "lltrade_host_network_transmit_bytes",
    ):
        assert name in fams, name
    assert fams["lltrade_daemon_resident_memory_bytes"].samples[0].value > 1e6
    cores = {s.labels["core"] for s in fams["lltrade_daemon_core_cpu_ratio"].samples}
    assert cores == {str(c) for c in os.sched_getaffinity(0)}


def test_metrics_exact_histogram_against_known_values(kind: str, shm: str) -> None:
    d = new_daemon(kind, shm)
    values = [0, 1, 7, 31, 64, 999, 1_000, 1_001, 20_000, 20_480, 123_456, 5_000_000, 10**9]
    for v in values:
        d.observe("order_latency_ns", v)
    d.beat()
    d.publish()
    try:
        with Exporter(shm_path=shm, backend=backend_of(kind), interval_s=INTERVAL, port=0) as ex:
            fams = families(get(ex.url + "/metrics")[2].decode())
    finally:
        if isinstance(d, fake.RealDaemon):
            d.close()
    latency = fams["lltrade_order_latency_seconds"]
    check_histogram(latency, values)
    (total,) = samples(latency, "_sum")
    assert total.value == pytest.approx(sum(values) / 1e9)


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found: `make sysdeps` installs it (Debian package prometheus)")
    return subprocess.run(
        [exe, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def test_metrics_pass_promtool(kind: str, daemon: fake.Daemon, exporter: Exporter) -> None:
    with Feeder(daemon):
        wait_records(exporter, 2)
        body = get(exporter.url + "/metrics")[2].decode()
    result = promtool(body)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_metrics_without_a_daemon_pass_promtool(shm: str) -> None:
    with Exporter(shm_path=shm, backend=fake.backend(), interval_s=INTERVAL, port=0) as ex:
        wait_for("a sample", lambda: ex.sampler.samples >= 2)
        body = get(ex.url + "/metrics")[2].decode()
    fams = families(body)
    assert fams["lltrade_up"].samples[0].value == 0
    status = {s.labels["status"]: s.value for s in fams["lltrade_telemetry_status"].samples}
    assert status == {"ok": 0, "stale": 0, "absent": 1, "unreadable": 0}
    assert "lltrade_orders_in" not in fams and "lltrade_host_cpu_ratio" in fams
    result = promtool(body)
    assert result.returncode == 0, result.stdout + result.stderr


# -- /latest, /history, /info ---------------------------------------------------------------------

STATS_KEYS = {"count", "avg", "min", "p50", "p95", "p99", "p99_9", "max"}


def documented_fields() -> list[str]:
    """The top-level fields of a log line, from the table in docs/telemetry-log.md."""
    text = (ROOT / "docs" / "telemetry-log.md").read_text()
    table = text.split("### Fields (schema 1)", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `([a-z_0-9]+)` \|", table, flags=re.M)


def check_stats(stats: dict[str, Any]) -> None:
    assert set(stats) == STATS_KEYS
    if stats["count"] == 0:
        assert all(stats[k] is None for k in STATS_KEYS - {"count"})
        return
    order = [stats[k] for k in ("min", "p50", "p95", "p99", "p99_9", "max")]
    assert order == sorted(order), stats
    assert stats["min"] <= stats["avg"] <= stats["max"]


def check_record(record: dict[str, Any]) -> None:
    assert list(record) == documented_fields()
    assert record["schema"] == 1
    assert record["status"] in ("ok", "stale")
    for key in ("latency_ns", "latency_ns_since_start"):
        check_stats(record[key])
    for hist in record["histograms"].values():
        check_stats(hist["interval"])
        check_stats(hist["since_start"])
    assert set(record["histograms"]) == set(fake.HISTOGRAMS)
    assert set(record["counter_rates"]) == set(record["counters"])
    assert record["counter_totals"]["orders_rejected"] == sum(
        v for k, v in record["counters"].items() if k.startswith("orders_rejected")
    )
    cpu, mem = record["cpu"], record["memory"]
    assert set(cpu) == {
        "daemon_ratio", "daemon_cores", "daemon_pinned", "core_ratio", "host_ratio", "host_cpus"
    }  # fmt: skip
    assert 0 <= cpu["host_ratio"] <= 1 and cpu["host_cpus"] == os.cpu_count()
    assert cpu["daemon_cores"] == sorted(os.sched_getaffinity(0))
    assert mem["daemon_rss_bytes"] > 1e6 and mem["host_available_bytes"] > 0
    assert set(record["net"]) >= {"bytes_sent", "bytes_recv"}


def test_latest_schema_and_figures(kind: str, daemon: fake.Daemon, exporter: Exporter) -> None:
    with Feeder(daemon, orders=40, period=0.05):
        wait_records(exporter, 4)
        status, latest = get_json(exporter.url + "/latest")
    assert status == 200
    assert latest["status"] == "ok" and latest["reason"] == "heartbeat fresh"
    record = {k: v for k, v in latest.items() if k in documented_fields()}
    check_record(record)
    assert latest["record_status"] == latest["status"]
    assert latest["pid"] == daemon.pid and latest["start_time_ns"] == daemon.start_time_ns
    assert latest["from_start"] is False
    assert latest["interval_s"] == pytest.approx(INTERVAL, abs=0.15)
    history = exporter.sampler.history()
    # ~40 orders every 50 ms (800/s), each record measuring its own interval; a loaded
    # machine may delay the feeder, never speed it up.
    rates = [r["orders_per_s"] for r in history if not r["from_start"]]
    assert all(0 <= r < 1600 for r in rates) and max(rates) > 200, rates
    i = next(i for i, r in enumerate(history) if r["ts"] == latest["ts"])
    previous = history[i - 1]["counters"]["orders_in"]
    assert latest["orders"] == latest["counters"]["orders_in"] - previous
    assert latest["latency_ns"]["count"] == latest["orders"]
    lat = latest["latency_ns_since_start"]
    assert lat["count"] == latest["counters"]["orders_in"]
    assert 5_000 < lat["p50"] < 40_000 and lat["max"] >= lat["p99_9"]
    service = latest["service"]
    assert service["daemon"]["pid"] == daemon.pid
    assert service["shm_path"] == exporter.source.path and service["version"]

    status, history = get_json(exporter.url + "/history?limit=3")
    assert status == 200 and len(history["records"]) == 3
    ts = [r["ts"] for r in history["records"]]
    assert ts == sorted(ts)
    assert get_json(exporter.url + "/history?limit=x")[0] == 400
    status, info = get_json(exporter.url + "/info")
    assert status == 200 and info["service"] == "lltrade-telemetry"
    assert info["daemon"]["uptime_s"] >= 0 and info["interval_s"] == INTERVAL


def test_interval_figures_are_the_difference_of_two_snapshots(kind: str, shm: str) -> None:
    """Latency over an interval comes from the histograms' difference, exactly where it can."""
    from telemetry.sampler import build_record
    from telemetry.source import Source

    d = new_daemon(kind, shm)
    try:
        for v in (1_000, 2_000, 900_000):  # before the interval, incl. the all-time max
            d.observe("order_latency_ns", v)
        d.add("orders_in", 3)
        d.beat()
        d.publish()
        source = Source(shm, backend_of(kind), INTERVAL)
        first = source.read()
        window = [10_000 + 100 * i for i in range(1000)]  # 10.0 .. 109.9 µs
        for v in window:
            d.observe("order_latency_ns", v)
        d.add("orders_in", 1000)
        d.beat()
        d.publish()
        second = source.read()
        record = build_record(second, first, {})
    finally:
        if isinstance(d, fake.RealDaemon):
            d.close()
    interval = record["latency_ns"]
    assert interval["count"] == 1000
    assert interval["avg"] == pytest.approx(sum(window) / 1000, abs=0.05)
    assert record["orders"] == 1000
    seconds = second.taken_mono - first.taken_mono
    assert record["orders_per_s"] == pytest.approx(1000 / seconds, rel=1e-6, abs=1e-3)
    exact = np.sort(np.asarray(window))
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99), ("p99_9", 99.9)):
        true = exact[math.ceil(q / 100 * 1000 - 1e-9) - 1]
        assert true <= interval[key] <= true * 1.07, (key, interval[key], true)
    # The all-time max (900 µs) is older than the interval: the interval's is ~110 µs.
    assert 109_900 <= interval["max"] <= 109_900 * 1.07
    assert 10_000 * 0.93 <= interval["min"] <= 10_000
    since = record["latency_ns_since_start"]
    assert since["count"] == 1003 and since["max"] == 900_000 and since["min"] == 1_000
    if kind == "real":
        from lltrade._telemetry import percentile

        assert second.snapshot is not None
        hist = second.snapshot["histograms"]["order_latency_ns"]
        for key, q in (("p50", 50), ("p95", 95), ("p99", 99), ("p99_9", 99.9)):
            assert since[key] == percentile(hist, q), key


# -- /health -------------------------------------------------------------------------------------


def test_health_fresh_stale_absent(kind: str, daemon: fake.Daemon, exporter: Exporter) -> None:
    daemon.beat()
    daemon.publish()
    status, body = get_json(exporter.url + "/health")
    assert status == 200, body
    assert body["status"] == "ok" and body["pid"] == daemon.pid
    assert body["heartbeat_age_s"] < 3 * INTERVAL
    assert body["stale_after_s"] == pytest.approx(3 * INTERVAL)

    daemon.beat(time.time_ns() - 10 * 10**9)  # a daemon that stopped beating 10 s ago
    daemon.publish()
    status, body = get_json(exporter.url + "/health")
    assert status == 503
    assert body["status"] == "stale" and "heartbeat 10." in body["reason"]
    assert get_json(exporter.url + "/latest")[1]["status"] in ("stale", "ok")

    daemon.beat()
    daemon.publish()
    assert get_json(exporter.url + "/health")[0] == 200

    daemon.remove()
    status, body = get_json(exporter.url + "/health")
    assert status == 503
    assert body == {
        "status": "absent",
        "reason": f"telemetry file absent: {exporter.source.path}",
        "shm_path": exporter.source.path,
        "stale_after_s": pytest.approx(3 * INTERVAL),
        "daemon_restarts": 0,
    }
    wait_for(
        "/latest to say absent", lambda: get_json(exporter.url + "/latest")[1]["status"] == "absent"
    )


def test_unreadable_file_is_reported_not_fatal(shm: str, tmp_path: Path) -> None:
    Path(shm).write_text('{"magic": "someone else\'s file"}')
    with Exporter(shm_path=shm, backend=fake.backend(), interval_s=INTERVAL, port=0) as ex:
        status, body = get_json(ex.url + "/health")
        assert status == 503 and body["status"] == "unreadable"
        assert "bad magic" in body["reason"]
        d = fake.FakeDaemon(shm)
        d.beat()
        d.publish()
        wait_for("recovery", lambda: get_json(ex.url + "/health")[0] == 200)


def test_absent_at_start_then_appears(kind: str, shm: str, log_path: Path) -> None:
    with Exporter(
        shm_path=shm, backend=backend_of(kind), interval_s=INTERVAL, port=0, log_path=str(log_path)
    ) as ex:
        wait_for("a sample", lambda: ex.sampler.samples >= 2)
        status, body = get_json(ex.url + "/health")
        assert status == 503 and body["reason"] == f"telemetry file absent: {shm}"
        status, latest = get_json(ex.url + "/latest")
        assert status == 200 and latest["status"] == "absent" and latest["schema"] is None
        assert log_lines(log_path) == []
        d = new_daemon(kind, shm)
        try:
            with Feeder(d):
                wait_for("200 from /health", lambda: get_json(ex.url + "/health")[0] == 200)
                wait_for("log lines", lambda: len(log_lines(log_path)) >= 2)
        finally:
            if isinstance(d, fake.RealDaemon):
                d.close()
    lines = log_lines(log_path)
    assert lines[0]["from_start"] is True and lines[0]["gap"] is None
    assert lines[0]["daemon_restarts"] == 0


# -- restarts and the log ------------------------------------------------------------------------


def test_restart_is_detected_and_reported(kind: str, shm: str, log_path: Path) -> None:
    first = new_daemon(kind, shm)
    second: fake.Daemon | None = None
    third: fake.Daemon | None = None
    ex = Exporter(
        shm_path=shm, backend=backend_of(kind), interval_s=INTERVAL, port=0, log_path=str(log_path)
    )
    try:
        ex.start()
        with Feeder(first):
            wait_records(ex, 3)
        first.remove()  # the daemon stops
        wait_for("absent", lambda: get_json(ex.url + "/health")[1]["status"] == "absent")
        time.sleep(2 * INTERVAL)
        # The fake: another pid, to see it reported. The real writer: this process, a new
        # start time and a new file.
        second = fake.FakeDaemon(shm, pid=os.getppid()) if kind == "fake" else fake.RealDaemon(shm)
        second.trade(30, random.Random(3))
        second.beat()
        second.publish()
        body = wait_for(
            "the new daemon",
            lambda: (
                (r := get_json(ex.url + "/health")[1])["status"] == "ok"
                and r.get("pid") == second.pid
                and r["daemon_restarts"] == 1
                and r
            ),
        )
        assert body["daemon_restarts"] == 1
        wait_for("a log line with the gap", lambda: any(x["gap"] for x in log_lines(log_path)))
        fams = families(get(ex.url + "/metrics")[2].decode())
        assert fams["lltrade_daemon_restarts"].samples[0].value == 1
        assert fams["lltrade_orders_in"].samples[0].value == 30

        # A restart that replaces the file in place (no absent period) is seen too.
        if isinstance(second, fake.RealDaemon):
            second.close()
            third = fake.RealDaemon(shm)
        else:
            third = fake.FakeDaemon(shm, start_time_ns=time.time_ns())
        third.trade(10, random.Random(4))
        third.beat()
        third.publish()
        wait_for("second restart", lambda: get_json(ex.url + "/health")[1]["daemon_restarts"] == 2)
        wait_for("its log line", lambda: sum(1 for x in log_lines(log_path) if x["gap"]) == 2)
    finally:
        ex.close()
        for d in (first, second, third):
            if isinstance(d, fake.RealDaemon):
                d.close()

    lines = log_lines(log_path)
    gaps = [(i, x) for i, x in enumerate(lines) if x["gap"]]
    (i1, after1), (i2, after2) = gaps
    before = lines[i1 - 1]
    assert before["pid"] == first.pid and before["daemon_restarts"] == 0
    assert after1["daemon_restarts"] == 1 and after1["from_start"] is True
    assert after1["counters"]["orders_in"] == 30 and after1["orders"] == 30
    assert after1["latency_ns"]["count"] == 30
    gap = after1["gap"]
    assert gap["old_pid"] == first.pid and gap["new_pid"] == second.pid
    assert gap["new_start_time_ns"] == second.start_time_ns
    assert gap["seconds"] >= 2 * INTERVAL and gap["restarts"] == 1
    span = (gap["new_start_time_ns"] - gap["old_heartbeat_ns"]) / 1e9
    assert gap["seconds"] == pytest.approx(span, abs=1e-6)
    assert after2["daemon_restarts"] == 2 and after2["counters"]["orders_in"] == 10
    assert after2["gap"]["new_start_time_ns"] == third.start_time_ns
    assert all(x["gap"] is None for j, x in enumerate(lines) if j not in (i1, i2))


def test_telemetry_log_lines(
    kind: str, daemon: fake.Daemon, exporter: Exporter, log_path: Path
) -> None:
    with Feeder(daemon):
        wait_for("6 log lines", lambda: len(log_lines(log_path)) >= 6)
    text = log_path.read_text()
    assert text.endswith("\n")
    lines = log_lines(log_path)
    for line in lines:
        check_record(line)
    assert lines[0]["from_start"] is True
    assert all(not x["from_start"] for x in lines[1:])
    ts = [x["ts"] for x in lines]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    for a, b in itertools.pairwise(lines):
        assert b["ts"] - a["ts"] == pytest.approx(b["interval_s"], abs=0.02)
        assert b["interval_s"] == pytest.approx(INTERVAL, abs=0.15)
        assert b["orders"] == b["counters"]["orders_in"] - a["counters"]["orders_in"]
        assert b["latency_ns"]["count"] == b["histograms"]["order_latency_ns"]["interval"]["count"]
        assert all(b["counters"][k] >= a["counters"][k] for k in a["counters"])
    assert lines[0]["orders"] == lines[0]["counters"]["orders_in"]  # from the daemon's start


# -- routes --------------------------------------------------------------------------------------


def test_routes(kind: str, daemon: fake.Daemon, exporter: Exporter) -> None:
    wait_records(exporter, 1)
    status, headers, body = get(exporter.url + "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert f'<dd id="info-pid">{daemon.pid}</dd>' in page
    assert exporter.source.path in page and "lltrade-telemetry" in page
    assert "<!--SERVICE-INFO-->" not in page
    # Everything the page loads is served here: no absolute URL anywhere.
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)
    for asset, ctype in (
        ("/static/dashboard.js", "text/javascript"),
        ("/static/dashboard.css", "text/css"),
        ("/static/vendor/uplot/uPlot.iife.min.js", "text/javascript"),
        ("/static/vendor/uplot/uPlot.min.css", "text/css"),
        ("/static/vendor/uplot/LICENSE", "application/octet-stream"),
    ):
        status, headers, body = get(exporter.url + asset)
        assert status == 200 and headers["Content-Type"].startswith(ctype), asset
        assert len(body) > 100
    assert b"http" not in get(exporter.url + "/static/dashboard.js")[2].replace(
        b"https://github.com/leeoniya/uPlot", b""
    )
    assert get(exporter.url + "/static/../exporter.py")[0] == 404
    assert get(exporter.url + "/static/.gitignore")[0] == 404
    status, body = get_json(exporter.url + "/nope")
    assert status == 404 and "no such page" in body["error"]
    status, headers, _ = get(exporter.url + "/latest", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = get(exporter.url + "/health", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


# -- the dashboard in a real browser -----------------------------------------------------------


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium not found: `make sysdeps` installs it (Debian package chromium)")
    return exe


def run_chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-proxy-server",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_dashboard_renders_in_headless_chromium(shm: str, tmp_path: Path) -> None:
    kind = "real" if real_module_expected() else "fake"
    d = new_daemon(kind, shm)
    ex = Exporter(shm_path=shm, backend=backend_of(kind), interval_s=INTERVAL, port=0)
    try:
        ex.start()
        with Feeder(d, orders=60, period=0.02):
            wait_records(ex, 8)
            dom = run_chromium(ex.url + "/", tmp_path / "profile-dom", "--dump-dom")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            shot.unlink(missing_ok=True)
            screenshot = run_chromium(
                ex.url + "/", tmp_path / "profile-shot", f"--screenshot={shot}"
            )
    finally:
        ex.close()
        if isinstance(d, fake.RealDaemon):
            d.close()
    assert dom.returncode == 0, dom.stderr[-3000:]
    html = dom.stdout
    assert re.search(r'<body[^>]* data-ready="true"', html), html[:3000]
    updates = int(re.search(r'data-updates="(\d+)"', html).group(1))  # type: ignore[union-attr]
    assert updates >= 1
    for chart in ("chart-throughput", "chart-latency", "chart-cpu"):
        m = re.search(rf'id="{chart}" data-points="(\d+)"', html)
        assert m and int(m.group(1)) >= 5, chart
        # uPlot drew into a canvas inside the chart.
        block = html.split(f'id="{chart}"', 1)[1].split("</figure>", 1)[0]
        assert "<canvas" in block and "u-legend" in block
    assert 'id="status" class="badge" data-status="ok"' in html
    rate = re.search(r'id="kpi-rate">([^<]*)<', html).group(1)  # type: ignore[union-attr]
    assert rate not in ("\u2013", "") and float(rate.replace(",", "")) > 0
    assert re.search(r'id="kpi-p99">[\d.]+ (ns|µs|ms)<', html)
    assert f'id="info-pid">{d.pid}<' in html
    assert "<td>orders_in</td>" in html and "<td>open_orders</td>" in html
    assert "Uncaught" not in dom.stderr and "Refused to" not in dom.stderr, dom.stderr[-3000:]

    assert screenshot.returncode == 0, screenshot.stderr[-3000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    assert png_size(shot) == (1280, 900)
