"""The order pool (growth, POOL_EXHAUSTED) and order ids (range, reuse)."""

from lltrade import TIF, Reason, Side

from conftest import (
    BUY,
    MAX_ID,
    SELL,
    accepted,
    book_hash,
    cancelled,
    expected_hash,
    level,
    new_book,
    reduced,
    rejected,
    replaced,
    snapshot,
    trade,
    tup,
)

# -- pool --------------------------------------------------------------------


def _placement(oid: int) -> tuple[Side, int, int]:
    """Bids on 1..2500 and asks on 50001..52501, two orders per level."""
    if oid % 2:
        return BUY, 1 + oid // 4, 1
    return SELL, 50_001 + oid // 4, 2


def test_pool_grows_from_capacity_4_to_10k_orders() -> None:
    book = new_book(1, 100_000, capacity=4)
    n = 10_000
    for oid in range(1, n + 1):
        side, price, qty = _placement(oid)
        assert len(book.add(oid, side, price, qty)) == 2
    assert len(book) == n
    assert book.best_bid() == (2_500, 2)
    assert book.best_ask() == (50_001, 2)
    orders = book.orders()
    assert len(orders) == n
    assert orders[0] == (9_997, BUY, 2_500, 1, 0)
    assert orders[-1] == (10_000, SELL, 52_501, 2, 0)
    assert book_hash(book) == expected_hash(orders)
    # Every order is intact: cancel them all, odd ids first.
    for oid in (*range(1, n + 1, 2), *range(2, n + 1, 2)):
        side, price, qty = _placement(oid)
        assert tup(book.cancel(oid))[0] == cancelled(oid, side, price, qty, Reason.USER_CANCEL)
    assert len(book) == 0
    assert book.depth(5) == ([], [])


def test_pool_exhausted() -> None:
    book = new_book(capacity=2, max_orders=5)
    for oid in range(1, 6):
        book.add(oid, SELL, 100 + oid, 1)
    assert len(book) == 5
    before = snapshot(book)
    assert tup(book.add(6, BUY, 50, 1)) == [rejected(6, Reason.POOL_EXHAUSTED)]
    assert tup(book.add(6, SELL, 500, 1)) == [rejected(6, Reason.POOL_EXHAUSTED)]
    # Checked before any fill: a crossing GTC is rejected too.
    assert tup(book.add(6, BUY, 101, 1)) == [rejected(6, Reason.POOL_EXHAUSTED)]
    # Earlier checks still win.
    assert tup(book.add(1, BUY, 50, 1)) == [rejected(1, Reason.DUPLICATE_ORDER_ID)]
    assert tup(book.add(6, BUY, 101, 1, post_only=True)) == [
        rejected(6, Reason.POST_ONLY_WOULD_CROSS)
    ]
    assert tup(book.add(6, BUY, 2_000, 1)) == [rejected(6, Reason.PRICE_OUT_OF_BAND)]
    assert snapshot(book) == before
    # IOC, FOK and market orders never need a slot.
    assert tup(book.add(6, BUY, 101, 1, tif=TIF.IOC)) == [
        accepted(6, BUY, 101, 1),
        *trade(BUY, 6, 1, 101, 1, 0, 0),
        level(SELL, 101, 0),
    ]
    book.add(1, SELL, 101, 1)  # back to 5 resting
    assert tup(book.add(6, BUY, 101, 1, tif=TIF.FOK)) == [
        accepted(6, BUY, 101, 1),
        *trade(BUY, 6, 1, 101, 1, 0, 0),
        level(SELL, 101, 0),
    ]
    book.add(1, SELL, 101, 1)
    assert tup(book.market(6, BUY, 1)) == [
        accepted(6, BUY, 0, 1),
        *trade(BUY, 6, 1, 101, 1, 0, 0),
        level(SELL, 101, 0),
    ]
    book.add(1, SELL, 101, 1)
    # A replace needs no new slot.
    assert tup(book.replace(5, 110, 1)) == [
        replaced(5, SELL, 110, 1),
        level(SELL, 105, 0),
        level(SELL, 110, 1),
    ]
    # Room again after a cancel.
    book.cancel(3)
    assert tup(book.add(6, BUY, 50, 1)) == [accepted(6, BUY, 50, 1), level(BUY, 50, 1)]
    assert tup(book.add(7, BUY, 50, 1)) == [rejected(7, Reason.POOL_EXHAUSTED)]


# -- ids -----------------------------------------------------------------------


def test_max_order_id() -> None:
    book = new_book()
    assert tup(book.add(MAX_ID, SELL, 100, 5)) == [
        accepted(MAX_ID, SELL, 100, 5),
        level(SELL, 100, 5),
    ]
    assert tup(book.add(MAX_ID, BUY, 90, 5)) == [rejected(MAX_ID, Reason.DUPLICATE_ORDER_ID)]
    assert tup(book.add(MAX_ID - 1, BUY, 100, 2)) == [
        accepted(MAX_ID - 1, BUY, 100, 2),
        *trade(BUY, MAX_ID - 1, MAX_ID, 100, 2, 0, 3),
        level(SELL, 100, 3),
    ]
    assert book.orders() == [(MAX_ID, SELL, 100, 3, 0)]
    assert book_hash(book) == expected_hash(book.orders())
    assert tup(book.reduce(MAX_ID, 1)) == [reduced(MAX_ID, SELL, 100, 2, 1), level(SELL, 100, 1)]
    assert tup(book.market(MAX_ID - 2, BUY, 1)) == [
        accepted(MAX_ID - 2, BUY, 0, 1),
        *trade(BUY, MAX_ID - 2, MAX_ID, 100, 1, 0, 0),
        level(SELL, 100, 0),
    ]
    assert tup(book.cancel(MAX_ID)) == [rejected(MAX_ID, Reason.UNKNOWN_ORDER)]
    book.add(MAX_ID, BUY, 50, 1)
    assert tup(book.cancel(MAX_ID)) == [
        cancelled(MAX_ID, BUY, 50, 1, Reason.USER_CANCEL),
        level(BUY, 50, 0),
    ]


def test_id_reuse_after_fill_cancel_ioc_fok_market_reject() -> None:
    book = new_book()
    # filled (maker and taker)
    book.add(1, SELL, 100, 1)
    book.add(2, BUY, 100, 1)
    # cancelled
    book.add(3, BUY, 90, 1)
    book.cancel(3)
    # IOC, FOK and market orders that found nothing
    book.add(4, BUY, 100, 1, tif=TIF.IOC)
    book.add(5, BUY, 100, 1, tif=TIF.FOK)
    book.market(6, SELL, 1)
    # rejected
    book.add(7, BUY, 0, 1)
    book.add(8, BUY, 100, 0)
    # mass cancelled
    book.add(9, SELL, 120, 1, account=5)
    book.mass_cancel(5)
    # fully filled by a replace
    book.add(10, SELL, 130, 1)
    book.add(11, BUY, 120, 1)
    book.replace(11, 130, 1)
    assert len(book) == 0
    for oid in range(1, 12):
        side = BUY if oid % 2 else SELL
        price = 50 + oid if side == BUY else 150 + oid
        assert tup(book.add(oid, side, price, 1)) == [
            accepted(oid, side, price, 1),
            level(side, price, 1),
        ], oid
    assert len(book) == 11


def test_id_reuse_on_the_other_side_after_fill() -> None:
    book = new_book()
    book.add(1, SELL, 100, 2)
    book.add(2, BUY, 100, 2)
    assert tup(book.add(1, BUY, 100, 3)) == [accepted(1, BUY, 100, 3), level(BUY, 100, 3)]
    assert tup(book.add(2, SELL, 100, 1)) == [
        accepted(2, SELL, 100, 1),
        *trade(SELL, 2, 1, 100, 1, 0, 2),
        level(BUY, 100, 2),
    ]


def test_invalid_order_ids() -> None:
    book = new_book()
    assert tup(book.add(0, BUY, 100, 1)) == [rejected(0, Reason.INVALID_ORDER_ID)]
    assert tup(book.add(-1, BUY, 100, 1)) == [rejected(-1, Reason.INVALID_ORDER_ID)]
    assert tup(book.add(-(2**63), SELL, 100, 1)) == [rejected(-(2**63), Reason.INVALID_ORDER_ID)]
    assert tup(book.market(0, BUY, 1)) == [rejected(0, Reason.INVALID_ORDER_ID)]
    assert len(book) == 0
