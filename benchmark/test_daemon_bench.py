"""pytest-benchmark suite of an order's round trip through a running daemon (``make bench``).

The test starts ``lltrade run`` itself (``benchmark/roundtrip.py``'s
``Server``: port 0, its own journal directory and telemetry file, pinned to
the last usable CPU when there are two or more) and stops it afterwards
whatever happens.  One session logged on as ``admin`` sends one order at a
time over a blocking loopback socket and waits for its answer: each round is
one order's round trip, send to ``OrderAccepted``.  The orders are
``roundtrip.py``'s stream (a GTC buy, then an IOC sell that trades with it),
so every other order also brings two fills, read on the way to the next
answer.  It runs with the journal off, and on under the ``none`` and
``batch`` durability policies (``batch``: an fdatasync before each ack).

Every answer must be the ``OrderAccepted`` of the order just sent, and at the
end every sell must have traded once against the buy before it.  Closed loop,
one order in flight: this is the latency of a quiet daemon, not its load
behaviour (``benchmark/roundtrip.py``, ``benchmark/durability_bench.py``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lltrade._telemetry import default_path
from lltrade.protocol import (
    DAEMON_DECODER,
    Done,
    Fill,
    FrameReader,
    Heartbeat,
    MassCancel,
    OrderAccepted,
    encode_frame,
)
from roundtrip import (
    ACCOUNT,
    SYMBOL,
    Server,
    connect,
    daemon_argv,
    logon,
    order_for,
    order_frames,
    pinned,
    reference_price,
)

ROUNDS, WARMUP = 2000, 200  # even: every sell follows its buy
JOURNAL_FLAGS = {
    "off": ["--no-journal"],
    "none": ["--durability", "none"],
    "batch": ["--durability", "batch"],
}


def cpus() -> tuple[int | None, int | None]:
    """(daemon CPU, client CPU): the last two usable CPUs, or None, None on one core."""
    usable = sorted(os.sched_getaffinity(0))
    return (usable[-1], usable[-2]) if len(usable) >= 2 else (None, None)


@pytest.fixture(params=list(JOURNAL_FLAGS), ids=lambda p: f"journal-{p}")
def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A daemon on 127.0.0.1, stopped (SIGTERM, then SIGKILL) whatever the test does."""
    name = f"lltrade-bench-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    argv = [
        *daemon_argv(cpus()[0], False, "uvloop"),
        *("--journal-dir", str(tmp_path / "journal"), "--telemetry-name", name),
        *JOURNAL_FLAGS[request.param],
    ]
    server = Server(f"daemon (journal {request.param})", argv, os.sched_getaffinity(0))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):  # left behind only by a daemon that was killed
            os.unlink(default_path(name))


class Session:
    """A logged-on blocking connection that sends ``count`` orders one at a time."""

    def __init__(self, sock: socket.socket, count: int, price: int) -> None:
        self.sock = sock
        self.first_seq = logon(sock, ACCOUNT)
        self.count = count
        self.price = price
        frames, self.offsets = order_frames(count, self.first_seq, price)
        self.frames = memoryview(frames)
        self.reader: FrameReader[Any] = FrameReader(DAEMON_DECODER, 16 << 20)
        self.inbox: list[Any] = []
        self.read = 0  # messages of the inbox already taken
        self.sent = 0
        self.answers: list[Any] = []  # the first message answering each order
        self.fills: list[Fill] = []

    def next_message(self) -> Any:
        while self.read == len(self.inbox):
            self.inbox.clear()
            self.read = 0
            nbytes = self.sock.recv_into(self.reader.get_buffer())
            if nbytes == 0:
                raise ConnectionError(f"the daemon closed the connection after {self.sent} orders")
            self.reader.buffer_updated(nbytes, self.inbox)
        msg = self.inbox[self.read]
        self.read += 1
        return msg

    def round_trip(self) -> None:
        """Send the next order and read up to its answer (fills on the way are kept)."""
        i = self.sent
        self.sock.sendall(self.frames[self.offsets[i] : self.offsets[i + 1]])
        self.sent = i + 1
        while True:
            msg = self.next_message()
            if isinstance(msg, Fill):
                self.fills.append(msg)
            elif not isinstance(msg, Heartbeat):
                self.answers.append(msg)
                return

    def finish(self) -> list[Any]:
        """Cancel what rests and read up to its Done: every fill has then arrived.

        Returns the messages other than fills seen on the way.
        """
        seq = self.first_seq + self.sent
        buf = bytearray()
        encode_frame(MassCancel(seq, SYMBOL, 0), buf)
        self.sock.sendall(buf)
        others = []
        while True:
            msg = self.next_message()
            if isinstance(msg, Done) and msg.ref_seq == seq:
                return others
            if isinstance(msg, Fill):
                self.fills.append(msg)
            elif not isinstance(msg, Heartbeat):
                others.append(msg)


def test_order_round_trip(benchmark: Any, daemon: Server) -> None:
    count = ROUNDS + WARMUP
    sock = connect(daemon.address)
    try:
        session = Session(sock, count, reference_price())
        with pinned(cpus()[1]):
            benchmark.pedantic(session.round_trip, rounds=ROUNDS, warmup_rounds=WARMUP)
        leftovers = session.finish()
    finally:
        sock.close()
    benchmark.extra_info["orders"] = ROUNDS
    orders = [order_for(i, session.first_seq + i, i + 1, session.price) for i in range(count)]
    assert session.sent == count
    answered = [(type(a), a.cl_ord_id, a.symbol, a.side, a.price, a.qty) for a in session.answers]
    assert answered == [
        (OrderAccepted, o.cl_ord_id, o.symbol, o.side, o.price, o.qty) for o in orders
    ]
    assert len({a.order_id for a in session.answers}) == count
    # Each IOC sell (odd index i, cl_ord_id i + 1) took the GTC buy before it (cl_ord_id i).
    sells = range(1, count, 2)
    assert sorted((f.cl_ord_id, f.maker, f.qty, f.leaves_qty) for f in session.fills) == sorted(
        [(i + 1, False, 1, 0) for i in sells] + [(i, True, 1, 0) for i in sells]
    )
    assert leftovers == []
