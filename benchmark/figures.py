"""What every benchmark script prints: number formats and where it ran."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess


def fmt_ns(x: float | None) -> str:
    """A duration in ns, in the unit that reads best (``-`` for none)."""
    if x is None:
        return "-"
    if x >= 1e9:
        return f"{x / 1e9:.2f} s"
    if x >= 1e6:
        return f"{x / 1e6:.2f} ms"
    if x >= 1e3:
        return f"{x / 1e3:.2f} us"
    return f"{x:.0f} ns"


def fmt_rate(x: float) -> str:
    """A rate per second."""
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k/s"
    return f"{x:.0f} /s"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (x86-64 and arm64 spell it differently)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str:
    """The short commit the benchmark ran on, or ``none``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except OSError:
        out = ""
    return out or "none"
