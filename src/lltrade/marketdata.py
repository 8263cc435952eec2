"""Public market data: book snapshots, level updates and trade prints.

Subscribers are sessions; updates come from the engine's LEVEL events and
from fills, in engine order, and go into each subscriber's output buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lltrade.enums import Reason, Side
from lltrade.protocol import BookSnapshot, Done, LevelUpdate, Reject, Subscribe, Trade, Unsubscribe

if TYPE_CHECKING:
    from lltrade.daemon import Daemon
    from lltrade.session import Session

_ALL_LEVELS = 1 << 30
_SIDE = (Side.BUY, Side.BUY, Side.SELL)  # engine side number -> enum, without a call


class MarketData:
    """Subscriptions per symbol and the fan-out of updates to them."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._subscribers: dict[int, set[Session]] = {sid: set() for sid in daemon.symbols}

    def request(self, session: Session, msg: Subscribe | Unsubscribe) -> None:
        """Handle a Subscribe or Unsubscribe (all symbols known, or refused as a whole)."""
        daemon = self._daemon
        unknown = [s for s in msg.symbols if s not in self._subscribers]
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
        for symbol in msg.symbols:
            if isinstance(msg, Subscribe):
                self._subscribers[symbol].add(session)
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
                self._subscribers[symbol].discard(session)
                session.subscriptions.discard(symbol)
        daemon._send(session, Done(session.next_seq(), msg.seq))

    def forget(self, session: Session) -> None:
        """Drop every subscription of a session that ended."""
        for symbol in session.subscriptions:
            self._subscribers[symbol].discard(session)
        session.subscriptions.clear()

    def level(self, symbol: int, side: int, price: int, qty: int) -> None:
        subscribers = self._subscribers.get(symbol)
        if subscribers:
            send = self._daemon._send
            for session in subscribers:
                send(session, LevelUpdate(session.next_seq(), symbol, _SIDE[side], price, qty))

    def trade(self, symbol: int, exec_id: int, price: int, qty: int, aggressor: int) -> None:
        subscribers = self._subscribers.get(symbol)
        if subscribers:
            send = self._daemon._send
            for session in subscribers:
                send(
                    session,
                    Trade(session.next_seq(), symbol, exec_id, price, qty, _SIDE[aggressor]),
                )
