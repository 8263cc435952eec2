"""Turn a telemetry log (and load-generator results, pytest-benchmark JSON) into a report.

    python3 benchmark/plots.py TELEMETRY_LOG [MORE_INPUTS ...] [--output DIR] [--note TEXT]

Inputs are told apart by their content: the JSON-lines telemetry log
written by ``lltrade-telemetry --log`` (exactly one), results of
``benchmark/loadgen.py`` and pytest-benchmark JSON files (any number).  The
output folder receives PNG charts, ``report.md`` and a self-contained
``index.html`` that judge the run against the latency targets, pass, fail or
no data per target (docs/report.md).

A telemetry log whose last line was cut short, or with malformed lines, is
used for its valid lines, with a warning on stderr and in the report.
Nothing usable: one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report_inputs import InputError, read_inputs


def default_output() -> str:
    return os.path.join("results", time.strftime("report-%Y%m%d-%H%M%S"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="plots.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("telemetry_log", metavar="TELEMETRY_LOG", help="lltrade-telemetry --log file")
    p.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="*",
        help="load-generator results and pytest-benchmark JSON files",
    )
    p.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="folder for the charts, report.md and index.html (results/report-<timestamp>)",
    )
    p.add_argument(
        "--note",
        action="append",
        default=[],
        metavar="TEXT",
        help="a line about how the run was made, shown at the top of the report (repeatable)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        inputs = read_inputs([args.telemetry_log, *args.inputs])
    except InputError as exc:
        print(f"plots.py: {exc}", file=sys.stderr)
        return 2
    for warning in inputs.warnings:
        print(f"plots.py: warning: {warning}", file=sys.stderr)

    # matplotlib is imported only once there is something to draw.
    from report_build import write_report

    out_dir = args.output or default_output()
    try:
        report = write_report(inputs, out_dir, args.note)
    except OSError as exc:
        print(f"plots.py: cannot write the report to {out_dir}: {exc}", file=sys.stderr)
        return 2
    for line in report.summary_lines():
        print(line)
    print(f"report: {os.path.join(out_dir, 'index.html')} (and report.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
