"""lltrade._gate.OrderGate: pre-trade checks, id mapping, routing and accounting.

Most tests drive the gate the way the daemon does: ``admit`` messages into a
command batch, run it through a real :class:`lltrade.Engine`, ``apply`` the
events and look at the routes.  The last test checks the gate against a small
pure-Python model over a seeded random stream.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import lltrade
from lltrade import STP, TIF, EventKind, Op, Reason, Side
from lltrade._gate import OrderGate
from lltrade.protocol import (
    Cancel,
    Logon,
    MassCancel,
    NewOrder,
    Reduce,
    Replace,
    SessionReason,
)

BUY = Side.BUY
SELL = Side.SELL
MAX_ID = 2**63 - 1
SECOND = 1_000_000_000
PXD = Path(__file__).resolve().parents[2] / "src" / "lltrade" / "_gate.pxd"

OrderMessage = NewOrder | Cancel | Replace | Reduce | MassCancel

# -- messages --------------------------------------------------------------------


def new(
    cl: int,
    side: int = BUY,
    price: int = 1_000,
    qty: int = 1,
    *,
    symbol: int = 1,
    tif: int = TIF.GTC,
    post_only: bool = False,
    stp: int = STP.NONE,
) -> NewOrder:
    return NewOrder(
        seq=0,
        cl_ord_id=cl,
        symbol=symbol,
        side=Side(side),
        price=price,
        qty=qty,
        tif=TIF(tif),
        post_only=post_only,
        stp=STP(stp),
    )


def cancel(cl: int) -> Cancel:
    return Cancel(seq=0, cl_ord_id=cl)


def replace(cl: int, price: int, qty: int) -> Replace:
    return Replace(seq=0, cl_ord_id=cl, price=price, qty=qty)


def reduce(cl: int, qty: int) -> Reduce:
    return Reduce(seq=0, cl_ord_id=cl, qty=qty)


def mass(symbol: int = 0, account: int = 0) -> MassCancel:
    return MassCancel(seq=0, symbol=symbol, account=account)


# -- the set-up shared by most tests ------------------------------------------------
#
# symbol 1: tick 1, lot 1, reference 1000, collar 100 ticks (900 .. 1100),
#           max qty 1000, max notional 500_000; engine band 1 .. 2000
# symbol 2: tick 5, lot 10, reference 25_000, no collar, no limits; band 5 .. 100_000
# account 1: 5 open orders, position 100; account 2: roomy; account 100: admin
# slots: 0 -> account 1, 1 -> account 2, 2 -> account 100 (admin), 3 -> account 1

ROOMY = {"max_open_orders": 10_000, "max_position": 10**12}


def make_gate(*, capacity: int = 1024, first_order_id: int = 1, **acct1: Any) -> OrderGate:
    gate = OrderGate(8, capacity=capacity, first_order_id=first_order_id)
    gate.add_symbol(
        1,
        tick=1,
        lot=1,
        reference_price=1_000,
        collar_ticks=100,
        max_order_qty=1_000,
        max_notional=500_000,
    )
    gate.add_symbol(
        2,
        tick=5,
        lot=10,
        reference_price=25_000,
        collar_ticks=0,
        max_order_qty=None,
        max_notional=None,
    )
    limits = {
        "max_open_orders": 5,
        "max_position": 100,
        "msg_rate_per_s": 1_000,
        "msg_burst": 1_000,
    }
    limits.update(acct1)
    gate.add_account(1, **limits)
    gate.add_account(2, **ROOMY, msg_rate_per_s=1_000, msg_burst=1_000)
    gate.add_account(100, **ROOMY, msg_rate_per_s=1_000, msg_burst=1_000)
    gate.open_session(0, 1)
    gate.open_session(1, 2)
    gate.open_session(2, 100, admin=True)
    gate.open_session(3, 1)
    return gate


def make_engine() -> lltrade.Engine:
    engine = lltrade.Engine()
    engine.add_book(1, 1, 2_000)
    engine.add_book(2, 5, 100_000, tick=5, lot=10)
    return engine


Routed = tuple[int, int, int, int, int, int, int]  # kind, order_id, side, qty, remaining, slot, cl


class Harness:
    """A gate, an engine and the daemon's per-batch buffers.

    ``send`` advances the clock by ``dt`` (1 s unless told) and admits one
    message; ``run`` processes the batch and returns each event with its route.
    """

    def __init__(self, gate: OrderGate | None = None, engine: lltrade.Engine | None = None):
        self.gate = gate if gate is not None else make_gate()
        self.engine = engine if engine is not None else make_engine()
        self.cmds = np.zeros(256, dtype=lltrade.COMMAND_DTYPE)
        self.k = 0
        self.now = 0
        self.events = np.zeros(8192, dtype=lltrade.EVENT_DTYPE)
        self.routes = np.zeros((8192, 2), dtype=np.int64)

    def send(self, slot: int, msg: OrderMessage, dt: int = SECOND) -> int:
        self.now += dt
        reason = self.gate.admit(slot, msg, self.now, self.cmds, self.k)
        assert reason == 0 or self.gate.rows_written == 0
        self.k += self.gate.rows_written
        return reason

    def ok(self, slot: int, msg: OrderMessage) -> None:
        assert self.send(slot, msg) == 0

    def run(self) -> list[Routed]:
        n = self.engine.process(self.cmds[: self.k], self.events)
        assert self.engine.commands_processed == self.k
        self.routes[:] = -7  # every row used must be written
        self.gate.apply(self.events, n, self.routes)
        self.k = 0
        e, r = self.events, self.routes
        return [
            (
                int(e["kind"][j]),
                int(e["order_id"][j]),
                int(e["side"][j]),
                int(e["qty"][j]),
                int(e["remaining"][j]),
                int(r[j, 0]),
                int(r[j, 1]),
            )
            for j in range(n)
        ]

    def oid(self, slot: int, cl: int) -> int:
        oid = self.gate.engine_order_id(slot, cl)
        assert oid is not None
        return oid

    def command(self, j: int) -> dict[str, int]:
        return {name: int(self.cmds[name][j]) for name in lltrade.COMMAND_DTYPE.names or ()}


def routes_of(events: list[Routed]) -> list[tuple[int, int, int]]:
    """``(kind, slot, cl_ord_id)`` of each non-LEVEL event."""
    return [(k, slot, cl) for k, _oid, _side, _q, _rem, slot, cl in events if k != EventKind.LEVEL]


# -- constants ------------------------------------------------------------------------


def test_pxd_reasons_mirror_the_enums() -> None:
    found = {
        m[1]: int(m[2]) for m in re.finditer(r"^\s+(S?R_[A-Z_]+) = (\d+)$", PXD.read_text(), re.M)
    }
    assert len(found) == 10
    for name, value in found.items():
        enum = SessionReason if name.startswith("SR_") else Reason
        assert enum[name.split("_", 1)[1]] == value, name
    for member in Reason:
        if 40 <= member < 60 and member != Reason.UNAVAILABLE:  # the daemon's, not the gate's
            assert found[f"R_{member.name}"] == member


# -- the commands it writes -------------------------------------------------------------


def test_new_order_becomes_an_add_command() -> None:
    h = Harness()
    assert h.gate.next_order_id == 1
    h.ok(1, new(5, SELL, 1_010, 7, tif=TIF.IOC, stp=STP.CANCEL_BOTH))
    assert h.gate.rows_written == 1
    assert h.command(0) == {
        "order_id": 1,
        "price": 1_010,
        "qty": 7,
        "account": 2,
        "protection": -1,
        "symbol": 1,
        "op": Op.ADD,
        "side": SELL,
        "tif": TIF.IOC,
        "post_only": 0,
        "stp": STP.CANCEL_BOTH,
        "reason": 0,
    }
    assert h.gate.next_order_id == 2
    assert h.gate.engine_order_id(1, 5) == 1
    assert h.gate.engine_order_id(0, 5) is None
    h.ok(0, new(5, BUY, 995, 3, symbol=1, post_only=True))
    assert h.command(1)["order_id"] == 2
    assert h.command(1)["account"] == 1
    assert h.command(1)["post_only"] == 1


def test_changes_become_commands_on_the_engine_id() -> None:
    h = Harness()
    h.ok(1, new(9, BUY, 25_000, 20, symbol=2))
    h.run()
    h.ok(1, replace(9, 25_005, 30))
    h.ok(1, reduce(9, 10))
    h.ok(1, cancel(9))
    base = {"order_id": 1, "account": 2, "symbol": 2, "protection": -1, "side": 0, "tif": 0}
    assert h.command(0) == {
        **base,
        "op": Op.REPLACE,
        "price": 25_005,
        "qty": 30,
        "post_only": 0,
        "stp": 0,
        "reason": 0,
    }
    assert h.command(1) == {
        **base,
        "op": Op.REDUCE,
        "price": 0,
        "qty": 10,
        "post_only": 0,
        "stp": 0,
        "reason": 0,
    }
    assert h.command(2) == {
        **base,
        "op": Op.CANCEL,
        "price": 0,
        "qty": 0,
        "post_only": 0,
        "stp": 0,
        "reason": 0,
    }
    assert routes_of(h.run()) == [
        (EventKind.REPLACED, 1, 9),
        (EventKind.REDUCED, 1, 9),
        (EventKind.CANCELLED, 1, 9),
    ]
    assert h.gate._map_sizes() == (0, 0, 0)


def test_mass_cancel_rows_one_symbol_and_all() -> None:
    h = Harness()
    assert h.gate.max_rows == 2
    h.ok(0, mass(symbol=2))
    assert h.gate.rows_written == 1
    assert (h.command(0)["op"], h.command(0)["symbol"], h.command(0)["account"]) == (
        Op.MASS_CANCEL,
        2,
        1,
    )
    assert h.command(0)["order_id"] == 0
    h.ok(0, mass())
    assert h.gate.rows_written == 2
    assert [(h.command(j)["symbol"], h.command(j)["account"]) for j in (1, 2)] == [(1, 1), (2, 1)]
    h.ok(0, mass(account=1))  # its own account, named
    h.ok(2, mass(symbol=1, account=2))  # admin: any account
    assert (h.command(5)["symbol"], h.command(5)["account"]) == (1, 2)
    assert h.k == 6


def test_mass_cancel_cancels_and_routes_to_owners() -> None:
    h = Harness()
    h.ok(0, new(1, BUY, 990))
    h.ok(3, new(1, BUY, 991))  # account 1's second session, same cl_ord_id
    h.ok(0, new(2, SELL, 25_100, 10, symbol=2))
    h.ok(1, new(1, BUY, 992))
    h.run()
    h.ok(2, mass(account=1))  # admin cancels account 1 everywhere
    events = h.run()
    assert sorted(routes_of(events)) == [
        (EventKind.CANCELLED, 0, 1),
        (EventKind.CANCELLED, 0, 2),
        (EventKind.CANCELLED, 3, 1),
    ]
    assert h.gate.open_orders(1) == 0
    assert h.gate.open_orders(2) == 1
    assert h.gate.live_orders(1) == [(1, 4, 1)]


def test_mass_cancel_needs_room_for_every_symbol() -> None:
    h = Harness()
    cmds = np.zeros(3, dtype=lltrade.COMMAND_DTYPE)
    with pytest.raises(ValueError, match="no room for 2 at i=2"):
        h.gate.admit(0, mass(), 0, cmds, 2)
    assert h.gate.admit(0, mass(), 0, cmds, 1) == 0
    assert [int(x) for x in cmds["symbol"]] == [0, 1, 2]


def test_mass_cancel_with_no_symbols_writes_nothing() -> None:
    gate = OrderGate(1)
    gate.add_account(1, max_open_orders=1, max_position=1, msg_rate_per_s=1, msg_burst=1)
    gate.open_session(0, 1)
    cmds = np.zeros(1, dtype=lltrade.COMMAND_DTYPE)
    assert gate.max_rows == 1
    assert gate.admit(0, mass(), 0, cmds, 1) == 0
    assert gate.rows_written == 0


# -- every reason ----------------------------------------------------------------------


def test_not_logged_on() -> None:
    h = Harness()
    assert h.send(5, new(1)) == SessionReason.NOT_LOGGED_ON
    assert h.send(5, mass()) == SessionReason.NOT_LOGGED_ON
    h.gate.close_session(0)
    assert h.send(0, cancel(1)) == SessionReason.NOT_LOGGED_ON
    assert not h.gate.is_open(0)
    assert h.gate.is_open(1)


def test_kill_switch_blocks_new_orders_and_replaces_only() -> None:
    h = Harness()
    h.ok(0, new(1, BUY, 990, 2))
    h.run()
    h.gate.set_kill_switch(True)
    assert h.gate.kill_switch
    assert h.send(1, new(1)) == Reason.KILL_SWITCH_ACTIVE
    assert h.send(0, replace(1, 991, 2)) == Reason.KILL_SWITCH_ACTIVE
    assert h.send(0, reduce(1, 1)) == 0
    assert h.send(0, mass()) == 0
    assert h.send(0, cancel(1)) == 0
    h.gate.set_kill_switch(False)
    assert h.send(1, new(1)) == 0
    # An account's own switch.
    h.gate.set_kill_switch(True, account_id=2)
    assert h.send(1, new(2)) == Reason.KILL_SWITCH_ACTIVE
    assert h.send(0, new(2)) == 0
    h.gate.set_kill_switch(True)
    h.gate.set_kill_switch(False, account_id=2)
    assert h.send(1, new(2)) == Reason.KILL_SWITCH_ACTIVE  # the global one is still on
    h.gate.set_kill_switch(False)
    assert h.send(1, new(2)) == 0


def test_halt_blocks_new_orders_and_replaces_only() -> None:
    h = Harness()
    h.ok(0, new(1, BUY, 990, 2))
    h.run()
    h.gate.halt(1, True)
    assert h.gate.is_halted(1)
    assert not h.gate.is_halted(2)
    assert h.send(1, new(1)) == Reason.SYMBOL_HALTED
    assert h.send(1, new(1, symbol=2, price=25_000, qty=10)) == 0  # other symbols trade
    assert h.send(0, replace(1, 991, 2)) == Reason.SYMBOL_HALTED
    assert h.send(0, reduce(1, 1)) == 0
    assert h.send(0, mass(symbol=1)) == 0
    assert h.send(0, cancel(1)) == 0
    h.gate.halt(1, False)
    assert h.send(1, new(2)) == 0


def test_unknown_symbol() -> None:
    h = Harness()
    assert h.send(0, new(1, symbol=3)) == Reason.UNKNOWN_SYMBOL
    assert h.send(0, mass(symbol=3)) == Reason.UNKNOWN_SYMBOL
    assert h.send(2, mass(symbol=3, account=1)) == Reason.UNKNOWN_SYMBOL


def test_duplicate_order_id_is_per_session_and_until_finished() -> None:
    h = Harness()
    h.ok(0, new(1, BUY, 990))
    assert h.send(0, new(1, BUY, 990)) == Reason.DUPLICATE_ORDER_ID  # pending counts
    h.ok(3, new(1, BUY, 990))  # another session of the same account
    h.ok(1, new(1, BUY, 990))
    h.run()
    assert h.send(0, new(1, SELL, 1_050)) == Reason.DUPLICATE_ORDER_ID  # resting
    h.ok(0, cancel(1))
    # Still open until the gate has seen the CANCELLED.
    assert h.send(0, new(1, BUY, 990)) == Reason.DUPLICATE_ORDER_ID
    h.run()
    assert h.send(0, new(1, BUY, 990)) == 0


@pytest.mark.parametrize(
    ("price", "ok"),
    [(900, True), (1_100, True), (899, False), (1_101, False), (-(2**63), False), (MAX_ID, False)],
)
def test_price_collar(price: int, ok: bool) -> None:
    h = Harness()
    expected = 0 if ok else Reason.PRICE_COLLAR
    assert h.send(1, new(1, BUY, price)) == expected
    h.ok(1, new(2, BUY, 1_000))
    assert h.send(1, replace(2, price, 1)) == expected


def test_no_collar_and_a_collar_wider_than_int64() -> None:
    gate = OrderGate(1)
    gate.add_symbol(
        7,
        tick=2**62,
        lot=1,
        reference_price=0,
        collar_ticks=2**62,
        max_order_qty=None,
        max_notional=None,
    )
    gate.add_symbol(
        8, tick=1, lot=1, reference_price=0, collar_ticks=0, max_order_qty=None, max_notional=None
    )
    gate.add_account(1, **ROOMY, msg_rate_per_s=10, msg_burst=10)
    gate.open_session(0, 1)
    cmds = np.zeros(4, dtype=lltrade.COMMAND_DTYPE)
    assert gate.admit(0, new(1, BUY, -(2**63), 1, symbol=7), 0, cmds, 0) == 0
    assert gate.admit(0, new(2, BUY, MAX_ID, 1, symbol=8), 0, cmds, 1) == 0


def test_zero_or_none_means_no_limit() -> None:
    gate = OrderGate(1)
    gate.add_symbol(
        1, tick=1, lot=1, reference_price=0, collar_ticks=0, max_order_qty=0, max_notional=0
    )
    gate.add_account(1, **ROOMY, msg_rate_per_s=1, msg_burst=1, max_order_qty=None, max_notional=0)
    gate.open_session(0, 1)
    cmds = np.zeros(1, dtype=lltrade.COMMAND_DTYPE)
    assert gate.admit(0, new(1, BUY, MAX_ID, 10**12), 0, cmds, 0) == 0


def test_max_order_qty_symbol_and_account() -> None:
    h = Harness()
    assert h.send(1, new(1, BUY, 1_000, 1_000)) == Reason.MAX_NOTIONAL  # the qty passed
    assert h.send(1, new(1, BUY, 1_000, 1_001)) == Reason.MAX_ORDER_QTY
    # No limit on symbol 2: the position check is the next to refuse it.
    assert h.send(1, new(2, BUY, 25_000, MAX_ID, symbol=2)) == Reason.MAX_POSITION
    h.ok(1, new(3, BUY, 1_000, 1))
    assert h.send(1, replace(3, 1_000, 1_001)) == Reason.MAX_ORDER_QTY
    gate = make_gate()
    gate.add_account(3, **ROOMY, msg_rate_per_s=9, msg_burst=9, max_order_qty=20)
    gate.open_session(7, 3)
    h = Harness(gate)
    assert h.send(7, new(1, BUY, 25_000, 20, symbol=2)) == 0
    assert h.send(7, new(2, BUY, 25_000, 30, symbol=2)) == Reason.MAX_ORDER_QTY
    assert h.send(7, new(2, BUY, 1_000, 21, symbol=1)) == Reason.MAX_ORDER_QTY


def test_max_notional_symbol_and_account() -> None:
    h = Harness()
    assert h.send(1, new(1, BUY, 1_000, 500)) == 0  # exactly 500_000
    assert h.send(1, new(2, BUY, 1_000, 501)) == Reason.MAX_NOTIONAL
    assert h.send(1, new(2, BUY, 998, 501)) == 0  # 499_998
    h.ok(1, new(3, BUY, 1_000, 1))
    assert h.send(1, replace(3, 1_001, 500)) == Reason.MAX_NOTIONAL
    assert h.send(1, replace(3, 1_000, 500)) == 0
    gate = make_gate()
    gate.add_account(3, **ROOMY, msg_rate_per_s=9, msg_burst=9, max_notional=2**63 - 1)
    gate.open_session(7, 3)
    h = Harness(gate)
    assert h.send(7, new(1, BUY, 2**40, 2**22, symbol=2)) == 0  # 2**62
    # 2**62 * 2**62 would wrap a 64-bit product to 0.
    assert h.send(7, new(2, BUY, 2**62, 2**62, symbol=2)) == Reason.MAX_NOTIONAL
    assert h.send(7, new(2, SELL, -(2**62), 2**62, symbol=2)) == Reason.MAX_NOTIONAL
    assert h.send(7, new(2, SELL, -(2**63), 1, symbol=2)) == Reason.MAX_NOTIONAL
    assert h.send(7, new(2, SELL, -(2**63) + 1, 1, symbol=2)) == 0


def test_quantity_at_or_below_zero_is_left_to_the_engine() -> None:
    h = Harness()
    for cl, qty in ((1, 0), (2, -5), (3, -(2**63))):
        h.ok(0, new(cl, SELL, 1_000, qty))
    assert routes_of(h.run()) == [(EventKind.REJECTED, 0, cl) for cl in (1, 2, 3)]
    assert h.gate.open_orders(1) == 0


def test_max_open_orders_counts_pending_orders() -> None:
    h = Harness()
    for cl in range(1, 6):
        h.ok(0, new(cl, BUY, 990 + cl))
    assert h.gate.open_orders(1) == 5
    assert h.send(3, new(9, BUY, 990)) == Reason.MAX_OPEN_ORDERS  # all sessions of account 1
    assert h.send(1, new(9, BUY, 990)) == 0
    h.run()
    assert h.send(0, new(6, BUY, 990)) == Reason.MAX_OPEN_ORDERS
    h.ok(0, cancel(3))
    assert h.send(0, new(6, BUY, 990)) == Reason.MAX_OPEN_ORDERS  # not yet applied
    h.run()
    assert h.gate.open_orders(1) == 4
    assert h.send(0, new(6, BUY, 990)) == 0


def test_max_position() -> None:
    h = Harness()
    h.ok(1, new(1, SELL, 1_000, 300))
    h.ok(0, new(1, BUY, 1_000, 100, tif=TIF.IOC))
    h.run()
    assert h.gate.position(1, 1) == 100
    assert h.gate.position(2, 1) == -100
    assert h.gate.position(1, 2) == 0
    assert h.send(0, new(2, BUY, 1_000, 1)) == Reason.MAX_POSITION
    assert h.send(0, new(2, SELL, 1_000, 201)) == Reason.MAX_POSITION  # |100 - 201| > 100
    assert h.send(0, new(2, SELL, 1_000, 200)) == 0  # lands on -100
    assert h.send(0, new(3, BUY, 25_000, 10**6, symbol=2)) == Reason.MAX_POSITION
    assert h.send(0, new(3, BUY, 25_000, 100, symbol=2)) == 0  # per symbol


def test_unknown_order() -> None:
    h = Harness()
    h.ok(0, new(1, BUY, 990))
    for msg in (cancel(2), replace(2, 990, 1), reduce(2, 1)):
        assert h.send(0, msg) == Reason.UNKNOWN_ORDER
        assert h.send(3, msg) == Reason.UNKNOWN_ORDER
    # cl_ord_id 1 belongs to slot 0 only, even within the same account.
    for msg in (cancel(1), replace(1, 990, 1), reduce(1, 1)):
        assert h.send(3, msg) == Reason.UNKNOWN_ORDER
        assert h.send(1, msg) == Reason.UNKNOWN_ORDER
    assert h.send(0, cancel(1)) == 0  # pending orders can be cancelled


def test_not_authorised() -> None:
    h = Harness()
    assert h.send(0, mass(account=2)) == Reason.NOT_AUTHORISED
    assert h.send(0, mass(symbol=1, account=100)) == Reason.NOT_AUTHORISED
    assert h.send(2, mass(account=1)) == 0
    h.gate.set_admin(0, True)
    assert h.send(0, mass(account=2)) == 0
    h.gate.set_admin(2, False)
    assert h.send(2, mass(account=1)) == Reason.NOT_AUTHORISED
    assert h.send(2, mass(account=999)) == Reason.NOT_AUTHORISED
    assert h.send(0, mass(account=999)) == 0  # admin: an account with nothing to cancel


# -- the order of the checks -------------------------------------------------------------


def test_new_order_check_order() -> None:
    h = Harness(make_gate(msg_rate_per_s=1, msg_burst=3))
    h.ok(1, new(1, SELL, 1_000, 100))
    h.ok(0, new(99, BUY, 1_000, 100, tif=TIF.IOC))
    h.run()
    for cl in range(1, 6):
        h.ok(0, new(cl, SELL, 1_050))
    h.run()
    assert (h.gate.position(1, 1), h.gate.open_orders(1)) == (100, 5)
    h.gate.set_kill_switch(True)
    h.gate.halt(1, True)
    while (r := h.send(0, cancel(42), dt=0)) != SessionReason.RATE_LIMITED:  # empty the bucket
        assert r == Reason.UNKNOWN_ORDER
    msg = new(5, BUY, 2_000, 2_000)
    expected = [
        (SessionReason.RATE_LIMITED, lambda: None),
        (Reason.KILL_SWITCH_ACTIVE, lambda: h.gate.set_kill_switch(False)),
        (Reason.SYMBOL_HALTED, lambda: h.gate.halt(1, False)),
        (Reason.DUPLICATE_ORDER_ID, None),
        (Reason.PRICE_COLLAR, None),
        (Reason.MAX_ORDER_QTY, None),
        (Reason.MAX_NOTIONAL, None),
        (Reason.MAX_OPEN_ORDERS, None),
        (Reason.MAX_POSITION, None),
    ]
    fixes = {
        Reason.DUPLICATE_ORDER_ID: {"cl_ord_id": 6},
        Reason.PRICE_COLLAR: {"price": 1_000},
        Reason.MAX_ORDER_QTY: {"qty": 600},
        Reason.MAX_NOTIONAL: {"qty": 400},
    }
    for reason, fix in expected:
        dt = 0 if reason == SessionReason.RATE_LIMITED else SECOND
        assert h.send(0, msg, dt=dt) == reason
        if fix is not None:
            fix()
        elif reason in fixes:
            msg = msgspec.structs.replace(msg, **fixes[reason])
        elif reason == Reason.MAX_OPEN_ORDERS:
            h.ok(0, cancel(1))
            h.run()
    msg = msgspec.structs.replace(msg, side=SELL, qty=150)
    assert h.send(0, msg) == 0


def test_unknown_symbol_comes_before_duplicate() -> None:
    h = Harness()
    h.ok(0, new(1))
    assert h.send(0, new(1, symbol=9)) == Reason.UNKNOWN_SYMBOL


def test_replace_check_order() -> None:
    h = Harness(make_gate(msg_rate_per_s=1, msg_burst=2))
    h.ok(0, new(1, BUY, 1_000, 1))
    h.run()
    h.gate.set_kill_switch(True)
    h.gate.halt(1, True)
    assert h.send(0, cancel(42), dt=0) == Reason.UNKNOWN_ORDER  # the last token
    assert h.send(0, replace(2, 2_000, 2_000), dt=0) == SessionReason.RATE_LIMITED
    assert h.send(0, replace(2, 2_000, 2_000)) == Reason.KILL_SWITCH_ACTIVE
    h.gate.set_kill_switch(False)
    assert h.send(0, replace(2, 2_000, 2_000)) == Reason.UNKNOWN_ORDER
    assert h.send(0, replace(1, 2_000, 2_000)) == Reason.SYMBOL_HALTED
    h.gate.halt(1, False)
    assert h.send(0, replace(1, 2_000, 2_000)) == Reason.PRICE_COLLAR
    assert h.send(0, replace(1, 1_000, 2_000)) == Reason.MAX_ORDER_QTY
    assert h.send(0, replace(1, 1_000, 600)) == Reason.MAX_NOTIONAL
    assert h.send(0, replace(1, 1_000, 400)) == 0  # no open-order or position check


def test_mass_cancel_check_order() -> None:
    h = Harness(make_gate(msg_rate_per_s=1, msg_burst=1))
    assert h.send(0, cancel(42), dt=0) == Reason.UNKNOWN_ORDER
    assert h.send(0, mass(symbol=9, account=2), dt=0) == SessionReason.RATE_LIMITED
    assert h.send(0, mass(symbol=9, account=2)) == Reason.UNKNOWN_SYMBOL
    assert h.send(0, mass(symbol=1, account=2)) == Reason.NOT_AUTHORISED


# -- the rate limit -----------------------------------------------------------------------


def _bucket(rate: int, burst: int) -> tuple[OrderGate, np.ndarray]:
    gate = OrderGate(2)
    gate.add_symbol(
        1, tick=1, lot=1, reference_price=0, collar_ticks=0, max_order_qty=None, max_notional=None
    )
    gate.add_account(1, **ROOMY, msg_rate_per_s=rate, msg_burst=burst)
    gate.open_session(0, 1)
    gate.open_session(1, 1)
    return gate, np.zeros(1, dtype=lltrade.COMMAND_DTYPE)


def test_rate_limit_refill_maths() -> None:
    gate, cmds = _bucket(rate=2, burst=3)

    def at(now: int, slot: int = 0) -> int:
        return gate.admit(slot, cancel(1), now, cmds, 0)

    t0 = 10**12
    assert [at(t0) for _ in range(4)] == [Reason.UNKNOWN_ORDER] * 3 + [SessionReason.RATE_LIMITED]
    assert at(t0 + SECOND // 2 - 1) == SessionReason.RATE_LIMITED  # 0.999999998 messages
    assert at(t0 + SECOND // 2) == Reason.UNKNOWN_ORDER  # exactly one
    assert at(t0 + SECOND // 2) == SessionReason.RATE_LIMITED
    # Refills are exact: 2 per second, no drift over many small steps.
    now = t0 + SECOND // 2
    results = []
    for _ in range(1_000):
        now += SECOND // 2_000  # 0.001 message each
        results.append(at(now))
    assert results == [SessionReason.RATE_LIMITED] * 999 + [Reason.UNKNOWN_ORDER]
    # A long pause refills to the burst, not beyond.
    now += 3600 * SECOND
    assert [at(now) for _ in range(4)] == [Reason.UNKNOWN_ORDER] * 3 + [SessionReason.RATE_LIMITED]
    # A clock that steps back refills nothing and keeps the last time.
    assert at(now - SECOND) == SessionReason.RATE_LIMITED
    assert at(now + SECOND // 2) == Reason.UNKNOWN_ORDER
    # Each session has its own bucket, full when it starts.
    assert [at(now, 1) for _ in range(4)] == [Reason.UNKNOWN_ORDER] * 3 + [
        SessionReason.RATE_LIMITED
    ]


def test_rate_limit_fractional_rate() -> None:
    gate, cmds = _bucket(rate=3, burst=2)
    assert gate.admit(0, cancel(1), 0, cmds, 0) == Reason.UNKNOWN_ORDER
    assert gate.admit(0, cancel(1), 0, cmds, 0) == Reason.UNKNOWN_ORDER
    assert gate.admit(0, cancel(1), 333_333_333, cmds, 0) == SessionReason.RATE_LIMITED
    assert gate.admit(0, cancel(1), 333_333_334, cmds, 0) == Reason.UNKNOWN_ORDER
    # The remainder (2e-9 messages) carries over: 666_666_667 ns make 2.000000001.
    assert gate.admit(0, cancel(1), 666_666_666, cmds, 0) == SessionReason.RATE_LIMITED
    assert gate.admit(0, cancel(1), 666_666_667, cmds, 0) == Reason.UNKNOWN_ORDER


def test_rate_limit_counts_admitted_and_rejected_messages() -> None:
    gate, cmds = _bucket(rate=1, burst=4)
    assert gate.admit(0, new(1, BUY, 5), 0, cmds, 0) == 0
    assert gate.admit(0, new(1, BUY, 5), 0, cmds, 0) == Reason.DUPLICATE_ORDER_ID
    assert gate.admit(0, mass(symbol=9), 0, cmds, 0) == Reason.UNKNOWN_SYMBOL
    assert gate.admit(0, cancel(1), 0, cmds, 0) == 0
    assert gate.admit(0, cancel(1), 0, cmds, 0) == SessionReason.RATE_LIMITED
    # Rejected for the rate, the message took no token: one second buys one more.
    assert gate.admit(0, cancel(1), SECOND, cmds, 0) == 0
    assert gate.admit(0, cancel(1), SECOND, cmds, 0) == SessionReason.RATE_LIMITED


def test_rate_limit_extremes_do_not_overflow() -> None:
    gate, cmds = _bucket(rate=2**63 - 1, burst=2**63 - 1)
    for now in (-(2**63), 2**63 - 1, -(2**63), 0):
        assert gate.admit(0, cancel(1), now, cmds, 0) == Reason.UNKNOWN_ORDER
    gate, cmds = _bucket(rate=1, burst=1)
    assert gate.admit(0, cancel(1), -(2**63), cmds, 0) == Reason.UNKNOWN_ORDER
    assert gate.admit(0, cancel(1), 2**63 - 1, cmds, 0) == Reason.UNKNOWN_ORDER
    assert gate.admit(0, cancel(1), 2**63 - 1, cmds, 0) == SessionReason.RATE_LIMITED


# -- ids and routes through a real engine ----------------------------------------------------


def test_id_mapping_round_trip() -> None:
    h = Harness()
    h.ok(0, new(MAX_ID, SELL, 1_000, 5))
    h.ok(1, new(1, SELL, 1_001, 5))
    h.ok(3, new(77, BUY, 1_001, 8))
    a, b, c = h.oid(0, MAX_ID), h.oid(1, 1), h.oid(3, 77)
    assert (a, b, c) == (1, 2, 3)
    events = h.run()
    assert [e for e in events if e[0] != EventKind.LEVEL] == [
        (EventKind.ACCEPTED, a, SELL, 5, 5, 0, MAX_ID),
        (EventKind.ACCEPTED, b, SELL, 5, 5, 1, 1),
        (EventKind.ACCEPTED, c, BUY, 8, 8, 3, 77),
        (EventKind.FILL, c, BUY, 5, 3, 3, 77),
        (EventKind.FILL, a, SELL, 5, 0, 0, MAX_ID),
        (EventKind.FILL, c, BUY, 3, 0, 3, 77),
        (EventKind.FILL, b, SELL, 3, 2, 1, 1),
    ]
    assert all(e[5:] == (-1, 0) for e in events if e[0] == EventKind.LEVEL)
    assert h.gate.engine_order_id(0, MAX_ID) is None  # filled
    assert h.gate.engine_order_id(3, 77) is None
    assert h.gate.live_orders(1) == [(1, b, 1)]
    assert h.gate.position(1, 1) == -5 + 8  # slot 0 sold 5, slot 3 bought 8
    assert h.gate.position(2, 1) == -3
    assert h.gate.open_orders(1) == 0
    assert h.gate.open_orders(2) == 1


def test_largest_engine_ids() -> None:
    h = Harness(make_gate(first_order_id=MAX_ID - 1))
    h.ok(0, new(1, SELL, 1_000, 2))
    h.ok(1, new(MAX_ID, BUY, 1_000, 1))
    assert h.gate.next_order_id == MAX_ID + 1
    with pytest.raises(OverflowError, match="exhausted"):
        h.send(1, new(5))
    assert h.command(1)["order_id"] == MAX_ID
    events = routes_of(h.run())
    assert events == [
        (EventKind.ACCEPTED, 0, 1),
        (EventKind.ACCEPTED, 1, MAX_ID),
        (EventKind.FILL, 1, MAX_ID),
        (EventKind.FILL, 0, 1),
    ]
    assert h.gate.live_orders(0) == [(1, MAX_ID - 1, 1)]
    h.ok(0, cancel(1))  # changes still work
    assert routes_of(h.run()) == [(EventKind.CANCELLED, 0, 1)]
    with pytest.raises(ValueError, match="first_order_id"):
        OrderGate(1, first_order_id=0)


def test_events_of_one_batch_split_over_process_calls_all_route() -> None:
    h = Harness()
    h.ok(1, new(1, SELL, 1_000, 1))
    h.ok(1, new(2, SELL, 1_000, 1))
    h.ok(0, new(1, BUY, 1_000, 2))  # fills both
    h.ok(1, cancel(1))  # rejected: already filled
    h.ok(1, replace(2, 1_001, 1))  # rejected too
    # The daemon may have to split a batch anywhere: here, one command per call.
    events = np.zeros(64, dtype=lltrade.EVENT_DTYPE)
    routes = np.zeros((64, 2), dtype=np.int64)
    seen: list[tuple[int, int, int]] = []
    for j in range(h.k):
        n = h.engine.process(h.cmds[j : j + 1], events)
        h.gate.apply(events, n, routes)
        seen += [
            (int(events["kind"][x]), int(routes[x, 0]), int(routes[x, 1]))
            for x in range(n)
            if events["kind"][x] != EventKind.LEVEL
        ]
    assert seen == [
        (EventKind.ACCEPTED, 1, 1),
        (EventKind.ACCEPTED, 1, 2),
        (EventKind.ACCEPTED, 0, 1),
        (EventKind.FILL, 0, 1),
        (EventKind.FILL, 1, 1),
        (EventKind.FILL, 0, 1),
        (EventKind.FILL, 1, 2),
        (EventKind.REJECTED, 1, 1),
        (EventKind.REJECTED, 1, 2),
    ]
    assert h.gate._map_sizes() == (0, 0, 0)


# -- open orders and positions ---------------------------------------------------------------


def test_accounting_through_fills_cancels_ioc_fok_and_rejects() -> None:
    h = Harness()
    h.ok(1, new(1, SELL, 1_000, 10))
    h.ok(1, new(2, SELL, 1_002, 10))
    h.ok(0, new(1, BUY, 1_001, 4, tif=TIF.IOC))  # fills 4
    h.ok(0, new(2, BUY, 1_000, 20, tif=TIF.FOK))  # unfillable at 1_000
    h.ok(0, new(3, BUY, 1_002, 16, tif=TIF.FOK))  # fills 6 + 10
    h.ok(0, new(4, BUY, 1_001, 5, post_only=True))  # would cross: no asks left... rests
    h.ok(1, new(3, SELL, 25_001, 10, symbol=2))  # off tick: engine rejects
    h.ok(1, new(4, SELL, 1_001, 1, post_only=True))  # would cross: rejected
    h.ok(1, new(5, SELL, 1_010, 1, tif=TIF.IOC))  # nothing to meet
    assert (h.gate.open_orders(1), h.gate.open_orders(2)) == (4, 5)
    events = h.run()
    assert routes_of(events) == [
        (EventKind.ACCEPTED, 1, 1),
        (EventKind.ACCEPTED, 1, 2),
        (EventKind.ACCEPTED, 0, 1),
        (EventKind.FILL, 0, 1),
        (EventKind.FILL, 1, 1),
        (EventKind.ACCEPTED, 0, 2),
        (EventKind.CANCELLED, 0, 2),
        (EventKind.ACCEPTED, 0, 3),
        (EventKind.FILL, 0, 3),
        (EventKind.FILL, 1, 1),
        (EventKind.FILL, 0, 3),
        (EventKind.FILL, 1, 2),
        (EventKind.ACCEPTED, 0, 4),
        (EventKind.REJECTED, 1, 3),
        (EventKind.REJECTED, 1, 4),
        (EventKind.ACCEPTED, 1, 5),
        (EventKind.CANCELLED, 1, 5),
    ]
    assert h.gate.position(1, 1) == 20
    assert h.gate.position(2, 1) == -20
    assert (h.gate.open_orders(1), h.gate.open_orders(2)) == (1, 0)
    assert h.gate.live_orders(0) == [(4, h.oid(0, 4), 1)]
    assert h.gate.live_orders(1) == []
    # A rejected change leaves the order open; reduce and replace keep it.
    h.ok(0, reduce(4, 9))  # not below the open qty: rejected by the engine
    h.ok(0, reduce(4, 2))
    h.ok(0, replace(4, 1_000, 3))
    assert routes_of(h.run()) == [
        (EventKind.REJECTED, 0, 4),
        (EventKind.REDUCED, 0, 4),
        (EventKind.REPLACED, 0, 4),
    ]
    assert h.gate.open_orders(1) == 1
    # A replace that trades through to nothing finishes the order.
    h.ok(1, new(6, BUY, 1_003, 3))
    h.ok(0, replace(4, 1_003, 3))  # joins the level behind cl_ord_id 6
    h.run()
    h.ok(1, new(7, SELL, 1_000, 1))
    h.ok(1, cancel(6))
    events = h.run()
    assert routes_of(events) == [
        (EventKind.ACCEPTED, 1, 7),
        (EventKind.FILL, 1, 7),
        (EventKind.FILL, 1, 6),
        (EventKind.CANCELLED, 1, 6),
    ]
    assert h.gate.position(2, 1) == -20 + 1 - 1
    assert h.gate.open_orders(2) == 0
    h.ok(0, cancel(4))
    h.run()
    assert h.gate._map_sizes() == (0, 0, 0)
    assert (h.gate.open_orders(1), h.gate.open_orders(2)) == (0, 0)


def test_replace_that_fills_and_self_trade_cancels() -> None:
    h = Harness()
    h.ok(1, new(1, SELL, 1_005, 3))
    h.ok(0, new(1, BUY, 1_000, 3))
    h.ok(1, new(2, SELL, 1_006, 2, stp=STP.CANCEL_RESTING))
    h.run()
    h.ok(0, replace(1, 1_005, 3))  # fills completely against account 2
    events = routes_of(h.run())
    assert events == [
        (EventKind.REPLACED, 0, 1),
        (EventKind.FILL, 0, 1),
        (EventKind.FILL, 1, 1),
    ]
    assert (h.gate.open_orders(1), h.gate.position(1, 1)) == (0, 3)
    h.ok(1, new(3, BUY, 1_006, 5, stp=STP.CANCEL_BOTH))  # meets its own resting sell
    assert routes_of(h.run()) == [
        (EventKind.ACCEPTED, 1, 3),
        (EventKind.CANCELLED, 1, 2),
        (EventKind.CANCELLED, 1, 3),
    ]
    assert h.gate.open_orders(2) == 0
    assert h.gate._map_sizes() == (0, 0, 0)


def test_engine_without_the_symbol_rejects_and_the_order_finishes() -> None:
    gate = make_gate()
    gate.add_symbol(
        5, tick=1, lot=1, reference_price=10, collar_ticks=0, max_order_qty=None, max_notional=None
    )
    h = Harness(gate)
    h.ok(0, new(1, BUY, 10, 1, symbol=5))
    assert routes_of(h.run()) == [(EventKind.REJECTED, 0, 1)]
    assert h.gate.open_orders(1) == 0
    assert h.gate._map_sizes() == (0, 0, 0)


def test_position_saturates() -> None:
    gate = OrderGate(2)
    gate.add_symbol(
        1, tick=1, lot=1, reference_price=0, collar_ticks=0, max_order_qty=None, max_notional=None
    )
    gate.add_account(1, max_open_orders=10, max_position=MAX_ID, msg_rate_per_s=9, msg_burst=9)
    gate.open_session(0, 1)
    cmds = np.zeros(4, dtype=lltrade.COMMAND_DTYPE)
    for cl in (1, 2):
        assert gate.admit(0, new(cl, BUY, 1, 2**62), 0, cmds, cl - 1) == 0
    events = np.zeros(4, dtype=lltrade.EVENT_DTYPE)
    events["kind"] = EventKind.FILL
    events["order_id"] = [1, 2, 1, 2]
    events["side"] = BUY
    events["qty"] = 2**62
    events["remaining"] = [2**62, 2**62, 2**62, 0]
    gate.apply(events, 4, np.zeros((4, 2), dtype=np.int64))
    assert gate.position(1, 1) == MAX_ID
    assert gate.open_orders(1) == 1


# -- sessions -------------------------------------------------------------------------------


def test_close_session_detaches_its_orders() -> None:
    h = Harness()
    h.ok(0, new(1, BUY, 990, 2))
    h.ok(0, new(2, BUY, 991, 2))
    h.ok(3, new(1, BUY, 992, 2))
    h.run()
    oid1, oid2 = h.oid(0, 1), h.oid(0, 2)
    assert h.gate.close_session(0) == [(1, oid1, 1), (2, oid2, 1)]
    assert h.gate.live_orders(0) == []
    assert h.gate.engine_order_id(0, 1) is None
    assert h.gate.open_orders(1) == 3  # still in the engine
    with pytest.raises(ValueError, match="no open session"):
        h.gate.close_session(0)
    # A new session in the slot starts clean and may reuse the cl_ord_ids.
    h.gate.open_session(0, 2)
    h.ok(0, new(1, SELL, 991, 3))
    events = routes_of(h.run())
    assert events == [
        (EventKind.ACCEPTED, 0, 1),
        (EventKind.FILL, 0, 1),
        (EventKind.FILL, 3, 1),  # best bid first: account 1's other session
        (EventKind.FILL, 0, 1),
        (EventKind.FILL, -1, 2),  # the closed session's order: nobody
    ]
    assert h.gate.open_orders(1) == 2
    assert h.gate.position(1, 1) == 3
    # Cancel-on-disconnect: the daemon cancels what close_session returned.
    row = np.zeros(2, dtype=lltrade.COMMAND_DTYPE)
    row["op"] = Op.CANCEL
    row["order_id"] = [oid1, oid2]
    row["symbol"] = 1
    row["reason"] = Reason.DISCONNECT
    events_buf = np.zeros(16, dtype=lltrade.EVENT_DTYPE)
    routes = np.zeros((16, 2), dtype=np.int64)
    n = h.engine.process(row, events_buf)
    h.gate.apply(events_buf, n, routes)
    kinds = [(int(events_buf["kind"][j]), int(routes[j, 0]), int(routes[j, 1])) for j in range(n)]
    assert [k for k in kinds if k[0] != EventKind.LEVEL] == [
        (EventKind.CANCELLED, -1, 1),
        (EventKind.CANCELLED, -1, 2),  # partly filled, 1 left
    ]
    assert h.gate.open_orders(1) == 0
    assert h.gate.live_orders(3) == []  # filled
    assert h.gate._map_sizes() == (0, 0, 0)


def test_close_session_with_pending_orders() -> None:
    h = Harness()
    h.ok(0, new(1, BUY, 990, 2))
    assert h.gate.close_session(0) == [(1, 1, 1)]
    assert routes_of(h.run()) == [(EventKind.ACCEPTED, -1, 1)]
    assert h.gate.open_orders(1) == 1


def test_session_slot_validation() -> None:
    gate = make_gate()
    with pytest.raises(ValueError, match="already has an open session"):
        gate.open_session(0, 2)
    with pytest.raises(ValueError, match="unknown account_id 5"):
        gate.open_session(6, 5)
    with pytest.raises(ValueError, match=r"slot must be in 0 \.\. 7"):
        gate.open_session(8, 1)
    with pytest.raises(ValueError, match="slot must be in"):
        gate.admit(-1, cancel(1), 0, np.zeros(1, dtype=lltrade.COMMAND_DTYPE), 0)
    with pytest.raises(ValueError, match="no open session"):
        gate.set_admin(6, True)
    assert gate.live_orders(6) == []
    assert gate.engine_order_id(6, 1) is None


# -- growth ------------------------------------------------------------------------------------


def test_growth_past_initial_capacities() -> None:
    gate = OrderGate(64, capacity=1)
    engine = lltrade.Engine()
    for sym in range(1, 41):  # symbols and accounts past their initial 16
        gate.add_symbol(
            sym,
            tick=1,
            lot=1,
            reference_price=500,
            collar_ticks=0,
            max_order_qty=None,
            max_notional=None,
        )
        engine.add_book(sym, 1, 1_000)
    for acct in range(1, 41):
        gate.add_account(acct, **ROOMY, msg_rate_per_s=10**6, msg_burst=10**6)
        gate.open_session(acct, acct)
    h = Harness(gate, engine)
    h.cmds = np.zeros(4096, dtype=lltrade.COMMAND_DTYPE)
    expected = {}
    for k in range(3_000):
        acct, sym = k % 40 + 1, k % 37 + 1
        h.ok(acct, new(k + 1, BUY if k % 2 else SELL, 400 if k % 2 else 600, 1, symbol=sym))
        expected[(acct, sym)] = expected.get((acct, sym), 0) + 1
    h.run()
    assert h.gate.order_count == 3_000
    assert sum(len(engine.book(s)) for s in engine.symbols()) == 3_000
    assert h.gate._map_sizes() == (3_000, 3_000, 3_000)
    # Sweep: every resting order fills against one large order per symbol and side.
    gate.add_account(99, **ROOMY, msg_rate_per_s=10**6, msg_burst=10**6)
    gate.open_session(0, 99)
    for sym in range(1, 38):
        h.ok(0, new(2 * sym, BUY, 600, 10**6, symbol=sym, tif=TIF.IOC))
        h.ok(0, new(2 * sym + 1, SELL, 400, 10**6, symbol=sym, tif=TIF.IOC))
    h.run()
    assert h.gate.order_count == 0
    assert h.gate._map_sizes() == (0, 0, 0)
    assert all(h.gate.open_orders(a) == 0 for a in range(1, 41))
    for (acct, sym), count in expected.items():
        side = 1 if (acct - 1) % 2 else -1  # k % 40 + 1 = acct keeps k's parity
        assert h.gate.position(acct, sym) == side * count
    assert sum(h.gate.position(99, s) for s in range(1, 38)) == sum(
        -v if (a - 1) % 2 else v for (a, _s), v in expected.items()
    )


# -- argument checks -----------------------------------------------------------------------------


def test_argument_checks() -> None:
    gate = make_gate()
    cmds = np.zeros(2, dtype=lltrade.COMMAND_DTYPE)
    with pytest.raises(TypeError, match="got Logon"):
        gate.admit(0, Logon(seq=1, version=1, account="a", secret="b"), 0, cmds, 0)
    with pytest.raises(TypeError, match="COMMAND_DTYPE"):
        gate.admit(0, cancel(1), 0, np.zeros(2, dtype=lltrade.EVENT_DTYPE), 0)
    with pytest.raises(ValueError, match="no room"):
        gate.admit(0, cancel(1), 0, cmds, 2)
    with pytest.raises(ValueError, match="no room"):
        gate.admit(0, cancel(1), 0, cmds, -1)
    with pytest.raises(ValueError, match="C-contiguous"):
        gate.admit(0, cancel(1), 0, np.zeros(4, dtype=lltrade.COMMAND_DTYPE)[::2], 0)
    cmds.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        gate.admit(0, cancel(1), 0, cmds, 0)
    cmds.flags.writeable = True
    events = np.zeros(4, dtype=lltrade.EVENT_DTYPE)
    with pytest.raises(TypeError, match="EVENT_DTYPE"):
        gate.apply(cmds, 0, np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"n must be in 0 \.\. 4"):
        gate.apply(events, 5, np.zeros((5, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="int64"):
        gate.apply(events, 4, np.zeros((4, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="shape"):
        gate.apply(events, 4, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        gate.apply(events, 4, np.zeros(8, dtype=np.int64))
    gate.apply(events, 0, np.zeros((0, 2), dtype=np.int64))
    limits = {
        "tick": 1,
        "lot": 1,
        "reference_price": 0,
        "collar_ticks": 0,
        "max_order_qty": None,
        "max_notional": None,
    }
    for bad, match in (
        ({}, "already registered"),
        ({"tick": 0}, "tick"),
        ({"lot": 0}, "lot"),
        ({"collar_ticks": -1}, "collar_ticks"),
        ({"max_order_qty": -1}, "max_order_qty"),
        ({"max_notional": -1}, "max_notional"),
    ):
        with pytest.raises(ValueError, match=match):
            gate.add_symbol(1 if not bad else 9, **{**limits, **bad})
    for sym in (0, 2**31):
        with pytest.raises(ValueError, match="symbol_id"):
            gate.add_symbol(sym, **limits)
    acct = {"max_open_orders": 1, "max_position": 1, "msg_rate_per_s": 1, "msg_burst": 1}
    for acct_id, bad, match in (
        (1, {}, "already registered"),
        (0, {}, "account_id"),
        (9, {"max_open_orders": -1}, "max_open_orders"),
        (9, {"max_position": -1}, "max_position"),
        (9, {"msg_rate_per_s": 0}, "msg_rate_per_s"),
        (9, {"msg_burst": 0}, "msg_burst"),
    ):
        with pytest.raises(ValueError, match=match):
            gate.add_account(acct_id, **{**acct, **bad})
    for call in (
        lambda: gate.open_orders(9),
        lambda: gate.position(9, 1),
        lambda: gate.set_kill_switch(True, account_id=9),
    ):
        with pytest.raises(ValueError, match="unknown account_id 9"):
            call()
    for call in (
        lambda: gate.position(1, 9),
        lambda: gate.halt(9, True),
        lambda: gate.is_halted(9),
        lambda: gate.set_reference_price(9, 1),
    ):
        with pytest.raises(ValueError, match="unknown symbol_id 9"):
            call()
    for bad_init in ({"max_sessions": 0}, {"capacity": 0}):
        with pytest.raises(ValueError):
            OrderGate(**bad_init)
    assert "OrderGate(max_sessions=8, symbols=2, accounts=3" in repr(gate)


def test_set_reference_price_moves_the_collar() -> None:
    h = Harness()
    assert h.send(0, new(1, BUY, 1_500)) == Reason.PRICE_COLLAR
    h.gate.set_reference_price(1, 1_450)
    assert h.send(0, new(1, BUY, 1_500, 1)) == 0


# -- differential test against a pure-Python model -------------------------------------------------


@dataclass
class MSym:
    id: int
    ref: int
    collar: int  # price units; 0 = none
    max_qty: int | None
    max_notional: int | None
    halted: bool = False


@dataclass
class MAcct:
    id: int
    max_open: int
    max_pos: int
    rate: int
    burst: int
    max_qty: int | None = None
    max_notional: int | None = None
    killed: bool = False
    open: int = 0


@dataclass
class MSession:
    account: int
    admin: bool
    tokens: int
    last: int | None = None
    orders: dict[int, int] = field(default_factory=dict)  # cl_ord_id -> engine id


@dataclass
class MOrder:
    slot: int
    cl: int
    account: int
    symbol: int
    state: str = "pending"  # pending, live, done


Row = tuple[int, int, int, int, int, int, int, int, int, int, int]
ROW_FIELDS = (
    "op",
    "order_id",
    "symbol",
    "account",
    "side",
    "price",
    "qty",
    "tif",
    "post_only",
    "stp",
    "protection",
)


class ModelGate:
    """The gate's documented behaviour, written plainly."""

    def __init__(self) -> None:
        self.symbols: dict[int, MSym] = {}
        self.accounts: dict[int, MAcct] = {}
        self.sessions: dict[int, MSession] = {}
        self.orders: dict[int, MOrder] = {}
        self.positions: dict[tuple[int, int], int] = {}
        self.kill = False
        self.next_oid = 1

    def open_session(self, slot: int, account: int, admin: bool = False) -> None:
        self.sessions[slot] = MSession(account, admin, self.accounts[account].burst * SECOND)

    def close_session(self, slot: int) -> list[tuple[int, int, int]]:
        s = self.sessions.pop(slot)
        for oid in s.orders.values():
            self.orders[oid].slot = -1
        return sorted(
            ((cl, oid, self.orders[oid].symbol) for cl, oid in s.orders.items()),
            key=lambda t: t[1],
        )

    def live_orders(self, slot: int) -> list[tuple[int, int, int]]:
        s = self.sessions.get(slot)
        if s is None:
            return []
        return sorted(
            ((cl, oid, self.orders[oid].symbol) for cl, oid in s.orders.items()),
            key=lambda t: t[1],
        )

    def _token(self, s: MSession, now: int) -> bool:
        acct = self.accounts[s.account]
        if s.last is None:
            s.last = now
        elif now > s.last:
            s.tokens = min(acct.burst * SECOND, s.tokens + (now - s.last) * acct.rate)
            s.last = now
        if s.tokens < SECOND:
            return False
        s.tokens -= SECOND
        return True

    def _limits(self, sym: MSym, a: MAcct, price: int, qty: int) -> int:
        if sym.collar and abs(price - sym.ref) > sym.collar:
            return Reason.PRICE_COLLAR
        if any(lim is not None and qty > lim for lim in (sym.max_qty, a.max_qty)):
            return Reason.MAX_ORDER_QTY
        limits = [lim for lim in (sym.max_notional, a.max_notional) if lim is not None]
        if limits and qty > 0 and abs(price) * qty > min(limits):
            return Reason.MAX_NOTIONAL
        return 0

    def admit(self, slot: int, msg: OrderMessage, now: int) -> tuple[int, list[Row]]:
        s = self.sessions.get(slot)
        if s is None:
            return SessionReason.NOT_LOGGED_ON, []
        if not self._token(s, now):
            return SessionReason.RATE_LIMITED, []
        a = self.accounts[s.account]
        killed = self.kill or a.killed
        if isinstance(msg, NewOrder):
            if killed:
                return Reason.KILL_SWITCH_ACTIVE, []
            sym = self.symbols.get(msg.symbol)
            if sym is None:
                return Reason.UNKNOWN_SYMBOL, []
            if sym.halted:
                return Reason.SYMBOL_HALTED, []
            if msg.cl_ord_id in s.orders:
                return Reason.DUPLICATE_ORDER_ID, []
            reason = self._limits(sym, a, msg.price, msg.qty)
            if reason:
                return reason, []
            if a.open >= a.max_open:
                return Reason.MAX_OPEN_ORDERS, []
            pos = self.positions.get((a.id, sym.id), 0)
            signed = msg.qty if msg.side == BUY else -msg.qty
            if msg.qty > 0 and abs(pos + signed) > a.max_pos:
                return Reason.MAX_POSITION, []
            oid = self.next_oid
            self.next_oid += 1
            self.orders[oid] = MOrder(slot, msg.cl_ord_id, a.id, sym.id)
            s.orders[msg.cl_ord_id] = oid
            a.open += 1
            row = (Op.ADD, oid, sym.id, a.id, msg.side, msg.price, msg.qty)
            return 0, [(*row, msg.tif, int(msg.post_only), msg.stp, -1)]
        if isinstance(msg, MassCancel):
            if msg.symbol and msg.symbol not in self.symbols:
                return Reason.UNKNOWN_SYMBOL, []
            target = msg.account or a.id
            if target != a.id and not s.admin:
                return Reason.NOT_AUTHORISED, []
            syms = [msg.symbol] if msg.symbol else list(self.symbols)
            return 0, [(Op.MASS_CANCEL, 0, sym, target, 0, 0, 0, 0, 0, 0, -1) for sym in syms]
        if isinstance(msg, Replace) and killed:
            return Reason.KILL_SWITCH_ACTIVE, []
        oid = s.orders.get(msg.cl_ord_id, 0)
        if not oid:
            return Reason.UNKNOWN_ORDER, []
        sym = self.symbols[self.orders[oid].symbol]
        price = qty = 0
        if isinstance(msg, Replace):
            if sym.halted:
                return Reason.SYMBOL_HALTED, []
            reason = self._limits(sym, a, msg.price, msg.qty)
            if reason:
                return reason, []
            price, qty = msg.price, msg.qty
            op = Op.REPLACE
        elif isinstance(msg, Reduce):
            qty = msg.qty
            op = Op.REDUCE
        else:
            op = Op.CANCEL
        return 0, [(op, oid, sym.id, a.id, 0, price, qty, 0, 0, 0, -1)]

    def apply(self, events: list[tuple[int, int, int, int, int]]) -> list[tuple[int, int]]:
        routes = []
        done = []
        for kind, oid, side, qty, remaining in events:
            o = self.orders.get(oid) if kind != EventKind.LEVEL else None
            if o is None:
                routes.append((-1, 0))
                continue
            routes.append((o.slot, o.cl))
            if o.state == "done":
                continue
            finished = False
            if kind == EventKind.FILL:
                key = (o.account, o.symbol)
                self.positions[key] = self.positions.get(key, 0) + (qty if side == BUY else -qty)
                o.state = "live"
                finished = remaining == 0
            elif kind == EventKind.CANCELLED:
                finished = True
            elif kind == EventKind.REJECTED:
                finished = o.state == "pending"
            else:
                o.state = "live"
            if finished:
                o.state = "done"
                self.accounts[o.account].open -= 1
                done.append(oid)
        for oid in done:
            o = self.orders.pop(oid)
            if o.slot >= 0:
                del self.sessions[o.slot].orders[o.cl]
        return routes


def _random_message(rng: random.Random, live: list[int]) -> OrderMessage:
    """A message; changes mostly name one of ``live``, the session's open orders."""
    cl = rng.randint(1, 12)
    roll = rng.random()
    if roll >= 0.6 and live and rng.random() < 0.7:
        cl = rng.choice(live)
    if roll < 0.6:
        symbol = rng.choice([1, 1, 1, 2, 2, 3, 9])
        ref = 25_000 if symbol == 2 else 1_000
        step = 5 if symbol == 2 else 1
        price = ref + step * rng.randint(-30, 30)
        if rng.random() < 0.05:
            price = ref + rng.choice([-1, 1]) * rng.randint(100, 10**6)
        qty = rng.choice([1, 2, 5, 10, 10, 20, 30, 50])
        if rng.random() < 0.03:
            qty = rng.choice([0, -10, 600, 2_000])
        return new(
            cl,
            rng.choice([BUY, SELL]),
            price,
            qty,
            symbol=symbol,
            tif=rng.choice([TIF.GTC, TIF.GTC, TIF.GTC, TIF.IOC, TIF.FOK]),
            post_only=rng.random() < 0.1,
            stp=rng.choice(list(STP)),
        )
    if roll < 0.75:
        return cancel(cl)
    if roll < 0.87:
        return replace(cl, 1_000 + rng.randint(-40, 40), rng.choice([1, 5, 10, 20, 800]))
    if roll < 0.97:
        return reduce(cl, rng.choice([1, 2, 5, 10]))
    return mass(rng.choice([0, 1, 2, 9]), rng.choice([0, 0, 1, 2, 3]))


def test_random_stream_matches_the_model() -> None:
    seed = random.SystemRandom().randrange(2**32)
    counts = run_stream(seed, 20_000)
    # The stream reached every outcome.
    reachable = {0, SessionReason.NOT_LOGGED_ON, SessionReason.RATE_LIMITED}
    reachable |= {r for r in Reason if 40 <= r <= 47} | {
        Reason.UNKNOWN_ORDER,
        Reason.DUPLICATE_ORDER_ID,
        Reason.UNKNOWN_SYMBOL,
    }
    assert reachable <= set(counts), (seed, sorted(reachable - set(counts)))


def run_stream(seed: int, messages: int) -> dict[int, int]:
    """Send ``messages`` random messages through the gate and the model; count outcomes.

    Every failure message starts with the seed.
    """
    rng = random.Random(seed)
    gate = OrderGate(8, capacity=4)  # slots 6 and 7 are never opened
    model = ModelGate()
    engine = make_engine()
    symbols = [
        MSym(1, 1_000, 40, 500, 400_000),
        MSym(2, 25_000, 0, None, None),
        MSym(3, 7, 0, None, None),  # the engine has no book for it
    ]
    for sym in symbols:
        gate.add_symbol(
            sym.id,
            tick=5 if sym.id == 2 else 1,
            lot=10 if sym.id == 2 else 1,
            reference_price=sym.ref,
            collar_ticks=sym.collar,
            max_order_qty=sym.max_qty,
            max_notional=sym.max_notional,
        )
        model.symbols[sym.id] = sym
    accounts = [
        MAcct(1, max_open=4, max_pos=60, rate=20, burst=6),
        MAcct(2, max_open=30, max_pos=400, rate=200, burst=20, max_qty=40),
        MAcct(3, max_open=50, max_pos=10**6, rate=10**4, burst=100, max_notional=20_000),
    ]
    for acct in accounts:
        gate.add_account(
            acct.id,
            max_open_orders=acct.max_open,
            max_position=acct.max_pos,
            msg_rate_per_s=acct.rate,
            msg_burst=acct.burst,
            max_order_qty=acct.max_qty,
            max_notional=acct.max_notional,
        )
        model.accounts[acct.id] = acct
    for slot, acct_id in enumerate([1, 1, 2, 2, 3, 3]):
        gate.open_session(slot, acct_id, admin=acct_id == 3)
        model.open_session(slot, acct_id, acct_id == 3)

    cmds = np.zeros(64, dtype=lltrade.COMMAND_DTYPE)
    events = np.zeros(20_000, dtype=lltrade.EVENT_DTYPE)
    routes = np.zeros((20_000, 2), dtype=np.int64)
    now = 0
    sent = 0
    counts: dict[int, int] = {}
    while sent < messages:
        k = 0
        detached: list[tuple[int, int, int]] = []
        # Between batches: the daemon's own actions.
        # Switches go on rarely and come off soon.
        sym = model.symbols[rng.choice([1, 2])]
        if rng.random() < (0.3 if sym.halted else 0.02):
            sym.halted = not sym.halted
            gate.halt(sym.id, sym.halted)
        if rng.random() < (0.3 if model.kill else 0.01):
            model.kill = not model.kill
            gate.set_kill_switch(model.kill)
        acct = model.accounts[rng.choice([1, 2, 3])]
        if rng.random() < (0.3 if acct.killed else 0.01):
            acct.killed = not acct.killed
            gate.set_kill_switch(acct.killed, account_id=acct.id)
        closed = [slot for slot in range(6) if slot not in model.sessions]
        if closed and rng.random() < 0.3:
            slot = rng.choice(closed)
            acct_id = rng.choice([1, 2, 3])
            admin = rng.random() < 0.3
            gate.open_session(slot, acct_id, admin=admin)
            model.open_session(slot, acct_id, admin)
        elif rng.random() < 0.03:
            slot = rng.choice(list(model.sessions))
            left = gate.close_session(slot)
            assert left == model.close_session(slot), seed
            if rng.random() < 0.5:
                detached = left  # cancel-on-disconnect
        for _cl, oid, sym_id in detached:
            cmds[k] = 0
            cmds["op"][k], cmds["order_id"][k], cmds["symbol"][k] = Op.CANCEL, oid, sym_id
            cmds["reason"][k] = Reason.DISCONNECT
            k += 1
        for _ in range(rng.randint(1, 12)):
            slot = rng.randrange(7)  # 6: never open
            session = model.sessions.get(slot)
            msg = _random_message(rng, sorted(session.orders) if session else [])
            now += rng.choice([0, 0, 0, 100_000, 1_000_000, 5_000_000, 20_000_000, -1_000_000])
            expected, rows = model.admit(slot, msg, now)
            got = gate.admit(slot, msg, now, cmds, k)
            sent += 1
            counts[got] = counts.get(got, 0) + 1
            assert got == expected, (seed, sent, msg)
            assert gate.rows_written == len(rows), (seed, sent)
            written = [tuple(int(cmds[f][k + j]) for f in ROW_FIELDS) for j in range(len(rows))]
            assert written == [tuple(int(v) for v in row) for row in rows], (seed, sent, msg)
            k += len(rows)
        n = engine.process(cmds[:k], events)
        assert engine.commands_processed == k
        gate.apply(events, n, routes)
        fields = ("kind", "order_id", "side", "qty", "remaining")
        evs = [tuple(int(events[f][j]) for f in fields) for j in range(n)]
        expected_routes = model.apply(evs)  # type: ignore[arg-type]
        assert [tuple(int(x) for x in routes[j]) for j in range(n)] == expected_routes, seed
        # After each batch: the same accounting, and the gate tracks exactly
        # the engine's resting orders.
        for acct in model.accounts.values():
            assert gate.open_orders(acct.id) == acct.open, (seed, sent)
            for sym in model.symbols.values():
                assert gate.position(acct.id, sym.id) == model.positions.get(
                    (acct.id, sym.id), 0
                ), (seed, sent)
        for slot in range(7):
            assert gate.live_orders(slot) == model.live_orders(slot), (seed, sent)
        resting = {o[0] for s in engine.symbols() for o in engine.book(s).orders()}
        assert resting == set(model.orders), (seed, sent)
        assert gate.order_count == len(model.orders)
        sizes = gate._map_sizes()
        assert sizes[0] == sizes[2] == len(model.orders)
        assert sizes[1] == sum(len(s.orders) for s in model.sessions.values())

    # Finally cancel everything: every map empties.
    for acct in model.accounts.values():
        acct.killed = False
        gate.set_kill_switch(False, account_id=acct.id)
    for slot in range(6):
        if slot not in model.sessions:
            gate.open_session(slot, 3, admin=True)
            model.open_session(slot, 3, True)
        gate.set_admin(slot, True)
    for k, acct_id in enumerate((1, 2, 3)):
        assert gate.admit(k, mass(0, acct_id), now + 10 * SECOND, cmds, 3 * k) == 0
    n = engine.process(cmds[:9], events)
    gate.apply(events, n, routes)
    assert gate._map_sizes() == (0, 0, 0), seed
    assert all(gate.open_orders(a) == 0 for a in (1, 2, 3))
    return counts


# -- recovery: the risk state rebuilt from the journal's commands and events --------------


def _risk_state(gate: OrderGate) -> tuple[Any, ...]:
    return (
        gate.net_positions(),
        [gate.open_orders(a) for a in (1, 2, 100)],
        gate.next_order_id,
        gate.order_count,
    )


@pytest.mark.parametrize("snapshot_at", [None, 40], ids=["journal-only", "snapshot-mid"])
def test_replay_rebuilds_the_live_risk_state(snapshot_at: int | None) -> None:
    """Replaying each batch's commands and events (after adopting a snapshot's resting
    orders and positions) leaves the positions, open-order counts and next id as live."""
    rng = random.Random(7)
    h = Harness()
    h.gate.add_account(3, **ROOMY, msg_rate_per_s=1_000, msg_burst=1_000)
    h.gate.open_session(4, 3)
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    snapshot: tuple[list[tuple[int, int, int]], dict[int, list[tuple[int, ...]]]] | None = None
    cl = dict.fromkeys(range(5), 0)
    for b in range(80):
        if b == snapshot_at:
            books = {sid: h.engine.book(sid).resting() for sid in (1, 2)}
            snapshot = (h.gate.net_positions(), books)
            batches.clear()
        for _ in range(rng.randint(1, 6)):
            slot = rng.choice([0, 1, 2, 4])
            live = [c for c, *_ in h.gate.live_orders(slot)]
            if live and rng.random() < 0.3:
                h.send(slot, cancel(rng.choice(live)))
                continue
            cl[slot] += 1
            side = rng.choice([BUY, SELL])
            tif = rng.choice([TIF.GTC, TIF.GTC, TIF.IOC])
            price = 1_000 + rng.randint(-5, 5)
            h.send(slot, new(cl[slot], side, price, rng.randint(1, 9), tif=tif))
        commands = h.cmds[: h.k].copy()
        n = h.engine.process(commands, h.events)
        h.gate.apply(h.events, n, h.routes)
        h.k = 0
        batches.append((commands, h.events[:n].copy()))
    live_state = _risk_state(h.gate)
    assert live_state[0], "the stream made positions"

    rebuilt = make_gate()
    rebuilt.add_account(3, **ROOMY, msg_rate_per_s=1_000, msg_burst=1_000)
    if snapshot is not None:
        positions, books = snapshot
        for account, symbol, qty in positions:
            rebuilt.set_position(account, symbol, qty)
        for sid, resting in books.items():
            for order_id, _side, _price, _qty, account, *_ in resting:
                assert rebuilt.adopt(account, sid, order_id)
    for commands, events in batches:
        assert rebuilt.replay(commands, events, len(events)) == 0
    assert _risk_state(rebuilt) == live_state


def test_replay_and_adopt_skip_unknown_accounts_and_symbols() -> None:
    engine = make_engine()
    cmds = np.zeros(2, dtype=lltrade.COMMAND_DTYPE)
    cmds["op"] = Op.ADD
    cmds["order_id"] = [5, 6]
    cmds["symbol"] = [1, 1]
    cmds["account"] = [1, 77]  # 77: not configured
    cmds["side"] = BUY
    cmds["price"] = 1_000
    cmds["qty"] = 1
    events = np.zeros(16, dtype=lltrade.EVENT_DTYPE)
    n = engine.process(cmds, events)
    gate = make_gate()
    assert gate.replay(cmds, events, n) == 1
    assert gate.open_orders(1) == 1
    assert gate.next_order_id == 6  # past the tracked order; the daemon skips the rest
    gate.skip_order_ids(7)
    assert gate.next_order_id == 7
    gate.skip_order_ids(3)  # never backwards
    assert gate.next_order_id == 7
    assert not gate.adopt(77, 1, 9)
    assert not gate.adopt(1, 9, 9)
    assert gate.adopt(1, 1, 9)
    assert gate.open_orders(1) == 2
    assert gate.adopt(1, 1, 9)  # the same order again counts once
    assert gate.open_orders(1) == 2


def test_set_position_and_net_positions() -> None:
    gate = make_gate()
    gate.set_position(2, 1, -40)
    gate.set_position(1, 2, 15)
    gate.set_position(100, 1, 0)
    assert gate.net_positions() == [(1, 2, 15), (2, 1, -40)]
    assert gate.position(2, 1) == -40
    with pytest.raises(ValueError, match="unknown account_id 9"):
        gate.set_position(9, 1, 1)
