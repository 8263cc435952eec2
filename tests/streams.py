"""Seeded random command streams for the differential and property tests.

A stream is a pure function of its seed: the generator never looks at a book,
so the same seed gives the same commands for every face and every run, and a
failure is reproduced from the seed alone.  It keeps its own belief of which
ids may rest (a superset of the truth: it only forgets an id after cancelling
it) and cancels its oldest believed order when that belief grows past a cap,
which keeps the books small enough for the slow reference.

Prices cluster around a mid that walks randomly inside the band, so most
commands trade or rest near the touch; narrow bands make the edges common and
the wide band gets a few far, sparse orders.  Every command kind of
docs/matching.md is produced, valid and invalid, see ``CommandStream``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from lltrade.enums import STP, TIF, EventKind, Op, Reason, Side

MAX_ORDER_ID = 2**63 - 1


class Command(NamedTuple):
    """One command; the fields are those of ``lltrade.COMMAND_DTYPE``.

    ``protection`` is ``None`` for "no cap" (``-1`` in the batch face) and
    ``reason`` 0 means the method's default reason.
    """

    op: int
    order_id: int = 0
    side: int = 0
    price: int = 0
    qty: int = 0
    tif: int = TIF.GTC
    post_only: bool = False
    stp: int = STP.NONE
    account: int = 0
    protection: int | None = None
    reason: int = 0


@dataclass(frozen=True)
class StreamConfig:
    """The book a stream is meant for (pass the same values to every book)."""

    min_price: int
    max_price: int
    tick: int = 1
    lot: int = 1
    max_qty: int = 10**12
    max_orders: int | None = None
    accounts: int = 3  #: accounts 1..accounts share orders, so STP triggers
    max_believed: int = 150  #: cap on believed-live orders (bounds the book)
    invalid_fields: bool = True  #: emit enum fields out of range (ValueError)
    aggression: float = 1.0  #: scales taker flow; lower builds deeper books
    capacity: int | None = None  #: initial pool size (1 makes the engine grow it often)

    def book_args(self) -> tuple[tuple[int, ...], dict[str, Any]]:
        """Positional and keyword arguments for ``OrderBook``/``ReferenceBook``."""
        kwargs: dict[str, Any] = {"max_qty": self.max_qty}
        if self.max_orders is not None:
            kwargs["max_orders"] = self.max_orders
        if self.capacity is not None:
            kwargs["capacity"] = self.capacity
        return (self.min_price, self.max_price, self.tick, self.lot), kwargs


def config_for_seed(seed: int) -> StreamConfig:
    """A book shape chosen by the seed, so a set of seeds covers all shapes."""
    shape = seed % 5
    if shape == 0:  # narrow band: the edges are reached often
        return StreamConfig(1000, 1060, capacity=1)
    if shape == 1:  # coarse tick and lot, negative prices allowed
        return StreamConfig(-500, 2500, tick=5, lot=10, accounts=2)
    if shape == 2:  # wide sparse band, deep book
        return StreamConfig(1, 10_000_000, max_believed=300, aggression=0.4)
    if shape == 3:  # small max_qty and a pool limit that is hit
        return StreamConfig(100, 400, tick=2, max_qty=1000, max_orders=48, accounts=4, capacity=1)
    return StreamConfig(10_000, 12_000, lot=5, max_believed=200, aggression=0.5)  # long queues


@dataclass
class _Belief:
    side: int
    price: int
    qty: int
    account: int
    post_only: bool


class CommandStream:
    """Iterator over the commands of one seeded stream.

    Mix (approximate): GTC adds 30 %, post-only 5 %, IOC 8 %, FOK 5 %, market
    6 % (half with protection), cancel 15 % (of believed-live, finished and
    never-used ids), reduce 6 %, replace 13 % (keep place, move, grow, cross,
    post-only cross, invalid), mass cancel 0.3 %, invalid adds 5 %, out of
    range enum fields 0.5 % when ``config.invalid_fields``.
    """

    def __init__(self, seed: int, config: StreamConfig | None = None) -> None:
        self.seed = seed
        self.config = config or config_for_seed(seed)
        self.rng = random.Random(seed)
        cfg = self.config
        self.mid = self._snap((cfg.min_price + cfg.max_price) // 2)
        if cfg.max_price - cfg.min_price > 1_000_000:
            self.mid = self._snap(cfg.min_price + (cfg.max_price - cfg.min_price) // 3)
        self.next_id = 1 + self.rng.randrange(3) * 1_000_000_000_000
        self.believed: dict[int, _Belief] = {}  # insertion order = age
        self.finished: list[int] = []  # ids known not to rest
        self.count = 0
        self._new_id = 0  # id the last command added to ``believed``, or 0

    def __iter__(self) -> Iterator[Command]:
        return self

    def __next__(self) -> Command:
        self.count += 1
        self._new_id = 0
        self._walk_mid()
        if len(self.believed) > self.config.max_believed:
            oldest = next(iter(self.believed))
            return self._forget(Command(Op.CANCEL, oldest))
        r = self.rng.random() * 100
        for weight, make in self._menu:
            if r < weight:
                return make(self)
            r -= weight
        return self._gtc()

    def take(self, n: int) -> list[Command]:
        return [next(self) for _ in range(n)]

    def observe(self, events: list[tuple[int, ...]]) -> None:
        """Learn from the events of the last command which ids still rest.

        Optional: without it the belief is a superset of the truth and more
        cancels, reduces and replaces hit finished orders.
        """
        for kind, order_id, _side, _price, _qty, remaining, *_ in events:
            if kind == EventKind.FILL:
                belief = self.believed.get(order_id)
                if belief is not None:
                    if remaining == 0:
                        self._forget_id(order_id)
                    else:
                        belief.qty = remaining
            elif kind == EventKind.CANCELLED:
                self._forget_id(order_id)
            elif kind == EventKind.REJECTED and order_id == self._new_id:
                self._forget_id(order_id)  # the add that would have rested did not

    # -- the menu ------------------------------------------------------------

    def _gtc(self) -> Command:
        side = self._side()
        account, stp = self._account_stp()
        return self._remember(
            Command(
                Op.ADD,
                self._order_id(),
                side,
                self._price(side),
                self._qty(),
                account=account,
                stp=stp,
            )
        )

    def _post_only(self) -> Command:
        side = self._side()
        account, stp = self._account_stp()
        return self._remember(
            Command(
                Op.ADD,
                self._order_id(),
                side,
                self._price(side, aggressive=0.3),
                self._qty(),
                post_only=True,
                account=account,
                stp=stp,
            )
        )

    def _ioc(self) -> Command:
        return self._taker(TIF.IOC)

    def _fok(self) -> Command:
        return self._taker(TIF.FOK)

    def _taker(self, tif: int) -> Command:
        if self.rng.random() > self.config.aggression:
            return self._gtc()
        side = self._side()
        account, stp = self._account_stp()
        cmd = Command(
            Op.ADD,
            self._order_id(),
            side,
            self._price(side, aggressive=0.7),
            self._qty(big=0.15),
            tif=tif,
            account=account,
            stp=stp,
        )
        return self._finish(cmd)

    def _market(self) -> Command:
        rng = self.rng
        if rng.random() > self.config.aggression:
            return self._gtc()
        account, stp = self._account_stp()
        protection = None if rng.random() < 0.5 else rng.choice([0, 0, 1, 2, 3, 10])
        cmd = Command(
            Op.MARKET,
            self._order_id(),
            self._side(),
            qty=self._qty(big=0.2),
            account=account,
            stp=stp,
            protection=protection,
        )
        return self._finish(cmd)

    def _cancel(self) -> Command:
        rng = self.rng
        reason = rng.choice([0] * 8 + [Reason.USER_CANCEL, Reason.DISCONNECT, Reason.KILL_SWITCH])
        r = rng.random()
        if r < 0.8 and self.believed:
            order_id = self._believed_id()
        elif r < 0.9 and self.finished:
            order_id = rng.choice(self.finished)
        else:
            order_id = rng.choice([0, -1, self.next_id + 7, MAX_ORDER_ID, 424242])
        return self._forget(Command(Op.CANCEL, order_id, reason=reason))

    def _reduce(self) -> Command:
        rng = self.rng
        lot = self.config.lot
        if not self.believed or rng.random() < 0.05:
            return Command(Op.REDUCE, self.next_id + 11, qty=lot)
        order_id = self._believed_id()
        belief = self.believed[order_id]
        r = rng.random()
        if r < 0.7:
            qty = lot * rng.randint(1, max(1, belief.qty // lot - 1))
        elif r < 0.8:
            qty = belief.qty  # not a reduction: rejected
        elif r < 0.9:
            qty = rng.choice([0, -lot, belief.qty + lot])
        else:
            qty = lot * rng.randint(1, 5) + (1 if lot > 1 else 0)  # off the lot when lot > 1
        if 0 < qty < belief.qty and qty % lot == 0:
            belief.qty = qty
        return Command(Op.REDUCE, order_id, qty=qty)

    def _replace(self) -> Command:
        rng = self.rng
        cfg = self.config
        lot, tick = cfg.lot, cfg.tick
        if not self.believed or rng.random() < 0.04:
            return Command(Op.REPLACE, self.next_id + 13, price=self.mid, qty=lot)
        post_only = [i for i, b in self.believed.items() if b.post_only]
        if post_only and rng.random() < 0.2:
            order_id = rng.choice(post_only)
        else:
            order_id = self._believed_id()
        belief = self.believed[order_id]
        price, qty = belief.price, belief.qty
        kind = rng.random()
        if kind < 0.2:  # same price, smaller or equal: keeps its place
            qty = lot * rng.randint(1, max(1, qty // lot))
        elif kind < 0.35:  # same price, larger: loses its place
            qty += lot * rng.randint(1, 5)
        elif kind < 0.65:  # move passively (or a little through the touch)
            price = self._price(belief.side, aggressive=0.2)
            qty = self._qty()
        elif kind < 0.85:  # cross the book
            price = self._price(belief.side, aggressive=1.0)
            qty = self._qty(big=0.2)
        else:  # invalid
            price, qty = rng.choice(
                [
                    (price, 0),
                    (price, -lot),
                    (price, cfg.max_qty + lot),
                    (price + 1, qty) if tick > 1 else (price, 0),  # off tick
                    (cfg.max_price + tick, qty),
                    (cfg.min_price - tick, qty),
                    (price, qty + (1 if lot > 1 else 0)),
                ]
            )
        qty_ok = 0 < qty <= cfg.max_qty and qty % lot == 0
        if qty_ok and price % tick == 0 and cfg.min_price <= price <= cfg.max_price:
            belief.price, belief.qty = price, qty
        return Command(Op.REPLACE, order_id, price=price, qty=qty)

    def _mass_cancel(self) -> Command:
        rng = self.rng
        account = rng.randint(0, self.config.accounts)
        reason = rng.choice([0, 0, 0, Reason.MASS_CANCEL, Reason.KILL_SWITCH, Reason.DISCONNECT])
        if account:
            for order_id in [i for i, b in self.believed.items() if b.account == account]:
                self._forget_id(order_id)
        return Command(Op.MASS_CANCEL, account=account, reason=reason)

    def _invalid_add(self) -> Command:
        rng = self.rng
        cfg = self.config
        side = self._side()
        good_price = self._price(side)
        good_qty = self._qty()
        kind = rng.randrange(11)
        order_id, price, qty, tif, post_only = self._order_id(), good_price, good_qty, 0, False
        if kind == 0:
            price += 1 if cfg.tick > 1 else 0  # off tick (valid when tick == 1)
        elif kind == 1:
            price = cfg.max_price + cfg.tick * rng.randint(1, 3)
        elif kind == 2:
            price = cfg.min_price - cfg.tick * rng.randint(1, 3)
        elif kind == 3:
            qty = rng.choice([0, -cfg.lot, -1])
        elif kind == 4:
            qty = good_qty + (1 if cfg.lot > 1 else 0)  # off the lot (valid when lot == 1)
        elif kind == 5:
            qty = cfg.max_qty + cfg.lot
        elif kind == 6:
            tif, post_only = rng.choice([TIF.IOC, TIF.FOK]), True
        elif kind == 7:
            order_id = rng.choice([0, -1, -(2**63)])
        elif kind == 8 and self.believed:
            order_id = self._believed_id()  # duplicate of a (believed) live id
        elif kind == 9:
            price = cfg.max_price  # the band edges themselves are valid
        elif kind == 10:
            price = cfg.min_price
        cmd = Command(Op.ADD, order_id, side, price, qty, tif=tif, post_only=post_only)
        if kind in (0, 4, 9, 10):
            self._remember(cmd)
        return cmd

    def _invalid_market(self) -> Command:
        rng = self.rng
        order_id, qty = self._order_id(), self._qty()
        kind = rng.randrange(3)
        if kind == 0:
            qty = rng.choice([0, -self.config.lot, self.config.max_qty + self.config.lot])
        elif kind == 1:
            order_id = rng.choice([0, -5])
        elif self.believed:
            order_id = self._believed_id()
        return Command(Op.MARKET, order_id, self._side(), qty=qty)

    def _invalid_field(self) -> Command:
        """A command with an enum field out of range: ValueError / INVALID_FIELD."""
        rng = self.rng
        if not self.config.invalid_fields:
            return self._gtc()
        order_id = self.next_id + 17  # never used, so only the bad field can reject it
        side = self._side()
        price, qty = self._price(side), self._qty()
        kind = rng.randrange(5)
        if kind == 0:
            return Command(Op.ADD, order_id, rng.choice([0, 3, 9]), price, qty)
        if kind == 1:
            return Command(Op.ADD, order_id, side, price, qty, tif=rng.choice([3, 7]))
        if kind == 2:
            return Command(Op.ADD, order_id, side, price, qty, stp=rng.choice([4, 9]), account=1)
        if kind == 3:
            return Command(Op.MARKET, order_id, side, qty=qty, protection=rng.choice([-2, -9]))
        return Command(Op.MARKET, order_id, rng.choice([0, 3]), qty=qty)

    _menu = (
        (30.0, _gtc),
        (5.0, _post_only),
        (8.0, _ioc),
        (5.0, _fok),
        (6.0, _market),
        (15.0, _cancel),
        (6.0, _reduce),
        (13.0, _replace),
        (0.3, _mass_cancel),
        (4.0, _invalid_add),
        (1.0, _invalid_market),
        (0.5, _invalid_field),
    )

    # -- pieces --------------------------------------------------------------

    def _walk_mid(self) -> None:
        rng = self.rng
        cfg = self.config
        r = rng.random()
        if r < 0.08:
            self.mid += cfg.tick * rng.choice([-3, -2, -1, -1, 1, 1, 2, 3])
        elif r < 0.0805:  # a jump, sometimes right onto an edge
            self.mid = self._snap(rng.randint(cfg.min_price, cfg.max_price))
        self.mid = min(max(self.mid, cfg.min_price), cfg.max_price)

    def _snap(self, price: int) -> int:
        return price - price % self.config.tick

    def _side(self) -> int:
        return Side.BUY if self.rng.random() < 0.5 else Side.SELL

    def _price(self, side: int, aggressive: float = 0.2) -> int:
        """A price near the mid; aggressive prices are on the far side of it."""
        rng = self.rng
        cfg = self.config
        if cfg.max_price - cfg.min_price > 100_000 and rng.random() < 0.02:
            price = self._snap(rng.randint(cfg.min_price, cfg.max_price))  # far and sparse
        else:
            ticks = min(int(rng.expovariate(0.35)), 40)
            if rng.random() < aggressive * cfg.aggression:
                ticks = -min(int(rng.expovariate(0.6)), 10)
            ticks += 1  # a spread of about two ticks around the mid
            price = self.mid - ticks * cfg.tick if side == Side.BUY else self.mid + ticks * cfg.tick
        return min(max(price, cfg.min_price), cfg.max_price)

    def _qty(self, big: float = 0.03) -> int:
        rng = self.rng
        lots = 1 + min(int(rng.expovariate(0.25)), 60)
        if rng.random() < big:
            lots *= rng.randint(3, 30)
        return min(lots * self.config.lot, self.config.max_qty)

    def _account_stp(self) -> tuple[int, int]:
        rng = self.rng
        if rng.random() < 0.4:
            return 0, rng.choice([STP.NONE, STP.NONE, STP.CANCEL_BOTH])
        account = rng.randint(1, self.config.accounts)
        stp = rng.choice(
            [STP.NONE, STP.NONE, STP.CANCEL_RESTING, STP.CANCEL_INCOMING, STP.CANCEL_BOTH]
        )
        return account, stp

    def _order_id(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.1 and self.finished:
            order_id = self.finished.pop(rng.randrange(len(self.finished)))
            return order_id  # reuse of an id whose order is done
        if r < 0.13 and self.believed:
            return self._believed_id()  # duplicate if it still rests
        if r < 0.132 and MAX_ORDER_ID not in self.believed:
            return MAX_ORDER_ID
        self.next_id += 1 + (rng.randrange(1000) if rng.random() < 0.01 else 0)
        return self.next_id

    def _believed_id(self) -> int:
        ids = list(self.believed)
        if self.rng.random() < 0.5:
            return self.rng.choice(ids[-20:])  # recent orders are more likely alive
        return self.rng.choice(ids)

    def _remember(self, cmd: Command) -> Command:
        """A GTC add: its id may rest from now on (unless it already does)."""
        if cmd.order_id > 0 and cmd.order_id not in self.believed:
            self.believed[cmd.order_id] = _Belief(
                cmd.side, cmd.price, cmd.qty, cmd.account, cmd.post_only
            )
            self._new_id = cmd.order_id
        return cmd

    def _finish(self, cmd: Command) -> Command:
        """An IOC, FOK or market order: its id is free after the call."""
        if cmd.order_id > 0 and cmd.order_id not in self.believed:
            self._add_finished(cmd.order_id)
        return cmd

    def _forget(self, cmd: Command) -> Command:
        """A cancel: whatever happens, the id does not rest afterwards."""
        self._forget_id(cmd.order_id)
        return cmd

    def _forget_id(self, order_id: int) -> None:
        if self.believed.pop(order_id, None) is not None:
            self._add_finished(order_id)

    def _add_finished(self, order_id: int) -> None:
        self.finished.append(order_id)
        if len(self.finished) > 50:
            del self.finished[: len(self.finished) - 50]


def stream(seed: int, n: int, config: StreamConfig | None = None) -> list[Command]:
    """The first ``n`` commands of the stream for ``seed``, observing a reference book.

    The same commands as a ``CommandStream`` fed the events of a correct book.
    """
    from reference_book import ReferenceBook

    gen = CommandStream(seed, config)
    args, kwargs = gen.config.book_args()
    book = ReferenceBook(*args, **kwargs)
    commands = []
    for _ in range(n):
        cmd = next(gen)
        commands.append(cmd)
        with contextlib.suppress(ValueError):  # an out of range enum field: no events
            gen.observe(apply(book, cmd))
    return commands


# -- applying commands -----------------------------------------------------------


def apply(book: Any, cmd: Command) -> Any:
    """Run ``cmd`` through a book's per-call face; returns what the method returns."""
    op = cmd.op
    if op == Op.ADD:
        return book.add(
            cmd.order_id,
            cmd.side,
            cmd.price,
            cmd.qty,
            tif=cmd.tif,
            post_only=cmd.post_only,
            account=cmd.account,
            stp=cmd.stp,
        )
    if op == Op.MARKET:
        return book.market(
            cmd.order_id,
            cmd.side,
            cmd.qty,
            protection_ticks=cmd.protection,
            account=cmd.account,
            stp=cmd.stp,
        )
    if op == Op.CANCEL:
        if cmd.reason:
            return book.cancel(cmd.order_id, cmd.reason)
        return book.cancel(cmd.order_id)
    if op == Op.REDUCE:
        return book.reduce(cmd.order_id, cmd.qty)
    if op == Op.REPLACE:
        return book.replace(cmd.order_id, cmd.price, cmd.qty)
    if op == Op.MASS_CANCEL:
        if cmd.reason:
            return book.mass_cancel(cmd.account, cmd.reason)
        return book.mass_cancel(cmd.account)
    raise ValueError(f"op must be an Op, got {op!r}")


def as_call(cmd: Command, book: str = "book") -> str:
    """``cmd`` as a line of Python, for reproducing a failure by hand."""
    op = cmd.op
    if op == Op.ADD:
        extra = ""
        if cmd.tif != TIF.GTC:
            extra += f", tif={_enum_text(TIF, cmd.tif)}"
        if cmd.post_only:
            extra += ", post_only=True"
        if cmd.account:
            extra += f", account={cmd.account}"
        if cmd.stp != STP.NONE:
            extra += f", stp={_enum_text(STP, cmd.stp)}"
        side = _enum_text(Side, cmd.side)
        return f"{book}.add({cmd.order_id}, {side}, {cmd.price}, {cmd.qty}{extra})"
    if op == Op.MARKET:
        extra = ""
        if cmd.protection is not None:
            extra += f", protection_ticks={cmd.protection}"
        if cmd.account:
            extra += f", account={cmd.account}"
        if cmd.stp != STP.NONE:
            extra += f", stp={_enum_text(STP, cmd.stp)}"
        return f"{book}.market({cmd.order_id}, {_enum_text(Side, cmd.side)}, {cmd.qty}{extra})"
    reason = f", {_enum_text(Reason, cmd.reason)}" if cmd.reason else ""
    if op == Op.CANCEL:
        return f"{book}.cancel({cmd.order_id}{reason})"
    if op == Op.REDUCE:
        return f"{book}.reduce({cmd.order_id}, {cmd.qty})"
    if op == Op.REPLACE:
        return f"{book}.replace({cmd.order_id}, {cmd.price}, {cmd.qty})"
    if op == Op.MASS_CANCEL:
        return f"{book}.mass_cancel({cmd.account}{reason})"
    return repr(cmd)


def _enum_text(enum_cls: Any, value: int) -> str:
    try:
        return f"{enum_cls.__name__}.{enum_cls(value).name}"
    except ValueError:
        return str(value)
