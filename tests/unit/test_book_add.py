"""GTC limit orders: resting, matching, price-time priority, post-only, the band."""

from lltrade import TIF, EventKind, Reason

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


def test_gtc_rests_in_empty_book() -> None:
    book = new_book()
    assert tup(book.add(1, BUY, 100, 10)) == [accepted(1, BUY, 100, 10), level(BUY, 100, 10)]
    assert tup(book.add(2, SELL, 105, 7)) == [accepted(2, SELL, 105, 7), level(SELL, 105, 7)]
    assert book.best_bid() == (100, 10)
    assert book.best_ask() == (105, 7)
    assert len(book) == 2


def test_orders_at_one_level_queue_in_arrival_order() -> None:
    book = new_book()
    book.add(1, BUY, 100, 10)
    assert tup(book.add(2, BUY, 100, 5)) == [accepted(2, BUY, 100, 5), level(BUY, 100, 15)]
    assert tup(book.add(3, BUY, 100, 1, account=4)) == [
        accepted(3, BUY, 100, 1),
        level(BUY, 100, 16),
    ]
    assert book.orders() == [(1, BUY, 100, 10, 0), (2, BUY, 100, 5, 0), (3, BUY, 100, 1, 4)]
    assert book.depth(5) == ([(100, 16, 3)], [])


def test_full_fill_of_one_maker() -> None:
    book = new_book()
    book.add(1, SELL, 101, 10)
    assert tup(book.add(2, BUY, 101, 10)) == [
        accepted(2, BUY, 101, 10),
        *trade(BUY, 2, 1, 101, 10, 0, 0),
        level(SELL, 101, 0),
    ]
    assert len(book) == 0
    assert book.best_ask() is None
    assert book.best_bid() is None


def test_trade_prints_at_maker_price_buy_taker() -> None:
    book = new_book()
    book.add(1, SELL, 100, 5)
    assert tup(book.add(2, BUY, 105, 5)) == [
        accepted(2, BUY, 105, 5),
        *trade(BUY, 2, 1, 100, 5, 0, 0),
        level(SELL, 100, 0),
    ]


def test_trade_prints_at_maker_price_sell_taker() -> None:
    book = new_book()
    book.add(1, BUY, 100, 5)
    assert tup(book.add(2, SELL, 95, 5)) == [
        accepted(2, SELL, 95, 5),
        *trade(SELL, 2, 1, 100, 5, 0, 0),
        level(BUY, 100, 0),
    ]


def test_partial_fill_remainder_rests_at_limit() -> None:
    book = new_book()
    book.add(1, SELL, 100, 4)
    assert tup(book.add(2, BUY, 100, 10)) == [
        accepted(2, BUY, 100, 10),
        *trade(BUY, 2, 1, 100, 4, 6, 0),
        level(SELL, 100, 0),
        level(BUY, 100, 6),
    ]
    assert book.orders() == [(2, BUY, 100, 6, 0)]
    assert book.best_bid() == (100, 6)
    assert book.best_ask() is None


def test_taker_partially_fills_maker() -> None:
    book = new_book()
    book.add(1, SELL, 100, 10)
    assert tup(book.add(2, BUY, 100, 4)) == [
        accepted(2, BUY, 100, 4),
        *trade(BUY, 2, 1, 100, 4, 0, 6),
        level(SELL, 100, 6),
    ]
    assert book.orders() == [(1, SELL, 100, 6, 0)]
    # The partially filled maker keeps its place in the queue.
    book.add(3, SELL, 100, 2)
    assert tup(book.add(4, BUY, 100, 7)) == [
        accepted(4, BUY, 100, 7),
        *trade(BUY, 4, 1, 100, 6, 1, 0),
        *trade(BUY, 4, 3, 100, 1, 0, 1),
        level(SELL, 100, 1),
    ]


def test_price_time_priority_across_levels() -> None:
    book = new_book()
    book.add(1, SELL, 101, 3)
    book.add(2, SELL, 100, 2)
    book.add(3, SELL, 100, 4)
    book.add(4, SELL, 102, 5)
    assert tup(book.add(9, BUY, 101, 8)) == [
        accepted(9, BUY, 101, 8),
        *trade(BUY, 9, 2, 100, 2, 6, 0),
        *trade(BUY, 9, 3, 100, 4, 2, 0),
        *trade(BUY, 9, 1, 101, 2, 0, 1),
        level(SELL, 100, 0),
        level(SELL, 101, 1),
    ]
    assert book.orders() == [(1, SELL, 101, 1, 0), (4, SELL, 102, 5, 0)]


def test_sell_sweeps_bids_best_first() -> None:
    book = new_book()
    book.add(1, BUY, 98, 5)
    book.add(2, BUY, 100, 1)
    book.add(3, BUY, 99, 2)
    book.add(4, BUY, 100, 3)
    assert tup(book.add(9, SELL, 99, 10)) == [
        accepted(9, SELL, 99, 10),
        *trade(SELL, 9, 2, 100, 1, 9, 0),
        *trade(SELL, 9, 4, 100, 3, 6, 0),
        *trade(SELL, 9, 3, 99, 2, 4, 0),
        level(BUY, 100, 0),
        level(BUY, 99, 0),
        level(SELL, 99, 4),
    ]
    assert book.best_bid() == (98, 5)
    assert book.best_ask() == (99, 4)


def test_limit_price_stops_the_match() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    book.add(2, SELL, 101, 5)
    assert tup(book.add(3, BUY, 100, 10)) == [
        accepted(3, BUY, 100, 10),
        *trade(BUY, 3, 1, 100, 3, 7, 0),
        level(SELL, 100, 0),
        level(BUY, 100, 7),
    ]
    assert book.best_bid() == (100, 7)
    assert book.best_ask() == (101, 5)


def test_non_crossing_order_at_one_tick_away_rests() -> None:
    book = new_book()
    book.add(1, SELL, 100, 3)
    assert tup(book.add(2, BUY, 99, 3)) == [accepted(2, BUY, 99, 3), level(BUY, 99, 3)]
    assert tup(book.add(3, SELL, 100, 3)) == [accepted(3, SELL, 100, 3), level(SELL, 100, 6)]


def test_aggressive_orders_into_empty_book() -> None:
    book = new_book()
    # GTC at the far edge of the band simply rests.
    assert tup(book.add(1, BUY, 1_000, 5)) == [accepted(1, BUY, 1_000, 5), level(BUY, 1_000, 5)]
    assert tup(book.cancel(1)) == [
        cancelled(1, BUY, 1_000, 5, Reason.USER_CANCEL),
        level(BUY, 1_000, 0),
    ]
    # IOC, FOK and market finding nothing are accepted, then cancelled.
    assert tup(book.add(2, BUY, 1_000, 5, tif=TIF.IOC)) == [
        accepted(2, BUY, 1_000, 5),
        cancelled(2, BUY, 1_000, 5, Reason.IOC_REMAINDER),
    ]
    assert tup(book.add(3, SELL, 1, 5, tif=TIF.FOK)) == [
        accepted(3, SELL, 1, 5),
        cancelled(3, SELL, 1, 5, Reason.FOK_UNFILLED),
    ]
    assert tup(book.market(4, SELL, 5)) == [
        accepted(4, SELL, 0, 5),
        cancelled(4, SELL, 0, 5, Reason.IOC_REMAINDER),
    ]
    assert len(book) == 0


def test_post_only_rests_when_not_crossing() -> None:
    book = new_book()
    book.add(1, SELL, 101, 5)
    assert tup(book.add(2, BUY, 100, 5, post_only=True)) == [
        accepted(2, BUY, 100, 5),
        level(BUY, 100, 5),
    ]
    assert tup(book.add(3, SELL, 102, 5, post_only=True)) == [
        accepted(3, SELL, 102, 5),
        level(SELL, 102, 5),
    ]


def test_post_only_that_would_cross_is_rejected() -> None:
    book = new_book()
    book.add(1, SELL, 101, 5, account=7)
    book.add(2, BUY, 99, 5, account=7)
    before = snapshot(book)
    # At the best ask, through it, and whatever the accounts / STP modes.
    assert tup(book.add(3, BUY, 101, 5, post_only=True)) == [
        rejected(3, Reason.POST_ONLY_WOULD_CROSS)
    ]
    assert tup(book.add(3, BUY, 150, 5, post_only=True)) == [
        rejected(3, Reason.POST_ONLY_WOULD_CROSS)
    ]
    assert tup(book.add(3, BUY, 101, 5, post_only=True, account=7, stp=1)) == [
        rejected(3, Reason.POST_ONLY_WOULD_CROSS)
    ]
    assert tup(book.add(4, SELL, 99, 5, post_only=True)) == [
        rejected(4, Reason.POST_ONLY_WOULD_CROSS)
    ]
    assert tup(book.add(4, SELL, 50, 5, post_only=True, account=7, stp=3)) == [
        rejected(4, Reason.POST_ONLY_WOULD_CROSS)
    ]
    assert snapshot(book) == before


def test_post_only_with_ioc_or_fok_is_invalid_flags() -> None:
    book = new_book()
    assert tup(book.add(1, BUY, 100, 5, tif=TIF.IOC, post_only=True)) == [
        rejected(1, Reason.INVALID_FLAGS)
    ]
    assert tup(book.add(1, BUY, 100, 5, tif=TIF.FOK, post_only=True)) == [
        rejected(1, Reason.INVALID_FLAGS)
    ]
    assert len(book) == 0


def test_band_edges_are_inclusive() -> None:
    book = new_book(10, 20, tick=2)
    assert tup(book.add(1, BUY, 10, 1)) == [accepted(1, BUY, 10, 1), level(BUY, 10, 1)]
    assert tup(book.add(2, SELL, 20, 1)) == [accepted(2, SELL, 20, 1), level(SELL, 20, 1)]
    before = snapshot(book)
    assert tup(book.add(3, BUY, 8, 1)) == [rejected(3, Reason.PRICE_OUT_OF_BAND)]
    assert tup(book.add(3, SELL, 22, 1)) == [rejected(3, Reason.PRICE_OUT_OF_BAND)]
    assert tup(book.add(3, BUY, 22, 1, tif=TIF.IOC)) == [rejected(3, Reason.PRICE_OUT_OF_BAND)]
    assert tup(book.add(3, SELL, 8, 1, tif=TIF.FOK)) == [rejected(3, Reason.PRICE_OUT_OF_BAND)]
    assert tup(book.add(3, BUY, 13, 1)) == [rejected(3, Reason.PRICE_OFF_TICK)]
    assert snapshot(book) == before
    # The edges also trade.
    assert tup(book.add(4, BUY, 20, 1)) == [
        accepted(4, BUY, 20, 1),
        *trade(BUY, 4, 2, 20, 1, 0, 0),
        level(SELL, 20, 0),
    ]
    assert tup(book.add(5, SELL, 10, 1)) == [
        accepted(5, SELL, 10, 1),
        *trade(SELL, 5, 1, 10, 1, 0, 0),
        level(BUY, 10, 0),
    ]


def test_negative_prices_in_a_band_that_allows_them() -> None:
    book = new_book(-100, 100, tick=5)
    assert tup(book.add(1, BUY, -50, 5)) == [accepted(1, BUY, -50, 5), level(BUY, -50, 5)]
    assert tup(book.add(2, BUY, -100, 5)) == [accepted(2, BUY, -100, 5), level(BUY, -100, 5)]
    assert tup(book.add(3, SELL, 0, 2)) == [accepted(3, SELL, 0, 2), level(SELL, 0, 2)]
    assert tup(book.add(4, BUY, -105, 1)) == [rejected(4, Reason.PRICE_OUT_OF_BAND)]
    assert tup(book.add(4, BUY, -7, 1)) == [rejected(4, Reason.PRICE_OFF_TICK)]
    assert tup(book.add(4, BUY, -103, 1)) == [rejected(4, Reason.PRICE_OFF_TICK)]
    assert book.best_bid() == (-50, 5)
    assert book.depth(5) == ([(-50, 5, 1), (-100, 5, 1)], [(0, 2, 1)])
    assert tup(book.add(5, SELL, -100, 8)) == [
        accepted(5, SELL, -100, 8),
        *trade(SELL, 5, 1, -50, 5, 3, 0),
        *trade(SELL, 5, 2, -100, 3, 0, 2),
        level(BUY, -50, 0),
        level(BUY, -100, 2),
    ]
    assert book.best_bid() == (-100, 2)
    assert book.orders() == [(2, BUY, -100, 2, 0), (3, SELL, 0, 2, 0)]


def test_lot_size() -> None:
    book = new_book(lot=10)
    assert tup(book.add(1, BUY, 100, 25)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.add(1, BUY, 100, 5)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.add(1, BUY, 100, 30)) == [accepted(1, BUY, 100, 30), level(BUY, 100, 30)]
    assert tup(book.add(2, SELL, 100, 10)) == [
        accepted(2, SELL, 100, 10),
        *trade(SELL, 2, 1, 100, 10, 0, 20),
        level(BUY, 100, 20),
    ]


def test_max_qty() -> None:
    book = new_book(max_qty=100)
    assert tup(book.add(1, BUY, 100, 101)) == [rejected(1, Reason.INVALID_QTY)]
    assert tup(book.add(1, BUY, 100, 100)) == [accepted(1, BUY, 100, 100), level(BUY, 100, 100)]


def test_events_carry_the_book_symbol() -> None:
    book = new_book(symbol_id=7)
    events = [*book.add(1, SELL, 100, 5), *book.add(2, BUY, 100, 3), *book.add(3, BUY, 0, 1)]
    assert [e.symbol for e in events] == [7] * len(events)
    e = events[3]  # the taker's FILL
    assert (e.kind, e.order_id, e.side, e.price, e.qty, e.remaining) == (
        EventKind.FILL,
        2,
        BUY,
        100,
        3,
        0,
    )
    assert (e.maker_id, e.taker_id, e.reason) == (1, 2, 0)
    assert events[-1].as_tuple() == rejected(3, Reason.PRICE_OUT_OF_BAND)
