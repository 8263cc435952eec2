"""Queries: best_bid/best_ask, depth, orders, len and state_hash."""

import lltrade
from lltrade import TIF

from conftest import (
    BUY,
    MAX_ID,
    SELL,
    book_hash,
    expected_hash,
    new_book,
    snapshot,
)


def _book() -> lltrade.OrderBook:
    book = new_book()
    book.add(1, BUY, 100, 5, account=3)
    book.add(2, BUY, 99, 7)
    book.add(3, BUY, 100, 2)
    book.add(4, BUY, 97, 1)
    book.add(5, SELL, 102, 4)
    book.add(6, SELL, 101, 6, account=3)
    book.add(7, SELL, 102, 8)
    return book


def test_empty_book_queries() -> None:
    book = new_book()
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.depth(5) == ([], [])
    assert book.orders() == []
    assert len(book) == 0
    assert book_hash(book) == expected_hash([])


def test_best_bid_and_ask() -> None:
    book = _book()
    assert book.best_bid() == (100, 7)
    assert book.best_ask() == (101, 6)
    book.cancel(6)
    assert book.best_ask() == (102, 12)
    book.cancel(1)
    book.cancel(3)
    assert book.best_bid() == (99, 7)


def test_depth() -> None:
    book = _book()
    assert book.depth(10) == (
        [(100, 7, 2), (99, 7, 1), (97, 1, 1)],
        [(101, 6, 1), (102, 12, 2)],
    )
    assert book.depth(2) == ([(100, 7, 2), (99, 7, 1)], [(101, 6, 1), (102, 12, 2)])
    assert book.depth(1) == ([(100, 7, 2)], [(101, 6, 1)])


def test_orders_bids_best_first_fifo_then_asks() -> None:
    book = _book()
    assert book.orders() == [
        (1, BUY, 100, 5, 3),
        (3, BUY, 100, 2, 0),
        (2, BUY, 99, 7, 0),
        (4, BUY, 97, 1, 0),
        (6, SELL, 101, 6, 3),
        (5, SELL, 102, 4, 0),
        (7, SELL, 102, 8, 0),
    ]
    assert len(book) == 7


def test_state_hash_follows_the_documented_formula() -> None:
    book = _book()
    assert book_hash(book) == expected_hash(book.orders())
    neg = new_book(-1_000, 1_000)
    neg.add(MAX_ID, BUY, -500, 3)
    neg.add(1, SELL, -20, 10**12)
    assert book_hash(neg) == expected_hash(neg.orders())
    assert isinstance(book.state_hash(), int)
    assert book.state_hash() == book.state_hash()


def test_state_hash_known_value() -> None:
    book = new_book()
    book.add(1, BUY, 100, 5)
    book.add(2, SELL, 101, 3)
    # Computed by hand from the formula in docs/matching.md.
    assert book_hash(book) == expected_hash([(1, BUY, 100, 5, 0), (2, SELL, 101, 3, 0)])


def test_equal_books_built_differently_hash_equal() -> None:
    direct = new_book()
    direct.add(1, BUY, 100, 5)
    direct.add(2, BUY, 100, 3)
    direct.add(3, SELL, 105, 7)

    winding = new_book()
    winding.add(9, BUY, 100, 4)
    winding.add(1, BUY, 100, 8)
    winding.cancel(9)
    winding.reduce(1, 5)
    winding.add(2, BUY, 100, 6)
    winding.replace(2, 100, 3)  # keeps its place behind 1
    winding.add(3, SELL, 106, 10)
    winding.replace(3, 105, 10)
    winding.add(4, BUY, 105, 3, tif=TIF.IOC)  # takes 3 of order 3
    winding.add(5, SELL, 104, 2)
    winding.market(6, BUY, 2)  # takes all of order 5
    winding.add(7, SELL, 200, 2)
    winding.mass_cancel(0)
    winding.cancel(7)

    assert winding.orders() == direct.orders()
    assert book_hash(winding) == book_hash(direct)
    assert winding.state_hash() == direct.state_hash()
    assert winding.depth(10) == direct.depth(10)


def test_queue_order_changes_the_hash() -> None:
    a = new_book()
    a.add(1, BUY, 100, 5)
    a.add(2, BUY, 100, 5)
    b = new_book()
    b.add(2, BUY, 100, 5)
    b.add(1, BUY, 100, 5)
    assert book_hash(a) != book_hash(b)
    assert book_hash(a) == expected_hash(a.orders())
    assert book_hash(b) == expected_hash(b.orders())


def test_account_does_not_enter_the_hash() -> None:
    a = new_book()
    a.add(1, BUY, 100, 5, account=1)
    b = new_book()
    b.add(1, BUY, 100, 5, account=2)
    assert book_hash(a) == book_hash(b)


def test_rejected_commands_leave_everything_unchanged() -> None:
    book = _book()
    before = snapshot(book)
    book.add(1, SELL, 200, 1)  # duplicate
    book.add(8, BUY, 101, 1, post_only=True)
    book.add(8, BUY, 0, 1)
    book.add(8, BUY, 100, 0)
    book.add(8, BUY, 101, 100, tif=TIF.FOK)  # killed FOK
    book.market(1, BUY, 1)
    book.cancel(8)
    book.reduce(2, 7)
    book.replace(2, 99, 0)
    book.replace(2, 99, 7)  # no-op replace
    book.mass_cancel(0)
    book.mass_cancel(55)
    assert snapshot(book) == before
