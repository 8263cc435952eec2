# cython: language_level=3
"""The order gate: pre-trade checks, id mapping and event routing in C.

The daemon's one thread runs, per batch::

    for each order message:  gate.admit(slot, msg, now_ns, commands, i)
    engine.process(commands[:k], events)
    gate.apply(events, n, routes)          # routes[j] = (slot, cl_ord_id) of events[j]

The data structures are specified in _gate.pxd.  ``admit`` and ``apply`` read
their arguments in their ``def`` wrappers (the only Python C-API they use, apart
from reading the message's attributes), make room for one more order when the
message can create one, and then hand C values to ``_admit_*`` / ``_apply``,
which never fail, never allocate and touch no Python object.
"""

cimport cython
cimport numpy as cnp
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memset

from lltrade._book cimport (
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_FILL,
    EV_LEVEL,
    EV_REJECTED,
    OP_ADD,
    OP_CANCEL,
    OP_MASS_CANCEL,
    OP_REDUCE,
    OP_REPLACE,
    R_DUPLICATE_ORDER_ID,
    R_UNKNOWN_ORDER,
    R_UNKNOWN_SYMBOL,
    SIDE_BUY,
    SIDE_SELL,
)
from lltrade._arrays cimport checked_routes, checked_rows
from lltrade._cmap cimport (
    MAP_EMPTY,
    _grow,
    _map_del,
    _map_free,
    _map_get,
    _map_init,
    _map_put,
    _map_reserve,
)

from lltrade._book import COMMAND_DTYPE, EVENT_DTYPE
from lltrade.protocol import Cancel, MassCancel, NewOrder, Reduce, Replace

cnp.import_array()

cdef object _COMMAND_DTYPE = COMMAND_DTYPE
cdef object _EVENT_DTYPE = EVENT_DTYPE
cdef object _NewOrder = NewOrder
cdef object _Cancel = Cancel
cdef object _Replace = Replace
cdef object _Reduce = Reduce
cdef object _MassCancel = MassCancel

cdef Py_ssize_t INDEX_LIMIT = 0x7FFFFFF0     # pools are addressed by int32
cdef Py_ssize_t MAX_SESSIONS = 1 << 20
cdef int64_t SYMBOL_ID_MAX = 0x7FFFFFFF
cdef uint64_t TOKEN = 1000000000              # one message, in bucket units (1e-9 message)


# =============================================================================
# Small helpers of the per-message path
# =============================================================================

cdef inline uint8_t _u8(long v, uint8_t bad) noexcept nogil:
    """``v`` if it fits a uint8 field, else ``bad`` (a value the engine rejects)."""
    return <uint8_t>v if 0 <= v <= 255 else bad


cdef inline uint64_t _abs64(int64_t v) noexcept nogil:
    """|v| without overflow (|INT64_MIN| = 2**63)."""
    return <uint64_t>0 - <uint64_t>v if v < 0 else <uint64_t>v


cdef inline bint _take_token(GateSession* s, int64_t now_ns) noexcept nogil:
    """Refill the session's bucket up to ``now_ns``, then take one message from it.

    Exact integer arithmetic: ``rate`` bucket units arrive per nanosecond and a
    message costs 10**9 of them, so the bucket gains exactly msg_rate_per_s
    messages per second, capped at msg_burst.  A ``now_ns`` earlier than the
    last one refills nothing (the clock is the caller's, assumed monotonic).
    """
    cdef u128 add, room
    if not s.clock_started:
        s.clock_started = 1
        s.last_ns = now_ns
    elif now_ns > s.last_ns:
        # The true difference is below 2**64, so the unsigned one is exact.
        add = <u128>(<uint64_t>now_ns - <uint64_t>s.last_ns) * <u128>s.rate
        room = s.capacity - s.tokens
        s.tokens = s.capacity if add >= room else s.tokens + add
        s.last_ns = now_ns
    if s.tokens < TOKEN:
        return False
    s.tokens -= TOKEN
    return True


cdef inline bint _outside_collar(const GateSymbol* sym, px_t price) noexcept nogil:
    """|price - reference_price| > collar (never, without a collar)."""
    cdef uint64_t d
    if sym.collar == 0:
        return False
    if price >= sym.reference_price:
        d = <uint64_t>price - <uint64_t>sym.reference_price
    else:
        d = <uint64_t>sym.reference_price - <uint64_t>price
    return d > sym.collar


cdef inline bint _over_notional(const GateSymbol* sym, const GateAccount* a, px_t price,
                                qty_t qty) noexcept nogil:
    """|price| * qty above the symbol's or the account's limit (128-bit product)."""
    cdef uint64_t limit = sym.max_notional
    if a.max_notional != 0 and (limit == 0 or a.max_notional < limit):
        limit = a.max_notional
    if limit == 0 or qty <= 0:
        return False
    return <u128>_abs64(price) * <u128><uint64_t>qty > <u128>limit


cdef inline void _command(CommandRecord* c, uint8_t op, oid_t order_id, int32_t symbol,
                          acct_t account) noexcept nogil:
    memset(c, 0, sizeof(CommandRecord))
    c.op = op
    c.order_id = order_id
    c.symbol = symbol
    c.account = account
    c.protection = -1


# =============================================================================
# Argument checks at the def boundary
# =============================================================================

cdef CommandRecord* _command_rows(cnp.ndarray commands, Py_ssize_t i, Py_ssize_t need) except NULL:
    """Rows ``i .. i + need`` of ``commands``, checked."""
    cdef Py_ssize_t n = checked_rows(commands, _COMMAND_DTYPE, "commands", "COMMAND_DTYPE", True)
    if i < 0 or i > n - need:
        raise ValueError(f"commands has {n} rows: no room for {need} at i={i}")
    # A zero-row write may point one past the end; it is never dereferenced.
    return <CommandRecord*>cnp.PyArray_DATA(commands) + i


cdef inline int64_t _limit(object value, str name) except -1:
    """A quantity or notional limit: ``None`` or 0 = no limit (0 returned), else > 0."""
    if value is None:
        return 0
    cdef int64_t v = value
    if v < 0:
        raise ValueError(f"{name} must be >= 0 (0 or None: no limit), got {value!r}")
    return v


# =============================================================================
# The gate
# =============================================================================

@cython.final
cdef class OrderGate:
    """Pre-trade checks and order-id mapping between the sessions and the Engine.

    One instance serves every session and symbol of the daemon.  Sessions are
    addressed by a slot number the daemon chooses; orders by the session's
    ``cl_ord_id`` on the way in and by the engine order id the gate assigns
    (a gate-wide counter) on the way out.  All state is C structs and C hash
    maps.  :meth:`admit` (per message) and :meth:`apply` (per batch of engine
    events) are the two calls of the order path.

    Parameters
    ----------
    max_sessions : int
        Number of session slots, ``0 .. max_sessions - 1`` (1 .. 2**20).
    capacity : int
        Orders to preallocate room for; the pool and the maps grow by doubling
        (outside the per-message C code) when they fill.
    first_order_id : int
        The first engine order id to assign (1 for a fresh engine; after a
        recovery, one more than the highest id the journal used).
    """

    def __cinit__(self, Py_ssize_t max_sessions=1024, *, Py_ssize_t capacity=1024,
                  int64_t first_order_id=1):
        if not (1 <= max_sessions <= MAX_SESSIONS):
            raise ValueError(f"max_sessions must be in 1 .. {MAX_SESSIONS}, got {max_sessions}")
        if not (1 <= capacity <= INDEX_LIMIT):
            raise ValueError(f"capacity must be in 1 .. {INDEX_LIMIT}, got {capacity}")
        if first_order_id < 1:
            raise ValueError(f"first_order_id must be in 1 .. 2**63 - 1, got {first_order_id}")
        self.sessions = <GateSession*>_grow(NULL, max_sessions, sizeof(GateSession))
        memset(self.sessions, 0, <size_t>max_sessions * sizeof(GateSession))
        self.max_sessions = max_sessions
        self.free_order = MAP_EMPTY
        self.retired = MAP_EMPTY
        self.next_oid = <uint64_t>first_order_id
        self._grow_orders(capacity)
        _map_init(&self.oid_map, capacity * 2)
        self.accounts = <GateAccount*>_grow(NULL, 16, sizeof(GateAccount))
        self.account_cap = 16
        _map_init(&self.account_map, 32)
        self.symbols = <GateSymbol*>_grow(NULL, 16, sizeof(GateSymbol))
        self.symbol_cap = 16
        _map_init(&self.symbol_map, 32)
        self.positions = <int64_t*>_grow(NULL, 64, sizeof(int64_t))
        self.position_cap = 64
        _map_init(&self.position_map, 128)

    def __dealloc__(self):
        cdef Py_ssize_t k
        if self.sessions != NULL:
            for k in range(self.max_sessions):
                _map_free(&self.sessions[k].orders)
        PyMem_RawFree(self.sessions)
        PyMem_RawFree(self.accounts)
        PyMem_RawFree(self.symbols)
        PyMem_RawFree(self.orders)
        PyMem_RawFree(self.positions)
        _map_free(&self.account_map)
        _map_free(&self.symbol_map)
        _map_free(&self.oid_map)
        _map_free(&self.position_map)

    # -------------------------------------------------------------------------
    # Lookups and growth (def boundary only)
    # -------------------------------------------------------------------------

    cdef GateSession* _session(self, Py_ssize_t slot) except NULL:
        if not (0 <= slot < self.max_sessions):
            raise ValueError(f"slot must be in 0 .. {self.max_sessions - 1}, got {slot}")
        return &self.sessions[slot]

    cdef Py_ssize_t _account_index(self, int64_t account_id) except -1:
        cdef int32_t ai = _map_get(&self.account_map, account_id)
        if ai == MAP_EMPTY:
            raise ValueError(f"unknown account_id {account_id}")
        return ai

    cdef Py_ssize_t _symbol_index(self, int64_t symbol_id) except -1:
        cdef int32_t si = _map_get(&self.symbol_map, symbol_id)
        if si == MAP_EMPTY:
            raise ValueError(f"unknown symbol_id {symbol_id}")
        return si

    cdef int _grow_orders(self, Py_ssize_t new_cap) except -1:
        cdef Py_ssize_t k
        if new_cap > INDEX_LIMIT:
            new_cap = INDEX_LIMIT
        if new_cap <= self.order_cap:
            raise MemoryError(f"the order gate holds {self.order_cap} orders, its maximum")
        self.orders = <GateOrder*>_grow(self.orders, new_cap, sizeof(GateOrder))
        for k in range(new_cap - 1, self.order_cap - 1, -1):
            self.orders[k].state = ORDER_FREE
            self.orders[k].next = self.free_order
            self.free_order = <int32_t>k
        self.order_cap = new_cap
        return 0

    cdef int _reserve_new_order(self, GateSession* s) except -1:
        """Room for one more order in the pool, the maps and the positions (``s`` may be NULL)."""
        if self.free_order == MAP_EMPTY:
            self._grow_orders(self.order_cap * 2)
        _map_reserve(&self.oid_map, self.oid_map.count + 1)
        if s != NULL:
            _map_reserve(&s.orders, s.orders.count + 1)
        if self.n_positions >= self.position_cap:
            self.positions = <int64_t*>_grow(self.positions, self.position_cap * 2,
                                             sizeof(int64_t))
            self.position_cap *= 2
        _map_reserve(&self.position_map, self.n_positions + 1)
        return 0

    cdef void _flush(self) noexcept:
        """Take the orders finished by the last apply out of the maps and the pool."""
        cdef int32_t oi = self.retired, nxt
        cdef GateOrder* o
        while oi != MAP_EMPTY:
            o = &self.orders[oi]
            nxt = o.next
            _map_del(&self.oid_map, o.engine_oid)
            if o.slot >= 0:
                _map_del(&self.sessions[o.slot].orders, o.cl_ord_id)
            o.state = ORDER_FREE
            o.next = self.free_order
            self.free_order = oi
            self.n_orders -= 1
            oi = nxt
        self.retired = MAP_EMPTY

    # -------------------------------------------------------------------------
    # Set-up
    # -------------------------------------------------------------------------

    def add_symbol(self, int64_t symbol_id, *, int64_t tick, int64_t lot,
                   int64_t reference_price, int64_t collar_ticks, max_order_qty,
                   max_notional):
        """Register a symbol and its pre-trade limits.

        Parameters
        ----------
        symbol_id : int
            1 .. 2**31 - 1; the id of its book in the Engine.
        tick, lot : int
            The book's price and quantity grids (positive).  The engine checks
            prices and quantities against them; the collar is counted in ticks.
        reference_price : int
            Centre of the price collar.
        collar_ticks : int
            A NewOrder or Replace price more than ``collar_ticks * tick`` away
            from ``reference_price`` is rejected with ``PRICE_COLLAR``; 0 = no
            collar.
        max_order_qty : int or None
            Largest order quantity (``MAX_ORDER_QTY``); None or 0 = no limit.
        max_notional : int or None
            Largest ``|price| * qty`` of one order (``MAX_NOTIONAL``), computed
            in 128 bits; None or 0 = no limit.
        """
        cdef GateSymbol* sym
        cdef object collar
        self._flush()
        if not (1 <= symbol_id <= SYMBOL_ID_MAX):
            raise ValueError(f"symbol_id must be in 1 .. 2**31 - 1, got {symbol_id}")
        if _map_get(&self.symbol_map, symbol_id) != MAP_EMPTY:
            raise ValueError(f"symbol {symbol_id} is already registered")
        if tick <= 0:
            raise ValueError(f"tick must be positive, got {tick}")
        if lot <= 0:
            raise ValueError(f"lot must be positive, got {lot}")
        if collar_ticks < 0:
            raise ValueError(f"collar_ticks must be >= 0, got {collar_ticks}")
        cdef int64_t qty_limit = _limit(max_order_qty, "max_order_qty")
        cdef int64_t notional_limit = _limit(max_notional, "max_notional")
        if self.n_symbols >= INDEX_LIMIT:
            raise MemoryError("too many symbols")
        if self.n_symbols == self.symbol_cap:
            self.symbols = <GateSymbol*>_grow(self.symbols, self.symbol_cap * 2, sizeof(GateSymbol))
            self.symbol_cap *= 2
        _map_reserve(&self.symbol_map, self.n_symbols + 1)
        collar = min(<object>collar_ticks * <object>tick, 2**64 - 1)
        sym = &self.symbols[self.n_symbols]
        memset(sym, 0, sizeof(GateSymbol))
        sym.id = <int32_t>symbol_id
        sym.tick = tick
        sym.lot = lot
        sym.reference_price = reference_price
        sym.collar = collar
        sym.max_order_qty = qty_limit if qty_limit else INT64_MAX
        sym.max_notional = <uint64_t>notional_limit
        _map_put(&self.symbol_map, symbol_id, <int32_t>self.n_symbols)
        self.n_symbols += 1

    def set_reference_price(self, int64_t symbol_id, int64_t reference_price):
        """Move the centre of a symbol's price collar (e.g. to the last close)."""
        self._flush()
        self.symbols[self._symbol_index(symbol_id)].reference_price = reference_price

    def add_account(self, int64_t account_id, *, int64_t max_open_orders,
                    int64_t max_position, int64_t msg_rate_per_s, int64_t msg_burst,
                    max_order_qty=None, max_notional=None):
        """Register an account and its limits.

        Parameters
        ----------
        account_id : int
            1 .. 2**63 - 1; written into the ``account`` field of its commands
            (the engine's self-trade prevention and mass cancel use it).
        max_open_orders : int
            Most orders open at once over all symbols, counting orders admitted
            but not yet finished (``MAX_OPEN_ORDERS``); >= 0.
        max_position : int
            Largest ``|position + signed order qty|`` per symbol, where the
            position is the account's net filled quantity (``MAX_POSITION``); >= 0.
        msg_rate_per_s, msg_burst : int
            Each session of the account may send ``msg_burst`` order messages
            at once and ``msg_rate_per_s`` per second after that
            (``RATE_LIMITED``); both >= 1.
        max_order_qty, max_notional : int or None
            Account-wide limits applied on top of the symbol's; None or 0 = none.
        """
        cdef GateAccount* a
        self._flush()
        if account_id < 1:
            raise ValueError(f"account_id must be in 1 .. 2**63 - 1, got {account_id}")
        if _map_get(&self.account_map, account_id) != MAP_EMPTY:
            raise ValueError(f"account {account_id} is already registered")
        if max_open_orders < 0:
            raise ValueError(f"max_open_orders must be >= 0, got {max_open_orders}")
        if max_position < 0:
            raise ValueError(f"max_position must be >= 0, got {max_position}")
        if msg_rate_per_s < 1:
            raise ValueError(f"msg_rate_per_s must be >= 1, got {msg_rate_per_s}")
        if msg_burst < 1:
            raise ValueError(f"msg_burst must be >= 1, got {msg_burst}")
        cdef int64_t qty_limit = _limit(max_order_qty, "max_order_qty")
        cdef int64_t notional_limit = _limit(max_notional, "max_notional")
        if self.n_accounts >= INDEX_LIMIT:
            raise MemoryError("too many accounts")
        if self.n_accounts == self.account_cap:
            self.accounts = <GateAccount*>_grow(self.accounts, self.account_cap * 2,
                                                sizeof(GateAccount))
            self.account_cap *= 2
        _map_reserve(&self.account_map, self.n_accounts + 1)
        a = &self.accounts[self.n_accounts]
        memset(a, 0, sizeof(GateAccount))
        a.id = account_id
        a.max_open_orders = max_open_orders
        a.max_position = max_position
        a.max_order_qty = qty_limit if qty_limit else INT64_MAX
        a.max_notional = <uint64_t>notional_limit
        a.msg_rate_per_s = <uint64_t>msg_rate_per_s
        a.msg_burst = <uint64_t>msg_burst
        _map_put(&self.account_map, account_id, <int32_t>self.n_accounts)
        self.n_accounts += 1

    def open_session(self, Py_ssize_t slot, int64_t account_id, *, bint admin=False):
        """Start a session in ``slot`` for a logged-on account.

        Its rate-limit bucket starts full.  ``admin`` sets the admin role
        (see :meth:`set_admin`).
        """
        cdef GateSession* s = self._session(slot)
        cdef Py_ssize_t ai = self._account_index(account_id)
        cdef GateAccount* a = &self.accounts[ai]
        self._flush()
        if s.is_open:
            raise ValueError(f"slot {slot} already has an open session")
        _map_init(&s.orders, 16)
        s.account = <int32_t>ai
        s.rate = a.msg_rate_per_s
        s.capacity = <u128>a.msg_burst * TOKEN
        s.tokens = s.capacity
        s.last_ns = 0
        s.clock_started = 0
        s.is_admin = admin
        s.is_open = 1

    def close_session(self, Py_ssize_t slot):
        """End the session in ``slot``; return the orders it leaves behind.

        Its open orders stay in the engine (and keep counting for the
        account) unless the daemon cancels them; their events route to slot
        -1 (nobody) from now on.  For cancel-on-disconnect, send a cancel
        (reason ``DISCONNECT``) for each engine order id returned.

        Returns
        -------
        list of (int, int, int)
            ``(cl_ord_id, engine_order_id, symbol_id)`` of each open order,
            by engine order id.
        """
        cdef GateSession* s = self._session(slot)
        cdef list left
        cdef Py_ssize_t k
        self._flush()
        if not s.is_open:
            raise ValueError(f"slot {slot} has no open session")
        left = self._live(s)
        for k in range(<Py_ssize_t>s.orders.mask + 1):
            if s.orders.slots[k].val != MAP_EMPTY:
                self.orders[s.orders.slots[k].val].slot = -1
        _map_free(&s.orders)
        s.is_open = 0
        s.is_admin = 0
        return left

    def set_admin(self, Py_ssize_t slot, bint admin):
        """Give or take the admin role of the session in ``slot``.

        An admin session may mass-cancel any account's orders.
        """
        cdef GateSession* s = self._session(slot)
        if not s.is_open:
            raise ValueError(f"slot {slot} has no open session")
        s.is_admin = admin

    def halt(self, int64_t symbol_id, bint halted):
        """Halt (True) or resume (False) a symbol: a halt refuses NewOrder and Replace.

        Cancel, Reduce and MassCancel still pass, and resting orders stay.
        """
        self._flush()
        self.symbols[self._symbol_index(symbol_id)].halted = halted

    def set_kill_switch(self, bint active, *, int64_t account_id=0):
        """Engage or release a kill switch: NewOrder and Replace are refused.

        Parameters
        ----------
        active : bool
            True engages, False releases.
        account_id : int
            0 for the global switch (every account), else that account's own
            switch.  The two are independent: an order is refused while either
            is engaged.  Cancelling what rests is the daemon's job (a mass
            cancel with reason ``KILL_SWITCH``).
        """
        self._flush()
        if account_id == 0:
            self.kill_switch = active
        else:
            self.accounts[self._account_index(account_id)].killed = active

    # -------------------------------------------------------------------------
    # The per-message path
    # -------------------------------------------------------------------------

    def admit(self, Py_ssize_t slot, object msg, int64_t now_ns, cnp.ndarray commands,
              Py_ssize_t i):
        """Check one order message; on success write its engine command(s).

        Parameters
        ----------
        slot : int
            The sending session.
        msg : NewOrder, Cancel, Replace, Reduce or MassCancel
            A decoded :mod:`lltrade.protocol` message.
        now_ns : int
            Receive time in nanoseconds for the rate limit (any monotonic
            clock; the gate never reads one itself).
        commands : numpy.ndarray
            A ``COMMAND_DTYPE`` array, the batch being built.
        i : int
            Row to write.  A MassCancel with symbol 0 writes one row per
            registered symbol from ``i`` on: keep :attr:`max_rows` rows free.

        Returns
        -------
        int
            0 when the message was admitted: :attr:`rows_written` rows (1, or
            one per symbol for an all-symbols MassCancel) were written from
            ``commands[i]``.  Otherwise the reject reason, an
            :class:`lltrade.Reason` or :class:`lltrade.protocol.SessionReason`
            value, and nothing was written.

        Notes
        -----
        Checks, first failure wins:

        1. ``NOT_LOGGED_ON``: no open session in ``slot`` (uses no token).
        2. ``RATE_LIMITED``: the session's token bucket is empty.  Every other
           outcome, admitted or rejected, uses one token.
        3. ``KILL_SWITCH_ACTIVE`` (NewOrder, Replace): global or account switch.
        4. NewOrder: ``SYMBOL_HALTED``, ``UNKNOWN_SYMBOL``,
           ``DUPLICATE_ORDER_ID`` (``cl_ord_id`` open in this session),
           ``PRICE_COLLAR``, ``MAX_ORDER_QTY``, ``MAX_NOTIONAL``,
           ``MAX_OPEN_ORDERS``, ``MAX_POSITION``.
        5. Replace: ``UNKNOWN_ORDER``, then (the symbol is the order's)
           ``SYMBOL_HALTED``, ``PRICE_COLLAR``, ``MAX_ORDER_QTY``,
           ``MAX_NOTIONAL`` on the new price and quantity.
        6. Cancel, Reduce: ``UNKNOWN_ORDER``.
        7. MassCancel: ``UNKNOWN_SYMBOL`` (symbol 0 = every symbol),
           ``NOT_AUTHORISED`` (another account without the admin role).

        A quantity <= 0 passes the quantity checks; the engine rejects it
        (``INVALID_QTY``), as it checks ticks, lots, bands and enum fields.

        Raises
        ------
        ValueError
            ``slot`` out of range, or no room in ``commands``.
        TypeError
            ``msg`` is not an order message, or ``commands`` has the wrong dtype.
        OverflowError
            A NewOrder when engine order ids are exhausted (after 2**63 - 1).
        """
        cdef GateSession* s = self._session(slot)
        cdef object t = type(msg)
        cdef OrderMsg m
        cdef Py_ssize_t need = 1
        cdef CommandRecord* out
        if self.retired != MAP_EMPTY:
            self._flush()
        self.rows_written = 0
        memset(&m, 0, sizeof(OrderMsg))
        if t is _NewOrder:
            m.op = OP_ADD
            m.cl_ord_id = msg.cl_ord_id
            m.symbol = msg.symbol
            m.side = _u8(msg.side, 0)
            m.price = msg.price
            m.qty = msg.qty
            m.tif = _u8(msg.tif, 255)
            m.post_only = 1 if msg.post_only else 0
            m.stp = _u8(msg.stp, 255)
        elif t is _Cancel:
            m.op = OP_CANCEL
            m.cl_ord_id = msg.cl_ord_id
        elif t is _Replace:
            m.op = OP_REPLACE
            m.cl_ord_id = msg.cl_ord_id
            m.price = msg.price
            m.qty = msg.qty
        elif t is _Reduce:
            m.op = OP_REDUCE
            m.cl_ord_id = msg.cl_ord_id
            m.qty = msg.qty
        elif t is _MassCancel:
            m.op = OP_MASS_CANCEL
            m.symbol = msg.symbol
            m.account = msg.account
            if m.symbol == 0:
                need = self.n_symbols
        else:
            raise TypeError(f"msg must be a NewOrder, Cancel, Replace, Reduce or MassCancel, "
                            f"got {t.__name__}")
        out = _command_rows(commands, i, need)
        return self._admit_msg(s, <int32_t>slot, &m, now_ns, out)

    cdef int _admit_msg(self, GateSession* s, int32_t slot, const OrderMsg* m, int64_t now_ns,
                        CommandRecord* out) except -1:
        """:meth:`admit` once the message is C values and ``out`` has room (the daemon's
        C read path, ``lltrade._inbound``, calls this directly).  0 or a reason."""
        if not s.is_open:
            return SR_NOT_LOGGED_ON
        if m.op == OP_ADD:
            if self.next_oid > <uint64_t>INT64_MAX:
                raise OverflowError("engine order ids are exhausted (2**63 - 1 used)")
            self._reserve_new_order(s)
            return self._admit_new(s, slot, m, now_ns, out)
        if m.op == OP_MASS_CANCEL:
            return self._admit_mass_cancel(s, m, now_ns, out)
        return self._admit_change(s, m, now_ns, out)

    cdef uint16_t _admit_new(self, GateSession* s, int32_t slot, const OrderMsg* m,
                             int64_t now_ns, CommandRecord* out) noexcept:
        cdef GateAccount* a
        cdef GateSymbol* sym
        cdef GateOrder* o
        cdef int32_t si, oi, pi
        cdef int64_t key, pos = 0
        cdef i128 after
        if not _take_token(s, now_ns):
            return SR_RATE_LIMITED
        a = &self.accounts[s.account]
        if self.kill_switch or a.killed:
            return R_KILL_SWITCH_ACTIVE
        si = _map_get(&self.symbol_map, m.symbol)
        if si == MAP_EMPTY:
            return R_UNKNOWN_SYMBOL
        sym = &self.symbols[si]
        if sym.halted:
            return R_SYMBOL_HALTED
        if _map_get(&s.orders, m.cl_ord_id) != MAP_EMPTY:
            return R_DUPLICATE_ORDER_ID
        if _outside_collar(sym, m.price):
            return R_PRICE_COLLAR
        if m.qty > sym.max_order_qty or m.qty > a.max_order_qty:
            return R_MAX_ORDER_QTY
        if _over_notional(sym, a, m.price, m.qty):
            return R_MAX_NOTIONAL
        if a.open_orders >= a.max_open_orders:
            return R_MAX_OPEN_ORDERS
        key = (<int64_t>s.account << 32) | si
        pi = _map_get(&self.position_map, key)
        if pi != MAP_EMPTY:
            pos = self.positions[pi]
        if m.qty > 0 and (m.side == SIDE_BUY or m.side == SIDE_SELL):
            after = <i128>pos + (<i128>m.qty if m.side == SIDE_BUY else -<i128>m.qty)
            if after > <i128>a.max_position or -after > <i128>a.max_position:
                return R_MAX_POSITION
        # Admitted: room for all of this was made by _reserve_new_order.
        if pi == MAP_EMPTY:
            pi = <int32_t>self.n_positions
            self.positions[pi] = 0
            self.n_positions += 1
            _map_put(&self.position_map, key, pi)
        oi = self.free_order
        o = &self.orders[oi]
        self.free_order = o.next
        o.engine_oid = <oid_t>self.next_oid
        o.cl_ord_id = m.cl_ord_id
        o.slot = slot
        o.account = s.account
        o.symbol = si
        o.position = pi
        o.next = MAP_EMPTY
        o.state = ORDER_PENDING
        self.next_oid += 1
        self.n_orders += 1
        a.open_orders += 1
        _map_put(&s.orders, o.cl_ord_id, oi)
        _map_put(&self.oid_map, o.engine_oid, oi)
        _command(out, OP_ADD, o.engine_oid, sym.id, a.id)
        out.side = m.side
        out.price = m.price
        out.qty = m.qty
        out.tif = m.tif
        out.post_only = m.post_only
        out.stp = m.stp
        self.rows_written = 1
        return 0

    cdef uint16_t _admit_change(self, GateSession* s, const OrderMsg* m, int64_t now_ns,
                                CommandRecord* out) noexcept:
        """Cancel, Replace or Reduce of one of the session's open orders."""
        cdef GateAccount* a
        cdef GateSymbol* sym
        cdef GateOrder* o
        cdef int32_t oi
        if not _take_token(s, now_ns):
            return SR_RATE_LIMITED
        a = &self.accounts[s.account]
        if m.op == OP_REPLACE and (self.kill_switch or a.killed):
            return R_KILL_SWITCH_ACTIVE
        oi = _map_get(&s.orders, m.cl_ord_id)
        if oi == MAP_EMPTY:
            return R_UNKNOWN_ORDER
        o = &self.orders[oi]
        sym = &self.symbols[o.symbol]
        if m.op == OP_REPLACE:
            if sym.halted:
                return R_SYMBOL_HALTED
            if _outside_collar(sym, m.price):
                return R_PRICE_COLLAR
            if m.qty > sym.max_order_qty or m.qty > a.max_order_qty:
                return R_MAX_ORDER_QTY
            if _over_notional(sym, a, m.price, m.qty):
                return R_MAX_NOTIONAL
        _command(out, m.op, o.engine_oid, sym.id, a.id)
        out.price = m.price
        out.qty = m.qty
        self.rows_written = 1
        return 0

    cdef uint16_t _admit_mass_cancel(self, GateSession* s, const OrderMsg* m, int64_t now_ns,
                                     CommandRecord* out) noexcept:
        cdef GateAccount* a
        cdef int32_t si
        cdef acct_t target
        cdef Py_ssize_t k
        if not _take_token(s, now_ns):
            return SR_RATE_LIMITED
        a = &self.accounts[s.account]
        si = MAP_EMPTY
        if m.symbol != 0:
            si = _map_get(&self.symbol_map, m.symbol)
            if si == MAP_EMPTY:
                return R_UNKNOWN_SYMBOL
        target = m.account if m.account != 0 else a.id
        if target != a.id and not s.is_admin:
            return R_NOT_AUTHORISED
        if si != MAP_EMPTY:
            _command(out, OP_MASS_CANCEL, 0, self.symbols[si].id, target)
            self.rows_written = 1
            return 0
        for k in range(self.n_symbols):
            _command(&out[k], OP_MASS_CANCEL, 0, self.symbols[k].id, target)
        self.rows_written = self.n_symbols
        return 0

    # -------------------------------------------------------------------------
    # The per-event path
    # -------------------------------------------------------------------------

    def apply(self, cnp.ndarray events, Py_ssize_t n, cnp.ndarray routes):
        """Account for the engine's events and route each to its session.

        Parameters
        ----------
        events : numpy.ndarray
            The ``EVENT_DTYPE`` array ``Engine.process`` wrote.
        n : int
            Number of events it wrote (``events[:n]`` are read).
        routes : numpy.ndarray
            An int64 array of shape ``(>= n, 2)``; row ``j`` is set to
            ``(slot, cl_ord_id)`` of the session that must hear ``events[j]``.
            Slot -1 means nobody: ``LEVEL`` events, events without an order of
            the gate, and orders whose session has closed (their ``cl_ord_id``
            is still given; 0 when there is no order).

        Notes
        -----
        An order counts as open from its admit until its ``REJECTED`` (of the
        NewOrder itself; a rejected Cancel, Replace or Reduce leaves it open),
        its ``CANCELLED``, or a ``FILL`` leaving 0 on it.  Each ``FILL`` adds
        its quantity to the account's position in the symbol (BUY) or
        subtracts it (SELL); both events of a fill pair route to their own
        order's session.  A finished order stays findable until the gate's
        next call other than ``apply``, so when one batch's events come in
        several ``Engine.process`` calls, apply each part in turn: every event
        still routes.  Its ``cl_ord_id`` is reusable from then on.
        """
        cdef Py_ssize_t cap = checked_rows(events, _EVENT_DTYPE, "events", "EVENT_DTYPE", False)
        if not (0 <= n <= cap):
            raise ValueError(f"n must be in 0 .. {cap} (the length of events), got {n}")
        checked_routes(routes, n, True)
        self._apply(<const EventRecord*>cnp.PyArray_DATA(events), n,
                    <int64_t*>cnp.PyArray_DATA(routes))

    cdef void _finish(self, GateOrder* o, int32_t oi) noexcept:
        """The order left the engine: it no longer counts; retire it."""
        o.state = ORDER_DONE
        self.accounts[o.account].open_orders -= 1
        o.next = self.retired
        self.retired = oi

    cdef void _apply(self, const EventRecord* ev, Py_ssize_t n, int64_t* routes) noexcept:
        cdef Py_ssize_t k
        cdef const EventRecord* e
        cdef int64_t* route
        cdef int32_t oi
        cdef GateOrder* o
        cdef int64_t* pos
        cdef i128 after
        for k in range(n):
            e = &ev[k]
            route = &routes[2 * k]
            route[0] = -1
            route[1] = 0
            if e.kind == EV_LEVEL:
                continue
            oi = _map_get(&self.oid_map, e.order_id)
            if oi == MAP_EMPTY:
                continue
            o = &self.orders[oi]
            route[0] = o.slot
            route[1] = o.cl_ord_id
            if o.state == ORDER_DONE:
                continue                  # e.g. a Cancel rejected after its order filled
            if e.kind == EV_FILL:
                pos = &self.positions[o.position]
                after = <i128>pos[0] + (<i128>e.qty if e.side == SIDE_BUY else -<i128>e.qty)
                # Saturate: the sum of many fills is not bounded by any one check.
                if after > <i128>INT64_MAX:
                    after = INT64_MAX
                elif after < -<i128>INT64_MAX:
                    after = -<i128>INT64_MAX
                pos[0] = <int64_t>after
                o.state = ORDER_LIVE
                if e.remaining == 0:
                    self._finish(o, oi)
            elif e.kind == EV_CANCELLED:
                self._finish(o, oi)
            elif e.kind == EV_REJECTED:
                # Before ACCEPTED it is the NewOrder that failed; after, a change of it.
                if o.state == ORDER_PENDING:
                    self._finish(o, oi)
            else:                         # ACCEPTED, REPLACED, REDUCED
                o.state = ORDER_LIVE

    # -------------------------------------------------------------------------
    # Recovery: the risk state rebuilt from a snapshot and the journal
    # -------------------------------------------------------------------------

    cdef int32_t _position_index(self, int32_t ai, int32_t si) noexcept:
        """The positions slot of (account, symbol), created at 0; room reserved by caller."""
        cdef int64_t key = (<int64_t>ai << 32) | si
        cdef int32_t pi = _map_get(&self.position_map, key)
        if pi == MAP_EMPTY:
            pi = <int32_t>self.n_positions
            self.positions[pi] = 0
            self.n_positions += 1
            _map_put(&self.position_map, key, pi)
        return pi

    cdef int _track(self, int32_t ai, int32_t si, int64_t engine_oid, uint8_t state) except -1:
        """Track an order that belongs to no session (slot -1): it counts and it fills."""
        cdef int32_t oi
        cdef GateOrder* o
        if engine_oid < 1 or _map_get(&self.oid_map, engine_oid) != MAP_EMPTY:
            return 0
        self._reserve_new_order(NULL)
        oi = self.free_order
        o = &self.orders[oi]
        self.free_order = o.next
        o.engine_oid = <oid_t>engine_oid
        o.cl_ord_id = 0
        o.slot = -1
        o.account = ai
        o.symbol = si
        o.position = self._position_index(ai, si)
        o.next = MAP_EMPTY
        o.state = state
        self.n_orders += 1
        self.accounts[ai].open_orders += 1
        _map_put(&self.oid_map, o.engine_oid, oi)
        if <uint64_t>engine_oid >= self.next_oid:
            self.next_oid = <uint64_t>engine_oid + 1
        return 0

    def adopt(self, int64_t account_id, int64_t symbol_id, int64_t engine_order_id):
        """Track a resting order restored from a snapshot, as an open order of no session.

        It counts against the account's ``max_open_orders`` and its fills move
        the account's position, but no session hears of it (its session ended
        with the previous process); a MassCancel reaches it.  Returns False,
        tracking nothing, when the account or symbol is not configured (the
        order still rests in the book).
        """
        cdef int32_t ai = _map_get(&self.account_map, account_id)
        cdef int32_t si = _map_get(&self.symbol_map, symbol_id)
        if ai == MAP_EMPTY or si == MAP_EMPTY:
            return False
        self._flush()
        self._track(ai, si, engine_order_id, ORDER_LIVE)
        return True

    def replay(self, cnp.ndarray commands, cnp.ndarray events, Py_ssize_t n_events):
        """Account for a replayed batch: the commands one ``Engine.process`` consumed and
        the events it wrote.

        Every ``ADD`` is tracked as an order of no session (as :meth:`adopt`),
        then the events are applied as :meth:`apply` does, so the positions,
        the open-order counts and the next engine order id end as they were in
        the live run (for the orders of configured accounts and symbols).
        Returns the number of ``ADD`` commands of accounts or symbols the gate
        does not know (not tracked).
        """
        cdef Py_ssize_t k, n_commands, cap, untracked = 0
        cdef const CommandRecord* c
        cdef int32_t ai, si
        cdef int64_t* routes
        n_commands = checked_rows(commands, _COMMAND_DTYPE, "commands", "COMMAND_DTYPE", False)
        cap = checked_rows(events, _EVENT_DTYPE, "events", "EVENT_DTYPE", False)
        if not (0 <= n_events <= cap):
            raise ValueError(f"n_events must be in 0 .. {cap}, got {n_events}")
        self._flush()
        c = <const CommandRecord*>cnp.PyArray_DATA(commands)
        for k in range(n_commands):
            if c[k].op != OP_ADD:
                continue
            ai = _map_get(&self.account_map, c[k].account)
            si = _map_get(&self.symbol_map, c[k].symbol)
            if ai == MAP_EMPTY or si == MAP_EMPTY:
                untracked += 1
                continue
            self._track(ai, si, c[k].order_id, ORDER_PENDING)
        routes = <int64_t*>PyMem_RawMalloc(<size_t>max(n_events, 1) * 2 * sizeof(int64_t))
        if routes == NULL:
            raise MemoryError()
        self._apply(<const EventRecord*>cnp.PyArray_DATA(events), n_events, routes)
        PyMem_RawFree(routes)
        self._flush()
        return untracked

    def set_position(self, int64_t account_id, int64_t symbol_id, int64_t qty):
        """Set the account's net filled quantity in the symbol (from a snapshot)."""
        cdef Py_ssize_t ai = self._account_index(account_id)
        cdef Py_ssize_t si = self._symbol_index(symbol_id)
        if self.n_positions >= self.position_cap:
            self.positions = <int64_t*>_grow(self.positions, self.position_cap * 2,
                                             sizeof(int64_t))
            self.position_cap *= 2
        _map_reserve(&self.position_map, self.n_positions + 1)
        self.positions[self._position_index(<int32_t>ai, <int32_t>si)] = qty

    def net_positions(self):
        """Every non-zero position: ``[(account_id, symbol_id, qty), ...]``, sorted."""
        cdef list out = []
        cdef Py_ssize_t k
        cdef int64_t key, qty
        for k in range(<Py_ssize_t>self.position_map.mask + 1):
            if self.position_map.slots[k].val == MAP_EMPTY:
                continue
            key = self.position_map.slots[k].key
            qty = self.positions[self.position_map.slots[k].val]
            if qty != 0:
                out.append((self.accounts[key >> 32].id,
                            self.symbols[key & 0xFFFFFFFF].id, qty))
        out.sort()
        return out

    def skip_order_ids(self, int64_t first_free):
        """Never assign an engine order id below ``first_free`` (ids used before a restart)."""
        if first_free > 0 and <uint64_t>first_free > self.next_oid:
            self.next_oid = <uint64_t>first_free

    # -------------------------------------------------------------------------
    # Queries
    # -------------------------------------------------------------------------

    cdef list _live(self, GateSession* s):
        cdef list out = []
        cdef Py_ssize_t k
        cdef GateOrder* o
        if s.orders.slots == NULL:
            return out
        for k in range(<Py_ssize_t>s.orders.mask + 1):
            if s.orders.slots[k].val != MAP_EMPTY:
                o = &self.orders[s.orders.slots[k].val]
                out.append((o.cl_ord_id, o.engine_oid, self.symbols[o.symbol].id))
        out.sort(key=_by_engine_id)
        return out

    def live_orders(self, Py_ssize_t slot):
        """The open orders of the session in ``slot`` (for cancel-on-disconnect).

        Returns
        -------
        list of (int, int, int)
            ``(cl_ord_id, engine_order_id, symbol_id)``, by engine order id;
            empty for a closed slot.  Orders admitted but not yet seen by the
            engine are included.
        """
        cdef GateSession* s = self._session(slot)
        self._flush()
        return self._live(s)

    def engine_order_id(self, Py_ssize_t slot, int64_t cl_ord_id):
        """The engine order id of an open order of the session in ``slot``, or None."""
        cdef GateSession* s = self._session(slot)
        cdef int32_t oi
        self._flush()
        if not s.is_open:
            return None
        oi = _map_get(&s.orders, cl_ord_id)
        return None if oi == MAP_EMPTY else self.orders[oi].engine_oid

    def open_orders(self, int64_t account_id):
        """Orders of the account admitted and not yet finished (all symbols)."""
        return self.accounts[self._account_index(account_id)].open_orders

    def position(self, int64_t account_id, int64_t symbol_id):
        """The account's net filled quantity in the symbol (buys minus sells)."""
        cdef Py_ssize_t ai = self._account_index(account_id)
        cdef Py_ssize_t si = self._symbol_index(symbol_id)
        cdef int32_t pi = _map_get(&self.position_map, (<int64_t>ai << 32) | si)
        return 0 if pi == MAP_EMPTY else self.positions[pi]

    def is_open(self, Py_ssize_t slot):
        """True while a session is open in ``slot``."""
        return bool(self._session(slot).is_open)

    def is_halted(self, int64_t symbol_id):
        """True while the symbol is halted."""
        return bool(self.symbols[self._symbol_index(symbol_id)].halted)

    @property
    def next_order_id(self):
        """The engine order id the next admitted NewOrder gets."""
        return self.next_oid

    @property
    def max_rows(self):
        """Most command rows one :meth:`admit` can write (an all-symbols MassCancel)."""
        return max(1, self.n_symbols)

    @property
    def order_count(self):
        """Orders the gate tracks: admitted and not yet finished."""
        self._flush()
        return self.n_orders

    def _map_sizes(self):
        """Entries in the order maps: ``(engine ids, sum over sessions, pool in use)``.

        For tests: after every order finished (and a flush) all three are 0.
        """
        cdef Py_ssize_t k, per_session = 0
        self._flush()
        for k in range(self.max_sessions):
            if self.sessions[k].orders.slots != NULL:
                per_session += self.sessions[k].orders.count
        return self.oid_map.count, per_session, self.n_orders

    def __repr__(self):
        return (f"OrderGate(max_sessions={self.max_sessions}, symbols={self.n_symbols}, "
                f"accounts={self.n_accounts}, orders={self.n_orders}, "
                f"kill_switch={bool(self.kill_switch)})")


def _by_engine_id(tuple item):
    return item[1]
