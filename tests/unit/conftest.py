"""Shared helpers for the hand-written order book unit tests.

Every expected event is written out as an explicit 9-tuple
``(kind, order_id, side, price, qty, remaining, maker_id, taker_id, reason)``
derived by hand from ``docs/matching.md``; the small constructors below only
fill in the fields the spec says an event kind carries (all others are 0).

The test modules import these helpers with ``from conftest import ...``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

import lltrade
from lltrade import EventKind, Reason, Side

BUY = Side.BUY
SELL = Side.SELL

Event = tuple[int, int, int, int, int, int, int, int, int]

EVENT_FIELDS = (
    "kind",
    "order_id",
    "side",
    "price",
    "qty",
    "remaining",
    "maker_id",
    "taker_id",
    "reason",
)

MAX_ID = 2**63 - 1
_M64 = (1 << 64) - 1


# -- books -------------------------------------------------------------------


def new_book(min_price: int = 1, max_price: int = 1_000, **kwargs: Any) -> lltrade.OrderBook:
    """A fresh book; tick 1, lot 1 and the band 1..1000 unless told otherwise."""
    return lltrade.OrderBook(min_price, max_price, **kwargs)


def other(side: int) -> Side:
    return SELL if side == BUY else BUY


# -- expected events -----------------------------------------------------------


def ev(
    kind: int,
    oid: int = 0,
    side: int = 0,
    price: int = 0,
    qty: int = 0,
    rem: int = 0,
    maker: int = 0,
    taker: int = 0,
    reason: int = 0,
) -> Event:
    return (
        int(kind),
        int(oid),
        int(side),
        int(price),
        int(qty),
        int(rem),
        int(maker),
        int(taker),
        int(reason),
    )


def accepted(oid: int, side: int, price: int, qty: int) -> Event:
    """ACCEPTED: price = limit (0 for a market order), qty = remaining = order qty."""
    return ev(EventKind.ACCEPTED, oid, side, price, qty, qty)


def rejected(oid: int, reason: int) -> Event:
    return ev(EventKind.REJECTED, oid, reason=reason)


def fill(oid: int, side: int, price: int, qty: int, rem: int, maker: int, taker: int) -> Event:
    return ev(EventKind.FILL, oid, side, price, qty, rem, maker, taker)


def trade(
    taker_side: int,
    taker: int,
    maker: int,
    price: int,
    qty: int,
    taker_rem: int,
    maker_rem: int,
) -> list[Event]:
    """The FILL pair of one match: the taker's event first, then the maker's."""
    return [
        fill(taker, taker_side, price, qty, taker_rem, maker, taker),
        fill(maker, other(taker_side), price, qty, maker_rem, maker, taker),
    ]


def cancelled(oid: int, side: int, price: int, qty: int, reason: int) -> Event:
    """CANCELLED: qty = open quantity cancelled, remaining = 0."""
    return ev(EventKind.CANCELLED, oid, side, price, qty, 0, reason=reason)


def reduced(oid: int, side: int, price: int, removed: int, rem: int) -> Event:
    return ev(EventKind.REDUCED, oid, side, price, removed, rem)


def replaced(oid: int, side: int, price: int, qty: int) -> Event:
    return ev(EventKind.REPLACED, oid, side, price, qty, qty)


def level(side: int, price: int, total: int) -> Event:
    return ev(EventKind.LEVEL, 0, side, price, total)


def tup(events: Iterable[Any]) -> list[Event]:
    """Per-call events as plain int tuples (readable diffs on failure)."""
    out = []
    for e in events:
        t = e.as_tuple()
        assert len(t) == 9
        out.append(ev(*t))
    return out


# -- state hash (docs/matching.md, "State hash") --------------------------------


def _fold(h: int, v: int) -> int:
    z = ((h ^ (v & _M64)) + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def expected_hash(orders: Sequence[tuple[int, int, int, int, int]]) -> int:
    """The documented hash of a book whose ``orders()`` is ``orders``."""
    h = 0x6C6C7472616465
    for oid, side, price, qty, _account in orders:
        for v in (side, price, oid, qty):
            h = _fold(h, int(v))
    return _fold(h, len(orders))


def book_hash(book: lltrade.OrderBook) -> int:
    """``state_hash()`` read as an unsigned 64-bit value."""
    return int(book.state_hash()) & _M64


def snapshot(book: lltrade.OrderBook) -> tuple[Any, ...]:
    """Everything a query can see, to check that a command changed nothing."""
    return (
        book_hash(book),
        book.orders(),
        book.depth(1_000),
        book.best_bid(),
        book.best_ask(),
        len(book),
    )


# -- batch face --------------------------------------------------------------------


def c_add(
    oid: int,
    side: int,
    price: int,
    qty: int,
    *,
    tif: int = 0,
    post_only: int = 0,
    stp: int = 0,
    account: int = 0,
    symbol: int = 0,
) -> dict[str, int]:
    return {
        "op": int(lltrade.Op.ADD),
        "symbol": symbol,
        "order_id": oid,
        "side": int(side),
        "price": price,
        "qty": qty,
        "tif": int(tif),
        "post_only": post_only,
        "stp": int(stp),
        "account": account,
    }


def c_market(
    oid: int,
    side: int,
    qty: int,
    *,
    protection: int = -1,
    stp: int = 0,
    account: int = 0,
    symbol: int = 0,
) -> dict[str, int]:
    return {
        "op": int(lltrade.Op.MARKET),
        "symbol": symbol,
        "order_id": oid,
        "side": int(side),
        "qty": qty,
        "protection": protection,
        "stp": int(stp),
        "account": account,
    }


def c_cancel(oid: int, *, reason: int = 0, symbol: int = 0) -> dict[str, int]:
    return {"op": int(lltrade.Op.CANCEL), "symbol": symbol, "order_id": oid, "reason": int(reason)}


def c_reduce(oid: int, qty: int, *, symbol: int = 0) -> dict[str, int]:
    return {"op": int(lltrade.Op.REDUCE), "symbol": symbol, "order_id": oid, "qty": qty}


def c_replace(oid: int, price: int, qty: int, *, symbol: int = 0) -> dict[str, int]:
    return {
        "op": int(lltrade.Op.REPLACE),
        "symbol": symbol,
        "order_id": oid,
        "price": price,
        "qty": qty,
    }


def c_mass(account: int, *, reason: int = 0, symbol: int = 0) -> dict[str, int]:
    return {
        "op": int(lltrade.Op.MASS_CANCEL),
        "symbol": symbol,
        "account": account,
        "reason": int(reason),
    }


def commands(rows: Sequence[dict[str, int]]) -> np.ndarray:
    """A COMMAND_DTYPE array; unset fields are 0, ``protection`` is -1 (none)."""
    arr = np.zeros(len(rows), dtype=lltrade.COMMAND_DTYPE)
    arr["protection"] = -1
    for i, row in enumerate(rows):
        for name, value in row.items():
            arr[name][i] = value
    return arr


def event_buffer(n: int) -> np.ndarray:
    return np.zeros(n, dtype=lltrade.EVENT_DTYPE)


def rows(events: np.ndarray, n: int) -> list[Event]:
    """The first ``n`` batch events as 9-tuples."""
    return [ev(*(int(events[f][i]) for f in EVENT_FIELDS)) for i in range(n)]


def cmd_indices(events: np.ndarray, n: int) -> list[int]:
    return [int(x) for x in events["cmd"][:n]]


__all__ = [
    "BUY",
    "EVENT_FIELDS",
    "MAX_ID",
    "SELL",
    "Reason",
    "accepted",
    "book_hash",
    "c_add",
    "c_cancel",
    "c_market",
    "c_mass",
    "c_reduce",
    "c_replace",
    "cancelled",
    "cmd_indices",
    "commands",
    "ev",
    "event_buffer",
    "expected_hash",
    "fill",
    "level",
    "new_book",
    "other",
    "reduced",
    "rejected",
    "replaced",
    "rows",
    "snapshot",
    "trade",
    "tup",
]
