"""Free trials on Checkout-made subscriptions, as Stripe documents them (emulator README, "Free trials").

[TR] docs.stripe.com/billing/subscriptions/trials: "When creating a subscription with a trial period, no
payment method is required for the customer. An immediate invoice is still created, but for $0." "When
the trial ends, ... we generate an invoice and send an invoice.created event notification. Approximately
1 hour later, we attempt to charge that invoice. A new billing cycle also begins for the customer when the
trial ends." "During the trial period, any usage accrued doesn't count toward the total charged to the
customer at the end of the billing cycle." [EVT] customer.subscription.trial_will_end: "Occurs three days
before a subscription's trial period is scheduled to end".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import stripe

from emulators.stripe.server import StripeEmulator
from tests.emulators.stripe.conftest import JAN_1_2026

DAY, HOUR = 86400, 3600
TRIAL_END = JAN_1_2026 + 14 * DAY
CARD = {"cardExpiry": "12 / 34", "cardCvc": "123", "billingName": "Ada Dev"}


@pytest.fixture(autouse=True)
def _no_internal_errors(stripe_emulator: StripeEmulator) -> Iterator[None]:
    yield
    assert stripe_emulator.core.scheduler.errors == []


def _prices(client: Any, meter: Any) -> tuple[Any, Any]:
    product = client.v1.products.create(params={"name": "Basic"})
    flat = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 1495, "recurring": {"interval": "month"}}
    )
    usage = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.15",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return flat, usage


def _trial_checkout(client: Any, prices: list[Any], days: int = 14, card: str = "4242424242424242") -> tuple[Any, Any]:
    """(clock, completed session): a customer on a clock at JAN_1_2026 pays nothing on the hosted page."""
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": JAN_1_2026})
    customer = client.v1.customers.create(params={"email": "ada@example.com", "test_clock": clock.id})
    items = [
        {"price": p.id, "quantity": 1} if p.recurring.usage_type == "licensed" else {"price": p.id} for p in prices
    ]
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "line_items": items,
            "success_url": "http://127.0.0.1:9/done",
            "payment_method_collection": "always",
            "subscription_data": {
                "trial_period_days": days,
                "metadata": {"who": "ada"},
                "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            },
        }
    )
    page = requests.get(session.url, timeout=10).text
    assert f"{days}-day free trial" in page
    assert "Due today: <strong>$0.00</strong>" in page
    assert 'name="cardNumber"' in page  # payment_method_collection=always: a card although nothing is due
    done = requests.post(session.url, data={"cardNumber": card, **CARD}, timeout=10, allow_redirects=False)
    assert done.status_code == 303
    return clock, client.v1.checkout.sessions.retrieve(session.id)


def _advance(client: Any, clock: Any, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": to})


def _events(client: Any, kind: str) -> list[Any]:
    return list(client.v1.events.list(params={"limit": 100, "type": kind}).data)


def _report(client: Any, customer: str, calls: int, when: int) -> None:
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "timestamp": when,
            "payload": {"stripe_customer_id": customer, "value": str(calls)},
        }
    )


def test_checkout_starts_a_trial_with_a_zero_first_invoice_and_the_card_on_the_subscription(
    client: Any, meter: Any
) -> None:
    flat, usage = _prices(client, meter)
    _, session = _trial_checkout(client, [flat, usage])
    assert (session.status, session.payment_status, session.amount_total) == ("complete", "no_payment_required", 0)
    sub = client.v1.subscriptions.retrieve(session.subscription, params={"expand": ["latest_invoice"]})
    assert (sub.status, sub.trial_start, sub.trial_end) == ("trialing", JAN_1_2026, TRIAL_END)
    assert sub.trial_settings.end_behavior.missing_payment_method == "create_invoice"
    assert sub.default_payment_method  # collected although nothing was due
    assert sub["items"].data[0].current_period_end == TRIAL_END  # the trial is the first period
    first = sub.latest_invoice
    assert (first.billing_reason, first.status, first.total, first.amount_paid) == ("subscription_create", "paid", 0, 0)
    assert [(line.description, line.amount) for line in first.lines.data] == [("Trial period for Basic", 0)]


def test_trial_will_end_three_days_before_the_end_by_the_test_clock(client: Any, meter: Any) -> None:
    flat, _ = _prices(client, meter)
    clock, session = _trial_checkout(client, [flat])
    _advance(client, clock, TRIAL_END - 3 * DAY - 1)
    assert _events(client, "customer.subscription.trial_will_end") == []
    _advance(client, clock, TRIAL_END - 3 * DAY)
    (event,) = _events(client, "customer.subscription.trial_will_end")
    assert (event.created, event.data.object.id, event.data.object.status) == (
        TRIAL_END - 3 * DAY,
        session.subscription,
        "trialing",
    )
    _advance(client, clock, TRIAL_END + 2 * HOUR)
    assert len(_events(client, "customer.subscription.trial_will_end")) == 1  # once


def test_a_trial_of_three_days_or_less_warns_at_once(client: Any, meter: Any) -> None:
    flat, _ = _prices(client, meter)
    _, session = _trial_checkout(client, [flat], days=2)
    (event,) = _events(client, "customer.subscription.trial_will_end")
    assert (event.created, event.data.object.id) == (JAN_1_2026, session.subscription)


def test_the_trial_end_makes_it_active_and_charges_the_first_real_invoice_an_hour_later(
    client: Any, meter: Any
) -> None:
    flat, usage = _prices(client, meter)
    clock, session = _trial_checkout(client, [flat, usage])
    customer, sid = session.customer, session.subscription
    _advance(client, clock, JAN_1_2026 + 5 * DAY)
    _report(client, customer, 10_000, JAN_1_2026 + 5 * DAY)  # in the trial: never billed
    _advance(client, clock, TRIAL_END + 5 * 60)
    sub = client.v1.subscriptions.retrieve(sid, params={"expand": ["latest_invoice"]})
    draft = sub.latest_invoice
    assert sub.status == "active"
    assert (draft.status, draft.billing_reason, draft.period_start, draft.period_end) == (
        "draft",
        "subscription_cycle",
        JAN_1_2026,
        TRIAL_END,
    )
    assert draft.automatically_finalizes_at == TRIAL_END + HOUR
    updated = [e.to_dict()["data"] for e in _events(client, "customer.subscription.updated")]
    assert [d["object"]["status"] for d in updated if d.get("previous_attributes", {}).get("status") == "trialing"] == [
        "active"
    ]
    _advance(client, clock, TRIAL_END + 2 * HOUR)
    paid = client.v1.invoices.retrieve(draft.id)
    assert (paid.status, paid.amount_paid) == ("paid", 1495)  # the first month's fee, none of the trial's usage
    assert [line.amount for line in paid.lines.data] == [1495]
    _advance(client, clock, TRIAL_END + DAY)
    _report(client, customer, 2_000, TRIAL_END + DAY)  # after the trial: billed with the next renewal
    next_end = int(datetime(2026, 2, 15, tzinfo=UTC).timestamp())
    _advance(client, clock, next_end + 2 * HOUR)
    renewal = client.v1.subscriptions.retrieve(sid, params={"expand": ["latest_invoice"]}).latest_invoice
    assert renewal.amount_paid == 1495 + 300  # 2,000 calls at $0.15 per 100, and the next fee


def test_a_declined_charge_at_the_trial_end_makes_it_past_due(client: Any, meter: Any) -> None:
    flat, _ = _prices(client, meter)
    clock, session = _trial_checkout(client, [flat])
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": session.customer})
    client.v1.subscriptions.update(session.subscription, params={"default_payment_method": failing.id})
    _advance(client, clock, TRIAL_END + 2 * HOUR)
    sub = client.v1.subscriptions.retrieve(session.subscription, params={"expand": ["latest_invoice"]})
    assert sub.status == "past_due"
    assert (sub.latest_invoice.status, sub.latest_invoice.attempted, sub.latest_invoice.amount_remaining) == (
        "open",
        True,
        1495,
    )
    assert _events(client, "invoice.payment_failed")


def test_cancelling_in_the_trial_bills_none_of_its_usage(client: Any, meter: Any) -> None:
    flat, usage = _prices(client, meter)
    clock, session = _trial_checkout(client, [flat, usage])
    _advance(client, clock, JAN_1_2026 + DAY)
    _report(client, session.customer, 10_000, JAN_1_2026 + DAY)
    _advance(client, clock, JAN_1_2026 + 2 * DAY)
    client.v1.subscriptions.cancel(session.subscription, params={"invoice_now": True, "prorate": False})
    _advance(client, clock, JAN_1_2026 + 2 * DAY + 2 * HOUR)
    invoices = client.v1.invoices.list(params={"subscription": session.subscription}).data
    assert sum(inv.total for inv in invoices) == 0


def test_trial_parameters_are_checked(client: Any, meter: Any) -> None:
    flat, _ = _prices(client, meter)
    base = {
        "mode": "subscription",
        "line_items": [{"price": flat.id, "quantity": 1}],
        "success_url": "http://127.0.0.1:9/done",
    }
    for data, param in (
        ({"trial_period_days": 0}, "subscription_data[trial_period_days]"),
        ({"trial_period_days": 731}, "subscription_data[trial_period_days]"),
        (
            {"trial_period_days": 7, "trial_settings": {"end_behavior": {"missing_payment_method": "cancel"}}},
            "subscription_data[trial_settings][end_behavior][missing_payment_method]",
        ),
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.checkout.sessions.create(params={**base, "subscription_data": data})
        assert refused.value.param == param
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.create(
            params={**base, "payment_method_collection": "if_required", "subscription_data": {"trial_period_days": 7}}
        )
    assert refused.value.param == "payment_method_collection"
    assert client.v1.checkout.sessions.create(params={**base, "subscription_data": {"trial_period_days": 730}}).id
    customer = client.v1.customers.create(params={"email": "b@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"price": flat.id}], "trial_period_days": 0}
        )
    assert refused.value.param == "trial_period_days"
