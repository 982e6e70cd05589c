"""A consumer who wants the API without paying, against the portal and the gateway (issue 16).

Each test takes the attacker's view (what they try, what they get) and the owner's or provider's
(nothing changed, what is owed). Stripe delivers real webhooks to the app here, so keys are granted,
suspended and reactivated by the app's own webhook handling; `stack.settle()` runs the queued work.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from billing.cli import main as billing_main
from billing.model_loader import load_models
from billing.pricing import quote
from devstack.azurite import Azurite
from devstack.consumer import Consumer, hidden_fields
from devstack.stack import LocalStack, StackOptions
from emulators.apim.delegation import delegation_url

pytestmark = pytest.mark.storage

HOUR = 3600


@pytest.fixture(scope="module")
def stack(azurite: Azurite) -> Iterator[LocalStack]:
    options = StackOptions(
        use_func=False, azurite=azurite, apply_catalog=True, stripe_webhooks=True, run_queue_workers=False
    )
    with LocalStack(options) as running:
        yield running


def link(stack: LocalStack, operation: str, **fields: str) -> str:
    """A delegation link signed as APIM signs it (a new salt each time, as the portal makes them)."""
    return delegation_url(f"{stack.app_url}/api/delegation", stack.delegation_key_b64, operation, **fields)


def call(stack: LocalStack, key: str) -> int:
    answer = requests.get(
        f"{stack.apim_emulator.gateway_url}/echo", headers={"Ocp-Apim-Subscription-Key": key}, timeout=30
    )
    return answer.status_code


def subscription(consumer: Consumer, product_id: str) -> Any:
    return next(s for s in consumer.subscriptions() if s.product_id == product_id)


def on_a_test_clock(stack: LocalStack, consumer: Consumer, *, minutes_ago: int = 0) -> str:
    """The consumer's Stripe customer, made ahead on a test clock (as the demo does): the clock's id."""
    frozen = int(time.time()) - 60 * minutes_ago
    return stack.customer_on_test_clock(consumer.user_id, consumer.email, frozen)[0]


def declining_card_on(stack: LocalStack, subscription_id: str) -> None:
    """The subscription's card replaced by one that declines (Checkout put the card on the subscription)."""
    stripe = stack.stripe_emulator.client().v1
    customer = str(stripe.subscriptions.retrieve(subscription_id).customer)
    method = stripe.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer})
    stripe.subscriptions.update(subscription_id, params={"default_payment_method": method.id})


def advance(stack: LocalStack, clock_id: str, to: int) -> None:
    stripe = stack.stripe_emulator.client().v1
    stripe.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": to})
    deadline = time.monotonic() + 60
    while stripe.test_helpers.test_clocks.retrieve(clock_id).status != "ready":
        assert time.monotonic() < deadline, "the test clock did not finish advancing"
        time.sleep(0.05)
    stack.settle_delayed()  # closing reports wait for the report lag


# ---- signed links act only for their owner, once -------------------------------------------------
def test_another_consumers_links_change_nothing_from_my_browser(stack: LocalStack) -> None:
    owner, attacker = stack.consumer(), stack.consumer()
    owner.sign_up()
    attacker.sign_up()
    assert owner.subscribe("free", "owner's key").status_code == 200
    sid = subscription(owner, "free").subscription_id
    for operation, fields in (
        ("Unsubscribe", {"subscriptionId": sid}),
        ("Renew", {"subscriptionId": sid}),
        ("ChangeProfile", {"userId": owner.user_id}),
        ("ChangePassword", {"userId": owner.user_id}),
        ("CloseAccount", {"userId": owner.user_id}),
        ("Subscribe", {"productId": "payg", "userId": owner.user_id}),
    ):
        answer = attacker.open(link(stack, operation, **fields))
        assert answer.status_code == 403, (operation, answer.text)
        assert "belongs to another account" in answer.text
        assert 'name="csrf_token"' not in answer.text  # no form to post
        # Not signed in at all: asked to sign in, nothing shown either.
        anonymous = stack.browser().get(link(stack, operation, **fields), allow_redirects=False, timeout=30)
        assert anonymous.status_code == 401
    # The owner's view: the subscription, the name and the account are as they were.
    assert subscription(owner, "free").state == "active"
    apim = stack.apim_emulator
    user = apim.management_client().user.get(apim.resource_group, apim.service_name, owner.user_id)
    assert (user.first_name, user.last_name) == ("Ada", "Lovelace")
    # And the owner's own link works.
    page = owner.open(link(stack, "Unsubscribe", subscriptionId=sid))
    assert page.status_code == 200
    assert "Cancel subscription" in page.text


def test_a_used_link_does_nothing_again(stack: LocalStack) -> None:
    owner = stack.consumer()
    owner.sign_up()
    assert owner.subscribe("free", "key").status_code == 200
    sid = subscription(owner, "free").subscription_id
    unsubscribe = link(stack, "Unsubscribe", subscriptionId=sid)
    page = owner.open(unsubscribe)
    assert page.status_code == 200
    replay = owner.open(unsubscribe)  # from the browser's history, or a log
    assert replay.status_code == 409
    assert "This link was used" in replay.text
    # The same signature, read as another operation (APIM does not sign the operation), is the same salt.
    renew = unsubscribe.replace("operation=Unsubscribe", "operation=Renew")
    assert owner.open(renew).status_code == 409
    assert subscription(owner, "free").state == "active"
    # The form shown the first time still does what it says, once.
    assert owner.submit(page, {}).status_code == 200
    assert subscription(owner, "free").state == "cancelled"


@pytest.mark.parametrize(
    ("operation", "fields", "status", "says"),
    [
        ("ChangeProfile", {"userId": "not a user id!"}, 403, "belongs to another account"),
        ("ChangeProfile", {"userId": "nobody-here"}, 403, "belongs to another account"),
        ("Unsubscribe", {"subscriptionId": "sub_that_apim_never_had"}, 404, "does not know"),
        ("Renew", {"subscriptionId": "has spaces and /slashes"}, 404, "does not know"),
    ],
)
def test_links_naming_what_apim_does_not_know_answer_4xx(
    stack: LocalStack, operation: str, fields: dict[str, str], status: int, says: str
) -> None:
    consumer = stack.consumer()
    consumer.sign_up()
    answer = consumer.open(link(stack, operation, **fields))
    assert answer.status_code == status, answer.text
    assert says in answer.text


# ---- one Free subscription and one quota per consumer --------------------------------------------
def test_eight_free_forms_at_once_make_one_subscription(stack: LocalStack) -> None:
    consumer = stack.consumer()
    consumer.sign_up()
    forms = [
        hidden_fields(consumer.open(link(stack, "Subscribe", productId="free", userId=consumer.user_id)).text)
        for _ in range(8)
    ]

    def send(fields: dict[str, str]) -> int:
        answer = consumer.session.post(
            f"{consumer.app_url}/api/portal/subscribe", data={**fields, "name": "k"}, allow_redirects=False, timeout=60
        )
        return answer.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, forms))
    assert set(statuses) <= {200, 409}, statuses
    assert [s.product_id for s in consumer.subscriptions()] == ["free"]


def test_a_resubscribed_free_consumer_gets_100_calls_in_the_month(stack: LocalStack) -> None:
    consumer = stack.consumer()
    consumer.sign_up()
    assert consumer.subscribe("free", "first").status_code == 200
    first = subscription(consumer, "free")
    successes = sum(call(stack, first.primary_key) == 200 for _ in range(60))
    assert consumer.unsubscribe(first.subscription_id).status_code == 200
    assert call(stack, first.primary_key) == 401  # a cancelled subscription's key is not valid
    assert consumer.subscribe("free", "second").status_code == 200
    second = subscription(consumer, "free")
    statuses = [call(stack, second.primary_key) for _ in range(60)]
    successes += statuses.count(200)
    assert successes == 100  # not 120: the month's count went on
    assert statuses[-1] == 403


# ---- debts before new keys --------------------------------------------------------------------------
def test_an_unpaid_payg_consumer_gets_no_new_key_until_the_invoice_is_paid(stack: LocalStack) -> None:
    attacker = stack.consumer()
    attacker.sign_up()
    clock = on_a_test_clock(stack, attacker)
    stripe = stack.stripe_emulator.client().v1
    attacker.subscribe_and_pay("payg", "metered")
    stack.settle()
    paid = subscription(attacker, "payg")
    assert call(stack, paid.primary_key) == 200
    kept_form = attacker.subscribe_page("basic")  # opened while nothing was owed, posted later
    assert "Continue to payment" in kept_form.text
    # 1,000,005 calls, then a card that declines the renewal.
    stack.apim_emulator.record_usage(paid.subscription_id, 1_000_004, at=datetime.now(UTC))
    declining_card_on(stack, paid.subscription_id)
    sub = stripe.subscriptions.retrieve(paid.subscription_id)
    period_end = int(sub["items"].data[0].current_period_end)
    advance(stack, clock, period_end + 300)
    advance(stack, clock, period_end + 3 * HOUR)
    assert subscription(attacker, "payg").state == "suspended"
    assert call(stack, paid.primary_key) == 401
    # The attacker cancels the product that left the debt, and tries PAYG again.
    assert attacker.unsubscribe(paid.subscription_id).status_code == 200
    stack.settle_delayed()  # the cancellation's final invoice follows after the report lag
    sessions_before = len(stripe.checkout.sessions.list(params={"limit": 100}).data)
    page = attacker.open(link(stack, "Subscribe", productId="payg", userId=attacker.user_id))
    assert page.status_code == 402
    assert 'name="offer"' not in page.text  # no form while something is owed
    assert "USD 1,500.01" in page.text  # 1,000,005 calls at USD 0.15 per 100, by hand
    pay_url = page.text.split('class="pay" href="', 1)[1].split('"', 1)[0]
    assert pay_url.startswith(stack.stripe_emulator.base_url + "/")
    # A form kept from earlier makes no Checkout either.
    refused = attacker.submit(kept_form, {"name": "again"})
    assert refused.status_code == 402
    assert "unpaid invoices" in refused.text
    assert len(stripe.checkout.sessions.list(params={"limit": 100}).data) == sessions_before
    # Paid on Stripe's hosted invoice page: subscribing works again, and the new key works.
    paid_page = attacker.session.post(
        pay_url, data={"cardNumber": "4242424242424242", "cardExpiry": "12 / 34", "cardCvc": "123"}, timeout=30
    )
    assert "status <strong>paid</strong>" in paid_page.text
    stack.settle()
    attacker.subscribe_and_pay("payg", "metered again")
    stack.settle()
    renewed = next(s for s in attacker.subscriptions() if s.name == "metered again")
    assert renewed.state == "active"
    assert call(stack, renewed.primary_key) == 200


def test_a_consumer_without_debts_is_not_held_back(stack: LocalStack) -> None:
    consumer = stack.consumer(f"clean-{uuid.uuid4().hex[:8]}@example.com")
    consumer.sign_up()
    page = consumer.subscribe_page("payg")
    assert page.status_code == 200
    assert "Continue to payment" in page.text
    assert "pay what is owed" not in page.text


# ---- a credit limit on metered products -----------------------------------------------------------
def push_usage(stack: LocalStack, as_of: datetime) -> None:
    assert billing_main(["usage", "push", "--as-of", as_of.isoformat()]) == 0
    stack.settle()


def test_a_payg_consumer_past_the_spending_limit_is_invoiced_then_suspended_until_paid(stack: LocalStack) -> None:
    payg = load_models().product("payg")
    assert payg.spending_limit_minor == 50_000  # USD 500.00 in payment/monetizationModels.json
    consumer = stack.consumer()
    consumer.sign_up()
    # The period began ten minutes ago, so the calls below are in APIM's past, as reports need them.
    clock = on_a_test_clock(stack, consumer, minutes_ago=10)
    stripe = stack.stripe_emulator.client().v1
    consumer.subscribe_and_pay("payg", "metered")
    stack.settle()
    key = subscription(consumer, "payg")
    sub = stripe.subscriptions.retrieve(key.subscription_id)
    # The app put the product's spending limit on the subscription when it became active.
    assert sub.billing_thresholds is not None
    assert (sub.billing_thresholds.amount_gte, sub.billing_thresholds.reset_billing_cycle_anchor) == (50_000, False)
    declining_card_on(stack, key.subscription_id)
    customer = str(sub.customer)
    start = datetime.fromtimestamp(sub["items"].data[0].current_period_start + 5, UTC)
    push_usage(stack, start)  # the first push of the period opens its usage window
    calls = 400_001  # USD 600.0015: past the limit
    stack.apim_emulator.record_usage(key.subscription_id, calls, at=start + timedelta(seconds=10))
    advance(stack, clock, int(start.timestamp()) + 30)  # Stripe's present, so the events are not ahead of it
    push_usage(stack, start + timedelta(seconds=20))
    threshold = [
        i
        for i in stripe.invoices.list(params={"subscription": key.subscription_id, "limit": 10}).data
        if i.billing_reason == "subscription_threshold"
    ]
    assert len(threshold) == 1
    # Stripe drafts it for an hour, then charges the card, which declines: the key stops working.
    advance(stack, clock, int(start.timestamp()) + 2 * HOUR)
    invoice = stripe.invoices.retrieve(threshold[0].id)
    assert invoice.status == "open"
    assert invoice.amount_due == quote(payg, calls).total == 60_000  # by hand: 400,001 x 0.15 / 100 = 600.00
    assert subscription(consumer, "payg").state == "suspended"
    assert call(stack, key.primary_key) == 401
    # Paid: the key works again, and the period goes on with its anchor unchanged.
    good = stripe.payment_methods.attach("pm_card_visa", params={"customer": customer})
    stripe.invoices.pay(invoice.id, params={"payment_method": good.id})
    stack.settle()
    assert subscription(consumer, "payg").state == "active"
    assert call(stack, key.primary_key) == 200
    after = stripe.subscriptions.retrieve(key.subscription_id)
    assert after["items"].data[0].current_period_end == sub["items"].data[0].current_period_end


# ---- what the attack review found: kept Checkout pages, closing to escape a debt -------------------
def test_a_checkout_page_kept_from_earlier_grants_no_second_subscription(stack: LocalStack) -> None:
    consumer = stack.consumer()
    consumer.sign_up()
    stripe = stack.stripe_emulator.client().v1
    first_form, second_form = consumer.subscribe_page("payg"), consumer.subscribe_page("payg")
    kept = consumer.submit(first_form, {"name": "tab one"})
    assert kept.status_code == 303
    other = consumer.submit(second_form, {"name": "tab two"})
    assert other.status_code == 303
    # The second form's Checkout ended the first one's: only one Checkout per consumer and product.
    kept_id = kept.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    assert stripe.checkout.sessions.retrieve(kept_id).status == "expired"
    consumer.pay(other.headers["Location"])
    stack.settle()
    assert [(s.name, s.state) for s in consumer.subscriptions()] == [("tab two", "active")]
    # The same form sent twice (a double click) keeps its one session.
    again = consumer.subscribe_page("basic")
    assert (
        consumer.submit(again, {"name": "x"}).headers["Location"]
        == consumer.submit(again, {"name": "x"}).headers["Location"]
    )


def test_a_second_paid_subscription_completed_anyway_is_cancelled_before_any_key(stack: LocalStack) -> None:
    consumer = stack.consumer()
    consumer.sign_up()
    stripe = stack.stripe_emulator.client().v1
    consumer.subscribe_and_pay("payg", "first")
    stack.settle()
    # A Checkout made past the portal (as a race between two tabs can), completed and paid.
    customer = stack.customer_of(consumer.user_id)
    price = stripe.prices.list(params={"lookup_keys": ["payg-usage"]}).data[0]
    session = stripe.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer,
            "line_items": [{"price": price.id}],
            "subscription_data": {
                "metadata": {
                    "apim_user_id": consumer.user_id,
                    "apim_product_id": "payg",
                    "apim_subscription_name": "second",
                }
            },
            "success_url": f"{stack.app_url}/api/portal/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{stack.app_url}/api/portal/checkout/cancelled",
        }
    )
    assert session.url is not None
    consumer.pay(session.url)
    stack.settle()
    second = stripe.checkout.sessions.retrieve(session.id).subscription
    assert stripe.subscriptions.retrieve(str(second)).status == "canceled"
    assert [s.name for s in consumer.subscriptions()] == ["first"]  # no key for the second


def test_closing_the_account_does_not_escape_a_debt(stack: LocalStack) -> None:
    consumer = stack.consumer()
    consumer.sign_up()
    stripe = stack.stripe_emulator.client().v1
    _, customer = stack.customer_on_test_clock(consumer.user_id, consumer.email, int(time.time()))
    # What is owed: an invoice left open by a declined card (Basic's USD 14.95 fee).
    declining = stripe.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer})
    price = stripe.prices.list(params={"lookup_keys": ["basic-flat"]}).data[0]
    stripe.subscriptions.create(
        params={"customer": customer, "items": [{"price": price.id}], "default_payment_method": declining.id}
    )
    assert [i.status for i in stripe.invoices.list(params={"customer": customer}).data] == ["open"]
    page = consumer.open(link(stack, "CloseAccount", userId=consumer.user_id))
    refused = consumer.submit(page, {"password": consumer.password})
    assert refused.status_code == 402
    assert "unpaid invoices" in refused.text
    # Had the account gone some other way, the address keeps the debt: a new account with it owes it too.
    client = stack.apim_emulator.management_client()
    client.user.begin_delete(
        stack.apim_emulator.resource_group,
        stack.apim_emulator.service_name,
        consumer.user_id,
        "*",
        delete_subscriptions=True,
    ).result()
    from billing.adapters.storage import ensure_table  # noqa: PLC0415
    from billing.store.accounts import email_key  # noqa: PLC0415
    from billing.store.tables import ACCOUNTS_TABLE  # noqa: PLC0415

    ensure_table(ACCOUNTS_TABLE).delete_entity(email_key(consumer.email), "account")
    again = stack.consumer(consumer.email)
    again.sign_up()
    assert again.user_id != consumer.user_id
    page = again.open(link(stack, "Subscribe", productId="payg", userId=again.user_id))
    assert page.status_code == 402
    assert "USD 14.95" in page.text
