"""Subscriptions over time: renewals on a test clock, dunning after declines, cancellation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from emulators.stripe.server import StripeEmulator
from emulators.stripe.testing import WebhookSink
from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer

FEB_1 = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())
MAR_1 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
DAY = 86400
HOUR = 3600
BILLING_TYPES = ("customer.subscription.", "invoice.")


def _catalog(client: Any, meter: Any) -> tuple[Any, Any]:
    product = client.v1.products.create(params={"name": "Standard"})
    flat = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 1495, "recurring": {"interval": "month"}}
    )
    usage = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.15",  # $0.15 per 100 calls
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return flat, usage


def _report(client: Any, customer: Any, when: int, calls: int, ident: str) -> None:
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "timestamp": when,
            "identifier": ident,
            "payload": {"stripe_customer_id": customer.id, "value": str(calls)},
        }
    )


def _billing_events(client: Any) -> list[str]:
    events = client.v1.events.list(params={"limit": 100}).data
    return [e.type for e in reversed(events) if e.type.startswith(BILLING_TYPES)]


def test_two_renewals_on_a_test_clock(
    stripe_emulator: StripeEmulator, client: Any, meter: Any, sink: WebhookSink
) -> None:
    stripe_emulator.add_webhook_endpoint(sink.url, "whsec_test", ["*"])
    flat, usage = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": flat.id, "quantity": 1}, {"price": usage.id}],
            "metadata": {"apim_subscription": "s1"},
        }
    )
    assert sub["items"].data[0].current_period_end == FEB_1

    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + 20 * DAY})
    _report(client, customer, JAN_1_2026 + 15 * DAY, 10_000, "jan")  # $15.00 at 0.15 cents per call
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 20 * DAY})
    _report(client, customer, FEB_1 + 10 * DAY, 333, "feb")  # 49.95 cents -> rounds to 50 on the line
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": MAR_1 + 2 * HOUR})

    invoices = list(reversed(client.v1.invoices.list(params={"subscription": sub.id}).data))
    assert [i.billing_reason for i in invoices] == ["subscription_create", "subscription_cycle", "subscription_cycle"]
    assert [i.amount_paid for i in invoices] == [1495, 1495 + 1500, 1495 + 50]
    assert [i.status for i in invoices] == ["paid", "paid", "paid"]
    assert [(i.period_start, i.period_end) for i in invoices[1:]] == [(JAN_1_2026, FEB_1), (FEB_1, MAR_1)]
    assert all(i.parent.subscription_details.metadata["apim_subscription"] == "s1" for i in invoices)

    renewal = [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    expected = [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
        *renewal,
        *renewal,
    ]
    assert _billing_events(client) == expected
    stripe_emulator.wait_for_webhooks_idle(timeout=10)
    assert [t for t in sink.types() if t.startswith(BILLING_TYPES)] == expected


def test_usage_reported_after_invoice_created_still_counts(client: Any, meter: Any) -> None:
    """The app reports closing usage on invoice.created; finalisation an hour later includes it."""
    flat, usage = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": usage.id}]})
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 60})
    draft = client.v1.invoices.list(params={"subscription": sub.id, "limit": 1}).data[0]
    assert draft.status == "draft"
    assert draft.automatically_finalizes_at == FEB_1 + HOUR
    _report(client, customer, FEB_1 - 1, 1000, "closing")  # last second of January
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    final = client.v1.invoices.retrieve(draft.id)
    assert final.status == "paid"
    assert final.amount_paid == 150
    assert flat.id  # the flat price exists but is not on this subscription


def test_declined_renewals_go_past_due_then_unpaid(client: Any, meter: Any) -> None:
    flat, _ = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": flat.id}]})
    assert sub.status == "active"
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": failing.id}})

    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    renewal = client.v1.invoices.list(params={"subscription": sub.id, "limit": 1}).data[0]
    assert (renewal.status, renewal.attempt_count) == ("open", 1)
    assert renewal.next_payment_attempt == FEB_1 + HOUR + 3 * DAY

    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 20 * DAY})
    renewal = client.v1.invoices.retrieve(renewal.id)
    assert (renewal.status, renewal.attempt_count, renewal.next_payment_attempt) == ("open", 4, None)
    assert client.v1.subscriptions.retrieve(sub.id).status == "unpaid"
    changes = [
        (e.data.previous_attributes["status"], e.data.object.status)
        for e in reversed(client.v1.events.list(params={"type": "customer.subscription.updated", "limit": 100}).data)
        if "status" in (e.data.to_dict().get("previous_attributes") or {})
    ]
    assert changes == [("incomplete", "active"), ("active", "past_due"), ("past_due", "unpaid")]
    assert _billing_events(client).count("invoice.payment_failed") == 4

    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    paid = client.v1.invoices.pay(renewal.id, params={"payment_method": good.id})
    assert paid.status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_paying_with_a_declining_card_raises_card_error(client: Any, meter: Any) -> None:
    flat, _ = _catalog(client, meter)
    clock, customer = clocked_customer(client, card="pm_card_chargeCustomerFail")
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": flat.id}], "expand": ["latest_invoice"]}
    )
    assert sub.status == "incomplete"
    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(sub.latest_invoice.id)
    assert declined.value.code == "card_declined"
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + DAY})
    assert client.v1.subscriptions.retrieve(sub.id).status == "incomplete_expired"


def test_cancel_with_invoice_now_bills_usage_so_far(client: Any, meter: Any) -> None:
    flat, usage = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": flat.id, "quantity": 1}, {"price": usage.id}]}
    )
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + 10 * DAY})
    _report(client, customer, JAN_1_2026 + 5 * DAY, 2000, "u1")  # 300 cents
    canceled = client.v1.subscriptions.cancel(sub.id, params={"invoice_now": True})
    assert canceled.status == "canceled"
    final = client.v1.invoices.retrieve(canceled.latest_invoice)
    assert final.status == "draft"
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + 10 * DAY + 2 * HOUR})
    final = client.v1.invoices.retrieve(final.id)
    assert (final.status, final.amount_paid) == ("paid", 300)
    assert "customer.subscription.deleted" in _billing_events(client)


def test_cancel_at_period_end_ends_at_the_boundary(client: Any, meter: Any) -> None:
    flat, _ = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": flat.id}]})
    updated = client.v1.subscriptions.update(
        sub.id, params={"cancel_at_period_end": True, "metadata": {"reason": "test"}}
    )
    assert (updated.status, updated.cancel_at, updated.metadata["reason"]) == ("active", FEB_1, "test")
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert (ended.status, ended.ended_at) == ("canceled", FEB_1)
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == 1


def test_price_change_without_proration(client: Any, meter: Any) -> None:
    flat, _ = _catalog(client, meter)
    bigger = client.v1.prices.create(
        params={"product": flat.product, "currency": "usd", "unit_amount": 8995, "recurring": {"interval": "month"}}
    )
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": flat.id}]})
    item = sub["items"].data[0]
    client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item.id, "price": bigger.id}], "proration_behavior": "none"}
    )
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    renewal = client.v1.invoices.list(params={"subscription": sub.id, "limit": 1}).data[0]
    assert renewal.amount_paid == 8995


def test_trial_then_first_paid_renewal(client: Any, meter: Any) -> None:
    flat, _ = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": flat.id}],
            "trial_period_days": 14,
            "expand": ["latest_invoice"],
        }
    )
    assert (sub.status, sub.trial_end, sub.latest_invoice.amount_due) == ("trialing", JAN_1_2026 + 14 * DAY, 0)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + 14 * DAY + 2 * HOUR})
    after = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice"]})
    assert (after.status, after.latest_invoice.amount_paid) == ("active", 1495)
    # the billing cycle now runs from the trial end, one calendar month at a time
    assert after["items"].data[0].current_period_end == int(datetime(2026, 2, 15, tzinfo=UTC).timestamp())


def test_upgrade_with_always_invoice_charges_the_prorated_difference(client: Any, meter: Any) -> None:
    flat, _ = _catalog(client, meter)
    bigger = client.v1.prices.create(
        params={"product": flat.product, "currency": "usd", "unit_amount": 4595, "recurring": {"interval": "month"}}
    )
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": flat.id}]})
    # January has 31 days; upgrading with a fifth of it left makes both prorations whole cents.
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 - 31 * DAY // 5})
    updated = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "price": bigger.id}],
            "proration_behavior": "always_invoice",
            "expand": ["latest_invoice"],
        },
    )
    invoice = updated.latest_invoice
    assert invoice.billing_reason == "subscription_update"
    assert sorted(line.amount for line in invoice.lines.data) == [-299, 919]  # -1495/5 and 4595/5
    assert (invoice.status, invoice.amount_paid) == ("paid", 919 - 299)


def test_renewals_charge_the_subscriptions_payment_method_before_the_customers(client: Any, meter: Any) -> None:
    """Subscription.default_payment_method: "If neither are set, invoices will use the customer's
    invoice_settings.default_payment_method"."""
    flat, _ = _catalog(client, meter)
    clock, customer = clocked_customer(client, card="pm_card_chargeCustomerFail")  # the customer's default fails
    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": flat.id}], "default_payment_method": good.id}
    )
    assert sub.status == "active"
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": FEB_1 + 2 * HOUR})
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"  # the subscription's card paid
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": ""})  # now the customer's
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": MAR_1 + 2 * HOUR})
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"


def test_listing_without_status_leaves_out_canceled_only(client: Any, meter: Any) -> None:
    """ "If no value is supplied, all subscriptions that have not been canceled are returned";
    `ended` is "canceled and subscriptions that are expired due to incomplete payment"."""
    flat, _ = _catalog(client, meter)
    clock, customer = clocked_customer(client)
    kept = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": flat.id}]})
    canceled = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": flat.id}]})
    client.v1.subscriptions.cancel(canceled.id)
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    expired = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": flat.id}], "default_payment_method": failing.id}
    )
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + DAY})
    assert client.v1.subscriptions.retrieve(expired.id).status == "incomplete_expired"

    def listed(**params: Any) -> set[str]:
        return {s.id for s in client.v1.subscriptions.list(params={"customer": customer.id, **params}).data}

    assert listed() == {kept.id, expired.id}
    assert listed(status="ended") == {canceled.id, expired.id}
    assert listed(status="all") == {kept.id, canceled.id, expired.id}
