"""The last calls of a period, and those before a cancel, reach their invoice although APIM reports them late.

On the local stack with a report lag of a few seconds on both sides: the APIM emulator shows a call
only `LAG` seconds after it was made, and the app waits as long (USAGE_REPORT_LAG_MINUTES, here in
decimal minutes). Consumers sign up and pay through the portal and Checkout on a Stripe test clock;
Stripe delivers real webhooks to the app, and nothing runs queued work in the background:
`stack.settle()` runs what is visible, `stack.settle_delayed()` also waits for the delayed messages.

Stripe's time is each consumer's test clock; APIM's is the emulator's own clock (real time plus an
offset), moved forward to the moment a test needs. A fresh stack per test: APIM's clock only goes
forward, and the portal's sign-in tokens are checked against it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from billing.model_loader import load_models
from billing.pricing import LineKind, quote
from devstack.azurite import Azurite
from devstack.consumer import Consumer, product_subscribe_link
from devstack.stack import LocalStack, StackOptions

pytestmark = pytest.mark.storage

LAG = 3  # seconds: APIM shows a call this long after it was made, and the app waits as long
HOUR, DAY = 3600, 86400
MODELS = load_models()


@pytest.fixture
def stack(azurite: Azurite) -> Iterator[LocalStack]:
    options = StackOptions(
        use_func=False,
        azurite=azurite,
        apply_catalog=True,
        stripe_webhooks=True,
        run_queue_workers=False,
        report_lag_seconds=LAG,
    )
    with LocalStack(options) as running:
        assert running.env["USAGE_REPORT_LAG_MINUTES"] == "0.05"  # 3 s, in the app's decimal minutes
        yield running


@dataclass
class Paid:
    consumer: Consumer
    sid: str
    key: str
    clock: str
    start: int
    end: int


def paid(stack: LocalStack, product_id: str) -> Paid:
    """A consumer who signed up and paid for `product_id`, on a test clock that starts at APIM's present."""
    consumer = stack.consumer()
    consumer.sign_up()
    begins = int(stack.apim_emulator.now().timestamp())
    clock, _ = stack.customer_on_test_clock(consumer.user_id, consumer.email, begins)
    consumer.subscribe_and_pay(product_id, "metered")
    stack.settle()
    sub = next(s for s in consumer.subscriptions() if s.product_id == product_id)
    assert sub.state == "active"
    item = stack.stripe_emulator.client().v1.subscriptions.retrieve(sub.subscription_id)["items"].data[0]
    return Paid(
        consumer,
        sub.subscription_id,
        sub.primary_key,
        clock,
        int(item.current_period_start),
        int(item.current_period_end),
    )


def stripe_to(stack: LocalStack, clock: str, when: int) -> None:
    """Stripe's time (the consumer's test clock) to `when`, then the webhooks and visible work it caused."""
    stripe = stack.stripe_emulator.client().v1
    stripe.test_helpers.test_clocks.advance(clock, params={"frozen_time": when})
    deadline = time.monotonic() + 60
    while stripe.test_helpers.test_clocks.retrieve(clock).status != "ready":
        assert time.monotonic() < deadline, "the test clock did not finish advancing"
        time.sleep(0.05)
    stack.settle()


def apim_to(stack: LocalStack, when: float) -> None:
    """APIM's time to `when` (its clock then runs on from there, in real time)."""
    apim = stack.apim_emulator
    ahead = when - apim.now().timestamp()
    assert ahead >= 0, "APIM's clock only goes forward"
    apim.advance_clock(ahead)


def gateway(stack: LocalStack, key: str) -> int:
    return requests.get(
        f"{stack.apim_emulator.gateway_url}/echo", headers={"Ocp-Apim-Subscription-Key": key}, timeout=30
    ).status_code


def record(stack: LocalStack, sid: str, calls: int, at: float) -> None:
    """`calls` successful calls at `at`, as the gateway counts them (APIM shows them LAG s later)."""
    stack.apim_emulator.record_usage(sid, calls, at=datetime.fromtimestamp(at, UTC))


def usage_of(product_id: str, calls: int) -> int:
    """What the pricing engine quotes for the period's usage (minor units)."""
    return sum(line.amount for line in quote(MODELS.product(product_id), calls).lines if line.kind is LineKind.USAGE)


def invoices(stack: LocalStack, sid: str) -> list[Any]:
    found = stack.stripe_emulator.client().v1.invoices.list(params={"subscription": sid, "limit": 100}).data
    return sorted(found, key=lambda inv: (inv.created, inv.id))


def draft_window_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "draft window" in r.getMessage()]


def test_calls_in_the_last_seconds_of_a_period_are_on_its_renewal_invoice(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    p = paid(stack, "payg")
    record(stack, p.sid, 4_000, p.start + HOUR)  # earlier in the period, long visible
    apim_to(stack, p.end - 2)
    assert [gateway(stack, p.key) for _ in range(20)] == [200] * 20  # two seconds before the period ends
    record(stack, p.sid, 980, apim_time := stack.apim_emulator.now().timestamp())
    assert apim_time < p.end
    with caplog.at_level(logging.ERROR):
        stripe_to(stack, p.clock, p.end + 60)  # the period ends: Stripe drafts the renewal (invoice.created)
    renewal = invoices(stack, p.sid)[-1]
    assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", "draft")
    assert draft_window_errors(caplog) == []  # an hour of draft is enough for 3 s of lag
    stack.settle_delayed()  # the closing report, once APIM shows the last calls
    stripe_to(stack, p.clock, p.end + 2 * HOUR)  # finalised an hour after the draft, and paid
    renewal = stack.stripe_emulator.client().v1.invoices.retrieve(renewal.id)
    assert renewal.status == "paid"
    # PAYG has no monthly fee: the renewal is the finished period's usage, every call of it.
    assert renewal.total == usage_of("payg", 4_000 + 20 + 980)


def test_a_cancel_stops_the_key_at_once_and_its_final_invoice_has_the_calls_up_to_it(stack: LocalStack) -> None:
    p = paid(stack, "standard")
    stripe = stack.stripe_emulator.client().v1
    middle = p.start + 10 * DAY
    stripe_to(stack, p.clock, middle)
    apim_to(stack, middle)
    record(stack, p.sid, 100_000, p.start + HOUR)  # the included calls, long visible
    assert [gateway(stack, p.key) for _ in range(30)] == [200] * 30
    record(stack, p.sid, 1_970, stack.apim_emulator.now().timestamp())  # the last second before the cancel
    assert p.consumer.unsubscribe(p.sid).status_code == 200
    assert gateway(stack, p.key) == 401  # at once
    # Nothing runs queued work until the test settles: the final invoice job has not run yet.
    waiting = stripe.subscriptions.retrieve(p.sid)
    assert (waiting.status, waiting.cancel_at_period_end) == ("active", True)
    assert len(invoices(stack, p.sid)) == 1  # no final invoice before APIM shows the last calls
    # Nothing is owed yet, but will be: no new paid subscription meanwhile (issue 16's rule).
    waiting_page = p.consumer.open(product_subscribe_link(p.consumer.portal_home(), "payg"))
    assert waiting_page.status_code == 402
    assert "still being billed" in waiting_page.text
    stack.settle()  # Stripe's webhooks for the change (still "active" in Stripe) keep the key off
    assert gateway(stack, p.key) == 401
    stack.settle_delayed()  # the final invoice job, after the report lag
    ended = stripe.subscriptions.retrieve(p.sid)
    assert ended.status == "canceled"
    final = stripe.invoices.retrieve(str(ended.latest_invoice))
    stripe_to(stack, p.clock, middle + 2 * HOUR)
    final = stripe.invoices.retrieve(final.id)
    assert final.status == "paid"
    # Every call up to the cancel; the monthly fee was paid in advance and is neither charged nor credited.
    assert final.total == usage_of("standard", 100_000 + 30 + 1_970)
    assert final.total > 0  # the calls beyond the included 100,000 are what the lag would have hidden
    assert "Continue to payment" in p.consumer.subscribe_page("payg").text  # paid: free to subscribe again


def test_a_cancel_seconds_before_the_period_end_charges_no_new_period(stack: LocalStack) -> None:
    p = paid(stack, "standard")
    stripe = stack.stripe_emulator.client().v1
    stripe_to(stack, p.clock, p.end - 5)
    apim_to(stack, p.end - 5)
    record(stack, p.sid, 100_500, p.end - 6)
    assert p.consumer.unsubscribe(p.sid).status_code == 200
    # The period ends before the final invoice job runs: Stripe must end the subscription, not renew it.
    stripe_to(stack, p.clock, p.end + 60)
    stack.settle_delayed()
    stripe_to(stack, p.clock, p.end + 2 * HOUR)
    ended = stripe.subscriptions.retrieve(p.sid)
    assert (ended.status, ended.ended_at) == ("canceled", p.end)
    first, *later = invoices(stack, p.sid)
    flat_fee = MODELS.product("standard").flat_fee_minor
    assert first.total == flat_fee  # the period, in advance
    assert [inv.status for inv in later] == ["paid"]  # one more: the period's usage, nothing for a next one
    assert later[0].total == usage_of("standard", 100_500)
    assert later[0].total > 0


def test_an_invoice_whose_draft_window_is_too_short_for_the_lag_is_reported(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.stripe_emulator.save_invoice_finalization_grace_period(60)  # the provider set a minute in Stripe
    p = paid(stack, "payg")
    with caplog.at_level(logging.ERROR):
        stripe_to(stack, p.clock, p.end + 30)
    renewal = invoices(stack, p.sid)[-1]
    assert renewal.automatically_finalizes_at == renewal.created + 60
    (error,) = draft_window_errors(caplog)
    assert renewal.id in error
    assert "Invoice finalization grace period" in error
    # The closing report needs 3 s of lag, no confirmation delay on this stack, and up to a minute of
    # queue polling for each of its three messages: 183 s, 123 s more than the 60 s: 3 minutes, rounded up.
    assert "by at least 3 min" in error
