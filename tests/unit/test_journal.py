"""The write-ahead journal, snapshots and recovery (``lltrade.journal``, docs/journal.md).

Corruption is made by editing the files the writer produced, at offsets the
reader reports; disk failures by monkeypatching ``os.write`` and
``os.fdatasync`` (no small tmpfs or loop device is needed).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lltrade
from lltrade import COMMAND_DTYPE, EVENT_DTYPE, Op, Side
from lltrade.cli import main as cli_main
from lltrade.journal import (
    COMMAND_TYPES,
    FILE_HEADER_SIZE,
    FLAG_STATE,
    RECORD_HEADER_SIZE,
    JournalCorrupt,
    JournalError,
    JournalReader,
    JournalWriter,
    Record,
    RecordType,
    engine_snapshot,
    latest_snapshot,
    list_segments,
    list_snapshots,
    prune,
    read_snapshot,
    recover,
    replay,
    restore_engine,
    write_snapshot,
)
from lltrade.workload import WorkloadSpec, generate

SEED = 3
BAND = (1, 2_000_000)


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    """50,000 commands of the workload mix (symbol 0, band 1..2,000,000)."""
    return generate(WorkloadSpec(commands=50_000, seed=SEED)).commands


def new_engine(symbol: int = 0) -> lltrade.Engine:
    engine = lltrade.Engine()
    engine.add_book(symbol, *BAND)
    return engine


def random_batches(commands: np.ndarray, seed: int, most: int = 2000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(commands):
        k = int(rng.integers(1, most + 1))
        out.append(commands[i : i + k])
        i += k
    return out


def run_live(engine: lltrade.Engine, batches: list[np.ndarray], first: int = 0) -> np.ndarray:
    """Run ``batches`` as the daemon does; all events, ``cmd`` counted from ``first``."""
    events = np.zeros(256, dtype=EVENT_DTYPE)  # small: exercises early stops and growth
    out = []
    base = first
    for rows in batches:
        done = 0
        while done < len(rows):
            try:
                n = engine.process(rows[done:], events)
            except ValueError:
                events = np.zeros(len(events) * 4, dtype=EVENT_DTYPE)
                continue
            chunk = events[:n].copy()
            chunk["cmd"] += base + done
            out.append(chunk)
            done += engine.commands_processed
        base += len(rows)
    return np.concatenate(out) if out else np.zeros(0, dtype=EVENT_DTYPE)


def collector() -> tuple[list[np.ndarray], Any]:
    out: list[np.ndarray] = []

    def on_events(events: np.ndarray, first: int) -> None:
        chunk = events.copy()
        chunk["cmd"] += first
        out.append(chunk)

    return out, on_events


def assert_same_events(a: np.ndarray, b: np.ndarray) -> None:
    assert len(a) == len(b)
    names = EVENT_DTYPE.names
    assert names is not None
    for name in names:  # field by field: concatenation does not copy padding bytes
        assert np.array_equal(a[name], b[name]), name


def assert_same_rows(a: np.ndarray, b: np.ndarray) -> None:
    assert len(a) == len(b)
    names = COMMAND_DTYPE.names
    assert names is not None
    for name in names:  # field by field: a copy does not copy numpy's padding bytes
        assert np.array_equal(a[name], b[name]), name


def write_journal(
    path: Path, batches: list[np.ndarray], *, segment_bytes: int = 1 << 20, **kw: Any
) -> list[int]:
    with JournalWriter(path, "none", segment_bytes=segment_bytes, **kw) as writer:
        return [writer.append_commands(rows, 1_000 + i) for i, rows in enumerate(batches)]


def small_journal(path: Path, records: int = 5, rows: int = 10) -> list[Record]:
    """``records`` COMMANDS records of ``rows`` rows each in one segment; its records."""
    cmds = generate(WorkloadSpec(commands=records * rows, seed=1)).commands
    write_journal(path, [cmds[i : i + rows] for i in range(0, len(cmds), rows)])
    return list(JournalReader(path))


def last_segment(path: Path) -> Path:
    return list_segments(path)[-1][1]


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def records_of(path: Path, **kw: Any) -> tuple[JournalReader, list[int]]:
    reader = JournalReader(path, **kw)
    return reader, [r.seq for r in reader]


# -- writing and reading ------------------------------------------------------------------------


def test_round_trip(tmp_path: Path, stream: np.ndarray) -> None:
    batches = random_batches(stream[:5000], seed=1, most=700)
    with JournalWriter(tmp_path, "none") as writer:
        assert writer.append_session({"event": "logon", "account": 7}) == 1
        seqs = [writer.append_commands(rows, 10**18 + i) for i, rows in enumerate(batches)]
        mark = writer.append_snapshot_mark(42, tmp_path / "snapshot-00000000000000000042.llts")
        assert writer.last_seq == mark == len(batches) + 2
    assert seqs == list(range(2, len(batches) + 2))
    records = list(JournalReader(tmp_path))
    assert [r.seq for r in records] == list(range(1, mark + 1))
    assert records[0].type == RecordType.SESSION
    assert records[0].session() == {"event": "logon", "account": 7}
    for i, (rec, rows) in enumerate(zip(records[1:-1], batches, strict=True)):
        assert rec.type == RecordType.PACKED_COMMANDS and rec.flags & FLAG_STATE
        assert rec.recv_ns == 10**18 + i
        assert rec.command_count() == len(rows)
        got = rec.commands()
        assert got.dtype == COMMAND_DTYPE
        assert_same_rows(got, rows)
        assert not got.view(np.uint8).reshape(-1, 56)[:, [49, 52, 53, 54, 55]].any()  # padding
    assert records[-1].snapshot_mark()[::2] == (42, "snapshot-00000000000000000042.llts")
    with pytest.raises(TypeError, match="not a batch of commands"):
        records[0].commands()


@pytest.mark.parametrize("mapped", [False, True], ids=["write", "mapped"])
def test_each_append_is_one_write_or_a_copy(
    tmp_path: Path, stream: np.ndarray, mapped: bool
) -> None:
    writer = JournalWriter(tmp_path, "none", mapped=mapped)
    assert writer.mapped == mapped
    before = write_syscalls()
    writer.append_commands(stream[:4096], 5)
    writer.append_commands(stream[4096:4097], 6)
    writer.append_session({"event": "logout"})
    # the kernel's count of this process's writes: mapped, appends are copies
    assert write_syscalls() - before == (0 if mapped else 3)
    writer.close()
    assert writer.segment_path.stat().st_size == FILE_HEADER_SIZE + writer.bytes_written
    sizes = [r.size for r in JournalReader(tmp_path)]
    assert sum(sizes) == writer.bytes_written
    assert sizes[0] < (24 + 16 + 4096 * 56) // 3  # packed: well under a third of the raw rows
    assert all(size % 8 == 0 for size in sizes)  # padded to 8 bytes


def write_syscalls() -> int:
    """write(2) calls this process has made (``syscw`` of /proc/self/io)."""
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["syscw"])


def test_non_contiguous_rows_and_bad_dtype(tmp_path: Path, stream: np.ndarray) -> None:
    with JournalWriter(tmp_path, "none") as writer:
        writer.append_commands(stream[:200:2], 0)  # a strided view: copied
        with pytest.raises(TypeError, match="COMMAND_DTYPE"):
            writer.append_commands(np.zeros(3, dtype=np.int64), 0)  # type: ignore[arg-type]
        writer.append_commands(stream[:0], 0)  # an empty batch is a valid record
    recs = list(JournalReader(tmp_path))
    assert_same_rows(recs[0].commands(), stream[:200:2])
    assert recs[1].command_count() == 0


@pytest.mark.parametrize("mapped", [False, True], ids=["write", "mapped"])
def test_rotation_by_size(tmp_path: Path, stream: np.ndarray, mapped: bool) -> None:
    batches = [stream[i : i + 100] for i in range(0, 5000, 100)]
    big = stream[10_000:12_000]  # packed, more than a segment
    with JournalWriter(tmp_path, "none", segment_bytes=4096, mapped=mapped) as writer:
        for rows in batches[:25]:
            writer.append_commands(rows, 0)
        big_seq = writer.append_commands(big, 0)
        for rows in batches[25:]:
            writer.append_commands(rows, 0)
    segments = list_segments(tmp_path)
    assert len(segments) > 5
    for first_seq, path in segments:
        assert path.name == f"journal-{first_seq:020d}.lltj"
        with open(path, "rb") as f:
            assert struct.unpack_from("<Q", f.read(24), 16)[0] == first_seq
        assert path.stat().st_size <= 4096 or first_seq == big_seq
    # every segment holds whole records; the sequence runs on across them
    reader, seqs = records_of(tmp_path)
    assert seqs == list(range(1, 52))
    assert sum(s.records for s in reader.segments_read) == 51
    got = np.concatenate([r.commands() for r in JournalReader(tmp_path)])
    assert_same_rows(got, np.concatenate([*batches[:25], big, *batches[25:]]))


def test_writer_from_config(tmp_path: Path) -> None:
    from lltrade.config import JournalConfig

    config = JournalConfig(dir=str(tmp_path / "j"), durability="interval", interval_ms=7)
    with JournalWriter.from_config(config) as writer:
        assert (writer.directory, writer.durability) == (tmp_path / "j", "interval")
        assert writer._interval_ns == 7_000_000


def test_reopen_continues_in_a_new_segment(tmp_path: Path, stream: np.ndarray) -> None:
    write_journal(tmp_path, [stream[:10], stream[10:20]])
    with JournalWriter(tmp_path, "batch") as writer:
        assert writer.next_seq == 3 and writer.synced_seq == 2
        assert writer.segment_path.name == "journal-00000000000000000003.lltj"
    # the writer left an empty segment behind: the next one replaces it
    with JournalWriter(tmp_path, "none") as writer:
        assert writer.append_commands(stream[20:30], 0) == 3
    assert [s for s, _ in list_segments(tmp_path)] == [1, 3]
    assert records_of(tmp_path)[1] == [1, 2, 3]


def test_one_writer_per_directory(tmp_path: Path) -> None:
    with JournalWriter(tmp_path, "none"), pytest.raises(JournalError, match="in use"):
        JournalWriter(tmp_path, "none")
    JournalWriter(tmp_path, "none").close()  # released on close


def test_writer_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        JournalWriter(tmp_path, "always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment_bytes"):
        JournalWriter(tmp_path, "none", segment_bytes=100)


def test_empty_directory_reads_nothing(tmp_path: Path) -> None:
    reader, seqs = records_of(tmp_path)
    assert seqs == [] and reader.last_seq is None and reader.truncated_tail is None
    with pytest.raises(JournalError, match="no such journal directory"):
        JournalReader(tmp_path / "missing")


# -- torn tails -----------------------------------------------------------------------------------

# Where the crash cut the last record, counted from its first byte.
CUTS = {
    "header 1 byte": 1,
    "header 23 bytes": 23,
    "payload 1 byte": RECORD_HEADER_SIZE + 1,
    "payload half": RECORD_HEADER_SIZE + 60,
    "payload but 1 byte": -1,
}


@pytest.mark.parametrize("cut", CUTS.values(), ids=CUTS.keys())
def test_torn_tail_is_cut_off_with_a_warning(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    records = small_journal(tmp_path)
    path = last_segment(tmp_path)
    last = records[-1]
    end = last.offset + last.size
    keep = last.offset + cut if cut > 0 else end + cut
    os.truncate(path, keep)
    # repair=False only reports it
    with caplog.at_level(logging.WARNING, "lltrade.journal"):
        reader, seqs = records_of(tmp_path, repair=False)
    assert seqs == [1, 2, 3, 4]
    assert reader.truncated_tail == (path, last.offset)
    assert path.stat().st_size == keep
    assert "recovery will cut it off" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "lltrade.journal"):
        reader, seqs = records_of(tmp_path)
    assert seqs == [1, 2, 3, 4] and reader.last_seq == 4
    assert reader.truncated_tail == (path, last.offset)
    assert path.stat().st_size == last.offset  # cut back to the last good record
    assert f"{path} at offset {last.offset}" in caplog.text
    reader, seqs = records_of(tmp_path)  # clean now
    assert seqs == [1, 2, 3, 4] and reader.truncated_tail is None
    with JournalWriter(tmp_path, "none") as writer:  # and writable again, seq 5 reused
        assert writer.append_session({}) == 5


def test_bad_checksum_on_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    records = small_journal(tmp_path)
    path = last_segment(tmp_path)
    flip(path, records[-1].offset + RECORD_HEADER_SIZE + len(records[-1].payload) // 2)
    reader, seqs = records_of(tmp_path)
    assert seqs == [1, 2, 3, 4] and reader.truncated_tail == (path, records[-1].offset)
    assert path.stat().st_size == records[-1].offset


def test_zero_filled_tail_is_unused_space_not_a_torn_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Zeros from a record boundary on: what a mapped segment's writer had preallocated
    but not reached when it was killed.  Nothing is lost; recovery trims it quietly."""
    records = small_journal(tmp_path)
    path = last_segment(tmp_path)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(bytes(4096))
    with caplog.at_level(logging.INFO, "lltrade.journal"):
        reader, seqs = records_of(tmp_path, repair=False)
    assert seqs == [1, 2, 3, 4, 5] and reader.truncated_tail is None
    assert path.stat().st_size == size + 4096  # a look changes nothing
    assert reader.segments_read[-1].bytes == size
    with caplog.at_level(logging.INFO, "lltrade.journal"):
        reader, seqs = records_of(tmp_path)
    assert seqs == [1, 2, 3, 4, 5] and reader.truncated_tail is None
    assert path.stat().st_size == size == records[-1].offset + records[-1].size
    assert "trimmed 4096 bytes of unused preallocated space after record 5" in caplog.text
    assert "torn" not in caplog.text


def test_zero_filled_tail_of_a_segment_that_is_not_the_last_is_damage(
    tmp_path: Path, stream: np.ndarray
) -> None:
    write_journal(tmp_path, [stream[i : i + 50] for i in range(0, 1000, 50)], segment_bytes=4096)
    first = list_segments(tmp_path)[0][1]
    size = first.stat().st_size
    with open(first, "ab") as f:
        f.write(bytes(4096))
    with pytest.raises(JournalCorrupt, match="zero-filled tail, and later segments") as exc:
        records_of(tmp_path)
    assert exc.value.path == first and exc.value.offset == size


def test_torn_segment_header_removes_the_new_segment(tmp_path: Path) -> None:
    small_journal(tmp_path)
    torn = tmp_path / "journal-00000000000000000006.lltj"
    torn.write_bytes(b"LLTJ\r\n")  # crash while a new segment was being started
    reader, seqs = records_of(tmp_path)
    assert seqs == [1, 2, 3, 4, 5]
    assert reader.truncated_tail == (torn, 0) and not torn.exists()
    assert reader.last_seq == 5


# How far the copy of the last record into a mapped segment got when the process was
# killed: the header up to its CRC first, then the payload, the record CRC last
# (_records._store), with the segment's zeros after whatever was stored.
MAPPED_CUTS = {
    "header 1 byte": (1, None),
    "header 19 bytes": (19, None),
    "header": (20, None),
    "header, half the payload": (20, 0.5),
    "header, payload, no record CRC": (20, 1.0),
}


_KILLED_WHILE_MAPPED = """
import os, signal, sys
from lltrade.journal import JournalWriter
from lltrade.workload import WorkloadSpec, generate
rows = generate(WorkloadSpec(commands=300, seed=1)).commands
writer = JournalWriter(sys.argv[1], "none")
assert writer.mapped
for batch in (rows[:50], rows[50:60], rows[60:200]):
    writer.append_commands(batch, 0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_mapped_writer(directory: Path) -> tuple[Path, list[Record]]:
    """A journal whose mapped writer was killed after three appends: its segment, as the
    kill left it (preallocated, zeros after the records), and the records."""
    done = subprocess.run([sys.executable, "-c", _KILLED_WHILE_MAPPED, str(directory)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    path = last_segment(directory)
    records = list(JournalReader(directory, repair=False))
    assert [r.seq for r in records] == [1, 2, 3]
    assert path.stat().st_size >= records[-1].offset + records[-1].size + 4096
    return path, records


def test_a_killed_mapped_writer_loses_nothing(tmp_path: Path, stream: np.ndarray) -> None:
    path, records = killed_mapped_writer(tmp_path)
    end = records[-1].offset + records[-1].size
    reader, seqs = records_of(tmp_path)
    assert seqs == [1, 2, 3] and reader.truncated_tail is None
    assert path.stat().st_size == end  # the unused preallocation trimmed
    with JournalWriter(tmp_path, "none") as writer:
        assert writer.append_commands(stream[:5], 0) == 4


@pytest.mark.parametrize("cut", MAPPED_CUTS.values(), ids=MAPPED_CUTS.keys())
def test_a_store_cut_short_in_a_mapped_segment_is_a_torn_tail(
    tmp_path: Path, cut: tuple[int, float | None]
) -> None:
    path, records = killed_mapped_writer(tmp_path)
    last = records[-1]
    data = bytearray(path.read_bytes())
    record = bytes(data[last.offset : last.offset + last.size])
    data[last.offset : last.offset + last.size] = bytes(last.size)
    header, part = cut
    data[last.offset : last.offset + header] = record[:header]
    if part is not None:
        end = RECORD_HEADER_SIZE + int((last.size - RECORD_HEADER_SIZE) * part)
        data[last.offset + RECORD_HEADER_SIZE : last.offset + end] = record[RECORD_HEADER_SIZE:end]
    path.write_bytes(data)
    reader, seqs = records_of(tmp_path, repair=False)
    assert seqs == [1, 2] and reader.truncated_tail == (path, last.offset)
    reader, seqs = records_of(tmp_path)
    assert seqs == [1, 2] and reader.truncated_tail == (path, last.offset)
    assert path.stat().st_size == last.offset


# -- corruption ---------------------------------------------------------------------------------


def assert_corrupt(
    exc: pytest.ExceptionInfo[JournalCorrupt], path: Path, offset: int, what: str
) -> None:
    assert exc.value.path == path and exc.value.offset == offset
    message = str(exc.value)
    assert f"{path}: offset {offset}: " in message
    assert what in message
    assert "to recover" in message


def test_bad_checksum_mid_file(tmp_path: Path) -> None:
    records = small_journal(tmp_path)
    path = last_segment(tmp_path)
    size = path.stat().st_size
    flip(path, records[2].offset + RECORD_HEADER_SIZE + 50)
    with pytest.raises(JournalCorrupt) as exc:
        list(JournalReader(tmp_path))
    assert_corrupt(exc, path, records[2].offset, "record 3: checksum mismatch")
    assert path.stat().st_size == size  # never "repaired"


def test_bad_record_header_mid_file(tmp_path: Path) -> None:
    records = small_journal(tmp_path)
    path = last_segment(tmp_path)
    with open(path, "r+b") as f:  # a torn record with more data after it
        f.seek(records[1].offset)
        f.write(bytes(RECORD_HEADER_SIZE))
    with pytest.raises(JournalCorrupt) as exc:
        list(JournalReader(tmp_path))
    assert_corrupt(exc, path, records[1].offset, "record header checksum mismatch")


def test_damage_at_the_end_of_a_segment_that_is_not_the_last(
    tmp_path: Path, stream: np.ndarray
) -> None:
    write_journal(tmp_path, [stream[i : i + 50] for i in range(0, 1000, 50)], segment_bytes=4096)
    first = list_segments(tmp_path)[0]
    os.truncate(first[1], first[1].stat().st_size - 10)
    with pytest.raises(JournalCorrupt) as exc:
        list(JournalReader(tmp_path))
    assert exc.value.path == first[1]
    assert "later segments follow" in str(exc.value)


def test_sequence_gap_and_repeat(tmp_path: Path, stream: np.ndarray) -> None:
    for step, kind in ((+1, "gap: expected record 3, found record 4"), (-1, "repeat")):
        path = tmp_path / kind[:3]
        with JournalWriter(path, "none") as writer:
            writer.append_commands(stream[:5], 0)
            writer.append_commands(stream[5:10], 0)
            offset = writer.bytes_written + FILE_HEADER_SIZE  # where the third record goes
            writer._last_seq += step  # a writer bug, or a spliced file
            writer.append_commands(stream[10:15], 0)
        with pytest.raises(JournalCorrupt) as exc:
            list(JournalReader(path))
        assert_corrupt(exc, last_segment(path), offset, f"sequence {kind}")


def test_missing_segment_is_a_gap(tmp_path: Path, stream: np.ndarray) -> None:
    write_journal(tmp_path, [stream[i : i + 50] for i in range(0, 5000, 50)], segment_bytes=4096)
    segments = list_segments(tmp_path)
    segments[1][1].unlink()
    with pytest.raises(JournalCorrupt) as exc:
        list(JournalReader(tmp_path))
    assert_corrupt(exc, segments[2][1], 0, "sequence gap between segments")


@pytest.mark.parametrize(
    ("offset", "what"),
    [(0, "not a journal segment"), (30, "file header checksum mismatch")],
    ids=["magic", "checksum"],
)
def test_bad_file_header(tmp_path: Path, offset: int, what: str) -> None:
    small_journal(tmp_path)
    path = last_segment(tmp_path)
    flip(path, offset)
    with pytest.raises(JournalCorrupt) as exc:
        list(JournalReader(tmp_path))
    assert_corrupt(exc, path, 0, what)


def test_file_name_and_header_disagree(tmp_path: Path) -> None:
    small_journal(tmp_path)
    path = last_segment(tmp_path)
    renamed = path.with_name("journal-00000000000000000002.lltj")
    path.rename(renamed)
    with pytest.raises(JournalCorrupt) as exc:
        list(JournalReader(tmp_path))
    assert_corrupt(exc, renamed, 16, "file header says first record 1")


# -- durability ---------------------------------------------------------------------------------


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


def test_policy_none_never_syncs(tmp_path: Path, stream: np.ndarray, fdatasyncs: list[int]) -> None:
    with JournalWriter(tmp_path, "none", segment_bytes=4096) as writer:
        for i in range(0, 2000, 100):  # rotates too
            writer.append_commands(stream[i : i + 100], 0)
            assert not writer.maybe_sync(10**18)
        assert writer.synced_seq == 0 and writer.last_seq == 20
    assert fdatasyncs == []


def test_policy_batch_syncs_every_append(
    tmp_path: Path, stream: np.ndarray, fdatasyncs: list[int]
) -> None:
    writer = JournalWriter(tmp_path, "batch")
    fdatasyncs.clear()  # the new segment's header
    for i in range(5):
        seq = writer.append_commands(stream[i : i + 1], 0)
        assert len(fdatasyncs) == i + 1
        assert writer.synced_seq == seq
    assert not writer.maybe_sync(10**18)
    writer.close()
    assert len(fdatasyncs) == 5  # nothing left to sync at close


def test_policy_interval_syncs_when_the_timer_says(
    tmp_path: Path, stream: np.ndarray, fdatasyncs: list[int]
) -> None:
    writer = JournalWriter(tmp_path, "interval", interval_ms=5)
    fdatasyncs.clear()
    t0 = writer._last_sync_ns
    writer.append_commands(stream[:10], 0)
    writer.append_commands(stream[10:20], 0)
    assert fdatasyncs == [] and writer.synced_seq == 0 and writer.last_seq == 2
    assert writer.sync_deadline_ns == t0 + 5_000_000
    assert not writer.maybe_sync(t0 + 4_999_999)
    assert writer.maybe_sync(t0 + 5_000_000)
    assert len(fdatasyncs) == 1 and writer.synced_seq == 2 and writer.sync_deadline_ns is None
    assert not writer.maybe_sync(t0 + 10**12)  # nothing new: no sync
    writer.append_commands(stream[20:30], 0)
    assert not writer.maybe_sync(writer._last_sync_ns + 1_000_000)
    assert writer.maybe_sync(writer._last_sync_ns + 5_000_000) and writer.synced_seq == 3
    writer.append_commands(stream[30:40], 0)
    writer.close()  # syncs what is left
    assert len(fdatasyncs) == 3


def test_interval_rotation_syncs_the_old_segment(
    tmp_path: Path, stream: np.ndarray, fdatasyncs: list[int]
) -> None:
    with JournalWriter(tmp_path, "interval", segment_bytes=4096) as writer:
        writer.append_commands(stream[:500], 0)
        assert writer.synced_seq == 0 and 2100 < writer.bytes_written < 4096 - 64
        writer.append_commands(stream[500:1000], 0)  # does not fit: new segment
        assert writer.synced_seq == 1 and len(list_segments(tmp_path)) == 2


# -- write failures -------------------------------------------------------------------------------


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG (SIGXFSZ ignored): the part below the
    limit is written, then the kernel refuses the rest, as with a disk that fills up."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_full_disk_fails_the_writer(tmp_path: Path, stream: np.ndarray) -> None:
    writer = JournalWriter(tmp_path, "batch", mapped=False)
    writer.append_commands(stream[:100], 0)
    size = writer.segment_path.stat().st_size
    with file_size_limit(size + 500), pytest.raises(JournalError, match="File too large") as exc:
        writer.append_commands(stream[100:300], 0)  # a short write, then no more room
    assert "record 2" in str(exc.value) and str(writer.segment_path) in str(exc.value)
    assert "stop taking orders" in str(exc.value)
    assert writer.failed and writer.last_seq == 1 and writer.error == str(exc.value)
    assert writer.segment_path.stat().st_size == size  # the partial record was dropped
    before = write_syscalls()
    for attempt in (
        lambda: writer.append_commands(stream[:1], 0),
        lambda: writer.append_session({}),
        writer.sync,
    ):
        with pytest.raises(JournalError, match="journal failed"):
            attempt()
    assert write_syscalls() == before  # refused at once, nothing written
    writer.close()
    reader, seqs = records_of(tmp_path)
    assert seqs == [1] and reader.truncated_tail is None


def test_full_disk_under_a_mapped_segment_falls_back_to_write_then_fails(
    tmp_path: Path, stream: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """The file cannot be preallocated further: the segment goes on with write(2) from
    its last record, which writes what fits and fails like any full disk."""
    writer = JournalWriter(tmp_path, "batch", preallocate_bytes=4096)
    writer.append_commands(stream[:100], 0)
    assert writer.mapped
    size = writer.segment_path.stat().st_size  # preallocated: 4096 bytes
    assert size == 4096 > FILE_HEADER_SIZE + writer.bytes_written
    with (
        caplog.at_level(logging.WARNING, "lltrade.journal"),
        file_size_limit(size + 500),
        pytest.raises(JournalError, match="File too large") as exc,
    ):
        writer.append_commands(stream[100:2000], 0)  # past the preallocated end
    assert "cannot preallocate" in caplog.text and "appending with write(2)" in caplog.text
    assert "record 2" in str(exc.value) and "stop taking orders" in str(exc.value)
    assert writer.failed and not writer.mapped and writer.last_seq == 1
    end = FILE_HEADER_SIZE + writer.bytes_written
    assert writer.segment_path.stat().st_size == end  # no zeros, no partial record
    writer.close()
    reader, seqs = records_of(tmp_path)
    assert seqs == [1] and reader.truncated_tail is None


def test_mapped_segment_grows_its_preallocation_as_it_fills(
    tmp_path: Path, stream: np.ndarray
) -> None:
    with JournalWriter(tmp_path, "none", preallocate_bytes=4096) as writer:
        sizes = set()
        for i in range(0, 20_000, 500):
            writer.append_commands(stream[i : i + 500], i)
            assert writer.mapped
            size = writer.segment_path.stat().st_size
            assert size % 4096 == 0 and size >= FILE_HEADER_SIZE + writer.bytes_written
            sizes.add(size)
        assert len(sizes) > 5  # grown a page at a time
    assert writer.segment_path.stat().st_size == FILE_HEADER_SIZE + writer.bytes_written
    got = np.concatenate([r.commands() for r in JournalReader(tmp_path)])
    assert_same_rows(got, stream[:20_000])


def test_mapped_segment_is_preallocated_ahead_of_the_appends(
    tmp_path: Path, stream: np.ndarray
) -> None:
    """The next step is allocated half a step before the last one runs out, so the
    pages ahead of the writer can always be faulted in; the first ones are at once."""
    step = 64 * 1024
    with JournalWriter(tmp_path, "none", preallocate_bytes=step) as writer:
        segment = writer._map
        assert segment is not None and segment.prefaulted >= step  # opened with its first pages
        path = writer.segment_path
        assert path.stat().st_size == step
        i = 0
        while FILE_HEADER_SIZE + writer.bytes_written <= step // 2:
            assert path.stat().st_size == step
            writer.append_commands(stream[i : i + 50], i)
            i += 50
        assert path.stat().st_size == 2 * step  # past half the step: the next one is there
        assert FILE_HEADER_SIZE + writer.bytes_written < step


def test_no_space_left_fails_the_writer(tmp_path: Path, stream: np.ndarray) -> None:
    writer = JournalWriter(tmp_path, "none", mapped=False)
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    try:
        os.dup2(full, writer._fd)
    finally:
        os.close(full)
    with pytest.raises(JournalError, match=r"\[Errno 28\] No space left on device"):
        writer.append_commands(stream[:10], 0)
    assert writer.failed and writer.last_seq == 0
    writer.close()


def test_failed_fdatasync_fails_the_writer(
    tmp_path: Path, stream: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = JournalWriter(tmp_path, "batch")

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(JournalError, match="Input/output error"):
        writer.append_commands(stream[:10], 0)
    assert writer.failed and writer.synced_seq == 0
    with pytest.raises(JournalError):
        writer.append_commands(stream[:10], 0)
    writer.close()


_DIES_MID_WRITE = """
import resource, signal, sys
from lltrade.journal import JournalWriter
from lltrade.workload import WorkloadSpec, generate
rows = generate(WorkloadSpec(commands=300, seed=1)).commands
writer = JournalWriter(sys.argv[1], "none", mapped=False)
writer.append_commands(rows[:100], 0)
size = writer.segment_path.stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; the kernel's default kills
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 500, resource.RLIM_INFINITY))
writer.append_commands(rows[100:], 0)  # 500 bytes reach the file, then SIGXFSZ kills it
"""


def test_torn_write_from_a_crash_is_recovered(tmp_path: Path) -> None:
    """A process killed mid-write: part of the record reached the file."""
    done = subprocess.run([sys.executable, "-c", _DIES_MID_WRITE, str(tmp_path)], timeout=60)
    assert done.returncode == -signal.SIGXFSZ
    path = last_segment(tmp_path)
    (first,) = list(JournalReader(tmp_path, repair=False))
    torn_at = first.offset + first.size
    assert path.stat().st_size == torn_at + 500  # part of record 2 reached the file
    reader, seqs = records_of(tmp_path)
    assert seqs == [1] and reader.truncated_tail == (path, torn_at)
    assert path.stat().st_size == torn_at  # cut off


# -- replay ---------------------------------------------------------------------------------------


def test_replay_is_deterministic(tmp_path: Path, stream: np.ndarray) -> None:
    """A long random session, journaled in random-size batches, replays to the same state
    and the same events as the live run."""
    batches = random_batches(stream, seed=SEED)
    live = new_engine()
    live_events = run_live(live, batches)
    with JournalWriter(tmp_path, "none", segment_bytes=64 * 1024) as writer:
        for i, rows in enumerate(batches):
            writer.append_commands(rows, 1_700_000_000_000_000_000 + i)
            if i % 7 == 0:
                writer.append_session({"event": "heartbeat", "i": i})
    assert len(list_segments(tmp_path)) > 3
    want = generate(WorkloadSpec(commands=50_000, seed=SEED)).state_hash()
    assert live.book(0).state_hash() == want
    for small_events in (False, True):
        engine = new_engine()
        got, on_events = collector()
        events = np.zeros(1, dtype=EVENT_DTYPE) if small_events else None
        records, commands = replay(
            engine, JournalReader(tmp_path), on_events=on_events, events=events
        )
        assert commands == len(stream)
        assert records == len(batches) + (len(batches) + 6) // 7
        assert engine.book(0).state_hash() == want
        assert engine.book(0).orders() == live.book(0).orders()
        assert_same_events(np.concatenate(got), live_events)


def test_snapshot_then_replay_equals_full_replay(tmp_path: Path, stream: np.ndarray) -> None:
    batches = random_batches(stream, seed=SEED + 1)
    live = new_engine()
    live_events = []
    first = 0
    cut = len(batches) // 2
    with JournalWriter(tmp_path, "none", segment_bytes=64 * 1024) as writer:
        for i, rows in enumerate(batches):
            seq = writer.append_commands(rows, i)
            live_events.append(run_live(live, [rows], first))
            first += len(rows)
            if i == cut:  # the daemon's periodic snapshot
                snap_path = write_snapshot(
                    tmp_path, seq, engine_snapshot(live), {"commands": first, "seq": seq}
                )
                writer.append_snapshot_mark(seq, snap_path)
                commands_before = first
    full = new_engine()
    replay(full, JournalReader(tmp_path))
    engine = new_engine()
    got, on_events = collector()
    result = recover(engine, tmp_path, on_events=on_events)
    assert result.snapshot == snap_path and result.snapshot_seq == cut + 1
    assert result.commands == len(stream) - commands_before
    assert result.last_seq == len(batches) + 1
    assert engine.book(0).state_hash() == full.book(0).state_hash() == live.book(0).state_hash()
    assert engine.book(0).orders() == full.book(0).orders()
    after = np.concatenate(live_events[cut + 1 :])
    after["cmd"] -= commands_before
    assert_same_events(np.concatenate(got), after)
    snap = read_snapshot(snap_path)
    assert snap.extra == {"commands": commands_before, "seq": cut + 1}


def test_replay_needs_the_record_after_the_state(tmp_path: Path, stream: np.ndarray) -> None:
    write_journal(tmp_path, [stream[i : i + 50] for i in range(0, 1000, 50)], segment_bytes=4096)
    segments = list_segments(tmp_path)
    segments[0][1].unlink()  # as if pruned, but no snapshot covers it
    with pytest.raises(JournalCorrupt, match=r"records 1\.\.\d+ are missing"):
        replay(new_engine(), JournalReader(tmp_path))


def test_replay_skips_unknown_records_unless_they_change_state(tmp_path: Path) -> None:
    with JournalWriter(tmp_path, "none") as writer:
        writer.append(200, b"audit only")
    assert replay(new_engine(), JournalReader(tmp_path)) == (1, 0)
    with JournalWriter(tmp_path, "none") as writer:
        writer.append(201, b"a future command type", FLAG_STATE)
    with pytest.raises(JournalError, match="type 201, which changes state"):
        replay(new_engine(), JournalReader(tmp_path))


# -- snapshots ----------------------------------------------------------------------------------


def engine_with_orders(stream: np.ndarray, n: int = 20_000) -> lltrade.Engine:
    engine = new_engine()
    run_live(engine, [stream[:n]])
    return engine


def test_engine_snapshot_restores_the_exact_books(stream: np.ndarray) -> None:
    engine = engine_with_orders(stream)
    other = engine.add_book(9, 100, 1000, tick=5, lot=10)
    other.add(1, Side.BUY, 500, 20, account=3)
    other.add(2, Side.SELL, 600, 30)
    data = engine_snapshot(engine)
    fresh = new_engine()
    fresh.add_book(9, 100, 1000, tick=5, lot=10)
    restore_engine(fresh, data)
    for symbol in (0, 9):
        assert fresh.book(symbol).orders() == engine.book(symbol).orders()
        assert fresh.book(symbol).state_hash() == engine.book(symbol).state_hash()
    assert engine_snapshot(fresh) == data
    fresh.add_book(12, 1, 10)  # a symbol the snapshot does not know: left empty
    fresh.book(0).add(1, Side.BUY, 5, 1)
    wider = new_engine()
    wider.add_book(9, 100, 1000, tick=5, lot=10)
    wider.add_book(12, 1, 10)
    restore_engine(wider, data)
    assert len(wider.book(12)) == 0


def test_restore_refuses_an_engine_that_does_not_fit(stream: np.ndarray) -> None:
    data = engine_snapshot(engine_with_orders(stream, 2000))
    with pytest.raises(JournalError, match="does not define"):
        restore_engine(lltrade.Engine(), data)
    narrow = lltrade.Engine()
    narrow.add_book(0, 1, 1_000_000)
    with pytest.raises(JournalError, match="band"):
        restore_engine(narrow, data)
    full = new_engine()
    full.book(0).add(1, Side.BUY, 5, 1)
    with pytest.raises(JournalError, match="must be empty"):
        restore_engine(full, data)
    small = lltrade.Engine()
    small.add_book(0, *BAND, max_orders=10)
    with pytest.raises(JournalError, match="max_orders"):
        restore_engine(small, data)


def test_snapshot_keeps_post_only_of_resting_orders() -> None:
    engine = lltrade.Engine()
    book = engine.add_book(0, 1, 1000)
    book.add(1, Side.BUY, 100, 5, post_only=True)
    book.add(2, Side.SELL, 105, 5)
    fresh = lltrade.Engine()
    fresh.add_book(0, 1, 1000)
    restore_engine(fresh, engine_snapshot(engine))
    # a post-only order replaced to a crossing price is rejected, not traded
    assert fresh.book(0).replace(1, 105, 5) == book.replace(1, 105, 5)


def test_snapshot_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert latest_snapshot(tmp_path) is None
    a = write_snapshot(tmp_path, 10, b"state-10", {"k": 1})
    b = write_snapshot(tmp_path, 20, memoryview(b"state-20"))
    assert a.name == "snapshot-00000000000000000010.llts"
    assert [s for s, _ in list_snapshots(tmp_path)] == [10, 20]
    assert not list(tmp_path.glob(".snapshot-*"))  # the temporary file was renamed
    snap = latest_snapshot(tmp_path)
    assert snap is not None and (snap.path, snap.seq, snap.state, snap.extra) == (
        b,
        20,
        b"state-20",
        {},
    )
    flip(b, 70)
    with pytest.raises(JournalCorrupt) as exc:
        latest_snapshot(tmp_path)
    assert exc.value.path == b and f"{b}: offset 0: snapshot checksum mismatch" in str(exc.value)
    assert "fall" in str(exc.value)  # says how to fall back
    with caplog.at_level(logging.WARNING, "lltrade.journal"):
        snap = latest_snapshot(tmp_path, allow_fallback=True)
    assert snap is not None and snap.seq == 10 and snap.extra == {"k": 1}
    assert f"snapshot {b} is damaged" in caplog.text
    os.truncate(a, 70)
    with pytest.raises(JournalCorrupt, match="its header says"):
        read_snapshot(a)
    assert latest_snapshot(tmp_path, allow_fallback=True) is None


def test_recover_falls_back_to_an_older_snapshot(tmp_path: Path, stream: np.ndarray) -> None:
    batches = [stream[i : i + 1000] for i in range(0, 30_000, 1000)]
    live = new_engine()
    with JournalWriter(tmp_path, "none", segment_bytes=32 * 1024) as writer:
        for i, rows in enumerate(batches):
            seq = writer.append_commands(rows, 0)
            run_live(live, [rows])
            if i in (9, 19):
                write_snapshot(tmp_path, seq, engine_snapshot(live))
    assert prune(tmp_path, keep_after_seq=20) != []  # keeps what snapshot 10 needs
    flip(list_snapshots(tmp_path)[-1][1], 100)
    with pytest.raises(JournalCorrupt):
        recover(new_engine(), tmp_path)
    engine = new_engine()
    result = recover(engine, tmp_path, allow_fallback=True)
    assert result.snapshot_seq == 10 and result.commands == 20_000
    assert engine.book(0).state_hash() == live.book(0).state_hash()


def test_prune(tmp_path: Path, stream: np.ndarray) -> None:
    batches = [stream[i : i + 200] for i in range(0, 20_000, 200)]
    write_journal(tmp_path, batches, segment_bytes=16 * 1024)  # ~5 records a segment
    assert prune(tmp_path, 80) == []  # no snapshot: nothing is covered
    for seq in (20, 50, 80):
        write_snapshot(tmp_path, seq, engine_snapshot(new_engine()))
    (tmp_path / ".snapshot-00000000000000000090.tmp").write_bytes(b"left by a crash")
    before = list_segments(tmp_path)
    removed = prune(tmp_path, 80, keep_snapshots=2)
    after = list_segments(tmp_path)
    assert [s for s, _ in list_snapshots(tmp_path)] == [50, 80]
    assert tmp_path / "snapshot-00000000000000000020.llts" in removed
    assert not list(tmp_path.glob(".snapshot-*"))
    # segments wholly at or before record 50 (the oldest snapshot kept) are gone
    assert after[0][0] <= 51 < after[1][0]
    assert {p for _, p in before} - {p for _, p in after} <= set(removed)
    assert records_of(tmp_path)[1] == list(range(after[0][0], 101))
    prune(tmp_path, 10**9, keep_snapshots=1)
    assert list_segments(tmp_path)[-1] == before[-1]  # the last segment always stays
    with pytest.raises(ValueError):
        prune(tmp_path, 1, keep_snapshots=0)


def test_writer_after_prune_and_snapshot_only(tmp_path: Path, stream: np.ndarray) -> None:
    write_snapshot(tmp_path, 41, engine_snapshot(new_engine()))
    with JournalWriter(tmp_path, "none") as writer:  # no segments: continue after it
        assert writer.append_commands(stream[:5], 0) == 42
    result = recover(new_engine(), tmp_path)
    assert (result.snapshot_seq, result.records, result.last_seq) == (41, 1, 42)


def test_recover_without_a_journal(tmp_path: Path) -> None:
    result = recover(new_engine(), tmp_path / "new")
    assert (result.snapshot, result.records, result.last_seq) == (None, 0, 0)


# -- command line -------------------------------------------------------------------------------


@pytest.fixture
def demo_journal(tmp_path: Path, stream: np.ndarray) -> tuple[Path, lltrade.Engine]:
    """A journal of 3,000 commands for the demo config's symbol 1 (DEMO), and the live engine."""
    path = tmp_path / "journal"
    rows = stream[:3000].copy()
    rows["symbol"] = 1
    batches = [rows[i : i + 500] for i in range(0, 3000, 500)]
    with JournalWriter(path, "none", segment_bytes=16 * 1024) as writer:
        writer.append_session({"event": "logon", "account": "alice"})
        for i, b in enumerate(batches):
            writer.append_commands(b, 1_000 + i)
    live = lltrade.Engine()
    live.add_book(1, 1, 10_000_000)
    run_live(live, batches)
    return path, live


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_inspect(demo_journal: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = demo_journal
    code, out, err = cli(capsys, "journal", "inspect", str(path))
    assert code == 0 and err == ""
    assert "7 records (records 1..7), 3,000 commands" in out
    assert "journal-00000000000000000001.lltj" in out
    assert "records by type: SESSION 1, PACKED_COMMANDS 6" in out
    assert "snapshots: none" in out


def test_cli_verify(demo_journal: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = demo_journal
    code, out, _ = cli(capsys, "journal", "verify", str(path))
    assert code == 0 and out.startswith("ok: 7 records (records 1..7), 3,000 commands")
    segment = last_segment(path)
    with open(segment, "ab") as f:
        f.write(b"\x01\x02\x03")
    code, out, err = cli(capsys, "journal", "verify", str(path))
    assert code == 0 and f"torn tail: {segment} at offset" in out
    assert err.startswith("lltrade: warning: torn record")
    assert segment.stat().st_size % 8 == 3  # not modified
    code, out, err = cli(capsys, "journal", "verify", "--repair", str(path))
    assert code == 0 and "(cut off)" in out and segment.stat().st_size % 8 == 0
    second = list(JournalReader(path))[1]
    flip(second.path, second.offset + RECORD_HEADER_SIZE + len(second.payload) // 2)
    code, out, err = cli(capsys, "journal", "verify", str(path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"lltrade: {second.path}: offset {second.offset}: record 2: checksum")


def test_cli_replay(demo_journal: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path, live = demo_journal
    code, out, err = cli(capsys, "journal", "replay", str(path))
    assert code == 0 and err == ""
    assert "replayed 7 records, 3,000 commands" in out and "commands/s" in out
    book = live.book(1)
    demo = next(line for line in out.splitlines() if line.startswith("DEMO "))
    assert f"{book.state_hash():#018x}" in demo and f" {len(book)} " in demo
    bid, ask = book.best_bid(), book.best_ask()
    assert bid is not None and ask is not None
    assert f"{bid[1]} @ {bid[0] / 100:.2f}" in demo and f"{ask[1]} @ {ask[0] / 100:.2f}" in demo
    # with a snapshot, replay starts from it
    write_snapshot(path, 4, engine_snapshot(live_until(path, 4)))
    code, out, _ = cli(capsys, "journal", "replay", str(path))
    assert code == 0 and "snapshot snapshot-00000000000000000004.llts (records 1..4) + 3" in out
    assert f"{book.state_hash():#018x}" in out
    code, out, _ = cli(capsys, "journal", "replay", "--no-snapshot", str(path))
    assert code == 0 and "replayed 7 records" in out


def live_until(path: Path, seq: int) -> lltrade.Engine:
    engine = lltrade.Engine()
    engine.add_book(1, 1, 10_000_000)
    for record in JournalReader(path):
        if record.seq > seq:
            break
        if record.type in COMMAND_TYPES:
            run_live(engine, [record.commands()])
    return engine


def test_cli_replay_with_a_config(
    demo_journal: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = demo_journal
    from lltrade.config import DEFAULT_CONFIG_TOML

    config = tmp_path / "lltrade.toml"
    config.write_text(DEFAULT_CONFIG_TOML.replace('name = "DEMO"', 'name = "XDEMO"'))
    code, out, _ = cli(capsys, "journal", "replay", str(path), "--config", str(config))
    assert code == 0 and "\nXDEMO " in out
    config.write_text("[server]\nport = -1\n")
    code, _, err = cli(capsys, "journal", "replay", str(path), "--config", str(config))
    assert code == 2 and err.startswith(f"lltrade: {config}: $.server.port")


def test_cli_export(
    demo_journal: tuple[Path, Any],
    tmp_path: Path,
    stream: np.ndarray,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = demo_journal
    output = tmp_path / "out.jsonl"
    code, out, _ = cli(capsys, "journal", "export", str(path), "--output", str(output))
    assert code == 0 and out == ""
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [item["seq"] for item in lines] == list(range(1, 8))
    assert lines[0] == {
        "seq": 1,
        "type": "session",
        "event": {"event": "logon", "account": "alice"},
    }
    assert lines[1]["type"] == "commands" and lines[1]["recv_ns"] == 1_000
    commands = [c for item in lines[1:] for c in item["commands"]]
    assert len(commands) == 3000
    first = stream[0]
    names = COMMAND_DTYPE.names
    assert names is not None
    assert commands[0] == {n: (1 if n == "symbol" else int(first[n])) for n in names}
    assert commands[0]["op"] == Op.ADD
    code, out, _ = cli(capsys, "journal", "export", str(path), "--after", "5")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [6, 7]


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("inspect", "verify", "replay", "export"):
        code, out, err = cli(capsys, "journal", action, str(tmp_path / "missing"))
        assert code == 2 and err == f"lltrade: {tmp_path / 'missing'}: no such directory\n"
    code, _, err = cli(capsys, "journal")
    assert code == 2 and "expected an action" in err
    code, out, _ = cli(capsys, "journal", "inspect", str(tmp_path))
    assert code == 0 and "0 segments, 0 records (no records)" in out


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    return bytes(out) + bytes([v])


def _zigzag_delta(value: int, predicted: int) -> bytes:
    d = (value - predicted) & (2**64 - 1)
    signed = d - 2**64 if d >= 2**63 else d
    return _varint(((signed << 1) ^ (signed >> 63)) & (2**64 - 1))


NUMBERS = ("order_id", "price", "qty", "account", "protection", "symbol")
FLAGS = ("op", "side", "tif", "post_only", "stp")


def reference_pack(rows: np.ndarray) -> bytes:
    """The packed rows as docs/journal.md describes them, one field at a time."""
    out = bytearray()
    prev = dict.fromkeys((*NUMBERS, *FLAGS, "reason"), 0)
    for row in rows:
        value = {name: int(row[name]) for name in prev}
        mask, body = 0, bytearray()
        for bit, name in enumerate(NUMBERS):
            predicted = prev[name] + 1 if name == "order_id" else prev[name]
            if value[name] != predicted:
                mask |= 1 << bit
                body += _zigzag_delta(value[name], predicted)
        flags = [value[name] for name in FLAGS]
        if flags != [prev[name] for name in FLAGS]:
            mask |= 64
            op, side, tif, post_only, stp = flags
            if op < 16 and side < 4 and post_only < 2 and tif < 16 and stp < 16:
                body += bytes([op | side << 4 | post_only << 6, tif | stp << 4])
            else:
                body += bytes([0x80, *flags])
        if value["reason"] != prev["reason"]:
            mask |= 128
            body += _varint(value["reason"])
        out += bytes([mask]) + body
        prev = value
    return bytes(out)


def random_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows whose every byte is random (extreme values, padding too)."""
    rows = np.zeros(n, dtype=COMMAND_DTYPE)
    raw = rows.view(np.uint8).reshape(-1)
    raw[:] = rng.integers(0, 256, raw.size, dtype=np.uint8)
    return rows


def test_c_framing_of_packed_records_matches_the_documented_layout() -> None:
    """_records.pack_commands gives the bytes struct, zlib.crc32 and the documented packing give."""
    import struct
    import zlib

    from lltrade._records import pack_commands, packed_size_bound, seal_record, unpack_commands

    rng = np.random.default_rng(3)
    small = generate(WorkloadSpec(commands=300, seed=2)).commands
    for rows in (*(random_rows(rng, n) for n in (0, 1, 7, 300)), small):
        n = len(rows)
        payload = struct.pack("<qII", -5, n, COMMAND_DTYPE.itemsize) + reference_pack(rows)
        padded = payload + bytes(-len(payload) % 8)
        head = struct.pack("<IHHQ", len(payload), 4, 1, 2**40 + n)
        header_crc = zlib.crc32(head)
        expected = head + struct.pack("<II", header_crc, zlib.crc32(padded, header_crc)) + padded
        buf = bytearray(packed_size_bound(n) + 9)
        assert pack_commands(buf, rows, 2**40 + n, -5) == len(expected)
        assert bytes(buf[: len(expected)]) == expected
        out = np.ones(n + 2, dtype=COMMAND_DTYPE)
        assert unpack_commands(payload, out, 1) == n
        assert_same_rows(out[1 : n + 1], rows)
        assert out[0] == np.ones(1, dtype=COMMAND_DTYPE)[0]  # untouched around the rows
    assert len(reference_pack(small)) < 16 * len(small)  # a real stream packs to < 16 bytes a row
    with pytest.raises(ValueError, match="may need"):
        pack_commands(bytearray(10), np.zeros(1, dtype=COMMAND_DTYPE), 1, 0)
    # Any other record: the payload in place (padded to 8), seal_record writes the rest.
    for payload in (b"", b"x", b'{"event": "logon"}', bytes(range(256)) * 3):
        padded = payload + bytes(-len(payload) % 8)
        head = struct.pack("<IHHQ", len(payload), 2, 0, 77)
        header_crc = zlib.crc32(head)
        expected = head + struct.pack("<II", header_crc, zlib.crc32(padded, header_crc)) + padded
        buf = bytearray(24) + bytearray(padded) + bytearray(5)
        assert seal_record(buf, len(payload), 2, 0, 77) == len(expected)
        assert bytes(buf[: len(expected)]) == expected
    with pytest.raises(ValueError, match="needs"):
        seal_record(bytearray(30), 9, 2, 0, 1)
    with pytest.raises(TypeError, match="COMMAND_DTYPE"):
        pack_commands(bytearray(100), np.zeros(3, dtype=np.int64), 1, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        pack_commands(bytearray(1000), np.zeros(4, dtype=COMMAND_DTYPE)[::2], 1, 0)


def test_unpack_refuses_malformed_packed_rows() -> None:
    """Whatever the bytes, unpacking raises a clear ValueError or gives rows; it never
    reads or writes outside the payload and the output (the sanitizer build checks)."""
    from lltrade._records import unpack_commands

    rows = generate(WorkloadSpec(commands=50, seed=4)).commands
    body = reference_pack(rows)
    prefix = struct.pack("<qII", 0, len(rows), COMMAND_DTYPE.itemsize)
    out = np.zeros(len(rows), dtype=COMMAND_DTYPE)
    cases = {
        "cut off": prefix + body[:-1],
        "do not end": prefix + body + b"\0",
        "malformed number": prefix + b"\xff" * 11 + body[11:],
        "cannot hold": struct.pack("<qII", 0, 10**6, 56) + body,
        "unpack to 48 bytes": struct.pack("<qII", 0, len(rows), 48) + body,
        "shorter than its 16-byte prefix": prefix[:15],
    }
    for message, payload in cases.items():
        with pytest.raises(ValueError, match=message):
            unpack_commands(payload, out, 0)
    with pytest.raises(ValueError, match="out holds 50 rows"):
        unpack_commands(prefix + body, out, 1)
    read_only = np.zeros(50, dtype=COMMAND_DTYPE)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        unpack_commands(prefix + body, read_only, 0)
    rng = np.random.default_rng(5)
    for _ in range(2000):  # random damage: an error or rows, never a crash
        damaged = bytearray(prefix + body)
        for k in rng.integers(16, len(damaged), 3):
            damaged[k] = int(rng.integers(0, 256))
        with contextlib.suppress(ValueError):
            unpack_commands(bytes(damaged), out, 0)


def test_raw_commands_records_still_replay(tmp_path: Path) -> None:
    """A journal of raw COMMANDS records (type 1) replays to the same state as a packed one."""
    cmds = generate(WorkloadSpec(commands=6000, seed=6)).commands
    batches = [cmds[i : i + n] for i, n in zip((0, 10, 5000), (10, 4990, 1000), strict=True)]
    raw_dir, packed_dir = tmp_path / "raw", tmp_path / "packed"
    write_journal(packed_dir, batches)
    with JournalWriter(raw_dir, "none") as writer:
        for rows in batches:
            prefix = struct.pack("<qII", 1_000, len(rows), COMMAND_DTYPE.itemsize)
            writer.append(RecordType.COMMANDS, prefix + rows.tobytes(), FLAG_STATE)
    hashes = []
    for path in (raw_dir, packed_dir):
        records = list(JournalReader(path))
        assert [r.command_count() for r in records] == [10, 4990, 1000]
        assert_same_rows(np.concatenate([r.commands() for r in records]), cmds)
        engine = lltrade.Engine()
        engine.add_book(1, 1, 10_000_000)
        assert replay(engine, JournalReader(path)) == (3, 6000)
        hashes.append(engine.book(1).state_hash())
    assert hashes[0] == hashes[1]


def test_append_commands_takes_non_contiguous_rows(tmp_path: Path) -> None:
    rows = np.zeros(6, dtype=COMMAND_DTYPE)
    rows["order_id"] = np.arange(6)
    with JournalWriter(tmp_path, "none") as writer:
        writer.append_commands(rows[::2], 7)
    (record,) = list(JournalReader(tmp_path).records())
    assert list(record.commands()["order_id"]) == [0, 2, 4]


def test_scan_packed_stops_before_whatever_it_does_not_take_whole(tmp_path: Path) -> None:
    """Replay's C fast path takes runs of whole, verified PACKED_COMMANDS records in sequence
    and stops before anything else, which the record-by-record path then judges."""
    from lltrade._records import scan_packed

    cmds = generate(WorkloadSpec(commands=100, seed=7)).commands
    with JournalWriter(tmp_path, "none") as writer:
        for i in range(0, 40, 10):
            writer.append_commands(cmds[i : i + 10], i)  # records 1..4
        writer.append_session({"event": "logon"})  # record 5
        writer.append_commands(cmds[40:100], 40)  # record 6
    records = list(JournalReader(tmp_path))
    data = last_segment(tmp_path).read_bytes()
    out = np.zeros(100, dtype=COMMAND_DTYPE)
    start = FILE_HEADER_SIZE

    # four records, then the session record stops it
    assert scan_packed(data, start, 1, out, 0) == (records[4].offset, 5, 40)
    assert_same_rows(out[:40], cmds[:40])
    # after it, the last record
    assert scan_packed(data, records[5].offset, 6, out, 40) == (len(data), 7, 100)
    assert_same_rows(out, cmds)
    # a wrong expected sequence number, no room in out, the end of the data: nothing taken
    assert scan_packed(data, start, 2, out, 0) == (start, 2, 0)
    assert scan_packed(data, records[5].offset, 6, out, 41) == (records[5].offset, 6, 41)
    assert scan_packed(data, start, 1, out, 95) == (start, 1, 95)
    assert scan_packed(data, len(data), 7, out, 0) == (len(data), 7, 0)
    # damage anywhere in record 3 (header, payload, padding) or a cut-off record 3
    third = records[2]
    for offset in (third.offset + 2, third.offset + 30, third.offset + third.size - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        assert scan_packed(bytes(damaged), start, 1, out, 0) == (third.offset, 3, 20)
    cut = data[: third.offset + third.size - 8]
    assert scan_packed(cut, start, 1, out, 0) == (third.offset, 3, 20)
    with pytest.raises(ValueError, match="inside"):
        scan_packed(data, start, 1, out, 101)


def test_replay_through_the_fast_path_matches_record_by_record(tmp_path: Path) -> None:
    """replay() (C scans of runs of records) gives the events and state that feeding each
    record's commands to the engine one by one gives, whatever the mix of records."""
    cmds = generate(WorkloadSpec(commands=20_000, seed=8)).commands
    rng = np.random.default_rng(8)
    with JournalWriter(tmp_path, "none", segment_bytes=16 * 1024) as writer:
        i = 0
        while i < len(cmds):
            n = int(rng.choice([1, 3, 16, 200, 5000]))
            if rng.random() < 0.2:  # the old raw form, now and then
                rows = cmds[i : i + n]
                prefix = struct.pack("<qII", 0, len(rows), COMMAND_DTYPE.itemsize)
                writer.append(RecordType.COMMANDS, prefix + rows.tobytes(), FLAG_STATE)
            else:
                writer.append_commands(cmds[i : i + n], 0)
            if rng.random() < 0.1:
                writer.append_session({"event": "heartbeat"})
            i += n
    slow = lltrade.Engine()
    slow.add_book(1, 1, 10_000_000)
    want = run_live(
        slow, [r.commands() for r in JournalReader(tmp_path) if r.type in COMMAND_TYPES]
    )
    fast = lltrade.Engine()
    fast.add_book(1, 1, 10_000_000)
    got, on_events = collector()
    records, commands = replay(fast, JournalReader(tmp_path), on_events=on_events)
    assert commands == len(cmds) and records == len(list(JournalReader(tmp_path)))
    assert fast.book(1).state_hash() == slow.book(1).state_hash()
    assert_same_events(np.concatenate(got), want)


def test_a_packed_count_beyond_its_payload_is_damage_not_an_allocation(tmp_path: Path) -> None:
    """A PACKED_COMMANDS record whose count its payload cannot hold (its CRCs right, so
    written so) is reported as damage before anything is sized by the count."""
    with JournalWriter(tmp_path, "none") as writer:
        writer.append(RecordType.PACKED_COMMANDS, struct.pack("<qII", 0, 2**32 - 1, 56), FLAG_STATE)
    (record,) = list(JournalReader(tmp_path))
    for read in (record.command_count, record.commands):
        with pytest.raises(JournalCorrupt, match="cannot hold 4294967295 rows"):
            read()
    engine = lltrade.Engine()
    engine.add_book(1, 1, 10_000_000)
    with pytest.raises(JournalCorrupt, match="cannot hold"):
        replay(engine, JournalReader(tmp_path))
