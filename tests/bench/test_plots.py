"""``benchmark/plots.py`` on recorded telemetry logs, and ``benchmark/demo_report.py`` end to end.

The sample inputs in ``data/`` are real: ``telemetry-run.jsonl`` and
``loadgen-result.json`` come from one ``demo_report.py`` run (5 s at 1000
messages/s); ``telemetry-restart.jsonl`` was logged by ``lltrade-telemetry``
while a daemon under load was killed and started again;
``pytest-benchmark.json`` is part of a ``benchmark/test_book_bench.py`` run.
The malformed logs are cut from them by hand.  Every figure the tests expect
in ``report.md`` is computed here from the raw JSON, not through the
report's own readers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from hdrh.histogram import HdrHistogram
from matplotlib import pyplot as plt

import plots
from figures import fmt_ns, fmt_rate
from report_inputs import BenchmarkRun, read_pytest_benchmark, read_telemetry_log
from report_summary import Latency, TelemetryCost, find_spans, telemetry_cost
from report_targets import TARGETS, RoundTrip, evaluate

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmark"
DATA = Path(__file__).resolve().parent / "data"
PLOTS = BENCH / "plots.py"

CHARTS = ["latency.png", "throughput.png", "distribution.png", "batch.png", "cpu_memory.png"]
RUN_LOG = DATA / "telemetry-run.jsonl"
RESTART_LOG = DATA / "telemetry-restart.jsonl"
LOADGEN = DATA / "loadgen-result.json"
PYTEST_BENCHMARK = DATA / "pytest-benchmark.json"
RESTART_SHADE = np.array([248, 216, 216]) / 255  # the restart colour at its alpha, over white


def raw_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PLOTS), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def targets_table(report_md: str) -> list[list[str]]:
    """The rows of report.md's targets table, as cells."""
    section = report_md.split("## Targets", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]


def verdict(rows: list[list[str]], target: str, source_start: str) -> list[str]:
    found = [r for r in rows if r[0] == target and r[2].startswith(source_start)]
    assert len(found) == 1, (target, source_start, rows)
    return found[0]


def assert_png(path: Path) -> None:
    """A PNG of chart size whose pixels are not all alike."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = plt.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 800 and height >= 400, (path, pixels.shape)
    rgb = pixels[..., :3].reshape(-1, 3)
    not_white = (rgb < 0.9).any(axis=1).mean()
    assert 0.01 < not_white < 0.9, (path, not_white)  # drawn on, not a blank or a blot
    packed = (rgb * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    assert len(np.unique(packed)) > 20, path  # lines, text and shading, not two colours


def restart_pixels(path: Path) -> int:
    rgb = plt.imread(path)[..., :3]
    return int((np.abs(rgb - RESTART_SHADE) < 3 / 255).all(axis=-1).sum())


# -- a full report on recorded inputs ------------------------------------------------------------


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """plots.py over the recorded log, a load-generator result and pytest-benchmark JSON.

    The files are renamed misleadingly: their kind must be told by content.
    """
    tmp = tmp_path_factory.mktemp("report-inputs")
    shutil.copy(RUN_LOG, tmp / "results.json")
    shutil.copy(LOADGEN, tmp / "telemetry.jsonl")
    shutil.copy(PYTEST_BENCHMARK, tmp / "loadgen.json")
    out = tmp / "report"
    done = run_cli(
        tmp / "telemetry.jsonl",
        tmp / "results.json",
        tmp / "loadgen.json",
        "--output",
        out,
        "--note",
        "recorded sample",
    )
    assert done.returncode == 0, done.stderr
    return out, done.stdout, done.stderr


def test_every_chart_is_a_drawn_png(full_report: tuple[Path, str, str]) -> None:
    out, _, _ = full_report
    for name in CHARTS:
        assert_png(out / name)


def test_index_html_is_self_contained_and_shows_every_chart(
    full_report: tuple[Path, str, str],
) -> None:
    out, _, _ = full_report
    page = (out / "index.html").read_text()
    for name in CHARTS:
        assert f'<img src="{name}"' in page
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert 'class="fail"' in page and 'class="pass"' in page and 'class="nodata"' in page


def test_report_md_daemon_figures_match_the_log(full_report: tuple[Path, str, str]) -> None:
    out, stdout, stderr = full_report
    md = (out / "report.md").read_text()
    lines = raw_lines(RUN_LOG)
    since = lines[-1]["latency_ns_since_start"]
    order_row = (
        f"| order latency | {since['count']:,} | {fmt_ns(since['avg'])} | {fmt_ns(since['p50'])} "
        f"| {fmt_ns(since['p95'])} | {fmt_ns(since['p99'])} | {fmt_ns(since['p99_9'])} "
        f"| {fmt_ns(since['max'])} |"
    )
    assert order_row in md
    batch = lines[-1]["histograms"]["batch_time_ns"]["since_start"]
    assert f"| batch time | {batch['count']:,} | {fmt_ns(batch['avg'])} |" in md
    orders = sum(r["orders"] for r in lines)
    seconds = sum(r["interval_s"] for r in lines)
    assert f"| orders read | {orders:,} |" in md
    assert f"| throughput, average | {fmt_rate(orders / seconds)} |" in md
    best = fmt_rate(max(r["orders_per_s"] for r in lines))
    assert f"| throughput, best interval | {best} |" in md
    rss = max(r["memory"]["daemon_rss_bytes"] for r in lines)
    assert f"| daemon resident memory, highest | {rss / 2**20:.1f} MiB |" in md
    assert "| daemon runs (restarts) | 1 (0) |" in md
    assert "- recorded sample" in md
    assert "## Warnings" not in md and stderr == ""
    rows = targets_table(md)
    row = verdict(rows, "daemon read to write p99", "daemon histogram")
    assert row[3:6] == [fmt_ns(since["p99"]), "≤ 5 us", "pass" if since["p99"] <= 5e3 else "fail"]
    row = verdict(rows, "average latency", "daemon histogram")
    assert row[3:6] == [fmt_ns(since["avg"]), "< 500 us", "pass" if since["avg"] < 5e5 else "fail"]
    assert f"p99 {fmt_ns(since['p99'])}" in stdout


def test_report_md_roundtrip_figures_match_the_histograms(
    full_report: tuple[Path, str, str],
) -> None:
    out, _, _ = full_report
    md = (out / "report.md").read_text()
    doc = json.loads(LOADGEN.read_text())
    rows = targets_table(md)
    for kind, t in doc["types"].items():
        p95 = HdrHistogram.decode(t["hdr"]).get_value_at_percentile(95.0)
        expected = (
            f"| {kind} | {t['count']:,} | {fmt_ns(t['mean_ns'])} | {fmt_ns(t['p50_ns'])} "
            f"| {fmt_ns(t['p90_ns'])} | {fmt_ns(p95)} | {fmt_ns(t['p99_ns'])} |"
        )
        assert expected in md, expected
        if kind == "all":
            row = verdict(rows, "p95 latency", "load generator round trip (telemetry.jsonl)")
            assert row[3:6] == [fmt_ns(p95), "< 1 ms", "pass" if p95 < 1e6 else "fail"]
            row = verdict(rows, "round trip p50 (busy-poll)", "load generator")
            status = "pass" if t["p50_ns"] <= 12e3 else "fail"
            assert row[3:6] == [fmt_ns(t["p50_ns"]), "≤ 12 us", status]
    assert f"sent {doc['sent']:,}, answered {doc['answered']:,}, rejected {doc['rejected']:,}" in md


def test_report_md_lists_the_benchmarks_and_has_no_telemetry_cost(
    full_report: tuple[Path, str, str],
) -> None:
    out, _, _ = full_report
    md = (out / "report.md").read_text()
    for bench in json.loads(PYTEST_BENCHMARK.read_text())["benchmarks"]:
        stats = bench["stats"]
        median, ops = fmt_ns(stats["median"] * 1e9), fmt_rate(stats["ops"])
        assert f"| {bench['name']} | {median} | {ops} |" in md
    row = verdict(targets_table(md), "telemetry cost per order", "pytest-benchmark")
    assert row[3:6] == ["-", "≤ 50 ns", "no data"]


# -- a daemon restart --------------------------------------------------------------------------


def test_restart_gap_is_reported_shaded_and_runs_combined(tmp_path: Path) -> None:
    lines = raw_lines(RESTART_LOG)
    gap = next(r["gap"] for r in lines if r["gap"])
    assert plots.main([str(RESTART_LOG), "--output", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| daemon runs (restarts) | 2 (1) |" in md
    assert (
        f"daemon restart: pid {gap['old_pid']} -> {gap['new_pid']}, "
        f"{gap['seconds']:.1f} s without telemetry" in md
    )
    lasts = [
        r for i, r in enumerate(lines) if i + 1 == len(lines) or lines[i + 1]["pid"] != r["pid"]
    ]
    runs = [r["latency_ns_since_start"] for r in lasts]
    count = sum(s["count"] for s in runs)
    avg = sum(s["avg"] * s["count"] for s in runs) / count
    worst = {k: max(s[k] for s in runs) for k in ("p50", "p99", "max")}
    assert f"| order latency | {count:,} | {fmt_ns(avg)} | {fmt_ns(worst['p50'])} |" in md
    rows = targets_table(md)
    row = verdict(rows, "daemon read to write p99", "daemon histogram")
    assert row[3] == fmt_ns(worst["p99"]) and row[6] == "worst of 2 daemon runs"
    for name in ("latency.png", "throughput.png", "batch.png", "cpu_memory.png"):
        assert_png(tmp_path / name)
        assert restart_pixels(tmp_path / name) > 1000, name


def test_a_log_without_restart_has_no_restart_shading(full_report: tuple[Path, str, str]) -> None:
    out, _, _ = full_report
    assert restart_pixels(out / "throughput.png") == 0


def test_holes_and_restarts_the_exporter_missed_are_breaks(tmp_path: Path) -> None:
    lines = raw_lines(RESTART_LOG)
    first = [r for r in lines if r["pid"] == lines[0]["pid"]]
    second = lines[len(first) :]
    for r in second:
        r["gap"] = None  # as if the exporter had been restarted along with the daemon
    kept = first[:3] + first[6:]  # three samples lost
    log = tmp_path / "holes.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in kept + second))
    spans = find_spans(read_telemetry_log(str(log)))
    new_start = min(second[0]["ts"], second[0]["start_time_ns"] / 1e9)
    assert [(s.kind, s.start, s.end) for s in spans] == [
        ("no samples", first[2]["ts"], first[6]["ts"]),
        ("restart", first[-1]["ts"], new_start),
    ]
    assert spans[1].text == (
        f"daemon restart: pid {first[0]['pid']} -> {second[0]['pid']} (not seen by the exporter)"
    )


# -- malformed logs -----------------------------------------------------------------------------


def test_truncated_last_line_uses_the_valid_lines_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = DATA / "telemetry-truncated.jsonl"
    valid = [json.loads(line) for line in log.read_text().splitlines()[:-1]]
    assert plots.main([str(log), "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    warning = "the last line (line 11) is truncated"
    assert warning in err and f"using the {len(valid)} valid lines" in err
    md = (tmp_path / "report.md").read_text()
    assert "## Warnings" in md and warning in md
    assert f"| orders read | {sum(r['orders'] for r in valid):,} |" in md
    assert f"| order latency | {valid[-1]['latency_ns_since_start']['count']:,} |" in md


def test_garbage_line_in_the_middle_is_skipped_with_its_line_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = DATA / "telemetry-garbage-line.jsonl"
    valid = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert plots.main([str(log), "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 malformed line(s) (line 6: not JSON)" in err
    md = (tmp_path / "report.md").read_text()
    assert "line 6: not JSON" in md
    assert f"| orders read | {sum(r['orders'] for r in valid):,} |" in md


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("telemetry-empty.jsonl", "empty file, nothing to report"),
        ("telemetry-wrong-schema.jsonl", "telemetry log schema 2, this report reads schema 1"),
    ],
)
def test_unusable_log_is_one_line_and_exit_2(name: str, expected: str, tmp_path: Path) -> None:
    done = run_cli(DATA / name, "--output", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr and name in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_line_with_missing_fields_names_the_field(tmp_path: Path) -> None:
    line = raw_lines(RUN_LOG)[2]
    del line["latency_ns"]
    log = tmp_path / "missing.jsonl"
    log.write_text(json.dumps(line) + "\n")
    done = run_cli(log, "--output", tmp_path / "out")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "line 1: Object missing required field `latency_ns`" in done.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("just some text\nand more\n", "not a telemetry log, load-generator result"),
        ('{"schema":1,"ts":1795306264.4,"interval_s":0.3', "its only line is truncated"),
        ('{\n "tool": "other",\n "schema": 1\n}\n', "not a telemetry log, load-generator result"),
    ],
)
def test_unreadable_inputs_are_one_line_and_exit_2(
    content: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text(content)
    done = run_cli(path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert expected in done.stderr, done.stderr


def test_a_load_generator_result_of_another_schema_is_refused(tmp_path: Path) -> None:
    result = json.loads(LOADGEN.read_text())
    result["schema"] = 2
    del result["types"]
    (tmp_path / "lg.json").write_text(json.dumps(result))
    done = run_cli(RUN_LOG, tmp_path / "lg.json", "--output", tmp_path / "out")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "lg.json: load-generator result schema 2, this report reads schema 1" in done.stderr


def test_a_missing_file_and_a_missing_telemetry_log_are_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path / "nope.jsonl")
    assert done.returncode == 2 and "nope.jsonl: no such file" in done.stderr
    done = run_cli(LOADGEN)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no telemetry log among the inputs" in done.stderr


# -- targets ------------------------------------------------------------------------------------


def lat(**kw: float | None) -> Latency:
    fields: dict[str, Any] = dict.fromkeys(("avg", "p50", "p95", "p99", "p99_9", "max"), 1.0)
    fields.update(kw)
    return Latency(count=100, **fields)


def statuses(verdicts: list[Any]) -> dict[tuple[str, str], str]:
    return {(v.target.name, v.source): v.status for v in verdicts}


def test_targets_pass_at_and_fail_past_their_limits() -> None:
    # The are strict (<), the project's inclusive (<=): at the limit passes only those.
    daemon = lat(avg=500e3, p95=999e3, p99=5e3)
    at_limit = lat(avg=499.9e3, p50=12e3, p95=1e6, p99=50e3)
    over = lat(p50=12.001e3, p99=50.001e3)
    got = statuses(
        evaluate(
            daemon,
            [RoundTrip("a.json", at_limit), RoundTrip("b.json", over)],
            [TelemetryCost(50.0, "inline"), TelemetryCost(50.5, "wrapper")],
        )
    )
    d = "daemon histogram (read to ack written)"
    assert got[("average latency", d)] == "fail"
    assert got[("p95 latency", d)] == "pass"
    assert got[("daemon read to write p99", d)] == "pass"
    a, b = "load generator round trip (a.json)", "load generator round trip (b.json)"
    assert got[("average latency", a)] == "pass"
    assert got[("p95 latency", a)] == "fail"
    assert got[("round trip p50 (busy-poll)", a)] == "pass"
    assert got[("round trip p99 (busy-poll)", a)] == "pass"
    assert got[("round trip p50 (busy-poll)", b)] == "fail"
    assert got[("round trip p99 (busy-poll)", b)] == "fail"
    assert got[("telemetry cost per order", "pytest-benchmark (inline)")] == "pass"
    assert got[("telemetry cost per order", "pytest-benchmark (wrapper)")] == "fail"


def test_missing_inputs_are_no_data_never_a_pass() -> None:
    verdicts = evaluate(None, [], [])
    assert {v.status for v in verdicts} == {"no data"}
    assert {v.target.name for v in verdicts} == {t.name for t in TARGETS}
    # A figure the input lacks (a histogram with no p95) is no data too.
    got = statuses(evaluate(lat(p95=None), [RoundTrip("r.json", None)], []))
    assert got[("p95 latency", "daemon histogram (read to ack written)")] == "no data"
    assert got[("p99 latency", "load generator round trip (r.json)")] == "no data"
    assert got[("p99 latency", "daemon histogram (read to ack written)")] == "pass"


def _bench_run(tmp_path: Path, benchmarks: list[dict[str, Any]]) -> BenchmarkRun:
    path = tmp_path / "bench.json"
    stats = {"median": 2e-3, "mean": 2e-3, "min": 1e-3, "max": 3e-3, "ops": 500.0, "rounds": 5}
    for b in benchmarks:
        b.setdefault("stats", stats)
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return read_pytest_benchmark(str(path))


def test_telemetry_cost_comes_from_the_stated_figure_or_the_named_benchmark(
    tmp_path: Path,
) -> None:
    stated = _bench_run(
        tmp_path,
        [
            {"name": "test_order_inline_c", "extra_info": {"ns_per_order": 3.5}},
            {"name": "test_telemetry_one_order", "extra_info": {}},
        ],
    )
    assert [c.ns_per_order for c in telemetry_cost([stated])] == [3.5]
    named = _bench_run(
        tmp_path, [{"name": "test_telemetry_order_loop", "extra_info": {"orders": 40_000}}]
    )
    assert [c.ns_per_order for c in telemetry_cost([named])] == [pytest.approx(50.0)]
    unrelated = _bench_run(tmp_path, [{"name": "test_add_new_level", "extra_info": {}}])
    assert telemetry_cost([unrelated]) == []
    assert [c.ns_per_order for c in telemetry_cost([stated, unrelated])] == [3.5]


def test_constructed_inputs_pass_and_fail_in_the_report(tmp_path: Path) -> None:
    """A fast round trip and a cheap telemetry pass; the same log's slow daemon fails."""
    hist = HdrHistogram(1, 60_000_000_000, 3)
    for value in range(5_000, 15_000, 10):  # 5..15 us, p50 ~10 us
        hist.record_value(value)
    t = {
        "count": hist.get_total_count(),
        "mean_ns": hist.get_mean_value(),
        "p50_ns": hist.get_value_at_percentile(50),
        "p90_ns": hist.get_value_at_percentile(90),
        "p99_ns": hist.get_value_at_percentile(99),
        "p99_9_ns": hist.get_value_at_percentile(99.9),
        "p99_99_ns": hist.get_value_at_percentile(99.99),
        "max_ns": hist.get_max_value(),
        "hdr": hist.encode().decode(),
        "percentiles": [],
    }
    result = {"schema": 1, "tool": "lltrade-loadgen", "types": {"all": t}, "bottleneck": "loadgen"}
    (tmp_path / "lg.json").write_text(json.dumps(result))
    bench = {
        "benchmarks": [
            {
                "name": "test_order_inline_c",
                "extra_info": {"ns_per_order": 3.0},
                "stats": {
                    "median": 3e-3,
                    "mean": 3e-3,
                    "min": 3e-3,
                    "max": 3e-3,
                    "ops": 333.0,
                    "rounds": 20,
                },
            }
        ]
    }
    (tmp_path / "b.json").write_text(json.dumps(bench))
    out = tmp_path / "out"
    args = [str(RUN_LOG), str(tmp_path / "lg.json"), str(tmp_path / "b.json"), "--output", str(out)]
    assert plots.main(args) == 0
    rows = targets_table((out / "report.md").read_text())
    assert verdict(rows, "round trip p50 (busy-poll)", "load generator")[5] == "pass"
    row = verdict(rows, "round trip p99 (busy-poll)", "load generator")
    assert row[5:] == ["pass", "the load generator was the bottleneck"]
    assert verdict(rows, "telemetry cost per order", "pytest-benchmark")[3:6] == [
        "3.0 ns",
        "≤ 50 ns",
        "pass",
    ]
    since = raw_lines(RUN_LOG)[-1]["latency_ns_since_start"]
    assert since["p99"] > 5e3  # the recorded daemon is far slower than its target
    assert verdict(rows, "daemon read to write p99", "daemon histogram")[5] == "fail"


def test_a_log_without_timed_orders_has_no_daemon_latency(tmp_path: Path) -> None:
    idle = [r for r in raw_lines(RUN_LOG) if r["latency_ns_since_start"]["count"] == 0]
    assert idle  # the recorded log starts before the first order
    log = tmp_path / "idle.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in idle))
    assert plots.main([str(log), "--output", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    rows = targets_table(md)
    assert verdict(rows, "daemon read to write p99", "daemon histogram")[5] == "no data"
    assert "not drawn: latency percentiles over time (no order was timed)" in md
    assert not (tmp_path / "out" / "latency.png").exists()


# -- make report, end to end -----------------------------------------------------------------


def test_demo_report_runs_a_daemon_load_and_report_and_stops_everything(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "demo_report.py"),
            "--duration",
            "2",
            "--warmup",
            "1",
            "--rate",
            "500",
            "--output",
            str(out),
            "--benchmarks",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert f"the report is in {out}" in done.stdout
    lines = raw_lines(out / "telemetry.jsonl")
    assert len(lines) >= 3
    daemon = lines[-1]["pid"]
    with contextlib.suppress(psutil.NoSuchProcess):  # gone, or at most a reused pid
        assert "lltrade" not in " ".join(psutil.Process(daemon).cmdline()), "daemon still running"
    shm = done.stdout.split("(telemetry ", 1)[1].split(")", 1)[0]
    assert "lltrade-report-" in shm and not os.path.exists(shm)
    md = (out / "report.md").read_text()
    result = json.loads((out / "loadgen.json").read_text())
    assert result["answered"] > 0
    assert sum(r["orders"] or 0 for r in lines) > 0
    assert "## Load generator (loadgen.json)" in md
    assert "no pytest-benchmark JSON under" in md
    rows = targets_table(md)
    assert verdict(rows, "p99 latency", "load generator")[5] in ("pass", "fail")
    assert verdict(rows, "telemetry cost per order", "pytest-benchmark")[5] == "no data"
    for name in CHARTS:
        assert_png(out / name)
