"""The batch face: OrderBook.process(commands, events)."""

import re

import pytest

from lltrade import STP, TIF, Op, Reason

from conftest import (
    BUY,
    MAX_ID,
    SELL,
    accepted,
    c_add,
    c_cancel,
    c_market,
    c_mass,
    c_reduce,
    c_replace,
    cancelled,
    cmd_indices,
    commands,
    event_buffer,
    level,
    new_book,
    reduced,
    rejected,
    replaced,
    rows,
    snapshot,
    trade,
    tup,
)


def test_batch_events_match_the_spec() -> None:
    book = new_book(symbol_id=3)
    cmds = commands(
        [
            c_add(1, SELL, 100, 5, symbol=3),
            c_add(2, SELL, 101, 5, symbol=3, account=9),
            c_add(3, BUY, 101, 7, tif=TIF.IOC, symbol=3),
            c_reduce(2, 1, symbol=3),
            c_replace(2, 102, 4, symbol=3),
            c_market(4, BUY, 9, symbol=3),
            c_cancel(4, symbol=3),
        ]
    )
    events = event_buffer(100)
    n = book.process(cmds, events)
    assert rows(events, n) == [
        accepted(1, SELL, 100, 5),
        level(SELL, 100, 5),
        accepted(2, SELL, 101, 5),
        level(SELL, 101, 5),
        accepted(3, BUY, 101, 7),
        *trade(BUY, 3, 1, 100, 5, 2, 0),
        *trade(BUY, 3, 2, 101, 2, 0, 3),
        level(SELL, 100, 0),
        level(SELL, 101, 3),
        reduced(2, SELL, 101, 2, 1),
        level(SELL, 101, 1),
        replaced(2, SELL, 102, 4),
        level(SELL, 101, 0),
        level(SELL, 102, 4),
        accepted(4, BUY, 0, 9),
        *trade(BUY, 4, 2, 102, 4, 5, 0),
        cancelled(4, BUY, 0, 5, Reason.IOC_REMAINDER),
        level(SELL, 102, 0),
        rejected(4, Reason.UNKNOWN_ORDER),
    ]
    assert cmd_indices(events, n) == [0, 0, 1, 1, *[2] * 7, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 6]
    assert [int(s) for s in events["symbol"][:n]] == [3] * n
    assert book.commands_processed == 7
    assert len(book) == 0


def test_batch_and_per_call_faces_agree() -> None:
    script = [
        c_add(1, SELL, 100, 5, account=1),
        c_add(2, SELL, 100, 5, account=2),
        c_add(3, SELL, 101, 5, account=1, post_only=1),
        c_add(4, BUY, 99, 5, account=2),
        c_add(5, BUY, 101, 12, account=1, stp=STP.CANCEL_RESTING),
        c_add(6, BUY, 98, 3, tif=TIF.FOK),
        c_add(7, SELL, 90, 1, post_only=1),
        c_market(8, SELL, 20, protection=1, account=2, stp=STP.CANCEL_BOTH),
        c_replace(4, 97, 2),
        c_mass(2),
        c_mass(1, reason=Reason.KILL_SWITCH),
        c_cancel(99),
    ]
    batch_book = new_book()
    events = event_buffer(200)
    n = batch_book.process(commands(script), events)

    call_book = new_book()
    expected = []
    for c in script:
        op = c["op"]
        if op == Op.ADD:
            expected += tup(
                call_book.add(
                    c["order_id"],
                    c["side"],
                    c["price"],
                    c["qty"],
                    tif=c["tif"],
                    post_only=bool(c["post_only"]),
                    account=c["account"],
                    stp=c["stp"],
                )
            )
        elif op == Op.MARKET:
            expected += tup(
                call_book.market(
                    c["order_id"],
                    c["side"],
                    c["qty"],
                    protection_ticks=None if c["protection"] < 0 else c["protection"],
                    account=c["account"],
                    stp=c["stp"],
                )
            )
        elif op == Op.CANCEL:
            expected += tup(call_book.cancel(c["order_id"]))
        elif op == Op.REPLACE:
            expected += tup(call_book.replace(c["order_id"], c["price"], c["qty"]))
        else:
            assert op == Op.MASS_CANCEL
            expected += tup(call_book.mass_cancel(c["account"], c["reason"] or Reason.MASS_CANCEL))
    assert rows(events, n) == expected
    assert snapshot(batch_book) == snapshot(call_book)
    # Spot-check a few of the events against the spec.
    assert rejected(7, Reason.POST_ONLY_WOULD_CROSS) in expected
    assert cancelled(6, BUY, 98, 3, Reason.FOK_UNFILLED) in expected


def test_batch_default_and_explicit_reasons() -> None:
    book = new_book()
    events = event_buffer(50)
    n = book.process(
        commands(
            [
                c_add(1, BUY, 100, 1, account=5),
                c_add(2, BUY, 100, 1, account=5),
                c_add(3, BUY, 100, 1, account=6),
                c_add(4, BUY, 100, 1, account=7),
                c_cancel(1),
                c_cancel(2, reason=Reason.DISCONNECT),
                c_mass(6),
                c_mass(7, reason=Reason.KILL_SWITCH),
            ]
        ),
        events,
    )
    assert rows(events, n)[8:] == [
        cancelled(1, BUY, 100, 1, Reason.USER_CANCEL),
        level(BUY, 100, 3),
        cancelled(2, BUY, 100, 1, Reason.DISCONNECT),
        level(BUY, 100, 2),
        cancelled(3, BUY, 100, 1, Reason.MASS_CANCEL),
        level(BUY, 100, 1),
        cancelled(4, BUY, 100, 1, Reason.KILL_SWITCH),
        level(BUY, 100, 0),
    ]


def test_batch_market_protection_field() -> None:
    book = new_book()
    for oid, price in ((1, 100), (2, 101), (3, 102)):
        book.add(oid, SELL, price, 1)
    events = event_buffer(50)
    n = book.process(commands([c_market(9, BUY, 5, protection=1)]), events)
    assert rows(events, n) == [
        accepted(9, BUY, 0, 5),
        *trade(BUY, 9, 1, 100, 1, 4, 0),
        *trade(BUY, 9, 2, 101, 1, 3, 0),
        cancelled(9, BUY, 0, 3, Reason.IOC_REMAINDER),
        level(SELL, 100, 0),
        level(SELL, 101, 0),
    ]
    n = book.process(commands([c_market(9, BUY, 5, protection=0)]), events)
    assert rows(events, n) == [
        accepted(9, BUY, 0, 5),
        *trade(BUY, 9, 3, 102, 1, 4, 0),
        cancelled(9, BUY, 0, 4, Reason.IOC_REMAINDER),
        level(SELL, 102, 0),
    ]


def test_batch_invalid_fields_are_rejected() -> None:
    book = new_book()
    book.add(50, SELL, 100, 5)
    before = snapshot(book)
    bad = [
        {"op": 0, "order_id": 1},
        {"op": 7, "order_id": 2},
        {"op": 99, "order_id": 3},
        c_add(4, 0, 100, 1),
        c_add(5, 3, 100, 1),
        c_add(6, BUY, 100, 1, tif=3),
        c_add(7, BUY, 100, 1, stp=4),
        c_market(8, 0, 1),
        c_market(9, 3, 1),
        c_market(10, BUY, 1, stp=4),
        c_market(11, BUY, 1, protection=-2),
    ]
    events = event_buffer(100)
    n = book.process(commands([*bad, c_add(12, BUY, 99, 1)]), events)
    assert rows(events, n) == [
        *(rejected(i, Reason.INVALID_FIELD) for i in range(1, 12)),
        accepted(12, BUY, 99, 1),
        level(BUY, 99, 1),
    ]
    assert cmd_indices(events, n) == [*range(11), 11, 11]
    assert book.commands_processed == 12
    book.cancel(12)
    assert snapshot(book) == before


def test_batch_empty_command_array() -> None:
    book = new_book()
    assert book.process(commands([]), event_buffer(0)) == 0
    assert book.commands_processed == 0


def test_batch_early_stop_at_command_boundary() -> None:
    book = new_book()
    for oid in (1, 2, 3):
        book.add(oid, BUY, 100 - oid, 1)
    cmds = commands([c_cancel(1), c_cancel(2), c_cancel(3)])
    events = event_buffer(5)
    n = book.process(cmds, events)
    # A cancel needs 2 slots: two fit in 5, the third does not.
    assert n == 4
    assert book.commands_processed == 2
    assert rows(events, n) == [
        cancelled(1, BUY, 99, 1, Reason.USER_CANCEL),
        level(BUY, 99, 0),
        cancelled(2, BUY, 98, 1, Reason.USER_CANCEL),
        level(BUY, 98, 0),
    ]
    assert book.orders() == [(3, BUY, 97, 1, 0)]
    rest = cmds[book.commands_processed :]
    n = book.process(rest, events)
    assert n == 2
    assert book.commands_processed == 1
    assert rows(events, n) == [
        cancelled(3, BUY, 97, 1, Reason.USER_CANCEL),
        level(BUY, 97, 0),
    ]
    assert cmd_indices(events, n) == [0, 0]
    assert len(book) == 0


def test_batch_early_stop_resumes_to_the_same_result() -> None:
    script = [c_add(i, SELL, 100 + i % 7, 1 + i % 3) for i in range(1, 41)]
    script += [c_add(100, BUY, 110, 70), c_market(101, BUY, 5), c_mass(0)]
    script += [c_cancel(i) for i in range(1, 41, 3)]
    cmds = commands(script)

    whole = new_book()
    big = event_buffer(1_000)
    n_whole = whole.process(cmds, big)
    assert whole.commands_processed == len(script)
    expected = rows(big, n_whole)

    pieces = new_book()
    # Room for the sweep's worst case, not for the whole script.
    small = event_buffer(130)
    got: list = []
    done = 0
    calls = 0
    while done < len(script):
        n = pieces.process(cmds[done:], small)
        assert pieces.commands_processed > 0
        got += rows(small, n)
        done += pieces.commands_processed
        calls += 1
    assert calls > 1
    assert got == expected
    assert snapshot(pieces) == snapshot(whole)


def test_batch_buffer_too_small_for_first_command_raises() -> None:
    book = new_book()
    book.add(1, BUY, 100, 1)
    before = snapshot(book)
    # A command that cannot trade is bounded by 3 events.
    with pytest.raises(ValueError, match=r"\b3\b"):
        book.process(commands([c_cancel(1)]), event_buffer(2))
    assert snapshot(book) == before
    with pytest.raises(ValueError):
        book.process(commands([c_cancel(1)]), event_buffer(0))
    assert snapshot(book) == before
    # Exactly the documented bound is enough.
    events = event_buffer(3)
    assert book.process(commands([c_cancel(1)]), events) == 2
    assert rows(events, 2) == [
        cancelled(1, BUY, 100, 1, Reason.USER_CANCEL),
        level(BUY, 100, 0),
    ]


def test_batch_worst_case_bound_for_a_command_that_can_trade() -> None:
    book = new_book()
    book.add(1, SELL, 100, 1)
    book.add(2, SELL, 100, 1)
    book.add(3, SELL, 101, 1)
    book.add(4, BUY, 90, 1)
    before = snapshot(book)
    # 4 + 3 * min(3 opposite orders, 5 // 1 + 2) = 13
    cmds = commands([c_add(9, BUY, 100, 5)])
    with pytest.raises(ValueError, match=r"\b13\b"):
        book.process(cmds, event_buffer(12))
    assert snapshot(book) == before
    events = event_buffer(13)
    n = book.process(cmds, events)
    assert rows(events, n) == [
        accepted(9, BUY, 100, 5),
        *trade(BUY, 9, 1, 100, 1, 4, 0),
        *trade(BUY, 9, 2, 100, 1, 3, 0),
        level(SELL, 100, 0),
        level(BUY, 100, 3),
    ]


def test_batch_worst_case_bound_for_mass_cancel() -> None:
    book = new_book()
    book.add(1, BUY, 100, 1, account=4)
    book.add(2, BUY, 100, 1, account=4)
    book.add(3, SELL, 101, 1, account=4)
    before = snapshot(book)
    # 1 + 3 orders + 2 levels = 6
    cmds = commands([c_mass(4)])
    with pytest.raises(ValueError, match=r"\b6\b"):
        book.process(cmds, event_buffer(5))
    assert snapshot(book) == before
    events = event_buffer(6)
    n = book.process(cmds, events)
    assert n == 5
    assert rows(events, n) == [
        cancelled(1, BUY, 100, 1, Reason.MASS_CANCEL),
        cancelled(2, BUY, 100, 1, Reason.MASS_CANCEL),
        cancelled(3, SELL, 101, 1, Reason.MASS_CANCEL),
        level(BUY, 100, 0),
        level(SELL, 101, 0),
    ]


def test_batch_stops_before_a_command_that_might_not_fit() -> None:
    book = new_book()
    book.add(1, SELL, 100, 1)
    # The cancel uses 2 of 5 slots; the crossing add's bound is 4 + 3 * 1 = 7 > 3.
    cmds = commands([c_cancel(1), c_add(2, BUY, 101, 1)])
    book.add(3, SELL, 101, 1)
    events = event_buffer(5)
    n = book.process(cmds, events)
    assert book.commands_processed == 1
    assert rows(events, n) == [
        cancelled(1, SELL, 100, 1, Reason.USER_CANCEL),
        level(SELL, 100, 0),
    ]


def test_batch_pool_grows_between_commands() -> None:
    book = new_book(1, 100_000, capacity=4)
    cmds = commands([c_add(i, BUY, i, 1) for i in range(1, 1_001)])
    events = event_buffer(2 * 1_000 + 4)
    n = book.process(cmds, events)
    assert n == 2_000
    assert book.commands_processed == 1_000
    assert len(book) == 1_000
    assert book.best_bid() == (1_000, 1)


def test_batch_max_order_id() -> None:
    book = new_book()
    events = event_buffer(20)
    n = book.process(
        commands([c_add(MAX_ID, SELL, 100, 2), c_add(MAX_ID - 1, BUY, 100, 1), c_cancel(MAX_ID)]),
        events,
    )
    assert rows(events, n) == [
        accepted(MAX_ID, SELL, 100, 2),
        level(SELL, 100, 2),
        accepted(MAX_ID - 1, BUY, 100, 1),
        *trade(BUY, MAX_ID - 1, MAX_ID, 100, 1, 0, 1),
        level(SELL, 100, 1),
        cancelled(MAX_ID, SELL, 100, 1, Reason.USER_CANCEL),
        level(SELL, 100, 0),
    ]


def test_batch_rejections() -> None:
    book = new_book()
    book.add(1, BUY, 100, 1)
    events = event_buffer(20)
    n = book.process(
        commands(
            [
                c_add(0, BUY, 100, 1),
                c_add(2, BUY, 100, 1, tif=TIF.IOC, post_only=1),
                c_add(2, BUY, 100, 0),
                c_add(2, BUY, 2_000, 1),
                c_add(1, SELL, 200, 1),
                c_reduce(1, 1),
                c_replace(5, 100, 1),
                c_market(1, SELL, 1),
            ]
        ),
        events,
    )
    assert rows(events, n) == [
        rejected(0, Reason.INVALID_ORDER_ID),
        rejected(2, Reason.INVALID_FLAGS),
        rejected(2, Reason.INVALID_QTY),
        rejected(2, Reason.PRICE_OUT_OF_BAND),
        rejected(1, Reason.DUPLICATE_ORDER_ID),
        rejected(1, Reason.INVALID_QTY),
        rejected(5, Reason.UNKNOWN_ORDER),
        rejected(1, Reason.DUPLICATE_ORDER_ID),
    ]


def test_batch_value_error_message_is_informative() -> None:
    book = new_book()
    with pytest.raises(ValueError) as info:
        book.process(commands([c_add(1, BUY, 100, 1)]), event_buffer(1))
    assert re.search(r"\d", str(info.value))
