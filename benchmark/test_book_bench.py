"""pytest-benchmark suites of the order book (``make bench``).

Each benchmark builds its book afresh in the set-up of every round
(``benchmark.pedantic``), times one operation, and then checks what that
operation did to the book, so a fast wrong answer cannot pass.  The garbage
collector is off throughout (``conftest.gc_off``).  Single operations take a
few hundred nanoseconds, so their figures include the timer's own cost (about
50 ns here); the replay suites time 100k commands per round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import lltrade
from lltrade import TIF, EventKind, Op, Side
from lltrade.workload import Workload, WorkloadSpec, generate

MIN_PRICE, MAX_PRICE = 1, 1_000_000
MID = 100_000
ORDERS_PER_LEVEL = 10
QTY = 10
NEW_ID = 10**15  # never used by the set-up books
WARM_ID = NEW_ID + 1

Setup = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


def new_book() -> lltrade.OrderBook:
    return lltrade.OrderBook(MIN_PRICE, MAX_PRICE)


def adds(sides: np.ndarray, prices: np.ndarray, qty: int = QTY, first_id: int = 1) -> np.ndarray:
    """GTC add commands, ids from ``first_id``."""
    cmds = np.zeros(len(sides), dtype=lltrade.COMMAND_DTYPE)
    cmds["op"] = Op.ADD
    cmds["order_id"] = np.arange(first_id, first_id + len(sides))
    cmds["side"] = sides
    cmds["price"] = prices
    cmds["qty"] = qty
    return cmds


def concat(*parts: np.ndarray) -> np.ndarray:
    """Concatenate command arrays keeping COMMAND_DTYPE's padded layout."""
    out = np.zeros(sum(len(p) for p in parts), dtype=lltrade.COMMAND_DTYPE)
    i = 0
    for p in parts:
        out[i : i + len(p)] = p
        i += len(p)
    return out


def build(cmds: np.ndarray) -> lltrade.OrderBook:
    """A book made by the batch face from ``cmds``; none may be rejected.

    One per-call add and cancel far from the touch then warm the per-call
    path (its first call on a fresh book pays one-off costs), leaving the
    book as the commands made it.
    """
    book = new_book()
    events = np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)
    i = 0
    while i < len(cmds):
        n = book.process(cmds[i : i + 4096], events)
        assert not (events["kind"][:n] == EventKind.REJECTED).any()
        i += book.commands_processed
    book.add(WARM_ID, Side.SELL, MAX_PRICE, 1)
    book.cancel(WARM_ID)
    return book


@functools.cache
def two_sided(orders: int) -> np.ndarray:
    """``orders`` resting orders, half a side, ORDERS_PER_LEVEL per level.

    Levels sit every other tick (so a new level can go between two), best bid
    ``MID - 2``, best ask ``MID + 2``.
    """
    per_side = orders // 2
    level = np.arange(per_side) // ORDERS_PER_LEVEL
    bids = MID - 2 - 2 * level
    asks = MID + 2 + 2 * level
    sides = np.repeat([Side.BUY, Side.SELL], per_side)
    return adds(sides, np.concatenate([bids, asks]))


def run_once(benchmark: Any, target: Callable[..., Any], setup: Setup, rounds: int) -> Any:
    return benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=2)


# -- add ----------------------------------------------------------------------------


@pytest.mark.parametrize("orders", [1_000, 100_000])
def test_add_new_level(benchmark: Any, orders: int) -> None:
    """A passive bid one tick behind the touch, where no level is yet."""
    base = two_sided(orders)
    books: list[lltrade.OrderBook] = []
    price = MID - 3

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        books[:] = [build(base)]
        return (books[0],), {}

    events = run_once(
        benchmark,
        lambda b: b.add(NEW_ID, Side.BUY, price, 7),
        setup,
        20 if orders > 10_000 else 300,
    )
    book = books[-1]
    assert [e.as_tuple() for e in events] == [
        (EventKind.ACCEPTED, NEW_ID, Side.BUY, price, 7, 7, 0, 0, 0),
        (EventKind.LEVEL, 0, Side.BUY, price, 7, 0, 0, 0, 0),
    ]
    assert len(book) == orders + 1
    assert book.level_count == orders // ORDERS_PER_LEVEL + 1
    assert book.best_bid() == (MID - 2, ORDERS_PER_LEVEL * QTY)
    assert book.depth(2)[0][1] == (price, 7, 1)


@pytest.mark.parametrize("orders", [1_000, 100_000])
def test_add_existing_level(benchmark: Any, orders: int) -> None:
    """A passive bid joining the back of the best bid's queue."""
    base = two_sided(orders)
    books: list[lltrade.OrderBook] = []
    price = MID - 2

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        books[:] = [build(base)]
        return (books[0],), {}

    events = run_once(
        benchmark,
        lambda b: b.add(NEW_ID, Side.BUY, price, 7),
        setup,
        20 if orders > 10_000 else 300,
    )
    book = books[-1]
    total = ORDERS_PER_LEVEL * QTY + 7
    assert [e.as_tuple() for e in events] == [
        (EventKind.ACCEPTED, NEW_ID, Side.BUY, price, 7, 7, 0, 0, 0),
        (EventKind.LEVEL, 0, Side.BUY, price, total, 0, 0, 0, 0),
    ]
    assert len(book) == orders + 1
    assert book.level_count == orders // ORDERS_PER_LEVEL
    assert book.best_bid() == (price, total)
    assert book.depth(1)[0][0] == (price, total, ORDERS_PER_LEVEL + 1)


# -- cancel --------------------------------------------------------------------------


@pytest.mark.parametrize("queue", [10, 10_000])
def test_cancel_mid_queue(benchmark: Any, queue: int) -> None:
    """Cancel the middle order of the best bid's queue (``queue`` orders long)."""
    background = two_sided(1_000)
    head = adds(np.full(queue, Side.BUY), np.full(queue, MID - 1), first_id=len(background) + 1)
    base = concat(background, head)
    victim = int(head["order_id"][queue // 2])
    books: list[lltrade.OrderBook] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        books[:] = [build(base)]
        return (books[0],), {}

    events = run_once(benchmark, lambda b: b.cancel(victim), setup, 300)
    book = books[-1]
    left = (queue - 1) * QTY
    assert [e.as_tuple() for e in events] == [
        (EventKind.CANCELLED, victim, Side.BUY, MID - 1, QTY, 0, 0, 0, lltrade.Reason.USER_CANCEL),
        (EventKind.LEVEL, 0, Side.BUY, MID - 1, left, 0, 0, 0, 0),
    ]
    assert len(book) == len(base) - 1
    assert book.best_bid() == (MID - 1, left)
    assert victim not in {o[0] for o in book.orders()}


# -- aggressive ----------------------------------------------------------------------


@pytest.mark.parametrize("levels", [1, 10, 100])
def test_sweep(benchmark: Any, levels: int) -> None:
    """An IOC buy that takes every ask of ``levels`` levels, 4 orders each."""
    per_level = 4
    n = levels * per_level
    asks = adds(np.full(n, Side.SELL), MID + np.arange(n) // per_level)
    bids = adds(np.full(10, Side.BUY), np.full(10, MID - 5), first_id=n + 1)
    base = concat(asks, bids)
    limit = MID + levels - 1
    books: list[lltrade.OrderBook] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        books[:] = [build(base)]
        return (books[0],), {}

    events = run_once(
        benchmark,
        lambda b: b.add(NEW_ID, Side.BUY, limit, n * QTY, tif=TIF.IOC),
        setup,
        300,
    )
    book = books[-1]
    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.FILL) == 2 * n
    assert kinds.count(EventKind.LEVEL) == levels
    assert kinds[0] == EventKind.ACCEPTED and EventKind.CANCELLED not in kinds
    taker_fills = [e for e in events if e.kind == EventKind.FILL and e.order_id == NEW_ID]
    assert [e.price for e in taker_fills] == [MID + i // per_level for i in range(n)]
    assert taker_fills[-1].remaining == 0
    assert book.best_ask() is None
    assert len(book) == 10


# -- replays of a 100k-command stream ------------------------------------------------


@functools.cache
def stream() -> Workload:
    return generate(WorkloadSpec(commands=100_000, seed=1))


def test_batch_face_100k(benchmark: Any) -> None:
    w = stream()
    events = np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)
    books: list[lltrade.OrderBook] = []
    rejects: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        s = w.spec
        books[:] = [lltrade.OrderBook(s.min_price, s.max_price, s.tick, s.lot)]
        return (books[0],), {}

    def replay(book: lltrade.OrderBook) -> None:
        cmds = w.commands
        process = book.process
        kinds = events["kind"]
        bad = 0
        i = 0
        while i < len(cmds):
            k = process(cmds[i : i + 4096], events)
            bad += int(np.count_nonzero(kinds[:k] == EventKind.REJECTED))
            i += book.commands_processed
        rejects.append(bad)

    run_once(benchmark, replay, setup, 20)
    benchmark.extra_info["commands"] = len(w.commands)
    assert rejects == [0] * len(rejects)
    assert books[-1].state_hash() == w.state_hash()
    assert len(books[-1]) == len(w.resting)


def test_per_call_face_100k(benchmark: Any) -> None:
    w = stream()
    c = w.commands
    rows = list(
        zip(
            c["op"].tolist(),
            c["order_id"].tolist(),
            c["side"].tolist(),
            c["price"].tolist(),
            c["qty"].tolist(),
            c["tif"].tolist(),
            c["protection"].tolist(),
            strict=True,
        )
    )
    books: list[lltrade.OrderBook] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        s = w.spec
        books[:] = [lltrade.OrderBook(s.min_price, s.max_price, s.tick, s.lot)]
        return (books[0],), {}

    def replay(book: lltrade.OrderBook) -> None:
        add, cancel, market = book.add, book.cancel, book.market
        for op, oid, side, price, qty, tif, prot in rows:
            if op == Op.ADD:
                add(oid, side, price, qty, tif=tif)
            elif op == Op.CANCEL:
                cancel(oid)
            else:
                market(oid, side, qty, protection_ticks=None if prot < 0 else prot)

    assert set(c["op"].tolist()) <= {Op.ADD, Op.CANCEL, Op.MARKET}
    run_once(benchmark, replay, setup, 5)
    benchmark.extra_info["commands"] = len(c)
    assert books[-1].state_hash() == w.state_hash()
