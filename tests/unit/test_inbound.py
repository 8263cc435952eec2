"""lltrade._inbound: the daemon's C read path agrees with msgspec and with OrderGate.admit."""

from __future__ import annotations

import random
import struct

import msgspec
import numpy as np
import pytest

import lltrade
from lltrade import STP, TIF, Op, Reason, Side
from lltrade._gate import OrderGate
from lltrade._inbound import END, FULL, REJECT, SLOW, admit_frames, decode_order
from lltrade.protocol import (
    CLIENT_DECODER,
    Cancel,
    Heartbeat,
    NewOrder,
    Reduce,
    Replace,
    encode_frame,
)

I64_MAX, I64_MIN, I32_MAX = 2**63 - 1, -(2**63), 2**31 - 1
OPS = {NewOrder: Op.ADD, Cancel: Op.CANCEL, Replace: Op.REPLACE, Reduce: Op.REDUCE}


def fields_of(msg: NewOrder | Cancel | Replace | Reduce) -> tuple[object, ...]:
    """What decode_order gives for ``msg`` (0 for fields the message has not)."""
    get = lambda name, default=0: getattr(msg, name, default)  # noqa: E731
    return (
        msg.seq,
        OPS[type(msg)],
        msg.cl_ord_id,
        get("symbol"),
        int(get("side")),
        get("price"),
        get("qty"),
        int(get("tif")),
        bool(get("post_only", False)),
        int(get("stp")),
    )


def _pick(rng: random.Random, lo: int, hi: int) -> int:
    edges = [lo, hi, 0, 1, -1, 127, 128, -32, -33, 255, 256, 2**15, 2**16, 2**31, 2**32]
    choice = rng.choice(edges) if rng.random() < 0.5 else rng.randint(lo, hi)
    return min(max(choice, lo), hi)


def random_order(rng: random.Random) -> NewOrder | Cancel | Replace | Reduce:
    seq, cl = _pick(rng, 0, I64_MAX), _pick(rng, 1, I64_MAX)
    kind = rng.randrange(4)
    if kind == 0:
        return NewOrder(
            seq,
            cl,
            _pick(rng, 1, I32_MAX),
            rng.choice(list(Side)),
            _pick(rng, I64_MIN, I64_MAX),
            _pick(rng, I64_MIN, I64_MAX),
            rng.choice(list(TIF)),
            rng.random() < 0.5,
            rng.choice(list(STP)),
        )
    if kind == 1:
        return Cancel(seq, cl)
    if kind == 2:
        return Replace(seq, cl, _pick(rng, I64_MIN, I64_MAX), _pick(rng, I64_MIN, I64_MAX))
    return Reduce(seq, cl, _pick(rng, I64_MIN, I64_MAX))


def test_valid_messages_decode_as_msgspec_reads_them() -> None:
    rng = random.Random(1)
    for _ in range(20_000):
        msg = random_order(rng)
        assert decode_order(msgspec.msgpack.encode(msg)) == fields_of(msg), msg


def _int_forms(v: int) -> list[bytes]:
    """Every MessagePack encoding of ``v`` msgspec accepts for an int field."""
    forms = []
    if 0 <= v <= 0x7F:
        forms.append(bytes([v]))
    if -32 <= v < 0:
        forms.append(struct.pack("b", v))
    for code, fmt, lo, hi in (
        (0xCC, ">B", 0, 2**8 - 1),
        (0xCD, ">H", 0, 2**16 - 1),
        (0xCE, ">I", 0, 2**32 - 1),
        (0xCF, ">Q", 0, 2**64 - 1),
        (0xD0, ">b", -(2**7), 2**7 - 1),
        (0xD1, ">h", -(2**15), 2**15 - 1),
        (0xD2, ">i", -(2**31), 2**31 - 1),
        (0xD3, ">q", -(2**63), 2**63 - 1),
    ):
        if lo <= v <= hi:
            forms.append(bytes([code]) + struct.pack(fmt, v))
    return forms


def test_every_int_format_and_array_header_is_read() -> None:
    for v in (0, 1, 5, 127, 128, 300, 70_000, 2**40, I64_MAX):
        for form in _int_forms(v):
            for header in (b"\x93", b"\xdc\x00\x03", b"\xdd\x00\x00\x00\x03"):
                body = header + b"\x05" + b"\x07" + form  # Cancel(seq=7, cl_ord_id=v)
                expected = msgspec.msgpack.decode(body, type=Cancel) if v else None
                got = decode_order(body)
                if v == 0:
                    assert got is None  # cl_ord_id 0 is out of range: msgspec's error
                    with pytest.raises(msgspec.ValidationError):
                        CLIENT_DECODER.decode(body)
                else:
                    assert expected is not None and got == fields_of(expected)
    for v in (-1, -32, -33, -200, -(2**40), I64_MIN):
        for form in _int_forms(v):
            body = b"\x94\x07\x01\x01" + form  # Reduce(seq=1, cl_ord_id=1, qty=v)
            assert decode_order(body) == fields_of(Reduce(1, 1, v))


def test_anything_it_takes_msgspec_reads_the_same() -> None:
    """Fuzzed bodies: whenever the C decoder takes one, msgspec decodes the same message."""
    rng = random.Random(2)
    taken = 0
    for _ in range(30_000):
        body = bytearray(msgspec.msgpack.encode(random_order(rng)))
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.5 and body:
                body[rng.randrange(len(body))] = rng.randrange(256)
            elif roll < 0.75 and body:
                del body[rng.randrange(len(body)) :]
            else:
                body.insert(rng.randrange(len(body) + 1), rng.randrange(256))
        got = decode_order(bytes(body))
        if got is None:
            continue
        taken += 1
        msg = CLIENT_DECODER.decode(bytes(body))
        assert isinstance(msg, NewOrder | Cancel | Replace | Reduce)
        assert got == fields_of(msg)
    assert taken > 1_000  # the fuzzing left many bodies valid


def test_other_messages_and_odd_bodies_are_left_to_msgspec() -> None:
    for body in (
        msgspec.msgpack.encode(Heartbeat(3)),
        b"",
        b"\xc0",
        b"\x93\x05\x01",  # cut short
        b"\x93\x05\x01\x01\x00",  # a trailing byte
        b"\x94\x05\x01\x01\x01",  # Cancel with 4 fields
        b"\x93\x05\x01\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # float cl_ord_id
        b"\x93\x05\x01\xcf\x80\x00\x00\x00\x00\x00\x00\x00",  # cl_ord_id above int64
    ):
        assert decode_order(body) is None, body
    order = NewOrder(1, 1, 1, Side.BUY, 100, 1, TIF.GTC, False, STP.NONE)
    raw = msgspec.msgpack.encode(order)
    assert decode_order(raw.replace(b"\xc2", b"\x00")) is None  # post_only as an int


# -- admit_frames against a gate ------------------------------------------------------


def _gate() -> OrderGate:
    gate = OrderGate(4)
    gate.add_symbol(
        1,
        tick=1,
        lot=1,
        reference_price=1_000,
        collar_ticks=100,
        max_order_qty=None,
        max_notional=None,
    )
    gate.add_account(
        7, max_open_orders=100, max_position=10**9, msg_rate_per_s=10**6, msg_burst=10**6
    )
    gate.open_session(0, 7)
    return gate


def _frames(*messages: object) -> bytearray:
    buf = bytearray()
    for m in messages:
        encode_frame(m, buf)
    return buf


def _run(gate: OrderGate, buf: bytearray, start: int = 0, last_seq: int = 0, cap: int = 16):
    commands = np.zeros(cap, dtype=lltrade.COMMAND_DTYPE)
    refs = np.zeros(cap, dtype=np.int64)
    result = admit_frames(gate, 0, buf, start, len(buf), 1 << 16, last_seq, 0, commands, 0, refs)
    return result, commands, refs


def test_admits_orders_until_the_end_writing_what_admit_writes() -> None:
    orders = [NewOrder(i, i, 1, Side.BUY, 990 + i, 3, TIF.GTC, False, STP.NONE) for i in (1, 2)]
    buf = _frames(*orders, Cancel(3, 1))
    (status, start, seq, n, _, _), commands, refs = _run(_gate(), buf)
    assert (status, start, seq, n) == (END, len(buf), 3, 3)
    assert list(refs[:3]) == [1, 2, 3]
    # The same messages through OrderGate.admit give the same rows.
    gate, expected = _gate(), np.zeros(3, dtype=lltrade.COMMAND_DTYPE)
    for i, m in enumerate([*orders, Cancel(3, 1)]):
        assert gate.admit(0, m, 0, expected, i) == 0
    assert commands[:3].tobytes() == expected.tobytes()


def test_stops_at_a_partial_frame_a_slow_frame_a_gap_and_a_full_batch() -> None:
    order = NewOrder(1, 1, 1, Side.BUY, 1_000, 1, TIF.GTC, False, STP.NONE)
    whole = _frames(order)
    (status, start, seq, n, _, _), _, _ = _run(_gate(), whole + whole[:5])
    assert (status, start, seq, n) == (END, len(whole), 1, 1)  # the partial frame waits
    buf = _frames(order, Heartbeat(2), Cancel(3, 1))
    (status, start, seq, n, _, _), _, _ = _run(_gate(), buf)
    assert (status, start, seq, n) == (SLOW, len(whole), 1, 1)  # Heartbeat: Python's
    (status, start, seq, n, _, _), _, _ = _run(_gate(), _frames(order), last_seq=5)
    assert (status, start, seq, n) == (SLOW, 0, 5, 0)  # not the next seq: Python's error
    second = NewOrder(2, 2, 1, Side.BUY, 1_000, 1, TIF.GTC, False, STP.NONE)
    (status, start, seq, n, _, _), _, _ = _run(_gate(), _frames(order, second), cap=1)
    assert (status, start, seq, n) == (FULL, len(whole), 1, 1)
    big = bytearray(struct.pack("<I", 1 << 20)) + bytes(8)
    (status, start, _, _, _, _), _, _ = _run(_gate(), big)
    assert (status, start) == (SLOW, 0)  # too large: Python's fatal error


def test_a_gate_reject_consumes_the_frame_and_says_why() -> None:
    buf = _frames(Cancel(1, 99), Cancel(2, 98))
    (status, start, seq, n, reason, cl), _, _ = _run(_gate(), buf)
    assert (status, seq, n, reason, cl) == (REJECT, 1, 0, Reason.UNKNOWN_ORDER, 99)
    assert start == len(_frames(Cancel(1, 99)))


def test_argument_errors() -> None:
    gate, buf = _gate(), _frames(Cancel(1, 1))
    refs = np.zeros(4, dtype=np.int64)
    commands = np.zeros(4, dtype=lltrade.COMMAND_DTYPE)
    with pytest.raises(TypeError, match="COMMAND_DTYPE"):
        admit_frames(gate, 0, buf, 0, len(buf), 100, 0, 0, refs, 0, refs)
    with pytest.raises(TypeError, match="int64"):
        admit_frames(gate, 0, buf, 0, len(buf), 100, 0, 0, commands, 0, refs.astype(np.int32))
    with pytest.raises(ValueError, match="out of range"):
        admit_frames(gate, 0, buf, 0, len(buf) + 1, 100, 0, 0, commands, 0, refs)
    with pytest.raises(ValueError, match="slot"):
        admit_frames(gate, 9, buf, 0, len(buf), 100, 0, 0, commands, 0, refs)
