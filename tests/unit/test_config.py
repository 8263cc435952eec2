"""The daemon configuration: the default, validation messages, secrets."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from lltrade import protocol
from lltrade.config import (
    DEFAULT_CONFIG_TOML,
    DEMO_SECRETS,
    Config,
    ConfigError,
    default_config,
    hash_secret,
    load_config,
    parse_config,
    verify_secret,
)


def fast_hash(secret: str, salt: bytes | None = None) -> str:
    """Cheap scrypt parameters keep the tests fast; the format is the same."""
    return hash_secret(secret, salt=salt, n=16, r=1, p=1)


HASH = fast_hash("s3cret", salt=b"0123456789abcdef")

MINIMAL = f"""\
[[symbols]]
id = 1
name = "X"
tick = 5
lot = 10
min_price = 5
max_price = 1000
reference_price = 500
price_decimals = 2

[[symbols]]
id = 2
name = "Y"
tick = 1
lot = 1
min_price = -100
max_price = 100
reference_price = 0
price_decimals = 0

[[accounts]]
id = 1
name = "trader1"
secret_hash = "{HASH}"
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config.toml")
    return str(info.value)


# -- the default --------------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    config = parse_config(DEFAULT_CONFIG_TOML, "<default>")
    assert config == default_config() == load_config(None)
    assert load_config() is default_config()  # parsed once
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9000)
    assert config.server.max_frame == protocol.DEFAULT_MAX_CLIENT_FRAME
    assert [s.name for s in config.symbols] == ["DEMO", "ACME", "BTC-USD"]
    assert config.symbol("DEMO").price_decimals == 2
    assert {a.role for a in config.accounts} == {"trader", "admin"}
    assert config.account("admin").role == "admin"
    with pytest.raises(KeyError):
        config.symbol("NOPE")
    with pytest.raises(KeyError):
        config.account("nobody")


def test_demo_secrets_verify_and_are_not_stored_in_clear() -> None:
    config = default_config()
    assert {a.name for a in config.accounts} == set(DEMO_SECRETS)
    for account in config.accounts:
        secret = DEMO_SECRETS[account.name]
        assert secret not in account.secret_hash
        assert account.secret_hash.startswith("scrypt$16384$8$1$")
        assert verify_secret(secret, account.secret_hash)
    alice = config.account("alice").secret_hash
    assert not verify_secret(DEMO_SECRETS["bob"], alice)


def test_minimal_config_takes_defaults() -> None:
    config = parse_config(MINIMAL)
    assert isinstance(config, Config)
    assert config.server.port == 9000
    assert config.process.cpu is None and config.process.gc_freeze
    assert config.journal.durability == "batch"
    assert config.telemetry.shm_name == "lltrade"
    assert config.symbols[0].limits.price_collar is None
    account = config.accounts[0]
    assert account.role == "trader" and account.cancel_on_disconnect
    assert account.limits.msg_rate_per_s == 100_000


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]
    changed = msgspec.structs.replace(config.server, port=1)
    assert changed.port == 1 and config.server.port == 9000


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "lltrade.toml"
    path.write_text(MINIMAL + "\n[server]\nport = 9100\n\n[process]\ncpu = 3\nbusy_poll = true\n")
    config = load_config(path)
    assert config.server.port == 9100
    assert config.process.cpu == 3 and config.process.busy_poll


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml: \$: cannot read"):
        load_config(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary\.toml: \$: cannot read"):
        load_config(binary)


def test_bad_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace("tick = 5", "tick = 0"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: $.symbols[0].tick: Expected int >= 1"
    assert info.value.path == "$.symbols[0].tick"
    assert info.value.problem == "Expected int >= 1"
    assert info.value.source == str(path)


# -- each kind of bad config ----------------------------------------------------------------

BAD = [
    # types and ranges (msgspec)
    (
        MINIMAL.replace("tick = 1\n", "tick = 0\n"),
        "config.toml: $.symbols[1].tick: Expected int >= 1",
    ),
    (
        MINIMAL.replace("tick = 5", 'tick = "5"'),
        "config.toml: $.symbols[0].tick: Expected int, got str",
    ),
    (
        MINIMAL + "[server]\nport = 70000\n",
        "config.toml: $.server.port: Expected int <= 65535",
    ),
    (
        MINIMAL + "[server]\nprot = 9000\n",
        "config.toml: $.server.prot: unknown key",
    ),
    (
        MINIMAL + "[sever]\nport = 9000\n",
        "config.toml: $.sever: unknown key",
    ),
    (
        MINIMAL.replace("lot = 10\n", ""),
        "config.toml: $.symbols[0].lot: missing required key",
    ),
    (
        MINIMAL.replace("[[accounts]]", "[[accounts]]\nrole = 'root'"),
        "config.toml: $.accounts[0].role: Invalid enum value 'root'",
    ),
    (
        MINIMAL + "[journal]\ndurability = 'sometimes'\n",
        "config.toml: $.journal.durability: Invalid enum value 'sometimes'",
    ),
    (
        MINIMAL + "[process]\ncpu = -1\n",
        "config.toml: $.process.cpu: Expected int >= 0",
    ),
    (
        MINIMAL + "[process]\nmlockall = 1\n",
        "config.toml: $.process.mlockall: Expected bool, got int",
    ),
    (
        MINIMAL.replace('name = "X"', 'name = "has space"'),
        "config.toml: $.symbols[0].name: Expected str matching regex",
    ),
    (
        MINIMAL.replace('name = "trader1"', "name = 'trader1'\nlimits = { max_open_orders = 0 }"),
        "config.toml: $.accounts[0].limits.max_open_orders: Expected int >= 1",
    ),
    (
        MINIMAL.replace("price_decimals = 2", "price_decimals = 2\nlimits = { collar = 5 }"),
        "config.toml: $.symbols[0].limits.collar: unknown key",
    ),
    (
        MINIMAL.split("[[accounts]]")[0],
        "config.toml: $.accounts: missing required key",
    ),
    (
        MINIMAL.replace("[[accounts]]", "[[accountz]]"),
        "config.toml: $.accountz: unknown key",
    ),
    (
        "symbols = []\naccounts = []\n",
        "config.toml: $.symbols: Expected array of length >= 1",
    ),
    # invalid TOML
    (
        MINIMAL + "[server\n",
        "config.toml: $: invalid TOML:",
    ),
    # rules across keys
    (
        MINIMAL.replace("min_price = 5\n", "min_price = 7\n"),
        "config.toml: $.symbols[0].min_price: must be a multiple of tick (5)",
    ),
    (
        MINIMAL.replace("max_price = 1000", "max_price = 1001"),
        "config.toml: $.symbols[0].max_price: must be a multiple of tick (5)",
    ),
    (
        MINIMAL.replace("max_price = 100\n", "max_price = -200\n"),
        "config.toml: $.symbols[1].max_price: must be >= min_price (-100)",
    ),
    (
        MINIMAL.replace("reference_price = 500", "reference_price = 2000"),
        "config.toml: $.symbols[0].reference_price: must be within min_price..max_price",
    ),
    (
        MINIMAL.replace("id = 2", "id = 1"),
        "config.toml: $.symbols[1].id: duplicate symbol id 1 (also $.symbols[0])",
    ),
    (
        MINIMAL.replace('name = "Y"', 'name = "X"'),
        "config.toml: $.symbols[1].name: duplicate symbol name 'X' (also $.symbols[0])",
    ),
    (
        MINIMAL + f'[[accounts]]\nid = 1\nname = "other"\nsecret_hash = "{HASH}"\n',
        "config.toml: $.accounts[1].id: duplicate account id 1 (also $.accounts[0])",
    ),
    (
        MINIMAL + f'[[accounts]]\nid = 2\nname = "trader1"\nsecret_hash = "{HASH}"\n',
        "config.toml: $.accounts[1].name: duplicate account name 'trader1' (also $.accounts[0])",
    ),
    (
        MINIMAL.replace(HASH, "hunter2"),
        "config.toml: $.accounts[0].secret_hash: not a scrypt hash from hash_secret(): expected",
    ),
    (
        MINIMAL.replace(HASH, HASH.replace("scrypt$16$", "scrypt$15$")),
        "config.toml: $.accounts[0].secret_hash: not a scrypt hash from hash_secret(): "
        "n must be a power of two",
    ),
    (
        MINIMAL.replace(HASH, HASH[:-1] + "z"),
        "config.toml: $.accounts[0].secret_hash: not a scrypt hash from hash_secret(): "
        "n, r, p must be integers and salt, hash hex strings",
    ),
    (
        MINIMAL + "[server]\nheartbeat_ms = 5000\nidle_timeout_ms = 5000\n",
        "config.toml: $.server.idle_timeout_ms: must be greater than heartbeat_ms (5000)",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(": ")[1] for _, m in BAD])
def test_bad_config_names_key_and_problem(text: str, message: str) -> None:
    assert error_of(text).startswith(message)


def test_error_messages_have_no_backticks() -> None:
    for text, _ in BAD:
        assert "`" not in error_of(text)


# -- secrets ------------------------------------------------------------------------------------


def test_hash_and_verify() -> None:
    stored = fast_hash("correct horse")
    assert verify_secret("correct horse", stored)
    assert not verify_secret("correct horsE", stored)
    assert not verify_secret("", stored)
    assert not verify_secret("correct horse ", stored)
    parts = stored.split("$")
    assert parts[:4] == ["scrypt", "16", "1", "1"]
    assert len(bytes.fromhex(parts[4])) == 16 and len(bytes.fromhex(parts[5])) == 32


def test_salt_is_random_and_fixed_salt_is_reproducible() -> None:
    assert fast_hash("x") != fast_hash("x")
    salt = b"fixed-salt-bytes"
    assert fast_hash("x", salt) == fast_hash("x", salt)


def test_unicode_secret() -> None:
    stored = fast_hash("pässwörd-🔑")
    assert verify_secret("pässwörd-🔑", stored)
    assert not verify_secret("passwort", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "hunter2",
        "scrypt$16$1$1$00",
        "bcrypt$16$1$1$30313233343536373839616263646566$" + "00" * 32,
        "scrypt$16$1$1$zz$" + "00" * 32,
        "scrypt$17$1$1$30313233343536373839616263646566$" + "00" * 32,
        "scrypt$1048576$64$1$30313233343536373839616263646566$" + "00" * 32,  # too costly
        "scrypt$16$1$1$30313233343536373839616263646566$00",  # hash too short
        HASH + "$",
    ],
)
def test_malformed_stored_hash_verifies_nothing(stored: str) -> None:
    assert not verify_secret("s3cret", stored)


def test_hash_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="power of two"):
        hash_secret("x", n=1000)
    with pytest.raises(ValueError, match="r must be"):
        hash_secret("x", n=16, r=0)
    with pytest.raises(ValueError, match="salt"):
        fast_hash("x", salt=b"short")
