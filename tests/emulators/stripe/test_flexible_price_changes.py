"""Flexible billing mode (the default): changing, removing and adding metered prices mid-period.

Sources (see the emulator's README):
- docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup, "Update prices mid-cycle":
  "With billing_mode=flexible subscriptions, we create an invoice item that bills for previously
  reported metered usage when you remove a metered price from a subscription ... The
  proration_behavior you specify when removing a metered price affects these metered invoice
  items. If you want to remove a metered price without billing for it, set proration_behavior to none."
- docs.stripe.com/billing/subscriptions/billing-mode/compare: "Flexible billing mode bills for usage
  based on the price at the time you report it. If a metered item's price changes during a
  period, only usage reported after the price change is billed at the new price."; "Flexible
  billing mode generates an invoice item for unbilled usage when you remove a metered subscription item."
- changelog 2025-09-30.clover: "Subscriptions you create through the API now default to flexible billing mode."
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import stripe

from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer

FEB_1 = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())
DAY = 86400
HOUR = 3600
CARD = {"cardNumber": "4242424242424242", "cardExpiry": "12 / 34", "cardCvc": "123"}


def _metered(client: Any, meter: Any, cents: int, name: str = "API") -> Any:
    product = client.v1.products.create(params={"name": name})
    return client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": cents,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )


def _flat(client: Any, cents: int) -> Any:
    product = client.v1.products.create(params={"name": "Plan"})
    return client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": cents, "recurring": {"interval": "month"}}
    )


def _report(client: Any, customer: Any, when: int, calls: int) -> None:
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "timestamp": when,
            "payload": {"stripe_customer_id": customer.id, "value": str(calls)},
        }
    )


def _advance(client: Any, clock: Any, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": to})


def _invoices(client: Any, sub: Any) -> list[Any]:
    return list(reversed(client.v1.invoices.list(params={"subscription": sub.id, "limit": 100}).data))


def _renewal(client: Any, sub: Any) -> Any:
    (cycle,) = [i for i in _invoices(client, sub) if i.billing_reason == "subscription_cycle"]
    return cycle


@pytest.fixture
def swapped(request: pytest.FixtureRequest, client: Any, meter: Any) -> tuple[Any, Any, Any]:
    """100 calls at price A (2 cents), A -> B (3 cents) on January 11, then 50 calls; the renewal is paid."""
    behavior: str | None = request.param
    a, b = _metered(client, meter, 2), _metered(client, meter, 3)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": a.id}]})
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    _report(client, customer, JAN_1_2026 + 5 * DAY, 100)
    params: dict[str, Any] = {"items": [{"id": sub["items"].data[0].id, "price": b.id}]}
    if behavior is not None:
        params["proration_behavior"] = behavior
    client.v1.subscriptions.update(sub.id, params=params)
    _advance(client, clock, JAN_1_2026 + 20 * DAY)
    _report(client, customer, JAN_1_2026 + 15 * DAY, 50)
    _advance(client, clock, FEB_1 + 2 * HOUR)
    return sub, a, b


def test_subscriptions_default_to_flexible_billing_mode(client: Any, meter: Any) -> None:
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": _metered(client, meter, 2).id}]}
    )
    assert sub.billing_mode.type == "flexible"
    assert sub.billing_mode.updated_at == JAN_1_2026
    with pytest.raises(stripe.InvalidRequestError) as classic:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "billing_mode": {"type": "classic"},
                "items": [{"price": _flat(client, 100).id}],
            }
        )
    assert classic.value.param == "billing_mode[type]"
    assert clock.id


def test_checkout_subscriptions_are_flexible_too(client: Any) -> None:
    flat = _flat(client, 1495)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": flat.id, "quantity": 1}],
            "customer_email": "a@example.com",
            "success_url": "http://127.0.0.1:9/ok",
        }
    )
    requests.post(session.url, data=CARD, timeout=10, allow_redirects=False)
    sub = client.v1.subscriptions.retrieve(client.v1.checkout.sessions.retrieve(session.id).subscription)
    assert sub.billing_mode.type == "flexible"


@pytest.mark.parametrize("swapped", ["none"], indirect=True)
def test_none_drops_the_usage_of_the_replaced_metered_price(client: Any, swapped: tuple[Any, Any, Any]) -> None:
    sub, _, b = swapped
    renewal = _renewal(client, sub)
    assert [(line.pricing.price_details.price, line.quantity, line.amount) for line in renewal.lines.data] == [
        (b.id, 50, 150)
    ]  # the 100 calls at A are never invoiced
    assert (renewal.status, renewal.amount_paid) == ("paid", 150)
    assert renewal.lines.data[0].period.start == JAN_1_2026 + 10 * DAY  # B bills from the change


@pytest.mark.parametrize("swapped", [None, "create_prorations"], indirect=True)
def test_create_prorations_puts_the_usage_on_the_next_invoice(client: Any, swapped: tuple[Any, Any, Any]) -> None:
    sub, a, _ = swapped
    lines = _renewal(client, sub).lines.data
    usage_a = next(line for line in lines if line.pricing.price_details.price == a.id)
    assert (usage_a.quantity, usage_a.amount) == (100, 200)
    assert (usage_a.period.start, usage_a.period.end) == (JAN_1_2026, JAN_1_2026 + 10 * DAY)
    assert usage_a.parent.subscription_item_details.proration is True
    assert sum(line.amount for line in lines) == 200 + 150
    assert [i.billing_reason for i in _invoices(client, sub)] == ["subscription_create", "subscription_cycle"]


@pytest.mark.parametrize("swapped", ["always_invoice"], indirect=True)
def test_always_invoice_bills_the_usage_at_once(client: Any, swapped: tuple[Any, Any, Any]) -> None:
    sub, a, _ = swapped
    invoices = _invoices(client, sub)
    assert [i.billing_reason for i in invoices] == ["subscription_create", "subscription_update", "subscription_cycle"]
    update = invoices[1]
    assert (update.created, update.status, update.amount_paid) == (JAN_1_2026 + 10 * DAY, "paid", 200)
    assert [line.pricing.price_details.price for line in update.lines.data] == [a.id]
    assert invoices[2].amount_paid == 150  # then B's usage only


def test_usage_reported_after_the_change_is_billed_at_the_new_price(client: Any, meter: Any) -> None:
    """The new price bills by report time: a late event stamped before the change counts at B."""
    a, b = _metered(client, meter, 2), _metered(client, meter, 3)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": a.id}]})
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    _report(client, customer, JAN_1_2026 + 5 * DAY, 100)
    client.v1.subscription_items.update(sub["items"].data[0].id, params={"price": b.id, "proration_behavior": "none"})
    _report(client, customer, JAN_1_2026 + 6 * DAY, 30)  # reported after the change
    _advance(client, clock, FEB_1 + 2 * HOUR)
    assert _renewal(client, sub).amount_paid == 30 * 3


def test_removing_a_metered_item_bills_its_unbilled_usage(client: Any, meter: Any) -> None:
    flat, a = _flat(client, 1000), _metered(client, meter, 2)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": flat.id}, {"price": a.id}]}
    )
    metered_item = next(x for x in sub["items"].data if x.price.id == a.id)
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    _report(client, customer, JAN_1_2026 + 5 * DAY, 100)
    client.v1.subscriptions.update(sub.id, params={"items": [{"id": metered_item.id, "deleted": True}]})
    _report(client, customer, JAN_1_2026 + 10 * DAY, 500)  # no metered price any more: not billed
    _advance(client, clock, FEB_1 + 2 * HOUR)
    renewal = _renewal(client, sub)
    assert sorted(line.amount for line in renewal.lines.data) == [200, 1000]
    assert renewal.amount_paid == 1200


def test_removing_it_with_none_bills_nothing(client: Any, meter: Any) -> None:
    flat, a = _flat(client, 1000), _metered(client, meter, 2)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": flat.id}, {"price": a.id}]}
    )
    metered_item = next(x for x in sub["items"].data if x.price.id == a.id)
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    _report(client, customer, JAN_1_2026 + 5 * DAY, 100)
    client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": metered_item.id, "deleted": True}], "proration_behavior": "none"}
    )
    _advance(client, clock, FEB_1 + 2 * HOUR)
    assert _renewal(client, sub).amount_paid == 1000


def test_a_metered_item_added_mid_period_bills_usage_reported_from_then(client: Any, meter: Any) -> None:
    flat, a = _flat(client, 1000), _metered(client, meter, 2)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": flat.id}]})
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    _report(client, customer, JAN_1_2026 + 5 * DAY, 100)  # before the metered price was on the subscription
    client.v1.subscriptions.update(sub.id, params={"items": [{"price": a.id}]})
    _report(client, customer, JAN_1_2026 + 10 * DAY, 40)
    _advance(client, clock, FEB_1 + 2 * HOUR)
    renewal = _renewal(client, sub)
    assert sorted(line.amount for line in renewal.lines.data) == [80, 1000]


def test_threshold_invoices_are_not_billed_twice_by_the_change(client: Any, meter: Any) -> None:
    a, b = _metered(client, meter, 1), _metered(client, meter, 3)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": a.id}], "billing_thresholds": {"amount_gte": 1000}}
    )
    _advance(client, clock, JAN_1_2026 + 5 * DAY)
    _report(client, customer, JAN_1_2026 + 5 * DAY, 1500)  # a threshold invoice of 1500 at A
    _report(client, customer, JAN_1_2026 + 5 * DAY, 200)
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    client.v1.subscriptions.update(sub.id, params={"items": [{"id": sub["items"].data[0].id, "price": b.id}]})
    _report(client, customer, JAN_1_2026 + 10 * DAY, 100)
    _advance(client, clock, FEB_1 + 2 * HOUR)
    invoices = _invoices(client, sub)
    assert [i.billing_reason for i in invoices] == [
        "subscription_create",
        "subscription_threshold",
        "subscription_cycle",
    ]
    assert invoices[1].amount_paid == 1500
    # A's unbilled usage (1700 - 1500 already billed) and B's 100 calls at 3 cents
    assert invoices[2].amount_paid == 200 + 300


def test_credit_prorations_use_what_was_debited(client: Any) -> None:
    """ "Flexible billing mode calculates credit prorations based on the original amount previously
    debited to a customer": after an upgrade with proration_behavior=none the period was paid at the
    old price, so a later downgrade credits the old price's unused time, not the new one's."""
    basic, pro = _flat(client, 1000), _flat(client, 3000)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": basic.id}]})
    item = sub["items"].data[0].id
    client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item, "price": pro.id}], "proration_behavior": "none"}
    )
    _advance(client, clock, FEB_1 - 31 * DAY // 5)  # a fifth of January left
    updated = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": item, "price": basic.id}],
            "proration_behavior": "always_invoice",
            "expand": ["latest_invoice"],
        },
    )
    assert sorted(line.amount for line in updated.latest_invoice.lines.data) == [-200, 200]  # not -600 for pro
