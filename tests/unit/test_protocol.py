"""The wire protocol: messages, framing, the frame reader, and docs/protocol.md.

Run this file as a script (``python tests/unit/test_protocol.py``) to print
the message tables that docs/protocol.md must contain verbatim.
"""

from __future__ import annotations

import re
import struct
import typing
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lltrade import STP, TIF, Reason, Side
from lltrade import protocol as p
from lltrade.protocol import (
    CLIENT_DECODER,
    DAEMON_DECODER,
    ENCODER,
    FrameError,
    FrameReader,
    SessionReason,
    encode_frame,
    frame,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)

# -- one example of every message, with extreme values where a field allows them ----------

CLIENT_EXAMPLES: list[Any] = [
    p.Heartbeat(1),
    p.Logon(1, p.PROTOCOL_VERSION, "alice", "alice-demo-secret"),
    p.Logout(I64_MAX),
    p.NewOrder(2, I64_MAX, 2**31 - 1, Side.SELL, I64_MIN, I64_MAX, TIF.FOK, True, STP.CANCEL_BOTH),
    p.NewOrder(3, 1, 1, Side.BUY, 10025, 10, TIF.GTC, False, STP.NONE),
    p.Cancel(4, 7),
    p.Replace(5, 7, -5, 30),
    p.Reduce(6, 7, 1),
    p.MassCancel(7, 0, 0),
    p.MassCancel(8, 3, 42),
    p.Subscribe(9, (1, 2, 3)),
    p.Subscribe(10, ()),
    p.Unsubscribe(11, (2,)),
    p.Halt(12, 1, True),
    p.KillSwitch(13, 0, False),
]

DAEMON_EXAMPLES: list[Any] = [
    p.Heartbeat(1),
    p.LogonAck(1, 1, 99, 1000, 5000, 65536),
    p.LogonReject(1, SessionReason.BAD_CREDENTIALS, "bad credentials"),
    p.SymbolInfo(2, 1, "DEMO", 1, 1, 1, 10_000_000, 10_000, 2, 0, False),
    p.Disconnect(3, SessionReason.SHUTDOWN, "daemon stopping"),
    p.Reject(4, 17, SessionReason.MALFORMED, "Expected `int`, got `str` - at `$[3]`"),
    p.Done(5, 18),
    p.OrderAccepted(6, 7, 1001, 1, Side.BUY, 10025, 10),
    p.OrderRejected(7, 19, 8, Reason.PRICE_COLLAR, ""),
    p.Fill(8, 7, 1001, 1, Side.BUY, 55, 10020, 4, 6, True),
    p.Cancelled(9, 7, 1001, 1, Side.BUY, 10025, 6, Reason.USER_CANCEL),
    p.Replaced(10, 7, 1001, 1, Side.BUY, 10030, 6),
    p.Reduced(11, 7, 1001, 1, Side.BUY, 10030, 2, 4),
    p.BookSnapshot(12, 1, ((10030, 4), (10020, 7)), ((10040, 1),)),
    p.BookSnapshot(13, 2, (), ()),
    p.LevelUpdate(14, 1, Side.SELL, 10040, 0),
    p.Trade(15, 1, 55, 10020, 4, Side.SELL),
]


def _union_members(union: Any) -> list[type]:
    return list(typing.get_args(union))


CLIENT_TYPES = _union_members(p.ClientMessage)
DAEMON_TYPES = _union_members(p.DaemonMessage)


def _tag(cls: type) -> int:
    tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
    assert isinstance(tag, int)
    return tag


def test_examples_cover_every_message() -> None:
    assert {type(m) for m in CLIENT_EXAMPLES} == set(CLIENT_TYPES)
    assert {type(m) for m in DAEMON_EXAMPLES} == set(DAEMON_TYPES)


def test_tags_unique_per_direction_and_fit_one_byte() -> None:
    for types in (CLIENT_TYPES, DAEMON_TYPES):
        tags = [_tag(t) for t in types]
        assert len(tags) == len(set(tags))
        assert all(1 <= t <= 0x7F for t in tags)  # a positive fixint: one byte


def test_every_message_is_array_like_frozen_untracked_with_seq_first() -> None:
    for cls in {*CLIENT_TYPES, *DAEMON_TYPES}:
        config = cls.__struct_config__  # type: ignore[attr-defined]
        assert config.array_like and config.frozen and not config.gc, cls
        assert config.forbid_unknown_fields, cls
        assert cls.__struct_fields__[0] == "seq", cls  # type: ignore[attr-defined]
        assert all(f.default is msgspec.NODEFAULT for f in msgspec.structs.fields(cls)), cls


@pytest.mark.parametrize(
    ("examples", "decoder"),
    [(CLIENT_EXAMPLES, CLIENT_DECODER), (DAEMON_EXAMPLES, DAEMON_DECODER)],
    ids=["client", "daemon"],
)
def test_round_trip(examples: list[Any], decoder: msgspec.msgpack.Decoder[Any]) -> None:
    for msg in examples:
        body = ENCODER.encode(msg)
        back = decoder.decode(body)
        assert back == msg and type(back) is type(msg)
        # The documented layout: [tag, seq, field, ...] in declaration order.
        raw = msgspec.msgpack.decode(body)
        assert raw[0] == _tag(type(msg))
        assert raw[1:] == [_plain(getattr(msg, f)) for f in msg.__struct_fields__]
        # And through a frame.
        reader = FrameReader(decoder, max_frame=p.DEFAULT_MAX_DAEMON_FRAME)
        assert reader.feed(frame(msg)) == [msg]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def test_enum_fields_decode_as_enums() -> None:
    msg = CLIENT_DECODER.decode(ENCODER.encode(CLIENT_EXAMPLES[3]))
    assert isinstance(msg, p.NewOrder)
    assert msg.side is Side.SELL and msg.tif is TIF.FOK and msg.stp is STP.CANCEL_BOTH


def test_encode_frame_appends_length_prefixed_frames() -> None:
    buf = bytearray(b"xx")
    encode_frame(CLIENT_EXAMPLES[4], buf)
    encode_frame(CLIENT_EXAMPLES[5], buf)
    body1 = ENCODER.encode(CLIENT_EXAMPLES[4])
    body2 = ENCODER.encode(CLIENT_EXAMPLES[5])
    assert bytes(buf) == (
        b"xx" + struct.pack("<I", len(body1)) + body1 + struct.pack("<I", len(body2)) + body2
    )


def test_wire_bytes_of_a_new_order_are_as_documented() -> None:
    # The worked example in docs/protocol.md, byte for byte.
    msg = p.NewOrder(3, 1, 1, Side.BUY, 10025, 10, TIF.GTC, False, STP.NONE)
    assert frame(msg).hex(" ") == "0d 00 00 00 9a 04 03 01 01 01 cd 27 29 0a 00 c2 00"


# -- FrameReader: framing ------------------------------------------------------------------------

STREAM_MSGS = CLIENT_EXAMPLES * 3
STREAM = b"".join(frame(m) for m in STREAM_MSGS)


def test_many_frames_in_one_chunk() -> None:
    reader = FrameReader(CLIENT_DECODER)
    assert reader.feed(STREAM) == STREAM_MSGS
    assert reader.pending == 0


def test_frame_split_at_every_offset() -> None:
    first = frame(CLIENT_EXAMPLES[3])
    data = first + frame(CLIENT_EXAMPLES[10]) + frame(CLIENT_EXAMPLES[1])
    expected = [CLIENT_EXAMPLES[3], CLIENT_EXAMPLES[10], CLIENT_EXAMPLES[1]]
    for cut in range(len(data) + 1):
        reader = FrameReader(CLIENT_DECODER)
        out = reader.feed(data[:cut])
        assert out == expected[: len(out)]
        reader.feed(data[cut:], out)
        assert out == expected, cut
        assert reader.pending == 0


def test_byte_by_byte_and_two_cuts() -> None:
    reader = FrameReader(CLIENT_DECODER)
    out: list[Any] = []
    for i in range(len(STREAM)):
        reader.feed(STREAM[i : i + 1], out)
    assert out == STREAM_MSGS
    data = STREAM[:200]
    whole = FrameReader(CLIENT_DECODER).feed(data)
    for a in range(0, len(data), 7):
        for b in range(a, len(data), 11):
            reader = FrameReader(CLIENT_DECODER)
            out = []
            for part in (data[:a], data[a:b], data[b:]):
                reader.feed(memoryview(part), out)
            assert out == whole


def test_small_buffer_grows_for_a_large_frame() -> None:
    big = p.Subscribe(1, tuple(range(1, 5000)))
    data = frame(big) + frame(p.Heartbeat(2))
    reader = FrameReader(CLIENT_DECODER, buffer_size=16)
    out: list[Any] = []
    for i in range(0, len(data), 1000):
        reader.feed(data[i : i + 1000], out)
    assert out == [big, p.Heartbeat(2)]


def test_buffered_protocol_face() -> None:
    reader = FrameReader(CLIENT_DECODER, buffer_size=64)
    out: list[Any] = []
    pos = 0
    while pos < len(STREAM):
        buf = reader.get_buffer(-1)
        n = min(len(buf), 37, len(STREAM) - pos)
        buf[:n] = STREAM[pos : pos + n]
        reader.buffer_updated(n, out)
        pos += n
    assert out == STREAM_MSGS


def test_empty_feed_and_header_only() -> None:
    reader = FrameReader(CLIENT_DECODER)
    assert reader.feed(b"") == []
    assert reader.feed(b"\x05\x00") == []
    assert reader.pending == 2


# -- FrameReader: errors ----------------------------------------------------------------


def _raw_frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


def test_oversize_length_is_fatal_and_stops_the_reader() -> None:
    reader = FrameReader(CLIENT_DECODER, max_frame=100)
    good = frame(p.Heartbeat(1))
    out = reader.feed(good + struct.pack("<I", 101) + b"\x00" * 101 + good)
    assert out[0] == p.Heartbeat(1)
    assert len(out) == 2
    err = out[1]
    assert isinstance(err, FrameError)
    assert err.fatal and err.reason is SessionReason.FRAME_TOO_LARGE
    assert reader.failed
    assert reader.feed(good) == []  # nothing more after a fatal error
    buf = reader.get_buffer(-1)
    buf[: len(good)] = good
    assert reader.buffer_updated(len(good), []) == []


def test_max_length_frame_is_accepted() -> None:
    msg = p.Logon(1, 1, "a" * 10, "s" * 200)
    body = ENCODER.encode(msg)
    assert FrameReader(CLIENT_DECODER, max_frame=len(body)).feed(frame(msg)) == [msg]
    err = FrameReader(CLIENT_DECODER, max_frame=len(body) - 1).feed(frame(msg))[0]
    assert isinstance(err, FrameError) and err.fatal


def test_oversize_length_split_across_feeds() -> None:
    reader = FrameReader(CLIENT_DECODER, max_frame=10)
    assert reader.feed(b"\xff\xff") == []
    out = reader.feed(b"\xff\xff")
    assert len(out) == 1 and isinstance(out[0], FrameError) and out[0].fatal


GARBAGE_BODIES = [
    b"",  # empty body
    b"\xc1",  # never used byte
    b"\x91",  # truncated array
    b"\xa3abc",  # a string, not an array
    b"\x90",  # empty array
    b"\x92\x01",  # truncated
    ENCODER.encode(p.Heartbeat(1)) + b"\x00",  # trailing bytes
    b"\xdd\xff\xff\xff\xff\x01",  # huge array count
    b"\x93\x09\x01\xdd\xff\xff\xff\xff",  # Subscribe with a huge array count
    b"\xc4\x03abc",  # bin
]


@pytest.mark.parametrize("body", GARBAGE_BODIES, ids=lambda b: b.hex() or "empty")
def test_garbage_body_is_a_recoverable_malformed(body: bytes) -> None:
    reader = FrameReader(CLIENT_DECODER)
    out = reader.feed(_raw_frame(body) + frame(p.Heartbeat(2)))
    assert len(out) == 2
    err = out[0]
    assert isinstance(err, FrameError)
    assert err.reason is SessionReason.MALFORMED and not err.fatal and err.text
    assert out[1] == p.Heartbeat(2)  # still in sync
    assert not reader.failed


@pytest.mark.parametrize(
    "raw",
    [
        [99, 1],
        [40, 1, 7, 1001, 1, 1, 10025, 10],  # OrderAccepted: a daemon message
        [0, 1],
        [-1, 1],
        [2**40, 1],
        [I64_MAX + 1, 1],
    ],
)
def test_unknown_tag(raw: list[int]) -> None:
    out = FrameReader(CLIENT_DECODER).feed(_raw_frame(msgspec.msgpack.encode(raw)))
    err = out[0]
    assert isinstance(err, FrameError)
    assert err.reason is SessionReason.UNKNOWN_MESSAGE and not err.fatal
    assert err.tag == raw[0]


def test_unknown_tag_in_long_arrays() -> None:
    for n in (20, 70_000):
        body = msgspec.msgpack.encode([99] + [0] * (n - 1))
        err = FrameReader(CLIENT_DECODER, max_frame=1 << 20).feed(_raw_frame(body))[0]
        assert isinstance(err, FrameError) and err.reason is SessionReason.UNKNOWN_MESSAGE


NEW_ORDER = [4, 2, 7, 1, 1, 10025, 10, 0, False, 0]


def _with(index: int, value: Any) -> list[Any]:
    raw = list(NEW_ORDER)
    raw[index] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (_with(3, "1"), "$[3]"),  # symbol as a string
        (_with(4, 3), "$[4]"),  # side out of range
        (_with(4, 0), "$[4]"),
        (_with(5, 1.5), "$[5]"),  # float price
        (_with(5, I64_MAX + 1), "$[5]"),  # price beyond int64
        (_with(6, 2**64 - 1), "$[6]"),
        (_with(2, 0), "$[2]"),  # cl_ord_id must be >= 1
        (_with(1, -1), "$[1]"),  # seq must be >= 0
        (_with(7, 3), "$[7]"),  # tif
        (_with(8, 1), "$[8]"),  # post_only must be a bool
        (_with(9, 4), "$[9]"),  # stp
        (_with(3, 0), "$[3]"),  # symbol 0
        (_with(3, 2**31), "$[3]"),
        (NEW_ORDER[:-1], ""),  # a field short
        ([*NEW_ORDER, 0], ""),  # a field too many
        ([2, 1, 1, "alice", "x" * 257], "$[4]"),  # secret too long
        ([9, 1, [1, "2"]], "$[2][1]"),  # Subscribe with a string symbol
    ],
)
def test_wrong_types_and_ranges_are_malformed(raw: list[Any], where: str) -> None:
    reader = FrameReader(CLIENT_DECODER)
    out = reader.feed(_raw_frame(msgspec.msgpack.encode(raw)) + frame(p.Heartbeat(3)))
    err = out[0]
    assert isinstance(err, FrameError)
    assert err.reason is SessionReason.MALFORMED and not err.fatal
    assert err.tag == raw[0]
    assert where in err.text
    assert out[1] == p.Heartbeat(3)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([frame(m) for m in CLIENT_EXAMPLES]),
            st.builds(
                lambda body: _raw_frame(body),
                st.binary(max_size=40),
            ),
            st.builds(
                lambda raw: _raw_frame(msgspec.msgpack.encode(raw)),
                st.lists(
                    st.one_of(
                        st.integers(-(2**63), 2**64 - 1),
                        st.booleans(),
                        st.text(max_size=5),
                        st.lists(st.integers(0, 2**32), max_size=3),
                    ),
                    max_size=12,
                ),
            ),
        ),
        max_size=20,
    ),
    max_frame=st.sampled_from([0, 16, 64, 1 << 16]),
)
def test_random_bytes_never_raise(chunks: list[bytes], max_frame: int) -> None:
    reader = FrameReader(CLIENT_DECODER, max_frame=max_frame, buffer_size=32)
    out: list[Any] = []
    for chunk in chunks:
        reader.feed(chunk, out)
    assert all(isinstance(x, (FrameError, *CLIENT_TYPES)) for x in out)
    fatal = [i for i, x in enumerate(out) if isinstance(x, FrameError) and x.fatal]
    assert fatal in ([], [len(out) - 1])  # at most one fatal error, and it is last
    # The same bytes in one piece give the same results.
    again = FrameReader(CLIENT_DECODER, max_frame=max_frame).feed(b"".join(chunks))
    assert again == out


def test_reader_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_frame"):
        FrameReader(CLIENT_DECODER, max_frame=2**32)
    with pytest.raises(ValueError, match="buffer_size"):
        FrameReader(CLIENT_DECODER, buffer_size=3)


# -- reasons --------------------------------------------------------------------------------


def test_reason_numbers_do_not_collide() -> None:
    engine = {int(r) for r in Reason}
    session = {int(r) for r in SessionReason}
    assert not engine & session
    assert all(0 <= r <= 59 for r in engine) and all(60 <= r <= 79 for r in session)
    risk = [r for r in Reason if 40 <= r <= 59]
    assert [r.name for r in risk] == [
        "PRICE_COLLAR",
        "MAX_ORDER_QTY",
        "MAX_NOTIONAL",
        "MAX_OPEN_ORDERS",
        "MAX_POSITION",
        "SYMBOL_HALTED",
        "KILL_SWITCH_ACTIVE",
        "NOT_AUTHORISED",
        "UNAVAILABLE",
    ]


def test_reason_name() -> None:
    assert p.reason_name(0) == "NONE"
    assert p.reason_name(41) == "MAX_ORDER_QTY"
    assert p.reason_name(62) == "MALFORMED"
    assert p.reason_name(999) == "REASON_999"


# -- docs/protocol.md ------------------------------------------------------------------------

_POWERS = {I64_MAX: "2^63-1", I64_MIN: "-2^63", 2**31 - 1: "2^31-1", 2**32 - 1: "2^32-1"}


def _num(v: float) -> str:
    return _POWERS.get(int(v), str(v))


def _describe(hint: Any) -> tuple[str, str]:
    """(type column, meaning column) of one field's annotation."""
    metas: list[msgspec.Meta] = []
    while typing.get_origin(hint) is typing.Annotated:
        args = typing.get_args(hint)
        hint = args[0]
        metas += [m for m in args[1:] if isinstance(m, msgspec.Meta)]
    # The field's own description (outermost, so last) first, then the alias's.
    meaning = "; ".join(m.description for m in reversed(metas) if m.description)
    ge = next((m.ge for m in metas if m.ge is not None), None)
    le = next((m.le for m in metas if m.le is not None), None)
    max_length = next((m.max_length for m in metas if m.max_length is not None), None)
    if hint is bool:
        return "bool", meaning
    if isinstance(hint, type) and issubclass(hint, IntEnum):
        values = [int(v) for v in hint]
        return f"int {min(values)}..{max(values)}", meaning
    if hint is int:
        assert ge is not None and le is not None, "every wire int has a range"
        if le == I64_MAX:
            return ("int64" if ge == I64_MIN else f"int64 >= {ge}"), meaning
        return f"int {_num(ge)}..{_num(le)}", meaning
    if hint is str:
        return ("str" if max_length is None else f"str, <= {max_length} chars"), meaning
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            inner, _ = _describe(args[0])
            return f"array of {inner}", meaning
        return "[" + ", ".join(_describe(a)[0] for a in args) + "]", meaning
    raise AssertionError(f"no doc rendering for {hint!r}")


def message_table(cls: type) -> str:
    hints = typing.get_type_hints(cls, include_extras=True)
    lines = [
        f"#### `{cls.__name__}` (tag {_tag(cls)})",
        "",
        "| # | field | type | meaning |",
        "|---|---|---|---|",
        f"| 0 | tag | int | {_tag(cls)} |",
    ]
    for i, name in enumerate(cls.__struct_fields__, start=1):  # type: ignore[attr-defined]
        kind, meaning = _describe(hints[name])
        lines.append(f"| {i} | `{name}` | {kind} | {meaning} |")
    return "\n".join(lines) + "\n"


def tag_table() -> str:
    lines = ["| tag | message | sent by |", "|---|---|---|"]
    both = set(CLIENT_TYPES) & set(DAEMON_TYPES)
    for cls in sorted({*CLIENT_TYPES, *DAEMON_TYPES}, key=_tag):
        who = "both" if cls in both else "client" if cls in CLIENT_TYPES else "daemon"
        lines.append(f"| {_tag(cls)} | `{cls.__name__}` | {who} |")
    return "\n".join(lines) + "\n"


def generated_tables() -> list[str]:
    types = sorted({*CLIENT_TYPES, *DAEMON_TYPES}, key=_tag)
    return [tag_table(), *(message_table(cls) for cls in types)]


def test_doc_contains_every_generated_table() -> None:
    text = DOC.read_text()
    for table in generated_tables():
        assert table in text, (
            "docs/protocol.md is out of date with src/lltrade/protocol.py; "
            "run `python tests/unit/test_protocol.py` and paste this table:\n\n" + table
        )


def test_doc_lists_every_reason_and_nothing_else() -> None:
    text = DOC.read_text()
    rows = {int(n): name for n, name in re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", text, re.M)}
    expected = {int(r): r.name for r in [*Reason, *SessionReason]}
    assert rows == expected


def test_doc_constants() -> None:
    text = DOC.read_text()
    assert f"`PROTOCOL_VERSION` = {p.PROTOCOL_VERSION}" in text
    assert f"{p.DEFAULT_MAX_CLIENT_FRAME} bytes" in text
    assert f"{p.DEFAULT_MAX_DAEMON_FRAME} bytes" in text


if __name__ == "__main__":
    print("\n".join(generated_tables()))
