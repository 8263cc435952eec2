"""The Cython core's enum constants agree with lltrade.enums."""

import re
from pathlib import Path

import pytest

from lltrade import STP, TIF, EventKind, Op, Reason, Side

PXD = Path(__file__).resolve().parents[2] / "src" / "lltrade" / "_book.pxd"


def _pxd_constants() -> dict[str, int]:
    text = PXD.read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s+([A-Z][A-Z0-9_]+) = (-?\d+)$", text, re.M)}


@pytest.mark.parametrize(
    ("enum", "prefix"),
    [
        (Side, "SIDE_"),
        (TIF, "TIF_"),
        (STP, "STP_"),
        (Op, "OP_"),
        (EventKind, "EV_"),
        (Reason, "R_"),
    ],
)
def test_pxd_mirrors_enum(enum: type, prefix: str) -> None:
    constants = {k[len(prefix) :]: v for k, v in _pxd_constants().items() if k.startswith(prefix)}
    assert constants, f"no {prefix}* constants found in {PXD.name}"
    members = {m.name: int(m) for m in enum}  # type: ignore[attr-defined]
    for name, value in constants.items():
        assert members.get(name) == value, f"{prefix}{name} = {value} but {enum.__name__}.{name}"
    # Every member the book can emit by itself has a C twin; DISCONNECT and
    # KILL_SWITCH reach it through `reason=` and 40+ are the daemon's risk checks.
    not_from_book = {"DISCONNECT", "KILL_SWITCH"} | {n for n, v in members.items() if v >= 40}
    missing = set(members) - set(constants) - not_from_book
    assert not missing, f"{enum.__name__} members without a C constant: {sorted(missing)}"
