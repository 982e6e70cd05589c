"""The delegated account operations end to end over HTTP: change password, change profile, close
account, renew; their refusals (forged links, CSRF-less posts, wrong passwords); and the single-use
Subscribe link that signs a consumer in when sign-in is left to APIM.

Links are signed as APIM signs them (the emulator's `delegation_url`): the emulator's portal page
shows only Sign up / Sign in / Subscribe / Cancel links, not the profile links of a real portal.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.apimanagement.models import (
    SubscriptionCreateParameters,
    SubscriptionUpdateParameters,
    UserUpdateParameters,
)

from billing.adapters.storage import ensure_table
from billing.bootstrap import services
from billing.portal import account_ops, passwords
from billing.portal.records import Account
from billing.records import SubscriptionLink
from billing.store.accounts import Accounts
from billing.store.subscriptions import SubscriptionLinks
from billing.store.tables import ACCOUNTS_TABLE, SUBSCRIPTIONS_TABLE
from devstack.consumer import DEFAULT_PASSWORD, Consumer, hidden_fields
from emulators.apim.delegation import delegation_url
from tests.portal import fakes

pytestmark = pytest.mark.storage

NEW_PASSWORD = "a brand new secret 42"


# ---- helpers ------------------------------------------------------------------------------------
def link(stack: Any, operation: str, salt: str | None = None, **fields: str) -> str:
    """A delegation link signed with the stack's validation key, as APIM makes it."""
    return delegation_url(f"{stack.app_url}/api/delegation", stack.delegation_key_b64, operation, salt=salt, **fields)


def signed_up(stack: Any) -> Consumer:
    consumer: Consumer = stack.consumer()
    consumer.sign_up()
    return consumer


def apim(stack: Any) -> tuple[Any, str, str]:
    return stack.apim.management_client(), stack.apim.resource_group, stack.apim.service_name


def account_row(email: str) -> Any:
    return Accounts(ensure_table(ACCOUNTS_TABLE)).get(email)


def open_form(consumer: Consumer, url: str, expected: str) -> requests.Response:
    page = consumer.open(url)
    assert page.status_code == 200, page.text
    assert expected in page.text
    return page


def grant_paid(stack: Any, uid: str) -> Any:
    """What the webhook area (issue 7) does once the first invoice is paid: the APIM subscription named
    after the Stripe subscription, active, and its link row. Done by hand: no webhooks reach the app here."""
    client = stack.stripe.client()
    customer = stack.customer_of(uid)
    sub = client.v1.subscriptions.list(params={"customer": customer}).data[0]
    pid, name = sub.metadata["apim_product_id"], sub.metadata["apim_subscription_name"]
    mgmt, rg, svc = apim(stack)
    mgmt.subscription.create_or_update(
        rg,
        svc,
        sub.id,
        SubscriptionCreateParameters(
            owner_id=f"/users/{uid}", scope=f"/products/{pid}", display_name=name, state="active"
        ),
    )
    items = sub["items"].data
    usage = [i.id for i in items if i.price.recurring and i.price.recurring.usage_type == "metered"]
    SubscriptionLinks(ensure_table(SUBSCRIPTIONS_TABLE)).create_or_replace(
        SubscriptionLink(
            apim_subscription_id=sub.id,
            apim_user_id=uid,
            product_id=pid,
            subscription_name=name,
            stripe_customer_id=customer,
            stripe_subscription_id=sub.id,
            stripe_usage_item_id=usage[0] if usage else "",
            stripe_status=sub.status,
            apim_state="active",
            current_period_start=items[0].current_period_start,
            current_period_end=items[0].current_period_end,
            stripe_state_at=sub.created,
        )
    )
    return sub


def free_subscription(consumer: Consumer, name: str = "free key") -> str:
    answer = consumer.subscribe("free", name)
    assert answer.status_code == 200, answer.text
    return next(s.subscription_id for s in consumer.subscriptions() if s.name == name)


# ---- ChangePassword -----------------------------------------------------------------------------
def test_change_password_end_to_end(stack: Any) -> None:
    consumer = signed_up(stack)
    page = open_form(consumer, link(stack, "ChangePassword", userId=consumer.user_id), consumer.email)
    # The new password follows the sign-up policy, and must be typed twice alike.
    short = consumer.submit(
        page, {"current_password": DEFAULT_PASSWORD, "new_password": "short", "confirm_password": "short"}
    )
    assert short.status_code == 400
    assert f"at least {passwords.MIN_LENGTH} characters" in short.text
    differ = consumer.submit(
        short,
        {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD + "x"},
    )
    assert differ.status_code == 400
    assert "differ" in differ.text
    done = consumer.submit(
        differ, {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text
    assert "Your password is changed" in done.text
    # Signing in elsewhere: the old password no longer works, the new one does.
    elsewhere = stack.consumer(consumer.email)
    assert elsewhere.sign_in_answer(DEFAULT_PASSWORD).status_code == 401
    assert elsewhere.sign_in_answer(NEW_PASSWORD).status_code == 303


def test_wrong_current_passwords_count_toward_the_sign_in_limit(stack: Any) -> None:
    consumer = signed_up(stack)
    before = account_row(consumer.email).password_hash
    # Someone holding the owner's session cookie (a borrowed computer), without its device cookie.
    stranger = stack.consumer(consumer.email)
    stranger.session.cookies.set("portal_session", consumer.session.cookies.get("portal_session"), path="/api")
    page = open_form(stranger, link(stack, "ChangePassword", userId=consumer.user_id), "Current password")
    for _ in range(5):
        page = stranger.submit(
            page,
            {"current_password": "not my password", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
        )
        assert page.status_code == 401
        assert "the current password is wrong" in page.text
    # The right password is now refused without being checked, here and at sign-in ...
    locked = stranger.submit(
        page, {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    )
    assert locked.status_code == 429
    assert locked.headers["Retry-After"]
    assert stack.consumer(consumer.email).sign_in_answer(DEFAULT_PASSWORD).status_code == 429
    assert account_row(consumer.email).password_hash == before
    # ... except from the owner's browser, whose device cookie has an allowance of its own.
    own = open_form(consumer, link(stack, "ChangePassword", userId=consumer.user_id), "Current password")
    done = consumer.submit(
        own, {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text


# ---- ChangeProfile ------------------------------------------------------------------------------
def test_change_profile_updates_apim_and_the_account_keeping_the_user_state(stack: Any) -> None:
    consumer = signed_up(stack)
    mgmt, rg, svc = apim(stack)
    # An administrator blocked the user meanwhile: a name change must not unblock it (the SDK's
    # UserUpdateParameters would send state "active" unless told otherwise).
    mgmt.user.update(rg, svc, consumer.user_id, "*", UserUpdateParameters(state="blocked"))
    page = open_form(consumer, link(stack, "ChangeProfile", userId=consumer.user_id), 'value="Ada"')
    assert "cannot be changed here" in page.text  # the e-mail address: names only, said on the page
    empty = consumer.submit(page, {"first_name": " ", "last_name": "Hopper", "password": DEFAULT_PASSWORD})
    assert empty.status_code == 400
    assert "enter your first name" in empty.text
    wrong = consumer.submit(empty, {"first_name": "Grace", "last_name": "Hopper", "password": "not my password"})
    assert wrong.status_code == 401
    assert "the current password is wrong" in wrong.text
    assert mgmt.user.get(rg, svc, consumer.user_id).first_name == "Ada"
    done = consumer.submit(wrong, {"first_name": "Grace", "last_name": "Hopper", "password": DEFAULT_PASSWORD})
    assert done.status_code == 200, done.text
    user = mgmt.user.get(rg, svc, consumer.user_id)
    assert (user.first_name, user.last_name, user.email, user.state) == ("Grace", "Hopper", consumer.email, "blocked")
    row = account_row(consumer.email)
    assert (row.first_name, row.last_name) == ("Grace", "Hopper")


# ---- CloseAccount -------------------------------------------------------------------------------
def test_close_account_cancels_everything_with_a_final_invoice_and_signs_out(stack: Any) -> None:
    consumer = signed_up(stack)
    uid = consumer.user_id
    free_sid = free_subscription(consumer)
    # The consumer's Stripe customer lives on a test clock, so that the close happens an hour into
    # the period: a final invoice covers [period start, cancel), and in the same second it is empty.
    stripe = stack.stripe.client().v1
    clock_id, _ = stack.customer_on_test_clock(uid, consumer.email, int(time.time()))
    consumer.subscribe_and_pay("standard", "production")
    paid = grant_paid(stack, uid)
    stack.apim.record_usage(paid.id, 150_000, at=datetime.now(UTC))
    frozen = stripe.test_helpers.test_clocks.retrieve(clock_id).frozen_time
    stripe.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": frozen + 3600})
    page = open_form(consumer, link(stack, "CloseAccount", userId=uid), "This cannot be undone")
    assert "free key" in page.text
    assert "production" in page.text

    wrong = consumer.submit(page, {"password": "not my password"})
    assert wrong.status_code == 401
    assert stack.stripe.client().v1.subscriptions.retrieve(paid.id).status == "active"

    done = consumer.submit(wrong, {"password": DEFAULT_PASSWORD})
    assert done.status_code == 200, done.text
    assert "Your account is closed" in done.text
    assert re.search(r"portal_session=;.*Max-Age=0", done.headers["Set-Cookie"])
    assert f'href="{stack.apim.portal_url}/"' in done.text  # the portal's home: it has no sign-out page

    # Until the final invoice job runs (after the report lag; 0 on this stack), Stripe keeps the
    # subscription, set to end at its period end so that it cannot renew a closed account.
    waiting = stack.stripe.client().v1.subscriptions.retrieve(paid.id)
    assert (waiting.status, waiting.cancel_at_period_end) == ("active", True)
    stack.settle_delayed()
    stripe_sub = stack.stripe.client().v1.subscriptions.retrieve(paid.id)
    assert stripe_sub.status == "canceled"
    final = stack.stripe.client().v1.invoices.retrieve(str(stripe_sub.latest_invoice))
    # By hand: 150,000 calls - 100,000 included = 50,000 at USD 0.10 per 100 = USD 50.00; the monthly
    # fee was paid in advance and the cancel does not prorate, so the final invoice is the usage only.
    assert final.total == 5000
    mgmt, rg, svc = apim(stack)
    reads: list[Callable[[], object]] = [
        lambda: mgmt.user.get(rg, svc, uid),
        lambda: mgmt.subscription.get(rg, svc, free_sid),
        lambda: mgmt.subscription.get(rg, svc, paid.id),
    ]
    for gone in reads:
        with pytest.raises(ResourceNotFoundError):
            gone()
    assert account_row(consumer.email) is None
    # Signed out: the portal no longer knows the user, the billing page needs a sign-in again.
    assert "data-user-id" not in consumer.portal_home()
    assert consumer.open(f"{stack.app_url}/api/portal/billing").status_code == 401
    # The address is free again: signing up once more makes a new account and a new APIM user.
    again = stack.consumer(consumer.email)
    assert again.sign_up() != uid


def test_a_close_that_failed_midway_is_finished_by_submitting_again(stack: Any) -> None:
    consumer = signed_up(stack)
    uid = consumer.user_id
    free_sid = free_subscription(consumer)
    page = open_form(consumer, link(stack, "CloseAccount", userId=uid), "free key")

    class StripeDownAtTheEnd:
        """The app's own payments port, failing at the last Stripe call of the close."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def live_subscriptions(self, uid: str) -> list[str]:
            raise RuntimeError("Stripe did not answer")

    deps = services().portal()
    with pytest.raises(RuntimeError, match="Stripe did not answer"):
        account_ops.close_account(
            consumer.email,
            uid,
            DEFAULT_PASSWORD,
            ports=deps.account_ports,
            client="test",
            device=None,
            payments=StripeDownAtTheEnd(deps.payments),
            now=datetime.now(UTC),
            final_invoices=deps.final_invoices,
        )
    mgmt, rg, svc = apim(stack)
    with pytest.raises(ResourceNotFoundError):
        mgmt.subscription.get(rg, svc, free_sid)  # cancelled, then deleted with the user
    assert account_row(consumer.email).closing_since > 0
    # Half closed: nobody signs in any more ...
    refused = stack.consumer(consumer.email).sign_in_answer(DEFAULT_PASSWORD)
    assert refused.status_code == 403
    assert "being closed" in refused.text
    # ... and the same form, submitted again, finishes the close.
    done = consumer.submit(page, {"password": DEFAULT_PASSWORD})
    assert done.status_code == 200, done.text
    assert account_row(consumer.email) is None


# ---- Renew --------------------------------------------------------------------------------------
def test_renew_an_expired_free_subscription_activates_it_again(stack: Any) -> None:
    consumer = signed_up(stack)
    sid = free_subscription(consumer, "old key")
    active = consumer.open(link(stack, "Renew", subscriptionId=sid))
    assert active.status_code == 200
    assert "there is nothing to renew" in active.text
    mgmt, rg, svc = apim(stack)
    mgmt.subscription.update(rg, svc, sid, "*", SubscriptionUpdateParameters(state="expired"))
    page = open_form(consumer, link(stack, "Renew", subscriptionId=sid), "Renewing it starts a new subscription")
    done = consumer.submit(page, {"name": "renewed key"})
    assert done.status_code == 200, done.text
    # One Free subscription per consumer: the same one again (its quota count goes on).
    assert [(s.subscription_id, s.name, s.state) for s in consumer.subscriptions()] == [(sid, "renewed key", "active")]


def test_renew_an_expired_paid_subscription_goes_to_checkout(stack: Any) -> None:
    consumer = signed_up(stack)
    mgmt, rg, svc = apim(stack)
    mgmt.subscription.create_or_update(
        rg,
        svc,
        "sub_expiredrenewtest" + consumer.user_id[:8],
        SubscriptionCreateParameters(
            owner_id=f"/users/{consumer.user_id}", scope="/products/basic", display_name="old", state="expired"
        ),
    )
    page = open_form(
        consumer,
        link(stack, "Renew", subscriptionId="sub_expiredrenewtest" + consumer.user_id[:8]),
        "Continue to payment",
    )
    answer = consumer.submit(page, {"name": "old"})
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(stack.stripe.base_url + "/")


# ---- refusals -----------------------------------------------------------------------------------
ACCOUNT_OPS = {"ChangePassword": "password", "ChangeProfile": "profile", "CloseAccount": "close"}


@pytest.mark.parametrize("operation", list(ACCOUNT_OPS))
def test_a_link_signed_for_another_user_is_refused(stack: Any, operation: str) -> None:
    victim, attacker = signed_up(stack), signed_up(stack)
    genuine = link(stack, operation, userId=attacker.user_id)
    forged = genuine.replace(f"userId={attacker.user_id}", f"userId={victim.user_id}")
    wrong_key = delegation_url(
        f"{stack.app_url}/api/delegation", base64.b64encode(b"another key").decode(), operation, userId=victim.user_id
    )
    for url in (forged, wrong_key):
        answer = attacker.open(url)
        assert answer.status_code == 401, answer.text
        assert victim.email not in answer.text
        assert "Set-Cookie" not in answer.headers
    assert attacker.open(genuine).status_code == 200


def test_account_posts_without_csrf_or_binding_are_refused(stack: Any) -> None:
    victim, attacker = signed_up(stack), signed_up(stack)
    victim_forms = {
        op: hidden_fields(open_form(victim, link(stack, op, userId=victim.user_id), "form").text) for op in ACCOUNT_OPS
    }
    attacker_forms = {
        op: hidden_fields(open_form(attacker, link(stack, op, userId=attacker.user_id), "form").text)
        for op in ACCOUNT_OPS
    }
    data = {
        "current_password": DEFAULT_PASSWORD,
        "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD,
        "first_name": "Mallory",
        "last_name": "X",
        "password": DEFAULT_PASSWORD,
    }
    for op, path in ACCOUNT_OPS.items():
        url = f"{stack.app_url}/api/portal/account/{path}"
        form = victim_forms[op]
        other_op = attacker_forms["ChangeProfile" if op != "ChangeProfile" else "CloseAccount"]
        csrf_refusals = [
            {k: v for k, v in form.items() if k != "csrf_token"},
            {**form, "csrf_token": attacker_forms[op]["csrf_token"]},  # another session's token
        ]
        for fields in csrf_refusals:
            answer = victim.session.post(url, data={**fields, **data}, allow_redirects=False, timeout=30)
            assert answer.status_code == 403, (op, answer.text)
        # A cross-site POST carries no session cookie at all.
        assert requests.post(url, data={**form, **data}, allow_redirects=False, timeout=30).status_code == 403
        binding_refusals = [
            {**attacker_forms[op], "account": form["account"]},  # the victim's form with the attacker's session
            {**attacker_forms[op], "account": other_op["account"]},  # a token made for another operation
        ]
        for fields in binding_refusals:
            answer = attacker.session.post(url, data={**fields, **data}, allow_redirects=False, timeout=30)
            assert answer.status_code == 401, (op, answer.text)
    row = account_row(victim.email)
    assert (row.first_name, row.closing_since) == ("Ada", 0)
    assert passwords.verify_password(DEFAULT_PASSWORD, row.password_hash)
    assert account_row(attacker.email).first_name == "Ada"


def test_account_operations_are_not_offered_when_apim_keeps_the_accounts(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = signed_up(stack)
    monkeypatch.setenv("DELEGATION_MODE", "subscriptions")
    for op in ACCOUNT_OPS:
        assert consumer.open(link(stack, op, userId=consumer.user_id)).status_code == 404


# ---- single-use delegated sign-in ---------------------------------------------------------------
def test_a_replayed_subscribe_link_signs_nobody_in(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = signed_up(stack)
    monkeypatch.setenv("DELEGATION_MODE", "subscriptions")
    leaked = link(stack, "Subscribe", productId="free", userId=consumer.user_id)
    billing = f"{stack.app_url}/api/portal/billing"

    first = stack.browser()
    opened = first.get(leaked, allow_redirects=False, timeout=30)
    assert opened.status_code == 200, opened.text
    assert first.get(billing, timeout=30).status_code == 200  # the link's owner is signed in for billing
    assert first.get(leaked, allow_redirects=False, timeout=30).status_code == 409  # each link works once

    thief = stack.browser()
    replayed = thief.get(leaked, allow_redirects=False, timeout=30)
    assert replayed.status_code == 409
    assert "used already" in replayed.text
    assert "Set-Cookie" not in replayed.headers
    assert thief.get(billing, timeout=30).status_code == 401
    # A fresh link (a new salt, as the portal makes one per click) still works.
    fresh = stack.browser()
    assert (
        fresh.get(
            link(stack, "Subscribe", productId="free", userId=consumer.user_id), allow_redirects=False, timeout=30
        ).status_code
        == 200
    )
    assert fresh.get(billing, timeout=30).status_code == 200


# ---- the close's order, with in-memory fakes of the portal's own ports ----------------------------
class _LoggedAccounts(fakes.InMemoryAccounts):
    """The accounts store, writing each write's step into the shared log."""

    def __init__(self, steps: list[str], *accounts: Account) -> None:
        super().__init__(*accounts)
        self.steps = steps

    def replace(self, account: Account, etag: str) -> bool:
        self.steps.append(f"row:closing={bool(account.closing_since)}")
        return super().replace(account, etag)

    def delete(self, email: str) -> None:
        self.steps.append("row:delete")
        super().delete(email)


def test_close_runs_in_an_order_a_retry_can_finish() -> None:
    steps: list[str] = []
    account = Account("a@b.example", passwords.hash_password("right password"), "u1", "A", "B", 0, confirmed_at=1)
    apim = fakes.FakeApim(users={"u1": "a@b.example"})
    for sid, pid, state in (
        ("free-1", "free", "active"),
        ("sub_2", "standard", "active"),
        ("old-3", "free", "cancelled"),
    ):
        apim.create_subscription(sid, "u1", pid, sid, state)
    apim.calls = steps
    payments = fakes.FakePayments(calls=steps)
    payments.clock_time = 1_500
    # sub_2 cancelled by the close (its final invoice job ends it), sub_old by an earlier cancel, and
    # sub_late: a checkout completed before the webhook granted it.
    payments.live = ["sub_2", "sub_old", "sub_late"]
    payments.pending = ["sub_2", "sub_old"]
    ports = dataclasses.replace(fakes.account_ports(), accounts=_LoggedAccounts(steps, account), apim=apim)
    cancelled = account_ops.close_account(
        "a@b.example",
        "u1",
        "right password",
        ports=ports,
        client="c",
        device=None,
        payments=payments,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        final_invoices=fakes.FakeFinalInvoices(steps),
    )
    assert cancelled == ["free-1", "sub_2"]
    assert steps == [
        "row:closing=True",  # first: sign-in stops, the password hash stays for a retry
        "apim:free-1:cancelled",
        # As Unsubscribe does: Stripe cannot renew it, its final invoice follows the lag, the key stops.
        "stripe:end-access:sub_2:at=1500",
        "queue:final:sub_2:1000:2000:at=1500",
        "apim:sub_2:cancelled",
        "stripe:expire-checkouts",
        "apim:delete-user",
        "stripe:cancel:sub_late",  # only the one that never had a key is cancelled at once
        "row:delete",  # last: until here the same form can be submitted again
    ]
