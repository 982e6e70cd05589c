"""How a product's price is described to a consumer, from the revenue model and pricing engine. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from billing.models import Product
from billing.pricing import Quote, format_minor, quote

# Stripe sends `customer.subscription.trial_will_end` "three days before a subscription's trial period is
# scheduled to end" (its event types), and the app mails the consumer then (billing.access.trials).
REMINDER_DAYS = 3


@dataclass(frozen=True)
class PriceDescription:
    headline: str  # e.g. "USD 89.95 a month"
    details: tuple[str, ...]  # included calls, usage price, limits
    example: str | None  # a worked example from the pricing engine


def money(product: Product, minor: int) -> str:
    return format_minor(minor, product.currency, product.currency_exponent)


def describe(product: Product, trial_days: int | None = None) -> PriceDescription:
    """The product's price; with `trial_days`, as the consumer's free trial and what follows it."""
    details: list[str] = []
    if not product.is_paid:
        headline = "Free: no payment method needed"
    elif trial_days:
        then = (
            f"{money(product, product.flat_fee_minor)} a month"
            if product.flat_fee_minor
            else "pay only for what you use"
        )
        headline = f"{days_text(trial_days)} free, then {then}"
        reminder = "; you get an e-mail three days before it ends" if trial_days > REMINDER_DAYS else ""
        details.append(
            f"Free for {days_text(trial_days)}: calls during the trial are not billed. Checkout asks "
            "for a card now; nothing is charged before the trial ends, nor at all if you cancel before"
            f"{reminder}."
        )
    elif product.flat_fee_minor:
        headline = f"{money(product, product.flat_fee_minor)} a month"
    else:
        headline = "No monthly fee: pay only for what you use"
    if product.included_calls:
        details.append(f"Includes {product.included_calls:,} calls each month.")
    price = product.usage_price
    if price is not None:
        then = "Then " if product.included_calls else ""
        if product.block_size is not None:
            details.append(
                f"{then}{product.currency.upper()} {price.amount} for each started block of "
                f"{product.block_size:,} calls."
            )
        else:
            details.append(f"{then}{product.currency.upper()} {price.amount} per {price.per_calls:,} calls.")
    if product.quota is not None:
        details.append(f"Up to {product.quota.calls:,} calls per {product.quota.period}; calls beyond are refused.")
    if product.rate_limit is not None:
        details.append(f"Up to {product.rate_limit.calls_per_minute:,} calls a minute.")
    if product.spending_limit_minor is not None:
        details.append(
            f"When a month's usage reaches {money(product, product.spending_limit_minor)}, it is invoiced "
            "at once; if that invoice is not paid, the key stops working until it is."
        )
    return PriceDescription(headline, tuple(details), _example(product))


def _example(product: Product) -> str | None:
    if not product.is_metered:
        return None
    calls = product.included_calls + (product.block_size or 10_000) * 5
    q = quote(product, calls)
    return f"Example: {calls:,} calls in a month cost {money(product, q.total)}."


def days_text(days: int) -> str:
    return f"{days} day{'s' if days != 1 else ''}"


def quote_lines(product: Product, q: Quote) -> list[tuple[str, str]]:
    """(description, amount) rows of a quote, for a page."""
    rows = [(line.description, money(product, line.amount)) for line in q.lines]
    if not rows:  # a free product has no invoice lines
        rows.append((f"{product.display_name}: free", money(product, 0)))
    return rows
