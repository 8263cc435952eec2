"""The seeded command streams of ``lltrade.workload``.

The generator keeps its own model of the book; replaying a stream through the
engine must give no reject and the model's final book, which checks the
stream's validity (cancels name live orders, passive orders do not cross) and
the model in one go.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import lltrade
from lltrade import EventKind, Op, Side
from lltrade.workload import Mix, StreamGenerator, Workload, WorkloadSpec, book_state_hash, generate

SEEDS = [0, 1, 20240607]


def replay(w: Workload, batch: int = 4096) -> tuple[lltrade.OrderBook, np.ndarray]:
    """Run ``w`` through a fresh book's batch face; return the book and all events."""
    s = w.spec
    book = lltrade.OrderBook(s.min_price, s.max_price, s.tick, s.lot)
    out = np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)
    chunks = []
    i = 0
    while i < len(w.commands):
        n = book.process(w.commands[i : i + batch], out)
        ev = out[:n].copy()
        ev["cmd"] += i
        chunks.append(ev)
        i += book.commands_processed
    events = np.concatenate(chunks) if chunks else np.zeros(0, dtype=lltrade.EVENT_DTYPE)
    return book, events


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_same_stream(seed: int) -> None:
    spec = WorkloadSpec(commands=20_000, seed=seed)
    a, b = generate(spec), generate(spec)
    assert a.commands.tobytes() == b.commands.tobytes(), f"seed={seed}"
    assert a.counts == b.counts
    assert a.resting == b.resting


def test_other_seed_other_stream() -> None:
    a = generate(WorkloadSpec(commands=5_000, seed=1))
    b = generate(WorkloadSpec(commands=5_000, seed=2))
    assert a.commands.tobytes() != b.commands.tobytes()


def test_chunking_does_not_change_the_stream() -> None:
    spec = WorkloadSpec(commands=10_000, seed=3)
    whole = generate(spec).commands
    gen = StreamGenerator(spec)
    parts = [gen.next(k) for k in (1, 7, 992, 3000, 6000)]
    # compared field by field: np.concatenate does not copy the padding bytes
    assert (np.concatenate(parts) == whole).all()
    chunks = gen.chunks(10)
    assert len(next(chunks)) == 10


def test_dtype_and_layout() -> None:
    w = generate(WorkloadSpec(commands=1_000, seed=0))
    assert w.commands.dtype == lltrade.COMMAND_DTYPE
    assert w.commands.flags.c_contiguous
    assert len(w.commands) == 1_000


@pytest.mark.parametrize("seed", SEEDS)
def test_default_mix_proportions(seed: int) -> None:
    n = 100_000
    w = generate(WorkloadSpec(commands=n, seed=seed))
    ops = Counter(w.commands["op"].tolist())
    passive = int(((w.commands["op"] == Op.ADD) & (w.commands["tif"] == 0)).sum())
    assert w.counts["passive"] + w.counts["cancel"] + w.counts["aggressive"] == n
    assert w.counts["passive"] / n == pytest.approx(0.60, abs=0.01), f"seed={seed}"
    assert w.counts["cancel"] / n == pytest.approx(0.30, abs=0.01), f"seed={seed}"
    assert w.counts["aggressive"] / n == pytest.approx(0.10, abs=0.01), f"seed={seed}"
    assert ops[Op.CANCEL] == w.counts["cancel"]
    assert ops[Op.MARKET] == w.counts["market"]
    assert ops[Op.REDUCE] == ops[Op.REPLACE] == ops[Op.MASS_CANCEL] == 0
    # GTC adds: the passive ones plus aggressive GTC limit orders
    assert passive >= w.counts["passive"]
    assert w.counts["sweeps"] > 0.02 * w.counts["aggressive"], "some aggressors sweep levels"


def test_custom_mix_proportions() -> None:
    n = 50_000
    mix = Mix(passive=0.5, cancel=0.2, aggressive=0.1, reduce=0.1, replace=0.1)
    w = generate(WorkloadSpec(commands=n, seed=5, mix=mix))
    for name, share in mix.fractions().items():
        # a reduce of a one-lot order becomes a cancel
        tol = 0.03 if name in ("reduce", "cancel") else 0.01
        assert w.counts[name] / n == pytest.approx(share, abs=tol), name
    ops = Counter(w.commands["op"].tolist())
    assert ops[Op.REDUCE] == w.counts["reduce"] > 0
    assert ops[Op.REPLACE] == w.counts["replace"] > 0


@pytest.mark.parametrize(
    "spec",
    [
        WorkloadSpec(commands=30_000, seed=11),
        WorkloadSpec(commands=30_000, seed=12, tick=5, lot=100, min_price=1_000, max_price=20_000),
        WorkloadSpec(commands=30_000, seed=13, mix=Mix(0.5, 0.2, 0.1, 0.1, 0.1), target_orders=500),
        WorkloadSpec(commands=30_000, seed=14, target_orders=0, take_tail=1.2, overshoot=0.9),
        # a band so narrow that passive orders pile up at its edges
        WorkloadSpec(commands=20_000, seed=15, min_price=100, max_price=130, depth_ticks=20),
        WorkloadSpec(commands=20_000, seed=16, account=7, first_order_id=10**12),
    ],
    ids=["default", "tick-lot", "all-ops", "no-target", "narrow-band", "account-ids"],
)
def test_valid_ranges(spec: WorkloadSpec) -> None:
    c = generate(spec).commands
    ops = c["op"]
    assert set(np.unique(ops).tolist()) <= {Op.ADD, Op.MARKET, Op.CANCEL, Op.REDUCE, Op.REPLACE}
    assert set(np.unique(c["side"]).tolist()) <= {Side.BUY, Side.SELL}
    assert set(np.unique(c["tif"]).tolist()) <= {0, 1}
    assert not c["post_only"].any() and not c["stp"].any() and not c["reason"].any()
    assert (c["account"] == spec.account).all()
    priced = (ops == Op.ADD) | (ops == Op.REPLACE)
    prices = c["price"][priced]
    assert (prices >= spec.min_price).all() and (prices <= spec.max_price).all()
    assert (prices % spec.tick == 0).all()
    sized = ops != Op.CANCEL
    assert (c["qty"][sized] > 0).all() and (c["qty"][sized] % spec.lot == 0).all()
    assert (c["protection"][ops == Op.MARKET] >= 0).all()
    new = c["order_id"][(ops == Op.ADD) | (ops == Op.MARKET)]
    assert new[0] == spec.first_order_id
    assert (np.diff(new) == 1).all(), "fresh ids are consecutive"
    assert (c["order_id"] >= spec.first_order_id).all()


@pytest.mark.parametrize(
    "spec",
    [
        WorkloadSpec(commands=50_000, seed=21),
        WorkloadSpec(commands=30_000, seed=22, tick=5, lot=100, min_price=1_000, max_price=20_000),
        WorkloadSpec(commands=30_000, seed=23, mix=Mix(0.5, 0.2, 0.1, 0.1, 0.1), target_orders=800),
        WorkloadSpec(commands=20_000, seed=24, min_price=100, max_price=130, depth_ticks=20),
    ],
    ids=["default", "tick-lot", "all-ops", "narrow-band"],
)
def test_engine_agrees_with_the_model(spec: WorkloadSpec) -> None:
    w = generate(spec)
    book, events = replay(w)
    rejected = events[events["kind"] == EventKind.REJECTED]
    assert len(rejected) == 0, f"seed={spec.seed}: first reject {rejected[:1]}"
    assert len(book) == len(w.resting)
    assert book.state_hash() == w.state_hash(), f"seed={spec.seed}"
    assert book.best_bid() == w.best_bid()
    assert book.best_ask() == w.best_ask()
    fills = events[events["kind"] == EventKind.FILL]
    assert len(fills) == 2 * w.counts["fills"]


def test_passive_orders_never_trade_and_sweeps_cross_levels() -> None:
    w = generate(WorkloadSpec(commands=50_000, seed=31))
    _, events = replay(w)
    c = w.commands
    fills = events[events["kind"] == EventKind.FILL]
    takers = fills[fills["order_id"] == fills["taker_id"]]
    taker_cmds = np.unique(takers["cmd"])
    # only the aggressive commands trade, and each of them does
    assert len(taker_cmds) == w.counts["aggressive"]
    assert (c["op"][taker_cmds] == Op.MARKET).sum() == w.counts["market"]
    levels_per_taker: Counter[int] = Counter()
    for cmd, _price in set(zip(takers["cmd"].tolist(), takers["price"].tolist(), strict=True)):
        levels_per_taker[cmd] += 1
    assert max(levels_per_taker.values()) >= 3
    assert sum(1 for v in levels_per_taker.values() if v >= 2) == w.counts["sweeps"]


def test_book_stays_near_its_target_size() -> None:
    gen = StreamGenerator(WorkloadSpec(seed=41, target_orders=3_000))
    sizes = []
    for _ in range(10):
        gen.next(20_000)
        sizes.append(len(gen))
    assert all(1_500 < s < 4_500 for s in sizes[2:]), sizes


def test_book_state_hash_matches_the_engine() -> None:
    book = lltrade.OrderBook(1, 1000)
    assert book_state_hash([]) == book.state_hash()
    book.add(5, Side.BUY, 10, 3)
    book.add(6, Side.BUY, 10, 4)
    book.add(7, Side.SELL, 12, 1)
    book.add(8, Side.BUY, 11, 2)
    rows = [(1, 11, 8, 2), (1, 10, 5, 3), (1, 10, 6, 4), (2, 12, 7, 1)]
    assert book_state_hash(rows) == book.state_hash()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"commands": -1},
        {"tick": 0},
        {"lot": 0},
        {"tick": 3, "min_price": 1},
        {"min_price": 10, "max_price": 11},
        {"start_price": 1},
        {"improve": 1.5},
        {"take_tail": 1.0},
        {"max_sweep_levels": 1},
        {"first_order_id": 0},
    ],
)
def test_bad_spec_is_refused(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError):
        WorkloadSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("weights", [(0, 1, 1, 0, 0), (-1, 1, 1, 0, 0), (1, float("nan"), 0, 0, 0)])
def test_bad_mix_is_refused(weights: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Mix(*weights)
