"""One interface over the order books the replay benchmark measures.

Every adapter has lltrade's per-call signatures, so lltrade's own methods are
bound directly with no wrapper in between::

    add(order_id, side, price, qty, *, tif)          # side: 1 buy, 2 sell; tif: 0 GTC, 1 IOC
    market(order_id, side, qty, *, protection_ticks)  # None = no cap
    cancel(order_id)
    reduce(order_id, qty)                             # qty = new open quantity
    replace(order_id, price, qty)
    best_bid() / best_ask() -> (price, total qty) | None
    close()

The peers are PyPI order books (the ``peers`` extra), read from their
installed sources:

``cython-orderbook`` 0.1.2 (``cython_orderbook.OrderBook``)
    ``add_limit_order(Order(side, qty, price))``, ``add_market_order(Order(side,
    qty))``, ``cancel_order(order_id: str)``.  Ids are strings it makes itself
    (a global counter), so the adapter keeps a dict from our ids to its ids.
    No IOC, no market protection, no reduce or replace.  Quantities are C
    ``int`` (32-bit).  Every fill appends a ``Trade`` dataclass with a
    ``datetime.now()`` to an unbounded ``trade_log``.  A level's
    ``total_quantity`` is not reduced when a maker is filled whole (it
    subtracts the maker's quantity after zeroing it), so an emptied level can
    stay in the book and ``best_bid()``/``best_ask()`` can name a price with
    no order; the adapter reports the best level that holds an order.
``fastlob`` 0.0.24 (``fastlob.Orderbook``)
    ``process(OrderParams(side, price, qty, OrderType.GTC))``,
    ``cancel(order_id: str)``, ``update(order_id, qty)``.  Decimal prices and
    quantities (2 decimals by default), random string ids
    (``secrets.token_urlsafe``), a logger call on every step, a lock per side,
    every order kept forever in ``_orders``, and ``start()`` runs a
    background thread (GTD expiry) that wakes every 100 ms.  A limit order
    that crosses is matched, its remainder rests; there is no IOC and no
    market order.  Its logger is set to ERROR (a cancel of a filled order
    logs a warning otherwise).

Commands a peer cannot express are translated as closely as its API allows
and the translation is listed in ``Peer.notes`` (the replay table prints it):

* IOC limit order: a GTC limit order, then a cancel of whatever rested;
* market order: cython-orderbook's own market order when there is no cap,
  else a limit order at ``best opposite +- protection_ticks * tick`` (read
  from the peer's book) treated as IOC; fastlob has no market order at all,
  so always the capped limit (or the band's far edge without a cap);
* reduce: fastlob's ``update`` (which keeps the order's place, as lltrade
  does); cython-orderbook has none, so cancel and add again (loses priority);
* replace: cancel and add again (fastlob's ``update`` cannot move a price).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

BUY, SELL = 1, 2
GTC, IOC = 0, 1

_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


class Peer(Protocol):
    """The face the replay drives (lltrade's per-call signatures)."""

    name: str
    notes: list[str]
    add: Callable[..., object]
    market: Callable[..., object]
    cancel: Callable[..., object]
    reduce: Callable[..., object]
    replace: Callable[..., object]

    def best_bid(self) -> tuple[int, int] | None: ...
    def best_ask(self) -> tuple[int, int] | None: ...
    def close(self) -> None: ...


class _Bound:
    """A book that already has lltrade's per-call face: its methods are bound as they are."""

    name = "?"

    def __init__(self, book: Any, notes: list[str]) -> None:
        self.book = book
        self.notes = notes
        self.add = book.add
        self.market = book.market
        self.cancel = book.cancel
        self.reduce = book.reduce
        self.replace = book.replace
        self.best_bid = book.best_bid
        self.best_ask = book.best_ask

    def __len__(self) -> int:
        return len(self.book)

    def state_hash(self) -> int:
        return int(self.book.state_hash())

    def close(self) -> None:
        pass


class LltradePeer(_Bound):
    """``lltrade.OrderBook``'s per-call face, methods bound directly."""

    name = "lltrade per-call"

    def __init__(self, min_price: int, max_price: int, tick: int = 1, lot: int = 1) -> None:
        import lltrade

        super().__init__(lltrade.OrderBook(min_price, max_price, tick, lot), [])


def reference_available() -> bool:
    """Whether ``tests/reference_book.py`` is there to import."""
    return os.path.exists(os.path.join(_TESTS, "reference_book.py"))


class ReferencePeer(_Bound):
    """The pure-Python reference book of the tests (``tests/reference_book.py``)."""

    name = "reference (pure Python)"

    def __init__(self, min_price: int, max_price: int, tick: int = 1, lot: int = 1) -> None:
        if _TESTS not in sys.path:
            sys.path.insert(0, _TESTS)
        ref = importlib.import_module("reference_book")
        notes = ["written for clarity, not speed"]
        super().__init__(ref.ReferenceBook(min_price, max_price, tick, lot), notes)


def _limit_for_market(
    best: int | None, side: int, protection_ticks: int | None, tick: int, band: tuple[int, int]
) -> int:
    """The limit price lltrade gives a market order, for peers that need a price."""
    if protection_ticks is None or best is None:
        return band[1] if side == BUY else band[0]
    return best + protection_ticks * tick if side == BUY else best - protection_ticks * tick


class CythonOrderbookPeer:
    """``cython-orderbook`` (PyPI ``cython-orderbook``, module ``cython_orderbook``)."""

    name = "cython-orderbook"

    def __init__(self, min_price: int, max_price: int, tick: int = 1, lot: int = 1) -> None:
        from cython_orderbook import Order, OrderBook, OrderSide

        self._Order = Order
        self._sides = {BUY: OrderSide.BID, SELL: OrderSide.ASK}
        self._book = OrderBook()
        self._tick = tick
        self._band = (min_price, max_price)
        self._ids: dict[int, str] = {}  # our id -> its id (filled ones are never removed)
        self.notes = [
            "own string ids (adapter maps ids)",
            "IOC = limit + cancel of the rest",
            "capped market = limit + cancel",
            "no reduce/replace (cancel + add)",
            "trade log grows per fill",
        ]

    def add(self, order_id: int, side: int, price: int, qty: int, *, tif: int = GTC) -> None:
        order = self._Order(self._sides[side], qty, price)
        self._book.add_limit_order(order)
        if order.remaining_quantity > 0:
            if tif == GTC:
                self._ids[order_id] = order.order_id
            else:
                self._book.cancel_order(order.order_id)

    def market(
        self, order_id: int, side: int, qty: int, *, protection_ticks: int | None = None
    ) -> None:
        if protection_ticks is None:
            self._book.add_market_order(self._Order(self._sides[side], qty))
            return
        best = self._best(SELL if side == BUY else BUY)
        price = _limit_for_market(
            None if best is None else best[0], side, protection_ticks, self._tick, self._band
        )
        self.add(order_id, side, price, qty, tif=IOC)

    def cancel(self, order_id: int) -> None:
        theirs = self._ids.pop(order_id, None)
        if theirs is not None:
            self._book.cancel_order(theirs)

    def _where(self, order_id: int) -> tuple[int, int, int] | None:
        theirs = self._ids.get(order_id)
        entry = None if theirs is None else self._book.orders.get(theirs)
        if entry is None:
            return None
        order = entry[1]
        side = BUY if order.side == self._sides[BUY] else SELL
        return side, int(order.price), int(order.remaining_quantity)

    def reduce(self, order_id: int, qty: int) -> None:
        where = self._where(order_id)
        if where is not None and 0 < qty < where[2]:
            self.cancel(order_id)
            self.add(order_id, where[0], where[1], qty)

    def replace(self, order_id: int, price: int, qty: int) -> None:
        where = self._where(order_id)
        if where is not None:
            self.cancel(order_id)
            self.add(order_id, where[0], price, qty)

    def _best(self, side: int) -> tuple[int, int] | None:
        levels = self._book.bids if side == BUY else self._book.asks
        for price, level in levels.items():  # best first
            if level.queue:  # skip levels its total-quantity drift left behind
                return int(price), sum(int(o.remaining_quantity) for o in level.queue.values())
        return None

    def best_bid(self) -> tuple[int, int] | None:
        return self._best(BUY)

    def best_ask(self) -> tuple[int, int] | None:
        return self._best(SELL)

    def stale_levels(self) -> int:
        """Levels the peer still lists with no order in them (its total-quantity bug)."""
        return sum(
            1
            for levels in (self._book.bids, self._book.asks)
            for lv in levels.values()
            if not lv.queue
        )

    def close(self) -> None:
        pass


class FastlobPeer:
    """``fastlob`` (PyPI ``fastlob``)."""

    name = "fastlob"
    _count = 0

    def __init__(self, min_price: int, max_price: int, tick: int = 1, lot: int = 1) -> None:
        import fastlob

        FastlobPeer._count += 1
        name = f"bench-{FastlobPeer._count}"
        logging.getLogger(f"[{name}]").setLevel(logging.ERROR)
        self._OrderParams = fastlob.OrderParams
        self._sides = {BUY: fastlob.OrderSide.BID, SELL: fastlob.OrderSide.ASK}
        self._kind_rests = {fastlob.ResultType.LIMIT, fastlob.ResultType.PARTIAL_MARKET}
        self._lob = fastlob.Orderbook(name)
        self._lob.start()
        self._tick = tick
        self._band = (min_price, max_price)
        self._ids: dict[int, str] = {}  # our id -> its id (filled ones are never removed)
        self.notes = [
            "own random ids (adapter maps ids)",
            "IOC = limit + cancel of the rest",
            "market = capped limit + cancel",
            "replace = cancel + add",
            "Decimal, logging, locks, GTD thread",
        ]

    def add(self, order_id: int, side: int, price: int, qty: int, *, tif: int = GTC) -> None:
        result = self._lob.process(self._OrderParams(self._sides[side], price, qty))
        if result.kind() in self._kind_rests:
            if tif == GTC:
                self._ids[order_id] = result.orderid()
            else:
                self._lob.cancel(result.orderid())

    def market(
        self, order_id: int, side: int, qty: int, *, protection_ticks: int | None = None
    ) -> None:
        best = self.best_ask() if side == BUY else self.best_bid()
        price = _limit_for_market(
            None if best is None else best[0], side, protection_ticks, self._tick, self._band
        )
        self.add(order_id, side, price, qty, tif=IOC)

    def cancel(self, order_id: int) -> None:
        theirs = self._ids.pop(order_id, None)
        if theirs is not None:
            self._lob.cancel(theirs)

    def reduce(self, order_id: int, qty: int) -> None:
        theirs = self._ids.get(order_id)
        if theirs is not None:
            self._lob.update(theirs, qty)

    def replace(self, order_id: int, price: int, qty: int) -> None:
        theirs = self._ids.get(order_id)
        if theirs is None:
            return
        order = self._lob._orders[theirs]
        if not order.valid():
            return
        side = BUY if order.side() == self._sides[BUY] else SELL
        self.cancel(order_id)
        self.add(order_id, side, price, qty)

    def _best(self, side: int) -> tuple[int, int] | None:
        lob = self._lob
        if (lob.n_bids() if side == BUY else lob.n_asks()) == 0:
            return None
        price, volume, _ = lob.best_bid() if side == BUY else lob.best_ask()
        return int(price), int(volume)

    def best_bid(self) -> tuple[int, int] | None:
        return self._best(BUY)

    def best_ask(self) -> tuple[int, int] | None:
        return self._best(SELL)

    def close(self) -> None:
        self._lob.stop()


PEERS: dict[str, type[CythonOrderbookPeer] | type[FastlobPeer]] = {
    "cython-orderbook": CythonOrderbookPeer,
    "fastlob": FastlobPeer,
}


def available_peers() -> dict[str, str | None]:
    """Each PyPI peer's name -> None if importable, else why not."""
    out: dict[str, str | None] = {}
    for name, module in (("cython-orderbook", "cython_orderbook"), ("fastlob", "fastlob")):
        try:
            importlib.import_module(module)
            out[name] = None
        except Exception as exc:  # an absent or broken peer is reported, never fatal
            out[name] = f"{type(exc).__name__}: {exc}"
    return out
