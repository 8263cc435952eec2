"""Validation order of every command, and ValueError for programming errors."""

import pytest

import lltrade
from lltrade import STP, TIF, Reason

from conftest import (
    BUY,
    SELL,
    accepted,
    level,
    new_book,
    rejected,
    snapshot,
    trade,
    tup,
)


def _book() -> lltrade.OrderBook:
    """Band 100..1000, tick 5, lot 2, max_qty 100; a bid 1 @ 500 and an ask 2 @ 600."""
    book = new_book(100, 1_000, tick=5, lot=2, max_qty=100)
    book.add(1, BUY, 500, 10)
    book.add(2, SELL, 600, 10)
    return book


def test_add_validation_order() -> None:
    book = _book()
    before = snapshot(book)
    cases = [
        # INVALID_ORDER_ID beats everything
        ((0, BUY, 3, 0), {"tif": TIF.IOC, "post_only": True}, Reason.INVALID_ORDER_ID),
        ((-1, BUY, 500, 2), {}, Reason.INVALID_ORDER_ID),
        # INVALID_FLAGS beats INVALID_QTY
        ((3, BUY, 3, 0), {"tif": TIF.IOC, "post_only": True}, Reason.INVALID_FLAGS),
        ((3, BUY, 3, 0), {"tif": TIF.FOK, "post_only": True}, Reason.INVALID_FLAGS),
        # INVALID_QTY beats PRICE_OFF_TICK
        ((3, BUY, 3, 0), {}, Reason.INVALID_QTY),
        ((3, BUY, 3, -2), {}, Reason.INVALID_QTY),
        ((3, BUY, 3, 3), {}, Reason.INVALID_QTY),
        ((3, BUY, 3, 102), {}, Reason.INVALID_QTY),
        # PRICE_OFF_TICK beats PRICE_OUT_OF_BAND
        ((3, BUY, 3, 2), {}, Reason.PRICE_OFF_TICK),
        ((3, BUY, 1_001, 2), {}, Reason.PRICE_OFF_TICK),
        # PRICE_OUT_OF_BAND beats DUPLICATE_ORDER_ID
        ((1, BUY, 95, 2), {}, Reason.PRICE_OUT_OF_BAND),
        ((2, SELL, 1_005, 2), {}, Reason.PRICE_OUT_OF_BAND),
        ((3, SELL, -100, 2), {}, Reason.PRICE_OUT_OF_BAND),
        # DUPLICATE_ORDER_ID (either side) beats POST_ONLY_WOULD_CROSS
        ((1, BUY, 600, 2), {"post_only": True}, Reason.DUPLICATE_ORDER_ID),
        ((2, BUY, 600, 2), {"post_only": True}, Reason.DUPLICATE_ORDER_ID),
        ((1, SELL, 700, 2), {}, Reason.DUPLICATE_ORDER_ID),
        ((2, BUY, 100, 2), {"tif": TIF.IOC}, Reason.DUPLICATE_ORDER_ID),
        ((3, BUY, 600, 2), {"post_only": True}, Reason.POST_ONLY_WOULD_CROSS),
        ((3, SELL, 500, 2), {"post_only": True}, Reason.POST_ONLY_WOULD_CROSS),
    ]
    for args, kwargs, reason in cases:
        assert tup(book.add(*args, **kwargs)) == [rejected(args[0], reason)], (args, kwargs)
    assert snapshot(book) == before
    # The largest valid quantity and both band edges.
    assert tup(book.add(3, BUY, 100, 100)) == [accepted(3, BUY, 100, 100), level(BUY, 100, 100)]
    assert tup(book.add(4, SELL, 1_000, 2)) == [accepted(4, SELL, 1_000, 2), level(SELL, 1_000, 2)]


def test_market_validation_order() -> None:
    book = _book()
    before = snapshot(book)
    assert tup(book.market(0, BUY, 0)) == [rejected(0, Reason.INVALID_ORDER_ID)]
    assert tup(book.market(1, BUY, 3)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.market(1, BUY, 102)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.market(1, BUY, 2)) == [rejected(1, Reason.DUPLICATE_ORDER_ID)]
    assert tup(book.market(2, SELL, 2)) == [rejected(2, Reason.DUPLICATE_ORDER_ID)]
    assert snapshot(book) == before


def test_cancel_reduce_replace_validation_order() -> None:
    book = _book()
    before = snapshot(book)
    assert tup(book.cancel(3)) == [rejected(3, Reason.UNKNOWN_ORDER)]
    assert tup(book.cancel(-3)) == [rejected(-3, Reason.UNKNOWN_ORDER)]
    assert tup(book.reduce(3, 0)) == [rejected(3, Reason.UNKNOWN_ORDER)]
    assert tup(book.reduce(1, 1)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.replace(3, 3, 0)) == [rejected(3, Reason.UNKNOWN_ORDER)]
    assert tup(book.replace(1, 3, 0)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.replace(1, 3, 2)) == [rejected(1, Reason.PRICE_OFF_TICK)]
    assert tup(book.replace(1, 95, 2)) == [rejected(1, Reason.PRICE_OUT_OF_BAND)]
    assert snapshot(book) == before


# -- ValueError for programming errors in the per-call face ------------------------


@pytest.mark.parametrize("side", [0, 3, -1])
def test_add_bad_side_raises(side: int) -> None:
    book = _book()
    before = snapshot(book)
    with pytest.raises(ValueError, match="side"):
        book.add(3, side, 500, 2)
    with pytest.raises(ValueError, match="side"):
        book.market(3, side, 2)
    assert snapshot(book) == before


@pytest.mark.parametrize("tif", [3, -1])
def test_add_bad_tif_raises(tif: int) -> None:
    book = _book()
    before = snapshot(book)
    with pytest.raises(ValueError, match="tif"):
        book.add(3, BUY, 500, 2, tif=tif)
    assert snapshot(book) == before


@pytest.mark.parametrize("stp", [4, -1])
def test_bad_stp_raises(stp: int) -> None:
    book = _book()
    before = snapshot(book)
    with pytest.raises(ValueError, match="stp"):
        book.add(3, BUY, 500, 2, account=1, stp=stp)
    with pytest.raises(ValueError, match="stp"):
        book.market(3, BUY, 2, account=1, stp=stp)
    assert snapshot(book) == before


def test_negative_protection_raises() -> None:
    book = _book()
    before = snapshot(book)
    with pytest.raises(ValueError, match="protection"):
        book.market(3, BUY, 2, protection_ticks=-1)
    assert snapshot(book) == before


def test_enum_members_are_accepted_as_ints() -> None:
    book = _book()
    assert tup(book.add(3, 1, 400, 2, tif=0, stp=0)) == [
        accepted(3, BUY, 400, 2),
        level(BUY, 400, 2),
    ]
    assert tup(book.add(4, SELL, 400, 2, tif=TIF.IOC, account=9, stp=STP.CANCEL_BOTH)) == [
        accepted(4, SELL, 400, 2),
        *trade(SELL, 4, 1, 500, 2, 0, 8),
        level(BUY, 500, 8),
    ]
