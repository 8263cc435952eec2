"""The daemon's configuration: TOML, validated on load.

The file is read with the standard library's ``tomllib`` and converted into
frozen msgspec Structs with ``msgspec.convert``; then the checks that span
several keys run.  Any problem raises :class:`ConfigError`, whose message
names the file, the key as a path and the problem::

    config.toml: $.symbols[1].tick: Expected int >= 1

With no file the daemon runs on :data:`DEFAULT_CONFIG_TOML`: three demo
symbols and three demo accounts whose secrets are in :data:`DEMO_SECRETS`.

Secrets are stored only as scrypt hashes, ``scrypt$n$r$p$salt_hex$hash_hex``
(:func:`hash_secret`, :func:`verify_secret`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from lltrade._book import Engine

__all__ = [
    "DEFAULT_CONFIG_TOML",
    "DEMO_SECRETS",
    "AccountConfig",
    "AccountLimits",
    "Config",
    "ConfigError",
    "JournalConfig",
    "ProcessConfig",
    "ServerConfig",
    "SymbolConfig",
    "SymbolLimits",
    "TelemetryConfig",
    "default_config",
    "hash_secret",
    "load_config",
    "parse_config",
    "verify_secret",
]

_I64_MAX: Final = 2**63 - 1
_I64_MIN: Final = -(2**63)

Int64 = Annotated[int, msgspec.Meta(ge=_I64_MIN, le=_I64_MAX)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=_I64_MAX)]
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=_I64_MAX)]
Millis = Annotated[int, msgspec.Meta(ge=1, le=86_400_000)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A config table: unknown keys are errors (they are usually typos)."""


# -- sections -----------------------------------------------------------------------


class ServerConfig(_Section, frozen=True, kw_only=True):
    """``[server]``: the order-entry listener and session timing."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9000  #: 0 picks a free port
    max_frame: Annotated[int, msgspec.Meta(ge=64, le=16 * 1024 * 1024)] = 64 * 1024
    heartbeat_ms: Millis = 1_000  #: either side sends a Heartbeat after this much silence
    idle_timeout_ms: Millis = 5_000  #: disconnect after this long without receiving anything
    logon_timeout_ms: Millis = 5_000  #: a connection must log on within this
    max_sessions: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 1024
    """Most sessions logged on at once."""
    max_outbound_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 8 * 1024 * 1024
    """Slow-consumer bound: a session whose unsent output passes it is cut off."""


class ProcessConfig(_Section, frozen=True, kw_only=True):
    """``[process]``: how the daemon sets up its one thread."""

    cpu: Annotated[int, msgspec.Meta(ge=0, le=4095)] | None = None  #: core to pin to
    mlockall: bool = False  #: lock all current and future memory
    busy_poll: bool = False  #: the loop never sleeps (100% of its core)
    gc_freeze: bool = True  #: gc.freeze() after start-up, collector off the hot path


class SymbolLimits(_Section, frozen=True, kw_only=True):
    """``[symbols.limits]``: per-symbol pre-trade risk; absent = no limit."""

    price_collar: NonNegative | None = None
    """Largest allowed |price - reference_price|, in price units."""
    max_order_qty: Positive | None = None  #: quantity units
    max_notional: Positive | None = None  #: |price| * qty, price units x quantity units


class SymbolConfig(_Section, frozen=True, kw_only=True):
    """``[[symbols]]``: one order book."""

    id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,31}$")]
    tick: Positive  #: price grid, in price units
    lot: Positive  #: quantity grid, in quantity units
    min_price: Int64  #: lowest allowed price, a multiple of tick
    max_price: Int64  #: highest allowed price, a multiple of tick
    reference_price: Int64  #: centre of the price collar, inside the band
    price_decimals: Annotated[int, msgspec.Meta(ge=0, le=18)]
    """A wire price p means the decimal price p * 10**-price_decimals."""
    qty_decimals: Annotated[int, msgspec.Meta(ge=0, le=18)] = 0
    """A wire quantity q means the decimal quantity q * 10**-qty_decimals."""
    max_orders: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] = 4_194_304
    """Most resting orders the book may hold; beyond it GTC adds are rejected."""
    limits: SymbolLimits = msgspec.field(default_factory=SymbolLimits)


class AccountLimits(_Section, frozen=True, kw_only=True):
    """``[accounts.limits]``: per-account pre-trade risk."""

    max_order_qty: Positive = 1_000_000  #: quantity units, any symbol
    max_notional: Positive = 10**15  #: |price| * qty of one order
    max_open_orders: Positive = 10_000  #: resting orders over all symbols
    max_position: Positive = 10**9  #: |net position| per symbol, quantity units
    msg_rate_per_s: Positive = 100_000  #: messages per second per session


class AccountConfig(_Section, frozen=True, kw_only=True):
    """``[[accounts]]``: who may log on."""

    id: Positive
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    secret_hash: str  #: scrypt$n$r$p$salt_hex$hash_hex, see hash_secret()
    role: Literal["trader", "admin"] = "trader"
    cancel_on_disconnect: bool = True  #: cancel the session's resting orders when it ends
    limits: AccountLimits = msgspec.field(default_factory=AccountLimits)


class JournalConfig(_Section, frozen=True, kw_only=True):
    """``[journal]``: the write-ahead journal."""

    dir: str = "journal"  #: relative paths are relative to the working directory
    durability: Literal["none", "batch", "interval"] = "batch"
    """none: page cache only; batch: fdatasync per batch before acks;
    interval: fdatasync every interval_ms."""
    interval_ms: Millis = 5
    ack_after_sync: bool = False  #: interval mode: acks wait for the next fdatasync
    enabled: bool = True  #: false: no journal at all (benchmarks; nothing survives a restart)
    segment_mb: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 256
    """A segment file is closed and a new one started past this size."""
    mmap: bool = True
    """Append through a shared memory map of the segment, preallocated 8 MiB ahead (no
    system call per batch; the same page cache, so the same durability); false: one
    write(2) per batch."""
    snapshot_every: Annotated[int, msgspec.Meta(ge=0)] = 5_000_000
    """Take a snapshot after this many commands (0: only at shutdown)."""
    keep_snapshots: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 2
    """Snapshots kept; journal segments older than the oldest kept one are deleted."""
    snapshot_fallback: bool = False
    """If the newest snapshot fails its checksum, start from an older one (and replay more
    journal) instead of stopping; an operator's decision (``--allow-snapshot-fallback``)."""


class TelemetryConfig(_Section, frozen=True, kw_only=True):
    """``[telemetry]``: the shared-memory telemetry block."""

    shm_name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,200}$")] = "lltrade"
    """File name under /dev/shm."""
    interval_ms: Millis = 1_000  #: gauge update and exporter sampling period
    enabled: bool = True  #: false: publish nothing


class Config(_Section, frozen=True, kw_only=True):
    """The whole configuration file."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    process: ProcessConfig = msgspec.field(default_factory=ProcessConfig)
    journal: JournalConfig = msgspec.field(default_factory=JournalConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    symbols: Annotated[tuple[SymbolConfig, ...], msgspec.Meta(min_length=1)]
    accounts: Annotated[tuple[AccountConfig, ...], msgspec.Meta(min_length=1)]

    def new_engine(self) -> Engine:
        """An engine with one empty book per configured symbol (the daemon's, or a replay's)."""
        engine = Engine()
        for s in self.symbols:
            engine.add_book(s.id, s.min_price, s.max_price, s.tick, s.lot, max_orders=s.max_orders)
        return engine

    def symbol(self, name: str) -> SymbolConfig:
        """The symbol called ``name`` (``KeyError`` if none)."""
        for s in self.symbols:
            if s.name == name:
                return s
        raise KeyError(name)

    def account(self, name: str) -> AccountConfig:
        """The account called ``name`` (``KeyError`` if none)."""
        for a in self.accounts:
            if a.name == name:
                return a
        raise KeyError(name)


# -- errors -----------------------------------------------------------------------------


class ConfigError(Exception):
    """A configuration that cannot be used.

    ``str(error)`` is ``"<source>: <path>: <problem>"``, e.g.
    ``config.toml: $.symbols[1].tick: Expected int >= 1``.

    Attributes
    ----------
    source
        The file name (or ``<default>``, ``<string>``).
    path
        The key, as a JSONPath-like ``$.section.key`` / ``$.symbols[1].tick``;
        ``$`` for the whole file.
    problem
        What is wrong with it.
    """

    def __init__(self, source: str, path: str, problem: str) -> None:
        super().__init__(f"{source}: {path}: {problem}")
        self.source = source
        self.path = path
        self.problem = problem


_MSGSPEC_ERROR = re.compile(r"^(?P<problem>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_FIELD_PROBLEM = re.compile(
    r"^Object (?:missing required|contains unknown) field `(?P<key>[^`]*)`$"
)


def _from_validation_error(source: str, exc: msgspec.ValidationError) -> ConfigError:
    m = _MSGSPEC_ERROR.match(str(exc))
    assert m is not None  # the pattern matches any string
    problem = m["problem"]
    path = m["path"] or "$"
    field = _FIELD_PROBLEM.match(problem)
    if field:
        path = f"{path}.{field['key']}"
        problem = "missing required key" if "missing" in problem else "unknown key"
    return ConfigError(source, path, problem.replace("`", ""))


# -- loading -------------------------------------------------------------------------------


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate a TOML configuration.

    Parameters
    ----------
    text
        The TOML document.
    source
        Name used in error messages (usually the file name).

    Raises
    ------
    ConfigError
        Naming the source, the key and the problem.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "$", f"invalid TOML: {exc}") from None
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise _from_validation_error(source, exc) from None
    _check(config, source)
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the configuration file at ``path``, or the embedded default if None.

    Raises
    ------
    ConfigError
        If the file cannot be read or is not a valid configuration.
    """
    if path is None:
        return default_config()
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "$", f"cannot read: {exc}") from None
    return parse_config(text, source)


@functools.cache
def default_config() -> Config:
    """The embedded default configuration (:data:`DEFAULT_CONFIG_TOML`), parsed once."""
    return parse_config(DEFAULT_CONFIG_TOML, "<default>")


def _check(config: Config, source: str) -> None:
    """The rules that span several keys."""

    def fail(path: str, problem: str) -> None:
        raise ConfigError(source, path, problem)

    server = config.server
    if server.idle_timeout_ms <= server.heartbeat_ms:
        fail(
            "$.server.idle_timeout_ms",
            f"must be greater than heartbeat_ms ({server.heartbeat_ms})",
        )

    seen_ids: dict[int, int] = {}
    seen_names: dict[str, int] = {}
    for i, s in enumerate(config.symbols):
        at = f"$.symbols[{i}]"
        if s.id in seen_ids:
            fail(f"{at}.id", f"duplicate symbol id {s.id} (also $.symbols[{seen_ids[s.id]}])")
        if s.name in seen_names:
            fail(
                f"{at}.name",
                f"duplicate symbol name {s.name!r} (also $.symbols[{seen_names[s.name]}])",
            )
        seen_ids[s.id] = seen_names[s.name] = i
        for key in ("min_price", "max_price"):
            if getattr(s, key) % s.tick:
                fail(f"{at}.{key}", f"must be a multiple of tick ({s.tick})")
        if s.min_price > s.max_price:
            fail(f"{at}.max_price", f"must be >= min_price ({s.min_price})")
        if not s.min_price <= s.reference_price <= s.max_price:
            fail(
                f"{at}.reference_price",
                f"must be within min_price..max_price ({s.min_price}..{s.max_price})",
            )

    seen_ids.clear()
    seen_names.clear()
    for i, a in enumerate(config.accounts):
        at = f"$.accounts[{i}]"
        if a.id in seen_ids:
            fail(f"{at}.id", f"duplicate account id {a.id} (also $.accounts[{seen_ids[a.id]}])")
        if a.name in seen_names:
            fail(
                f"{at}.name",
                f"duplicate account name {a.name!r} (also $.accounts[{seen_names[a.name]}])",
            )
        seen_ids[a.id] = seen_names[a.name] = i
        try:
            _parse_secret_hash(a.secret_hash)
        except ValueError as exc:
            fail(f"{at}.secret_hash", f"not a scrypt hash from hash_secret(): {exc}")


# -- secrets ------------------------------------------------------------------------------------

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_SALT_BYTES: Final = 16
_KEY_BYTES: Final = 32
_MAX_SCRYPT_MEMORY: Final = 256 * 1024 * 1024


def hash_secret(
    secret: str,
    *,
    salt: bytes | None = None,
    n: int = SCRYPT_N,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
) -> str:
    """Hash a secret for an account's ``secret_hash``.

    Parameters
    ----------
    secret
        The clear-text secret (UTF-8 encoded before hashing).
    salt
        16 random bytes by default; pass one only for reproducible fixtures.
    n, r, p
        scrypt cost parameters (n a power of two).  The defaults cost about
        16 MiB and tens of milliseconds per verification.

    Returns
    -------
    str
        ``scrypt$n$r$p$salt_hex$hash_hex``.
    """
    if salt is None:
        salt = os.urandom(_SALT_BYTES)
    _check_scrypt_params(n, r, p, salt)
    key = _scrypt(secret, salt, n, r, p, _KEY_BYTES)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    """True if ``secret`` hashes to ``stored`` (compared in constant time).

    A malformed ``stored`` value verifies nothing.
    """
    try:
        n, r, p, salt, expected = _parse_secret_hash(stored)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p, len(expected)), expected)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen
    )


def _check_scrypt_params(n: int, r: int, p: int, salt: bytes) -> None:
    if n < 2 or n & (n - 1):
        raise ValueError(f"n must be a power of two >= 2, got {n}")
    if not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError(f"r must be 1..64 and p 1..16, got r={r} p={p}")
    if 128 * r * n > _MAX_SCRYPT_MEMORY:
        raise ValueError(f"n={n}, r={r} needs more than {_MAX_SCRYPT_MEMORY >> 20} MiB")
    if not 8 <= len(salt) <= 64:
        raise ValueError(f"salt must be 8..64 bytes, got {len(salt)}")


def _parse_secret_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$n$r$p$salt_hex$hash_hex")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = bytes.fromhex(parts[4])
        key = bytes.fromhex(parts[5])
    except ValueError:
        raise ValueError("n, r, p must be integers and salt, hash hex strings") from None
    _check_scrypt_params(n, r, p, salt)
    if not 16 <= len(key) <= 64:
        raise ValueError(f"hash must be 16..64 bytes, got {len(key)}")
    return n, r, p, salt, key


# -- the embedded default ----------------------------------------------------------------------

DEMO_SECRETS: Final[dict[str, str]] = {
    "alice": "alice-demo-secret",
    "bob": "bob-demo-secret",
    "admin": "admin-demo-secret",
}
"""Clear-text secrets of the demo accounts in :data:`DEFAULT_CONFIG_TOML`.

Published on purpose: the default config is for trying lltrade on one's own
machine (it listens on 127.0.0.1 only).  Never use it on a shared host.
"""

DEFAULT_CONFIG_TOML: Final = """\
# lltrade's embedded default configuration: a demo system on 127.0.0.1:9000.
# The demo accounts' secrets are public (lltrade.config.DEMO_SECRETS):
#   alice / alice-demo-secret, bob / bob-demo-secret, admin / admin-demo-secret

[server]
host = "127.0.0.1"
port = 9000

[process]
mlockall = false
busy_poll = false
gc_freeze = true

[journal]
dir = "journal"
durability = "none"      # demo: page cache only (survives a process crash)

[telemetry]
shm_name = "lltrade"
interval_ms = 1000

# DEMO: prices in cents (0.01), whole-unit quantities.
[[symbols]]
id = 1
name = "DEMO"
tick = 1
lot = 1
min_price = 1                # 0.01
max_price = 10_000_000       # 100000.00
reference_price = 10_000     # 100.00
price_decimals = 2
limits = { price_collar = 2_000, max_order_qty = 100_000 }

# ACME: a 0.05 tick and round lots of 10.
[[symbols]]
id = 2
name = "ACME"
tick = 5
lot = 10
min_price = 5
max_price = 1_000_000
reference_price = 25_000     # 250.00
price_decimals = 2
limits = { price_collar = 5_000, max_order_qty = 1_000_000 }

# BTC-USD: prices to 0.1, quantities to 0.0001; a wide, sparse band.
[[symbols]]
id = 3
name = "BTC-USD"
tick = 1
lot = 1
min_price = 1
max_price = 100_000_000      # 10000000.0
reference_price = 600_000    # 60000.0
price_decimals = 1
qty_decimals = 4
limits = { price_collar = 60_000 }

[[accounts]]
id = 1
name = "alice"
secret_hash = "scrypt$16384$8$1$616c6963652d64656d6f2d73616c7421$\
6c91b425d031ea89b667ab0a4637eaa63ae519908e4a9cd1308a14e7f3a086d9"
role = "trader"
cancel_on_disconnect = true

[[accounts]]
id = 2
name = "bob"
secret_hash = "scrypt$16384$8$1$626f622d64656d6f2d73616c74212121$\
7c8f031e58ddcf6f7de6f27fdfac6953502d611ba8c76e14683d34d3247c6c49"
role = "trader"
cancel_on_disconnect = true

[[accounts]]
id = 100
name = "admin"
secret_hash = "scrypt$16384$8$1$61646d696e2d64656d6f2d73616c7421$\
e94057df8958c094737ef8d2c4a3bf4ad2900196db3cf07b16507ef245c67b08"
role = "admin"
cancel_on_disconnect = false
limits = { max_open_orders = 100_000, msg_rate_per_s = 1_000_000 }
"""
"""The configuration used when no file is given; also a commented example."""
