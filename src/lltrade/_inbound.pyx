"""The daemon's C read path: a logged-on session's order frames straight into engine commands.

``admit_frames`` walks the complete frames of a session's receive buffer
(docs/protocol.md, "Framing") and, for as long as each is a well-formed
NewOrder, Cancel, Replace or Reduce carrying the next sequence number, reads
its MessagePack body into C values, runs it through the order gate
(``OrderGate._admit_msg``) and appends the command row and the client's seq
to the daemon's batch.  No Python object is made per message.

It stops, leaving the rest to the daemon's Python path, at the first frame it
does not take whole:

* ``END``: no complete frame left;
* ``SLOW``: the next frame is anything else: another message type, a body
  this decoder does not accept exactly as msgspec would (any doubt: it is
  left to msgspec, which also produces the error reply), a sequence number
  that is not the next, a frame above ``max_frame``.  The frame is not
  consumed: the daemon decodes it with msgspec and handles it as before;
* ``REJECT``: the gate refused the message (``reason``); the frame and its
  sequence number are consumed and the daemon sends the reject;
* ``FULL``: the batch has no room for another command; the daemon runs it.

The accepted encodings are what msgspec accepts for these Structs: an array
(fixarray, array 16 or array 32) of exactly the field count, integers in any
MessagePack int format within each field's bounds, ``true``/``false`` for
``post_only``, enum fields among their members, and nothing after the array.
``tests/unit/test_inbound.py`` checks it against msgspec on valid and fuzzed
bodies.
"""

cimport cython
cimport numpy as cnp
from libc.stdint cimport (
    INT32_MAX,
    INT64_MAX,
    INT64_MIN,
    int8_t,
    int32_t,
    int64_t,
    uint8_t,
    uint32_t,
    uint64_t,
)
from libc.string cimport memset

from lltrade._book cimport CommandRecord, OP_ADD, OP_CANCEL, OP_REDUCE, OP_REPLACE
from lltrade._gate cimport GateSession, OrderGate, OrderMsg
from lltrade._arrays cimport checked_rows
from lltrade._cmap cimport MAP_EMPTY

from lltrade._book import COMMAND_DTYPE

cdef object _COMMAND_DTYPE = COMMAND_DTYPE     # a C global: no module lookup per call

cnp.import_array()

# Return status (the first item of admit_frames' result).
END = 0
SLOW = 1
REJECT = 2
FULL = 3

cdef enum:
    ST_END = 0
    ST_SLOW = 1
    ST_REJECT = 2
    ST_FULL = 3
    HEADER = 4                     # the frame's little-endian u32 body length
    TAG_NEW_ORDER = 4
    TAG_CANCEL = 5
    TAG_REPLACE = 6
    TAG_REDUCE = 7


cdef struct Cursor:
    const uint8_t* p
    Py_ssize_t pos
    Py_ssize_t end


cdef inline bint _array(Cursor* c, uint32_t* n) noexcept nogil:
    """A MessagePack array header; False if it is not one (or is cut short)."""
    cdef uint8_t b
    if c.pos >= c.end:
        return False
    b = c.p[c.pos]
    if 0x90 <= b <= 0x9F:
        n[0] = b & 0x0F
        c.pos += 1
        return True
    if b == 0xDC and c.pos + 3 <= c.end:
        n[0] = (<uint32_t>c.p[c.pos + 1] << 8) | c.p[c.pos + 2]
        c.pos += 3
        return True
    if b == 0xDD and c.pos + 5 <= c.end:
        n[0] = ((<uint32_t>c.p[c.pos + 1] << 24) | (<uint32_t>c.p[c.pos + 2] << 16)
                | (<uint32_t>c.p[c.pos + 3] << 8) | c.p[c.pos + 4])
        c.pos += 5
        return True
    return False


cdef inline uint64_t _be(const uint8_t* p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int k
    for k in range(n):
        v = (v << 8) | p[k]
    return v


cdef inline bint _int(Cursor* c, int64_t lo, int64_t hi, int64_t* out) noexcept nogil:
    """A MessagePack integer within ``lo .. hi``; False otherwise (or cut short)."""
    cdef uint8_t b
    cdef int size
    cdef uint64_t u
    cdef int64_t v
    if c.pos >= c.end:
        return False
    b = c.p[c.pos]
    if b <= 0x7F:
        v = b
        c.pos += 1
    elif b >= 0xE0:
        v = <int64_t>(<int8_t>b)
        c.pos += 1
    elif 0xCC <= b <= 0xCF:       # uint 8/16/32/64
        size = 1 << (b - 0xCC)
        if c.pos + 1 + size > c.end:
            return False
        u = _be(c.p + c.pos + 1, size)
        if u > <uint64_t>INT64_MAX:
            return False
        v = <int64_t>u
        c.pos += 1 + size
    elif 0xD0 <= b <= 0xD3:       # int 8/16/32/64
        size = 1 << (b - 0xD0)
        if c.pos + 1 + size > c.end:
            return False
        u = _be(c.p + c.pos + 1, size)
        if size < 8 and (u >> (8 * size - 1)) & 1:
            u |= ~((<uint64_t>1 << (8 * size)) - 1)    # sign-extend
        v = <int64_t>u
        c.pos += 1 + size
    else:
        return False
    if v < lo or v > hi:
        return False
    out[0] = v
    return True


cdef inline bint _bool(Cursor* c, uint8_t* out) noexcept nogil:
    if c.pos >= c.end or (c.p[c.pos] != 0xC2 and c.p[c.pos] != 0xC3):
        return False
    out[0] = 1 if c.p[c.pos] == 0xC3 else 0
    c.pos += 1
    return True


cdef bint _decode(const uint8_t* body, Py_ssize_t length, int64_t* seq, OrderMsg* m) noexcept nogil:
    """The order message in ``body``, exactly as msgspec would read it; False: not taken."""
    cdef Cursor c
    cdef uint32_t n
    cdef int64_t tag, v
    c.p = body
    c.pos = 0
    c.end = length
    if not _array(&c, &n) or n < 3:
        return False
    if not _int(&c, INT64_MIN, INT64_MAX, &tag):
        return False
    if not _int(&c, 0, INT64_MAX, seq):
        return False
    memset(m, 0, sizeof(OrderMsg))
    if not _int(&c, 1, INT64_MAX, &m.cl_ord_id):
        return False
    if tag == TAG_NEW_ORDER:
        if n != 10:
            return False
        m.op = OP_ADD
        if not _int(&c, 1, INT32_MAX, &m.symbol):
            return False
        if not _int(&c, 1, 2, &v):
            return False
        m.side = <uint8_t>v
        if not _int(&c, INT64_MIN, INT64_MAX, &m.price):
            return False
        if not _int(&c, INT64_MIN, INT64_MAX, &m.qty):
            return False
        if not _int(&c, 0, 2, &v):
            return False
        m.tif = <uint8_t>v
        if not _bool(&c, &m.post_only):
            return False
        if not _int(&c, 0, 3, &v):
            return False
        m.stp = <uint8_t>v
    elif tag == TAG_CANCEL:
        if n != 3:
            return False
        m.op = OP_CANCEL
    elif tag == TAG_REPLACE:
        if n != 5:
            return False
        m.op = OP_REPLACE
        if not _int(&c, INT64_MIN, INT64_MAX, &m.price):
            return False
        if not _int(&c, INT64_MIN, INT64_MAX, &m.qty):
            return False
    elif tag == TAG_REDUCE:
        if n != 4:
            return False
        m.op = OP_REDUCE
        if not _int(&c, INT64_MIN, INT64_MAX, &m.qty):
            return False
    else:
        return False
    return c.pos == c.end          # msgspec refuses trailing bytes


def decode_order(const uint8_t[::1] body not None):
    """``(seq, op, cl_ord_id, symbol, side, price, qty, tif, post_only, stp)`` of an order
    message body, or None where :func:`admit_frames` would leave it to msgspec (for tests)."""
    cdef OrderMsg m
    cdef int64_t seq
    if body.shape[0] == 0 or not _decode(&body[0], body.shape[0], &seq, &m):
        return None
    return (seq, m.op, m.cl_ord_id, m.symbol, m.side, m.price, m.qty, m.tif,
            bool(m.post_only), m.stp)


@cython.boundscheck(False)
@cython.wraparound(False)
def admit_frames(OrderGate gate not None, Py_ssize_t slot, bytearray buf not None,
                 Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_frame, int64_t last_seq,
                 int64_t now_ns, cnp.ndarray commands not None, Py_ssize_t n,
                 cnp.ndarray ref_seqs not None):
    """Admit the order frames of ``buf[start:end]`` into ``commands[n:]``; see the module doc.

    Parameters
    ----------
    gate, slot
        The daemon's order gate and the session's slot (logged on).
    buf, start, end
        The session's receive buffer and its unconsumed bytes.
    max_frame
        Frames with a longer body are left to the Python path (a fatal error).
    last_seq
        The session's last client sequence number; a frame must carry the next.
    now_ns
        The read's time for the rate limit.
    commands, n
        The daemon's ``COMMAND_DTYPE`` batch and its rows in use.
    ref_seqs
        int64 per batch row: the client seq of each command.

    Returns
    -------
    tuple
        ``(status, start, last_seq, n, reason, cl_ord_id)``: why it stopped
        (``END``, ``SLOW``, ``REJECT`` or ``FULL``), the first byte not
        consumed, the last sequence number consumed, the rows now in use, and
        for ``REJECT`` the reason and the message's ``cl_ord_id``.
    """
    cdef Py_ssize_t cap, length, body
    cdef const uint8_t* p
    cdef CommandRecord* rows
    cdef int64_t* refs
    cdef GateSession* s
    cdef OrderMsg m
    cdef int64_t seq
    cdef int r
    cdef int status = ST_END
    cap = checked_rows(commands, _COMMAND_DTYPE, "commands", "COMMAND_DTYPE", True)
    if (cnp.PyArray_TYPE(ref_seqs) != cnp.NPY_INT64 or cnp.PyArray_NDIM(ref_seqs) != 1
            or not cnp.PyArray_IS_C_CONTIGUOUS(ref_seqs)):
        raise TypeError("ref_seqs must be a one-dimensional int64 array")
    cap = min(cap, cnp.PyArray_DIM(ref_seqs, 0))
    if not (0 <= start <= end <= len(buf)) or not (0 <= n <= cap):
        raise ValueError("start, end or n out of range")
    s = gate._session(slot)
    if gate.retired != MAP_EMPTY:
        gate._flush()
    p = <const uint8_t*><char*>buf
    rows = <CommandRecord*>cnp.PyArray_DATA(commands)
    refs = <int64_t*>cnp.PyArray_DATA(ref_seqs)
    while end - start >= HEADER:
        length = (<Py_ssize_t>p[start] | (<Py_ssize_t>p[start + 1] << 8)
                  | (<Py_ssize_t>p[start + 2] << 16) | (<Py_ssize_t>p[start + 3] << 24))
        if length > max_frame:
            status = ST_SLOW
            break
        body = start + HEADER
        if body + length > end:
            break                                   # a partial frame: wait for more
        if not _decode(p + body, length, &seq, &m) or seq != last_seq + 1:
            status = ST_SLOW
            break
        if n >= cap:
            status = ST_FULL
            break
        r = gate._admit_msg(s, <int32_t>slot, &m, now_ns, &rows[n])
        start = body + length
        last_seq = seq
        if r != 0:
            return (ST_REJECT, start, last_seq, n, r, m.cl_ord_id)
        refs[n] = seq
        n += 1
    return (status, start, last_seq, n, 0, 0)
