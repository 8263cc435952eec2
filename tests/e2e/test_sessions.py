"""Sessions over real loopback sockets: logon, sequence numbers, bad input, timeouts."""

from __future__ import annotations

import asyncio
import struct

import msgspec
import pytest

from lltrade.protocol import (
    ENCODER,
    PROTOCOL_VERSION,
    Disconnect,
    Heartbeat,
    Logon,
    LogonReject,
    NewOrder,
    OrderAccepted,
    Reject,
    SessionReason,
)

from harness import LOOPS, RawClient, frame_header, make_config, run_on, start_daemon

pytestmark = pytest.mark.parametrize("loop_kind", LOOPS)  # every test on both loops


def _order(
    c: RawClient, cl_ord_id: int, side: int = 1, price: int = 10_000, qty: int = 1
) -> NewOrder:
    return NewOrder(c.next_seq(), cl_ord_id, 1, side, price, qty, 0, False, 0)


def test_logon_and_order(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        alice = await h.client("alice")
        assert alice.ack is not None and alice.ack.account_id == 1
        assert {s.name for s in alice.symbols.values()} == {"DEMO", "ACME", "BTC-USD"}
        alice.send(_order(alice, 7))
        ack = await alice.expect(OrderAccepted)
        assert (ack.cl_ord_id, ack.symbol, ack.price, ack.qty) == (7, 1, 10_000, 1)
        assert h.daemon.engine.book(1).best_bid() == (10_000, 1)
        await h.close()

    run_on(loop_kind, scenario)


def test_bad_credentials_unknown_account_and_version(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        for account, secret, version, reason in [
            ("alice", "wrong", PROTOCOL_VERSION, SessionReason.BAD_CREDENTIALS),
            ("mallory", "x", PROTOCOL_VERSION, SessionReason.BAD_CREDENTIALS),
            ("alice", "alice-demo-secret", 99, SessionReason.UNSUPPORTED_VERSION),
        ]:
            c = await h.client()
            c.send(Logon(c.next_seq(), version, account, secret))
            got = await c.wait_closed()
            assert [type(m) for m in got] == [LogonReject], got
            assert got[0].reason == reason
        assert h.daemon.stats["logon_failures"] == 3
        await h.close()

    run_on(loop_kind, scenario)


def test_order_before_logon_disconnects(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        c = await h.client()
        c.send(Heartbeat(c.next_seq()), _order(c, 1))
        got = await c.wait_closed()
        assert [type(m) for m in got] == [Disconnect]
        assert got[0].reason == SessionReason.NOT_LOGGED_ON
        assert len(h.daemon.engine.book(1)) == 0
        await h.close()

    run_on(loop_kind, scenario)


def test_sequence_gap_disconnects(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        c = await h.client("alice")
        c.seq += 5
        c.send(_order(c, 1))
        got = await c.wait_closed()
        assert got[-1].reason == SessionReason.SEQUENCE_GAP
        assert "expected seq 2" in got[-1].text
        assert len(h.daemon.engine.book(1)) == 0
        await h.close()

    run_on(loop_kind, scenario)


def test_malformed_and_unknown_frames_are_rejected_and_counted(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        c = await h.client("alice")
        before = h.daemon.engine.book(1).state_hash()
        garbage = b"\xc1\xc1\xc1"  # never valid MessagePack
        wrong_types = ENCODER.encode([4, 2, "x", 1, 1, 10_000, 1, 0, False, 0])
        unknown_tag = ENCODER.encode([13, 3])
        for body in (garbage, wrong_types, unknown_tag):
            c.send_raw(frame_header(len(body)) + body)
        c.seq += 3
        c.send(_order(c, 1))  # the stream is still in step
        rejects = [await c.expect(Reject) for _ in range(3)]
        assert [r.reason for r in rejects] == [
            SessionReason.MALFORMED,
            SessionReason.MALFORMED,
            SessionReason.UNKNOWN_MESSAGE,
        ]
        assert [r.ref_seq for r in rejects] == [2, 3, 4]
        await c.expect(OrderAccepted, lambda m: m.cl_ord_id == 1)
        assert h.daemon.stats["malformed"] == 3
        assert h.daemon.engine.book(1).state_hash() != before  # only the valid order landed
        await h.close()

    run_on(loop_kind, scenario)


def test_frame_too_large_disconnects(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon(make_config(max_frame=1024))
        c = await h.client("alice")
        c.send_raw(struct.pack("<I", 1_000_000) + b"\x00" * 16)
        got = await c.wait_closed()
        assert got[-1].reason == SessionReason.FRAME_TOO_LARGE
        await h.close()

    run_on(loop_kind, scenario)


def test_frames_split_across_reads_and_many_per_read(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        c = await h.client("alice")
        buf = bytearray()
        for i in range(1, 201):
            body = msgspec.msgpack.encode(_order(c, i, price=9_000 + i))
            buf += frame_header(len(body)) + body
        for start in range(0, len(buf), 7):  # cut everywhere, odd sizes
            c.send_raw(bytes(buf[start : start + 7]))
            if start % 700 == 0:
                await asyncio.sleep(0)
        acks = [await c.expect(OrderAccepted) for _ in range(200)]
        assert [a.cl_ord_id for a in acks] == list(range(1, 201))
        assert len(h.daemon.engine.book(1)) == 200
        await h.close()

    run_on(loop_kind, scenario)


def test_idle_session_times_out_and_quiet_one_gets_heartbeats(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon(make_config(heartbeat_ms=100, idle_timeout_ms=400))
        c = await h.client("alice")
        await c.expect(Heartbeat)  # the daemon heartbeats a quiet session
        got = await c.wait_closed()  # and cuts it off when the client says nothing
        assert got[-1].reason == SessionReason.IDLE_TIMEOUT
        await h.close()

    run_on(loop_kind, scenario)
