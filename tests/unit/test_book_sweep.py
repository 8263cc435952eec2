"""Large sweeps: many levels and thousands of orders; a wide sparse band."""

import lltrade
from lltrade import TIF, Reason

from conftest import (
    BUY,
    SELL,
    Event,
    accepted,
    book_hash,
    c_add,
    cancelled,
    commands,
    event_buffer,
    expected_hash,
    level,
    new_book,
    rejected,
    rows,
    trade,
    tup,
)

LEVELS = 50
PER_LEVEL = 40
BASE = 5_001


def _deep_asks() -> tuple[lltrade.OrderBook, dict[int, list[tuple[int, int]]]]:
    """2,000 asks on 50 levels, arriving interleaved across levels.

    Returns the book and, per price, the FIFO queue of (order_id, qty).
    """
    book = new_book(1, 10_000)
    queues: dict[int, list[tuple[int, int]]] = {BASE + i: [] for i in range(LEVELS)}
    oid = 1
    for k in range(PER_LEVEL):
        for i in range(LEVELS):
            price = BASE + (i * 17 + k) % LEVELS  # a different level order each round
            qty = 1 + (oid * 7) % 5
            assert len(book.add(oid, SELL, price, qty)) == 2
            queues[price].append((oid, qty))
            oid += 1
    return book, queues


def _expected_sweep(
    taker: int,
    limit: int,
    qty: int,
    queues: dict[int, list[tuple[int, int]]],
    tif: int = TIF.GTC,
) -> list[Event]:
    """What a buy of ``qty`` at ``limit`` must produce, written from the spec."""
    out = [accepted(taker, BUY, limit, qty)]
    levels = []
    left = qty
    for price in sorted(queues):
        if price > limit or left == 0:
            break
        total = sum(q for _, q in queues[price])
        for maker, mqty in queues[price]:
            if left == 0:
                break
            take = min(left, mqty)
            left -= take
            total -= take
            out += trade(BUY, taker, maker, price, take, left, mqty - take)
        levels.append(level(SELL, price, total))
    if left and tif == TIF.IOC:
        out.append(cancelled(taker, BUY, limit, left, Reason.IOC_REMAINDER))
    out += levels
    if left and tif == TIF.GTC:
        out.append(level(BUY, limit, left))
    return out


def test_sweep_through_all_levels_and_rest() -> None:
    book, queues = _deep_asks()
    assert len(book) == LEVELS * PER_LEVEL
    total = sum(q for queue in queues.values() for _, q in queue)
    limit = BASE + LEVELS - 1
    events = tup(book.add(99_999, BUY, limit, total + 5))
    assert len(events) == 1 + 2 * LEVELS * PER_LEVEL + LEVELS + 1
    assert events == _expected_sweep(99_999, limit, total + 5, queues)
    assert book.orders() == [(99_999, BUY, limit, 5, 0)]
    assert book.best_ask() is None


def test_partial_sweep_stops_inside_a_level() -> None:
    book, queues = _deep_asks()
    # Everything on the first 10 levels plus part of the 11th.
    first = sum(q for p in range(BASE, BASE + 10) for _, q in queues[p])
    want = first + 3
    events = tup(book.add(77_777, BUY, BASE + 30, want, tif=TIF.IOC))
    assert events == _expected_sweep(77_777, BASE + 30, want, queues, TIF.IOC)
    assert book.best_ask()[0] == BASE + 10
    gone = 10 * PER_LEVEL + len(_filled_prefix(queues[BASE + 10], 3))
    assert len(book) == LEVELS * PER_LEVEL - gone
    assert book_hash(book) == expected_hash(book.orders())


def _filled_prefix(queue: list[tuple[int, int]], qty: int) -> list[int]:
    """Ids at the head of ``queue`` that ``qty`` fills completely."""
    done = []
    for oid, q in queue:
        if qty < q:
            break
        qty -= q
        done.append(oid)
    return done


def test_ioc_limit_inside_the_book_leaves_the_rest() -> None:
    book, queues = _deep_asks()
    limit = BASE + 4
    total = sum(q for p in range(BASE, limit + 1) for _, q in queues[p])
    events = tup(book.add(55_555, BUY, limit, total + 100, tif=TIF.IOC))
    assert events == _expected_sweep(55_555, limit, total + 100, queues, TIF.IOC)
    assert events[-6] == cancelled(55_555, BUY, limit, 100, Reason.IOC_REMAINDER)
    assert book.best_ask() == (limit + 1, sum(q for _, q in queues[limit + 1]))


def test_sweep_through_the_batch_face() -> None:
    book, queues = _deep_asks()
    total = sum(q for queue in queues.values() for _, q in queue)
    limit = BASE + LEVELS - 1
    events = event_buffer(3 * LEVELS * PER_LEVEL + 100)
    n = book.process(commands([c_add(99_999, BUY, limit, total + 5)]), events)
    assert rows(events, n) == _expected_sweep(99_999, limit, total + 5, queues)


def test_cancel_many_mid_queue_then_sweep() -> None:
    book, queues = _deep_asks()
    # Cancel every third order, wherever it sits in its queue.
    for price, queue in queues.items():
        keep = []
        for pos, (oid, qty) in enumerate(queue):
            if pos % 3 == 1:
                assert tup(book.cancel(oid))[0] == cancelled(
                    oid, SELL, price, qty, Reason.USER_CANCEL
                )
            else:
                keep.append((oid, qty))
        queues[price] = keep
    total = sum(q for queue in queues.values() for _, q in queue)
    limit = BASE + LEVELS - 1
    events = tup(book.market(44_444, BUY, total))
    expected = _expected_sweep(44_444, limit, total, queues)
    expected[0] = accepted(44_444, BUY, 0, total)
    assert events == expected
    assert len(book) == 0


# -- a wide sparse band ------------------------------------------------------------


def _sparse() -> lltrade.OrderBook:
    book = new_book(1, 10_000_000)
    oid = 1
    for base in (1, 2_500_000, 4_999_990):
        for d in range(5):
            book.add(oid, BUY, base + d * 3, 10)
            oid += 1
    for base in (5_000_010, 7_777_777, 9_999_996):
        for d in range(5):
            book.add(oid, SELL, min(base + d, 10_000_000), 10)
            oid += 1
    return book


def test_sparse_band_edges() -> None:
    book = new_book(1, 10_000_000)
    assert tup(book.add(1, BUY, 1, 1)) == [accepted(1, BUY, 1, 1), level(BUY, 1, 1)]
    assert tup(book.add(2, SELL, 10_000_000, 1)) == [
        accepted(2, SELL, 10_000_000, 1),
        level(SELL, 10_000_000, 1),
    ]
    assert tup(book.add(3, BUY, 0, 1)) == [rejected(3, Reason.PRICE_OUT_OF_BAND)]
    assert tup(book.add(3, SELL, 10_000_001, 1)) == [rejected(3, Reason.PRICE_OUT_OF_BAND)]
    assert book.depth(3) == ([(1, 1, 1)], [(10_000_000, 1, 1)])


def test_sparse_band_depth_and_sweeps_across_gaps() -> None:
    book = _sparse()
    bids, asks = book.depth(100)
    assert [p for p, _, _ in bids] == [
        *(4_999_990 + d * 3 for d in reversed(range(5))),
        *(2_500_000 + d * 3 for d in reversed(range(5))),
        *(1 + d * 3 for d in reversed(range(5))),
    ]
    assert [p for p, _, _ in asks] == [
        *(5_000_010 + d for d in range(5)),
        *(7_777_777 + d for d in range(5)),
        9_999_996,
        9_999_997,
        9_999_998,
        9_999_999,
        10_000_000,
    ]
    assert book.best_bid() == (5_000_002, 10)
    assert book.best_ask() == (5_000_010, 10)

    # A buy that clears the first ask cluster and half the second, across the gap.
    ask_ids = {p: 16 + i for i, p in enumerate(a for a, _, _ in asks)}
    expected = [accepted(100, BUY, 9_000_000, 75)]
    left = 75
    touched = []
    for p in [a for a, _, _ in asks][:8]:
        take = min(10, left)
        left -= take
        expected += trade(BUY, 100, ask_ids[p], p, take, left, 10 - take)
        touched.append(level(SELL, p, 10 - take))
    assert left == 0
    assert tup(book.add(100, BUY, 9_000_000, 75)) == [*expected, *touched]
    assert book.best_ask() == (7_777_779, 5)

    # A market sell that crosses both gaps down to the bottom cluster.
    bid_prices = [p for p, _, _ in bids]
    bid_ids = {p: i + 1 for i, p in enumerate(sorted(bid_prices, key=_bid_arrival))}
    expected = [accepted(101, SELL, 0, 125)]
    left = 125
    touched = []
    for p in bid_prices[:13]:
        take = min(10, left)
        left -= take
        expected += trade(SELL, 101, bid_ids[p], p, take, left, 10 - take)
        touched.append(level(BUY, p, 10 - take))
    assert left == 0
    assert tup(book.market(101, SELL, 125)) == [*expected, *touched]
    assert book.best_bid() == (7, 5)
    assert book_hash(book) == expected_hash(book.orders())

    # A buy at the top of the band clears every remaining ask.
    rest = book.depth(100)[1]
    events = tup(book.add(102, BUY, 10_000_000, 1_000, tif=TIF.IOC))
    assert events[-len(rest) :] == [level(SELL, p, 0) for p, _, _ in rest]
    assert events[-len(rest) - 1] == cancelled(
        102, BUY, 10_000_000, 1_000 - sum(q for _, q, _ in rest), Reason.IOC_REMAINDER
    )
    assert book.best_ask() is None


def _bid_arrival(price: int) -> int:
    """Arrival rank of the bid at ``price`` in :func:`_sparse`."""
    for rank, base in enumerate((1, 2_500_000, 4_999_990)):
        if base <= price < base + 15:
            return rank * 5 + (price - base) // 3
    raise AssertionError(price)
