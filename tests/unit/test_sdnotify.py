"""lltrade.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import select
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lltrade.sdnotify import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a path, as systemd's notify socket is."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def nothing_waiting(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def test_ready_status_stopping_reach_the_socket(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("recovered 12 records; listening on 0.0.0.0:9000")
    assert received(sock) == ["READY=1", "STATUS=recovered 12 records; listening on 0.0.0.0:9000"]
    assert n.status("42 sessions")
    assert received(sock) == ["STATUS=42 sessions"]
    assert n.stopping()
    assert received(sock) == ["STOPPING=1"]
    assert n.notify("RELOADING=1", "MONOTONIC_USEC=1")
    assert received(sock) == ["RELOADING=1", "MONOTONIC_USEC=1"]
    n.close()
    assert not n.enabled and not n.ready()
    assert nothing_waiting(sock)


def test_abstract_namespace_socket() -> None:
    name = f"lltrade-test-notify-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
        sock.settimeout(5)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert received(sock) == ["READY=1"]
        n.close()
    finally:
        sock.close()


def test_watchdog_pings_at_most_every_half_interval(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    assert n.watchdog_s == 10.0
    sent = [n.watchdog(now=t) for t in (100.0, 100.1, 104.9, 105.0, 105.5, 110.0)]
    assert sent == [True, False, False, True, False, True]
    assert [received(sock) for _ in range(3)] == [["WATCHDOG=1"]] * 3
    assert nothing_waiting(sock)
    n.close()


def test_watchdog_for_another_pid_is_not_ours(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifiers = [
        Notifier(env),
        Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}),
        Notifier({**env, "WATCHDOG_USEC": "0"}),
        Notifier({**env, "WATCHDOG_USEC": "soon"}),
    ]
    assert [n.watchdog_s for n in notifiers] == [2.0, None, None, None]
    assert not any(n.watchdog() for n in notifiers[1:])
    assert nothing_waiting(sock)
    for n in notifiers:
        n.close()


@pytest.mark.parametrize("value", [None, "", "relative/path", "@"])
def test_no_manager_means_every_call_is_a_no_op(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    n = Notifier({**env, "WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert not n.ready() and not n.status("x") and not n.stopping() and not n.watchdog()
    n.close()


def test_a_vanished_manager_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.enabled
    assert not n.ready()  # nobody bound there: ECONNREFUSED/ENOENT, reported as False
    n.close()


def test_reads_os_environ_by_default(
    manager: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier()
    assert n.watchdog_s is None
    assert n.ready()
    assert received(sock) == ["READY=1"]
    n.close()
