"""lltrade: a low-latency order book, matcher and trading daemon.

The matching core is the Cython extension ``lltrade._book``; this package
re-exports its faces and the shared enumerations.
"""

from lltrade._book import COMMAND_DTYPE, EVENT_DTYPE, Engine, Event, OrderBook
from lltrade.enums import STP, TIF, EventKind, Op, Reason, Side

__version__ = "0.1.0"

__all__ = [
    "COMMAND_DTYPE",
    "EVENT_DTYPE",
    "STP",
    "TIF",
    "Engine",
    "Event",
    "EventKind",
    "Op",
    "OrderBook",
    "Reason",
    "Side",
    "__version__",
]
