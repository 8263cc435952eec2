"""benchmark/peak.py and its C load generator against a real daemon (short, loopback only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmark"


def test_peak_builds_blast_and_measures_a_daemon(tmp_path: Path) -> None:
    out = tmp_path / "peak.json"
    run = subprocess.run(
        [
            sys.executable,
            str(BENCH / "peak.py"),
            "--repeats",
            "1",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--modes",
            "blocking",
            "--journals",
            "off,none",
            "--connections",
            "2",
            "--window",
            "64",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    rows = {r["journal"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"off", "none"}
    for row in rows.values():
        (one,) = row["runs"]
        assert one["rejected"] == 0  # every order acknowledged, none refused
        assert row["rate"] > 1_000  # orders answered per second, whatever the machine
        assert row["daemon_us_per_order"] > 0
    assert rows["off"]["vs_off"] == 1.0
    assert "orders/s" in run.stdout


def test_peak_refuses_unknown_modes() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / "peak.py"), "--modes", "spin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "--modes: 'spin'" in run.stderr
