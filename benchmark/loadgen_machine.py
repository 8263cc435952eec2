"""Where the load runs: the machine, the daemon's process when it is local, CPU placement."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.metadata
import ipaddress
import os
import platform
import signal
import socket
import sys
from typing import Any, Final

import msgspec
import psutil

from figures import cpu_model, git_commit

_PR_SET_PDEATHSIG: Final = 1
_PR_SET_TIMERSLACK: Final = 29


def machine_info() -> dict[str, Any]:
    """CPU model, cores, platform, versions and the commit measured."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": sorted(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "uvloop": importlib.metadata.version("uvloop"),
        "msgspec": msgspec.__version__,
        "commit": git_commit(),
    }


def is_local(host: str) -> bool:
    """Whether ``host`` names this machine (a loopback or one of its own addresses)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    own = {
        a.address.split("%")[0]
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }
    for info in infos:
        address = str(info[4][0])
        if ipaddress.ip_address(address).is_loopback or address in own:
            return True
    return False


def daemon_process(host: str, port: int) -> psutil.Process | None:
    """The local process listening on ``port`` (the daemon), or None if remote or not visible."""
    if not is_local(host):
        return None
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return psutil.Process(conn.pid) if conn.pid else None
    except (psutil.Error, OSError):
        return None
    return None


def worker_cpus(
    requested: list[int] | None, daemon: psutil.Process | None, workers: int
) -> list[int | None]:
    """The CPU each worker pins itself to (None: not pinned).

    ``requested`` (``--cpu``) is used in turn.  Otherwise, when the daemon is
    local and pinned to some of the usable CPUs, the workers take the others
    in turn; when it is not pinned (or not visible) they are left to the
    scheduler, which can move them off its core better than a guess.
    """
    if requested:
        return [requested[i % len(requested)] for i in range(workers)]
    taken = daemon_cpus(daemon)
    if taken is None:
        return [None] * workers
    free = [c for c in sorted(os.sched_getaffinity(0)) if c not in taken]
    return [free[i % len(free)] for i in range(workers)]


def daemon_cpus(daemon: psutil.Process | None) -> set[int] | None:
    """The CPUs a local daemon is pinned to, or None (remote, invisible, or not pinned)."""
    if daemon is None:
        return None
    try:
        cpus = set(daemon.cpu_affinity())
    except (psutil.Error, OSError, AttributeError):
        return None
    return cpus if len(cpus) < len(os.sched_getaffinity(0)) else None


def spinners(cpus: list[int | None], daemon: set[int] | None, usable: int) -> list[bool]:
    """Whether each worker has a CPU to itself, so that it may spin between sends.

    A pinned worker has when no other worker and not the daemon are pinned
    to its CPU.  Unpinned workers have when they, the pinned ones' CPUs and a
    pinned daemon's fit in the ``usable`` CPUs.
    """
    pinned = [c for c in cpus if c is not None]
    taken = len(set(pinned)) + (len(daemon) if daemon else 0)
    unpinned_fit = sum(c is None for c in cpus) + taken <= usable
    return [
        unpinned_fit if c is None else pinned.count(c) == 1 and c not in (daemon or ())
        for c in cpus
    ]


def worker_setup(cpu: int | None) -> None:
    """In a worker: die with the parent, 1 ns timer slack (precise sleeps), pin to ``cpu``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(libc_name)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            libc.prctl(_PR_SET_TIMERSLACK, 1)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def cpu_seconds(proc: psutil.Process | None) -> float | None:
    """User + system CPU seconds of ``proc`` so far, or None."""
    if proc is None:
        return None
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far: every process, interrupts, steal."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)
