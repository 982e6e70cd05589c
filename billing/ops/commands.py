"""CLI commands of this area, registered into `python -m billing` by billing.cli: `retention`, `status`."""

from __future__ import annotations

import argparse
import time

from billing import config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of rows (e.g. 5000)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the limit must be at least 1 row, got {value}")
    return value


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], models_file: argparse.ArgumentParser
) -> None:
    """Add this area's subcommands to `commands` (`models_file` is unused here)."""
    cmd = commands.add_parser("retention", help="delete rows past their use (what the daily retention timer does)")
    cmd.add_argument("--dry-run", action="store_true", help="count the rows that would be deleted, delete none")
    cmd.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="ROWS",
        help="at most this many rows per table (default 5000)",
    )
    cmd.set_defaults(handler=_cmd_retention)
    status = commands.add_parser("status", help="what an operator checks first: usage, queues, invoices, drift")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=_cmd_status)


def _cmd_retention(args: argparse.Namespace) -> int:
    # Imported here: billing.cli imports this module, and the adapters pull in SDKs other commands skip.
    from billing.adapters.storage import table  # noqa: PLC0415
    from billing.cli import CliError  # noqa: PLC0415
    from billing.store.retention import DEFAULT_LIMIT, purge_all  # noqa: PLC0415

    if "AzureWebJobsStorage" in config.missing_settings():
        raise CliError("set AzureWebJobsStorage (see local.settings.sample.json) to purge the app's tables")
    results = purge_all(table, int(time.time()), args.limit or DEFAULT_LIMIT, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for result in results:
        print(f"{result.table:<16} {verb} {result.deleted}" + ("  (more left: run again)" if result.more else ""))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from billing.ops.readers import status_readers  # noqa: PLC0415 - the adapters load every SDK
    from billing.ops.status import collect  # noqa: PLC0415

    status = collect(status_readers(), int(time.time()), config.missing_settings())
    print(status.to_json() if args.json else status.render())
    return EXIT_FAILED if status.attention() else EXIT_OK
