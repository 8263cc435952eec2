"""lltrade.client and the CLI's client commands, against a fake daemon.

The fake daemon below is an asyncio server on 127.0.0.1 (port 0) that
speaks docs/protocol.md through lltrade.protocol: logon with LogonAck and
SymbolInfo, order entry against a little book of outside liquidity (fills,
IOC remainders, level updates, trades), cancel/replace/reduce, mass cancel,
subscriptions with snapshots, logout with cancel-on-disconnect.  It is not
the real daemon: it checks the client's side of the protocol.

Every async test runs on asyncio's default loop and on uvloop.  The CLI runs
``main()`` in a worker thread (it starts its own event loop) while the fake
daemon serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lltrade import STP, TIF, Reason, Side
from lltrade.cli import main
from lltrade.client import (
    Client,
    ClientClosedError,
    ClientError,
    ClientTimeoutError,
    ConnectError,
    ConversionError,
    DisconnectedError,
    LogonError,
    RejectedError,
    UnknownSymbolError,
    describe_reason,
    from_qty,
    from_ticks,
    to_qty,
    to_ticks,
)
from lltrade.config import verify_secret
from lltrade.protocol import (
    CLIENT_DECODER,
    BookSnapshot,
    Cancel,
    Cancelled,
    Disconnect,
    Done,
    Fill,
    FrameReader,
    Heartbeat,
    LevelUpdate,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
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
    Unsubscribe,
    encode_frame,
)

SYMBOLS = (
    SymbolInfo(0, 1, "DEMO", 1, 1, 1, 10_000_000, 10_000, 2, 0, False),
    SymbolInfo(0, 2, "ACME", 5, 10, 5, 1_000_000, 25_000, 2, 0, False),
    SymbolInfo(0, 3, "BTC-USD", 1, 1, 1, 100_000_000, 600_000, 1, 4, False),
)
DEMO, ACME, BTC = SYMBOLS
ACCOUNTS = {"alice": (1, "alice-demo-secret"), "bob": (2, "bob-demo-secret")}
MAX_ORDER_QTY = 1_000
TIMEOUT = 5.0  # per test: every test finishes far sooner


# -- loops ----------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh loop of the parametrized kind, bounded."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(TIMEOUT):
                return await coro

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(bounded())

    return runner


@pytest.fixture(autouse=True)
def _no_credentials_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLTRADE_ACCOUNT", raising=False)
    monkeypatch.delenv("LLTRADE_SECRET", raising=False)


# -- the fake daemon ---------------------------------------------------------------------------


class FakeSession:
    """One connection to the fake daemon."""

    def __init__(self, daemon: FakeDaemon, writer: asyncio.StreamWriter) -> None:
        self.daemon = daemon
        self.writer = writer
        self.received: list[Any] = []
        self.received_at: list[float] = []
        self.seq = 0
        self.expected = 1
        self.account: str | None = None
        self.account_id = 0
        self.orders: dict[int, list[int]] = {}  # cl_ord_id -> [order_id, symbol, side, price, open]
        self.subscribed: set[int] = set()
        self.closed = False

    def send(self, *msgs: Any) -> None:
        buf = bytearray()
        for msg in msgs:
            self.seq += 1
            encode_frame(msgspec.structs.replace(msg, seq=self.seq), buf)
        if not self.closed:
            self.writer.write(bytes(buf))

    def send_raw(self, body: bytes) -> None:
        self.writer.write(struct.pack("<I", len(body)) + body)

    def close(self) -> None:
        self.closed = True
        self.writer.close()

    def disconnect(self, reason: int, text: str = "") -> None:
        self.send(Disconnect(0, reason, text))
        self.close()

    def handle(self, msg: Any) -> None:
        self.received.append(msg)
        self.received_at.append(asyncio.get_running_loop().time())
        if msg.seq != self.expected:
            self.disconnect(SessionReason.SEQUENCE_GAP, f"expected {self.expected}, got {msg.seq}")
            return
        self.expected += 1
        d = self.daemon
        if isinstance(msg, Heartbeat):
            return
        if isinstance(msg, Logon):
            if d.mute_logon:
                return
            account = ACCOUNTS.get(msg.account)
            if account is None or account[1] != msg.secret:
                self.send(
                    LogonReject(0, SessionReason.BAD_CREDENTIALS, "unknown account or bad secret")
                )
                self.close()
                return
            self.account, self.account_id = msg.account, account[0]
            self.send(
                LogonAck(0, account[0], len(d.sessions), d.heartbeat_ms, d.idle_timeout_ms, 65536)
            )
            self.send(*SYMBOLS)
            return
        if self.account is None:
            self.disconnect(SessionReason.NOT_LOGGED_ON)
            return
        if isinstance(msg, Logout):
            for cl, (oid, sym, side, price, open_qty) in list(self.orders.items()):
                self.send(
                    Cancelled(0, cl, oid, sym, Side(side), price, open_qty, Reason.DISCONNECT)
                )
                d.change_level(sym, side, price, -open_qty)
            self.orders.clear()
            self.disconnect(SessionReason.LOGOUT)
            return
        if d.hold:
            return
        handler = getattr(d, "on_" + type(msg).__name__)
        handler(self, msg)


class FakeDaemon:
    """A scripted stand-in for the daemon; see the module docstring."""

    def __init__(self, *, heartbeat_ms: int = 1_000, idle_timeout_ms: int = 60_000) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.sessions: list[FakeSession] = []
        self.hold = False  # record requests, answer none (but Logon, Logout, Heartbeat)
        self.mute_logon = False  # never answer a Logon
        # Outside liquidity: symbol -> price -> qty.
        self.bids: dict[int, dict[int, int]] = {1: {10_000: 7}, 2: {}, 3: {}}
        self.asks: dict[int, dict[int, int]] = {1: {10_020: 4, 10_030: 5}, 2: {}, 3: {}}
        self.next_order_id = 100
        self.next_exec_id = 500
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeDaemon:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for s in self.sessions:
            if not s.closed:
                s.close()
        await asyncio.sleep(0)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = FakeSession(self, writer)
        self.sessions.append(session)
        frames = FrameReader(CLIENT_DECODER)
        try:
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for msg in frames.feed(data):
                    assert not isinstance(msg, Exception), msg
                    session.handle(msg)
                    if session.closed:
                        break
        except ConnectionError:
            pass
        finally:
            session.closed = True
            writer.close()

    # -- helpers for the tests ------------------------------------------------------------

    @property
    def session(self) -> FakeSession:
        return self.sessions[-1]

    async def wait_for(self, cond: Callable[[], bool]) -> None:
        while not cond():
            await asyncio.sleep(0.005)

    def broadcast(self, symbol: int, *msgs: Any) -> None:
        for s in self.sessions:
            if symbol in s.subscribed and not s.closed:
                s.send(*msgs)

    def change_level(self, symbol: int, side: int, price: int, delta: int) -> None:
        levels = (self.bids if side == Side.BUY else self.asks)[symbol]
        qty = levels.get(price, 0) + delta
        if qty:
            levels[price] = qty
        else:
            levels.pop(price, None)
        self.broadcast(symbol, LevelUpdate(0, symbol, Side(side), price, qty))

    def fill_resting(self, session: FakeSession, cl_ord_id: int, qty: int) -> None:
        """An outside order takes ``qty`` from a resting order of ``session``."""
        order = session.orders[cl_ord_id]
        oid, sym, side, price, open_qty = order
        self.next_exec_id += 1
        order[4] = leaves = open_qty - qty
        if not leaves:
            del session.orders[cl_ord_id]
        session.send(
            Fill(0, cl_ord_id, oid, sym, Side(side), self.next_exec_id, price, qty, leaves, True)
        )
        aggressor = Side.SELL if side == Side.BUY else Side.BUY
        self.broadcast(sym, Trade(0, sym, self.next_exec_id, price, qty, aggressor))
        self.change_level(sym, side, price, -qty)

    # -- requests ---------------------------------------------------------------------------

    def on_NewOrder(self, s: FakeSession, m: NewOrder) -> None:
        info = next((i for i in SYMBOLS if i.symbol == m.symbol), None)
        reason = 0
        if info is None:
            reason = Reason.UNKNOWN_SYMBOL
        elif m.qty > MAX_ORDER_QTY:
            reason = Reason.MAX_ORDER_QTY
        elif m.price % info.tick:
            reason = Reason.PRICE_OFF_TICK
        elif m.qty <= 0 or m.qty % info.lot:
            reason = Reason.INVALID_QTY
        elif m.cl_ord_id in s.orders:
            reason = Reason.DUPLICATE_ORDER_ID
        if reason:
            text = f"qty {m.qty} > {MAX_ORDER_QTY}" if reason == Reason.MAX_ORDER_QTY else ""
            s.send(OrderRejected(0, m.seq, m.cl_ord_id, reason, text))
            return
        self.next_order_id += 1
        oid = self.next_order_id
        s.send(OrderAccepted(0, m.cl_ord_id, oid, m.symbol, m.side, m.price, m.qty))
        buy = m.side == Side.BUY
        other = (self.asks if buy else self.bids)[m.symbol]
        open_qty = m.qty
        changed = []
        for price in sorted(other, reverse=not buy):
            if open_qty == 0 or (price > m.price if buy else price < m.price):
                break
            take = min(open_qty, other[price])
            open_qty -= take
            self.next_exec_id += 1
            s.send(
                Fill(
                    0,
                    m.cl_ord_id,
                    oid,
                    m.symbol,
                    m.side,
                    self.next_exec_id,
                    price,
                    take,
                    open_qty,
                    False,
                )
            )
            self.broadcast(m.symbol, Trade(0, m.symbol, self.next_exec_id, price, take, m.side))
            changed.append((price, take))
        for price, take in changed:
            self.change_level(m.symbol, Side.SELL if buy else Side.BUY, price, -take)
        if open_qty and m.tif != TIF.GTC:
            s.send(
                Cancelled(
                    0, m.cl_ord_id, oid, m.symbol, m.side, m.price, open_qty, Reason.IOC_REMAINDER
                )
            )
        elif open_qty:
            s.orders[m.cl_ord_id] = [oid, m.symbol, m.side, m.price, open_qty]
            self.change_level(m.symbol, m.side, m.price, open_qty)

    def _unknown(self, s: FakeSession, seq: int, cl_ord_id: int) -> None:
        s.send(OrderRejected(0, seq, cl_ord_id, Reason.UNKNOWN_ORDER, "not resting"))

    def on_Cancel(self, s: FakeSession, m: Cancel) -> None:
        order = s.orders.pop(m.cl_ord_id, None)
        if order is None:
            self._unknown(s, m.seq, m.cl_ord_id)
            return
        oid, sym, side, price, open_qty = order
        s.send(Cancelled(0, m.cl_ord_id, oid, sym, Side(side), price, open_qty, Reason.USER_CANCEL))
        self.change_level(sym, side, price, -open_qty)

    def on_Replace(self, s: FakeSession, m: Replace) -> None:
        order = s.orders.get(m.cl_ord_id)
        if order is None:
            self._unknown(s, m.seq, m.cl_ord_id)
            return
        oid, sym, side, price, open_qty = order
        order[3], order[4] = m.price, m.qty
        s.send(Replaced(0, m.cl_ord_id, oid, sym, Side(side), m.price, m.qty))
        self.change_level(sym, side, price, -open_qty)
        self.change_level(sym, side, m.price, m.qty)

    def on_Reduce(self, s: FakeSession, m: Reduce) -> None:
        order = s.orders.get(m.cl_ord_id)
        if order is None:
            self._unknown(s, m.seq, m.cl_ord_id)
            return
        oid, sym, side, price, open_qty = order
        if not 0 < m.qty < open_qty:
            s.send(OrderRejected(0, m.seq, m.cl_ord_id, Reason.INVALID_QTY, ""))
            return
        order[4] = m.qty
        s.send(Reduced(0, m.cl_ord_id, oid, sym, Side(side), price, open_qty - m.qty, m.qty))
        self.change_level(sym, side, price, m.qty - open_qty)

    def on_MassCancel(self, s: FakeSession, m: MassCancel) -> None:
        if m.account not in (0, s.account_id):
            s.send(Reject(0, m.seq, Reason.NOT_AUTHORISED, "admin only"))
            return
        for cl, (oid, sym, side, price, open_qty) in list(s.orders.items()):
            if m.symbol in (0, sym):
                del s.orders[cl]
                s.send(Cancelled(0, cl, oid, sym, Side(side), price, open_qty, Reason.MASS_CANCEL))
                self.change_level(sym, side, price, -open_qty)
        s.send(Done(0, m.seq))

    def on_Subscribe(self, s: FakeSession, m: Subscribe) -> None:
        if any(sym not in self.bids for sym in m.symbols):
            s.send(Reject(0, m.seq, Reason.UNKNOWN_SYMBOL, "unknown symbol"))
            return
        for sym in m.symbols:
            bids = tuple(sorted(self.bids[sym].items(), reverse=True))
            asks = tuple(sorted(self.asks[sym].items()))
            s.send(BookSnapshot(0, sym, bids, asks))
            s.subscribed.add(sym)
        s.send(Done(0, m.seq))

    def on_Unsubscribe(self, s: FakeSession, m: Unsubscribe) -> None:
        s.subscribed.difference_update(m.symbols)
        s.send(Done(0, m.seq))


def received(session: FakeSession, kind: type) -> list[Any]:
    return [m for m in session.received if isinstance(m, kind)]


async def connect(daemon: FakeDaemon, account: str = "alice", **kwargs: Any) -> Client:
    return await Client.connect("127.0.0.1", daemon.port, account, ACCOUNTS[account][1], **kwargs)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- logon ------------------------------------------------------------------------------------


def test_logon_gives_session_and_symbols(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon(heartbeat_ms=700, idle_timeout_ms=9_000) as d:
            async with Client.connect("127.0.0.1", d.port, "alice", "alice-demo-secret") as c:
                assert (c.account_id, c.heartbeat_ms, c.idle_timeout_ms) == (1, 700, 9_000)
                assert c.symbols.names() == ["DEMO", "ACME", "BTC-USD"]
                assert c.symbols["ACME"] is c.symbols[2]
                assert c.symbols[c.symbols["DEMO"]].tick == 1
                assert "BTC-USD" in c.symbols and "FOO" not in c.symbols and len(c.symbols) == 3
                with pytest.raises(UnknownSymbolError, match=r"'FOO' \(known: DEMO, ACME"):
                    c.symbols["FOO"]
                # Logon is seq 1; the barrier after it (an empty Subscribe) is seq 2.
                logon, barrier = d.session.received[:2]
                assert isinstance(logon, Logon) and (logon.seq, logon.version) == (1, 1)
                assert barrier == Subscribe(2, ())
            assert d.session.received[-1] == Logout(3)

    run(body())


def test_logon_refused(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            with pytest.raises(LogonError) as info:
                await Client.connect("127.0.0.1", d.port, "alice", "wrong")
            assert info.value.reason == SessionReason.BAD_CREDENTIALS
            assert info.value.reason_name == "BAD_CREDENTIALS"
            assert (
                str(info.value) == "logon refused: BAD_CREDENTIALS: unknown account or bad secret"
            )

    run(body())


def test_logon_timeout_and_refused_connection(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            d.mute_logon = True
            with pytest.raises(ClientTimeoutError, match=r"no logon answer .* within 0\.2 s"):
                await connect(d, timeout=0.2)
        port = free_port()
        with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{port}") as info:
            await Client.connect("127.0.0.1", port, "alice", "x")
        assert isinstance(info.value.cause, ConnectionRefusedError)

    run(body())


# -- orders ----------------------------------------------------------------------------------


def test_order_futures_resolve_with_acks_and_fills(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            # GTC buy below the ask: rests.
            ack = await c.new_order("DEMO", Side.BUY, 10_010, 3)
            assert isinstance(ack, OrderAccepted)
            assert (ack.cl_ord_id, ack.order_id, ack.price, ack.qty) == (1, 101, 10_010, 3)
            assert c.live_orders == {1}
            # IOC buy through two ask levels: 4 @ 100.20, 5 @ 100.30, 1 cancelled.
            ack2 = await c.new_order(DEMO.symbol, Side.BUY, 10_030, 10, tif=TIF.IOC)
            assert ack2.cl_ord_id == 2
            await c.sync()
            reports = c.executions().drain()
            assert [type(r) for r in reports] == [Fill, Fill, Cancelled]
            f1, f2, rest = reports
            assert (f1.price, f1.qty, f1.leaves_qty, f1.maker) == (10_020, 4, 6, False)
            assert (f2.price, f2.qty, f2.leaves_qty) == (10_030, 5, 1)
            assert (rest.cancelled_qty, rest.reason) == (1, Reason.IOC_REMAINDER)
            assert c.live_orders == {1}  # the IOC order is done; its id is free again
            # replace, reduce, a fill of the resting order, cancel.
            replaced = await c.replace(1, 10_005, 8)
            assert (replaced.price, replaced.qty) == (10_005, 8)
            reduced = await c.reduce(1, 6)
            assert (reduced.removed_qty, reduced.leaves_qty) == (2, 6)
            d.fill_resting(d.session, 1, 2)
            fill = await anext(c.executions())
            assert (fill.cl_ord_id, fill.qty, fill.leaves_qty, fill.maker) == (1, 2, 4, True)
            cancelled = await c.cancel(1)
            assert (cancelled.cancelled_qty, cancelled.reason) == (4, Reason.USER_CANCEL)
            assert await anext(c.executions()) == cancelled  # also an execution report
            assert c.live_orders == frozenset()
            # The next automatic cl_ord_id skips none in use and counts on.
            ack3 = await c.new_order(
                "DEMO", Side.SELL, 10_100, 1, post_only=True, stp=STP.CANCEL_BOTH
            )
            assert ack3.cl_ord_id == 3
            sent = received(d.session, NewOrder)[-1]
            assert (sent.side, sent.post_only, sent.stp, sent.tif) == (
                Side.SELL,
                True,
                STP.CANCEL_BOTH,
                TIF.GTC,
            )

    run(body())


def test_rejects_fail_only_their_future(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            futures = [
                c.new_order("DEMO", Side.BUY, 9_000, 1),
                c.new_order("DEMO", Side.BUY, 9_000, 5_000),  # over MAX_ORDER_QTY
                c.new_order("ACME", Side.BUY, 25_003, 10),  # off ACME's tick of 5
                c.new_order("DEMO", Side.BUY, 9_001, 1, cl_ord_id=1),  # duplicate of the first
                c.new_order("DEMO", Side.BUY, 9_002, 1),
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert [type(r) for r in results] == [
                OrderAccepted,
                RejectedError,
                RejectedError,
                RejectedError,
                OrderAccepted,
            ]
            too_big, off_tick, dup = results[1:4]
            assert (too_big.reason, too_big.cl_ord_id, too_big.ref_seq) == (
                Reason.MAX_ORDER_QTY,
                2,
                4,
            )
            assert str(too_big) == "order 2 rejected: MAX_ORDER_QTY: qty 5000 > 1000"
            assert off_tick.reason_name == "PRICE_OFF_TICK"
            assert (
                str(off_tick)
                == "order 3 rejected: PRICE_OFF_TICK: price not a multiple of the tick"
            )
            assert dup.reason == Reason.DUPLICATE_ORDER_ID
            assert c.live_orders == {1, 4}  # the duplicate's reject leaves order 1 live
            with pytest.raises(RejectedError, match="UNKNOWN_ORDER") as info:
                await c.cancel(99)
            assert info.value.cl_ord_id == 99
            with pytest.raises(RejectedError, match="INVALID_QTY"):
                await c.reduce(1, 1)
            with pytest.raises(RejectedError, match="request rejected: NOT_AUTHORISED"):
                await c.mass_cancel(account=42)
            # A mass cancel of the own account: Cancelled(MASS_CANCEL) per order, then Done.
            assert await c.mass_cancel("DEMO") is None
            reasons = {(r.cl_ord_id, r.reason) for r in c.executions().drain()}
            assert reasons == {(1, Reason.MASS_CANCEL), (4, Reason.MASS_CANCEL)}
            assert received(d.session, MassCancel)[-1] == MassCancel(11, 1, 0)

    run(body())


def test_bad_arguments_send_nothing(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            count = len(d.session.received)
            with pytest.raises(UnknownSymbolError):
                c.new_order("NOPE", Side.BUY, 1, 1)
            with pytest.raises(TypeError, match="to_ticks"):
                c.new_order("DEMO", Side.BUY, Decimal("100.25"), 1)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                c.new_order("DEMO", 3, 100, 1)
            with pytest.raises(ValueError, match="out of range"):
                c.new_order("DEMO", Side.BUY, 2**63, 1)
            with pytest.raises(ValueError, match="cl_ord_id 0"):
                c.new_order("DEMO", Side.BUY, 100, 1, cl_ord_id=0)
            await c.sync()
            assert len(d.session.received) == count + 1  # only the sync
            assert c.symbols.get(99) is None

    run(body())


# -- sequence numbers and heartbeats ------------------------------------------------------------


def test_outbound_sequence_numbers_and_heartbeats(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon(heartbeat_ms=40) as d, await connect(d) as c:
            for i in range(5):
                c.new_order("DEMO", Side.BUY, 9_000 + i, 1)
            await c.sync()
            await asyncio.sleep(0.25)  # idle: heartbeats every 40 ms
            await c.new_order("DEMO", Side.SELL, 11_000, 1)
            s = d.session
            assert [m.seq for m in s.received] == list(range(1, len(s.received) + 1))
            beats = [
                t
                for m, t in zip(s.received, s.received_at, strict=True)
                if isinstance(m, Heartbeat)
            ]
            assert 3 <= len(beats) <= 8
            gaps = [b - a for a, b in itertools.pairwise(beats)]
            assert all(g >= 0.035 for g in gaps), gaps
        assert d.session.received[-1] == Logout(len(d.session.received))

    run(body())


def test_sequence_gap_from_the_daemon_ends_the_session(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            d.hold = True
            pending = c.new_order("DEMO", Side.BUY, 9_000, 1)
            await d.wait_for(lambda: len(received(d.session, NewOrder)) == 1)
            d.session.seq += 1  # skip a number
            d.session.send(Heartbeat(0))
            with pytest.raises(DisconnectedError, match="sequence gap from the daemon: expected"):
                await pending
            assert c.closed and isinstance(c.error, DisconnectedError)

    run(body())


def test_unknown_daemon_message_is_skipped_but_counted(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            d.session.seq += 1
            d.session.send_raw(msgspec.msgpack.encode([51, d.session.seq, "future"]))
            ack = await c.new_order("DEMO", Side.BUY, 9_000, 1)  # the next seq is still fine
            assert ack.cl_ord_id == 1 and not c.closed

    run(body())


def test_idle_daemon_ends_the_session(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon(heartbeat_ms=1_000, idle_timeout_ms=150) as d:
            c = await connect(d)
            d.hold = True
            pending = c.new_order("DEMO", Side.BUY, 9_000, 1)
            with pytest.raises(
                DisconnectedError, match="no message from the daemon for 150 ms"
            ) as info:
                await pending
            assert info.value.reason == SessionReason.IDLE_TIMEOUT
            await c.close()

    run(body())


# -- disconnects and close -------------------------------------------------------------------


def test_disconnect_fails_pending_futures_and_streams(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            sub = await c.subscribe("DEMO")
            d.hold = True
            pending = [c.new_order("DEMO", Side.BUY, 9_000, 1), c.cancel(5), c.sync()]
            await d.wait_for(lambda: len(d.session.received) == 6)
            d.session.disconnect(SessionReason.SHUTDOWN, "the daemon is stopping")
            results = await asyncio.gather(*pending, return_exceptions=True)
            for r in results:
                assert isinstance(r, DisconnectedError)
                assert r.reason == SessionReason.SHUTDOWN
                assert str(r) == "disconnected by the daemon: SHUTDOWN: the daemon is stopping"
            assert isinstance(await anext(sub), BookSnapshot)  # buffered first, then the error
            with pytest.raises(DisconnectedError, match="SHUTDOWN"):
                await anext(sub)
            with pytest.raises(DisconnectedError, match="SHUTDOWN"):
                await anext(c.executions())
            with pytest.raises(DisconnectedError, match="SHUTDOWN"):
                c.new_order("DEMO", Side.BUY, 9_000, 1)  # raised at once
            assert c.closed

    run(body())


def test_connection_dropped_without_disconnect(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            d.hold = True
            pending = c.new_order("DEMO", Side.BUY, 9_000, 1)
            await d.wait_for(lambda: len(received(d.session, NewOrder)) == 1)
            d.session.writer.transport.abort()
            with pytest.raises(DisconnectedError, match="connection closed by the daemon") as info:
                await pending
            assert info.value.reason is None

    run(body())


def test_close_logs_out_and_reads_until_closed(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            c = await connect(d)
            await c.new_order("DEMO", Side.BUY, 9_990, 2)
            d.hold = True
            pending = c.new_order("DEMO", Side.BUY, 9_980, 1)
            await c.close()
            assert received(d.session, Logout)
            with pytest.raises(ClientClosedError):
                await pending
            # The cancel-on-disconnect report came in before the end of the stream.
            reports = [r async for r in c.executions()]
            assert [(r.cl_ord_id, r.reason) for r in reports] == [(1, Reason.DISCONNECT)]
            assert c.closed and c.error is None
            with pytest.raises(ClientClosedError, match="the session is closed"):
                c.cancel(1)
            await c.close()  # twice is fine

    run(body())


# -- market data ----------------------------------------------------------------------------------


def test_subscription_keeps_a_local_book(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as watcher, await connect(d, "bob") as bob:
            with pytest.raises(ClientError, match="DEMO is not subscribed"):
                watcher.book("DEMO")
            async with await watcher.subscribe(["DEMO", 1]) as sub:
                book = watcher.book("DEMO")
                assert book.ready
                assert book.bids == [(10_000, 7)]
                assert book.asks == [(10_020, 4), (10_030, 5)]
                assert book.best_bid == (10_000, 7) and book.best_ask == (10_020, 4)
                snap = await anext(sub)
                assert isinstance(snap, BookSnapshot) and snap.symbol == 1
                # Bob takes 4 @ 100.20 and rests 2 @ 100.25.
                await bob.new_order("DEMO", Side.BUY, 10_025, 6)
                trade, gone, new = [await anext(sub) for _ in range(3)]
                assert isinstance(trade, Trade) and (trade.price, trade.qty) == (10_020, 4)
                assert gone == LevelUpdate(gone.seq, 1, Side.SELL, 10_020, 0)
                assert new == LevelUpdate(new.seq, 1, Side.BUY, 10_025, 2)
                assert book.bids == [(10_025, 2), (10_000, 7)]
                assert book.asks == [(10_030, 5)]
                assert book.last_trade == trade
                assert book.top(1) == ([(10_025, 2)], [(10_030, 5)])
                await bob.cancel(1)
                await anext(sub)
                assert book.bids == [(10_000, 7)]
            assert received(d.sessions[0], Unsubscribe)[-1].symbols == (1,)
            with pytest.raises(ClientError, match="not subscribed"):
                watcher.book("DEMO")
            with pytest.raises(UnknownSymbolError):
                await watcher.subscribe("NOPE")

    run(body())


def test_two_subscriptions_share_symbols(run: Callable[..., Any]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d, await connect(d) as c:
            both = await c.subscribe(["DEMO", "ACME"])
            demo = await c.subscribe("DEMO")
            assert [m.symbol for m in both.drain()] == [1, 2, 1]  # DEMO's fresh snapshot too
            assert [m.symbol for m in demo.drain()] == [1]
            await demo.close()
            assert not received(d.session, Unsubscribe)  # `both` still wants DEMO
            d.change_level(1, Side.BUY, 9_990, 3)
            await c.sync()
            (update,) = both.drain()
            assert update == LevelUpdate(update.seq, 1, Side.BUY, 9_990, 3)
            assert c.book("DEMO").bids == [(10_000, 7), (9_990, 3)]
            assert [m async for m in demo] == []  # closed: ends at once
            await both.close()
            assert received(d.session, Unsubscribe)[-1].symbols == (1, 2)

    run(body())


# -- decimal conversion ----------------------------------------------------------------------------


def test_to_ticks_is_exact_and_never_rounds() -> None:
    assert to_ticks(DEMO, "100.25") == 10_025
    assert to_ticks(DEMO, Decimal("100.250")) == 10_025
    assert to_ticks(DEMO, 100) == 10_000
    assert to_ticks(DEMO, " 0.01 ") == 1
    assert to_ticks(ACME, "250.05") == 25_005
    assert to_ticks(ACME, "-0.05") == -5
    assert to_ticks(BTC, "60000.1") == 600_001
    with pytest.raises(ConversionError) as info:
        to_ticks(DEMO, "100.251")
    assert str(info.value) == (
        "price 100.251 is not on DEMO's price grid (multiples of 0.01); nearest: 100.25 or 100.26"
    )
    with pytest.raises(ConversionError, match=r"multiples of 0.05\); nearest: 250.00 or 250.05"):
        to_ticks(ACME, "250.03")
    with pytest.raises(ConversionError, match="'abc' is not a number"):
        to_ticks(DEMO, "abc")
    for bad in ("NaN", "inf", "-Infinity"):
        with pytest.raises(ConversionError, match="not a finite number"):
            to_ticks(DEMO, bad)
    with pytest.raises(ConversionError, match="out of range"):
        to_ticks(DEMO, "1e17")
    with pytest.raises(ConversionError, match="out of range"):
        to_ticks(DEMO, "1e999999")
    with pytest.raises(ConversionError, match="not on DEMO's price grid"):
        to_ticks(DEMO, "1e-999999")
    with pytest.raises(TypeError, match="not float"):
        to_ticks(DEMO, 100.25)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_ticks(DEMO, True)


def test_quantities_and_round_trips() -> None:
    assert to_qty(BTC, "0.0001") == 1 and to_qty(BTC, "1.5") == 15_000
    assert from_qty(BTC, 15_000) == Decimal("1.5") and str(from_qty(BTC, 15_000)) == "1.5000"
    assert to_qty(ACME, 30) == 30
    with pytest.raises(
        ConversionError, match=r"quantity 15 is not on ACME's quantity grid .* 10 or 20"
    ):
        to_qty(ACME, "15")
    with pytest.raises(ConversionError, match=r"nearest: 0\.0001 or 0\.0002"):
        to_qty(BTC, "0.00015")
    assert str(from_ticks(DEMO, 10_025)) == "100.25"
    assert str(from_ticks(DEMO, 10_000)) == "100.00"
    assert str(from_ticks(ACME, -5)) == "-0.05"
    assert describe_reason(Reason.PRICE_COLLAR) == (
        "PRICE_COLLAR: price further than the collar from the reference price"
    )
    assert describe_reason(999, "x") == "REASON_999: x"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(-(2**63), 2**63 - 1), st.sampled_from(SYMBOLS))
def test_price_round_trip(units: int, info: SymbolInfo) -> None:
    units -= units % info.tick
    if units < -(2**63):
        units += info.tick
    assert to_ticks(info, from_ticks(info, units)) == units
    assert to_ticks(info, str(from_ticks(info, units))) == units


# -- the CLI --------------------------------------------------------------------------------


async def cli(*argv: str) -> int:
    """``main(argv)`` in a worker thread: it runs its own event loop."""
    code: int = await asyncio.to_thread(main, list(argv))
    return code


def port_args(d: FakeDaemon) -> list[str]:
    return ["--port", str(d.port)]


def test_cli_order_off_grid_price(
    run: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            assert await cli("order", "buy", "DEMO", "10", "@", "100.251", *port_args(d)) == 2
            assert not received(d.session, NewOrder)
            assert received(d.session, Logout)

    run(body())
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "lltrade: price 100.251 is not on DEMO's price grid (multiples of 0.01); "
        "nearest: 100.25 or 100.26\n"
    )


def test_cli_order_prints_ack_and_fills(
    run: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            assert await cli("order", "BUY", "DEMO", "10@100.30", "--ioc", *port_args(d)) == 0
            order = received(d.session, NewOrder)[0]
            assert (order.side, order.price, order.qty, order.tif) == (
                Side.BUY,
                10_030,
                10,
                TIF.IOC,
            )

    run(body())
    assert capsys.readouterr().out.splitlines() == [
        "accepted: buy 10 DEMO @ 100.30 IOC (cl_ord_id 1, order_id 101)",
        "fill: 4 @ 100.20 (taker, exec_id 501), 6 left",
        "fill: 5 @ 100.30 (taker, exec_id 502), 1 left",
        "cancelled: 1 @ 100.30 (IOC_REMAINDER: the unfilled rest of an IOC order)",
    ]


def test_cli_order_resting_then_session_ends(
    run: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            args = ["sell", "ACME", "20", "@", "260.05", "--post-only", "--stp", "cancel-both"]
            assert await cli("order", *args, *port_args(d)) == 0
            order = received(d.session, NewOrder)[0]
            assert (order.symbol, order.price, order.qty) == (2, 26_005, 20)
            assert (order.post_only, order.stp) == (True, STP.CANCEL_BOTH)

    run(body())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "accepted: sell 20 ACME @ 260.05 GTC (cl_ord_id 1, order_id 101)"
    assert lines[1].startswith("cancelled: 20 @ 260.05 (DISCONNECT: ")
    assert lines[1].endswith("(use --wait to keep the order working while the command runs)")


def test_cli_order_wait_until_filled(
    run: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            command = asyncio.ensure_future(
                cli("order", "buy", "DEMO", "3", "@", "99", "--wait", *port_args(d))
            )
            # Fill once the command has its answers (the order rests, its sync is done).
            await d.wait_for(lambda: bool(d.sessions) and len(d.session.received) == 4)
            await asyncio.sleep(0.1)
            d.fill_resting(d.session, 1, 1)
            d.fill_resting(d.session, 1, 2)
            assert await command == 0

    run(body())
    lines = capsys.readouterr().out.splitlines()
    assert "resting: 3 open; waiting (Ctrl-C to stop)" in lines  # unless the machine stalled
    assert [line for line in lines if not line.startswith("resting")] == [
        "accepted: buy 3 DEMO @ 99.00 GTC (cl_ord_id 1, order_id 101)",
        "fill: 1 @ 99.00 (maker, exec_id 501), 2 left",
        "fill: 2 @ 99.00 (maker, exec_id 502), 0 left",
    ]


def test_cli_order_errors(
    run: Callable[..., Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            p = port_args(d)
            assert await cli("order", "buy", "DEMO", "5000", "@", "100", *p) == 1
            assert await cli("order", "buy", "FOO", "1", "@", "100", *p) == 2
            assert await cli("order", "buy", "DEMO", "0", "@", "100", *p) == 2
            assert await cli("order", "buy", "DEMO", "1", "@", "100", "--secret", "nope", *p) == 1
            monkeypatch.setenv("LLTRADE_ACCOUNT", "bob")
            assert await cli("order", "sell", "DEMO", "1", "@", "200", "--ioc", *p) == 0
            assert d.session.account == "bob"
            monkeypatch.setenv("LLTRADE_ACCOUNT", "carol")
            assert await cli("order", "buy", "DEMO", "1", "@", "100", *p) == 2
            monkeypatch.setenv("LLTRADE_SECRET", "carols-secret")
            assert await cli("order", "buy", "DEMO", "1", "@", "100", *p) == 1
        assert await cli("order", "buy", "DEMO", "1", "@", "100", "--port", str(free_port())) == 1

    run(body())
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[:4] == [
        "lltrade: order rejected: MAX_ORDER_QTY: qty 5000 > 1000",
        "lltrade: unknown symbol 'FOO' (known: DEMO, ACME, BTC-USD)",
        "lltrade: quantity must be positive, got 0",
        "lltrade: logon as 'alice' refused: BAD_CREDENTIALS: unknown account or bad secret",
    ]
    assert lines[4] == "lltrade: no secret for account 'carol': pass --secret or set LLTRADE_SECRET"
    assert (
        lines[5]
        == "lltrade: logon as 'carol' refused: BAD_CREDENTIALS: unknown account or bad secret"
    )
    assert lines[6].startswith("lltrade: cannot connect to 127.0.0.1:")
    assert lines[6].endswith(": is the daemon running? (`make run`)")
    assert len(lines) == 7 and "Traceback" not in err
    assert out.startswith("accepted: sell 1 DEMO @ 200.00 IOC")


def test_cli_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["order", "buy", "DEMO", "10", "100.25"]) == 2
    assert main(["order", "buy", "DEMO", "10", "@"]) == 2
    assert main(["order", "buy", "DEMO", "10", "@", "1", "@", "2"]) == 2
    assert main(["cancel"]) == 2
    assert main(["cancel", "DEMO", "7", "--all"]) == 2
    assert main(["cancel", "DEMO", "7", "--target-account", "2"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "lltrade: expected QTY @ PRICE, got '10 100.25' (e.g. `lltrade order buy DEMO 10 @ 100.25`)"
    )
    assert err[3].startswith("lltrade: expected SYMBOL CL_ORD_ID, or --all")
    assert err[4] == "lltrade: give either --all or a CL_ORD_ID, not both"
    for argv in (
        ["order", "hold", "DEMO", "1", "@", "1"],
        ["order", "buy", "DEMO", "1", "@", "1", "--ioc", "--fok"],
        ["order", "buy", "DEMO", "1", "@", "1", "--port", "0"],
        ["book", "DEMO", "--levels", "0"],
        ["cancel", "DEMO", "x"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert main([]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["cancel", "--help"])
    assert info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "only reaches orders of its own session" in help_text
    assert "lltrade cancel [SYMBOL] --all" in help_text


def test_cli_cancel(run: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            p = port_args(d)
            assert await cli("cancel", "DEMO", "--all", *p) == 0
            assert received(d.session, MassCancel) == [MassCancel(3, 1, 0)]
            assert await cli("cancel", "--all", *p) == 0
            assert received(d.session, MassCancel) == [MassCancel(3, 0, 0)]
            assert await cli("cancel", "--all", "--target-account", "7", *p) == 1
            assert await cli("cancel", "DEMO", "7", *p) == 1
            assert received(d.session, Cancel) == [Cancel(3, 7)]

    run(body())
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "mass cancel done: every resting order of account 'alice' in DEMO is cancelled",
        "mass cancel done: every resting order of account 'alice' in every symbol is cancelled",
    ]
    assert err.splitlines() == [
        "lltrade: mass cancel rejected: NOT_AUTHORISED: admin only",
        "lltrade: cancel rejected: UNKNOWN_ORDER: not resting; a cl_ord_id belongs to the session "
        "that entered the order, so use `lltrade cancel DEMO --all` to cancel the account's orders",
    ]


def test_cli_book_once(run: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            assert await cli("book", "DEMO", "--once", *port_args(d)) == 0
            assert await cli("book", "DEMO", "--once", "--levels", "1", *port_args(d)) == 0
            assert await cli("book", "BTC-USD", "--once", *port_args(d)) == 0

    run(body())
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "DEMO   bid 100.00  ask 100.20  spread 0.20",
        "bid qty   price  ask qty",
        "         100.30  5",
        "         100.20  4",
        "      7  100.00",
        "DEMO   bid 100.00  ask 100.20  spread 0.20",
        "bid qty   price  ask qty",
        "         100.20  4",
        "      7  100.00",
        "BTC-USD",
        "bid qty  price  ask qty",
        "(no orders)",
    ]


def test_cli_book_live_until_disconnect(
    run: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async def body() -> None:
        async with FakeDaemon() as d:
            command = asyncio.ensure_future(cli("book", "DEMO", *port_args(d)))
            out = ""
            while "\n\n" not in out:  # the first frame, drawn from the snapshot
                await asyncio.sleep(0.005)
                out += capsys.readouterr().out
            d.change_level(1, Side.BUY, 10_010, 12)
            d.broadcast(1, Trade(0, 1, 9, 10_010, 1, Side.SELL))
            # Updates already sent are drawn before the disconnect is reported.
            d.session.disconnect(SessionReason.SHUTDOWN, "the daemon is stopping")
            assert await command == 1
            outputs.append(out)

    outputs: list[str] = []
    run(body())
    out, err = capsys.readouterr()
    first, *frames, rest = (outputs[0] + out).split("\n\n")
    assert "100.10" not in first and "      7  100.00" in first
    assert rest == ""
    assert "     12  100.10" in frames[-1]
    assert "last 1 @ 100.10" in frames[-1]
    assert err == "lltrade: disconnected by the daemon: SHUTDOWN: the daemon is stopping\n"


def test_cli_hash_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-value\n"))
    assert main(["hash-secret"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("scrypt$") and verify_secret("s3cret-value", out)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["hash-secret"]) == 2
    assert capsys.readouterr().err == "lltrade: empty secret\n"
