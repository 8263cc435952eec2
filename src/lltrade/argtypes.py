"""argparse types shared by the ``lltrade`` commands, the telemetry exporter and the
benchmark tools: a wrong value stops the command with one line naming it (exit status 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["listen_port", "port", "positive_int", "seconds"]


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    value = _int(text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def port(text: str) -> int:
    """A port to connect to: 1..65535."""
    value = _int(text, "a port number")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {value}")
    return value


def listen_port(text: str) -> int:
    """A port to listen on: 0..65535, 0 for any free one."""
    value = _int(text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def seconds(most: float = math.inf, *, zero: bool = False) -> Callable[[str], float]:
    """A number of seconds: > 0 (>= 0 with ``zero``) and at most ``most``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not (value >= 0 if zero else value > 0) or value > most:
            low = ">= 0" if zero else "> 0"
            high = f" and <= {most:g}" if most != math.inf else ""
            raise argparse.ArgumentTypeError(f"must be {low}{high} seconds, got {text}")
        return value

    parse.__name__ = "seconds"  # argparse names the type in its own messages
    return parse
