"""The ``lltrade`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lltrade", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="run a short order-book demo and print what it did")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lltrade.demo import run_demo

        return run_demo(sys.stdout)
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
