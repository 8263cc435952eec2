"""The report's inputs: telemetry logs, load-generator results, pytest-benchmark JSON.

Each file's kind is told by its content, never by its name.  A telemetry log
is read line by line and forgiven what an append-only log can suffer (a last
line cut short by a killed exporter, a stray line): the valid lines are used
and every skipped one is reported as a warning.  The other two kinds are
single JSON documents and must be whole.  Anything unusable raises
:class:`InputError` with one line naming the file and what is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
from hdrh.histogram import HdrHistogram

TELEMETRY_SCHEMA: Final = 1
LOADGEN_SCHEMA: Final = 1
LOADGEN_TOOL: Final = "lltrade-loadgen"

Kind = Literal["telemetry", "loadgen", "pytest-benchmark"]


class InputError(Exception):
    """An input the report cannot use at all; the message is one line for the user."""


# -- telemetry log lines (docs/telemetry-log.md, schema 1): the fields the report reads ----------


class Stats(msgspec.Struct):
    """Summary of one histogram over an interval or since the daemon's start."""

    count: int
    avg: float | None = None
    min: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    p99_9: float | None = None
    max: float | None = None


class HistogramStats(msgspec.Struct):
    interval: Stats
    since_start: Stats


class Cpu(msgspec.Struct):
    daemon_ratio: float | None = None
    daemon_cores: list[int] | None = None
    daemon_pinned: bool | None = None
    host_ratio: float | None = None
    host_cpus: int | None = None


class Memory(msgspec.Struct):
    daemon_rss_bytes: int | None = None
    host_total_bytes: int | None = None
    host_used_bytes: int | None = None
    host_available_bytes: int | None = None


class Gap(msgspec.Struct):
    """A daemon restart, on the first line after it."""

    old_pid: int
    new_pid: int
    old_heartbeat_ns: int
    new_start_time_ns: int
    seconds: float
    restarts: int = 1


class Record(msgspec.Struct):
    """One line of the telemetry log."""

    schema: int
    ts: float
    interval_s: float
    from_start: bool
    status: str
    pid: int
    start_time_ns: int
    uptime_s: float
    orders: int | None
    orders_per_s: float | None
    latency_ns: Stats
    latency_ns_since_start: Stats
    histograms: dict[str, HistogramStats]
    cpu: Cpu
    memory: Memory
    daemon_restarts: int = 0
    gap: Gap | None = None


@dataclass
class TelemetryLog:
    """The valid lines of a telemetry log, oldest first, and what was skipped."""

    path: str
    records: list[Record]
    lines: int  #: non-empty lines in the file
    warnings: list[str] = field(default_factory=list)


# -- load-generator results ---------------------------------------------------------------------


class LatencySummary(msgspec.Struct):
    """Round-trip latency of one message type, ns."""

    count: int
    mean_ns: float | None = None
    p50_ns: float | None = None
    p90_ns: float | None = None
    p99_ns: float | None = None
    p99_9_ns: float | None = None
    p99_99_ns: float | None = None
    max_ns: float | None = None
    hdr: str | None = None
    percentiles: list[tuple[float, float]] = []


class MaxStep(msgspec.Struct):
    """One rate tried by the load generator's ``--max`` search."""

    rate: float
    achieved_rate: float
    p99_ns: float | None
    ok: bool


class LoadgenDoc(msgspec.Struct):
    schema: int
    tool: str
    types: dict[str, LatencySummary]
    started: float | None = None
    config: dict[str, Any] = {}
    duration_s: float | None = None
    target_rate: float | None = None
    achieved_rate: float | None = None
    sent: int | None = None
    answered: int | None = None
    rejected: int | None = None
    errors: list[str] = []
    bottleneck: str | None = None
    bottleneck_reason: str | None = None
    machine: dict[str, Any] = {}
    max_search: list[MaxStep] | None = None


@dataclass
class LoadgenResult:
    """A load-generator result with its histograms decoded (None where one would not)."""

    path: str
    doc: LoadgenDoc
    histograms: dict[str, HdrHistogram | None]
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


# -- pytest-benchmark JSON ---------------------------------------------------------------------


class BenchStats(msgspec.Struct):
    median: float  #: seconds
    mean: float
    min: float
    max: float
    ops: float
    rounds: int
    iterations: int = 1


class Bench(msgspec.Struct):
    name: str
    stats: BenchStats
    fullname: str = ""
    group: str | None = None
    extra_info: dict[str, Any] = {}


class BenchDoc(msgspec.Struct):
    benchmarks: list[Bench]
    datetime: str | None = None
    machine_info: dict[str, Any] = {}
    commit_info: dict[str, Any] = {}


@dataclass
class BenchmarkRun:
    path: str
    doc: BenchDoc

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


# -- reading ------------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(f"{path}: empty file, nothing to report")
    return data.decode("utf-8", errors="replace")


def _decode(text: str) -> Any:
    return msgspec.json.decode(text)


def detect_kind(path: str, text: str) -> Kind:
    """What ``text`` (the content of ``path``) is; InputError when it is none of the three."""
    unknown = f"{path}: not a telemetry log, load-generator result or pytest-benchmark JSON"
    try:
        whole = _decode(text)
    except msgspec.DecodeError:
        pass  # JSON lines (or a damaged file): looked at line by line below
    else:
        if isinstance(whole, dict):
            if whole.get("tool") == LOADGEN_TOOL:
                return "loadgen"
            if isinstance(whole.get("benchmarks"), list):
                return "pytest-benchmark"
            if "schema" in whole and len(text.strip().splitlines()) == 1:
                return "telemetry"  # a log of one line
        raise InputError(unknown)
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = _decode(line)
        except msgspec.DecodeError:
            continue
        if isinstance(obj, dict) and "schema" in obj:
            return "telemetry"
        break
    if text.lstrip().startswith('{"schema":'):  # how the exporter starts every line
        return "telemetry"  # a log whose lines are all damaged, the first cut short
    raise InputError(unknown)


def read_telemetry_log(path: str, text: str | None = None) -> TelemetryLog:
    """Read a telemetry log, keeping its valid schema-1 lines.

    A last line that is not valid JSON and not ended by a newline is a
    truncated write: it is dropped with a warning.  Any other line that is not
    a valid record is skipped with a warning naming its line number.  With no
    valid line left, :class:`InputError` says why.
    """
    if text is None:
        text = _read_text(path)
    lines = text.split("\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise InputError(f"{path}: empty file, nothing to report")
    last_no = numbered[-1][0]
    cut_short = not text.endswith("\n")
    records: list[Record] = []
    skipped: list[tuple[int, str]] = []
    truncated_line: int | None = None
    schemas: set[Any] = set()
    schema_skips = 0
    for line_no, line in numbered:
        try:
            obj = _decode(line)
        except msgspec.DecodeError:
            if line_no == last_no and cut_short:
                truncated_line = line_no
            else:
                skipped.append((line_no, "not JSON"))
            continue
        if not isinstance(obj, dict):
            skipped.append((line_no, "not a JSON object"))
            continue
        schema = obj.get("schema")
        if schema != TELEMETRY_SCHEMA:
            schemas.add(schema)
            schema_skips += 1
            skipped.append((line_no, f"schema {schema!r}, not {TELEMETRY_SCHEMA}"))
            continue
        try:
            records.append(msgspec.convert(obj, Record))
        except msgspec.ValidationError as exc:
            skipped.append((line_no, str(exc)))
    warnings: list[str] = []
    if truncated_line is not None:
        warnings.append(
            f"{path}: the last line (line {truncated_line}) is truncated "
            f"(the exporter stopped mid-write); using the {len(records)} valid lines"
        )
    if skipped:
        shown = "; ".join(f"line {n}: {why}" for n, why in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.append(f"{path}: skipped {len(skipped)} malformed line(s) ({shown}{more})")
    if not records:
        if schemas and schema_skips == len(skipped):
            found = ", ".join(sorted(repr(s) for s in schemas))
            raise InputError(
                f"{path}: telemetry log schema {found}, this report reads schema "
                f"{TELEMETRY_SCHEMA}; nothing usable"
            )
        why = skipped[0][1] if skipped else "its only line is truncated"
        where = f"line {skipped[0][0]}: " if skipped else ""
        raise InputError(f"{path}: no valid telemetry line ({where}{why}); nothing usable")
    records.sort(key=lambda r: r.ts)
    return TelemetryLog(path, records, len(numbered), warnings)


def _decode_hdr(encoded: str | None) -> HdrHistogram | None:
    if not encoded:
        return None
    try:
        return HdrHistogram.decode(encoded)
    except Exception:  # hdrh raises a mix of its own, zlib and base64 errors
        return None


def read_loadgen(path: str, text: str | None = None) -> LoadgenResult:
    """Read and validate a load-generator result; decode its histograms."""
    if text is None:
        text = _read_text(path)
    try:
        raw = _decode(text)
    except msgspec.DecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    schema = raw.get("schema") if isinstance(raw, dict) else None
    if schema != LOADGEN_SCHEMA:
        raise InputError(
            f"{path}: load-generator result schema {schema!r}, "
            f"this report reads schema {LOADGEN_SCHEMA}"
        )
    try:
        doc = msgspec.convert(raw, LoadgenDoc)
    except msgspec.ValidationError as exc:
        raise InputError(f"{path}: not a valid load-generator result: {exc}") from None
    if "all" not in doc.types:
        raise InputError(f"{path}: load-generator result has no 'all' entry under 'types'")
    result = LoadgenResult(path, doc, {})
    for name, summary in doc.types.items():
        hist = _decode_hdr(summary.hdr)
        result.histograms[name] = hist
        if summary.hdr and hist is None:
            result.warnings.append(
                f"{path}: the {name!r} histogram does not decode; using its percentile list"
            )
    return result


def read_pytest_benchmark(path: str, text: str | None = None) -> BenchmarkRun:
    """Read a pytest-benchmark JSON file (``--benchmark-json`` or autosave)."""
    if text is None:
        text = _read_text(path)
    try:
        doc = msgspec.json.decode(text, type=BenchDoc)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InputError(f"{path}: not a valid pytest-benchmark JSON file: {exc}") from None
    return BenchmarkRun(path, doc)


@dataclass
class Inputs:
    telemetry: TelemetryLog
    loadgens: list[LoadgenResult]
    benchmarks: list[BenchmarkRun]

    @property
    def warnings(self) -> list[str]:
        out = list(self.telemetry.warnings)
        for lg in self.loadgens:
            out.extend(lg.warnings)
        return out


def read_inputs(paths: list[str]) -> Inputs:
    """Read every input, telling each one's kind by its content.

    Exactly one telemetry log is needed; any number of load-generator results
    and pytest-benchmark files may come with it.
    """
    logs: list[TelemetryLog] = []
    loadgens: list[LoadgenResult] = []
    benchmarks: list[BenchmarkRun] = []
    for path in paths:
        text = _read_text(path)
        kind = detect_kind(path, text)
        if kind == "telemetry":
            logs.append(read_telemetry_log(path, text))
        elif kind == "loadgen":
            loadgens.append(read_loadgen(path, text))
        else:
            benchmarks.append(read_pytest_benchmark(path, text))
    if not logs:
        raise InputError(
            f"no telemetry log among the inputs ({', '.join(paths)}); "
            "give the file written by lltrade-telemetry --log"
        )
    if len(logs) > 1:
        raise InputError(
            f"{len(logs)} telemetry logs given ({', '.join(lg.path for lg in logs)}); give one"
        )
    return Inputs(logs[0], loadgens, benchmarks)
