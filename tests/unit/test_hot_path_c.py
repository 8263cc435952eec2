"""The order path compiles to plain C: no Python C-API call in its functions.

Reads the C that Cython generated for the release build (``make build``
leaves it in build/cython/).  Only the error path of ``_step`` (a failed
capacity reservation between commands) may touch Python.
"""

import re
from pathlib import Path

import pytest

GENERATED = Path(__file__).resolve().parents[2] / "build/cython/src/lltrade/_book.c"
HOT = [
    "_add", "_market", "_cancel", "_reduce", "_replace", "_mass_cancel_side", "_match",
    "_fok_fillable", "_link", "_unlink", "_free_order", "_emit_levels", "_touch", "_execute",
    "_event_bound",
]  # fmt: skip
PY_API = re.compile(r"\bPy(Object|Number|Long|Err|List|Tuple|Dict)_\w+|\bPy_(X?INC|X?DEC)REF\b")


def _function_body(source: str, name: str) -> str:
    head = re.compile(rf"^static [^;\n]*__pyx_f_7lltrade_5_book_9OrderBook_{name}\([^;]*$", re.M)
    match = head.search(source)
    assert match is not None, f"no C function for OrderBook.{name} in {GENERATED.name}"
    end = source.index("\n}\n", match.end())
    body = source[match.end() : end]
    return re.sub(r"/\*.*?\*/", "", body, flags=re.S)


@pytest.fixture(scope="module")
def generated() -> str:
    assert GENERATED.exists(), f"{GENERATED} is missing: run `make build` first"
    return GENERATED.read_text()


@pytest.mark.parametrize("name", HOT)
def test_no_python_api_in_order_path(generated: str, name: str) -> None:
    body = _function_body(generated, name)
    calls = sorted(set(m.group(0) for m in PY_API.finditer(body)))
    assert not calls, f"OrderBook.{name} calls the Python C-API: {calls}"
