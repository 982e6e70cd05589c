"""Billing thresholds: a metered subscription invoiced early once its uninvoiced usage reaches amount_gte.

Sources (docs.stripe.com/billing/subscriptions/usage-based/thresholds and the older
stripe.com/docs/billing/subscriptions/metered-billing/thresholds; see the emulator's README):
- "issue an invoice when a customer's accrued usage ... reaches a specific monetary threshold";
  the billing cycle anchor "remains unchanged" by default.
- "Stripe maintains tiers across threshold invoices"; the volume-tier example with its two invoice
  tables (a cumulative usage line and "Amount previously billed") is reproduced below.
- "Thresholds do not apply to trialing subscriptions", "Monetary thresholds must be greater than
  the sum of all licensed plan costs", "not evaluated during the 24 hours prior to a
  subscription's period ending", "Set the value to at least 50 currency units".

Prices use the app's shapes (billing/catalog/desired.py): PAYG $0.15 per 100 calls is
unit_amount_decimal 0.15 (cents per call); a Freemium product with the first 100 calls free then
$0.20 per 100 calls as graduated tiers; a block price (transform_quantity, rounded up).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest
import stripe
from stripe.params.v2.billing import MeterEventStreamCreateParamsEvent

from emulators.stripe.server import StripeEmulator
from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer

FEB_1 = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp())
MAR_1 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
DAY = 86400
HOUR = 3600
JAN_10 = JAN_1_2026 + 9 * DAY

PAYG = {"unit_amount_decimal": "0.15"}  # $0.15 per 100 calls
FREEMIUM = {
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "tiers": [{"up_to": 100, "unit_amount": 0}, {"up_to": "inf", "unit_amount_decimal": "0.2"}],
}
BLOCKS = {"unit_amount": 74995, "transform_quantity": {"divide_by": 1_500_000, "round": "up"}}


@pytest.fixture(autouse=True)
def _no_internal_errors(stripe_emulator: StripeEmulator) -> Iterator[None]:
    """Threshold evaluation never fails a request; its errors would only show in /_emulator/health."""
    yield
    assert stripe_emulator.core.scheduler.errors == []


def _metered_price(client: Any, meter: Any, shape: dict[str, Any]) -> Any:
    product = client.v1.products.create(params={"name": "API"})
    return client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            **shape,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )


def _flat_price(client: Any, amount: int) -> Any:
    product = client.v1.products.create(params={"name": "Plan"})
    return client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": amount, "recurring": {"interval": "month"}}
    )


def _subscribe(client: Any, customer: Any, prices: list[Any], amount_gte: int | None, **extra: Any) -> Any:
    params: dict[str, Any] = {"customer": customer.id, "items": [{"price": p.id} for p in prices], **extra}
    if amount_gte is not None:
        params["billing_thresholds"] = {"amount_gte": amount_gte, "reset_billing_cycle_anchor": False}
    return client.v1.subscriptions.create(params=params)


def _now(client: Any, clock: Any) -> int:
    return int(client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time)


def _report(client: Any, clock: Any, customer: Any, calls: int, when: int | None = None) -> None:
    client.v1.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "timestamp": _now(client, clock) if when is None else when,
            "payload": {"stripe_customer_id": customer.id, "value": str(calls)},
        }
    )


def _advance(client: Any, clock: Any, to: int) -> None:
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": to})


def _invoices(client: Any, sub: Any) -> list[Any]:
    return list(reversed(client.v1.invoices.list(params={"subscription": sub.id, "limit": 100}).data))


def _by_reason(client: Any, sub: Any, reason: str) -> list[Any]:
    return [i for i in _invoices(client, sub) if i.billing_reason == reason]


def _lines(invoice: Any) -> list[tuple[int | None, int]]:
    return [(line.quantity, line.amount) for line in invoice.lines.data]


def _events_of(client: Any, invoice_id: str) -> list[str]:
    events = client.v1.events.list(params={"limit": 100, "type": "invoice.*"}).data
    return [e.type for e in reversed(events) if e.data.object.id == invoice_id]


def _single_invoice_amount(client: Any, price: Any, calls: list[int]) -> int:
    """Baseline: the same usage on a subscription without thresholds, billed once at period end."""
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], None)
    _advance(client, clock, JAN_10)
    for n in calls:
        _report(client, clock, customer, n)
    _advance(client, clock, FEB_1 + 2 * HOUR)
    (cycle,) = _by_reason(client, sub, "subscription_cycle")
    return int(cycle.amount_paid)


class Case(NamedTuple):
    shape: dict[str, Any]  # the metered price
    amount_gte: int
    calls: list[int]  # three reports: below the threshold, across it, then below it again
    at_threshold: int  # the threshold invoice's amount
    rest: int  # the period-end invoice's amount


@pytest.mark.parametrize(
    "case",
    [
        # 4000 calls = 600; 7003 = 1050.45 -> 1050 (invoiced); 10006 = 1500.9 -> 1501, so the rest is 451
        # (billing the last 3003 calls on their own would round 450.45 down to 450).
        pytest.param(Case(PAYG, 1000, [4000, 3003, 3003], 1050, 451), id="payg-per-unit"),
        # 2000 calls = 380; 3000 = 580 (invoiced); 3551 = 690.2 -> 690: the rest is 110, not the 90 that
        # 551 calls would cost if the 100 free calls started again after the threshold invoice.
        pytest.param(Case(FREEMIUM, 500, [2000, 1000, 551], 580, 110), id="freemium-free-tier"),
        # 1 started block = 74995 < 100000; 2M calls = 2 blocks = 149990 (invoiced); 3.5M = 3 blocks.
        pytest.param(Case(BLOCKS, 100000, [1_000_000, 1_000_000, 1_500_000], 149990, 74995), id="blocks"),
    ],
)
def test_threshold_invoice_mid_period_then_the_period_end_bills_the_rest(client: Any, meter: Any, case: Case) -> None:
    shape, amount_gte, calls, at_threshold, rest = case
    price = _metered_price(client, meter, shape)
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], amount_gte)
    assert sub.billing_thresholds.to_dict() == {"amount_gte": amount_gte, "reset_billing_cycle_anchor": False}
    _advance(client, clock, JAN_10)

    _report(client, clock, customer, calls[0])
    assert _by_reason(client, sub, "subscription_threshold") == []  # below the threshold
    _report(client, clock, customer, calls[1])
    (early,) = _by_reason(client, sub, "subscription_threshold")
    assert (early.status, early.amount_due, early.period_start, early.period_end) == (
        "draft",
        at_threshold,
        JAN_1_2026,
        JAN_10,
    )
    assert early.threshold_reason.amount_gte == amount_gte
    assert _lines(early) == [(calls[0] + calls[1], at_threshold)]
    assert early.lines.data[0].period.start == JAN_1_2026

    _advance(client, clock, JAN_10 + 2 * HOUR)  # finalised and charged an hour later, like renewals
    early = client.v1.invoices.retrieve(early.id)
    assert (early.status, early.amount_paid) == ("paid", at_threshold)
    assert _events_of(client, early.id) == [
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    after = client.v1.subscriptions.retrieve(sub.id)
    assert (after.status, after.billing_cycle_anchor, after["items"].data[0].current_period_end) == (
        "active",
        JAN_1_2026,
        FEB_1,
    )  # the billing cycle anchor is unchanged

    _report(client, clock, customer, calls[2])  # below the threshold again: left for the period end
    assert len(_by_reason(client, sub, "subscription_threshold")) == 1
    _advance(client, clock, FEB_1 + 2 * HOUR)
    (cycle,) = _by_reason(client, sub, "subscription_cycle")
    assert (cycle.status, cycle.amount_paid, cycle.period_start, cycle.period_end) == ("paid", rest, JAN_1_2026, FEB_1)
    total = at_threshold + rest
    assert _lines(cycle) == [(sum(calls), total), (None, -at_threshold)]
    assert cycle.lines.data[1].description.startswith("Amount previously billed")
    assert total == _single_invoice_amount(client, price, calls)


def test_volume_tiers_follow_stripes_documented_example(client: Any, meter: Any) -> None:
    """The docs' example: 0.50 USD up to 10,000 units, 0.40 USD beyond (volume), threshold 5,000 USD."""
    price = _metered_price(
        client,
        meter,
        {
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": [{"up_to": 10000, "unit_amount": 50}, {"up_to": "inf", "unit_amount": 40}],
        },
    )
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], 500000)
    _advance(client, clock, JAN_10)
    _report(client, clock, customer, 10000)  # "Stripe issues an invoice when the customer reaches 10,000 units"
    (first,) = _by_reason(client, sub, "subscription_threshold")
    assert _lines(first) == [(10000, 500000)]  # Invoice 1
    _advance(client, clock, JAN_10 + 2 * HOUR)
    _report(client, clock, customer, 2500)  # 12,500 units cost 5,000 USD, all paid already: no invoice
    assert len(_by_reason(client, sub, "subscription_threshold")) == 1
    _report(client, clock, customer, 12500)  # 25,000 units: "a total cost of 10,000 USD"
    _, second = _by_reason(client, sub, "subscription_threshold")
    assert _lines(second) == [(25000, 1000000), (None, -500000)]  # Invoice 2
    assert second.amount_due == 500000
    _advance(client, clock, FEB_1 + 2 * HOUR)
    (cycle,) = _by_reason(client, sub, "subscription_cycle")
    assert _lines(cycle) == [(25000, 1000000), (None, -1000000)]
    assert (cycle.status, cycle.amount_due) == ("paid", 0)


def test_volume_tiers_credit_what_was_overbilled_to_the_balance(client: Any, meter: Any) -> None:
    """Docs: one unit past 10,000 drops the total to 4,000.40 USD; the 999.60 USD owed is credited."""
    price = _metered_price(
        client,
        meter,
        {
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": [{"up_to": 10000, "unit_amount": 50}, {"up_to": "inf", "unit_amount": 40}],
        },
    )
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], 500000)
    _advance(client, clock, JAN_10)
    _report(client, clock, customer, 10000)
    _report(client, clock, customer, 1)
    _advance(client, clock, FEB_1 + 2 * HOUR)
    (cycle,) = _by_reason(client, sub, "subscription_cycle")
    assert (cycle.total, cycle.amount_due, cycle.status) == (-99960, 0, "paid")
    assert client.v1.customers.retrieve(customer.id).balance == -99960


def test_no_evaluation_in_the_last_24_hours_of_the_period(client: Any, meter: Any) -> None:
    price = _metered_price(client, meter, PAYG)
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], 1000)
    _advance(client, clock, FEB_1 - DAY)  # exactly 24 hours before the period ends
    _report(client, clock, customer, 10000)  # 1500 cents, over the threshold
    _advance(client, clock, FEB_1 - 60)
    assert _by_reason(client, sub, "subscription_threshold") == []
    _advance(client, clock, FEB_1 + 2 * HOUR)
    (cycle,) = _by_reason(client, sub, "subscription_cycle")
    assert cycle.amount_paid == 1500  # everything billed once, at the period end

    _advance(client, clock, MAR_1 - DAY - 1)  # one second before the quiet day of February's period
    _report(client, clock, customer, 10000)
    (early,) = _by_reason(client, sub, "subscription_threshold")
    assert (early.amount_due, early.period_start) == (1500, FEB_1)


def test_failed_threshold_payment_makes_the_subscription_past_due_then_unpaid(client: Any, meter: Any) -> None:
    price = _metered_price(client, meter, PAYG)
    clock, customer = clocked_customer(client, card="pm_card_chargeCustomerFail")
    sub = _subscribe(client, customer, [price], 1000)
    assert sub.status == "active"  # a metered-only start is $0: nothing was charged
    _advance(client, clock, JAN_10)
    _report(client, clock, customer, 10000)
    (early,) = _by_reason(client, sub, "subscription_threshold")
    _advance(client, clock, JAN_10 + 2 * HOUR)
    early = client.v1.invoices.retrieve(early.id)
    assert (early.status, early.attempt_count, early.next_payment_attempt) == ("open", 1, JAN_10 + HOUR + 3 * DAY)
    assert _events_of(client, early.id) == ["invoice.created", "invoice.finalized", "invoice.payment_failed"]
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"

    _report(client, clock, customer, 10000)  # a past_due subscription gets no further threshold invoice
    assert len(_by_reason(client, sub, "subscription_threshold")) == 1
    _advance(client, clock, JAN_10 + 20 * DAY)  # retries after 3, 5 and 7 days all fail
    assert client.v1.subscriptions.retrieve(sub.id).status == "unpaid"
    assert client.v1.invoices.retrieve(early.id).attempt_count == 4


@pytest.mark.parametrize(
    ("thresholds", "param", "code"),
    [
        ({"amount_gte": 49}, "billing_thresholds[amount_gte]", "parameter_invalid"),
        ({"amount_gte": 0}, "billing_thresholds[amount_gte]", "parameter_invalid"),
        ({"amount_gte": -100}, "billing_thresholds[amount_gte]", "parameter_invalid"),
        ({"amount_gte": 1495}, "billing_thresholds[amount_gte]", "parameter_invalid"),  # = the flat fee
        (
            {"amount_gte": 5000, "reset_billing_cycle_anchor": True},
            "billing_thresholds[reset_billing_cycle_anchor]",
            "parameter_invalid",
        ),
        ({"reset_billing_cycle_anchor": False}, "billing_thresholds[amount_gte]", "parameter_missing"),
        ({"amount_gte": 5000, "usage_gte": 10}, "billing_thresholds[usage_gte]", "parameter_unknown"),
    ],
)
def test_invalid_thresholds_are_refused_naming_the_parameter(
    client: Any, meter: Any, thresholds: dict[str, Any], param: str, code: str
) -> None:
    flat, usage = _flat_price(client, 1495), _metered_price(client, meter, PAYG)
    _, customer = clocked_customer(client)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": flat.id}, {"price": usage.id}],
                "billing_thresholds": thresholds,
            }
        )
    assert (refused.value.param, refused.value.code) == (param, code)
    assert refused.value.error is not None
    assert refused.value.error.type == "invalid_request_error"
    if "reset" in param:
        assert "not supported by this emulator" in refused.value.user_message
    assert client.v1.subscriptions.list(params={"customer": customer.id}).data == []


def test_threshold_must_stay_above_the_flat_fees_when_items_change(client: Any, meter: Any) -> None:
    flat, usage = _flat_price(client, 1495), _metered_price(client, meter, PAYG)
    bigger = _flat_price(client, 8995)
    _, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [flat, usage], 1496)  # one cent above the flat fee is enough
    flat_item = sub["items"].data[0]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.update(sub.id, params={"items": [{"id": flat_item.id, "price": bigger.id}]})
    assert refused.value.param == "items"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.update(sub.id, params={"billing_thresholds": {"amount_gte": 1000}})
    assert refused.value.param == "billing_thresholds[amount_gte]"
    unchanged = client.v1.subscriptions.retrieve(sub.id)
    assert (unchanged["items"].data[0].price.id, unchanged.billing_thresholds.amount_gte) == (flat.id, 1496)
    updated = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": flat_item.id, "price": bigger.id}],
            "proration_behavior": "none",
            "billing_thresholds": {"amount_gte": 9000},
        },
    )
    assert updated.billing_thresholds.amount_gte == 9000


def test_flat_fees_do_not_count_toward_the_threshold(client: Any, meter: Any) -> None:
    """Standard-like shape: $89.95 a month plus usage; only the accrued usage is compared."""
    flat, usage = _flat_price(client, 8995), _metered_price(client, meter, PAYG)
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [flat, usage], 9000)
    _advance(client, clock, JAN_10)
    _report(client, clock, customer, 50000)  # 7500 cents of usage: with the flat fee it would exceed 9000
    assert _by_reason(client, sub, "subscription_threshold") == []
    _report(client, clock, customer, 10000)  # 9000 cents of usage
    (early,) = _by_reason(client, sub, "subscription_threshold")
    assert _lines(early) == [(60000, 9000)]  # usage only; the flat fee was billed in advance


def test_set_on_update_then_unset_with_an_empty_string(client: Any, meter: Any) -> None:
    price = _metered_price(client, meter, PAYG)
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], None)
    assert sub.billing_thresholds is None
    _advance(client, clock, JAN_10)
    updated = client.v1.subscriptions.update(sub.id, params={"billing_thresholds": {"amount_gte": 1000}})
    assert updated.billing_thresholds.to_dict() == {"amount_gte": 1000, "reset_billing_cycle_anchor": False}
    event = client.v1.events.list(params={"type": "customer.subscription.updated", "limit": 1}).data[0]
    assert event.data.previous_attributes["billing_thresholds"] is None
    _report(client, clock, customer, 7000)  # 1050 cents
    assert len(_by_reason(client, sub, "subscription_threshold")) == 1

    cleared = client.v1.subscriptions.update(sub.id, params={"billing_thresholds": ""})
    assert cleared.billing_thresholds is None
    _report(client, clock, customer, 70000)  # far beyond, but no threshold any more
    assert len(_by_reason(client, sub, "subscription_threshold")) == 1
    _advance(client, clock, FEB_1 + 2 * HOUR)
    (cycle,) = _by_reason(client, sub, "subscription_cycle")
    assert cycle.amount_paid == 11550 - 1050  # 77000 calls, less the 7000 already invoiced


def test_trialing_subscriptions_are_not_evaluated(client: Any, meter: Any) -> None:
    price = _metered_price(client, meter, PAYG)
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], 1000, trial_period_days=14)
    assert sub.status == "trialing"
    _advance(client, clock, JAN_10)
    _report(client, clock, customer, 10000)
    assert _by_reason(client, sub, "subscription_threshold") == []
    _advance(client, clock, JAN_1_2026 + 15 * DAY)  # the trial is over; its usage is not billed
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    _report(client, clock, customer, 7000)
    (early,) = _by_reason(client, sub, "subscription_threshold")
    assert (early.amount_due, early.period_start) == (1050, JAN_1_2026 + 14 * DAY)


def test_every_ingestion_path_and_a_clock_advance_evaluate(
    stripe_emulator: StripeEmulator, client: Any, meter: Any
) -> None:
    price = _metered_price(client, meter, PAYG)
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], 1000)
    _advance(client, clock, JAN_10)

    client.v2.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "timestamp": "2026-01-10T00:00:00Z",
            "payload": {"stripe_customer_id": customer.id, "value": "7000"},
        }
    )
    assert [i.amount_due for i in _by_reason(client, sub, "subscription_threshold")] == [1050]

    session = client.v2.billing.meter_event_session.create()
    streamer = stripe.StripeClient(
        session.authentication_token, base_addresses={"meter_events": stripe_emulator.base_url}
    )
    events: list[MeterEventStreamCreateParamsEvent] = [
        {
            "event_name": "api_calls",
            "identifier": f"batch-{n}",
            "timestamp": "2026-01-10T00:00:00Z",
            "payload": {"stripe_customer_id": customer.id, "value": "4000"},
        }
        for n in range(3)
    ]
    streamer.v2.billing.meter_event_stream.create(params={"events": events})  # 600, 1200 (invoiced), 1800
    assert [i.amount_due for i in _by_reason(client, sub, "subscription_threshold")] == [1050, 1200]

    _report(client, clock, customer, 7000, when=JAN_10 + 240)  # stamped 4 minutes ahead: not accrued yet
    assert len(_by_reason(client, sub, "subscription_threshold")) == 2
    _advance(client, clock, JAN_10 + 300)  # the 600 left over from the stream plus 1050
    assert [i.amount_due for i in _by_reason(client, sub, "subscription_threshold")] == [1050, 1200, 1650]


def test_preview_and_cancel_with_invoice_now_bill_only_the_rest(client: Any, meter: Any) -> None:
    price = _metered_price(client, meter, PAYG)
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], 1000)
    _advance(client, clock, JAN_10)
    _report(client, clock, customer, 7003)  # 1050 invoiced
    _advance(client, clock, JAN_10 + 2 * HOUR)
    _report(client, clock, customer, 3003, when=JAN_10 + HOUR)  # before the cancellation's second
    preview = client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert (preview.amount_due, _lines(preview)) == (451, [(10006, 1501), (None, -1050)])

    canceled = client.v1.subscriptions.cancel(sub.id, params={"invoice_now": True})
    _advance(client, clock, JAN_10 + 4 * HOUR)
    final = client.v1.invoices.retrieve(canceled.latest_invoice)
    assert (final.status, final.amount_paid, _lines(final)) == ("paid", 451, [(10006, 1501), (None, -1050)])


def test_discounts_count_toward_the_threshold(client: Any, meter: Any) -> None:
    """The compared value "includes discounts": half off means twice the usage before an invoice."""
    price = _metered_price(client, meter, PAYG)
    coupon = client.v1.coupons.create(params={"percent_off": 50, "duration": "forever"})
    clock, customer = clocked_customer(client)
    sub = _subscribe(client, customer, [price], 1000, discounts=[{"coupon": coupon.id}])
    _advance(client, clock, JAN_10)
    _report(client, clock, customer, 10000)  # 1500 cents, 750 after the discount
    assert _by_reason(client, sub, "subscription_threshold") == []
    _report(client, clock, customer, 4000)  # 2100 cents, 1050 after the discount
    (early,) = _by_reason(client, sub, "subscription_threshold")
    assert (early.subtotal, early.total) == (2100, 1050)
