"""Direct checks of tests/reference_book.py against docs/matching.md.

The reference is the oracle of the differential tests, so it is itself pinned
here: every expected event below is written out by hand from the doc.
"""

import ctypes

import pytest

from lltrade.enums import STP, TIF, EventKind, Reason, Side

from reference_book import ReferenceBook

B, S = Side.BUY, Side.SELL


def acc(oid, side, price, qty):
    return (EventKind.ACCEPTED, oid, side, price, qty, qty, 0, 0, 0)


def rej(oid, reason):
    return (EventKind.REJECTED, oid, 0, 0, 0, 0, 0, 0, reason)


def fill(oid, side, price, qty, remaining, maker, taker):
    return (EventKind.FILL, oid, side, price, qty, remaining, maker, taker, 0)


def fills(taker, tside, maker, price, qty, taker_rem, maker_rem):
    """The pair of FILLs of one match: the taker's, then the maker's."""
    mside = S if tside == B else B
    return [
        fill(taker, tside, price, qty, taker_rem, maker, taker),
        fill(maker, mside, price, qty, maker_rem, maker, taker),
    ]


def cxl(oid, side, price, qty, reason):
    return (EventKind.CANCELLED, oid, side, price, qty, 0, 0, 0, reason)


def lvl(side, price, total):
    return (EventKind.LEVEL, 0, side, price, total, 0, 0, 0, 0)


def ids(book):
    return [o[0] for o in book.orders()]


# -- matching ---------------------------------------------------------------------


def test_resting_and_level_events():
    book = ReferenceBook(90, 110)
    assert book.add(1, S, 101, 5) == [acc(1, S, 101, 5), lvl(S, 101, 5)]
    assert book.add(2, S, 101, 3) == [acc(2, S, 101, 3), lvl(S, 101, 8)]
    assert book.add(3, B, 99, 4, account=7) == [acc(3, B, 99, 4), lvl(B, 99, 4)]
    assert book.best_bid() == (99, 4)
    assert book.best_ask() == (101, 8)
    assert book.depth(5) == ([(99, 4, 1)], [(101, 8, 2)])
    assert book.orders() == [(3, B, 99, 4, 7), (1, S, 101, 5, 0), (2, S, 101, 3, 0)]
    assert len(book) == 3


def test_price_time_priority_and_maker_prices():
    book = ReferenceBook(90, 110)
    book.add(1, S, 101, 5)
    book.add(2, S, 101, 3)
    book.add(3, S, 100, 2)
    assert book.add(4, B, 102, 9) == [
        acc(4, B, 102, 9),
        *fills(4, B, 3, 100, 2, 7, 0),
        *fills(4, B, 1, 101, 5, 2, 0),
        *fills(4, B, 2, 101, 2, 0, 1),
        lvl(S, 100, 0),
        lvl(S, 101, 1),
    ]
    assert book.orders() == [(2, S, 101, 1, 0)]
    # A GTC remainder rests at its limit; its level comes after the makers'.
    assert book.add(5, B, 102, 4) == [
        acc(5, B, 102, 4),
        *fills(5, B, 2, 101, 1, 3, 0),
        lvl(S, 101, 0),
        lvl(B, 102, 3),
    ]
    assert book.best_ask() is None
    assert book.best_bid() == (102, 3)


def test_ioc_and_fok():
    book = ReferenceBook(90, 110)
    assert book.add(1, B, 100, 5, tif=TIF.IOC) == [
        acc(1, B, 100, 5),
        cxl(1, B, 100, 5, Reason.IOC_REMAINDER),
    ]
    book.add(2, S, 100, 2)
    book.add(3, S, 101, 2)
    assert book.add(4, B, 100, 5, tif=TIF.IOC) == [
        acc(4, B, 100, 5),
        *fills(4, B, 2, 100, 2, 3, 0),
        cxl(4, B, 100, 3, Reason.IOC_REMAINDER),
        lvl(S, 100, 0),
    ]
    book.add(2, S, 100, 2)
    hash_before = book.state_hash()
    assert book.add(5, B, 101, 5, tif=TIF.FOK) == [
        acc(5, B, 101, 5),
        cxl(5, B, 101, 5, Reason.FOK_UNFILLED),
    ]
    assert book.state_hash() == hash_before
    assert book.add(5, B, 101, 4, tif=TIF.FOK) == [
        acc(5, B, 101, 4),
        *fills(5, B, 2, 100, 2, 2, 0),
        *fills(5, B, 3, 101, 2, 0, 0),
        lvl(S, 100, 0),
        lvl(S, 101, 0),
    ]
    assert len(book) == 0


def test_market_orders_and_protection():
    book = ReferenceBook(0, 1000, tick=5)
    assert book.market(1, B, 10) == [acc(1, B, 0, 10), cxl(1, B, 0, 10, Reason.IOC_REMAINDER)]
    for oid, price in [(2, 100), (3, 105), (4, 110), (5, 115)]:
        book.add(oid, S, price, 1)
    assert book.market(6, B, 10, protection_ticks=2) == [
        acc(6, B, 0, 10),
        *fills(6, B, 2, 100, 1, 9, 0),
        *fills(6, B, 3, 105, 1, 8, 0),
        *fills(6, B, 4, 110, 1, 7, 0),
        cxl(6, B, 0, 7, Reason.IOC_REMAINDER),
        lvl(S, 100, 0),
        lvl(S, 105, 0),
        lvl(S, 110, 0),
    ]
    book.add(7, S, 120, 3)
    assert book.market(6, B, 2, protection_ticks=0) == [
        acc(6, B, 0, 2),
        *fills(6, B, 5, 115, 1, 1, 0),
        cxl(6, B, 0, 1, Reason.IOC_REMAINDER),
        lvl(S, 115, 0),
    ]
    assert book.market(8, B, 2) == [acc(8, B, 0, 2), *fills(8, B, 7, 120, 2, 0, 1), lvl(S, 120, 1)]


def test_post_only_and_flags():
    book = ReferenceBook(90, 110)
    book.add(1, S, 100, 1)
    assert book.add(2, B, 100, 1, post_only=True) == [rej(2, Reason.POST_ONLY_WOULD_CROSS)]
    assert book.add(2, B, 99, 1, post_only=True) == [acc(2, B, 99, 1), lvl(B, 99, 1)]
    for tif in (TIF.IOC, TIF.FOK):
        assert book.add(3, B, 90, 1, tif=tif, post_only=True) == [rej(3, Reason.INVALID_FLAGS)]


# -- self-trade prevention --------------------------------------------------------


def _stp_book():
    book = ReferenceBook(90, 110)
    book.add(1, S, 100, 2, account=7)
    book.add(2, S, 100, 2, account=8)
    book.add(3, S, 101, 2, account=7)
    return book


def test_stp_cancel_resting():
    book = _stp_book()
    assert book.add(10, B, 101, 3, account=7, stp=STP.CANCEL_RESTING) == [
        acc(10, B, 101, 3),
        cxl(1, S, 100, 2, Reason.SELF_TRADE),
        *fills(10, B, 2, 100, 2, 1, 0),
        cxl(3, S, 101, 2, Reason.SELF_TRADE),
        lvl(S, 100, 0),
        lvl(S, 101, 0),
        lvl(B, 101, 1),
    ]


def test_stp_cancel_incoming_does_not_rest():
    book = _stp_book()
    before = book.orders()
    assert book.add(10, B, 101, 3, account=7, stp=STP.CANCEL_INCOMING) == [
        acc(10, B, 101, 3),
        cxl(10, B, 101, 3, Reason.SELF_TRADE),
    ]
    assert book.orders() == before


def test_stp_cancel_both():
    book = _stp_book()
    assert book.market(10, B, 3, account=7, stp=STP.CANCEL_BOTH) == [
        acc(10, B, 0, 3),
        cxl(1, S, 100, 2, Reason.SELF_TRADE),
        cxl(10, B, 0, 3, Reason.SELF_TRADE),
        lvl(S, 100, 2),
    ]


def test_stp_needs_mode_and_shared_nonzero_account():
    book = ReferenceBook(90, 110)
    book.add(1, S, 100, 1, account=7)
    book.add(2, S, 100, 1)
    assert book.add(3, B, 100, 1, account=7) == [
        acc(3, B, 100, 1),
        *fills(3, B, 1, 100, 1, 0, 0),
        lvl(S, 100, 1),
    ]
    assert book.add(4, B, 100, 1, stp=STP.CANCEL_BOTH) == [
        acc(4, B, 100, 1),
        *fills(4, B, 2, 100, 1, 0, 0),
        lvl(S, 100, 0),
    ]


def test_fok_with_stp_counts_only_what_the_match_would_fill():
    book = ReferenceBook(90, 110)
    book.add(1, S, 100, 2, account=7)
    book.add(2, S, 100, 2, account=8)
    before = book.orders()
    # CANCEL_RESTING: order 1 would be cancelled, not filled, so only 2 lots count.
    assert book.add(9, B, 100, 3, tif=TIF.FOK, account=7, stp=STP.CANCEL_RESTING) == [
        acc(9, B, 100, 3),
        cxl(9, B, 100, 3, Reason.FOK_UNFILLED),
    ]
    # CANCEL_INCOMING: the count ends at order 1.
    assert book.add(9, B, 100, 1, tif=TIF.FOK, account=7, stp=STP.CANCEL_INCOMING) == [
        acc(9, B, 100, 1),
        cxl(9, B, 100, 1, Reason.FOK_UNFILLED),
    ]
    assert book.orders() == before  # a killed FOK cancels nothing
    assert book.add(9, B, 100, 2, tif=TIF.FOK, account=7, stp=STP.CANCEL_RESTING) == [
        acc(9, B, 100, 2),
        cxl(1, S, 100, 2, Reason.SELF_TRADE),
        *fills(9, B, 2, 100, 2, 0, 0),
        lvl(S, 100, 0),
    ]


# -- validation -------------------------------------------------------------------


def test_validation_order():
    book = ReferenceBook(100, 200, tick=5, lot=10, max_qty=1000)
    assert book.add(0, B, 101, 0, tif=TIF.IOC, post_only=True) == [rej(0, Reason.INVALID_ORDER_ID)]
    assert book.add(-1, B, 100, 10) == [rej(-1, Reason.INVALID_ORDER_ID)]
    assert book.add(1, B, 101, 0, tif=TIF.IOC, post_only=True) == [rej(1, Reason.INVALID_FLAGS)]
    assert book.add(1, B, 301, 5) == [rej(1, Reason.INVALID_QTY)]
    assert book.add(1, B, 100, 1010) == [rej(1, Reason.INVALID_QTY)]
    assert book.add(1, B, 301, 10) == [rej(1, Reason.PRICE_OFF_TICK)]
    assert book.add(1, B, 300, 10) == [rej(1, Reason.PRICE_OUT_OF_BAND)]
    assert book.add(1, B, 95, 10) == [rej(1, Reason.PRICE_OUT_OF_BAND)]
    assert book.add(1, B, 200, 1000) == [acc(1, B, 200, 1000), lvl(B, 200, 1000)]  # edges valid
    assert book.add(1, S, 200, 10, post_only=True) == [rej(1, Reason.DUPLICATE_ORDER_ID)]
    assert book.add(2, S, 200, 10, post_only=True) == [rej(2, Reason.POST_ONLY_WOULD_CROSS)]
    assert book.add(2**63 - 1, B, 100, 10)[0] == acc(2**63 - 1, B, 100, 10)
    assert book.market(0, B, 0) == [rej(0, Reason.INVALID_ORDER_ID)]
    assert book.market(3, B, 5) == [rej(3, Reason.INVALID_QTY)]
    assert book.market(1, S, 10) == [rej(1, Reason.DUPLICATE_ORDER_ID)]
    for call in (
        lambda: book.cancel(9),
        lambda: book.reduce(9, 10),
        lambda: book.replace(9, 100, 0),
    ):
        assert call() == [rej(9, Reason.UNKNOWN_ORDER)]
    assert book.reduce(1, 5) == [rej(1, Reason.INVALID_QTY)]
    assert book.replace(1, 203, 0) == [rej(1, Reason.INVALID_QTY)]
    assert book.replace(1, 203, 1010) == [rej(1, Reason.INVALID_QTY)]
    assert book.replace(1, 203, 10) == [rej(1, Reason.PRICE_OFF_TICK)]
    assert book.replace(1, 205, 10) == [rej(1, Reason.PRICE_OUT_OF_BAND)]
    assert book.orders() == [(1, B, 200, 1000, 0), (2**63 - 1, B, 100, 10, 0)]


def test_pool_exhausted_only_for_gtc():
    book = ReferenceBook(90, 110, max_orders=2)
    book.add(1, S, 100, 1)
    book.add(2, S, 101, 1)
    assert book.add(3, B, 100, 1) == [rej(3, Reason.POOL_EXHAUSTED)]  # before any fill
    assert book.add(3, B, 100, 1, tif=TIF.IOC) == [
        acc(3, B, 100, 1),
        *fills(3, B, 1, 100, 1, 0, 0),
        lvl(S, 100, 0),
    ]
    assert book.add(4, B, 99, 1)[0] == acc(4, B, 99, 1)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda b: b.add(1, 3, 100, 1), "side"),
        (lambda b: b.add(1, 0, 100, 1), "side"),
        (lambda b: b.add(1, B, 100, 1, tif=3), "tif"),
        (lambda b: b.add(1, B, 100, 1, stp=4), "stp"),
        (lambda b: b.market(1, 0, 1), "side"),
        (lambda b: b.market(1, B, 1, stp=-1), "stp"),
        (lambda b: b.market(1, B, 1, protection_ticks=-1), "protection_ticks"),
    ],
)
def test_bad_enum_arguments_raise(call, name):
    book = ReferenceBook(90, 110)
    with pytest.raises(ValueError, match=name):
        call(book)
    assert len(book) == 0


# -- changing orders --------------------------------------------------------------


def test_cancel_and_reduce():
    book = ReferenceBook(90, 110)
    book.add(1, B, 99, 5)
    book.add(2, B, 99, 5)
    assert book.reduce(1, 2) == [(EventKind.REDUCED, 1, B, 99, 3, 2, 0, 0, 0), lvl(B, 99, 7)]
    assert ids(book) == [1, 2]  # keeps its place
    assert book.reduce(1, 2) == [rej(1, Reason.INVALID_QTY)]
    assert book.reduce(1, 0) == [rej(1, Reason.INVALID_QTY)]
    assert book.cancel(1) == [cxl(1, B, 99, 2, Reason.USER_CANCEL), lvl(B, 99, 5)]
    assert book.cancel(1) == [rej(1, Reason.UNKNOWN_ORDER)]
    assert book.cancel(2, Reason.DISCONNECT) == [cxl(2, B, 99, 5, Reason.DISCONNECT), lvl(B, 99, 0)]


def test_replace_keeps_or_loses_place():
    book = ReferenceBook(90, 110)
    book.add(1, B, 99, 5)
    book.add(2, B, 99, 5)
    book.add(3, B, 98, 5)
    rep = EventKind.REPLACED
    assert book.replace(1, 99, 5) == [(rep, 1, B, 99, 5, 5, 0, 0, 0)]  # no-op
    assert book.replace(1, 99, 4) == [(rep, 1, B, 99, 4, 4, 0, 0, 0), lvl(B, 99, 9)]
    assert ids(book) == [1, 2, 3]
    assert book.replace(1, 99, 6) == [(rep, 1, B, 99, 6, 6, 0, 0, 0), lvl(B, 99, 11)]
    assert ids(book) == [2, 1, 3]
    assert book.replace(2, 98, 5) == [(rep, 2, B, 98, 5, 5, 0, 0, 0), lvl(B, 99, 6), lvl(B, 98, 10)]
    assert ids(book) == [1, 3, 2]
    # A crossing replace trades at the maker's price and rests the remainder.
    book.add(4, S, 100, 3)
    assert book.replace(3, 100, 5) == [
        (rep, 3, B, 100, 5, 5, 0, 0, 0),
        *fills(3, B, 4, 100, 3, 2, 0),
        lvl(B, 98, 5),
        lvl(S, 100, 0),
        lvl(B, 100, 2),
    ]
    assert ids(book) == [3, 1, 2]


def test_replace_carries_post_only_account_and_stp():
    book = ReferenceBook(90, 110)
    book.add(1, B, 100, 1)
    book.add(5, S, 102, 1, post_only=True)
    assert book.replace(5, 100, 1) == [rej(5, Reason.POST_ONLY_WOULD_CROSS)]
    assert book.orders() == [(1, B, 100, 1, 0), (5, S, 102, 1, 0)]
    book.add(6, S, 103, 2, account=9, stp=STP.CANCEL_INCOMING)
    book.add(7, B, 97, 2, account=9)
    assert book.replace(6, 97, 2) == [
        (EventKind.REPLACED, 6, S, 97, 2, 2, 0, 0, 0),
        *fills(6, S, 1, 100, 1, 1, 0),
        cxl(6, S, 97, 1, Reason.SELF_TRADE),
        lvl(S, 103, 0),
        lvl(B, 100, 0),
    ]
    assert book.cancel(6) == [rej(6, Reason.UNKNOWN_ORDER)]


def test_mass_cancel_order():
    book = ReferenceBook(90, 110)
    book.add(10, B, 99, 1, account=1)
    book.add(11, B, 99, 1, account=2)
    book.add(12, B, 98, 1, account=1)
    book.add(13, B, 99, 1, account=1)
    book.add(15, S, 102, 1, account=1)
    book.add(14, S, 101, 1, account=1)
    assert book.mass_cancel(0) == []
    assert book.mass_cancel(5) == []
    mc = Reason.MASS_CANCEL
    assert book.mass_cancel(1) == [
        cxl(10, B, 99, 1, mc),
        cxl(13, B, 99, 1, mc),
        cxl(12, B, 98, 1, mc),
        cxl(14, S, 101, 1, mc),
        cxl(15, S, 102, 1, mc),
        lvl(B, 99, 1),
        lvl(B, 98, 0),
        lvl(S, 101, 0),
        lvl(S, 102, 0),
    ]
    assert book.orders() == [(11, B, 99, 1, 2)]


def test_ids_are_free_once_finished():
    book = ReferenceBook(90, 110)
    book.add(1, S, 100, 1)
    assert book.add(1, B, 100, 1) == [rej(1, Reason.DUPLICATE_ORDER_ID)]
    book.add(2, B, 100, 1)  # fills order 1
    assert book.add(1, B, 100, 1, tif=TIF.IOC)[0] == acc(1, B, 100, 1)
    assert book.market(1, B, 1)[0] == acc(1, B, 0, 1)
    assert book.add(1, B, 99, 1) == [acc(1, B, 99, 1), lvl(B, 99, 1)]


# -- state hash -------------------------------------------------------------------


def _doc_hash(orders):
    """docs/matching.md "State hash", followed literally with C uint64 arithmetic."""

    def u64(x):
        return ctypes.c_uint64(x).value

    def fold(h, v):
        z = u64(u64(h ^ u64(v)) + 0x9E3779B97F4A7C15)
        z = u64((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9)
        z = u64((z ^ (z >> 27)) * 0x94D049BB133111EB)
        return z ^ (z >> 31)

    h = 0x6C6C7472616465
    for side, price, order_id, qty in orders:
        for v in (side, price, order_id, qty):
            h = fold(h, v)
    return fold(h, len(orders))


def test_state_hash_golden():
    assert ReferenceBook(0, 10).state_hash() == _doc_hash([]) == 0xF99DF3A3BF61AEE4
    book = ReferenceBook(-100, 200)
    book.add(3, B, -5, 1)
    book.add(4, S, 101, 2)
    book.add(1, B, 99, 5)
    book.add(2, B, 99, 3)
    expected = [(B, 99, 1, 5), (B, 99, 2, 3), (B, -5, 3, 1), (S, 101, 4, 2)]
    assert _doc_hash(expected) == 0xC9F249AA02BB6F72
    assert book.state_hash() == 0xC9F249AA02BB6F72


def test_state_hash_depends_on_the_resting_book_only():
    a = ReferenceBook(90, 110)
    a.add(1, B, 99, 5)
    a.add(2, B, 99, 3)
    b = ReferenceBook(90, 110)
    b.add(2, B, 99, 3)
    b.add(1, B, 99, 5)
    assert a.state_hash() != b.state_hash()  # queue order counts
    b.replace(2, 99, 4)  # a larger quantity loses its place: now 1, 2
    b.reduce(2, 3)
    b.add(9, S, 101, 1, post_only=True)
    b.cancel(9)
    b.replace(1, 99, 5)  # the same: keeps its place
    assert b.orders() == a.orders()
    assert b.state_hash() == a.state_hash()
    before = a.state_hash()
    a.add(3, S, 99, 1, post_only=True)  # rejected
    a.market(3, S, 0)  # rejected
    assert a.state_hash() == before
