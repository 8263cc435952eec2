"""Sessions of the load generator: connect, log on, clean up, log out (blocking sockets).

Everything here happens outside the measured loop, so it reads the stream
with the protocol's own ``FrameReader`` and waits with socket timeouts.  A
problem the user can fix (no daemon there, logon refused, a symbol the
daemon does not trade) raises :class:`SessionError` with one line that says
what and where; the command turns it into exit code 2.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

from lltrade.protocol import (
    DAEMON_DECODER,
    PROTOCOL_VERSION,
    Disconnect,
    Done,
    FrameError,
    FrameReader,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
    MassCancel,
    Reject,
    SymbolInfo,
    Unsubscribe,
    encode_frame,
    reason_name,
)
from loadgen_orders import SymbolSpec

CONNECT_TIMEOUT_S: Final = 5.0
LOGON_TIMEOUT_S: Final = 10.0
MAX_DAEMON_FRAME: Final = 16 << 20


class SessionError(Exception):
    """The daemon cannot be used as asked (one line, no traceback)."""


@dataclass
class Session:
    """A logged-on connection and what the daemon told it at logon."""

    sock: socket.socket
    reader: FrameReader[Any]
    seq: int  #: the last sequence number sent
    ack: LogonAck
    symbols: dict[str, SymbolSpec]

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def connect(host: str, port: int) -> socket.socket:
    """A TCP connection with Nagle off, or :class:`SessionError` naming the address."""
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SessionError(
            f"cannot reach the daemon at {host}:{port}: {reason} (is `lltrade run` running there?)"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until(
    sock: socket.socket, reader: FrameReader[Any], ref_seq: int, what: str
) -> list[Any]:
    """Messages before the ``Done`` answering ``ref_seq``; :class:`SessionError` on a refusal."""
    got: list[Any] = []
    deadline = time.monotonic() + LOGON_TIMEOUT_S
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            raise SessionError(f"{what}: no answer from the daemon") from None
        except OSError as exc:
            raise SessionError(f"{what}: connection lost: {exc}") from None
        if not data:
            raise SessionError(f"{what}: the daemon closed the connection")
        for msg in reader.feed(data):
            if isinstance(msg, LogonReject):
                raise SessionError(f"{what} rejected: {_why(msg.reason, msg.text)}")
            if isinstance(msg, Disconnect):
                raise SessionError(f"{what}: disconnected: {_why(msg.reason, msg.text)}")
            if isinstance(msg, FrameError):
                raise SessionError(f"{what}: bad frame from the daemon: {msg.text}")
            if isinstance(msg, Reject) and msg.ref_seq == ref_seq:
                raise SessionError(f"{what}: refused: {_why(msg.reason, msg.text)}")
            if isinstance(msg, Done) and msg.ref_seq == ref_seq:
                return got
            got.append(msg)


def _why(reason: int, text: str) -> str:
    return reason_name(reason) + (f" ({text})" if text else "")


def logon(host: str, port: int, account: str, secret: str, *, mass_cancel: bool = False) -> Session:
    """Connect and log on; read the ``SymbolInfo`` messages; return the session.

    The logon is followed at once by a marker request answered with ``Done``
    (``MassCancel`` of the account's resting orders with ``mass_cancel``, an
    empty ``Unsubscribe`` otherwise), so everything the daemon sends before
    that ``Done`` belongs to the logon and the measured loop reads nothing else.
    """
    sock = connect(host, port)
    reader: FrameReader[Any] = FrameReader(DAEMON_DECODER, MAX_DAEMON_FRAME)
    marker = MassCancel(2, 0, 0) if mass_cancel else Unsubscribe(2, ())
    out = bytearray()
    encode_frame(Logon(1, PROTOCOL_VERSION, account, secret), out)
    encode_frame(marker, out)
    try:
        sock.sendall(out)
        got = _read_until(sock, reader, 2, f"logon as {account!r} at {host}:{port}")
    except OSError as exc:
        sock.close()
        raise SessionError(f"cannot send to the daemon at {host}:{port}: {exc}") from None
    except BaseException:
        sock.close()
        raise
    acks = [m for m in got if isinstance(m, LogonAck)]
    if not acks:
        sock.close()
        raise SessionError(f"logon as {account!r}: the daemon sent no LogonAck")
    symbols = {
        m.name: SymbolSpec(
            m.symbol, m.name, m.tick, m.lot, m.min_price, m.max_price, m.reference_price
        )
        for m in got
        if isinstance(m, SymbolInfo)
    }
    return Session(sock, reader, 2, acks[0], symbols)


def mass_cancel(session: Session) -> None:
    """Cancel every resting order of the session's account, in every symbol; wait for ``Done``."""
    seq = session.next_seq()
    out = bytearray()
    encode_frame(MassCancel(seq, 0, 0), out)
    session.sock.sendall(out)
    _read_until(session.sock, session.reader, seq, "the clean-up (MassCancel)")


def logout(session: Session, timeout: float = 2.0) -> None:
    """Send ``Logout`` and read until the daemon closes; close the socket whatever happens."""
    sock = session.sock
    with contextlib.suppress(OSError):
        out = bytearray()
        encode_frame(Logout(session.next_seq()), out)
        sock.settimeout(timeout)
        sock.sendall(out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and sock.recv(1 << 16):
            pass
    sock.close()


def resolve_symbols(session: Session, names: list[str]) -> list[SymbolSpec]:
    """The specs of ``names``, or :class:`SessionError` listing what the daemon trades."""
    missing = [n for n in names if n not in session.symbols]
    if missing:
        raise SessionError(
            f"the daemon does not trade {', '.join(missing)}; it trades "
            + ", ".join(sorted(session.symbols))
        )
    return [session.symbols[n] for n in names]
