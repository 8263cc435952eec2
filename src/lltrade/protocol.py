"""The wire protocol between clients and the daemon.

A stream in either direction is a sequence of frames::

    +----------------------+------------------------------+
    | length: uint32 (LE)  | body: `length` bytes         |
    +----------------------+------------------------------+

The body is one MessagePack array ``[tag, seq, field, ...]``: the message's
integer tag, the sender's per-session sequence number, then the message's
fields in declaration order.  Every message is a frozen msgspec ``Struct``
(``array_like``, no GC tracking); the messages of one direction form one
tagged union (:data:`ClientMessage`, :data:`DaemonMessage`).  Prices are
integer price units, quantities integer quantity units; decimal conversion
happens only at the edge.  ``docs/protocol.md`` is the full specification.

Reading is done by :class:`FrameReader` (fed bytes cut anywhere, or used as
the buffer of an ``asyncio.BufferedProtocol``), writing by
:func:`encode_frame` into a reused ``bytearray``.
"""

from __future__ import annotations

import struct
import typing
from enum import IntEnum
from typing import Annotated, Final, Generic, TypeAlias, TypeVar

import msgspec

from lltrade.enums import STP, TIF, Reason, Side

__all__ = [
    "CLIENT_DECODER",
    "DAEMON_DECODER",
    "DEFAULT_MAX_CLIENT_FRAME",
    "DEFAULT_MAX_DAEMON_FRAME",
    "ENCODER",
    "HEADER_SIZE",
    "PROTOCOL_VERSION",
    "BookSnapshot",
    "Cancel",
    "Cancelled",
    "ClientMessage",
    "DaemonMessage",
    "Disconnect",
    "Done",
    "Fill",
    "FrameError",
    "FrameReader",
    "Halt",
    "Heartbeat",
    "KillSwitch",
    "LevelUpdate",
    "Logon",
    "LogonAck",
    "LogonReject",
    "Logout",
    "MassCancel",
    "Message",
    "NewOrder",
    "OrderAccepted",
    "OrderRejected",
    "Reduce",
    "Reduced",
    "Reject",
    "Replace",
    "Replaced",
    "SessionReason",
    "Subscribe",
    "SymbolInfo",
    "Trade",
    "Unsubscribe",
    "encode_frame",
    "frame",
    "reason_name",
]

PROTOCOL_VERSION: Final = 1
"""Sent in :class:`Logon`; the daemon refuses any other value."""

HEADER_SIZE: Final = 4
"""Size of the frame header: the payload length as a little-endian uint32."""

DEFAULT_MAX_CLIENT_FRAME: Final = 64 * 1024
"""Default limit on a client-to-daemon payload (``[server] max_frame``)."""

DEFAULT_MAX_DAEMON_FRAME: Final = 16 * 1024 * 1024
"""Default limit a client puts on a daemon-to-client payload (book snapshots)."""

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_I32_MAX: Final = 2**31 - 1


class SessionReason(IntEnum):
    """Session-level reasons: why a message, a logon or a connection was refused.

    Numbered 60-79, they share one number space with
    :class:`lltrade.enums.Reason` (0-59), so a ``reason`` field on the wire
    is never ambiguous.
    """

    NOT_LOGGED_ON = 60  #: only Logon and Heartbeat are allowed before a LogonAck
    BAD_CREDENTIALS = 61  #: unknown account or wrong secret (not told apart)
    MALFORMED = 62  #: the body is not a valid message (bad MessagePack, types, ranges)
    UNKNOWN_MESSAGE = 63  #: well-formed array whose tag names no message of this direction
    RATE_LIMITED = 64  #: over the account's msg_rate_per_s; the message was dropped
    SEQUENCE_GAP = 65  #: seq is not the previous seq + 1
    FRAME_TOO_LARGE = 66  #: length prefix above the limit: the stream is lost
    ALREADY_LOGGED_ON = 67  #: a second Logon on a logged-on session
    UNSUPPORTED_VERSION = 68  #: Logon.version is not PROTOCOL_VERSION
    LOGOUT = 69  #: the client asked to log out
    SHUTDOWN = 70  #: the daemon is stopping
    IDLE_TIMEOUT = 71  #: nothing received for idle_timeout_ms (or no Logon in time)
    SLOW_CONSUMER = 72  #: the session's outbound buffer passed its bound


def reason_name(code: int) -> str:
    """The name of a wire reason code (``Reason`` or ``SessionReason``).

    Parameters
    ----------
    code
        A ``reason`` field as received.

    Returns
    -------
    str
        The member name, or ``"REASON_<code>"`` for a number neither enum knows.
    """
    for enum in (Reason, SessionReason):
        try:
            return enum(code).name
        except ValueError:
            pass
    return f"REASON_{code}"


# -- field types ----------------------------------------------------------------
# Each alias carries its range (checked on decode: a value outside it is
# MALFORMED) and a description; a field may add its own description in front
# (``Annotated[Qty, Meta(description=...)]``).  docs/protocol.md's message
# tables are generated from these.

Seq = Annotated[
    int,
    msgspec.Meta(ge=0, le=_I64_MAX, description="sender's sequence number, see Sequence numbers"),
]
RefSeq = Annotated[
    int, msgspec.Meta(ge=0, le=_I64_MAX, description="seq of the client message this answers")
]
ClOrdId = Annotated[
    int,
    msgspec.Meta(
        ge=1, le=_I64_MAX, description="client order id, unique among the session's live orders"
    ),
]
OrderId = Annotated[
    int, msgspec.Meta(ge=1, le=_I64_MAX, description="daemon-wide order id assigned on acceptance")
]
ExecId = Annotated[
    int, msgspec.Meta(ge=1, le=_I64_MAX, description="daemon-wide id of one match (trade)")
]
SymbolId = Annotated[
    int, msgspec.Meta(ge=1, le=_I32_MAX, description="symbol id (SymbolInfo.symbol)")
]
AnySymbol = Annotated[
    int, msgspec.Meta(ge=0, le=_I32_MAX, description="symbol id, or 0 for every symbol")
]
AccountId = Annotated[int, msgspec.Meta(ge=1, le=_I64_MAX, description="account id")]
AnyAccount = Annotated[
    int, msgspec.Meta(ge=0, le=_I64_MAX, description="account id, or 0 for the own account")
]
Price = Annotated[
    int,
    msgspec.Meta(ge=_I64_MIN, le=_I64_MAX, description="price units"),
]
Qty = Annotated[
    int,
    msgspec.Meta(ge=_I64_MIN, le=_I64_MAX, description="qty units"),
]
Millis = Annotated[int, msgspec.Meta(ge=0, le=_I64_MAX, description="ms")]
Decimals = Annotated[int, msgspec.Meta(ge=0, le=18, description="decimal places")]
ReasonCode = Annotated[
    int, msgspec.Meta(ge=0, le=65535, description="reason code, see Reason codes")
]
Text = Annotated[str, msgspec.Meta(description="human-readable detail, may be empty")]
Levels = Annotated[
    tuple[tuple[Price, Qty], ...],
    msgspec.Meta(description="[price, qty] pairs, best price first"),
]
SideField = Annotated[Side, msgspec.Meta(description="Side: 1 BUY, 2 SELL")]
Symbols = Annotated[tuple[SymbolId, ...], msgspec.Meta(description="symbol ids")]


# -- messages -------------------------------------------------------------------


class _Message(
    msgspec.Struct,
    array_like=True,
    frozen=True,
    gc=False,
    forbid_unknown_fields=True,
):
    """Every message: ``[tag, seq, ...]``."""

    seq: Seq


class Heartbeat(_Message, tag=1, frozen=True):
    """Sent by either side after heartbeat_ms without sending anything else."""


# Client to daemon: tags 2-31.


class Logon(_Message, tag=2, frozen=True):
    """First message of a session."""

    version: Annotated[int, msgspec.Meta(ge=0, le=65535, description="PROTOCOL_VERSION (1)")]
    account: Annotated[str, msgspec.Meta(max_length=64, description="account name")]
    secret: Annotated[str, msgspec.Meta(max_length=256, description="the account's secret")]


class Logout(_Message, tag=3, frozen=True):
    """End the session; the daemon answers Disconnect(LOGOUT) and closes."""


class NewOrder(_Message, tag=4, frozen=True):
    """Enter a limit order."""

    cl_ord_id: ClOrdId
    symbol: SymbolId
    side: SideField
    price: Annotated[Price, msgspec.Meta(description="limit price")]
    qty: Annotated[Qty, msgspec.Meta(description="order quantity")]
    tif: Annotated[TIF, msgspec.Meta(description="TIF: 0 GTC, 1 IOC, 2 FOK")]
    post_only: Annotated[
        bool, msgspec.Meta(description="only ever a maker; rejected if it would cross")
    ]
    stp: Annotated[
        STP,
        msgspec.Meta(description="STP: 0 NONE, 1 CANCEL_RESTING, 2 CANCEL_INCOMING, 3 CANCEL_BOTH"),
    ]


class Cancel(_Message, tag=5, frozen=True):
    """Cancel one of the session's resting orders."""

    cl_ord_id: ClOrdId


class Replace(_Message, tag=6, frozen=True):
    """Change price and open quantity of a resting order (keeps its cl_ord_id)."""

    cl_ord_id: ClOrdId
    price: Annotated[Price, msgspec.Meta(description="new limit price")]
    qty: Annotated[Qty, msgspec.Meta(description="new open quantity")]


class Reduce(_Message, tag=7, frozen=True):
    """Lower the open quantity of a resting order, keeping its queue place."""

    cl_ord_id: ClOrdId
    qty: Annotated[Qty, msgspec.Meta(description="new open quantity, below the current one")]


class MassCancel(_Message, tag=8, frozen=True):
    """Cancel every resting order of an account, in one symbol or all."""

    symbol: AnySymbol
    account: AnyAccount


class Subscribe(_Message, tag=9, frozen=True):
    """Start market data (snapshot, then level updates and trades) for symbols."""

    symbols: Symbols


class Unsubscribe(_Message, tag=10, frozen=True):
    """Stop market data for symbols."""

    symbols: Symbols


class Halt(_Message, tag=11, frozen=True):
    """Admin: halt or resume trading in a symbol."""

    symbol: SymbolId
    halted: Annotated[bool, msgspec.Meta(description="true halts, false resumes")]


class KillSwitch(_Message, tag=12, frozen=True):
    """Admin: cancel everything and refuse new orders (or lift that)."""

    account: Annotated[
        int, msgspec.Meta(ge=0, le=_I64_MAX, description="account id, or 0 for every account")
    ]
    active: Annotated[bool, msgspec.Meta(description="true engages, false releases")]


# Daemon to client, session: tags 32-39.


class LogonAck(_Message, tag=32, frozen=True):
    """The Logon succeeded."""

    account_id: AccountId
    session_id: Annotated[
        int, msgspec.Meta(ge=1, le=_I64_MAX, description="daemon-wide session id")
    ]
    heartbeat_ms: Annotated[
        Millis, msgspec.Meta(description="send a Heartbeat after this long without sending")
    ]
    idle_timeout_ms: Annotated[
        Millis, msgspec.Meta(description="the daemon disconnects after this long without receiving")
    ]
    max_frame: Annotated[
        int, msgspec.Meta(ge=0, le=2**32 - 1, description="largest payload the daemon accepts")
    ]


class LogonReject(_Message, tag=33, frozen=True):
    """The Logon failed; the daemon closes the connection after it."""

    reason: ReasonCode
    text: Text


class SymbolInfo(_Message, tag=34, frozen=True):
    """A tradable symbol: sent after LogonAck for every symbol, and again on change."""

    symbol: SymbolId
    name: Annotated[str, msgspec.Meta(description="symbol name")]
    tick: Annotated[int, msgspec.Meta(ge=1, le=_I64_MAX, description="price grid, price units")]
    lot: Annotated[int, msgspec.Meta(ge=1, le=_I64_MAX, description="quantity grid, qty units")]
    min_price: Annotated[Price, msgspec.Meta(description="lowest allowed price")]
    max_price: Annotated[Price, msgspec.Meta(description="highest allowed price")]
    reference_price: Annotated[Price, msgspec.Meta(description="centre of the price collar")]
    price_decimals: Annotated[
        Decimals, msgspec.Meta(description="decimal price = price * 10^-price_decimals")
    ]
    qty_decimals: Annotated[
        Decimals, msgspec.Meta(description="decimal qty = qty * 10^-qty_decimals")
    ]
    halted: Annotated[bool, msgspec.Meta(description="trading halted: only cancels allowed")]


class Disconnect(_Message, tag=35, frozen=True):
    """Last message before the daemon closes the connection (best effort)."""

    reason: ReasonCode
    text: Text


class Reject(_Message, tag=36, frozen=True):
    """A client message refused before the engine saw it (malformed, not allowed, ...)."""

    ref_seq: RefSeq
    reason: ReasonCode
    text: Text


class Done(_Message, tag=37, frozen=True):
    """All effects of a MassCancel, Subscribe, Unsubscribe, Halt or KillSwitch were sent."""

    ref_seq: RefSeq


# Daemon to client, orders: tags 40-47.


class OrderAccepted(_Message, tag=40, frozen=True):
    """A NewOrder passed risk and validation; fills, if any, follow."""

    cl_ord_id: ClOrdId
    order_id: OrderId
    symbol: SymbolId
    side: SideField
    price: Annotated[Price, msgspec.Meta(description="limit price")]
    qty: Annotated[Qty, msgspec.Meta(description="order quantity")]


class OrderRejected(_Message, tag=41, frozen=True):
    """A NewOrder, Cancel, Replace or Reduce was refused by risk or by the book."""

    ref_seq: RefSeq
    cl_ord_id: ClOrdId
    reason: ReasonCode
    text: Text


class Fill(_Message, tag=42, frozen=True):
    """One of the session's orders traded."""

    cl_ord_id: ClOrdId
    order_id: OrderId
    symbol: SymbolId
    side: SideField
    exec_id: ExecId
    price: Annotated[Price, msgspec.Meta(description="trade price (the maker's limit)")]
    qty: Annotated[Qty, msgspec.Meta(description="quantity traded")]
    leaves_qty: Annotated[Qty, msgspec.Meta(description="open quantity left, 0 = filled")]
    maker: Annotated[bool, msgspec.Meta(description="true: the order was resting (maker)")]


class Cancelled(_Message, tag=43, frozen=True):
    """One of the session's orders left the book without trading."""

    cl_ord_id: ClOrdId
    order_id: OrderId
    symbol: SymbolId
    side: SideField
    price: Annotated[Price, msgspec.Meta(description="limit price")]
    cancelled_qty: Annotated[Qty, msgspec.Meta(description="open quantity cancelled")]
    reason: ReasonCode


class Replaced(_Message, tag=44, frozen=True):
    """A Replace was applied; fills may follow if the new price crosses."""

    cl_ord_id: ClOrdId
    order_id: OrderId
    symbol: SymbolId
    side: SideField
    price: Annotated[Price, msgspec.Meta(description="new limit price")]
    qty: Annotated[Qty, msgspec.Meta(description="new open quantity")]


class Reduced(_Message, tag=45, frozen=True):
    """A Reduce was applied."""

    cl_ord_id: ClOrdId
    order_id: OrderId
    symbol: SymbolId
    side: SideField
    price: Annotated[Price, msgspec.Meta(description="limit price")]
    removed_qty: Annotated[Qty, msgspec.Meta(description="quantity removed")]
    leaves_qty: Annotated[Qty, msgspec.Meta(description="new open quantity")]


# Daemon to client, market data: tags 48-55.


class BookSnapshot(_Message, tag=48, frozen=True):
    """Every level of a book; level updates for the symbol follow it."""

    symbol: SymbolId
    bids: Levels
    asks: Levels


class LevelUpdate(_Message, tag=49, frozen=True):
    """The total quantity at one price level changed."""

    symbol: SymbolId
    side: SideField
    price: Annotated[Price, msgspec.Meta(description="level price")]
    qty: Annotated[
        int, msgspec.Meta(ge=0, le=_I64_MAX, description="new total quantity, 0 = level gone")
    ]


class Trade(_Message, tag=50, frozen=True):
    """A public trade print."""

    symbol: SymbolId
    exec_id: ExecId
    price: Annotated[Price, msgspec.Meta(description="trade price")]
    qty: Annotated[Qty, msgspec.Meta(description="quantity traded")]
    aggressor: Annotated[Side, msgspec.Meta(description="Side of the taker")]


ClientMessage: TypeAlias = (
    Heartbeat
    | Logon
    | Logout
    | NewOrder
    | Cancel
    | Replace
    | Reduce
    | MassCancel
    | Subscribe
    | Unsubscribe
    | Halt
    | KillSwitch
)
"""Everything a client may send."""

DaemonMessage: TypeAlias = (
    Heartbeat
    | LogonAck
    | LogonReject
    | SymbolInfo
    | Disconnect
    | Reject
    | Done
    | OrderAccepted
    | OrderRejected
    | Fill
    | Cancelled
    | Replaced
    | Reduced
    | BookSnapshot
    | LevelUpdate
    | Trade
)
"""Everything the daemon may send."""

Message: TypeAlias = ClientMessage | DaemonMessage


# -- encoding -----------------------------------------------------------------------

ENCODER: Final = msgspec.msgpack.Encoder()
"""The one encoder; both directions use it."""

CLIENT_DECODER: Final[msgspec.msgpack.Decoder[ClientMessage]] = msgspec.msgpack.Decoder(
    ClientMessage
)
"""Decodes what clients send (used by the daemon)."""

DAEMON_DECODER: Final[msgspec.msgpack.Decoder[DaemonMessage]] = msgspec.msgpack.Decoder(
    DaemonMessage
)
"""Decodes what the daemon sends (used by clients)."""

_LENGTH: Final = struct.Struct("<I")
_HEADER_PLACEHOLDER: Final = bytes(HEADER_SIZE)


def encode_frame(msg: Message, buf: bytearray) -> None:
    """Append one frame carrying ``msg`` to ``buf``.

    The body is encoded in place after a placeholder header, whose length is
    then filled in: no temporary ``bytes`` per message.

    Parameters
    ----------
    msg
        Any message of either direction.
    buf
        A reused output buffer; it must not be exported (no live
        ``memoryview``), since it grows.
    """
    start = len(buf)
    buf += _HEADER_PLACEHOLDER
    ENCODER.encode_into(msg, buf, start + HEADER_SIZE)
    _LENGTH.pack_into(buf, start, len(buf) - start - HEADER_SIZE)


def frame(msg: Message) -> bytes:
    """One complete frame as ``bytes`` (convenience; the hot path uses :func:`encode_frame`)."""
    buf = bytearray()
    encode_frame(msg, buf)
    return bytes(buf)


# -- decoding -----------------------------------------------------------------------


class FrameError(msgspec.Struct, frozen=True, gc=False):
    """A frame that did not decode, in place of a message in :meth:`FrameReader.feed`'s output.

    Attributes
    ----------
    reason
        ``MALFORMED`` or ``UNKNOWN_MESSAGE`` (recoverable: answer with a
        Reject and go on), or ``FRAME_TOO_LARGE`` (fatal).
    text
        What was wrong, e.g. ``Expected `int`, got `str` - at `$[3]```.
    fatal
        True when the stream cannot be resynchronised: the caller must
        disconnect.  The reader ignores everything fed to it afterwards.
    tag
        The body's tag when it could be read, else None.
    """

    reason: SessionReason
    text: str
    fatal: bool
    tag: int | None = None


M = TypeVar("M")

_MIN_READ: Final = 16 * 1024


class FrameReader(Generic[M]):
    """Cut a byte stream into frames and decode them.

    Feed it bytes split anywhere (:meth:`feed`), or let a
    ``asyncio.BufferedProtocol`` read straight into its buffer
    (:meth:`get_buffer`, :meth:`buffer_updated`).  Each complete frame
    becomes one decoded message or one :class:`FrameError` in the output
    list, in stream order.  Frames are decoded from the reader's own buffer
    through a ``memoryview``: the only copies are the bytes of a partial
    frame moved to the front of the buffer, and :meth:`feed`'s copy in.

    Parameters
    ----------
    decoder
        :data:`CLIENT_DECODER` in the daemon, :data:`DAEMON_DECODER` in a client.
    max_frame
        Largest payload accepted; a larger length prefix is fatal.
    buffer_size
        Initial buffer size.  The buffer grows (outside the per-frame loop)
        only when a single frame does not fit.
    """

    __slots__ = ("_buf", "_decode", "_end", "_failed", "_max_frame", "_start", "_tags", "_view")

    def __init__(
        self,
        decoder: msgspec.msgpack.Decoder[M],
        max_frame: int = DEFAULT_MAX_CLIENT_FRAME,
        buffer_size: int = 64 * 1024,
    ) -> None:
        if not 0 <= max_frame <= 2**32 - 1:
            raise ValueError(f"max_frame must be in 0 .. 2**32 - 1, got {max_frame}")
        if buffer_size < HEADER_SIZE:
            raise ValueError(f"buffer_size must be >= {HEADER_SIZE}, got {buffer_size}")
        self._decode = decoder.decode
        self._tags = _tags_of(decoder.type)
        self._max_frame = max_frame
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet consumed
        self._end = 0  # end of the bytes received
        self._failed = False

    @property
    def failed(self) -> bool:
        """True after a fatal error: the connection must be closed."""
        return self._failed

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return self._end - self._start

    # -- BufferedProtocol face ---------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Free space to receive into (``BufferedProtocol.get_buffer``)."""
        self._make_room(_MIN_READ)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int, out: list[M | FrameError]) -> list[M | FrameError]:
        """Account for ``nbytes`` written into :meth:`get_buffer`'s view; decode what is complete.

        Returns ``out`` with the decoded messages and errors appended.
        """
        if not self._failed:  # after a fatal error the bytes are dropped
            self._end += nbytes
            self._parse(out)
        return out

    def received(self, nbytes: int) -> None:
        """Account for ``nbytes`` written into :meth:`get_buffer`'s view, decoding nothing.

        For a reader whose frames are taken from ``_buf[_start:_end]`` by C code
        (the daemon's read path, ``lltrade._inbound``), which advances
        ``_start``; :meth:`next_message` decodes one frame the C code left.
        """
        if not self._failed:
            self._end += nbytes

    def next_message(self) -> M | FrameError | None:
        """Decode the next complete frame, or None if there is none."""
        out: list[M | FrameError] = []
        self._parse(out, one=True)
        return out[0] if out else None

    # -- plain face -----------------------------------------------------------------

    def feed(
        self,
        data: bytes | bytearray | memoryview,
        out: list[M | FrameError] | None = None,
    ) -> list[M | FrameError]:
        """Add received bytes and decode every frame they complete.

        Parameters
        ----------
        data
            The next bytes of the stream, cut anywhere.
        out
            A list to append to (reuse one to avoid a list per call).

        Returns
        -------
        list
            ``out`` (or a new list) with messages and :class:`FrameError`
            results appended, in stream order.  After a fatal error nothing
            more is appended.
        """
        if out is None:
            out = []
        src = memoryview(data)
        if src.format != "B" or src.ndim != 1:
            src = src.cast("B")
        total = src.nbytes
        pos = 0
        while pos < total and not self._failed:
            self._make_room(min(total - pos, _MIN_READ))
            n = min(len(self._buf) - self._end, total - pos)
            end = self._end
            self._view[end : end + n] = src[pos : pos + n]
            self._end = end + n
            pos += n
            self._parse(out)
        return out

    # -- internals -------------------------------------------------------------------

    def _parse(self, out: list[M | FrameError], one: bool = False) -> None:
        buf = self._buf
        view = self._view
        decode = self._decode
        unpack = _LENGTH.unpack_from
        max_frame = self._max_frame
        append = out.append
        start = self._start
        end = self._end
        last_header = end - HEADER_SIZE
        while start <= last_header:
            length: int = unpack(buf, start)[0]
            if length > max_frame:
                self._failed = True
                append(
                    FrameError(
                        SessionReason.FRAME_TOO_LARGE,
                        f"frame length {length} > limit {max_frame}",
                        True,
                    )
                )
                start = end
                break
            body_start = start + HEADER_SIZE
            start = body_start + length
            if start > end:
                start = body_start - HEADER_SIZE
                break
            body = view[body_start:start]
            try:
                append(decode(body))
            except msgspec.DecodeError as exc:  # ValidationError is a subclass
                append(self._classify(body, exc))
            if one:
                break
        self._start = start

    def _classify(self, body: memoryview, exc: msgspec.DecodeError) -> FrameError:
        tag = _peek_tag(body)
        if tag is not None and tag not in self._tags:
            return FrameError(
                SessionReason.UNKNOWN_MESSAGE, f"unknown message tag {tag}", False, tag
            )
        return FrameError(SessionReason.MALFORMED, str(exc), False, tag)

    def _make_room(self, want: int) -> None:
        """Make at least ``want`` bytes free after ``_end``, and room for the pending frame."""
        start, end = self._start, self._end
        pending = end - start
        if pending == 0:
            self._start = self._end = 0
            start = end = 0
        need = want
        if pending >= HEADER_SIZE and not self._failed:
            length = _LENGTH.unpack_from(self._buf, start)[0]
            if length <= self._max_frame:
                need = max(need, HEADER_SIZE + length - pending)
        size = len(self._buf)
        if size - end >= need:
            return
        if size - pending >= need:
            if pending:
                self._view[0:pending] = self._view[start:end]
        else:
            new_size = size
            while new_size - pending < need:
                new_size *= 2
            buf = bytearray(new_size)
            buf[0:pending] = self._view[start:end]
            self._buf = buf
            self._view = memoryview(buf)
        self._start = 0
        self._end = pending


def _tags_of(union: object) -> frozenset[int]:
    tags = set()
    for cls in typing.get_args(union) or (union,):
        tag = getattr(getattr(cls, "__struct_config__", None), "tag", None)
        if isinstance(tag, int):
            tags.add(tag)
    return frozenset(tags)


def _peek_tag(body: memoryview) -> int | None:
    """The first element of a MessagePack array if it is an integer, else None.

    Only called for a body that failed to decode, to tell an unknown tag from
    a malformed message.
    """
    n = len(body)
    if n == 0:
        return None
    b = body[0]
    if 0x90 <= b <= 0x9F:  # fixarray
        pos = 1
        count = b & 0x0F
    elif b == 0xDC and n >= 3:  # array 16
        pos = 3
        count = int.from_bytes(body[1:3], "big")
    elif b == 0xDD and n >= 5:  # array 32
        pos = 5
        count = int.from_bytes(body[1:5], "big")
    else:
        return None
    if count == 0 or pos >= n:
        return None
    b = body[pos]
    if b <= 0x7F:  # positive fixint
        return b
    if b >= 0xE0:  # negative fixint
        return b - 0x100
    widths = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    width = widths.get(b)
    if width is None or pos + 1 + width > n:
        return None
    return int.from_bytes(body[pos + 1 : pos + 1 + width], "big", signed=b >= 0xD0)
