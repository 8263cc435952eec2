"""The order path compiles to plain C: no Python C-API call in its functions.

Reads the C that Cython generated for the release build (``make build``
leaves it in build/cython/).  Only the error path of ``_step`` (a failed
capacity reservation between commands) may touch Python.  The same holds for
the order gate's per-message and per-event functions: its ``def`` wrappers
read the message's attributes and make room, and then hand C values to them.
"""

import re
from pathlib import Path

import pytest

BUILD = Path(__file__).resolve().parents[2] / "build/cython/src/lltrade"
# (module, C name prefix of its functions, functions)
HOT = [
    ("_book", "OrderBook_", name)
    for name in [
        "_add", "_market", "_cancel", "_reduce", "_replace", "_mass_cancel_side", "_match",
        "_fok_fillable", "_link", "_unlink", "_free_order", "_emit_levels", "_touch", "_execute",
        "_event_bound",
    ]
] + [
    ("_gate", "OrderGate_", name)
    for name in ["_admit_new", "_admit_change", "_admit_mass_cancel", "_apply", "_finish", "_flush"]
] + [
    ("_gate", "", name)
    for name in ["_take_token", "_outside_collar", "_over_notional", "_command", "_u8", "_abs64"]
]  # fmt: skip
PY_API = re.compile(r"\bPy(Object|Number|Long|Err|List|Tuple|Dict)_\w+|\bPy_(X?INC|X?DEC)REF\b")


def _function_body(source: str, module: str, owner: str, name: str) -> str:
    # Cython mangles a name as its length followed by the name: _book -> 5_book.
    cls = f"{len(owner) - 1}{owner}" if owner else ""
    symbol = f"__pyx_f_7lltrade_{len(module)}{module}_{cls}{name}"
    head = re.compile(rf"^static [^;\n]*{symbol}\([^;]*$", re.M)
    match = head.search(source)
    assert match is not None, f"no C function {symbol} in {module}.c"
    end = source.index("\n}\n", match.end())
    body = source[match.end() : end]
    return re.sub(r"/\*.*?\*/", "", body, flags=re.S)


_sources: dict[str, str] = {}


def _generated(module: str) -> str:
    if module not in _sources:
        path = BUILD / f"{module}.c"
        assert path.exists(), f"{path} is missing: run `make build` first"
        _sources[module] = path.read_text()
    return _sources[module]


@pytest.mark.parametrize(("module", "owner", "name"), HOT)
def test_no_python_api_in_order_path(module: str, owner: str, name: str) -> None:
    body = _function_body(_generated(module), module, owner, name)
    calls = sorted(set(m.group(0) for m in PY_API.finditer(body)))
    assert not calls, f"{module}.{owner}{name} calls the Python C-API: {calls}"
