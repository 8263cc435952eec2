"""Process set-up (``lltrade.runtime``): the loop's pinned core, and where the helper
threads go (the journal's prefaulting thread, the snapshot writer)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_mapped_segment import threads_left, threads_named

from lltrade import runtime
from lltrade.config import default_config
from lltrade.journal import Durability, JournalWriter, engine_snapshot, list_snapshots
from lltrade.runtime import SetupError, helper_cpus, pin_cpu
from lltrade.snapshots import SnapshotWriter


@pytest.fixture
def restore_affinity(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[int]]:
    before = os.sched_getaffinity(0)
    monkeypatch.setattr(runtime, "_helper_cpus", None)
    yield before
    os.sched_setaffinity(0, before)


def test_pinning_leaves_the_other_cpus_to_the_helpers(restore_affinity: set[int]) -> None:
    assert helper_cpus() is None  # nothing pinned: helpers go wherever the loop may
    cpu = max(restore_affinity)
    pin_cpu(cpu)
    assert os.sched_getaffinity(0) == {cpu}
    assert helper_cpus() == (frozenset(restore_affinity - {cpu}) or None)
    with pytest.raises(SetupError, match="not available"):
        pin_cpu(10_000)


def test_helper_threads_run_off_the_pinned_core(tmp_path: Path, restore_affinity: set[int]) -> None:
    cpu, helpers = max(restore_affinity), {min(restore_affinity)}
    os.sched_setaffinity(0, {cpu})  # as pin_cpu leaves the loop's thread
    assert threads_left("lltrade-pages") == []  # none from an earlier test
    with JournalWriter(tmp_path, "none", helper_cpus=helpers) as writer:
        assert writer.mapped
        (tid,) = threads_named("lltrade-pages")
        assert os.sched_getaffinity(tid) == helpers

    where: list[set[int]] = []

    async def snapshot() -> None:
        with JournalWriter(tmp_path, "none") as journal:
            snapshots = SnapshotWriter(asyncio.get_running_loop(), journal, 2, helper_cpus=helpers)
            state = engine_snapshot(default_config().new_engine())
            snapshots.start(journal.last_seq, state, {}, 0.0)
            assert snapshots._pool is not None  # its one worker thread, started
            snapshots._pool.submit(lambda: where.append(os.sched_getaffinity(0))).result()
            await snapshots.settle()
            snapshots.close()

    asyncio.run(snapshot())
    assert where == [helpers] and list_snapshots(tmp_path)


@pytest.mark.parametrize("durability", ["batch", "interval"])
def test_syncing_policies_map_without_prefaulting(tmp_path: Path, durability: Durability) -> None:
    """Their fdatasyncs would write the pages faulted in ahead and leave them clean: no
    thread for them, the writer takes its own page faults."""
    with JournalWriter(tmp_path, durability, helper_cpus={0}) as writer:
        assert writer.mapped and threads_left("lltrade-pages") == []
        assert writer._map is not None and writer._map.prefaulted == 0
