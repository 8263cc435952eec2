"""An asyncio client for the lltrade daemon (``docs/protocol.md``).

One :class:`Client` is one session: one TCP connection, logged on as one
account.  Order calls send at once and return an :class:`asyncio.Future`
resolved by the daemon's answer, so requests can be pipelined::

    async with Client.connect("127.0.0.1", 9000, "alice", "alice-demo-secret") as c:
        demo = c.symbols["DEMO"]
        ack = await c.new_order("DEMO", Side.BUY, to_ticks(demo, "100.25"), 10)
        async for report in c.executions():  # Fill and Cancelled, in order
            ...

Prices and quantities are the wire's integers (price units, quantity
units) everywhere in the client; :func:`to_ticks` / :func:`from_ticks` and
:func:`to_qty` / :func:`from_qty` convert exactly from and to decimals at
the edge, never through binary floating point.

The client works on asyncio's default event loop and on uvloop.  It sends
heartbeats while idle (``LogonAck.heartbeat_ms``), closes a session whose
daemon is silent for ``idle_timeout_ms``, checks the daemon's sequence
numbers, and fails every pending future with a :class:`DisconnectedError`
naming the daemon's ``Disconnect`` reason when the session ends.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import math
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from types import TracebackType
from typing import Any, Final, Generic, TypeAlias, TypeVar, cast

from lltrade.enums import STP, TIF, Reason, Side
from lltrade.protocol import (
    DAEMON_DECODER,
    DEFAULT_MAX_DAEMON_FRAME,
    PROTOCOL_VERSION,
    BookSnapshot,
    Cancel,
    Cancelled,
    ClientMessage,
    DaemonMessage,
    Disconnect,
    Done,
    Fill,
    FrameError,
    FrameReader,
    Halt,
    Heartbeat,
    KillSwitch,
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
    reason_name,
)

__all__ = [
    "Book",
    "Client",
    "ClientClosedError",
    "ClientError",
    "ClientTimeoutError",
    "ConnectError",
    "Connecting",
    "ConversionError",
    "DisconnectedError",
    "Execution",
    "LogonError",
    "MarketData",
    "RejectedError",
    "Stream",
    "Subscription",
    "SymbolRef",
    "SymbolTable",
    "UnknownSymbolError",
    "describe_reason",
    "from_qty",
    "from_ticks",
    "to_qty",
    "to_ticks",
]

Execution: TypeAlias = Fill | Cancelled
"""An execution report of the session's own orders."""

MarketData: TypeAlias = BookSnapshot | LevelUpdate | Trade
"""A market data message."""

SymbolRef: TypeAlias = "str | int | SymbolInfo"
"""A symbol named by name, by id, or by its :class:`SymbolInfo`."""

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1

# Request kinds: the client message tags, plus the sync barrier.
_NEW: Final = 4
_CANCEL: Final = 5
_REPLACE: Final = 6
_REDUCE: Final = 7
_MASS_CANCEL: Final = 8
_SUBSCRIBE: Final = 9
_UNSUBSCRIBE: Final = 10
_HALT: Final = 11
_KILL_SWITCH: Final = 12
_SYNC: Final = -1

_T = TypeVar("_T")

# -- reasons ---------------------------------------------------------------------------

_MEANING: Final[dict[int, str]] = {
    Reason.UNKNOWN_ORDER: "no resting order with that cl_ord_id in this session",
    Reason.DUPLICATE_ORDER_ID: "the cl_ord_id belongs to a live order of the session",
    Reason.INVALID_QTY: "quantity not positive, off the lot, too large, or a reduce not below "
    "the open quantity",
    Reason.PRICE_OUT_OF_BAND: "price outside the symbol's min_price .. max_price",
    Reason.PRICE_OFF_TICK: "price not a multiple of the tick",
    Reason.POST_ONLY_WOULD_CROSS: "a post-only order would trade on arrival",
    Reason.INVALID_FLAGS: "post-only together with IOC or FOK",
    Reason.POOL_EXHAUSTED: "the book holds its maximum of resting orders",
    Reason.UNKNOWN_SYMBOL: "no symbol with that id",
    Reason.USER_CANCEL: "cancelled by Cancel",
    Reason.IOC_REMAINDER: "the unfilled rest of an IOC order",
    Reason.FOK_UNFILLED: "a FOK order that could not fill completely",
    Reason.SELF_TRADE: "self-trade prevention",
    Reason.MASS_CANCEL: "cancelled by a mass cancel",
    Reason.DISCONNECT: "cancelled when its session ended (cancel on disconnect)",
    Reason.KILL_SWITCH: "cancelled by the kill switch",
    Reason.PRICE_COLLAR: "price further than the collar from the reference price",
    Reason.MAX_ORDER_QTY: "quantity above the account's or the symbol's limit",
    Reason.MAX_NOTIONAL: "price x quantity above the account's or the symbol's limit",
    Reason.MAX_OPEN_ORDERS: "the account already has its maximum of resting orders",
    Reason.MAX_POSITION: "a full fill could take the position past the account's limit",
    Reason.SYMBOL_HALTED: "trading in the symbol is halted",
    Reason.KILL_SWITCH_ACTIVE: "the kill switch is on: no new orders",
    Reason.NOT_AUTHORISED: "the request needs the admin role",
    SessionReason.NOT_LOGGED_ON: "a message other than Logon or Heartbeat before logon",
    SessionReason.BAD_CREDENTIALS: "unknown account or wrong secret",
    SessionReason.MALFORMED: "the message is not valid",
    SessionReason.UNKNOWN_MESSAGE: "the tag names no client message",
    SessionReason.RATE_LIMITED: "over the session's message rate; the message was dropped",
    SessionReason.SEQUENCE_GAP: "a sequence number was not the previous one + 1",
    SessionReason.FRAME_TOO_LARGE: "a frame longer than the limit",
    SessionReason.ALREADY_LOGGED_ON: "a second Logon",
    SessionReason.UNSUPPORTED_VERSION: "the daemon speaks another protocol version",
    SessionReason.LOGOUT: "the client logged out",
    SessionReason.SHUTDOWN: "the daemon is stopping",
    SessionReason.IDLE_TIMEOUT: "nothing received for the idle timeout",
    SessionReason.SLOW_CONSUMER: "the client did not read fast enough",
}


def describe_reason(code: int, text: str = "") -> str:
    """A one-line description of a wire reason code.

    Parameters
    ----------
    code
        A ``reason`` field as received.
    text
        The message's ``text`` field; shown instead of the generic meaning
        when not empty.

    Returns
    -------
    str
        ``"NAME: detail"``, e.g. ``"PRICE_COLLAR: price further than the
        collar from the reference price"``.
    """
    name = reason_name(code)
    detail = text or _MEANING.get(code, "")
    return f"{name}: {detail}" if detail else name


# -- errors ------------------------------------------------------------------------------


class ClientError(Exception):
    """Base class of every error the client raises."""


class ConnectError(ClientError):
    """The TCP connection to the daemon could not be made.

    Attributes
    ----------
    host, port
        Where the client tried to connect.
    cause
        The ``OSError`` raised by the connect (``ConnectionRefusedError``
        when nothing listens there).
    """

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(f"cannot connect to {host}:{port}: {cause.strerror or cause}")
        self.host = host
        self.port = port
        self.cause = cause


class ClientTimeoutError(ClientError, TimeoutError):
    """The daemon did not answer the logon in time."""


class LogonError(ClientError):
    """The daemon refused the logon (``LogonReject``, or ``Disconnect`` before logon).

    Attributes
    ----------
    reason
        The wire reason code (``BAD_CREDENTIALS``, ``UNSUPPORTED_VERSION``, ...).
    text
        The daemon's human-readable detail (may be empty).
    """

    def __init__(self, reason: int, text: str) -> None:
        super().__init__(f"logon refused: {describe_reason(reason, text)}")
        self.reason = reason
        self.text = text

    @property
    def reason_name(self) -> str:
        """The reason code's name."""
        return reason_name(self.reason)


class DisconnectedError(ClientError):
    """The session ended without the client asking: daemon ``Disconnect``, lost connection.

    Also raised when the client itself ends the session because the daemon
    broke the protocol (a sequence gap, an undecodable frame) or went
    silent for ``idle_timeout_ms``.

    Attributes
    ----------
    reason
        The ``Disconnect`` reason code (``IDLE_TIMEOUT`` for the client's
        own idle timeout), or None when the connection just closed or the
        daemon broke the protocol.
    text
        What happened.
    """

    def __init__(self, reason: int | None, text: str) -> None:
        if reason is None:
            message = text
        else:
            message = f"disconnected by the daemon: {describe_reason(reason, text)}"
        super().__init__(message)
        self.reason = reason
        self.text = text


class ClientClosedError(ClientError):
    """The session was closed by :meth:`Client.close`."""


class RejectedError(ClientError):
    """A request was refused: ``OrderRejected`` (risk, book) or ``Reject`` (session level).

    Attributes
    ----------
    reason
        The wire reason code; decide on it, not on ``text``.
    text
        The daemon's human-readable detail (may be empty).
    ref_seq
        The ``seq`` of the refused request.
    cl_ord_id
        The order's ``cl_ord_id`` for an order request, else None.
    """

    def __init__(self, reason: int, text: str, ref_seq: int, cl_ord_id: int | None) -> None:
        what = "request" if cl_ord_id is None else f"order {cl_ord_id}"
        super().__init__(f"{what} rejected: {describe_reason(reason, text)}")
        self.reason = reason
        self.text = text
        self.ref_seq = ref_seq
        self.cl_ord_id = cl_ord_id

    @property
    def reason_name(self) -> str:
        """The reason code's name."""
        return reason_name(self.reason)


class UnknownSymbolError(ClientError, LookupError):
    """A symbol name or id the daemon did not announce."""


class ConversionError(ClientError, ValueError):
    """A decimal price or quantity that has no exact wire value for the symbol."""


# -- decimal conversion -------------------------------------------------------------------

_MAX_ADJUSTED: Final = 40  # far beyond int64 at any scale; bounds Fraction sizes


def _as_decimal(value: Decimal | str | int, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise TypeError(
            f"{what} must be a Decimal, str or int, not {type(value).__name__}"
            + (" (binary floating point is inexact)" if isinstance(value, float) else "")
        )
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ConversionError(f"{what} {value!r} is not a number") from None
    d = Decimal(value)
    if not d.is_finite():
        raise ConversionError(f"{what} {value} is not a finite number")
    return d


def _units(value: Decimal | str | int, decimals: int, step: int, what: str, name: str) -> int:
    d = _as_decimal(value, what)
    if d and d.adjusted() > _MAX_ADJUSTED:
        raise ConversionError(f"{what} {d} is out of range")
    if d and d.adjusted() < -_MAX_ADJUSTED:  # below any grid (and keeps the Fractions small)
        low = 0 if d > 0 else -step
    else:
        exact = Fraction(d) * 10**decimals
        steps = exact / step
        if steps.denominator == 1:
            units = int(exact)
            if not _I64_MIN <= units <= _I64_MAX:
                raise ConversionError(f"{what} {d} is out of range")
            return units
        low = math.floor(steps) * step
    raise ConversionError(
        f"{what} {d} is not on {name}'s {what} grid (multiples of {_decimal(step, decimals)}); "
        f"nearest: {_decimal(low, decimals)} or {_decimal(low + step, decimals)}"
    )


def _decimal(units: int, decimals: int) -> Decimal:
    return Decimal(f"{units}E-{decimals}") if decimals else Decimal(units)


def to_ticks(symbol: SymbolInfo, price: Decimal | str | int) -> int:
    """A decimal price as the wire's price (an integer in price units).

    Exact: the price must lie on the symbol's grid (``tick`` price units of
    ``10**-price_decimals``); nothing is ever rounded.

    Parameters
    ----------
    symbol
        The symbol (``client.symbols[name]``).
    price
        A ``Decimal``, a decimal string such as ``"100.25"``, or an int
        (whole currency units).  Floats are refused.

    Returns
    -------
    int
        The price in price units, e.g. ``10025`` for ``"100.25"`` with
        ``price_decimals = 2``.

    Raises
    ------
    ConversionError
        The price is not a number, is off the grid (the message gives the
        nearest valid prices) or does not fit 64 bits.
    TypeError
        ``price`` is a float or another type.
    """
    return _units(price, symbol.price_decimals, symbol.tick, "price", symbol.name)


def from_ticks(symbol: SymbolInfo, price: int) -> Decimal:
    """A wire price as a ``Decimal`` with the symbol's ``price_decimals`` places.

    Parameters
    ----------
    symbol
        The symbol the price belongs to.
    price
        Price units, as in the protocol's messages.

    Returns
    -------
    Decimal
        E.g. ``Decimal("100.25")`` for ``10025`` with ``price_decimals = 2``.
    """
    return _decimal(price, symbol.price_decimals)


def to_qty(symbol: SymbolInfo, qty: Decimal | str | int) -> int:
    """A decimal quantity as the wire's quantity (an integer in quantity units).

    Exact, like :func:`to_ticks`: the quantity must be a multiple of the
    symbol's ``lot`` (in units of ``10**-qty_decimals``).

    Parameters
    ----------
    symbol
        The symbol (``client.symbols[name]``).
    qty
        A ``Decimal``, a decimal string or an int.  Floats are refused.

    Returns
    -------
    int
        The quantity in quantity units.

    Raises
    ------
    ConversionError
        Not a number, off the lot grid (with the nearest valid quantities)
        or out of range.
    TypeError
        ``qty`` is a float or another type.
    """
    return _units(qty, symbol.qty_decimals, symbol.lot, "quantity", symbol.name)


def from_qty(symbol: SymbolInfo, qty: int) -> Decimal:
    """A wire quantity as a ``Decimal`` with the symbol's ``qty_decimals`` places.

    Parameters
    ----------
    symbol
        The symbol the quantity belongs to.
    qty
        Quantity units, as in the protocol's messages.

    Returns
    -------
    Decimal
        The decimal quantity.
    """
    return _decimal(qty, symbol.qty_decimals)


# -- symbols and books ---------------------------------------------------------------------


class SymbolTable:
    """The daemon's symbols as announced after logon, by name and by id.

    ``table["DEMO"]``, ``table[1]`` and ``table[info]`` all give the
    :class:`SymbolInfo`; an unknown key raises :class:`UnknownSymbolError`.
    Iterating gives the ``SymbolInfo`` objects in id order.  Entries are
    replaced when the daemon sends a symbol again (a halt or resume).
    """

    def __init__(self) -> None:
        self._by_id: dict[int, SymbolInfo] = {}
        self._by_name: dict[str, SymbolInfo] = {}

    def _update(self, info: SymbolInfo) -> None:
        old = self._by_id.get(info.symbol)
        if old is not None and old.name != info.name:
            del self._by_name[old.name]
        self._by_id[info.symbol] = info
        self._by_name[info.name] = info

    def get(self, key: SymbolRef) -> SymbolInfo | None:
        """The symbol named by ``key``, or None.

        Parameters
        ----------
        key
            A name, an id or a ``SymbolInfo``.

        Returns
        -------
        SymbolInfo or None
            The latest announcement of that symbol.
        """
        if isinstance(key, SymbolInfo):
            return self._by_id.get(key.symbol)
        if isinstance(key, str):
            return self._by_name.get(key)
        if isinstance(key, int) and not isinstance(key, bool):
            return self._by_id.get(key)
        return None

    def __getitem__(self, key: SymbolRef) -> SymbolInfo:
        info = self.get(key)
        if info is None:
            shown = key.name if isinstance(key, SymbolInfo) else key
            known = ", ".join(self.names()) or "none"
            raise UnknownSymbolError(f"unknown symbol {shown!r} (known: {known})")
        return info

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str | int | SymbolInfo) and self.get(key) is not None

    def __iter__(self) -> Iterator[SymbolInfo]:
        return iter(sorted(self._by_id.values(), key=lambda s: s.symbol))

    def __len__(self) -> int:
        return len(self._by_id)

    def names(self) -> list[str]:
        """The symbol names, in id order.

        Returns
        -------
        list of str
            E.g. ``["DEMO", "ACME", "BTC-USD"]``.
        """
        return [s.name for s in self]

    def __repr__(self) -> str:
        return f"SymbolTable({self.names()!r})"


class Book:
    """The client's copy of one symbol's book, kept while the symbol is subscribed.

    Built from the subscription's ``BookSnapshot`` and the ``LevelUpdate``
    messages that follow it (``client.book(symbol)``).  Prices and
    quantities are wire integers; see :func:`from_ticks`.

    Attributes
    ----------
    info
        The symbol's latest ``SymbolInfo``.
    last_trade
        The latest ``Trade`` print received, or None.
    ready
        True once the first snapshot arrived.
    """

    __slots__ = ("_asks", "_bids", "info", "last_trade", "ready")

    def __init__(self, info: SymbolInfo) -> None:
        self.info = info
        self.last_trade: Trade | None = None
        self.ready = False
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}

    @property
    def bids(self) -> list[tuple[int, int]]:
        """Every bid level as ``(price, total qty)``, highest price first."""
        return sorted(self._bids.items(), reverse=True)

    @property
    def asks(self) -> list[tuple[int, int]]:
        """Every ask level as ``(price, total qty)``, lowest price first."""
        return sorted(self._asks.items())

    def top(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``levels`` levels of each side.

        Parameters
        ----------
        levels
            How many levels per side.

        Returns
        -------
        tuple of (bids, asks)
            Each a list of ``(price, total qty)``, best first.
        """
        return heapq.nlargest(levels, self._bids.items()), heapq.nsmallest(
            levels, self._asks.items()
        )

    @property
    def best_bid(self) -> tuple[int, int] | None:
        """The highest bid level, or None."""
        return max(self._bids.items()) if self._bids else None

    @property
    def best_ask(self) -> tuple[int, int] | None:
        """The lowest ask level, or None."""
        return min(self._asks.items()) if self._asks else None

    def _snapshot(self, msg: BookSnapshot) -> None:
        self._bids = dict(msg.bids)
        self._asks = dict(msg.asks)
        self.ready = True

    def _level(self, msg: LevelUpdate) -> None:
        side = self._bids if msg.side == Side.BUY else self._asks
        if msg.qty:
            side[msg.price] = msg.qty
        else:
            side.pop(msg.price, None)

    def __repr__(self) -> str:
        return (
            f"Book({self.info.name!r}, best_bid={self.best_bid}, best_ask={self.best_ask}, "
            f"levels={len(self._bids)}/{len(self._asks)})"
        )


# -- streams ------------------------------------------------------------------------------


class Stream(Generic[_T]):
    """An async iterator over messages the session received, in order.

    Messages are buffered from the moment the stream exists, so none is
    lost between an ``await`` and the next iteration.  Iteration ends
    (``StopAsyncIteration``) after the buffered messages once the stream is
    finished cleanly (the client closed it, or :meth:`Client.close`); if
    the session ended otherwise, the :class:`DisconnectedError` is raised
    after the buffered messages.  One consumer per stream: two consumers
    would each see part of the messages.
    """

    def __init__(self) -> None:
        self._items: collections.deque[_T] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._error: BaseException | None = None

    def _put(self, item: _T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drain(self) -> list[_T]:
        """Take every message already received, without waiting.

        Returns
        -------
        list
            The buffered messages, oldest first (possibly empty).
        """
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)

    def __aiter__(self) -> Stream[_T]:
        return self

    async def __anext__(self) -> _T:
        while not self._items:
            if self._finished:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class Subscription(Stream[MarketData]):
    """Market data for some symbols: ``BookSnapshot``, then ``LevelUpdate`` and ``Trade``.

    Returned by :meth:`Client.subscribe` once the snapshots arrived.
    Iterate it with ``async for``; :meth:`close` (or leaving ``async with``)
    unsubscribes the symbols no other subscription of the session wants.
    While a symbol is subscribed, ``client.book(symbol)`` is its current
    book; it is updated before each message is queued here, so when a
    ``LevelUpdate`` is yielded the book already includes it (and possibly
    later ones).

    Attributes
    ----------
    symbols
        The subscribed symbol ids.
    """

    def __init__(self, client: Client, symbols: tuple[int, ...]) -> None:
        super().__init__()
        self._client = client
        self.symbols = symbols
        self._ids = frozenset(symbols)
        self._awaiting_snapshot = set(symbols)
        self._closed = False

    def _deliver(self, msg: MarketData) -> None:
        if type(msg) is BookSnapshot:
            self._awaiting_snapshot.discard(msg.symbol)
        elif msg.symbol in self._awaiting_snapshot:
            return  # updates to another subscription's snapshot: not ours yet
        self._put(msg)

    async def close(self) -> None:
        """Stop the subscription (``Unsubscribe`` for symbols no longer wanted)."""
        if self._closed:
            return
        self._closed = True
        self._finish(None)
        await self._client._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# -- the client ------------------------------------------------------------------------------


class _Request:
    __slots__ = ("cl_ord_id", "future", "kind")

    def __init__(self, kind: int, cl_ord_id: int, future: asyncio.Future[Any]) -> None:
        self.kind = kind
        self.cl_ord_id = cl_ord_id
        self.future = future


def _resolve(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _check_int(name: str, value: int, low: int = _I64_MIN) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be an int in wire units, not {type(value).__name__} "
            "(convert decimals with to_ticks / to_qty)"
        )
    if not low <= value <= _I64_MAX:
        raise ValueError(f"{name} {value} is out of range {low} .. {_I64_MAX}")
    return value


class Connecting:
    """What :meth:`Client.connect` returns: await it, or use it with ``async with``.

    ``client = await Client.connect(...)`` gives a logged-on client;
    ``async with Client.connect(...) as client:`` also closes it at the end.
    """

    def __init__(self, open_client: Callable[[], Coroutine[Any, Any, Client]]) -> None:
        self._open = open_client
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()


class _Protocol(asyncio.BufferedProtocol):
    """Reads straight into the client's :class:`FrameReader`."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._reader = client._reader
        self._out: list[DaemonMessage | FrameError] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._client._connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        out = self._reader.buffer_updated(nbytes, self._out)
        try:
            self._client._received(out)
        finally:
            out.clear()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._connection_lost(exc)

    def pause_writing(self) -> None:
        self._client._write_paused = True

    def resume_writing(self) -> None:
        self._client._resume_writing()


class Client:
    """One logged-on session with the daemon.

    Create it with :meth:`connect`.  Every request method sends at once
    (with the session's next sequence number) and returns a future resolved
    by the daemon's answer; a refusal fails the future with
    :class:`RejectedError`, the end of the session with
    :class:`DisconnectedError` (or :class:`ClientClosedError` after
    :meth:`close`).  Calling a request method on a closed session raises
    that error at once.

    Attributes
    ----------
    host, port, account
        Where and as whom the session logged on.
    account_id, session_id
        From ``LogonAck``.
    heartbeat_ms, idle_timeout_ms
        From ``LogonAck``: the client sends a ``Heartbeat`` after
        ``heartbeat_ms`` without sending, and ends the session if the daemon
        sends nothing for ``idle_timeout_ms`` (0 disables either).
    max_frame
        The largest frame body the daemon accepts.
    symbols
        Every symbol, by name and id (:class:`SymbolTable`).
    """

    def __init__(
        self, host: str, port: int, account: str, *, max_frame: int, buffer_executions: bool
    ) -> None:
        """Use :meth:`connect`; the constructor makes an unconnected client."""
        self.host = host
        self.port = port
        self.account = account
        self.account_id = 0
        self.session_id = 0
        self.heartbeat_ms = 0
        self.idle_timeout_ms = 0
        self.max_frame = 0
        self.symbols = SymbolTable()
        self._loop = asyncio.get_running_loop()
        self._reader: FrameReader[DaemonMessage] = FrameReader(DAEMON_DECODER, max_frame)
        self._transport: asyncio.Transport | None = None
        self._out = bytearray()
        self._seq_out = 0
        self._seq_in = 0
        self._pending: dict[int, _Request] = {}
        self._logon: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._logged_on = False
        self._closing = False
        self._error: ClientError | None = None
        self._disconnect: Disconnect | None = None
        self._executions: Stream[Execution] | None = Stream() if buffer_executions else None
        self._subs: list[Subscription] = []
        self._books: dict[int, Book] = {}
        self._sub_refs: dict[int, int] = {}
        self._live: set[int] = set()
        self._next_cl_ord_id = 1
        self._last_sent = self._last_recv = self._loop.time()
        self._timer: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._handlers: dict[type, Callable[[Any], None]] = {
            Heartbeat: _ignore,
            LogonAck: self._on_logon_ack,
            LogonReject: self._on_logon_reject,
            SymbolInfo: self._on_symbol_info,
            Disconnect: self._on_disconnect,
            Reject: self._on_reject,
            Done: self._on_done,
            OrderAccepted: self._on_order_accepted,
            OrderRejected: self._on_order_rejected,
            Fill: self._on_fill,
            Cancelled: self._on_cancelled,
            Replaced: self._on_replaced,
            Reduced: self._on_reduced,
            BookSnapshot: self._on_snapshot,
            LevelUpdate: self._on_level_update,
            Trade: self._on_trade,
        }

    # -- connecting ----------------------------------------------------------------------

    @staticmethod
    def connect(
        host: str,
        port: int,
        account: str,
        secret: str,
        *,
        timeout: float = 5.0,
        max_frame: int = DEFAULT_MAX_DAEMON_FRAME,
        buffer_executions: bool = True,
    ) -> Connecting:
        """Connect and log on.

        Returns once the daemon accepted the logon and announced every
        symbol (the client then sends an empty ``Subscribe`` and waits for
        its ``Done``, see :meth:`sync`).

        Parameters
        ----------
        host, port
            The daemon's order-entry address (default ``127.0.0.1:9000``).
        account, secret
            The credentials (the demo accounts' are in
            ``lltrade.config.DEMO_SECRETS``).
        timeout
            Seconds allowed for connecting and logging on.
        max_frame
            The largest frame body accepted from the daemon.
        buffer_executions
            Keep every ``Fill`` and ``Cancelled`` for :meth:`executions`
            (unbounded until consumed).  Pass False if they are not needed.

        Returns
        -------
        Connecting
            Await it for the :class:`Client`, or use it in ``async with``.

        Raises
        ------
        ConnectError
            The TCP connection failed (e.g. no daemon listening).
        LogonError
            The daemon refused the logon; ``reason`` says why.
        ClientTimeoutError
            No answer within ``timeout``.
        DisconnectedError
            The connection closed during the logon.
        """

        async def open_client() -> Client:
            client = Client(
                host, port, account, max_frame=max_frame, buffer_executions=buffer_executions
            )
            try:
                async with asyncio.timeout(timeout):
                    await client._start(secret)
            except TimeoutError:
                await client._abort()
                raise ClientTimeoutError(
                    f"no logon answer from {host}:{port} within {timeout:g} s"
                ) from None
            except BaseException:
                await client._abort()
                raise
            return client

        return Connecting(open_client)

    async def _start(self, secret: str) -> None:
        if len(self.account) > 64 or len(secret) > 256:
            raise LogonError(
                SessionReason.MALFORMED, "account must be <= 64 and secret <= 256 characters"
            )
        try:
            transport, _ = await self._loop.create_connection(
                lambda: _Protocol(self), self.host, self.port
            )
        except OSError as exc:
            raise ConnectError(self.host, self.port, exc) from None
        if self._transport is None and not self._closed.done():
            # uvloop may return before calling connection_made.
            self._connection_made(transport)
        self._write(Logon(1, PROTOCOL_VERSION, self.account, secret))
        await self._logon
        self._timer = self._loop.create_task(self._run_timer())
        await self.sync()

    async def _abort(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.abort()
            await self._closed
        elif not self._closed.done():
            self._closed.set_result(None)
        if self._logon.done() and not self._logon.cancelled():
            self._logon.exception()  # retrieved: no "never retrieved" warning

    # -- requests ---------------------------------------------------------------------------

    def new_order(
        self,
        symbol: SymbolRef,
        side: Side | int,
        price: int,
        qty: int,
        *,
        tif: TIF | int = TIF.GTC,
        post_only: bool = False,
        stp: STP | int = STP.NONE,
        cl_ord_id: int | None = None,
    ) -> asyncio.Future[OrderAccepted]:
        """Enter a limit order.

        Parameters
        ----------
        symbol
            Name, id or ``SymbolInfo``.
        side
            ``Side.BUY`` or ``Side.SELL``.
        price
            Limit price in price units (:func:`to_ticks`).
        qty
            Quantity in quantity units (:func:`to_qty`).
        tif
            ``TIF.GTC`` (default), ``TIF.IOC`` or ``TIF.FOK``.
        post_only
            Reject instead of trading on arrival.
        stp
            Self-trade prevention mode.
        cl_ord_id
            The order's id in this session; by default the next id not
            used by a live order of the session.

        Returns
        -------
        asyncio.Future of OrderAccepted
            Resolved by ``OrderAccepted`` (its ``order_id`` is the daemon's
            id); fails with :class:`RejectedError` on ``OrderRejected``.
            Fills and cancellations follow in :meth:`executions`.

        Raises
        ------
        UnknownSymbolError, TypeError, ValueError
            Bad arguments (nothing is sent).
        ClientClosedError, DisconnectedError
            The session is over.
        """
        symbol_id = self.symbols[symbol].symbol
        side = Side(side)
        tif = TIF(tif)
        stp = STP(stp)
        _check_int("price", price)
        _check_int("qty", qty)
        if cl_ord_id is None:
            cl_ord_id = self._alloc_cl_ord_id()
        else:
            _check_int("cl_ord_id", cl_ord_id, 1)
        msg = NewOrder(
            self._seq_out + 1, cl_ord_id, symbol_id, side, price, qty, tif, bool(post_only), stp
        )
        future: asyncio.Future[OrderAccepted] = self._request(_NEW, cl_ord_id, msg)
        self._live.add(cl_ord_id)
        return future

    def cancel(self, cl_ord_id: int) -> asyncio.Future[Cancelled]:
        """Cancel one of the session's resting orders.

        Parameters
        ----------
        cl_ord_id
            The order's id in this session.

        Returns
        -------
        asyncio.Future of Cancelled
            Resolved by ``Cancelled(USER_CANCEL)`` (also delivered to
            :meth:`executions`); fails with :class:`RejectedError`, e.g.
            ``UNKNOWN_ORDER`` when the order is not resting.
        """
        _check_int("cl_ord_id", cl_ord_id, 1)
        return self._request(_CANCEL, cl_ord_id, Cancel(self._seq_out + 1, cl_ord_id))

    def replace(self, cl_ord_id: int, price: int, qty: int) -> asyncio.Future[Replaced]:
        """Give a resting order a new price and open quantity.

        Parameters
        ----------
        cl_ord_id
            The order's id in this session.
        price
            New limit price, price units.
        qty
            New open quantity, quantity units.

        Returns
        -------
        asyncio.Future of Replaced
            Resolved by ``Replaced``; fills may follow in :meth:`executions`.
            Fails with :class:`RejectedError`.
        """
        _check_int("cl_ord_id", cl_ord_id, 1)
        _check_int("price", price)
        _check_int("qty", qty)
        msg = Replace(self._seq_out + 1, cl_ord_id, price, qty)
        return self._request(_REPLACE, cl_ord_id, msg)

    def reduce(self, cl_ord_id: int, qty: int) -> asyncio.Future[Reduced]:
        """Lower a resting order's open quantity, keeping its queue place.

        Parameters
        ----------
        cl_ord_id
            The order's id in this session.
        qty
            The new open quantity (``0 < qty <`` the open quantity).

        Returns
        -------
        asyncio.Future of Reduced
            Resolved by ``Reduced``; fails with :class:`RejectedError`.
        """
        _check_int("cl_ord_id", cl_ord_id, 1)
        _check_int("qty", qty)
        return self._request(_REDUCE, cl_ord_id, Reduce(self._seq_out + 1, cl_ord_id, qty))

    def mass_cancel(
        self, symbol: SymbolRef | None = None, *, account: int = 0
    ) -> asyncio.Future[None]:
        """Cancel every resting order of an account, in one symbol or in all.

        Orders of the account's other sessions are cancelled too; this
        session's own cancellations arrive in :meth:`executions`.

        Parameters
        ----------
        symbol
            The symbol, or None for every symbol.
        account
            An account id (admin only), or 0 for the session's own account.

        Returns
        -------
        asyncio.Future of None
            Resolved by ``Done``; fails with :class:`RejectedError` (e.g.
            ``NOT_AUTHORISED``).
        """
        symbol_id = 0 if symbol is None else self.symbols[symbol].symbol
        _check_int("account", account, 0)
        msg = MassCancel(self._seq_out + 1, symbol_id, account)
        return self._request(_MASS_CANCEL, 0, msg)

    def halt(self, symbol: SymbolRef, halted: bool = True) -> asyncio.Future[None]:
        """Admin: halt (or resume, ``halted=False``) trading in a symbol.

        Parameters
        ----------
        symbol
            The symbol.
        halted
            True halts, False resumes.

        Returns
        -------
        asyncio.Future of None
            Resolved by ``Done`` (after the ``SymbolInfo`` broadcast, which
            updates :attr:`symbols`); fails with :class:`RejectedError`.
        """
        msg = Halt(self._seq_out + 1, self.symbols[symbol].symbol, bool(halted))
        return self._request(_HALT, 0, msg)

    def kill_switch(self, account: int = 0, active: bool = True) -> asyncio.Future[None]:
        """Admin: engage (or release) the kill switch.

        Parameters
        ----------
        account
            An account id, or 0 for every account.
        active
            True cancels every resting order and refuses new ones; False
            releases.

        Returns
        -------
        asyncio.Future of None
            Resolved by ``Done``; fails with :class:`RejectedError`.
        """
        _check_int("account", account, 0)
        msg = KillSwitch(self._seq_out + 1, account, bool(active))
        return self._request(_KILL_SWITCH, 0, msg)

    def sync(self) -> asyncio.Future[None]:
        """A barrier: resolved once everything caused by earlier requests has arrived.

        The daemon handles a session's messages in order, so the ``Done``
        answering an empty ``Subscribe`` comes after every answer, fill and
        cancellation caused by the requests sent before it.

        Returns
        -------
        asyncio.Future of None
            Resolved by that ``Done`` (or a ``Reject`` of it).
        """
        return self._request(_SYNC, 0, Subscribe(self._seq_out + 1, ()))

    async def subscribe(self, symbols: SymbolRef | Iterable[SymbolRef]) -> Subscription:
        """Subscribe to market data; returns once the snapshots arrived.

        Parameters
        ----------
        symbols
            One symbol or several (names, ids or ``SymbolInfo``).

        Returns
        -------
        Subscription
            An async iterator of ``BookSnapshot`` (one per symbol first),
            then ``LevelUpdate`` and ``Trade``.  :meth:`book` gives each
            symbol's current book while it is subscribed.

        Raises
        ------
        UnknownSymbolError
            A symbol the daemon did not announce.
        RejectedError
            The daemon refused the subscription.
        """
        refs: list[SymbolRef] = (
            [symbols] if isinstance(symbols, str | int | SymbolInfo) else list(symbols)
        )
        ids = tuple(dict.fromkeys(self.symbols[s].symbol for s in refs))
        if not ids:
            raise ValueError("subscribe needs at least one symbol")
        future: asyncio.Future[None] = self._request(
            _SUBSCRIBE, 0, Subscribe(self._seq_out + 1, ids)
        )
        sub = Subscription(self, ids)
        self._subs.append(sub)
        for symbol_id in ids:
            self._sub_refs[symbol_id] = self._sub_refs.get(symbol_id, 0) + 1
            if symbol_id not in self._books:
                self._books[symbol_id] = Book(self.symbols[symbol_id])
        try:
            await future
        except BaseException:
            sub._closed = True
            sub._finish(None)
            self._release(sub)
            raise
        return sub

    def _release(self, sub: Subscription) -> tuple[int, ...]:
        """Forget ``sub``; the symbols no subscription wants any more."""
        if sub in self._subs:
            self._subs.remove(sub)
        gone = []
        for symbol_id in sub.symbols:
            refs = self._sub_refs.get(symbol_id, 0) - 1
            if refs > 0:
                self._sub_refs[symbol_id] = refs
            else:
                self._sub_refs.pop(symbol_id, None)
                self._books.pop(symbol_id, None)
                gone.append(symbol_id)
        return tuple(gone)

    async def _unsubscribe(self, sub: Subscription) -> None:
        gone = self._release(sub)
        if gone and not self.closed:
            try:
                future: asyncio.Future[None] = self._request(
                    _UNSUBSCRIBE, 0, Unsubscribe(self._seq_out + 1, gone)
                )
                await future
            except (ClientClosedError, DisconnectedError):
                pass

    # -- reading ---------------------------------------------------------------------------

    def executions(self) -> Stream[Execution]:
        """The session's execution reports: every ``Fill`` and ``Cancelled``, in order.

        Buffered from the logon on (``buffer_executions``), including the
        ``Cancelled`` answering :meth:`cancel` and cancellations on logout.
        Always the same stream: consume it from one place.

        Returns
        -------
        Stream of Fill or Cancelled
            Ends after :meth:`close`; raises :class:`DisconnectedError`
            (after the buffered reports) if the daemon ended the session.
        """
        if self._executions is None:
            raise ClientError("this client was connected with buffer_executions=False")
        return self._executions

    def book(self, symbol: SymbolRef) -> Book:
        """The current book of a subscribed symbol.

        Parameters
        ----------
        symbol
            Name, id or ``SymbolInfo``.

        Returns
        -------
        Book
            Kept up to date from the market data as it arrives.

        Raises
        ------
        UnknownSymbolError
            Unknown symbol.
        ClientError
            The symbol is not subscribed.
        """
        info = self.symbols[symbol]
        book = self._books.get(info.symbol)
        if book is None:
            raise ClientError(f"{info.name} is not subscribed: call subscribe() first")
        return book

    @property
    def live_orders(self) -> frozenset[int]:
        """The ``cl_ord_id`` of every order of this session that may still rest or trade."""
        return frozenset(self._live)

    @property
    def closed(self) -> bool:
        """True once the session is closing or over."""
        return self._closing or self._transport is None or self._closed.done()

    @property
    def error(self) -> ClientError | None:
        """Why the session ended, if not by :meth:`close`; None otherwise."""
        return self._error

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either side)."""
        await asyncio.shield(self._closed)

    async def drain(self) -> None:
        """Wait while the transport's send buffer is over its high-water mark.

        Only useful to a client that sends faster than the daemon reads.
        """
        while self._write_paused and self._transport is not None:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def close(self, timeout: float = 2.0) -> None:
        """Log out and wait until the daemon closes the connection.

        Messages the daemon sends before closing (answers, ``Cancelled``
        with reason ``DISCONNECT`` for an account that cancels on
        disconnect) are still processed.  Pending futures then fail with
        :class:`ClientClosedError`; :meth:`executions` and subscriptions end.
        Safe to call more than once.

        Parameters
        ----------
        timeout
            Seconds to wait for the daemon to close before aborting.
        """
        transport = self._transport
        if transport is not None and not self._closing:
            if self._logged_on and not transport.is_closing():
                self._write(Logout(self._seq_out + 1))
            else:
                transport.close()
            self._closing = True
        if not self._closed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._closed), timeout)
            except TimeoutError:
                if self._transport is not None:
                    self._transport.abort()
                await asyncio.shield(self._closed)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Client {self.account}@{self.host}:{self.port} session={self.session_id} {state}>"

    # -- internals: writing ------------------------------------------------------------------

    def _closed_error(self) -> ClientError:
        return self._error or ClientClosedError("the session is closed")

    def _write(self, msg: ClientMessage) -> None:
        transport = self._transport
        if transport is None or self._closing or transport.is_closing():
            raise self._closed_error()
        out = self._out
        encode_frame(msg, out)
        transport.write(bytes(out))
        out.clear()
        self._seq_out = msg.seq
        self._last_sent = self._loop.time()

    def _request(self, kind: int, cl_ord_id: int, msg: ClientMessage) -> asyncio.Future[Any]:
        self._write(msg)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[msg.seq] = _Request(kind, cl_ord_id, future)
        return future

    def _alloc_cl_ord_id(self) -> int:
        cl_ord_id = self._next_cl_ord_id
        while cl_ord_id in self._live:
            cl_ord_id = cl_ord_id + 1 if cl_ord_id < _I64_MAX else 1
        self._next_cl_ord_id = cl_ord_id + 1 if cl_ord_id < _I64_MAX else 1
        return cl_ord_id

    def _resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            _resolve(waiter, None)

    async def _run_timer(self) -> None:
        """Heartbeats while idle; the end of a silent daemon's session."""
        heartbeat = self.heartbeat_ms / 1000
        idle = self.idle_timeout_ms / 1000
        loop = self._loop
        while self._transport is not None and not self._closing:
            now = loop.time()
            wake = math.inf
            if heartbeat > 0:
                due = self._last_sent + heartbeat
                if now >= due:
                    try:
                        self._write(Heartbeat(self._seq_out + 1))
                    except ClientError:
                        return  # the session is ending
                    due = now + heartbeat
                wake = due
            if idle > 0:
                deadline = self._last_recv + idle
                if now >= deadline:
                    self._fail_session(
                        DisconnectedError(
                            SessionReason.IDLE_TIMEOUT,
                            f"no message from the daemon for {self.idle_timeout_ms} ms",
                        )
                    )
                    return
                wake = min(wake, deadline)
            if wake == math.inf:
                return
            await asyncio.sleep(wake - now)

    def _fail_session(self, error: ClientError) -> None:
        if self._error is None:
            self._error = error
        if self._transport is not None:
            self._transport.abort()

    # -- internals: reading ------------------------------------------------------------------

    def _connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has its methods.
        self._transport = cast(asyncio.Transport, transport)

    def _received(self, messages: list[DaemonMessage | FrameError]) -> None:
        self._last_recv = self._loop.time()
        handlers = self._handlers
        for msg in messages:
            if self._error is not None:
                return
            if isinstance(msg, FrameError):
                if msg.reason == SessionReason.UNKNOWN_MESSAGE:
                    self._seq_in += 1  # a message of a newer protocol: skip it, it counts
                    continue
                self._fail_session(
                    DisconnectedError(None, f"bad frame from the daemon: {msg.text}")
                )
                return
            seq = msg.seq
            if seq != self._seq_in + 1:
                self._fail_session(
                    DisconnectedError(
                        None,
                        f"sequence gap from the daemon: expected {self._seq_in + 1}, got {seq}",
                    )
                )
                return
            self._seq_in = seq
            if not self._logged_on and type(msg) not in _BEFORE_LOGON:
                self._fail_session(
                    DisconnectedError(
                        None, f"unexpected {type(msg).__name__} from the daemon before LogonAck"
                    )
                )
                return
            handlers[type(msg)](msg)

    def _connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        error = self._error
        if error is None:
            d = self._disconnect
            if d is not None and not (self._closing and d.reason == SessionReason.LOGOUT):
                error = (
                    LogonError(d.reason, d.text)
                    if not self._logged_on
                    else DisconnectedError(d.reason, d.text)
                )
            elif d is None and not self._closing:
                detail = f": {exc}" if exc is not None else ""
                error = DisconnectedError(None, f"connection closed by the daemon{detail}")
            self._error = error
        closed_error = error or ClientClosedError("the session was closed")
        _fail(self._logon, closed_error)
        pending, self._pending = self._pending, {}
        for request in pending.values():
            _fail(request.future, closed_error)
        if self._executions is not None:
            self._executions._finish(error)
        for sub in self._subs:
            sub._finish(error)
        if self._timer is not None:
            self._timer.cancel()
        self._resume_writing()
        _resolve(self._closed, None)

    def _take(self, kind: int, cl_ord_id: int) -> _Request | None:
        """The oldest pending request of ``kind`` for ``cl_ord_id`` (answers come in order)."""
        for seq, request in self._pending.items():
            if request.kind == kind and request.cl_ord_id == cl_ord_id:
                del self._pending[seq]
                return request
        return None

    def _on_logon_ack(self, msg: LogonAck) -> None:
        if self._logged_on:
            self._fail_session(DisconnectedError(None, "a second LogonAck from the daemon"))
            return
        self.account_id = msg.account_id
        self.session_id = msg.session_id
        self.heartbeat_ms = msg.heartbeat_ms
        self.idle_timeout_ms = msg.idle_timeout_ms
        self.max_frame = msg.max_frame
        self._logged_on = True
        _resolve(self._logon, None)

    def _on_logon_reject(self, msg: LogonReject) -> None:
        self._fail_session(LogonError(msg.reason, msg.text))

    def _on_disconnect(self, msg: Disconnect) -> None:
        self._disconnect = msg
        if self._transport is not None:
            self._transport.close()

    def _on_symbol_info(self, msg: SymbolInfo) -> None:
        self.symbols._update(msg)
        book = self._books.get(msg.symbol)
        if book is not None:
            book.info = msg

    def _on_reject(self, msg: Reject) -> None:
        request = self._pending.pop(msg.ref_seq, None)
        if request is None:
            return  # e.g. a Reject of a Heartbeat: nothing waits for it
        if request.kind == _SYNC:
            _resolve(request.future, None)
            return
        if request.kind == _NEW:
            self._live.discard(request.cl_ord_id)
        cl_ord_id = request.cl_ord_id if request.kind in _ORDER_KINDS else None
        _fail(request.future, RejectedError(msg.reason, msg.text, msg.ref_seq, cl_ord_id))

    def _on_done(self, msg: Done) -> None:
        request = self._pending.pop(msg.ref_seq, None)
        if request is not None:
            _resolve(request.future, None)

    def _on_order_accepted(self, msg: OrderAccepted) -> None:
        request = self._take(_NEW, msg.cl_ord_id)
        if request is not None:
            _resolve(request.future, msg)

    def _on_order_rejected(self, msg: OrderRejected) -> None:
        request = self._pending.pop(msg.ref_seq, None)
        if request is None:
            return
        if request.kind == _NEW and msg.reason != Reason.DUPLICATE_ORDER_ID:
            self._live.discard(msg.cl_ord_id)
        _fail(request.future, RejectedError(msg.reason, msg.text, msg.ref_seq, msg.cl_ord_id))

    def _on_fill(self, msg: Fill) -> None:
        if msg.leaves_qty == 0:
            self._live.discard(msg.cl_ord_id)
        if self._executions is not None:
            self._executions._put(msg)

    def _on_cancelled(self, msg: Cancelled) -> None:
        self._live.discard(msg.cl_ord_id)
        if self._executions is not None:
            self._executions._put(msg)
        if msg.reason == Reason.USER_CANCEL:
            request = self._take(_CANCEL, msg.cl_ord_id)
            if request is not None:
                _resolve(request.future, msg)

    def _on_replaced(self, msg: Replaced) -> None:
        request = self._take(_REPLACE, msg.cl_ord_id)
        if request is not None:
            _resolve(request.future, msg)

    def _on_reduced(self, msg: Reduced) -> None:
        request = self._take(_REDUCE, msg.cl_ord_id)
        if request is not None:
            _resolve(request.future, msg)

    def _route(self, msg: MarketData) -> None:
        symbol = msg.symbol
        for sub in self._subs:
            if symbol in sub._ids:
                sub._deliver(msg)

    def _on_snapshot(self, msg: BookSnapshot) -> None:
        book = self._books.get(msg.symbol)
        if book is not None:
            book._snapshot(msg)
        self._route(msg)

    def _on_level_update(self, msg: LevelUpdate) -> None:
        book = self._books.get(msg.symbol)
        if book is not None:
            book._level(msg)
        self._route(msg)

    def _on_trade(self, msg: Trade) -> None:
        book = self._books.get(msg.symbol)
        if book is not None:
            book.last_trade = msg
        self._route(msg)


def _ignore(msg: object) -> None:
    pass


_BEFORE_LOGON: Final = frozenset({LogonAck, LogonReject, Disconnect, Heartbeat})
_ORDER_KINDS: Final = frozenset({_NEW, _CANCEL, _REPLACE, _REDUCE})
