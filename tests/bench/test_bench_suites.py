"""The arithmetic and command lines of ``benchmark/durability_bench.py``.

Constructed measurements only: medians over the rounds that completed,
ratios to the journal-off baseline, the notes a verdict leaves, the rotation
that interleaves the policies, the flags each policy starts a daemon with, and
the configuration behind ``interval+ack``.  No process, no socket, no timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import durability_bench as db
from lltrade.config import load_config


def m(policy: str, rnd: int, rate: float, p50: float, p99: float, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "us_per_order": 2.0,
        "peak_verdict": "ok",
        "p999_ns": p99 * 2,
        "latency_rate": 10_000.0,
        "latency_verdict": "ok",
        "rejected": 0,
        "other_cpu": 0.01,
        "error": None,
    }
    fields.update(kw)
    return db.Measurement(policy=policy, round=rnd, orders_per_s=rate, p50_ns=p50, p99_ns=p99,
                          **fields)  # fmt: skip


def test_medians_and_ratios_to_the_baseline() -> None:
    rounds = [
        m("off", 0, 100.0, 50.0, 500.0, us_per_order=1.0),
        m("off", 1, 300.0, 70.0, 900.0, us_per_order=3.0),
        m("off", 2, 200.0, 60.0, 700.0, us_per_order=2.0),
        m("batch", 0, 40.0, 600.0, 7000.0),
        m("batch", 1, 60.0, 300.0, 2800.0),
        m("batch", 2, 50.0, 240.0, 1400.0),
    ]
    off, batch = db.summarise(rounds, ["off", "batch"])
    assert (off.policy, off.rounds, off.orders_per_s, off.p50_ns, off.p99_ns) == (
        "off", 3, 200.0, 60.0, 700.0,
    )  # fmt: skip
    assert (off.orders_per_s_min, off.orders_per_s_max, off.us_per_order) == (100.0, 300.0, 2.0)
    assert (off.rate_ratio, off.p50_ratio, off.p99_ratio) == (1.0, 1.0, 1.0)
    assert (batch.orders_per_s, batch.p50_ns, batch.p99_ns, batch.p999_ns) == (
        50.0, 300.0, 2800.0, 5600.0,
    )  # fmt: skip
    assert batch.rate_ratio == pytest.approx(0.25)
    assert batch.p50_ratio == pytest.approx(5.0)
    assert batch.p99_ratio == pytest.approx(4.0)
    assert off.notes == batch.notes == []


def test_failed_rounds_are_left_out_and_noted() -> None:
    rounds = [
        m("off", 0, 100.0, 50.0, 500.0),
        m("none", 0, 80.0, 55.0, 600.0, other_cpu=0.3, latency_verdict="late"),
        db.failed("none", 1, "RuntimeError: daemon (none) exited with 1 before listening"),
        m("none", 2, 90.0, 65.0, 800.0, other_cpu=0.6, peak_verdict="LOADGEN", rejected=3),
    ]
    off, none = db.summarise(rounds, ["off", "none"])
    assert none.rounds == 2
    assert none.orders_per_s == 85.0 and none.p50_ns == 60.0 and none.p99_ns == 700.0
    assert none.rate_ratio == pytest.approx(0.85) and none.p99_ratio == pytest.approx(1.4)
    assert none.notes == [
        "latency late x1",
        "noisy (others used up to 60% of a core) x2",
        "error: RuntimeError: daemon (none) exited with 1 before listening x1",
        "throughput LOADGEN x1",
        "3 rejected x1",
    ]
    table = db.format_table([off, none], 3)
    row = next(line for line in table.splitlines() if line.startswith("none "))
    assert "85 /s" in row and "0.85x" in row and "1.40x" in row and "(only 2 of 3 rounds)" in row


def test_a_multi_line_error_is_noted_on_one_line() -> None:
    log = "daemon (none) exited with 1 before listening:\n{...}\nTraceback\n  File x\nOSError: busy"
    note = "daemon (none) exited with 1 before listening: OSError: busy"
    assert db.short_error(log) == note
    (none,) = db.summarise([db.failed("none", 0, log)], ["none"])
    assert none.notes == [f"error: {note} x1"]
    assert db.short_error("one line") == "one line"
    assert db.short_error("x" * 200, width=20) == "x" * 17 + "..."


def test_without_a_baseline_or_a_good_round_there_is_no_ratio() -> None:
    (batch,) = db.summarise([m("batch", 0, 50.0, 300.0, 2800.0)], ["batch"])
    assert batch.orders_per_s == 50.0 and batch.rate_ratio is None and batch.p50_ratio is None
    off, none = db.summarise([m("off", 0, 100.0, 50.0, 500.0), db.failed("none", 0, "x")],
                             ["off", "none"])  # fmt: skip
    assert none.rounds == 0 and none.orders_per_s is None and none.rate_ratio is None
    assert off.rate_ratio == 1.0
    row = db.format_table([off, none], 1).splitlines()[3]
    assert row.split()[:3] == ["none", "-", "-"]


def test_every_round_runs_every_policy_in_a_rotated_order() -> None:
    policies = ["off", "none", "batch", "interval"]
    orders = [db.rotated(policies, r) for r in range(5)]
    assert orders[0] == policies
    assert orders[1] == ["none", "batch", "interval", "off"]
    assert orders[4] == policies
    assert all(sorted(o) == sorted(policies) for o in orders)
    assert [o[0] for o in orders[:4]] == policies  # each goes first once in 4 rounds


def test_policy_flags() -> None:
    assert db.policy_flags("off", None) == ["--no-journal"]
    for policy in ("none", "batch", "interval"):
        assert db.policy_flags(policy, None) == ["--durability", policy]
    assert db.policy_flags("none-write", None) == ["--durability", "none", "--no-journal-mmap"]
    assert db.policy_flags("interval+ack", "/x.toml") == [
        "--config", "/x.toml", "--durability", "interval",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="ack_after_sync"):
        db.policy_flags("interval+ack", None)
    with pytest.raises(ValueError, match="unknown policy 'fsync'"):
        db.policy_flags("fsync", None)


def test_journal_argv_selects_the_policy_and_how_it_writes() -> None:
    from lltrade.cli import _build_parser
    from roundtrip import JOURNALS, journal_argv

    assert journal_argv("off", "/j") == ["--no-journal"]
    assert journal_argv("none", "/j") == ["--journal-dir", "/j", "--durability", "none"]
    assert journal_argv("batch-write", "/j") == [
        "--journal-dir", "/j", "--durability", "batch", "--no-journal-mmap",
    ]  # fmt: skip
    parser = _build_parser()
    for journal in JOURNALS:  # every one is a command line lltrade run takes
        args = parser.parse_args(["run", *journal_argv(journal, "/j")])
        assert args.journal_mmap is (False if journal.endswith("-write") else None)


def test_interval_ack_config_is_the_default_with_acks_held(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(db.ack_after_sync_config())
    config, default = load_config(path), load_config(None)
    assert config.journal.ack_after_sync and not default.journal.ack_after_sync
    assert config.symbols == default.symbols and config.server == default.server


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--policies", "off,fsync"], ["--repeats", "0"], ["--dir", "/no/such/dir"]):
        with pytest.raises(SystemExit) as exc:
            db.parse_args(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--policies: choose from off, none, batch, interval, interval+ack" in err
    assert "--dir /no/such/dir: no such directory" in err
    args = db.parse_args(["--policies", " batch, off "])
    assert args.policy_list == ["batch", "off"]
