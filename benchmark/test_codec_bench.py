"""pytest-benchmark suites of the wire codec (``make bench``).

What a session pays per message on each side of the socket: msgspec's
encode and decode of a ``NewOrder``, one read of 1000 order frames through
``FrameReader`` (both of its faces), and ``ReportEncoder`` writing execution
reports and market data for 1000 engine events.  Every benchmark then decodes
or compares what was produced, so a fast wrong answer cannot pass.  The
garbage collector is off throughout (``conftest.gc_off``).  A single message
takes a few hundred nanoseconds: those benchmarks let pytest-benchmark
calibrate the iterations per round, so the timer's own cost is spread out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import lltrade
from lltrade import EventKind
from lltrade._reports import ReportEncoder
from lltrade.enums import STP, TIF, Side
from lltrade.protocol import (
    CLIENT_DECODER,
    DAEMON_DECODER,
    ENCODER,
    Fill,
    FrameReader,
    LevelUpdate,
    NewOrder,
    OrderAccepted,
    Trade,
    encode_frame,
)

MESSAGES = 1000
SYMBOL = 1
PRICE = 10_000
MD_SIDE = (Side.BUY, Side.BUY, Side.SELL)  # engine side -> market-data side, as _reports maps it

Setup = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


def new_order(i: int) -> NewOrder:
    """Order ``i`` of a session: alternating GTC buys and IOC sells around PRICE."""
    if i % 2 == 0:
        return NewOrder(i + 1, i + 1, SYMBOL, Side.BUY, PRICE - i % 50, 1 + i % 100, TIF.GTC,
                        False, STP.NONE)  # fmt: skip
    return NewOrder(i + 1, i + 1, SYMBOL, Side.SELL, PRICE + i % 50, 1 + i % 100, TIF.IOC,
                    False, STP.CANCEL_RESTING)  # fmt: skip


ORDERS = [new_order(i) for i in range(MESSAGES)]


def framed(messages: list[Any]) -> bytes:
    buf = bytearray()
    for msg in messages:
        encode_frame(msg, buf)
    return bytes(buf)


STREAM = framed(ORDERS)


def run_once(benchmark: Any, target: Callable[..., Any], setup: Setup, rounds: int) -> Any:
    return benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=2)


# -- msgspec: one NewOrder -------------------------------------------------------------


def test_encode_new_order(benchmark: Any) -> None:
    """``encode_frame`` of one NewOrder into a reused buffer, as the client library does."""
    order = ORDERS[1]
    buf = bytearray()

    def encode() -> None:
        del buf[:]
        encode_frame(order, buf)

    benchmark(encode)
    body = ENCODER.encode(order)
    assert bytes(buf) == len(body).to_bytes(4, "little") + body
    assert CLIENT_DECODER.decode(buf[4:]) == order


def test_decode_new_order(benchmark: Any) -> None:
    """``CLIENT_DECODER.decode`` of one NewOrder body: the daemon's per-frame cost."""
    order = ORDERS[1]
    body = ENCODER.encode(order)
    decoded = benchmark(CLIENT_DECODER.decode, body)
    assert decoded == order
    assert type(decoded) is NewOrder and decoded.stp == STP.CANCEL_RESTING


def test_encode_1000_frames(benchmark: Any) -> None:
    """1000 NewOrder frames appended to one fresh buffer (a pipelining client's write)."""
    bufs: list[bytearray] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        bufs[:] = [bytearray()]
        return (bufs[0],), {}

    def encode_all(buf: bytearray) -> None:
        for msg in ORDERS:
            encode_frame(msg, buf)

    run_once(benchmark, encode_all, setup, 200)
    benchmark.extra_info["messages"] = MESSAGES
    assert bytes(bufs[-1]) == STREAM
    assert FrameReader(CLIENT_DECODER).feed(bufs[-1]) == ORDERS


# -- FrameReader: one read of 1000 frames ----------------------------------------------


@pytest.mark.parametrize("face", ["feed", "feed-1460", "buffered"])
def test_read_1000_frames(benchmark: Any, face: str) -> None:
    """Cut and decode 1000 frames: fed at once (``feed``), fed in 1460-byte pieces
    (one TCP segment each, frames split across them), or written into
    ``get_buffer`` and announced with ``buffer_updated`` as the daemon's
    ``BufferedProtocol`` does (the copy stands in for the kernel's)."""
    readers: list[FrameReader[Any]] = []
    outs: list[list[Any]] = []
    data = memoryview(STREAM)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        readers[:] = [FrameReader(CLIENT_DECODER, buffer_size=1 << 16)]
        outs[:] = [[]]
        return (readers[0], outs[0]), {}

    def feed(reader: FrameReader[Any], out: list[Any]) -> None:
        reader.feed(data, out)

    def feed_segments(reader: FrameReader[Any], out: list[Any]) -> None:
        for pos in range(0, len(data), 1460):
            reader.feed(data[pos : pos + 1460], out)

    def buffered(reader: FrameReader[Any], out: list[Any]) -> None:
        pos, total = 0, len(data)
        while pos < total:
            view = reader.get_buffer()
            n = min(len(view), total - pos)
            view[:n] = data[pos : pos + n]
            reader.buffer_updated(n, out)
            pos += n

    target = {"feed": feed, "feed-1460": feed_segments, "buffered": buffered}[face]
    run_once(benchmark, target, setup, 200)
    benchmark.extra_info["messages"] = MESSAGES
    benchmark.extra_info["bytes"] = len(STREAM)
    assert outs[-1] == ORDERS
    assert readers[-1].pending == 0 and not readers[-1].failed


# -- ReportEncoder: 1000 engine events into session buffers ------------------------------

ACCEPTED, FILL, LEVEL = int(EventKind.ACCEPTED), int(EventKind.FILL), int(EventKind.LEVEL)
TAKER_SLOT, MAKER_SLOT, MD_SLOT = 0, 1, 2


def event(kind: int, oid: int, price: int, qty: int, side: int, **kw: int) -> tuple[int, ...]:
    f = {"remaining": 0, "maker": 0, "taker": 0}
    f.update(kw)
    return (oid, price, qty, f["remaining"], f["maker"], f["taker"], SYMBOL, 0, kind, side, 0)


def acks() -> tuple[np.ndarray, np.ndarray, dict[int, list[Any]]]:
    """MESSAGES ACCEPTED events of one session, and the OrderAccepted frames they make."""
    rows, routes, expected = [], [], []
    for i, o in enumerate(ORDERS):
        oid = 10**9 + i
        rows.append(event(ACCEPTED, oid, o.price, o.qty, int(o.side), remaining=o.qty))
        routes.append((TAKER_SLOT, o.cl_ord_id))
        expected.append(OrderAccepted(i + 1, o.cl_ord_id, oid, SYMBOL, o.side, o.price, o.qty))
    return (
        np.array(rows, dtype=lltrade.EVENT_DTYPE),
        np.array(routes, dtype=np.int64),
        {TAKER_SLOT: expected, MAKER_SLOT: [], MD_SLOT: []},
    )


def matches() -> tuple[np.ndarray, np.ndarray, dict[int, list[Any]]]:
    """MESSAGES events of trades as the engine writes them (taker fill, maker fill,
    level update), and what each slot gets: the taker's and the maker's Fills, and
    the market-data subscriber's Trade and LevelUpdate."""
    rows, routes = [], []
    out: dict[int, list[Any]] = {TAKER_SLOT: [], MAKER_SLOT: [], MD_SLOT: []}

    def seq(slot: int) -> int:
        return len(out[slot]) + 1

    for i in range(MESSAGES // 3):
        exec_id = i + 1  # one per match, counted by the encoder from its taker fill
        taker, maker = 2 * i + 1, 2 * i + 2  # cl_ord_ids; order ids 10**9 above
        t_oid, m_oid = 10**9 + taker, 10**9 + maker
        price, qty, left = PRICE + i % 7, 1 + i % 5, 10 * (i % 3)
        rows.append(event(FILL, t_oid, price, qty, 1, maker=m_oid, taker=t_oid))
        routes.append((TAKER_SLOT, taker))
        out[TAKER_SLOT].append(
            Fill(seq(TAKER_SLOT), taker, t_oid, SYMBOL, Side.BUY, exec_id, price, qty, 0, False)
        )
        rows.append(event(FILL, m_oid, price, qty, 2, remaining=left, maker=m_oid, taker=t_oid))
        routes.append((MAKER_SLOT, maker))
        out[MAKER_SLOT].append(
            Fill(seq(MAKER_SLOT), maker, m_oid, SYMBOL, Side.SELL, exec_id, price, qty, left, True)
        )
        out[MD_SLOT].append(Trade(seq(MD_SLOT), SYMBOL, exec_id, price, qty, MD_SIDE[1]))
        rows.append(event(LEVEL, 0, price, left, 2))
        routes.append((-1, 0))
        out[MD_SLOT].append(LevelUpdate(seq(MD_SLOT), SYMBOL, MD_SIDE[2], price, left))
    return np.array(rows, dtype=lltrade.EVENT_DTYPE), np.array(routes, dtype=np.int64), out


@pytest.mark.parametrize("scenario", ["acks", "matches"])
def test_report_encoder(benchmark: Any, scenario: str) -> None:
    """``ReportEncoder.encode`` of one batch of events into three sessions' buffers."""
    events, routes, expected = {"acks": acks, "matches": matches}[scenario]()
    ref_seqs = np.zeros(1, dtype=np.int64)  # no OrderRejected in these batches
    encoders: list[ReportEncoder] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        enc = ReportEncoder(4)
        for slot in (TAKER_SLOT, MAKER_SLOT, MD_SLOT):
            enc.open(slot)
        enc.subscribe(MD_SLOT, SYMBOL)
        encoders[:] = [enc]
        return (enc,), {}

    def encode(enc: ReportEncoder) -> None:
        enc.encode(events, len(events), routes, ref_seqs)

    run_once(benchmark, encode, setup, 300)
    benchmark.extra_info["events"] = len(events)
    enc = encoders[-1]
    frames = {slot: enc.take(slot) for slot in expected}
    benchmark.extra_info["bytes"] = sum(len(b) for b in frames.values())
    for slot, messages in expected.items():
        assert FrameReader(DAEMON_DECODER, 1 << 24).feed(frames[slot]) == messages, slot
        assert frames[slot] == framed(messages), slot
    assert enc.dirty() == []
