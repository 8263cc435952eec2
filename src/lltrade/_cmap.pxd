# cython: language_level=3
"""C containers shared by the extensions: checked array growth and an int64 map.

Everything here is ``cdef inline``, so each extension that cimports it gets its
own copy of the code (no cross-module calls on the order path).

``I64Map`` maps int64 keys to int32 values (pool indexes): open addressing with
linear probing and backward-shift deletion (no tombstones, so probe lengths
stay short under churn).  It never grows by itself: the owner calls
``_map_reserve`` between operations, so ``_map_put`` never allocates.
"""

from cpython.mem cimport PyMem_RawFree, PyMem_RawRealloc
from libc.stdint cimport int32_t, int64_t, uint64_t

cdef enum:
    MAP_EMPTY = -1                 # the value of an empty slot (never stored)


ctypedef struct MapSlot:           # 16 bytes
    int64_t key
    int32_t val                    # MAP_EMPTY = empty slot


ctypedef struct I64Map:            # open addressing, linear probing, backward-shift delete
    MapSlot* slots                 # NULL before _map_init and after _map_free
    uint64_t mask                  # capacity - 1; capacity is a power of two
    Py_ssize_t count               # live keys; kept <= capacity / 2


# =============================================================================
# Memory (allocation happens between operations, never inside one)
# =============================================================================

cdef inline void* _grow(void* ptr, Py_ssize_t count, size_t size) except NULL:
    """Resize ``ptr`` to ``count`` items of ``size`` bytes, overflow-checked."""
    if count <= 0 or <size_t>count > (<size_t>-1) // size:
        raise MemoryError(f"cannot size an array of {count} items of {size} bytes")
    cdef void* p = PyMem_RawRealloc(ptr, <size_t>count * size)
    if p == NULL:
        raise MemoryError(f"out of memory growing an array to {count} items")
    return p


# =============================================================================
# int64 -> int32 hash map
# =============================================================================

cdef inline uint64_t _mix64(uint64_t x) noexcept nogil:
    x ^= x >> 33
    x *= <uint64_t>0xFF51AFD7ED558CCD
    x ^= x >> 33
    x *= <uint64_t>0xC4CEB9FE1A85EC53
    x ^= x >> 33
    return x


cdef inline int _map_init(I64Map* m, Py_ssize_t cap) except -1:
    """Allocate an empty map with room for at least ``cap`` slots (``m.slots`` must be NULL)."""
    cdef Py_ssize_t n = 16
    while n < cap:
        n <<= 1
    m.slots = <MapSlot*>_grow(NULL, n, sizeof(MapSlot))
    cdef Py_ssize_t i
    for i in range(n):
        m.slots[i].val = MAP_EMPTY
    m.mask = <uint64_t>(n - 1)
    m.count = 0
    return 0


cdef inline void _map_free(I64Map* m) noexcept:
    PyMem_RawFree(m.slots)
    m.slots = NULL
    m.mask = 0
    m.count = 0


cdef inline int32_t _map_get(const I64Map* m, int64_t key) noexcept nogil:
    """The value stored under ``key``, or MAP_EMPTY."""
    cdef uint64_t i = _mix64(<uint64_t>key) & m.mask
    while m.slots[i].val != MAP_EMPTY:
        if m.slots[i].key == key:
            return m.slots[i].val
        i = (i + 1) & m.mask
    return MAP_EMPTY


cdef inline void _map_put(I64Map* m, int64_t key, int32_t val) noexcept nogil:
    """Insert a key known to be absent; room was reserved by _map_reserve."""
    cdef uint64_t i = _mix64(<uint64_t>key) & m.mask
    while m.slots[i].val != MAP_EMPTY:
        i = (i + 1) & m.mask
    m.slots[i].key = key
    m.slots[i].val = val
    m.count += 1


cdef inline void _map_del(I64Map* m, int64_t key) noexcept nogil:
    """Remove ``key`` if present."""
    cdef uint64_t i = _mix64(<uint64_t>key) & m.mask
    cdef uint64_t j, home
    while m.slots[i].val != MAP_EMPTY:
        if m.slots[i].key == key:
            break
        i = (i + 1) & m.mask
    else:
        return
    # Shift later members of the cluster back so lookups never hit a hole.
    j = i
    while True:
        j = (j + 1) & m.mask
        if m.slots[j].val == MAP_EMPTY:
            break
        home = _mix64(<uint64_t>m.slots[j].key) & m.mask
        # Leave slot j alone if its home lies cyclically in (i, j].
        if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
            continue
        m.slots[i] = m.slots[j]
        i = j
    m.slots[i].val = MAP_EMPTY
    m.count -= 1


cdef inline int _map_reserve(I64Map* m, Py_ssize_t want) except -1:
    """Make room for ``want`` keys at a load factor of at most 1/2."""
    cdef Py_ssize_t cap = <Py_ssize_t>m.mask + 1
    if want * 2 <= cap:
        return 0
    cdef Py_ssize_t new_cap = cap
    while want * 2 > new_cap:
        new_cap <<= 1
    cdef I64Map fresh
    cdef Py_ssize_t i
    fresh.slots = NULL
    _map_init(&fresh, new_cap)             # on MemoryError ``m`` is left as it was
    for i in range(cap):
        if m.slots[i].val != MAP_EMPTY:
            _map_put(&fresh, m.slots[i].key, m.slots[i].val)
    PyMem_RawFree(m.slots)
    m[0] = fresh
    return 0
