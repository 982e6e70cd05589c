"""What a price charges for a quantity: per-unit, graduated and volume tiers, transform_quantity.

Amounts are Decimal minor units while computing and rounded to whole cents once, per line
(half up), as Stripe does for `unit_amount_decimal` prices.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any


def _unit(amount: Any, decimal_text: Any) -> Decimal:
    if decimal_text not in (None, ""):
        return Decimal(str(decimal_text))
    return Decimal(int(amount or 0))


def billable_quantity(price: dict[str, Any], quantity: Decimal) -> Decimal:
    """Apply `transform_quantity` (e.g. bill per started block of 1000): divide, then round."""
    transform = price.get("transform_quantity")
    if not transform:
        return quantity
    divided = quantity / Decimal(int(transform["divide_by"]))
    rounding = ROUND_CEILING if transform["round"] == "up" else ROUND_FLOOR
    return divided.to_integral_value(rounding=rounding)


def exact_amount(price: dict[str, Any], quantity: Decimal) -> Decimal:
    """Unrounded amount in minor units for `quantity` of `price`."""
    qty = billable_quantity(price, quantity)
    if price.get("billing_scheme") != "tiered":
        return qty * _unit(price.get("unit_amount"), price.get("unit_amount_decimal"))
    tiers = price.get("_tiers") or price.get("tiers") or []
    if price.get("tiers_mode") == "volume":
        for tier in tiers:
            if tier["up_to"] is None or qty <= tier["up_to"]:
                return qty * _unit(tier["unit_amount"], tier["unit_amount_decimal"]) + _unit(
                    tier["flat_amount"], tier["flat_amount_decimal"]
                )
        return Decimal(0)
    total = Decimal(0)
    lower = Decimal(0)
    for tier in tiers:
        upper = None if tier["up_to"] is None else Decimal(tier["up_to"])
        in_tier = (qty if upper is None else min(qty, upper)) - lower
        if in_tier <= 0:
            break
        total += in_tier * _unit(tier["unit_amount"], tier["unit_amount_decimal"])
        total += _unit(tier["flat_amount"], tier["flat_amount_decimal"])
        if upper is None:
            break
        lower = upper
    return total


def amount(price: dict[str, Any], quantity: Decimal | int) -> int:
    """The line amount in whole minor units."""
    exact = exact_amount(price, Decimal(quantity))
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def describe_money(minor: int | Decimal, currency: str) -> str:
    value = (Decimal(minor) / 100).quantize(Decimal("0.01"))
    return f"${value}" if currency == "usd" else f"{value} {currency.upper()}"
