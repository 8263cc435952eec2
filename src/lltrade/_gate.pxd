# cython: language_level=3
"""The order gate's C data structures (the spec; _gate.pyx implements it).

The gate sits between the sessions and the Engine on the daemon's one thread.
Per order message it runs the pre-trade checks and either writes one engine
command (a ``CommandRecord``) or returns a reject reason; per engine event it
routes the event to the session that must hear it and keeps open-order counts
and positions.  Orders live in a pool of C structs addressed by int32 index,
found through two C hash maps, so nothing on either path creates a Python
object or allocates: growth happens in the ``def`` wrappers, before the C
functions that do the work.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint64_t

from lltrade._book cimport CommandRecord, EventRecord, acct_t, oid_t, px_t, qty_t
from lltrade._cmap cimport I64Map

cdef extern from *:
    # GCC and Clang provide 128-bit integers on every 64-bit target lltrade
    # supports (x86-64, arm64).  Used only inside expressions and the bucket.
    ctypedef long long i128 "__int128"
    ctypedef unsigned long long u128 "unsigned __int128"

# Reasons decided by the gate (mirrors of lltrade.enums.Reason 40-47 and
# lltrade.protocol.SessionReason; tests/unit/test_gate.py checks they agree).
cdef enum:
    R_PRICE_COLLAR = 40
    R_MAX_ORDER_QTY = 41
    R_MAX_NOTIONAL = 42
    R_MAX_OPEN_ORDERS = 43
    R_MAX_POSITION = 44
    R_SYMBOL_HALTED = 45
    R_KILL_SWITCH_ACTIVE = 46
    R_NOT_AUTHORISED = 47
    SR_NOT_LOGGED_ON = 60
    SR_RATE_LIMITED = 64

# Life of a GateOrder.
cdef enum:
    ORDER_FREE = 0                 # on the free list
    ORDER_PENDING = 1              # admitted; the engine's ACCEPTED not seen yet
    ORDER_LIVE = 2                 # the engine accepted it and it is open
    ORDER_DONE = 3                 # finished; still in the maps (routes the rest of
                                   # its batch) until the next _flush

# What the admit path reads out of a protocol message, as C values.
ctypedef struct OrderMsg:
    int64_t cl_ord_id              # NewOrder, Cancel, Replace, Reduce
    int64_t symbol                 # NewOrder, MassCancel (0 = every symbol)
    int64_t account                # MassCancel: target account, 0 = the session's own
    px_t price                     # NewOrder, Replace
    qty_t qty                      # NewOrder (order qty); Replace, Reduce (new open qty)
    uint8_t op                     # OP_* of the command it becomes
    uint8_t side                   # NewOrder; 0 if out of range (the engine rejects it)
    uint8_t tif                    # NewOrder; 255 if out of range
    uint8_t post_only              # NewOrder: 0/1
    uint8_t stp                    # NewOrder; 255 if out of range


ctypedef struct GateSymbol:        # 56 bytes
    px_t tick                      # price grid (the engine checks prices against it)
    qty_t lot                      # quantity grid (the engine checks quantities)
    px_t reference_price           # centre of the price collar
    uint64_t collar                # largest |price - reference_price|; 0 = no collar
                                   # (collar_ticks * tick, saturated at 2**64 - 1)
    qty_t max_order_qty            # largest order qty; INT64_MAX = no limit
    uint64_t max_notional          # largest |price| * qty; 0 = no limit
    int32_t id                     # symbol id (the engine's book), 1 .. 2**31 - 1
    uint8_t halted                 # 1 = NewOrder and Replace are refused


ctypedef struct GateAccount:       # 72 bytes
    acct_t id                      # account id (>= 1), written into every command
    int64_t open_orders            # admitted and not yet finished (pending ones count)
    int64_t max_open_orders        # limit on open_orders
    qty_t max_position             # limit on |net filled qty| per symbol
    qty_t max_order_qty            # account-wide order qty limit; INT64_MAX = none
    uint64_t max_notional          # account-wide |price| * qty limit; 0 = none
    uint64_t msg_rate_per_s        # token refill of each of its sessions
    uint64_t msg_burst             # token bucket size of each of its sessions
    uint8_t killed                 # its own kill switch (the gate has a global one too)


ctypedef struct GateSession:
    I64Map orders                  # cl_ord_id -> order index; slots NULL while closed
    u128 tokens                    # rate-limit bucket, in 1e-9 messages
    u128 capacity                  # msg_burst * 10**9: a full bucket
    uint64_t rate                  # msg_rate_per_s: 1e-9 messages refilled per ns
    int64_t last_ns                # now_ns of the last refill (valid once clock_started)
    int32_t account                # index into OrderGate.accounts
    uint8_t is_open
    uint8_t is_admin               # may mass-cancel other accounts
    uint8_t clock_started          # 0 until the first admit (the bucket starts full)


ctypedef struct GateOrder:         # 40 bytes
    oid_t engine_oid               # the engine's id: a gate-wide counter from 1
    int64_t cl_ord_id              # the session's id for it
    int32_t slot                   # session that hears its events; -1 after close_session
    int32_t account                # index into accounts (open-order count, commands)
    int32_t symbol                 # index into symbols
    int32_t position               # index into positions: its (account, symbol) net qty
    int32_t next                   # free-list link (FREE), retired-list link (DONE)
    uint8_t state                  # ORDER_*


@cython.final
cdef class OrderGate:
    cdef:
        # -- sessions (slot = index, chosen by the daemon) ---------------------
        readonly Py_ssize_t max_sessions
        GateSession* sessions          # max_sessions of them, allocated up front
        # -- accounts and symbols (added at start-up, never removed) -----------
        GateAccount* accounts
        Py_ssize_t n_accounts, account_cap
        I64Map account_map             # account id -> index into accounts
        GateSymbol* symbols            # in the order add_symbol registered them
        Py_ssize_t n_symbols, symbol_cap
        I64Map symbol_map              # symbol id -> index into symbols
        # -- orders ----------------------------------------------------------
        GateOrder* orders
        Py_ssize_t order_cap
        Py_ssize_t n_orders            # not FREE (pending, live or done)
        int32_t free_order             # head of the free list; MAP_EMPTY = none
        int32_t retired                # head of the DONE orders not yet flushed
        I64Map oid_map                 # engine order id -> order index
        uint64_t next_oid              # next engine order id; > 2**63 - 1 = exhausted
        # -- positions: net filled qty per (account, symbol) -------------------
        int64_t* positions
        Py_ssize_t n_positions, position_cap
        I64Map position_map            # account index << 32 | symbol index -> positions
        # -- switches and per-call results --------------------------------------
        readonly bint kill_switch      # global: NewOrder and Replace refused
        readonly Py_ssize_t rows_written   # rows the last admit wrote (0 if rejected)

    # set-up and growth (never inside the C functions below)
    cdef GateSession* _session(self, Py_ssize_t slot) except NULL
    cdef Py_ssize_t _account_index(self, int64_t account_id) except -1
    cdef Py_ssize_t _symbol_index(self, int64_t symbol_id) except -1
    cdef int _grow_orders(self, Py_ssize_t new_cap) except -1
    cdef int _reserve_new_order(self, GateSession* s) except -1
    cdef void _flush(self) noexcept
    cdef int _admit_msg(self, GateSession* s, int32_t slot, const OrderMsg* m, int64_t now_ns,
                        CommandRecord* out) except -1
    # the per-message path: never fails, never allocates, no Python objects
    cdef uint16_t _admit_new(self, GateSession* s, int32_t slot, const OrderMsg* m,
                             int64_t now_ns, CommandRecord* out) noexcept
    cdef uint16_t _admit_change(self, GateSession* s, const OrderMsg* m, int64_t now_ns,
                                CommandRecord* out) noexcept
    cdef uint16_t _admit_mass_cancel(self, GateSession* s, const OrderMsg* m, int64_t now_ns,
                                     CommandRecord* out) noexcept
    cdef void _finish(self, GateOrder* o, int32_t oi) noexcept
    cdef void _apply(self, const EventRecord* ev, Py_ssize_t n, int64_t* routes) noexcept
    # recovery
    cdef int32_t _position_index(self, int32_t ai, int32_t si) noexcept
    cdef int _track(self, int32_t ai, int32_t si, int64_t engine_oid, uint8_t state) except -1
    # queries
    cdef list _live(self, GateSession* s)
