# cython: language_level=3
"""Telemetry in shared memory: the daemon writes, any process reads, nobody locks.

The layout is specified in _telemetry.pxd and documented byte by byte in
docs/telemetry.md.  ``TelemetryWriter`` creates the file (sized and fully
initialised before it is published by ``rename``) and updates it through the
inline ``tel_*`` functions of the .pxd, or their ``def`` wrappers.
``TelemetryReader`` maps it read-only, validates every size and offset
before trusting it, and copies histograms under their seqlocks.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport errno
from libc.stdint cimport UINT64_MAX, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
cimport numpy as cnp

from lltrade._book cimport EV_ACCEPTED, EV_CANCELLED, EV_FILL, EV_REJECTED
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap

import errno as _errno
import math
import os
import stat
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

cnp.import_array()

cdef extern from "<sched.h>" nogil:
    int sched_yield()

if sys.byteorder != "little":  # pragma: no cover - lltrade runs on x86-64 and arm64
    raise ImportError("the lltrade telemetry layout is little-endian")

MAGIC = b"LLTRTEL\0"
LAYOUT_VERSION = TEL_VERSION
DEFAULT_DIRECTORY = "/dev/shm"
KINDS = ("counter", "gauge", "histogram")
# Histogram buckets of the files this module writes (a reader follows the file's header).
SUB_BUCKET_BITS = HIST_SUB_BITS
MAX_EXPONENT = HIST_MAX_EXP
N_BUCKETS = HIST_BUCKETS

cdef uint64_t TEL_MAGIC = 0x004C455452544C4C    # MAGIC read as a little-endian u64
cdef dict _KIND_CODE = {"counter": KIND_COUNTER, "gauge": KIND_GAUGE,
                        "histogram": KIND_HISTOGRAM}
cdef tuple _KIND_NAME = (None, "counter", "gauge", "histogram")
# Seqlock attempts that spin before the reader starts yielding its CPU (the
# writer may be preempted inside an update on a busy host).
cdef Py_ssize_t SPIN_ATTEMPTS = 64
# Values of record_many are published in runs of at most this many, so a
# reader never waits for a whole large batch.
cdef Py_ssize_t RECORD_RUN = 256


class TelemetryError(Exception):
    """The telemetry file is absent, truncated, foreign, or could not be read consistently."""


cdef inline size_t _align(size_t n) noexcept nogil:
    return (n + TEL_ALIGN - 1) & ~(<size_t>TEL_ALIGN - 1)


# =============================================================================
# Buckets
# =============================================================================

cdef inline Py_ssize_t _bucket_of(uint64_t v, uint32_t sub_bits, uint32_t max_exp) noexcept nogil:
    """``tel_bucket`` for any layout (the reader follows the file's header)."""
    cdef unsigned e
    if v < (<uint64_t>1 << sub_bits):
        return <Py_ssize_t>v
    if v >> max_exp:
        return <Py_ssize_t>((max_exp - sub_bits + 1) << sub_bits)
    e = ll_log2_u64(v)
    return <Py_ssize_t>(((e - sub_bits + 1) << sub_bits) + (v >> (e - sub_bits))
                        - (<uint64_t>1 << sub_bits))


def bucket_index(uint64_t value_ns):
    """The bucket a value falls in, in the files this module writes.

    Parameters
    ----------
    value_ns : int
        A value in ns, 0 .. 2**64 - 1.

    Returns
    -------
    int
        0 .. ``N_BUCKETS - 1``; the last is the overflow bucket (>= 2**40 ns).
    """
    return tel_bucket(value_ns)


def bucket_upper_bounds(int sub_bits=HIST_SUB_BITS, int max_exp=HIST_MAX_EXP):
    """Inclusive upper bound of each bucket, in ns, as float64 (``inf`` for the overflow bucket).

    Every finite bound is below 2**53, so the floats are exact.

    Parameters
    ----------
    sub_bits, max_exp : int
        The layout (``hist_sub_bits`` and ``hist_max_exp`` of a file's header).

    Returns
    -------
    numpy.ndarray
        ``(max_exp - sub_bits + 1) * 2**sub_bits + 1`` bounds, increasing.
    """
    if not 1 <= sub_bits <= 16 or not sub_bits < max_exp <= 52:
        raise ValueError(f"no such bucket layout: sub_bits={sub_bits}, max_exp={max_exp}")
    m = 1 << sub_bits
    n = ((max_exp - sub_bits + 1) << sub_bits) + 1
    idx = np.arange(n - 1, dtype=np.uint64)
    group = idx >> np.uint64(sub_bits)               # 0 for the exact buckets below 2**sub_bits
    sub = idx & np.uint64(m - 1)
    width_log2 = np.where(group > 0, group - np.uint64(1), np.uint64(0))
    lower = np.where(group > 0, (np.uint64(m) + sub) << width_log2, idx)
    upper = lower + (np.uint64(1) << width_log2) - np.uint64(1)
    out = np.empty(n, dtype=np.float64)
    out[: n - 1] = upper
    out[n - 1] = math.inf
    return out


def percentile(hist, q):
    """A percentile of a snapshot's histogram, HdrHistogram style.

    Nearest rank: the value ``v`` at rank ``ceil(q / 100 * count)`` among the
    recorded values, reported as the inclusive upper bound of its bucket,
    clamped to ``[min, max]`` when the dict has them.  So ``v <= result`` and
    ``result - v < v / 2**sub_bits``: at most 3.125% high with 32
    sub-buckets, exact below 64 ns, exact for the minimum (rank 1) and the
    maximum (rank ``count``).  A value in the overflow bucket (>= 2**40 ns)
    is reported as ``max``.

    Parameters
    ----------
    hist : mapping
        ``count``, ``buckets`` and ``upper_bounds_ns`` (one histogram of
        ``TelemetryReader.snapshot()``), optionally ``min`` and ``max``.  For
        the difference of two snapshots leave ``min`` and ``max`` out.
    q : float
        Percent, 0 .. 100 (99.9 for p99.9).

    Returns
    -------
    int
        The value in ns; 0 for an empty histogram.
    """
    q = float(q)
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be a percentage in [0, 100], got {q!r}")
    count = int(hist["count"])
    if count <= 0:
        return 0
    lo = hist.get("min")
    hi = hist.get("max")
    # Exact decimal arithmetic: 99.9% of 1000 values is rank 999, not 1000.
    rank = max(1, math.ceil(Fraction(repr(q)) * count / 100))
    if rank == 1 and lo is not None:
        return int(lo)
    if rank >= count and hi is not None:
        return int(hi)
    cum = np.cumsum(np.asarray(hist["buckets"], dtype=np.uint64))
    bounds = np.asarray(hist["upper_bounds_ns"], dtype=np.float64)
    i = int(np.searchsorted(cum, rank, side="left"))
    if i >= len(bounds) or not math.isfinite(bounds[i]):
        if hi is not None:
            return int(hi)
        finite = bounds[np.isfinite(bounds)]
        return int(finite[len(finite) - 1]) + 1 if len(finite) else 0
    value = int(bounds[i])
    if lo is not None:
        value = max(value, int(lo))
    if hi is not None:
        value = min(value, int(hi))
    return value


def default_path(str name):
    """The shared-memory file for a telemetry ``name``: ``/dev/shm/<name>``."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"name must be a plain file name, got {name!r}")
    return os.path.join(DEFAULT_DIRECTORY, name)


# =============================================================================
# The writer
# =============================================================================

cdef bytes _field(object text, str what, Py_ssize_t limit, Py_ssize_t i):
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise TypeError(f"metrics[{i}]: {what} must be a str, got {type(text).__name__}")
    cdef bytes raw = (<str>text).encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"metrics[{i}]: {what} is {len(raw)} bytes of UTF-8, "
                         f"more than the {limit} the layout holds")
    cdef unsigned char ch
    for ch in raw:
        if ch < 32 or ch == 127:
            raise ValueError(f"metrics[{i}]: {what} must not contain control characters")
    return raw


@cython.final
cdef class TelemetryWriter:
    """The daemon's side of the telemetry file (single writer, never blocks).

    The file is created in the target's directory under a temporary name,
    sized (``posix_fallocate``: no SIGBUS later on a full ``/dev/shm``) and
    fully initialised, its magic stored last, and only then renamed over
    ``path``: a reader sees the old file or the complete new one.

    Parameters
    ----------
    path : str or os.PathLike
        Where to publish the file (``default_path(name)`` is ``/dev/shm/<name>``).
        An existing file there is replaced.
    metrics : iterable of (kind, name, help, labels)
        Declared once; the layout is fixed for the writer's life.  ``kind`` is
        ``"counter"``, ``"gauge"`` or ``"histogram"``; ``name`` a unique key of
        at most 96 bytes (``orders_rejected{reason="PRICE_COLLAR"}`` and
        ``orders_rejected.PRICE_COLLAR`` are fine); ``help`` at most 240
        bytes; ``labels`` at most 160 bytes, ``key="value",...`` or empty.
    mode : int
        Permission bits of the file.

    Notes
    -----
    Updates go by index: ``index(name)`` once at start-up, then ``add``,
    ``set``, ``record`` (or, from Cython, ``tel_add``, ``tel_set``,
    ``tel_record`` of _telemetry.pxd, which do no checking).
    """

    def __cinit__(self, path, metrics, *, int mode=0o640):
        self.base = NULL
        self.value_kinds = NULL
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError("path must be a str or an os.PathLike of str")
        self.path = os.path.abspath(path)
        self._index = {}
        specs = []
        cdef Py_ssize_t n_values = 0, n_hists = 0, i = 0
        for i, spec in enumerate(metrics):
            try:
                kind, name, help_text, labels = spec
            except (TypeError, ValueError):
                raise ValueError(f"metrics[{i}] must be (kind, name, help, labels), "
                                 f"got {spec!r}") from None
            code = _KIND_CODE.get(kind)
            if code is None:
                raise ValueError(f"metrics[{i}]: kind must be one of {KINDS}, got {kind!r}")
            name_raw = _field(name, "name", TEL_NAME_MAX, i)
            if not name_raw:
                raise ValueError(f"metrics[{i}]: name must not be empty")
            if name in self._index:
                raise ValueError(f"metrics[{i}]: name {name!r} is declared twice")
            if code == KIND_HISTOGRAM:
                slot, n_hists = n_hists, n_hists + 1
            else:
                slot, n_values = n_values, n_values + 1
            self._index[name] = (kind, slot)
            specs.append((code, slot, name_raw, _field(help_text, "help", TEL_HELP_MAX, i),
                          _field(labels, "labels", TEL_LABELS_MAX, i)))
        self.n_values = n_values
        self.n_histograms = n_hists

        cdef size_t meta_offset = TEL_HEADER_SIZE
        cdef size_t values_offset = _align(meta_offset + len(specs) * TEL_META_SIZE)
        cdef size_t hist_offset = _align(values_offset + n_values * TEL_SLOT_SIZE)
        cdef size_t total = hist_offset + n_hists * HIST_BLOCK_SIZE
        self.value_kinds = <uint8_t*>PyMem_Malloc(n_values + 1)
        if self.value_kinds == NULL:
            raise MemoryError()
        for code, slot, _, _, _ in specs:
            if code != KIND_HISTOGRAM:
                self.value_kinds[<Py_ssize_t>slot] = <uint8_t>code

        directory, base_name = os.path.split(self.path)
        fd, tmp = tempfile.mkstemp(prefix=f".{base_name}.", suffix=".tmp", dir=directory)
        try:
            try:
                os.fchmod(fd, mode)
                try:
                    os.posix_fallocate(fd, 0, total)
                except OSError as exc:     # a file system without fallocate
                    if exc.errno not in (_errno.EOPNOTSUPP, _errno.EINVAL, _errno.ENOSYS):
                        raise
                os.ftruncate(fd, total)
                self._map_and_init(fd, total, meta_offset, values_offset, hist_offset, specs)
                info = os.fstat(fd)
                self._ident = (info.st_dev, info.st_ino)
                os.rename(tmp, self.path)  # publish: atomic, the file is complete
            finally:
                os.close(fd)
        except BaseException:
            self._unmap()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    cdef int _map_and_init(self, int fd, size_t total, size_t meta_offset, size_t values_offset,
                           size_t hist_offset, list specs) except -1:
        cdef void* p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, f"cannot map the telemetry file: {os.strerror(errno)}")
        self.base = <char*>p
        self.size = total
        # Writes every page: pre-faults the mapping, so the hot path never faults.
        memset(self.base, 0, total)
        self.header = <TelHeader*>self.base
        self.values = <TelSlot*>(self.base + values_offset)
        self.hists = <TelHist*>(self.base + hist_offset)
        cdef TelHeader* h = self.header
        cdef uint64_t now = <uint64_t>time.time_ns()
        h.version = TEL_VERSION
        h.header_size = TEL_HEADER_SIZE
        h.total_size = total
        h.start_time_ns = now
        h.heartbeat_ns = now
        h.pid = <uint32_t>os.getpid()
        h.n_metrics = <uint32_t>len(specs)
        h.meta_offset = meta_offset
        h.meta_entry_size = TEL_META_SIZE
        h.value_slot_size = TEL_SLOT_SIZE
        h.values_offset = values_offset
        h.n_values = <uint32_t>self.n_values
        h.n_histograms = <uint32_t>self.n_histograms
        h.hist_offset = hist_offset
        h.hist_block_size = HIST_BLOCK_SIZE
        h.hist_header_size = HIST_HEADER_SIZE
        h.hist_buckets = HIST_BUCKETS
        h.hist_sub_bits = HIST_SUB_BITS
        h.hist_max_exp = HIST_MAX_EXP
        cdef TelMeta* m
        cdef Py_ssize_t i
        cdef bytes name, help_text, labels
        for i, (code, slot, name, help_text, labels) in enumerate(specs):
            m = <TelMeta*>(self.base + meta_offset + i * TEL_META_SIZE)
            m.kind = <uint32_t>code
            m.slot = <uint32_t>slot
            m.name_len = <uint16_t>len(name)
            m.labels_len = <uint16_t>len(labels)
            m.help_len = <uint16_t>len(help_text)
            memcpy(m.name, <const char*>name, len(name))
            memcpy(m.labels, <const char*>labels, len(labels))
            memcpy(m.help, <const char*>help_text, len(help_text))
        for i in range(self.n_histograms):
            self.hists[i].min = UINT64_MAX
        # Everything above happens before the magic, for any reader that sees it.
        ll_store_release_u64(&h.magic, TEL_MAGIC)
        return 0

    def __dealloc__(self):
        self._unmap()
        PyMem_Free(self.value_kinds)
        self.value_kinds = NULL

    cdef void _unmap(self) noexcept:
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL
            self.header = NULL
            self.values = NULL
            self.hists = NULL

    cdef int _check(self, Py_ssize_t idx, int kind) except -1:
        if self.base == NULL:
            raise ValueError("the telemetry writer is closed")
        if kind == KIND_HISTOGRAM:
            if not 0 <= idx < self.n_histograms:
                raise IndexError(f"idx {idx} is not a histogram index "
                                 f"(0 .. {self.n_histograms - 1})")
            return 0
        if not 0 <= idx < self.n_values:
            raise IndexError(f"idx {idx} is not a counter or gauge index "
                             f"(0 .. {self.n_values - 1})")
        if self.value_kinds[idx] != kind:
            raise ValueError(f"idx {idx} is a {_KIND_NAME[self.value_kinds[idx]]}, "
                             f"not a {_KIND_NAME[kind]}")
        return 0

    def index(self, str name):
        """The index to pass to ``add``/``set`` (counters, gauges) or ``record`` (histograms)."""
        try:
            return self._index[name][1]
        except KeyError:
            raise KeyError(f"no metric named {name!r} in this telemetry file") from None

    def kind(self, str name):
        """``"counter"``, ``"gauge"`` or ``"histogram"``."""
        try:
            return self._index[name][0]
        except KeyError:
            raise KeyError(f"no metric named {name!r} in this telemetry file") from None

    def add(self, Py_ssize_t idx, uint64_t v=1):
        """Counter ``idx`` += ``v``."""
        self._check(idx, KIND_COUNTER)
        tel_add(self, <int>idx, v)

    def set(self, Py_ssize_t idx, int64_t v):
        """Gauge ``idx`` = ``v``."""
        self._check(idx, KIND_GAUGE)
        tel_set(self, <int>idx, v)

    def record(self, Py_ssize_t idx, uint64_t value_ns):
        """Record one value (ns) in histogram ``idx``."""
        self._check(idx, KIND_HISTOGRAM)
        tel_record(self, <int>idx, value_ns)

    def record_many(self, Py_ssize_t idx, const uint64_t[:] values_ns):
        """Record every value of a uint64 array (ns) in histogram ``idx``.

        Published in runs of up to 256 values per seqlock update (one fence
        per run instead of one per value).
        """
        self._check(idx, KIND_HISTOGRAM)
        cdef TelHist* h = &self.hists[idx]
        cdef Py_ssize_t i = 0, end, n = values_ns.shape[0]
        cdef uint64_t seq
        while i < n:
            end = i + RECORD_RUN if n - i > RECORD_RUN else n
            seq = tel_begin(h)
            while i < end:
                tel_put(h, values_ns[i])
                i += 1
            tel_end(h, seq)

    def heartbeat(self, now_ns=None):
        """Store the heartbeat: ``now_ns`` or the wall clock (``time.time_ns()``)."""
        if self.base == NULL:
            raise ValueError("the telemetry writer is closed")
        tel_heartbeat(self, <uint64_t>(time.time_ns() if now_ns is None else now_ns))

    def close(self, bint unlink=False):
        """Unmap the file; with ``unlink``, also remove it if ``path`` still names it.

        Idempotent.  Without ``unlink`` the file stays for readers (its
        heartbeat stops).
        """
        if self.base == NULL:
            return
        self._unmap()
        if unlink:
            try:
                info = os.stat(self.path)
                if (info.st_dev, info.st_ino) == self._ident:  # not a newer daemon's file
                    os.unlink(self.path)
            except FileNotFoundError:
                pass

    @property
    def closed(self):
        return self.base == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# =============================================================================
# The reader
# =============================================================================

cdef str _text(const char* p, Py_ssize_t n, Py_ssize_t limit, str what, Py_ssize_t i, str path):
    if n > limit:
        raise TelemetryError(f"{path}: metric {i}: {what} length {n} exceeds {limit}")
    try:
        return p[:n].decode("utf-8")
    except UnicodeDecodeError:
        raise TelemetryError(f"{path}: metric {i}: {what} is not UTF-8") from None


@cython.final
cdef class TelemetryReader:
    """A read-only view of a daemon's telemetry file; never blocks the daemon.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``default_path(name)``).
    max_retries : int
        Attempts to copy one histogram consistently before ``snapshot``
        gives up with ``TelemetryError`` (the first 64 spin, later ones yield
        the CPU first: the writer may be preempted inside an update).

    Raises
    ------
    TelemetryError
        The file is absent, not a regular file, truncated, foreign, of
        another layout version, or its sizes and offsets do not fit.

    Notes
    -----
    Not thread-safe: share one reader between threads under a lock, or give
    each thread its own.  The mapping is of the file, not of the path: once
    the daemon replaces or removes the file, the reader keeps reading the old
    one until ``reopen_if_replaced``.
    """

    def __cinit__(self):
        self.base = NULL
        self.size = 0

    def __init__(self, path, *, Py_ssize_t max_retries=10_000):
        if max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {max_retries}")
        self.max_retries = max_retries
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError("path must be a str or an os.PathLike of str")
        self._map(os.path.abspath(path))

    def __dealloc__(self):
        self._unmap()

    cdef void _unmap(self) noexcept:
        if self.base != NULL:
            munmap(<void*>self.base, self.size)
            self.base = NULL
            self.size = 0

    cdef int _map(self, str path) except -1:
        """Map and validate ``path``; replaces the current mapping only on success."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise TelemetryError(f"no telemetry file at {path} (is the daemon running?)") from exc
        except OSError as exc:
            raise TelemetryError(f"cannot open telemetry file {path}: {exc.strerror}") from exc
        cdef void* p = NULL
        cdef size_t size
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TelemetryError(f"{path} is not a regular file")
            if info.st_size < TEL_HEADER_SIZE:
                raise TelemetryError(f"{path} is truncated: {info.st_size} bytes, less than the "
                                     f"{TEL_HEADER_SIZE}-byte header")
            size = <size_t>info.st_size
            p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0)
            if p == MAP_FAILED:
                raise TelemetryError(f"cannot map {path}: {os.strerror(errno)}")
        finally:
            os.close(fd)
        try:
            parsed = _parse(<const char*>p, size, path)
        except BaseException:
            munmap(p, size)
            raise
        self._unmap()
        self.base = <const char*>p
        self.size = size
        self.path = path
        self._ident = (info.st_dev, info.st_ino)
        (self.pid, self.start_time_ns, self.values_offset, self.slot_size, self.n_values,
         self.hist_offset, self.block_size, self.hist_header_size, self.n_buckets,
         self.sub_bits, self.max_exp, self._counters, self._gauges, self._histograms,
         self._meta) = parsed
        bounds = bucket_upper_bounds(self.sub_bits, self.max_exp)
        bounds.flags.writeable = False
        self._upper_bounds = bounds
        return 0

    cdef int _copy_hist(self, Py_ssize_t block, uint64_t* summary, uint64_t* out) noexcept nogil:
        """Copy one histogram under its seqlock: 0, or -1 after ``max_retries`` attempts.

        Only the buckets from ``min``'s to ``max``'s can be non-zero, so only
        they are copied (``out`` starts zeroed): a short copy is less likely to
        overlap an update.
        """
        cdef const char* blk = self.base + self.hist_offset + block * self.block_size
        cdef const uint64_t* seq = <const uint64_t*>blk
        cdef const uint64_t* buckets = <const uint64_t*>(blk + self.hist_header_size)
        cdef Py_ssize_t attempt, i, lo, hi, dirty_lo = 0, dirty_hi = -1
        cdef uint64_t s1, s2, count, total, vmin, vmax
        for attempt in range(self.max_retries):
            if attempt >= SPIN_ATTEMPTS:
                sched_yield()
            s1 = ll_load_acquire_u64(seq)
            if s1 & 1:
                continue
            count = ll_load_relaxed_u64(seq + 1)
            total = ll_load_relaxed_u64(seq + 2)
            vmin = ll_load_relaxed_u64(seq + 3)
            vmax = ll_load_relaxed_u64(seq + 4)
            for i in range(dirty_lo, dirty_hi + 1):
                out[i] = 0
            lo, hi = 0, -1
            if count:
                # A torn read may give any min and max: stay inside the array.
                lo = _bucket_of(vmin, self.sub_bits, self.max_exp)
                hi = _bucket_of(vmax, self.sub_bits, self.max_exp)
            for i in range(lo, hi + 1):
                out[i] = ll_load_relaxed_u64(buckets + i)
            dirty_lo, dirty_hi = lo, hi
            # No load above may move below the re-check of the sequence.
            ll_fence_acquire()
            s2 = ll_load_relaxed_u64(seq)
            if s1 == s2:
                summary[0] = count
                summary[1] = total
                summary[2] = vmin if count else 0
                summary[3] = vmax
                return 0
        return -1

    def snapshot(self):
        """A copy of everything in the file.

        Returns
        -------
        dict
            ``pid``, ``start_time_ns``, ``heartbeat_ns`` (wall clock, ns since
            the epoch), ``counters`` ``{name: int}`` (unsigned), ``gauges``
            ``{name: int}`` (signed), ``histograms`` ``{name: {"count", "sum",
            "min", "max", "buckets" (uint64 array), "upper_bounds_ns" (float64
            array, inclusive, ``inf`` last), "labels", "help"}}`` and ``meta``
            ``{name: (kind, help, labels)}``.  Each histogram is consistent
            (copied under its seqlock; ``min`` and ``max`` are 0 when empty).
            Counters and gauges are read with acquire loads from the last slot
            to the first, so a value the daemon updates before another
            declared after it is never seen older than that one.

        Raises
        ------
        TelemetryError
            The reader is closed, or a histogram stayed busy for
            ``max_retries`` attempts (the writer died inside an update).
        """
        if self.base == NULL:
            raise TelemetryError("the telemetry reader is closed")
        cdef const TelHeader* hdr = <const TelHeader*>self.base
        cdef uint64_t heartbeat = ll_load_acquire_u64(&hdr.heartbeat_ns)
        cdef Py_ssize_t i, n = self.n_values
        cdef uint64_t* raw = <uint64_t*>PyMem_Malloc((n + 1) * sizeof(uint64_t))
        if raw == NULL:
            raise MemoryError()
        try:
            for i in range(n - 1, -1, -1):
                raw[i] = ll_load_acquire_u64(
                    <const uint64_t*>(self.base + self.values_offset + i * self.slot_size))
            counters = {name: raw[<Py_ssize_t>slot] for name, slot in self._counters}
            gauges = {name: <int64_t>raw[<Py_ssize_t>slot] for name, slot in self._gauges}
        finally:
            PyMem_Free(raw)
        histograms = {}
        cdef uint64_t summary[4]
        cdef uint64_t[::1] out
        cdef Py_ssize_t block
        cdef int rc
        for name, block, labels, help_text in self._histograms:
            buckets = np.zeros(self.n_buckets, dtype=np.uint64)
            out = buckets
            # With the GIL held: no other thread can unmap or re-map meanwhile.
            rc = self._copy_hist(block, summary, &out[0])
            if rc != 0:
                raise TelemetryError(
                    f"{self.path}: histogram {name!r} stayed busy for {self.max_retries} "
                    f"attempts (did the writer die inside an update? heartbeat "
                    f"{self.heartbeat_age_s():.1f} s old)")
            histograms[name] = {
                "count": summary[0], "sum": summary[1], "min": summary[2], "max": summary[3],
                "buckets": buckets, "upper_bounds_ns": self._upper_bounds,
                "labels": labels, "help": help_text,
            }
        return {
            "pid": self.pid,
            "start_time_ns": self.start_time_ns,
            "heartbeat_ns": heartbeat,
            "counters": counters,
            "gauges": gauges,
            "histograms": histograms,
            "meta": dict(self._meta),
        }

    def heartbeat_age_s(self, now_ns=None):
        """Seconds since the daemon's last heartbeat (>= 0), at ``now_ns`` or now (wall clock)."""
        if self.base == NULL:
            raise TelemetryError("the telemetry reader is closed")
        cdef uint64_t heartbeat = ll_load_acquire_u64(&(<const TelHeader*>self.base).heartbeat_ns)
        now = time.time_ns() if now_ns is None else int(now_ns)
        return max(0.0, (now - <object>heartbeat) / 1e9)

    def reopen_if_replaced(self):
        """Map the file again if ``path`` now names another file (the daemon restarted).

        Detected by a change of inode (the writer always publishes a new file)
        or of the pid or start time in the header.

        Returns
        -------
        bool
            True if it re-mapped; False if the file is the same, or absent
            (the old mapping stays readable).

        Raises
        ------
        TelemetryError
            The new file is invalid (the old mapping stays in place).
        """
        if self.base == NULL:
            raise TelemetryError("the telemetry reader is closed")
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TelemetryError(f"cannot stat {self.path}: {exc.strerror}") from exc
        cdef const TelHeader* hdr = <const TelHeader*>self.base
        if ((info.st_dev, info.st_ino) == self._ident and hdr.pid == <uint32_t>self.pid
                and hdr.start_time_ns == self.start_time_ns):
            return False
        self._map(self.path)
        return True

    def close(self):
        """Unmap the file (idempotent)."""
        self._unmap()

    @property
    def closed(self):
        return self.base == NULL

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


cdef object _bad(str path, str why):
    return TelemetryError(f"{path} has an invalid layout: {why}")


cdef int _region(str path, object header_size, object total, str what, object offset,
                 object count, object item, object min_item) except -1:
    if offset % 8 or item % 8 or item < min_item:
        raise _bad(path, f"{what}: offset {offset}, item size {item}")
    if count and not header_size <= offset <= offset + count * item <= total:
        raise _bad(path, f"{what}: {count} x {item} bytes at {offset} do not fit in {total}")
    return 0


cdef tuple _parse(const char* p, size_t size, str path):
    """Validate a mapped file's header and metadata; every offset is checked against ``size``."""
    cdef const TelHeader* h = <const TelHeader*>p
    cdef uint64_t magic = ll_load_acquire_u64(&h.magic)
    if magic != TEL_MAGIC:
        if magic == 0:
            raise TelemetryError(f"{path} is not initialised (zero magic)")
        raise TelemetryError(f"{path} is not an lltrade telemetry file "
                             f"(magic {p[:8]!r}, expected {MAGIC!r})")
    if h.version != TEL_VERSION:
        raise TelemetryError(f"{path} has telemetry layout version {h.version}; "
                             f"this reader reads version {TEL_VERSION}")
    file_size = <object>size
    total = <object>h.total_size
    if total > file_size:
        raise TelemetryError(f"{path} is truncated: {file_size} bytes, its header says {total}")

    header_size = <object>h.header_size
    if not TEL_HEADER_SIZE <= header_size <= total:
        raise _bad(path, f"header size {header_size}")

    n_metrics = <object>h.n_metrics
    n_values = <object>h.n_values
    n_hists = <object>h.n_histograms
    sub_bits = <object>h.hist_sub_bits
    max_exp = <object>h.hist_max_exp
    n_buckets = <object>h.hist_buckets
    _region(path, header_size, total, "metadata", <object>h.meta_offset, n_metrics,
            <object>h.meta_entry_size, TEL_META_SIZE)
    _region(path, header_size, total, "value slots", <object>h.values_offset, n_values,
            <object>h.value_slot_size, 8)
    if not (1 <= sub_bits <= 16 and sub_bits < max_exp <= 52
            and n_buckets == ((max_exp - sub_bits + 1) << sub_bits) + 1):
        raise _bad(path, f"buckets: sub_bits {sub_bits}, max_exp {max_exp}, {n_buckets} buckets")
    hist_header = <object>h.hist_header_size
    if hist_header % 8 or hist_header < 40:
        raise _bad(path, f"histogram header size {hist_header}")
    _region(path, header_size, total, "histograms", <object>h.hist_offset, n_hists,
            <object>h.hist_block_size, hist_header + 8 * n_buckets)

    counters, gauges, histograms, meta = [], [], [], {}
    seen_values, seen_hists = set(), set()
    cdef const TelMeta* m
    cdef Py_ssize_t i
    for i in range(n_metrics):
        m = <const TelMeta*>(p + h.meta_offset + i * h.meta_entry_size)
        name = _text(m.name, m.name_len, TEL_NAME_MAX, "name", i, path)
        labels = _text(m.labels, m.labels_len, TEL_LABELS_MAX, "labels", i, path)
        help_text = _text(m.help, m.help_len, TEL_HELP_MAX, "help", i, path)
        if not name or name in meta:
            raise _bad(path, f"metric {i}: empty or repeated name {name!r}")
        if m.kind == KIND_HISTOGRAM:
            if m.slot >= n_hists or m.slot in seen_hists:
                raise _bad(path, f"metric {name!r}: histogram block {m.slot}")
            seen_hists.add(m.slot)
            histograms.append((name, m.slot, labels, help_text))
        elif m.kind == KIND_COUNTER or m.kind == KIND_GAUGE:
            if m.slot >= n_values or m.slot in seen_values:
                raise _bad(path, f"metric {name!r}: value slot {m.slot}")
            seen_values.add(m.slot)
            (counters if m.kind == KIND_COUNTER else gauges).append((name, m.slot))
        else:
            raise _bad(path, f"metric {name!r}: unknown kind {m.kind}")
        meta[name] = (_KIND_NAME[m.kind], help_text, labels)
    return (h.pid, h.start_time_ns, h.values_offset, h.value_slot_size, n_values,
            h.hist_offset, h.hist_block_size, hist_header, n_buckets, sub_bits, max_exp,
            counters, gauges, histograms, meta)


# =============================================================================
# The daemon's order path
# =============================================================================


@cython.final
cdef class OrderPathTelemetry:
    """What the daemon publishes per engine call and per read, counted in C.

    One call per engine call (:meth:`batch`: the commands it consumed, its
    events by kind, its rejects by reason, its time and size) and one per
    read (:meth:`read`: the read-to-write latency, once per order it
    carried, as a single histogram update), so the cost per order is a
    couple of nanoseconds per event plus a share of two calls.

    Parameters
    ----------
    writer : TelemetryWriter
        The daemon's writer.
    counters : dict
        Counter indexes for ``orders_in``, ``orders_accepted``,
        ``orders_rejected``, ``fills`` and ``cancels``.
    by_reason : dict
        Reject reason -> the index of its ``orders_rejected{reason=...}`` counter.
    latency, batch_time, batch_size : int
        Histogram indexes.
    """

    def __cinit__(self, TelemetryWriter writer not None, dict counters, dict by_reason, *,
                  int latency, int batch_time, int batch_size):
        cdef int k
        self.w = writer
        self.orders_in = counters["orders_in"]
        self.accepted = counters["orders_accepted"]
        self.rejected = counters["orders_rejected"]
        self.fills = counters["fills"]
        self.cancels = counters["cancels"]
        for k in (self.orders_in, self.accepted, self.rejected, self.fills, self.cancels):
            writer._check(k, KIND_COUNTER)
        for k in range(REASON_SLOTS):
            self.by_reason[k] = -1
        for reason, idx in by_reason.items():
            if not (0 <= reason < REASON_SLOTS):
                raise ValueError(f"reject reason {reason} is outside 0 .. {REASON_SLOTS - 1}")
            writer._check(idx, KIND_COUNTER)
            self.by_reason[reason] = idx
        for k in (latency, batch_time, batch_size):
            writer._check(k, KIND_HISTOGRAM)
        self.latency = latency
        self.batch_time = batch_time
        self.batch_size = batch_size

    def batch(self, cnp.ndarray events, Py_ssize_t n, Py_ssize_t n_commands,
              uint64_t elapsed_ns):
        """One engine call: ``n_commands`` consumed, ``events[:n]`` written, in ``elapsed_ns``.

        ``ReportEncoder.encode`` does the same in C when the telemetry is
        attached to it (the daemon's way: no call of its own).
        """
        if cnp.PyArray_ITEMSIZE(events) != sizeof(EventRecord) or not (
                0 <= n <= cnp.PyArray_SIZE(events)):
            raise ValueError("events must be an EVENT_DTYPE array of at least n rows")
        self.count_batch(<const EventRecord*>cnp.PyArray_DATA(events), n, n_commands, elapsed_ns)

    cdef void count_batch(self, const EventRecord* ev, Py_ssize_t n, Py_ssize_t n_commands,
                          uint64_t elapsed_ns) noexcept:
        """Count ``ev[:n]`` by kind and reject reason; with ``n_commands`` > 0 also the
        commands, the batch's time and its size."""
        cdef Py_ssize_t k
        cdef uint64_t accepted = 0, rejected = 0, fills = 0, cancels = 0
        cdef TelemetryWriter w = self.w
        if w.base == NULL:
            return
        for k in range(n):
            if ev[k].kind == EV_ACCEPTED:
                accepted += 1
            elif ev[k].kind == EV_FILL:
                fills += 1
            elif ev[k].kind == EV_CANCELLED:
                cancels += 1
            elif ev[k].kind == EV_REJECTED:
                rejected += 1
                if ev[k].reason < REASON_SLOTS and self.by_reason[ev[k].reason] >= 0:
                    tel_add(w, self.by_reason[ev[k].reason], 1)
        if accepted:
            tel_add(w, self.accepted, accepted)
        if rejected:
            tel_add(w, self.rejected, rejected)
        if fills:
            tel_add(w, self.fills, fills)
        if cancels:
            tel_add(w, self.cancels, cancels)
        if n_commands > 0:
            tel_add(w, self.orders_in, <uint64_t>n_commands)
            tel_record(w, self.batch_time, elapsed_ns)
            tel_record(w, self.batch_size, <uint64_t>n_commands)

    def read(self, Py_ssize_t orders, uint64_t elapsed_ns):
        """One read handled in ``elapsed_ns``: its latency, counted once per order it carried."""
        cdef TelHist* h
        cdef uint64_t seq
        if orders <= 0 or self.w.base == NULL:
            return
        h = &self.w.hists[self.latency]
        seq = tel_begin(h)
        tel_put_n(h, elapsed_ns, <uint64_t>orders)
        tel_end(h, seq)

    def refused(self, int reason):
        """An order message refused before the engine (gate, session or journal)."""
        if self.w.base == NULL:
            return
        tel_add(self.w, self.rejected, 1)
        if 0 <= reason < REASON_SLOTS and self.by_reason[reason] >= 0:
            tel_add(self.w, self.by_reason[reason], 1)


# =============================================================================
# Micro-benchmark helpers (benchmark/telemetry_bench.py): the inline path in a C loop
# =============================================================================

cdef inline uint64_t _xorshift(uint64_t* x) noexcept nogil:
    x[0] ^= x[0] << 13
    x[0] ^= x[0] >> 7
    x[0] ^= x[0] << 17
    return x[0]


def bench_record(TelemetryWriter w not None, int idx, Py_ssize_t n):
    """``n`` x ``tel_record(w, idx, v)`` with v pseudo-random in 100 .. 65635 ns."""
    w._check(idx, KIND_HISTOGRAM)
    cdef uint64_t x = 88172645463325252
    cdef Py_ssize_t i
    with nogil:
        for i in range(n):
            tel_record(w, idx, 100 + (_xorshift(&x) & 0xFFFF))


def bench_order(TelemetryWriter w not None, int c0, int c1, int c2, int hist, Py_ssize_t n):
    """``n`` x the updates of one order: three ``tel_add`` and one ``tel_record``."""
    w._check(c0, KIND_COUNTER)
    w._check(c1, KIND_COUNTER)
    w._check(c2, KIND_COUNTER)
    w._check(hist, KIND_HISTOGRAM)
    cdef uint64_t x = 88172645463325252
    cdef Py_ssize_t i
    with nogil:
        for i in range(n):
            tel_add(w, c0, 1)
            tel_add(w, c1, 1)
            tel_add(w, c2, 48)
            tel_record(w, hist, 100 + (_xorshift(&x) & 0xFFFF))


def bench_loop(Py_ssize_t n):
    """The benchmarks' loop and value generator alone (their overhead)."""
    cdef uint64_t x = 88172645463325252, acc = 0
    cdef Py_ssize_t i
    with nogil:
        for i in range(n):
            acc += 100 + (_xorshift(&x) & 0xFFFF)
    return acc
