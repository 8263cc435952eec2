"""The ``lltrade`` command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from lltrade.argtypes import listen_port, port, positive_int, seconds
from lltrade.client import (
    Book,
    Client,
    ClientError,
    ConnectError,
    ConversionError,
    Execution,
    LogonError,
    RejectedError,
    Stream,
    UnknownSymbolError,
    describe_reason,
    from_qty,
    from_ticks,
    to_qty,
    to_ticks,
)
from lltrade.config import DEMO_SECRETS, hash_secret
from lltrade.enums import STP, TIF, Reason, Side
from lltrade.protocol import Fill, SymbolInfo

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9000
DEFAULT_ACCOUNT: Final = "alice"
"""The demo account used when neither ``--account`` nor ``LLTRADE_ACCOUNT`` names one."""

_REDRAW_INTERVAL: Final = 0.1  # seconds between two redraws of `lltrade book`


class UsageError(Exception):
    """A mistake in the command's arguments: one line on stderr, exit status 2."""


class CommandError(Exception):
    """The command could not be carried out: one line on stderr, exit status 1."""


# -- arguments ------------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--host", default=DEFAULT_HOST, help=f"the daemon's address (default {DEFAULT_HOST})"
    )
    group.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help=f"the daemon's order-entry port (default {DEFAULT_PORT})",
    )
    group.add_argument(
        "--account",
        help=f"account name (default: $LLTRADE_ACCOUNT, else the demo account {DEFAULT_ACCOUNT})",
    )
    group.add_argument(
        "--secret",
        help="the account's secret (default: $LLTRADE_SECRET, else the demo account's public "
        "secret); prefer the variable, command lines are visible to other users; a secret "
        "that begins with '-' goes as --secret=SECRET",
    )
    group.add_argument(
        "--timeout",
        type=seconds(),
        default=5.0,
        metavar="SECONDS",
        help="time allowed for connecting and logging on (default 5)",
    )
    return parent


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lltrade", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="run a short order-book demo and print what it did")

    run = commands.add_parser(
        "run",
        help="run the trading daemon (embedded demo config unless --config is given)",
        description="Run the trading daemon in the foreground until SIGTERM or SIGINT. "
        "Flags override the configuration file.",
    )
    run.add_argument("--config", metavar="FILE", help="TOML configuration (docs/daemon.md)")
    run.add_argument("--host", help="listen address (server.host)")
    run.add_argument(
        "--port", type=listen_port, help="order-entry port, 0 = any free one (server.port)"
    )
    run.add_argument("--cpu", type=int, help="pin the daemon to this CPU (process.cpu)")
    run.add_argument("--journal-dir", metavar="DIR", help="journal directory (journal.dir)")
    run.add_argument(
        "--telemetry-name",
        metavar="NAME",
        help="shared-memory file under /dev/shm (telemetry.shm_name)",
    )
    run.add_argument(
        "--durability",
        choices=("none", "batch", "interval"),
        help="journal durability policy (journal.durability)",
    )
    run.add_argument(
        "--journal-mmap",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append through a memory map of the segment, or with one write(2) per batch "
        "(journal.mmap)",
    )
    run.add_argument(
        "--allow-snapshot-fallback",
        action="store_true",
        help="if the newest snapshot is damaged, start from an older one and replay more "
        "journal instead of refusing to start (journal.snapshot_fallback)",
    )
    run.add_argument(
        "--no-journal",
        action="store_true",
        help="run without a journal: nothing survives a restart (benchmarks only)",
    )
    run.add_argument(
        "--busy-poll",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="never sleep in the event loop: lowest latency, 100%% of a core (process.busy_poll)",
    )
    run.add_argument(
        "--mlockall",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lock all memory (process.mlockall)",
    )
    run.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop implementation (default uvloop)",
    )
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(handler=_run_daemon)

    connection = _connection_options()

    order = commands.add_parser(
        "order",
        parents=[connection],
        help="enter a limit order and print its acknowledgement and fills",
        description="Enter a limit order, e.g. `lltrade order buy DEMO 10 @ 100.25`, and print "
        "the daemon's answer and the order's fills.  Prices and quantities are decimals, "
        "converted exactly to the symbol's grid (an off-grid value is refused, never rounded).  "
        "Each lltrade command is a session of its own: when it ends, the daemon cancels the "
        "session's resting orders if the account cancels on disconnect (the demo traders "
        "do); --wait keeps the session, and so the order, open until the order is done.",
    )
    order.add_argument("side", type=str.lower, choices=("buy", "sell"), help="buy or sell")
    order.add_argument("symbol", help="symbol name, e.g. DEMO")
    order.add_argument(
        "terms", nargs="+", metavar="QTY @ PRICE", help="quantity and limit price, e.g. 10 @ 100.25"
    )
    tif = order.add_mutually_exclusive_group()
    tif.add_argument(
        "--ioc", action="store_true", help="immediate or cancel: fill what can be, cancel the rest"
    )
    tif.add_argument(
        "--fok", action="store_true", help="fill or kill: fill completely now or not at all"
    )
    order.add_argument(
        "--post-only", action="store_true", help="only rest, never take (rejected if it crosses)"
    )
    order.add_argument(
        "--stp",
        choices=[m.name.lower().replace("_", "-") for m in STP],
        default="none",
        help="self-trade prevention mode (default none)",
    )
    order.add_argument("--cl-ord-id", type=positive_int, help="client order id (default 1)")
    order.add_argument(
        "--wait",
        action="store_true",
        help="stay connected and print fills until the order is filled or cancelled (Ctrl-C "
        "ends the session)",
    )
    order.set_defaults(handler=_order)

    cancel = commands.add_parser(
        "cancel",
        parents=[connection],
        help="cancel resting orders (--all: every order of the account)",
        description="Cancel resting orders.  The daemon scopes a cl_ord_id to the session that "
        "entered the order, and every lltrade command is a session of its own, so `lltrade "
        "cancel SYMBOL CL_ORD_ID` only reaches orders of its own session: an order entered by "
        "another command or program is not found (UNKNOWN_ORDER).  Use `lltrade cancel "
        "[SYMBOL] --all` to cancel every resting order of the account, from all of its "
        "sessions, in SYMBOL or in every symbol.",
    )
    cancel.add_argument("symbol", nargs="?", help="symbol name (with --all: optional)")
    cancel.add_argument(
        "cl_ord_id",
        nargs="?",
        type=positive_int,
        help="client order id of an order of this same session (see above)",
    )
    cancel.add_argument(
        "--all", action="store_true", help="mass cancel: every resting order of the account"
    )
    cancel.add_argument(
        "--target-account",
        type=positive_int,
        metavar="ID",
        help="with --all: mass cancel another account by id (admin accounts only)",
    )
    cancel.set_defaults(handler=_cancel)

    book = commands.add_parser(
        "book",
        parents=[connection],
        help="show a symbol's depth, live",
        description="Show a symbol's price levels, redrawn as the book changes (Ctrl-C stops).",
    )
    book.add_argument("symbol", help="symbol name, e.g. DEMO")
    book.add_argument(
        "--levels",
        type=positive_int,
        default=10,
        metavar="N",
        help="price levels per side (default 10)",
    )
    book.add_argument("--once", action="store_true", help="print one snapshot and exit")
    book.set_defaults(handler=_book, interrupted=0)

    secret = commands.add_parser(
        "hash-secret",
        help="hash an account secret for the config's secret_hash",
        description="Read a secret (from standard input, or a prompt on a terminal) and print "
        "its scrypt hash, the value of an account's `secret_hash` in the config.",
    )
    secret.set_defaults(handler=_hash_secret)

    _add_journal_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lltrade`` command line.

    Parameters
    ----------
    argv
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when the command failed (daemon not
        running, logon refused, order rejected, ...), 2 for a usage mistake.
        A mistake is reported as one line on stderr, never a traceback.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lltrade.demo import run_demo

        return run_demo(sys.stdout)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except UsageError as exc:
        return _error(str(exc), 2)
    except (ConversionError, UnknownSymbolError) as exc:
        return _error(str(exc), 2)
    except (CommandError, ClientError) as exc:
        return _error(str(exc), 1)
    except KeyboardInterrupt:
        code: int = getattr(args, "interrupted", 130)
        return code


def _run_daemon(args: argparse.Namespace) -> int:
    import msgspec

    from lltrade.config import ConfigError, load_config
    from lltrade.daemon import run_daemon
    from lltrade.journal import JournalError
    from lltrade.logs import setup_logging
    from lltrade.runtime import SetupError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read config {args.config}: {exc.strerror}") from None
    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    process = {
        k: v
        for k, v in (("cpu", args.cpu), ("busy_poll", args.busy_poll), ("mlockall", args.mlockall))
        if v is not None
    }
    journal: dict[str, Any] = {
        k: v for k, v in (("dir", args.journal_dir), ("durability", args.durability)) if v
    }
    if args.journal_mmap is not None:
        journal["mmap"] = args.journal_mmap
    if args.no_journal:
        journal["enabled"] = False
    if args.allow_snapshot_fallback:
        journal["snapshot_fallback"] = True
    try:
        config = msgspec.structs.replace(
            config,
            server=msgspec.structs.replace(config.server, **server),
            process=msgspec.structs.replace(config.process, **process),
            journal=msgspec.structs.replace(config.journal, **journal),
            telemetry=msgspec.structs.replace(
                config.telemetry,
                **({"shm_name": args.telemetry_name} if args.telemetry_name else {}),
            ),
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad command-line override: {exc}") from None
    setup_logging(args.log_level)
    try:
        return run_daemon(config, use_uvloop=args.loop == "uvloop")
    except (SetupError, JournalError) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot start the daemon: {exc}") from None


def _error(message: str, code: int) -> int:
    print(f"lltrade: {message}", file=sys.stderr, flush=True)
    return code


def _run(command: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(command)


def _out(line: str = "") -> None:
    print(line, flush=True)


# -- connecting --------------------------------------------------------------------------------


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    account: str = args.account or os.environ.get("LLTRADE_ACCOUNT") or DEFAULT_ACCOUNT
    secret: str | None = args.secret
    if secret is None:
        secret = os.environ.get("LLTRADE_SECRET")
    if secret is None:
        secret = DEMO_SECRETS.get(account)
    if secret is None:
        raise UsageError(f"no secret for account {account!r}: pass --secret or set LLTRADE_SECRET")
    return account, secret


async def _connect(args: argparse.Namespace) -> Client:
    account, secret = _credentials(args)
    where = f"{args.host}:{args.port}"
    try:
        return await Client.connect(
            args.host, args.port, account, secret, timeout=args.timeout, buffer_executions=True
        )
    except ConnectError as exc:
        if isinstance(exc.cause, ConnectionRefusedError):
            raise CommandError(
                f"cannot connect to {where}: is the daemon running? (`make run`)"
            ) from None
        raise CommandError(str(exc)) from None
    except LogonError as exc:
        raise CommandError(
            f"logon as {account!r} refused: {describe_reason(exc.reason, exc.text)}"
        ) from None


# -- order ---------------------------------------------------------------------------------------


def _qty_and_price(terms: Sequence[str]) -> tuple[str, str]:
    qty, at, price = " ".join(terms).partition("@")
    qty, price = qty.strip(), price.strip()
    if not at or not qty or not price or " " in qty or " " in price or "@" in price:
        raise UsageError(
            f"expected QTY @ PRICE, got {' '.join(terms)!r} "
            "(e.g. `lltrade order buy DEMO 10 @ 100.25`)"
        )
    return qty, price


class _OrderState:
    """What the command knows about its one order."""

    def __init__(self, info: SymbolInfo, cl_ord_id: int, qty: int, wait: bool) -> None:
        self.info = info
        self.wait = wait
        self.cl_ord_id = cl_ord_id
        self.open = qty
        self.ended = False

    def show(self, report: Execution) -> None:
        if report.cl_ord_id != self.cl_ord_id:
            return
        info = self.info
        price = from_ticks(info, report.price)
        if isinstance(report, Fill):
            role = "maker" if report.maker else "taker"
            _out(
                f"fill: {from_qty(info, report.qty)} @ {price} ({role}, exec_id "
                f"{report.exec_id}), {from_qty(info, report.leaves_qty)} left"
            )
            self.open = report.leaves_qty
            self.ended = report.leaves_qty == 0
        else:
            hint = ""
            if report.reason == Reason.DISCONNECT and not self.wait:
                hint = " (use --wait to keep the order working while the command runs)"
            _out(
                f"cancelled: {from_qty(info, report.cancelled_qty)} @ {price} "
                f"({describe_reason(report.reason)}){hint}"
            )
            self.open = 0
            self.ended = True

    def show_all(self, reports: Stream[Execution]) -> None:
        for report in reports.drain():
            self.show(report)


def _order(args: argparse.Namespace) -> int:
    qty_text, price_text = _qty_and_price(args.terms)
    return _run(_order_session(args, qty_text, price_text))


async def _order_session(args: argparse.Namespace, qty_text: str, price_text: str) -> int:
    side = Side.BUY if args.side == "buy" else Side.SELL
    tif = TIF.IOC if args.ioc else TIF.FOK if args.fok else TIF.GTC
    stp = STP[args.stp.upper().replace("-", "_")]
    async with await _connect(args) as client:
        info = client.symbols[args.symbol]
        price = to_ticks(info, price_text)
        qty = to_qty(info, qty_text)
        if qty <= 0:
            raise UsageError(f"quantity must be positive, got {qty_text}")
        reports = client.executions()
        try:
            ack = await client.new_order(
                info,
                side,
                price,
                qty,
                tif=tif,
                post_only=args.post_only,
                stp=stp,
                cl_ord_id=args.cl_ord_id,
            )
        except RejectedError as exc:
            raise CommandError(f"order rejected: {describe_reason(exc.reason, exc.text)}") from None
        _out(
            f"accepted: {side.name.lower()} {from_qty(info, ack.qty)} {info.name} @ "
            f"{from_ticks(info, ack.price)} {tif.name} (cl_ord_id {ack.cl_ord_id}, "
            f"order_id {ack.order_id})"
        )
        order = _OrderState(info, ack.cl_ord_id, ack.qty, args.wait)
        await client.sync()  # every fill the order met on arrival is in now
        order.show_all(reports)
        if not order.ended and args.wait:
            _out(f"resting: {from_qty(info, order.open)} open; waiting (Ctrl-C to stop)")
            try:
                async for report in reports:
                    order.show(report)
                    if order.ended:
                        break
            except asyncio.CancelledError:  # Ctrl-C: log out, show what that did
                await client.close()
                order.show_all(reports)
                raise
        if not order.ended:
            await client.close()  # may cancel the order (cancel on disconnect)
            order.show_all(reports)
            if not order.ended:
                _out(
                    f"resting: {from_qty(info, order.open)} open (order_id {ack.order_id}); "
                    "the account keeps its orders after the session"
                )
    return 0


# -- cancel --------------------------------------------------------------------------------------


def _cancel(args: argparse.Namespace) -> int:
    if args.all:
        if args.cl_ord_id is not None:
            raise UsageError("give either --all or a CL_ORD_ID, not both")
    else:
        if args.symbol is None or args.cl_ord_id is None:
            raise UsageError(
                "expected SYMBOL CL_ORD_ID, or --all (see `lltrade cancel --help` for why a "
                "single order can only be cancelled from its own session)"
            )
        if args.target_account is not None:
            raise UsageError("--target-account only goes with --all")
    return _run(_cancel_session(args))


async def _cancel_session(args: argparse.Namespace) -> int:
    async with await _connect(args) as client:
        info = client.symbols[args.symbol] if args.symbol is not None else None
        where = f"in {info.name}" if info is not None else "in every symbol"
        if args.all:
            account = args.target_account or 0
            try:
                await client.mass_cancel(info, account=account)
            except RejectedError as exc:
                raise CommandError(
                    f"mass cancel rejected: {describe_reason(exc.reason, exc.text)}"
                ) from None
            whose = f"account {account}" if account else f"account {client.account!r}"
            _out(f"mass cancel done: every resting order of {whose} {where} is cancelled")
            return 0
        try:
            report = await client.cancel(args.cl_ord_id)
        except RejectedError as exc:
            message = f"cancel rejected: {describe_reason(exc.reason, exc.text)}"
            if exc.reason == Reason.UNKNOWN_ORDER:
                message += (
                    f"; a cl_ord_id belongs to the session that entered the order, so use "
                    f"`lltrade cancel {args.symbol} --all` to cancel the account's orders"
                )
            raise CommandError(message) from None
        assert info is not None
        _out(
            f"cancelled: {from_qty(info, report.cancelled_qty)} @ "
            f"{from_ticks(info, report.price)} (cl_ord_id {report.cl_ord_id})"
        )
    return 0


# -- book ----------------------------------------------------------------------------------------


def render_book(book: Book, levels: int) -> str:
    """The book as text: asks above bids, best prices in the middle.

    Parameters
    ----------
    book
        A subscribed symbol's :class:`lltrade.client.Book`.
    levels
        Price levels shown per side.

    Returns
    -------
    str
        Several lines, no trailing newline.
    """
    info = book.info
    bids, asks = book.top(levels)

    def price(p: int) -> str:
        return str(from_ticks(info, p))

    def qty(q: int) -> str:
        return str(from_qty(info, q))

    head = [info.name + ("  HALTED" if info.halted else "")]
    best_bid, best_ask = book.best_bid, book.best_ask
    if best_bid is not None and best_ask is not None:
        spread = from_ticks(info, best_ask[0] - best_bid[0])
        head.append(f"bid {price(best_bid[0])}  ask {price(best_ask[0])}  spread {spread}")
    if book.last_trade is not None:
        trade = book.last_trade
        head.append(f"last {qty(trade.qty)} @ {price(trade.price)}")
    rows = [("", price(p), qty(q)) for p, q in reversed(asks)]
    rows += [(qty(q), price(p), "") for p, q in bids]
    header = ("bid qty", "price", "ask qty")
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["   ".join(head)]
    lines.append(f"{header[0]:>{width[0]}}  {header[1]:>{width[1]}}  {header[2]}")
    lines += [f"{b:>{width[0]}}  {p:>{width[1]}}  {a}".rstrip() for b, p, a in rows]
    if not rows:
        lines.append("(no orders)")
    return "\n".join(lines)


def _book(args: argparse.Namespace) -> int:
    return _run(_book_session(args))


async def _book_session(args: argparse.Namespace) -> int:
    async with await _connect(args) as client:
        info = client.symbols[args.symbol]
        sub = await client.subscribe(info)
        book = client.book(info)
        if args.once:
            _out(render_book(book, args.levels))
            return 0
        sub.drain()  # the snapshot: already in the book
        tty = sys.stdout.isatty()
        loop = asyncio.get_running_loop()

        def draw() -> None:
            text = render_book(book, args.levels)
            _out(f"\x1b[H\x1b[2J{text}" if tty else f"{text}\n")

        draw()
        last = loop.time()
        async for _msg in sub:
            wait = last + _REDRAW_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # coalesce bursts into one redraw
            sub.drain()  # the book already holds them
            draw()
            last = loop.time()
    return 0


# -- hash-secret -------------------------------------------------------------------------------


def _hash_secret(args: argparse.Namespace) -> int:
    stdin = sys.stdin
    if stdin is not None and stdin.isatty():
        secret = getpass.getpass("secret: ")
        if getpass.getpass("again: ") != secret:
            raise UsageError("the two secrets differ")
    elif stdin is not None:
        secret = stdin.read()
        if secret.endswith("\n"):
            secret = secret[:-1]
            if secret.endswith("\r"):
                secret = secret[:-1]
    else:
        raise UsageError("no standard input to read the secret from")
    if not secret:
        raise UsageError("empty secret")
    if "\n" in secret:
        raise UsageError("the secret must be one line")
    if len(secret) > 256:
        raise UsageError(f"the secret is {len(secret)} characters; the protocol allows 256")
    _out(hash_secret(secret))
    return 0


# == journal ==================================================================================
# `lltrade journal inspect|verify|replay|export DIR`: offline tools over a journal directory
# (src/lltrade/journal.py, docs/journal.md).  They never modify the journal unless told to
# (`verify --repair`).


def _add_journal_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    journal = commands.add_parser(
        "journal",
        help="inspect, verify, replay or export a journal directory",
        description="Offline tools over the write-ahead journal (docs/journal.md).  They only "
        "read: a torn tail is reported, not cut off (except by `verify --repair`).",
    )
    journal.set_defaults(handler=_journal_usage, journal_parser=journal)
    actions = journal.add_subparsers(dest="journal_command", metavar="ACTION")

    inspect = actions.add_parser(
        "inspect",
        help="segments, sequence range, records per type, snapshots",
        description="List the journal's segments and snapshots, its sequence range and its "
        "records per type (reading every record, so checksums are verified too).",
    )
    inspect.add_argument("dir", metavar="DIR", help="the journal directory")
    inspect.set_defaults(handler=_journal_tool(_journal_inspect))

    verify = actions.add_parser(
        "verify",
        help="check every checksum and the sequence; exit 1 on damage",
        description="Check every record's checksums and sequence number and every "
        "snapshot's checksum.  Exit status 0 if the journal is sound (a torn tail, left by a "
        "crash mid-write, is reported and is sound: recovery cuts it off), 1 if not.",
    )
    verify.add_argument("dir", metavar="DIR", help="the journal directory")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="cut off a torn tail now, as recovery would (the daemon must not be running)",
    )
    verify.set_defaults(handler=_journal_tool(_journal_verify))

    replay = actions.add_parser(
        "replay",
        help="rebuild the books offline; print state hashes and best prices",
        description="Rebuild the engine's state as the daemon's recovery does (newest valid "
        "snapshot, then the journal after it) and print, per symbol, the state hash, the "
        "number of resting orders and the best bid and ask.",
    )
    replay.add_argument("dir", metavar="DIR", help="the journal directory")
    replay.add_argument(
        "--config", metavar="FILE", help="the daemon's TOML configuration (default: the demo one)"
    )
    replay.add_argument(
        "--no-snapshot",
        action="store_true",
        help="ignore snapshots and replay the whole journal from record 1",
    )
    replay.add_argument(
        "--allow-snapshot-fallback",
        action="store_true",
        help="if the newest snapshot is damaged, use the one before it",
    )
    replay.set_defaults(handler=_journal_tool(_journal_replay))

    export = actions.add_parser(
        "export",
        help="write the records as JSON lines",
        description="Write one JSON object per record (commands decoded to objects with the "
        "fields of lltrade.COMMAND_DTYPE), for downstream systems.",
    )
    export.add_argument("dir", metavar="DIR", help="the journal directory")
    export.add_argument("--output", "-o", metavar="FILE", help="write here (default stdout)")
    export.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="SEQ",
        help="only the records after this sequence number",
    )
    export.set_defaults(handler=_journal_tool(_journal_export))


def _journal_tool(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Run a journal tool with the journal's warnings (a torn tail, a snapshot fallback)
    shown on stderr as ``lltrade: warning: ...`` lines."""
    import functools
    import logging

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        logger = logging.getLogger("lltrade.journal")
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.WARNING)
        stream.setFormatter(logging.Formatter("lltrade: warning: %(message)s"))
        logger.addHandler(stream)
        try:
            return handler(args)
        finally:
            logger.removeHandler(stream)

    return run


def _journal_usage(args: argparse.Namespace) -> int:
    args.journal_parser.print_usage(sys.stderr)
    return _error("journal: expected an action: inspect, verify, replay or export", 2)


def _journal_dir(args: argparse.Namespace) -> str:
    path: str = args.dir
    if not os.path.isdir(path):
        raise UsageError(f"{path}: no such directory")
    return path


def _utc(ns: int) -> str:
    import datetime as dt

    when = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _type_name(rtype: int) -> str:
    from lltrade.journal import RecordType

    try:
        return RecordType(rtype).name
    except ValueError:
        return f"type {rtype}"


def _journal_inspect(args: argparse.Namespace) -> int:
    from lltrade.journal import JournalError, JournalReader, list_snapshots, read_snapshot

    path = _journal_dir(args)
    try:
        summary = JournalReader(path, repair=False).summary()
    except JournalError as exc:
        raise CommandError(str(exc)) from None
    span = (
        f"records {summary.first_seq}..{summary.last_seq}"
        if summary.first_seq is not None
        else "no records"
    )
    _out(
        f"journal {path}: {len(summary.segments)} segments, {summary.records:,} records "
        f"({span}), {summary.commands:,} commands, {summary.bytes:,} bytes"
    )
    if summary.segments:
        _out(f"  {'segment':<34} {'first seq':>12} {'records':>10} {'bytes':>14}  created (UTC)")
        for seg in summary.segments:
            created = _utc(seg.created_ns) if seg.created_ns else "-"
            _out(
                f"  {seg.path.name:<34} {seg.first_seq:>12} {seg.records:>10,} "
                f"{seg.bytes:>14,}  {created}"
            )
    if summary.by_type:
        counts = ", ".join(f"{_type_name(t)} {n:,}" for t, n in sorted(summary.by_type.items()))
        _out(f"records by type: {counts}")
    snapshots = list_snapshots(path)
    if not snapshots:
        _out("snapshots: none")
    for seq, snap_path in snapshots:
        try:
            snap = read_snapshot(snap_path)
            state = f"ok, {len(snap.state):,} bytes of state, created {_utc(snap.created_ns)}"
        except JournalError as exc:
            state = f"DAMAGED: {getattr(exc, 'what', exc)}"
        _out(f"snapshot {snap_path.name}: covers records 1..{seq}, {state}")
    if summary.truncated_tail is not None:
        tail, offset = summary.truncated_tail
        _out(f"torn tail: {tail} at offset {offset} (recovery will cut it off)")
    return 0


def _journal_verify(args: argparse.Namespace) -> int:
    from lltrade.journal import JournalError, JournalReader, list_snapshots, read_snapshot

    path = _journal_dir(args)
    try:
        summary = JournalReader(path, repair=args.repair).summary()
        for _, snap_path in list_snapshots(path):
            read_snapshot(snap_path)
    except JournalError as exc:
        raise CommandError(str(exc)) from None
    span = (
        f"records {summary.first_seq}..{summary.last_seq}"
        if summary.first_seq is not None
        else "no records"
    )
    _out(
        f"ok: {summary.records:,} records ({span}), {summary.commands:,} commands in "
        f"{len(summary.segments)} segments; checksums and sequence verified"
    )
    if summary.truncated_tail is not None:
        tail, offset = summary.truncated_tail
        done = "cut off" if args.repair else "recovery will cut it off"
        _out(f"torn tail: {tail} at offset {offset} ({done})")
    return 0


def _journal_replay(args: argparse.Namespace) -> int:
    from decimal import Decimal

    from lltrade.config import ConfigError, load_config
    from lltrade.journal import JournalError, recover

    path = _journal_dir(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    engine = config.new_engine()
    try:
        result = recover(
            engine,
            path,
            use_snapshot=not args.no_snapshot,
            allow_fallback=args.allow_snapshot_fallback,
            repair=False,
        )
    except JournalError as exc:
        raise CommandError(str(exc)) from None
    rate = result.commands / result.seconds if result.seconds > 0 else 0.0
    start = (
        f"snapshot {result.snapshot.name} (records 1..{result.snapshot_seq}) + "
        if result.snapshot is not None
        else ""
    )
    _out(
        f"replayed {start}{result.records:,} records, {result.commands:,} commands in "
        f"{result.seconds:.3f} s ({rate:,.0f} commands/s); state as of record {result.last_seq}"
    )

    def price(s: Any, side: tuple[int, int] | None) -> str:
        if side is None:
            return "-"
        p = Decimal(side[0]).scaleb(-s.price_decimals)
        q = Decimal(side[1]).scaleb(-s.qty_decimals)
        return f"{q} @ {p}"

    rows = [("symbol", "id", "orders", "state hash", "best bid", "best ask")]
    for s in config.symbols:
        book = engine.book(s.id)
        rows.append(
            (
                s.name,
                str(s.id),
                str(len(book)),
                f"{book.state_hash():#018x}",
                price(s, book.best_bid()),
                price(s, book.best_ask()),
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        _out("  ".join(f"{c:<{w}}" for c, w in zip(r, width, strict=True)).rstrip())
    if result.truncated_tail is not None:
        tail, offset = result.truncated_tail
        _out(f"torn tail: {tail} at offset {offset} (not replayed; recovery will cut it off)")
    return 0


def _journal_export(args: argparse.Namespace) -> int:
    import msgspec

    from lltrade import COMMAND_DTYPE
    from lltrade.journal import COMMAND_TYPES, JournalError, JournalReader, RecordType

    path = _journal_dir(args)
    if args.after < 0:
        raise UsageError(f"--after must be >= 0, got {args.after}")
    names = COMMAND_DTYPE.names
    assert names is not None
    encode = msgspec.json.Encoder().encode
    try:
        out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        for record in JournalReader(path, repair=False).records(args.after):
            item: dict[str, Any] = {"seq": record.seq}
            if record.type in COMMAND_TYPES:
                rows = record.commands()
                item["type"] = "commands"
                item["recv_ns"] = record.recv_ns
                item["commands"] = [dict(zip(names, row, strict=True)) for row in rows.tolist()]
            elif record.type == RecordType.SESSION:
                item["type"] = "session"
                item["event"] = record.session()
            elif record.type == RecordType.SNAPSHOT_MARK:
                covered, created, name = record.snapshot_mark()
                item.update(
                    type="snapshot_mark", covered_seq=covered, created_ns=created, snapshot=name
                )
            else:
                item.update(type=record.type, flags=record.flags, payload_hex=record.payload.hex())
            out.write(encode(item))
            out.write(b"\n")
        out.flush()
    except JournalError as exc:
        raise CommandError(str(exc)) from None
    except BrokenPipeError:  # `lltrade journal export DIR | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
