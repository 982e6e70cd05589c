"""CLI commands of this area, registered into `python -m billing` by billing.cli: `reconcile`."""

from __future__ import annotations

import argparse

from billing import config
from billing.access.reconcile import reconcile

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], models_file: argparse.ArgumentParser
) -> None:
    """Add this area's subcommands to `commands`; `models_file` is the parent parser giving --file."""
    cmd = commands.add_parser(
        "reconcile", help="make every APIM subscription match its Stripe subscription, printing each change"
    )
    cmd.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    cmd.set_defaults(handler=_cmd_reconcile)


def _cmd_reconcile(args: argparse.Namespace) -> int:
    # Imported here: billing.cli imports this module, and the adapters pull in SDKs other commands skip.
    from billing.bootstrap import services  # noqa: PLC0415
    from billing.cli import CliError  # noqa: PLC0415

    needed = (
        "AzureWebJobsStorage",
        "STRIPE_API_KEY",
        "APIM_SUBSCRIPTION_ID",
        "APIM_RESOURCE_GROUP",
        "APIM_SERVICE_NAME",
    )
    missing = [name for name in config.missing_settings() if name in needed]
    if missing:
        raise CliError(f"set {', '.join(missing)} (see local.settings.sample.json) to reconcile")
    report = reconcile(services().access_ports(), dry_run=args.dry_run, out=print)
    verb = "would change" if args.dry_run else "changed"
    print(
        f"\n{verb} {len(report.changed)}, unchanged {report.unchanged}, skipped {len(report.ignored)}, "
        f"failed {len(report.failed)}"
    )
    return EXIT_FAILED if report.failed else EXIT_OK
