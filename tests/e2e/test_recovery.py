"""Nothing acknowledged is lost: restarts, kill -9, snapshots, torn tails, a full disk."""

from __future__ import annotations

import asyncio
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lltrade import Engine, Reason, Side
from lltrade.config import default_config
from lltrade.journal import JournalCorrupt, list_segments, recover
from lltrade.protocol import Cancelled, Fill, NewOrder, OrderAccepted, OrderRejected

from harness import RawClient, make_config, run_on, spawn_daemon, start_daemon

DEMO = 1


def _config(journal_dir: str, **journal: Any) -> Any:
    cfg = make_config()
    return msgspec.structs.replace(
        cfg, journal=msgspec.structs.replace(cfg.journal, dir=journal_dir, **journal)
    )


def _offline_books(journal_dir: str) -> dict[int, list[tuple[int, ...]]]:
    """The books an offline replay of the journal gives."""
    engine = default_config().new_engine()
    recover(engine, journal_dir)
    return {sid: engine.book(sid).resting() for sid in engine.symbols()}


def _order(c: RawClient, cl: int, side: int, price: int, qty: int) -> NewOrder:
    return NewOrder(c.next_seq(), cl, DEMO, side, price, qty, 0, False, 0)


def test_restart_keeps_orders_cancels_orphans_and_never_reuses_ids() -> None:
    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")

    async def first_life() -> list[int]:
        h = await start_daemon(_config(journal_dir, snapshot_every=7))
        admin, alice = await h.client("admin"), await h.client("alice")  # admin: no c-o-d
        admin.send(*[_order(admin, i, Side.BUY, 9_000 + i, 2) for i in range(1, 21)])
        acks = [await admin.expect(OrderAccepted) for _ in range(20)]
        alice.send(_order(alice, 1, Side.SELL, 11_000, 5))
        await alice.expect(OrderAccepted)
        admin.send(NewOrder(admin.next_seq(), 99, DEMO, Side.SELL, 9_020, 3, 1, False, 0))
        await admin.expect(Cancelled, lambda m: m.cl_ord_id == 99)  # IOC: traded 2, rest gone
        assert h.daemon.snapshots is not None
        await h.daemon.snapshots.settle()
        assert list(Path(journal_dir).glob("snapshot-*.llts")), "snapshots were taken"
        # A crash: no shutdown, no final snapshot; the writer just goes away.
        assert h.daemon.journal is not None
        h.daemon.journal.close()
        h.daemon.journal = None
        await h.close()
        return [a.order_id for a in acks]

    async def second_life(order_ids: list[int]) -> None:
        h = await start_daemon(_config(journal_dir))
        book = h.daemon.engine.book(DEMO)
        resting = {o[0]: o for o in book.resting()}
        # admin's 19 untouched bids survive; the one hit by the IOC is gone;
        # alice's ask was cancelled on restart (cancel_on_disconnect).
        assert sorted(resting) == sorted(order_ids[:19])
        assert all(o[3] == 2 for o in resting.values())
        assert book.best_ask() is None
        admin = await h.client("admin")
        admin.send(_order(admin, 1, Side.BUY, 9_500, 1))
        fresh = await admin.expect(OrderAccepted)
        assert fresh.order_id > max(order_ids) + 1  # ids continue, never reused
        at_stop.extend(book.resting())
        await h.close()

    ids: list[int] = []
    at_stop: list[tuple[int, ...]] = []

    async def run() -> None:
        ids.extend(await first_life())
        await second_life(ids)

    run_on("uvloop", run)
    assert _offline_books(journal_dir)[DEMO] == at_stop  # replay gives the live book


def _risk_config(journal_dir: str, **journal: Any) -> Any:
    """admin (no cancel-on-disconnect) with tight open-order and position limits."""
    cfg = _config(journal_dir, **journal)
    accounts = tuple(
        msgspec.structs.replace(
            a,
            limits=msgspec.structs.replace(a.limits, max_open_orders=5, max_position=10),
        )
        if a.name == "admin"
        else a
        for a in cfg.accounts
    )
    return msgspec.structs.replace(cfg, accounts=accounts)


@pytest.mark.parametrize("snapshot_every", [0, 4], ids=["journal-only", "snapshot-mid"])
def test_restart_rebuilds_positions_and_open_order_counts(snapshot_every: int) -> None:
    """The gate's risk state after a crash equals the live one, and its limits still bind."""
    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")
    ADMIN = 100
    live: dict[str, Any] = {}

    async def first_life() -> None:
        h = await start_daemon(_risk_config(journal_dir, snapshot_every=snapshot_every))
        admin, bob = await h.client("admin"), await h.client("bob")
        admin.send(*[_order(admin, i, Side.BUY, 9_000 + i, 2) for i in (1, 2, 3)])
        for _ in range(3):
            await admin.expect(OrderAccepted)
        # bob sells 3 into admin's best bids: admin is long 3, two bids left (one partly).
        bob.send(NewOrder(bob.next_seq(), 1, DEMO, Side.SELL, 9_000, 3, 1, False, 0))
        await bob.expect(Fill, lambda m: m.leaves_qty == 0)
        admin.send(_order(admin, 4, Side.BUY, 8_000, 1))
        await admin.expect(OrderAccepted)
        gate = h.daemon.gate
        live["positions"] = gate.net_positions()
        live["open"] = gate.open_orders(ADMIN)
        live["next_id"] = gate.next_order_id
        assert h.daemon.snapshots is not None
        await h.daemon.snapshots.settle()
        assert bool(list(Path(journal_dir).glob("snapshot-*.llts"))) == bool(snapshot_every)
        assert live["positions"] == [(2, DEMO, -3), (ADMIN, DEMO, 3)]  # bob is account 2
        assert live["open"] == 3
        assert h.daemon.journal is not None
        h.daemon.journal.close()  # a crash: no final snapshot
        h.daemon.journal = None
        await h.close()

    async def second_life() -> None:
        h = await start_daemon(_risk_config(journal_dir))
        gate = h.daemon.gate
        assert gate.net_positions() == live["positions"]
        assert gate.open_orders(ADMIN) == live["open"]
        assert gate.next_order_id >= live["next_id"]
        admin, bob = await h.client("admin"), await h.client("bob")
        # Position 3, limit 10: a buy of 8 would make 11.
        admin.send(_order(admin, 1, Side.BUY, 8_500, 8))
        rejected = await admin.expect(OrderRejected)
        assert rejected.reason == Reason.MAX_POSITION
        # Open orders 3, limit 5: two more fit, the third does not.
        admin.send(*[_order(admin, i, Side.BUY, 8_500 + i, 1) for i in (2, 3, 4)])
        await admin.expect(OrderAccepted)
        await admin.expect(OrderAccepted)
        rejected = await admin.expect(OrderRejected)
        assert rejected.reason == Reason.MAX_OPEN_ORDERS
        # A fill of an order from before the restart still moves the position.
        bob.send(NewOrder(bob.next_seq(), 1, DEMO, Side.SELL, 9_001, 1, 1, False, 0))
        await bob.expect(Fill, lambda m: m.leaves_qty == 0)
        assert gate.position(ADMIN, DEMO) == 4
        assert gate.open_orders(ADMIN) == 4  # the 9_002 bid had 1 left: now it is done
        await h.close()

    async def run() -> None:
        await first_life()
        await second_life()

    run_on("uvloop", run)


def test_damaged_newest_snapshot_stops_start_up_unless_fallback_is_allowed() -> None:
    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")

    async def scenario() -> None:
        h = await start_daemon(_config(journal_dir, snapshot_every=3))
        admin = await h.client("admin")
        assert h.daemon.snapshots is not None
        for i in range(1, 10):
            admin.send(_order(admin, i, Side.BUY, 9_000 + i, 1))
            await admin.expect(OrderAccepted)
            await h.daemon.snapshots.settle()  # one snapshot after every third order
        live = h.daemon.engine.book(DEMO).resting()
        assert h.daemon.journal is not None
        h.daemon.journal.close()  # a crash: no final snapshot
        h.daemon.journal = None
        await h.close()
        snapshots = sorted(Path(journal_dir).glob("snapshot-*.llts"))
        assert len(snapshots) == 2  # keep_snapshots
        with open(snapshots[-1], "r+b") as f:
            f.seek(80)
            byte = f.read(1)
            f.seek(80)
            f.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(JournalCorrupt, match="--allow-snapshot-fallback"):
            await start_daemon(_config(journal_dir))
        h2 = await start_daemon(_config(journal_dir, snapshot_fallback=True))
        assert h2.daemon.engine.book(DEMO).resting() == live
        h2.daemon.journal.close()  # type: ignore[union-attr]
        h2.daemon.journal = None  # no new snapshot: the damaged one stays the newest
        await h2.close()

    run_on("uvloop", scenario)
    # The same through `lltrade run`: a clear error and exit 1, then the operator's flag.
    refused = subprocess.run(
        [sys.executable, "-m", "lltrade", "run", "--port", "0", "--journal-dir", journal_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "snapshot checksum mismatch" in refused.stderr
    assert "--allow-snapshot-fallback" in refused.stderr
    assert "Traceback" not in refused.stderr
    proc, _address, recovered = _spawn(journal_dir, "--allow-snapshot-fallback")
    try:
        assert recovered["snapshot"] is not None and recovered["records"] > 0
    finally:
        proc.terminate()
        proc.wait(30)
        assert proc.stderr is not None
        proc.stderr.close()


def test_torn_tail_is_cut_and_the_rest_recovered() -> None:
    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")

    async def scenario() -> None:
        h = await start_daemon(_config(journal_dir))
        admin = await h.client("admin")
        admin.send(*[_order(admin, i, Side.BUY, 9_000 + i, 1) for i in range(1, 11)])
        for _ in range(10):
            await admin.expect(OrderAccepted)
        assert h.daemon.journal is not None
        h.daemon.journal.close()
        h.daemon.journal = None
        await h.close()
        # A crash in the middle of the next write: half a record at the tail.
        _, last = list_segments(journal_dir)[-1]
        with open(last, "ab") as f:
            f.write(b"\x40\x00\x00\x00\x01\x00\x01\x00" + os.urandom(13))
        h2 = await start_daemon(_config(journal_dir))
        assert len(h2.daemon.engine.book(DEMO)) == 10
        await h2.close()

    run_on("uvloop", scenario)


@pytest.mark.parametrize("mapped", [False, True], ids=["write", "mapped"])
def test_full_disk_refuses_orders_and_acknowledges_nothing_unjournaled(mapped: bool) -> None:
    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")

    async def scenario() -> None:
        h = await start_daemon(_config(journal_dir, mmap=mapped))
        journal = h.daemon.journal
        assert journal is not None and journal.mapped == mapped
        admin = await h.client("admin")
        admin.send(_order(admin, 1, Side.BUY, 9_000, 1))
        await admin.expect(OrderAccepted)
        if mapped:
            # The preallocated part used up (as after 8 MiB of orders); the file system
            # refuses more: preallocation fails, then the write(2) it falls back to.
            os.ftruncate(journal._fd, journal._offset)
            journal._allocated = journal._offset
            limits = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (journal._offset, limits[1]))  # no SIGXFSZ
        else:
            full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
            os.dup2(full, journal._fd)
            os.close(full)
        try:
            admin.send(_order(admin, 2, Side.BUY, 9_001, 1))
            refused = await admin.expect(OrderRejected)
            assert refused.reason == Reason.UNAVAILABLE
            admin.send(_order(admin, 3, Side.BUY, 9_002, 1))
            assert (await admin.expect(OrderRejected)).reason == Reason.UNAVAILABLE
        finally:
            if mapped:
                resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        assert [o[0] for o in h.daemon.engine.book(DEMO).resting()] == [1]
        why = "File too large" if mapped else "No space left on device"
        assert why in (h.daemon.unavailable or "")
        await h.close()

    run_on("uvloop", scenario)
    engine = default_config().new_engine()  # what was acknowledged is in the journal
    recover(engine, journal_dir)
    assert [o[0] for o in engine.book(DEMO).resting()] == [1]


def test_snapshots_are_written_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a snapshot's file is being written (held here until the test lets it go),
    the daemon keeps answering orders: the write and its fsyncs run in another thread."""
    import threading

    import lltrade.snapshots

    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")
    real_write = lltrade.snapshots.write_snapshot
    release = threading.Event()
    writers: list[tuple[int, bool]] = []  # (thread, released in time)

    def held_write(*args: Any, **kwargs: Any) -> Path:
        writers.append((threading.get_ident(), release.wait(30)))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(lltrade.snapshots, "write_snapshot", held_write)

    async def scenario() -> None:
        h = await start_daemon(_config(journal_dir, snapshot_every=2))
        assert h.daemon.snapshots is not None
        admin = await h.client("admin")
        for i in range(1, 6):  # a snapshot starts after the 2nd; it holds until released
            admin.send(_order(admin, i, Side.BUY, 9_000 + i, 1))
            await admin.expect(OrderAccepted)
        assert h.daemon.snapshots.busy and not list(Path(journal_dir).glob("snapshot-*.llts"))
        release.set()
        await h.daemon.snapshots.settle()
        assert [seq for seq, _ in _snapshots(journal_dir)] == [2]
        assert h.daemon.snapshots.written == 1
        await h.close()  # the final snapshot, written in place
        assert [seq for seq, _ in _snapshots(journal_dir)][-1] > 2

    run_on("uvloop", scenario)
    loop_thread = threading.get_ident()
    assert writers[0] == (writers[0][0], True) and writers[0][0] != loop_thread
    assert writers[-1][0] == loop_thread  # shutdown's, with nothing left to run


def test_a_snapshot_that_cannot_be_written_stops_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import lltrade.snapshots
    from lltrade.journal import JournalError

    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")

    def no_space(*args: Any, **kwargs: Any) -> Path:
        raise JournalError("cannot write snapshot: [Errno 28] No space left on device")

    monkeypatch.setattr(lltrade.snapshots, "write_snapshot", no_space)

    async def scenario() -> None:
        h = await start_daemon(_config(journal_dir, snapshot_every=1))
        assert h.daemon.snapshots is not None
        admin = await h.client("admin")
        for i in range(1, 4):
            admin.send(_order(admin, i, Side.BUY, 9_000 + i, 1))
            await admin.expect(OrderAccepted)
            await h.daemon.snapshots.settle()
        assert h.daemon.snapshots.failed == 3 and h.daemon.snapshots.written == 0
        assert h.daemon.unavailable is None  # still taking orders
        h.daemon.journal = None  # no final snapshot
        await h.close()

    with caplog.at_level("ERROR", "lltrade.daemon"):
        run_on("uvloop", scenario)
    failures = [r for r in caplog.records if r.getMessage().startswith("snapshot not written")]
    assert len(failures) == 3 and "No space left" in failures[0].error
    assert _offline_books(journal_dir)[DEMO] != []  # the journal has every order


def _snapshots(journal_dir: str) -> list[tuple[int, Path]]:
    from lltrade.journal import list_snapshots

    return list_snapshots(journal_dir)


# -- kill -9 of a real daemon process, many times ------------------------------------


def _spawn(journal_dir: str, *extra: str) -> tuple[subprocess.Popen[str], tuple[str, int], Any]:
    """A daemon process on ``journal_dir`` (durability none) and its ``recovered`` log record."""
    proc, address, seen = spawn_daemon("--durability", "none", *extra, journal_dir=journal_dir)
    return proc, address, seen.get("recovered", {})


def test_kill_9_at_random_moments_loses_no_acknowledged_order() -> None:
    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")
    rng = random.Random(11)
    acked: dict[int, int] = {}  # engine order id -> qty, every order ever acknowledged
    next_cl = 1
    for life in range(6):
        proc, address, recovered = _spawn(journal_dir)
        try:
            # The recovered books are exactly an offline replay of the journal.
            offline = _offline_books(journal_dir)
            assert recovered["state_hash"][str(DEMO)] == _hash_of(offline, DEMO), life
            resting = {o[0]: o[3] for o in offline[DEMO]}
            missing = {oid for oid in acked if oid not in resting}
            assert not missing, f"life {life}: acknowledged orders lost: {sorted(missing)[:10]}"

            async def trade(
                address: tuple[str, int] = address, proc: subprocess.Popen[str] = proc
            ) -> None:
                nonlocal next_cl
                c = await RawClient.connect(address)
                await c.logon("admin")
                deadline = asyncio.get_running_loop().time() + rng.uniform(0.05, 0.4)
                while asyncio.get_running_loop().time() < deadline:
                    burst = [
                        _order(c, next_cl + i, Side.BUY, rng.randrange(5_000, 9_000), 1)
                        for i in range(rng.randrange(1, 50))
                    ]
                    next_cl += len(burst)
                    c.send(*burst)
                    await asyncio.sleep(0)
                    for m in await c.drain(0.001):
                        if isinstance(m, OrderAccepted):
                            acked[m.order_id] = m.qty
                proc.send_signal(signal.SIGKILL)  # mid-stream, acks possibly in flight
                for m in await c.drain(0.05):
                    if isinstance(m, OrderAccepted):
                        acked[m.order_id] = m.qty
                await c.close()

            asyncio.run(asyncio.wait_for(trade(), 30))
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
    assert len(acked) > 100, "the test should have acknowledged plenty of orders"
    final = {o[0] for o in _offline_books(journal_dir)[DEMO]}
    assert set(acked) <= final
    # Nothing was applied twice: every resting order id appears once.
    assert len(final) == len(_offline_books(journal_dir)[DEMO])


def _hash_of(books: dict[int, list[tuple[int, ...]]], symbol: int) -> str:
    s = default_config().symbol("DEMO")
    engine = Engine()
    book = engine.add_book(symbol, s.min_price, s.max_price, s.tick, s.lot)
    for order_id, side, price, qty, account, stp, post_only in books[symbol]:
        book.add(order_id, side, price, qty, account=account, stp=stp, post_only=bool(post_only))
    return f"{book.state_hash():016x}"


def test_sigterm_right_after_listening_stops_the_daemon() -> None:
    """A stop request that arrives as soon as the daemon listens is never lost."""
    journal_dir = tempfile.mkdtemp(prefix="lltrade-journal-")
    for _ in range(5):
        proc, _address, _recovered = _spawn(journal_dir)
        proc.terminate()
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
