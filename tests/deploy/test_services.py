"""The services as the units start them, watched by monitor.sh and checked by start-services.sh.

The daemon runs from trading-system.service's own ExecStart with the production config as
aws-setup.sh installs it (deploy/lltrade.toml through init-config.py: new secrets) and the
exporter from telemetry.service's, with only what a test host needs changed: the
repository's virtual environment, 127.0.0.1, free ports, a temporary journal and a telemetry
name of its own.  systemctl is a stand-in on PATH (there is no
systemd here); curl, jq and the exporter are real.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from lltrade.config import DEMO_SECRETS, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent  # the virtual environment's scripts
TIMEOUT = 20.0


def service_section(name: str) -> dict[str, list[str]]:
    section: dict[str, list[str]] = {}
    inside = False
    for raw in (DEPLOY / name).read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            inside = line == "[Service]"
        elif inside and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            section.setdefault(key, []).append(value)
    return section


def exec_start(name: str, env: dict[str, str]) -> list[str]:
    """The unit's ExecStart as systemd expands it: ${X} is one word, a lone $X splits."""
    section = service_section(name)
    variables = dict(v.split("=", 1) for v in section.get("Environment", []))
    variables.update(env)
    argv: list[str] = []
    for word in shlex.split(section["ExecStart"][0]):
        if re.fullmatch(r"\$[A-Z_]+", word):
            argv.extend(variables[word[1:]].split())
        else:
            argv.append(re.sub(r"\$\{([A-Z_]+)\}", lambda m: variables[m[1]], word))
    return argv


def replace(argv: list[str], option: str, value: str) -> list[str]:
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


@dataclass
class Services:
    daemon: subprocess.Popen[bytes]
    exporter: subprocess.Popen[bytes]
    order_port: int
    url: str
    shm_path: Path
    config: Path
    secrets: dict[str, str]
    log: Path  # the daemon's log


def wait_for_log(path: Path, msg: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The first JSON log line with this msg (the processes log JSON lines on stderr)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("msg") == msg:
                return dict(record)
        assert proc.poll() is None, f"exited with {proc.returncode}: {path.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no {msg!r} in {path.read_text()}")


def stop(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("services")
    name = f"lltrade-deploy-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    cpu = min(os.sched_getaffinity(0))  # the unit's core may not exist on this machine
    argv = exec_start("trading-system.service", {"LLTRADE_CPU": str(cpu)})
    assert argv[0] == "/opt/lltrade/venv/bin/lltrade"
    argv = [str(BIN / "lltrade"), *argv[1:]]
    config, secrets = tmp / "lltrade.toml", tmp / "initial-secrets"
    subprocess.run(
        [
            *(sys.executable, str(DEPLOY / "init-config.py")),
            *("--template", str(DEPLOY / "lltrade.toml")),
            *("--config", str(config), "--secrets", str(secrets)),
        ],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    clear = dict(line.split() for line in secrets.read_text().splitlines() if line[0] != "#")
    argv = replace(argv, "--config", str(config))
    argv = replace(argv, "--journal-dir", str(tmp / "journal"))
    # mlockall needs the unit's LimitMEMLOCK=infinity; a test process has no such limit.
    argv += ["--host", "127.0.0.1", "--port", "0", "--telemetry-name", name, "--no-mlockall"]
    daemon_log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 (closed by stop())
    daemon = subprocess.Popen(argv, stderr=daemon_log, stdout=subprocess.DEVNULL)
    exporter = None
    try:
        listening = wait_for_log(tmp / "daemon.log", "listening", daemon)
        shm_path = Path("/dev/shm") / name
        env = {"LLTRADE_TELEMETRY_HOST": "127.0.0.1", "LLTRADE_TELEMETRY_PORT": "0"}
        xargv = exec_start("telemetry.service", env)
        xargv = [str(BIN / "lltrade-telemetry"), *xargv[1:]]
        xargv = replace(xargv, "--shm-path", str(shm_path))
        xargv = replace(xargv, "--log", str(tmp / "telemetry.jsonl"))
        exporter_log = open(tmp / "exporter.log", "wb")  # noqa: SIM115 (closed by stop())
        exporter = subprocess.Popen(xargv, stderr=exporter_log, stdout=subprocess.DEVNULL)
        serving = wait_for_log(tmp / "exporter.log", "serving", exporter)
        port = int(listening["address"][1])
        yield Services(
            daemon, exporter, port, serving["url"], shm_path, config, clear, tmp / "daemon.log"
        )
    finally:
        if exporter is not None:
            stop(exporter, exporter_log)
        stop(daemon, daemon_log)
        Path("/dev/shm", name).unlink(missing_ok=True)


def lltrade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lltrade"), *args], capture_output=True, text=True, timeout=TIMEOUT
    )


def get_latest(url: str) -> dict[str, Any]:
    out = subprocess.run(
        ["curl", "-fsS", "-m", "5", url + "/latest"], capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def wait_latest(url: str, ready: Any) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        latest = get_latest(url)
        if latest.get("schema") is not None and ready(latest):
            return latest
        time.sleep(0.2)
    raise AssertionError(f"/latest never became ready: {latest}")


def script(name: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    return subprocess.run(
        ["bash", str(DEPLOY / name), *args], capture_output=True, text=True, timeout=60, env=env
    )


# -- the units' command lines ----------------------------------------------------------------------


def order(
    services: Services, account: str, secret: str, *terms: str
) -> subprocess.CompletedProcess[str]:
    port = str(services.order_port)
    return lltrade("order", *terms, "--port", port, "--account", account, "--secret", secret)


@dataclass
class Trading:
    refused: subprocess.CompletedProcess[str]  # trader1 with a demo secret
    bid: str  # trader1's resting bid, --wait: its acknowledgement and fill
    bid_stderr: str  # what the bid's command said if it failed
    sold: subprocess.CompletedProcess[str]  # trader2 selling into it
    collar: subprocess.CompletedProcess[str]  # trader2 far outside the price collar


@pytest.fixture(scope="module")
def traded(services: Services) -> Trading:
    """A little trading on the daemon: a refused logon, a fill on each side, a reject."""
    refused = order(services, "trader1", DEMO_SECRETS["alice"], "buy", "DEMO", "1", "@", "100")
    bid = subprocess.Popen(
        [
            *(str(BIN / "lltrade"), "order", "buy", "DEMO", "5", "@", "100.25", "--wait"),
            *("--port", str(services.order_port), "--account", "trader1"),
            *("--secret", services.secrets["trader1"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert bid.stdout is not None
        first = bid.stdout.readline()  # the acknowledgement: the bid rests
        sold = order(
            services, "trader2", services.secrets["trader2"], "sell", "DEMO", "5", "@", "100.20"
        )
        try:
            rest, bid_stderr = bid.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired as exc:  # say what the sell and the daemon did
            log = services.log.read_text(errors="replace").splitlines()[-30:]
            raise AssertionError(
                f"the resting bid saw no fill in {TIMEOUT} s; bid said {first!r} {exc.output!r}; "
                f"the sell: exit {sold.returncode}, {sold.stdout!r} {sold.stderr!r}; "
                "daemon log:\n" + "\n".join(log)
            ) from None
    finally:
        if bid.poll() is None:
            bid.kill()
            bid.communicate()
    collar = order(
        services, "trader2", services.secrets["trader2"], "sell", "DEMO", "1", "@", "900"
    )
    return Trading(refused, first + rest, bid_stderr, sold, collar)


def test_production_config_and_unit_command_line_run_the_daemon(
    services: Services, traded: Trading
) -> None:
    config = load_config(services.config)
    assert config.journal.dir == "/var/lib/lltrade/journal" and config.process.mlockall
    assert sorted(services.secrets) == sorted(a.name for a in config.accounts)
    assert services.shm_path.exists()
    # The accounts log on with their new secrets only.
    assert traded.refused.returncode == 1 and "BAD_CREDENTIALS" in traded.refused.stderr
    assert "accepted" in traded.bid.lower() and "fill" in traded.bid.lower(), traded.bid_stderr
    assert traded.sold.returncode == 0, traded.sold.stderr
    assert traded.collar.returncode == 1 and "PRICE_COLLAR" in traded.collar.stderr


def test_monitor_once_shows_the_exporters_figures(services: Services, traded: Trading) -> None:
    # After the trading above: a fill on each side and a reject.
    latest = wait_latest(
        services.url,
        lambda r: r["counters"]["fills"] >= 2 and r["counters"]["orders_rejected"] >= 1,
    )
    out = script("monitor.sh", "--once", "--url", services.url)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    again = get_latest(services.url)  # nothing traded since: the same since-start figures
    assert again["counters"] == latest["counters"]
    lines = {line.split()[0]: line for line in text.splitlines() if line and line[0] != " "}
    assert f"pid {services.daemon.pid}," in lines["daemon"] and "telemetry ok" in lines["daemon"]
    assert f"daemon pid {services.daemon.pid} running" in lines["services"]  # no systemd here
    rejects = again["counters"]["orders_rejected"]
    assert lines["rejects"].startswith(f"rejects     {rejects} since start")
    collar = again["counters"]['orders_rejected{reason="PRICE_COLLAR"}']
    assert lines["rejects"].endswith(f": PRICE_COLLAR {collar}")
    since_start = [
        line for line in text.splitlines() if line.endswith("orders") and "since start" in line
    ]
    p99_us = again["latency_ns_since_start"]["p99"] / 1000
    assert since_start and "p99 -" not in since_start[0], text
    shown = re.search(r"p99 ([0-9.]+) (us|ms)", since_start[0])
    assert shown and float(shown[1]) * (1000 if shown[2] == "ms" else 1) == pytest.approx(
        p99_us, rel=0.01
    )
    assert f"({again['counters']['orders_in']} orders)" in lines["throughput"]
    assert "orders/s now" in lines["throughput"]
    for key in ("p50", "p99", "p99.9", "max"):
        assert key + " " in lines["latency"]
    rss_mib = round(again["memory"]["daemon_rss_bytes"] / 1048576, 1)
    assert "daemon " in lines["memory"] and "MiB resident" in lines["memory"]
    assert abs(float(lines["memory"].split()[2]) - rss_mib) < 64  # sampled a second apart
    assert lines["cpu"].startswith("cpu         daemon ") and "of a core on CPU" in lines["cpu"]
    assert f"{again['gauges']['sessions']} logged on" in lines["sessions"]


def test_monitor_without_an_exporter_says_so_and_exits_2(tmp_path: Path) -> None:
    out = script("monitor.sh", "--once", "--url", "http://127.0.0.1:9")  # discard: refused
    assert out.returncode == 2
    assert "not answering at http://127.0.0.1:9" in out.stdout


def test_monitor_needs_curl_and_jq(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "date", "dirname", "sed"):
        found = shutil.which(tool)
        assert found
        (bare / tool).symlink_to(found)
    out = script("monitor.sh", "--once", path=str(bare))
    assert out.returncode == 1 and "curl not found" in out.stderr


# -- start-services.sh and stop-services.sh, with systemctl standing in ----------------------------

SYSTEMCTL = """#!/usr/bin/env bash
printf '%s\\n' "$*" >>"{log}"
case $1 in
is-active) echo active ;;
start|restart|stop) [ -z "{fail}" ] || [ "$2" != "{fail}" ] ;;
status) echo "$2 - failed (stand-in)" ;;
esac
"""


def fake_systemctl(tmp: Path, fail: str = "") -> tuple[str, Path]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    log = tmp / "systemctl.log"
    (bin_dir / "systemctl").write_text(SYSTEMCTL.format(log=log, fail=fail))
    (bin_dir / "systemctl").chmod(0o755)
    (bin_dir / "journalctl").write_text("#!/bin/sh\necho 'last lines of the journal'\n")
    (bin_dir / "journalctl").chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}", log


def test_start_services_starts_both_and_waits_for_health(
    services: Services, tmp_path: Path
) -> None:
    path, log = fake_systemctl(tmp_path)
    out = script("start-services.sh", "--url", services.url, "--timeout", "20", path=path)
    assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines()[:2] == [
        "start telemetry.service",
        "start trading-system.service",
    ]
    assert '"status":"ok"' in out.stdout and f'"pid":{services.daemon.pid}' in out.stdout
    restart = script("start-services.sh", "--restart", "--url", services.url, path=path)
    assert restart.returncode == 0 and "restart trading-system.service" in log.read_text()


def test_start_services_reports_a_unit_that_fails(tmp_path: Path) -> None:
    path, _ = fake_systemctl(tmp_path, fail="trading-system.service")
    out = script("start-services.sh", "--url", "http://127.0.0.1:9", path=path)
    assert out.returncode == 1
    assert "trading-system.service did not start" in out.stderr
    assert "last lines of the journal" in out.stderr


def test_start_services_gives_up_when_health_never_comes(tmp_path: Path) -> None:
    path, _ = fake_systemctl(tmp_path)
    out = script("start-services.sh", "--url", "http://127.0.0.1:9", "--timeout", "1", path=path)
    assert out.returncode == 1
    assert "did not report healthy at http://127.0.0.1:9/health within 1s" in out.stderr


def test_stop_services_stops_the_daemon_first(tmp_path: Path) -> None:
    path, log = fake_systemctl(tmp_path)
    out = script("stop-services.sh", path=path)
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert calls[:2] == ["stop trading-system.service", "stop telemetry.service"]
    only = tmp_path / "only"
    only.mkdir()
    path, log = fake_systemctl(only)
    assert script("stop-services.sh", "--daemon-only", path=path).returncode == 0
    assert [c for c in log.read_text().splitlines() if c.startswith("stop")] == [
        "stop trading-system.service"
    ]
