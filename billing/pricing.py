"""The pricing engine: what a product costs for a number of billable calls in one period.

Pure and exact: integer minor units and exact fractions, one rounding per invoice line (half up,
to the currency's minor unit), never per call or per report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from billing.models import Product


class LineKind(StrEnum):
    FLAT_FEE = "flat_fee"
    USAGE = "usage"


@dataclass(frozen=True)
class QuoteLine:
    kind: LineKind
    description: str
    quantity: int  # calls (usage beyond the included calls) or blocks; 1 for a flat fee
    amount: int  # minor units


@dataclass(frozen=True)
class Quote:
    product_id: str
    calls: int
    currency: str
    lines: tuple[QuoteLine, ...]

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


def billable_overage(product: Product, calls: int) -> int:
    """Calls beyond the product's included calls: what the usage line (and Stripe meter) bills."""
    return max(0, calls - product.included_calls)


def usage_amount(product: Product, overage_calls: int) -> tuple[int, int]:
    """(quantity, amount in minor units) of the usage line for `overage_calls` calls beyond the included.

    Block products bill each started block; others bill per call, rounded once for the line.
    """
    price = product.usage_price
    if price is None:
        return 0, 0
    if product.block_size is not None:
        blocks = -(-overage_calls // product.block_size)  # ceiling division on integers
        block_minor = price.amount * (Decimal(10) ** product.currency_exponent)
        return blocks, int(block_minor) * blocks
    exact = overage_calls * price.minor_per_call(product.currency_exponent)
    return overage_calls, round_half_up(exact)


def round_half_up(value: Fraction) -> int:
    """Nearest integer, halves away from zero (values here are never negative)."""
    return math.floor(value + Fraction(1, 2))


def quote(product: Product, calls: int) -> Quote:
    """The invoice lines of one period with `calls` billable calls: flat fee, then usage."""
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
        raise ValueError(f"calls must be a whole number >= 0, got {calls!r}")
    lines: list[QuoteLine] = []
    if product.flat_fee_minor > 0:
        lines.append(QuoteLine(LineKind.FLAT_FEE, flat_fee_description(product), 1, product.flat_fee_minor))
    if product.is_metered:
        overage = billable_overage(product, calls)
        quantity, amount = usage_amount(product, overage)
        lines.append(QuoteLine(LineKind.USAGE, usage_description(product, overage), quantity, amount))
    return Quote(product.id, calls, product.currency, tuple(lines))


def flat_fee_description(product: Product) -> str:
    if product.block_size is not None:
        return f"{product.display_name}: first block of {product.block_size:,} calls"
    if product.included_calls:
        return f"{product.display_name}: monthly fee including {product.included_calls:,} calls"
    return f"{product.display_name}: monthly fee"


def usage_description(product: Product, overage_calls: int) -> str:
    price = product.usage_price
    assert price is not None  # only called for metered products
    beyond = f" beyond the {product.included_calls:,} included" if product.included_calls else ""
    if product.block_size is not None:
        return (
            f"{product.display_name}: {overage_calls:,} calls{beyond}, "
            f"in started blocks of {product.block_size:,} at {price.amount} {product.currency.upper()}"
        )
    return (
        f"{product.display_name}: {overage_calls:,} calls{beyond} "
        f"at {price.amount} {product.currency.upper()} per {price.per_calls:,}"
    )


def format_minor(amount: int, currency: str, exponent: int) -> str:
    """`1495, 'usd', 2` -> 'USD 14.95' (for people; machines get minor units)."""
    value = Decimal(amount).scaleb(-exponent)
    return f"{currency.upper()} {value:,.{exponent}f}"
