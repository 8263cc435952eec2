"""Self-trade prevention: every mode, every order type, FOK with STP, replace."""

import lltrade
from lltrade import STP, TIF, Reason

from conftest import (
    BUY,
    SELL,
    accepted,
    cancelled,
    level,
    new_book,
    replaced,
    snapshot,
    trade,
    tup,
)

ME = 7
YOU = 8


def _asks_self_first() -> lltrade.OrderBook:
    """Asks: 1 (mine) and 2 (yours) at 100, 3 (mine) at 101, 4 (yours) at 102."""
    book = new_book()
    book.add(1, SELL, 100, 5, account=ME)
    book.add(2, SELL, 100, 5, account=YOU)
    book.add(3, SELL, 101, 5, account=ME)
    book.add(4, SELL, 102, 5, account=YOU)
    return book


def test_cancel_resting_cancels_each_self_order_met_and_continues() -> None:
    book = _asks_self_first()
    assert tup(book.add(10, BUY, 101, 8, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, BUY, 101, 8),
        cancelled(1, SELL, 100, 5, Reason.SELF_TRADE),
        *trade(BUY, 10, 2, 100, 5, 3, 0),
        cancelled(3, SELL, 101, 5, Reason.SELF_TRADE),
        level(SELL, 100, 0),
        level(SELL, 101, 0),
        level(BUY, 101, 3),
    ]
    assert book.orders() == [(10, BUY, 101, 3, ME), (4, SELL, 102, 5, YOU)]


def test_cancel_incoming_stops_at_first_self_order() -> None:
    book = _asks_self_first()
    before = snapshot(book)
    assert tup(book.add(10, BUY, 101, 8, account=ME, stp=STP.CANCEL_INCOMING)) == [
        accepted(10, BUY, 101, 8),
        cancelled(10, BUY, 101, 8, Reason.SELF_TRADE),
    ]
    assert snapshot(book) == before


def test_cancel_incoming_after_a_trade_does_not_rest() -> None:
    book = new_book()
    book.add(2, SELL, 100, 5, account=YOU)
    book.add(1, SELL, 100, 5, account=ME)
    assert tup(book.add(10, BUY, 101, 8, account=ME, stp=STP.CANCEL_INCOMING)) == [
        accepted(10, BUY, 101, 8),
        *trade(BUY, 10, 2, 100, 5, 3, 0),
        cancelled(10, BUY, 101, 3, Reason.SELF_TRADE),
        level(SELL, 100, 5),
    ]
    assert book.best_bid() is None
    assert book.orders() == [(1, SELL, 100, 5, ME)]


def test_cancel_both() -> None:
    book = new_book()
    book.add(2, SELL, 100, 5, account=YOU)
    book.add(1, SELL, 100, 5, account=ME)
    book.add(4, SELL, 100, 5, account=YOU)
    assert tup(book.add(10, BUY, 100, 8, account=ME, stp=STP.CANCEL_BOTH)) == [
        accepted(10, BUY, 100, 8),
        *trade(BUY, 10, 2, 100, 5, 3, 0),
        cancelled(1, SELL, 100, 5, Reason.SELF_TRADE),
        cancelled(10, BUY, 100, 3, Reason.SELF_TRADE),
        level(SELL, 100, 5),
    ]
    assert book.orders() == [(4, SELL, 100, 5, YOU)]


def test_cancel_both_on_the_first_order() -> None:
    book = _asks_self_first()
    assert tup(book.add(10, BUY, 102, 20, account=ME, stp=STP.CANCEL_BOTH)) == [
        accepted(10, BUY, 102, 20),
        cancelled(1, SELL, 100, 5, Reason.SELF_TRADE),
        cancelled(10, BUY, 102, 20, Reason.SELF_TRADE),
        level(SELL, 100, 5),
    ]


def test_stp_none_trades_with_self() -> None:
    book = _asks_self_first()
    assert tup(book.add(10, BUY, 100, 6, account=ME, stp=STP.NONE)) == [
        accepted(10, BUY, 100, 6),
        *trade(BUY, 10, 1, 100, 5, 1, 0),
        *trade(BUY, 10, 2, 100, 1, 0, 4),
        level(SELL, 100, 4),
    ]


def test_account_zero_never_self_trades() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5)
    assert tup(book.add(10, BUY, 100, 5, stp=STP.CANCEL_BOTH)) == [
        accepted(10, BUY, 100, 5),
        *trade(BUY, 10, 1, 100, 5, 0, 0),
        level(SELL, 100, 0),
    ]


def test_only_the_incoming_mode_counts() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5, account=ME, stp=STP.CANCEL_BOTH)
    assert tup(book.add(10, BUY, 100, 5, account=ME)) == [
        accepted(10, BUY, 100, 5),
        *trade(BUY, 10, 1, 100, 5, 0, 0),
        level(SELL, 100, 0),
    ]


def test_stp_ignores_orders_beyond_the_limit() -> None:
    book = new_book()
    book.add(2, SELL, 101, 5, account=ME)
    for mode in (STP.CANCEL_RESTING, STP.CANCEL_INCOMING, STP.CANCEL_BOTH):
        book.add(1, SELL, 100, 5, account=YOU)
        assert tup(book.add(10, BUY, 100, 8, account=ME, stp=mode)) == [
            accepted(10, BUY, 100, 8),
            *trade(BUY, 10, 1, 100, 5, 3, 0),
            level(SELL, 100, 0),
            level(BUY, 100, 3),
        ]
        book.cancel(10)
    assert book.orders() == [(2, SELL, 101, 5, ME)]


def test_stp_on_the_sell_side() -> None:
    book = new_book()
    book.add(1, BUY, 100, 5, account=ME)
    book.add(2, BUY, 99, 5, account=YOU)
    assert tup(book.add(10, SELL, 99, 7, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, SELL, 99, 7),
        cancelled(1, BUY, 100, 5, Reason.SELF_TRADE),
        *trade(SELL, 10, 2, 99, 5, 2, 0),
        level(BUY, 100, 0),
        level(BUY, 99, 0),
        level(SELL, 99, 2),
    ]


def test_stp_with_ioc() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5, account=ME)
    book.add(2, SELL, 100, 2, account=YOU)
    assert tup(book.add(10, BUY, 100, 8, tif=TIF.IOC, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, BUY, 100, 8),
        cancelled(1, SELL, 100, 5, Reason.SELF_TRADE),
        *trade(BUY, 10, 2, 100, 2, 6, 0),
        cancelled(10, BUY, 100, 6, Reason.IOC_REMAINDER),
        level(SELL, 100, 0),
    ]


def test_stp_with_market_orders() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5, account=ME)
    book.add(2, SELL, 101, 5, account=YOU)
    before = snapshot(book)
    assert tup(book.market(10, BUY, 3, account=ME, stp=STP.CANCEL_INCOMING)) == [
        accepted(10, BUY, 0, 3),
        cancelled(10, BUY, 0, 3, Reason.SELF_TRADE),
    ]
    assert snapshot(book) == before
    assert tup(book.market(10, BUY, 3, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, BUY, 0, 3),
        cancelled(1, SELL, 100, 5, Reason.SELF_TRADE),
        *trade(BUY, 10, 2, 101, 3, 0, 2),
        level(SELL, 100, 0),
        level(SELL, 101, 2),
    ]
    book.add(3, SELL, 101, 1, account=ME)
    assert tup(book.market(11, BUY, 5, account=ME, stp=STP.CANCEL_BOTH)) == [
        accepted(11, BUY, 0, 5),
        *trade(BUY, 11, 2, 101, 2, 3, 0),
        cancelled(3, SELL, 101, 1, Reason.SELF_TRADE),
        cancelled(11, BUY, 0, 3, Reason.SELF_TRADE),
        level(SELL, 101, 0),
    ]
    assert len(book) == 0


def test_market_protection_is_fixed_at_arrival_despite_stp() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5, account=ME)
    book.add(2, SELL, 101, 5, account=YOU)
    book.add(3, SELL, 102, 5, account=YOU)
    # limit = 100 + 1: the self order at 100 is cancelled, 101 trades, 102 is out.
    assert tup(book.market(10, BUY, 8, protection_ticks=1, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, BUY, 0, 8),
        cancelled(1, SELL, 100, 5, Reason.SELF_TRADE),
        *trade(BUY, 10, 2, 101, 5, 3, 0),
        cancelled(10, BUY, 0, 3, Reason.IOC_REMAINDER),
        level(SELL, 100, 0),
        level(SELL, 101, 0),
    ]


# -- FOK with STP ------------------------------------------------------------------


def test_fok_cancel_resting_self_orders_do_not_count() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5, account=ME)
    book.add(2, SELL, 100, 5, account=YOU)
    before = snapshot(book)
    assert tup(book.add(10, BUY, 100, 6, tif=TIF.FOK, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, BUY, 100, 6),
        cancelled(10, BUY, 100, 6, Reason.FOK_UNFILLED),
    ]
    assert snapshot(book) == before  # a killed FOK cancels nothing
    assert tup(book.add(10, BUY, 100, 5, tif=TIF.FOK, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, BUY, 100, 5),
        cancelled(1, SELL, 100, 5, Reason.SELF_TRADE),
        *trade(BUY, 10, 2, 100, 5, 0, 0),
        level(SELL, 100, 0),
    ]


def test_fok_cancel_resting_stops_once_filled() -> None:
    book = new_book()
    book.add(2, SELL, 100, 5, account=YOU)
    book.add(1, SELL, 100, 5, account=ME)
    assert tup(book.add(10, BUY, 100, 5, tif=TIF.FOK, account=ME, stp=STP.CANCEL_RESTING)) == [
        accepted(10, BUY, 100, 5),
        *trade(BUY, 10, 2, 100, 5, 0, 0),
        level(SELL, 100, 5),
    ]
    assert book.orders() == [(1, SELL, 100, 5, ME)]


def test_fok_cancel_incoming_or_both_count_ends_at_self_order() -> None:
    for mode in (STP.CANCEL_INCOMING, STP.CANCEL_BOTH):
        book = new_book()
        book.add(2, SELL, 100, 5, account=YOU)
        book.add(1, SELL, 100, 5, account=ME)
        book.add(3, SELL, 100, 5, account=YOU)
        before = snapshot(book)
        assert tup(book.add(10, BUY, 100, 6, tif=TIF.FOK, account=ME, stp=mode)) == [
            accepted(10, BUY, 100, 6),
            cancelled(10, BUY, 100, 6, Reason.FOK_UNFILLED),
        ]
        assert snapshot(book) == before
        assert tup(book.add(10, BUY, 100, 5, tif=TIF.FOK, account=ME, stp=mode)) == [
            accepted(10, BUY, 100, 5),
            *trade(BUY, 10, 2, 100, 5, 0, 0),
            level(SELL, 100, 10),
        ]


def test_fok_stp_different_account_counts() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5, account=YOU)
    book.add(2, SELL, 100, 5)
    assert tup(book.add(10, BUY, 100, 10, tif=TIF.FOK, account=ME, stp=STP.CANCEL_BOTH)) == [
        accepted(10, BUY, 100, 10),
        *trade(BUY, 10, 1, 100, 5, 5, 0),
        *trade(BUY, 10, 2, 100, 5, 0, 0),
        level(SELL, 100, 0),
    ]


# -- replace carries account and STP mode ----------------------------------------


def test_replace_carries_stp_cancel_resting() -> None:
    book = new_book()
    book.add(1, BUY, 99, 5, account=ME, stp=STP.CANCEL_RESTING)
    book.add(2, SELL, 100, 5, account=ME)
    book.add(3, SELL, 100, 5, account=YOU)
    assert tup(book.replace(1, 100, 5)) == [
        replaced(1, BUY, 100, 5),
        cancelled(2, SELL, 100, 5, Reason.SELF_TRADE),
        *trade(BUY, 1, 3, 100, 5, 0, 0),
        level(BUY, 99, 0),
        level(SELL, 100, 0),
    ]
    assert len(book) == 0


def test_replace_carries_stp_cancel_incoming() -> None:
    book = new_book()
    book.add(1, BUY, 99, 5, account=ME, stp=STP.CANCEL_INCOMING)
    book.add(2, SELL, 100, 5, account=ME)
    assert tup(book.replace(1, 100, 5)) == [
        replaced(1, BUY, 100, 5),
        cancelled(1, BUY, 100, 5, Reason.SELF_TRADE),
        level(BUY, 99, 0),
    ]
    assert book.orders() == [(2, SELL, 100, 5, ME)]
