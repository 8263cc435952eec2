"""Who limited a run, and which rate to try next in ``--max`` mode (pure).

A run at a target rate can be limited by the load generator or by the
daemon, and it matters which: when the generator cannot keep its schedule,
the figures measure the generator.  The rules, in order:

1. ``loadgen``: the generator was busy nearly all the time on one of its
   CPUs (workers pinned to the same CPU add up).  That CPU is saturated:
   the generator sends late or short of the target and reads answers late,
   and the latencies include both.
2. ``daemon``: the generator had CPU to spare, but some answers never came,
   they came back short of the target rate, or the p99 latency passed the
   limit (answers queue up: the daemon is past its sustainable rate).  A
   generator that sent late here was most likely busy with the daemon's
   late bursts of answers.
3. ``loadgen``: the daemon kept up, but the generator's sends were late
   against the schedule: the 99th percentile of *actual - planned* send
   time passed the lag limit and is more than half the p99 latency, so the
   tail is mostly the generator's own delay (on a shared machine, usually
   other processes or the hypervisor taking its CPU).  Late by less than
   that, the run has no bottleneck but the reason carries a note.
4. Otherwise nobody limited the run (``None``).

``--max`` steps the rate up by a factor until a step fails (a saturated
worker, a daemon that fell behind, or an error: :func:`step_ok`), then
bisects between the highest passing rate and the lowest failing one until
they are within the resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from figures import fmt_ns, fmt_rate

TOLERANCE: Final = 0.05  #: a rate may fall this much short of the target
BUSY_LIMIT: Final = 0.9  #: a worker busier than this is saturated
LAG_LIMIT_NS: Final = 250_000  #: p99 send lateness above this: the generator may be behind
P99_LIMIT_NS: Final = 10_000_000  #: p99 latency above this: answers are queueing up


@dataclass(frozen=True)
class RunFigures:
    """What one run measured, as the classification needs it."""

    target_rate: float
    sent_rate: float  #: messages released per second in the measured window
    achieved_rate: float  #: first answers per second
    generator_busy: float  #: busy share of the generator's busiest CPU (:func:`busiest_cpu`)
    lag_p99_ns: int  #: 99th percentile of (actual - planned) send time
    p99_ns: int  #: 99th percentile latency over every type
    unanswered: int  #: messages never answered
    errors: int  #: other errors (disconnects, worker failures)


@dataclass(frozen=True)
class Limits:
    tolerance: float = TOLERANCE
    busy_limit: float = BUSY_LIMIT
    lag_limit_ns: int = LAG_LIMIT_NS
    p99_limit_ns: int = P99_LIMIT_NS


def classify(run: RunFigures, limits: Limits = Limits()) -> tuple[str | None, str | None]:
    """``(bottleneck, reason)``: ``"loadgen"``, ``"daemon"`` or ``None``, and a sentence why.

    The reason may be a note when there is no bottleneck, else it is None.
    """
    floor = run.target_rate * (1 - limits.tolerance)
    if run.generator_busy >= limits.busy_limit:
        busy = f"the generator was busy {run.generator_busy:.0%} of the time"
        if run.sent_rate < floor:
            return "loadgen", (
                f"{busy} and sent {fmt_rate(run.sent_rate)} of the "
                f"{fmt_rate(run.target_rate)} target: add --processes or lower --rate"
            )
        return "loadgen", (
            f"{busy}: it read answers late, so the latencies include its own delay "
            "(add --processes or lower --rate)"
        )
    if run.unanswered:
        return "daemon", f"{run.unanswered} messages were never answered"
    if run.achieved_rate < floor:
        return "daemon", (
            f"answers came back at {fmt_rate(run.achieved_rate)}, short of the "
            f"{fmt_rate(run.target_rate)} target, with the generator not saturated"
        )
    if run.p99_ns > limits.p99_limit_ns:
        return "daemon", (
            f"p99 latency {fmt_ns(run.p99_ns)} > {fmt_ns(limits.p99_limit_ns)}: answers queue up"
        )
    if run.lag_p99_ns > limits.lag_limit_ns:
        lag = f"p99 send lag {fmt_ns(run.lag_p99_ns)} > {fmt_ns(limits.lag_limit_ns)}"
        if 2 * run.lag_p99_ns > run.p99_ns:
            return "loadgen", (
                f"the generator sent late ({lag}): over half the p99 latency "
                f"{fmt_ns(run.p99_ns)}, so the tail is mostly its own delay"
            )
        return None, (
            f"note: the generator sent late ({lag}), but the p99 latency "
            f"{fmt_ns(run.p99_ns)} is mostly the daemon's"
        )
    return None, None


def busiest_cpu(workers: list[tuple[int | None, float]]) -> float:
    """The busiest share of one CPU over the workers ``(pinned CPU or None, busy share)``.

    Workers pinned to the same CPU add up (two workers 50% busy saturate it),
    up to 1 (a worker's busy time includes the time the other took the CPU
    from it); an unpinned worker counts alone.
    """
    loads: dict[tuple[str, int | None], float] = {}
    for i, (cpu, share) in enumerate(workers):
        key = ("cpu", cpu) if cpu is not None else ("worker", i)
        loads[key] = loads.get(key, 0.0) + share
    return min(max(loads.values(), default=0.0), 1.0)


def step_ok(run: RunFigures, limits: Limits = Limits()) -> bool:
    """Whether a ``--max`` step is sustainable: no error, no saturated worker, no lagging daemon.

    Late sends alone do not fail a step: with the generator not saturated they
    come from the machine (other processes, the hypervisor), not from the rate,
    and would send the search down for nothing.  They stay in the step's reason.
    """
    capacity_only = replace(limits, lag_limit_ns=2**62)
    return run.errors == 0 and classify(run, capacity_only)[0] is None


def nice_rate(rate: float) -> int:
    """``rate`` rounded to two significant digits (37_412 -> 37_000), at least 1."""
    if rate < 100:
        return max(1, int(rate + 0.5))
    unit: int = 10 ** (len(str(int(rate))) - 2)
    return int(rate / unit + 0.5) * unit


def next_rate(
    steps: list[tuple[int, bool]],
    start: int,
    factor: float = 2.0,
    resolution: float = 0.1,
    max_rate: int = 10_000_000,
    min_rate: int = 100,
) -> int | None:
    """The next rate to try after ``steps`` (``(rate, ok)`` in the order run), or None: done.

    Up by ``factor`` from ``start`` while every step passes (at most
    ``max_rate``); down by ``factor`` while none has passed (at least
    ``min_rate``); once there is a passing rate below a failing one, the
    midpoint, until the failing rate is within ``resolution`` of the passing
    one.
    """
    if not steps:
        return start
    passed = [r for r, ok in steps if ok]
    failed = [r for r, ok in steps if not ok]
    best = max(passed, default=None)
    if best is None:
        lowest = min(failed)
        down = nice_rate(lowest / factor)
        return down if min_rate <= down < lowest else None
    above = [r for r in failed if r > best]
    if not above:
        up = nice_rate(best * factor)
        up = min(up, max_rate)
        return up if up > best else None
    ceiling = min(above)
    if ceiling - best <= best * resolution:
        return None
    mid = nice_rate((best + ceiling) / 2)
    return mid if best < mid < ceiling else None


def peak(steps: list[tuple[int, bool]]) -> int | None:
    """The highest passing rate of a search, or None."""
    return max((r for r, ok in steps if ok), default=None)
