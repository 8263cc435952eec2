"""Process set-up for the daemon's one thread: CPU pinning, memory locking,
the garbage collector, and the event loop (blocking or busy-poll).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from typing import Final

from lltrade.config import ProcessConfig

log = logging.getLogger("lltrade.runtime")

_MCL_CURRENT: Final = 1
_MCL_FUTURE: Final = 2


class SetupError(RuntimeError):
    """The process could not be set up as the configuration asks."""


_helper_cpus: frozenset[int] | None = None


def pin_cpu(cpu: int) -> None:
    """Run this thread (and the threads it starts) on ``cpu`` only; the others it was
    allowed become :func:`helper_cpus`."""
    global _helper_cpus
    available = os.sched_getaffinity(0)
    if cpu not in available:
        raise SetupError(
            f"process.cpu = {cpu} is not available to this process "
            f"(allowed: {sorted(available)}); pick one of those or leave cpu unset"
        )
    os.sched_setaffinity(0, {cpu})
    _helper_cpus = frozenset(available - {cpu}) or None


def helper_cpus() -> frozenset[int] | None:
    """Where the daemon's helper threads (the journal's prefaulting, snapshot writing)
    run: the CPUs this process was allowed before :func:`pin_cpu` took one for the
    event loop.  None when nothing was pinned (or no other CPU was allowed): they
    run wherever the loop may."""
    return _helper_cpus


def lock_memory() -> None:
    """``mlockall(MCL_CURRENT | MCL_FUTURE)``: no page of the daemon is ever swapped out."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
        errno = ctypes.get_errno()
        raise SetupError(
            f"process.mlockall = true but mlockall failed: {os.strerror(errno)}; "
            "raise the memlock limit (systemd LimitMEMLOCK=infinity, ulimit -l) "
            "or set mlockall = false"
        )


def apply_process_config(cfg: ProcessConfig) -> None:
    """Pin and lock as configured (before the loop starts)."""
    if cfg.cpu is not None:
        pin_cpu(cfg.cpu)
    if cfg.mlockall:
        lock_memory()


def freeze_gc() -> None:
    """Move everything allocated at start-up out of the collector's sight and stop it.

    The order path creates no reference cycles, so the collector is not
    needed while trading; leaving it on would stall the loop for a full
    collection at unpredictable moments.
    """
    gc.collect()
    gc.freeze()
    gc.disable()


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A uvloop loop (or asyncio's own when ``use_uvloop`` is false)."""
    if use_uvloop:
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class BusyPoll:
    """Keep a callback always ready so the loop polls with a zero timeout.

    The loop never sleeps in epoll: its core runs at 100%, and a packet is
    picked up on the next iteration instead of after a wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self._handle = self._loop.call_soon(self._spin)

    def _spin(self) -> None:
        self._handle = self._loop.call_soon(self._spin)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
