"""The lltrade telemetry exporter: a sidecar that serves the daemon's shared-memory telemetry.

Run as ``lltrade-telemetry`` (or ``python -m telemetry``); see
:mod:`telemetry.exporter`. The daemon writes, this process only reads.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lltrade")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
