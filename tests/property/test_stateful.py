"""Hypothesis state machine: ``lltrade.OrderBook`` and ``ReferenceBook`` in lockstep.

Each rule is one per-call command with arguments drawn from small ranges
(a dozen ids, a narrow band with tick 2 and lot 2, three accounts), so that
duplicates, id reuse, off-grid values, band edges, self-trades and sweeps
are all common.  After every rule the events must be equal, and so must
everything the queries show.  Hypothesis shrinks a failure to a short list
of steps and prints them.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import lltrade
from lltrade.enums import STP, TIF, Op, Reason, Side

from reference_book import ReferenceBook, format_events
from streams import Command, apply, as_call

MIN_PRICE, MAX_PRICE, TICK, LOT = 90, 110, 2, 2
BOOK_ARGS = (MIN_PRICE, MAX_PRICE, TICK, LOT)
BOOK_KWARGS = {"max_qty": 40, "max_orders": 12}
MASK64 = 2**64 - 1

order_ids = st.integers(1, 12) | st.sampled_from([0, -1, 2**63 - 1])
sides = st.sampled_from([Side.BUY, Side.SELL])
prices = st.integers(MIN_PRICE - 4, MAX_PRICE + 4)
quantities = st.integers(-2, 24) | st.sampled_from([40, 42])
accounts = st.sampled_from([0, 1, 2])
stps = st.sampled_from(list(STP))
tifs = st.sampled_from(list(TIF))
reasons = st.sampled_from([0, Reason.USER_CANCEL, Reason.DISCONNECT, Reason.KILL_SWITCH])


class LockstepBooks(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = lltrade.OrderBook(*BOOK_ARGS, **BOOK_KWARGS)
        self.ref = ReferenceBook(*BOOK_ARGS, **BOOK_KWARGS)
        self.trace: list[str] = []

    def step(self, cmd: Command) -> None:
        self.trace.append(as_call(cmd))
        expected = _events(self.ref, cmd, engine=False)
        actual = _events(self.engine, cmd, engine=True)
        if actual != expected:
            raise AssertionError(
                "events differ after:\n    "
                + "\n    ".join(self.trace)
                + f"\n  expected:\n{_show(expected)}\n  actual:\n{_show(actual)}"
            )

    @rule(
        oid=order_ids,
        side=sides,
        price=prices,
        qty=quantities,
        tif=tifs,
        post_only=st.booleans(),
        account=accounts,
        stp=stps,
    )
    def add(self, oid, side, price, qty, tif, post_only, account, stp) -> None:
        self.step(Command(Op.ADD, oid, side, price, qty, tif, post_only, stp, account))

    @rule(
        oid=order_ids,
        side=sides,
        qty=quantities,
        protection=st.none() | st.integers(0, 4),
        account=accounts,
        stp=stps,
    )
    def market(self, oid, side, qty, protection, account, stp) -> None:
        self.step(
            Command(Op.MARKET, oid, side, qty=qty, stp=stp, account=account, protection=protection)
        )

    @rule(oid=order_ids, reason=reasons)
    def cancel(self, oid, reason) -> None:
        self.step(Command(Op.CANCEL, oid, reason=reason))

    @rule(oid=order_ids, qty=quantities)
    def reduce(self, oid, qty) -> None:
        self.step(Command(Op.REDUCE, oid, qty=qty))

    @rule(oid=order_ids, price=prices, qty=quantities)
    def replace(self, oid, price, qty) -> None:
        self.step(Command(Op.REPLACE, oid, price=price, qty=qty))

    @rule(account=st.integers(0, 3), reason=st.sampled_from([0, Reason.KILL_SWITCH]))
    def mass_cancel(self, account, reason) -> None:
        self.step(Command(Op.MASS_CANCEL, account=account, reason=reason))

    @rule(
        oid=order_ids,
        side=st.sampled_from([0, 3]),
        tif=st.sampled_from([3, 4]),
        stp=st.sampled_from([4, 5]),
        which=st.integers(0, 3),
    )
    def bad_enum(self, oid, side, tif, stp, which) -> None:
        """Out of range enum arguments: ValueError from both, nothing changes."""
        cmds = [
            Command(Op.ADD, oid, side, 100, 2),
            Command(Op.ADD, oid, Side.BUY, 100, 2, tif=tif),
            Command(Op.ADD, oid, Side.SELL, 100, 2, stp=stp, account=1),
            Command(Op.MARKET, oid, Side.BUY, qty=2, protection=-1 - which),
        ]
        self.step(cmds[which])

    @invariant()
    def same_book(self) -> None:
        engine, ref = self.engine, self.ref
        for name, want, got in (
            ("orders()", ref.orders(), engine.orders()),
            ("depth()", ref.depth(100), engine.depth(100)),
            ("depth(1)", ref.depth(1), engine.depth(1)),
            ("best_bid()", ref.best_bid(), engine.best_bid()),
            ("best_ask()", ref.best_ask(), engine.best_ask()),
            ("len()", len(ref), len(engine)),
            ("state_hash()", ref.state_hash(), engine.state_hash() & MASK64),
        ):
            assert got == want, (
                f"{name} differs after:\n    " + "\n    ".join(self.trace) + f"\n"
                f"  expected {want}\n  actual   {got}"
            )


def _events(book, cmd: Command, engine: bool):
    try:
        events = apply(book, cmd)
    except ValueError:
        return "ValueError"
    return [e.as_tuple() for e in events] if engine else events


def _show(events) -> str:
    return "    ValueError" if isinstance(events, str) else format_events(events)


LockstepBooks.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lockstep_books = LockstepBooks.TestCase
