"""The daemon's shared-memory telemetry reflects what it did."""

from __future__ import annotations

import pytest

from lltrade import Reason, Side
from lltrade._telemetry import TelemetryReader, default_path
from lltrade.journal import JournalReader
from lltrade.protocol import Fill, NewOrder, OrderAccepted, OrderRejected

from harness import LOOPS, make_config, run_on, start_daemon


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_counters_histograms_and_gauges_follow_the_trading(loop_kind: str) -> None:
    async def scenario() -> None:
        cfg = make_config()
        h = await start_daemon(cfg)
        reader = TelemetryReader(default_path(cfg.telemetry.shm_name))
        alice, bob = await h.client("alice"), await h.client("bob")
        alice.send(NewOrder(alice.next_seq(), 1, 1, Side.BUY, 10_000, 5, 0, False, 0))
        await alice.expect(OrderAccepted)
        bob.send(NewOrder(bob.next_seq(), 1, 1, Side.SELL, 10_000, 2, 0, False, 0))
        await bob.expect(Fill)
        bob.send(NewOrder(bob.next_seq(), 2, 1, Side.SELL, 99_000, 2, 0, False, 0))
        assert (await bob.expect(OrderRejected)).reason == Reason.PRICE_COLLAR
        h.daemon._tick()  # publish gauges now rather than at the next 100 ms tick
        snap = reader.snapshot()
        c, g = snap["counters"], snap["gauges"]
        assert c["orders_accepted"] == 2 and c["fills"] == 2
        assert c['orders_rejected{reason="PRICE_COLLAR"}'] == 1 and c["orders_rejected"] == 1
        assert c["sessions_opened"] == 2 and c["bytes_in"] > 0 and c["bytes_out"] > 0
        assert c["orders_in"] == 2  # commands the engine ran (the collar reject never got there)
        journal = h.daemon.journal
        assert journal is not None and c["journal_records"] >= 2
        on_disk = sum(r.size for r in JournalReader(journal.directory, repair=False))
        assert c["journal_bytes"] == on_disk > 0  # every record, headers and padding included
        assert g["open_orders"] == 1 and g["sessions"] == 2
        assert g['best_bid{symbol="DEMO"}'] == 10_000
        hists = snap["histograms"]
        assert hists["order_latency_ns"]["count"] == 2  # one per admitted order
        assert hists["batch_size"]["count"] == 2 and hists["batch_size"]["sum"] == 2
        assert reader.heartbeat_age_s() < 5
        reader.close()
        # The exporter counts each reject once: in the log's totals and in /metrics.
        from telemetry.collector import snapshot_families
        from telemetry.sampler import build_record
        from telemetry.source import Source, load_backend

        reading = Source(default_path(cfg.telemetry.shm_name), load_backend(), 1.0).read()
        assert build_record(reading, None, {})["counter_totals"]["orders_rejected"] == 1
        assert reading.snapshot is not None
        (family,) = [f for f in snapshot_families(reading.snapshot) if f.name.endswith("rejected")]
        assert sum(sample.value for sample in family.samples) == 1
        await h.close()

    run_on(loop_kind, scenario)
