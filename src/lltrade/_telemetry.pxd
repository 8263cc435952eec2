# cython: language_level=3
"""The telemetry region's layout and the writer's hot path (the spec; _telemetry.pyx builds on it).

One shared-memory file, written by the daemon alone and read by any number of
processes without locks (docs/telemetry.md).  All integers are little-endian;
every region starts on a 64-byte boundary::

    header          TelHeader, 256 bytes at offset 0
    metadata table  TelMeta[n_metrics], 512 bytes each
    value slots     TelSlot[n_values], 64 bytes each: counters and gauges
    histograms      TelHist[n_histograms], HIST_BLOCK_SIZE bytes each

Other Cython modules ``cimport`` the ``tel_*`` functions below: they are
``inline`` and compile into the caller, so an update is a few C instructions
with no call and no Python object.  Indexes come from
``TelemetryWriter.index(name)`` at start-up; the hot path does not check them
(the debug build asserts).
"""

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from lltrade._book cimport EventRecord

cdef extern from "include/lltrade_atomic.h" nogil:
    const bint LL_DEBUG            # 1 in the debug builds: the hot path asserts its indexes
    uint64_t ll_load_acquire_u64(const uint64_t* p)
    uint64_t ll_load_relaxed_u64(const uint64_t* p)
    uint32_t ll_load_acquire_u32(const uint32_t* p)
    void ll_store_release_u64(uint64_t* p, uint64_t v)
    void ll_store_relaxed_u64(uint64_t* p, uint64_t v)
    void ll_fence_release()
    void ll_fence_acquire()
    unsigned ll_log2_u64(uint64_t x)

cdef extern from "assert.h" nogil:
    # C assert: checked in the debug and sanitizer builds, compiled out by -DNDEBUG.
    void c_assert "assert" (bint condition)

cdef enum:
    TEL_VERSION = 1                # layout version; a reader refuses any other
    TEL_HEADER_SIZE = 256
    TEL_META_SIZE = 512            # one metadata entry
    TEL_NAME_MAX = 96              # bytes of UTF-8 in TelMeta.name
    TEL_LABELS_MAX = 160
    TEL_HELP_MAX = 240
    TEL_SLOT_SIZE = 64             # one counter or gauge: a cache line of its own
    TEL_ALIGN = 64

cdef enum:
    KIND_COUNTER = 1
    KIND_GAUGE = 2
    KIND_HISTOGRAM = 3

# Log-linear buckets (HdrHistogram style), values in ns.  Values below
# 2**(HIST_SUB_BITS + 1) have a bucket each; above, each power of two
# [2**e, 2**(e+1)) is split into 2**HIST_SUB_BITS equal buckets, up to
# 2**HIST_MAX_EXP ns (~18 min); larger values go to the overflow bucket.
cdef enum:
    HIST_SUB_BITS = 5              # S: 32 sub-buckets per power of two, relative width <= 1/32
    HIST_SUB_COUNT = 32            # 2**S
    HIST_MAX_EXP = 40              # E
    HIST_BUCKETS = 1153            # (E - S + 1) * 2**S regular buckets + 1 overflow
    HIST_OVERFLOW = 1152           # index of the overflow bucket
    HIST_BUCKET_SLOTS = 1160       # the bucket array padded so a block is whole cache lines
    HIST_HEADER_SIZE = 64          # offset of the bucket array in a block
    HIST_BLOCK_SIZE = 9344         # HIST_HEADER_SIZE + 8 * HIST_BUCKET_SLOTS


ctypedef struct TelHeader:         # 256 bytes at offset 0; only heartbeat_ns changes once published
    uint64_t magic                 # b"LLTRTEL\0"; stored last, with release order
    uint32_t version               # TEL_VERSION
    uint32_t header_size           # TEL_HEADER_SIZE
    uint64_t total_size            # bytes in the file
    uint64_t start_time_ns         # CLOCK_REALTIME (Unix epoch ns) when the writer created it
    uint64_t heartbeat_ns          # CLOCK_REALTIME of the last heartbeat; release store
    uint32_t pid                   # the writer's process id
    uint32_t n_metrics             # entries in the metadata table
    uint64_t meta_offset           # byte offset of the metadata table
    uint32_t meta_entry_size       # TEL_META_SIZE
    uint32_t value_slot_size       # TEL_SLOT_SIZE
    uint64_t values_offset         # byte offset of value slot 0
    uint32_t n_values              # counter and gauge slots
    uint32_t n_histograms          # histogram blocks
    uint64_t hist_offset           # byte offset of histogram block 0
    uint32_t hist_block_size       # HIST_BLOCK_SIZE (a multiple of 64)
    uint32_t hist_header_size      # HIST_HEADER_SIZE: offset of the buckets in a block
    uint32_t hist_buckets          # HIST_BUCKETS, overflow bucket included
    uint32_t hist_sub_bits         # HIST_SUB_BITS
    uint32_t hist_max_exp          # HIST_MAX_EXP
    uint32_t _reserved0
    uint64_t _reserved[18]         # zero


ctypedef struct TelMeta:           # 512 bytes per metric, in declaration order
    uint32_t kind                  # KIND_*
    uint32_t slot                  # value slot (counter, gauge) or histogram block
    uint16_t name_len              # bytes used in name (UTF-8, NUL-padded, unique in the file)
    uint16_t labels_len            # bytes used in labels: 'key="value",...' or empty
    uint16_t help_len              # bytes used in help
    uint16_t _reserved
    char name[96]                  # TEL_NAME_MAX
    char labels[160]               # TEL_LABELS_MAX
    char help[240]                 # TEL_HELP_MAX


ctypedef struct TelSlot:           # 64 bytes: no two hot values share a cache line
    uint64_t value                 # counter: uint64; gauge: int64 (two's complement); release store
    uint64_t _pad[7]


ctypedef struct TelHist:           # HIST_BLOCK_SIZE bytes; guarded by seq (a seqlock)
    uint64_t seq                   # even: stable; odd: the writer is inside an update
    uint64_t count                 # values recorded
    uint64_t sum                   # their sum in ns (modulo 2**64)
    uint64_t min                   # smallest value; UINT64_MAX while count == 0
    uint64_t max                   # largest value; 0 while count == 0
    uint64_t _pad[3]
    uint64_t buckets[1160]         # HIST_BUCKET_SLOTS; the first HIST_BUCKETS are counts


@cython.final
cdef class TelemetryWriter:
    cdef:
        char* base                     # the shared mapping; NULL once closed
        readonly size_t size           # bytes in the file (= header.total_size)
        TelHeader* header
        TelSlot* values                # n_values slots
        TelHist* hists                 # n_histograms blocks
        readonly Py_ssize_t n_values
        readonly Py_ssize_t n_histograms
        uint8_t* value_kinds           # KIND_COUNTER or KIND_GAUGE per slot (the def checks)
        readonly str path
        dict _index                    # name -> (kind name, index)
        tuple _ident                   # (st_dev, st_ino) of the file it published

    cdef int _map_and_init(self, int fd, size_t total, size_t meta_offset, size_t values_offset,
                           size_t hist_offset, list specs) except -1
    cdef int _check(self, Py_ssize_t idx, int kind) except -1
    cdef void _unmap(self) noexcept


cdef enum:
    REASON_SLOTS = 256             # reject reasons are < 100; larger ones count in the total only


@cython.final
cdef class OrderPathTelemetry:
    cdef:
        TelemetryWriter w
        int orders_in, accepted, rejected, fills, cancels
        int latency, batch_time, batch_size
        int by_reason[REASON_SLOTS]    # reject reason -> counter index; -1 = none

    cdef void count_batch(self, const EventRecord* ev, Py_ssize_t n, Py_ssize_t n_commands,
                          uint64_t elapsed_ns) noexcept


@cython.final
cdef class TelemetryReader:
    cdef:
        const char* base               # the read-only mapping; NULL once closed
        size_t size
        # -- layout, validated when mapped ---------------------------------
        uint64_t values_offset
        uint64_t hist_offset
        Py_ssize_t slot_size
        Py_ssize_t block_size
        Py_ssize_t hist_header_size
        Py_ssize_t n_buckets
        Py_ssize_t n_values
        uint32_t sub_bits
        uint32_t max_exp
        # -- identity of the mapped file -------------------------------------
        readonly str path
        readonly int pid
        readonly uint64_t start_time_ns
        tuple _ident                   # (st_dev, st_ino)
        # -- metadata, parsed once --------------------------------------------
        list _counters                 # [(name, slot)]
        list _gauges                   # [(name, slot)]
        list _histograms               # [(name, block, labels, help)]
        dict _meta                     # name -> (kind, help, labels)
        object _upper_bounds           # read-only numpy uint64 array
        public Py_ssize_t max_retries  # seqlock attempts per histogram before TelemetryError

    cdef int _map(self, str path) except -1
    cdef void _unmap(self) noexcept
    cdef int _copy_hist(self, Py_ssize_t block, uint64_t* summary, uint64_t* buckets) noexcept nogil


# =============================================================================
# The hot path (inline: compiled into each module that cimports it)
# =============================================================================

cdef inline uint32_t tel_bucket(uint64_t v) noexcept nogil:
    """Bucket index of ``v`` ns (docs/telemetry.md, "Buckets")."""
    cdef unsigned e
    if v < HIST_SUB_COUNT:
        return <uint32_t>v
    if v >> HIST_MAX_EXP:
        return HIST_OVERFLOW
    e = ll_log2_u64(v)              # HIST_SUB_BITS <= e < HIST_MAX_EXP
    return <uint32_t>(((e - HIST_SUB_BITS + 1) << HIST_SUB_BITS)
                      + (v >> (e - HIST_SUB_BITS)) - HIST_SUB_COUNT)


cdef inline void tel_add(TelemetryWriter w, int idx, uint64_t v) noexcept nogil:
    """Counter ``idx`` += ``v``."""
    if LL_DEBUG:
        c_assert(w.base != NULL and 0 <= idx < w.n_values and w.value_kinds[idx] == KIND_COUNTER)
    cdef uint64_t* p = &w.values[idx].value
    ll_store_release_u64(p, p[0] + v)   # single writer: a plain read of its own value


cdef inline void tel_set(TelemetryWriter w, int idx, int64_t v) noexcept nogil:
    """Gauge ``idx`` = ``v``."""
    if LL_DEBUG:
        c_assert(w.base != NULL and 0 <= idx < w.n_values and w.value_kinds[idx] == KIND_GAUGE)
    ll_store_release_u64(&w.values[idx].value, <uint64_t>v)


cdef inline uint64_t tel_begin(TelHist* h) noexcept nogil:
    """Open an update of ``h``: make its sequence odd.  Returns the old (even) sequence."""
    cdef uint64_t seq = h.seq
    ll_store_relaxed_u64(&h.seq, seq + 1)
    # Orders the odd sequence before every data store below: a reader that sees
    # any of them then sees the odd (or a later) sequence when it re-checks.
    ll_fence_release()
    return seq


cdef inline void tel_put(TelHist* h, uint64_t v) noexcept nogil:
    """Add ``v`` to ``h``; only between ``tel_begin`` and ``tel_end``."""
    cdef uint32_t b = tel_bucket(v)
    ll_store_relaxed_u64(&h.count, h.count + 1)
    ll_store_relaxed_u64(&h.sum, h.sum + v)
    if v < h.min:
        ll_store_relaxed_u64(&h.min, v)
    if v > h.max:
        ll_store_relaxed_u64(&h.max, v)
    ll_store_relaxed_u64(&h.buckets[b], h.buckets[b] + 1)


cdef inline void tel_put_n(TelHist* h, uint64_t v, uint64_t n) noexcept nogil:
    """Add ``v`` to ``h`` ``n`` times (``n`` >= 1); only between ``tel_begin`` and ``tel_end``."""
    cdef uint32_t b = tel_bucket(v)
    ll_store_relaxed_u64(&h.count, h.count + n)
    ll_store_relaxed_u64(&h.sum, h.sum + v * n)
    if v < h.min:
        ll_store_relaxed_u64(&h.min, v)
    if v > h.max:
        ll_store_relaxed_u64(&h.max, v)
    ll_store_relaxed_u64(&h.buckets[b], h.buckets[b] + n)


cdef inline void tel_end(TelHist* h, uint64_t seq) noexcept nogil:
    """Close the update opened by ``tel_begin``: publish everything with an even sequence."""
    ll_store_release_u64(&h.seq, seq + 2)


cdef inline void tel_record(TelemetryWriter w, int idx, uint64_t value_ns) noexcept nogil:
    """Record ``value_ns`` in histogram ``idx``."""
    if LL_DEBUG:
        c_assert(w.base != NULL and 0 <= idx < w.n_histograms)
    cdef TelHist* h = &w.hists[idx]
    cdef uint64_t seq = tel_begin(h)
    tel_put(h, value_ns)
    tel_end(h, seq)


cdef inline void tel_heartbeat(TelemetryWriter w, uint64_t now_ns) noexcept nogil:
    """Store the heartbeat (CLOCK_REALTIME ns)."""
    if LL_DEBUG:
        c_assert(w.base != NULL)
    ll_store_release_u64(&w.header.heartbeat_ns, now_ns)
