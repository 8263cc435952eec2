"""A real daemon process for the benchmark-tool tests: port 0, tmp journal, own telemetry."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running_daemon(log: Path, tag: str) -> Iterator[int]:
    """Start ``lltrade run`` logging to ``log`` (its journal beside it); yield its port; stop it."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "lltrade", "run", "--port", "0"),
                *("--journal-dir", str(log.parent / "journal"), "--durability", "none"),
                *("--telemetry-name", f"lltrade-test-{os.getpid()}-{tag}-{uuid.uuid4().hex[:8]}"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            for line in log.read_text().splitlines():
                if '"listening"' in line:
                    port = int(json.loads(line)["address"][1])
            time.sleep(0.05)
        assert port is not None, f"the daemon did not start:\n{log.read_text()}"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
