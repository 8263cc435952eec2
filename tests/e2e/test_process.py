"""The daemon as a real process: start-up, bad config, graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lltrade import Side
from lltrade.protocol import Cancelled, Disconnect, NewOrder, OrderAccepted, SessionReason

from harness import LOOPS, RawClient, spawn_daemon


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_sigterm_tells_sessions_cancels_and_exits_0(loop_kind: str) -> None:
    proc, address, _ = spawn_daemon("--loop", loop_kind)
    try:

        async def scenario() -> list[object]:
            c = await RawClient.connect(address)
            await c.logon("alice")
            c.send(NewOrder(c.next_seq(), 1, 1, Side.BUY, 10_000, 2, 0, False, 0))
            await c.expect(OrderAccepted)
            proc.send_signal(signal.SIGTERM)
            got = await c.wait_closed()
            await c.close()
            return got

        got = asyncio.run(asyncio.wait_for(scenario(), 20))
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        tail = [json.loads(line) for line in proc.stderr.read().splitlines()]
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert isinstance(got[-1], Disconnect) and got[-1].reason == SessionReason.SHUTDOWN
    assert [m.reason for m in got if isinstance(m, Cancelled)] == [25]  # DISCONNECT
    assert tail[-1]["msg"] == "stopped" and tail[-1]["logons"] == 1


def test_bad_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[[symbols]]\nid = 1\nname = "X"\ntick = 0\nlot = 1\nmin_price = 1\n'
        "max_price = 10\nreference_price = 5\nprice_decimals = 0\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "lltrade", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "$.symbols[0].tick" in out.stderr, out.stderr


def test_missing_config_file_is_one_clear_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lltrade", "run", "--config", "/nonexistent/lltrade.toml"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "/nonexistent/lltrade.toml" in out.stderr


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    """Under Type=notify: READY=1 once listening, WATCHDOG=1 from the tick, STOPPING=1."""
    import socket

    address = str(tmp_path / "notify")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(address)
    manager.settimeout(10)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    proc, (host, port), _ = spawn_daemon(env=env)
    try:
        got: list[str] = []

        def until(key: str) -> None:
            while not any(m.startswith(key) for m in got):
                got.extend(manager.recv(4096).decode().split("\n"))

        until("READY=1")
        assert f"STATUS=listening on {host}:{port}" in got
        until("WATCHDOG=1")  # every 100 ms (half of WATCHDOG_USEC)
        proc.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        assert proc.wait(20) == 0
    finally:
        manager.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
