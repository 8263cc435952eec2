"""Journal record framing in C: the daemon's per-batch append without Python per field.

``frame_commands`` writes one ``COMMANDS`` record (docs/journal.md, "Record")
into a preallocated buffer: the 24-byte header, the 16-byte commands prefix,
the rows, and both CRC-32s (zlib's, the same as ``zlib.crc32``);
``seal_record`` writes the header and CRCs of any other record whose payload
is already in place.  Every field is stored little-endian byte by byte, so the
bytes are the same on any host.  ``lltrade.journal.JournalWriter`` frames
every record through these two; the tests compare them with ``struct`` and
``zlib.crc32``.
"""

cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from lltrade._arrays cimport checked_rows
from lltrade._book cimport CommandRecord

from lltrade._book import COMMAND_DTYPE

cdef object _COMMAND_DTYPE = COMMAND_DTYPE     # a C global: no module lookup per call

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


cdef inline void _seal(uint8_t* p, Py_ssize_t length, Py_ssize_t padded, uint16_t rtype,
                      uint16_t flags, uint64_t seq) noexcept nogil:
    """The header of the record at ``p`` (payload ``length`` bytes, ``padded`` with padding) and
    both CRCs: the header's over its first 16 bytes, the record's over the padded payload."""
    cdef uint32_t header_crc
    _le32(p, <uint32_t>length)
    _le16(p + 4, rtype)
    _le16(p + 6, flags)
    _le64(p + 8, seq)
    header_crc = <uint32_t>crc32(0, p, HEADER_CRC_SPAN)
    _le32(p + 16, header_crc)
    _le32(p + 20, <uint32_t>crc32(header_crc, p + HEADER_SIZE, <unsigned int>padded))


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
    n = checked_rows(rows, _COMMAND_DTYPE, "rows", "COMMAND_DTYPE", False)
    nbytes = n * <Py_ssize_t>sizeof(CommandRecord)
    total = HEADER_SIZE + PREFIX_SIZE + nbytes     # rows are 56 bytes: already 8-aligned
    if n > 0xFFFFFFFF or total - HEADER_SIZE > 0xFFFFFFFF:
        raise ValueError(f"{n} rows do not fit one record")
    if len(buf) < total:
        raise ValueError(f"buf holds {len(buf)} bytes, the record needs {total}")
    p = <uint8_t*><char*>buf
    with nogil:
        _le64(p + HEADER_SIZE, <uint64_t>recv_ns)
        _le32(p + HEADER_SIZE + 8, <uint32_t>n)
        _le32(p + HEADER_SIZE + 12, <uint32_t>sizeof(CommandRecord))
        if nbytes:
            memcpy(p + HEADER_SIZE + PREFIX_SIZE, cnp.PyArray_DATA(rows), <size_t>nbytes)
        _seal(p, total - HEADER_SIZE, total - HEADER_SIZE, TYPE_COMMANDS, FLAG_STATE, seq)
    return total
