"""The trading daemon: one event loop owning every book, session and order.

Data path (docs/daemon.md): a read's frames -> session checks -> the order
gate (ids, rate limit, pre-trade risk; Cython) -> a batch of engine commands
-> ``Engine.process`` (Cython) -> the gate learns the outcome and routes each
event -> execution reports to the owning sessions and market data to
subscribers -> one write per session.  Nothing on that path blocks, logs or
waits for a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from array import array
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from lltrade import COMMAND_DTYPE, EVENT_DTYPE, EventKind, Op, Reason
from lltrade._gate import OrderGate
from lltrade._inbound import END as INBOUND_END
from lltrade._inbound import FULL as INBOUND_FULL
from lltrade._inbound import REJECT as INBOUND_REJECT
from lltrade._inbound import admit_frames
from lltrade._reports import ReportEncoder
from lltrade.config import AccountConfig, Config, SymbolConfig, verify_secret
from lltrade.journal import (
    JournalError,
    JournalWriter,
    Snapshot,
    engine_snapshot,
    recover,
)
from lltrade.marketdata import MarketData
from lltrade.metrics import DaemonTelemetry
from lltrade.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    ClientMessage,
    Done,
    FrameError,
    Halt,
    Heartbeat,
    KillSwitch,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
    MassCancel,
    NewOrder,
    OrderRejected,
    Reduce,
    Reject,
    Replace,
    SessionReason,
    Subscribe,
    SymbolInfo,
    Unsubscribe,
    reason_name,
)
from lltrade.runtime import BusyPoll, helper_cpus
from lltrade.sdnotify import Notifier
from lltrade.session import Session
from lltrade.snapshots import SnapshotWriter

log = logging.getLogger("lltrade.daemon")

BATCH: Final = 4096  #: most engine commands gathered before they are processed
TICK_S: Final = 0.1  #: period of the heartbeat / timeout scan
_ORDER_MESSAGES: Final = (NewOrder, Cancel, Replace, Reduce)
_ACCEPTED, _REJECTED, _FILL, _CANCELLED, _REDUCED, _REPLACED, _LEVEL = (int(k) for k in EventKind)


class LatencyLog:
    """The last ``size`` durations (ns) in a ring, summarised on demand.

    One store per read, not per order; the shared-memory telemetry will
    replace it with histograms a sidecar can read live.
    """

    def __init__(self, size: int = 1 << 20) -> None:
        self._values = array("q", bytes(8 * size))
        self._size = size
        self._count = 0

    def record(self, ns: int) -> None:
        self._values[self._count % self._size] = ns
        self._count += 1

    def summary(self) -> dict[str, float]:
        """Count, p50, p99, p99.9 and max of what the ring holds (ns)."""
        n = min(self._count, self._size)
        if n == 0:
            return {"count": 0}
        values = np.frombuffer(self._values, dtype=np.int64, count=n)
        p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
        return {
            "count": self._count,
            "p50": float(p50),
            "p99": float(p99),
            "p99.9": float(p999),
            "max": float(values.max()),
        }


class Daemon:
    """Owns the engine, the order gate, the sessions and the market data.

    Parameters
    ----------
    config
        A validated configuration (:func:`lltrade.config.load_config`).
    loop
        The loop it runs on; the daemon touches nothing from another thread.
    """

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.engine = config.new_engine()
        self.symbols: dict[int, SymbolConfig] = {s.id: s for s in config.symbols}
        self.halted: dict[int, bool] = dict.fromkeys(self.symbols, False)
        self.gate = OrderGate(max_sessions=config.server.max_sessions)
        for s in config.symbols:
            self.gate.add_symbol(
                s.id,
                tick=s.tick,
                lot=s.lot,
                reference_price=s.reference_price,
                collar_ticks=(s.limits.price_collar // s.tick)
                if s.limits.price_collar is not None
                else 0,
                max_order_qty=s.limits.max_order_qty or 0,
                max_notional=s.limits.max_notional or 0,
            )
        self.accounts: dict[str, AccountConfig] = {a.name: a for a in config.accounts}
        self._account_ids = {a.id for a in config.accounts}
        for a in config.accounts:
            self.gate.add_account(
                a.id,
                max_open_orders=a.limits.max_open_orders,
                max_position=a.limits.max_position,
                max_order_qty=a.limits.max_order_qty,
                max_notional=a.limits.max_notional,
                msg_rate_per_s=a.limits.msg_rate_per_s,
                msg_burst=a.limits.msg_rate_per_s,
            )
        # Rebuild the books and the gate's risk state from the journal before anything else.
        self.journal: JournalWriter | None = None
        self.snapshots: SnapshotWriter | None = None  #: writes them off the loop
        self.unavailable: str | None = None  #: why orders are refused (journal failure)
        self.commands_since_snapshot = 0
        exec_id = self._recover() if config.journal.enabled else 0
        self.reports = ReportEncoder(config.server.max_sessions)
        self.reports.exec_id = exec_id
        self.telemetry = (
            DaemonTelemetry(
                config.telemetry.shm_name, {sid: s.name for sid, s in self.symbols.items()}
            )
            if config.telemetry.enabled
            else None
        )
        if self.telemetry is not None:
            self.reports.attach_telemetry(self.telemetry.order_path)
        self.bytes_in = 0  #: totals; the tick publishes what changed
        self.bytes_out = 0
        # Published so far: bytes in, out, journal records (of this process), journal bytes.
        self._published = (0, 0, self.journal.last_seq if self.journal is not None else 0, 0)
        self._orders_this_read = 0
        self.market = MarketData(self)
        self.sessions: set[Session] = set()
        self.by_slot: list[Session | None] = [None] * config.server.max_sessions
        self._free_slots = list(range(config.server.max_sessions - 1, -1, -1))
        # One batch of engine commands and its events, reused.
        self.commands = np.zeros(BATCH, dtype=COMMAND_DTYPE)
        self.events = np.zeros(1 << 16, dtype=EVENT_DTYPE)
        self.routes = np.zeros((1 << 16, 2), dtype=np.int64)
        self.n_commands = 0
        self.ref_seqs = np.zeros(BATCH, dtype=np.int64)  # per command: the client's seq
        self.session_ids = 0  #: LogonAck.session_id: counts logons since start
        self.dirty: set[Session] = set()  #: sessions not logged on with queued output
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "commands",
                "messages_in",
                "logons",
                "logon_failures",
                "malformed",
                "disconnects",
                "slow_consumers",
                "internal_errors",
            ),
            0,
        )
        self.read_to_write = LatencyLog()  #: per read: frames in -> answers written
        self._sync_timer: asyncio.TimerHandle | None = None
        self._interval_timer: asyncio.TimerHandle | None = None
        self.server: asyncio.AbstractServer | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self.notifier = Notifier()  #: systemd's Type=notify and watchdog; no-op without systemd
        self._ticker: asyncio.TimerHandle | None = None
        self._busy: BusyPoll | None = None

    # =========================================================================
    # The journal: recovery, appends, durability, snapshots
    # =========================================================================

    def _recover(self) -> int:
        """Rebuild the books and the gate (snapshot + journal); open the writer.

        The gate ends as it was: every resting order tracked (as an order of
        no session: those sessions ended with the previous process) and
        counted against its account's open orders, every position as the
        fills left it, and the next engine order id past every id used.
        Returns the last execution id, so that ids never repeat across
        restarts.  Orders of accounts with cancel-on-disconnect lost their
        sessions in the restart: :meth:`_cancel_orphans` cancels them, through
        the journal like any other command.
        """
        cfg = self.config.journal
        gate = self.gate
        exec_id = 0
        untracked = 0

        def restored(snap: Snapshot) -> None:
            nonlocal exec_id, untracked
            extra = snap.extra
            exec_id = int(extra.get("exec_id", 0))
            gate.skip_order_ids(int(extra.get("next_order_id", 1)))
            for account, symbol, qty in extra.get("positions", []):
                if account in self._account_ids and symbol in self.symbols:
                    gate.set_position(account, symbol, qty)
            for sid in self.symbols:
                for order_id, _side, _price, _qty, account, *_ in self.engine.book(sid).resting():
                    untracked += not gate.adopt(account, sid, order_id)

        def replayed(commands: np.ndarray, events: np.ndarray) -> None:
            nonlocal exec_id, untracked
            untracked += gate.replay(commands, events, len(events))
            kinds = events["kind"]
            taker = events["order_id"] == events["taker_id"]
            exec_id += int(np.count_nonzero((kinds == _FILL) & taker))
            if len(commands):
                gate.skip_order_ids(int(commands["order_id"].max()) + 1)

        recovery = recover(
            self.engine,
            cfg.dir,
            allow_fallback=cfg.snapshot_fallback,
            on_batch=replayed,
            on_snapshot=restored,
        )
        helpers = helper_cpus()  # the journal's prefaulting and the snapshots run there
        self.journal = JournalWriter(
            cfg.dir,
            cfg.durability,
            cfg.interval_ms,
            segment_bytes=cfg.segment_mb << 20,
            mapped=cfg.mmap,
            helper_cpus=helpers,
        )
        self.snapshots = SnapshotWriter(
            self.loop, self.journal, cfg.keep_snapshots, helper_cpus=helpers
        )
        log.info(
            "recovered",
            extra={
                "journal": cfg.dir,
                "snapshot": str(recovery.snapshot) if recovery.snapshot else None,
                "records": recovery.records,
                "commands": recovery.commands,
                "seconds": round(recovery.seconds, 6),
                "torn_tail": str(recovery.truncated_tail) if recovery.truncated_tail else None,
                "open_orders": gate.order_count,
                "positions": len(gate.net_positions()),
                "state_hash": {
                    sid: f"{self.engine.book(sid).state_hash():016x}" for sid in self.symbols
                },
            },
        )
        if untracked:
            log.warning(
                "orders of accounts or symbols no longer configured: they rest in the book "
                "but count against no limit",
                extra={"orders": untracked},
            )
        return exec_id

    def _cancel_orphans(self) -> None:
        """Cancel what cancel-on-disconnect accounts left resting before a restart."""
        for account in (a.id for a in self.config.accounts if a.cancel_on_disconnect):
            if self.gate.open_orders(account) == 0:
                continue  # nothing of it rests: nothing to journal
            for symbol in self.symbols:
                self._add_command(Op.MASS_CANCEL, symbol, account=account, reason=Reason.DISCONNECT)
        self._flush_engine()

    def _journal_batch(self, rows: np.ndarray) -> bool:
        """Append a batch before it is processed; False if it could not be journaled."""
        if self.journal is None:
            return True
        try:
            self.journal.append_commands(rows, time.time_ns())
        except JournalError as exc:
            self._journal_failed(str(exc), rows)
            return False
        self.commands_since_snapshot += len(rows)
        return True

    def _journal_failed(self, why: str, rows: np.ndarray) -> None:
        """Refuse the batch that could not be journaled, and every order after it."""
        if self.unavailable is None:
            log.error("journal write failed: taking no more orders", extra={"error": why})
        self.unavailable = why
        n = len(rows)
        events = self.events[:n]
        events.fill(0)
        events["kind"] = int(EventKind.REJECTED)
        events["order_id"] = rows["order_id"]
        events["symbol"] = rows["symbol"]
        events["cmd"] = np.arange(n, dtype=np.int32)
        events["reason"] = int(Reason.UNAVAILABLE)
        self.gate.apply(self.events, n, self.routes)
        self.reports.encode(self.events, n, self.routes, self.ref_seqs, 0)

    def _acks_may_leave(self) -> bool:
        """Interval durability with ack_after_sync: hold output until it is synced."""
        journal = self.journal
        if journal is None or not self.config.journal.ack_after_sync:
            return True
        if journal.durability != "interval" or journal.synced_seq >= journal.last_seq:
            return True
        if self._sync_timer is None and not journal.failed:
            self._sync_timer = self.loop.call_later(
                self.config.journal.interval_ms / 1000, self._sync_and_flush
            )
        return False

    def _sync_and_flush(self) -> None:
        self._sync_timer = None
        if self.journal is not None and not self.journal.failed:
            try:
                self.journal.sync()
            except JournalError as exc:
                self.unavailable = str(exc)
                log.error("journal sync failed: taking no more orders", extra={"error": str(exc)})
                return  # what was not synced is never acknowledged
        self._flush_output()

    def _interval_sync(self) -> None:
        """The interval policy's timer: fdatasync when the interval has passed."""
        journal = self.journal
        if journal is not None and not journal.failed:
            try:
                journal.maybe_sync(time.monotonic_ns())
            except JournalError as exc:
                self.unavailable = str(exc)
                log.error("journal sync failed: taking no more orders", extra={"error": str(exc)})
        self._interval_timer = self.loop.call_later(
            self.config.journal.interval_ms / 1000, self._interval_sync
        )

    def snapshot(self, *, now: bool = False) -> None:
        """Capture the books (between batches) and write the snapshot in the background.

        The engine stalls only for the capture; :class:`SnapshotWriter` writes
        the file and prunes in a worker thread.  While one is being written a
        new one is not started (the next batch tries again); ``now`` (shutdown)
        writes it here, after the one in flight.
        """
        journal = self.journal
        snapshots = self.snapshots
        if journal is None or journal.failed or snapshots is None:
            return
        if snapshots.busy and not now:
            return
        self._flush_engine()
        started = time.perf_counter()
        state = engine_snapshot(self.engine)
        stalled = time.perf_counter() - started
        seq = journal.last_seq
        extra = {
            "next_order_id": self.gate.next_order_id,
            "exec_id": self.reports.exec_id,
            "positions": self.gate.net_positions(),
        }
        self.commands_since_snapshot = 0
        if now:
            snapshots.write_now(seq, state, extra, stalled)
        else:
            snapshots.start(seq, state, extra, stalled)

    # =========================================================================
    # Start and stop
    # =========================================================================

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen for clients (``host``/``port`` override the config)."""
        cfg = self.config.server
        self._stopping = asyncio.Event()
        if self._stop_requested:  # a signal during start-up: stop once started
            self._stopping.set()
        if self.journal is not None:
            self._cancel_orphans()
            if self.journal.durability == "interval":
                self._interval_sync()
        self.server = await self.loop.create_server(
            self._new_session, host or cfg.host, cfg.port if port is None else port
        )
        self._ticker = self.loop.call_later(TICK_S, self._tick)
        if self.config.process.busy_poll:
            self._busy = BusyPoll(self.loop)
            self._busy.start()
        log.info("listening", extra={"address": self.address, "symbols": len(self.symbols)})

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the daemon listens on."""
        assert self.server is not None
        sockname = self.server.sockets[0].getsockname()  # type: ignore[attr-defined]
        return sockname[0], sockname[1]

    def request_stop(self) -> None:
        """Begin a graceful stop (signal handlers call this, from start-up on)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    async def wait_stopped(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop accepting, end every session (cancel-on-disconnect applies), close."""
        self.notifier.stopping("stopping: ending sessions, writing a snapshot")
        if self.server is not None:
            self.server.close()
        for session in list(self.sessions):
            self.end_session(session, SessionReason.SHUTDOWN, "daemon shutting down")
        if self.server is not None:
            await self.server.wait_closed()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._busy is not None:
            self._busy.stop()
        if self._interval_timer is not None:
            self._interval_timer.cancel()
        if self.snapshots is not None:
            await self.snapshots.settle()
        if self.journal is not None:
            if not self.journal.failed:
                self.snapshot(now=True)  # a quick restart: replay starts from here
                with contextlib.suppress(JournalError):
                    self.journal.sync()
            self.journal.close()
            self.journal = None
        if self.snapshots is not None:
            self.snapshots.close()
        if self.telemetry is not None:
            self.reports.attach_telemetry(None)
            self.telemetry.close()
            self.telemetry = None
        log.info("stopped", extra={**self.stats, "read_to_write_ns": self.read_to_write.summary()})
        self.notifier.close()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop)

    # =========================================================================
    # Connections
    # =========================================================================

    def _new_session(self) -> Session:
        return Session(self, self.config.server.max_frame, self.loop.time())

    def on_connect(self, session: Session) -> None:
        if self._stopping is not None and self._stopping.is_set():
            session.abort()
            return
        self.sessions.add(session)

    def on_connection_lost(self, session: Session) -> None:
        if session in self.sessions:
            self.end_session(session, SessionReason.LOGOUT, "connection lost", abort=True)

    def on_internal_error(self, session: Session) -> None:
        self.stats["internal_errors"] += 1
        self.n_commands = 0  # what was half-built for this read is dropped
        self.end_session(session, SessionReason.MALFORMED, "internal error", abort=True)

    def end_session(
        self, session: Session, reason: int, text: str, *, send: bool = True, abort: bool = False
    ) -> None:
        """End a session: cancel-on-disconnect, free its slot, then close it.

        ``send``: say why with a ``Disconnect``; otherwise only what is queued
        goes out.  ``abort``: drop the connection and anything unsent.
        """
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self.stats["disconnects"] += 1
        session.subscriptions.clear()  # the encoder drops them with the slot
        if session.slot >= 0:
            account = session.account
            if account is not None and account.cancel_on_disconnect:
                self._cancel_session_orders(session)
            self.gate.close_session(session.slot)
            # Back to the session's own buffer and counter for its last words.
            session.out_seq = self.reports.last_seq(session.slot)
            session.out += self.reports.close(session.slot)
            self.by_slot[session.slot] = None
            self._free_slots.append(session.slot)
            session.slot = -1
        self.dirty.discard(session)
        if abort:
            session.abort()
        elif send:
            session.disconnect(reason, text, self.loop.time())
        else:
            session.close(self.loop.time())
        log.info(
            "session ended",
            extra={
                "peer": session.peer,
                "account": session.account.name if session.account else None,
                "reason": reason_name(reason),
            },
        )

    def _cancel_session_orders(self, session: Session) -> None:
        self._flush_engine()
        for _cl_ord_id, order_id, symbol in self.gate.live_orders(session.slot):
            self._add_command(Op.CANCEL, symbol, order_id, reason=Reason.DISCONNECT)
        self._flush_engine()
        self._flush_output()

    # =========================================================================
    # Inbound: one read's frames
    # =========================================================================

    def on_read(self, session: Session) -> None:
        """Handle the frames a logged-on session's read completed, then write the answers.

        Order messages go through the C read path (``lltrade._inbound``:
        decode, sequence check, gate, command row, no Python object per
        message); it hands each frame it does not take whole (another message
        type, anything msgspec must judge, a sequence gap) back one at a time
        to the msgspec path of :meth:`on_messages`, and each gate reject to
        :meth:`_refused`, so the answers come in the order of the frames.
        """
        started = time.perf_counter_ns()
        session.last_in = self.loop.time()
        reader = session.reader
        now_ns = time.monotonic_ns()
        while True:
            if (
                session.account is None
                or session.logging_on
                or session.closing
                or self.unavailable is not None
            ):
                rest = reader.buffer_updated(0, [])  # held, refused or closing: the plain path
                if rest:
                    self._handle(session, rest)
                break
            first_seq = session.in_seq
            status, reader._start, session.in_seq, n, reason, cl_ord_id = admit_frames(
                self.gate,
                session.slot,
                reader._buf,
                reader._start,
                reader._end,
                reader._max_frame,
                first_seq,
                now_ns,
                self.commands,
                self.n_commands,
                self.ref_seqs,
            )
            self.stats["messages_in"] += session.in_seq - first_seq
            self._orders_this_read += n - self.n_commands
            self.n_commands = n
            if status == INBOUND_END:
                break
            if status == INBOUND_FULL:
                self._flush_engine()
            elif status == INBOUND_REJECT:
                self._flush_engine()  # answer in order: what came before it goes first
                self._refused(session, session.in_seq, cl_ord_id, reason)
            else:  # INBOUND_SLOW: one frame through msgspec
                msg = reader.next_message()
                if msg is None:
                    break
                self._handle(session, [msg])
                if session.closing:
                    break
        self._end_read(started)

    def on_messages(self, session: Session, batch: list[ClientMessage | FrameError]) -> None:
        """Handle decoded frames (a session before logon, or frames held during a logon)."""
        started = time.perf_counter_ns()
        session.last_in = self.loop.time()
        self._handle(session, batch)
        self._end_read(started)

    def _end_read(self, started: int) -> None:
        """Run what the read queued, write every answer, record the read's latency."""
        self._flush_engine()
        self._flush_output()
        elapsed = time.perf_counter_ns() - started
        self.read_to_write.record(elapsed)
        if self.telemetry is not None:
            self.telemetry.read(self._orders_this_read, elapsed)
        self._orders_this_read = 0

    def _handle(self, session: Session, batch: list[ClientMessage | FrameError]) -> None:
        """Handle decoded frames in order (the msgspec path)."""
        self.stats["messages_in"] += len(batch)
        for i, msg in enumerate(batch):
            if session.closing:
                break
            if session.logging_on:
                session.held.extend(batch[i:])  # handled once the Logon is decided
                break
            if isinstance(msg, FrameError):
                self._frame_error(session, msg)
                continue
            expected = session.in_seq + 1
            if msg.seq != expected:
                self._flush_engine()
                self.end_session(
                    session,
                    SessionReason.SEQUENCE_GAP,
                    f"expected seq {expected}, got {msg.seq}",
                )
                break
            session.in_seq = expected
            if session.account is None:
                self._before_logon(session, msg)
            elif isinstance(msg, _ORDER_MESSAGES):
                self._order(session, msg)
            else:
                self._flush_engine()
                self._session_message(session, msg)

    def _frame_error(self, session: Session, err: FrameError) -> None:
        self.stats["malformed"] += 1
        if self.telemetry is not None:
            self.telemetry.add("malformed_frames")
        session.in_seq += 1  # a bad frame still counts
        if err.fatal or not session.logged_on:
            self._flush_engine()
            self.end_session(session, err.reason, err.text)
            return
        self._flush_engine()
        self._send(session, Reject(session.next_seq(), session.in_seq, err.reason, err.text))

    def _before_logon(self, session: Session, msg: ClientMessage) -> None:
        if isinstance(msg, Heartbeat):
            return
        if not isinstance(msg, Logon):
            self.end_session(session, SessionReason.NOT_LOGGED_ON, "log on first")
            return
        if msg.version != PROTOCOL_VERSION:
            self._logon_failed(
                session,
                SessionReason.UNSUPPORTED_VERSION,
                f"protocol version {PROTOCOL_VERSION} only",
            )
            return
        account = self.accounts.get(msg.account)
        if account is None:
            self._logon_failed(session, SessionReason.BAD_CREDENTIALS, "bad credentials")
            return
        # scrypt takes tens of ms: verify off the loop and hold this
        # connection's later frames until it is decided.
        session.logging_on = True
        future = self.loop.run_in_executor(None, verify_secret, msg.secret, account.secret_hash)
        future.add_done_callback(lambda f: self._logon_decided(session, account, f))

    def _logon_decided(
        self, session: Session, account: AccountConfig, future: asyncio.Future[bool]
    ) -> None:
        session.logging_on = False
        if session.closing or session not in self.sessions:
            return
        if future.cancelled() or future.exception() is not None or not future.result():
            self._logon_failed(session, SessionReason.BAD_CREDENTIALS, "bad credentials")
            return
        if not self._free_slots:
            self._logon_failed(session, SessionReason.BAD_CREDENTIALS, "too many sessions")
            return
        session.slot = self._free_slots.pop()
        session.account = account
        self.by_slot[session.slot] = session
        self.reports.open(session.slot, session.out_seq)
        session.reports = self.reports
        self.gate.open_session(session.slot, account.id)
        self.gate.set_admin(session.slot, account.role == "admin")
        self.stats["logons"] += 1
        if self.telemetry is not None:
            self.telemetry.add("sessions_opened")
        self.session_ids += 1
        cfg = self.config.server
        self._send(
            session,
            LogonAck(
                session.next_seq(),
                account.id,
                self.session_ids,
                cfg.heartbeat_ms,
                cfg.idle_timeout_ms,
                cfg.max_frame,
            ),
        )
        for s in self.symbols.values():
            self._send(session, self._symbol_info(session, s))
        log.info(
            "logged on",
            extra={"peer": session.peer, "account": account.name, "slot": session.slot},
        )
        held, session.held = session.held, []
        if held:
            self.on_messages(session, held)
        else:
            self._flush_output()

    def _logon_failed(self, session: Session, reason: int, text: str) -> None:
        self.stats["logon_failures"] += 1
        self._send(session, LogonReject(session.next_seq(), reason, text))
        self.end_session(session, reason, text, send=False)

    # =========================================================================
    # Orders
    # =========================================================================

    def _order(self, session: Session, msg: NewOrder | Cancel | Replace | Reduce) -> None:
        if self.unavailable is not None:
            if self.telemetry is not None:
                self.telemetry.rejected(Reason.UNAVAILABLE)
            self._send(
                session,
                OrderRejected(
                    session.next_seq(), msg.seq, msg.cl_ord_id, Reason.UNAVAILABLE, self.unavailable
                ),
            )
            return
        if self.n_commands == BATCH:
            self._flush_engine()
        reason = self.gate.admit(
            session.slot, msg, time.monotonic_ns(), self.commands, self.n_commands
        )
        if reason == 0:
            self.ref_seqs[self.n_commands] = msg.seq
            self.n_commands += 1
            self._orders_this_read += 1
            return
        # Answer in order: what came before this message goes first.
        self._flush_engine()
        self._refused(session, msg.seq, msg.cl_ord_id, reason)

    def _refused(self, session: Session, ref_seq: int, cl_ord_id: int, reason: int) -> None:
        """Answer an order message the gate refused."""
        if self.telemetry is not None:
            self.telemetry.rejected(reason)
        if reason == SessionReason.RATE_LIMITED:
            self._send(session, Reject(session.next_seq(), ref_seq, reason, "message rate limit"))
        else:
            self._send(
                session,
                OrderRejected(session.next_seq(), ref_seq, cl_ord_id, reason, reason_name(reason)),
            )

    def _add_command(
        self,
        op: int,
        symbol: int,
        order_id: int = 0,
        *,
        account: int = 0,
        reason: int = 0,
        ref_seq: int = 0,
    ) -> None:
        """Queue an engine command the daemon makes itself (cancels, mass cancels)."""
        if self.n_commands == BATCH:
            self._flush_engine()
        row = self.commands[self.n_commands]
        row["op"] = op
        row["symbol"] = symbol
        row["order_id"] = order_id
        row["account"] = account
        row["reason"] = reason
        row["protection"] = -1
        for field in ("price", "qty", "side", "tif", "post_only", "stp"):
            row[field] = 0
        self.ref_seqs[self.n_commands] = ref_seq
        self.n_commands += 1

    def _flush_engine(self) -> None:
        """Run the queued commands through the engine and send what they caused."""
        n = self.n_commands
        if n == 0:
            return
        self.n_commands = 0
        if not self._journal_batch(self.commands[:n]):
            return  # refused with UNAVAILABLE: nothing was applied
        self.stats["commands"] += n
        done = 0
        while done < n:
            started = time.perf_counter_ns()
            try:
                n_events = self.engine.process(self.commands[done:n], self.events)
            except ValueError:
                # One command may cause more events than the buffer holds
                # (a sweep of a deep book): grow it, outside the order path.
                self.events = np.zeros(len(self.events) * 4, dtype=EVENT_DTYPE)
                self.routes = np.zeros((len(self.events), 2), dtype=np.int64)
                continue
            consumed = self.engine.commands_processed
            elapsed = time.perf_counter_ns() - started
            self.gate.apply(self.events, n_events, self.routes)
            # Encodes the answers and, with telemetry on, counts the batch in C.
            self.reports.encode(
                self.events, n_events, self.routes, self.ref_seqs, done, consumed, elapsed
            )
            done += consumed
        every = self.config.journal.snapshot_every
        if every and self.commands_since_snapshot >= every:
            self.snapshot()

    # =========================================================================
    # Session-level messages
    # =========================================================================

    def _session_message(self, session: Session, msg: ClientMessage) -> None:
        if isinstance(msg, Heartbeat):
            return
        if isinstance(msg, Logout):
            self.end_session(session, SessionReason.LOGOUT, "logged out")
        elif isinstance(msg, MassCancel):
            self._mass_cancel(session, msg)
        elif isinstance(msg, Subscribe | Unsubscribe):
            self.market.request(session, msg)
        elif isinstance(msg, Halt):
            self._halt(session, msg)
        elif isinstance(msg, KillSwitch):
            self._kill_switch(session, msg)
        elif isinstance(msg, Logon):
            self._reject(session, msg.seq, SessionReason.ALREADY_LOGGED_ON, "already logged on")

    def _reject(self, session: Session, ref_seq: int, reason: int, text: str) -> None:
        self._send(session, Reject(session.next_seq(), ref_seq, reason, text))

    def _mass_cancel(self, session: Session, msg: MassCancel) -> None:
        assert session.account is not None
        account = msg.account or session.account.id
        if account != session.account.id and session.account.role != "admin":
            self._reject(session, msg.seq, Reason.NOT_AUTHORISED, "admin role needed")
            return
        if msg.symbol and msg.symbol not in self.symbols:
            self._reject(session, msg.seq, Reason.UNKNOWN_SYMBOL, f"no symbol {msg.symbol}")
            return
        for symbol in [msg.symbol] if msg.symbol else list(self.symbols):
            self._add_command(Op.MASS_CANCEL, symbol, account=account, ref_seq=msg.seq)
        self._flush_engine()
        self._send(session, Done(session.next_seq(), msg.seq))

    def _require_admin(self, session: Session, ref_seq: int) -> bool:
        assert session.account is not None
        if session.account.role != "admin":
            self._reject(session, ref_seq, Reason.NOT_AUTHORISED, "admin role needed")
            return False
        return True

    def _halt(self, session: Session, msg: Halt) -> None:
        if not self._require_admin(session, msg.seq):
            return
        if msg.symbol not in self.symbols:
            self._reject(session, msg.seq, Reason.UNKNOWN_SYMBOL, f"no symbol {msg.symbol}")
            return
        self.halted[msg.symbol] = msg.halted
        self.gate.halt(msg.symbol, msg.halted)
        log.warning("halt", extra={"symbol": msg.symbol, "halted": msg.halted})
        info = self.symbols[msg.symbol]
        for other in self.sessions:
            if other.logged_on:
                self._send(other, self._symbol_info(other, info))
        self._send(session, Done(session.next_seq(), msg.seq))

    def _kill_switch(self, session: Session, msg: KillSwitch) -> None:
        if not self._require_admin(session, msg.seq):
            return
        accounts = [msg.account] if msg.account else [a.id for a in self.config.accounts]
        for account in accounts:
            self.gate.set_kill_switch(msg.active, account_id=account)
            if msg.active:
                for symbol in self.symbols:
                    self._add_command(
                        Op.MASS_CANCEL, symbol, account=account, reason=Reason.KILL_SWITCH
                    )
        self._flush_engine()
        log.warning("kill switch", extra={"account": msg.account, "active": msg.active})
        self._send(session, Done(session.next_seq(), msg.seq))

    def _symbol_info(self, session: Session, s: SymbolConfig) -> SymbolInfo:
        return SymbolInfo(
            session.next_seq(),
            s.id,
            s.name,
            s.tick,
            s.lot,
            s.min_price,
            s.max_price,
            s.reference_price,
            s.price_decimals,
            s.qty_decimals,
            self.halted[s.id],
        )

    # =========================================================================
    # Output, heartbeats, timeouts
    # =========================================================================

    def _send(self, session: Session, msg: Any) -> None:
        """Queue a message the daemon builds in Python (not an execution report)."""
        session.queue(msg)
        if session.slot < 0:
            self.dirty.add(session)

    def _flush_output(self) -> None:
        """Write every session's pending output: one write per session."""
        now = self.loop.time()
        bound = self.config.server.max_outbound_bytes
        reports = self.reports
        if self.dirty:
            dirty, self.dirty = self.dirty, set()
            for waiting in dirty:
                waiting.flush(now, bound)
        if not self._acks_may_leave():
            return  # held in the encoder until the journal's next fdatasync
        for slot in reports.dirty():
            session = self.by_slot[slot]
            data = reports.take(slot)
            self.bytes_out += len(data)
            if session is not None and not session.write(data, now, bound):
                self.stats["slow_consumers"] += 1
                log.warning("slow consumer cut off", extra={"peer": session.peer})
                self.end_session(session, SessionReason.SLOW_CONSUMER, "slow consumer", abort=True)

    def _tick(self) -> None:
        """Heartbeats for quiet sessions; disconnect silent ones; systemd's watchdog."""
        self.notifier.watchdog()  # a loop that stops turning stops these: systemd restarts it
        now = self.loop.time()
        cfg = self.config.server
        heartbeat = cfg.heartbeat_ms / 1000
        idle = cfg.idle_timeout_ms / 1000
        logon = cfg.logon_timeout_ms / 1000
        for session in list(self.sessions):
            if not session.logged_on:
                if not session.logging_on and now - session.connected_at > logon:
                    self.end_session(session, SessionReason.IDLE_TIMEOUT, "no logon in time")
            elif now - session.last_in > idle:
                self.end_session(session, SessionReason.IDLE_TIMEOUT, "nothing received")
            elif now - session.last_out >= heartbeat:
                self._send(session, Heartbeat(session.next_seq()))
        self._flush_output()
        self._publish_gauges()
        self._ticker = self.loop.call_later(TICK_S, self._tick)

    def _publish_gauges(self) -> None:
        tel = self.telemetry
        if tel is None:
            return
        journal = self.journal
        records = journal.last_seq if journal is not None else self._published[2]
        journal_bytes = journal.bytes_written if journal is not None else 0
        now = (self.bytes_in, self.bytes_out, records, journal_bytes)
        for name, value, seen in zip(
            ("bytes_in", "bytes_out", "journal_records", "journal_bytes"),
            now,
            self._published,
            strict=True,
        ):
            if value > seen:
                tel.add(name, value - seen)
        self._published = now
        best = {}
        open_orders = 0
        for sid in self.symbols:
            book = self.engine.book(sid)
            open_orders += len(book)
            bid, ask = book.best_bid(), book.best_ask()
            best[sid] = (bid[0] if bid else None, ask[0] if ask else None)
        sessions = sum(1 for s in self.sessions if s.logged_on)
        tel.tick(open_orders, sessions, best)


def run_daemon(
    config: Config, *, use_uvloop: bool = True, ready: Callable[[], None] | None = None
) -> int:
    """Set the process up, run the daemon until SIGTERM/SIGINT, return the exit code."""
    from lltrade.runtime import apply_process_config, freeze_gc, new_event_loop

    apply_process_config(config.process)
    loop = new_event_loop(use_uvloop)
    asyncio.set_event_loop(loop)
    daemon = Daemon(config, loop)

    async def serve() -> None:
        # One run of the loop from start to stop: uvloop delivers signals only while it
        # runs, so a SIGTERM right after "listening" must not fall between two runs.
        daemon.install_signal_handlers()  # before start: a SIGTERM while starting is kept
        await daemon.start()
        if config.process.gc_freeze:
            freeze_gc()
        if ready is not None:
            ready()
        host, port = daemon.address
        # Type=notify: `systemctl start` returns only now, after recovery and listen.
        daemon.notifier.ready(f"listening on {host}:{port}")
        await daemon.wait_stopped()

    try:
        loop.run_until_complete(serve())
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    return 0
