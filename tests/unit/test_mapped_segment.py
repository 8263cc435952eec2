"""``lltrade._records.MappedSegment``: the journal's appends as copies into a mapped file.

The writer's use of it (preallocation, fallback to ``write(2)``, trimming) is tested
in test_journal.py; here, the mapping itself: what a store puts in the file, the
bounds it keeps, and the thread that faults pages in ahead of the stores.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import resource
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lltrade import COMMAND_DTYPE
from lltrade._records import MappedSegment, pack_commands, packed_size_bound, seal_record

MB = 1 << 20


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "segment", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def rows(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=COMMAND_DTYPE)
    out["order_id"] = np.arange(1, n + 1)
    out["price"] = 10_000 + np.arange(n) % 7
    out["qty"] = 1
    out["op"] = 1
    return out


def thread_faults() -> int:
    """Page faults taken by this thread (not the prefaulting one)."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_minflt + usage.ru_majflt


def test_a_stored_record_is_in_the_file_byte_for_byte(fd: int, tmp_path: Path) -> None:
    os.posix_fallocate(fd, 0, 64 * 1024)
    batch = rows(100)
    buf = bytearray(packed_size_bound(len(batch)))
    want = bytes(buf[: pack_commands(buf, batch, 7, 123)])
    segment = MappedSegment(fd, MB)
    assert segment.store_commands(64, 64 * 1024, buf, batch, 7, 123) == len(want)
    other = bytearray(b"\x01\x02\x03" + bytes(5) + bytes(100))
    other[24:27] = b"abc"
    total = seal_record(other, 3, 2, 0, 8)
    assert segment.store_record(64 + len(want), 64 * 1024, other, total) == total
    data = (tmp_path / "segment").read_bytes()  # through read(2): the same page cache
    assert data[64 : 64 + len(want)] == want
    assert data[64 + len(want) : 64 + len(want) + total] == bytes(other[:total])
    assert zlib.crc32(data[64 + len(want) : 64 + len(want) + 16]) == int.from_bytes(
        data[64 + len(want) + 16 : 64 + len(want) + 20], "little"
    )
    assert not any(data[64 + len(want) + total :])  # nothing past the records
    segment.close()
    assert segment.closed


def test_a_store_never_passes_its_limit(fd: int) -> None:
    os.posix_fallocate(fd, 0, 4096)
    segment = MappedSegment(fd, MB)
    batch = rows(500)
    buf = bytearray(packed_size_bound(len(batch)))
    assert segment.store_commands(64, 200, buf, batch, 1, 0) == 0  # no room: nothing stored
    size = segment.needed
    assert size > 136 and os.pread(fd, 4096, 0) == bytes(4096)
    assert segment.store_commands(64, 64 + size, buf, batch, 1, 0) == size  # exactly room
    assert segment.store_commands(64, 64, bytearray(8), batch, 1, 0) == -packed_size_bound(500)
    with pytest.raises(ValueError, match="must lie in the"):
        segment.store_commands(64, MB + 1, buf, batch, 1, 0)  # past the mapping
    with pytest.raises(ValueError, match="must lie in the"):
        segment.store_record(100, 50, buf, 24)
    with pytest.raises(ValueError, match="a record of 10 bytes"):
        segment.store_record(0, 4096, buf, 10)
    segment.close()
    segment.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        segment.store_commands(64, 4096, buf, batch, 1, 0)
    with pytest.raises(ValueError, match="positive size"):
        MappedSegment(fd, 0)
    with pytest.raises(OSError):
        MappedSegment(-1, MB)  # EBADF, as an OSError


def test_pages_are_faulted_in_ahead_of_the_stores_by_another_thread(fd: int) -> None:
    os.posix_fallocate(fd, 0, 4 * MB)
    segment = MappedSegment(fd, 4 * MB)
    segment.prefault(0, 4 * MB)
    deadline = time.monotonic() + 30
    while segment.prefaulted < 2 * MB and time.monotonic() < deadline:
        time.sleep(0.001)
    assert segment.prefaulted >= 2 * MB  # the window ahead of offset 0
    assert segment.prefaulted < 4 * MB  # and no further, until stores come near
    record = bytearray(4096)
    total = seal_record(record, 4096 - 24, 2, 0, 1)
    before = thread_faults()
    for offset in range(0, MB, 4096):  # a store into each of the first 256 pages
        segment.store_record(offset, 4 * MB, record, total)
    faults = thread_faults() - before
    # the same stores into a mapping of a file nobody faulted in: a fault per page
    other = mmap.mmap(-1, MB)
    before = thread_faults()
    for offset in range(0, MB, 4096):
        other[offset : offset + 4096] = record
    cold = thread_faults() - before
    other.close()
    # (a sanitizer build takes a few faults of its own, on its shadow memory)
    assert cold >= 200 and faults * 4 < cold, (faults, cold)
    segment.close()


def test_prefaulting_stops_at_the_limit_given(fd: int) -> None:
    """It never touches the file past the preallocated end (a page there is SIGBUS)."""
    os.posix_fallocate(fd, 0, 64 * 1024)
    segment = MappedSegment(fd, 8 * MB)
    segment.prefault(0, 64 * 1024)
    deadline = time.monotonic() + 30
    while segment.prefaulted < 64 * 1024 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    assert segment.prefaulted == 64 * 1024
    assert os.fstat(fd).st_size == 64 * 1024
    segment.close()


def threads_named(name: str) -> list[int]:
    """This process's threads called ``name`` (their ids)."""
    tids = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread ending
            if (task / "comm").read_text().strip() == name:
                tids.append(int(task.name))
    return tids


def threads_left(name: str) -> list[int]:
    """``threads_named`` once the threads called ``name`` have left ``/proc``, or after 5 s.

    ``pthread_join`` returns when the kernel clears the thread's id, a moment before
    the kernel reaps the task and its ``/proc/self/task`` entry goes away."""
    deadline = time.monotonic() + 5
    while (tids := threads_named(name)) and time.monotonic() < deadline:
        time.sleep(0.001)
    return tids


def test_the_prefaulting_thread_runs_where_it_is_told(fd: int) -> None:
    """Off the writer's pinned core: its page faults cost that core nothing."""
    os.posix_fallocate(fd, 0, 4096)
    cpu = min(os.sched_getaffinity(0))
    assert threads_left("lltrade-pages") == []  # none from an earlier test
    segment = MappedSegment(fd, MB)
    (tid,) = threads_named("lltrade-pages")
    assert os.sched_getaffinity(tid) == os.sched_getaffinity(0)  # inherited
    segment.run_prefault_on({cpu})
    assert os.sched_getaffinity(tid) == {cpu}
    with pytest.raises(ValueError, match="at least one CPU"):
        segment.run_prefault_on(set())
    with pytest.raises(ValueError, match="CPU -1"):
        segment.run_prefault_on({-1})
    segment.close()
    assert threads_left("lltrade-pages") == []  # stopped and joined
