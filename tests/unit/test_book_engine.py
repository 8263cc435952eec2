"""lltrade.Engine: books per symbol and the routing batch face."""

import lltrade
from lltrade import Reason

from conftest import (
    BUY,
    SELL,
    accepted,
    c_add,
    c_cancel,
    c_mass,
    cancelled,
    cmd_indices,
    commands,
    event_buffer,
    level,
    rejected,
    rows,
    trade,
    tup,
)


def _engine() -> lltrade.Engine:
    engine = lltrade.Engine()
    engine.add_book(1, 1, 1_000)
    engine.add_book(2, 10, 10_000, tick=10, lot=5)
    return engine


def test_add_book_returns_the_book() -> None:
    engine = lltrade.Engine()
    book = engine.add_book(5, 1, 1_000)
    assert isinstance(book, lltrade.OrderBook)
    assert engine.book(5) is book
    assert tup(book.add(1, BUY, 100, 1)) == [accepted(1, BUY, 100, 1), level(BUY, 100, 1)]
    assert [e.symbol for e in book.add(2, BUY, 100, 1)] == [5, 5]


def test_engine_routes_by_symbol() -> None:
    engine = _engine()
    cmds = commands(
        [
            c_add(1, SELL, 100, 5, symbol=1),
            c_add(1, SELL, 100, 5, symbol=2),
            c_add(2, BUY, 100, 3, symbol=1),
            c_add(2, BUY, 105, 5, symbol=2),
            c_add(3, BUY, 100, 5, symbol=2),
        ]
    )
    events = event_buffer(100)
    n = engine.process(cmds, events)
    assert rows(events, n) == [
        accepted(1, SELL, 100, 5),
        level(SELL, 100, 5),
        accepted(1, SELL, 100, 5),
        level(SELL, 100, 5),
        accepted(2, BUY, 100, 3),
        *trade(BUY, 2, 1, 100, 3, 0, 2),
        level(SELL, 100, 2),
        rejected(2, Reason.PRICE_OFF_TICK),
        accepted(3, BUY, 100, 5),
        *trade(BUY, 3, 1, 100, 5, 0, 0),
        level(SELL, 100, 0),
    ]
    assert [int(s) for s in events["symbol"][:n]] == [1, 1, 2, 2, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert cmd_indices(events, n) == [0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4]
    assert engine.commands_processed == 5
    assert engine.book(1).orders() == [(1, SELL, 100, 2, 0)]
    assert engine.book(2).orders() == []


def test_engine_unknown_symbol_is_rejected() -> None:
    engine = _engine()
    events = event_buffer(20)
    n = engine.process(
        commands(
            [
                c_add(1, BUY, 100, 1, symbol=3),
                c_cancel(9, symbol=0),
                c_mass(4, symbol=77),
                c_add(1, BUY, 100, 1, symbol=1),
            ]
        ),
        events,
    )
    assert rows(events, n) == [
        rejected(1, Reason.UNKNOWN_SYMBOL),
        rejected(9, Reason.UNKNOWN_SYMBOL),
        rejected(0, Reason.UNKNOWN_SYMBOL),
        accepted(1, BUY, 100, 1),
        level(BUY, 100, 1),
    ]
    assert [int(s) for s in events["symbol"][:n]] == [3, 0, 77, 1, 1]
    assert engine.commands_processed == 4
    assert len(engine.book(1)) == 1
    assert len(engine.book(2)) == 0


def test_engine_batch_and_per_call_share_state() -> None:
    engine = _engine()
    engine.book(2).add(7, SELL, 500, 10)
    events = event_buffer(20)
    n = engine.process(commands([c_cancel(7, symbol=2, reason=Reason.DISCONNECT)]), events)
    assert rows(events, n) == [
        cancelled(7, SELL, 500, 10, Reason.DISCONNECT),
        level(SELL, 500, 0),
    ]
    assert engine.book(2).best_ask() is None


def test_engine_early_stop() -> None:
    engine = _engine()
    engine.book(1).add(1, BUY, 100, 1)
    engine.book(2).add(1, BUY, 100, 5)
    cmds = commands([c_cancel(1, symbol=1), c_cancel(1, symbol=2), c_cancel(1, symbol=1)])
    events = event_buffer(3)
    n = engine.process(cmds, events)
    assert n == 2
    assert engine.commands_processed == 1
    n = engine.process(cmds[1:], events)
    assert rows(events, n) == [cancelled(1, BUY, 100, 5, Reason.USER_CANCEL), level(BUY, 100, 0)]
    assert engine.commands_processed == 1
    n = engine.process(cmds[2:], events)
    assert rows(events, n) == [rejected(1, Reason.UNKNOWN_ORDER)]
    assert engine.commands_processed == 1
