"""``lltrade-telemetry``: the sidecar that serves the daemon's shared-memory telemetry over HTTP.

Endpoints (``docs/telemetry-log.md`` has the record schema):

``/``
    Service information and the live dashboard (HTML; its scripts and
    styles are served from ``/static/``, nothing from the network).
``/health``
    200 ``{"status": "ok", ...}`` while the daemon's heartbeat is fresh
    (younger than three intervals); 503 with ``status`` ``stale``,
    ``absent`` or ``unreadable`` and a ``reason`` otherwise.
``/latest``
    The newest telemetry record (JSON): throughput, latency percentiles over
    the last interval and since start, counters, gauges, CPU, memory, I/O.
``/history?limit=N``
    The last records kept in memory (the dashboard draws them on load).
``/info``
    Service information as JSON.
``/metrics``
    Prometheus text format from :class:`telemetry.collector.TelemetryCollector`.

HTTP is the standard library's ``wsgiref`` with a thread per request;
``/metrics`` is prometheus-client's own WSGI app. A sampler thread takes a
snapshot every interval and appends a line to the telemetry log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import logging
import mimetypes
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from socketserver import ThreadingMixIn
from types import FrameType, TracebackType
from typing import Any, Final
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from lltrade.argtypes import listen_port, seconds
from telemetry import __version__
from telemetry.collector import TelemetryCollector
from telemetry.sampler import Sampler
from telemetry.source import DEFAULT_READER_MODULE, Backend, Source, load_backend

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
DEFAULT_SHM_PATH: Final = "/dev/shm/lltrade"
DEFAULT_INTERVAL_S: Final = 1.0
HISTORY: Final = 600
"""Records kept in memory for the dashboard (10 minutes at one a second)."""
_SERVICE_INFO_MARK: Final = "<!--SERVICE-INFO-->"
_CSP: Final = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"

log = logging.getLogger("lltrade.telemetry")


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="milliseconds")


def _load_static() -> dict[str, tuple[bytes, str]]:
    """Every file under ``telemetry/static`` by URL path, read once."""
    files: dict[str, tuple[bytes, str]] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.name.startswith("."):
                continue
            url = f"{prefix}/{child.name}"
            if child.is_dir():
                walk(child, url)
            else:
                ctype = mimetypes.guess_type(child.name)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype.endswith("javascript"):
                    ctype += "; charset=utf-8"
                files[url] = (child.read_bytes(), ctype)

    walk(resources.files("telemetry") / "static", "/static")
    return files


class App:
    """The WSGI application: a small router in front of the endpoints.

    Parameters
    ----------
    source : Source
        The daemon's telemetry file (``/health`` reads it live).
    sampler : Sampler
        The records (``/latest``, ``/history``) and system figures.
    metrics_app : WSGIApplication
        prometheus-client's app over a registry holding the collector.
    """

    def __init__(self, source: Source, sampler: Sampler, metrics_app: WSGIApplication) -> None:
        self.source = source
        self.sampler = sampler
        self.metrics_app = metrics_app
        self.started_ns = time.time_ns()
        self.static = _load_static()
        self.routes: dict[
            str, Callable[[WSGIEnvironment], tuple[str, list[tuple[str, str]], bytes]]
        ]
        self.routes = {
            "/": self.index,
            "/index.html": self.index,
            "/health": self.health,
            "/latest": self.latest,
            "/history": self.history,
            "/info": lambda environ: self._json(200, self.info()),
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        if method not in ("GET", "HEAD"):
            status, headers, body = self._json(405, {"error": f"method {method} not allowed"})
            headers.append(("Allow", "GET, HEAD"))
        elif path in self.routes:
            status, headers, body = self.routes[path](environ)
        elif path in self.static:
            data, ctype = self.static[path]
            status, headers, body = "200 OK", [("Content-Type", ctype)], data
            headers.append(("Cache-Control", "max-age=300"))
        elif path == "/favicon.ico":
            status, headers, body = "204 No Content", [], b""
        else:
            status, headers, body = self._json(404, {"error": f"no such page: {path}"})
        headers.append(("Content-Length", str(len(body))))
        headers.append(("X-Content-Type-Options", "nosniff"))
        start_response(status, headers)
        return [b""] if method == "HEAD" else [body]

    # -- endpoints ----------------------------------------------------------------------------

    @staticmethod
    def _json(code: int, payload: Any) -> tuple[str, list[tuple[str, str]], bytes]:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            503: "Unavailable",
        }
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        return f"{code} {reason.get(code, '')}".rstrip(), headers, body

    def info(self) -> dict[str, Any]:
        """Service information: the exporter, and the daemon it last saw."""
        reading = self.sampler.last_reading
        snap = reading.snapshot
        daemon = None
        if snap is not None:
            start = int(snap["start_time_ns"])
            daemon = {
                "pid": int(snap["pid"]),
                "start_time": _iso(start),
                "start_time_ns": start,
                "uptime_s": round(max(0.0, (time.time_ns() - start) / 1e9), 3),
                "heartbeat_age_s": reading.heartbeat_age_s,
            }
        return {
            "service": "lltrade-telemetry",
            "version": __version__,
            "status": reading.status,
            "reason": reading.reason,
            "shm_path": self.source.path,
            "reader": self.source.backend.name,
            "interval_s": self.sampler.interval_s,
            "log": self.sampler.log_path,
            "exporter_pid": os.getpid(),
            "exporter_start_time": _iso(self.started_ns),
            "daemon": daemon,
            "daemon_restarts": self.source.restarts,
            "samples": self.sampler.samples,
        }

    def health(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], bytes]:
        """``/health``: a live look at the heartbeat."""
        reading = self.source.read()
        payload: dict[str, Any] = {"status": reading.status, "reason": reading.reason}
        payload["shm_path"] = self.source.path
        payload["stale_after_s"] = round(self.source.stale_after_s, 6)
        if reading.snapshot is not None:
            payload["pid"] = int(reading.snapshot["pid"])
            payload["heartbeat_age_s"] = round(reading.heartbeat_age_s or 0.0, 6)
        payload["daemon_restarts"] = self.source.restarts
        return self._json(200 if reading.ok else 503, payload)

    def latest(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], bytes]:
        """``/latest``: the newest record, with the current status beside it."""
        reading = self.sampler.last_reading
        record = self.sampler.latest()
        payload: dict[str, Any] = dict(record) if record else {"schema": None, "ts": None}
        payload["record_status"] = payload.get("status")
        payload["status"] = reading.status
        payload["reason"] = reading.reason
        payload["sampled_at"] = round(reading.taken_ns / 1e9, 6)
        payload["service"] = self.info()
        return self._json(200, payload)

    def history(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], bytes]:
        """``/history?limit=N``: the records kept in memory, oldest first."""
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            limit = int(query.get("limit", [str(HISTORY)])[0])
        except ValueError:
            return self._json(400, {"error": "limit must be an integer"})
        return self._json(200, {"records": self.sampler.history(max(0, limit))})

    def index(self, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], bytes]:
        """``/``: the dashboard, with the service information written in."""
        info = self.info()
        daemon = info["daemon"] or {}
        rows = [
            ("status", f"{info['status']}: {info['reason']}", "status"),
            ("daemon pid", daemon.get("pid", "—"), "pid"),
            ("started", daemon.get("start_time", "—"), "start"),
            ("uptime", f"{daemon['uptime_s']:.0f} s" if daemon else "—", "uptime"),
            ("telemetry file", info["shm_path"], "shm"),
            ("interval", f"{info['interval_s']:g} s", "interval"),
            ("restarts seen", info["daemon_restarts"], "restarts"),
            ("exporter", f"lltrade-telemetry {info['version']}", "version"),
        ]
        items = "\n".join(
            f'<div><dt>{html.escape(k)}</dt><dd id="info-{i}">{html.escape(str(v))}</dd></div>'
            for k, v, i in rows
        )
        page = self.static["/static/index.html"][0].decode().replace(_SERVICE_INFO_MARK, items)
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("Content-Security-Policy", _CSP),
        ]
        return "200 OK", headers, page.encode()


class _Handler(WSGIRequestHandler):
    """Request logging at debug level, through the exporter's logger."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client never blocks shutdown


def _make_server(host: str, port: int, app: WSGIApplication) -> WSGIServer:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("Server", (_Server,), {"address_family": family})
    return make_server(host, port, app, server_class=server_class, handler_class=_Handler)


class Exporter:
    """The sidecar: source, sampler, collector and HTTP server, started and stopped together.

    Parameters
    ----------
    shm_path : str
        The daemon's telemetry file.
    backend : Backend
        The reader (``load_backend()`` for ``lltrade._telemetry``).
    interval_s : float
        Sampling interval in seconds.
    host, port : str, int
        Where to listen (port 0: any free port, see :attr:`port`).
    log_path : str, optional
        The telemetry log (JSON lines).
    history : int
        Records kept for the dashboard.
    """

    def __init__(
        self,
        *,
        shm_path: str,
        backend: Backend,
        interval_s: float = DEFAULT_INTERVAL_S,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        log_path: str | None = None,
        history: int = HISTORY,
    ) -> None:
        self.source = Source(shm_path, backend, interval_s)
        self.sampler = Sampler(self.source, interval_s, log_path, history)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(TelemetryCollector(self.source, self.sampler.system))
        self.app = App(self.source, self.sampler, make_wsgi_app(registry))
        try:
            self.server = _make_server(host, port, self.app)
        except BaseException:
            self.sampler.stop()
            raise
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8000``."""
        host = str(self.server.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> None:
        """Start sampling and serving (threads; returns at once)."""
        self.sampler.start()
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="telemetry-http"
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and sampling; closes the socket and the log."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()
        self.sampler.stop()
        self.source.close()

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``lltrade-telemetry`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lltrade-telemetry",
        description="Serve the lltrade daemon's shared-memory telemetry: a dashboard on /, "
        "/health, /latest (JSON), /metrics (Prometheus), and a JSON-lines telemetry log.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port",
        type=listen_port,
        default=DEFAULT_PORT,
        help="port (%(default)s; 0 = any free port)",
    )
    parser.add_argument(
        "--shm-path", default=DEFAULT_SHM_PATH, help="the daemon's telemetry file (%(default)s)"
    )
    parser.add_argument(
        "--interval",
        type=seconds(3600),
        default=DEFAULT_INTERVAL_S,
        help="sampling interval in seconds (%(default)s); /health turns 503 after 3 without "
        "a heartbeat",
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="append one JSON line per interval to FILE (the telemetry log)",
    )
    parser.add_argument(
        "--reader",
        default=DEFAULT_READER_MODULE,
        metavar="MODULE",
        help="module providing TelemetryReader and TelemetryError (%(default)s; for tests)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter until SIGINT or SIGTERM.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        Exit status: 0 after a signal, 1 when it cannot start.
    """
    args = build_parser().parse_args(argv)
    from lltrade.logs import setup_logging

    setup_logging(args.log_level)
    try:
        backend = load_backend(args.reader)
    except ImportError as exc:
        print(
            f"lltrade-telemetry: cannot load the telemetry reader {args.reader} ({exc}); "
            "is the extension built (make build)?",
            file=sys.stderr,
        )
        return 1
    try:
        exporter = Exporter(
            shm_path=args.shm_path,
            backend=backend,
            interval_s=args.interval,
            host=args.host,
            port=args.port,
            log_path=args.log,
        )
    except OSError as exc:
        print(f"lltrade-telemetry: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exporter.start()
    log.info(
        "serving",
        extra={"url": exporter.url, "shm_path": args.shm_path, "log": args.log},
    )
    while not stop.wait(1.0):
        pass
    exporter.close()
    log.info("stopped")
    return 0
