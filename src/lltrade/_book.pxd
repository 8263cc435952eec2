# cython: language_level=3
"""The order book's C data structures (the spec; _book.pyx implements it).

Orders and levels live in pools of C structs addressed by int32 index, with
free lists, so nothing on the order path allocates or creates Python objects.
Each side keeps its live levels in a *ladder*: a sorted vector with the best
level at the end, so the touch is found, consumed and extended in O(1) and a
new level costs a binary search plus a short memmove (new levels appear near
the touch).  Memory grows with live orders and live levels, never with the
width of the price band.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

# The int64 -> int32 hash map (order ids, prices) is shared with the order gate.
from lltrade._cmap cimport I64Map, MapSlot

ctypedef int64_t px_t      # price in base units; a multiple of the book's tick
ctypedef int64_t qty_t     # quantity in base units; a multiple of the lot
ctypedef int64_t oid_t     # order id, 1 .. 2**63 - 1
ctypedef int64_t acct_t    # account id; 0 = no account
ctypedef int32_t idx_t     # index into a pool or ladder; NIL = none

cdef enum:
    NIL = -1

# Mirrors of lltrade.enums (tests/unit/test_enums.py checks they agree).
cdef enum:
    SIDE_BUY = 1
    SIDE_SELL = 2

cdef enum:
    TIF_GTC = 0
    TIF_IOC = 1
    TIF_FOK = 2

cdef enum:
    STP_NONE = 0
    STP_CANCEL_RESTING = 1
    STP_CANCEL_INCOMING = 2
    STP_CANCEL_BOTH = 3

cdef enum:
    OP_ADD = 1
    OP_MARKET = 2
    OP_CANCEL = 3
    OP_REDUCE = 4
    OP_REPLACE = 5
    OP_MASS_CANCEL = 6

cdef enum:
    EV_ACCEPTED = 1
    EV_REJECTED = 2
    EV_FILL = 3
    EV_CANCELLED = 4
    EV_REDUCED = 5
    EV_REPLACED = 6
    EV_LEVEL = 7

cdef enum:
    R_NONE = 0
    R_UNKNOWN_ORDER = 1
    R_DUPLICATE_ORDER_ID = 2
    R_INVALID_QTY = 3
    R_PRICE_OUT_OF_BAND = 4
    R_PRICE_OFF_TICK = 5
    R_POST_ONLY_WOULD_CROSS = 6
    R_INVALID_FLAGS = 7
    R_INVALID_ORDER_ID = 8
    R_INVALID_FIELD = 9
    R_POOL_EXHAUSTED = 10
    R_UNKNOWN_SYMBOL = 11
    R_USER_CANCEL = 20
    R_IOC_REMAINDER = 21
    R_FOK_UNFILLED = 22
    R_SELF_TRADE = 23
    R_MASS_CANCEL = 24


ctypedef struct Order:             # 48 bytes
    oid_t id                       # client-visible id, unique among resting orders
    px_t price                     # limit price
    qty_t qty                      # open quantity; > 0 while resting
    acct_t account                 # owner for self-trade prevention; 0 = none
    idx_t prev                     # older neighbour in the level FIFO; NIL at the head
    idx_t next                     # newer neighbour; NIL at the tail; free-list link when free
    idx_t level                    # its Level in the level pool
    uint8_t side                   # SIDE_BUY or SIDE_SELL
    uint8_t stp                    # STP mode it carries into a replace
    uint8_t post_only              # 1 = post-only; carried into a replace
    uint8_t _pad


ctypedef struct Level:             # 48 bytes
    px_t price                     # the level's price
    qty_t total                    # sum of its orders' open quantities
    uint64_t touched_in            # command epoch that last recorded it in `touched`
    idx_t head                     # oldest order (matched first)
    idx_t tail                     # newest order
    int32_t count                  # number of orders; the level is freed at 0
    idx_t next_free                # free-list link
    int32_t touch_slot             # its entry in `touched` when touched_in == epoch
    uint8_t side


ctypedef struct LadderItem:        # 16 bytes
    int64_t key                    # price for bids, -price for asks: ascending, best last
    idx_t level


ctypedef struct Ladder:            # the live levels of one side, sorted worst .. best
    LadderItem* items
    Py_ssize_t n
    Py_ssize_t cap


ctypedef struct Touch:             # a level changed by the current command
    px_t price
    qty_t before                   # its total before the command (0 if it did not exist)
    idx_t level                    # the live level now; NIL once it has emptied
    uint8_t side


# The batch face's records.  COMMAND_DTYPE and EVENT_DTYPE are built from
# these structs' real offsets at import, so the two can never disagree.
ctypedef struct CommandRecord:           # 56 bytes
    oid_t order_id
    px_t price                     # limit price (add), new price (replace)
    qty_t qty                      # order qty (add, market), new open qty (reduce, replace)
    acct_t account                 # add, market, mass cancel
    int64_t protection             # market: ticks from the opposite touch; -1 = no cap
    int32_t symbol                 # Engine: the book it goes to
    uint8_t op                     # OP_*
    uint8_t side
    uint8_t tif
    uint8_t post_only
    uint8_t stp
    uint8_t _pad0
    uint16_t reason                # cancel, mass cancel: reason to report; 0 = default
    uint32_t _pad1


ctypedef struct EventRecord:             # 64 bytes: one cache line
    oid_t order_id
    px_t price
    qty_t qty
    qty_t remaining
    oid_t maker_id
    oid_t taker_id
    int32_t symbol
    int32_t cmd                    # index of the command in its batch (0 per call)
    uint8_t kind                   # EV_*
    uint8_t side
    uint16_t reason                # R_*
    uint32_t _pad


cdef class OrderBook:
    cdef:
        # -- instrument --------------------------------------------------
        readonly int32_t symbol_id
        readonly px_t min_price, max_price, tick
        readonly qty_t lot, max_qty
        readonly Py_ssize_t max_orders
        # -- pools ---------------------------------------------------------
        Order* order_pool
        Py_ssize_t order_cap
        idx_t free_order
        Py_ssize_t n_orders            # resting orders
        Py_ssize_t side_orders[3]      # resting orders per side (index SIDE_BUY, SIDE_SELL)
        Level* level_pool
        Py_ssize_t level_cap
        idx_t free_level
        # -- indexes -------------------------------------------------------
        I64Map oid_map                 # order id -> order index
        I64Map bid_map                 # price -> level index, per side
        I64Map ask_map
        Ladder bids
        Ladder asks
        # -- per-command scratch -------------------------------------------
        uint64_t epoch                 # command counter; stamps touched levels
        int32_t headroom               # commands left before _reserve must run again
        Touch* touched
        Py_ssize_t n_touched
        Py_ssize_t touched_cap
        EventRecord* out                     # where the current command's events go
        Py_ssize_t n_out
        int32_t cur_cmd
        EventRecord* own_events              # per-call face's buffer
        Py_ssize_t own_cap
        readonly Py_ssize_t commands_processed

    # growth (between commands only)
    cdef int _grow_orders(self, Py_ssize_t new_cap) except -1
    cdef int _grow_levels(self, Py_ssize_t new_cap) except -1
    cdef int _reserve(self) except -1
    cdef int _reserve_own_events(self, Py_ssize_t bound) except -1
    # the order path: never fails, never allocates
    cdef inline void _emit(self, uint8_t kind, oid_t order_id, uint8_t side, px_t price, qty_t qty,
                    qty_t remaining, oid_t maker_id, oid_t taker_id, uint16_t reason) noexcept
    cdef inline void _reject(self, oid_t order_id, uint16_t reason) noexcept
    cdef inline Ladder* _ladder(self, uint8_t side) noexcept
    cdef inline I64Map* _price_map(self, uint8_t side) noexcept
    cdef inline Level* _best(self, uint8_t side) noexcept
    cdef inline bint _would_cross(self, uint8_t side, px_t price) noexcept
    cdef inline void _touch(self, Level* lvl) noexcept
    cdef inline void _emit_levels(self) noexcept
    cdef inline int64_t _key(self, uint8_t side, px_t price) noexcept
    cdef void _link(self, idx_t oi) noexcept
    cdef void _unlink(self, idx_t oi) noexcept
    cdef inline void _free_order(self, idx_t oi) noexcept
    cdef px_t _market_limit(self, uint8_t side, int64_t protection) noexcept
    cdef bint _fok_fillable(self, uint8_t side, px_t limit, qty_t qty, acct_t account,
                            uint8_t stp) noexcept
    cdef qty_t _match(self, uint8_t side, px_t limit, qty_t qty, oid_t taker_id,
                      acct_t account, uint8_t stp, bint* stp_stop) noexcept
    cdef void _add(self, const CommandRecord* c) noexcept
    cdef void _market(self, const CommandRecord* c) noexcept
    cdef void _cancel(self, const CommandRecord* c) noexcept
    cdef void _reduce(self, const CommandRecord* c) noexcept
    cdef void _replace(self, const CommandRecord* c) noexcept
    cdef void _mass_cancel_side(self, Ladder* l, acct_t account, uint16_t reason) noexcept
    cdef void _mass_cancel(self, const CommandRecord* c) noexcept
    cdef void _execute(self, const CommandRecord* c) noexcept
    # the two faces
    cdef Py_ssize_t _event_bound(self, const CommandRecord* c) noexcept
    cdef Py_ssize_t _step(self, const CommandRecord* c, EventRecord* out, Py_ssize_t cap,
                          int32_t cmd_index) except -2
    cdef list _call(self, CommandRecord* c)
    cdef list _side_depth(self, Ladder* l, Py_ssize_t levels)
