"""Snapshots written off the event loop.

The daemon captures the engine's state on the loop (``engine_snapshot``: the
only time the engine stalls, about 0.35 µs per resting order); writing the
file (temporary file, fsync, rename, fsync of the directory) and pruning what
it covers happen in one worker thread, so no fsync ever runs on the loop
(DESIGN.md: nothing on that thread blocks unless the durability policy asks
for it).  When the file is in place, the journal's ``SNAPSHOT_MARK`` record is
appended back on the loop, which owns the journal.  One snapshot is written
at a time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lltrade.journal import JournalError, JournalWriter, prune, write_snapshot

__all__ = ["SnapshotWriter"]

log = logging.getLogger("lltrade.daemon")


class SnapshotWriter:
    """Writes the daemon's snapshots in a worker thread.

    Parameters
    ----------
    loop
        The daemon's event loop (the mark is appended there).
    journal
        The journal the snapshots cover.
    keep_snapshots
        How many snapshots ``prune`` keeps.
    helper_cpus
        The CPUs the worker thread runs on (not the loop's pinned core); None:
        wherever the loop may.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        journal: JournalWriter,
        keep_snapshots: int,
        *,
        helper_cpus: Collection[int] | None = None,
    ) -> None:
        self._loop = loop
        self._cpus = helper_cpus
        self._journal = journal
        self._keep = keep_snapshots
        self._pool: ThreadPoolExecutor | None = None
        self._job: asyncio.Future[tuple[Path, list[Path]]] | None = None
        self.written = 0  #: snapshots written and marked in the journal
        self.failed = 0  #: snapshots that could not be written (logged; the journal goes on)

    @property
    def busy(self) -> bool:
        """A snapshot is being written."""
        return self._job is not None and not self._job.done()

    def start(self, seq: int, state: bytes, extra: dict[str, Any], stalled_s: float) -> None:
        """Write the snapshot of records 1..``seq`` in the worker thread."""
        if self.busy:
            raise RuntimeError("a snapshot is already being written")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="lltrade-snapshot", initializer=self._on_cpus
            )
        self._job = self._loop.run_in_executor(self._pool, self._write, seq, state, extra)
        self._job.add_done_callback(
            functools.partial(self._written, seq, stalled_s, time.perf_counter())
        )

    def _on_cpus(self) -> None:
        """The worker thread leaves the loop's pinned core for the helper CPUs, if any."""
        if self._cpus:
            try:
                os.sched_setaffinity(0, self._cpus)
            except OSError as exc:
                log.warning("the snapshot writer stays on the loop's CPU: %s", exc)

    def write_now(self, seq: int, state: bytes, extra: dict[str, Any], stalled_s: float) -> None:
        """Write the snapshot here and now (shutdown: nothing else is left to run)."""
        if self.busy:
            raise RuntimeError("a snapshot is already being written")
        started = time.perf_counter()
        try:
            result = self._write(seq, state, extra)
        except (JournalError, OSError) as exc:
            self._failure(seq, exc)
            return
        self._mark(seq, result, stalled_s, started)

    async def settle(self) -> None:
        """Wait for the snapshot being written, if any (its mark appended)."""
        job = self._job
        if job is not None and not job.done():
            await asyncio.wait([job])
        await asyncio.sleep(0)  # its done callback (the mark) has run when this returns

    def close(self) -> None:
        """Stop the worker thread (after :meth:`settle`)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- worker thread -----------------------------------------------------------------------

    def _write(self, seq: int, state: bytes, extra: dict[str, Any]) -> tuple[Path, list[Path]]:
        directory = self._journal.directory
        path = write_snapshot(directory, seq, state, extra)
        return path, prune(directory, seq, keep_snapshots=self._keep)

    # -- back on the loop ----------------------------------------------------------------------

    def _written(
        self,
        seq: int,
        stalled_s: float,
        started: float,
        job: asyncio.Future[tuple[Path, list[Path]]],
    ) -> None:
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None:
            self._failure(seq, exc)
            return
        self._mark(seq, job.result(), stalled_s, started)

    def _mark(
        self, seq: int, result: tuple[Path, list[Path]], stalled_s: float, started: float
    ) -> None:
        path, pruned = result
        journal = self._journal
        if journal.closed or journal.failed:
            return  # the journal ended meanwhile: the file stands, recovery finds it
        try:
            journal.append_snapshot_mark(seq, path)
        except JournalError:
            return  # the writer is failed and has logged why; the daemon stops taking orders
        self.written += 1
        log.info(
            "snapshot",
            extra={
                "seq": seq,
                "path": str(path),
                "stall_ms": round(stalled_s * 1000, 3),
                "write_ms": round((time.perf_counter() - started) * 1000, 3),
                "pruned": len(pruned),
            },
        )

    def _failure(self, seq: int, exc: BaseException) -> None:
        self.failed += 1
        log.error(
            "snapshot not written: recovery replays more of the journal until the next one",
            extra={"seq": seq, "error": str(exc)},
        )
