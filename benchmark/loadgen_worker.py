"""One load-generator process: its connections, its share of the schedule, its histograms.

The parent starts one worker per ``--processes``; each logs its own
connections on, reports ready, waits for the common start time and then
runs an open loop over its share of the global schedule
(``loadgen_schedule``): every message due is released at once, late or not,
and a slow answer never delays the next send.  Between sends it waits in
``select`` for answers.  A worker with a CPU to itself sleeps until shortly
before the next send when it is far (1 ns timer slack) and spins when it is
near, so it keeps its schedule to a few microseconds; workers sharing a CPU
sleep until each send is due, so none spins away the other's time.

Each connection's answers come in the order of its requests (the daemon
handles a session's messages in order and answers each first, before the
fills and cancellations it causes), so the next answer always belongs to
the oldest unanswered request; its ``cl_ord_id`` or ``ref_seq`` is checked
all the same.  Latency, from the planned send time to the arrival of the
answer, goes into one HDR recorder per type; send lateness into another.
The worker returns the encoded histograms and its counts to the parent,
which merges them.
"""

from __future__ import annotations

import select
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import psutil

from lltrade.enums import Reason
from lltrade.protocol import (
    Cancel,
    Cancelled,
    Disconnect,
    Fill,
    FrameError,
    Heartbeat,
    NewOrder,
    OrderAccepted,
    OrderRejected,
    Reject,
    Replace,
    Replaced,
    encode_frame,
    reason_name,
)
from loadgen_machine import worker_setup
from loadgen_orders import (
    AGGRESSIVE,
    CANCEL,
    PASSIVE,
    T_CANCEL,
    T_NEW,
    T_REPLACE,
    TYPES,
    Draws,
    LiveOrders,
    SymbolSpec,
    draw,
)
from loadgen_schedule import NS_PER_S, LatencyRecorder, worker_share
from loadgen_session import Session, SessionError, logon, logout

CHUNK: Final = 1_024  #: messages drawn at a time (about 0.15 ms of numpy)
SLEEP_MIN_NS: Final = 300_000  #: sleep in select only when the next send is further than this
WAKE_MARGIN_NS: Final = 150_000  #: and wake this much before it (select oversleeps ~25-70 us)
START_SPIN_NS: Final = 1_000_000  #: spin (not sleep) from this long before the start
IDLE_POLL_S: Final = 0.05  #: select timeout once everything is sent
PROGRESS_EVERY_NS: Final = 100_000_000
READY_TIMEOUT_S: Final = 120.0
WAIT_BEAT_S: Final = 0.5  #: heartbeat period while waiting for the start (idle timeout: 5 s)
NEVER: Final = 1 << 62
GTC: Final = 0
IOC: Final = 1
USER_CANCEL: Final = int(Reason.USER_CANCEL)
UNKNOWN_ORDER: Final = int(Reason.UNKNOWN_ORDER)


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs (pickled into the child process)."""

    index: int
    workers: int
    connections: int
    host: str
    port: int
    account: str
    secret: str
    rate: int  #: messages per second over every worker
    count: int  #: messages in the whole run, warm-up included, over every worker
    warm: int  #: global index of the first measured message
    mix: tuple[float, float, float, float]
    symbols: tuple[SymbolSpec, ...]
    seed: int
    max_resting: int  #: resting orders per connection before passive orders turn into cancels
    cpu: int | None
    spin: bool  #: the worker has a CPU to itself: spin when the next send is near
    drain_timeout_s: float  #: how long to wait for the last answers after the last send


class _Conn:
    """One session of the worker and its book-keeping."""

    __slots__ = ("cl", "fifo", "last_send_ns", "live", "out", "reader", "seq", "session", "sock")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sock = session.sock
        self.reader = session.reader
        self.seq = session.seq
        self.cl = 0  # client order ids: 1, 2, ... never reused
        self.out = bytearray()
        self.live = LiveOrders()
        # (local index, planned ns, type, cl_ord_id, seq) of each unanswered request, oldest first
        self.fifo: deque[tuple[int, int, int, int, int]] = deque()
        self.last_send_ns = 0


class Worker:
    """The connections and the open loop of one worker process."""

    def __init__(self, plan: WorkerPlan, progress: Any = None) -> None:
        self.plan = plan
        self.progress = progress  #: shared array: [sent, answered] per worker
        self.conns: list[_Conn] = []

    def log_on(self) -> None:
        """Log every connection on (blocking); :class:`SessionError` if one cannot."""
        p = self.plan
        for _ in range(p.connections):
            self.conns.append(_Conn(logon(p.host, p.port, p.account, p.secret)))

    def heartbeat(self) -> None:
        """Send a ``Heartbeat`` on every connection (while waiting: the daemon's idle timeout)."""
        out = bytearray()
        for conn in self.conns:
            conn.seq += 1
            out.clear()
            encode_frame(Heartbeat(conn.seq), out)
            conn.sock.sendall(out)

    def close(self) -> None:
        """Log out and close every connection."""
        for conn in self.conns:
            conn.sock.setblocking(True)
            conn.session.seq = conn.seq  # the Logout must follow the last message sent
            logout(conn.session)
        self.conns.clear()

    # ---------------------------------------------------------------------------------
    # The open loop
    # ---------------------------------------------------------------------------------

    def run(self, start_ns: int) -> dict[str, Any]:
        """Send this worker's share of the schedule from ``start_ns``; return its figures."""
        plan = self.plan
        me, workers, rate = plan.index, plan.workers, plan.rate
        conns = self.conns
        n_conns = len(conns)
        n = worker_share(plan.count, me, workers)
        warm = worker_share(plan.warm, me, workers)  # local index of the first measured message
        specs = plan.symbols
        cap = plan.max_resting
        rng = np.random.default_rng([plan.seed, me])
        perf = time.perf_counter_ns
        encode = encode_frame

        recorders = [LatencyRecorder() for _ in TYPES]
        record = [r.record for r in recorders]
        lag = LatencyRecorder()
        record_lag = lag.record
        sent = [0, 0, 0]
        answered = [0, 0, 0]
        rejected = [0, 0, 0]
        reasons: Counter[int] = Counter()
        substituted: Counter[str] = Counter()
        warm_sent = warm_answered = mismatched = 0
        last_sent_ns = last_answer_ns = 0
        errors: list[str] = []

        def planned_of(k: int) -> int:
            return start_ns + ((me + k * workers) * NS_PER_S) // rate

        # The current chunk's random draws, as plain lists (loaded once per message).
        chunk_base = 0
        d_kind: list[int] = []
        d_symbol: list[int] = []
        d_side: list[int] = []
        d_level: list[int] = []
        d_lots: list[int] = []
        d_aggressive: list[int] = []
        d_pick: list[int] = []

        def refill(k: int) -> None:
            nonlocal chunk_base, d_kind, d_symbol, d_side, d_level, d_lots, d_aggressive, d_pick
            d: Draws = draw(rng, plan.mix, len(specs), min(CHUNK, n - k))
            chunk_base = k
            d_kind, d_symbol, d_side, d_level = d.kind, d.symbol, d.side, d.level
            d_lots, d_aggressive, d_pick = d.lots, d.aggressive_lots, d.pick

        def release(k: int, planned: int, now: int) -> None:
            nonlocal warm_sent, last_sent_ns
            j = k - chunk_base
            conn = conns[k % n_conns]
            live = conn.live
            resting = len(live.ids)
            kind = d_kind[j]
            if kind == PASSIVE and resting >= cap:
                kind = CANCEL
                substituted["cancel_for_passive"] += 1
            elif kind >= CANCEL and not resting:
                substituted["passive_for_" + ("cancel" if kind == CANCEL else "replace")] += 1
                kind = PASSIVE
            seq = conn.seq + 1
            conn.seq = seq
            msg: Any
            if kind <= AGGRESSIVE:
                s = d_symbol[j]
                spec = specs[s]
                side = d_side[j]
                cl = conn.cl + 1
                conn.cl = cl
                if kind == PASSIVE:
                    price = spec.passive_price(side, d_level[j])
                    msg = NewOrder(
                        seq, cl, spec.symbol, side, price, spec.lot * d_lots[j], GTC, False, 0
                    )
                    live.add(cl, s, side)
                else:
                    price = spec.aggressive_price(side)
                    qty = spec.lot * d_aggressive[j]
                    msg = NewOrder(seq, cl, spec.symbol, side, price, qty, IOC, False, 0)
                typ = T_NEW
            elif kind == CANCEL:
                cl = live.pick(d_pick[j])[0]
                live.forget(cl)  # never cancelled twice
                msg = Cancel(seq, cl)
                typ = T_CANCEL
            else:
                cl, s, side = live.pick(d_pick[j])
                spec = specs[s]
                price = spec.passive_price(side, d_level[j])
                msg = Replace(seq, cl, price, spec.lot * d_lots[j])
                typ = T_REPLACE
            encode(msg, conn.out)
            conn.fifo.append((k, planned, typ, cl, seq))
            conn.last_send_ns = now
            if k >= warm:
                sent[typ] += 1
                record_lag(now - planned)
                last_sent_ns = now
            else:
                warm_sent += 1

        def handle(conn: _Conn, msgs: list[Any], t: int) -> str | None:
            """Book-keep a batch of messages read at ``t``; returns a fatal error, if any."""
            nonlocal warm_answered, mismatched, last_answer_ns
            for msg in msgs:
                cls = type(msg)
                if cls is Fill:
                    if msg.leaves_qty == 0:
                        conn.live.forget(msg.cl_ord_id)
                    continue
                if cls is OrderAccepted or cls is Replaced:
                    reason = 0
                elif cls is Cancelled:
                    if msg.reason != USER_CANCEL:  # IOC remainder, mass cancel: not an answer
                        conn.live.forget(msg.cl_ord_id)
                        continue
                    reason = 0
                elif cls is OrderRejected or cls is Reject:
                    reason = msg.reason
                elif cls is Disconnect:
                    return f"the daemon disconnected: {reason_name(msg.reason)} {msg.text}"
                elif cls is FrameError:
                    return f"the daemon sent a bad frame: {msg.text}"
                else:
                    continue  # heartbeats, trades, level updates
                if not conn.fifo:
                    mismatched += 1
                    continue
                k, planned, typ, cl, seq = conn.fifo.popleft()
                if cls is OrderRejected or cls is Reject:
                    if msg.ref_seq != seq:
                        mismatched += 1
                    if typ == T_NEW or (typ == T_REPLACE and reason == UNKNOWN_ORDER):
                        conn.live.forget(cl)
                elif msg.cl_ord_id != cl:
                    mismatched += 1
                if k >= warm:
                    record[typ](t - planned)
                    answered[typ] += 1
                    last_answer_ns = t
                    if reason:
                        rejected[typ] += 1
                        reasons[reason] += 1
                else:
                    warm_answered += 1
            return None

        def flush(conn: _Conn) -> str | None:
            try:
                del conn.out[: conn.sock.send(conn.out)]
            except BlockingIOError:
                pass
            except OSError as exc:
                return f"sending failed: {exc}"
            return None

        for conn in conns:
            conn.sock.setblocking(False)
        socks = [c.sock for c in conns]
        by_sock = {c.sock: c for c in conns}
        heartbeat_ns = max(min(c.session.ack.heartbeat_ms for c in conns), 1) * 1_000_000
        progress = self.progress
        k = 0
        next_due = planned_of(0) if n else NEVER
        drain_deadline = (planned_of(n - 1) if n else start_ns) + int(
            plan.drain_timeout_s * NS_PER_S
        )
        busy = 0  # time spent releasing messages and handling answers (not waiting, not polling)
        polls = 0
        busy_at_last_send = 0
        fatal: str | None = None
        out: list[Any] = []
        next_progress = 0
        next_heartbeat_check = 0
        lead = start_ns - perf() - START_SPIN_NS
        if lead > 0:  # sleep until just before the start: the figures below begin there
            time.sleep(lead / NS_PER_S)
        me_proc = psutil.Process()
        switches0 = me_proc.num_ctx_switches().involuntary
        cpu0 = time.process_time()
        t_begin = perf()
        now = t_begin
        while fatal is None:
            if now >= next_due:
                t0 = now
                while next_due <= now:
                    if k - chunk_base >= len(d_kind):
                        refill(k)
                    release(k, next_due, now)
                    k += 1
                    next_due = planned_of(k) if k < n else NEVER
                for conn in conns:
                    if conn.out:
                        fatal = fatal or flush(conn)
                now = perf()
                busy += now - t0
                if k == n:
                    busy_at_last_send = busy
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_NS
                if progress is not None:
                    progress[2 * me] = k
                    progress[2 * me + 1] = sum(answered) + warm_answered
            writable = [c.sock for c in conns if c.out]
            if next_due == NEVER:
                if not writable and not any(c.fifo for c in conns):
                    break
                if now > drain_deadline:
                    left = sum(len(c.fifo) for c in conns)
                    errors.append(
                        f"worker {me}: {left} messages unanswered {plan.drain_timeout_s:g} s "
                        "after the last send"
                    )
                    break
                timeout = IDLE_POLL_S
            elif plan.spin:
                gap = next_due - now
                timeout = (gap - WAKE_MARGIN_NS) / NS_PER_S if gap > SLEEP_MIN_NS else 0.0
            else:  # sharing a CPU: sleep until the next send is due, never spin
                timeout = max(next_due - now, 0) / NS_PER_S
            if timeout and now >= next_heartbeat_check:
                next_heartbeat_check = now + heartbeat_ns // 4
                for conn in conns:
                    if now - conn.last_send_ns > heartbeat_ns:
                        conn.seq += 1
                        encode(Heartbeat(conn.seq), conn.out)
                        conn.last_send_ns = now
                        fatal = fatal or flush(conn)
            ready, can_write, _ = select.select(socks, writable, (), timeout)
            if not ready and not can_write:
                polls += 1
                now = perf()
                continue
            now = perf()
            t = t0 = now
            for sock in ready:
                conn = by_sock[sock]
                try:
                    nbytes = sock.recv_into(conn.reader.get_buffer())
                except BlockingIOError:
                    continue
                except OSError as exc:
                    fatal = f"worker {me}: connection lost: {exc}"
                    break
                if nbytes == 0:
                    fatal = f"worker {me}: the daemon closed a connection"
                    break
                conn.reader.buffer_updated(nbytes, out)
                problem = handle(conn, out, t)
                out.clear()
                if problem is not None:
                    fatal = f"worker {me}: {problem}"
                    break
                t = perf()
            for sock in can_write:
                fatal = fatal or flush(by_sock[sock])
            now = perf()
            busy += now - t0
        t_end = perf()
        cpu = time.process_time() - cpu0
        preempted = me_proc.num_ctx_switches().involuntary - switches0
        if fatal is not None:
            errors.append(fatal)
        if not busy_at_last_send:
            busy_at_last_send = busy
        sending_ns = max((last_sent_ns or t_end) - t_begin, 1)

        # Whatever was never answered waited at least until the end: record it so.
        unanswered = 0
        for conn in conns:
            for k_, planned, typ, _, _ in conn.fifo:
                if k_ >= warm:
                    record[typ](t_end - planned)
                    unanswered += 1
            conn.fifo.clear()
        not_sent = n - max(k, warm)
        if not_sent > 0:
            errors.append(f"worker {me}: {not_sent} measured messages never sent")
        if progress is not None:
            progress[2 * me] = k
            progress[2 * me + 1] = sum(answered) + warm_answered
        result = {
            "worker": me,
            "cpu": plan.cpu,
            "connections": n_conns,
            "messages": n,
            "measured": n - warm,
            "sent": dict(zip(TYPES, sent, strict=True)),
            "answered": dict(zip(TYPES, answered, strict=True)),
            "rejected": dict(zip(TYPES, rejected, strict=True)),
            "rejected_reasons": {reason_name(r): c for r, c in sorted(reasons.items())},
            "unanswered": unanswered,
            "not_sent": max(not_sent, 0),
            "warmup": {"sent": warm_sent, "answered": warm_answered},
            "substituted": dict(substituted),
            "mismatched": mismatched,
            "hist": {
                t: r.histogram().encode().decode("ascii")
                for t, r in zip(TYPES, recorders, strict=True)
            },
            "lag_hist": lag.histogram().encode().decode("ascii"),
            "window_start_ns": planned_of(warm) if warm < n else 0,
            "last_sent_ns": last_sent_ns,
            "last_answer_ns": last_answer_ns,
            "busy_share": min(busy_at_last_send / sending_ns, 1.0),
            "cpu_share": cpu / max((t_end - t_begin) / NS_PER_S, 1e-9),
            "preempted": preempted,
            "wall_s": (t_end - t_begin) / NS_PER_S,
            "empty_polls": polls,
            "resting_at_end": sum(len(c.live) for c in conns),
            "errors": errors,
        }
        result["cpu_s"] = time.process_time() - cpu0  # the histograms' encoding included
        return result


def worker_main(plan: WorkerPlan, results: Any, go: Any, start: Any, progress: Any) -> None:
    """A worker process: set up, log on, report ready, wait for the start, run, report.

    Messages to the parent on ``results``: ``("ready", i, None)``, then
    ``("result", i, figures)``, or ``("error", i, one line)`` at any point.
    """
    worker_setup(plan.cpu)
    worker = Worker(plan, progress)
    try:
        worker.log_on()
        results.put(("ready", plan.index, None))
        waited = 0.0
        while not go.wait(WAIT_BEAT_S):  # the others are still logging on
            waited += WAIT_BEAT_S
            if waited > READY_TIMEOUT_S:
                return
            worker.heartbeat()
        if start.value <= 0:
            return  # the parent gave up (another worker failed)
        results.put(("result", plan.index, worker.run(int(start.value))))
    except SessionError as exc:
        results.put(("error", plan.index, str(exc)))
    except Exception as exc:  # a bug: say where, keep the parent running
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else ""
        results.put(("error", plan.index, f"worker {plan.index} failed: {exc!r}{where}"))
    finally:
        worker.close()
