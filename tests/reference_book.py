"""A slow, obviously correct order book: docs/matching.md in plain Python.

``ReferenceBook`` has the per-call face of ``lltrade.OrderBook`` and returns
each call's events as tuples in ``Event.as_tuple()`` order, so the tests can
compare the two event by event.  It is written for clarity, never for speed:
a dict of price -> FIFO list per side, ``min``/``max``/``sorted`` over the
prices whenever the best level is needed, and one method per rule of the doc.
It imports nothing from the engine but the enums.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from lltrade.enums import STP, TIF, EventKind, Reason, Side

MAX_ORDER_ID = 2**63 - 1
MASK64 = 2**64 - 1
HASH_SEED = 0x6C6C7472616465


class Ev(NamedTuple):
    """One event, fields in ``Event.as_tuple()`` order (a plain tuple too)."""

    kind: int
    order_id: int
    side: int
    price: int
    qty: int
    remaining: int
    maker_id: int
    taker_id: int
    reason: int


def _ev(*fields: int) -> Ev:
    """An ``Ev`` of plain ints (no enum members), so reprs stay short."""
    return Ev(*(int(f) for f in fields))


def format_event(ev: tuple[int, ...]) -> str:
    """Readable one-line form of an event tuple, for failure messages."""
    kind, oid, side, price, qty, remaining, maker, taker, reason = ev
    text = f"{_name(EventKind, kind)}(id={oid} side={_name(Side, side)} px={price} qty={qty}"
    text += f" rem={remaining}"
    if maker or taker:
        text += f" maker={maker} taker={taker}"
    if reason:
        text += f" reason={_name(Reason, reason)}"
    return text + ")"


def format_events(events: list[tuple[int, ...]]) -> str:
    return "\n".join("    " + format_event(ev) for ev in events) or "    (no events)"


def _name(enum_cls: type[IntEnum], value: int) -> str:
    try:
        return enum_cls(value).name
    except ValueError:
        return str(value)


def fold(h: int, v: int) -> int:
    """One step of the documented state-hash fold (splitmix64 finaliser)."""
    z = ((h ^ (v & MASK64)) + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _member(enum_cls: type[IntEnum], value: object, name: str) -> int:
    """The enum argument as an int; ValueError naming the parameter if out of range."""
    try:
        return int(enum_cls(value))
    except (ValueError, TypeError):
        allowed = ", ".join(str(int(m)) for m in enum_cls)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


@dataclass(eq=False)
class _Order:
    order_id: int
    side: int
    price: int  # limit price; 0 for a market order
    qty: int  # open quantity
    account: int
    stp: int
    post_only: bool


class ReferenceBook:
    """Pure-Python model of ``lltrade.OrderBook`` (see docs/matching.md).

    ``capacity`` is accepted for signature compatibility and ignored;
    ``max_orders=None`` means no limit on resting orders.
    """

    def __init__(
        self,
        min_price: int,
        max_price: int,
        tick: int = 1,
        lot: int = 1,
        symbol_id: int = 0,
        *,
        max_qty: int = 10**12,
        max_orders: int | None = None,
        capacity: int | None = None,
    ) -> None:
        self.min_price = min_price
        self.max_price = max_price
        self.tick = tick
        self.lot = lot
        self.symbol_id = symbol_id
        self.max_qty = max_qty
        self.max_orders = max_orders
        # side -> price -> resting orders, oldest first
        self._levels: dict[int, dict[int, list[_Order]]] = {Side.BUY: {}, Side.SELL: {}}
        self._by_id: dict[int, _Order] = {}
        # (side, price) -> level total before the command, in first-touch order
        self._touched: dict[tuple[int, int], int] = {}

    # -- queries -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def best_bid(self) -> tuple[int, int] | None:
        return self._best_level(Side.BUY)

    def best_ask(self) -> tuple[int, int] | None:
        return self._best_level(Side.SELL)

    def depth(
        self, levels: int = 10
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        def side_depth(side: int) -> list[tuple[int, int, int]]:
            book = self._levels[side]
            return [
                (price, sum(o.qty for o in book[price]), len(book[price]))
                for price in self._prices_best_first(side)[:levels]
            ]

        return side_depth(Side.BUY), side_depth(Side.SELL)

    def orders(self) -> list[tuple[int, int, int, int, int]]:
        return [(o.order_id, o.side, o.price, o.qty, o.account) for o in self._all_orders()]

    def state_hash(self) -> int:
        h = HASH_SEED
        count = 0
        for o in self._all_orders():
            for v in (o.side, o.price, o.order_id, o.qty):
                h = fold(h, v)
            count += 1
        return fold(h, count)

    # -- commands ------------------------------------------------------------

    def add(
        self,
        order_id: int,
        side: int,
        price: int,
        qty: int,
        *,
        tif: int = TIF.GTC,
        post_only: bool = False,
        account: int = 0,
        stp: int = STP.NONE,
    ) -> list[Ev]:
        side = _member(Side, side, "side")
        tif = _member(TIF, tif, "tif")
        stp = _member(STP, stp, "stp")
        post_only = bool(post_only)
        reason = Reason.NONE
        if not 0 < order_id <= MAX_ORDER_ID:
            reason = Reason.INVALID_ORDER_ID
        elif post_only and tif != TIF.GTC:
            reason = Reason.INVALID_FLAGS
        elif not self._qty_ok(qty):
            reason = Reason.INVALID_QTY
        elif price % self.tick != 0:
            reason = Reason.PRICE_OFF_TICK
        elif not self.min_price <= price <= self.max_price:
            reason = Reason.PRICE_OUT_OF_BAND
        elif order_id in self._by_id:
            reason = Reason.DUPLICATE_ORDER_ID
        elif post_only and self._would_cross(side, price):
            reason = Reason.POST_ONLY_WOULD_CROSS
        elif tif == TIF.GTC and self.max_orders is not None and len(self) >= self.max_orders:
            reason = Reason.POOL_EXHAUSTED
        if reason:
            return [_rejected(order_id, reason)]

        self._touched = {}
        order = _Order(order_id, side, price, qty, account, stp, post_only)
        events = [_ev(EventKind.ACCEPTED, order_id, side, price, qty, qty, 0, 0, 0)]
        if tif == TIF.FOK and not self._fok_fillable(order, price):
            events.append(_cancelled(order, Reason.FOK_UNFILLED))
            return events
        self._take(order, price, events, remainder_rests=tif == TIF.GTC)
        return events + self._level_events()

    def market(
        self,
        order_id: int,
        side: int,
        qty: int,
        *,
        protection_ticks: int | None = None,
        account: int = 0,
        stp: int = STP.NONE,
    ) -> list[Ev]:
        side = _member(Side, side, "side")
        stp = _member(STP, stp, "stp")
        if protection_ticks is not None and protection_ticks < 0:
            raise ValueError(f"protection_ticks must be >= 0 or None, got {protection_ticks!r}")
        reason = Reason.NONE
        if not 0 < order_id <= MAX_ORDER_ID:
            reason = Reason.INVALID_ORDER_ID
        elif not self._qty_ok(qty):
            reason = Reason.INVALID_QTY
        elif order_id in self._by_id:
            reason = Reason.DUPLICATE_ORDER_ID
        if reason:
            return [_rejected(order_id, reason)]

        self._touched = {}
        order = _Order(order_id, side, 0, qty, account, stp, False)
        events = [_ev(EventKind.ACCEPTED, order_id, side, 0, qty, qty, 0, 0, 0)]
        best = self._best_price(_opposite(side))
        limit = None
        if best is not None and protection_ticks is not None:
            offset = protection_ticks * self.tick
            limit = best + offset if side == Side.BUY else best - offset
        self._take(order, limit, events, remainder_rests=False)
        return events + self._level_events()

    def cancel(self, order_id: int, reason: int = Reason.USER_CANCEL) -> list[Ev]:
        order = self._by_id.get(order_id)
        if order is None:
            return [_rejected(order_id, Reason.UNKNOWN_ORDER)]
        self._touched = {}
        self._remove(order)
        return [_cancelled(order, reason), *self._level_events()]

    def reduce(self, order_id: int, qty: int) -> list[Ev]:
        order = self._by_id.get(order_id)
        if order is None:
            return [_rejected(order_id, Reason.UNKNOWN_ORDER)]
        if qty <= 0 or qty % self.lot != 0 or qty >= order.qty:
            return [_rejected(order_id, Reason.INVALID_QTY)]
        self._touched = {}
        self._touch(order.side, order.price)
        removed = order.qty - qty
        order.qty = qty
        event = _ev(EventKind.REDUCED, order_id, order.side, order.price, removed, qty, 0, 0, 0)
        return [event, *self._level_events()]

    def replace(self, order_id: int, price: int, qty: int) -> list[Ev]:
        order = self._by_id.get(order_id)
        reason = Reason.NONE
        if order is None:
            reason = Reason.UNKNOWN_ORDER
        elif not self._qty_ok(qty):
            reason = Reason.INVALID_QTY
        elif price % self.tick != 0:
            reason = Reason.PRICE_OFF_TICK
        elif not self.min_price <= price <= self.max_price:
            reason = Reason.PRICE_OUT_OF_BAND
        elif order.post_only and self._would_cross(order.side, price):
            reason = Reason.POST_ONLY_WOULD_CROSS
        if reason or order is None:
            return [_rejected(order_id, reason)]

        self._touched = {}
        events = [_ev(EventKind.REPLACED, order_id, order.side, price, qty, qty, 0, 0, 0)]
        if price == order.price and qty <= order.qty:
            # Keeps its place in the queue.
            self._touch(order.side, order.price)
            order.qty = qty
        else:
            # Leaves its level and arrives again as a GTC limit order.
            self._remove(order)
            order.price = price
            order.qty = qty
            self._take(order, price, events, remainder_rests=True)
        return events + self._level_events()

    def mass_cancel(self, account: int, reason: int = Reason.MASS_CANCEL) -> list[Ev]:
        if account == 0:
            return []
        self._touched = {}
        events = []
        for order in [o for o in self._all_orders() if o.account == account]:
            self._remove(order)
            events.append(_cancelled(order, reason))
        return events + self._level_events()

    # -- matching ------------------------------------------------------------

    def _take(
        self, taker: _Order, limit: int | None, events: list[Ev], *, remainder_rests: bool
    ) -> None:
        """Match ``taker`` against the book, then cancel or rest what is left."""
        killed_by_stp = self._match(taker, limit, events)
        if killed_by_stp:
            events.append(_cancelled(taker, Reason.SELF_TRADE))
        elif taker.qty > 0:
            if remainder_rests:
                self._rest(taker)
            else:
                events.append(_cancelled(taker, Reason.IOC_REMAINDER))

    def _match(self, taker: _Order, limit: int | None, events: list[Ev]) -> bool:
        """Trade ``taker`` against resting orders; True if STP cancels its remainder."""
        opposite = _opposite(taker.side)
        while taker.qty > 0:
            best = self._best_price(opposite)
            if best is None or not _within(taker.side, best, limit):
                return False
            maker = self._levels[opposite][best][0]
            if self._self_trade(taker, maker):
                if taker.stp in (STP.CANCEL_RESTING, STP.CANCEL_BOTH):
                    self._remove(maker)
                    events.append(_cancelled(maker, Reason.SELF_TRADE))
                if taker.stp in (STP.CANCEL_INCOMING, STP.CANCEL_BOTH):
                    return True
                continue
            self._touch(maker.side, maker.price)
            matched = min(taker.qty, maker.qty)
            taker.qty -= matched
            maker.qty -= matched
            for about in (taker, maker):
                events.append(
                    _ev(
                        EventKind.FILL,
                        about.order_id,
                        about.side,
                        maker.price,
                        matched,
                        about.qty,
                        maker.order_id,
                        taker.order_id,
                        0,
                    )
                )
            if maker.qty == 0:
                self._remove(maker)
        return False

    def _fok_fillable(self, taker: _Order, limit: int) -> bool:
        """Would the match, run with STP, fill ``taker`` completely?  Changes nothing."""
        opposite = _opposite(taker.side)
        needed = taker.qty
        for price in self._prices_best_first(opposite):
            if not _within(taker.side, price, limit):
                break
            for maker in self._levels[opposite][price]:
                if self._self_trade(taker, maker):
                    if taker.stp == STP.CANCEL_RESTING:
                        continue  # would be cancelled, so it does not count
                    return False  # CANCEL_INCOMING / CANCEL_BOTH end the count
                needed -= maker.qty
                if needed <= 0:
                    return True
        return False

    @staticmethod
    def _self_trade(taker: _Order, maker: _Order) -> bool:
        return taker.account != 0 and taker.account == maker.account and taker.stp != STP.NONE

    # -- book keeping ----------------------------------------------------------

    def _qty_ok(self, qty: int) -> bool:
        return 0 < qty <= self.max_qty and qty % self.lot == 0

    def _would_cross(self, side: int, price: int) -> bool:
        best = self._best_price(_opposite(side))
        return best is not None and _within(side, best, price)

    def _prices_best_first(self, side: int) -> list[int]:
        return sorted(self._levels[side], reverse=side == Side.BUY)

    def _best_price(self, side: int) -> int | None:
        prices = self._levels[side]
        if not prices:
            return None
        return max(prices) if side == Side.BUY else min(prices)

    def _best_level(self, side: int) -> tuple[int, int] | None:
        price = self._best_price(side)
        if price is None:
            return None
        return price, self._level_total(side, price)

    def _level_total(self, side: int, price: int) -> int:
        return sum(o.qty for o in self._levels[side].get(price, ()))

    def _all_orders(self) -> list[_Order]:
        """Every resting order: bids best first, then asks best first, FIFO in a level."""
        return [
            order
            for side in (Side.BUY, Side.SELL)
            for price in self._prices_best_first(side)
            for order in self._levels[side][price]
        ]

    def _touch(self, side: int, price: int) -> None:
        """Remember the level's total before the command first changes it."""
        key = (side, price)
        if key not in self._touched:
            self._touched[key] = self._level_total(side, price)

    def _level_events(self) -> list[Ev]:
        events = []
        for (side, price), before in self._touched.items():
            after = self._level_total(side, price)
            if after != before:
                events.append(_ev(EventKind.LEVEL, 0, side, price, after, 0, 0, 0, 0))
        self._touched = {}
        return events

    def _rest(self, order: _Order) -> None:
        self._touch(order.side, order.price)
        self._levels[order.side].setdefault(order.price, []).append(order)
        self._by_id[order.order_id] = order

    def _remove(self, order: _Order) -> None:
        self._touch(order.side, order.price)
        level = self._levels[order.side][order.price]
        level.remove(order)
        if not level:
            del self._levels[order.side][order.price]
        del self._by_id[order.order_id]


def _opposite(side: int) -> int:
    return Side.SELL if side == Side.BUY else Side.BUY


def _within(side: int, resting_price: int, limit: int | None) -> bool:
    """Is a resting price at or better than the incoming order's limit?"""
    if limit is None:
        return True
    return resting_price <= limit if side == Side.BUY else resting_price >= limit


def _rejected(order_id: int, reason: int) -> Ev:
    return _ev(EventKind.REJECTED, order_id, 0, 0, 0, 0, 0, 0, reason)


def _cancelled(order: _Order, reason: int) -> Ev:
    return _ev(
        EventKind.CANCELLED, order.order_id, order.side, order.price, order.qty, 0, 0, 0, reason
    )
