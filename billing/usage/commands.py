"""`python -m billing usage push [--dry-run] [--as-of ISO]`: the usage push from a terminal."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def _as_of(text: str) -> int:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an ISO 8601 time such as 2025-06-01T02:00:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def _cmd_push(args: argparse.Namespace) -> int:
    # Lazily: billing.cli imports this module, and the SDKs load only when a push runs.
    from billing import bootstrap  # noqa: PLC0415
    from billing.cli import CliError  # noqa: PLC0415
    from billing.usage.runner import run_in_process  # noqa: PLC0415

    as_of = args.as_of if args.as_of is not None else int(datetime.now(UTC).timestamp())
    try:
        push = bootstrap.services().new_usage_push(args.file)
    except (ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from None
    summary = run_in_process(push, as_of, dry_run=args.dry_run)
    when = datetime.fromtimestamp(as_of, UTC).isoformat()
    if args.dry_run:
        print(f"Dry run as of {when}: these meter events would be sent (nothing was sent or recorded).")
        for e in summary.planned:
            stamp = datetime.fromtimestamp(e.timestamp, UTC).isoformat()
            print(
                f"  {e.subscription_id:<32} {e.event_name:<28} {e.customer_id:<24} value {e.value:>10,}  at {stamp}"
                f"  id {e.identifier}"
            )
        print(
            f"{len(summary.planned)} events, {sum(e.value for e in summary.planned):,} calls; "
            f"subscriptions seen {summary.subscriptions_seen}, skipped {summary.skipped}"
        )
        return 0
    print(f"Usage push as of {when}: {summary.line()}")
    for failure in summary.failures:
        print(f"  failed: {failure}")
    return 1 if summary.failed else 0


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], models_file: argparse.ArgumentParser
) -> None:
    """Add this area's subcommands to `commands`; `models_file` is the parent parser giving --file."""
    usage = commands.add_parser("usage", help="usage metering (APIM reports -> Stripe meter events)")
    actions = usage.add_subparsers(dest="usage_command", required=True, metavar="ACTION")
    push = actions.add_parser("push", parents=[models_file], help="report unreported usage to Stripe now")
    push.add_argument("--dry-run", action="store_true", help="print the events that would be sent; send nothing")
    push.add_argument(
        "--as-of",
        type=_as_of,
        default=None,
        metavar="ISO",
        help="push as if it were this time (default: now); reports are read to it minus the lag",
    )
    push.set_defaults(handler=_cmd_push)
