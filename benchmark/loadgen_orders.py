"""What the load generator sends: the order mix, valid prices and quantities, its own live orders.

Four kinds of message, drawn from a seeded generator in the proportions of
``--mix``:

``passive``
    A GTC limit order that rests: a buy 1..``depth`` ticks below the
    symbol's reference price (snapped to the tick), or a sell as far above
    it.  Passive orders never cross each other.
``aggressive``
    An IOC limit order priced ``depth`` ticks through the reference price:
    it trades with the resting orders of the other side (anyone's, the
    generator's own included) and its remainder is cancelled.
``cancel``
    A ``Cancel`` of one of the connection's own resting orders.
``replace``
    A ``Replace`` of one of them to another passive price and quantity.

Quantities are whole lots: 1..5 for passive orders, 1..15 for aggressive
ones, so fills take a little more than passive orders add and the book
does not grow without bound.  Each connection also caps its resting
orders (``--max-resting``): at the cap a passive order becomes a cancel,
and with nothing resting a cancel or replace becomes a passive order (the
result counts what was actually sent, per type).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np

KINDS: Final = ("passive", "aggressive", "cancel", "replace")
PASSIVE: Final = 0
AGGRESSIVE: Final = 1
CANCEL: Final = 2
REPLACE: Final = 3

#: The latency types of the result file, by message: a new order (passive or
#: aggressive), a cancel, a replace.
TYPES: Final = ("new_order", "cancel", "replace")
T_NEW: Final = 0
T_CANCEL: Final = 1
T_REPLACE: Final = 2
TYPE_OF_KIND: Final = (T_NEW, T_NEW, T_CANCEL, T_REPLACE)

DEFAULT_MIX: Final = "passive=60,aggressive=20,cancel=15,replace=5"
DEPTH: Final = 10  #: passive orders rest 1..DEPTH ticks from the reference price
PASSIVE_LOTS: Final = 5
AGGRESSIVE_LOTS: Final = 15


class MixError(ValueError):
    """A ``--mix`` that cannot be used; the message says why."""


def parse_mix(text: str) -> tuple[float, float, float, float]:
    """Parse ``passive=60,aggressive=20,cancel=15,replace=5`` into fractions summing to 1.

    Weights are non-negative numbers in any unit (they are normalised); a
    kind left out has weight 0.  The order follows :data:`KINDS`.

    Raises
    ------
    MixError
        Naming the part that is wrong.
    """
    weights = dict.fromkeys(KINDS, 0.0)
    seen: set[str] = set()
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise MixError("empty; expected e.g. " + DEFAULT_MIX)
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise MixError(f"{part!r} is not kind=weight (e.g. {DEFAULT_MIX})")
        if name not in weights:
            raise MixError(f"unknown kind {name!r}; the kinds are {', '.join(KINDS)}")
        if name in seen:
            raise MixError(f"{name!r} is given twice")
        seen.add(name)
        try:
            weight = float(value)
        except ValueError:
            raise MixError(f"the weight of {name!r} is not a number: {value.strip()!r}") from None
        if not math.isfinite(weight) or weight < 0:
            raise MixError(f"the weight of {name!r} must be a finite number >= 0, got {value!r}")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise MixError("the weights add up to 0: nothing to send")
    p, a, c, r = (weights[k] / total for k in KINDS)
    return p, a, c, r


def format_mix(fractions: tuple[float, ...]) -> str:
    """``passive=60,aggressive=20,...`` in percent, the form ``--mix`` takes."""
    return ",".join(f"{k}={f * 100:g}" for k, f in zip(KINDS, fractions, strict=True))


@dataclass(frozen=True)
class SymbolSpec:
    """A symbol as the daemon described it (``SymbolInfo``), and the prices used on it."""

    symbol: int
    name: str
    tick: int
    lot: int
    min_price: int
    max_price: int
    reference_price: int

    @cached_property
    def base(self) -> int:
        """The reference price snapped down onto the tick grid and into the band."""
        base = self.reference_price - (self.reference_price - self.min_price) % self.tick
        return min(max(base, self.min_price), self.max_price)

    def passive_price(self, side: int, level: int) -> int:
        """A resting price ``level`` ticks from the base: below for a buy (1), above for a sell."""
        if side == 1:
            return max(self.base - level * self.tick, self.min_price)
        return min(self.base + level * self.tick, self.max_price)

    def aggressive_price(self, side: int) -> int:
        """An IOC price :data:`DEPTH` ticks through the base: it meets every passive level."""
        if side == 1:
            return min(self.base + DEPTH * self.tick, self.max_price)
        return max(self.base - DEPTH * self.tick, self.min_price)


@dataclass
class Draws:
    """Random draws for a chunk of messages (one per message and field)."""

    kind: list[int]
    symbol: list[int]  #: index into the run's symbols
    side: list[int]  #: 1 buy, 2 sell
    level: list[int]  #: 1 .. DEPTH
    lots: list[int]  #: 1 .. PASSIVE_LOTS
    aggressive_lots: list[int]  #: 1 .. AGGRESSIVE_LOTS
    pick: list[int]  #: which live order a cancel or replace takes (modulo their number)


def draw(rng: np.random.Generator, mix: tuple[float, ...], symbols: int, n: int) -> Draws:
    """``n`` messages' worth of random choices from ``rng``, kinds in the proportions of ``mix``."""
    cumulative = np.cumsum(mix)
    cumulative[-1] = 1.0  # no rounding gap at the top
    kind = np.searchsorted(cumulative, rng.random(n), side="right")
    return Draws(
        kind=np.minimum(kind, len(mix) - 1).tolist(),
        symbol=rng.integers(0, symbols, n).tolist(),
        side=rng.integers(1, 3, n).tolist(),
        level=rng.integers(1, DEPTH + 1, n).tolist(),
        lots=rng.integers(1, PASSIVE_LOTS + 1, n).tolist(),
        aggressive_lots=rng.integers(1, AGGRESSIVE_LOTS + 1, n).tolist(),
        pick=rng.integers(0, 1 << 30, n).tolist(),
    )


class LiveOrders:
    """One connection's resting orders: add, forget and pick at random in O(1).

    An order is live from the moment its ``NewOrder`` is sent (the daemon
    handles a session's messages in order, so a later cancel finds it) until
    a cancel is sent for it, or it is reported filled, cancelled or rejected.
    """

    __slots__ = ("_info", "_slot", "ids")

    def __init__(self) -> None:
        self.ids: list[
            int
        ] = []  #: the live orders' ids (``len(ids)`` is cheaper than ``len(self)``)
        self._slot: dict[int, int] = {}
        self._info: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, cl_ord_id: int) -> bool:
        return cl_ord_id in self._slot

    def add(self, cl_ord_id: int, symbol: int, side: int) -> None:
        """Remember a resting order: its symbol index and side."""
        self._slot[cl_ord_id] = len(self.ids)
        self.ids.append(cl_ord_id)
        self._info[cl_ord_id] = (symbol, side)

    def forget(self, cl_ord_id: int) -> None:
        """Drop an order (absent ones are ignored): swap the last one into its place."""
        i = self._slot.pop(cl_ord_id, None)
        if i is None:
            return
        del self._info[cl_ord_id]
        last = self.ids.pop()
        if last != cl_ord_id:
            self.ids[i] = last
            self._slot[last] = i

    def pick(self, r: int) -> tuple[int, int, int]:
        """The live order ``r`` picks (modulo their number): ``(cl_ord_id, symbol, side)``."""
        cl_ord_id = self.ids[r % len(self.ids)]
        symbol, side = self._info[cl_ord_id]
        return cl_ord_id, symbol, side
