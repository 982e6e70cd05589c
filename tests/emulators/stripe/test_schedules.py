"""Subscription schedules (a downgrade at the period end, undone by release) and a paid upgrade that
fails as a whole with `payment_behavior=error_if_incomplete`. Sources: the emulator's README,
"Subscription schedules and plan changes"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer

FEB_1 = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())
MAR_1 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
DAY, HOUR = 86400, 3600


def _plan(client: Any, meter: Any, fee: int, per_call: int, name: str) -> tuple[Any, Any]:
    product = client.v1.products.create(params={"name": name})
    flat = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": fee, "recurring": {"interval": "month"}}
    )
    usage = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": per_call,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return flat, usage


def _meter(client: Any, name: str) -> Any:
    return client.v1.billing.meters.create(
        params={
            "display_name": name,
            "event_name": name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


def _report(client: Any, meter: Any, customer: Any, when: int, calls: int) -> None:
    client.v1.billing.meter_events.create(
        params={
            "event_name": meter.event_name,
            "timestamp": when,
            "payload": {"stripe_customer_id": customer.id, "value": str(calls)},
        }
    )


def _advance(client: Any, clock: Any, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": to})


def _invoices(client: Any, sub: Any) -> list[Any]:
    return list(reversed(client.v1.invoices.list(params={"subscription": sub.id, "limit": 100}).data))


def _prices(sub: Any) -> set[str]:
    return {item.price.id for item in sub["items"].data}


@pytest.fixture
def plans(client: Any) -> dict[str, tuple[Any, Any, Any]]:
    big, small = _meter(client, "big_calls"), _meter(client, "small_calls")
    return {
        "big": (*_plan(client, big, 10_000, 3, "Big"), big),
        "small": (*_plan(client, small, 2_000, 5, "Small"), small),
    }


def test_a_downgrade_at_the_period_end_through_a_schedule(client: Any, plans: dict[str, Any]) -> None:
    big_flat, big_usage, big_meter = plans["big"]
    small_flat, small_usage, small_meter = plans["small"]
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "metadata": {"plan": "big"},
            "items": [{"price": big_flat.id}, {"price": big_usage.id}],
        }
    )
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    assert schedule.status == "active"
    assert schedule.end_behavior == "release"
    (phase,) = schedule.phases
    assert (phase.start_date, phase.end_date) == (JAN_1_2026, FEB_1)
    assert client.v1.subscriptions.retrieve(sub.id).schedule == schedule.id
    schedule = client.v1.subscription_schedules.update(
        schedule.id,
        params={
            "phases": [
                {
                    "items": [{"price": big_flat.id, "quantity": 1}, {"price": big_usage.id}],
                    "start_date": phase.start_date,
                    "end_date": phase.end_date,
                },
                {
                    "items": [{"price": small_flat.id, "quantity": 1}, {"price": small_usage.id}],
                    "duration": {"interval": "month", "interval_count": 1},
                    "metadata": {"plan": "small"},
                },
            ],
            "end_behavior": "release",
        },
    )
    assert [p.end_date for p in schedule.phases] == [FEB_1, MAR_1]
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    _report(client, big_meter, customer, JAN_1_2026 + 10 * DAY, 1000)
    _advance(client, clock, FEB_1 + 2 * HOUR)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert _prices(sub) == {small_flat.id, small_usage.id}
    assert sub.metadata["plan"] == "small"
    assert sub["items"].data[0].current_period_start == FEB_1
    (_first, renewal) = _invoices(client, sub)
    # January's usage at the big plan's price, February's fee at the small plan's.
    assert sorted(line.amount for line in renewal.lines.data) == [2_000, 3_000]
    assert renewal.status == "paid"
    updated = [
        e
        for e in client.v1.events.list(params={"type": "customer.subscription.updated", "limit": 100}).data
        if e.data.object["id"] == sub.id and "metadata" in (e.to_dict()["data"].get("previous_attributes") or {})
    ]
    assert updated, "the phase change announces the new items and metadata"
    # Later usage goes to the small plan; after its phase the schedule is released, the subscription goes on.
    _advance(client, clock, FEB_1 + 3 * DAY)
    _report(client, small_meter, customer, FEB_1 + 3 * DAY, 10)
    _advance(client, clock, MAR_1 + 2 * HOUR)
    schedule = client.v1.subscription_schedules.retrieve(schedule.id)
    assert (schedule.status, schedule.released_subscription) == ("released", sub.id)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active"
    assert sub.schedule is None
    assert sorted(line.amount for line in _invoices(client, sub)[-1].lines.data) == [50, 2_000]


def test_releasing_undoes_the_pending_downgrade(client: Any, plans: dict[str, Any]) -> None:
    big_flat, big_usage, _ = plans["big"]
    small_flat, small_usage, _ = plans["small"]
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": big_flat.id}, {"price": big_usage.id}]}
    )
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    client.v1.subscription_schedules.update(
        schedule.id,
        params={
            "phases": [
                {"items": [{"price": big_flat.id, "quantity": 1}, {"price": big_usage.id}], "end_date": FEB_1},
                {"items": [{"price": small_flat.id, "quantity": 1}, {"price": small_usage.id}]},
            ]
        },
    )
    released = client.v1.subscription_schedules.release(schedule.id)
    assert (released.status, released.subscription, released.released_subscription) == ("released", None, sub.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscription_schedules.release(schedule.id)
    _advance(client, clock, FEB_1 + 2 * HOUR)
    assert _prices(client.v1.subscriptions.retrieve(sub.id)) == {big_flat.id, big_usage.id}


def test_schedules_refuse_what_the_emulator_does_not_do(client: Any, plans: dict[str, Any]) -> None:
    big_flat, big_usage, _ = plans["big"]
    small_flat, _, _ = plans["small"]
    _, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": big_flat.id}]})
    with pytest.raises(stripe.InvalidRequestError, match="other parameters"):
        client.v1.subscription_schedules.create(params={"from_subscription": sub.id, "end_behavior": "cancel"})
    schedule = client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    with pytest.raises(stripe.InvalidRequestError, match="already managed"):
        client.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    with pytest.raises(stripe.InvalidRequestError, match="period ends"):
        client.v1.subscription_schedules.update(
            schedule.id,
            params={
                "phases": [
                    {"items": [{"price": big_flat.id, "quantity": 1}], "end_date": FEB_1 + DAY},
                    {"items": [{"price": small_flat.id, "quantity": 1}]},
                ]
            },
        )
    with pytest.raises(stripe.InvalidRequestError, match="current phase's items"):
        client.v1.subscription_schedules.update(
            schedule.id, params={"phases": [{"items": [{"price": small_flat.id, "quantity": 1}], "end_date": FEB_1}]}
        )
    del big_usage


def test_an_upgrade_with_error_if_incomplete_changes_nothing_when_the_charge_fails(
    client: Any, plans: dict[str, Any]
) -> None:
    big_flat, big_usage, _ = plans["big"]
    small_flat, small_usage, _ = plans["small"]
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "metadata": {"plan": "small"},
            "items": [{"price": small_flat.id}, {"price": small_usage.id}],
        }
    )
    _advance(client, clock, JAN_1_2026 + 10 * DAY)
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": failing.id})
    flat_item = next(i for i in sub["items"].data if i.price.id == small_flat.id)
    upgrade = {
        "items": [{"id": flat_item.id, "price": big_flat.id}, {"price": big_usage.id}],
        "metadata": {"plan": "big"},
        "proration_behavior": "always_invoice",
        "payment_behavior": "error_if_incomplete",
    }
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.update(sub.id, params=upgrade)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert _prices(after) == {small_flat.id, small_usage.id}
    assert after.metadata["plan"] == "small"
    assert len(_invoices(client, sub)) == 1
    # With a card that pays, the same update charges the prorated difference at once and applies.
    paying = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": paying.id})
    after = client.v1.subscriptions.update(sub.id, params=upgrade)
    assert _prices(after) == {big_flat.id, small_usage.id, big_usage.id}
    assert after.metadata["plan"] == "big"
    invoice = _invoices(client, sub)[-1]
    fraction = (FEB_1 - (JAN_1_2026 + 10 * DAY)) / (FEB_1 - JAN_1_2026)
    assert invoice.billing_reason == "subscription_update"
    assert invoice.status == "paid"
    assert invoice.amount_due == round(10_000 * fraction) - round(2_000 * fraction)
