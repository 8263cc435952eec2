"""The benchmark service: runs the load generator on request and serves its latest result.

    python benchmark/bench_service.py [--host 127.0.0.1] [--port 8001] [--results DIR]

For benchmarking a host remotely: start the daemon and this service on the
host, then drive it over HTTP.

``POST /run``
    Body: a JSON object of load-generator options, named as on its command
    line (``{"rate": 20000, "duration": 5, "max": true, "symbols": "DEMO,ACME"}``;
    ``max_resting`` or ``max-resting`` alike).  Starts ``loadgen.py`` with
    them in the background and answers 202 with the run's status; 409 while
    another run is going (one at a time), 400 for an unknown or bad option.
    ``output``, ``json`` and ``no_progress`` are the service's to set.
``GET /latest``
    The newest result file (``schema: 1``, ``benchmark/README.md``); 404
    before the first one.
``GET /``
    The service's status: ``idle`` or ``running``, the current run and the
    last finished one (its options, exit status and the last lines it printed).

Each run writes ``DIR/loadgen-<UTC time>.json`` (default ``results/service``).
HTTP is the standard library's ``wsgiref`` with a thread per request, as in
the telemetry sidecar.  SIGTERM or Ctrl-C stops the service and any run it
started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from loadgen import Options, UsageError, parse_options

LOADGEN: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen.py")
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8001
DEFAULT_RESULTS: Final = os.path.join("results", "service")
MAX_BODY: Final = 64 * 1024
OUTPUT_TAIL: Final = 40  #: lines of the run's output kept for the status
STOP_TIMEOUT_S: Final = 10.0
#: Options the service sets itself.
RESERVED: Final = frozenset({"output", "json", "no_progress", "progress"})
#: Option name -> kind, from the load generator's own options.
OPTIONS: Final = {
    name: ("flag" if isinstance(default, bool) else "value")
    for name, default in vars(Options()).items()
    if name not in RESERVED
}


class Busy(Exception):
    """A run is going already."""


class BadRequest(Exception):
    """Options that cannot be used; the message says which."""


def options_argv(options: dict[str, Any]) -> list[str]:
    """Command-line arguments for the load generator from a JSON object of options.

    Raises :class:`BadRequest` for an unknown option, a value of the wrong
    kind (scalars; lists for ``symbols`` and ``cpu``) or one the load
    generator refuses.
    """
    argv: list[str] = []
    for key, value in options.items():
        name = str(key).replace("-", "_")
        if name in RESERVED:
            raise BadRequest(f"option {key!r} is set by the service")
        if name not in OPTIONS:
            raise BadRequest(f"unknown option {key!r}; known: {', '.join(sorted(OPTIONS))}")
        flag = "--" + name.replace("_", "-")
        if OPTIONS[name] == "flag":
            if not isinstance(value, bool):
                raise BadRequest(f"option {key!r} takes true or false, got {value!r}")
            if value:
                argv.append(flag)
            continue
        if isinstance(value, list) and name in ("symbols", "cpu"):
            value = ",".join(str(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadRequest(f"option {key!r} takes a number or a string, got {value!r}")
        argv += [flag, str(value)]
    try:
        parse_options(argv)
    except UsageError as exc:
        raise BadRequest(str(exc)) from None
    return argv


class Runner:
    """Starts the load generator (one run at a time), watches it, remembers the results.

    Parameters
    ----------
    results_dir
        Where each run's result file goes; the newest one there is ``/latest``,
        also after a restart of the service.
    """

    def __init__(self, results_dir: str) -> None:
        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None
        self.current: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None

    def start(self, options: object) -> dict[str, Any]:
        """Start a run with ``options``; its status.  :class:`Busy`, :class:`BadRequest`."""
        if not isinstance(options, dict):
            raise BadRequest("the body must be a JSON object of load-generator options")
        argv = options_argv(options)
        with self._lock:
            if self._proc is not None:
                raise Busy("a load generation is running; wait for it (GET /)")
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            output = self.results_dir / f"loadgen-{stamp}.json"
            n = 1
            while output.exists():
                n += 1
                output = self.results_dir / f"loadgen-{stamp}-{n}.json"
            log_path = output.with_suffix(".log")
            with open(log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, LOADGEN, *argv, "--output", str(output), "--no-progress"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            shown = {k: v for k, v in options.items() if k != "secret"}
            self.current = {
                "options": shown,
                "started": time.time(),
                "pid": self._proc.pid,
                "result": str(output),
                "log": str(log_path),
            }
            self._watcher = threading.Thread(
                target=self._watch, args=(self._proc, self.current), name="loadgen-watch"
            )
            self._watcher.start()
            return dict(self.current)

    def _watch(self, proc: subprocess.Popen[bytes], run: dict[str, Any]) -> None:
        code = proc.wait()
        try:
            lines = Path(run["log"]).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        finished = {
            **run,
            "finished": time.time(),
            "exit_code": code,
            "result": run["result"] if Path(run["result"]).exists() else None,
            "output_tail": lines[-OUTPUT_TAIL:],
        }
        with self._lock:
            self.last = finished
            self.current = None
            self._proc = None

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "service": "lltrade-bench",
                "state": "running" if self._proc is not None else "idle",
                "current": self.current,
                "last": self.last,
                "latest": "/latest" if self.latest_path() is not None else None,
            }

    def latest_path(self) -> Path | None:
        """The newest result file in the results folder, or None."""
        files = list(self.results_dir.glob("loadgen-*.json"))
        return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current run to end; whether it has (True when none was running)."""
        watcher = self._watcher
        if watcher is not None:
            watcher.join(timeout)
            return not watcher.is_alive()
        return True

    def stop(self) -> None:
        """Stop a running load generation (SIGTERM, then SIGKILL) and wait for its watcher."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.wait(STOP_TIMEOUT_S)


# =====================================================================================
# HTTP
# =====================================================================================


def _json(status: str, body: object) -> tuple[str, list[tuple[str, str]], bytes]:
    data = (json.dumps(body, indent=1) + "\n").encode()
    return status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], data


class App:
    """The WSGI application: ``GET /``, ``GET /latest``, ``POST /run``."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = self.route(environ)
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def route(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        allowed = {"/": "GET", "/latest": "GET", "/run": "POST"}.get(path)
        if allowed is None:
            return _json("404 Not Found", {"error": f"no such endpoint {path}; see GET /"})
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            status, headers, body = _json(
                "405 Method Not Allowed", {"error": f"{path} takes {allowed}"}
            )
            return status, [*headers, ("Allow", allowed)], body
        if path == "/":
            return _json("200 OK", self.runner.status())
        if path == "/latest":
            latest = self.runner.latest_path()
            if latest is None:
                return _json("404 Not Found", {"error": "no result yet: POST /run first"})
            headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
            return "200 OK", headers, latest.read_bytes()
        return self.run(environ)

    def run(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return _json("400 Bad Request", {"error": f"body length must be 0 .. {MAX_BODY}"})
        raw = environ["wsgi.input"].read(length) if length else b"{}"
        try:
            options = json.loads(raw)
        except ValueError as exc:
            return _json("400 Bad Request", {"error": f"the body is not JSON: {exc}"})
        try:
            run = self.runner.start(options)
        except BadRequest as exc:
            return _json("400 Bad Request", {"error": str(exc)})
        except Busy as exc:
            return _json("409 Conflict", {"error": str(exc), **self.runner.status()})
        return _json("202 Accepted", {"state": "running", "current": run})


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the status endpoint says what happened


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Service:
    """The runner behind an HTTP server on ``host:port`` (port 0: any free one)."""

    def __init__(self, host: str, port: int, results_dir: str) -> None:
        self.runner = Runner(results_dir)
        self.server = make_server(
            host, port, App(self.runner), server_class=_Server, handler_class=_Handler
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Serve in a thread (returns at once)."""
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="bench-http"
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving, stop any run, close the socket."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.runner.stop()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_service.py",
        description="Run lltrade's load generator on request (POST /run) and serve its latest "
        "result (GET /latest); GET / for the status.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (%(default)s)")
    p.add_argument(
        "--results", default=DEFAULT_RESULTS, help="folder of the result files (%(default)s)"
    )
    args = p.parse_args(argv)
    try:
        service = Service(args.host, args.port, args.results)
    except OSError as exc:
        print(f"bench_service: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    print(f"bench_service: serving on {service.url} (results in {args.results})", flush=True)
    try:
        stop.wait()
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
