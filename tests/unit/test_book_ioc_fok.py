"""IOC and FOK limit orders."""

from lltrade import TIF, Reason

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


def test_ioc_into_empty_book_is_accepted_then_cancelled() -> None:
    book = new_book()
    assert tup(book.add(1, BUY, 100, 5, tif=TIF.IOC)) == [
        accepted(1, BUY, 100, 5),
        cancelled(1, BUY, 100, 5, Reason.IOC_REMAINDER),
    ]
    assert tup(book.add(1, SELL, 100, 5, tif=TIF.IOC)) == [
        accepted(1, SELL, 100, 5),
        cancelled(1, SELL, 100, 5, Reason.IOC_REMAINDER),
    ]
    assert len(book) == 0


def test_ioc_remainder_is_cancelled_never_rests() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    book.add(2, SELL, 102, 3)
    assert tup(book.add(3, BUY, 101, 5, tif=TIF.IOC)) == [
        accepted(3, BUY, 101, 5),
        *trade(BUY, 3, 1, 100, 3, 2, 0),
        cancelled(3, BUY, 101, 2, Reason.IOC_REMAINDER),
        level(SELL, 100, 0),
    ]
    assert book.best_bid() is None
    assert book.orders() == [(2, SELL, 102, 3, 0)]


def test_ioc_full_fill_has_no_cancel() -> None:
    book = new_book()
    book.add(1, BUY, 100, 3)
    book.add(2, BUY, 99, 3)
    assert tup(book.add(3, SELL, 99, 4, tif=TIF.IOC)) == [
        accepted(3, SELL, 99, 4),
        *trade(SELL, 3, 1, 100, 3, 1, 0),
        *trade(SELL, 3, 2, 99, 1, 0, 2),
        level(BUY, 100, 0),
        level(BUY, 99, 2),
    ]


def test_ioc_that_does_not_reach_the_book() -> None:
    book = new_book()
    book.add(1, SELL, 101, 3)
    before = snapshot(book)
    assert tup(book.add(2, BUY, 100, 5, tif=TIF.IOC)) == [
        accepted(2, BUY, 100, 5),
        cancelled(2, BUY, 100, 5, Reason.IOC_REMAINDER),
    ]
    assert snapshot(book) == before


def test_fok_fills_completely_across_levels() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    book.add(2, SELL, 101, 4)
    assert tup(book.add(3, BUY, 101, 7, tif=TIF.FOK)) == [
        accepted(3, BUY, 101, 7),
        *trade(BUY, 3, 1, 100, 3, 4, 0),
        *trade(BUY, 3, 2, 101, 4, 0, 0),
        level(SELL, 100, 0),
        level(SELL, 101, 0),
    ]
    assert len(book) == 0


def test_fok_leaves_partially_filled_maker() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    book.add(2, SELL, 101, 4)
    assert tup(book.add(3, BUY, 105, 5, tif=TIF.FOK)) == [
        accepted(3, BUY, 105, 5),
        *trade(BUY, 3, 1, 100, 3, 2, 0),
        *trade(BUY, 3, 2, 101, 2, 0, 2),
        level(SELL, 100, 0),
        level(SELL, 101, 2),
    ]
    assert book.orders() == [(2, SELL, 101, 2, 0)]


def test_fok_short_of_quantity_is_killed_without_side_effects() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    book.add(2, SELL, 101, 4)
    before = snapshot(book)
    assert tup(book.add(3, BUY, 101, 8, tif=TIF.FOK)) == [
        accepted(3, BUY, 101, 8),
        cancelled(3, BUY, 101, 8, Reason.FOK_UNFILLED),
    ]
    assert snapshot(book) == before


def test_fok_limited_by_price_is_killed() -> None:
    book = new_book()
    book.add(1, BUY, 100, 3)
    book.add(2, BUY, 98, 10)
    before = snapshot(book)
    assert tup(book.add(3, SELL, 99, 5, tif=TIF.FOK)) == [
        accepted(3, SELL, 99, 5),
        cancelled(3, SELL, 99, 5, Reason.FOK_UNFILLED),
    ]
    assert snapshot(book) == before
    # Exactly the quantity available within the limit fills.
    assert tup(book.add(3, SELL, 99, 3, tif=TIF.FOK)) == [
        accepted(3, SELL, 99, 3),
        *trade(SELL, 3, 1, 100, 3, 0, 0),
        level(BUY, 100, 0),
    ]


def test_fok_into_empty_book() -> None:
    book = new_book()
    assert tup(book.add(1, BUY, 100, 1, tif=TIF.FOK)) == [
        accepted(1, BUY, 100, 1),
        cancelled(1, BUY, 100, 1, Reason.FOK_UNFILLED),
    ]
    assert len(book) == 0


def test_ioc_and_fok_ids_are_free_after_the_call() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    book.add(10, BUY, 100, 1, tif=TIF.IOC)  # partly fills 1, nothing left
    book.add(11, BUY, 90, 1, tif=TIF.IOC)  # no fill
    book.add(12, BUY, 100, 9, tif=TIF.FOK)  # killed
    book.add(13, BUY, 100, 1, tif=TIF.FOK)  # filled
    assert book.orders() == [(1, SELL, 100, 1, 0)]
    for oid in (10, 11, 12, 13):
        assert tup(book.add(oid, BUY, 80 + oid, 1)) == [
            accepted(oid, BUY, 80 + oid, 1),
            level(BUY, 80 + oid, 1),
        ]
    assert len(book) == 5


def test_ioc_and_fok_with_a_live_id_are_rejected() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    book.add(2, BUY, 90, 3)
    before = snapshot(book)
    assert tup(book.add(1, BUY, 100, 1, tif=TIF.IOC)) == [rejected(1, Reason.DUPLICATE_ORDER_ID)]
    assert tup(book.add(2, BUY, 100, 1, tif=TIF.FOK)) == [rejected(2, Reason.DUPLICATE_ORDER_ID)]
    assert snapshot(book) == before
