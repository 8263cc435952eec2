"""The write-ahead journal, engine snapshots and crash recovery.

Every batch of engine commands is appended to the journal, with one copy into
the memory-mapped segment (or one ``os.write``), before any of its
acknowledgements leave the daemon; a restart rebuilds the exact state from the
newest valid snapshot plus a replay of the journal after it
(``docs/journal.md``, ``DESIGN.md`` "Determinism and the journal").  The engine
is deterministic, so the same journal gives the same books, the same events and
the same ``state_hash``.

On-disk layout (all integers little-endian; "CRC" is CRC-32/ISO-HDLC as
computed by ``zlib.crc32``, polynomial 0x04C11DB7 reflected, the CRC of
zip and PNG; not CRC-32C)
----------------------------------------------------------------------------

A journal is a directory of *segment* files ``journal-<first_seq:020d>.lltj``
(zero-padded so that names sort by sequence number), plus snapshot files
``snapshot-<seq:020d>.llts`` and a ``.lock`` file held by the writer.

Segment file header, 64 bytes::

    off size type   field
      0    8 bytes  magic  b"LLTJ\\r\\n\\x1a\\n"
      8    2 u16    format version (1)
     10    2 u16    header size (64)
     12    4 u32    flags (0)
     16    8 u64    first_seq: sequence number of the segment's first record
     24    8 i64    created_ns: wall clock (time.time_ns) when the segment was made
     32    4 u32    command row size (COMMAND_DTYPE.itemsize, 56)
     36    4 u32    command layout fingerprint: CRC of "name:dtype@offset;..."
     40   20 bytes  reserved, zero
     60    4 u32    CRC of bytes 0..59

Records follow the header back to back, each starting on an 8-byte boundary::

    off size type   field
      0    4 u32    length: payload bytes (padding not included)
      4    2 u16    record type (RecordType)
      6    2 u16    flags (bit 0 FLAG_STATE: the record changes engine state)
      8    8 u64    seq: +1 from one record to the next, across segments
     16    4 u32    header CRC: CRC of bytes 0..15
     20    4 u32    record CRC: CRC of bytes 0..15 + payload + padding
     24    L        payload
     24+L  P        padding, zero, so that 24 + L + P is a multiple of 8

The header CRC lets a reader trust ``length`` before it reads the payload;
the record CRC continues it (``zlib.crc32(payload, header_crc)``).

Record types:

``PACKED_COMMANDS`` (4, FLAG_STATE): a batch of engine commands as received,
what the writer writes::

      0    8 i64    recv_ns: receive timestamp decided at the edge
      8    4 u32    count: rows
     12    4 u32    row size they unpack to (56)
     16    -        the rows packed (``lltrade._records``; docs/journal.md)

``COMMANDS`` (1, FLAG_STATE): the same with the rows raw, still read::

     16    count * 56 raw COMMAND_DTYPE rows (numpy's bytes, padding included)

``SESSION`` (2): a session event for the audit trail (log on, log off, ...),
a UTF-8 JSON object.  Not needed to rebuild the books.

``SNAPSHOT_MARK`` (3): a snapshot covering records 1..covered_seq was taken::

      0    8 u64    covered_seq
      8    8 i64    created_ns
     16    -        the snapshot's file name, UTF-8

Types 1..255 are reserved for lltrade.  A reader passes records of unknown
types through; ``replay`` skips them unless they carry FLAG_STATE, in which
case it stops (a newer lltrade wrote state this one cannot rebuild).

Snapshot file ``snapshot-<seq:020d>.llts``, written atomically (temporary
file, fsync, rename, fsync of the directory)::

      0    8 bytes  magic  b"LLTS\\r\\n\\x1a\\n"
      8    2 u16    format version (1)
     10    2 u16    header size (64)
     12    4 u32    flags (0)
     16    8 u64    seq: the state after applying records 1..seq
     24    8 i64    created_ns
     32    8 u64    state_len
     40    8 u64    extra_len
     48   12 bytes  reserved, zero
     60    4 u32    CRC of bytes 0..59 + state + extra
     64             state (engine_snapshot's bytes), then extra (UTF-8 JSON object)

Failure handling
----------------

* A torn record at the very tail of the last segment (a crash mid-write: a
  truncated header or payload, a bad checksum on the last record or on its
  header with nothing but zero bytes after it) is cut off with a warning and
  reported as ``JournalReader.truncated_tail``.
* Zero bytes from a record boundary to the end of the last segment are the
  unused, preallocated part of a mapped segment: trimmed, not a loss.
* Anything else (a bad checksum with data after it, a gap or repeat in
  sequence numbers, a bad file header, damage in a segment that is not the
  last) raises :class:`JournalCorrupt` naming the file and byte offset.
* A failed write or fdatasync (ENOSPC, EIO, ...) raises :class:`JournalError`
  and leaves the writer failed: every later append raises at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import re
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from lltrade._book import COMMAND_DTYPE, EVENT_DTYPE, Engine
from lltrade._records import (
    MappedSegment,
    scan_packed,
    seal_record,
    unpack_commands,
    write_commands,
)
from lltrade.enums import EventKind, Op

if TYPE_CHECKING:
    from lltrade.config import JournalConfig

__all__ = [
    "COMMAND_TYPES",
    "DEFAULT_SEGMENT_BYTES",
    "FLAG_STATE",
    "FORMAT_VERSION",
    "Durability",
    "JournalCorrupt",
    "JournalError",
    "JournalReader",
    "JournalSummary",
    "JournalWriter",
    "Record",
    "RecordType",
    "Recovery",
    "SegmentSummary",
    "Snapshot",
    "engine_snapshot",
    "latest_snapshot",
    "list_segments",
    "list_snapshots",
    "prune",
    "read_snapshot",
    "recover",
    "replay",
    "restore_engine",
    "segment_name",
    "snapshot_name",
    "write_snapshot",
]

log = logging.getLogger("lltrade.journal")

Durability = Literal["none", "batch", "interval"]
CommandArray = npt.NDArray[np.void]

FORMAT_VERSION: Final = 1
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
MIN_SEGMENT_BYTES: Final = 4096
PREALLOCATE_BYTES: Final = 8 * 1024 * 1024
"""A mapped segment's file is preallocated this much ahead of the appends at a time."""
GROW_AHEAD: Final = 4 * 1024 * 1024
"""The next step is preallocated when the appends come this close to the end of the last
(or half a step, if less): twice as far as the pages are faulted in ahead of them
(``_records.PREFAULT_AHEAD``), so that they always can be."""
FIRST_PAGES: Final = 256 * 1024
"""A new mapped segment's first bytes, faulted in as it is opened."""
_NEVER: Final = 1 << 62  # an offset no segment reaches
MAX_PAYLOAD: Final = 1 << 30
"""Largest record payload (1 GiB): a larger length in a header is damage."""
MAX_RECORD: Final = 1 << 31
"""More than any record takes (the room of a segment that holds no record yet)."""
FLAG_STATE: Final = 0x0001
"""Record flag: the record changes engine state (replay must understand it)."""

SEGMENT_MAGIC: Final = b"LLTJ\r\n\x1a\n"
SNAPSHOT_MAGIC: Final = b"LLTS\r\n\x1a\n"
ENGINE_MAGIC: Final = b"LLTE"

_FILE_HEADER = struct.Struct("<8sHHIQqII20sI")  # 64 bytes
_RECORD_HEADER = struct.Struct("<IHHQII")  # 24 bytes
_COMMANDS_PREFIX = struct.Struct("<qII")  # 16 bytes
_MARK_PREFIX = struct.Struct("<Qq")  # 16 bytes
_SNAPSHOT_HEADER = struct.Struct("<8sHHIQqQQ12sI")  # 64 bytes
_ENGINE_HEADER = struct.Struct("<4sHHII")  # 16 bytes
_BOOK_HEADER = struct.Struct("<iIqqqqqqQQ")  # 72 bytes

FILE_HEADER_SIZE: Final = _FILE_HEADER.size
RECORD_HEADER_SIZE: Final = _RECORD_HEADER.size
COMMANDS_PREFIX_SIZE: Final = _COMMANDS_PREFIX.size
ROW_SIZE: Final = COMMAND_DTYPE.itemsize

_SEGMENT_NAME = re.compile(r"^journal-(\d{20})\.lltj$")
_SNAPSHOT_NAME = re.compile(r"^snapshot-(\d{20})\.llts$")
_SNAPSHOT_TMP = re.compile(r"^\.snapshot-\d{20}\.tmp$")
_LOCK_NAME: Final = ".lock"
_EVENTS_NEEDED = re.compile(r"may need (\d+)")

# Snapshot of one resting order (engine_snapshot's per-book table).
ORDER_DTYPE: Final = np.dtype(
    {
        "names": ["order_id", "price", "qty", "account", "side", "stp", "post_only"],
        "formats": ["<i8", "<i8", "<i8", "<i8", "u1", "u1", "u1"],
        "offsets": [0, 8, 16, 24, 32, 33, 34],
        "itemsize": 40,
    }
)
RECOVERY_HINT: Final = (
    "to recover: restore the journal directory from a replica or backup, or, as a last "
    "resort, move the damaged segment, every later segment and every later snapshot aside "
    "and restart (commands journaled after the newest remaining snapshot are then lost); "
    "see docs/journal.md"
)
SNAPSHOT_HINT: Final = (
    "to recover: restore the snapshot from a replica or backup, or allow falling back to "
    "the previous snapshot (lltrade run --allow-snapshot-fallback, or "
    "journal.snapshot_fallback = true), which replays more of the journal; see docs/journal.md"
)


def _command_fingerprint() -> int:
    fields = COMMAND_DTYPE.fields
    assert fields is not None
    parts = [
        f"{name}:{spec[0].str}@{spec[1]}"
        for name, spec in sorted(fields.items(), key=lambda kv: (kv[1][1], kv[0]))
    ]
    parts.append(str(COMMAND_DTYPE.itemsize))
    return zlib.crc32(";".join(parts).encode())


COMMAND_FINGERPRINT: Final = _command_fingerprint()


class RecordType(IntEnum):
    """Type of a journal record (u16 on disk; 1..255 reserved for lltrade)."""

    COMMANDS = 1  #: a batch of raw COMMAND_DTYPE rows and its receive timestamp (read only)
    SESSION = 2  #: a session event (JSON), for audit
    SNAPSHOT_MARK = 3  #: a snapshot covering records 1..covered_seq was taken
    PACKED_COMMANDS = 4  #: a batch of commands, packed, and its receive timestamp


COMMAND_TYPES: Final = frozenset({RecordType.COMMANDS, RecordType.PACKED_COMMANDS})
"""The record types that carry a batch of commands (``Record.commands()``)."""


# -- errors ---------------------------------------------------------------------------------


class JournalError(Exception):
    """The journal cannot be used: a write failed, it is locked, or incompatible."""


class JournalCorrupt(JournalError):
    """Damage that recovery must not skip: names the file, the byte offset and the problem.

    Parameters
    ----------
    path
        The damaged file.
    offset
        Byte offset in it where the damage starts (the record or header).
    what
        What is wrong.
    hint
        What the operator can do (default: :data:`RECOVERY_HINT`).
    """

    def __init__(
        self, path: str | os.PathLike[str], offset: int, what: str, hint: str = ""
    ) -> None:
        self.path = Path(path)
        self.offset = offset
        self.what = what
        super().__init__(f"{self.path}: offset {offset}: {what}; {hint or RECOVERY_HINT}")


# -- file names -----------------------------------------------------------------------------


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record is ``first_seq``."""
    return f"journal-{first_seq:020d}.lltj"


def snapshot_name(seq: int) -> str:
    """File name of the snapshot covering records 1..``seq``."""
    return f"snapshot-{seq:020d}.llts"


def list_segments(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The segments in ``directory`` as ``(first_seq, path)``, oldest first.

    Parameters
    ----------
    directory
        The journal directory (missing: no segments).
    """
    return _list(Path(directory), _SEGMENT_NAME)


def list_snapshots(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The snapshot files in ``directory`` as ``(seq, path)``, oldest first (unverified)."""
    return _list(Path(directory), _SNAPSHOT_NAME)


def _list(directory: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise JournalError(f"cannot list {directory}: {exc.strerror or exc}") from None
    found = []
    for name in names:
        m = pattern.match(name)
        if m:
            found.append((int(m[1]), directory / name))
    found.sort()
    return found


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _all_zero(data: bytes, start: int) -> bool:
    return data.count(b"\x00", start) == len(data) - start


def _lock(directory: Path, what: str) -> int:
    """Take the journal's exclusive lock (non-blocking); return its fd."""
    path = directory / _LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise JournalError(
                f"{directory} is in use by another journal writer (lock {path} is held); "
                f"cannot {what}"
            ) from None
        raise JournalError(f"cannot lock {path}: {exc.strerror or exc}") from None
    return fd


# -- records --------------------------------------------------------------------------------


class Record:
    """One journal record, as :class:`JournalReader` yields it.

    Attributes
    ----------
    seq
        Its sequence number.
    type
        Its record type (an int; compare with :class:`RecordType`).
    flags
        Its flags (``FLAG_STATE``, ...).
    payload
        The payload bytes, a read-only view into the segment's data.
    path, offset
        Where the record starts.
    """

    __slots__ = ("flags", "offset", "path", "payload", "seq", "type")

    def __init__(
        self, seq: int, rtype: int, flags: int, payload: memoryview, path: Path, offset: int
    ) -> None:
        self.seq = seq
        self.type = rtype
        self.flags = flags
        self.payload = payload
        self.path = path
        self.offset = offset

    def __repr__(self) -> str:
        try:
            name = RecordType(self.type).name
        except ValueError:
            name = str(self.type)
        return f"Record(seq={self.seq}, type={name}, bytes={len(self.payload)})"

    @property
    def size(self) -> int:
        """Bytes the record takes in its segment (header, payload, padding)."""
        return RECORD_HEADER_SIZE + _pad8(len(self.payload))

    def _expect(self, rtype: RecordType) -> None:
        if self.type != rtype:
            raise TypeError(f"record {self.seq} is of type {self.type}, not {rtype.name}")

    def _expect_commands(self) -> None:
        if self.type not in COMMAND_TYPES:
            raise TypeError(f"record {self.seq} is of type {self.type}, not a batch of commands")

    def _corrupt(self, what: str) -> JournalCorrupt:
        return JournalCorrupt(self.path, self.offset, f"record {self.seq}: {what}")

    def command_count(self) -> int:
        """Number of command rows in a ``PACKED_COMMANDS`` or ``COMMANDS`` record."""
        self._expect_commands()
        if len(self.payload) < COMMANDS_PREFIX_SIZE:
            raise self._corrupt("commands payload shorter than its 16-byte prefix")
        count = int(_COMMANDS_PREFIX.unpack_from(self.payload)[1])
        if self.type == RecordType.PACKED_COMMANDS and count > len(self.payload) - 16:
            # A packed row takes a byte at least; checked before anything is sized by it.
            raise self._corrupt(
                f"PACKED_COMMANDS: {len(self.payload)} bytes cannot hold {count} rows"
            )
        return count

    @property
    def recv_ns(self) -> int:
        """Receive timestamp (ns) of a batch of commands, as recorded at the edge."""
        self._expect_commands()
        if len(self.payload) < COMMANDS_PREFIX_SIZE:
            raise self._corrupt("commands payload shorter than its 16-byte prefix")
        return int(_COMMANDS_PREFIX.unpack_from(self.payload)[0])

    def commands(self) -> CommandArray:
        """The rows of a batch of commands as a ``COMMAND_DTYPE`` array.

        Unpacked into a new array for ``PACKED_COMMANDS``; for ``COMMANDS`` a
        read-only view of the payload (no copy).
        """
        self._expect_commands()
        if self.type == RecordType.COMMANDS:
            count = self._checked_count()
            return np.frombuffer(self.payload, dtype=COMMAND_DTYPE, count=count, offset=16)
        out = np.empty(self.command_count(), dtype=COMMAND_DTYPE)
        self.unpack_into(out, 0)
        return out

    def unpack_into(self, out: CommandArray, start: int) -> int:
        """Unpack a ``PACKED_COMMANDS`` record's rows into ``out[start:]``; how many there were.

        Raises
        ------
        JournalCorrupt
            The payload is not a well-formed packed batch (it passed its CRC, so
            it was written so: a bug, or a layout this lltrade does not share).
        ValueError
            ``out`` has no room for the rows.
        """
        self._expect(RecordType.PACKED_COMMANDS)
        if len(out) - start < self.command_count():
            raise ValueError(f"out has no room for {self.command_count()} rows at {start}")
        try:
            return unpack_commands(self.payload, out, start)
        except ValueError as exc:
            raise self._corrupt(f"PACKED_COMMANDS: {exc}") from None

    def _checked_count(self) -> int:
        """Rows of a raw ``COMMANDS`` payload, checked against its length."""
        payload = self.payload
        if len(payload) < COMMANDS_PREFIX_SIZE:
            raise self._corrupt("COMMANDS payload shorter than its 16-byte prefix")
        _, count, row_size = _COMMANDS_PREFIX.unpack_from(payload)
        if row_size != ROW_SIZE:
            raise self._corrupt(f"COMMANDS row size {row_size}, this lltrade's is {ROW_SIZE}")
        if COMMANDS_PREFIX_SIZE + count * row_size != len(payload):
            raise self._corrupt(
                f"COMMANDS payload of {len(payload)} bytes does not hold {count} rows"
            )
        return int(count)

    def session(self) -> dict[str, Any]:
        """The event of a ``SESSION`` record."""
        self._expect(RecordType.SESSION)
        try:
            event = msgspec.json.decode(self.payload)
        except msgspec.DecodeError as exc:
            raise self._corrupt(f"SESSION payload is not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise self._corrupt("SESSION payload is not a JSON object")
        return event

    def snapshot_mark(self) -> tuple[int, int, str]:
        """``(covered_seq, created_ns, file name)`` of a ``SNAPSHOT_MARK`` record."""
        self._expect(RecordType.SNAPSHOT_MARK)
        if len(self.payload) < _MARK_PREFIX.size:
            raise self._corrupt("SNAPSHOT_MARK payload shorter than 16 bytes")
        covered, created = _MARK_PREFIX.unpack_from(self.payload)
        name = bytes(self.payload[_MARK_PREFIX.size :]).decode("utf-8", "replace")
        return int(covered), int(created), name


# -- writer ---------------------------------------------------------------------------------


class JournalWriter:
    """Appends records to the journal in ``directory``.

    Opening a writer takes the directory's lock, checks the last segment
    (cutting off a torn tail, with a warning) and starts a new segment at the
    next sequence number; existing files are never appended to.

    Parameters
    ----------
    directory
        The journal directory (created if missing).
    durability
        ``"none"``: records go to the page cache (they survive a killed
        process, not a power cut); ``"batch"``: every append is followed by an
        ``os.fdatasync`` before it returns; ``"interval"``: the caller calls
        :meth:`maybe_sync` from a timer, which syncs when ``interval_ms`` have
        passed since the last sync (:attr:`synced_seq` says what is durable).
    interval_ms
        The ``interval`` policy's period.
    segment_bytes
        A segment is closed and a new one started when the next record would
        take it past this size (a record larger than it gets a segment of
        its own).
    mapped
        Append by copying into a shared memory map of the segment, whose file
        is preallocated (``posix_fallocate``) ``preallocate_bytes`` ahead:
        no system call per record.  The bytes land in the same page cache as
        with ``write(2)`` and survive a killed process the same way.  Where the
        file cannot be preallocated or mapped (a full disk, a file system
        without the support) the segment goes on with one ``write(2)`` per
        record, which then fails or succeeds on its own.  False: always
        ``write(2)``.
    preallocate_bytes
        How far ahead a mapped segment's file is preallocated, at a time.
    helper_cpus
        The CPUs a mapped segment's prefaulting thread runs on (not the core the
        appending thread is pinned to); None: wherever the appending thread may.

    Raises
    ------
    JournalError
        If the directory is locked by another writer, cannot be written, or
        its last segment is damaged beyond its tail (:class:`JournalCorrupt`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        durability: Durability = "batch",
        interval_ms: int = 5,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        *,
        mapped: bool = True,
        preallocate_bytes: int = PREALLOCATE_BYTES,
        helper_cpus: Collection[int] | None = None,
    ) -> None:
        if durability not in ("none", "batch", "interval"):
            raise ValueError(f"durability must be none, batch or interval, got {durability!r}")
        if interval_ms < 1:
            raise ValueError(f"interval_ms must be >= 1, got {interval_ms}")
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be >= {MIN_SEGMENT_BYTES}, got {segment_bytes}")
        self._dir = Path(directory)
        self._durability: Durability = durability
        self._sync_each = durability == "batch"
        self._interval_ns = interval_ms * 1_000_000
        self._segment_bytes = segment_bytes
        self._mapped = mapped
        self._preallocate_bytes = _round_up(max(preallocate_bytes, 1), mmap.PAGESIZE)
        self._helper_cpus = helper_cpus
        self._map: MappedSegment | None = None  # None: this segment is written with write(2)
        self._allocated = 0  # mapped: the file's preallocated size; stores stay below it
        self._grow_at = _NEVER  # mapped: past this offset, preallocate the next step
        self._fd = -1
        self._lock_fd = -1
        self._path = self._dir
        self._offset = 0
        self._segment_records = 0
        self._bytes_written = 0
        self._failed: str | None = None
        self._closed_unsynced = False  # policy none: a closed segment was never synced
        self._buf = bytearray(1 << 20)
        self._view = memoryview(self._buf)
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create {self._dir}: {exc.strerror or exc}") from None
        self._lock_fd = _lock(self._dir, "open it for writing")
        try:
            next_seq = self._find_next_seq()
            self._last_seq = next_seq - 1
            self._synced_seq = self._last_seq
            self._last_sync_ns = time.monotonic_ns()
            self._open_segment(next_seq)
        except BaseException:
            self._release()
            raise

    @classmethod
    def from_config(
        cls, config: JournalConfig, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> JournalWriter:
        """A writer for the ``[journal]`` section of the configuration."""
        return cls(
            config.dir, config.durability, config.interval_ms, segment_bytes, mapped=config.mmap
        )

    # -- state -------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The journal directory."""
        return self._dir

    @property
    def durability(self) -> Durability:
        """The durability policy."""
        return self._durability

    @property
    def last_seq(self) -> int:
        """Sequence number of the last record written (0 if none ever was)."""
        return self._last_seq

    @property
    def next_seq(self) -> int:
        """Sequence number the next record will get."""
        return self._last_seq + 1

    @property
    def synced_seq(self) -> int:
        """Every record up to this one has been fdatasync'ed (survives a power cut)."""
        return self._synced_seq

    @property
    def sync_deadline_ns(self) -> int | None:
        """``interval`` policy: the ``time.monotonic_ns()`` from which :meth:`maybe_sync`
        will sync, or None when every record is synced (or the policy is not ``interval``).

        A daemon that holds acks until they are synced can arm its timer for it.
        """
        if self._durability != "interval" or self._synced_seq == self._last_seq:
            return None
        return self._last_sync_ns + self._interval_ns

    @property
    def bytes_written(self) -> int:
        """Bytes of records this writer has appended (headers and padding included)."""
        return self._bytes_written

    @property
    def segment_path(self) -> Path:
        """The segment being written."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._fd < 0

    @property
    def mapped(self) -> bool:
        """True while the segment being written is appended to through a memory map."""
        return self._map is not None

    @property
    def failed(self) -> bool:
        """True once a write or sync failed: every later append raises."""
        return self._failed is not None

    @property
    def error(self) -> str | None:
        """Why the writer failed, or None."""
        return self._failed

    # -- appending ----------------------------------------------------------------------

    def append_commands(self, rows: CommandArray, recv_ns: int) -> int:
        """Append a batch of commands as one ``PACKED_COMMANDS`` record: one copy into the
        mapped segment, or one ``os.write``.

        Parameters
        ----------
        rows
            One-dimensional ``COMMAND_DTYPE`` array (copied if not contiguous).
        recv_ns
            The batch's receive timestamp, decided at the edge.

        Returns
        -------
        int
            The record's sequence number.  Under ``batch`` durability it is
            on disk when this returns.

        Raises
        ------
        JournalError
            The write or its sync failed (the writer is failed from then on).
        """
        if self._failed is not None:
            raise JournalError(self._failed)
        seq = self._last_seq + 1
        # The whole append (packing, both CRCs, the copy or the write) is one call into C.
        segment = self._map
        try:
            if segment is not None:
                total = segment.store_commands(
                    self._offset, self._allocated, self._buf, rows, seq, recv_ns
                )
            else:
                room = self._segment_bytes - self._offset if self._segment_records else MAX_RECORD
                total = write_commands(self._fd, self._buf, rows, seq, recv_ns, room)
        except OSError as exc:
            what = f"cannot append record {seq} to {self._path} at offset {self._offset}"
            raise self._fail(what, exc) from exc
        except (TypeError, ValueError):
            if rows.dtype != COMMAND_DTYPE or rows.ndim != 1:
                raise TypeError(
                    f"rows must be a 1-d array of lltrade.COMMAND_DTYPE, got {rows.dtype} "
                    f"with {rows.ndim} dimensions"
                ) from None
            return self.append_commands(np.ascontiguousarray(rows), recv_ns)
        if total <= 0:  # the buffer may be too small (-bound), or there is no room (0)
            if total < 0:
                self._grow(-total)
            elif segment is not None:
                self._make_room(seq, segment.needed)
            else:
                self._rotate(seq)
            return self.append_commands(rows, recv_ns)
        return self._appended(seq, total)

    def append_session(self, event: dict[str, Any]) -> int:
        """Append a session event (log on, log off, ...) as JSON, for the audit trail.

        Returns
        -------
        int
            The record's sequence number.
        """
        return self.append(RecordType.SESSION, msgspec.json.encode(event))

    def append_snapshot_mark(self, covered_seq: int, snapshot: str | os.PathLike[str]) -> int:
        """Record that a snapshot covering records 1..``covered_seq`` was written.

        Returns
        -------
        int
            The record's sequence number.
        """
        name = os.fsencode(os.path.basename(os.fspath(snapshot)))
        prefix = _MARK_PREFIX.pack(covered_seq, time.time_ns())
        return self.append(RecordType.SNAPSHOT_MARK, prefix + name)

    def append(self, rtype: int, payload: bytes | bytearray | memoryview, flags: int = 0) -> int:
        """Append a record of any type (one ``os.write``).

        Parameters
        ----------
        rtype
            The record type, 1..65535.
        payload
            Its payload, at most :data:`MAX_PAYLOAD` bytes.
        flags
            Its flags; ``FLAG_STATE`` if replay must understand it.

        Returns
        -------
        int
            The record's sequence number.
        """
        if self._failed is not None:
            raise JournalError(self._failed)
        if not 1 <= rtype <= 0xFFFF or not 0 <= flags <= 0xFFFF:
            raise ValueError(f"record type must be 1..65535 and flags 0..65535, got {rtype}")
        length = len(payload)
        if length > MAX_PAYLOAD:
            raise ValueError(f"payload of {length} bytes is above the {MAX_PAYLOAD} limit")
        padded = _pad8(length)
        total = RECORD_HEADER_SIZE + padded
        if total > len(self._buf):
            self._grow(total)
        view = self._view
        view[RECORD_HEADER_SIZE : RECORD_HEADER_SIZE + length] = payload
        view[RECORD_HEADER_SIZE + length : total] = bytes(padded - length)
        return self._commit(int(rtype), flags, length, total)

    def _grow(self, total: int) -> None:
        size = len(self._buf)
        while size < total:
            size *= 2
        self._view.release()
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)

    def _commit(self, rtype: int, flags: int, length: int, total: int) -> int:
        seq = self._last_seq + 1
        seal_record(self._buf, length, rtype, flags, seq)
        return self._emit(seq, total)

    def _emit(self, seq: int, total: int) -> int:
        """Write record ``seq``, framed in ``_buf[:total]``, making room for it first."""
        segment = self._map
        if segment is not None:
            if segment.store_record(self._offset, self._allocated, self._buf, total):
                return self._appended(seq, total)
            self._make_room(seq, total)
            return self._emit(seq, total)
        if self._offset + total > self._segment_bytes and self._segment_records:
            self._rotate(seq)
            return self._emit(seq, total)
        self._write(self._view[:total], seq)
        return self._appended(seq, total)

    def _make_room(self, seq: int, need: int) -> None:
        """Room in the mapped segment for a record of ``need`` bytes: more of its file
        preallocated, the next segment, or (a record larger than a whole segment)
        ``write(2)`` for it."""
        segment = self._map
        assert segment is not None
        if self._offset + need <= segment.size:
            self._preallocate(self._offset + need)
        elif self._segment_records:
            self._rotate(seq)
        else:
            self._unmap()  # a segment of its own, written

    def _preallocate(self, end: int) -> None:
        """Preallocate the mapped segment's file up to ``end`` at least; if the file system
        cannot, go on with ``write(2)`` from the last record (which fails or not on its own)."""
        segment = self._map
        assert segment is not None
        start = self._allocated
        step = self._preallocate_bytes
        target = min(segment.size, _round_up(end, step))
        try:
            os.posix_fallocate(self._fd, start, target - start)
        except OSError as exc:
            log.warning(
                "cannot preallocate %s from offset %d (%s): appending with write(2)",
                self._path,
                start,
                exc.strerror or exc,
            )
            self._unmap()
            return
        self._allocated = target
        ahead = min(GROW_AHEAD, step // 2)
        self._grow_at = target - ahead if target < segment.size else _NEVER
        segment.prefault(self._offset, target)

    def _close_map(self) -> bool:
        """Unmap the segment (its prefaulting stopped) if it is mapped; whether it was."""
        segment, self._map = self._map, None
        if segment is None:
            return False
        segment.close()
        return True

    def _unmap(self) -> None:
        """Stop appending through the map: the file is cut back to its last record (its
        preallocated tail dropped), so that it ends where a written one would."""
        if not self._close_map():
            return
        try:
            os.ftruncate(self._fd, self._offset)
        except OSError as exc:
            raise self._fail(f"cannot cut {self._path} back to offset {self._offset}", exc) from exc
        self._allocated = self._offset
        self._grow_at = _NEVER

    def _appended(self, seq: int, total: int) -> int:
        """Record ``seq`` (``total`` bytes) is in the segment: count it, sync it if asked."""
        self._offset += total
        self._bytes_written += total
        self._segment_records += 1
        self._last_seq = seq
        if self._offset > self._grow_at:  # ahead of the writer, so the prefaulting never stops
            self._preallocate(self._allocated + 1)
        if self._sync_each:
            self.sync()
        return seq

    def _write(self, data: memoryview, seq: int) -> None:
        fd = self._fd
        try:
            done = os.write(fd, data)
            while done < len(data):  # short write: usually the disk filling up
                n = os.write(fd, data[done:])
                if n == 0:
                    raise OSError(errno.EIO, "write wrote nothing")
                done += n
        except OSError as exc:
            raise self._fail(
                f"cannot append record {seq} to {self._path} at offset {self._offset}", exc
            ) from exc

    def _fail(self, what: str, exc: OSError) -> JournalError:
        reason = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
        self._failed = (
            f"journal failed: {what}: {reason}; no further record can be journaled, so the "
            "daemon must stop taking orders. Free space or fix the disk, then restart "
            "(recovery cuts off any partial record)"
        )
        self._close_map()  # no store and no prefault may touch what is cut off
        if self._fd >= 0:  # best effort: drop the partial record now
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)
        log.error(self._failed)
        return JournalError(self._failed)

    # -- syncing ----------------------------------------------------------------------------

    def sync(self) -> None:
        """``os.fdatasync`` what was written; :attr:`synced_seq` becomes :attr:`last_seq`.

        Raises
        ------
        JournalError
            The sync failed (the writer is failed from then on: after a failed
            fdatasync the page cache cannot be trusted to reach the disk).
        """
        if self._failed is not None:
            raise JournalError(self._failed)
        if self._synced_seq == self._last_seq:
            return
        try:
            if self._closed_unsynced:  # policy none rotated without syncing: flush it all
                os.sync()
                self._closed_unsynced = False
            os.fdatasync(self._fd)
        except OSError as exc:
            raise self._fail(f"fdatasync of {self._path} failed", exc) from exc
        self._synced_seq = self._last_seq
        self._last_sync_ns = time.monotonic_ns()

    def maybe_sync(self, now_ns: int) -> bool:
        """Sync if the ``interval`` policy says it is time (call it from a timer).

        Parameters
        ----------
        now_ns
            ``time.monotonic_ns()`` now.

        Returns
        -------
        bool
            True if it synced.  Always False under ``none`` and ``batch``.
        """
        if self._durability != "interval" or self._synced_seq == self._last_seq:
            return False
        if now_ns - self._last_sync_ns < self._interval_ns:
            return False
        self.sync()
        return True

    # -- segments ---------------------------------------------------------------------------

    def _find_next_seq(self) -> int:
        segments = list_segments(self._dir)
        snapshots = list_snapshots(self._dir)
        snap_seq = snapshots[-1][0] if snapshots else 0
        while segments:
            first_seq, path = segments[-1]
            scan = _SegmentScan(path, first_seq, is_last=True, repair=True, locked=True)
            for _ in scan.records():
                pass
            if scan.removed:
                segments.pop()
                continue
            next_seq = scan.next_seq
            if scan.records_seen == 0:
                _unlink(path)  # a header-only segment: made again below
            elif self._durability != "none":
                _fdatasync_path(path)  # what a previous process left in the page cache
            if next_seq - 1 < snap_seq:
                raise JournalError(
                    f"{self._dir}: the journal ends at record {next_seq - 1} but the newest "
                    f"snapshot covers up to {snap_seq}: the journal is not the one the snapshot "
                    "was taken from (restore the directory, or move the snapshot aside)"
                )
            return next_seq
        return snap_seq + 1

    def _open_segment(self, first_seq: int) -> None:
        path = self._dir / segment_name(first_seq)
        header = bytearray(FILE_HEADER_SIZE)
        _FILE_HEADER.pack_into(
            header,
            0,
            SEGMENT_MAGIC,
            FORMAT_VERSION,
            FILE_HEADER_SIZE,
            0,
            first_seq,
            time.time_ns(),
            ROW_SIZE,
            COMMAND_FINGERPRINT,
            b"",
            0,
        )
        struct.pack_into("<I", header, 60, zlib.crc32(header[:60]))
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC  # RDWR: mmap
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            raise JournalError(
                f"cannot start segment {path}: it exists already (two writers on one journal?)"
            ) from None
        except OSError as exc:
            self._failed = f"journal failed: cannot create segment {path}: {exc.strerror or exc}"
            raise JournalError(self._failed) from exc
        self._fd = fd
        self._path = path
        self._offset = 0
        self._segment_records = 0
        try:
            os.write(fd, header)
            if self._durability != "none":
                os.fdatasync(fd)
                _fsync_dir(self._dir)
        except OSError as exc:
            raise self._fail(f"cannot write the header of segment {path}", exc) from exc
        self._offset = self._allocated = FILE_HEADER_SIZE
        if self._mapped:
            self._map_segment()

    def _map_segment(self) -> None:
        """Map the new segment (its file preallocated for the first records) or say why not."""
        # Prefaulting only under "none": the other policies' fdatasyncs would write the
        # pages faulted in ahead (zeros, written again later) and leave them clean, so
        # that the writer faults on them all the same.
        prefault = self._durability == "none"
        try:
            self._map = MappedSegment(
                self._fd, _round_up(self._segment_bytes, mmap.PAGESIZE), prefault
            )
        except OSError as exc:  # out of address space, or a memlock limit under mlockall
            log.warning("cannot map %s (%s): appending with write(2)", self._path, exc.strerror)
            return
        if prefault and self._helper_cpus:  # no thread under the other policies
            try:
                self._map.run_prefault_on(self._helper_cpus)
            except (OSError, ValueError) as exc:
                log.warning("prefaulting of %s stays on the writer's CPUs: %s", self._path, exc)
        self._preallocate(FILE_HEADER_SIZE)
        if self._map is not None and prefault:  # the first appends must not race the thread
            self._map.prefault_now(min(self._allocated, FIRST_PAGES))

    def _rotate(self, first_seq: int) -> None:
        self._unmap()  # a closed segment ends at its last record
        old = self._fd
        if self._durability == "none":
            self._closed_unsynced = self._synced_seq != self._last_seq
        else:
            try:
                os.fdatasync(old)
            except OSError as exc:
                raise self._fail(f"fdatasync of {self._path} failed", exc) from exc
            self._synced_seq = self._last_seq
        os.close(old)
        self._fd = -1
        self._open_segment(first_seq)

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Cut a mapped segment back to its last record, sync (unless the policy is
        ``none`` or the writer failed) and close."""
        try:
            if self._fd >= 0 and self._failed is None:
                self._unmap()
                if self._durability != "none":
                    self.sync()
        finally:
            self._release()

    def _release(self) -> None:
        self._close_map()  # failed: the file may keep its zero tail (recovery trims it)
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"JournalWriter({str(self._dir)!r}, durability={self._durability!r}, "
            f"last_seq={self._last_seq}, synced_seq={self._synced_seq}"
            f"{', FAILED' if self._failed else ''})"
        )


def _round_up(n: int, unit: int) -> int:
    """``n`` rounded up to a multiple of ``unit``."""
    return -(-n // unit) * unit


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise JournalError(f"cannot remove {path}: {exc.strerror or exc}") from None


def _fdatasync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise JournalError(f"cannot sync {path}: {exc.strerror or exc}") from None


# -- reader ---------------------------------------------------------------------------------


class _SegmentScan:
    """Verifies one segment record by record, handling a torn tail."""

    def __init__(
        self, path: Path, name_seq: int, *, is_last: bool, repair: bool, locked: bool = False
    ) -> None:
        self.path = path
        self.name_seq = name_seq
        self.is_last = is_last
        self.repair = repair
        self.locked = locked
        self.next_seq = name_seq
        self.records_seen = 0
        self.created_ns = 0
        self.size = 0
        self.torn: tuple[Path, int] | None = None
        self.unused = 0  # bytes of zeros after the last record (a mapped segment's tail)
        self.removed = False

    def _corrupt(self, offset: int, what: str) -> JournalCorrupt:
        return JournalCorrupt(self.path, offset, what)

    def _torn(self, data: bytes, offset: int, what: str) -> None:
        """A torn tail at ``offset``: cut it off (repair) or just report it."""
        if not self.is_last:
            raise self._corrupt(
                offset, f"{what}, and later segments follow (not a crash at the tail)"
            )
        self.torn = (self.path, offset)
        cut = len(data) - offset
        if not self.repair:
            log.warning(
                "torn record at the tail of %s at offset %d (%s; %d bytes); "
                "recovery will cut it off",
                self.path,
                offset,
                what,
                cut,
            )
            return
        self._cut(offset, "the torn tail")
        log.warning(
            "torn record at the tail of %s at offset %d (%s): cut off %d bytes%s",
            self.path,
            offset,
            what,
            cut,
            " (the whole file)" if self.removed else f"; last good record {self.next_seq - 1}",
        )

    def _unused_tail(self, data: bytes, offset: int) -> None:
        """Zeros from the record boundary at ``offset`` to the end: the part of a mapped
        segment's preallocated file its writer had not reached (docs/journal.md, "Mapped
        segments").  Nothing was lost; recovery trims it so that the file ends at its
        last record, like a segment its writer closed."""
        if not self.is_last:
            raise self._corrupt(offset, "zero-filled tail, and later segments follow")
        self.unused = len(data) - offset
        # A writer holding the lock has it open: the zeros are its preallocation, in use.
        if not self.repair or not self._cut(offset, "the unused preallocated tail", if_free=True):
            return
        log.info(
            "trimmed %d bytes of unused preallocated space after record %d from %s",
            self.unused,
            self.next_seq - 1,
            self.path,
        )

    def _cut(self, offset: int, what: str, *, if_free: bool = False) -> bool:
        """Cut the segment at ``offset`` (remove it at 0), under the directory's lock; with
        ``if_free``, only if no writer holds that lock (whether it cut)."""
        lock_fd = -1
        if not self.locked:
            try:
                lock_fd = _lock(self.path.parent, f"cut off {what}")
            except JournalError:
                if not if_free:
                    raise
                return False
        try:
            if offset <= 0:
                self.path.unlink()
                self.removed = True
            else:
                fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, offset)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise JournalError(
                f"cannot cut off {what} of {self.path} at offset {offset}: {exc.strerror or exc}"
            ) from None
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)
        return True

    def records(self, sink: _Runner | None = None) -> Iterator[Record]:
        """Yield the segment's records; with a ``sink`` that is ``ready``, runs of whole
        ``PACKED_COMMANDS`` records are unpacked into it in C instead (not yielded)."""
        path = self.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read {path}: {exc.strerror or exc}") from None
        size = self.size = len(data)
        if size < FILE_HEADER_SIZE or _all_zero(data, 0):
            what = f"file header truncated ({size} of {FILE_HEADER_SIZE} bytes)"
            if size >= FILE_HEADER_SIZE:
                what = "file header is zeros"
            if self.is_last:
                self._torn(data, 0, what)
                return
            raise self._corrupt(0, what)
        self._check_header(data)
        mv = memoryview(data)
        off = FILE_HEADER_SIZE
        first = seq = self.next_seq
        unpack = _RECORD_HEADER.unpack_from
        crc32 = zlib.crc32
        torn = ""
        unused = False
        try:
            while off < size:
                if sink is not None and sink.ready:
                    off, next_seq, sink.pending_rows = scan_packed(
                        mv, off, seq, sink.pending, sink.pending_rows
                    )
                    sink.records += next_seq - seq
                    seq = next_seq
                    if sink.pending_rows >= COALESCE_ROWS:
                        sink.flush()
                    if off >= size:
                        break
                if size - off < RECORD_HEADER_SIZE:
                    torn = f"record header truncated ({size - off} of 24 bytes)"
                    break
                length, rtype, flags, rseq, header_crc, crc = unpack(data, off)
                if crc32(mv[off : off + 16]) != header_crc:
                    if _all_zero(data, off):
                        unused = True
                        break
                    if _all_zero(data, off + RECORD_HEADER_SIZE):
                        torn = "record header cut short"  # a mapped store stopped in it
                        break
                    raise self._corrupt(
                        off, f"record header checksum mismatch (expected record {seq})"
                    )
                if rseq != seq:
                    kind = "gap" if rseq > seq else "repeat"
                    raise self._corrupt(
                        off, f"sequence {kind}: expected record {seq}, found record {rseq}"
                    )
                if length > MAX_PAYLOAD:
                    raise self._corrupt(off, f"record {rseq}: length {length} above the maximum")
                start = off + RECORD_HEADER_SIZE
                end = start + ((length + 7) & ~7)
                if end > size:
                    torn = f"record {rseq} truncated ({size - off} of {end - off} bytes present)"
                    break
                if crc32(mv[start:end], header_crc) != crc:
                    if end == size or _all_zero(data, end):
                        torn = f"checksum mismatch on the last record ({rseq})"
                        break
                    raise self._corrupt(off, f"record {rseq}: checksum mismatch")
                yield Record(rseq, rtype, flags, mv[start : start + length], path, off)
                seq += 1
                off = end
        finally:
            self.next_seq = seq
            self.records_seen = seq - first
        if torn:
            self._torn(data, off, torn)
        elif unused:
            self._unused_tail(data, off)

    def _check_header(self, data: bytes) -> None:
        (magic, version, header_size, _flags, first_seq, created, row_size, fingerprint) = (
            _FILE_HEADER.unpack_from(data)[:8]
        )
        crc = _FILE_HEADER.unpack_from(data)[-1]
        if magic != SEGMENT_MAGIC:
            raise self._corrupt(0, f"not a journal segment (magic {magic!r})")
        if zlib.crc32(data[:60]) != crc:
            raise self._corrupt(0, "file header checksum mismatch")
        if version != FORMAT_VERSION or header_size != FILE_HEADER_SIZE:
            raise JournalError(
                f"{self.path}: journal format version {version} (header {header_size} bytes); "
                f"this lltrade reads version {FORMAT_VERSION}"
            )
        if first_seq != self.name_seq:
            raise self._corrupt(
                16,
                f"file header says first record {first_seq} but the file name says {self.name_seq}",
            )
        if row_size != ROW_SIZE or fingerprint != COMMAND_FINGERPRINT:
            raise JournalError(
                f"{self.path}: written with another command layout (row size {row_size}, "
                f"fingerprint {fingerprint:#010x}; this lltrade: {ROW_SIZE}, "
                f"{COMMAND_FINGERPRINT:#010x}); replay it with the lltrade version that wrote it"
            )
        self.created_ns = created


@dataclass(slots=True)
class SegmentSummary:
    """What :meth:`JournalReader.summary` found in one segment."""

    path: Path
    first_seq: int
    created_ns: int
    records: int
    bytes: int


@dataclass(slots=True)
class JournalSummary:
    """What :meth:`JournalReader.summary` found in a whole journal (every checksum verified)."""

    directory: Path
    segments: list[SegmentSummary] = field(default_factory=list)
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    by_type: Counter[int] = field(default_factory=Counter)
    commands: int = 0
    bytes: int = 0
    truncated_tail: tuple[Path, int] | None = None


class JournalReader:
    """Reads the journal in ``directory`` in sequence order, verifying as it goes.

    Every record's checksums are checked and sequence numbers must go up by
    one, within and across segments.  A torn record at the very tail of the
    last segment is cut off (``repair=True``) or only reported
    (``repair=False``), with a warning either way, and recorded in
    :attr:`truncated_tail`; any other damage raises :class:`JournalCorrupt`.
    Zeros after the last record of the last segment are the unused part of a
    mapped segment's preallocated file, not damage: trimmed when repairing,
    otherwise left alone.

    Parameters
    ----------
    directory
        The journal directory.
    repair
        Truncate a torn tail (recovery does); tools that only look pass False.

    Examples
    --------
    >>> reader = JournalReader("journal")                  # doctest: +SKIP
    >>> for record in reader:                              # doctest: +SKIP
    ...     if record.type in COMMAND_TYPES:
    ...         rows = record.commands()
    """

    def __init__(self, directory: str | os.PathLike[str], *, repair: bool = True) -> None:
        self._dir = Path(directory)
        if not self._dir.is_dir():
            raise JournalError(f"{self._dir}: no such journal directory")
        self.repair = repair
        self.truncated_tail: tuple[Path, int] | None = None
        """``(path, offset)`` of the torn tail found (and cut off if repairing), or None."""
        self.last_seq: int | None = None
        """The last good record's sequence number, once iteration reached the end."""
        self.segments_read: list[SegmentSummary] = []

    @property
    def directory(self) -> Path:
        """The journal directory."""
        return self._dir

    def segments(self) -> list[tuple[int, Path]]:
        """The segments as ``(first_seq, path)``, oldest first."""
        return list_segments(self._dir)

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def records(self, after_seq: int = 0, *, sink: _Runner | None = None) -> Iterator[Record]:
        """Yield the records whose sequence number is above ``after_seq``.

        Segments that hold only records up to ``after_seq`` (the next segment
        starts at or before ``after_seq + 1``) are not read at all.  ``sink``
        is replay's: once it is ``ready``, it takes runs of command records
        without their being yielded.

        Raises
        ------
        JournalCorrupt
            At the first damage that is not a torn tail.
        """
        segments = self.segments()
        self.truncated_tail = None
        self.last_seq = None
        self.segments_read = []
        start = 0
        while start + 1 < len(segments) and segments[start + 1][0] <= after_seq + 1:
            start += 1
        expected: int | None = None
        for i in range(start, len(segments)):
            first_seq, path = segments[i]
            if expected is not None and first_seq != expected:
                kind = "gap" if first_seq > expected else "repeat"
                raise JournalCorrupt(
                    path,
                    0,
                    f"sequence {kind} between segments: the previous segment ends at record "
                    f"{expected - 1} but this one starts at {first_seq}",
                )
            scan = _SegmentScan(path, first_seq, is_last=i == len(segments) - 1, repair=self.repair)
            if first_seq > after_seq:
                yield from scan.records(sink)
            else:
                for record in scan.records(sink):
                    if record.seq > after_seq:
                        yield record
            if scan.torn is not None:
                self.truncated_tail = scan.torn
            if not scan.removed:
                self.segments_read.append(
                    SegmentSummary(
                        path, first_seq, scan.created_ns, scan.records_seen, scan.size - scan.unused
                    )
                )
            expected = scan.next_seq
            self.last_seq = scan.next_seq - 1

    def summary(self) -> JournalSummary:
        """Read every record and count them (the ``inspect`` and ``verify`` tools).

        Raises
        ------
        JournalCorrupt
            At the first damage that is not a torn tail.
        """
        out = JournalSummary(self._dir)
        for record in self.records():
            if out.first_seq is None:
                out.first_seq = record.seq
            out.records += 1
            out.by_type[record.type] += 1
            if record.type in COMMAND_TYPES:
                out.commands += record.command_count()
        out.last_seq = self.last_seq
        out.segments = self.segments_read
        out.bytes = sum(s.bytes for s in out.segments)
        out.truncated_tail = self.truncated_tail
        return out


# -- replay ---------------------------------------------------------------------------------

EventsCallback = Callable[[npt.NDArray[np.void], int], None]
BatchCallback = Callable[[npt.NDArray[np.void], npt.NDArray[np.void]], None]
"""``on_batch(commands, events)``: the commands one ``engine.process`` call consumed and
the events it wrote (views valid only during the call)."""

COALESCE_ROWS: Final = 4096
"""``replay`` gathers the rows of consecutive small batches into one ``Engine.process``
call of about this many rows."""


class _Runner:
    """Feeds command arrays to ``engine.process`` the way the daemon does."""

    def __init__(
        self,
        engine: Engine,
        events: npt.NDArray[np.void] | None,
        on_events: EventsCallback | None,
        on_batch: BatchCallback | None = None,
    ) -> None:
        self.process = engine.process
        self.engine = engine
        self.events = events if events is not None else np.zeros(1 << 16, dtype=EVENT_DTYPE)
        self.on_events = on_events
        self.on_batch = on_batch
        self.commands = 0  # commands run so far
        self.records = 0  # records the segment scans unpacked straight into pending
        self.ready = False  # set once replay has checked where the journal resumes
        # Rows of records not run yet: pending[:pending_rows].
        self.pending = np.empty(2 * COALESCE_ROWS, dtype=COMMAND_DTYPE)
        self.pending_rows = 0

    def run(self, rows: CommandArray) -> None:
        n = len(rows)
        done = 0
        engine, on_events = self.engine, self.on_events
        while done < n:
            chunk = rows[done:] if done else rows
            try:
                written = self.process(chunk, self.events)
            except ValueError as exc:  # one command may need more room than there is
                self.events = _bigger_events(self.events, exc)
                continue
            consumed = engine.commands_processed
            if consumed == 0:
                self.events = np.zeros(len(self.events) * 2, dtype=EVENT_DTYPE)
                continue
            if on_events is not None:
                on_events(self.events[:written], self.commands + done)
            if self.on_batch is not None:
                self.on_batch(chunk[:consumed], self.events[:written])
            done += consumed
        self.commands += n

    def _room(self, count: int) -> int:
        """Where the next ``count`` rows go in ``pending`` (run what is there if they don't fit)."""
        if self.pending_rows + count > len(self.pending):
            self.flush()
            if count > len(self.pending):
                self.pending = np.empty(count, dtype=COMMAND_DTYPE)
        return self.pending_rows

    def add_packed(self, record: Record, count: int) -> None:
        at = self._room(count)
        self.pending_rows = at + record.unpack_into(self.pending, at)
        if self.pending_rows >= COALESCE_ROWS:
            self.flush()

    def add_raw(self, rows: CommandArray) -> None:
        if len(rows) >= COALESCE_ROWS:  # big enough to run as it is, without a copy
            self.flush()
            self.run(rows)
            return
        at = self._room(len(rows))
        self.pending[at : at + len(rows)] = rows
        self.pending_rows = at + len(rows)
        if self.pending_rows >= COALESCE_ROWS:
            self.flush()

    def flush(self) -> None:
        n = self.pending_rows
        if n:
            self.pending_rows = 0
            self.run(self.pending[:n])


def replay(
    engine: Engine,
    reader: JournalReader,
    after_seq: int = 0,
    *,
    on_events: EventsCallback | None = None,
    events: npt.NDArray[np.void] | None = None,
    on_batch: BatchCallback | None = None,
) -> tuple[int, int]:
    """Feed the journal's batches of commands after ``after_seq`` to ``engine.process``.

    The rows of consecutive small records are gathered into one call of about
    :data:`COALESCE_ROWS` rows, which keeps replay fast when the daemon wrote
    small batches (raw ``COMMANDS`` records of at least that many rows are run
    as they are, without a copy).  The engine
    is deterministic and stops only at command boundaries, so how the rows
    are cut into calls changes neither its state nor its events.

    Parameters
    ----------
    engine
        The engine, holding the state as of record ``after_seq`` (fresh
        books for 0, or :func:`restore_engine` of a snapshot).
    reader
        The journal.
    after_seq
        Replay the records after this one.  The journal must hold record
        ``after_seq + 1`` (a gap raises :class:`JournalCorrupt`).
    on_events
        Called as ``on_events(events, first_command)`` after each
        ``engine.process`` call: ``events`` is a view of the events written
        (valid only during the call) and their ``cmd`` field counts from
        ``first_command``, the number of commands replayed before that call.
        So command ``first_command + cmd`` of the replay caused each event.
    events
        The events buffer to use (grown on demand if too small for one command).
    on_batch
        Called as ``on_batch(commands, events)`` after each ``engine.process``
        call with the commands it consumed and the events it wrote (the daemon
        rebuilds its order gate's risk state from them).

    Returns
    -------
    tuple[int, int]
        Records read (every type) and commands replayed.

    Raises
    ------
    JournalCorrupt
        Damage in the journal, or a gap after ``after_seq``.
    JournalError
        A record that changes state but whose type this lltrade does not know.
    """
    runner = _Runner(engine, events, on_events, on_batch)
    expected = after_seq + 1
    packed_type, raw_type = int(RecordType.PACKED_COMMANDS), int(RecordType.COMMANDS)
    for record in reader.records(after_seq, sink=runner):
        if not runner.ready:
            if record.seq != expected:
                raise JournalCorrupt(
                    record.path,
                    record.offset,
                    f"the journal resumes at record {record.seq} but the state covers records "
                    f"up to {after_seq}: records {expected}..{record.seq - 1} are missing",
                )
            runner.ready = True  # from here on the scans unpack runs of records in C
        runner.records += 1
        rtype = record.type
        if rtype == packed_type:
            count = record.command_count()
            if count:
                runner.add_packed(record, count)
        elif rtype == raw_type:
            runner.add_raw(record.commands())
        elif rtype in (RecordType.SESSION, RecordType.SNAPSHOT_MARK):
            pass
        elif record.flags & FLAG_STATE:
            raise JournalError(
                f"{record.path}: offset {record.offset}: record {record.seq} has type {rtype}, "
                "which changes state but is unknown to this lltrade; replay with a newer version"
            )
    runner.flush()
    if runner.records == 0 and reader.last_seq is not None and reader.last_seq < after_seq:
        log.warning(
            "the journal in %s ends at record %d, before the state (record %d)",
            reader.directory,
            reader.last_seq,
            after_seq,
        )
    return runner.records, runner.commands


def _bigger_events(events: npt.NDArray[np.void], exc: ValueError) -> npt.NDArray[np.void]:
    m = _EVENTS_NEEDED.search(str(exc))
    if m is None and len(events) > 0:
        raise exc  # not about room for events
    need = int(m[1]) if m else 1
    if need > 1 << 28:
        raise exc
    return np.zeros(max(need, 2 * len(events)), dtype=EVENT_DTYPE)


# -- engine snapshots -----------------------------------------------------------------------


def engine_snapshot(engine: Engine) -> bytes:
    """Serialise the engine's books: every resting order, in priority order.

    Layout (little-endian)::

        engine header, 16 bytes: magic b"LLTE", u16 version (1), u16 flags, u32 books,
                                 u32 reserved
        per book, 72 bytes:      i32 symbol_id, u32 reserved, i64 min_price, max_price,
                                 tick, lot, max_qty, max_orders, u64 orders,
                                 u64 state_hash
        then its orders:         ``orders`` rows of ORDER_DTYPE (40 bytes: i64 order_id,
                                 price, qty, account; u8 side, stp, post_only; 5 pad)

    Parameters
    ----------
    engine
        The engine to capture.

    Returns
    -------
    bytes
        The state, for :func:`write_snapshot` and :func:`restore_engine`.
    """
    parts: list[bytes] = []
    symbols = engine.symbols()
    parts.append(_ENGINE_HEADER.pack(ENGINE_MAGIC, 1, 0, len(symbols), 0))
    for symbol in symbols:
        book = engine.book(symbol)
        resting = book.resting()
        table = np.zeros(len(resting), dtype=ORDER_DTYPE)
        if resting:
            cols = np.array(resting, dtype=np.int64)
            for column, name in enumerate(
                ("order_id", "side", "price", "qty", "account", "stp", "post_only")
            ):
                table[name] = cols[:, column]
        parts.append(
            _BOOK_HEADER.pack(
                book.symbol_id,
                0,
                book.min_price,
                book.max_price,
                book.tick,
                book.lot,
                book.max_qty,
                book.max_orders,
                len(resting),
                book.state_hash(),
            )
        )
        parts.append(table.tobytes())
    return b"".join(parts)


def restore_engine(engine: Engine, data: bytes | memoryview) -> None:
    """Rebuild the books of :func:`engine_snapshot` into ``engine``.

    The engine must have a book, with the same band, tick and lot, for every
    symbol in the snapshot, and those books must be empty (books the
    snapshot does not name are left alone: a symbol added to the config).
    The orders are added again in priority order, which gives back the same
    book; each book's ``state_hash`` and size are then checked against the
    snapshot's.

    Raises
    ------
    JournalError
        If the snapshot does not fit the engine or the rebuilt state differs.
    """
    view = memoryview(data)
    if len(view) < _ENGINE_HEADER.size:
        raise JournalError("engine snapshot is shorter than its header")
    magic, version, _flags, nbooks, _ = _ENGINE_HEADER.unpack_from(view)
    if magic != ENGINE_MAGIC or version != 1:
        raise JournalError(f"not an lltrade engine snapshot (magic {magic!r}, version {version})")
    off = _ENGINE_HEADER.size
    commands = np.zeros(4096, dtype=COMMAND_DTYPE)
    events = np.zeros(3 * 4096, dtype=EVENT_DTYPE)
    for _ in range(nbooks):
        if off + _BOOK_HEADER.size > len(view):
            raise JournalError("engine snapshot truncated (book header)")
        (symbol, _, lo, hi, tick, lot, _max_qty, _max_orders, count, digest) = (
            _BOOK_HEADER.unpack_from(view, off)
        )
        off += _BOOK_HEADER.size
        end = off + count * ORDER_DTYPE.itemsize
        if end > len(view):
            raise JournalError(f"engine snapshot truncated (orders of symbol {symbol})")
        table = np.frombuffer(view, dtype=ORDER_DTYPE, count=count, offset=off)
        off = end
        try:
            book = engine.book(symbol)
        except KeyError:
            raise JournalError(
                f"the snapshot holds symbol {symbol}, which the configuration does not define"
            ) from None
        if (book.min_price, book.max_price, book.tick, book.lot) != (lo, hi, tick, lot):
            raise JournalError(
                f"symbol {symbol}: the snapshot's band {lo}..{hi}, tick {tick}, lot {lot} differs "
                f"from the configuration's {book.min_price}..{book.max_price}, tick {book.tick}, "
                f"lot {book.lot}"
            )
        if len(book):
            raise JournalError(f"symbol {symbol}: the book must be empty to restore a snapshot")
        for i in range(0, count, len(commands)):
            part = table[i : i + len(commands)]
            n = len(part)
            cmds = commands[:n]
            cmds.fill(0)
            cmds["op"] = int(Op.ADD)
            cmds["symbol"] = symbol
            cmds["protection"] = -1
            for name in ("order_id", "side", "price", "qty", "account", "stp", "post_only"):
                cmds[name] = part[name]
            done = 0
            while done < n:
                try:
                    written = book.process(cmds[done:], events)
                except ValueError:  # an add that could trade: the orders cross
                    raise JournalError(
                        f"symbol {symbol}: the snapshot's orders cross (bid at or above ask)"
                    ) from None
                kinds = events["kind"][:written]
                bad = kinds == int(EventKind.REJECTED)
                if bad.any():
                    ev = events[:written][bad][0]
                    raise JournalError(
                        f"symbol {symbol}: restoring order {int(ev['order_id'])} was rejected "
                        f"(reason {int(ev['reason'])}); is max_orders smaller than the snapshot?"
                    )
                done += book.commands_processed
        if len(book) != count or book.state_hash() != digest:
            raise JournalError(
                f"symbol {symbol}: the restored book ({len(book)} orders, state hash "
                f"{book.state_hash():#018x}) differs from the snapshot's ({count} orders, "
                f"{digest:#018x})"
            )
    if off != len(view):
        raise JournalError(f"engine snapshot has {len(view) - off} bytes after its last book")


# -- snapshot files -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A verified snapshot file.

    Attributes
    ----------
    path
        The file.
    seq
        The state is the one after records 1..seq.
    created_ns
        When it was written (wall clock).
    state
        The engine state (:func:`restore_engine`).
    extra
        The caller's extra data (JSON object).
    """

    path: Path
    seq: int
    created_ns: int
    state: bytes
    extra: dict[str, Any]


def write_snapshot(
    directory: str | os.PathLike[str],
    seq: int,
    engine_state: bytes | bytearray | memoryview,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a snapshot atomically: temporary file, fsync, rename, fsync of the directory.

    Parameters
    ----------
    directory
        The journal directory.
    seq
        The state is the one after records 1..seq.
    engine_state
        :func:`engine_snapshot`'s bytes.
    extra
        Small JSON-serialisable data to keep with it (daemon state beyond the books).

    Returns
    -------
    Path
        The snapshot file.

    Raises
    ------
    JournalError
        If it cannot be written (the temporary file is removed).
    """
    if seq < 0:
        raise ValueError(f"seq must be >= 0, got {seq}")
    directory = Path(directory)
    state = memoryview(engine_state).cast("B")
    extra_bytes = msgspec.json.encode(extra or {})
    header = bytearray(_SNAPSHOT_HEADER.size)
    _SNAPSHOT_HEADER.pack_into(
        header,
        0,
        SNAPSHOT_MAGIC,
        FORMAT_VERSION,
        _SNAPSHOT_HEADER.size,
        0,
        seq,
        time.time_ns(),
        len(state),
        len(extra_bytes),
        b"",
        0,
    )
    crc = zlib.crc32(extra_bytes, zlib.crc32(state, zlib.crc32(header[:60])))
    struct.pack_into("<I", header, 60, crc)
    final = directory / snapshot_name(seq)
    tmp = directory / f".snapshot-{seq:020d}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for part in (header, state, extra_bytes):
                data = memoryview(part)
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise JournalError(f"cannot write snapshot {final}: {exc.strerror or exc}") from None
    return final


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and verify one snapshot file.

    Raises
    ------
    JournalCorrupt
        If it is truncated, not a snapshot, or fails its checksum.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JournalError(f"cannot read {path}: {exc.strerror or exc}") from None
    hs = _SNAPSHOT_HEADER.size

    def corrupt(offset: int, what: str) -> JournalCorrupt:
        return JournalCorrupt(path, offset, what, SNAPSHOT_HINT)

    if len(data) < hs:
        raise corrupt(0, f"snapshot header truncated ({len(data)} of {hs} bytes)")
    (magic, version, header_size, _flags, seq, created, state_len, extra_len, _, crc) = (
        _SNAPSHOT_HEADER.unpack_from(data)
    )
    if magic != SNAPSHOT_MAGIC:
        raise corrupt(0, f"not a snapshot (magic {magic!r})")
    if version != FORMAT_VERSION or header_size != hs:
        raise JournalError(
            f"{path}: snapshot format version {version}; this lltrade reads {FORMAT_VERSION}"
        )
    if hs + state_len + extra_len != len(data):
        raise corrupt(
            min(len(data), hs + state_len + extra_len),
            f"snapshot is {len(data)} bytes, its header says {hs + state_len + extra_len}",
        )
    mv = memoryview(data)
    if zlib.crc32(mv[hs:], zlib.crc32(mv[:60])) != crc:
        raise corrupt(0, f"snapshot checksum mismatch (CRC over all {len(data)} bytes)")
    m = _SNAPSHOT_NAME.match(path.name)
    if m and int(m[1]) != seq:
        raise corrupt(16, f"header says seq {seq} but the file name says {int(m[1])}")
    try:
        extra = msgspec.json.decode(mv[hs + state_len :])
    except msgspec.DecodeError as exc:
        raise corrupt(hs + state_len, f"extra data is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise corrupt(hs + state_len, "extra data is not a JSON object")
    return Snapshot(path, seq, created, bytes(mv[hs : hs + state_len]), extra)


def latest_snapshot(
    directory: str | os.PathLike[str], *, allow_fallback: bool = False
) -> Snapshot | None:
    """The newest valid snapshot in ``directory``, or None if there is none.

    Parameters
    ----------
    directory
        The journal directory.
    allow_fallback
        If the newest snapshot is damaged, warn and try the one before it
        (recovery then replays more journal).  Without it, damage raises.

    Raises
    ------
    JournalCorrupt
        The newest snapshot is damaged and ``allow_fallback`` is False.
    """
    for _, path in reversed(list_snapshots(directory)):
        try:
            return read_snapshot(path)
        except JournalCorrupt as exc:
            if not allow_fallback:
                raise
            log.warning("snapshot %s is damaged, falling back to an older one: %s", path, exc.what)
    return None


def prune(
    directory: str | os.PathLike[str], keep_after_seq: int, *, keep_snapshots: int = 2
) -> list[Path]:
    """Delete what recovery no longer needs.

    Keeps the newest ``keep_snapshots`` snapshots and deletes older ones
    (and leftover temporary snapshot files); deletes the segments whose
    records all have sequence numbers up to ``min(keep_after_seq, oldest
    kept snapshot)``, so that recovery can fall back to any kept snapshot.
    The last segment is never deleted; with no snapshot, no segment is.

    Parameters
    ----------
    directory
        The journal directory.
    keep_after_seq
        Records after this one are kept (usually the seq of a snapshot).
    keep_snapshots
        Snapshots to keep, newest first (>= 1).

    Returns
    -------
    list[Path]
        The files deleted.
    """
    if keep_snapshots < 1:
        raise ValueError(f"keep_snapshots must be >= 1, got {keep_snapshots}")
    directory = Path(directory)
    removed: list[Path] = []
    snapshots = list_snapshots(directory)
    kept = snapshots[-keep_snapshots:]
    for _, path in snapshots[: len(snapshots) - len(kept)]:
        _unlink(path)
        removed.append(path)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if _SNAPSHOT_TMP.match(name):
                _unlink(directory / name)
                removed.append(directory / name)
    covered = min(keep_after_seq, kept[0][0]) if kept else 0
    segments = list_segments(directory)
    for i in range(len(segments) - 1):
        if segments[i + 1][0] - 1 > covered:
            break
        _unlink(segments[i][1])
        removed.append(segments[i][1])
    if removed:
        _fsync_dir(directory)
    return removed


# -- recovery -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :func:`recover` did.

    Attributes
    ----------
    snapshot
        The snapshot restored, or None.
    snapshot_seq
        Records covered by it (0 without one).
    records, commands
        Records read and commands replayed after it.
    last_seq
        The journal's last good record (the writer continues after it).
    seconds
        Wall time of the whole recovery.
    truncated_tail
        ``(path, offset)`` of a torn tail found, or None.
    """

    snapshot: Path | None
    snapshot_seq: int
    records: int
    commands: int
    last_seq: int
    seconds: float
    truncated_tail: tuple[Path, int] | None


def recover(
    engine: Engine,
    directory: str | os.PathLike[str],
    *,
    use_snapshot: bool = True,
    allow_fallback: bool = False,
    repair: bool = True,
    on_events: EventsCallback | None = None,
    on_batch: BatchCallback | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
) -> Recovery:
    """Rebuild ``engine`` (fresh, empty books) from the newest valid snapshot and the journal.

    Parameters
    ----------
    engine
        An engine with the configured books, all empty.
    directory
        The journal directory.
    use_snapshot
        False replays the whole journal from record 1.
    allow_fallback
        See :func:`latest_snapshot`.
    repair
        Cut off a torn tail (False only reports it).
    on_events, on_batch
        See :func:`replay`.
    on_snapshot
        Called with the snapshot restored (if any), before the journal after it
        is replayed.

    Raises
    ------
    JournalCorrupt
        Damage in the journal or in the newest snapshot.
    JournalError
        A snapshot that does not fit the engine, or an unreadable directory.
    """
    t0 = time.perf_counter()
    if not Path(directory).is_dir():
        return Recovery(None, 0, 0, 0, 0, time.perf_counter() - t0, None)
    snap = latest_snapshot(directory, allow_fallback=allow_fallback) if use_snapshot else None
    after = 0
    if snap is not None:
        restore_engine(engine, snap.state)
        after = snap.seq
        if on_snapshot is not None:
            on_snapshot(snap)
    reader = JournalReader(directory, repair=repair)
    records, commands = replay(engine, reader, after, on_events=on_events, on_batch=on_batch)
    last = reader.last_seq if reader.last_seq is not None else after
    return Recovery(
        snap.path if snap else None,
        after,
        records,
        commands,
        max(last, after),
        time.perf_counter() - t0,
        reader.truncated_tail,
    )
