"""mass_cancel(account)."""

import lltrade
from lltrade import Reason

from conftest import BUY, SELL, accepted, cancelled, level, new_book, snapshot, tup

ME = 7
YOU = 8


def _book() -> lltrade.OrderBook:
    book = new_book()
    book.add(1, BUY, 100, 1, account=ME)
    book.add(2, BUY, 100, 2, account=YOU)
    book.add(3, BUY, 100, 3, account=ME)
    book.add(4, BUY, 99, 4)
    book.add(5, BUY, 101, 5, account=ME)
    book.add(6, SELL, 105, 6, account=ME)
    book.add(7, SELL, 103, 7, account=YOU)
    book.add(8, SELL, 103, 8, account=ME)
    book.add(9, SELL, 104, 9, account=YOU)
    return book


def test_mass_cancel_order_and_levels() -> None:
    book = _book()
    assert tup(book.mass_cancel(ME)) == [
        cancelled(5, BUY, 101, 5, Reason.MASS_CANCEL),
        cancelled(1, BUY, 100, 1, Reason.MASS_CANCEL),
        cancelled(3, BUY, 100, 3, Reason.MASS_CANCEL),
        cancelled(8, SELL, 103, 8, Reason.MASS_CANCEL),
        cancelled(6, SELL, 105, 6, Reason.MASS_CANCEL),
        level(BUY, 101, 0),
        level(BUY, 100, 2),
        level(SELL, 103, 7),
        level(SELL, 105, 0),
    ]
    assert book.orders() == [
        (2, BUY, 100, 2, YOU),
        (4, BUY, 99, 4, 0),
        (7, SELL, 103, 7, YOU),
        (9, SELL, 104, 9, YOU),
    ]
    # The ids are free again.
    assert tup(book.add(5, SELL, 110, 1)) == [accepted(5, SELL, 110, 1), level(SELL, 110, 1)]


def test_mass_cancel_zero_does_nothing() -> None:
    book = _book()
    before = snapshot(book)
    assert tup(book.mass_cancel(0)) == []
    assert tup(book.mass_cancel(0, reason=Reason.KILL_SWITCH)) == []
    assert snapshot(book) == before


def test_mass_cancel_unknown_account_does_nothing() -> None:
    book = _book()
    before = snapshot(book)
    assert tup(book.mass_cancel(12345)) == []
    assert snapshot(book) == before
    assert tup(new_book().mass_cancel(ME)) == []


def test_mass_cancel_with_daemon_reasons() -> None:
    book = _book()
    assert tup(book.mass_cancel(YOU, reason=Reason.KILL_SWITCH)) == [
        cancelled(2, BUY, 100, 2, Reason.KILL_SWITCH),
        cancelled(7, SELL, 103, 7, Reason.KILL_SWITCH),
        cancelled(9, SELL, 104, 9, Reason.KILL_SWITCH),
        level(BUY, 100, 4),
        level(SELL, 103, 8),
        level(SELL, 104, 0),
    ]
    assert tup(book.mass_cancel(ME, Reason.DISCONNECT)) == [
        cancelled(5, BUY, 101, 5, Reason.DISCONNECT),
        cancelled(1, BUY, 100, 1, Reason.DISCONNECT),
        cancelled(3, BUY, 100, 3, Reason.DISCONNECT),
        cancelled(8, SELL, 103, 8, Reason.DISCONNECT),
        cancelled(6, SELL, 105, 6, Reason.DISCONNECT),
        level(BUY, 101, 0),
        level(BUY, 100, 0),
        level(SELL, 103, 0),
        level(SELL, 105, 0),
    ]
    assert book.orders() == [(4, BUY, 99, 4, 0)]
    assert tup(book.mass_cancel(ME)) == []


def test_mass_cancel_after_partial_fill_cancels_open_qty() -> None:
    book = new_book()
    book.add(1, SELL, 100, 10, account=ME)
    book.add(2, BUY, 100, 4)
    assert tup(book.mass_cancel(ME)) == [
        cancelled(1, SELL, 100, 6, Reason.MASS_CANCEL),
        level(SELL, 100, 0),
    ]
    assert len(book) == 0
