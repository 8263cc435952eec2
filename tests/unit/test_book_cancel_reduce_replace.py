"""cancel, reduce and replace."""

from lltrade import TIF, Reason

from conftest import (
    BUY,
    SELL,
    accepted,
    book_hash,
    cancelled,
    level,
    new_book,
    reduced,
    rejected,
    replaced,
    snapshot,
    trade,
    tup,
)

# -- cancel --------------------------------------------------------------------


def test_cancel_last_order_of_a_level() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    assert tup(book.cancel(1)) == [
        cancelled(1, BUY, 100, 10, Reason.USER_CANCEL),
        level(BUY, 100, 0),
    ]
    assert book.best_bid() is None
    assert len(book) == 0


def test_cancel_leaves_the_rest_of_the_level() -> None:
    book = new_book()
    book.add(1, SELL, 100, 10)
    book.add(2, SELL, 100, 4)
    book.add(3, SELL, 100, 6)
    assert tup(book.cancel(2)) == [
        cancelled(2, SELL, 100, 4, Reason.USER_CANCEL),
        level(SELL, 100, 16),
    ]
    assert book.orders() == [(1, SELL, 100, 10, 0), (3, SELL, 100, 6, 0)]
    assert book.depth(3) == ([], [(100, 16, 2)])


def test_cancel_unknown_and_twice() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    assert tup(book.cancel(2)) == [rejected(2, Reason.UNKNOWN_ORDER)]
    assert tup(book.cancel(0)) == [rejected(0, Reason.UNKNOWN_ORDER)]
    book.cancel(1)
    assert tup(book.cancel(1)) == [rejected(1, Reason.UNKNOWN_ORDER)]


def test_cancel_with_daemon_reasons() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    book.add(2, SELL, 101, 3)
    assert tup(book.cancel(1, reason=Reason.DISCONNECT)) == [
        cancelled(1, BUY, 100, 10, Reason.DISCONNECT),
        level(BUY, 100, 0),
    ]
    assert tup(book.cancel(2, Reason.KILL_SWITCH)) == [
        cancelled(2, SELL, 101, 3, Reason.KILL_SWITCH),
        level(SELL, 101, 0),
    ]


def test_cancel_mid_queue_then_sweep() -> None:
    book = new_book()
    for oid in range(1, 7):
        book.add(oid, BUY, 100, oid)
    book.add(7, BUY, 99, 5)
    assert tup(book.cancel(3)) == [
        cancelled(3, BUY, 100, 3, Reason.USER_CANCEL),
        level(BUY, 100, 18),
    ]
    assert tup(book.cancel(4)) == [
        cancelled(4, BUY, 100, 4, Reason.USER_CANCEL),
        level(BUY, 100, 14),
    ]
    assert tup(book.cancel(6)) == [
        cancelled(6, BUY, 100, 6, Reason.USER_CANCEL),
        level(BUY, 100, 8),
    ]
    # Left at 100: 1 (1), 2 (2), 5 (5); then 7 (5) at 99.
    assert tup(book.add(10, SELL, 99, 10)) == [
        accepted(10, SELL, 99, 10),
        *trade(SELL, 10, 1, 100, 1, 9, 0),
        *trade(SELL, 10, 2, 100, 2, 7, 0),
        *trade(SELL, 10, 5, 100, 5, 2, 0),
        *trade(SELL, 10, 7, 99, 2, 0, 3),
        level(BUY, 100, 0),
        level(BUY, 99, 3),
    ]
    assert book.orders() == [(7, BUY, 99, 3, 0)]


def test_cancel_head_and_tail_of_queue() -> None:
    book = new_book()
    for oid in range(1, 5):
        book.add(oid, SELL, 100, 1)
    book.cancel(1)
    book.cancel(4)
    assert tup(book.add(5, SELL, 100, 1)) == [accepted(5, SELL, 100, 1), level(SELL, 100, 3)]
    assert [o[0] for o in book.orders()] == [2, 3, 5]
    assert tup(book.add(9, BUY, 100, 3)) == [
        accepted(9, BUY, 100, 3),
        *trade(BUY, 9, 2, 100, 1, 2, 0),
        *trade(BUY, 9, 3, 100, 1, 1, 0),
        *trade(BUY, 9, 5, 100, 1, 0, 0),
        level(SELL, 100, 0),
    ]


def test_stale_cancel_reduce_replace_after_full_fill() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5)
    book.add(2, BUY, 100, 5)
    assert len(book) == 0
    for oid in (1, 2):
        assert tup(book.cancel(oid)) == [rejected(oid, Reason.UNKNOWN_ORDER)]
        assert tup(book.reduce(oid, 1)) == [rejected(oid, Reason.UNKNOWN_ORDER)]
        assert tup(book.replace(oid, 100, 5)) == [rejected(oid, Reason.UNKNOWN_ORDER)]


# -- reduce --------------------------------------------------------------------


def test_reduce_keeps_place() -> None:
    book = new_book()
    book.add(1, SELL, 100, 10)
    book.add(2, SELL, 100, 5)
    assert tup(book.reduce(1, 4)) == [reduced(1, SELL, 100, 6, 4), level(SELL, 100, 9)]
    assert book.orders() == [(1, SELL, 100, 4, 0), (2, SELL, 100, 5, 0)]
    assert tup(book.add(3, BUY, 100, 5)) == [
        accepted(3, BUY, 100, 5),
        *trade(BUY, 3, 1, 100, 4, 1, 0),
        *trade(BUY, 3, 2, 100, 1, 0, 4),
        level(SELL, 100, 4),
    ]


def test_reduce_validation() -> None:
    book = new_book(lot=2)
    book.add(1, BUY, 100, 10)
    before = snapshot(book)
    assert tup(book.reduce(9, 0)) == [rejected(9, Reason.UNKNOWN_ORDER)]
    assert tup(book.reduce(1, 0)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.reduce(1, -2)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.reduce(1, 3)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.reduce(1, 10)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.reduce(1, 12)) == [rejected(1, Reason.INVALID_QTY)]
    assert snapshot(book) == before
    assert tup(book.reduce(1, 2)) == [reduced(1, BUY, 100, 8, 2), level(BUY, 100, 2)]


def test_partial_fill_then_reduce_then_replace() -> None:
    book = new_book()
    book.add(1, SELL, 100, 10)
    book.add(2, SELL, 100, 3)
    assert tup(book.add(3, BUY, 100, 4, tif=TIF.IOC)) == [
        accepted(3, BUY, 100, 4),
        *trade(BUY, 3, 1, 100, 4, 0, 6),
        level(SELL, 100, 9),
    ]
    # Open quantity is now 6: reducing to 6 or more is rejected.
    assert tup(book.reduce(1, 6)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.reduce(1, 2)) == [reduced(1, SELL, 100, 4, 2), level(SELL, 100, 5)]
    # Same price, same open quantity: a no-op that keeps place.
    assert tup(book.replace(1, 100, 2)) == [replaced(1, SELL, 100, 2)]
    assert [o[0] for o in book.orders()] == [1, 2]
    # Growing it loses place.
    assert tup(book.replace(1, 100, 5)) == [replaced(1, SELL, 100, 5), level(SELL, 100, 8)]
    assert book.orders() == [(2, SELL, 100, 3, 0), (1, SELL, 100, 5, 0)]
    assert tup(book.add(4, BUY, 100, 4)) == [
        accepted(4, BUY, 100, 4),
        *trade(BUY, 4, 2, 100, 3, 1, 0),
        *trade(BUY, 4, 1, 100, 1, 0, 4),
        level(SELL, 100, 4),
    ]


# -- replace -------------------------------------------------------------------


def test_replace_same_price_smaller_qty_keeps_place() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    book.add(2, BUY, 100, 10)
    assert tup(book.replace(1, 100, 4)) == [replaced(1, BUY, 100, 4), level(BUY, 100, 14)]
    assert book.orders() == [(1, BUY, 100, 4, 0), (2, BUY, 100, 10, 0)]


def test_replace_no_op_yields_replaced_only() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    book.add(2, BUY, 100, 10)
    before = snapshot(book)
    assert tup(book.replace(1, 100, 10)) == [replaced(1, BUY, 100, 10)]
    assert snapshot(book) == before


def test_replace_same_price_larger_qty_loses_place() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    book.add(2, BUY, 100, 10)
    assert tup(book.replace(1, 100, 15)) == [replaced(1, BUY, 100, 15), level(BUY, 100, 25)]
    assert book.orders() == [(2, BUY, 100, 10, 0), (1, BUY, 100, 15, 0)]


def test_replace_to_new_price_moves_to_back_of_new_level() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    book.add(2, BUY, 100, 10)
    book.add(3, BUY, 99, 1)
    assert tup(book.replace(1, 99, 10)) == [
        replaced(1, BUY, 99, 10),
        level(BUY, 100, 10),
        level(BUY, 99, 11),
    ]
    assert book.orders() == [(2, BUY, 100, 10, 0), (3, BUY, 99, 1, 0), (1, BUY, 99, 10, 0)]
    # Moving away and back also loses place.
    book.replace(2, 98, 10)
    assert tup(book.replace(2, 100, 7)) == [
        replaced(2, BUY, 100, 7),
        level(BUY, 98, 0),
        level(BUY, 100, 7),
    ]
    assert tup(book.replace(3, 100, 1)) == [
        replaced(3, BUY, 100, 1),
        level(BUY, 99, 10),
        level(BUY, 100, 8),
    ]
    assert book.orders() == [(2, BUY, 100, 7, 0), (3, BUY, 100, 1, 0), (1, BUY, 99, 10, 0)]


def test_replace_that_crosses_and_fills_completely() -> None:
    book = new_book()
    book.add(1, BUY, 99, 5)
    book.add(2, SELL, 100, 5)
    book.add(3, SELL, 101, 5)
    assert tup(book.replace(1, 101, 7)) == [
        replaced(1, BUY, 101, 7),
        *trade(BUY, 1, 2, 100, 5, 2, 0),
        *trade(BUY, 1, 3, 101, 2, 0, 3),
        level(BUY, 99, 0),
        level(SELL, 100, 0),
        level(SELL, 101, 3),
    ]
    assert book.orders() == [(3, SELL, 101, 3, 0)]
    # The fully filled order's id is free again.
    assert tup(book.add(1, SELL, 105, 1)) == [accepted(1, SELL, 105, 1), level(SELL, 105, 1)]


def test_replace_that_crosses_rests_the_remainder() -> None:
    book = new_book()
    book.add(1, SELL, 103, 10, account=5)
    book.add(2, BUY, 100, 4)
    book.add(3, BUY, 99, 4)
    assert tup(book.replace(1, 100, 8)) == [
        replaced(1, SELL, 100, 8),
        *trade(SELL, 1, 2, 100, 4, 4, 0),
        level(SELL, 103, 0),
        level(BUY, 100, 0),
        level(SELL, 100, 4),
    ]
    assert book.orders() == [(3, BUY, 99, 4, 0), (1, SELL, 100, 4, 5)]


def test_replace_validation_leaves_the_order_untouched() -> None:
    book = new_book(10, 1_000, tick=5, lot=2, max_qty=100)
    book.add(1, BUY, 100, 10)
    book.add(2, BUY, 100, 10)
    book.add(3, SELL, 200, 10)
    before = snapshot(book)
    assert tup(book.replace(9, 100, 0)) == [rejected(9, Reason.UNKNOWN_ORDER)]
    assert tup(book.replace(1, 101, 0)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.replace(1, 100, -2)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.replace(1, 100, 3)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.replace(1, 1_001, 102)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.replace(1, 1_001, 4)) == [rejected(1, Reason.PRICE_OFF_TICK)]
    assert tup(book.replace(1, 1_005, 4)) == [rejected(1, Reason.PRICE_OUT_OF_BAND)]
    assert tup(book.replace(1, 5, 4)) == [rejected(1, Reason.PRICE_OUT_OF_BAND)]
    assert snapshot(book) == before
    # max_qty itself and the band edges are fine.
    assert tup(book.replace(1, 10, 100)) == [
        replaced(1, BUY, 10, 100),
        level(BUY, 100, 10),
        level(BUY, 10, 100),
    ]
    assert tup(book.replace(3, 1_000, 2)) == [
        replaced(3, SELL, 1_000, 2),
        level(SELL, 200, 0),
        level(SELL, 1_000, 2),
    ]


def test_post_only_replace_that_would_cross_is_rejected() -> None:
    book = new_book()
    book.add(1, BUY, 98, 5, post_only=True)
    book.add(2, BUY, 98, 5)
    book.add(3, SELL, 101, 5)
    # A non-crossing move keeps the post-only flag ...
    assert tup(book.replace(1, 99, 5)) == [
        replaced(1, BUY, 99, 5),
        level(BUY, 98, 5),
        level(BUY, 99, 5),
    ]
    before = snapshot(book)
    # ... so a later crossing move is rejected and the order stays as it was.
    assert tup(book.replace(1, 101, 5)) == [rejected(1, Reason.POST_ONLY_WOULD_CROSS)]
    assert tup(book.replace(1, 110, 1)) == [rejected(1, Reason.POST_ONLY_WOULD_CROSS)]
    assert snapshot(book) == before
    # A plain order crossing the same way trades.
    assert tup(book.replace(2, 101, 5)) == [
        replaced(2, BUY, 101, 5),
        *trade(BUY, 2, 3, 101, 5, 0, 0),
        level(BUY, 98, 0),
        level(SELL, 101, 0),
    ]


def test_replace_keeps_the_account() -> None:
    book = new_book()
    book.add(1, BUY, 98, 5, account=42)
    book.replace(1, 97, 6)
    assert book.orders() == [(1, BUY, 97, 6, 42)]


def test_replace_hash_after_keep_place_matches_fresh_book() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    book.add(2, BUY, 100, 10)
    book.replace(1, 100, 3)
    fresh = new_book()
    fresh.add(1, BUY, 100, 3)
    fresh.add(2, BUY, 100, 10)
    assert book_hash(book) == book_hash(fresh)
