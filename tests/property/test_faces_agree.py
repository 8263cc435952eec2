"""The per-call face and the batch face (``process``) of one core agree.

The same seeded streams go through ``OrderBook.add/market/...`` on one book
and through ``OrderBook.process`` on another, in chunks of varying sizes with
event buffers of varying sizes (so processing often stops early, and the
first command sometimes does not fit at all).  Every command must yield the
same events (the nine ``as_tuple()`` fields) and the books must end in the
same state.  The same holds for ``lltrade.Engine`` with several symbols,
commands for unknown symbols and ops, and per-call commands mixed in on the
engine's own books.
"""

import os
import random

import numpy as np
import pytest

import lltrade
from lltrade.enums import STP, EventKind, Op, Reason, Side

from reference_book import ReferenceBook, format_events
from streams import Command, apply, as_call, config_for_seed, stream

COMMANDS = max(500, int(os.environ.get("LLTRADE_DIFF_COMMANDS", "1000000")) // 10)
FIELDS = ("kind", "order_id", "side", "price", "qty", "remaining", "maker_id", "taker_id", "reason")
MASK64 = 2**64 - 1
CHUNK_SIZES = (1, 2, 3, 5, 8, 13, 40, 100, 1000, 5000)
BUFFER_SIZES = (1, 2, 3, 4, 6, 10, 25, 64, 300, 4096)


def command_array(cmds: list[Command], symbols: list[int] | None = None) -> np.ndarray:
    """``cmds`` as a ``COMMAND_DTYPE`` array (``protection`` None -> -1)."""
    dtype = lltrade.COMMAND_DTYPE
    rows = []
    for i, cmd in enumerate(cmds):
        row = cmd._asdict()
        row["protection"] = -1 if cmd.protection is None else cmd.protection
        row["post_only"] = int(cmd.post_only)
        row["symbol"] = symbols[i] if symbols else 0
        rows.append(tuple(int(row[name]) for name in dtype.names))
    return np.array(rows, dtype=dtype)


def per_call(book, cmd: Command) -> list[tuple[int, ...]]:
    """Per-call events; an out of range enum field (ValueError) is the batch's INVALID_FIELD."""
    try:
        events = apply(book, cmd)
    except ValueError:
        return [(EventKind.REJECTED, cmd.order_id, 0, 0, 0, 0, 0, 0, Reason.INVALID_FIELD)]
    symbol = book.symbol_id
    assert all(e.symbol == symbol for e in events), "per-call event with the wrong symbol"
    return [e.as_tuple() for e in events]


def book_state(book) -> tuple:
    return book.orders(), book.depth(1_000_000), book.state_hash() & MASK64, len(book)


class BatchRunner:
    """Feeds a command array to ``process`` in random chunks with random buffers."""

    def __init__(self, target, rng: random.Random, state) -> None:
        self.target = target  # an OrderBook or an Engine
        self.rng = rng
        self.state = state  # () -> something that must not change on ValueError

    def run(self, commands: np.ndarray, start: int) -> tuple[list[tuple], int]:
        """Process one chunk from ``start``.

        Returns the (command index, event, symbol) rows and the index of the
        first command not consumed.

        Consumes at least one command, retrying with a larger buffer when even
        the first does not fit.
        """
        rng = self.rng
        chunk = commands[start : start + rng.choice(CHUNK_SIZES)]
        size = rng.choice(BUFFER_SIZES)
        while True:
            events = np.zeros(size, dtype=lltrade.EVENT_DTYPE)
            before = self.state()
            try:
                n = self.target.process(chunk, events)
            except ValueError as exc:
                assert "event" in str(exc), exc
                assert self.state() == before, "a batch that raised changed the book"
                size *= 2
                continue
            break
        done = self.target.commands_processed
        assert 1 <= done <= len(chunk), (done, len(chunk))
        assert 0 <= n <= size
        cmd_index = events["cmd"][:n]
        assert np.all(np.diff(cmd_index) >= 0) and (n == 0 or cmd_index[-1] < done)
        columns = [events[f][:n].tolist() for f in FIELDS]
        symbols = events["symbol"][:n].tolist()
        return [
            (start + int(c), row, sym)
            for c, sym, row in zip(
                cmd_index.tolist(), symbols, zip(*columns, strict=True), strict=True
            )
        ], start + done


def group(rows, start: int, stop: int) -> list[list[tuple]]:
    """Batch event rows grouped per command index ``start .. stop - 1``."""
    out: list[list[tuple]] = [[] for _ in range(stop - start)]
    for index, row, _symbol in rows:
        out[index - start].append(row)
    return out


def mismatch(what: str, seed: int, index: int, cmd: Command, batch, calls) -> str:
    return (
        f"{what}: seed={seed} command index={index}: {as_call(cmd)}\n"
        f"  per-call:\n{format_events(calls)}\n  batch:\n{format_events(batch)}"
    )


@pytest.mark.parametrize("seed", range(5))
def test_orderbook_faces_agree(seed: int) -> None:
    config = config_for_seed(seed)
    cmds = stream(seed, COMMANDS // 5, config)
    commands = command_array(cmds)
    args, kwargs = config.book_args()
    calls_book = lltrade.OrderBook(*args, 7, **kwargs)
    batch_book = lltrade.OrderBook(*args, 7, **kwargs)
    rng = random.Random(seed)
    runner = BatchRunner(batch_book, rng, lambda: book_state(batch_book))
    pos = 0
    while pos < len(cmds):
        if rng.random() < 0.05:
            # The per-call face on the batch book too: both faces share one state.
            cmd = cmds[pos]
            got, want = per_call(batch_book, cmd), per_call(calls_book, cmd)
            assert got == want, mismatch("mixed faces differ", seed, pos, cmd, got, want)
            pos += 1
            continue
        rows, stop = runner.run(commands, pos)
        assert all(sym == 7 for _, _, sym in rows), "batch event with the wrong symbol"
        for index, batch_events in enumerate(group(rows, pos, stop), pos):
            cmd = cmds[index]
            want = per_call(calls_book, cmd)
            assert batch_events == want, mismatch(
                "faces differ", seed, index, cmd, batch_events, want
            )
        pos = stop
    assert book_state(batch_book) == book_state(calls_book)


def test_engine_faces_agree() -> None:
    """Three symbols interleaved through ``Engine.process`` vs one per-call book each."""
    rng = random.Random(2024)
    symbols = {3: 0, 70_000: 1, 12: 4}  # symbol id -> stream seed (a book shape each)
    engine = lltrade.Engine()
    mirrors, streams_ = {}, {}
    for symbol, seed in symbols.items():
        config = config_for_seed(seed)
        args, kwargs = config.book_args()
        book = engine.add_book(symbol, *args, **kwargs)
        assert book is engine.book(symbol)
        assert book.symbol_id == symbol
        mirrors[symbol] = lltrade.OrderBook(*args, symbol, **kwargs)
        streams_[symbol] = iter(stream(seed, COMMANDS // 5, config))
    assert sorted(engine.symbols()) == sorted(symbols)

    cmds: list[Command] = []
    syms: list[int] = []
    order = [symbol for symbol in symbols for _ in range(COMMANDS // 5)]
    rng.shuffle(order)
    for symbol in order:
        cmds.append(next(streams_[symbol]))
        syms.append(symbol)
        r = rng.random()
        if r < 0.002:  # an unknown symbol
            cmds.append(Command(Op.ADD, 5, Side.BUY, 1000, 1))
            syms.append(99)
        elif r < 0.004:  # an unknown op
            cmds.append(Command(rng.choice([0, 7, 255]), 6))
            syms.append(symbol)
    commands = command_array(cmds, syms)

    runner = BatchRunner(engine, rng, lambda: [book_state(engine.book(s)) for s in symbols])
    pos = 0
    while pos < len(cmds):
        symbol, cmd = syms[pos], cmds[pos]
        if symbol in symbols and cmd.op in set(Op) and rng.random() < 0.03:
            got, want = per_call(engine.book(symbol), cmd), per_call(mirrors[symbol], cmd)
            assert got == want, mismatch("mixed faces differ", symbol, pos, cmd, got, want)
            pos += 1
            continue
        rows, stop = runner.run(commands, pos)
        symbol_of = {index: sym for index, _, sym in rows}
        for index, batch_events in enumerate(group(rows, pos, stop), pos):
            symbol, cmd = syms[index], cmds[index]
            if symbol not in symbols:
                want = [(EventKind.REJECTED, cmd.order_id, 0, 0, 0, 0, 0, 0, Reason.UNKNOWN_SYMBOL)]
            elif cmd.op not in set(Op):
                want = [(EventKind.REJECTED, cmd.order_id, 0, 0, 0, 0, 0, 0, Reason.INVALID_FIELD)]
            else:
                want = per_call(mirrors[symbol], cmd)
            assert batch_events == want, mismatch(
                "faces differ", symbol, index, cmd, batch_events, want
            )
            if batch_events:
                assert symbol_of[index] == symbol, "batch event with the wrong symbol"
        pos = stop
    for symbol in symbols:
        assert book_state(engine.book(symbol)) == book_state(mirrors[symbol]), symbol


# -- the documented stopping rule of the batch face --------------------------------


def documented_bound(ref: ReferenceBook, cmd: Command) -> int:
    """docs/matching.md, "The batch face": the worst case of ``cmd``, before it runs.

    ``ref`` mirrors the batch book; it is a ``ReferenceBook`` because a
    replace's bound depends on the resting order's STP mode, which no query
    of the engine shows.
    """
    op, side, stp, qty = cmd.op, cmd.side, cmd.stp, cmd.qty
    if op == Op.MASS_CANCEL:
        bids, asks = ref.depth(1_000_000)
        return 1 + len(ref) + len(bids) + len(asks)
    if op not in (Op.ADD, Op.MARKET, Op.REPLACE):
        return 3 if op in (Op.CANCEL, Op.REDUCE) else 1
    if op == Op.REPLACE:
        resting = ref._by_id.get(cmd.order_id)
        if resting is None:
            return 1  # an unknown order
        side, stp = resting.side, resting.stp
    if side not in (Side.BUY, Side.SELL) or qty <= 0:
        return 1  # a bad side or quantity: rejected with one event
    if op != Op.MARKET and not ref._would_cross(side, cmd.price):
        return 3
    opposite = len([o for o in ref.orders() if o[1] != side])
    if stp != STP.CANCEL_RESTING:
        opposite = min(opposite, qty // ref.lot + 2)
    return 4 + 3 * opposite


def test_batch_stops_by_the_documented_bound() -> None:
    """``process`` runs the next command exactly when its documented worst case fits.

    Also checks that the documented bound is a worst case: no command yields
    more events.
    """
    violations: dict[tuple[str, str], str] = {}
    for seed in range(5):
        rng = random.Random(seed)
        config = config_for_seed(seed)
        cmds = stream(seed, 2000, config)
        commands = command_array(cmds)
        args, kwargs = config.book_args()
        book = lltrade.OrderBook(*args, **kwargs)
        ref = ReferenceBook(*args, **kwargs)
        pos = 0
        while pos < len(cmds):
            chunk = commands[pos : pos + rng.choice(CHUNK_SIZES)]
            size = rng.choice(BUFFER_SIZES)
            bound = documented_bound(ref, cmds[pos])
            where = f"seed {seed}, command {pos}, {len(ref)} resting orders"
            try:
                n = book.process(chunk, np.zeros(size, dtype=lltrade.EVENT_DTYPE))
            except ValueError:
                if bound <= size:
                    violations.setdefault(
                        ("ValueError although the first command fits", Op(cmds[pos].op).name),
                        f"{as_call(cmds[pos])} with {size} slots, bound {bound} ({where})",
                    )
                continue
            done = book.commands_processed
            if bound > size:
                violations.setdefault(
                    ("no ValueError although the first command may not fit", Op(cmds[pos].op).name),
                    f"{as_call(cmds[pos])} with {size} slots, bound {bound} ({where})",
                )
            written = 0
            for index in range(pos, pos + done + 1):
                if index == len(cmds) or index - pos == len(chunk):
                    break
                cmd = cmds[index]
                bound = documented_bound(ref, cmd)
                where = f"seed {seed}, command {index}, {len(ref)} resting orders"
                left = size - written
                if index == pos + done:  # processing stopped before this command
                    if bound <= left:
                        violations.setdefault(
                            ("stopped although the next command fits", Op(cmd.op).name),
                            f"{as_call(cmd)} with {left} slots left, bound {bound} ({where})",
                        )
                    break
                if index > pos and bound > left:
                    violations.setdefault(
                        ("ran a command that may not fit", Op(cmd.op).name),
                        f"{as_call(cmd)} with {left} slots left, bound {bound} ({where})",
                    )
                try:
                    produced = len(apply(ref, cmd))
                except ValueError:
                    produced = 1  # REJECTED INVALID_FIELD
                assert produced <= bound, f"{as_call(cmd)} yields {produced} > {bound} events"
                written += produced
            assert written == n
            pos += done
    assert not violations, "the batch face does not follow the documented bound:\n" + "\n".join(
        f"  {what} ({op}): {example}" for (what, op), example in sorted(violations.items())
    )
