"""One client connection: framing, sequence numbers, outbound buffering.

A :class:`Session` is an ``asyncio.BufferedProtocol``: the transport reads
straight into its :class:`~lltrade.protocol.FrameReader`'s buffer, every
read's complete frames go to the daemon as one batch, and everything the
daemon answers is appended to one ``bytearray`` written once per batch.
What a session may do (logon, orders, market data) is the daemon's
business; the session only keeps the connection's state.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, cast

from lltrade.config import AccountConfig
from lltrade.protocol import (
    CLIENT_DECODER,
    ClientMessage,
    Disconnect,
    FrameError,
    FrameReader,
    Message,
    encode_frame,
    frame,
)

if TYPE_CHECKING:
    from lltrade._reports import ReportEncoder
    from lltrade.daemon import Daemon

log = logging.getLogger("lltrade.session")


class Session(asyncio.BufferedProtocol):
    """The state of one connection; see the module docstring."""

    def __init__(self, daemon: Daemon, max_frame: int, now: float) -> None:
        self.daemon = daemon
        self.reader: FrameReader[ClientMessage] = FrameReader(CLIENT_DECODER, max_frame)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.slot = -1  #: the daemon's session slot (routes execution reports)
        self.account: AccountConfig | None = None  #: set once logged on
        self.logging_on = False  #: a Logon is being verified
        self.closing = False
        self.in_seq = 0  #: the last client sequence number received (frames counted)
        self.out_seq = 0  #: the last sequence number sent
        self.connected_at = now
        self.last_in = now  #: loop time of the last frame received
        self.last_out = now  #: loop time of the last message sent
        self.subscriptions: set[int] = set()
        #: Once logged on, the session's output and sequence numbers live in
        #: the daemon's C report encoder, under ``slot``.
        self.reports: ReportEncoder | None = None
        self.held: list[ClientMessage | FrameError] = []  #: read while a Logon is checked
        self.out = bytearray()
        self._batch: list[ClientMessage | FrameError] = []

    # -- asyncio.BufferedProtocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.daemon.on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.daemon.bytes_in += nbytes
        batch = self._batch
        try:
            if self.account is not None and not self.logging_on:
                # Logged on: the daemon's C read path takes the frames from the buffer.
                self.reader.received(nbytes)
                if self.reader.pending:
                    self.daemon.on_read(self)
            elif self.reader.buffer_updated(nbytes, batch):
                self.daemon.on_messages(self, batch)
        except Exception:
            # A bug must not take the daemon down with it: drop this
            # connection, say why in the log, keep serving the others.
            log.exception("internal error handling a session's input", extra={"peer": self.peer})
            self.daemon.on_internal_error(self)
        finally:
            batch.clear()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.daemon.on_connection_lost(self)

    # -- output ---------------------------------------------------------------------

    @property
    def logged_on(self) -> bool:
        return self.account is not None

    def next_seq(self) -> int:
        """The sequence number of the next message sent (call once per message)."""
        if self.slot >= 0 and self.reports is not None:
            return self.reports.next_seq(self.slot)
        self.out_seq += 1
        return self.out_seq

    def queue(self, msg: Message) -> None:
        """Append an encoded message (built with :meth:`next_seq`) to the output."""
        if self.slot >= 0 and self.reports is not None:
            self.reports.append(self.slot, frame(msg))
        else:
            encode_frame(msg, self.out)

    def flush(self, now: float, max_outbound: int) -> bool:
        """Write the session's own queued output (before logon, and its last words)."""
        data = bytes(self.out)
        self.out.clear()
        return self.write(data, now, max_outbound)

    def write(self, data: bytes, now: float, max_outbound: int) -> bool:
        """Write ``data``; False if the session was cut off as a slow consumer."""
        if not data or self.transport is None or self.closing:
            return True
        self.transport.write(data)
        self.last_out = now
        if self.transport.get_write_buffer_size() > max_outbound:
            self.abort()
            return False
        return True

    def disconnect(self, reason: int, text: str, now: float) -> None:
        """Send ``Disconnect`` (best effort) after any queued output, then close."""
        if self.closing or self.transport is None:
            return
        self.queue(Disconnect(self.next_seq(), reason, text))
        self.close(now)

    def close(self, now: float) -> None:
        """Write what is queued, then close (the transport sends it first)."""
        if self.closing or self.transport is None:
            return
        self.flush(now, 1 << 62)
        self.closing = True
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, unsent output included."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
