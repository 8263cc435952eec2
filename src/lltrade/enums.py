"""Enumerations shared by the engine, the wire protocol and the tools.

The integer values are part of the batch dtypes and of the wire protocol:
never renumber a member, only add new ones.  ``_book.pyx`` mirrors them as
``cdef enum`` constants and ``tests/unit/test_enums.py`` checks the two agree.
"""

from enum import IntEnum


class Side(IntEnum):
    """Side of an order.  0 is never a side, so a zeroed field means "none"."""

    BUY = 1
    SELL = 2


class TIF(IntEnum):
    """Time in force of a limit order."""

    GTC = 0  #: rests until filled or cancelled
    IOC = 1  #: fills what it can now; the remainder is cancelled
    FOK = 2  #: fills completely now or does nothing


class STP(IntEnum):
    """Self-trade prevention mode of the incoming order."""

    NONE = 0
    CANCEL_RESTING = 1
    CANCEL_INCOMING = 2
    CANCEL_BOTH = 3


class Op(IntEnum):
    """Command opcode of the batch face (``COMMAND_DTYPE['op']``)."""

    ADD = 1
    MARKET = 2
    CANCEL = 3
    REDUCE = 4
    REPLACE = 5
    MASS_CANCEL = 6


class EventKind(IntEnum):
    """Kind of an engine event (``EVENT_DTYPE['kind']``)."""

    ACCEPTED = 1
    REJECTED = 2
    FILL = 3
    CANCELLED = 4
    REDUCED = 5
    REPLACED = 6
    LEVEL = 7


class Reason(IntEnum):
    """Why a command was rejected or an order cancelled.

    1-19 are rejections, 20-39 cancellations, 40-59 are reserved for the
    daemon's pre-trade risk checks.
    """

    NONE = 0
    # -- rejections ---------------------------------------------------------
    UNKNOWN_ORDER = 1  #: cancel/reduce/replace of an id that is not resting
    DUPLICATE_ORDER_ID = 2  #: the id belongs to a resting order
    INVALID_QTY = 3  #: not positive, off the lot, above max_qty, or a bad reduce
    PRICE_OUT_OF_BAND = 4  #: outside min_price..max_price (inclusive)
    PRICE_OFF_TICK = 5  #: not a multiple of the tick
    POST_ONLY_WOULD_CROSS = 6  #: a post-only order would trade on arrival
    INVALID_FLAGS = 7  #: post-only together with IOC or FOK
    INVALID_ORDER_ID = 8  #: an order id must be 1 .. 2**63 - 1
    INVALID_FIELD = 9  #: batch face: op, side, tif, stp or protection out of range
    POOL_EXHAUSTED = 10  #: the book holds max_orders resting orders already
    UNKNOWN_SYMBOL = 11  #: batch face of the Engine: no book for that symbol id
    # -- cancellations ------------------------------------------------------
    USER_CANCEL = 20
    IOC_REMAINDER = 21  #: IOC or market order remainder
    FOK_UNFILLED = 22
    SELF_TRADE = 23
    MASS_CANCEL = 24
    DISCONNECT = 25
    KILL_SWITCH = 26
    # -- pre-trade risk and permissions (the daemon, not the book) ----------
    PRICE_COLLAR = 40  #: price too far from the symbol's reference price
    MAX_ORDER_QTY = 41  #: order quantity above the account's or symbol's limit
    MAX_NOTIONAL = 42  #: |price| * qty above the account's or symbol's limit
    MAX_OPEN_ORDERS = 43  #: the account already has its maximum of resting orders
    MAX_POSITION = 44  #: a full fill could take the position past the limit
    SYMBOL_HALTED = 45  #: trading in the symbol is halted (cancels still work)
    KILL_SWITCH_ACTIVE = 46  #: the kill switch is on: no new orders
    NOT_AUTHORISED = 47  #: the request needs the admin role
    UNAVAILABLE = 48  #: the journal cannot be written: the daemon takes no orders
