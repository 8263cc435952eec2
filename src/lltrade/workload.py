"""Seeded command streams: the replay mix of the benchmarks and the load generator.

A stream is a numpy structured array of ``lltrade.COMMAND_DTYPE`` that the batch
face (``OrderBook.process``) takes as it is, and that the per-call face, the
reference book or a peer replays row by row.  The generator keeps a small model
of the book it is feeding (price-time priority, no self-trade prevention) so
that every command makes sense when it arrives:

* passive limit orders rest at or near the touch of their own side (a few
  ticks behind it, geometrically distributed; sometimes one tick inside the
  spread) and never cross;
* cancels, reduces and replaces name an order that is resting at that moment;
* aggressive orders take part of the touch, or sweep several levels, as IOC or
  GTC limit orders or market orders with a protection cap.

With 60% adds and 30% cancels the book would grow by 0.3 orders a command if
aggressive orders did not remove the difference, about 3 resting orders each.
So the number of resting orders an aggressive order meets is drawn from a
heavy-tailed law (most take part of the touch, a few sweep several levels)
whose mean a small controller moves to keep the book near
``WorkloadSpec.target_orders``; the stream then looks the same at any length.

The model's final book is returned with the stream (``Workload.resting``,
``Workload.state_hash()``), which gives an independent check of any engine
that replays the whole stream.

The same seed and spec give the same stream on every run, and the stream does
not depend on how it is cut into chunks (``StreamGenerator.next`` may be called
with any sizes).  Only uniform doubles are drawn from the generator
(``numpy.random.Generator.random``, whose output numpy keeps stable); the rest
is integer arithmetic and a few ``log``s.

The command dtype is looked up in ``lltrade._book`` when a generator is made
(so type-checking needs nothing from the extension); pass ``dtype=`` to use
another layout with the same field names.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lltrade.enums import TIF, Op, Side

__all__ = [
    "KIND_NAMES",
    "Mix",
    "StreamGenerator",
    "Workload",
    "WorkloadSpec",
    "book_state_hash",
    "command_dtype",
    "generate",
]

CommandArray = npt.NDArray[np.void]

_BUY = int(Side.BUY)
_SELL = int(Side.SELL)
_OP_ADD = int(Op.ADD)
_OP_MARKET = int(Op.MARKET)
_OP_CANCEL = int(Op.CANCEL)
_OP_REDUCE = int(Op.REDUCE)
_OP_REPLACE = int(Op.REPLACE)
_GTC = int(TIF.GTC)
_IOC = int(TIF.IOC)

# Kinds of generated command, in the order of Mix's fields.
_PASSIVE, _CANCEL, _AGGRESSIVE, _REDUCE, _REPLACE = range(5)
KIND_NAMES = ("passive", "cancel", "aggressive", "reduce", "replace")

# Uniform doubles drawn per command (columns of the random block).
_DRAWS = 8
# How many ticks the model scans for the next level before sorting the side.
_SCAN_TICKS = 64

# Aggressors: default mean of resting orders met, cap, controller gain.
_DEFAULT_TAKE = 3.0
_MAX_MEET = 1 << 20
_TAKE_GAIN = 0.002

_MASK64 = (1 << 64) - 1


def command_dtype() -> np.dtype[np.void]:
    """Return ``lltrade.COMMAND_DTYPE`` (imports the compiled extension)."""
    book: Any = importlib.import_module("lltrade._book")
    dtype: np.dtype[np.void] = book.COMMAND_DTYPE
    return dtype


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of the kinds of command in a stream (normalised).

    Parameters
    ----------
    passive
        Limit orders that rest at or near the touch without crossing.
    cancel
        Cancels of a resting order.
    aggressive
        Orders that take liquidity: part of the touch or a sweep of several
        levels (see ``WorkloadSpec.take_tail``).
    reduce
        Reductions of a resting order's quantity (it keeps its place).
    replace
        Replaces of a resting order to a new passive price and quantity.
    """

    passive: float = 0.60
    cancel: float = 0.30
    aggressive: float = 0.10
    reduce: float = 0.0
    replace: float = 0.0

    def __post_init__(self) -> None:
        weights = self.weights()
        if any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"mix weights must be finite and >= 0, got {weights}")
        if sum(weights) <= 0:
            raise ValueError("mix weights must not all be 0")
        if self.passive <= 0:
            raise ValueError("mix.passive must be > 0: other commands need resting orders")

    def weights(self) -> tuple[float, float, float, float, float]:
        """The five weights in the order passive, cancel, aggressive, reduce, replace."""
        return (self.passive, self.cancel, self.aggressive, self.reduce, self.replace)

    def fractions(self) -> dict[str, float]:
        """Each kind's share of the stream, summing to 1."""
        total = sum(self.weights())
        return {name: w / total for name, w in zip(KIND_NAMES, self.weights(), strict=True)}


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Everything that decides a stream.  Prices and quantities are in base units.

    Parameters
    ----------
    commands
        Number of commands ``generate`` makes.
    seed
        Seed of ``numpy.random.default_rng``.
    mix
        Shares of the kinds of command.
    min_price, max_price, tick
        The book's band and price grid; every price in the stream is on the
        grid and inside the band.
    start_price
        Where the first orders go when the book is empty (default: mid-band).
    lot, max_lots
        Order quantities are ``lot * k`` with ``k`` uniform in ``1 .. max_lots``.
    depth_ticks
        Mean distance, in ticks, of a passive order behind its side's touch
        (geometric; 0 joins the touch).
    max_depth_ticks
        Cap on that distance.
    improve
        Chance that a passive order goes one tick inside the spread when the
        spread is wider than a tick.
    take_tail
        Tail index of the number of resting orders an aggressive order meets
        (Lomax/Pareto II; smaller = heavier tail = more multi-level sweeps).
        The mean is set by ``target_orders``.
    max_sweep_levels
        Deepest sweep, in levels.
    overshoot
        Share of aggressive orders that ask for more than the levels they can
        reach (the remainder is cancelled, or rests for a GTC order).
    market
        Share of aggressive orders sent as market orders (``Op.MARKET``) with a
        protection cap that reaches exactly the swept levels; the others are
        limit orders priced at the deepest level swept.
    aggressive_gtc
        Share of aggressive limit orders sent GTC (a remainder rests) instead
        of IOC.
    target_orders
        Size of book the stream keeps to.  With more adds than cancels,
        aggressive orders must remove the difference: they meet more resting
        orders while the book is above this size and fewer below, so it
        neither drains nor grows without bound.  ``0``: a fixed mean of 3.
    first_order_id
        Ids are consecutive from here; disjoint ranges keep several streams
        (load-generator sessions) apart.
    account
        Account of every order (0 = none).
    """

    commands: int = 1_000_000
    seed: int = 0
    mix: Mix = field(default_factory=Mix)
    min_price: int = 1
    max_price: int = 2_000_000
    tick: int = 1
    start_price: int | None = None
    lot: int = 1
    max_lots: int = 10
    depth_ticks: float = 4.0
    max_depth_ticks: int = 100
    improve: float = 0.05
    take_tail: float = 1.5
    max_sweep_levels: int = 10
    overshoot: float = 0.2
    market: float = 0.2
    aggressive_gtc: float = 0.1
    target_orders: int = 5_000
    first_order_id: int = 1
    account: int = 0

    def __post_init__(self) -> None:
        if self.commands < 0:
            raise ValueError(f"commands must be >= 0, got {self.commands}")
        if self.tick <= 0 or self.lot <= 0:
            raise ValueError(f"tick and lot must be > 0, got tick={self.tick} lot={self.lot}")
        if self.min_price % self.tick or self.max_price % self.tick:
            raise ValueError("min_price and max_price must be multiples of tick")
        if self.max_price - self.min_price < 2 * self.tick:
            raise ValueError("the band must hold at least three ticks")
        start = self.start()
        if not self.min_price < start < self.max_price or start % self.tick:
            raise ValueError(f"start_price {start} must be on the grid, strictly inside the band")
        if self.max_lots < 1 or self.max_depth_ticks < 0 or self.max_sweep_levels < 2:
            raise ValueError("max_lots >= 1, max_depth_ticks >= 0, max_sweep_levels >= 2")
        if self.depth_ticks < 0:
            raise ValueError(f"depth_ticks must be >= 0, got {self.depth_ticks}")
        if not self.take_tail > 1.0:
            raise ValueError(f"take_tail must be > 1 (a finite mean), got {self.take_tail}")
        for name in ("improve", "overshoot", "market", "aggressive_gtc"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        if self.target_orders < 0 or self.first_order_id < 1 or self.account < 0:
            raise ValueError("target_orders >= 0, first_order_id >= 1, account >= 0")

    def start(self) -> int:
        """The price the first orders are placed around."""
        if self.start_price is not None:
            return self.start_price
        mid = (self.min_price + self.max_price) // 2
        return mid - mid % self.tick


@dataclass(frozen=True, slots=True)
class Workload:
    """A generated stream and the book it leaves (according to the model).

    Attributes
    ----------
    spec
        What made it.
    commands
        The stream, a C-contiguous ``COMMAND_DTYPE`` array.
    kinds
        What each command is, as an index into ``KIND_NAMES`` (``passive``,
        ``cancel``, ``aggressive``, ``reduce``, ``replace``).
    counts
        Commands per kind: ``passive``, ``cancel``, ``aggressive``,
        ``reduce``, ``replace``, and ``market`` (aggressive orders sent as
        ``Op.MARKET``), ``sweeps`` (aggressive orders reaching more than one
        level), ``fills`` (maker orders met).
    resting
        The final book as ``(side, price, order_id, open_qty)`` rows, bids
        best price first, then asks best price first, FIFO within a level:
        the order ``OrderBook.state_hash`` digests.
    """

    spec: WorkloadSpec
    commands: CommandArray
    kinds: npt.NDArray[np.uint8]
    counts: dict[str, int]
    resting: list[tuple[int, int, int, int]]

    def best_bid(self) -> tuple[int, int] | None:
        """``(price, total qty)`` of the final best bid, as ``OrderBook.best_bid``."""
        return _best(self.resting, _BUY)

    def best_ask(self) -> tuple[int, int] | None:
        """``(price, total qty)`` of the final best ask, as ``OrderBook.best_ask``."""
        return _best(self.resting, _SELL)

    def state_hash(self) -> int:
        """The final book's ``OrderBook.state_hash`` (unsigned 64-bit)."""
        return book_state_hash(self.resting)


def _best(rows: list[tuple[int, int, int, int]], side: int) -> tuple[int, int] | None:
    price: int | None = None
    total = 0
    for s, p, _, q in rows:
        if s != side:
            if price is not None:
                break
            continue
        if price is None:
            price = p
        elif p != price:
            break
        total += q
    return None if price is None else (price, total)


def _fold(h: int, v: int) -> int:
    z = ((h ^ (v & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def book_state_hash(rows: Iterable[tuple[int, int, int, int]]) -> int:
    """Digest a book as ``OrderBook.state_hash`` does (docs/matching.md, "State hash").

    Parameters
    ----------
    rows
        ``(side, price, order_id, open_qty)`` for every resting order, bids best
        price first, then asks best price first, FIFO within a level.
    """
    h = 0x6C6C7472616465
    n = 0
    for side, price, oid, qty in rows:
        h = _fold(h, side)
        h = _fold(h, price)
        h = _fold(h, oid)
        h = _fold(h, qty)
        n += 1
    return _fold(h, n)


class StreamGenerator:
    """An endless seeded stream, made in chunks of any size (``next``).

    Holds the model book; ``generate`` is the one-shot wrapper.  Chunk sizes do
    not change the stream: ``next(3)`` then ``next(5)`` equals ``next(8)``.
    """

    def __init__(self, spec: WorkloadSpec, dtype: np.dtype[np.void] | None = None) -> None:
        self.spec = spec
        self.dtype = dtype if dtype is not None else command_dtype()
        self._rng = np.random.default_rng(spec.seed)
        weights = np.asarray(spec.mix.weights(), dtype=np.float64)
        self._cum = np.cumsum(weights / weights.sum())
        self._cum[-1] = 1.0
        # geometric(p) on 0, 1, 2, ... with mean depth_ticks
        self._depth_log = math.log1p(-1.0 / (1.0 + spec.depth_ticks)) if spec.depth_ticks else 0.0
        self.next_order_id = spec.first_order_id
        self.counts: dict[str, int] = dict.fromkeys((*KIND_NAMES, "market", "sweeps", "fills"), 0)
        # The model book: price -> {order id: open qty} (dict order = FIFO).
        self._bids: dict[int, dict[int, int]] = {}
        self._asks: dict[int, dict[int, int]] = {}
        self._best_bid: int | None = None
        self._best_ask: int | None = None
        self._where: dict[int, tuple[int, int]] = {}  # order id -> (side, price)
        self._live: list[int] = []  # resting ids, for a uniform pick
        self._slot: dict[int, int] = {}  # order id -> index in _live
        self._last_price = spec.start()
        self._log_take = math.log(_DEFAULT_TAKE)

    # -- the model book ----------------------------------------------------

    def __len__(self) -> int:
        return len(self._live)

    def _forget(self, oid: int) -> None:
        """Drop a resting order from the id indexes (not from its level)."""
        i = self._slot.pop(oid)
        last = self._live.pop()
        if last != oid:
            self._live[i] = last
            self._slot[last] = i
        del self._where[oid]

    def _remember(self, oid: int, side: int, price: int) -> None:
        self._where[oid] = (side, price)
        self._slot[oid] = len(self._live)
        self._live.append(oid)

    def _next_bid(self, price: int) -> int | None:
        bids = self._bids
        if not bids:
            return None
        tick = self.spec.tick
        for _ in range(_SCAN_TICKS):
            price -= tick
            if price in bids:
                return price
        return max(bids)

    def _next_ask(self, price: int) -> int | None:
        asks = self._asks
        if not asks:
            return None
        tick = self.spec.tick
        for _ in range(_SCAN_TICKS):
            price += tick
            if price in asks:
                return price
        return min(asks)

    def _rest(self, oid: int, side: int, price: int, qty: int) -> None:
        if side == _BUY:
            level = self._bids.get(price)
            if level is None:
                level = self._bids[price] = {}
                if self._best_bid is None or price > self._best_bid:
                    self._best_bid = price
        else:
            level = self._asks.get(price)
            if level is None:
                level = self._asks[price] = {}
                if self._best_ask is None or price < self._best_ask:
                    self._best_ask = price
        level[oid] = qty
        self._remember(oid, side, price)

    def _unrest(self, oid: int) -> int:
        """Take a resting order out of the book; return its open qty."""
        side, price = self._where[oid]
        self._forget(oid)
        if side == _BUY:
            level = self._bids[price]
            qty = level.pop(oid)
            if not level:
                del self._bids[price]
                if price == self._best_bid:
                    self._best_bid = self._next_bid(price)
        else:
            level = self._asks[price]
            qty = level.pop(oid)
            if not level:
                del self._asks[price]
                if price == self._best_ask:
                    self._best_ask = self._next_ask(price)
        return qty

    def _match(self, side: int, limit: int, qty: int) -> int:
        """Match an incoming order against the model; return the unfilled qty."""
        fills = 0
        if side == _BUY:
            book = self._asks
            while qty and self._best_ask is not None and self._best_ask <= limit:
                price = self._best_ask
                level = book[price]
                while qty and level:
                    maker = next(iter(level))
                    open_qty = level[maker]
                    fills += 1
                    if open_qty <= qty:
                        qty -= open_qty
                        del level[maker]
                        self._forget(maker)
                    else:
                        level[maker] = open_qty - qty
                        qty = 0
                self._last_price = price
                if not level:
                    del book[price]
                    self._best_ask = self._next_ask(price)
        else:
            book = self._bids
            while qty and self._best_bid is not None and self._best_bid >= limit:
                price = self._best_bid
                level = book[price]
                while qty and level:
                    maker = next(iter(level))
                    open_qty = level[maker]
                    fills += 1
                    if open_qty <= qty:
                        qty -= open_qty
                        del level[maker]
                        self._forget(maker)
                    else:
                        level[maker] = open_qty - qty
                        qty = 0
                self._last_price = price
                if not level:
                    del book[price]
                    self._best_bid = self._next_bid(price)
        self.counts["fills"] += fills
        return qty

    def _passive_price(self, side: int, depth: int, improve: bool) -> int:
        """A price at or behind ``side``'s touch that does not cross, in the band."""
        spec = self.spec
        tick = spec.tick
        bb, ba = self._best_bid, self._best_ask
        if side == _BUY:
            if bb is not None:
                if improve and (ba is None or bb + tick < ba):
                    return bb + tick
                ref = bb
            elif ba is not None:
                ref = ba - tick
            else:
                ref = self._last_price - tick
            price = max(ref - depth * tick, spec.min_price)
            if ba is not None and price >= ba:  # only at the band's edge
                price = ba - tick
            return max(price, spec.min_price)
        if ba is not None:
            if improve and (bb is None or ba - tick > bb):
                return ba - tick
            ref = ba
        elif bb is not None:
            ref = bb + tick
        else:
            ref = self._last_price + tick
        price = min(ref + depth * tick, spec.max_price)
        if bb is not None and price <= bb:
            price = bb + tick
        return min(price, spec.max_price)

    def _reach(self, side: int, meet: int, max_levels: int, cut: float) -> tuple[int, int, int]:
        """What an aggressor of ``side`` takes to meet ``meet`` resting orders.

        Walks the opposite side in price-time order, at most ``max_levels``
        levels.  The last order met is taken in part (``cut`` in [0, 1) picks
        how much).  Returns ``(limit price, qty, levels reached)``.
        """
        lot = self.spec.lot
        if side == _BUY:
            book = self._asks
            best = self._best_ask
            step = self.spec.tick
        else:
            book = self._bids
            best = self._best_bid
            step = -self.spec.tick
        assert best is not None
        price = best
        limit = best
        qty = 0
        reached = 0
        left = len(book)
        while left and reached < max_levels:
            level = book.get(price)
            if level is None:
                if abs(price - best) > _SCAN_TICKS * max_levels * abs(step):
                    break
                price += step
                continue
            reached += 1
            left -= 1
            limit = price
            for open_qty in level.values():
                meet -= 1
                if meet == 0:
                    return limit, qty + (1 + int(cut * (open_qty // lot))) * lot, reached
                qty += open_qty
            price += step
        return limit, qty, reached

    def _take_mean(self) -> float:
        """Mean number of resting orders an aggressor meets (a PI controller).

        Adds outnumber cancels, so aggressors must take the difference; the
        mean rises while the book is above ``target_orders`` and falls below.
        """
        target = self.spec.target_orders
        if not target:
            return _DEFAULT_TAKE
        ratio = max(len(self._live), 1) / target
        self._log_take = min(max(self._log_take + _TAKE_GAIN * (ratio - 1.0), -5.0), 9.0)
        return max(1.0, math.exp(self._log_take) * ratio * ratio)

    def resting(self) -> list[tuple[int, int, int, int]]:
        """The model book as ``(side, price, order_id, open_qty)`` rows, in state-hash order."""
        rows: list[tuple[int, int, int, int]] = []
        for price in sorted(self._bids, reverse=True):
            rows.extend((_BUY, price, oid, q) for oid, q in self._bids[price].items())
        for price in sorted(self._asks):
            rows.extend((_SELL, price, oid, q) for oid, q in self._asks[price].items())
        return rows

    # -- the stream ----------------------------------------------------------

    def next(self, n: int) -> CommandArray:
        """Make the next ``n`` commands of the stream."""
        return self.next_with_kinds(n)[0]

    def next_with_kinds(self, n: int) -> tuple[CommandArray, npt.NDArray[np.uint8]]:
        """The next ``n`` commands and the kind of each (an index into ``KIND_NAMES``)."""
        spec = self.spec
        tick, lot = spec.tick, spec.lot
        u = self._rng.random((n, _DRAWS))
        kinds: list[int] = np.searchsorted(self._cum, u[:, 0], side="right").tolist()
        sides: list[int] = np.where(u[:, 1] < 0.5, _BUY, _SELL).tolist()
        if self._depth_log:
            depth_f = np.floor(np.log1p(-u[:, 2]) / self._depth_log)
            depths: list[int] = np.minimum(depth_f, spec.max_depth_ticks).astype(np.int64).tolist()
        else:
            depths = [0] * n
        pick: list[float] = u[:, 2].tolist()
        lots: list[int] = (1 + np.floor(u[:, 3] * spec.max_lots)).astype(np.int64).tolist()
        u4: list[float] = u[:, 4].tolist()
        u5: list[float] = u[:, 5].tolist()
        u6: list[float] = u[:, 6].tolist()
        u7: list[float] = u[:, 7].tolist()

        op = [_OP_ADD] * n
        oids = [0] * n
        side_out = [0] * n
        price_out = [0] * n
        qty_out = [0] * n
        tif_out = [_GTC] * n
        prot_out = [0] * n

        counts = self.counts
        live = self._live
        where = self._where
        slot = self._slot
        bids, asks = self._bids, self._asks
        improve_p, overshoot_p = spec.improve, spec.overshoot
        market_p, gtc_p = spec.market, spec.aggressive_gtc
        max_sweep = spec.max_sweep_levels
        alpha = spec.take_tail
        inv_alpha = -1.0 / alpha
        oid = self.next_order_id

        for i in range(n):
            kind = kinds[i]
            side = sides[i]
            if kind != _PASSIVE and not live:
                kind = _PASSIVE
            if kind == _AGGRESSIVE and (self._best_ask if side == _BUY else self._best_bid) is None:
                kind = _PASSIVE

            if kind == _PASSIVE:
                price = self._passive_price(side, depths[i], u4[i] < improve_p)
                qty = lots[i] * lot
                oids[i] = oid
                side_out[i] = side
                price_out[i] = price
                qty_out[i] = qty
                # It crosses only when pinned to the band's edge.
                if side == _BUY:
                    if self._best_ask is not None and price >= self._best_ask:
                        qty = self._match(side, price, qty)
                    if qty:
                        level = bids.get(price)
                        if level is None:
                            level = bids[price] = {}
                            if self._best_bid is None or price > self._best_bid:
                                self._best_bid = price
                        level[oid] = qty
                else:
                    if self._best_bid is not None and price <= self._best_bid:
                        qty = self._match(side, price, qty)
                    if qty:
                        level = asks.get(price)
                        if level is None:
                            level = asks[price] = {}
                            if self._best_ask is None or price < self._best_ask:
                                self._best_ask = price
                        level[oid] = qty
                if qty:
                    where[oid] = (side, price)
                    slot[oid] = len(live)
                    live.append(oid)
                oid += 1
            elif kind == _CANCEL:
                target_id = live[int(pick[i] * len(live))]
                op[i] = _OP_CANCEL
                oids[i] = target_id
                side_out[i] = where[target_id][0]
                self._unrest(target_id)
            elif kind == _AGGRESSIVE:
                # How many resting orders it meets: heavy-tailed around a mean
                # that keeps the book at its target size.
                mean = self._take_mean()
                scale = (mean - 1.0) * (alpha - 1.0)
                meet = 1 + min(int(scale * ((1.0 - u5[i]) ** inv_alpha - 1.0)), _MAX_MEET)
                limit, want, reached = self._reach(side, meet, max_sweep, u4[i])
                if reached > 1:
                    counts["sweeps"] += 1
                if u6[i] < overshoot_p:
                    want += lots[i] * lot
                qty = want
                oids[i] = oid
                side_out[i] = side
                qty_out[i] = qty
                tif = _IOC
                if u7[i] < market_p:
                    op[i] = _OP_MARKET
                    best = self._best_ask if side == _BUY else self._best_bid
                    assert best is not None
                    prot_out[i] = abs(limit - best) // tick
                    counts["market"] += 1
                else:
                    price_out[i] = limit
                    if u7[i] - market_p < gtc_p * (1.0 - market_p):
                        tif = _GTC
                    tif_out[i] = tif
                left = self._match(side, limit, qty)
                if left and tif == _GTC and op[i] == _OP_ADD:
                    self._rest(oid, side, limit, left)
                oid += 1
            elif kind == _REDUCE:
                target_id = live[int(pick[i] * len(live))]
                tside, tprice = where[target_id]
                level = (self._bids if tside == _BUY else self._asks)[tprice]
                open_lots = level[target_id] // lot
                oids[i] = target_id
                side_out[i] = tside
                if open_lots < 2:
                    kind = _CANCEL
                    op[i] = _OP_CANCEL
                    self._unrest(target_id)
                else:
                    new_qty = (1 + int(u5[i] * (open_lots - 1))) * lot
                    op[i] = _OP_REDUCE
                    qty_out[i] = new_qty
                    level[target_id] = new_qty
            else:  # _REPLACE
                target_id = live[int(pick[i] * len(live))]
                tside, tprice = where[target_id]
                level = (self._bids if tside == _BUY else self._asks)[tprice]
                open_qty = level[target_id]
                new_qty = lots[i] * lot
                op[i] = _OP_REPLACE
                oids[i] = target_id
                side_out[i] = tside
                qty_out[i] = new_qty
                if u5[i] < 0.25:
                    new_price = tprice  # a pure size change
                else:
                    new_price = self._passive_price(tside, depths[i], u4[i] < improve_p)
                price_out[i] = new_price
                if new_price == tprice and new_qty <= open_qty:
                    level[target_id] = new_qty  # keeps its place
                else:
                    self._unrest(target_id)
                    left = self._match(tside, new_price, new_qty)
                    if left:
                        self._rest(target_id, tside, new_price, left)
            counts[KIND_NAMES[kind]] += 1
            kinds[i] = kind

        self.next_order_id = oid
        out = np.zeros(n, dtype=self.dtype)
        out["op"] = op
        out["order_id"] = oids
        out["side"] = side_out
        out["price"] = price_out
        out["qty"] = qty_out
        out["tif"] = tif_out
        out["protection"] = prot_out
        if spec.account:
            out["account"] = spec.account
        return out, np.asarray(kinds, dtype=np.uint8)

    def chunks(self, size: int) -> Iterator[CommandArray]:
        """Endless chunks of ``size`` commands (for a load generator)."""
        while True:
            yield self.next(size)


def generate(spec: WorkloadSpec, dtype: np.dtype[np.void] | None = None) -> Workload:
    """Make ``spec.commands`` commands of the stream ``spec`` describes.

    Parameters
    ----------
    spec
        The stream's parameters (mix, size, seed, band, tick, lot, ...).
    dtype
        The command dtype (default ``lltrade.COMMAND_DTYPE``).

    Returns
    -------
    Workload
        The commands, counts per kind and the model's final book.
    """
    gen = StreamGenerator(spec, dtype)
    commands, kinds = gen.next_with_kinds(spec.commands)
    return Workload(spec, commands, kinds, dict(gen.counts), gen.resting())
