"""Fixtures of the pytest-benchmark suites (``make bench``; not part of ``make test``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def gc_off() -> Iterator[None]:
    """No garbage collection while a benchmark runs (set-up rounds included)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
