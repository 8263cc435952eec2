"""Differential test: ``lltrade.OrderBook`` against the pure-Python ``ReferenceBook``.

Seeded random streams (tests/streams.py) go through both books command by
command; every command's events must be equal, and so must the final
``orders()``, ``depth()`` and ``state_hash()``.  A share of the streams also
checks the engine's own invariants after every command, from its queries and
events alone: the book is never crossed, level totals and counts equal the
sum of their orders, orders keep time priority within a level, and quantity
is conserved per order (filled + resting + cancelled + reduced = submitted).

``LLTRADE_DIFF_COMMANDS`` (default 1,000,000) is the total number of commands
over all streams, 5 % of them with full invariant checks;
``LLTRADE_DIFF_SEED`` shifts the seeds to explore new streams.  A failure
prints the seed, the command index and a shrunk command sequence that
reproduces it.
"""

import os
import time
from collections import defaultdict

import pytest

import lltrade
from lltrade.enums import EventKind, Side

from reference_book import ReferenceBook, format_events
from streams import Command, CommandStream, StreamConfig, apply, as_call

TOTAL = int(os.environ.get("LLTRADE_DIFF_COMMANDS", "1000000"))
SEED_BASE = int(os.environ.get("LLTRADE_DIFF_SEED", "0"))
FULL_STREAMS = 10  # two of each book shape of streams.config_for_seed
EVENT_STREAMS = 20
FULL_COMMANDS = max(100, TOTAL // 20 // FULL_STREAMS)
EVENT_COMMANDS = max(100, (TOTAL - FULL_COMMANDS * FULL_STREAMS) // EVENT_STREAMS)
STATE_EVERY = 1000  # events-only streams still compare the whole book this often
MASK64 = 2**64 - 1
DEPTH_ALL = 1_000_000  # more levels than any stream makes
VALUE_ERROR = "ValueError"


def run_command(book, cmd: Command, engine: bool):
    """Events of ``cmd`` as tuples, or ``VALUE_ERROR`` if the call raised ValueError."""
    try:
        events = apply(book, cmd)
    except ValueError:
        return VALUE_ERROR
    return [e.as_tuple() for e in events] if engine else events


def show(events) -> str:
    return "    ValueError" if events == VALUE_ERROR else format_events(events)


def book_state(book) -> tuple:
    return book.orders(), book.depth(DEPTH_ALL), book.state_hash() & MASK64, len(book)


# -- shrinking a failure to a short repro -----------------------------------------


def replay_fails(config: StreamConfig, commands: list[Command]) -> bool:
    """Does the engine disagree with the reference somewhere on ``commands``?"""
    args, kwargs = config.book_args()
    engine, ref = lltrade.OrderBook(*args, **kwargs), ReferenceBook(*args, **kwargs)
    for cmd in commands:
        if run_command(engine, cmd, True) != run_command(ref, cmd, False):
            return True
    return book_state(engine) != book_state(ref)


def shrink(config: StreamConfig, commands: list[Command], budget_s: float = 60.0) -> list[Command]:
    """Greedy delta debugging: drop chunks of commands while the failure persists."""
    deadline = time.monotonic() + budget_s
    chunk = max(1, len(commands) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i = 0
        while i < len(commands) - 1 and time.monotonic() < deadline:
            candidate = commands[:i] + commands[i + chunk :]
            if candidate and replay_fails(config, candidate):
                commands = candidate
            else:
                i += chunk
        chunk //= 2
    return commands


# -- the lockstep run --------------------------------------------------------------


class Lockstep:
    """One stream through the engine and the reference, checked as it goes."""

    def __init__(self, seed: int, n: int, full: bool) -> None:
        self.seed, self.n, self.full = seed, n, full
        self.gen = CommandStream(seed)
        self.config = self.gen.config
        args, kwargs = self.config.book_args()
        self.engine = lltrade.OrderBook(*args, **kwargs)
        self.ref = ReferenceBook(*args, **kwargs)
        self.history: list[Command] = []
        # Invariant bookkeeping, from the engine's events only.
        self.live: dict[int, dict] = {}  # order id -> its quantities, price, side, priority
        self.arrivals = 0  # priority counter: larger = arrived later
        self.index = 0

    def fail(self, what: str, detail: str = "") -> None:
        shrunk = shrink(self.config, list(self.history))
        lines = "\n".join(f"    {as_call(c)}" for c in shrunk)
        args, kwargs = self.config.book_args()
        pytest.fail(
            f"seed={self.seed} command index={self.index}: {what}\n{detail}\n"
            f"  last command: {as_call(self.history[-1])}\n"
            f"  shrunk repro ({len(shrunk)} commands) on "
            f"book = lltrade.OrderBook(*{args}, **{kwargs}):\n{lines}\n"
            f"  full replay: CommandStream({self.seed}).take({self.index + 1}), "
            "feeding observe() the reference's events",
            pytrace=False,
        )

    def run(self) -> None:
        engine, ref, gen = self.engine, self.ref, self.gen
        for index in range(self.n):
            self.index = index
            cmd = next(gen)
            self.history.append(cmd)
            expected = run_command(ref, cmd, False)
            actual = run_command(engine, cmd, True)
            if actual != expected:
                self.fail(
                    "events differ", f"  expected:\n{show(expected)}\n  actual:\n{show(actual)}"
                )
            if expected != VALUE_ERROR:
                gen.observe(expected)
            if self.full:
                self.check_invariants(actual)
                self.check_same_state()
            elif index % STATE_EVERY == 0:
                self.check_same_state()
        self.check_same_state()

    def check_same_state(self) -> None:
        expected, actual = book_state(self.ref), book_state(self.engine)
        if actual != expected:
            names = ("orders()", "depth()", "state_hash()", "len()")
            diffs = [
                f"  {name}:\n    expected {e}\n    actual   {a}"
                for name, e, a in zip(names, expected, actual, strict=True)
                if e != a
            ]
            self.fail("book state differs", "\n".join(diffs))

    # -- engine invariants -------------------------------------------------------

    def check_invariants(self, events) -> None:
        if events != VALUE_ERROR:
            self.check_events(events)
        engine = self.engine
        orders = engine.orders()
        bids, asks = engine.depth(DEPTH_ALL)
        best_bid, best_ask = engine.best_bid(), engine.best_ask()
        if best_bid is not None and best_ask is not None and best_bid[0] >= best_ask[0]:
            self.fail("book is crossed", f"  best bid {best_bid}, best ask {best_ask}")
        if best_bid != (bids[0][:2] if bids else None) or best_ask != (
            asks[0][:2] if asks else None
        ):
            self.fail("best_bid()/best_ask() disagree with depth()", f"  {bids[:1]} {asks[:1]}")
        if len(engine) != len(orders):
            self.fail("len() differs from orders()", f"  {len(engine)} != {len(orders)}")

        # Level totals and counts from the orders, levels best first, no empty level.
        levels: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
        for _oid, side, price, qty, _account in orders:
            if qty <= 0:
                self.fail("a resting order has no open quantity", f"  {orders}")
            levels[side, price][0] += qty
            levels[side, price][1] += 1
        for side, depth in ((Side.BUY, bids), (Side.SELL, asks)):
            prices = sorted((p for s, p in levels if s == side), reverse=side == Side.BUY)
            want = [(p, *levels[side, p]) for p in prices]
            if depth != want:
                self.fail(
                    "depth() differs from the sum of orders()",
                    f"  side {side}: depth {depth}\n  from orders {want}",
                )

        # orders() is in state-hash order: bids best first, then asks best first.
        keys = [(side, -price if side == Side.BUY else price) for _, side, price, *_ in orders]
        if keys != sorted(keys):
            self.fail("orders() not bids best first then asks best first", f"  {orders}")

        # FIFO within a level and quantity conservation, against the events.
        if {o[0] for o in orders} != set(self.live):
            self.fail(
                "resting orders differ from the orders the events left open",
                f"  orders(): {sorted(o[0] for o in orders)}\n  events: {sorted(self.live)}",
            )
        previous = None
        for oid, side, price, qty, _account in orders:
            rec = self.live[oid]
            if (side, price, qty) != (rec["side"], rec["price"], rec["open"]):
                self.fail(
                    "a resting order differs from what its events say",
                    f"  orders() has {(oid, side, price, qty)}, events say {rec}",
                )
            if previous is not None and previous[0] == (side, price) and previous[1] > rec["prio"]:
                self.fail("orders() breaks time priority within a level", f"  {orders}")
            previous = ((side, price), rec["prio"])

    def check_events(self, events) -> None:
        """Follow each order's quantities through the events of one command."""
        level_after: dict[tuple[int, int], int] = {}
        fills = []
        for ev in events:
            kind, oid, side, price, qty, remaining, *_ = ev
            rec = self.live.get(oid)
            if kind == EventKind.ACCEPTED:
                self.arrivals += 1
                self.live[oid] = rec = {
                    "side": side,
                    "price": price,
                    "submitted": qty,
                    "filled": 0,
                    "cancelled": 0,
                    "reduced": 0,
                    "open": qty,
                    "prio": self.arrivals,
                }
            elif kind == EventKind.REJECTED:
                continue
            elif kind == EventKind.LEVEL:
                level_after[side, price] = qty
                continue
            elif rec is None:
                self.fail("event about an order that is not open", f"  {ev}")
            elif kind == EventKind.FILL:
                rec["filled"] += qty
                fills.append(ev)
            elif kind == EventKind.CANCELLED:
                if qty != rec["open"]:
                    self.fail("CANCELLED qty is not the open quantity", f"  {ev}, {rec}")
                rec["cancelled"] += qty
            elif kind == EventKind.REDUCED:
                rec["reduced"] += qty
            elif kind == EventKind.REPLACED:
                if price != rec["price"] or qty > rec["open"]:
                    self.arrivals += 1
                    rec["prio"] = self.arrivals  # loses its place
                rec["submitted"] += qty - rec["open"]
                rec["price"] = price
            rec["open"] = rec["submitted"] - rec["filled"] - rec["cancelled"] - rec["reduced"]
            follows_remaining = kind not in (EventKind.REPLACED, EventKind.ACCEPTED)
            if follows_remaining and (rec["open"] != remaining or rec["open"] < 0):
                self.fail("quantity not conserved", f"  {ev}\n  order so far {rec}")
            if rec["open"] == 0:
                del self.live[oid]
        # FILLs come in (taker, maker) pairs of one price and quantity.
        if len(fills) % 2:
            self.fail("odd number of FILL events", format_events(events))
        for t, m in zip(fills[::2], fills[1::2], strict=True):
            if not (
                t[1] == t[7] == m[7] and m[1] == t[6] == m[6] and t[3:5] == m[3:5] and t[2] != m[2]
            ):
                self.fail("FILL events are not a taker/maker pair", format_events([t, m]))
        # LEVEL events give the new totals.
        if level_after:
            bids, asks = self.engine.depth(DEPTH_ALL)
            totals = {(Side.BUY, p): q for p, q, _ in bids} | {
                (Side.SELL, p): q for p, q, _ in asks
            }
            for key, qty in level_after.items():
                if totals.get(key, 0) != qty:
                    self.fail("LEVEL event disagrees with depth()", f"  {key}: {qty}")


# -- the tests ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(SEED_BASE, SEED_BASE + FULL_STREAMS))
def test_differential_with_invariants(seed: int) -> None:
    Lockstep(seed, FULL_COMMANDS, full=True).run()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(SEED_BASE + 1000, SEED_BASE + 1000 + EVENT_STREAMS))
def test_differential_events(seed: int) -> None:
    Lockstep(seed, EVENT_COMMANDS, full=False).run()


def test_shrink_finds_a_short_repro(monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure path itself: a planted engine bug shrinks to a few commands."""

    real = lltrade.OrderBook

    class Buggy:
        def __init__(self, *args, **kwargs):
            self.book = real(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.book, name)

        def __len__(self):
            return len(self.book)

        def reduce(self, order_id, qty):  # forgets to reject a reduce to the open qty
            for o in self.book.orders():
                if o[0] == order_id and o[3] == qty:
                    return []
            return self.book.reduce(order_id, qty)

    monkeypatch.setattr(lltrade, "OrderBook", Buggy)
    with pytest.raises(pytest.fail.Exception, match="seed=3 ") as info:
        Lockstep(3, 5000, full=False).run()
    repro = info.value.msg.split("shrunk repro (")[1]
    assert int(repro.split(" ")[0]) <= 3, info.value.msg
