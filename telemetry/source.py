"""The daemon's shared-memory telemetry, as the exporter sees it.

The exporter never writes to the daemon's file: it reads through
``lltrade._telemetry.TelemetryReader``, which maps the file read-only, so
nothing the exporter does (or fails to do) can hold the daemon up.

:class:`Source` wraps one reader and keeps it current: it opens the file when
it appears, re-maps it when the daemon restarts and replaces it, notices a
new daemon (pid or start time changed) and records the gap, and turns every
failure into a status the HTTP endpoints can report (``absent``,
``unreadable``, ``stale``) instead of an exception.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypedDict

import numpy as np
import numpy.typing as npt

DEFAULT_READER_MODULE: Final = "lltrade._telemetry"
STALE_INTERVALS: Final = 3
"""The heartbeat is stale once it is this many sampling intervals old."""

Status = Literal["ok", "stale", "absent", "unreadable"]


class HistogramSnapshot(TypedDict):
    """One histogram as the reader returns it (values in its own unit, ns for ``*_ns``)."""

    count: int
    sum: int
    min: int
    max: int
    buckets: npt.NDArray[np.uint64]  # observations per bucket, not cumulative
    upper_bounds_ns: npt.NDArray[Any]  # inclusive upper bound of each bucket
    labels: str
    help: str


class Snapshot(TypedDict):
    """One consistent read of the whole telemetry file."""

    pid: int
    start_time_ns: int  # wall clock (ns since the epoch)
    heartbeat_ns: int  # wall clock of the daemon's last heartbeat
    counters: dict[str, int]
    gauges: dict[str, int]
    histograms: dict[str, HistogramSnapshot]
    meta: dict[str, tuple[str, str, str]]  # name -> (kind, help, labels)


class Reader(Protocol):
    """What the exporter needs from ``lltrade._telemetry.TelemetryReader``."""

    def snapshot(self) -> Snapshot:
        """A consistent copy of everything in the file."""
        ...

    def heartbeat_age_s(self, now_ns: int | None = None) -> float:
        """Seconds since the daemon's last heartbeat."""
        ...

    def reopen_if_replaced(self) -> bool:
        """Map the file again if the path now names another file; True if it did."""
        ...


@dataclass(frozen=True)
class Backend:
    """How to open a reader, and which exceptions mean "cannot read the file now".

    Parameters
    ----------
    open : callable
        ``open(path)`` returns a :class:`Reader` (``TelemetryReader``).
    errors : tuple of exception types
        Raised by the reader for an absent, foreign or truncated file.
    name : str
        The module the reader comes from, for messages.
    """

    open: Callable[[str], Reader]
    errors: tuple[type[BaseException], ...]
    name: str = DEFAULT_READER_MODULE


def load_backend(module_name: str = DEFAULT_READER_MODULE) -> Backend:
    """The reader of ``module_name`` (``lltrade._telemetry`` unless testing).

    Parameters
    ----------
    module_name : str
        A module with ``TelemetryReader(path)`` and ``TelemetryError``.

    Returns
    -------
    Backend

    Raises
    ------
    ImportError
        If the module is not there (the extension is not built) or lacks
        either name.
    """
    module = importlib.import_module(module_name)
    try:
        reader_class = module.TelemetryReader
        error_class = module.TelemetryError
    except AttributeError as exc:
        raise ImportError(f"{module_name} has no {exc.name}") from None
    return Backend(open=reader_class, errors=(error_class, OSError), name=module_name)


@dataclass(frozen=True)
class Gap:
    """A daemon restart seen by the exporter.

    ``seconds`` runs from the old daemon's last heartbeat the exporter saw to
    the new daemon's start: how long nothing was publishing (an upper bound
    of the outage, since the old daemon may have lived a little longer).
    """

    old_pid: int
    new_pid: int
    old_heartbeat_ns: int
    new_start_time_ns: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        """The ``gap`` object of a telemetry log line."""
        return {
            "old_pid": self.old_pid,
            "new_pid": self.new_pid,
            "old_heartbeat_ns": self.old_heartbeat_ns,
            "new_start_time_ns": self.new_start_time_ns,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True)
class Reading:
    """The outcome of one look at the file: a snapshot, or why there is none."""

    status: Status
    reason: str
    snapshot: Snapshot | None = None
    heartbeat_age_s: float | None = None
    taken_ns: int = field(default_factory=time.time_ns)
    taken_mono: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        """True when the daemon's heartbeat is fresh."""
        return self.status == "ok"


class Source:
    """The telemetry file of one daemon at a time, re-opened across restarts.

    Thread-safe: the sampler thread and the HTTP threads share one instance;
    a lock serialises the reader's calls.

    Parameters
    ----------
    path : str
        The shared-memory file (``/dev/shm/lltrade`` by default).
    backend : Backend
        Where readers come from.
    interval_s : float
        The sampling interval; the heartbeat is stale after
        ``STALE_INTERVALS`` of them.
    """

    def __init__(self, path: str, backend: Backend, interval_s: float) -> None:
        self.path = path
        self.backend = backend
        self.stale_after_s = STALE_INTERVALS * interval_s
        self._lock = threading.Lock()
        self._reader: Reader | None = None
        self._identity: tuple[int, int] | None = None  # (pid, start_time_ns) last seen
        self._last_heartbeat_ns = 0
        self._restarts = 0
        self._gaps: list[Gap] = []

    @property
    def restarts(self) -> int:
        """Daemon restarts seen since the exporter started."""
        return self._restarts

    def take_gaps(self) -> list[Gap]:
        """The restarts seen since the last call (the sampler reports them once)."""
        with self._lock:
            gaps, self._gaps = self._gaps, []
        return gaps

    def read(self) -> Reading:
        """Look at the file now: open or re-map it as needed, then snapshot it.

        Returns
        -------
        Reading
            ``ok`` or ``stale`` with a snapshot; ``absent`` or
            ``unreadable`` with a reason and no snapshot.
        """
        with self._lock:
            return self._read_locked()

    def _read_locked(self) -> Reading:
        if not os.path.exists(self.path):
            self._drop()  # the daemon removed it: let the old mapping go
            return Reading("absent", f"telemetry file absent: {self.path}")
        try:
            if self._reader is None:
                self._reader = self.backend.open(self.path)
            else:
                self._reader.reopen_if_replaced()
            snapshot = self._reader.snapshot()
            age = float(self._reader.heartbeat_age_s())
        except self.backend.errors as exc:
            self._drop()  # start afresh next time
            return Reading("unreadable", f"telemetry file unreadable: {exc}")
        self._note_identity(snapshot)
        if age < self.stale_after_s:
            return Reading("ok", "heartbeat fresh", snapshot, age)
        reason = f"heartbeat {age:.1f} s old (stale after {self.stale_after_s:g} s)"
        return Reading("stale", reason, snapshot, age)

    def _drop(self) -> None:
        reader, self._reader = self._reader, None
        close = getattr(reader, "close", None)
        if close is not None:
            with contextlib.suppress(*self.backend.errors):
                close()

    def close(self) -> None:
        """Let the mapping go (the exporter is stopping)."""
        with self._lock:
            self._drop()

    def _note_identity(self, snapshot: Snapshot) -> None:
        identity = (int(snapshot["pid"]), int(snapshot["start_time_ns"]))
        if self._identity is not None and identity != self._identity:
            self._restarts += 1
            seconds = max(0.0, (identity[1] - self._last_heartbeat_ns) / 1e9)
            self._gaps.append(
                Gap(self._identity[0], identity[0], self._last_heartbeat_ns, identity[1], seconds)
            )
        self._identity = identity
        self._last_heartbeat_ns = int(snapshot["heartbeat_ns"])
