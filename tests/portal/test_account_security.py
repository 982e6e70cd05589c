"""An attacker against the consumer accounts, over HTTP on the local stack (issue 15).

Takeover by signing up with someone's address (a provider-made user, the administrator), guessing
in parallel, locking the owner out, weak passwords, enumeration, replayed and expired links. The
mailbox of the stack stands for each person's own mail: only the owner of an address reads it.
"""

from __future__ import annotations

import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from azure.mgmt.apimanagement.models import UserCreateParameters

from billing.adapters.storage import ensure_table
from billing.store.email_links import token_key
from billing.store.tables import EMAIL_TOKENS_TABLE
from devstack.consumer import DEFAULT_PASSWORD, Consumer, hidden_fields
from devstack.stack import LocalStack

pytestmark = pytest.mark.storage


def apim(stack: LocalStack) -> tuple[Any, str, str]:
    return stack.apim_emulator.management_client(), stack.apim_emulator.resource_group, stack.apim_emulator.service_name


def provider_made_user(stack: LocalStack) -> tuple[str, str]:
    """A user the API provider created in APIM (not through this app): (user id, e-mail)."""
    client, rg, svc = apim(stack)
    uid, email = f"prov{uuid.uuid4().hex[:8]}", f"partner-{uuid.uuid4().hex[:8]}@example.com"
    client.user.create_or_update(rg, svc, uid, UserCreateParameters(email=email, first_name="Pat", last_name="Ner"))
    return uid, email


def signed_in_user(consumer: Consumer) -> str | None:
    match = re.search(r'data-user-id="([^"]+)"', consumer.portal_home())
    return match[1] if match else None


def visible_text(answer: requests.Response) -> str:
    """The page as a person reads it, without the per-request tokens and the address typed in."""
    text = re.sub(r'value="[^"]*"', 'value=""', answer.text)
    return re.sub(r"[\w.+-]+@[\w.-]+", "ADDRESS", text)


# ---- takeover by sign-up -----------------------------------------------------------------------
def test_sign_up_with_a_provider_made_users_address_never_signs_the_attacker_in(stack: LocalStack) -> None:
    uid, email = provider_made_user(stack)
    attacker = stack.consumer(email, "the attacker's own passphrase 77")
    answer = attacker.sign_up_answer()
    assert answer.status_code == 200
    assert "Check your e-mail" in answer.text
    assert "Location" not in answer.headers
    assert signed_in_user(attacker) is None
    # The link went to the address's owner; the attacker cannot sign in without it.
    assert [m["subject"] for m in attacker.mails()] == ["Confirm your e-mail address"]
    assert attacker.sign_in_answer().status_code == 401
    # Opening the owner's link, the attacker's password is still what confirms: the owner, who
    # does not know it, cannot be tricked into confirming an account the attacker controls.
    owner = stack.consumer(email, DEFAULT_PASSWORD)
    refused = owner.confirm_answer(owner.mail_link("Confirm your e-mail address"))
    assert refused.status_code == 401
    assert signed_in_user(owner) is None
    # The owner signs up and confirms: only now is the account tied to the provider's user.
    assert owner.sign_up() == uid


def test_sign_up_with_the_administrators_address_never_ties_it(stack: LocalStack) -> None:
    client, rg, svc = apim(stack)
    admin = client.user.get(rg, svc, "1")
    assert admin.email
    attacker = stack.consumer(admin.email, "the attacker's own passphrase 78")
    answer = attacker.sign_up_answer()
    assert answer.status_code == 200
    assert "Check your e-mail" in answer.text
    # Even whoever reads the administrator's mail and confirms is not signed in as the administrator.
    refused = attacker.confirm_answer(attacker.mail_link("Confirm your e-mail address"))
    assert refused.status_code == 403
    assert "administrator" in refused.text
    assert signed_in_user(attacker) is None
    assert attacker.sign_in_answer().status_code == 401


def test_sign_up_answers_alike_whether_or_not_the_address_has_an_account(stack: LocalStack) -> None:
    owner = stack.consumer()
    owner.sign_up()
    known = stack.consumer(owner.email.upper(), "another long passphrase 9").sign_up_answer()
    unknown = stack.consumer(f"new-{uuid.uuid4().hex[:8]}@example.com", "another long passphrase 9").sign_up_answer()
    assert known.status_code == unknown.status_code == 200
    assert visible_text(known) == visible_text(unknown)
    # Only the mail, which reaches the owner alone, says that the account exists.
    assert owner.mails()[0]["subject"] == "You already have an account"
    assert stack.consumer(owner.email).sign_in_answer().status_code == 303  # the password is unchanged


# ---- links -------------------------------------------------------------------------------------
def test_a_confirmation_link_works_once(stack: LocalStack) -> None:
    consumer = stack.consumer()
    consumer.sign_up()
    link = consumer.mail_link("Confirm your e-mail address")
    replay = stack.consumer(consumer.email)
    used = replay.open(link)
    assert used.status_code == 410
    assert "used already" in used.text


def test_an_expired_confirmation_link_is_refused(stack: LocalStack) -> None:
    consumer = stack.consumer()
    assert consumer.sign_up_answer().status_code == 200
    link = consumer.mail_link("Confirm your e-mail address")
    form = consumer.open(link)
    assert form.status_code == 200
    # A day later (the row's expiry moved to its creation time, as the clock cannot be moved).
    table = ensure_table(EMAIL_TOKENS_TABLE)
    row = table.get_entity(token_key(link.split("token=", 1)[1]), "link")
    table.update_entity({"PartitionKey": row["PartitionKey"], "RowKey": "link", "expires_at": row["created_at"]})
    assert consumer.open(link).status_code == 410
    late = consumer.submit(form, {"password": DEFAULT_PASSWORD})
    assert late.status_code == 410
    assert "expired" in late.text
    assert consumer.sign_in_answer().status_code == 401  # no account was made


def test_password_reset_end_to_end(stack: LocalStack) -> None:
    consumer = stack.consumer()
    uid = consumer.sign_up()
    someone = stack.consumer(consumer.email)
    page = someone.open(f"{stack.app_url}/api/portal/password/forgot")
    asked = someone.submit(page, {"email": consumer.email})
    assert asked.status_code == 200
    assert "Check your e-mail" in asked.text
    link = consumer.mail_link("Choose a new password")
    form = consumer.open(link)
    assert form.status_code == 200
    weak = consumer.submit(form, {"new_password": "password12", "confirm_password": "password12"})
    assert weak.status_code == 400
    assert "too easy to guess" in weak.text
    new = "seven violet kettles humming"
    done = consumer.submit(weak, {"new_password": new, "confirm_password": new})
    assert consumer.follow_sso(done, "reset") == uid
    assert stack.consumer(consumer.email).sign_in_answer().status_code == 401  # the old password is gone
    assert stack.consumer(consumer.email, new).sign_in_answer().status_code == 303
    assert consumer.open(link).status_code == 410  # the link worked once


def test_reset_for_an_unknown_address_answers_the_same(stack: LocalStack) -> None:
    stranger = stack.consumer()
    page = stranger.open(f"{stack.app_url}/api/portal/password/forgot")
    answer = stranger.submit(page, {"email": stranger.email})
    assert answer.status_code == 200
    assert "Check your e-mail" in answer.text
    assert [m["subject"] for m in stranger.mails()] == ["No account with this address"]


# ---- guessing ----------------------------------------------------------------------------------
def test_24_wrong_sign_ins_at_once_evaluate_at_most_5_and_the_owner_still_gets_in(stack: LocalStack) -> None:
    owner = stack.consumer()
    uid = owner.sign_up()  # the owner's browser now holds its device cookie
    forms = []
    for n in range(24):
        attacker = stack.consumer(owner.email, f"guess number {n} for you")
        forms.append((attacker, hidden_fields(attacker.open_portal_link("signin").text)))

    def guess(item: tuple[Consumer, dict[str, str]]) -> requests.Response:
        attacker, fields = item
        return attacker.session.post(
            f"{stack.app_url}/api/portal/signin",
            allow_redirects=False,
            timeout=60,
            data={**fields, "email": owner.email, "password": attacker.password},
        )

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(guess, forms))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, statuses  # at most five passwords were checked
    for answer in answers:
        if answer.status_code == 429:  # refused by the account's limit or by a busy instance, never checked
            assert int(answer.headers["Retry-After"]) > 0
            assert re.search(r"too many failed sign-ins for this account|the service is busy", answer.text)
    # Guessing on, one at a time: the lock comes exactly when five wrong passwords were checked in all.
    checked = statuses.count(401)
    while True:
        attempt = stack.consumer(owner.email, f"one more guess {checked}").sign_in_answer()
        if attempt.status_code != 401:
            break
        checked += 1
    assert checked == 5
    assert attempt.status_code == 429
    assert "too many failed sign-ins for this account" in attempt.text
    # A browser without the device cookie is locked out, even with the right password ...
    assert stack.consumer(owner.email).sign_in_answer().status_code == 429
    # ... but the owner's browser, which signed in before, is not (its portal session has ended;
    # the app's device cookie stays, as a browser keeps it).
    for cookie in [c for c in owner.session.cookies if c.name == "apim_emulator_session"]:
        owner.session.cookies.clear(cookie.domain, cookie.path, cookie.name)
    assert owner.follow_sso(owner.sign_in_answer()) == uid


def test_sign_ins_from_one_client_are_limited_across_accounts(stack: LocalStack) -> None:
    client = stack.consumer()
    page = client.open_portal_link("signin")
    statuses = [
        client.submit(page, {"email": f"nobody{n}@example.com", "password": "whatever it may be"}).status_code
        for n in range(31)
    ]
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429


@pytest.mark.parametrize("password", ["aaaaaaaaaa", "1234567890", "password12", " " * 10])
def test_weak_passwords_are_refused_at_sign_up(stack: LocalStack, password: str) -> None:
    consumer = stack.consumer(password=password)
    answer = consumer.sign_up_answer()
    assert answer.status_code == 400
    assert re.search(r"too easy to guess|only spaces", answer.text)
    assert consumer.mails() == []


def test_a_mail_server_that_is_down_answers_503_and_nothing_is_lost(stack: LocalStack) -> None:
    consumer = stack.consumer()
    mailbox = stack.mail_server
    saved = os.environ["SMTP_PORT"]
    mailbox.stop()
    try:
        answer = consumer.sign_up_answer()
    finally:
        mailbox.start()  # the same port again
        os.environ["SMTP_PORT"] = saved
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    assert "try again" in answer.text
    assert consumer.sign_up()  # the retry completes the sign-up
