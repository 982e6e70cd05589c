"""The command line: `python -m billing <command>`.

Exit codes: 0 success, 1 the operation failed (e.g. a service refused), 2 bad input (unknown
product, bad models file, bad arguments) with a message that says what would be valid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from billing.access.commands import register as register_access
from billing.catalog.commands import register as register_catalog
from billing.model_loader import ModelsFileError, load_models, render_json_schema
from billing.models import MonetizationModels, UnknownProductError
from billing.ops.commands import register as register_ops
from billing.policy import ALL_TIERS, DEFAULT_TIER, product_policy_xml
from billing.pricing import format_minor, quote
from billing.usage.commands import register as register_usage

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """Bad input from the person at the terminal; printed without a traceback, exit code 2."""


Handler = Callable[[argparse.Namespace], int]


def _non_negative_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of calls (e.g. 1100)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"calls must be 0 or more, got {value}")
    return value


def _models(args: argparse.Namespace) -> MonetizationModels:
    return load_models(args.file)


def _cmd_models_validate(args: argparse.Namespace) -> int:
    models = _models(args)
    header = (
        f"{'id':<12} {'model':<16} {'flat fee':>12} {'included':>10} {'usage price':>22} {'quota':>14} {'rate/min':>9}"
    )
    print(header)
    print("-" * len(header))
    for p in models.products:
        flat = format_minor(p.flat_fee_minor, p.currency, p.currency_exponent)
        usage = f"{p.usage_price.amount} / {p.usage_price.per_calls:,}" if p.usage_price else "-"
        quota = f"{p.quota.calls:,}/{p.quota.period}" if p.quota else "-"
        rate = f"{p.rate_limit.calls_per_minute:,}" if p.rate_limit else "-"
        model = p.pricing_model.value
        print(f"{p.id:<12} {model:<16} {flat:>12} {p.included_calls:>10,} {usage:>22} {quota:>14} {rate:>9}")
    print(f"\n{len(models.products)} products, valid.")
    return EXIT_OK


def _cmd_models_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(render_json_schema())
    return EXIT_OK


def _cmd_quote(args: argparse.Namespace) -> int:
    product = _models(args).product(args.product)
    result = quote(product, args.calls)
    if args.json:
        payload = {
            "product": result.product_id,
            "calls": result.calls,
            "currency": result.currency,
            "total": result.total,
            "lines": [
                {
                    "kind": line.kind.value,
                    "description": line.description,
                    "quantity": line.quantity,
                    "amount": line.amount,
                }
                for line in result.lines
            ],
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    exp = product.currency_exponent
    print(f"{product.display_name} ({product.id}), {result.calls:,} billable calls in one period:")
    for line in result.lines:
        print(f"  {line.description:<90} {format_minor(line.amount, result.currency, exp):>16}")
    print(f"  {'Total':<90} {format_minor(result.total, result.currency, exp):>16}")
    return EXIT_OK


def _cmd_policy(args: argparse.Namespace) -> int:
    sys.stdout.write(product_policy_xml(_models(args).product(args.product), args.tier))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m billing", description=__doc__.splitlines()[0])
    models_file = argparse.ArgumentParser(add_help=False)
    models_file.add_argument(
        "--file", type=Path, default=None, help="models file (default: payment/monetizationModels.json)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="inspect the revenue model file")
    models_cmds = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    validate = models_cmds.add_parser("validate", parents=[models_file], help="validate and list the products")
    validate.set_defaults(handler=_cmd_models_validate)
    schema = models_cmds.add_parser("schema", help="print the JSON Schema generated from the models")
    schema.set_defaults(handler=_cmd_models_schema)

    quote_cmd = commands.add_parser("quote", parents=[models_file], help="price CALLS billable calls in one period")
    quote_cmd.add_argument("product", metavar="PRODUCT", help="product id, e.g. standard")
    quote_cmd.add_argument("calls", metavar="CALLS", type=_non_negative_int, help="billable calls in the period")
    quote_cmd.add_argument("--json", action="store_true", help="print one JSON object (amounts in minor units)")
    quote_cmd.set_defaults(handler=_cmd_quote)

    policy = commands.add_parser("policy", parents=[models_file], help="print the product's APIM policy XML")
    policy.add_argument("product", metavar="PRODUCT")
    policy.add_argument(
        "--tier",
        choices=sorted(ALL_TIERS),
        default=DEFAULT_TIER,
        help=f"the API Management tier (SKU) the policy is for (default {DEFAULT_TIER})",
    )
    policy.set_defaults(handler=_cmd_policy)

    # Each area owns its commands (billing/<area>/commands.py).
    for register in (register_catalog, register_usage, register_access, register_ops):
        register(commands, models_file)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ModelsFileError as exc:
        print(exc.report(), file=sys.stderr)
    except (UnknownProductError, CliError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
    return EXIT_USAGE
