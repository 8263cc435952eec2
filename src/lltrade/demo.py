"""A short, printed walk through the order book (``lltrade demo``)."""

from __future__ import annotations

from typing import TextIO

from lltrade import STP, TIF, Event, OrderBook, Side


def _show(out: TextIO, title: str, events: list[Event]) -> None:
    out.write(f"\n> {title}\n")
    for event in events:
        out.write(f"    {event!r}\n")


def run_demo(out: TextIO) -> int:
    """Build a small book, trade against it and print every event."""
    book = OrderBook(min_price=9_000, max_price=11_000, tick=5, lot=1, symbol_id=1)
    out.write(f"lltrade demo: {book!r}  (prices in ticks of 5, band 9000..11000)\n")
    _show(out, "bid 10 @ 9995", book.add(1, Side.BUY, 9_995, 10))
    _show(out, "bid 5 @ 10000", book.add(2, Side.BUY, 10_000, 5))
    _show(out, "ask 7 @ 10010 (account 7)", book.add(3, Side.SELL, 10_010, 7, account=7))
    _show(out, "ask 4 @ 10015", book.add(4, Side.SELL, 10_015, 4))
    _show(
        out,
        "sell 12 @ 9995 IOC: sweeps two bid levels",
        book.add(5, Side.SELL, 9_995, 12, tif=TIF.IOC),
    )
    _show(
        out,
        "post-only buy @ 10010 would cross: rejected",
        book.add(6, Side.BUY, 10_010, 1, post_only=True),
    )
    _show(
        out,
        "buy 3 @ 10015 account 7, STP cancel-resting",
        book.add(7, Side.BUY, 10_015, 3, account=7, stp=STP.CANCEL_RESTING),
    )
    _show(out, "replace order 1 down to 2 lots (keeps its place)", book.replace(1, 9_995, 2))
    _show(
        out, "market buy 10, protection 2 ticks", book.market(8, Side.BUY, 10, protection_ticks=2)
    )
    bids, asks = book.depth(5)
    out.write(f"\nbook now: bids {bids} asks {asks}\n")
    out.write(f"state hash: {book.state_hash():#018x}\n")
    return 0
