"""Journal record framing in C: the daemon's per-batch append without Python per field.

``pack_commands`` writes one ``PACKED_COMMANDS`` record (docs/journal.md,
"Record") into a preallocated buffer: the 24-byte header, the 16-byte commands
prefix, the rows packed (a mask of what changed, then zigzag varint deltas:
3 to 8 bytes for a 56-byte row), and both CRC-32s (libdeflate's, the same as ``zlib.crc32``); ``unpack_commands``
turns such a payload back into ``COMMAND_DTYPE`` rows.  ``seal_record`` writes
the header and CRCs of any other record whose payload is already in place;
``MappedSegment`` copies framed records into a memory-mapped segment file, with
a C thread faulting its pages in ahead (docs/journal.md, "Mapped segments").
Every field is stored little-endian byte by byte, so the bytes are the same on
any host.  ``lltrade.journal.JournalWriter`` frames every record through
these; the tests compare them with ``struct``, ``zlib.crc32`` and a
pure-Python packer.

Packing is what keeps journaling cheap at millions of orders a second: the
kernel's page-cache write and the CRC cost in proportion to the bytes, and a
packed row is a tenth to a seventh of a raw one.
"""

cimport cython
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.errno cimport EINTR, EIO, errno
from libc.string cimport memcpy, memset, strerror
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap
from posix.unistd cimport write

from lltrade._arrays cimport checked_rows
from lltrade._book cimport CommandRecord

from lltrade._book import COMMAND_DTYPE

cdef object _COMMAND_DTYPE = COMMAND_DTYPE     # a C global: no module lookup per call

cnp.import_array()

cdef extern from "libdeflate.h" nogil:
    # CRC-32/ISO-HDLC, the same as zlib.crc32 (docs/journal.md); libdeflate picks a
    # carry-less-multiply version at run time where the CPU has one (x86-64 PCLMUL, arm64
    # PMULL) and a portable one elsewhere.
    uint32_t libdeflate_crc32(uint32_t crc, const void* buf, size_t len)

cdef extern from *:
    """
    /* Orders the stores before it ahead of those after it for anything that can stop
       this thread between them (a signal, SIGKILL): a compiler barrier, no CPU fence. */
    static inline void lltrade_store_order(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
    """
    void lltrade_store_order() noexcept nogil

cdef extern from *:
    """
    #include <errno.h>
    #include <pthread.h>
    #include <sched.h>
    #include <semaphore.h>
    #include <sys/mman.h>
    #include <sys/resource.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    #ifndef MADV_POPULATE_WRITE
    #define MADV_POPULATE_WRITE 23  /* Linux 5.14 */
    #endif

    /* A thread that faults a mapping's pages in, writable, ahead of the stores into it, so
       that the writer's copies find them mapped: the page faults (and the file system's
       work on first touch) are paid on another core.  It only ever works below `target`,
       which the owner raises as the file is preallocated, and stops (joined) before the
       mapping goes. */
    typedef struct {
        pthread_t thread;
        sem_t stopping; /* posted once, to stop the thread without waiting out its sleep */
        unsigned char* base;
        size_t done;    /* [0, done) is faulted in (atomic: the thread writes it) */
        size_t target;  /* fault in up to here (atomic: the writer raises it) */
        int stop;       /* atomic */
        int running;    /* the writer's own: a thread was started */
    } lltrade_prefault_t;

    /* Pages faulted in per madvise: it holds the mapping's lock (mmap_lock, shared) for
       that long, and any mmap or munmap of the process waits behind it. */
    #define LLTRADE_PREFAULT_STEP ((size_t)64 << 10)

    static void lltrade_raise(size_t* p, size_t v) {  /* *p = max(*p, v), atomically */
        size_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, 1, __ATOMIC_RELEASE,
                                                        __ATOMIC_RELAXED)) {}
    }

    static void lltrade_touch(unsigned char* p, size_t n, size_t page) {
        /* Kernels before 5.14: write-fault each page with an atomic add of zero, which
           leaves whatever the writer may be storing there as it is. */
        size_t o;
        for (o = 0; o < n; o += page)
            __atomic_fetch_add(p + o, (unsigned char)0, __ATOMIC_RELAXED);
    }

    /* Sleep `us` microseconds, or less if the thread is being stopped. */
    static void lltrade_prefault_idle(lltrade_prefault_t* pf, long us) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += us * 1000;
        until.tv_sec += until.tv_nsec / 1000000000;
        until.tv_nsec %= 1000000000;
        while (sem_timedwait(&pf->stopping, &until) != 0 && errno == EINTR) {}
    }

    /* The writer publishes its target with an atomic store and never makes a system call
       for this thread: waking a sleeping thread (a futex wake, an IPI to an idle vCPU)
       stalled it for up to a millisecond on a VM.  So this thread polls: every 1 ms while
       there is work, backing off to 64 ms when the writer is idle.  At 2 MiB ahead and
       1 MiB between targets, a writer would need over 15 MB/s of journal to catch up. */
    static void* lltrade_prefault_main(void* arg) {
        lltrade_prefault_t* pf = (lltrade_prefault_t*)arg;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        int madvise_works = 1;
        long idle_us = 1000;
        /* The lowest priority (nice 19, this thread only): on the writer's CPU, it must not
           hold the writer up. */
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
        while (!__atomic_load_n(&pf->stop, __ATOMIC_ACQUIRE)) {
            size_t done = __atomic_load_n(&pf->done, __ATOMIC_RELAXED);
            size_t target = __atomic_load_n(&pf->target, __ATOMIC_ACQUIRE);
            size_t start, end;
            if (done >= target) {
                lltrade_prefault_idle(pf, idle_us);
                idle_us = idle_us < 32000 ? idle_us * 2 : 64000;
                continue;
            }
            idle_us = 1000;
            start = done & ~(page - 1);  /* madvise wants whole pages */
            end = target - start > LLTRADE_PREFAULT_STEP ? start + LLTRADE_PREFAULT_STEP : target;
            if (madvise_works && madvise(pf->base + start, end - start, MADV_POPULATE_WRITE)) {
                if (errno != EINVAL)  /* anything but "not supported here": stop */
                    break;
                madvise_works = 0;
            }
            if (!madvise_works)
                lltrade_touch(pf->base + start, end - start, page);
            lltrade_raise(&pf->done, end);
            sched_yield();  /* between steps, to the writer if it waits for this CPU */
        }
        return NULL;
    }

    static int lltrade_prefault_start(lltrade_prefault_t* pf, unsigned char* base) {
        int err;
        pf->base = base;
        pf->done = pf->target = 0;
        pf->stop = 0;
        if (sem_init(&pf->stopping, 0, 0) != 0)
            return errno;
        err = pthread_create(&pf->thread, NULL, lltrade_prefault_main, pf);
        pf->running = err == 0;
        if (pf->running)
            pthread_setname_np(pf->thread, "lltrade-pages");  /* top -H, ps -L; 15 chars at most */
        else
            sem_destroy(&pf->stopping);
        return err;
    }

    static void lltrade_prefault_to(lltrade_prefault_t* pf, size_t target) {
        if (!pf->running || target <= __atomic_load_n(&pf->target, __ATOMIC_RELAXED))
            return;
        __atomic_store_n(&pf->target, target, __ATOMIC_RELEASE);  /* only the writer stores */
    }

    /* Run the thread on these CPUs (the host's housekeeping ones, not the writer's pinned
       core); 0, or an errno.  Linux: cpu_set_t and pthread_setaffinity_np (_GNU_SOURCE,
       which Python.h defines). */
    static int lltrade_prefault_cpus(lltrade_prefault_t* pf, const int* cpus, int n) {
        cpu_set_t set;
        int i;
        if (!pf->running)
            return 0;
        CPU_ZERO(&set);
        for (i = 0; i < n; i++)
            CPU_SET(cpus[i], &set);
        return pthread_setaffinity_np(pf->thread, sizeof(set), &set);
    }

    /* Fault [0, end) in now, in the calling thread (a new segment's first pages, which
       the writer would otherwise reach before the thread has started); the thread then
       goes on from there. */
    static void lltrade_prefault_now(lltrade_prefault_t* pf, unsigned char* base, size_t end) {
        if (madvise(base, end, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
            lltrade_touch(base, end, (size_t)sysconf(_SC_PAGESIZE));
        if (pf->running)
            lltrade_raise(&pf->done, end);
    }

    static size_t lltrade_prefault_done(lltrade_prefault_t* pf) {
        return pf->running ? __atomic_load_n(&pf->done, __ATOMIC_ACQUIRE) : 0;
    }

    static void lltrade_prefault_stop(lltrade_prefault_t* pf) {
        if (!pf->running)
            return;
        __atomic_store_n(&pf->stop, 1, __ATOMIC_RELEASE);
        sem_post(&pf->stopping);
        pthread_join(pf->thread, NULL);
        pf->running = 0;
        sem_destroy(&pf->stopping);
    }
    """
    ctypedef struct lltrade_prefault_t:
        int running
    int lltrade_prefault_start(lltrade_prefault_t* pf, unsigned char* base) nogil
    void lltrade_prefault_to(lltrade_prefault_t* pf, size_t target) nogil
    void lltrade_prefault_stop(lltrade_prefault_t* pf) nogil
    size_t lltrade_prefault_done(lltrade_prefault_t* pf) nogil
    int lltrade_prefault_cpus(lltrade_prefault_t* pf, const int* cpus, int n) nogil
    void lltrade_prefault_now(lltrade_prefault_t* pf, unsigned char* base, size_t end) nogil
    enum: CPU_SETSIZE

cdef enum:
    HEADER_SIZE = 24          # u32 length, u16 type, u16 flags, u64 seq, u32 header CRC, u32 CRC
    HEADER_CRC_SPAN = 16      # the header CRC covers its first 16 bytes
    PREFIX_SIZE = 16          # i64 recv_ns, u32 row count, u32 row size
    TYPE_PACKED_COMMANDS = 4
    FLAG_STATE = 1
    PACKED_ROW_MAX = 1 + 6 * 10 + 6 + 3   # mask, six 64-bit varints, raw flags, reason
    PACKED_ROW_MIN = 1                    # the mask alone
    MAX_PAYLOAD = 1 << 30       # lltrade.journal.MAX_PAYLOAD
    PREFAULT_AHEAD = 2 << 20    # a mapped segment's pages are faulted in this far ahead


cdef inline void _le16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)


cdef inline void _le32(uint8_t* p, uint32_t v) noexcept nogil:
    cdef int k
    for k in range(4):
        p[k] = <uint8_t>(v >> (8 * k))


cdef inline void _le64(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int k
    for k in range(8):
        p[k] = <uint8_t>(v >> (8 * k))


cdef inline void _seal(uint8_t* p, Py_ssize_t length, Py_ssize_t padded, uint16_t rtype,
                      uint16_t flags, uint64_t seq) noexcept nogil:
    """The header of the record at ``p`` (payload ``length`` bytes, ``padded`` with padding) and
    both CRCs: the header's over its first 16 bytes, the record's over the padded payload."""
    cdef uint32_t header_crc
    _le32(p, <uint32_t>length)
    _le16(p + 4, rtype)
    _le16(p + 6, flags)
    _le64(p + 8, seq)
    header_crc = libdeflate_crc32(0, p, HEADER_CRC_SPAN)
    _le32(p + 16, header_crc)
    _le32(p + 20, libdeflate_crc32(header_crc, p + HEADER_SIZE, <size_t>padded))


def seal_record(bytearray buf not None, Py_ssize_t length, uint16_t rtype, uint16_t flags,
                uint64_t seq):
    """Write the header and CRCs of a record whose payload (zero-padded to 8 bytes) is
    already at ``buf[24:]``; returns the record's size."""
    cdef Py_ssize_t padded = (length + 7) & ~7
    cdef uint8_t* p = <uint8_t*><char*>buf
    if length < 0 or length > 0xFFFFFFFF:
        raise ValueError(f"a payload of {length} bytes does not fit one record")
    if len(buf) < HEADER_SIZE + padded:
        raise ValueError(f"buf holds {len(buf)} bytes, the record needs {HEADER_SIZE + padded}")
    with nogil:
        _seal(p, length, padded, rtype, flags, seq)
    return HEADER_SIZE + padded


# -- the packed form -------------------------------------------------------------------------
#
# Per row, against the previous row of the same record (a row of zeros before the first):
# a mask byte says which fields differ from what that row predicts, and only those
# follow (docs/journal.md, "PACKED_COMMANDS").  Numbers are zigzag varints of the
# difference (64-bit wrapping arithmetic, so every value round-trips); the order id is
# predicted as the previous one + 1, everything else as the previous value.  The five
# one-byte fields go in two bytes when they are small (they always are for valid
# commands), else as 0x80 and the five bytes.  Padding bytes are not stored (they read
# back as zero).

cdef enum:
    M_ORDER_ID = 1
    M_PRICE = 2
    M_QTY = 4
    M_ACCOUNT = 8
    M_PROTECTION = 16
    M_SYMBOL = 32
    M_FLAGS = 64
    M_REASON = 128
    FLAGS_RAW = 0x80

cdef inline uint8_t* _put_varint(uint8_t* p, uint64_t v) noexcept nogil:
    while v >= 0x80:
        p[0] = <uint8_t>(v | 0x80)
        p += 1
        v >>= 7
    p[0] = <uint8_t>v
    return p + 1


cdef inline uint8_t* _put_delta(uint8_t* p, uint64_t d) noexcept nogil:
    return _put_varint(p, (d << 1) ^ <uint64_t>(<int64_t>d >> 63))


cdef inline uint8_t* _put_changed(uint8_t* p, uint8_t* mask, uint8_t bit, int64_t value,
                                  int64_t predicted) noexcept nogil:
    """Unless ``value`` is as ``predicted``: set ``bit`` in ``mask`` and write the difference."""
    if value == predicted:
        return p
    mask[0] |= bit
    return _put_delta(p, <uint64_t>value - <uint64_t>predicted)


cdef inline const uint8_t* _get_varint(const uint8_t* p, const uint8_t* end,
                                       uint64_t* out) noexcept nogil:
    """The varint at ``p`` into ``out``; the byte after it, or NULL if it is cut off or too long."""
    cdef uint64_t v = 0
    cdef unsigned int shift = 0
    cdef uint8_t b
    while p < end:
        b = p[0]
        p += 1
        if shift == 63 and b > 1:
            return NULL
        v |= <uint64_t>(b & 0x7F) << shift
        if b < 0x80:
            out[0] = v
            return p
        shift += 7
    return NULL


cdef inline const uint8_t* _add_delta(const uint8_t* p, const uint8_t* end,
                                      int64_t* field) noexcept nogil:
    """Add the zigzag varint at ``p`` to ``field`` (wrapping); the byte after it, or NULL."""
    cdef uint64_t z
    if p == NULL:
        return NULL
    p = _get_varint(p, end, &z)
    if p != NULL:
        field[0] = <int64_t>(<uint64_t>field[0] + ((z >> 1) ^ (0 - (z & 1))))
    return p


cdef inline bint _same_flags(const CommandRecord* a, const CommandRecord* b) noexcept nogil:
    return (a.op == b.op and a.side == b.side and a.tif == b.tif
            and a.post_only == b.post_only and a.stp == b.stp)


cdef Py_ssize_t _pack_rows(uint8_t* out, const CommandRecord* rows, Py_ssize_t n) noexcept nogil:
    """Pack ``n`` rows at ``out`` (room for PACKED_ROW_MAX each); the bytes written."""
    cdef uint8_t* p = out
    cdef uint8_t* mask
    cdef uint8_t m
    cdef Py_ssize_t i
    cdef const CommandRecord* c
    cdef const CommandRecord* prev
    cdef CommandRecord zero
    memset(&zero, 0, sizeof(zero))
    prev = &zero
    for i in range(n):
        c = rows + i
        mask = p
        p += 1
        m = 0
        p = _put_changed(p, &m, M_ORDER_ID, c.order_id, <int64_t>(<uint64_t>prev.order_id + 1))
        p = _put_changed(p, &m, M_PRICE, c.price, prev.price)
        p = _put_changed(p, &m, M_QTY, c.qty, prev.qty)
        p = _put_changed(p, &m, M_ACCOUNT, c.account, prev.account)
        p = _put_changed(p, &m, M_PROTECTION, c.protection, prev.protection)
        p = _put_changed(p, &m, M_SYMBOL, c.symbol, prev.symbol)
        if not _same_flags(c, prev):
            m |= M_FLAGS
            if c.op < 16 and c.side < 4 and c.post_only < 2 and c.tif < 16 and c.stp < 16:
                p[0] = <uint8_t>(c.op | (c.side << 4) | (c.post_only << 6))
                p[1] = <uint8_t>(c.tif | (c.stp << 4))
                p += 2
            else:
                p[0] = FLAGS_RAW
                p[1] = c.op
                p[2] = c.side
                p[3] = c.tif
                p[4] = c.post_only
                p[5] = c.stp
                p += 6
        if c.reason != prev.reason:
            m |= M_REASON
            p = _put_varint(p, c.reason)
        mask[0] = m
        prev = c
    return p - out


cdef const char* _unpack_rows(const uint8_t* p, const uint8_t* end, CommandRecord* rows,
                              Py_ssize_t n) noexcept nogil:
    """Unpack ``n`` rows from ``p`` that must end exactly at ``end``; NULL, or what is wrong."""
    cdef Py_ssize_t i
    cdef CommandRecord* c
    cdef CommandRecord zero
    cdef const CommandRecord* prev
    cdef uint64_t d
    cdef uint8_t m
    cdef int64_t symbol
    memset(&zero, 0, sizeof(zero))
    prev = &zero
    for i in range(n):
        c = rows + i
        if p >= end:
            return "a row is cut off"
        m = p[0]
        p += 1
        c[0] = prev[0]  # what the mask does not name is as predicted: as before, padding 0
        c.order_id = <int64_t>(<uint64_t>prev.order_id + 1)
        symbol = prev.symbol
        if m & M_ORDER_ID:
            p = _add_delta(p, end, &c.order_id)
        if m & M_PRICE:
            p = _add_delta(p, end, &c.price)
        if m & M_QTY:
            p = _add_delta(p, end, &c.qty)
        if m & M_ACCOUNT:
            p = _add_delta(p, end, &c.account)
        if m & M_PROTECTION:
            p = _add_delta(p, end, &c.protection)
        if m & M_SYMBOL:
            p = _add_delta(p, end, &symbol)
        if p == NULL:
            return "a row is cut off or holds a malformed number"
        if symbol != <int32_t>symbol:
            return "a symbol id does not fit 32 bits"
        c.symbol = <int32_t>symbol
        if m & M_FLAGS:
            if p >= end:
                return "a row is cut off"
            if p[0] == FLAGS_RAW:
                if end - p < 6:
                    return "a row is cut off"
                c.op = p[1]
                c.side = p[2]
                c.tif = p[3]
                c.post_only = p[4]
                c.stp = p[5]
                p += 6
            elif p[0] & 0x80:
                return "a row holds malformed flags"
            else:
                if end - p < 2:
                    return "a row is cut off"
                c.op = p[0] & 15
                c.side = (p[0] >> 4) & 3
                c.post_only = p[0] >> 6
                c.tif = p[1] & 15
                c.stp = p[1] >> 4
                p += 2
        if m & M_REASON:
            p = _get_varint(p, end, &d)
            if p == NULL:
                return "a row is cut off or holds a malformed number"
            if d > 0xFFFF:
                return "a reason code does not fit 16 bits"
            c.reason = <uint16_t>d
        prev = c
    if p != end:
        return "the packed rows do not end where the payload does"
    return NULL


cdef inline Py_ssize_t _bound(Py_ssize_t n) noexcept nogil:
    return HEADER_SIZE + PREFIX_SIZE + n * PACKED_ROW_MAX + 7


def packed_size_bound(Py_ssize_t n):
    """Bytes a ``PACKED_COMMANDS`` record of ``n`` rows may take at most (header included)."""
    return _bound(n)


cdef Py_ssize_t _pack_record(bytearray buf, cnp.ndarray rows, uint64_t seq,
                             int64_t recv_ns) except -2:
    """Frame the ``PACKED_COMMANDS`` record of ``rows`` in ``buf``; its size, padding
    included, or -1 if ``buf`` may be too small (nothing written)."""
    cdef Py_ssize_t n, length, padded
    cdef uint8_t* p
    n = checked_rows(rows, _COMMAND_DTYPE, "rows", "COMMAND_DTYPE", False)
    if n > 0xFFFFFFFF or n * PACKED_ROW_MAX > 0xFFFFFFF0:
        raise ValueError(f"{n} rows do not fit one record")
    if len(buf) < _bound(n):
        return -1
    p = <uint8_t*><char*>buf
    with nogil:
        _le64(p + HEADER_SIZE, <uint64_t>recv_ns)
        _le32(p + HEADER_SIZE + 8, <uint32_t>n)
        _le32(p + HEADER_SIZE + 12, <uint32_t>sizeof(CommandRecord))
        length = PREFIX_SIZE + _pack_rows(p + HEADER_SIZE + PREFIX_SIZE,
                                          <const CommandRecord*>cnp.PyArray_DATA(rows), n)
        padded = (length + 7) & ~7
        memset(p + HEADER_SIZE + length, 0, <size_t>(padded - length))
        _seal(p, length, padded, TYPE_PACKED_COMMANDS, FLAG_STATE, seq)
    return HEADER_SIZE + padded


@cython.boundscheck(False)
@cython.wraparound(False)
def pack_commands(bytearray buf not None, cnp.ndarray rows, uint64_t seq, int64_t recv_ns):
    """Write the ``PACKED_COMMANDS`` record of ``rows`` with sequence ``seq`` at the start of ``buf``.

    Parameters
    ----------
    buf : bytearray
        Room for the record: ``packed_size_bound(len(rows))`` bytes at least.
    rows : numpy.ndarray
        One-dimensional, C-contiguous ``COMMAND_DTYPE`` rows.
    seq, recv_ns : int
        The record's sequence number and the batch's receive timestamp.

    Returns
    -------
    int
        The record's size in bytes, padding included (what to write).
    """
    cdef Py_ssize_t total = _pack_record(buf, rows, seq, recv_ns)
    if total < 0:
        raise ValueError(f"buf holds {len(buf)} bytes, {len(rows)} packed rows may need "
                         f"{packed_size_bound(len(rows))}")
    return total


def write_commands(int fd, bytearray buf not None, cnp.ndarray rows, uint64_t seq,
                   int64_t recv_ns, Py_ssize_t room):
    """Frame the ``PACKED_COMMANDS`` record of ``rows`` in ``buf`` and write it to ``fd``.

    The journal writer's append, in one call: pack, CRC, and ``write(2)`` (looped over
    short writes) with no Python in between.

    Returns
    -------
    int
        The record's size, written; 0 if it is larger than ``room`` (nothing written:
        the caller starts a new segment and calls again); ``-packed_size_bound(n)`` if
        ``buf`` may be too small (nothing written: the caller grows it and calls again).

    Raises
    ------
    OSError
        The write failed (part of the record may be in the file).
    """
    cdef Py_ssize_t total = _pack_record(buf, rows, seq, recv_ns)
    cdef Py_ssize_t done = 0
    cdef ssize_t k
    cdef int err = 0
    cdef const char* p = <const char*>buf
    if total < 0:
        return -packed_size_bound(len(rows))
    if total > room:
        return 0
    with nogil:
        while done < total:
            k = write(fd, p + done, <size_t>(total - done))
            if k > 0:
                done += k
            elif k == 0:
                err = EIO
                break
            elif errno != EINTR:
                err = errno
                break
    if err:
        raise OSError(err, (<bytes>strerror(err)).decode())
    return total


@cython.boundscheck(False)
@cython.wraparound(False)
def unpack_commands(const uint8_t[::1] payload not None, cnp.ndarray out, Py_ssize_t start):
    """Unpack the rows of a ``PACKED_COMMANDS`` payload into ``out[start:]``.

    Parameters
    ----------
    payload : bytes-like
        The record's payload (its 16-byte prefix first, no padding).
    out : numpy.ndarray
        Writable, C-contiguous ``COMMAND_DTYPE`` array with room for the rows.
    start : int
        Where in ``out`` the first row goes.

    Returns
    -------
    int
        The number of rows unpacked.

    Raises
    ------
    ValueError
        ``out`` has no room for them, or the payload is not a well-formed
        packed batch (the message says what is wrong).
    """
    cdef Py_ssize_t size = payload.shape[0]
    cdef Py_ssize_t room, n
    cdef uint32_t row_size
    cdef const uint8_t* p
    cdef const char* error
    room = checked_rows(out, _COMMAND_DTYPE, "out", "COMMAND_DTYPE", True)
    if size < PREFIX_SIZE:
        raise ValueError("the payload is shorter than its 16-byte prefix")
    p = &payload[0]
    n = <Py_ssize_t>(p[8] | (<uint32_t>p[9] << 8) | (<uint32_t>p[10] << 16)
                     | (<uint32_t>p[11] << 24))
    row_size = p[12] | (<uint32_t>p[13] << 8) | (<uint32_t>p[14] << 16) | (<uint32_t>p[15] << 24)
    if row_size != sizeof(CommandRecord):
        raise ValueError(f"the rows unpack to {row_size} bytes, this lltrade's are "
                         f"{sizeof(CommandRecord)}")
    if n * PACKED_ROW_MIN > size - PREFIX_SIZE:
        raise ValueError(f"{size} bytes cannot hold {n} packed rows")
    if start < 0 or start + n > room:
        raise ValueError(f"out holds {room} rows, unpacking {n} at {start} needs {start + n}")
    with nogil:
        error = _unpack_rows(p + PREFIX_SIZE, p + size,
                             <CommandRecord*>cnp.PyArray_DATA(out) + start, n)
    if error != NULL:
        raise ValueError((<bytes>error).decode())
    return n


cdef inline uint32_t _get32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


@cython.boundscheck(False)
@cython.wraparound(False)
def scan_packed(const uint8_t[::1] data not None, Py_ssize_t off, uint64_t seq,
                cnp.ndarray out, Py_ssize_t at):
    """Verify and unpack the run of ``PACKED_COMMANDS`` records at ``data[off:]`` into ``out[at:]``.

    Replay's fast path over a segment's bytes: no Python object per record.  It stops
    before the first record that is not a whole ``PACKED_COMMANDS`` record with
    sequence number ``seq`` (then ``seq + 1``, ...), both checksums right and rows that
    unpack cleanly into the room left in ``out``; the caller's record-by-record path
    deals with that one (another type, the tail, damage, or a flush of ``out``).

    Returns
    -------
    tuple[int, int, int]
        The offset, sequence number and row index after the last record consumed.
    """
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t room = checked_rows(out, _COMMAND_DTYPE, "out", "COMMAND_DTYPE", True)
    cdef const uint8_t* base
    cdef const uint8_t* p
    cdef Py_ssize_t end, length, n
    cdef uint32_t header_crc
    cdef uint64_t rseq
    cdef CommandRecord* rows = <CommandRecord*>cnp.PyArray_DATA(out)
    if off < 0 or at < 0 or at > room:
        raise ValueError(f"off {off} and at {at} must be inside data and out")
    if size == 0:
        return off, seq, at
    base = &data[0]
    with nogil:
        while size - off >= HEADER_SIZE:
            p = base + off
            length = _get32(p)
            rseq = <uint64_t>_get32(p + 8) | (<uint64_t>_get32(p + 12) << 32)
            if (p[4] | (p[5] << 8)) != TYPE_PACKED_COMMANDS or rseq != seq:
                break
            if length < PREFIX_SIZE or length > MAX_PAYLOAD:
                break
            end = off + HEADER_SIZE + ((length + 7) & ~7)
            if end > size:
                break
            header_crc = libdeflate_crc32(0, p, HEADER_CRC_SPAN)
            if header_crc != _get32(p + 16):
                break
            if libdeflate_crc32(header_crc, p + HEADER_SIZE, <size_t>(end - off - HEADER_SIZE)) \
                    != _get32(p + 20):
                break
            n = _get32(p + HEADER_SIZE + 8)
            if _get32(p + HEADER_SIZE + 12) != sizeof(CommandRecord):
                break
            if n * PACKED_ROW_MIN > length - PREFIX_SIZE or n > room - at:
                break
            if _unpack_rows(p + HEADER_SIZE + PREFIX_SIZE, p + HEADER_SIZE + length,
                            rows + at, n) != NULL:
                break
            at += n
            seq += 1
            off = end
    return off, seq, at


# -- appending through a memory map ----------------------------------------------------------

cdef inline void _store(uint8_t* dst, const uint8_t* rec, Py_ssize_t total) noexcept nogil:
    """Copy the sealed record ``rec`` (``total`` bytes) to ``dst`` in the order that keeps a
    process killed mid-copy recognisable as a torn tail (docs/journal.md, "Mapped segments"):
    the header up to its CRC first, then the payload, and the record CRC last.  Whatever
    prefix of that reaches the page cache, the bytes after it are the segment's zeros."""
    memcpy(dst, rec, HEADER_SIZE - 4)
    lltrade_store_order()
    memcpy(dst + HEADER_SIZE, rec + HEADER_SIZE, <size_t>(total - HEADER_SIZE))
    lltrade_store_order()
    memcpy(dst + HEADER_SIZE - 4, rec + HEADER_SIZE - 4, 4)


cdef class MappedSegment:
    """A journal segment file mapped shared and writable: appending a record is a copy into
    the page cache, with no system call (what ``write(2)`` would have put there, so it
    survives a killed process just the same).

    The caller owns the file: it preallocates it (``posix_fallocate``) ahead of the
    stores, so no store can fault on a page the file system has no room for, and passes
    that limit to every store.  ``size`` is the mapping's length, which may run past the
    file's end; nothing is stored there.
    """

    cdef uint8_t* _base
    cdef lltrade_prefault_t _prefault
    cdef Py_ssize_t _prefault_mark    # the next store that ends past it asks for more
    cdef readonly Py_ssize_t size
    cdef readonly Py_ssize_t needed
    """The size of the last record a store found no room for."""

    def __cinit__(self, int fd, Py_ssize_t size, bint prefault=True):
        cdef void* p
        self._base = NULL
        self._prefault.running = 0
        if size <= 0:
            raise ValueError(f"a mapping needs a positive size, got {size}")
        with nogil:
            p = mmap(NULL, <size_t>size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, (<bytes>strerror(errno)).decode())
        self._base = <uint8_t*>p
        self.size = size
        self.needed = 0
        self._prefault_mark = 0
        # No thread (not asked for, or out of threads): the writer takes its page faults.
        if prefault:
            lltrade_prefault_start(&self._prefault, self._base)

    def __dealloc__(self):
        self._close()

    cdef void _close(self) noexcept nogil:
        lltrade_prefault_stop(&self._prefault)
        if self._base != NULL:
            munmap(self._base, <size_t>self.size)
            self._base = NULL

    cdef inline void _stored(self, Py_ssize_t end, Py_ssize_t limit) noexcept nogil:
        """A store ended at ``end``: keep the pages up to PREFAULT_AHEAD past it faulted in
        (never past ``limit``, the preallocated end of the file)."""
        if end >= self._prefault_mark:
            lltrade_prefault_to(&self._prefault, <size_t>min(limit, end + PREFAULT_AHEAD))
            self._prefault_mark = end + PREFAULT_AHEAD // 2

    @property
    def closed(self):
        """True once :meth:`close` has run."""
        return self._base == NULL

    @property
    def prefaulted(self):
        """Bytes from the start the background thread has faulted in so far."""
        return lltrade_prefault_done(&self._prefault)

    cdef Py_ssize_t _room(self, Py_ssize_t offset, Py_ssize_t limit) except -1:
        if self._base == NULL:
            raise ValueError("the segment's mapping is closed")
        if offset < 0 or limit > self.size or offset > limit:
            raise ValueError(f"offset {offset} and limit {limit} must lie in the "
                             f"{self.size}-byte mapping")
        return limit - offset

    def store_commands(self, Py_ssize_t offset, Py_ssize_t limit, bytearray buf not None,
                       cnp.ndarray rows, uint64_t seq, int64_t recv_ns):
        """Frame the ``PACKED_COMMANDS`` record of ``rows`` in ``buf`` and store it at
        ``offset``, if it ends at or before ``limit``.

        Returns
        -------
        int
            The record's size, stored; 0 if it would pass ``limit`` (nothing stored,
            :attr:`needed` says how much room it takes); ``-packed_size_bound(n)`` if
            ``buf`` may be too small (nothing stored: grow it and call again).
        """
        cdef Py_ssize_t room = self._room(offset, limit)
        cdef Py_ssize_t total = _pack_record(buf, rows, seq, recv_ns)
        if total < 0:
            return -packed_size_bound(len(rows))
        return self._put(offset, limit, room, buf, total)

    def store_record(self, Py_ssize_t offset, Py_ssize_t limit, bytearray buf not None,
                     Py_ssize_t total):
        """Store the record sealed in ``buf[:total]`` at ``offset`` if it ends at or before
        ``limit``: its size, or 0 (nothing stored, :attr:`needed` is ``total``)."""
        cdef Py_ssize_t room = self._room(offset, limit)
        if total < HEADER_SIZE or total > len(buf):
            raise ValueError(f"a record of {total} bytes in a buffer of {len(buf)}")
        return self._put(offset, limit, room, buf, total)

    cdef Py_ssize_t _put(self, Py_ssize_t offset, Py_ssize_t limit, Py_ssize_t room,
                         bytearray buf, Py_ssize_t total):
        """Store ``buf[:total]`` at ``offset`` if it fits ``room``: its size, else 0."""
        cdef const uint8_t* rec = <const uint8_t*><char*>buf
        if total > room:
            self.needed = total
            return 0
        with nogil:
            _store(self._base + offset, rec, total)
            self._stored(offset + total, limit)
        return total

    def run_prefault_on(self, cpus):
        """Run the prefaulting thread on ``cpus`` only (CPU numbers): off the core the
        writer is pinned to, so that its faults cost that core nothing."""
        cdef int chosen[CPU_SETSIZE]
        cdef int n = 0
        cdef int err
        for cpu in cpus:
            if not 0 <= cpu < CPU_SETSIZE:
                raise ValueError(f"CPU {cpu} is not in 0..{CPU_SETSIZE - 1}")
            if n == CPU_SETSIZE:
                break
            chosen[n] = cpu
            n += 1
        if n == 0:
            raise ValueError("run_prefault_on needs at least one CPU")
        err = lltrade_prefault_cpus(&self._prefault, chosen, n)
        if err:
            raise OSError(err, (<bytes>strerror(err)).decode())

    def prefault_now(self, Py_ssize_t end):
        """Fault the pages below ``end`` in now, in this thread (``end``: at most the
        file's preallocated end); the background thread goes on from there."""
        if self._base == NULL or end < 0 or end > self.size:
            raise ValueError(f"end {end} must lie in the {self.size}-byte mapping")
        with nogil:
            lltrade_prefault_now(&self._prefault, self._base, <size_t>end)

    def prefault(self, Py_ssize_t offset, Py_ssize_t limit):
        """The file is preallocated up to ``limit`` and the next store goes at ``offset``:
        have the pages up to PREFAULT_AHEAD past it faulted in, in the background."""
        self._room(offset, limit)
        with nogil:
            self._prefault_mark = offset
            self._stored(offset, limit)

    def close(self):
        """Stop the prefaulting thread and unmap (what was stored stays in the file's page
        cache).  Call it before the file is cut shorter than the mapping's preallocated end."""
        with nogil:
            self._close()
