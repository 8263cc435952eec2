"""Trading over real loopback sockets: fills, market data, rejects, safety."""

from __future__ import annotations

import asyncio
import random
import socket

import msgspec
import pytest

from lltrade import TIF, Reason, Side
from lltrade.config import AccountLimits, SymbolLimits
from lltrade.protocol import (
    ENCODER,
    BookSnapshot,
    Cancel,
    Cancelled,
    Done,
    Fill,
    Halt,
    KillSwitch,
    LevelUpdate,
    MassCancel,
    NewOrder,
    OrderAccepted,
    OrderRejected,
    Reduce,
    Reduced,
    Reject,
    Replace,
    Replaced,
    SessionReason,
    Subscribe,
    SymbolInfo,
    Trade,
)

from harness import LOOPS, RawClient, frame_header, make_config, run_on, start_daemon

pytestmark = pytest.mark.parametrize("loop_kind", LOOPS)  # every test on both loops

DEMO = 1
ACME = 2  # tick 5, lot 10


def order(
    c: RawClient,
    cl: int,
    side: int,
    price: int,
    qty: int,
    *,
    symbol: int = DEMO,
    tif: int = TIF.GTC,
    post_only: bool = False,
    stp: int = 0,
) -> NewOrder:
    return NewOrder(c.next_seq(), cl, symbol, side, price, qty, tif, post_only, stp)


def test_two_sessions_trade_and_market_data_follows_the_book(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        alice, bob, watcher = (
            await h.client("alice"),
            await h.client("bob"),
            await h.client("admin"),
        )
        watcher.send(Subscribe(watcher.next_seq(), (DEMO,)))
        snap = await watcher.expect(BookSnapshot)
        assert (snap.bids, snap.asks) == ((), ())
        await watcher.expect(Done)

        alice.send(order(alice, 1, Side.BUY, 10_000, 5), order(alice, 2, Side.BUY, 9_990, 5))
        await alice.expect(OrderAccepted, lambda m: m.cl_ord_id == 2)
        bob.send(order(bob, 1, Side.SELL, 9_990, 7))
        taker = [await bob.expect(Fill) for _ in range(2)]
        makers = [await alice.expect(Fill) for _ in range(2)]
        assert [(f.price, f.qty, f.leaves_qty, f.maker) for f in taker] == [
            (10_000, 5, 2, False),
            (9_990, 2, 0, False),
        ]
        assert [(f.cl_ord_id, f.price, f.qty, f.leaves_qty, f.maker) for f in makers] == [
            (1, 10_000, 5, 0, True),
            (2, 9_990, 2, 3, True),
        ]
        assert [f.exec_id for f in taker] == [f.exec_id for f in makers]
        trades = [await watcher.expect(Trade) for _ in range(2)]
        assert [(t.price, t.qty, t.aggressor, t.exec_id) for t in trades] == [
            (10_000, 5, Side.SELL, taker[0].exec_id),
            (9_990, 2, Side.SELL, taker[1].exec_id),
        ]
        # The watcher's copy of the book, rebuilt from snapshot + updates.
        await asyncio.sleep(0.05)
        book: dict[tuple[int, int], int] = {}
        for m in await watcher.drain():
            if isinstance(m, LevelUpdate):
                book[(m.side, m.price)] = m.qty
        live = {k: v for k, v in book.items() if v}
        bids, asks = h.daemon.engine.book(DEMO).depth(100)
        assert live == {(Side.BUY, p): q for p, q, _ in bids} | {
            (Side.SELL, p): q for p, q, _ in asks
        }
        assert live == {(Side.BUY, 9_990): 3}
        await h.close()

    run_on(loop_kind, scenario)


def test_change_orders_and_executions_reach_only_their_owner(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        alice, bob = await h.client("alice"), await h.client("bob")
        alice.send(order(alice, 1, Side.BUY, 10_000, 10))
        await alice.expect(OrderAccepted)
        alice.send(Reduce(alice.next_seq(), 1, 6))
        assert (await alice.expect(Reduced)).leaves_qty == 6
        alice.send(Replace(alice.next_seq(), 1, 10_010, 6))
        assert (await alice.expect(Replaced)).price == 10_010
        # bob cannot touch alice's order: cl_ord_id 1 means nothing in his session
        bob.send(Cancel(bob.next_seq(), 1))
        assert (await bob.expect(OrderRejected)).reason == Reason.UNKNOWN_ORDER
        alice.send(Cancel(alice.next_seq(), 1))
        cancelled = await alice.expect(Cancelled)
        assert (cancelled.cancelled_qty, cancelled.reason) == (6, Reason.USER_CANCEL)
        assert len(h.daemon.engine.book(DEMO)) == 0
        assert not [m for m in await bob.drain() if isinstance(m, Fill | Cancelled)]
        await h.close()

    run_on(loop_kind, scenario)


def _risk_config(**symbol_limits: int) -> msgspec.Struct:
    cfg = make_config()
    demo, *rest = cfg.symbols
    demo = msgspec.structs.replace(
        demo, max_orders=3, limits=msgspec.structs.replace(SymbolLimits(), **symbol_limits)
    )
    accounts = []
    for a in cfg.accounts:
        if a.name == "bob":
            a = msgspec.structs.replace(
                a, limits=AccountLimits(max_open_orders=2, max_position=8, max_notional=10**9)
            )
        accounts.append(a)
    return msgspec.structs.replace(cfg, symbols=(demo, *rest), accounts=tuple(accounts))


def test_every_reject_reason_is_reachable(loop_kind: str) -> None:
    async def scenario() -> None:
        cfg = _risk_config(price_collar=2_000, max_order_qty=1_000)
        h = await start_daemon(cfg)
        alice, bob, admin = await h.client("alice"), await h.client("bob"), await h.client("admin")

        async def rejected(c: RawClient, msg: object) -> int:
            c.send(msg)
            got = await c.expect(OrderRejected | Reject)
            return int(got.reason)

        a = alice
        assert (
            await rejected(a, order(a, 1, Side.BUY, 10_000, 1, symbol=99)) == Reason.UNKNOWN_SYMBOL
        )
        assert await rejected(a, order(a, 1, Side.BUY, 12_001, 1)) == Reason.PRICE_COLLAR
        assert await rejected(a, order(a, 1, Side.BUY, 10_000, 1_001)) == Reason.MAX_ORDER_QTY
        assert (
            await rejected(a, order(a, 1, Side.BUY, 25_001, 10, symbol=ACME))
            == Reason.PRICE_OFF_TICK
        )
        assert (
            await rejected(a, order(a, 1, Side.BUY, 25_000, 7, symbol=ACME)) == Reason.INVALID_QTY
        )
        assert (
            await rejected(a, order(a, 1, Side.BUY, 10_000, 1, tif=TIF.IOC, post_only=True))
            == Reason.INVALID_FLAGS
        )
        assert await rejected(a, Cancel(a.next_seq(), 42)) == Reason.UNKNOWN_ORDER
        a.send(order(a, 1, Side.SELL, 10_000, 1))
        await a.expect(OrderAccepted)
        assert await rejected(a, order(a, 1, Side.SELL, 10_000, 1)) == Reason.DUPLICATE_ORDER_ID
        assert (
            await rejected(a, order(a, 2, Side.BUY, 10_000, 1, post_only=True))
            == Reason.POST_ONLY_WOULD_CROSS
        )
        a.send(order(a, 2, Side.SELL, 10_001, 1), order(a, 3, Side.SELL, 10_002, 1))
        await a.expect(OrderAccepted, lambda m: m.cl_ord_id == 3)
        assert await rejected(a, order(a, 4, Side.SELL, 10_003, 1)) == Reason.POOL_EXHAUSTED
        assert await rejected(a, Reduce(a.next_seq(), 1, 5)) == Reason.INVALID_QTY
        # bob: max 2 open orders, |position| <= 8, notional <= 1e9
        b = bob
        assert (
            await rejected(b, order(b, 1, Side.BUY, 600_000, 2_000, symbol=3))
            == Reason.MAX_NOTIONAL
        )
        assert await rejected(b, order(b, 1, Side.BUY, 10_000, 9)) == Reason.MAX_POSITION
        b.send(
            order(b, 1, Side.BUY, 590_000, 1, symbol=3), order(b, 2, Side.BUY, 590_001, 1, symbol=3)
        )
        await b.expect(OrderAccepted, lambda m: m.cl_ord_id == 2)
        assert (
            await rejected(b, order(b, 3, Side.BUY, 590_002, 1, symbol=3)) == Reason.MAX_OPEN_ORDERS
        )
        # admin powers
        assert await rejected(a, Halt(a.next_seq(), DEMO, True)) == Reason.NOT_AUTHORISED
        assert await rejected(a, MassCancel(a.next_seq(), 0, 2)) == Reason.NOT_AUTHORISED
        admin.send(Halt(admin.next_seq(), ACME, True))
        await admin.expect(Done)
        assert (await a.expect(SymbolInfo, lambda m: m.symbol == ACME)).halted
        assert (
            await rejected(a, order(a, 5, Side.BUY, 25_000, 10, symbol=ACME))
            == Reason.SYMBOL_HALTED
        )
        admin.send(KillSwitch(admin.next_seq(), 1, True))
        await admin.expect(Done)
        kills = [await a.expect(Cancelled) for _ in range(3)]
        assert {k.reason for k in kills} == {Reason.KILL_SWITCH}
        assert await rejected(a, order(a, 6, Side.BUY, 9_000, 1)) == Reason.KILL_SWITCH_ACTIVE
        admin.send(KillSwitch(admin.next_seq(), 1, False))
        await admin.expect(Done)
        a.send(order(a, 6, Side.BUY, 9_000, 1))
        await a.expect(OrderAccepted, lambda m: m.cl_ord_id == 6)
        await h.close()

    run_on(loop_kind, scenario)


def test_self_trade_prevention_ioc_and_fok_cancels(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        alice, bob = await h.client("alice"), await h.client("bob")
        alice.send(order(alice, 1, Side.SELL, 10_000, 5))
        await alice.expect(OrderAccepted)
        alice.send(order(alice, 2, Side.BUY, 10_000, 5, stp=2))  # CANCEL_INCOMING
        assert (
            await alice.expect(Cancelled, lambda m: m.cl_ord_id == 2)
        ).reason == Reason.SELF_TRADE
        bob.send(order(bob, 1, Side.BUY, 10_000, 8, tif=TIF.IOC))
        assert (await bob.expect(Cancelled)).reason == Reason.IOC_REMAINDER
        bob.send(order(bob, 2, Side.BUY, 10_000, 8, tif=TIF.FOK))
        assert (await bob.expect(Cancelled)).reason == Reason.FOK_UNFILLED
        await h.close()

    run_on(loop_kind, scenario)


def test_rate_limit(loop_kind: str) -> None:
    async def scenario() -> None:
        cfg = make_config()
        accounts = tuple(
            msgspec.structs.replace(a, limits=AccountLimits(msg_rate_per_s=5))
            if a.name == "alice"
            else a
            for a in cfg.accounts
        )
        h = await start_daemon(msgspec.structs.replace(cfg, accounts=accounts))
        alice = await h.client("alice")
        alice.send(*[order(alice, i, Side.BUY, 9_000 + i, 1) for i in range(1, 11)])
        await asyncio.sleep(0.1)
        got = await alice.drain()
        accepted = [m for m in got if isinstance(m, OrderAccepted)]
        limited = [m for m in got if isinstance(m, Reject)]
        assert len(accepted) == 5 and len(limited) == 5
        assert {r.reason for r in limited} == {SessionReason.RATE_LIMITED}
        assert len(h.daemon.engine.book(DEMO)) == 5
        await h.close()

    run_on(loop_kind, scenario)


def test_cancel_on_disconnect(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        alice, bob = await h.client("alice"), await h.client("bob")
        bob.send(Subscribe(bob.next_seq(), (DEMO,)))
        await bob.expect(Done)
        alice.send(order(alice, 1, Side.BUY, 10_000, 3), order(alice, 2, Side.SELL, 10_050, 4))
        await alice.expect(OrderAccepted, lambda m: m.cl_ord_id == 2)
        await alice.close()  # a dropped connection, no Logout
        await bob.expect(LevelUpdate, lambda m: m.price == 10_050 and m.qty == 0)
        assert len(h.daemon.engine.book(DEMO)) == 0
        await h.close()

    run_on(loop_kind, scenario)


def test_slow_consumer_is_cut_off_while_others_trade(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon(make_config(max_outbound_bytes=64 * 1024))
        alice, bob = await h.client("alice"), await h.client("bob")
        # A deep book makes every snapshot large.
        for chunk in range(10):
            alice.send(
                *[
                    order(alice, chunk * 200 + i + 1, Side.BUY, 8_000 + chunk * 200 + i, 1)
                    for i in range(200)
                ]
            )
            await alice.expect(OrderAccepted, lambda m, c=chunk: m.cl_ord_id == c * 200 + 200)
        await alice.drain()
        # The slow one: a tiny receive buffer, asks for snapshot after snapshot, never reads.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, h.daemon.address)
        reader, writer = await asyncio.open_connection(sock=sock)
        slow = RawClient(reader, writer)
        h.clients.append(slow)
        await slow.logon("admin")
        slow.send(*[Subscribe(slow.next_seq(), (DEMO,)) for _ in range(400)])
        for _ in range(200):
            if h.daemon.stats["slow_consumers"]:
                break
            await asyncio.sleep(0.02)
        assert h.daemon.stats["slow_consumers"] == 1
        # the others never noticed
        bob.send(order(bob, 1, Side.SELL, 9_999, 1))
        assert (await bob.expect(Fill)).price == 9_999
        await h.close()

    run_on(loop_kind, scenario)


def test_random_frames_never_crash_the_daemon_or_change_books(loop_kind: str) -> None:
    async def scenario() -> None:
        h = await start_daemon()
        alice = await h.client("alice")
        alice.send(order(alice, 1, Side.BUY, 10_000, 3))
        await alice.expect(OrderAccepted)
        hashes = {s: h.daemon.engine.book(s).state_hash() for s in (1, 2, 3)}
        rng = random.Random(7)
        for round_ in range(40):
            c = await h.client("bob" if round_ % 2 else None)
            chunks = []
            for _ in range(rng.randrange(1, 20)):
                kind = rng.random()
                if kind < 0.4:  # random bytes
                    chunks.append(rng.randbytes(rng.randrange(1, 64)))
                elif kind < 0.8:  # a well-framed body of random MessagePack
                    body = ENCODER.encode(
                        [rng.choice([4, 5, 6, 7, 8, 99, "x", None]), rng.randrange(-3, 5)]
                        + [rng.choice([0, -1, 2**63 - 1, 1.5, "s", [], True]) for _ in range(8)]
                    )
                    chunks.append(frame_header(len(body)) + body)
                else:  # a length prefix that lies
                    chunks.append(frame_header(rng.randrange(0, 1 << 31)) + b"\x00" * 8)
            for chunk in chunks:
                c.send_raw(chunk)
            await c.drain(0.02)
            await c.close()
        await asyncio.sleep(0.05)
        # Only bob's garbage reached a logged-on session; none of it was a valid order.
        assert {s: h.daemon.engine.book(s).state_hash() for s in (1, 2, 3)} == hashes
        alice.send(Cancel(alice.next_seq(), 1))  # the daemon still serves
        assert (await alice.expect(Cancelled)).cancelled_qty == 3
        await h.close()

    run_on(loop_kind, scenario)
