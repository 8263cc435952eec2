"""The systemd notify protocol (sd_notify(3)) for the daemon, without libsystemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, an AF_UNIX datagram
socket (a path, or ``@name`` in the abstract namespace); each datagram holds
newline-separated ``KEY=VALUE`` assignments.  With ``WatchdogSec=`` it also
passes ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``): ``WATCHDOG=1`` must then
arrive within that many microseconds or the service is killed and restarted.
Without ``$NOTIFY_SOCKET`` (a terminal, a test) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """Talks to the service manager named by the environment, if any.

    Parameters
    ----------
    environ
        The environment to read (``os.environ`` by default).

    Attributes
    ----------
    watchdog_s
        Seconds systemd waits for ``WATCHDOG=1`` before it kills the service
        (None: no watchdog for this process).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is the abstract namespace; anything not absolute is not a socket we may use.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if address.startswith(("/", "@")) and len(address) > 1:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        pid = env.get("WATCHDOG_PID", "")
        usec = env.get("WATCHDOG_USEC", "")
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_s = int(usec) / 1e6 if mine and usec.isdigit() and int(usec) else None
        self._last_ping = float("-inf")

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True if it was sent.

        A failure to send (the manager went away) is not an error for the daemon.
        """
        if self._sock is None or not assignments:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up is complete (systemctl start returns)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=...``: one line shown by ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a graceful stop has begun."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self, now: float | None = None) -> bool:
        """``WATCHDOG=1``, at most once per half watchdog interval; True if sent now.

        Call it from the event loop's periodic tick: a loop that stops turning
        stops the pings, and systemd restarts the service.
        """
        if self.watchdog_s is None or self._sock is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_s / 2:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; later calls do nothing."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
