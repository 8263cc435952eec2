"""The argparse types every command line shares: the values they take and the one-line errors."""

from __future__ import annotations

import argparse

import pytest

from lltrade.argtypes import listen_port, port, positive_int, seconds


def test_accepted_values() -> None:
    assert positive_int("7") == 7
    assert (port("1"), port("65535")) == (1, 65535)
    assert (listen_port("0"), listen_port("9000")) == (0, 9000)
    assert seconds()("0.25") == 0.25
    assert seconds(3600)("3600") == 3600.0
    assert seconds(10, zero=True)("0") == 0.0


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_int, "0", "must be >= 1, got 0"),
        (positive_int, "1.5", "not an integer: '1.5'"),
        (port, "0", "port must be 1..65535, got 0"),
        (port, "http", "not a port number: 'http'"),
        (listen_port, "65536", "port must be 0..65535, got 65536"),
        (seconds(), "0", "must be > 0 seconds, got 0"),
        (seconds(), "nan", "must be > 0 seconds, got nan"),
        (seconds(3600), "7200", "must be > 0 and <= 3600 seconds, got 7200"),
        (seconds(10, zero=True), "-1", "must be >= 0 and <= 10 seconds, got -1"),
        (seconds(), "soon", "not a number of seconds: 'soon'"),
    ],
)
def test_refused_values_say_why(parse: object, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as exc:
        parse(text)  # type: ignore[operator]
    assert str(exc.value) == message


def test_argparse_reports_them_as_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--timeout", type=seconds())
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--timeout", "-3"])
    assert exc.value.code == 2
    assert "argument --timeout: must be > 0 seconds, got -3" in capsys.readouterr().err
