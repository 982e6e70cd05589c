"""Free trials end to end on the local stack, with Stripe test clocks: the portal's offer, Checkout, the key
during the trial, the reminder mail, the first real invoice (paid or declined), and one trial per consumer
and product, also across a closed account and two Checkouts completed side by side.

Expected amounts come from the pricing engine and revenue-model.md's reference table, never from the
code under test: a trial bills nothing, and its end bills the first month as a subscription start would.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from billing.access.sync import sync_subscription
from billing.adapters.storage import ensure_table
from billing.bootstrap import services
from billing.models import MonetizationModels
from billing.portal.trials import mail_key, trial_keys
from billing.pricing import quote
from billing.store.tables import TRIALS_TABLE
from billing.store.trials import TrialLedger
from devstack.consumer import DEFAULT_PASSWORD, Consumer
from devstack.stack import LocalStack
from emulators.apim.delegation import delegation_url
from tests.trials.conftest import TRIAL_DAYS

pytestmark = pytest.mark.storage
DAY, HOUR = 86400, 3600


# ---- helpers --------------------------------------------------------------------------------------
def _onboard(stack: LocalStack, email: str | None = None) -> tuple[Consumer, str, str]:
    """(consumer, APIM user id, test clock): signed up, its Stripe customer on a clock at the present."""
    consumer = stack.consumer(email)
    uid = consumer.sign_up()
    clock, _ = stack.customer_on_test_clock(uid, consumer.email, int(time.time()))
    return consumer, uid, clock


def _stripe(stack: LocalStack) -> Any:
    return stack.stripe_emulator.client().v1


def _subscriptions(stack: LocalStack, uid: str) -> list[Any]:
    customer = stack.customer_of(uid)
    found = _stripe(stack).subscriptions.list(params={"customer": customer, "status": "all", "limit": 100}).data
    return sorted(found, key=lambda s: s.created)


def _invoices(stack: LocalStack, sid: str) -> list[Any]:
    found = _stripe(stack).invoices.list(params={"subscription": sid, "limit": 100}).data
    return sorted(found, key=lambda inv: (inv.created, inv.number or ""))


def _advance(stack: LocalStack, clock: str, to: int) -> None:
    _stripe(stack).test_helpers.test_clocks.advance(clock, params={"frozen_time": to})
    stack.settle_delayed()


def _portal_state(consumer: Consumer, sid: str) -> tuple[str, str]:
    (found,) = [s for s in consumer.subscriptions() if s.subscription_id == sid]
    return found.state, found.primary_key


def _gateway(stack: LocalStack, key: str) -> int:
    return requests.get(
        f"{stack.apim_emulator.gateway_url}/echo/hello", headers={"Ocp-Apim-Subscription-Key": key}, timeout=10
    ).status_code


def _start_trial(stack: LocalStack, consumer: Consumer, product_id: str) -> tuple[Any, str]:
    """Subscribe through the portal and Checkout; (the Stripe subscription, its working key)."""
    consumer.subscribe_and_pay(product_id, f"{product_id} trial")
    stack.settle_delayed()
    (sub,) = _subscriptions(stack, consumer.user_id)
    state, key = _portal_state(consumer, sub.id)
    assert (sub.status, state) == ("trialing", "active")
    assert _gateway(stack, key) == 200  # the key works during the trial
    return sub, key


def _reminders(stack: LocalStack, email: str) -> list[Any]:
    return [m for m in stack.mail_server.messages(to=email) if m.subject.startswith("Your free trial")]


# ---- a trial that converts -----------------------------------------------------------------------------
def test_a_trial_converts_and_every_invoice_is_the_pricing_engines_quote(
    stack: LocalStack, trial_models: MonetizationModels
) -> None:
    standard = trial_models.product("standard")
    consumer, _, clock = _onboard(stack)
    page = consumer.subscribe_page("standard")
    assert f"{TRIAL_DAYS} days free, then USD 89.95 a month" in page.text  # revenue-model.md: "$89.95 flat"
    assert "Start the free trial" in page.text
    sub, key = _start_trial(stack, consumer, "standard")
    assert sub.trial_end - sub.trial_start == TRIAL_DAYS * DAY
    (first,) = _invoices(stack, sub.id)
    assert (first.status, first.total) == ("paid", 0)  # nothing charged at the start

    # 150,000 calls in the trial: beyond the 100,000 included, and still never billed.
    stack.apim_emulator.record_usage(sub.id, 150_000, at=datetime.now(UTC))

    # Three days before the end Stripe says so; the app mails the consumer (from its work queue).
    _advance(stack, clock, sub.trial_end - 3 * DAY - 60)
    assert _reminders(stack, consumer.email) == []
    _advance(stack, clock, sub.trial_end - 3 * DAY + 60)
    (mail,) = _reminders(stack, consumer.email)
    ends = datetime.fromtimestamp(sub.trial_end, UTC)
    assert mail.subject == f"Your free trial of Standard ends on {ends:%d %B %Y}"
    assert f"ends on {ends:%d %B %Y at %H:%M} UTC" in mail.text
    assert "USD 89.95 a month, charged in advance" in mail.text

    # The trial's end: the first real invoice, charged an hour later, is the first month's quote with none
    # of the trial's calls (the pricing engine's quote for 0 calls; revenue-model.md: standard, $89.95).
    _advance(stack, clock, sub.trial_end + 300)
    _advance(stack, clock, sub.trial_end + 2 * HOUR)
    conversion = _invoices(stack, sub.id)[1]
    assert (conversion.billing_reason, conversion.status) == ("subscription_cycle", "paid")
    assert conversion.total == quote(standard, 0).total == 8995
    assert _portal_state(consumer, sub.id)[0] == "active"
    assert _gateway(stack, key) == 200
    assert len(_reminders(stack, consumer.email)) == 1

    # The first paid month: 200,000 calls (APIM's clock past the trial's end), billed in arrears with the
    # next month's fee: the quote for 200,000 calls (revenue-model.md: standard 200,000 calls, $189.95).
    apim = stack.apim_emulator
    apim.advance_clock(sub.trial_end + HOUR - apim.now().timestamp())
    apim.record_usage(sub.id, 200_000, at=apim.now())
    period_end = _stripe(stack).subscriptions.retrieve(sub.id)["items"].data[0].current_period_end
    _advance(stack, clock, period_end + 300)
    _advance(stack, clock, period_end + 2 * HOUR)
    renewal = _invoices(stack, sub.id)[2]
    assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", "paid")
    assert renewal.total == quote(standard, 200_000).total == 18995


# ---- a trial whose first charge fails ------------------------------------------------------------------
def test_a_declined_first_charge_at_the_trial_end_suspends_the_key(
    stack: LocalStack, trial_models: MonetizationModels
) -> None:
    consumer, _, clock = _onboard(stack)
    sub, key = _start_trial(stack, consumer, "basic")
    stripe = _stripe(stack)
    failing = stripe.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": sub.customer})
    stripe.subscriptions.update(sub.id, params={"default_payment_method": failing.id})  # Checkout's card goes
    _advance(stack, clock, sub.trial_end + 2 * HOUR)
    assert stripe.subscriptions.retrieve(sub.id).status == "past_due"
    conversion = _invoices(stack, sub.id)[1]
    assert (conversion.status, conversion.amount_remaining) == ("open", quote(trial_models.product("basic"), 0).total)
    assert _portal_state(consumer, sub.id)[0] == "suspended"
    assert _gateway(stack, key) == 401  # as after any failed renewal


# ---- one trial per consumer and product ------------------------------------------------------------------
def _close_account(stack: LocalStack, consumer: Consumer) -> None:
    url = delegation_url(
        f"{stack.app_url}/api/delegation", stack.delegation_key_b64, "CloseAccount", userId=consumer.user_id
    )
    page = consumer.open(url)
    assert page.status_code == 200, page.text
    done = consumer.submit(page, {"password": DEFAULT_PASSWORD})
    assert "Your account is closed" in done.text, done.text
    stack.settle_delayed()


def test_no_second_trial_after_closing_the_account_and_signing_up_again(stack: LocalStack) -> None:
    consumer, uid, _ = _onboard(stack)
    first, _ = _start_trial(stack, consumer, "basic")
    again_page = consumer.subscribe_page("basic")  # holding it: nothing to offer
    assert "days free" not in again_page.text
    _close_account(stack, consumer)
    assert _stripe(stack).subscriptions.retrieve(first.id).status == "canceled"

    # The same address signs up again: a new APIM user, a new Stripe customer, and no trial.
    reborn, new_uid, _ = _onboard(stack, consumer.email)
    assert new_uid != uid
    page = reborn.subscribe_page("basic")
    assert "days free" not in page.text
    assert "You have had the free trial of Basic already" in page.text
    assert "USD 14.95 a month" in page.text
    answer = reborn.subscribe("basic", "paid at once")
    checkout = reborn.open(answer.headers["Location"])
    assert "free trial" not in checkout.text
    assert "Due today: <strong>$14.95</strong>" in checkout.text
    reborn.pay(answer.headers["Location"])
    stack.settle_delayed()
    (paid,) = _subscriptions(stack, new_uid)
    assert (paid.status, paid.trial_end) == ("active", None)
    assert _invoices(stack, paid.id)[0].amount_paid == 1495  # revenue-model.md: basic, $14.95


def test_two_checkouts_completed_side_by_side_give_one_trial(stack: LocalStack) -> None:
    consumer, uid, _ = _onboard(stack)
    # Both forms are offered the trial: nobody had it, and nothing is granted while Stripe's events wait.
    endpoint = stack.webhook_endpoint_id
    _stripe(stack).webhook_endpoints.update(endpoint, params={"disabled": True})
    first = consumer.subscribe("basic", "tab one")
    consumer.pay(first.headers["Location"])
    second = consumer.subscribe("basic", "tab two")
    consumer.pay(second.headers["Location"])
    subs = _subscriptions(stack, uid)
    assert [s.status for s in subs] == ["trialing", "trialing"]

    # Their first grants run at the same moment (two instances, each with the event of one subscription).
    ports = services().access_ports()
    start = threading.Barrier(2)
    results: dict[str, str] = {}

    def grant(sid: str) -> None:
        start.wait()
        results[sid] = sync_subscription(sid, ports, event_created=int(time.time())).outcome

    threads = [threading.Thread(target=grant, args=(s.id,)) for s in subs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == ["changed", "ignored"]
    (granted,) = [sid for sid, outcome in results.items() if outcome == "changed"]
    (refused,) = [sid for sid, outcome in results.items() if outcome == "ignored"]
    stripe = _stripe(stack)
    assert (stripe.subscriptions.retrieve(granted).status, stripe.subscriptions.retrieve(refused).status) == (
        "trialing",
        "canceled",
    )
    assert sum(inv.amount_paid for inv in _invoices(stack, refused)) == 0  # the refused one charged nothing
    assert [s.subscription_id for s in consumer.subscriptions() if s.state == "active"] == [granted]
    ledger = TrialLedger(ensure_table(TRIALS_TABLE))
    assert ledger.holder("basic", trial_keys(uid, mail_key(consumer.email))) == granted
