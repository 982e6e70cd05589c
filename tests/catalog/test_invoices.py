"""Stripe's invoices equal the pricing engine's quotes, for every paid product and a grid of volumes.

Each case: a customer on its own test clock subscribes to the product's catalog prices (directly
through the SDK, as checkout would), the period's billable calls beyond the included ones are sent
as meter events inside the period (as the usage push does, split over two reports), the clock
moves past the period end (+2 h, so the renewal invoice finalises), and the renewal invoice is read.

The renewal invoice carries the finished period's usage plus the NEXT period's flat fee in advance.
For these products the flat fee is the same every period, so "usage + this period's flat fee"
equals the renewal invoice's total; the test checks both the lines and the total.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from billing import catalog_names as names
from billing.adapters.catalog_stripe import StripeCatalog
from billing.adapters.stripe_client import stripe_client
from billing.catalog.service import CatalogSync
from billing.model_loader import load_models
from billing.models import Product
from billing.pricing import billable_overage, quote
from billing.usage.ratelimit import TokenBucket
from emulators.stripe.server import StripeEmulator

T0 = int(datetime(2026, 1, 15, tzinfo=UTC).timestamp())
PERIOD_END = int(datetime(2026, 2, 15, tzinfo=UTC).timestamp())  # one calendar month later
MID_PERIOD = T0 + 10 * 86_400
HOUR = 3_600

# shared/design/revenue-model.md, "Reference checks": usage + flat fee for the period, in cents.
REFERENCE_CENTS = {
    ("developer", 100): 0,
    ("developer", 1_100): 200,
    ("payg", 10_000): 1_500,
    ("basic", 50_000): 1_495,
    ("standard", 100_000): 8_995,
    ("standard", 200_000): 18_995,
    ("pro", 600_000): 50_995,
    ("enterprise", 1): 74_995,
    ("enterprise", 3_000_001): 224_985,
}

# Reference volumes plus boundaries: zero, around the included calls, rounding of fractional
# cents (payg 10 calls = 1.5 cents, rounded half up once on the line), block edges.
GRID = {
    "developer": [0, 100, 101, 103, 1_100, 1_150],
    "payg": [0, 1, 3, 4, 10, 10_000, 123_457],
    "basic": [0, 50_000],
    "standard": [0, 99_999, 100_000, 100_001, 100_005, 200_000],
    "pro": [500_000, 500_001, 600_000, 1_234_567],
    "enterprise": [1, 1_500_000, 1_500_001, 3_000_000, 3_000_001],
}
CASES = [(pid, calls) for pid, volumes in GRID.items() for calls in volumes]


@dataclass
class Billing:
    client: stripe.StripeClient
    prices: dict[str, dict[str, Any]]  # lookup key -> price


@pytest.fixture(scope="module")
def billing_stack() -> Iterator[Billing]:
    """One emulator for all cases, with the catalog applied once (each case has its own clock)."""
    with StripeEmulator() as emulator:
        env = emulator.app_settings()
        sync = CatalogSync(load_models(), StripeCatalog(stripe_client(env), TokenBucket(1000)), None)
        sync.apply(sync.plan())
        client = emulator.client()
        prices = {p.lookup_key: p.to_dict() for p in client.v1.prices.list({"active": True, "limit": 100})}
        yield Billing(client, prices)


def _subscribe(b: Billing, product: Product) -> tuple[str, str]:
    clock = b.client.v1.test_helpers.test_clocks.create({"frozen_time": T0, "name": f"{product.id}"})
    customer = b.client.v1.customers.create(
        {
            "test_clock": clock.id,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    keys = [names.flat_price_lookup_key(product.id), names.usage_price_lookup_key(product.id)]
    items: list[stripe.params.SubscriptionCreateParamsItem] = [
        {"price": b.prices[key]["id"]} for key in keys if key in b.prices
    ]
    sub = b.client.v1.subscriptions.create({"customer": customer.id, "items": items})
    return clock.id, sub.id


def _advance(b: Billing, clock_id: str, to: int) -> None:
    b.client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": to})
    deadline = datetime.now(UTC).timestamp() + 10
    while b.client.v1.test_helpers.test_clocks.retrieve(clock_id).status != "ready":  # Stripe advances async
        assert datetime.now(UTC).timestamp() < deadline, "the test clock did not become ready"


def _report_usage(b: Billing, product: Product, customer: str, overage: int) -> None:
    """Two reports inside the period, as two usage pushes would send them."""
    first = overage // 3
    for n, (value, at) in enumerate(((first, MID_PERIOD - HOUR), (overage - first, MID_PERIOD - 60))):
        if value:
            b.client.v1.billing.meter_events.create(
                {
                    "event_name": names.meter_event_name(product.id),
                    "timestamp": at,
                    "identifier": f"{customer}-{n}",
                    "payload": {names.METER_CUSTOMER_KEY: customer, names.METER_VALUE_KEY: str(value)},
                }
            )


def _line_price(line: dict[str, Any]) -> str:
    return str(((line.get("pricing") or {}).get("price_details") or {}).get("price"))


@pytest.mark.parametrize(("product_id", "calls"), CASES, ids=[f"{p}-{c}" for p, c in CASES])
def test_renewal_invoice_equals_the_quote(billing_stack: Billing, product_id: str, calls: int) -> None:
    b, product = billing_stack, load_models().product(product_id)
    clock, sub_id = _subscribe(b, product)
    customer = str(b.client.v1.subscriptions.retrieve(sub_id).customer)
    _advance(b, clock, MID_PERIOD)
    if product.is_metered:
        _report_usage(b, product, customer, billable_overage(product, calls))
    _advance(b, clock, PERIOD_END + 2 * HOUR)

    invoices = [i.to_dict() for i in b.client.v1.invoices.list({"subscription": sub_id, "limit": 10})]
    first = next(i for i in invoices if i["billing_reason"] == "subscription_create")
    renewal = next(i for i in invoices if i["billing_reason"] == "subscription_cycle")
    assert renewal["status"] in ("open", "paid")  # finalised
    assert first["total"] == product.flat_fee_minor  # the flat fee in advance (0 for metered only)

    flat_key = names.flat_price_lookup_key(product.id)
    flat_id = b.prices[flat_key]["id"] if flat_key in b.prices else None
    lines = renewal["lines"]["data"]
    usage = sum(line["amount"] for line in lines if _line_price(line) != flat_id)
    next_flat = sum(line["amount"] for line in lines if _line_price(line) == flat_id)
    expected = quote(product, calls).total
    assert next_flat == product.flat_fee_minor
    assert usage + product.flat_fee_minor == expected
    assert renewal["total"] == expected  # same flat fee every period
    if (product_id, calls) in REFERENCE_CENTS:
        assert expected == REFERENCE_CENTS[(product_id, calls)]
