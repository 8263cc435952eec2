"""Public market data: subscriptions and book snapshots.

The updates themselves (``LevelUpdate`` per changed level, ``Trade`` per
match) are written by the C report encoder straight from the engine's
events, to the subscribers it keeps per symbol; this module answers
Subscribe and Unsubscribe, sending the snapshot a subscriber starts from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lltrade.enums import Reason
from lltrade.protocol import BookSnapshot, Done, Reject, Subscribe, Unsubscribe

if TYPE_CHECKING:
    from lltrade.daemon import Daemon
    from lltrade.session import Session

_ALL_LEVELS = 1 << 30


class MarketData:
    """Answers market-data requests; see the module docstring."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def request(self, session: Session, msg: Subscribe | Unsubscribe) -> None:
        """Handle a Subscribe or Unsubscribe (all symbols known, or refused as a whole)."""
        daemon = self._daemon
        unknown = [s for s in msg.symbols if s not in daemon.symbols]
        if unknown:
            daemon._send(
                session,
                Reject(
                    session.next_seq(),
                    msg.seq,
                    Reason.UNKNOWN_SYMBOL,
                    f"unknown symbol ids: {unknown}",
                ),
            )
            return
        reports = daemon.reports
        for symbol in msg.symbols:
            if isinstance(msg, Subscribe):
                # The snapshot goes into the same buffer, before any update.
                reports.subscribe(session.slot, symbol)
                session.subscriptions.add(symbol)
                bids, asks = daemon.engine.book(symbol).depth(_ALL_LEVELS)
                daemon._send(
                    session,
                    BookSnapshot(
                        session.next_seq(),
                        symbol,
                        tuple((p, q) for p, q, _ in bids),
                        tuple((p, q) for p, q, _ in asks),
                    ),
                )
            else:
                reports.unsubscribe(session.slot, symbol)
                session.subscriptions.discard(symbol)
        daemon._send(session, Done(session.next_seq(), msg.seq))
