# cython: language_level=3
"""Execution reports and market data encoded in C, straight into per-session buffers.

The daemon's one thread runs, per batch::

    n = engine.process(commands[:k], events)
    gate.apply(events, n, routes)                 # routes[j] = (slot, cl_ord_id)
    reports.encode(events, n, routes, ref_seqs, offset)
    for slot in reports.dirty():                  # then one write per session
        transport_of[slot].write(reports.take(slot))

:class:`ReportEncoder` owns, per session slot, the outbound buffer and the
outbound sequence counter, and per symbol the ordered list of subscribed
slots.  ``encode`` turns engine events into the frames ``Daemon._dispatch``
builds today with msgspec Structs and ``protocol.encode_frame`` --
``OrderAccepted``, ``OrderRejected``, ``Fill``, ``Cancelled``, ``Replaced``,
``Reduced``, ``LevelUpdate`` and ``Trade`` -- byte for byte: the same 4-byte
little-endian length header, the same MessagePack arrays, every integer in
its smallest MessagePack form exactly as msgspec writes it
(tests/unit/test_reports.py checks this against the Struct path).

Messages the daemon still builds in Python (``LogonAck``, ``SymbolInfo``,
``BookSnapshot``, ``Done``, ``Reject``, ``Heartbeat``...) take their ``seq``
from :meth:`ReportEncoder.next_seq` and go into the same buffer with
:meth:`ReportEncoder.append`, so one session's stream stays in order and its
sequence numbers never skip.

``encode`` validates its arguments (and every route and ``ref_seqs`` index it
will use) before writing anything, so a bad call changes nothing.  Then
``_encode`` runs in plain C: no Python object per event; each message first
checks its slot's free room against a fixed bound (``max_message`` bytes, the
largest message it can write) and doubles the buffer in the rare case it is
short.  Only a failed ``realloc`` (MemoryError) can stop it part-way.
"""

cimport cython
cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_RawFree, PyMem_RawRealloc
from libc.stdint cimport INT32_MIN, UINT32_MAX, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset

from lltrade._book cimport (
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_FILL,
    EV_LEVEL,
    EV_REJECTED,
    EV_REPLACED,
    EventRecord,
)
from lltrade._arrays cimport checked_routes, checked_rows
from lltrade._telemetry cimport OrderPathTelemetry
from lltrade._cmap cimport I64Map, MAP_EMPTY, _grow, _map_free, _map_get, _map_init, _map_put, _map_reserve

import msgspec

from lltrade._book import EVENT_DTYPE
from lltrade.enums import Reason
from lltrade.protocol import SessionReason

cnp.import_array()

cdef object _EVENT_DTYPE = EVENT_DTYPE
cdef object _encode_str = msgspec.msgpack.Encoder().encode

cdef Py_ssize_t MAX_SESSIONS = 1 << 20
cdef Py_ssize_t INITIAL_CAP = 4096          # a slot's buffer when opened (and after a big take)
cdef Py_ssize_t SHRINK_ABOVE = 1 << 20      # take() gives back a buffer larger than this

# Wire tags (lltrade.protocol; the differential tests check every byte).
cdef enum:
    TAG_ORDER_ACCEPTED = 40
    TAG_ORDER_REJECTED = 41
    TAG_FILL = 42
    TAG_CANCELLED = 43
    TAG_REPLACED = 44
    TAG_REDUCED = 45
    TAG_LEVEL_UPDATE = 49
    TAG_TRADE = 50

# MessagePack fixarray headers: [tag, seq, fields...].
cdef enum:
    ARR_ORDER_ACCEPTED = 0x98     # 8 elements
    ARR_ORDER_REJECTED = 0x96     # 6
    ARR_FILL = 0x9B               # 11
    ARR_CANCELLED = 0x99          # 9
    ARR_REPLACED = 0x98           # 8
    ARR_REDUCED = 0x99            # 9
    ARR_LEVEL_UPDATE = 0x96       # 6
    ARR_TRADE = 0x97              # 7

# The largest frame of each kind: header 4, array 1, tag 1, then 9 bytes per
# int64/uint64, 5 per int32, 3 per uint16, 2 per uint8, 1 per bool.  Fill is
# the largest fixed one (4 + 1 + 1 + 9*7 + 5 + 2 + 1 = 77).  OrderRejected
# is 4 + 1 + 1 + 9*3 + 3 = 36 plus its encoded reason text.
cdef enum:
    FIXED_MAX = 80
    REJECTED_FIXED = 36
    FALLBACK_TEXT_MAX = 13        # "REASON_65535": fixstr header + 12 bytes

cdef enum:
    BAD_NONE = 0
    BAD_SLOT = 1
    BAD_REF = 2


ctypedef struct Out:              # one session slot
    uint8_t* buf                  # pending frames; NULL while the slot is closed
    Py_ssize_t len
    Py_ssize_t cap
    uint64_t seq                  # the last seq used; the next message gets seq + 1
    Py_ssize_t dirty_pos          # its entry in dirty_list; -1 = not listed (nothing pending)
    int n_subs                    # symbols it is subscribed to
    bint is_open


ctypedef struct Subs:             # the subscribers of one symbol, in subscription order
    int32_t* slots
    Py_ssize_t n
    Py_ssize_t cap


# =============================================================================
# MessagePack writers: smallest form, as msgspec writes it
# =============================================================================

cdef inline uint8_t* _be16(uint8_t* p, uint64_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v
    return p + 2


cdef inline uint8_t* _be32(uint8_t* p, uint64_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v
    return p + 4


cdef inline uint8_t* _be64(uint8_t* p, uint64_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 56)
    p[1] = <uint8_t>(v >> 48)
    p[2] = <uint8_t>(v >> 40)
    p[3] = <uint8_t>(v >> 32)
    p[4] = <uint8_t>(v >> 24)
    p[5] = <uint8_t>(v >> 16)
    p[6] = <uint8_t>(v >> 8)
    p[7] = <uint8_t>v
    return p + 8


cdef inline uint8_t* _w_uint(uint8_t* p, uint64_t v) noexcept nogil:
    """A non-negative integer: positive fixint, uint8, uint16, uint32 or uint64."""
    if v < 0x80:
        p[0] = <uint8_t>v
        return p + 1
    if v <= 0xFF:
        p[0] = 0xCC
        p[1] = <uint8_t>v
        return p + 2
    if v <= 0xFFFF:
        p[0] = 0xCD
        return _be16(p + 1, v)
    if v <= UINT32_MAX:
        p[0] = 0xCE
        return _be32(p + 1, v)
    p[0] = 0xCF
    return _be64(p + 1, v)


cdef inline uint8_t* _w_int(uint8_t* p, int64_t v) noexcept nogil:
    """A signed integer: as _w_uint if >= 0, else negative fixint, int8, 16, 32 or 64."""
    if v >= 0:
        return _w_uint(p, <uint64_t>v)
    # Signed to unsigned conversions are modulo 2**64: the two's complement bytes.
    if v >= -32:
        p[0] = <uint8_t><uint64_t>v
        return p + 1
    if v >= -128:
        p[0] = 0xD0
        p[1] = <uint8_t><uint64_t>v
        return p + 2
    if v >= -32768:
        p[0] = 0xD1
        return _be16(p + 1, <uint64_t>v)
    if v >= INT32_MIN:
        p[0] = 0xD2
        return _be32(p + 1, <uint64_t>v)
    p[0] = 0xD3
    return _be64(p + 1, <uint64_t>v)


cdef inline uint8_t _side_enum(int x) noexcept nogil:
    """``(Side.BUY, Side.BUY, Side.SELL)[x]``, how market data maps engine sides.

    Identical for every index that tuple accepts (-3 .. 2); the engine only
    ever gives 1 or 2 here.
    """
    return 2 if x == 2 or x == -1 else 1


cdef inline uint8_t* _w_fallback_name(uint8_t* p, uint16_t code) noexcept nogil:
    """``"REASON_<code>"`` as a MessagePack fixstr (protocol.reason_name's fallback)."""
    cdef uint8_t digits[5]
    cdef int nd = 0
    cdef int k
    cdef unsigned int c = code
    while True:
        digits[nd] = <uint8_t>(48 + c % 10)
        nd += 1
        c //= 10
        if c == 0:
            break
    p[0] = <uint8_t>(0xA0 + 7 + nd)
    memcpy(p + 1, b"REASON_", 7)
    p += 8
    for k in range(nd):
        p[k] = digits[nd - 1 - k]
    return p + nd


# =============================================================================
# The encoder
# =============================================================================

@cython.final
cdef class ReportEncoder:
    """Per-session output buffers and sequence numbers; events encoded in C.

    Parameters
    ----------
    max_sessions : int
        Number of session slots, ``0 .. max_sessions - 1`` (the gate's).
    reason_names : dict[int, str] or None
        ``OrderRejected.text`` per reason code (0 .. 65535).  A code it does
        not name gets ``"REASON_<code>"``.  The default names every
        ``Reason`` and ``SessionReason`` member, which makes the text exactly
        ``lltrade.protocol.reason_name(code)`` for every code.
    """

    cdef:
        Out* outs
        readonly Py_ssize_t max_sessions
        readonly Py_ssize_t max_message       # bound on one frame's size, checked per message
        Py_ssize_t* dirty_list                 # slots, in first-touched order; -1 = dropped
        Py_ssize_t n_dirty
        Py_ssize_t dirty_cap                   # 2 * max_sessions: compaction always frees room
        I64Map sym_map                         # symbol -> index in subs
        Subs* subs
        Py_ssize_t n_subs
        Py_ssize_t subs_cap
        uint64_t _exec_id
        OrderPathTelemetry tel                 # counts each encoded batch; None = off
        bytes _names                           # encoded reason texts, back to back
        const uint8_t* names
        uint32_t* name_off                     # per code < n_names: offset in _names
        uint32_t* name_len                     # per code < n_names: encoded length
        Py_ssize_t n_names

    def __cinit__(self, Py_ssize_t max_sessions=1024, reason_names=None):
        cdef Py_ssize_t k, code, n_codes, offset
        if not (1 <= max_sessions <= MAX_SESSIONS):
            raise ValueError(f"max_sessions must be in 1 .. {MAX_SESSIONS}, got {max_sessions}")
        if reason_names is None:
            reason_names = {int(m): m.name for e in (Reason, SessionReason) for m in e}
        names = {}
        for key, name in reason_names.items():
            code = key
            if not (0 <= code <= 0xFFFF):
                raise ValueError(f"reason codes must be in 0 .. 65535, got {key}")
            if not isinstance(name, str):
                raise TypeError(f"reason name of {key} must be a str, got {type(name).__name__}")
            names[code] = name
        n_codes = max(names) + 1 if names else 0
        encoded = [_encode_str(names.get(code, f"REASON_{code}")) for code in range(n_codes)]
        self._names = b"".join(encoded)
        if PyBytes_GET_SIZE(self._names) > 0xFFFFFFFF:
            raise ValueError("reason names too long")
        self.names = <const uint8_t*>PyBytes_AS_STRING(self._names)
        longest = max([len(b) for b in encoded], default=0)
        self.max_message = max(FIXED_MAX, REJECTED_FIXED + max(longest, FALLBACK_TEXT_MAX))

        self.outs = <Out*>_grow(NULL, max_sessions, sizeof(Out))
        memset(self.outs, 0, <size_t>max_sessions * sizeof(Out))
        self.max_sessions = max_sessions
        for k in range(max_sessions):
            self.outs[k].dirty_pos = -1
        self.dirty_cap = 2 * max_sessions
        self.dirty_list = <Py_ssize_t*>_grow(NULL, self.dirty_cap, sizeof(Py_ssize_t))
        self.n_dirty = 0
        _map_init(&self.sym_map, 16)
        self.subs_cap = 8
        self.subs = <Subs*>_grow(NULL, self.subs_cap, sizeof(Subs))
        self.n_subs = 0
        self.n_names = n_codes
        if n_codes:
            self.name_off = <uint32_t*>_grow(NULL, n_codes, sizeof(uint32_t))
            self.name_len = <uint32_t*>_grow(NULL, n_codes, sizeof(uint32_t))
            offset = 0
            for code in range(n_codes):
                self.name_off[code] = <uint32_t>offset
                self.name_len[code] = <uint32_t>len(encoded[code])
                offset += len(encoded[code])

    def __dealloc__(self):
        cdef Py_ssize_t k
        if self.outs != NULL:
            for k in range(self.max_sessions):
                PyMem_RawFree(self.outs[k].buf)
        PyMem_RawFree(self.outs)
        PyMem_RawFree(self.dirty_list)
        if self.subs != NULL:
            for k in range(self.n_subs):
                PyMem_RawFree(self.subs[k].slots)
        PyMem_RawFree(self.subs)
        _map_free(&self.sym_map)
        PyMem_RawFree(self.name_off)
        PyMem_RawFree(self.name_len)

    # -- slots ---------------------------------------------------------------

    cdef Out* _slot(self, Py_ssize_t slot, bint must_be_open) except NULL:
        if not (0 <= slot < self.max_sessions):
            raise IndexError(f"slot must be in 0 .. {self.max_sessions - 1}, got {slot}")
        cdef Out* o = &self.outs[slot]
        if must_be_open and not o.is_open:
            raise ValueError(f"slot {slot} is not open")
        return o

    def open(self, Py_ssize_t slot, uint64_t seq=0):
        """Open a slot: an empty buffer, sequence counter at ``seq`` (the next message gets seq + 1).

        ``seq`` is the last number the session already sent (0 on a new
        session, whose first message, the LogonAck, is seq 1).
        """
        cdef Out* o = self._slot(slot, False)
        if o.is_open:
            raise ValueError(f"slot {slot} is already open")
        o.buf = <uint8_t*>_grow(NULL, self._initial_cap(), 1)
        o.cap = self._initial_cap()
        o.len = 0
        o.seq = seq
        o.dirty_pos = -1
        o.n_subs = 0
        o.is_open = True

    def close(self, Py_ssize_t slot):
        """Close a slot: drop its subscriptions, return its pending output (``bytes``).

        Read :meth:`last_seq` first if the session still sends something
        (a ``Disconnect``) after the slot is freed.
        """
        cdef Out* o = self._slot(slot, True)
        cdef Py_ssize_t k
        data = PyBytes_FromStringAndSize(<char*>o.buf, o.len)
        if o.n_subs:
            for k in range(self.n_subs):
                _remove(&self.subs[k], <int32_t>slot)
        self._unmark(o)
        PyMem_RawFree(o.buf)
        o.buf = NULL
        o.len = o.cap = 0
        o.n_subs = 0
        o.is_open = False
        return data

    def is_open(self, Py_ssize_t slot):
        """Whether ``slot`` is open."""
        return bool(self._slot(slot, False).is_open)

    def next_seq(self, Py_ssize_t slot):
        """The seq of the next message the slot sends, counted (call once per message)."""
        cdef Out* o = self._slot(slot, True)
        o.seq += 1
        return o.seq

    def last_seq(self, Py_ssize_t slot):
        """The last seq the slot used (0 before its first message)."""
        return self._slot(slot, True).seq

    def append(self, Py_ssize_t slot, const uint8_t[::1] data not None):
        """Append frame(s) encoded elsewhere (with :meth:`next_seq`'s numbers), in order."""
        cdef Out* o = self._slot(slot, True)
        cdef Py_ssize_t n = data.shape[0]
        if n == 0:
            return
        if o.cap - o.len < n and _reserve(o, n) < 0:
            raise MemoryError(f"out of memory growing slot {slot}'s buffer")
        memcpy(o.buf + o.len, &data[0], <size_t>n)
        o.len += n
        if o.dirty_pos < 0:
            self._mark(o, slot)

    def pending(self, Py_ssize_t slot):
        """Bytes waiting in the slot's buffer."""
        return self._slot(slot, True).len

    def take(self, Py_ssize_t slot):
        """The slot's pending output as ``bytes``; the buffer is emptied (and leaves dirty())."""
        cdef Out* o = self._slot(slot, True)
        cdef uint8_t* small
        data = PyBytes_FromStringAndSize(<char*>o.buf, o.len)
        o.len = 0
        self._unmark(o)
        if o.cap > SHRINK_ABOVE:          # give back what a burst (a deep snapshot) took
            small = <uint8_t*>PyMem_RawRealloc(o.buf, <size_t>self._initial_cap())
            if small != NULL:
                o.buf = small
                o.cap = self._initial_cap()
        return data

    def dirty(self):
        """Slots with pending output, each once, in the order their output began.

        Does not change anything: :meth:`take` (or :meth:`close`) removes a
        slot from it.
        """
        self._compact()
        return [self.dirty_list[k] for k in range(self.n_dirty)]

    @property
    def exec_id(self):
        """The last exec_id used; the next match (taker FILL) gets exec_id + 1."""
        return self._exec_id

    @exec_id.setter
    def exec_id(self, uint64_t value):
        self._exec_id = value

    # -- subscriptions -----------------------------------------------------------

    def subscribe(self, Py_ssize_t slot, int32_t symbol):
        """Send the symbol's LevelUpdates and Trades to ``slot``; False if it already was.

        Subscribers of a symbol are served in the order they subscribed.
        """
        cdef Out* o = self._slot(slot, True)
        cdef int32_t idx = _map_get(&self.sym_map, symbol)
        cdef Subs* s
        if idx == MAP_EMPTY:
            if self.n_subs == self.subs_cap:
                self.subs = <Subs*>_grow(self.subs, 2 * self.subs_cap, sizeof(Subs))
                self.subs_cap *= 2
            _map_reserve(&self.sym_map, self.sym_map.count + 1)
            idx = <int32_t>self.n_subs
            memset(&self.subs[idx], 0, sizeof(Subs))
            self.n_subs += 1
            _map_put(&self.sym_map, symbol, idx)
        s = &self.subs[idx]
        if _find(s, <int32_t>slot) >= 0:
            return False
        if s.n == s.cap:
            s.slots = <int32_t*>_grow(s.slots, max(8, 2 * s.cap), sizeof(int32_t))
            s.cap = max(8, 2 * s.cap)
        s.slots[s.n] = <int32_t>slot
        s.n += 1
        o.n_subs += 1
        return True

    def unsubscribe(self, Py_ssize_t slot, int32_t symbol):
        """Stop the symbol's market data to ``slot``; False if it was not subscribed."""
        cdef Out* o = self._slot(slot, True)
        cdef int32_t idx = _map_get(&self.sym_map, symbol)
        if idx == MAP_EMPTY or not _remove(&self.subs[idx], <int32_t>slot):
            return False
        o.n_subs -= 1
        return True

    def subscribers(self, int32_t symbol):
        """The slots subscribed to ``symbol``, in subscription order."""
        cdef int32_t idx = _map_get(&self.sym_map, symbol)
        if idx == MAP_EMPTY:
            return []
        cdef Subs* s = &self.subs[idx]
        return [s.slots[k] for k in range(s.n)]

    # -- events ------------------------------------------------------------------

    def attach_telemetry(self, OrderPathTelemetry telemetry):
        """Count every batch :meth:`encode` handles in ``telemetry`` (None: stop)."""
        self.tel = telemetry

    def encode(self, cnp.ndarray events, Py_ssize_t n, cnp.ndarray routes,
               cnp.ndarray ref_seqs, Py_ssize_t cmd_offset=0, Py_ssize_t n_commands=0,
               uint64_t batch_ns=0):
        """Encode ``events[:n]`` into the slots' buffers, as ``Daemon._dispatch`` does.

        Parameters
        ----------
        events : numpy.ndarray
            ``EVENT_DTYPE`` rows from ``Engine.process``.
        n : int
            How many to encode.
        routes : numpy.ndarray
            int64, shape ``(>= n, 2)``: ``(slot, cl_ord_id)`` per event, from
            ``OrderGate.apply``.  Slot -1, or a slot that is not open, is
            nobody; a slot ``>= max_sessions`` is a ValueError.
        ref_seqs : numpy.ndarray
            int64, one-dimensional: the client seq of each command;
            ``OrderRejected.ref_seq`` is ``ref_seqs[cmd_offset + event.cmd]``.
        cmd_offset : int
            Index in ``ref_seqs`` of the batch's command 0.
        n_commands, batch_ns : int
            With a telemetry attached (:meth:`attach_telemetry`): the commands
            the engine call consumed and its time, recorded with the counts of
            the events by kind and reject reason (``OrderPathTelemetry.batch``).

        Notes
        -----
        Event by event, in order:

        - ``LEVEL``: a ``LevelUpdate`` to each subscriber of its symbol;
        - ``FILL``: a taker fill (``order_id == taker_id``) counts a new
          ``exec_id``; a ``Fill`` goes to its slot (``maker`` is
          ``order_id == maker_id``); after a maker fill a ``Trade`` (the
          aggressor is the other side) goes to the symbol's subscribers;
        - ``ACCEPTED``, ``CANCELLED``, ``REJECTED``, ``REPLACED``: their
          message to the slot; any other kind, like ``REDUCED``, a
          ``Reduced`` (``_dispatch``'s last branch).

        Every argument, route and needed ``ref_seqs`` index is checked before
        anything is written; only MemoryError can stop it part-way.
        """
        cdef Py_ssize_t cap, n_refs, bad
        cdef int what = BAD_NONE
        cap = checked_rows(events, _EVENT_DTYPE, "events", "EVENT_DTYPE", False)
        if not (0 <= n <= cap):
            raise ValueError(f"n must be in 0 .. {cap} (the length of events), got {n}")
        checked_routes(routes, n, False)
        if cnp.PyArray_TYPE(ref_seqs) != cnp.NPY_INT64:
            raise TypeError(f"ref_seqs must have dtype int64, got {ref_seqs.dtype}")
        if cnp.PyArray_NDIM(ref_seqs) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(ref_seqs):
            raise ValueError("ref_seqs must be a one-dimensional C-contiguous array")
        if cmd_offset < 0:
            raise ValueError(f"cmd_offset must be >= 0, got {cmd_offset}")
        n_refs = cnp.PyArray_DIM(ref_seqs, 0)
        cdef const EventRecord* ev = <const EventRecord*>cnp.PyArray_DATA(events)
        cdef const int64_t* rt = <const int64_t*>cnp.PyArray_DATA(routes)
        bad = self._find_bad(ev, n, rt, n_refs, cmd_offset, &what)
        if bad >= 0:
            if what == BAD_SLOT:
                raise ValueError(f"event {bad}: route slot {rt[2 * bad]} >= max_sessions "
                                 f"({self.max_sessions})")
            raise IndexError(f"event {bad}: REJECTED of command {ev[bad].cmd} needs "
                             f"ref_seqs[{cmd_offset + ev[bad].cmd}], ref_seqs has {n_refs}")
        if self.tel is not None:
            self.tel.count_batch(ev, n, n_commands, batch_ns)
        if self._encode(ev, n, rt, <const int64_t*>cnp.PyArray_DATA(ref_seqs), cmd_offset) < 0:
            raise MemoryError("out of memory growing a session's output buffer")

    cdef Py_ssize_t _find_bad(self, const EventRecord* ev, Py_ssize_t n, const int64_t* routes,
                              Py_ssize_t n_refs, Py_ssize_t cmd_offset, int* what) noexcept:
        """The first event ``_encode`` could not handle (and why), or -1."""
        cdef Py_ssize_t i
        cdef int64_t slot
        for i in range(n):
            if ev[i].kind == EV_LEVEL:
                continue
            slot = routes[2 * i]
            if slot >= self.max_sessions:
                what[0] = BAD_SLOT
                return i
            if (ev[i].kind == EV_REJECTED and slot >= 0 and self.outs[slot].is_open
                    and (ev[i].cmd < 0 or cmd_offset + ev[i].cmd >= n_refs)):
                what[0] = BAD_REF
                return i
        return -1

    # -- the C path -----------------------------------------------------------------

    cdef inline Py_ssize_t _initial_cap(self) noexcept:
        return max(INITIAL_CAP, 2 * self.max_message)

    cdef inline void _mark(self, Out* o, Py_ssize_t slot) noexcept:
        """List ``slot`` in dirty_list (its buffer just became non-empty)."""
        if self.n_dirty == self.dirty_cap:
            self._compact()
        o.dirty_pos = self.n_dirty
        self.dirty_list[self.n_dirty] = slot
        self.n_dirty += 1

    cdef inline void _unmark(self, Out* o) noexcept:
        if o.dirty_pos >= 0:
            self.dirty_list[o.dirty_pos] = -1
            o.dirty_pos = -1

    cdef void _compact(self) noexcept:
        """Squeeze the dropped entries out of dirty_list, keeping the order."""
        cdef Py_ssize_t k, j = 0
        cdef Py_ssize_t slot
        for k in range(self.n_dirty):
            slot = self.dirty_list[k]
            if slot >= 0:
                self.dirty_list[j] = slot
                self.outs[slot].dirty_pos = j
                j += 1
        self.n_dirty = j

    cdef inline int _ready(self, Out* o, Py_ssize_t slot) noexcept:
        """Room for one more message in ``o`` (and ``slot`` listed as dirty); -1: no memory."""
        if o.cap - o.len < self.max_message and _reserve(o, self.max_message) < 0:
            return -1
        if o.dirty_pos < 0:
            self._mark(o, slot)
        return 0

    cdef int _level(self, const EventRecord* e) noexcept:
        """LevelUpdate(seq, symbol, side, price, qty) to each subscriber of the symbol."""
        cdef int32_t idx = _map_get(&self.sym_map, e.symbol)
        if idx == MAP_EMPTY:
            return 0
        cdef Subs* s = &self.subs[idx]
        cdef Py_ssize_t k
        cdef int32_t slot
        cdef Out* o
        cdef uint8_t* p
        cdef uint8_t side = _side_enum(e.side)
        for k in range(s.n):
            slot = s.slots[k]
            o = &self.outs[slot]
            if self._ready(o, slot) < 0:
                return -1
            p = _begin(o, ARR_LEVEL_UPDATE, TAG_LEVEL_UPDATE)
            p = _w_int(p, e.symbol)
            p[0] = side
            p = _w_int(p + 1, e.price)
            p = _w_int(p, e.qty)
            _end(o, p)
        return 0

    cdef int _trade(self, const EventRecord* e) noexcept:
        """Trade(seq, symbol, exec_id, price, qty, aggressor) to each subscriber."""
        cdef int32_t idx = _map_get(&self.sym_map, e.symbol)
        if idx == MAP_EMPTY:
            return 0
        cdef Subs* s = &self.subs[idx]
        cdef Py_ssize_t k
        cdef int32_t slot
        cdef Out* o
        cdef uint8_t* p
        cdef uint8_t aggressor = _side_enum(3 - <int>e.side)
        for k in range(s.n):
            slot = s.slots[k]
            o = &self.outs[slot]
            if self._ready(o, slot) < 0:
                return -1
            p = _begin(o, ARR_TRADE, TAG_TRADE)
            p = _w_int(p, e.symbol)
            p = _w_uint(p, self._exec_id)
            p = _w_int(p, e.price)
            p = _w_int(p, e.qty)
            p[0] = aggressor
            _end(o, p + 1)
        return 0

    cdef inline uint8_t* _w_reason_text(self, uint8_t* p, uint16_t code) noexcept:
        cdef uint32_t n
        if code < self.n_names:
            n = self.name_len[code]
            memcpy(p, self.names + self.name_off[code], n)
            return p + n
        return _w_fallback_name(p, code)

    cdef int _encode(self, const EventRecord* ev, Py_ssize_t n, const int64_t* routes,
                     const int64_t* refs, Py_ssize_t cmd_offset) noexcept:
        """The per-event loop (arguments checked by ``encode``).  -1: out of memory."""
        cdef Py_ssize_t i
        cdef const EventRecord* e
        cdef int64_t slot
        cdef Out* o
        cdef uint8_t* p
        cdef uint8_t kind
        for i in range(n):
            e = &ev[i]
            kind = e.kind
            if kind == EV_LEVEL:
                if self._level(e) < 0:
                    return -1
                continue
            slot = routes[2 * i]
            o = NULL
            if slot >= 0 and self.outs[slot].is_open:
                o = &self.outs[slot]
                if self._ready(o, slot) < 0:
                    return -1
            if kind == EV_FILL:
                if e.order_id == e.taker_id:
                    self._exec_id += 1
                if o != NULL:
                    p = _begin(o, ARR_FILL, TAG_FILL)
                    p = _w_int(p, routes[2 * i + 1])
                    p = _w_int(p, e.order_id)
                    p = _w_int(p, e.symbol)
                    p = _w_uint(p, e.side)
                    p = _w_uint(p, self._exec_id)
                    p = _w_int(p, e.price)
                    p = _w_int(p, e.qty)
                    p = _w_int(p, e.remaining)
                    p[0] = 0xC3 if e.order_id == e.maker_id else 0xC2
                    _end(o, p + 1)
                if e.order_id == e.maker_id and self._trade(e) < 0:
                    return -1
                continue
            if o == NULL:
                continue
            if kind == EV_REJECTED:
                p = _begin(o, ARR_ORDER_REJECTED, TAG_ORDER_REJECTED)
                p = _w_int(p, refs[cmd_offset + e.cmd])
                p = _w_int(p, routes[2 * i + 1])
                p = _w_uint(p, e.reason)
                p = self._w_reason_text(p, e.reason)
                _end(o, p)
                continue
            # The rest share (cl_ord_id, order_id, symbol, side, price, qty).
            if kind == EV_ACCEPTED:
                p = _begin(o, ARR_ORDER_ACCEPTED, TAG_ORDER_ACCEPTED)
            elif kind == EV_CANCELLED:
                p = _begin(o, ARR_CANCELLED, TAG_CANCELLED)
            elif kind == EV_REPLACED:
                p = _begin(o, ARR_REPLACED, TAG_REPLACED)
            else:
                p = _begin(o, ARR_REDUCED, TAG_REDUCED)
            p = _w_int(p, routes[2 * i + 1])
            p = _w_int(p, e.order_id)
            p = _w_int(p, e.symbol)
            p = _w_uint(p, e.side)
            p = _w_int(p, e.price)
            p = _w_int(p, e.qty)
            if kind == EV_CANCELLED:
                p = _w_uint(p, e.reason)
            elif kind != EV_ACCEPTED and kind != EV_REPLACED:
                p = _w_int(p, e.remaining)
            _end(o, p)
        return 0


# =============================================================================
# Helpers without self
# =============================================================================

cdef inline uint8_t* _begin(Out* o, uint8_t array_header, uint8_t tag) noexcept nogil:
    """Start a frame at the end of ``o``: length placeholder, array, tag, the next seq."""
    cdef uint8_t* p = o.buf + o.len + 4
    p[0] = array_header
    p[1] = tag
    o.seq += 1
    return _w_uint(p + 2, o.seq)


cdef inline void _end(Out* o, uint8_t* p) noexcept nogil:
    """Close the frame started by _begin: fill in its little-endian body length."""
    cdef uint8_t* start = o.buf + o.len
    cdef uint32_t body = <uint32_t>(p - start - 4)
    start[0] = <uint8_t>body
    start[1] = <uint8_t>(body >> 8)
    start[2] = <uint8_t>(body >> 16)
    start[3] = <uint8_t>(body >> 24)
    o.len = p - o.buf


cdef int _reserve(Out* o, Py_ssize_t need) noexcept nogil:
    """At least ``need`` free bytes in ``o``, doubling its capacity; -1 if out of memory."""
    cdef Py_ssize_t cap = o.cap if o.cap > 0 else INITIAL_CAP
    cdef uint8_t* buf
    while cap - o.len < need:
        if cap > (<Py_ssize_t>1 << 61):
            return -1
        cap *= 2
    buf = <uint8_t*>PyMem_RawRealloc(o.buf, <size_t>cap)
    if buf == NULL:
        return -1
    o.buf = buf
    o.cap = cap
    return 0


cdef inline Py_ssize_t _find(const Subs* s, int32_t slot) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(s.n):
        if s.slots[k] == slot:
            return k
    return -1


cdef bint _remove(Subs* s, int32_t slot) noexcept nogil:
    """Drop ``slot`` from ``s``, keeping the others' order; False if it was not there."""
    cdef Py_ssize_t k = _find(s, slot)
    if k < 0:
        return False
    memmove(&s.slots[k], &s.slots[k + 1], <size_t>(s.n - k - 1) * sizeof(int32_t))
    s.n -= 1
    return True
