"""Replay one seeded command stream through lltrade, the reference book and the peers.

    python benchmark/replay.py [--commands 1000000] [--seed 1] [--json PATH]

The stream is ``lltrade.workload``'s replay mix (about 60% passive limit orders
near the touch, 30% cancels of resting orders, 10% aggressive orders, some of
them sweeping several levels), on a book that stays near
``--target-orders`` resting orders.  It goes through:

* lltrade's batch face, ``OrderBook.process`` in batches of ``--batch``
  commands (per-command latency = batch time / batch size: amortised);
* lltrade's per-call face (``add``/``cancel``/``market``), each call timed;
* the pure-Python reference book (``tests/reference_book.py``) and the PyPI
  peers (``benchmark/peers.py``) on the first ``--reference-commands`` /
  ``--peer-commands`` commands, as they are much slower; commands/s is
  comparable across lengths because the book is at its steady size early.

Throughput is the median over ``--repeats`` untimed runs (fresh book each);
latency percentiles come from one more run with every call timed by
``time.perf_counter_ns`` (the timer's own cost is printed).  The garbage
collector is off while timing.

Correctness is asserted, so a fast wrong answer cannot pass: the batch face's
final ``state_hash`` equals the workload model's and the per-call face's; on
the reference's prefix, lltrade and the reference have the same
``state_hash``; no command is rejected.  A peer's final best bid/ask is
compared with lltrade's on its prefix and the result printed (a mismatch
fails the run only with ``--strict-peers``).

Memory: a deep book of ``--deep-orders`` resting orders is built in each
book; lltrade reports ``nbytes / len(book)`` (its C pools and indexes), and
tracemalloc measures what each book allocated through Python's allocators.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lltrade
from figures import cpu_model, fmt_ns, fmt_rate, git_commit
from lltrade.workload import KIND_NAMES, Mix, Workload, WorkloadSpec, generate

import peers

Row = tuple[int, int, int, int, int, int, int | None]  # op, id, side, price, qty, tif, protection
perf_ns = time.perf_counter_ns

OP_ADD, OP_MARKET, OP_CANCEL, OP_REDUCE = 1, 2, 3, 4


@dataclass
class Result:
    face: str
    commands: int
    runs: int
    cmds_per_s: float
    p50_ns: float
    p99_ns: float
    p999_ns: float
    latency_kind: str  # "per call" or "amortised"
    check: str
    notes: list[str] = field(default_factory=list)
    ratio_to_fastest_peer: float | None = None
    throughputs: list[float] = field(default_factory=list)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> p50/p99/p99.9


# -- machine -------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "lltrade": getattr(lltrade, "__version__", "?"),
        "commit": git_commit(),
    }


def timer_overhead_ns() -> float:
    samples = []
    for _ in range(100_000):
        t0 = perf_ns()
        samples.append(perf_ns() - t0)
    return float(np.median(samples))


# -- replay loops ----------------------------------------------------------------


def to_rows(commands: np.ndarray) -> list[Row]:
    """The stream as plain tuples, so per-call replays pay no numpy access."""
    prot = [None if p < 0 else p for p in commands["protection"].tolist()]
    return list(
        zip(
            commands["op"].tolist(),
            commands["order_id"].tolist(),
            commands["side"].tolist(),
            commands["price"].tolist(),
            commands["qty"].tolist(),
            commands["tif"].tolist(),
            prot,
            strict=True,
        )
    )


def run_calls(face: Any, rows: Sequence[Row]) -> int:
    """Replay ``rows`` through a per-call face; return the elapsed ns."""
    add, market, cancel, reduce, replace = (
        face.add,
        face.market,
        face.cancel,
        face.reduce,
        face.replace,
    )
    t0 = perf_ns()
    for op, oid, side, price, qty, tif, prot in rows:
        if op == OP_ADD:
            add(oid, side, price, qty, tif=tif)
        elif op == OP_CANCEL:
            cancel(oid)
        elif op == OP_MARKET:
            market(oid, side, qty, protection_ticks=prot)
        elif op == OP_REDUCE:
            reduce(oid, qty)
        else:
            replace(oid, price, qty)
    return perf_ns() - t0


def run_calls_timed(face: Any, rows: Sequence[Row]) -> tuple[int, np.ndarray]:
    """As ``run_calls``, timing every call; return (elapsed ns, per-call ns)."""
    add, market, cancel, reduce, replace = (
        face.add,
        face.market,
        face.cancel,
        face.reduce,
        face.replace,
    )
    lat = [0] * len(rows)
    t_start = perf_ns()
    for i, (op, oid, side, price, qty, tif, prot) in enumerate(rows):
        if op == OP_ADD:
            t0 = perf_ns()
            add(oid, side, price, qty, tif=tif)
            t1 = perf_ns()
        elif op == OP_CANCEL:
            t0 = perf_ns()
            cancel(oid)
            t1 = perf_ns()
        elif op == OP_MARKET:
            t0 = perf_ns()
            market(oid, side, qty, protection_ticks=prot)
            t1 = perf_ns()
        elif op == OP_REDUCE:
            t0 = perf_ns()
            reduce(oid, qty)
            t1 = perf_ns()
        else:
            t0 = perf_ns()
            replace(oid, price, qty)
            t1 = perf_ns()
        lat[i] = t1 - t0
    return perf_ns() - t_start, np.asarray(lat, dtype=np.int64)


def new_book(spec: WorkloadSpec) -> lltrade.OrderBook:
    return lltrade.OrderBook(spec.min_price, spec.max_price, spec.tick, spec.lot)


def run_batch(
    book: lltrade.OrderBook, commands: np.ndarray, events: np.ndarray, batch: int
) -> tuple[int, list[tuple[int, int]], int, int]:
    """Feed ``commands`` to ``book.process`` in batches.

    Returns (elapsed ns, [(batch ns, commands in it)], events, rejects).
    """
    n = len(commands)
    per_batch: list[tuple[int, int]] = []
    process = book.process
    i = 0
    n_events = 0
    rejects = 0
    kinds = events["kind"]
    total = 0
    while i < n:
        chunk = commands[i : i + batch]
        t0 = perf_ns()
        k = process(chunk, events)
        dt = perf_ns() - t0
        done = book.commands_processed
        total += dt
        per_batch.append((dt, done))
        n_events += k
        rejects += int(np.count_nonzero(kinds[:k] == lltrade.EventKind.REJECTED))
        i += done
    return total, per_batch, n_events, rejects


def percentiles(lat: np.ndarray) -> tuple[float, float, float]:
    p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
    return float(p50), float(p99), float(p999)


def timed(fn: Callable[[], Any]) -> Any:
    gc.collect()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


# -- the faces ---------------------------------------------------------------------


def bench_batch(w: Workload, batch: int, repeats: int) -> tuple[Result, lltrade.OrderBook]:
    commands = w.commands
    events = np.zeros(max(1 << 16, 8 * batch), dtype=lltrade.EVENT_DTYPE)
    throughputs = []
    book = new_book(w.spec)
    per_batch: list[tuple[int, int]] = []
    info = (0, 0)
    for _ in range(repeats):
        book = new_book(w.spec)
        total, per_batch, n_events, rejects = timed(
            lambda b=book: run_batch(b, commands, events, batch)
        )
        throughputs.append(len(commands) / total * 1e9)
        info = (n_events, rejects)
    assert info[1] == 0, f"lltrade batch face rejected {info[1]} commands of a valid stream"
    assert book.state_hash() == w.state_hash(), "batch face: final book differs from the model"
    lat = np.repeat(np.asarray([dt / max(k, 1) for dt, k in per_batch]), [k for _, k in per_batch])
    p50, p99, p999 = percentiles(lat)
    res = Result(
        face=f"lltrade batch ({batch}/call)",
        commands=len(commands),
        runs=repeats,
        cmds_per_s=float(np.median(throughputs)),
        p50_ns=p50,
        p99_ns=p99,
        p999_ns=p999,
        latency_kind="amortised",
        check="hash = model",
        notes=[f"{info[0] / len(commands):.2f} events/cmd, 0 rejects", "latency amortised"],
        throughputs=throughputs,
    )
    return res, book


def by_kind(lat: np.ndarray, kinds: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for code, name in enumerate(KIND_NAMES):
        sel = lat[kinds[: len(lat)] == code]
        if len(sel):
            p50, p99, p999 = percentiles(sel)
            out[name] = {"n": float(len(sel)), "p50_ns": p50, "p99_ns": p99, "p999_ns": p999}
    return out


def bench_calls(
    name: str,
    make: Callable[[], Any],
    rows: Sequence[Row],
    repeats: int,
    kinds: np.ndarray,
) -> tuple[Result, Any]:
    throughputs = []
    face = None
    for _ in range(repeats):
        if face is not None:
            face.close()
        face = make()
        elapsed = timed(lambda f=face: run_calls(f, rows))
        throughputs.append(len(rows) / elapsed * 1e9)
    if face is not None:
        face.close()
    face = make()
    elapsed, lat = timed(lambda f=face: run_calls_timed(f, rows))
    if repeats == 0:
        throughputs.append(len(rows) / elapsed * 1e9)
    p50, p99, p999 = percentiles(lat)
    res = Result(
        face=name,
        commands=len(rows),
        runs=max(repeats, 1),
        cmds_per_s=float(np.median(throughputs)),
        p50_ns=p50,
        p99_ns=p99,
        p999_ns=p999,
        latency_kind="per call",
        check="",
        notes=list(getattr(face, "notes", [])),
        throughputs=throughputs,
        by_kind=by_kind(lat, kinds),
    )
    return res, face


# -- memory ----------------------------------------------------------------------------


def deep_stream(orders: int, seed: int, dtype: np.dtype[np.void]) -> Workload:
    """Only passive orders: every one of them rests."""
    spec = WorkloadSpec(
        commands=orders,
        seed=seed,
        mix=Mix(passive=1.0, cancel=0.0, aggressive=0.0),
        target_orders=0,
        depth_ticks=50.0,
        max_depth_ticks=2_000,
    )
    return generate(spec, dtype)


def measure_memory(faces: dict[str, Callable[[], Any]], w: Workload) -> list[dict[str, Any]]:
    rows = to_rows(w.commands)
    out = []
    for name, make in faces.items():
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        face = make()
        run_calls(face, rows)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        resting = len(w.resting)
        entry: dict[str, Any] = {
            "face": name,
            "resting_orders": resting,
            "tracemalloc_bytes_per_order": (after - before) / resting,
        }
        book = getattr(face, "book", None)
        if name.startswith("lltrade"):
            assert len(book) == resting
            assert book.state_hash() == w.state_hash(), "deep book differs from the model"
            entry["nbytes"] = book.nbytes
            entry["nbytes_per_order"] = book.nbytes / len(book)
            entry["levels"] = getattr(book, "level_count", None)
        out.append(entry)
        face.close()
        del face
    return out


# -- printing ------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    head = (
        f"{'face':<26} {'commands':>9} {'cmd/s (median)':>15} {'p50':>10} {'p99':>10} "
        f"{'p99.9':>10} {'vs fastest peer':>15}  check"
    )
    print(head)
    print("-" * (len(head) + 20))
    for r in results:
        ratio = "-" if r.ratio_to_fastest_peer is None else f"{r.ratio_to_fastest_peer:.2f}x"
        lat = " " if r.latency_kind == "per call" else "*"
        print(
            f"{r.face:<26} {r.commands:>9} {fmt_rate(r.cmds_per_s):>15} "
            f"{fmt_ns(r.p50_ns) + lat:>10} {fmt_ns(r.p99_ns) + lat:>10} "
            f"{fmt_ns(r.p999_ns) + lat:>10} {ratio:>15}  {r.check}"
        )
    print("* amortised: time of one process() call / commands in it, not one command's latency")
    print()
    print("per-call latency by kind of command (p50 / p99 / p99.9):")
    for r in results:
        if not r.by_kind:
            continue
        parts = [
            f"{k} {fmt_ns(v['p50_ns'])} / {fmt_ns(v['p99_ns'])} / {fmt_ns(v['p999_ns'])}"
            for k, v in r.by_kind.items()
        ]
        print(f"  {r.face:<24} " + "; ".join(parts))
    print()
    print("notes:")
    for r in results:
        if r.notes:
            print(f"  {r.face:<24} " + "; ".join(r.notes))


# -- main --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--commands", type=int, default=1_000_000, help="stream length")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=4096, help="commands per process() call")
    p.add_argument("--repeats", type=int, default=5, help="throughput runs of the lltrade faces")
    p.add_argument("--slow-repeats", type=int, default=3, help="throughput runs of the slow faces")
    p.add_argument("--reference-commands", type=int, default=100_000)
    p.add_argument("--peer-commands", type=int, default=100_000)
    p.add_argument(
        "--mix",
        default="0.6,0.3,0.1,0,0",
        help="weights of passive,cancel,aggressive,reduce,replace commands",
    )
    p.add_argument("--target-orders", type=int, default=5_000, help="steady size of the book")
    p.add_argument("--deep-orders", type=int, default=100_000, help="0 = skip the memory part")
    p.add_argument(
        "--peers",
        default="cython-orderbook,fastlob",
        help="comma-separated PyPI peers to run ('' = none)",
    )
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--strict-peers", action="store_true", help="fail on a peer's wrong book")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cmdline = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    info = machine_info()
    print(f"command: {cmdline}")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{info['platform']}"
    )
    print(
        f"python {info['python']}, numpy {info['numpy']}, lltrade {info['lltrade']} "
        f"(commit {info['commit']})"
    )
    overhead = timer_overhead_ns()
    print(f"timer: perf_counter_ns, {overhead:.0f} ns per back-to-back pair (in per-call figures)")

    mix = Mix(*(float(x) for x in args.mix.split(",")))
    spec = WorkloadSpec(
        commands=args.commands, seed=args.seed, mix=mix, target_orders=args.target_orders
    )
    t0 = time.perf_counter()
    w = generate(spec)
    gen_s = time.perf_counter() - t0
    c = w.counts
    n = len(w.commands)
    shares = ", ".join(f"{c[k] / n:.1%} {k}" for k in KIND_NAMES if c[k])
    print(
        f"stream: {n} commands, seed {args.seed}, made in {gen_s:.2f} s: {shares} "
        f"({c['market']} market orders, {c['sweeps']} sweeping >1 level, {c['fills']} makers "
        f"met); {len(w.resting)} orders rest at the end"
    )
    print()

    results: list[Result] = []
    rows = to_rows(w.commands)

    # lltrade, both faces, whole stream
    res_batch, book_batch = bench_batch(w, args.batch, args.repeats)
    results.append(res_batch)

    res_call, face_call = bench_calls(
        "lltrade per-call",
        lambda: peers.LltradePeer(spec.min_price, spec.max_price, spec.tick, spec.lot),
        rows,
        args.repeats,
        w.kinds,
    )
    assert face_call.state_hash() == book_batch.state_hash(), "per-call face != batch face"
    res_call.check = "hash = batch face"
    results.append(res_call)

    def prefix_book(k: int) -> lltrade.OrderBook:
        b = new_book(spec)
        events = np.zeros(1 << 16, dtype=lltrade.EVENT_DTYPE)
        run_batch(b, w.commands[:k], events, args.batch)
        return b

    # the reference, on a prefix
    if not args.no_reference and peers.reference_available() and args.reference_commands > 0:
        k = min(args.reference_commands, n)
        res_ref, ref = bench_calls(
            "reference (pure Python)",
            lambda: peers.ReferencePeer(spec.min_price, spec.max_price, spec.tick, spec.lot),
            rows[:k],
            args.slow_repeats,
            w.kinds,
        )
        expected = prefix_book(k)
        assert ref.state_hash() == expected.state_hash(), "reference != lltrade on the prefix"
        res_ref.check = "hash = lltrade"
        results.append(res_ref)
    elif not args.no_reference:
        print("reference: tests/reference_book.py not found, skipped")

    # the PyPI peers, on a prefix
    peer_results: list[Result] = []
    wanted = [p for p in args.peers.split(",") if p]
    avail = peers.available_peers()
    failures = []
    for name in wanted:
        if avail.get(name, "unknown peer") is not None:
            print(f"peer {name}: not available ({avail.get(name, 'unknown peer')}), skipped")
            continue
        cls = peers.PEERS[name]
        k = min(args.peer_commands, n)
        res, face = bench_calls(
            name,
            lambda cls=cls: cls(spec.min_price, spec.max_price, spec.tick, spec.lot),
            rows[:k],
            args.slow_repeats,
            w.kinds,
        )
        expected = prefix_book(k)
        got = (face.best_bid(), face.best_ask())
        want = (expected.best_bid(), expected.best_ask())
        if got == want:
            res.check = "best bid/ask = lltrade"
        else:
            res.check = "BEST BID/ASK DIFFER"
            why = ""
            if mix.reduce or mix.replace:
                why = " (reduce/replace are emulated by cancel + add there: queue priority lost)"
            failures.append(f"{name}: best bid/ask {got} != lltrade's {want}{why}")
        stale = getattr(face, "stale_levels", None)
        if stale is not None and stale():
            res.notes.append(f"{stale()} empty levels left listed (its bug)")
        face.close()
        peer_results.append(res)
        results.append(res)

    if peer_results:
        fastest = max(r.cmds_per_s for r in peer_results)
        for r in results:
            r.ratio_to_fastest_peer = r.cmds_per_s / fastest

    print()
    print_table(results)
    for f in failures:
        print(f"WARNING {f}")

    # memory on a deep book
    memory: list[dict[str, Any]] = []
    if args.deep_orders > 0:
        deep = deep_stream(args.deep_orders, args.seed, lltrade.COMMAND_DTYPE)
        faces: dict[str, Callable[[], Any]] = {
            "lltrade": lambda: peers.LltradePeer(
                spec.min_price, spec.max_price, spec.tick, spec.lot
            )
        }
        for name in wanted:
            if avail.get(name) is None and name in peers.PEERS:
                faces[name] = lambda cls=peers.PEERS[name]: cls(
                    spec.min_price, spec.max_price, spec.tick, spec.lot
                )
        memory = measure_memory(faces, deep)
        print()
        print(f"memory, deep book of {len(deep.resting)} resting orders:")
        for m in memory:
            extra = ""
            if "nbytes_per_order" in m:
                extra = (
                    f"  book.nbytes {m['nbytes']} B = {m['nbytes_per_order']:.1f} B/order"
                    f" ({m['levels']} levels)"
                )
            print(
                f"  {m['face']:<18} tracemalloc {m['tracemalloc_bytes_per_order']:8.1f} B/order"
                f"{extra}"
            )
        print("  (tracemalloc sees Python allocators only; peers' figures include the id map)")

    if args.json:
        doc = {
            "command": cmdline,
            "machine": info,
            "timer_overhead_ns": overhead,
            "stream": {
                "spec": {k: v for k, v in asdict(spec).items() if k != "mix"}
                | {"mix": asdict(spec.mix)},
                "counts": w.counts,
                "generate_s": gen_s,
                "final_resting_orders": len(w.resting),
            },
            "results": [asdict(r) for r in results],
            "memory": memory,
            "peer_failures": failures,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"figures written to {args.json}")

    if failures and args.strict_peers:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
