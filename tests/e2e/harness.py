"""A daemon in the test's own event loop, and a raw protocol client for it.

Every async test runs twice: on asyncio's default loop and on uvloop.
Everything talks to 127.0.0.1 on a port the OS picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import uvloop

from lltrade.config import DEMO_SECRETS, Config, default_config
from lltrade.daemon import Daemon
from lltrade.protocol import (
    DAEMON_DECODER,
    PROTOCOL_VERSION,
    DaemonMessage,
    Disconnect,
    FrameError,
    FrameReader,
    Logon,
    LogonAck,
    SymbolInfo,
    encode_frame,
)

TIMEOUT = 10.0
LOOPS = ["asyncio", "uvloop"]


def spawn_daemon(
    *args: str, journal_dir: str | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], tuple[str, int], dict[str, dict[str, Any]]]:
    """``lltrade run`` as a process of its own on a free port, its journal in ``journal_dir``
    (a new temporary one by default); one at a time (they share a telemetry file).

    Returns the process (its stderr, the JSON log, still open), the address it listens
    on, and the log records up to ``listening`` by message (``"recovered"``, ...).
    """
    journal_dir = journal_dir or tempfile.mkdtemp(prefix="lltrade-journal-")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "lltrade", "run", "--port", "0"),
            *("--journal-dir", journal_dir),
            # One name per test run: a daemon killed with -9 leaves its file to the next one.
            *("--telemetry-name", f"lltrade-test-{os.getpid()}-process"),
            *args,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen: dict[str, dict[str, Any]] = {}
    for line in proc.stderr:  # JSON log lines, up to the one that tells where it listens
        record = json.loads(line)
        seen[record["msg"]] = record
        if record["msg"] == "listening":
            host, port = record["address"][:2]
            return proc, (str(host), int(port)), seen
    raise AssertionError(f"daemon exited with {proc.wait()} before listening")


def make_config(**server: Any) -> Config:
    """The demo config on an OS-picked port, with server overrides."""
    cfg = default_config()
    return msgspec.structs.replace(
        cfg,
        server=msgspec.structs.replace(cfg.server, port=0, **server),
        journal=msgspec.structs.replace(
            cfg.journal, dir=tempfile.mkdtemp(prefix="lltrade-journal-"), durability="none"
        ),
        telemetry=msgspec.structs.replace(
            cfg.telemetry, shm_name=f"lltrade-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        ),
    )


def run_on(loop_kind: str, coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``coro_fn()`` to completion on a fresh loop of the given kind."""
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(coro_fn(), 60))
    finally:
        # A failed scenario leaves its daemons and clients open: close them here, or
        # closing the loop under live uvloop handles can hang instead of failing.
        for harness in list(_LIVE):
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait_for(harness.close(), 10))
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


_LIVE: list[Harness] = []  #: harnesses not closed yet


class RawClient:
    """Speaks the wire protocol with explicit messages; collects what arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames: FrameReader[DaemonMessage] = FrameReader(DAEMON_DECODER, 16 << 20)
        self.inbox: list[Any] = []
        self.seq = 0
        self.closed = False
        self.symbols: dict[int, SymbolInfo] = {}
        self.ack: LogonAck | None = None

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> RawClient:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, *messages: Any) -> None:
        buf = bytearray()
        for msg in messages:
            encode_frame(msg, buf)
        self.writer.write(bytes(buf))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read_more(self, timeout: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
        except ConnectionError:  # the daemon dropped us (RST)
            data = b""
        if not data:
            self.closed = True
            return False
        out: list[Any] = []
        self.frames.feed(data, out)
        for msg in out:
            assert not isinstance(msg, FrameError), f"daemon sent a bad frame: {msg}"
            self.inbox.append(msg)
        return True

    async def expect(self, kind: type, pred: Callable[[Any], bool] = lambda m: True) -> Any:
        """Wait for the next message of ``kind`` matching ``pred``; earlier others stay."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            for i, msg in enumerate(self.inbox):
                if isinstance(msg, kind) and pred(msg):
                    del self.inbox[i]
                    return msg
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self.closed:
                raise AssertionError(f"no {kind.__name__} arrived; inbox: {self.inbox}")
            try:
                await self._read_more(left)
            except TimeoutError:
                continue

    async def drain(self, quiet: float = 0.05) -> list[Any]:
        """Everything that arrives until the connection is quiet for ``quiet`` s."""
        while not self.closed:
            try:
                if not await self._read_more(quiet):
                    break
            except TimeoutError:
                break
        out, self.inbox = self.inbox, []
        return out

    async def wait_closed(self) -> list[Any]:
        """Read until the daemon closes the connection; return what came."""
        while not self.closed:
            await self._read_more(TIMEOUT)
        out, self.inbox = self.inbox, []
        return out

    async def logon(self, account: str, secret: str | None = None) -> LogonAck:
        self.send(
            Logon(self.next_seq(), PROTOCOL_VERSION, account, secret or DEMO_SECRETS[account])
        )
        self.ack = await self.expect(LogonAck)
        for _ in range(3):
            info = await self.expect(SymbolInfo)
            self.symbols[info.symbol] = info
        return self.ack

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class Harness:
    """A running daemon plus the clients a test opened."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.clients: list[RawClient] = []

    async def client(self, account: str | None = None) -> RawClient:
        c = await RawClient.connect(self.daemon.address)
        self.clients.append(c)
        if account is not None:
            await c.logon(account)
        return c

    async def close(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        for c in self.clients:
            await c.close()
        await self.daemon.stop()


async def start_daemon(config: Config | None = None) -> Harness:
    daemon = Daemon(config or make_config(), asyncio.get_running_loop())
    await daemon.start()
    harness = Harness(daemon)
    _LIVE.append(harness)
    return harness


def frame_header(length: int) -> bytes:
    return struct.pack("<I", length)


__all__ = [
    "LOOPS",
    "Disconnect",
    "Harness",
    "RawClient",
    "frame_header",
    "make_config",
    "run_on",
    "start_daemon",
]
