"""Fixtures for the end-to-end tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def temp_under_pytest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The journal directories the tests and the harness make with ``tempfile.mkdtemp``
    go under pytest's own temporary directory, which pytest removes after a few runs,
    instead of piling up in the system's."""
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("e2e"))
    try:
        yield
    finally:
        tempfile.tempdir = before
