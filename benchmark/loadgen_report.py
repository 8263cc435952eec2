"""The load generator's figures: worker results merged, the result file, the summary table.

The result file (``schema: 1``) is documented in ``benchmark/README.md``;
``benchmark/plots.py`` reads it.  Every latency histogram is stored in
HdrHistogram's standard compressed encoding (``HdrHistogram.encode()``), so
any HdrHistogram library can decode it and merge runs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import IO, Any, Final

from figures import fmt_ns, fmt_rate
from loadgen_orders import TYPES
from loadgen_schedule import (
    achieved_rate,
    latency_summary,
    merge_encoded,
    new_histogram,
)
from loadgen_verdict import Limits, RunFigures, busiest_cpu, classify

SCHEMA: Final = 1
TOOL: Final = "lltrade-loadgen"
ALL: Final = "all"


def merge_run(
    results: list[dict[str, Any]],
    target_rate: int,
    duration_s: float,
    limits: Limits,
    errors: list[str],
) -> dict[str, Any]:
    """One run's part of the result file from its workers' results.

    Histograms are decoded and added per type; ``all`` adds every type.
    ``achieved_rate`` counts first answers per second over the measured
    window (from its first planned send to the last answer).
    """
    errors = list(errors)
    types: dict[str, Any] = {}
    total = new_histogram()
    for t in TYPES:
        hist = merge_encoded([r["hist"][t] for r in results])
        total.add(hist)
        types[t] = latency_summary(hist)
    types[ALL] = latency_summary(total)
    lag = merge_encoded([r["lag_hist"] for r in results])

    def added(key: str) -> dict[str, int]:
        sums: Counter[str] = Counter()
        for r in results:
            sums.update(r[key])
        return dict(sums)

    sent, answered, rejected = added("sent"), added("answered"), added("rejected")
    reasons = added("rejected_reasons")
    unanswered = sum(r["unanswered"] for r in results)
    for r in results:
        errors.extend(r["errors"])
    starts = [r["window_start_ns"] for r in results if r["measured"]]
    window_start = min(starts, default=0)
    n_sent = sum(sent.values())
    n_answered = sum(answered.values())
    sent_rate = achieved_rate(window_start, max(r["last_sent_ns"] for r in results), n_sent)
    answer_rate = achieved_rate(window_start, max(r["last_answer_ns"] for r in results), n_answered)
    busiest = busiest_cpu([(r.get("cpu"), r["busy_share"]) for r in results])
    figures = RunFigures(
        target_rate=float(target_rate),
        sent_rate=sent_rate,
        achieved_rate=answer_rate,
        generator_busy=busiest,
        lag_p99_ns=int(lag.get_value_at_percentile(99)),
        p99_ns=types[ALL]["p99_ns"],
        unanswered=unanswered,
        errors=len(errors),
    )
    bottleneck, reason = classify(figures, limits)
    if bottleneck is None and errors:
        reason = "the run had errors: " + errors[0]
    mismatched = sum(r["mismatched"] for r in results)
    if mismatched:
        errors.append(f"{mismatched} answers did not match the request they followed")
    return {
        "duration_s": float(duration_s),
        "target_rate": float(target_rate),
        "achieved_rate": answer_rate,
        "sent": n_sent,
        "answered": n_answered,
        "rejected": sum(rejected.values()),
        "errors": errors,
        "bottleneck": bottleneck,
        "bottleneck_reason": reason,
        "types": types,
        # Beyond schema 1's required keys: what the classification looked at.
        "sent_by_type": sent,
        "answered_by_type": answered,
        "rejected_by_type": rejected,
        "rejected_reasons": reasons,
        "unanswered": unanswered,
        "sent_rate": sent_rate,
        "generator": {
            "send_lag_p50_ns": int(lag.get_value_at_percentile(50)),
            "send_lag_p99_ns": int(lag.get_value_at_percentile(99)),
            "send_lag_max_ns": int(lag.get_max_value()),
            "busy": busiest,
            "workers": [
                {
                    k: v
                    for k, v in r.items()
                    if k not in ("hist", "lag_hist", "sent", "answered", "rejected", "errors")
                }
                for r in results
            ],
        },
    }


def document(
    started: float,
    config: dict[str, Any],
    machine: dict[str, Any],
    run: dict[str, Any],
    max_search: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The whole result file: header, the run's figures and the ``--max`` steps."""
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "tool": TOOL,
        "started": started,
        "config": config,
        "duration_s": run["duration_s"],
        "target_rate": run["target_rate"],
        "achieved_rate": run["achieved_rate"],
        "sent": run["sent"],
        "answered": run["answered"],
        "rejected": run["rejected"],
        "errors": run["errors"],
        "bottleneck": run["bottleneck"],
        "bottleneck_reason": run["bottleneck_reason"],
        "machine": machine,
        "max_search": max_search,
        "types": run["types"],
    }
    for key, value in run.items():
        doc.setdefault(key, value)
    return doc


def write(doc: dict[str, Any], path: str) -> None:
    """Write the result file (JSON), creating its folder; atomically (a reader never sees half)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


# =====================================================================================
# The summary
# =====================================================================================


def print_summary(doc: dict[str, Any], out: IO[str]) -> None:
    """The table an operator reads: rates, counts, percentiles per type, who limited the run."""
    c = doc["config"]
    p = out.write
    p(
        f"{TOOL} -> {c['host']}:{c['port']} as {c['account']}: "
        f"{fmt_rate(doc['target_rate'])} target, {c['connections']} connection(s) x "
        f"{c['processes']} process(es), {c['duration']:g} s measured after "
        f"{c['warmup']:g} s warm-up\n"
    )
    sent_by_type = doc.get("sent_by_type", {})
    n = max(doc["sent"], 1)
    actual = ", ".join(f"{t} {sent_by_type.get(t, 0) / n:.0%}" for t in TYPES)
    p(f"mix {c['mix']} (sent: {actual}); symbols {','.join(c['symbols'])}; seed {c['seed']}\n\n")
    p(
        f"achieved {fmt_rate(doc['achieved_rate'])} answered  (sent {doc['sent']}, answered "
        f"{doc['answered']}, rejected {doc['rejected']}, unanswered {doc.get('unanswered', 0)})\n"
    )
    if doc.get("rejected_reasons"):
        why = ", ".join(f"{k} {v}" for k, v in doc["rejected_reasons"].items())
        p(f"rejections: {why}\n")
    p("\n")
    cols = ("count", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max")
    keys = ("mean_ns", "p50_ns", "p90_ns", "p99_ns", "p99_9_ns", "p99_99_ns", "max_ns")
    p(f"{'type':<10}" + "".join(f"{h:>10}" for h in cols) + "\n")
    for t in (*TYPES, ALL):
        s = doc["types"][t]
        p(f"{t:<10}{s['count']:>10}" + "".join(f"{fmt_ns(s[k]):>10}" for k in keys) + "\n")
    p("\nlatency: from each message's planned send time to its first answer (coordinated\n")
    p("omission corrected); an answer never received counts until the end of the run.\n")
    g = doc.get("generator")
    if g:
        p(
            f"generator: send lag p50 {fmt_ns(g['send_lag_p50_ns'])}, p99 "
            f"{fmt_ns(g['send_lag_p99_ns'])}, max {fmt_ns(g['send_lag_max_ns'])}; "
            f"{g['busy']:.0%} busy while sending; sent "
            f"{fmt_rate(doc.get('sent_rate', 0.0))}\n"
        )
    if doc.get("daemon_cpu") is not None:
        p(f"daemon: {doc['daemon_cpu']:.0%} of a core during the run\n")
    if doc.get("other_cpu") is not None:
        p(f"other processes: {doc['other_cpu']:.2f} cores during the run\n")
    if doc["bottleneck"]:
        p(f"bottleneck: {doc['bottleneck'].upper()}: {doc['bottleneck_reason']}\n")
    elif doc["bottleneck_reason"]:
        p(f"bottleneck: none; {doc['bottleneck_reason']}\n")
    else:
        p("bottleneck: none (the generator kept its schedule and the daemon kept up)\n")
    for e in doc["errors"]:
        p(f"error: {e}\n")


def print_search(steps: list[dict[str, Any]], peak: float | None, out: IO[str]) -> None:
    """The ``--max`` steps and the sustainable peak."""
    p = out.write
    p(f"{'step':>4} {'target':>10} {'achieved':>10} {'p99':>10}  verdict\n")
    for i, s in enumerate(steps, 1):
        verdict = "ok" if s["ok"] else (s.get("bottleneck") or "error")
        p(
            f"{i:>4} {fmt_rate(s['rate']):>10} {fmt_rate(s['achieved_rate']):>10} "
            f"{fmt_ns(s['p99_ns']):>10}  {verdict}"
            + (f": {s['reason']}" if s.get("reason") else "")
            + "\n"
        )
    if peak is None:
        p("no sustainable rate found\n\n")
    else:
        p(f"sustainable peak: {fmt_rate(peak)} (the summary below is that step)\n\n")
