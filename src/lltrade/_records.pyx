"""Journal record framing in C: the daemon's per-batch append without Python per field.

``frame_commands`` writes one ``COMMANDS`` record (docs/journal.md, "Record")
into a preallocated buffer: the 24-byte header, the 16-byte commands prefix,
the rows, and both CRC-32s (zlib's, the same as ``zlib.crc32``).  Every field
is stored little-endian byte by byte, so the bytes are the same on any host.
``lltrade.journal.JournalWriter.append_commands`` uses it; the Python framing
(``struct`` + ``zlib.crc32``) remains for every other record type and is what
the tests compare it with.
"""

cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from lltrade._book cimport CommandRecord

cnp.import_array()

cdef extern from "zlib.h" nogil:
    unsigned long crc32(unsigned long crc, const unsigned char* buf, unsigned int len)

cdef enum:
    HEADER_SIZE = 24          # u32 length, u16 type, u16 flags, u64 seq, u32 header CRC, u32 CRC
    HEADER_CRC_SPAN = 16      # the header CRC covers its first 16 bytes
    PREFIX_SIZE = 16          # i64 recv_ns, u32 row count, u32 row size
    TYPE_COMMANDS = 1
    FLAG_STATE = 1


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


@cython.boundscheck(False)
@cython.wraparound(False)
def frame_commands(bytearray buf, cnp.ndarray rows, uint64_t seq, int64_t recv_ns):
    """Write the ``COMMANDS`` record of ``rows`` with sequence ``seq`` at the start of ``buf``.

    Parameters
    ----------
    buf : bytearray
        Room for the record: 40 + 56 * len(rows) bytes at least.
    rows : numpy.ndarray
        One-dimensional, C-contiguous ``COMMAND_DTYPE`` rows.
    seq, recv_ns : int
        The record's sequence number and the batch's receive timestamp.

    Returns
    -------
    int
        The record's size in bytes (what to write).
    """
    cdef Py_ssize_t n, nbytes, total
    cdef uint8_t* p
    cdef uint32_t header_crc
    if cnp.PyArray_NDIM(rows) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(rows):
        raise ValueError("rows must be a one-dimensional C-contiguous array")
    if cnp.PyArray_ITEMSIZE(rows) != sizeof(CommandRecord):
        raise TypeError(f"rows must be lltrade.COMMAND_DTYPE rows, got {rows.dtype}")
    n = cnp.PyArray_DIM(rows, 0)
    nbytes = n * <Py_ssize_t>sizeof(CommandRecord)
    total = HEADER_SIZE + PREFIX_SIZE + nbytes     # rows are 56 bytes: already 8-aligned
    if n > 0xFFFFFFFF or total - HEADER_SIZE > 0xFFFFFFFF:
        raise ValueError(f"{n} rows do not fit one record")
    if len(buf) < total:
        raise ValueError(f"buf holds {len(buf)} bytes, the record needs {total}")
    p = <uint8_t*><char*>buf
    with nogil:
        _le32(p, <uint32_t>(total - HEADER_SIZE))
        _le16(p + 4, TYPE_COMMANDS)
        _le16(p + 6, FLAG_STATE)
        _le64(p + 8, seq)
        _le64(p + HEADER_SIZE, <uint64_t>recv_ns)
        _le32(p + HEADER_SIZE + 8, <uint32_t>n)
        _le32(p + HEADER_SIZE + 12, <uint32_t>sizeof(CommandRecord))
        if nbytes:
            memcpy(p + HEADER_SIZE + PREFIX_SIZE, cnp.PyArray_DATA(rows), <size_t>nbytes)
        header_crc = <uint32_t>crc32(0, p, HEADER_CRC_SPAN)
        _le32(p + 16, header_crc)
        _le32(p + 20, <uint32_t>crc32(header_crc, p + HEADER_SIZE,
                                       <unsigned int>(total - HEADER_SIZE)))
    return total
