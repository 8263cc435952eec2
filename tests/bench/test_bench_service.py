"""The benchmark service (``benchmark/bench_service.py``) over HTTP on a free loopback port.

One real load generation against a daemon this module starts (tmp journal,
its own telemetry name): ``POST /run``, a second ``POST /run`` refused with
409 while it runs, ``GET /`` until it is done, then ``GET /latest``.  The
option checks and the endpoints' errors need no daemon.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bench_service

from daemon_process import running_daemon


def _call(url: str, method: str = "GET", body: object = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Any]:
    svc = bench_service.Service("127.0.0.1", 0, str(tmp_path / "results"))
    svc.start()
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def daemon_port(tmp_path: Path) -> Iterator[int]:
    """A daemon process on a free port: tmp journal, its own telemetry name; stopped after."""
    with running_daemon(tmp_path / "daemon.log", "bench") as port:
        yield port


def test_options_become_the_load_generators_arguments() -> None:
    argv = bench_service.options_argv(
        {"rate": 5000, "max": True, "symbols": ["DEMO", "ACME"], "max-resting": 50, "seed": 3}
    )
    assert argv == [
        *("--rate", "5000", "--max", "--symbols", "DEMO,ACME"),
        *("--max-resting", "50", "--seed", "3"),
    ]
    assert bench_service.options_argv({"max": False}) == []
    for bad, says in (
        ({"rat": 1}, "unknown option 'rat'"),
        ({"output": "x.json"}, "set by the service"),
        ({"max": "yes"}, "true or false"),
        ({"rate": [1, 2]}, "a number or a string"),
        ({"rate": 0}, "--rate"),
        ({"mix": "passive=1,bogus=2"}, "unknown kind 'bogus'"),
    ):
        with pytest.raises(bench_service.BadRequest, match=says):
            bench_service.options_argv(bad)


def test_endpoints_answer_errors_in_json(service: Any) -> None:
    url = service.url
    assert _call(url + "/") == (
        200,
        {
            "service": "lltrade-bench",
            "state": "idle",
            "current": None,
            "last": None,
            "latest": None,
        },
    )
    status, body = _call(url + "/latest")
    assert status == 404 and "POST /run" in body["error"]
    status, body = _call(url + "/run", "POST", {"bogus": 1})
    assert status == 400 and "unknown option 'bogus'" in body["error"]
    status, body = _call(url + "/run", "POST", [1, 2])
    assert status == 400 and "JSON object" in body["error"]
    assert _call(url + "/run")[0] == 405
    assert _call(url + "/nowhere")[0] == 404
    assert _call(url + "/")[1]["state"] == "idle"  # nothing was started


def test_run_then_latest_and_409_while_running(service: Any, daemon_port: int) -> None:
    url = service.url
    options = {"port": daemon_port, "rate": 2000, "duration": 1, "warmup": 0.3, "connections": 1}
    status, body = _call(url + "/run", "POST", options)
    assert status == 202, body
    assert body["state"] == "running" and body["current"]["options"] == options
    status, body = _call(url + "/run", "POST", options)
    assert status == 409 and body["state"] == "running"
    deadline = time.monotonic() + 90
    while (state := _call(url + "/"))[1]["state"] == "running":
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)
    last = state[1]["last"]
    assert last["exit_code"] == 0, last["output_tail"]
    assert any("written:" in line for line in last["output_tail"])
    status, latest = _call(url + "/latest")
    assert status == 200
    assert latest["schema"] == 1 and latest["tool"] == "lltrade-loadgen"
    assert latest["config"]["port"] == daemon_port and latest["config"]["rate"] == 2000
    assert latest["sent"] == latest["answered"] == 2000
    assert Path(last["result"]).read_text().strip() == json.dumps(latest, indent=1)
    assert state[1]["latest"] == "/latest"
