"""pytest-benchmark suites of the journal (``make bench``).

* **append**: one ``JournalWriter.append_commands`` of a batch (16 commands,
  a lightly loaded daemon's read, or 4096, a loaded one's) under the
  durability policies ``none`` (one ``os.write`` to the page cache) and
  ``batch`` (the write and an ``fdatasync``).  Journals are written under
  pytest's temporary directory, so ``batch`` measures that file system's
  fdatasync.
* **recover**: ``lltrade.journal.recover`` of a journal of 100k commands
  into a fresh engine (read, verify every checksum, ``Engine.process``),
  written in records of 4096 and of 16 commands.
* **snapshot**: ``engine_snapshot`` (the engine stalls for it),
  ``write_snapshot`` (write, fsync, rename) and ``restore_engine`` of a book
  of 100k resting orders.

Every benchmark checks what it produced: the records read back, the state hash
after recovery, the snapshot read back and the restored book.  The standalone
``benchmark/journal_bench.py`` measures the same things over millions of
commands; its engine helpers are reused here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lltrade
from journal_bench import deep_engine, new_engine
from lltrade.journal import (
    JournalReader,
    JournalWriter,
    RecordType,
    engine_snapshot,
    read_snapshot,
    recover,
    restore_engine,
    write_snapshot,
)
from lltrade.workload import Workload, WorkloadSpec, generate

COMMANDS = 100_000
DEEP_ORDERS = 100_000
RECV_NS = 1_700_000_000_000_000_000

Setup = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


@functools.cache
def stream() -> Workload:
    return generate(WorkloadSpec(commands=COMMANDS, seed=1))


def run_once(benchmark: Any, target: Callable[..., Any], setup: Setup, rounds: int) -> Any:
    return benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)


# -- append -----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["none", "batch"])
@pytest.mark.parametrize("batch", [16, 4096])
def test_append(benchmark: Any, tmp_path: Path, policy: str, batch: int) -> None:
    """One append of ``batch`` commands to an open journal; every round adds a record."""
    rows = stream().commands[:batch]
    rounds, warmup = 200, 2
    with JournalWriter(tmp_path / "journal", policy) as writer:
        benchmark.pedantic(
            writer.append_commands, args=(rows, RECV_NS), rounds=rounds, warmup_rounds=warmup
        )
        last, synced = writer.last_seq, writer.synced_seq
    assert last == rounds + warmup
    if policy == "batch":
        assert synced == last
    records = list(JournalReader(tmp_path / "journal"))
    benchmark.extra_info["commands"] = batch
    benchmark.extra_info["bytes"] = records[0].size  # the record, packed
    assert [r.seq for r in records] == list(range(1, last + 1))
    assert all(r.type == RecordType.PACKED_COMMANDS and r.recv_ns == RECV_NS for r in records)
    assert all(np.array_equal(r.commands(), rows) for r in (records[0], records[-1]))


# -- recover ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[4096, 16], ids=lambda n: f"{n}-per-record")
def journal_of_stream(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int]]:
    """The stream written in records of ``param`` commands; (directory, records)."""
    size: int = request.param
    path = tmp_path_factory.mktemp(f"recover-{size}") / "journal"
    commands = stream().commands
    with JournalWriter(path, "none") as writer:
        for i in range(0, len(commands), size):
            writer.append_commands(commands[i : i + size], RECV_NS)
        records = writer.last_seq
    yield path, records


def test_recover(benchmark: Any, journal_of_stream: tuple[Path, int]) -> None:
    path, records = journal_of_stream
    w = stream()
    engines: list[lltrade.Engine] = []
    results: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        engines[:] = [new_engine(w.spec)]
        return (engines[0],), {}

    def recover_all(engine: lltrade.Engine) -> None:
        results.append(recover(engine, path, use_snapshot=False))

    run_once(benchmark, recover_all, setup, 10)
    benchmark.extra_info["commands"] = COMMANDS
    benchmark.extra_info["records"] = records
    for result in results:
        assert (result.records, result.commands, result.last_seq) == (records, COMMANDS, records)
        assert result.snapshot is None and result.truncated_tail is None
    book = engines[-1].book(0)
    assert book.state_hash() == w.state_hash()
    assert len(book) == len(w.resting)


# -- snapshots ----------------------------------------------------------------------------


@functools.cache
def deep_book() -> tuple[lltrade.Engine, bytes]:
    """An engine holding DEEP_ORDERS resting orders, and its snapshot."""
    engine = deep_engine(stream().spec, DEEP_ORDERS)
    return engine, engine_snapshot(engine)


def test_engine_snapshot(benchmark: Any) -> None:
    """Capturing the books: the daemon's engine stalls for this."""
    engine, reference = deep_book()
    state = benchmark.pedantic(engine_snapshot, args=(engine,), rounds=20, warmup_rounds=1)
    benchmark.extra_info["orders"] = DEEP_ORDERS
    benchmark.extra_info["bytes"] = len(state)
    assert state == reference
    assert len(state) == 16 + 72 + DEEP_ORDERS * 40


def test_write_snapshot(benchmark: Any, tmp_path: Path) -> None:
    """Writing a snapshot file: temporary file, fsync, rename, fsync of the directory."""
    _, state = deep_book()
    seqs = iter(range(1, 10_000))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (tmp_path, next(seqs), state, {"round": True}), {}

    paths: list[Path] = []

    def write(*args: Any) -> None:
        paths.append(write_snapshot(*args))

    run_once(benchmark, write, setup, 20)
    benchmark.extra_info["bytes"] = len(state)
    assert len(set(paths)) == len(paths) == 21  # warm-up included
    for path in (paths[0], paths[-1]):
        snap = read_snapshot(path)
        assert snap.state == state and snap.extra == {"round": True}
    assert not list(tmp_path.glob(".snapshot-*.tmp"))


def test_restore_engine(benchmark: Any) -> None:
    """Rebuilding the books from a snapshot into a fresh engine (recovery's first step)."""
    engine, state = deep_book()
    book = engine.book(0)
    engines: list[lltrade.Engine] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        fresh = lltrade.Engine()
        fresh.add_book(0, book.min_price, book.max_price, book.tick, book.lot)
        engines[:] = [fresh]
        return (fresh, state), {}

    run_once(benchmark, restore_engine, setup, 20)
    benchmark.extra_info["orders"] = DEEP_ORDERS
    restored = engines[-1].book(0)
    assert len(restored) == DEEP_ORDERS
    assert restored.state_hash() == book.state_hash()
    assert restored.resting() == book.resting()
