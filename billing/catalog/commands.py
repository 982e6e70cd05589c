"""CLI commands of this area, registered into `python -m billing` by billing.cli.

  catalog plan [--file F] [--stripe-only|--apim-only]   show what apply would change; change nothing
  catalog apply [--file F] [--stripe-only|--apim-only]  make Stripe and APIM match the models file
  catalog migrate-prices [--file F] [--apply]           move subscriptions off replaced prices (usage so far
                                                        reported and billed at the old price first)

Exit codes: 0 done, 1 a service failed (the message says which step; rerun apply to finish),
2 bad input or missing settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from billing import bootstrap, config
from billing.catalog.migrate import PriceMove
from billing.catalog.plan import Action, Service
from billing.catalog.render import NOTHING_TO_CHANGE, action_line, render_plan
from billing.catalog.service import CatalogSync
from billing.catalog.state import CatalogServiceError
from billing.model_loader import load_models

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], models_file: argparse.ArgumentParser
) -> None:
    """Add this area's subcommands to `commands`; `models_file` is the parent parser giving --file."""
    catalog = commands.add_parser("catalog", help="make Stripe and APIM match the models file")
    actions = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    scope = argparse.ArgumentParser(add_help=False)
    only = scope.add_mutually_exclusive_group()
    only.add_argument("--stripe-only", action="store_true", help="plan/apply Stripe only")
    only.add_argument("--apim-only", action="store_true", help="plan/apply API Management only")

    plan = actions.add_parser("plan", parents=[models_file, scope], help="show what apply would change")
    plan.set_defaults(handler=_cmd_plan)
    apply = actions.add_parser("apply", parents=[models_file, scope], help="make the changes, showing progress")
    apply.set_defaults(handler=_cmd_apply)
    migrate = actions.add_parser(
        "migrate-prices", parents=[models_file], help="move subscriptions on replaced prices to the current ones"
    )
    migrate.add_argument("--apply", action="store_true", help="make the moves (default: only show them)")
    migrate.set_defaults(handler=_cmd_migrate, stripe_only=True, apim_only=False)


def _services(args: argparse.Namespace) -> tuple[Service, ...]:
    if args.stripe_only:
        return (Service.STRIPE,)
    if args.apim_only:
        return (Service.APIM,)
    return (Service.STRIPE, Service.APIM)


def _sync(args: argparse.Namespace) -> CatalogSync:
    load_models(args.file)  # a bad models file is named before any setting is asked for
    services = _services(args)
    needed = (["STRIPE_API_KEY"] if Service.STRIPE in services else []) + (
        ["APIM_SUBSCRIPTION_ID", "APIM_RESOURCE_GROUP", "APIM_SERVICE_NAME", "AzureWebJobsStorage"]
        if Service.APIM in services
        else []
    )
    missing = [name for name in needed if not config.get(name)]
    if missing:
        _usage_error(f"settings not set: {', '.join(missing)} (see local.settings.sample.json)")
    from billing.catalog.wiring import catalog_sync  # noqa: PLC0415 - `quote` and `plan --help` load no SDK

    return catalog_sync(
        bootstrap.services(), args.file, stripe_side=Service.STRIPE in services, apim_side=Service.APIM in services
    )


def _report_usage_up_to(moved_at: int) -> Callable[[PriceMove], None]:
    """The usage area's closing report up to `moved_at`, so that every call before it bills at the old price."""

    def report(move: PriceMove) -> None:
        import time  # noqa: PLC0415

        from billing.usage.closing import report_closing_usage  # noqa: PLC0415 - loads the SDKs

        now = move.stripe_now or int(time.time())
        try:
            summary = report_closing_usage(
                move.subscription_id,
                move.period_start,
                move.period_end,
                bootstrap.services().usage_push(),
                now=now,
                until=moved_at,
            )
        except LookupError:
            # The app never recorded this subscription (made outside the portal): it reported no usage.
            print(f"  note: {move.subscription_id} has no subscription link; no usage reported before the move")
            return
        if summary.failed:
            raise CatalogServiceError(
                f"usage of {move.subscription_id} not reported before the move: {'; '.join(summary.failures)}"
            )

    return report


def _wait_for_usage_data() -> int:
    """Fix the move at now and wait the report lag, so that APIM's data has every call made before it.

    Nothing has changed yet while it waits: interrupted, the command can simply be run again. The
    move's instant is the end of the current second (the usage windows are in whole seconds).
    """
    import math  # noqa: PLC0415
    import time  # noqa: PLC0415

    from billing.usage.wiring import lag_seconds  # noqa: PLC0415

    moved_at = math.ceil(time.time())
    lag = lag_seconds()
    if lag:
        print(
            f"Calls made until now bill at the old prices. Waiting {lag} s (USAGE_REPORT_LAG_MINUTES) for API "
            "Management's usage data to catch up; nothing has changed yet if you stop here.",
            flush=True,
        )
        time.sleep(max(0.0, moved_at + lag - time.time()))
    return moved_at


def _usage_error(message: str) -> None:
    from billing.cli import CliError  # noqa: PLC0415 - lazily: billing.cli imports this module

    raise CliError(message)


def _failed(exc: CatalogServiceError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _cmd_plan(args: argparse.Namespace) -> int:
    sync = _sync(args)
    try:
        plan = sync.plan()
    except CatalogServiceError as exc:
        return _failed(exc)
    print(render_plan(plan, _services(args)))
    return EXIT_OK


def _progress(action: Action, result: str) -> None:
    suffix = f" ({result})" if result and result != action.target else ""
    print(f"  done {action_line(action)}{suffix}", flush=True)


def _cmd_apply(args: argparse.Namespace) -> int:
    sync = _sync(args)
    try:
        plan = sync.plan()
        print(render_plan(plan, _services(args)), flush=True)
        if plan.empty:
            return EXIT_OK
        print("Applying:", flush=True)
        done = sync.apply(plan, _progress)
    except CatalogServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("Nothing after the failed step was changed; run `catalog apply` again to finish.", file=sys.stderr)
        return EXIT_FAILED
    print(f"Applied {done} change(s). Running apply again now would find {NOTHING_TO_CHANGE}.")
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    sync = _sync(args)
    try:
        moves = sync.plan_price_moves()
        if not moves:
            print(f"No subscription is on a replaced price: {NOTHING_TO_CHANGE}.")
            return EXIT_OK
        for move in moves:
            print(move.line())
        if not args.apply:
            print(
                f"Plan: {len(moves)} subscription item(s) to move (usage so far billed at the old price, flat fees "
                "prorated). Run with --apply to move them."
            )
            return EXIT_OK
        sync.report_usage = _report_usage_up_to(_wait_for_usage_data())
        for move in moves:
            sync.move(move)
            print(f"  done {move.line()}", flush=True)
    except CatalogServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"Moved {len(moves)} subscription item(s): calls up to now are billed at the old prices, later ones "
        "at the current prices."
    )
    return EXIT_OK
