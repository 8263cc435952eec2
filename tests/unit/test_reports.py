"""lltrade._reports.ReportEncoder: execution reports and market data encoded in C.

The reference is the daemon's Python path (``Daemon._dispatch``,
``MarketData.level`` and ``MarketData.trade`` before the encoder): msgspec
Structs of :mod:`lltrade.protocol` appended with ``encode_frame``, with one
sequence counter per session and one exec_id counter.  :class:`Reference`
below is that path with sessions replaced by slots; the encoder's output must
equal it byte for byte, slot by slot, over seeded random event streams (every
event kind, every MessagePack integer size class in every field, sessions
opening and closing, subscriptions changing, frames appended in between).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import lltrade
from lltrade import EventKind, Reason, Side
from lltrade._reports import ReportEncoder
from lltrade.protocol import (
    DAEMON_DECODER,
    Cancelled,
    Done,
    Fill,
    FrameReader,
    LevelUpdate,
    LogonAck,
    OrderAccepted,
    OrderRejected,
    Reduced,
    Replaced,
    Trade,
    encode_frame,
    frame,
    reason_name,
)

ACCEPTED, REJECTED, FILL, CANCELLED, REDUCED, REPLACED, LEVEL = (int(k) for k in EventKind)
_SIDE = (Side.BUY, Side.BUY, Side.SELL)  # as lltrade.marketdata maps engine sides
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
# The edges of every MessagePack integer class, and their neighbours.
EDGES = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, I64_MAX,
    -1, -32, -33, -128, -129, -32768, -32769, I32_MIN, I32_MIN - 1, I64_MIN,
]  # fmt: skip
EDGES_NEAR = sorted({min(I64_MAX, max(I64_MIN, e + d)) for e in EDGES for d in (-1, 0, 1)})
HOT_C = Path(__file__).resolve().parents[2] / "build/cython/src/lltrade/_reports.c"


# =============================================================================
# The reference: the daemon's Struct path, with slots for sessions
# =============================================================================


class Reference:
    """Per-slot bytearrays and seq counters, subscriber lists, exec_id: the Python path."""

    def __init__(self) -> None:
        self.out: dict[int, bytearray] = {}
        self.seq: dict[int, int] = {}
        self.subs: dict[int, list[int]] = {}
        self.exec_id = 0
        self.dirty: dict[int, None] = {}  # insertion order = first touched
        self.sent: dict[int, list[Any]] = {}  # every message, for the decode checks

    def open(self, slot: int, seq: int = 0) -> None:
        self.out[slot] = bytearray()
        self.seq[slot] = seq
        self.sent[slot] = []

    def close(self, slot: int) -> bytes:
        for subs in self.subs.values():
            if slot in subs:
                subs.remove(slot)
        del self.seq[slot]
        self.dirty.pop(slot, None)
        return bytes(self.out.pop(slot))

    def next_seq(self, slot: int) -> int:
        self.seq[slot] += 1
        return self.seq[slot]

    def send(self, slot: int, msg: Any) -> None:
        encode_frame(msg, self.out[slot])
        self.sent[slot].append(msg)
        self.dirty.setdefault(slot, None)

    def append(self, slot: int, data: bytes) -> None:
        self.out[slot] += data
        if data:
            self.dirty.setdefault(slot, None)

    def take(self, slot: int) -> bytes:
        data = bytes(self.out[slot])
        self.out[slot].clear()
        self.dirty.pop(slot, None)
        return data

    def subscribe(self, slot: int, symbol: int) -> None:
        subs = self.subs.setdefault(symbol, [])
        if slot not in subs:
            subs.append(slot)

    def unsubscribe(self, slot: int, symbol: int) -> None:
        if slot in self.subs.get(symbol, []):
            self.subs[symbol].remove(slot)

    def dispatch(
        self, events: np.ndarray, n: int, routes: np.ndarray, ref_seqs: np.ndarray, offset: int
    ) -> None:
        """``Daemon._dispatch`` as it was, with ``by_slot[slot]`` an open slot or None."""
        refs = ref_seqs.tolist()
        for (oid, price, qty, remaining, maker, taker, symbol, cmd, kind, side, reason), (
            slot,
            cl_ord_id,
        ) in zip(events[:n].tolist(), routes[:n].tolist(), strict=True):
            if kind == LEVEL:
                for s in self.subs.get(symbol, ()):
                    self.send(s, LevelUpdate(self.next_seq(s), symbol, _SIDE[side], price, qty))
                continue
            session = slot if slot >= 0 and slot in self.seq else None
            if kind == FILL:
                if oid == taker:
                    self.exec_id += 1
                if session is not None:
                    self.send(
                        session,
                        Fill(
                            self.next_seq(session),
                            cl_ord_id,
                            oid,
                            symbol,
                            side,
                            self.exec_id,
                            price,
                            qty,
                            remaining,
                            oid == maker,
                        ),
                    )
                if oid == maker:
                    for s in self.subs.get(symbol, ()):
                        self.send(
                            s,
                            Trade(
                                self.next_seq(s), symbol, self.exec_id, price, qty, _SIDE[3 - side]
                            ),
                        )
                continue
            if session is None:
                continue
            seq = self.next_seq(session)
            msg: Any
            if kind == ACCEPTED:
                msg = OrderAccepted(seq, cl_ord_id, oid, symbol, side, price, qty)
            elif kind == CANCELLED:
                msg = Cancelled(seq, cl_ord_id, oid, symbol, side, price, qty, reason)
            elif kind == REJECTED:
                ref_seq = refs[offset + cmd]
                msg = OrderRejected(seq, ref_seq, cl_ord_id, reason, reason_name(reason))
            elif kind == REPLACED:
                msg = Replaced(seq, cl_ord_id, oid, symbol, side, price, qty)
            else:
                msg = Reduced(seq, cl_ord_id, oid, symbol, side, price, qty, remaining)
            self.send(session, msg)


# =============================================================================
# Random streams
# =============================================================================


def _i64(rng: random.Random) -> int:
    """Half the time an integer-class edge (or a neighbour), else any width and sign."""
    if rng.random() < 0.5:
        return rng.choice(EDGES_NEAR)
    v = rng.getrandbits(rng.randint(1, 63))
    return -v - 1 if rng.random() < 0.3 else v


def _clip(v: int, lo: int, hi: int) -> int:
    return min(hi, max(lo, v))


class Stream:
    """Draws event batches.  ``valid``: only values the protocol's decoder accepts."""

    def __init__(self, rng: random.Random, symbols: list[int], valid: bool) -> None:
        self.rng = rng
        self.symbols = symbols
        self.valid = valid

    def pos(self) -> int:  # an id: 1 .. 2**63 - 1 when valid
        v = _i64(self.rng)
        return _clip(abs(v), 1, I64_MAX) if self.valid else v

    def nonneg(self) -> int:
        v = _i64(self.rng)
        return _clip(abs(v), 0, I64_MAX) if self.valid else v

    def batch(
        self, n: int, slots: list[int], n_cmds: int, max_sessions: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        events = np.zeros(n, dtype=lltrade.EVENT_DTYPE)
        routes = np.zeros((n, 2), dtype=np.int64)
        kinds = [ACCEPTED, REJECTED, FILL, FILL, FILL, CANCELLED, REDUCED, REPLACED, LEVEL, LEVEL]
        for i in range(n):
            kind = rng.choice(kinds)
            if not self.valid and rng.random() < 0.02:
                kind = rng.choice([0, 8, 255])  # _dispatch's else branch: Reduced
            oid = self.pos()
            maker = taker = self.pos()
            if kind == FILL:
                role = rng.random()
                if role < 0.45:
                    taker = oid
                elif role < 0.9:
                    maker = oid
                elif role < 0.95:
                    maker = taker = oid
            if kind == LEVEL or (kind == FILL and maker == oid):
                side = (
                    rng.choice([1, 2])
                    if self.valid
                    else rng.randint(0, 2)
                    if kind == LEVEL
                    else rng.randint(1, 6)
                )
            else:
                side = (
                    rng.choice([1, 2]) if self.valid or rng.random() < 0.8 else rng.randint(0, 255)
                )
            if rng.random() < 0.9:
                symbol = rng.choice(self.symbols)
            elif self.valid:
                symbol = rng.choice([1, 127, 128, 65536, I32_MAX])
            else:
                symbol = _clip(_i64(rng), I32_MIN, I32_MAX)
            if rng.random() < 0.6:
                reason = rng.randint(0, 80)
            else:
                reason = rng.choice([127, 128, 255, 256, 65535, rng.randint(0, 65535)])
            qty = self.nonneg() if kind == LEVEL else _i64(rng)
            events[i] = (
                oid,
                _i64(rng),  # price: any int64, negatives included
                qty,
                _i64(rng),
                maker,
                taker,
                symbol,
                rng.randrange(n_cmds) if kind == REJECTED else rng.randint(0, 2**31 - 1),
                kind,
                side,
                reason,
            )
            r = rng.random()
            slot = -1 if r < 0.1 else rng.randrange(max_sessions) if r < 0.2 else rng.choice(slots)
            routes[i] = (slot, self.pos())
        return events, routes


def _frames(data: bytes) -> list[Any]:
    out = FrameReader(DAEMON_DECODER, 1 << 24).feed(data)
    assert not [m for m in out if not isinstance(m, msgspec.Struct)], out[:3]
    return out


def _check_same(enc: ReportEncoder, ref: Reference) -> None:
    """Every open slot's pending bytes, the dirty order and exec_id agree."""
    assert enc.dirty() == list(ref.dirty)
    assert enc.exec_id == ref.exec_id
    for slot in ref.out:
        assert enc.pending(slot) == len(ref.out[slot])
        assert enc.last_seq(slot) == ref.seq[slot]


def _run(seed: int, *, valid: bool, rounds: int, batch: int) -> None:
    rng = random.Random(seed)
    max_sessions = 12
    symbols = [1, 2, 3, 70_000]
    enc = ReportEncoder(max_sessions)
    ref = Reference()
    stream = Stream(rng, symbols, valid)
    exec_start = rng.choice([1, 126, 254, 65534, 2**32 - 2]) if valid else rng.choice(EDGES[:11])
    enc.exec_id = ref.exec_id = exec_start
    taken: dict[int, bytearray] = {}  # everything a slot's session has been given

    def open_slot(slot: int) -> None:
        seq = rng.choice([0, 0, 0, 126, 127, 254, 65534, 2**32 - 2, 2**63 - 10_000])
        enc.open(slot, seq)
        ref.open(slot, seq)
        taken[slot] = bytearray()

    for slot in range(0, max_sessions, 2):
        open_slot(slot)
    for _ in range(rounds):
        slots = sorted(ref.seq)
        # Session-level work between batches, as the daemon does it.
        for _ in range(rng.randint(0, 6)):
            action = rng.random()
            free = [s for s in range(max_sessions) if s not in ref.seq]
            if action < 0.08 and free:
                open_slot(rng.choice(free))
            elif action < 0.14 and slots:
                slot = rng.choice(slots)
                data = enc.close(slot)
                assert data == ref.close(slot)
                taken[slot] += data
                if valid:
                    assert _frames(bytes(taken[slot])) == ref.sent[slot]
                slots.remove(slot)
            elif action < 0.5 and slots:
                slot = rng.choice(slots)
                symbol = rng.choice(symbols)
                if rng.random() < 0.7:
                    enc.subscribe(slot, symbol)
                    ref.subscribe(slot, symbol)
                else:
                    enc.unsubscribe(slot, symbol)
                    ref.unsubscribe(slot, symbol)
            elif action < 0.8 and slots:
                slot = rng.choice(slots)  # a message the daemon encodes itself
                seq = enc.next_seq(slot)
                assert seq == ref.next_seq(slot)
                msg = (
                    Done(seq, stream.nonneg())
                    if rng.random() < 0.5
                    else LogonAck(seq, 1, 2, 3, 4, 5)
                )
                enc.append(slot, frame(msg))
                ref.send(slot, msg)
            elif slots:
                slot = rng.choice(slots)
                data = enc.take(slot)
                assert data == ref.take(slot)
                taken[slot] += data
        n_cmds = rng.randint(1, 20)
        offset = rng.randint(0, 5)
        ref_seqs = np.array([stream.nonneg() for _ in range(offset + n_cmds)], dtype=np.int64)
        events, routes = stream.batch(rng.randint(0, batch), slots, n_cmds, max_sessions)
        n = rng.randint(0, len(events))  # events past n are ignored
        enc.encode(events, n, routes, ref_seqs, offset)
        ref.dispatch(events, n, routes, ref_seqs, offset)
        _check_same(enc, ref)
    for slot in enc.dirty():
        data = enc.take(slot)
        assert data == ref.take(slot), f"slot {slot}"
        taken[slot] += data
    assert enc.dirty() == []
    if valid:
        for slot in ref.seq:
            assert _frames(bytes(taken[slot])) == ref.sent[slot]


# =============================================================================
# Differential tests
# =============================================================================


@pytest.mark.parametrize("seed", range(3))
def test_matches_struct_path_over_random_streams(seed: int) -> None:
    """Any field values the event record can hold, including ones the decoder would refuse."""
    _run(seed, valid=False, rounds=100, batch=120)


@pytest.mark.parametrize("seed", range(3))
def test_matches_and_decodes_with_protocol_values(seed: int) -> None:
    """Within the protocol's ranges the frames also decode to the reference's messages."""
    _run(100 + seed, valid=True, rounds=100, batch=120)


def test_every_integer_class_in_every_field() -> None:
    """Each integer-class edge in all fields of every message kind at once."""
    enc = ReportEncoder(2)
    ref = Reference()
    for slot in (0, 1):
        enc.open(slot)
        ref.open(slot)
        enc.subscribe(slot, 5)
        ref.subscribe(slot, 5)
    rows = []
    for v in EDGES_NEAR:
        sym = _clip(v, I32_MIN, I32_MAX)
        for kind in (ACCEPTED, REJECTED, CANCELLED, REDUCED, REPLACED):
            rows.append((v, v, v, v, v, v, sym, 0, kind, _clip(v, 0, 255), _clip(v, 0, 65535)))
        for symbol in (sym, 5):  # market data needs a subscribed symbol
            other = v - 1 if v == I64_MAX else v + 1
            rows.append((v, v, v, v, other, v, symbol, 0, FILL, _clip(v, 0, 255), 0))  # taker
            rows.append((v, v, v, v, v, 0, symbol, 0, FILL, 2, 0))  # maker: a Trade follows
            rows.append((0, v, v, v, 0, 0, symbol, 0, LEVEL, 1, 0))
    events = np.array(rows, dtype=lltrade.EVENT_DTYPE)
    routes = np.array([(i % 2, v) for i, v in enumerate(events["order_id"])], dtype=np.int64)
    ref_seqs = np.array([I64_MIN], dtype=np.int64)
    for start in (0, 2**63 - 3):  # exec_id past 2**63 - 1 is written as uint64, like msgspec
        enc.exec_id = ref.exec_id = start
        enc.encode(events, len(events), routes, ref_seqs)
        ref.dispatch(events, len(events), routes, ref_seqs, 0)
        for slot in (0, 1):
            assert enc.take(slot) == ref.take(slot)
    assert enc.exec_id == ref.exec_id > I64_MAX


def test_reason_text_is_reason_name_for_every_code() -> None:
    enc = ReportEncoder(1)
    enc.open(0)
    codes = np.arange(65536)
    events = np.zeros(len(codes), dtype=lltrade.EVENT_DTYPE)
    events["kind"] = REJECTED
    events["reason"] = codes
    routes = np.zeros((len(codes), 2), dtype=np.int64)
    routes[:, 1] = 1
    enc.encode(events, len(events), routes, np.array([7], dtype=np.int64))
    messages = _frames(enc.take(0))
    assert [m.text for m in messages] == [reason_name(int(c)) for c in codes]
    assert [m.reason for m in messages] == codes.tolist()
    assert [m.seq for m in messages] == list(range(1, 65537))


@pytest.mark.parametrize(
    "names",
    [
        {},
        {3: "x" * 31, 4: "x" * 32, 5: "é" * 128, 6: "y" * 256, 7: "z" * 65535, 8: "w" * 65536},
        {0: "", 65535: "LAST", 200: "日本語"},
    ],
)
def test_custom_reason_names(names: dict[int, str]) -> None:
    """Texts of every str width (fixstr, str8, str16, str32) and the fallback for the rest."""
    enc = ReportEncoder(1, names)
    assert enc.max_message >= 36 + max(
        [len(msgspec.msgpack.encode(t)) for t in names.values()], default=0
    )
    enc.open(0)
    codes = [*range(12), 199, 200, 201, 65534, 65535]
    events = np.zeros(len(codes), dtype=lltrade.EVENT_DTYPE)
    events["kind"] = REJECTED
    events["reason"] = codes
    routes = np.ones((len(codes), 2), dtype=np.int64)
    routes[:, 0] = 0
    enc.encode(events, len(events), routes, np.array([9], dtype=np.int64))
    expected = bytearray()
    for seq, code in enumerate(codes, 1):
        text = names.get(code, f"REASON_{code}")
        encode_frame(OrderRejected(seq, 9, 1, code, text), expected)
    assert enc.take(0) == expected


def test_reason_names_are_checked() -> None:
    with pytest.raises(ValueError, match="reason codes"):
        ReportEncoder(1, {65536: "X"})
    with pytest.raises(ValueError, match="reason codes"):
        ReportEncoder(1, {-1: "X"})
    with pytest.raises(TypeError, match="must be a str"):
        ReportEncoder(1, {1: b"X"})  # type: ignore[dict-item]


# =============================================================================
# Sequence numbers, buffers, dirty slots, subscriptions
# =============================================================================


def _events(*rows: tuple[int, ...]) -> np.ndarray:
    return np.array(list(rows), dtype=lltrade.EVENT_DTYPE)


def _ev(kind: int, oid: int = 1, symbol: int = 1, side: int = 1, **kw: int) -> tuple[int, ...]:
    f = {"price": 100, "qty": 5, "remaining": 0, "maker": 0, "taker": 0, "cmd": 0, "reason": 0}
    f.update(kw)
    return (oid, f["price"], f["qty"], f["remaining"], f["maker"], f["taker"], symbol, f["cmd"],
            kind, side, f["reason"])  # fmt: skip


NO_REFS = np.zeros(0, dtype=np.int64)


def test_seq_runs_on_across_appended_frames_and_encoded_events() -> None:
    enc = ReportEncoder(4)
    enc.open(2)
    assert enc.last_seq(2) == 0
    enc.append(2, frame(LogonAck(enc.next_seq(2), 1, 1, 1000, 5000, 65536)))
    enc.subscribe(2, 1)
    events = _events(_ev(ACCEPTED, 10), _ev(LEVEL, 0), _ev(FILL, 10, taker=10, maker=11))
    routes = np.array([[2, 7], [-1, 0], [2, 7]], dtype=np.int64)
    enc.encode(events, 3, routes, NO_REFS)
    enc.append(2, frame(Done(enc.next_seq(2), 4)))
    enc.encode(events, 2, routes, NO_REFS)
    assert enc.last_seq(2) == 7
    messages = _frames(enc.take(2))
    assert [m.seq for m in messages] == list(range(1, 8))
    assert [type(m).__name__ for m in messages] == [
        "LogonAck", "OrderAccepted", "LevelUpdate", "Fill", "Done", "OrderAccepted", "LevelUpdate",
    ]  # fmt: skip
    assert messages[3].exec_id == 1


def test_open_with_a_seq_continues_from_it() -> None:
    enc = ReportEncoder(1)
    enc.open(0, seq=41)
    assert enc.next_seq(0) == 42
    enc.encode(_events(_ev(ACCEPTED)), 1, np.array([[0, 1]], dtype=np.int64), NO_REFS)
    assert _frames(enc.take(0))[0].seq == 43


def test_take_and_dirty() -> None:
    enc = ReportEncoder(8)
    for slot in (1, 3, 5):
        enc.open(slot)
    assert enc.dirty() == []
    enc.append(3, b"")  # nothing pending: not dirty
    assert enc.dirty() == []
    events = _events(_ev(ACCEPTED, 1), _ev(ACCEPTED, 2), _ev(ACCEPTED, 3), _ev(ACCEPTED, 4))
    enc.encode(events, 4, np.array([[5, 1], [1, 2], [5, 3], [-1, 4]], dtype=np.int64), NO_REFS)
    assert enc.dirty() == [5, 1]  # first-touched order, each once
    assert enc.dirty() == [5, 1]  # dirty() changes nothing
    first = enc.take(5)
    assert [m.order_id for m in _frames(first)] == [1, 3]
    assert enc.pending(5) == 0
    assert enc.take(5) == b""
    assert enc.dirty() == [1]
    enc.append(3, b"abc")
    enc.append(5, b"de")  # dirty again: now after the others
    assert enc.dirty() == [1, 3, 5]
    assert enc.close(3) == b"abc"  # close hands back what was pending
    assert enc.dirty() == [1, 5]
    assert enc.take(1) and enc.take(5) == b"de"
    assert enc.dirty() == []


def test_dirty_order_survives_many_take_cycles() -> None:
    """The dirty list drops taken slots lazily and compacts itself when full."""
    enc = ReportEncoder(3)
    for slot in range(3):
        enc.open(slot)
    order: list[int] = []
    rng = random.Random(5)
    for _ in range(500):
        slot = rng.randrange(3)
        if rng.random() < 0.5:
            enc.append(slot, b"x")
            if slot not in order:
                order.append(slot)
        else:
            enc.take(slot)
            if slot in order:
                order.remove(slot)
        if rng.random() < 0.1:
            assert enc.dirty() == order
    assert enc.dirty() == order


def test_buffers_grow_and_shrink_back() -> None:
    enc = ReportEncoder(2)
    enc.open(0)
    enc.open(1)
    n = 40_000  # > 1 MiB of Fills to slot 0
    events = np.zeros(n, dtype=lltrade.EVENT_DTYPE)
    events["kind"] = FILL
    events["order_id"] = events["taker_id"] = np.arange(1, n + 1) * 1_000_003
    events["price"] = -(2**40)
    events["qty"] = events["remaining"] = 2**33
    events["symbol"] = 9
    events["side"] = 1
    routes = np.zeros((n, 2), dtype=np.int64)
    routes[:, 1] = I64_MAX
    enc.append(0, b"\x00" * 5000)
    enc.encode(events, n, routes, NO_REFS)
    data = enc.take(0)
    assert len(data) > 1 << 20
    ref = Reference()
    ref.open(0)
    ref.append(0, b"\x00" * 5000)
    ref.dispatch(events, n, routes, NO_REFS, 0)
    assert data == ref.take(0)
    enc.append(0, b"y")  # still usable after shrinking
    assert enc.take(0) == b"y"
    enc.append(1, bytearray(300_000))
    enc.append(1, memoryview(b"z"))
    assert enc.take(1) == bytes(300_000) + b"z"


def test_closed_and_unrouted_slots_get_nothing_and_keep_their_seq() -> None:
    enc = ReportEncoder(4)
    for slot in (0, 1, 2):
        enc.open(slot)
    enc.subscribe(0, 1)
    enc.subscribe(1, 1)
    enc.subscribe(2, 1)
    assert enc.close(1) == b""
    assert enc.subscribers(1) == [0, 2]  # close drops its subscriptions
    assert not enc.is_open(1)
    assert enc.unsubscribe(0, 1)
    assert not enc.unsubscribe(0, 1)
    assert not enc.unsubscribe(0, 99)
    events = _events(
        _ev(ACCEPTED),
        _ev(REJECTED, cmd=5),  # to a closed slot: its ref_seqs entry is never needed
        _ev(FILL, 3, taker=3),
        _ev(FILL, 4, maker=4, side=2),
        _ev(LEVEL, 0, symbol=1),
        _ev(LEVEL, 0, symbol=2),
    )
    routes = np.array([[1, 1], [1, 1], [3, 1], [-1, 1], [-1, 0], [-1, 0]], dtype=np.int64)
    enc.encode(events, len(events), routes, NO_REFS)
    assert enc.exec_id == 1
    assert enc.dirty() == [2]  # only the remaining subscriber: a Trade and a LevelUpdate
    messages = _frames(enc.take(2))
    assert messages == [Trade(1, 1, 1, 100, 5, Side.BUY), LevelUpdate(2, 1, Side.BUY, 100, 5)]
    assert enc.last_seq(0) == 0
    enc.open(1, seq=3)  # a new session in the old slot: no subscriptions, its own seq
    assert enc.subscribers(1) == [2]
    assert enc.next_seq(1) == 4


def test_subscription_order_is_subscribe_order() -> None:
    enc = ReportEncoder(6)
    for slot in range(6):
        enc.open(slot)
    for slot in (4, 1, 5, 0):
        assert enc.subscribe(slot, 7)
    assert not enc.subscribe(1, 7)  # already subscribed: keeps its place
    assert enc.subscribers(7) == [4, 1, 5, 0]
    enc.unsubscribe(5, 7)
    enc.subscribe(5, 7)
    assert enc.subscribers(7) == [4, 1, 0, 5]
    assert enc.subscribers(8) == []
    enc.encode(_events(_ev(LEVEL, 0, symbol=7)), 1, np.full((1, 2), -1, np.int64), NO_REFS)
    assert enc.dirty() == [4, 1, 0, 5]
    for sym in range(100, 140):  # many symbols: the symbol table grows
        enc.subscribe(sym % 6, sym)
    assert enc.subscribers(139) == [139 % 6]


# =============================================================================
# Argument checks: a bad call writes nothing
# =============================================================================


def test_bad_arguments_change_nothing() -> None:
    enc = ReportEncoder(4)
    enc.open(0)
    good = _events(_ev(ACCEPTED), _ev(REJECTED, cmd=1))
    routes = np.array([[0, 1], [0, 1]], dtype=np.int64)
    refs = np.array([5, 6], dtype=np.int64)
    with pytest.raises(TypeError, match="EVENT_DTYPE"):
        enc.encode(np.zeros(2, dtype=lltrade.COMMAND_DTYPE), 2, routes, refs)
    with pytest.raises(ValueError, match="n must be"):
        enc.encode(good, 3, routes, refs)
    with pytest.raises(ValueError, match="n must be"):
        enc.encode(good, -1, routes, refs)
    with pytest.raises(TypeError, match="routes"):
        enc.encode(good, 2, routes.astype(np.int32), refs)
    with pytest.raises(ValueError, match="routes"):
        enc.encode(good, 2, routes[:1], refs)
    with pytest.raises(ValueError, match="routes"):
        enc.encode(good, 2, np.zeros((2, 3), dtype=np.int64), refs)
    with pytest.raises(TypeError, match="ref_seqs"):
        enc.encode(good, 2, routes, refs.astype(np.uint64))
    with pytest.raises(ValueError, match="ref_seqs"):
        enc.encode(good, 2, routes, np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="cmd_offset"):
        enc.encode(good, 2, routes, refs, -1)
    with pytest.raises(IndexError, match=r"event 1: .*ref_seqs\[2\]"):
        enc.encode(good, 2, routes, refs, 1)
    with pytest.raises(IndexError, match="event 1"):
        enc.encode(_events(_ev(ACCEPTED), _ev(REJECTED, cmd=-1)), 2, routes, refs)
    with pytest.raises(ValueError, match="event 1: route slot 4 >= max_sessions"):
        enc.encode(good, 2, np.array([[0, 1], [4, 1]], dtype=np.int64), refs)
    assert enc.pending(0) == 0 and enc.last_seq(0) == 0 and enc.dirty() == []
    enc.encode(good, 2, routes, refs)  # the same call with good arguments
    assert [m.ref_seq for m in _frames(enc.take(0)) if isinstance(m, OrderRejected)] == [6]
    enc.encode(good, 0, routes[:0], NO_REFS)  # nothing to do


def test_slot_calls_are_checked() -> None:
    enc = ReportEncoder(2)
    with pytest.raises(ValueError, match="max_sessions"):
        ReportEncoder(0)
    for call in (enc.next_seq, enc.take, enc.close, enc.pending, enc.last_seq):
        with pytest.raises(IndexError):
            call(2)
        with pytest.raises(IndexError):
            call(-1)
        with pytest.raises(ValueError, match="not open"):
            call(0)
    with pytest.raises(ValueError, match="not open"):
        enc.append(1, b"x")
    with pytest.raises(ValueError, match="not open"):
        enc.subscribe(1, 1)
    enc.open(1)
    with pytest.raises(ValueError, match="already open"):
        enc.open(1)
    with pytest.raises(OverflowError):
        enc.open(0, seq=-1)
    with pytest.raises(OverflowError):
        enc.subscribe(1, 2**31)
    enc.exec_id = I64_MAX
    assert enc.exec_id == I64_MAX
    with pytest.raises(OverflowError):
        enc.exec_id = -1


# =============================================================================
# The per-event path is plain C
# =============================================================================

HOT = [
    f"13ReportEncoder_{name}"
    for name in ["_encode", "_level", "_trade", "_ready", "_mark", "_unmark", "_compact",
                 "_w_reason_text", "_find_bad"]
] + ["_w_uint", "_w_int", "_be16", "_be32", "_be64", "_side_enum", "_w_fallback_name", "_begin",
     "_end", "_reserve", "_find", "_remove"]  # fmt: skip
PY_API = re.compile(
    r"\bPy(Object|Number|Long|Err|List|Tuple|Dict|Bytes)_\w+|\bPy_(X?INC|X?DEC)REF\b"
)


@pytest.mark.parametrize("name", HOT)
def test_no_python_api_in_the_event_path(name: str) -> None:
    assert HOT_C.exists(), f"{HOT_C} is missing: run `make build` first"
    source = HOT_C.read_text()
    head = re.compile(rf"^static [^;\n]*__pyx_f_7lltrade_8_reports_{name}\([^;]*$", re.M)
    match = head.search(source)
    assert match is not None, f"no C function {name} in _reports.c"
    body = re.sub(
        r"/\*.*?\*/", "", source[match.end() : source.index("\n}\n", match.end())], flags=re.S
    )
    assert not sorted(set(m.group(0) for m in PY_API.finditer(body)))


def test_reason_enum_names_are_the_default() -> None:
    enc = ReportEncoder(1)
    enc.open(0)
    codes = [int(r) for r in Reason]
    events = np.zeros(len(codes), dtype=lltrade.EVENT_DTYPE)
    events["kind"] = REJECTED
    events["reason"] = codes
    routes = np.ones((len(codes), 2), dtype=np.int64)
    routes[:, 0] = 0
    enc.encode(events, len(codes), routes, np.ones(1, np.int64))
    assert [m.text for m in FrameReader(DAEMON_DECODER, 1 << 20).feed(enc.take(0))] == [
        Reason(c).name for c in codes
    ]
