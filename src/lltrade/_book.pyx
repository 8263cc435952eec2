# cython: language_level=3
"""Price-level limit order book and matcher (price-time priority, integer ticks).

The behaviour is published in docs/matching.md; the data structures are
specified in _book.pxd.  Both faces, the per-call methods and the batch
``process``, build a ``Command`` and run the same ``_step``.
"""

cimport cython
cimport numpy as cnp
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.mem cimport PyMem_RawFree
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memmove, memset

from lltrade._arrays cimport checked_rows
from lltrade._cmap cimport _grow, _map_del, _map_get, _map_init, _map_put, _map_reserve

import numpy as np

from lltrade.enums import EventKind, Reason

cnp.import_array()

# Prices stay within +-2**62 so that -price, price + tick and the market
# protection arithmetic never overflow int64.
cdef int64_t PRICE_LIMIT = (<int64_t>1) << 62
cdef int64_t QTY_TOTAL_LIMIT = (<int64_t>1) << 62
cdef Py_ssize_t INDEX_LIMIT = 0x7FFFFFF0  # pools are addressed by int32
# Capacity is checked once per this many commands (see OrderBook._reserve).
cdef int32_t RESERVE_AHEAD = 64


# =============================================================================
# Ladder: a side's live levels sorted by key (bids: price, asks: -price), so
# the best level is always the last item
# =============================================================================

cdef inline Py_ssize_t _ladder_lower_bound(const Ladder* l, int64_t key) noexcept nogil:
    """Index of the first item whose key is >= ``key``."""
    cdef Py_ssize_t lo = 0, hi = l.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if l.items[mid].key < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _ladder_insert(Ladder* l, int64_t key, idx_t level) noexcept nogil:
    cdef Py_ssize_t pos
    if l.n == 0 or l.items[l.n - 1].key < key:
        pos = l.n                            # a new best: the common case
    else:
        pos = _ladder_lower_bound(l, key)
        memmove(&l.items[pos + 1], &l.items[pos], <size_t>(l.n - pos) * sizeof(LadderItem))
    l.items[pos].key = key
    l.items[pos].level = level
    l.n += 1


cdef inline void _ladder_remove(Ladder* l, int64_t key) noexcept nogil:
    cdef Py_ssize_t pos
    if l.items[l.n - 1].key == key:
        l.n -= 1                             # the best level emptied: O(1)
        return
    pos = _ladder_lower_bound(l, key)
    memmove(&l.items[pos], &l.items[pos + 1], <size_t>(l.n - pos - 1) * sizeof(LadderItem))
    l.n -= 1


cdef int _ladder_reserve(Ladder* l, Py_ssize_t want) except -1:
    cdef Py_ssize_t cap
    if want <= l.cap:
        return 0
    cap = l.cap * 2 if l.cap else 16
    while cap < want:
        cap *= 2
    l.items = <LadderItem*>_grow(l.items, cap, sizeof(LadderItem))
    l.cap = cap
    return 0


# =============================================================================
# State hash (docs/matching.md: the same on every platform and run)
# =============================================================================

cdef uint64_t HASH_SEED = <uint64_t>0x6C6C7472616465

cdef inline uint64_t _fold(uint64_t h, uint64_t v) noexcept nogil:
    cdef uint64_t z = (h ^ v) + <uint64_t>0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


# =============================================================================
# Events as Python objects (per-call face only)
# =============================================================================

@cython.final
@cython.freelist(256)
cdef class Event:
    """One engine event.  All fields are ints; unused fields are 0.

    ``kind`` is an :class:`lltrade.EventKind` value and ``reason`` a
    :class:`lltrade.Reason` value (compare them with the enum members).
    """

    cdef readonly int64_t order_id, price, qty, remaining, maker_id, taker_id
    cdef readonly int32_t symbol
    cdef readonly int kind, side, reason

    def as_tuple(self):
        """``(kind, order_id, side, price, qty, remaining, maker_id, taker_id, reason)``."""
        return (self.kind, self.order_id, self.side, self.price, self.qty,
                self.remaining, self.maker_id, self.taker_id, self.reason)

    def __eq__(self, other):
        if isinstance(other, Event):
            return (self.as_tuple() == (<Event>other).as_tuple()
                    and self.symbol == (<Event>other).symbol)
        if isinstance(other, tuple):
            return self.as_tuple() == other
        return NotImplemented

    def __hash__(self):
        return hash(self.as_tuple())

    def __repr__(self):
        parts = [EventKind(self.kind).name]
        if self.kind != EV_LEVEL:
            parts.append(f"order_id={self.order_id}")
        if self.side:
            parts.append("side=" + ("BUY" if self.side == SIDE_BUY else "SELL"))
        for name in ("price", "qty", "remaining", "maker_id", "taker_id"):
            value = getattr(self, name)
            if value or (name == "qty" and self.kind == EV_LEVEL):
                parts.append(f"{name}={value}")
        if self.reason:
            parts.append(f"reason={Reason(self.reason).name}")
        return "Event(" + ", ".join(parts) + ")"


cdef list _events_to_list(const EventRecord* ev, Py_ssize_t n):
    cdef list out = PyList_New(n)
    cdef Event e
    cdef Py_ssize_t i
    for i in range(n):
        e = Event.__new__(Event)
        e.kind = ev[i].kind
        e.order_id = ev[i].order_id
        e.side = ev[i].side
        e.price = ev[i].price
        e.qty = ev[i].qty
        e.remaining = ev[i].remaining
        e.maker_id = ev[i].maker_id
        e.taker_id = ev[i].taker_id
        e.reason = ev[i].reason
        e.symbol = ev[i].symbol
        Py_INCREF(e)                      # PyList_SET_ITEM steals a reference
        PyList_SET_ITEM(out, i, e)
    return out


# =============================================================================
# Batch dtypes, built from the C structs' real layout
# =============================================================================

cdef CommandRecord _c
cdef EventRecord _e

COMMAND_DTYPE = np.dtype({
    "names": ["order_id", "price", "qty", "account", "protection", "symbol",
              "op", "side", "tif", "post_only", "stp", "reason"],
    "formats": ["i8", "i8", "i8", "i8", "i8", "i4",
                "u1", "u1", "u1", "u1", "u1", "u2"],
    "offsets": [<Py_ssize_t>(<char*>&_c.order_id - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.price - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.qty - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.account - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.protection - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.symbol - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.op - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.side - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.tif - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.post_only - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.stp - <char*>&_c),
                <Py_ssize_t>(<char*>&_c.reason - <char*>&_c)],
    "itemsize": sizeof(CommandRecord),
})

EVENT_DTYPE = np.dtype({
    "names": ["order_id", "price", "qty", "remaining", "maker_id", "taker_id",
              "symbol", "cmd", "kind", "side", "reason"],
    "formats": ["i8", "i8", "i8", "i8", "i8", "i8",
                "i4", "i4", "u1", "u1", "u2"],
    "offsets": [<Py_ssize_t>(<char*>&_e.order_id - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.price - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.qty - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.remaining - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.maker_id - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.taker_id - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.symbol - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.cmd - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.kind - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.side - <char*>&_e),
                <Py_ssize_t>(<char*>&_e.reason - <char*>&_e)],
    "itemsize": sizeof(EventRecord),
})


cdef inline bint _is_side(int side) noexcept nogil:
    return side == SIDE_BUY or side == SIDE_SELL


# =============================================================================
# The order book
# =============================================================================

@cython.final
cdef class OrderBook:
    """A price-level limit order book for one symbol.

    Parameters
    ----------
    min_price, max_price : int
        Inclusive price band, in base units; both multiples of ``tick``.
    tick : int
        Price grid: a price must be a multiple of it.
    lot : int
        Quantity grid: a quantity must be a positive multiple of it.
    symbol_id : int
        Copied into every event.
    max_qty : int
        Largest order quantity accepted.
    max_orders : int
        Most resting orders the book will hold; beyond it a GTC add is
        rejected with ``POOL_EXHAUSTED``.  ``max_qty * max_orders`` must stay
        below 2**62 so that no level total can overflow.
    capacity : int
        Resting orders to preallocate room for (the pools grow by doubling,
        between commands, up to ``max_orders``).
    """

    def __cinit__(self, px_t min_price, px_t max_price, px_t tick=1, qty_t lot=1,
                  int32_t symbol_id=0, *, qty_t max_qty=1_000_000_000_000,
                  Py_ssize_t max_orders=1 << 22, Py_ssize_t capacity=1024):
        if tick <= 0:
            raise ValueError(f"tick must be positive, got {tick}")
        if lot <= 0:
            raise ValueError(f"lot must be positive, got {lot}")
        if not (-PRICE_LIMIT <= min_price <= max_price <= PRICE_LIMIT):
            raise ValueError(
                f"need -2**62 <= min_price <= max_price <= 2**62, got {min_price}, {max_price}")
        if min_price % tick or max_price % tick:
            raise ValueError(f"min_price and max_price must be multiples of tick ({tick})")
        if max_qty < lot:
            raise ValueError(f"max_qty ({max_qty}) must be at least one lot ({lot})")
        if not (1 <= max_orders <= INDEX_LIMIT):
            raise ValueError(f"max_orders must be in 1 .. {INDEX_LIMIT}, got {max_orders}")
        if max_qty > QTY_TOTAL_LIMIT // max_orders:
            raise ValueError(f"max_qty * max_orders must stay below 2**62 "
                             f"(got {max_qty} * {max_orders}); lower one of them")
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.symbol_id = symbol_id
        self.min_price = min_price
        self.max_price = max_price
        self.tick = tick
        self.lot = lot
        self.max_qty = max_qty
        self.max_orders = max_orders
        self.free_order = NIL
        self.free_level = NIL
        capacity = min(capacity, max_orders)
        self._grow_orders(capacity)
        self._grow_levels(min(capacity, 64))
        _map_init(&self.oid_map, capacity * 2)
        _map_init(&self.bid_map, 64)
        _map_init(&self.ask_map, 64)
        _ladder_reserve(&self.bids, 32)
        _ladder_reserve(&self.asks, 32)
        self._reserve()
        self._reserve_own_events(64)

    def __dealloc__(self):
        PyMem_RawFree(self.order_pool)
        PyMem_RawFree(self.level_pool)
        PyMem_RawFree(self.oid_map.slots)
        PyMem_RawFree(self.bid_map.slots)
        PyMem_RawFree(self.ask_map.slots)
        PyMem_RawFree(self.bids.items)
        PyMem_RawFree(self.asks.items)
        PyMem_RawFree(self.touched)
        PyMem_RawFree(self.own_events)

    # -------------------------------------------------------------------------
    # Growth: only ever called between commands
    # -------------------------------------------------------------------------

    cdef int _grow_orders(self, Py_ssize_t new_cap) except -1:
        cdef Py_ssize_t i
        self.order_pool = <Order*>_grow(self.order_pool, new_cap, sizeof(Order))
        # Chain the new slots in front of the (empty or short) free list.
        for i in range(new_cap - 1, self.order_cap - 1, -1):
            self.order_pool[i].next = self.free_order
            self.free_order = <idx_t>i
        self.order_cap = new_cap
        return 0

    cdef int _grow_levels(self, Py_ssize_t new_cap) except -1:
        cdef Py_ssize_t i
        self.level_pool = <Level*>_grow(self.level_pool, new_cap, sizeof(Level))
        for i in range(new_cap - 1, self.level_cap - 1, -1):
            self.level_pool[i].next_free = self.free_level
            self.level_pool[i].touched_in = 0
            self.free_level = <idx_t>i
        self.level_cap = new_cap
        return 0

    cdef int _reserve(self) except -1:
        """Room for RESERVE_AHEAD more commands.

        A command adds at most one order and one level, so after this the next
        RESERVE_AHEAD commands run without a single capacity check.
        """
        cdef Py_ssize_t want_orders = min(self.n_orders + RESERVE_AHEAD, self.max_orders)
        cdef Py_ssize_t live_levels = self.bids.n + self.asks.n
        cdef Py_ssize_t cap
        if self.order_cap < want_orders:
            cap = self.order_cap
            while cap < want_orders:
                cap *= 2
            self._grow_orders(min(cap, self.max_orders))
        if self.level_cap < live_levels + RESERVE_AHEAD:
            cap = self.level_cap
            while cap < live_levels + RESERVE_AHEAD:
                cap *= 2
            self._grow_levels(cap)
        _map_reserve(&self.oid_map, self.n_orders + RESERVE_AHEAD)
        _map_reserve(&self.bid_map, self.bids.n + RESERVE_AHEAD)
        _map_reserve(&self.ask_map, self.asks.n + RESERVE_AHEAD)
        _ladder_reserve(&self.bids, self.bids.n + RESERVE_AHEAD)
        _ladder_reserve(&self.asks, self.asks.n + RESERVE_AHEAD)
        # A command touches at most every live level plus the one it creates.
        if self.touched_cap < live_levels + RESERVE_AHEAD + 2:
            cap = max(self.touched_cap * 2, live_levels + RESERVE_AHEAD + 2)
            self.touched = <Touch*>_grow(self.touched, cap, sizeof(Touch))
            self.touched_cap = cap
        self.headroom = RESERVE_AHEAD
        return 0

    cdef int _reserve_own_events(self, Py_ssize_t bound) except -1:
        cdef Py_ssize_t cap
        if bound > self.own_cap:
            cap = max(bound, self.own_cap * 2, 64)
            self.own_events = <EventRecord*>_grow(self.own_events, cap, sizeof(EventRecord))
            self.own_cap = cap
        return 0

    # -------------------------------------------------------------------------
    # Small helpers of the order path
    # -------------------------------------------------------------------------

    cdef inline void _emit(self, uint8_t kind, oid_t order_id, uint8_t side, px_t price,
                           qty_t qty, qty_t remaining, oid_t maker_id, oid_t taker_id,
                           uint16_t reason) noexcept:
        cdef EventRecord* e = &self.out[self.n_out]
        e.order_id = order_id
        e.price = price
        e.qty = qty
        e.remaining = remaining
        e.maker_id = maker_id
        e.taker_id = taker_id
        e.symbol = self.symbol_id
        e.cmd = self.cur_cmd
        e.kind = kind
        e.side = side
        e.reason = reason
        e._pad = 0
        self.n_out += 1

    cdef inline void _reject(self, oid_t order_id, uint16_t reason) noexcept:
        self._emit(EV_REJECTED, order_id, 0, 0, 0, 0, 0, 0, reason)

    cdef inline Ladder* _ladder(self, uint8_t side) noexcept:
        return &self.bids if side == SIDE_BUY else &self.asks

    cdef inline I64Map* _price_map(self, uint8_t side) noexcept:
        return &self.bid_map if side == SIDE_BUY else &self.ask_map

    cdef inline Level* _best(self, uint8_t side) noexcept:
        """The best level of ``side``, or NULL when that side is empty."""
        cdef Ladder* l = self._ladder(side)
        if l.n == 0:
            return NULL
        return &self.level_pool[l.items[l.n - 1].level]

    cdef inline bint _would_cross(self, uint8_t side, px_t price) noexcept:
        cdef Level* best = self._best(SIDE_SELL if side == SIDE_BUY else SIDE_BUY)
        if best == NULL:
            return False
        return best.price <= price if side == SIDE_BUY else best.price >= price

    cdef inline void _touch(self, Level* lvl) noexcept:
        """Record a level's total before the current command first changes it."""
        if lvl.touched_in == self.epoch:
            return
        lvl.touched_in = self.epoch
        lvl.touch_slot = <int32_t>self.n_touched
        cdef Touch* t = &self.touched[self.n_touched]
        t.side = lvl.side
        t.price = lvl.price
        t.before = lvl.total
        t.level = <idx_t>(lvl - self.level_pool)
        self.n_touched += 1

    cdef inline void _emit_levels(self) noexcept:
        cdef Py_ssize_t i
        cdef Touch* t
        cdef qty_t now
        for i in range(self.n_touched):
            t = &self.touched[i]
            now = self.level_pool[t.level].total if t.level != NIL else 0
            if now != t.before:
                self._emit(EV_LEVEL, 0, t.side, t.price, now, 0, 0, 0, R_NONE)

    cdef inline int64_t _key(self, uint8_t side, px_t price) noexcept:
        return price if side == SIDE_BUY else -price

    cdef void _link(self, idx_t oi) noexcept:
        """Append a filled-in order to the back of its price level."""
        cdef Order* o = &self.order_pool[oi]
        cdef I64Map* pm = self._price_map(o.side)
        cdef idx_t li = _map_get(pm, o.price)
        cdef Level* lvl
        cdef Py_ssize_t i
        if li == NIL:
            li = self.free_level
            lvl = &self.level_pool[li]
            self.free_level = lvl.next_free
            lvl.price = o.price
            lvl.total = 0
            lvl.head = NIL
            lvl.tail = NIL
            lvl.count = 0
            lvl.side = o.side
            _map_put(pm, o.price, li)
            _ladder_insert(self._ladder(o.side), self._key(o.side, o.price), li)
            # The same (side, price) may have been emptied earlier in this
            # command (a replace that grows in place): keep its first record.
            lvl.touched_in = self.epoch
            for i in range(self.n_touched):
                if (self.touched[i].level == NIL and self.touched[i].side == o.side
                        and self.touched[i].price == o.price):
                    break
            else:
                i = self.n_touched
                self.touched[i].side = o.side
                self.touched[i].price = o.price
                self.touched[i].before = 0
                self.n_touched += 1
            self.touched[i].level = li
            lvl.touch_slot = <int32_t>i
        else:
            lvl = &self.level_pool[li]
            self._touch(lvl)
        o.level = li
        o.prev = lvl.tail
        o.next = NIL
        if lvl.tail != NIL:
            self.order_pool[lvl.tail].next = oi
        else:
            lvl.head = oi
        lvl.tail = oi
        lvl.count += 1
        lvl.total += o.qty

    cdef void _unlink(self, idx_t oi) noexcept:
        """Take an order out of its level (freeing the level if it empties)."""
        cdef Order* o = &self.order_pool[oi]
        cdef idx_t li = o.level
        cdef Level* lvl = &self.level_pool[li]
        self._touch(lvl)
        if o.prev != NIL:
            self.order_pool[o.prev].next = o.next
        else:
            lvl.head = o.next
        if o.next != NIL:
            self.order_pool[o.next].prev = o.prev
        else:
            lvl.tail = o.prev
        lvl.count -= 1
        lvl.total -= o.qty
        if lvl.count == 0:
            self.touched[lvl.touch_slot].level = NIL
            _ladder_remove(self._ladder(lvl.side), self._key(lvl.side, lvl.price))
            _map_del(self._price_map(lvl.side), lvl.price)
            lvl.next_free = self.free_level
            self.free_level = li

    cdef inline void _free_order(self, idx_t oi) noexcept:
        _map_del(&self.oid_map, self.order_pool[oi].id)
        self.order_pool[oi].next = self.free_order
        self.free_order = oi
        self.n_orders -= 1
        self.side_orders[self.order_pool[oi].side] -= 1

    # -------------------------------------------------------------------------
    # Matching
    # -------------------------------------------------------------------------

    cdef px_t _market_limit(self, uint8_t side, int64_t protection) noexcept:
        """Limit of a market order: protection ticks from the opposite touch."""
        cdef Level* best = self._best(SIDE_SELL if side == SIDE_BUY else SIDE_BUY)
        cdef int64_t room
        if protection < 0:
            return self.max_price if side == SIDE_BUY else self.min_price
        if side == SIDE_BUY:
            room = (self.max_price - best.price) // self.tick
            return best.price + min(protection, room) * self.tick
        room = (best.price - self.min_price) // self.tick
        return best.price - min(protection, room) * self.tick

    cdef bint _fok_fillable(self, uint8_t side, px_t limit, qty_t qty, acct_t account,
                            uint8_t stp) noexcept:
        """Would the match (run with STP) fill ``qty`` completely?  Changes nothing."""
        cdef Ladder* opp = self._ladder(SIDE_SELL if side == SIDE_BUY else SIDE_BUY)
        cdef Py_ssize_t i
        cdef Level* lvl
        cdef idx_t oi
        cdef Order* o
        cdef bint stp_on = stp != STP_NONE and account != 0
        cdef qty_t avail = 0
        i = opp.n - 1
        while i >= 0 and avail < qty:
            lvl = &self.level_pool[opp.items[i].level]
            if (lvl.price > limit) if side == SIDE_BUY else (lvl.price < limit):
                break
            if not stp_on:
                avail += lvl.total
            else:
                oi = lvl.head
                while oi != NIL and avail < qty:
                    o = &self.order_pool[oi]
                    if o.account == account:
                        if stp != STP_CANCEL_RESTING:
                            return False          # the match would stop here
                    else:
                        avail += o.qty
                    oi = o.next
            i -= 1
        return avail >= qty

    cdef qty_t _match(self, uint8_t side, px_t limit, qty_t qty, oid_t taker_id,
                      acct_t account, uint8_t stp, bint* stp_stop) noexcept:
        """Trade an incoming order against the opposite side; return what is left."""
        cdef Ladder* opp = self._ladder(SIDE_SELL if side == SIDE_BUY else SIDE_BUY)
        cdef bint stp_on = stp != STP_NONE and account != 0
        cdef Level* lvl
        cdef idx_t li, oi, nxt
        cdef Order* o
        cdef qty_t fill
        while qty > 0 and opp.n > 0 and not stp_stop[0]:
            li = opp.items[opp.n - 1].level
            lvl = &self.level_pool[li]
            if (lvl.price > limit) if side == SIDE_BUY else (lvl.price < limit):
                break
            self._touch(lvl)
            oi = lvl.head
            # A level frees itself when its last order goes, so stop at the
            # last order rather than re-reading the level afterwards.
            while oi != NIL and qty > 0:
                o = &self.order_pool[oi]
                nxt = o.next
                if stp_on and o.account == account:
                    if stp == STP_CANCEL_INCOMING:
                        stp_stop[0] = True
                        break
                    self._emit(EV_CANCELLED, o.id, o.side, o.price, o.qty, 0, 0, 0,
                               R_SELF_TRADE)
                    self._unlink(oi)
                    self._free_order(oi)
                    if stp == STP_CANCEL_BOTH:
                        stp_stop[0] = True
                        break
                    oi = nxt
                    continue
                fill = o.qty if o.qty < qty else qty
                qty -= fill
                self._emit(EV_FILL, taker_id, side, o.price, fill, qty, o.id, taker_id, R_NONE)
                if fill == o.qty:
                    self._emit(EV_FILL, o.id, o.side, o.price, fill, 0, o.id, taker_id, R_NONE)
                    self._unlink(oi)
                    self._free_order(oi)
                else:
                    o.qty -= fill
                    lvl.total -= fill
                    self._emit(EV_FILL, o.id, o.side, o.price, fill, o.qty, o.id, taker_id,
                               R_NONE)
                oi = nxt
        return qty

    # -------------------------------------------------------------------------
    # Commands
    # -------------------------------------------------------------------------

    cdef void _add(self, const CommandRecord* c) noexcept:
        cdef oid_t oid = c.order_id
        cdef uint8_t side = c.side
        cdef qty_t left
        cdef bint stp_stop = False
        cdef idx_t oi
        cdef Order* o
        if not _is_side(side) or c.tif > TIF_FOK or c.stp > STP_CANCEL_BOTH or c.post_only > 1:
            self._reject(oid, R_INVALID_FIELD)
            return
        if oid <= 0:
            self._reject(oid, R_INVALID_ORDER_ID)
            return
        if c.post_only and c.tif != TIF_GTC:
            self._reject(oid, R_INVALID_FLAGS)
            return
        if c.qty <= 0 or c.qty > self.max_qty or (self.lot != 1 and c.qty % self.lot != 0):
            self._reject(oid, R_INVALID_QTY)
            return
        if self.tick != 1 and c.price % self.tick != 0:
            self._reject(oid, R_PRICE_OFF_TICK)
            return
        if c.price < self.min_price or c.price > self.max_price:
            self._reject(oid, R_PRICE_OUT_OF_BAND)
            return
        if _map_get(&self.oid_map, oid) != NIL:
            self._reject(oid, R_DUPLICATE_ORDER_ID)
            return
        if c.post_only and self._would_cross(side, c.price):
            self._reject(oid, R_POST_ONLY_WOULD_CROSS)
            return
        if c.tif == TIF_GTC and self.free_order == NIL:
            self._reject(oid, R_POOL_EXHAUSTED)
            return
        self._emit(EV_ACCEPTED, oid, side, c.price, c.qty, c.qty, 0, 0, R_NONE)
        if c.tif == TIF_FOK and not self._fok_fillable(side, c.price, c.qty, c.account, c.stp):
            self._emit(EV_CANCELLED, oid, side, c.price, c.qty, 0, 0, 0, R_FOK_UNFILLED)
            return
        left = c.qty
        if self._would_cross(side, c.price):
            left = self._match(side, c.price, c.qty, oid, c.account, c.stp, &stp_stop)
        if left > 0:
            if stp_stop:
                self._emit(EV_CANCELLED, oid, side, c.price, left, 0, 0, 0, R_SELF_TRADE)
            elif c.tif != TIF_GTC:
                self._emit(EV_CANCELLED, oid, side, c.price, left, 0, 0, 0, R_IOC_REMAINDER)
            else:
                oi = self.free_order
                o = &self.order_pool[oi]
                self.free_order = o.next
                o.id = oid
                o.price = c.price
                o.qty = left
                o.account = c.account
                o.side = side
                o.stp = c.stp
                o.post_only = c.post_only
                self._link(oi)
                _map_put(&self.oid_map, oid, oi)
                self.n_orders += 1
                self.side_orders[side] += 1
        self._emit_levels()

    cdef void _market(self, const CommandRecord* c) noexcept:
        cdef oid_t oid = c.order_id
        cdef uint8_t side = c.side
        cdef qty_t left
        cdef bint stp_stop = False
        if not _is_side(side) or c.stp > STP_CANCEL_BOTH or c.protection < -1:
            self._reject(oid, R_INVALID_FIELD)
            return
        if oid <= 0:
            self._reject(oid, R_INVALID_ORDER_ID)
            return
        if c.qty <= 0 or c.qty > self.max_qty or (self.lot != 1 and c.qty % self.lot != 0):
            self._reject(oid, R_INVALID_QTY)
            return
        if _map_get(&self.oid_map, oid) != NIL:
            self._reject(oid, R_DUPLICATE_ORDER_ID)
            return
        self._emit(EV_ACCEPTED, oid, side, 0, c.qty, c.qty, 0, 0, R_NONE)
        left = c.qty
        if self._best(SIDE_SELL if side == SIDE_BUY else SIDE_BUY) != NULL:
            left = self._match(side, self._market_limit(side, c.protection), c.qty, oid,
                               c.account, c.stp, &stp_stop)
        if left > 0:
            self._emit(EV_CANCELLED, oid, side, 0, left, 0, 0, 0,
                       R_SELF_TRADE if stp_stop else R_IOC_REMAINDER)
        self._emit_levels()

    cdef void _cancel(self, const CommandRecord* c) noexcept:
        cdef idx_t oi = _map_get(&self.oid_map, c.order_id)
        cdef Order* o
        if oi == NIL:
            self._reject(c.order_id, R_UNKNOWN_ORDER)
            return
        o = &self.order_pool[oi]
        self._emit(EV_CANCELLED, o.id, o.side, o.price, o.qty, 0, 0, 0,
                   c.reason if c.reason else R_USER_CANCEL)
        self._unlink(oi)
        self._free_order(oi)
        self._emit_levels()

    cdef void _reduce(self, const CommandRecord* c) noexcept:
        cdef idx_t oi = _map_get(&self.oid_map, c.order_id)
        cdef Order* o
        cdef Level* lvl
        cdef qty_t removed
        if oi == NIL:
            self._reject(c.order_id, R_UNKNOWN_ORDER)
            return
        o = &self.order_pool[oi]
        if c.qty <= 0 or c.qty >= o.qty or (self.lot != 1 and c.qty % self.lot != 0):
            self._reject(c.order_id, R_INVALID_QTY)
            return
        lvl = &self.level_pool[o.level]
        self._touch(lvl)
        removed = o.qty - c.qty
        o.qty = c.qty
        lvl.total -= removed
        self._emit(EV_REDUCED, o.id, o.side, o.price, removed, o.qty, 0, 0, R_NONE)
        self._emit_levels()

    cdef void _replace(self, const CommandRecord* c) noexcept:
        cdef idx_t oi = _map_get(&self.oid_map, c.order_id)
        cdef Order* o
        cdef Level* lvl
        cdef qty_t left
        cdef bint stp_stop = False
        if oi == NIL:
            self._reject(c.order_id, R_UNKNOWN_ORDER)
            return
        o = &self.order_pool[oi]
        if c.qty <= 0 or c.qty > self.max_qty or (self.lot != 1 and c.qty % self.lot != 0):
            self._reject(c.order_id, R_INVALID_QTY)
            return
        if self.tick != 1 and c.price % self.tick != 0:
            self._reject(c.order_id, R_PRICE_OFF_TICK)
            return
        if c.price < self.min_price or c.price > self.max_price:
            self._reject(c.order_id, R_PRICE_OUT_OF_BAND)
            return
        if o.post_only and self._would_cross(o.side, c.price):
            self._reject(c.order_id, R_POST_ONLY_WOULD_CROSS)
            return
        self._emit(EV_REPLACED, o.id, o.side, c.price, c.qty, c.qty, 0, 0, R_NONE)
        if c.price == o.price and c.qty <= o.qty:
            lvl = &self.level_pool[o.level]           # keeps its place
            self._touch(lvl)
            lvl.total -= o.qty - c.qty
            o.qty = c.qty
            self._emit_levels()
            return
        # Loses its place: leave the level, arrive again as a GTC limit order.
        self._unlink(oi)
        left = c.qty
        if self._would_cross(o.side, c.price):
            left = self._match(o.side, c.price, c.qty, o.id, o.account, o.stp, &stp_stop)
        if left > 0 and not stp_stop:
            o.price = c.price
            o.qty = left
            self._link(oi)
        else:
            if left > 0:
                self._emit(EV_CANCELLED, o.id, o.side, c.price, left, 0, 0, 0, R_SELF_TRADE)
            self._free_order(oi)
        self._emit_levels()

    cdef void _mass_cancel_side(self, Ladder* l, acct_t account, uint16_t reason) noexcept:
        cdef Py_ssize_t i = l.n - 1
        cdef idx_t oi, nxt
        cdef Order* o
        # Removing level i only shifts the already-visited (better) items down.
        while i >= 0:
            oi = self.level_pool[l.items[i].level].head
            while oi != NIL:
                o = &self.order_pool[oi]
                nxt = o.next
                if o.account == account:
                    self._emit(EV_CANCELLED, o.id, o.side, o.price, o.qty, 0, 0, 0, reason)
                    self._unlink(oi)
                    self._free_order(oi)
                oi = nxt
            i -= 1

    cdef void _mass_cancel(self, const CommandRecord* c) noexcept:
        cdef uint16_t reason = c.reason if c.reason else R_MASS_CANCEL
        if c.account == 0:
            return
        self._mass_cancel_side(&self.bids, c.account, reason)
        self._mass_cancel_side(&self.asks, c.account, reason)
        self._emit_levels()

    cdef void _execute(self, const CommandRecord* c) noexcept:
        self.epoch += 1
        self.n_touched = 0
        if c.op == OP_ADD:
            self._add(c)
        elif c.op == OP_CANCEL:
            self._cancel(c)
        elif c.op == OP_MARKET:
            self._market(c)
        elif c.op == OP_REPLACE:
            self._replace(c)
        elif c.op == OP_REDUCE:
            self._reduce(c)
        elif c.op == OP_MASS_CANCEL:
            self._mass_cancel(c)
        else:
            self._reject(c.order_id, R_INVALID_FIELD)

    cdef Py_ssize_t _event_bound(self, const CommandRecord* c) noexcept:
        """Most events ``c`` can yield (also bounds the levels it touches).

        A command that can trade meets at most every resting order of the
        other side, and, unless STP cancel-resting may remove orders without
        using up quantity, at most ``qty / lot + 1`` of them; each costs two
        events (a fill pair, or one STP cancel) plus possibly a LEVEL.
        """
        cdef uint8_t side = c.side
        cdef uint8_t stp = c.stp
        cdef idx_t oi
        cdef Py_ssize_t makers, lots
        if c.op == OP_REPLACE:
            oi = _map_get(&self.oid_map, c.order_id)
            if oi == NIL:
                return 1
            side = self.order_pool[oi].side
            stp = self.order_pool[oi].stp
        if c.op == OP_ADD or c.op == OP_REPLACE or c.op == OP_MARKET:
            if not _is_side(side) or c.qty <= 0:
                return 1                          # rejected: one event
            if c.op != OP_MARKET and not self._would_cross(side, c.price):
                return 3
            makers = self.side_orders[SIDE_SELL if side == SIDE_BUY else SIDE_BUY]
            if stp != STP_CANCEL_RESTING:
                lots = c.qty if self.lot == 1 else c.qty // self.lot
                if lots + 2 < makers:
                    makers = lots + 2
            return 4 + 3 * makers
        if c.op == OP_MASS_CANCEL:
            return 1 + self.n_orders + self.bids.n + self.asks.n
        if c.op == OP_CANCEL or c.op == OP_REDUCE:
            return 3
        return 1                                  # unknown op: rejected

    cdef Py_ssize_t _step(self, const CommandRecord* c, EventRecord* out, Py_ssize_t cap,
                          int32_t cmd_index) except -2:
        """Run one command, writing its events to ``out``; -1 if it might not fit."""
        # Any command fits when there is room for the whole book's worth of
        # events; only a nearly full buffer needs the command's own bound.
        if cap < 5 + 3 * self.n_orders + self.bids.n + self.asks.n:
            if self._event_bound(c) > cap:
                return -1
        if self.headroom <= 0:
            self._reserve()
        self.headroom -= 1
        self.out = out
        self.n_out = 0
        self.cur_cmd = cmd_index
        self._execute(c)
        return self.n_out

    cdef list _call(self, CommandRecord* c):
        """Per-call face: run one command into the book's own buffer."""
        cdef Py_ssize_t n
        if self.own_cap < 5 + 3 * self.n_orders + self.bids.n + self.asks.n:
            self._reserve_own_events(self._event_bound(c))
        n = self._step(c, self.own_events, self.own_cap, 0)
        return _events_to_list(self.own_events, n)

    # -------------------------------------------------------------------------
    # Per-call face
    # -------------------------------------------------------------------------

    def add(self, oid_t order_id, int side, px_t price, qty_t qty, *, int tif=TIF_GTC,
            bint post_only=False, acct_t account=0, int stp=STP_NONE):
        """Add a limit order; returns its events (see docs/matching.md).

        Parameters
        ----------
        order_id : int
            1 .. 2**63 - 1, not the id of a resting order.
        side : Side
        price : int
            Limit price, a multiple of ``tick`` inside the band.
        qty : int
            A positive multiple of ``lot``, at most ``max_qty``.
        tif : TIF
            GTC rests the remainder, IOC cancels it, FOK fills all or nothing.
        post_only : bool
            Reject instead of trading on arrival (GTC only).
        account : int
            Owner for self-trade prevention; 0 = none.
        stp : STP
            Self-trade prevention mode of this order.
        """
        cdef CommandRecord c
        if not _is_side(side):
            raise ValueError(f"side must be Side.BUY or Side.SELL, got {side!r}")
        if not (TIF_GTC <= tif <= TIF_FOK):
            raise ValueError(f"tif must be a TIF member, got {tif!r}")
        if not (STP_NONE <= stp <= STP_CANCEL_BOTH):
            raise ValueError(f"stp must be an STP member, got {stp!r}")
        memset(&c, 0, sizeof(CommandRecord))
        c.op = OP_ADD
        c.order_id = order_id
        c.side = <uint8_t>side
        c.price = price
        c.qty = qty
        c.tif = <uint8_t>tif
        c.post_only = post_only
        c.account = account
        c.stp = <uint8_t>stp
        return self._call(&c)

    def market(self, oid_t order_id, int side, qty_t qty, *, protection_ticks=None,
               acct_t account=0, int stp=STP_NONE):
        """Send a market order: sweeps the opposite side, remainder cancelled.

        ``protection_ticks`` caps the sweep at that many ticks from the
        opposite touch at arrival (``None``: no cap).
        """
        cdef CommandRecord c
        cdef int64_t protection = -1
        if not _is_side(side):
            raise ValueError(f"side must be Side.BUY or Side.SELL, got {side!r}")
        if not (STP_NONE <= stp <= STP_CANCEL_BOTH):
            raise ValueError(f"stp must be an STP member, got {stp!r}")
        if protection_ticks is not None:
            protection = protection_ticks
            if protection < 0:
                raise ValueError(
                    f"protection_ticks must be >= 0 or None, got {protection_ticks!r}")
        memset(&c, 0, sizeof(CommandRecord))
        c.op = OP_MARKET
        c.order_id = order_id
        c.side = <uint8_t>side
        c.qty = qty
        c.protection = protection
        c.account = account
        c.stp = <uint8_t>stp
        return self._call(&c)

    def cancel(self, oid_t order_id, int reason=R_USER_CANCEL):
        """Cancel a resting order; ``reason`` is reported in its CANCELLED event."""
        cdef CommandRecord c
        if not (0 <= reason <= 0xFFFF):
            raise ValueError(f"reason must be a Reason member, got {reason!r}")
        memset(&c, 0, sizeof(CommandRecord))
        c.op = OP_CANCEL
        c.order_id = order_id
        c.reason = <uint16_t>reason
        return self._call(&c)

    def reduce(self, oid_t order_id, qty_t qty):
        """Lower a resting order's open quantity to ``qty``; it keeps its place."""
        cdef CommandRecord c
        memset(&c, 0, sizeof(CommandRecord))
        c.op = OP_REDUCE
        c.order_id = order_id
        c.qty = qty
        return self._call(&c)

    def replace(self, oid_t order_id, px_t price, qty_t qty):
        """Change a resting order's price and open quantity (``qty`` = new open qty).

        Same price and a quantity not above the open one keep the order's
        place; anything else re-enters it as a GTC order that may trade.
        """
        cdef CommandRecord c
        memset(&c, 0, sizeof(CommandRecord))
        c.op = OP_REPLACE
        c.order_id = order_id
        c.price = price
        c.qty = qty
        return self._call(&c)

    def mass_cancel(self, acct_t account, int reason=R_MASS_CANCEL):
        """Cancel every resting order of ``account`` (bids best first, then asks)."""
        cdef CommandRecord c
        if not (0 <= reason <= 0xFFFF):
            raise ValueError(f"reason must be a Reason member, got {reason!r}")
        memset(&c, 0, sizeof(CommandRecord))
        c.op = OP_MASS_CANCEL
        c.account = account
        c.reason = <uint16_t>reason
        return self._call(&c)

    # -------------------------------------------------------------------------
    # Batch face
    # -------------------------------------------------------------------------

    def process(self, cnp.ndarray commands, cnp.ndarray events):
        """Run a batch of commands; return the number of events written.

        ``commands`` is an array of ``COMMAND_DTYPE`` (its ``symbol`` field is
        ignored here), ``events`` an array of ``EVENT_DTYPE`` to write into.
        Stops early, at a command boundary, when the next command's worst case
        might not fit in ``events``; ``commands_processed`` then says how many
        were consumed.
        """
        cdef Py_ssize_t n = checked_rows(commands, COMMAND_DTYPE, "commands", "COMMAND_DTYPE", False)
        cdef Py_ssize_t cap = checked_rows(events, EVENT_DTYPE, "events", "EVENT_DTYPE", True)
        cdef const CommandRecord* cmds = <const CommandRecord*>cnp.PyArray_DATA(commands)
        cdef EventRecord* out = <EventRecord*>cnp.PyArray_DATA(events)
        cdef Py_ssize_t i = 0, written = 0, r
        self.commands_processed = 0
        while i < n:
            r = self._step(&cmds[i], out + written, cap - written, <int32_t>i)
            if r < 0:
                if i == 0:
                    raise ValueError(
                        f"events has room for {cap} events but the first command may "
                        f"need {self._event_bound(&cmds[0])}; pass a larger array")
                break
            written += r
            i += 1
        self.commands_processed = i
        return written

    # -------------------------------------------------------------------------
    # Queries
    # -------------------------------------------------------------------------

    def __len__(self):
        return self.n_orders

    def best_bid(self):
        """``(price, total_qty)`` of the best bid, or ``None``."""
        cdef Level* lvl = self._best(SIDE_BUY)
        return None if lvl == NULL else (lvl.price, lvl.total)

    def best_ask(self):
        """``(price, total_qty)`` of the best ask, or ``None``."""
        cdef Level* lvl = self._best(SIDE_SELL)
        return None if lvl == NULL else (lvl.price, lvl.total)

    cdef list _side_depth(self, Ladder* l, Py_ssize_t levels):
        cdef list out = []
        cdef Py_ssize_t i = l.n - 1
        cdef Level* lvl
        while i >= 0 and len(out) < levels:
            lvl = &self.level_pool[l.items[i].level]
            out.append((lvl.price, lvl.total, lvl.count))
            i -= 1
        return out

    def depth(self, Py_ssize_t levels=10):
        """``(bids, asks)``: up to ``levels`` of ``(price, total_qty, order_count)``, best first."""
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        return self._side_depth(&self.bids, levels), self._side_depth(&self.asks, levels)

    def orders(self):
        """Resting orders as ``(order_id, side, price, open_qty, account)``.

        Bids best price first, then asks best price first; FIFO within a level.
        """
        return [r[:5] for r in self.resting()]

    def resting(self):
        """Every resting order with all it carries, in :meth:`orders` order.

        ``(order_id, side, price, open_qty, account, stp, post_only)``: what a
        snapshot needs to rebuild the book exactly (adding these orders in
        this order to an empty book gives the same queues and state hash,
        and a later replace sees the same STP mode and post-only flag).
        """
        cdef list out = []
        cdef Ladder* l
        cdef Py_ssize_t i
        cdef idx_t oi
        cdef Order* o
        cdef int s
        for s in range(2):
            l = &self.bids if s == 0 else &self.asks
            i = l.n - 1
            while i >= 0:
                oi = self.level_pool[l.items[i].level].head
                while oi != NIL:
                    o = &self.order_pool[oi]
                    out.append((o.id, o.side, o.price, o.qty, o.account, o.stp, o.post_only))
                    oi = o.next
                i -= 1
        return out

    def state_hash(self):
        """A deterministic 64-bit digest of the resting book (docs/matching.md)."""
        cdef uint64_t h = HASH_SEED
        cdef Ladder* l
        cdef Py_ssize_t i
        cdef idx_t oi
        cdef Order* o
        cdef int s
        for s in range(2):
            l = &self.bids if s == 0 else &self.asks
            i = l.n - 1
            while i >= 0:
                oi = self.level_pool[l.items[i].level].head
                while oi != NIL:
                    o = &self.order_pool[oi]
                    h = _fold(h, o.side)
                    h = _fold(h, <uint64_t>o.price)
                    h = _fold(h, <uint64_t>o.id)
                    h = _fold(h, <uint64_t>o.qty)
                    oi = o.next
                i -= 1
        return _fold(h, <uint64_t>self.n_orders)

    @property
    def nbytes(self):
        """Bytes of C memory the book holds (pools, indexes, scratch buffers)."""
        return (self.order_cap * sizeof(Order) + self.level_cap * sizeof(Level)
                + (self.oid_map.mask + 1 + self.bid_map.mask + 1 + self.ask_map.mask + 1)
                * sizeof(MapSlot)
                + (self.bids.cap + self.asks.cap) * sizeof(LadderItem)
                + self.touched_cap * sizeof(Touch) + self.own_cap * sizeof(EventRecord))

    @property
    def level_count(self):
        """Number of live price levels on both sides."""
        return self.bids.n + self.asks.n

    def __repr__(self):
        return (f"OrderBook(symbol_id={self.symbol_id}, orders={self.n_orders}, "
                f"best_bid={self.best_bid()}, best_ask={self.best_ask()})")


# =============================================================================
# The engine: routes commands to books by symbol id
# =============================================================================

@cython.final
cdef class Engine:
    """Several order books, addressed by symbol id (0 .. 2**20 - 1)."""

    cdef list _books                 # index = symbol id; None where no book
    cdef readonly Py_ssize_t commands_processed

    def __cinit__(self):
        self._books = []

    def add_book(self, int32_t symbol_id, px_t min_price, px_t max_price, px_t tick=1,
                 qty_t lot=1, **options):
        """Create the book of ``symbol_id`` (options as for :class:`OrderBook`)."""
        if not (0 <= symbol_id < (1 << 20)):
            raise ValueError(f"symbol_id must be in 0 .. 2**20 - 1, got {symbol_id}")
        if symbol_id < len(self._books) and self._books[symbol_id] is not None:
            raise ValueError(f"symbol {symbol_id} already has a book")
        book = OrderBook(min_price, max_price, tick, lot, symbol_id, **options)
        while len(self._books) <= symbol_id:
            self._books.append(None)
        self._books[symbol_id] = book
        return book

    def book(self, int32_t symbol_id):
        """The book of ``symbol_id``; ``KeyError`` if there is none."""
        if 0 <= symbol_id < len(self._books) and self._books[symbol_id] is not None:
            return self._books[symbol_id]
        raise KeyError(f"no book for symbol {symbol_id}")

    def symbols(self):
        """Symbol ids that have a book, ascending."""
        return [i for i, b in enumerate(self._books) if b is not None]

    def process(self, cnp.ndarray commands, cnp.ndarray events):
        """Run a batch of commands, each routed by its ``symbol`` field.

        Same contract as :meth:`OrderBook.process`; a command for a symbol
        without a book is rejected with ``UNKNOWN_SYMBOL``.
        """
        cdef Py_ssize_t n = checked_rows(commands, COMMAND_DTYPE, "commands", "COMMAND_DTYPE", False)
        cdef Py_ssize_t cap = checked_rows(events, EVENT_DTYPE, "events", "EVENT_DTYPE", True)
        cdef const CommandRecord* cmds = <const CommandRecord*>cnp.PyArray_DATA(commands)
        cdef EventRecord* out = <EventRecord*>cnp.PyArray_DATA(events)
        cdef Py_ssize_t i = 0, written = 0, r, nbooks = len(self._books)
        cdef const CommandRecord* c
        cdef object obj
        cdef OrderBook book
        cdef EventRecord* e
        self.commands_processed = 0
        while i < n:
            c = &cmds[i]
            obj = self._books[c.symbol] if 0 <= c.symbol < nbooks else None
            if obj is None:
                if written >= cap:
                    break
                e = &out[written]
                memset(e, 0, sizeof(EventRecord))
                e.kind = EV_REJECTED
                e.order_id = c.order_id
                e.symbol = c.symbol
                e.cmd = <int32_t>i
                e.reason = R_UNKNOWN_SYMBOL
                written += 1
                i += 1
                continue
            book = <OrderBook>obj
            r = book._step(c, out + written, cap - written, <int32_t>i)
            if r < 0:
                if i == 0:
                    raise ValueError(
                        f"events has room for {cap} events but the first command may "
                        f"need {book._event_bound(c)}; pass a larger array")
                break
            written += r
            i += 1
        if i == 0 and n > 0 and cap == 0:
            raise ValueError("events has room for 0 events; pass a larger array")
        self.commands_processed = i
        return written
