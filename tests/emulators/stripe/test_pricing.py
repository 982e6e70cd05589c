"""Invoice amounts for Stripe's documented pricing examples, driven through the real SDK.

Sources (expected values are taken from, or worked out by hand from, these pages):
- Tiered pricing, Typographic example (tiers 1-5 at 7 USD, 6-10 at 6.50 USD, 11+ at 6 USD):
  https://docs.stripe.com/subscriptions/pricing-models/tiered-pricing
  Volume table on that page: 1 -> 7, 5 -> 35, 6 -> 39, 20 -> 120, 25 -> 150 USD.
  Graduated: "the quantity is multiplied by the amount for each tier and the totals for each
  tier are summed": 6 -> 5*7 + 1*6.5 = 41.50; 20 -> 35 + 32.50 + 10*6 = 127.50 USD.
- Transform quantities ("divide the reported usage by a specific number and round the result
  up or down"): https://docs.stripe.com/billing/subscriptions/usage-based/transform-quantities
- Per-seat / licensed: SqueakyCar charges 20 USD per car each month, quantity = cars:
  https://stripe.com/docs/billing/subscriptions/examples
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulators.stripe.conftest import clocked_customer

TYPOGRAPHIC_TIERS = [
    {"up_to": 5, "unit_amount": 700},
    {"up_to": 10, "unit_amount": 650},
    {"up_to": "inf", "unit_amount": 600},
]


def _first_invoice_amount(client: Any, price_id: str, quantity: int | None) -> int:
    _, customer = clocked_customer(client)
    item: dict[str, Any] = {"price": price_id}
    if quantity is not None:
        item["quantity"] = quantity
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [item], "expand": ["latest_invoice"]}
    )
    assert sub.status == "active"
    assert sub.latest_invoice.status == "paid"
    assert sub.latest_invoice.amount_paid == sub.latest_invoice.amount_due
    return int(sub.latest_invoice.amount_due)


@pytest.mark.parametrize(("quantity", "expected"), [(1, 700), (5, 3500), (6, 3900), (20, 12000), (25, 15000)])
def test_volume_tiers_match_stripe_docs_table(client: Any, product: Any, quantity: int, expected: int) -> None:
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": TYPOGRAPHIC_TIERS,
        }
    )
    assert _first_invoice_amount(client, price.id, quantity) == expected


@pytest.mark.parametrize(("quantity", "expected"), [(5, 3500), (6, 4150), (20, 12750)])
def test_graduated_tiers_sum_each_tier(client: Any, product: Any, quantity: int, expected: int) -> None:
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": TYPOGRAPHIC_TIERS,
        }
    )
    assert _first_invoice_amount(client, price.id, quantity) == expected


@pytest.mark.parametrize(
    ("rounding", "quantity", "expected"), [("up", 61, 2 * 500), ("down", 61, 1 * 500), ("up", 60, 1 * 500)]
)
def test_package_pricing_divides_then_rounds(
    client: Any, product: Any, rounding: str, quantity: int, expected: int
) -> None:
    # 5 USD per started (or completed) hour when quantity counts minutes: divide by 60.
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
            "transform_quantity": {"divide_by": 60, "round": rounding},
        }
    )
    assert _first_invoice_amount(client, price.id, quantity) == expected


def test_licensed_per_seat_price(client: Any, product: Any) -> None:
    price = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 2000, "recurring": {"interval": "month"}}
    )
    assert _first_invoice_amount(client, price.id, 3) == 6000


def test_metered_graduated_usage_is_billed_at_period_end(client: Any, product: Any, meter: Any) -> None:
    """Usage of the finished period goes through the tiers on the renewal invoice."""
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": TYPOGRAPHIC_TIERS,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "expand": ["latest_invoice"]}
    )
    assert sub.latest_invoice.amount_due == 0  # a metered-only subscription starts with a $0 invoice
    assert sub.latest_invoice.status == "paid"
    start = clock.frozen_time
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + 10 * 86400})
    for n, value in enumerate(("12", "8")):  # 20 fonts in the period, reported in two events
        client.v1.billing.meter_events.create(
            params={
                "event_name": "api_calls",
                "timestamp": start + 3600 * (n + 1),
                "identifier": f"use-{n}",
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )
    period_end = sub["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": period_end + 2 * 3600})
    renewal = client.v1.invoices.list(params={"subscription": sub.id, "limit": 1}).data[0]
    assert renewal.billing_reason == "subscription_cycle"
    assert renewal.status == "paid"
    assert renewal.amount_paid == 12750
    (line,) = renewal.lines.data
    assert (line.period.start, line.period.end) == (start, period_end)
    assert line.quantity == 20


def test_metered_volume_usage(client: Any, product: Any, meter: Any) -> None:
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": TYPOGRAPHIC_TIERS,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "timestamp": clock.frozen_time,
            "payload": {"stripe_customer_id": customer.id, "value": "6"},
        }
    )
    period_end = sub["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": period_end + 2 * 3600})
    renewal = client.v1.invoices.list(params={"subscription": sub.id, "limit": 1}).data[0]
    assert renewal.amount_paid == 3900
