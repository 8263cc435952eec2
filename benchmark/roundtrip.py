"""Order-to-ack round trips over loopback, against a TCP echo measured in the same run.

    python benchmark/roundtrip.py [--rate 10000] [--duration 5] [--json PATH]
    python benchmark/roundtrip.py --peak [--connections 4] [--window 256]

The script is the load generator.  It starts each server itself as a
separate process on 127.0.0.1 (``python -m lltrade run --port 0``, or a
uvloop echo server: this same file with ``--serve-echo``), pinned to one
CPU, and pins itself to another when the machine has two or more.  Every
server is stopped (SIGTERM, then SIGKILL after a timeout) before the script
ends, whatever happens; a child also gets SIGTERM if the script dies.

Latency (default).  One connection, open loop: orders are sent on a fixed
schedule (``--rate`` per second for ``--warmup`` + ``--duration`` seconds,
only the last ``--duration`` seconds measured) whether or not earlier ones
were answered, and each round trip is timed from the order's *planned* send
time to the arrival of its first answer (``OrderAccepted``).  Timing from the
planned time corrects for coordinated omission: if the generator (or the
socket) held an order back, the wait counts against the figure instead of
vanishing.  The orders alternate a GTC buy and an IOC sell of 1 lot of DEMO
at its reference price, so every sell trades against the buy before it and
the book never holds more than one order; they are sent by the ``admin``
demo account (rate limit 1M messages/s).  The floor is a uvloop echo server
(an ``asyncio.Protocol`` writing back what it reads) measured the same way
with the same frames.  Each of them runs in blocking mode and in busy-poll
mode (the loop never sleeps); a daemon figure is divided by the echo's in
the same mode.

Peak (``--peak``).  ``--connections`` sessions each keep ``--window`` orders
in flight (a new order for every answer), for ``--duration`` seconds after
``--warmup``; the figure is orders acknowledged per second.  The same load
against the echo server shows what the load generator and the loopback can
carry at most.

The load generator is ordinary Python on one core: a spin loop of
non-blocking reads (latency) or an epoll loop (peak).  Each row says what
limited it.  Latency: ``LOADGEN`` when the generator could not carry the
load (its send rate fell more than ``--behind-pct`` % short of the target,
or it was busy more than 90% of the time): the row then measures the
generator, not the server; ``late`` when it carried the load but sent later
than ``--behind-pct`` % of the send interval at the 99th percentile, so the
tail figures include its own lateness.  Peak: ``LOADGEN`` when its core was
saturated and the server's was not, ``window`` when neither was (too few
orders in flight).  Before the runs it spins on each CPU for
``--noise-probe`` seconds and reports the stalls it suffered (interrupts,
other tasks, the hypervisor): the machine's own noise floor; each row also
reports the CPU everything else used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import psutil
from hdrh.histogram import HdrHistogram

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from figures import fmt_ns, fmt_rate, fmt_ratio
from lltrade.config import DEMO_SECRETS, default_config
from lltrade.enums import STP, TIF, Side
from lltrade.protocol import (
    CLIENT_DECODER,
    DAEMON_DECODER,
    PROTOCOL_VERSION,
    Disconnect,
    Done,
    FrameError,
    FrameReader,
    Logon,
    LogonAck,
    LogonReject,
    MassCancel,
    NewOrder,
    OrderAccepted,
    OrderRejected,
    Reject,
    encode_frame,
)
from loadgen_machine import machine_info
from loadgen_schedule import (
    HIST_DIGITS,
    HIST_HIGHEST_NS,
    HIST_LOWEST_NS,
    NS_PER_S,
    achieved_rate,
    corrected_latencies,
    due_by,
    histogram_of,
    naive_latencies,
    order_count,
    planned_send_ns,
)
from loadgen_schedule import new_histogram as new_histogram  # re-exported for the tests

HOST: Final = "127.0.0.1"
SYMBOL: Final = 1  # DEMO in the embedded config
ACCOUNT: Final = "admin"  # 1M messages/s; a trader account has 100k
BUSY_LIMIT: Final = 0.9  # generator busier than this: it is the bottleneck
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 5.0
_HEADER: Final = struct.Struct("<I")
_PR_SET_PDEATHSIG: Final = 1

# Wire tags the peak loop counts (docs/protocol.md, section 4).
TAG_NEW_ORDER: Final = 4
TAG_DISCONNECT: Final = 35
TAG_REJECT: Final = 36
TAG_ORDER_ACCEPTED: Final = 40
TAG_ORDER_REJECTED: Final = 41


# =====================================================================================
# Schedule and coordinated omission (pure; tests/unit/test_roundtrip_schedule.py).
# The schedule, the latency maths and the histograms are the load generator's
# (loadgen_schedule.py), imported above.
# =====================================================================================


def summarise(hist: HdrHistogram) -> dict[str, int]:
    """p50, p90, p99, p99.9 and max of a histogram, in ns."""
    return {
        "count": hist.get_total_count(),
        "p50_ns": hist.get_value_at_percentile(50),
        "p90_ns": hist.get_value_at_percentile(90),
        "p99_ns": hist.get_value_at_percentile(99),
        "p999_ns": hist.get_value_at_percentile(99.9),
        "max_ns": hist.get_max_value(),
    }


def ratio(value: float, floor: float) -> float | None:
    """``value / floor``, or None without a usable floor."""
    if floor <= 0:
        return None
    return value / floor


@dataclass
class GeneratorCheck:
    """What the load generator did to an open-loop run.

    ``bottleneck``: it could not carry the load (sent short of the target
    rate, or busy nearly all the time): the row measures the generator.
    ``late``: it carried the load but sent late at the tail, so the tail
    percentiles include its own lateness (compare with the machine's noise).
    """

    bottleneck: list[str]
    late: list[str]

    @property
    def verdict(self) -> str:
        return "LOADGEN" if self.bottleneck else ("late" if self.late else "ok")


def check_generator(
    rate: int,
    planned_ns: np.ndarray,
    sent_ns: np.ndarray,
    busy_fraction: float,
    behind_pct: float,
    busy_limit: float = BUSY_LIMIT,
) -> GeneratorCheck:
    """Whether the load generator, not the server, limits an open-loop run.

    Parameters
    ----------
    rate
        The target, orders per second.
    planned_ns, sent_ns
        Planned and actual send times of the measured orders.
    busy_fraction
        Share of the run's wall time the generator spent working (sending,
        reading, decoding) rather than waiting for the next event.
    behind_pct
        Tolerance, in percent: the send rate may fall short of ``rate`` by
        this much, and the 99th percentile of the lateness ``sent - planned``
        may be this share of the send interval.
    busy_limit
        Busy share above which the generator counts as saturated.
    """
    n = len(planned_ns)
    if n == 0:
        return GeneratorCheck(["no order was sent"], [])
    bottleneck: list[str] = []
    late: list[str] = []
    sent_rate = achieved_rate(int(sent_ns[0]), int(sent_ns[-1]), n)
    if n > 1 and sent_rate < rate * (1 - behind_pct / 100):
        bottleneck.append(
            f"sent {fmt_rate(sent_rate)}, more than {behind_pct:g}% short of {fmt_rate(rate)}"
        )
    if busy_fraction > busy_limit:
        bottleneck.append(f"generator busy {busy_fraction:.0%} of the time (> {busy_limit:.0%})")
    lag = naive_latencies(planned_ns, sent_ns)  # sent - planned
    interval = NS_PER_S / rate
    p99_lag = float(np.percentile(lag, 99))
    if p99_lag > interval * behind_pct / 100:
        late.append(
            f"p99 send lag {fmt_ns(p99_lag)} > {behind_pct:g}% of the {fmt_ns(interval)} interval"
        )
    return GeneratorCheck(bottleneck, late)


def spin_gaps(seconds: float, min_gap_ns: int = 10_000) -> tuple[int, list[int]]:
    """Read the clock in a loop for ``seconds``; return (turns, the gaps >= ``min_gap_ns``).

    Nothing in the loop waits, so a gap is time the core was taken away
    (interrupts, other threads, the hypervisor): the machine's own noise,
    which a spinning load generator suffers as lateness.
    """
    perf = time.perf_counter_ns
    end = perf() + int(seconds * NS_PER_S)
    gaps: list[int] = []
    turns = 0
    last = perf()
    while last < end:
        t = perf()
        if t - last >= min_gap_ns:
            gaps.append(t - last)
        last = t
        turns += 1
    return turns, gaps


def noise_summary(seconds: float, gaps: list[int]) -> dict[str, float]:
    """Gaps per second over 20 us and 100 us, the longest gap and the share of time lost."""
    return {
        "seconds": seconds,
        "gaps_over_20us_per_s": sum(g > 20_000 for g in gaps) / seconds,
        "gaps_over_100us_per_s": sum(g > 100_000 for g in gaps) / seconds,
        "max_gap_ns": max(gaps, default=0),
        "lost_share": sum(gaps) / (seconds * NS_PER_S),
    }


def peak_limit(generator_cpu: float, server_cpu: float, busy_poll: bool) -> tuple[str, str]:
    """What limited a peak run: ``(verdict, why)``.

    ``generator_cpu`` and ``server_cpu`` are CPU seconds per wall second (1.0
    = one core saturated).  Verdicts: ``ok`` (the server was the limit),
    ``LOADGEN`` (the generator was saturated, the server was not or cannot
    be told: a busy-polling server always shows 1.0), ``window`` (neither
    was saturated: the orders in flight were too few to keep the server
    busy).
    """
    generator_full = generator_cpu >= BUSY_LIMIT
    server_full = busy_poll or server_cpu >= BUSY_LIMIT
    if generator_full and (busy_poll or not server_full):
        return (
            "LOADGEN",
            f"generator CPU {generator_cpu:.0%} of a core"
            + ("" if busy_poll else f", server only {server_cpu:.0%}")
            + ": the figure is the generator's ceiling, a lower bound for the server",
        )
    if not server_full:
        return (
            "window",
            f"server CPU {server_cpu:.0%}, generator {generator_cpu:.0%}: neither is saturated, "
            "too few orders in flight (raise --window or --connections)",
        )
    return "ok", ""


def count_tags(buf: bytes | bytearray, start: int, counts: list[int]) -> int:
    """Count the tags of the complete frames in ``buf[start:]``; return where the rest starts.

    ``counts[tag]`` is incremented per frame.  Only the tag is read: every
    message body is a MessagePack fixarray whose first element, the tag, is a
    positive fixint (docs/protocol.md, section 2), so it is the body's
    second byte.  A body that is not so is counted under tag 0.
    """
    end = len(buf)
    unpack = _HEADER.unpack_from
    while start + 4 <= end:
        length: int = unpack(buf, start)[0]
        body = start + 4
        stop = body + length
        if stop > end:
            break
        if length >= 2 and 0x90 <= buf[body] <= 0x9F and buf[body + 1] < len(counts):
            counts[buf[body + 1]] += 1
        else:
            counts[0] += 1
        start = stop
    return start


# =====================================================================================
# Orders
# =====================================================================================


def order_for(index: int, seq: int, cl_ord_id: int, price: int) -> NewOrder:
    """Order ``index`` of the stream: even ones buy GTC, odd ones sell IOC, 1 lot at ``price``.

    Each sell trades against the buy before it, so the book stays empty
    between pairs (with one session; with several, at most a few orders rest).
    """
    if index % 2 == 0:
        return NewOrder(seq, cl_ord_id, SYMBOL, Side.BUY, price, 1, TIF.GTC, False, STP.NONE)
    return NewOrder(seq, cl_ord_id, SYMBOL, Side.SELL, price, 1, TIF.IOC, False, STP.NONE)


def order_frames(count: int, first_seq: int, price: int) -> tuple[bytes, list[int]]:
    """``count`` framed orders (cl_ord_id = index + 1) and their byte offsets (``count + 1``)."""
    buf = bytearray()
    offsets = [0]
    for i in range(count):
        encode_frame(order_for(i, first_seq + i, i + 1, price), buf)
        offsets.append(len(buf))
    return bytes(buf), offsets


def reference_price() -> int:
    """DEMO's reference price: inside its price collar whatever the collar is."""
    for s in default_config().symbols:
        if s.id == SYMBOL:
            return s.reference_price
    raise LookupError(f"no symbol {SYMBOL} in the embedded config")


# =====================================================================================
# Formatting and machine
# =====================================================================================


def timer_cost_ns() -> float:
    """Median cost of one ``perf_counter_ns`` call (in every timestamp)."""
    perf = time.perf_counter_ns
    samples = []
    for _ in range(20_000):
        t0 = perf()
        samples.append(perf() - t0)
    return float(np.median(samples))


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far, every process and interrupt."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


OTHER_LOAD_LIMIT: Final = 0.05  # cores used by others during a run before it is called noisy


# =====================================================================================
# Child processes
# =====================================================================================


def _child_setup(cpus: set[int]) -> Callable[[], None]:
    """``preexec_fn``: SIGTERM the child when this script dies; undo the generator's pinning."""
    libc_name = ctypes.util.find_library("c")

    def setup() -> None:
        if libc_name:
            ctypes.CDLL(libc_name).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        os.sched_setaffinity(0, cpus)

    return setup


class Server:
    """A server process started from a command line; ready once it logs ``listening``.

    The process writes its log to a temporary file (removed by :meth:`stop`), read for the
    ``{"msg": "listening", "address": [host, port]}`` line.
    """

    def __init__(self, name: str, argv: list[str], all_cpus: set[int]) -> None:
        self.name = name
        self.argv = argv
        fd, self._log_path = tempfile.mkstemp(prefix="lltrade-roundtrip-", suffix=".log")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=fd,
                preexec_fn=_child_setup(all_cpus),
            )
        finally:
            os.close(fd)
        self.ps = psutil.Process(self.proc.pid)
        self.address: tuple[str, int] = (HOST, 0)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("msg") == "listening":
                    host, port = entry["address"][:2]
                    self.address = (str(host), int(port))
                    return self.address
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before listening:\n"
                    + self.log_tail()
                )
            time.sleep(0.01)
        raise TimeoutError(f"{self.name} not listening after {timeout} s:\n" + self.log_tail())

    def log_lines(self) -> list[str]:
        try:
            with open(self._log_path, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU seconds the server has used so far."""
        t = self.ps.cpu_times()
        return t.user, t.system

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then SIGKILL if it has not exited within the timeout.

        Returns the server's last log record (the daemon's ``stopped`` line carries its
        own read-to-write latency summary), or ``{}``.
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        final: dict[str, Any] = {}
        for line in reversed(self.log_lines()):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("msg") == "stopped":
                    final = entry
                    break
        with contextlib.suppress(OSError):
            os.unlink(self._log_path)
        return final


def daemon_argv(cpu: int | None, busy_poll: bool, loop: str) -> list[str]:
    argv = [sys.executable, "-m", "lltrade", "run", "--host", HOST, "--port", "0"]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    argv += ["--busy-poll" if busy_poll else "--no-busy-poll", "--loop", loop]
    return argv


JOURNALS = ("off", "none", "batch", "interval", "none-write", "batch-write", "interval-write")
"""The daemon's journal settings: off, or a policy (``-write``: one write(2) per batch
instead of the memory-mapped segment)."""


def journal_argv(journal: str, directory: str) -> list[str]:
    """The daemon's flags for ``--journal``: off, or a policy with its journal in ``directory``."""
    if journal == "off":
        return ["--no-journal"]
    policy, _, how = journal.partition("-")
    argv = ["--journal-dir", directory, "--durability", policy]
    return [*argv, "--no-journal-mmap"] if how == "write" else argv


def echo_argv(cpu: int | None, busy_poll: bool) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--serve-echo", "--port", "0"]
    if cpu is not None:
        argv += ["--server-cpu", str(cpu)]
    if busy_poll:
        argv.append("--busy-poll")
    return argv


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the load generator on ``cpu`` (nothing when None), the GC off; restore after."""
    before = os.sched_getaffinity(0)
    gc.collect()
    gc.disable()
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        yield
    finally:
        os.sched_setaffinity(0, before)
        gc.enable()


# =====================================================================================
# The echo server (this file with --serve-echo)
# =====================================================================================


class _Echo(asyncio.Protocol):
    """Writes back whatever it reads."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def serve_echo(port: int, cpu: int | None, busy_poll: bool) -> int:
    """Run the echo server until SIGTERM/SIGINT, set up as the daemon sets itself up."""
    import uvloop

    from lltrade.runtime import BusyPoll, freeze_gc

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(_Echo, HOST, port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    busy = BusyPoll(loop) if busy_poll else None
    if busy is not None:
        busy.start()
    freeze_gc()
    host, bound = server.sockets[0].getsockname()[:2]
    print(json.dumps({"msg": "listening", "address": [host, bound]}), file=sys.stderr, flush=True)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        if busy is not None:
            busy.stop()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return 0


# =====================================================================================
# Connections
# =====================================================================================


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=START_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def logon(sock: socket.socket, account: str) -> int:
    """Log on and clear the stream (a MassCancel answered by Done); return the next seq.

    Everything the daemon sends up to that ``Done`` (``LogonAck``, the
    ``SymbolInfo`` messages) is read here, so the measurement reads nothing
    but answers to its orders.
    """
    reader: FrameReader[Any] = FrameReader(DAEMON_DECODER, 16 << 20)
    out = bytearray()
    encode_frame(Logon(1, PROTOCOL_VERSION, account, DEMO_SECRETS[account]), out)
    encode_frame(MassCancel(2, SYMBOL, 0), out)
    sock.sendall(out)
    logged_on = False
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the daemon closed the connection during logon")
        for msg in reader.feed(data):
            if isinstance(msg, LogonReject | Disconnect | FrameError | Reject):
                raise ConnectionError(f"logon as {account!r} failed: {msg}")
            if isinstance(msg, LogonAck):
                logged_on = True
            elif isinstance(msg, Done) and msg.ref_seq == 2:
                if not logged_on or reader.pending:
                    raise ConnectionError("unexpected stream during logon")
                return 3


# =====================================================================================
# Open loop (latency)
# =====================================================================================


@dataclass
class LoopResult:
    """What one open-loop run saw; times are ``perf_counter_ns`` values."""

    sent_ns: np.ndarray  #: when each order was released to the socket (0 = never)
    recv_ns: np.ndarray  #: when its answer was read (0 = never)
    answered: int
    rejected: int  #: answers other than the expected acknowledgement
    out_of_order: int  #: answers naming another order than the next one
    busy_ns: int  #: time spent sending, reading and decoding
    wall_ns: int
    polls: int  #: reads that found nothing
    ended_ns: int  #: when the loop stopped
    error: str | None = None


def open_loop(
    sock: socket.socket,
    frames: bytes,
    offsets: list[int],
    planned: list[int],
    reader: FrameReader[Any],
    echo: bool,
    timeout_ns: int,
) -> LoopResult:
    """Send ``frames`` on the ``planned`` schedule and time every answer (one spinning thread).

    Every order due is released at once, late or not (open loop): a slow
    answer never delays the next send.  A partial write (full socket
    buffer) is finished on the following turns; that wait is the server's.
    The k-th answer belongs to the k-th order (the daemon answers in order);
    its ``cl_ord_id`` is checked.  An echo answers with the order itself.
    """
    sock.setblocking(False)
    perf = time.perf_counter_ns
    send = sock.send
    recv_into = sock.recv_into
    feed = reader.buffer_updated
    view_of = reader.get_buffer
    frames_view = memoryview(frames)
    n = len(planned)
    sent = [0] * n
    recv = [0] * n
    never = 1 << 62
    released = 0
    next_due = planned[0] if n else never
    send_pos = 0
    send_end = 0
    answered = rejected = out_of_order = 0
    busy = 0
    polls = 0
    out: list[Any] = []
    error: str | None = None
    deadline = (planned[-1] if n else perf()) + timeout_ns
    ack_type: type = NewOrder if echo else OrderAccepted
    view = view_of()
    t_begin = perf()
    try:
        while answered < n:
            now = perf()
            if now >= next_due:
                j = due_by(planned, now, released + 1)
                for x in range(released, j):
                    sent[x] = now
                released = j
                send_end = offsets[j]
                next_due = planned[j] if j < n else never
            if send_pos < send_end:
                with contextlib.suppress(BlockingIOError):
                    send_pos += send(frames_view[send_pos:send_end])
                busy += perf() - now
            try:
                nbytes = recv_into(view)
            except BlockingIOError:
                polls += 1
                if not polls & 0x3FFF and now > deadline:
                    error = f"timed out: {answered} of {n} orders answered"
                    break
                continue
            t = perf()
            if nbytes == 0:
                error = f"connection closed after {answered} of {n} answers"
                break
            feed(nbytes, out)
            for msg in out:
                cls = type(msg)
                if cls is ack_type:
                    if msg.cl_ord_id != answered + 1:
                        out_of_order += 1
                elif cls is OrderRejected or cls is Reject:
                    rejected += 1
                elif cls is Disconnect or cls is FrameError:
                    error = f"stream ended: {msg}"
                    break
                else:
                    continue  # a fill, a cancel, a heartbeat: not an answer
                recv[answered] = t
                answered += 1
            out.clear()
            if error is not None:
                break
            view = view_of()
            busy += perf() - t
    except OSError as exc:  # BlockingIOError is handled inside
        error = f"socket error after {answered} of {n} answers: {exc}"
    wall = perf() - t_begin
    sock.setblocking(True)
    return LoopResult(
        np.array(sent, dtype=np.int64),
        np.array(recv, dtype=np.int64),
        answered,
        rejected,
        out_of_order,
        busy,
        wall,
        polls,
        t_begin + wall,
        error,
    )


@dataclass
class LatencyRow:
    """One latency measurement: a server in one mode."""

    mode: str
    server: str  #: "daemon" or "echo"
    busy_poll: bool
    target_rate: int
    orders: int  #: measured (after warm-up)
    answered: int
    rejected: int
    out_of_order: int
    achieved_rate: float
    stats: dict[str, int]
    stats_uncorrected: dict[str, int]
    lag_p50_ns: float
    lag_p99_ns: float
    lag_max_ns: float
    busy_fraction: float
    poll_ns: float  #: mean time of one turn of the generator's loop (timestamp resolution)
    server_cpu: float  #: server CPU seconds per wall second during the run
    other_cpu: float  #: CPU seconds per wall second used by everything else (noise)
    preempted: int  #: the generator's involuntary context switches during the run
    generator: GeneratorCheck
    error: str | None
    histogram: str
    histogram_uncorrected: str
    ratio_p50: float | None = None
    ratio_p99: float | None = None
    ratio_p999: float | None = None


def measure_latency(
    server: Server, echo: bool, busy_poll: bool, args: argparse.Namespace, price: int
) -> LatencyRow:
    sock = connect(server.address)
    try:
        first_seq = 1 if echo else logon(sock, ACCOUNT)
        warm = order_count(args.rate, args.warmup)
        count = warm + order_count(args.rate, args.duration)
        frames, offsets = order_frames(count, first_seq, price)
        decoder: Any = CLIENT_DECODER if echo else DAEMON_DECODER
        reader: FrameReader[Any] = FrameReader(decoder, 16 << 20, 1 << 20)
        with pinned(args.client_cpu):
            start = time.perf_counter_ns() + 20_000_000
            planned = planned_send_ns(start, args.rate, count)
            me = psutil.Process()
            cpu0 = server.cpu_seconds()
            machine0, gen0 = busy_cpu_seconds(), sum(me.cpu_times()[:2])
            switches0 = me.num_ctx_switches().involuntary
            t0 = time.perf_counter_ns()
            res = open_loop(
                sock,
                frames,
                offsets,
                planned.tolist(),
                reader,
                echo,
                int((args.duration + 10) * NS_PER_S),
            )
            wall = time.perf_counter_ns() - t0
            cpu1 = server.cpu_seconds()
            machine = busy_cpu_seconds() - machine0
            gen = sum(me.cpu_times()[:2]) - gen0
            switches = me.num_ctx_switches().involuntary - switches0
    finally:
        sock.close()
    m = slice(warm, count)
    p, s, r = planned[m], res.sent_ns[m], res.recv_ns[m]
    answered = max(res.answered - warm, 0)
    # An order never answered waited at least until the run ended: count it so.
    r = np.where(r > 0, r, res.ended_ns)
    corrected = histogram_of(corrected_latencies(p, r))
    s_filled = np.where(s > 0, s, r)
    naive = histogram_of(naive_latencies(s_filled, r))
    lag = naive_latencies(p, s_filled)
    ok = r[r > 0]
    busy_fraction = res.busy_ns / res.wall_ns if res.wall_ns else 0.0
    turns = res.polls + res.answered
    name = ("echo " if echo else "daemon ") + ("busy-poll" if busy_poll else "blocking")
    return LatencyRow(
        mode=name,
        server="echo" if echo else "daemon",
        busy_poll=busy_poll,
        target_rate=args.rate,
        orders=count - warm,
        answered=answered,
        rejected=res.rejected,
        out_of_order=res.out_of_order,
        achieved_rate=achieved_rate(int(p[0]), int(ok.max()), answered) if len(ok) else 0.0,
        stats=summarise(corrected),
        stats_uncorrected=summarise(naive),
        lag_p50_ns=float(np.percentile(lag, 50)),
        lag_p99_ns=float(np.percentile(lag, 99)),
        lag_max_ns=float(lag.max()),
        busy_fraction=busy_fraction,
        poll_ns=res.wall_ns / turns if turns else 0.0,
        server_cpu=(sum(cpu1) - sum(cpu0)) / (wall / NS_PER_S),
        other_cpu=max(machine - gen - (sum(cpu1) - sum(cpu0)), 0.0) / (wall / NS_PER_S),
        preempted=switches,
        generator=check_generator(args.rate, p, s_filled, busy_fraction, args.behind_pct),
        error=res.error,
        histogram=corrected.encode().decode("ascii"),
        histogram_uncorrected=naive.encode().decode("ascii"),
    )


# =====================================================================================
# Peak: pipelined connections
# =====================================================================================


class _Pipe:
    """One pipelined connection of the peak run."""

    __slots__ = ("acked", "cl_ord_id", "counts", "inbuf", "out", "price", "seq", "sock")

    def __init__(self, sock: socket.socket, seq: int, price: int) -> None:
        self.sock = sock
        self.seq = seq
        self.price = price
        self.cl_ord_id = 0
        self.acked = 0
        self.inbuf = bytearray()
        self.out = bytearray()
        self.counts = [0] * 128

    def queue(self, count: int) -> None:
        out = self.out
        seq = self.seq
        cl = self.cl_ord_id
        price = self.price
        for _ in range(count):
            encode_frame(order_for(cl, seq, cl + 1, price), out)
            seq += 1
            cl += 1
        self.seq = seq
        self.cl_ord_id = cl

    def flush(self) -> None:
        if self.out:
            with contextlib.suppress(BlockingIOError):
                sent = self.sock.send(self.out)
                del self.out[:sent]


@dataclass
class PeakRow:
    mode: str
    server: str
    busy_poll: bool
    connections: int
    window: int
    orders: int  #: answered in the measured window
    seconds: float
    rate: float
    rejected: int
    server_cpu: float
    server_user: float
    server_system: float
    generator_cpu: float
    other_cpu: float  #: CPU seconds per wall second used by everything else (noise)
    limit: tuple[str, str]  #: :func:`peak_limit`'s verdict and reason
    error: str | None = None

    @property
    def us_per_order(self) -> float | None:
        return self.server_cpu * 1e6 / self.rate if self.rate and not self.busy_poll else None


@dataclass
class _Tally:
    """Counters read when the measured window opens and when it closes."""

    t_ns: int
    acked: int
    server_user: float
    server_system: float
    generator: float
    machine: float

    @classmethod
    def now(cls, pipes: list[_Pipe], server: Server) -> _Tally:
        user, system = server.cpu_seconds()
        return cls(
            time.perf_counter_ns(),
            sum(p.acked for p in pipes),
            user,
            system,
            time.process_time(),
            busy_cpu_seconds(),
        )


def pump(
    pipes: list[_Pipe], server: Server, ack_tag: int, window: int, warmup_s: float, seconds: float
) -> tuple[_Tally, _Tally, str | None]:
    """Keep ``window`` orders in flight on every pipe; tally after ``warmup_s`` and at the end.

    Each answer read makes room for one more order; what is queued is sent
    once per turn.  Returns the two tallies and an error, if any.
    """
    poller = select.epoll()
    by_fd = {}
    for pipe in pipes:
        pipe.sock.setblocking(False)
        poller.register(pipe.sock.fileno(), select.EPOLLIN)
        by_fd[pipe.sock.fileno()] = pipe
        pipe.queue(window)
        pipe.flush()
    perf = time.perf_counter_ns
    now = perf()
    t_measure = now + int(warmup_s * NS_PER_S)
    t_end = t_measure + int(seconds * NS_PER_S)
    first: _Tally | None = None
    error: str | None = None
    answer_tags = (ack_tag, TAG_ORDER_REJECTED, TAG_REJECT)
    try:
        while now < t_end and error is None:
            pending = any(p.out for p in pipes)
            for fd, _ in poller.poll(0 if pending else 0.05):
                pipe = by_fd[fd]
                data = pipe.sock.recv(1 << 20)
                if not data:
                    error = "connection closed by the server"
                    break
                pipe.inbuf += data
                counts = pipe.counts
                before = sum(counts[t] for t in answer_tags)
                del pipe.inbuf[: count_tags(pipe.inbuf, 0, counts)]
                pipe.acked += sum(counts[t] for t in answer_tags) - before
                room = window - (pipe.cl_ord_id - pipe.acked)
                if room > 0:
                    pipe.queue(room)
                if counts[TAG_DISCONNECT]:
                    error = "the daemon disconnected a session"
            for pipe in pipes:
                pipe.flush()
            now = perf()
            if first is None and now >= t_measure:
                first = _Tally.now(pipes, server)
    except OSError as exc:
        error = f"socket error: {exc}"
    finally:
        poller.close()
    last = _Tally.now(pipes, server)
    return first or last, last, error


def measure_peak(
    server: Server, echo: bool, busy_poll: bool, args: argparse.Namespace, price: int
) -> PeakRow:
    pipes: list[_Pipe] = []
    try:
        for _ in range(args.connections):
            sock = connect(server.address)
            pipes.append(_Pipe(sock, 1 if echo else logon(sock, ACCOUNT), price))
        with pinned(args.client_cpu):
            ack_tag = TAG_NEW_ORDER if echo else TAG_ORDER_ACCEPTED
            first, last, error = pump(
                pipes, server, ack_tag, args.window, args.warmup, args.duration
            )
    finally:
        for pipe in pipes:
            pipe.sock.close()
    seconds = max((last.t_ns - first.t_ns) / NS_PER_S, 1e-9)
    orders = last.acked - first.acked
    user = (last.server_user - first.server_user) / seconds
    system = (last.server_system - first.server_system) / seconds
    generator_cpu = (last.generator - first.generator) / seconds
    machine = (last.machine - first.machine) / seconds
    return PeakRow(
        mode=("echo " if echo else "daemon ") + ("busy-poll" if busy_poll else "blocking"),
        server="echo" if echo else "daemon",
        busy_poll=busy_poll,
        connections=args.connections,
        window=args.window,
        orders=orders,
        seconds=seconds,
        rate=orders / seconds,
        rejected=sum(p.counts[TAG_ORDER_REJECTED] + p.counts[TAG_REJECT] for p in pipes),
        server_cpu=user + system,
        server_user=user,
        server_system=system,
        generator_cpu=generator_cpu,
        other_cpu=max(machine - user - system - generator_cpu, 0.0),
        limit=peak_limit(generator_cpu, user + system, busy_poll),
        error=error,
    )


# =====================================================================================
# Reports
# =====================================================================================


def print_latency(rows: list[LatencyRow]) -> None:
    head = (
        f"{'mode':<18} {'rate':>9} {'p50':>9} {'p90':>9} {'p99':>9} {'p99.9':>9} {'max':>9} "
        f"{'p50/echo':>8} {'p99/echo':>8}  generator"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        s = r.stats
        verdict = r.generator.verdict
        if r.error:
            verdict = "ERROR"
        print(
            f"{r.mode:<18} {fmt_rate(r.achieved_rate):>9} {fmt_ns(s['p50_ns']):>9} "
            f"{fmt_ns(s['p90_ns']):>9} {fmt_ns(s['p99_ns']):>9} {fmt_ns(s['p999_ns']):>9} "
            f"{fmt_ns(s['max_ns']):>9} {fmt_ratio(r.ratio_p50):>8} {fmt_ratio(r.ratio_p99):>8}"
            f"  {verdict}"
        )
    print()
    print("latency from the planned send time (coordinated-omission corrected); ratios: a")
    print("daemon row over the echo row of the same mode.  generator: ok; late = it sent late")
    print("at the tail, which is in the tail figures; LOADGEN = it could not carry the load.")
    print("per row: orders measured / answered / rejected; p99 from the actual send instead;")
    print("generator send lag p50 / p99 / max, busy share, loop turn, times preempted; CPU")
    print("of the server and of everything else (other processes, interrupts):")
    for r in rows:
        print(
            f"  {r.mode:<18} {r.orders} / {r.answered} / {r.rejected}"
            + (f" ({r.out_of_order} out of order)" if r.out_of_order else "")
            + f"; p99 uncorrected {fmt_ns(r.stats_uncorrected['p99_ns'])}"
            + f"; lag {fmt_ns(r.lag_p50_ns)} / {fmt_ns(r.lag_p99_ns)} / {fmt_ns(r.lag_max_ns)}"
            + f", busy {r.busy_fraction:.0%}, turn {fmt_ns(r.poll_ns)}, {r.preempted}x"
            + f"; CPU server {r.server_cpu:.0%}, other {r.other_cpu:.0%}"
        )
        if r.other_cpu > OTHER_LOAD_LIMIT:
            print(f"  {'':<18} noisy: other work used {r.other_cpu:.0%} of a core meanwhile")
        for problem in r.generator.bottleneck:
            print(f"  {'':<18} LOADGEN: {problem}")
        for problem in r.generator.late:
            print(f"  {'':<18} late: {problem}")
        if r.error:
            print(f"  {'':<18} ERROR: {r.error}")


def print_peak(rows: list[PeakRow]) -> None:
    head = (
        f"{'mode':<18} {'conns x window':>14} {'orders/s':>10} {'server CPU (user+sys)':>22} "
        f"{'us/order':>9} {'gen CPU':>8} {'other':>6}  generator"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        us = r.us_per_order
        verdict = "ERROR" if r.error else r.limit[0]
        cpu = f"{r.server_cpu:.0%} ({r.server_user:.0%}+{r.server_system:.0%})"
        print(
            f"{r.mode:<18} {f'{r.connections} x {r.window}':>14} {fmt_rate(r.rate):>10} "
            f"{cpu:>22} {'-' if us is None else f'{us:.2f}':>9} {r.generator_cpu:>8.0%} "
            f"{r.other_cpu:>6.0%}  {verdict}"
        )
    print()
    print("us/order: the server's CPU time per answered order (blocking mode only: a")
    print("busy-polling server uses its whole core whatever the load); gen CPU: the load")
    print("generator's; other: everything else on the machine (processes, interrupts)")
    for r in rows:
        if r.limit[1]:
            print(f"  {r.mode:<18} {r.limit[0]}: {r.limit[1]}")
        if r.rejected:
            print(f"  {r.mode:<18} {r.rejected} orders rejected")
        if r.other_cpu > OTHER_LOAD_LIMIT:
            print(f"  {r.mode:<18} noisy: other work used {r.other_cpu:.0%} of a core meanwhile")
        if r.error:
            print(f"  {r.mode:<18} ERROR: {r.error}")


def pick_cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(server CPU, generator CPU): the last two usable CPUs, or None, None on one core."""
    usable = sorted(os.sched_getaffinity(0))
    server, client = args.server_cpu, args.client_cpu
    if len(usable) < 2:
        return server, client
    if server is None:
        server = usable[-1]
    if client is None:
        client = next(c for c in reversed(usable) if c != server)
    return server, client


# =====================================================================================
# Main
# =====================================================================================


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=int, default=10_000, help="orders per second (default 10000)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    p.add_argument("--peak", action="store_true", help="measure the peak rate instead")
    p.add_argument("--connections", type=int, default=4, help="peak: sessions (default 4)")
    p.add_argument("--window", type=int, default=256, help="peak: orders in flight (256)")
    p.add_argument(
        "--modes",
        default="blocking,busy-poll",
        help="server modes to run, comma-separated (default blocking,busy-poll)",
    )
    p.add_argument("--no-echo", action="store_true", help="skip the echo servers")
    p.add_argument(
        "--journal",
        choices=JOURNALS,
        default="none",
        help="the daemon's journal: off, or its durability policy, in a temporary "
        "directory (default none, the demo configuration's; -write: one write(2) per batch "
        "instead of the memory-mapped segment)",
    )
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="daemon loop")
    p.add_argument("--server-cpu", type=int, help="CPU of the servers (default: last usable)")
    p.add_argument("--client-cpu", type=int, help="CPU of the load generator (default: next)")
    p.add_argument(
        "--behind-pct",
        type=float,
        default=10.0,
        help="generator lateness tolerated, %% of the send interval (default 10)",
    )
    p.add_argument(
        "--noise-probe",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="spin this long on each CPU first to measure the machine's stalls (default 1)",
    )
    p.add_argument("--json", metavar="PATH", help="write the figures and histograms as JSON")
    p.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--busy-poll", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("blocking", "busy-poll") for m in modes):
        p.error(f"--modes: blocking and/or busy-poll, got {args.modes!r}")
    args.mode_list = modes
    if args.rate < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--rate must be >= 1, --duration > 0, --warmup >= 0")
    if args.connections < 1 or args.window < 1:
        p.error("--connections and --window must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_echo:
        return serve_echo(args.port, args.server_cpu, args.busy_poll)
    all_cpus = os.sched_getaffinity(0)
    args.server_cpu, args.client_cpu = pick_cpus(args)
    info = machine_info()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores (usable {info['cores_usable']}), "
        f"{info['platform']}"
    )
    print(
        f"python {info['python']}, uvloop {info['uvloop']}, msgspec {info['msgspec']}, "
        f"commit {info['commit']}; timer perf_counter_ns, {timer_cost_ns():.0f} ns per call"
    )
    if args.server_cpu is None or args.client_cpu is None:
        print("one usable core: servers and load generator share it (figures are pessimistic)")
    else:
        print(f"servers on CPU {args.server_cpu}, load generator on CPU {args.client_cpu}")
    noise: dict[str, dict[str, float]] = {}
    for role, cpu in (("generator", args.client_cpu), ("server", args.server_cpu)):
        with pinned(cpu):
            _, gaps = spin_gaps(args.noise_probe)
        noise[role] = summary = noise_summary(args.noise_probe, gaps)
        print(
            f"machine noise, {role} CPU {'-' if cpu is None else cpu} ({args.noise_probe:g} s "
            f"spin): {summary['gaps_over_20us_per_s']:.0f}/s stalls > 20 us, "
            f"{summary['gaps_over_100us_per_s']:.0f}/s > 100 us, longest "
            f"{fmt_ns(summary['max_gap_ns'])}, {summary['lost_share']:.2%} of the time lost"
        )
    price = reference_price()
    what = (
        f"peak: {args.connections} connections x {args.window} orders in flight"
        if args.peak
        else f"open loop at {args.rate} orders/s, one connection"
    )
    print(
        f"{what}, {args.warmup:g} s warm-up + {args.duration:g} s measured per row; orders "
        f"alternate buy GTC / sell IOC 1 @ {price} (DEMO), account {ACCOUNT}, loop {args.loop}, "
        f"journal {args.journal}"
    )
    print()

    latency_rows: list[LatencyRow] = []
    peak_rows: list[PeakRow] = []
    servers = [("echo", True)] if not args.no_echo else []
    servers.append(("daemon", False))
    for mode in args.mode_list:
        busy_poll = mode == "busy-poll"
        for kind, echo in servers:
            journal_dir = tempfile.mkdtemp(prefix="lltrade-roundtrip-journal-")
            argv = (
                echo_argv(args.server_cpu, busy_poll)
                if echo
                else daemon_argv(args.server_cpu, busy_poll, args.loop)
                + journal_argv(args.journal, journal_dir)
            )
            server = Server(f"{kind} ({mode})", argv, all_cpus)
            try:
                server.wait_ready()
                if args.peak:
                    peak_rows.append(measure_peak(server, echo, busy_poll, args, price))
                else:
                    latency_rows.append(measure_latency(server, echo, busy_poll, args, price))
            finally:
                final = server.stop()
                shutil.rmtree(journal_dir, ignore_errors=True)
            inside = final.get("read_to_write_ns")
            if inside and inside.get("count"):
                print(
                    f"{kind} ({mode}) own time per read, frames in -> answers written: "
                    f"p50 {fmt_ns(inside['p50'])}, p99 {fmt_ns(inside['p99'])}, "
                    f"p99.9 {fmt_ns(inside['p99.9'])} over {inside['count']} reads"
                )

    floors = {r.busy_poll: r for r in latency_rows if r.server == "echo"}
    for r in latency_rows:
        floor = floors.get(r.busy_poll)
        if floor is not None and r.server == "daemon":
            r.ratio_p50 = ratio(r.stats["p50_ns"], floor.stats["p50_ns"])
            r.ratio_p99 = ratio(r.stats["p99_ns"], floor.stats["p99_ns"])
            r.ratio_p999 = ratio(r.stats["p999_ns"], floor.stats["p999_ns"])
    if latency_rows:
        print_latency(latency_rows)
    if peak_rows:
        print_peak(peak_rows)

    if args.json:
        doc = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "machine": info,
            "machine_noise": noise,
            "settings": {
                k: v
                for k, v in vars(args).items()
                if k not in ("serve_echo", "port", "busy_poll", "json")
            },
            "histogram": {
                "unit": "ns",
                "lowest": HIST_LOWEST_NS,
                "highest": HIST_HIGHEST_NS,
                "significant_digits": HIST_DIGITS,
                "encoding": "HdrHistogram.encode() (compressed V2, base64)",
            },
            "latency": [_row_dict(r) for r in latency_rows],
            "peak": [{**_row_dict(r), "us_per_order": r.us_per_order} for r in peak_rows],
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"\nwritten: {args.json}")
    failed = any(r.error for r in latency_rows) or any(r.error for r in peak_rows)
    return 1 if failed else 0


def _row_dict(row: Any) -> dict[str, Any]:
    d = asdict(row)
    if isinstance(row, LatencyRow):
        d["generator"]["verdict"] = row.generator.verdict
    return d


if __name__ == "__main__":
    sys.exit(main())
