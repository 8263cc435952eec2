"""Market orders: sweep, protection limit, remainder, validation."""

from lltrade import Reason

from conftest import (
    BUY,
    SELL,
    accepted,
    cancelled,
    level,
    new_book,
    rejected,
    snapshot,
    trade,
    tup,
)


def test_market_into_empty_book_is_accepted_then_cancelled() -> None:
    book = new_book()
    assert tup(book.market(1, BUY, 5)) == [
        accepted(1, BUY, 0, 5),
        cancelled(1, BUY, 0, 5, Reason.IOC_REMAINDER),
    ]
    assert tup(book.market(1, SELL, 5, protection_ticks=3)) == [
        accepted(1, SELL, 0, 5),
        cancelled(1, SELL, 0, 5, Reason.IOC_REMAINDER),
    ]
    assert len(book) == 0


def test_market_without_protection_sweeps_the_whole_side() -> None:
    book = new_book()
    book.add(1, SELL, 100, 2)
    book.add(2, SELL, 105, 3)
    book.add(3, SELL, 900, 4)
    book.add(4, BUY, 50, 1)
    assert tup(book.market(9, BUY, 20)) == [
        accepted(9, BUY, 0, 20),
        *trade(BUY, 9, 1, 100, 2, 18, 0),
        *trade(BUY, 9, 2, 105, 3, 15, 0),
        *trade(BUY, 9, 3, 900, 4, 11, 0),
        cancelled(9, BUY, 0, 11, Reason.IOC_REMAINDER),
        level(SELL, 100, 0),
        level(SELL, 105, 0),
        level(SELL, 900, 0),
    ]
    assert book.orders() == [(4, BUY, 50, 1, 0)]


def test_market_fully_filled_has_no_cancel() -> None:
    book = new_book()
    book.add(1, BUY, 100, 2)
    book.add(2, BUY, 100, 3)
    book.add(3, BUY, 90, 4)
    assert tup(book.market(9, SELL, 6)) == [
        accepted(9, SELL, 0, 6),
        *trade(SELL, 9, 1, 100, 2, 4, 0),
        *trade(SELL, 9, 2, 100, 3, 1, 0),
        *trade(SELL, 9, 3, 90, 1, 0, 3),
        level(BUY, 100, 0),
        level(BUY, 90, 3),
    ]
    assert book.orders() == [(3, BUY, 90, 3, 0)]


def test_market_buy_protection_caps_the_sweep() -> None:
    book = new_book()
    for i, price in enumerate((100, 101, 102, 103), start=1):
        book.add(i, SELL, price, 1)
    # limit = best ask 100 + 2 ticks = 102
    assert tup(book.market(9, BUY, 10, protection_ticks=2)) == [
        accepted(9, BUY, 0, 10),
        *trade(BUY, 9, 1, 100, 1, 9, 0),
        *trade(BUY, 9, 2, 101, 1, 8, 0),
        *trade(BUY, 9, 3, 102, 1, 7, 0),
        cancelled(9, BUY, 0, 7, Reason.IOC_REMAINDER),
        level(SELL, 100, 0),
        level(SELL, 101, 0),
        level(SELL, 102, 0),
    ]
    assert book.best_ask() == (103, 1)


def test_market_protection_zero_takes_only_the_best_level() -> None:
    book = new_book()
    book.add(1, SELL, 100, 1)
    book.add(2, SELL, 100, 1)
    book.add(3, SELL, 101, 1)
    assert tup(book.market(9, BUY, 5, protection_ticks=0)) == [
        accepted(9, BUY, 0, 5),
        *trade(BUY, 9, 1, 100, 1, 4, 0),
        *trade(BUY, 9, 2, 100, 1, 3, 0),
        cancelled(9, BUY, 0, 3, Reason.IOC_REMAINDER),
        level(SELL, 100, 0),
    ]


def test_market_protection_is_counted_in_ticks() -> None:
    book = new_book(5, 1_000, tick=5)
    for i, price in enumerate((100, 105, 110, 115), start=1):
        book.add(i, SELL, price, 2)
    # limit = 100 + 2 * 5 = 110
    assert tup(book.market(9, BUY, 5, protection_ticks=2)) == [
        accepted(9, BUY, 0, 5),
        *trade(BUY, 9, 1, 100, 2, 3, 0),
        *trade(BUY, 9, 2, 105, 2, 1, 0),
        *trade(BUY, 9, 3, 110, 1, 0, 1),
        level(SELL, 100, 0),
        level(SELL, 105, 0),
        level(SELL, 110, 1),
    ]


def test_market_sell_protection_counts_down_from_best_bid() -> None:
    book = new_book()
    book.add(1, BUY, 100, 1)
    book.add(2, BUY, 99, 1)
    book.add(3, BUY, 98, 1)
    # limit = best bid 100 - 1 tick = 99
    assert tup(book.market(9, SELL, 3, protection_ticks=1)) == [
        accepted(9, SELL, 0, 3),
        *trade(SELL, 9, 1, 100, 1, 2, 0),
        *trade(SELL, 9, 2, 99, 1, 1, 0),
        cancelled(9, SELL, 0, 1, Reason.IOC_REMAINDER),
        level(BUY, 100, 0),
        level(BUY, 99, 0),
    ]
    assert book.best_bid() == (98, 1)


def test_market_protection_beyond_the_band() -> None:
    book = new_book()
    book.add(1, SELL, 999, 1)
    book.add(2, SELL, 1_000, 1)
    assert tup(book.market(9, BUY, 2, protection_ticks=10**9)) == [
        accepted(9, BUY, 0, 2),
        *trade(BUY, 9, 1, 999, 1, 1, 0),
        *trade(BUY, 9, 2, 1_000, 1, 0, 0),
        level(SELL, 999, 0),
        level(SELL, 1_000, 0),
    ]


def test_market_validation() -> None:
    book = new_book(lot=5, max_qty=100)
    book.add(7, SELL, 100, 5)
    book.add(8, BUY, 90, 5)
    before = snapshot(book)
    assert tup(book.market(0, BUY, 0)) == [rejected(0, Reason.INVALID_ORDER_ID)]
    assert tup(book.market(-3, BUY, 5)) == [rejected(-3, Reason.INVALID_ORDER_ID)]
    assert tup(book.market(1, BUY, 0)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.market(1, BUY, -5)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.market(1, BUY, 7)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.market(1, BUY, 105)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.market(7, BUY, 6)) == [rejected(7, Reason.INVALID_QTY)]
    # A live id on either side is a duplicate.
    assert tup(book.market(7, BUY, 5)) == [rejected(7, Reason.DUPLICATE_ORDER_ID)]
    assert tup(book.market(8, BUY, 5)) == [rejected(8, Reason.DUPLICATE_ORDER_ID)]
    assert snapshot(book) == before


def test_market_id_is_free_after_the_call() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5)
    book.market(2, BUY, 2)
    assert tup(book.add(2, SELL, 101, 1)) == [accepted(2, SELL, 101, 1), level(SELL, 101, 1)]
    assert tup(book.market(3, BUY, 4)) == [
        accepted(3, BUY, 0, 4),
        *trade(BUY, 3, 1, 100, 3, 1, 0),
        *trade(BUY, 3, 2, 101, 1, 0, 0),
        level(SELL, 100, 0),
        level(SELL, 101, 0),
    ]
    assert tup(book.add(3, BUY, 50, 1)) == [accepted(3, BUY, 50, 1), level(BUY, 50, 1)]
