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


# ---- plan changes within a period -----------------------------------------------------------------
# A plan change splits a billing period [start, end) into parts, one per product. Stripe prorates a
# flat fee by time ("credit for the unused time" of what was debited, a charge for "the remaining
# time" of the new price: docs.stripe.com/billing/subscriptions/prorations), rounding each proration
# line to the minor unit. The usage of each part is billed at its product's price, and a part that
# covers less than the whole period gets the same share of the product's included calls as of its
# fee: upgrading late in a period cannot buy a month's included calls for a day's fee, and the product
# left early cannot give a month's included calls for the hour's fee Stripe keeps of it.


def _remaining(amount: int, period_start: int, period_end: int, at: int) -> int:
    """`amount` for the time from `at` to the period end, rounded half up (Stripe's proration line)."""
    if period_end <= period_start:
        raise ValueError(f"the period must end after it starts, got [{period_start}, {period_end})")
    at = min(max(at, period_start), period_end)
    return round_half_up(Fraction(amount * (period_end - at), period_end - period_start))


def prorated_fee(product: Product, period_start: int, period_end: int, since: int, until: int) -> int:
    """What the flat fee of `product` costs for the part [since, until) of the period: the full fee
    debited at the start less the credit for the unused time, or the charge for the remaining time
    less its own later credit. The parts of a period add up to the whole fee for every split."""
    fee = product.flat_fee_minor
    return _remaining(fee, period_start, period_end, since) - _remaining(fee, period_start, period_end, until)


def included_calls_for_part(
    product: Product, period_start: int, period_end: int, since: int, until: int | None = None
) -> int:
    """Included calls of the part [since, until) of the period (`until` None: to the period end): all of
    them for the whole period, else the share of the period the part covers (rounded down), as for the
    fee. An upgrade's old product keeps the share of [its start, the change), the new one of [the change, end)."""
    since = max(since, period_start)
    until = period_end if until is None else min(until, period_end)
    if since <= period_start and until >= period_end:
        return product.included_calls
    if until <= since:
        return 0
    return product.included_calls * (until - since) // (period_end - period_start)


def part_product(product: Product, period_start: int, period_end: int, since: int, until: int | None = None) -> Product:
    """The product as billed for the part [since, until) of the period (its included calls prorated)."""
    included = included_calls_for_part(product, period_start, period_end, since, until)
    if included == product.included_calls:
        return product
    return product.model_copy(update={"included_calls": included})


def part_quote(product: Product, calls: int, period_start: int, period_end: int, *, since: int, until: int) -> Quote:
    """The invoice lines of `calls` billable calls made on `product` during [since, until) of the period:
    its fee and its included calls both prorated to the share of the period the part covers."""
    billed = part_product(product, period_start, period_end, since, until)
    full = quote(billed, calls)
    lines = tuple(
        QuoteLine(
            line.kind, line.description, line.quantity, prorated_fee(product, period_start, period_end, since, until)
        )
        if line.kind is LineKind.FLAT_FEE
        else line
        for line in full.lines
    )
    return Quote(product.id, calls, product.currency, lines)


def change_price_key(product: Product) -> tuple[int, Fraction]:
    """How products are ordered for a plan change: the monthly fee, then the price of a call beyond the
    included ones (a block's price over its size). A higher key is an upgrade."""
    price = product.usage_price
    per_call = Fraction(0)
    if price is not None:
        per_call = price.minor_per_call(product.currency_exponent)
        if product.block_size is not None:
            per_call = Fraction(price.amount) * 10**product.currency_exponent / product.block_size
    return product.flat_fee_minor, per_call


def is_upgrade(current: Product, target: Product) -> bool:
    return change_price_key(target) > change_price_key(current)
