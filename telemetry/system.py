"""Process and host figures people watch next to the daemon's own: CPU, memory, I/O.

Taken with psutil once per sampling interval by the sampler thread alone
(``psutil.cpu_percent`` measures since its previous call, so two callers
would split each other's intervals); the HTTP endpoints read the cached
result. CPU figures are ratios: 1.0 is one core fully busy.
"""

from __future__ import annotations

import time
from typing import Any

import psutil


def _counters(value: Any, fields: tuple[str, ...]) -> dict[str, int] | None:
    if value is None:
        return None
    return {name: int(getattr(value, name)) for name in fields}


class SystemSampler:
    """Samples the daemon process (when there is one) and the host.

    The first sample primes psutil's CPU counters: its CPU ratios are 0.
    """

    def __init__(self) -> None:
        self._process: psutil.Process | None = None
        self._prev_io: tuple[float, dict[str, int]] | None = None
        psutil.cpu_percent(percpu=True)  # prime: the next call measures from now

    def _daemon(self, pid: int | None, per_core: list[float]) -> dict[str, Any] | None:
        if pid is None:
            self._process = None
            return None
        try:
            if self._process is None or self._process.pid != pid:
                self._process = psutil.Process(pid)
                self._process.cpu_percent(None)  # prime
            proc = self._process
            with proc.oneshot():
                times = proc.cpu_times()
                memory = proc.memory_info()
                ratio = proc.cpu_percent(None) / 100.0
                threads = proc.num_threads()
            cores = sorted(proc.cpu_affinity() or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            self._process = None
            return {"alive": psutil.pid_exists(pid), "pid": pid}
        all_cores = len(cores) == len(per_core)
        return {
            "alive": True,
            "pid": pid,
            "cpu_ratio": round(ratio, 4),
            "cpu_user_s": round(times.user, 3),
            "cpu_system_s": round(times.system, 3),
            "cores": cores,
            "pinned": not all_cores,
            # The load on the cores the daemon may run on (its own core when pinned).
            "core_ratio": {
                str(c): round(per_core[c] / 100.0, 4) for c in cores if c < len(per_core)
            },
            "rss_bytes": int(memory.rss),
            "threads": int(threads),
        }

    def sample(self, pid: int | None) -> dict[str, Any]:
        """CPU, memory, network and disk figures now (rates since the previous call).

        Parameters
        ----------
        pid : int or None
            The daemon's process id, if one is publishing.

        Returns
        -------
        dict
            ``{"daemon": {...} | None, "host": {...}}`` (see docs/telemetry-log.md).
        """
        per_core = [float(x) for x in psutil.cpu_percent(percpu=True)]
        daemon = self._daemon(pid, per_core)
        vm = psutil.virtual_memory()
        net = _counters(psutil.net_io_counters(), ("bytes_sent", "bytes_recv"))
        disk = _counters(psutil.disk_io_counters(), ("read_bytes", "write_bytes"))
        io = {**(net or {}), **(disk or {})}
        now = time.monotonic()
        rates: dict[str, float] = {}
        if self._prev_io is not None and now > self._prev_io[0]:
            dt = now - self._prev_io[0]
            rates = {
                f"{k}_per_s": round(max(0, v - self._prev_io[1].get(k, v)) / dt, 1)
                for k, v in io.items()
            }
        self._prev_io = (now, io)
        host = {
            "cpu_ratio": round(sum(per_core) / 100.0 / max(1, len(per_core)), 4),
            "cpu_count": len(per_core),
            "memory_total_bytes": int(vm.total),
            "memory_used_bytes": int(vm.used),
            "memory_available_bytes": int(vm.available),
            "net": None if net is None else {**net, **_pick(rates, net)},
            "disk": None if disk is None else {**disk, **_pick(rates, disk)},
        }
        return {"daemon": daemon, "host": host}


def _pick(rates: dict[str, float], keys: dict[str, int]) -> dict[str, float]:
    return {k: v for k, v in rates.items() if k.removesuffix("_per_s") in keys}
