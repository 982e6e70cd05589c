"""Free trials under attack, on the local stack: free time of a higher product through a plan change, a second
trial through another APIM user whose address is the same mailbox written another way (case, a +tag,
Gmail's dots: `billing.portal.trials.trial_address`), and a second trial after cancelling the first."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
import requests

from devstack.consumer import Consumer
from devstack.stack import LocalStack
from tests.trials.test_trials_stack import _invoices, _onboard, _start_trial, _stripe, _subscriptions

pytestmark = pytest.mark.storage
DAY = 86400


def _paid_at_once(stack: LocalStack, consumer: Consumer, product: str) -> Any:
    """Subscribes through the portal: no trial offered, the first month due today, paid; the subscription."""
    page = consumer.subscribe_page(product)
    assert "days free" not in page.text
    assert "You have had the free trial of Basic already" in page.text
    answer = consumer.subscribe(product, "paid at once")
    checkout = consumer.open(answer.headers["Location"])
    assert "free trial" not in checkout.text
    assert "Due today: <strong>$14.95</strong>" in checkout.text
    consumer.pay(answer.headers["Location"])
    stack.settle_delayed()
    (paid,) = [s for s in _subscriptions(stack, consumer.user_id) if s.status != "canceled"]
    assert (paid.status, paid.trial_end) == ("active", None)
    assert _invoices(stack, paid.id)[0].amount_paid == 1495  # revenue-model.md: basic, $14.95
    return paid


def test_a_trial_cannot_be_upgraded_into_free_time_of_a_higher_product(stack: LocalStack) -> None:
    consumer, _uid, _ = _onboard(stack)
    sub, key = _start_trial(stack, consumer, "basic")
    for target in ("pro", "standard"):  # Pro has no trial; Standard's own trial is not given this way either
        assert consumer.plan_change_page(sub.id, target).status_code == 409
        assert consumer.change_plan(sub.id, target).status_code == 409
    current = _stripe(stack).subscriptions.retrieve(sub.id, params={"expand": ["items.data.price"]})
    assert (current.status, current.metadata["apim_product_id"]) == ("trialing", "basic")
    assert {i.price.lookup_key for i in current["items"].data} == {"basic-flat"}
    (portal,) = [s for s in consumer.subscriptions() if s.subscription_id == sub.id]
    assert (portal.product_id, portal.primary_key) == ("basic", key)


def test_no_second_trial_for_the_same_mailbox_written_another_way_nor_after_cancelling(stack: LocalStack) -> None:
    base = f"ada.trial{secrets.token_hex(3)}"
    first, _uid, _ = _onboard(stack, f"{base}@gmail.com")
    _start_trial(stack, first, "basic")
    # Another APIM user, the same mailbox: a +tag, other case, and Gmail's ignored dots.
    for address in (f"{base}+again@gmail.com", f"{base.replace('.', '').upper()}@googlemail.com"):
        other, _, _ = _onboard(stack, address)
        _paid_at_once(stack, other, "basic")
    # Cancelled in its trial, then subscribed again: no second trial either.
    fresh, fresh_uid, _ = _onboard(stack, f"bo.{secrets.token_hex(3)}@example.com")
    trial, _key = _start_trial(stack, fresh, "basic")
    assert fresh.unsubscribe(trial.id).status_code < 400
    stack.settle_delayed()
    deadline = time.monotonic() + 30
    while _stripe(stack).subscriptions.retrieve(trial.id).status != "canceled" and time.monotonic() < deadline:
        stack.settle_delayed()
    assert _stripe(stack).subscriptions.retrieve(trial.id).status == "canceled"
    assert sum(inv.amount_paid for inv in _invoices(stack, trial.id)) == 0
    _paid_at_once(stack, fresh, "basic")
    assert len(_subscriptions(stack, fresh_uid)) == 2


def test_a_replayed_trial_will_end_mails_the_reminder_once(stack: LocalStack) -> None:
    consumer, _uid, clock = _onboard(stack)
    sub, _key = _start_trial(stack, consumer, "basic")
    faults = f"{stack.stripe_emulator.base_url}/_emulator/faults"
    # Every webhook delivered twice from now on: Stripe "might occasionally send the same event more than once".
    assert requests.post(faults, json={"duplicate_webhooks": 1.0}, timeout=10).status_code == 200
    try:
        _stripe(stack).test_helpers.test_clocks.advance(clock, params={"frozen_time": sub.trial_end - 3 * DAY + 60})
        stack.settle_delayed()
    finally:
        requests.post(faults, json={"duplicate_webhooks": 0.0}, timeout=10)
    reminders = [m for m in stack.mail_server.messages(to=consumer.email) if m.subject.startswith("Your free trial")]
    assert len(reminders) == 1
