"""Forged delegation links, open redirects, cross-user checkout, CSRF-less posts, password guessing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from urllib.parse import urlencode

import pytest
import requests

from devstack.consumer import DEFAULT_PASSWORD, hidden_fields
from devstack.stack import LocalStack

pytestmark = pytest.mark.storage

# Each operation and the fields APIM signs for it (Microsoft's delegation documentation).
SIGNED = {
    "SignIn": ["returnUrl"],
    "SignUp": ["returnUrl"],
    "Subscribe": ["productId", "userId"],
    "Unsubscribe": ["subscriptionId"],
    "Renew": ["subscriptionId"],
    "ChangePassword": ["userId"],
    "ChangeProfile": ["userId"],
    "CloseAccount": ["userId"],
    "SignOut": ["userId"],
}


def signed_query(key_b64: str, operation: str, salt: str = "s4lt", **fields: str) -> dict[str, str]:
    message = "\n".join([salt, *(fields[f] for f in SIGNED[operation])]).encode()
    sig = base64.b64encode(hmac.new(base64.b64decode(key_b64), message, hashlib.sha512).digest()).decode()
    return {"operation": operation, **fields, "salt": salt, "sig": sig}


def delegation(stack: LocalStack, query: dict[str, str], session: requests.Session | None = None) -> requests.Response:
    client = session or requests.Session()
    return client.get(f"{stack.app_url}/api/delegation?{urlencode(query)}", allow_redirects=False, timeout=30)


def _snapshot(stack: LocalStack) -> tuple[int, int, list[tuple[str | None, str | None]]]:
    client = stack.apim_emulator.management_client()
    rg, svc = stack.apim_emulator.resource_group, stack.apim_emulator.service_name
    users = len(list(client.user.list_by_service(rg, svc)))
    subs: list[tuple[str | None, str | None]] = sorted((s.name, s.state) for s in client.subscription.list(rg, svc))
    sessions = len(stack.stripe_emulator.client().v1.checkout.sessions.list(params={"limit": 100}).data)
    return users, sessions, subs


@pytest.fixture(scope="module")
def member(stack: LocalStack) -> tuple[str, str]:
    """A signed-up user with an active free subscription: (user id, subscription id)."""
    consumer = stack.consumer()
    uid = consumer.sign_up()
    page = consumer.subscribe_page("free")
    consumer.session.post(
        f"{stack.app_url}/api/portal/subscribe", data={**hidden_fields(page.text), "name": "k"}, timeout=30
    )
    apim = stack.apim_emulator.management_client()
    subs = list(apim.user_subscription.list(stack.apim_emulator.resource_group, stack.apim_emulator.service_name, uid))
    sid = subs[0].name
    assert isinstance(sid, str)  # read-only in the SDK model (typed None), set from the answer
    return uid, sid


def _values(member: tuple[str, str]) -> dict[str, str]:
    uid, sid = member
    return {"returnUrl": "/", "productId": "standard", "userId": uid, "subscriptionId": sid}


@pytest.mark.parametrize("operation", list(SIGNED))
def test_every_operation_refuses_a_tampered_signature_without_side_effects(
    stack: LocalStack, member: tuple[str, str], operation: str
) -> None:
    values = {f: _values(member)[f] for f in SIGNED[operation]}
    good = signed_query(stack.delegation_key_b64, operation, **values)
    wrong_key = signed_query(base64.b64encode(b"not the key").decode(), operation, **values)
    first_field = SIGNED[operation][0]
    forgeries = [
        {**good, "sig": good["sig"][:-4] + ("AAAA" if not good["sig"].endswith("AAAA") else "BBBB")},
        {**good, first_field: good[first_field] + "x"},  # a field changed after signing
        {**good, "salt": "other"},
        {k: v for k, v in good.items() if k != "sig"},
        {k: v for k, v in good.items() if k != "salt"},
        wrong_key,
    ]
    before = _snapshot(stack)
    for query in forgeries:
        answer = delegation(stack, query)
        assert answer.status_code == 401, (query, answer.text)
        assert answer.json()["error"]["code"] == "delegation"
        assert "Set-Cookie" not in answer.headers
        assert "Location" not in answer.headers
    assert _snapshot(stack) == before
    # The genuine link passes the signature check (so the refusals above were about the signature);
    # a link that changes something then asks an anonymous browser to sign in as its owner.
    genuine = delegation(stack, good)
    assert genuine.status_code in (200, 303) or genuine.json()["error"]["code"] == "signin", genuine.text


def test_unknown_operation_is_a_bad_request(stack: LocalStack) -> None:
    answer = delegation(stack, {"operation": "DeleteEverything", "salt": "x", "sig": "y"})
    assert answer.status_code == 400
    assert "SignIn" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "return_url",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/%2F%2Fevil.example",
        "/ok\r\nLocation: https://evil.example",
        "",
    ],
)
def test_return_urls_off_the_portal_are_refused(stack: LocalStack, return_url: str) -> None:
    query = (
        signed_query(stack.delegation_key_b64, "SignIn", returnUrl=return_url)
        if return_url
        else {"operation": "SignIn", "salt": "s", "sig": "x"}
    )
    answer = delegation(stack, query)
    assert answer.status_code in ((400,) if return_url else (401,))
    assert "Location" not in answer.headers


def test_a_tampered_return_url_in_the_sign_in_form_is_refused(stack: LocalStack) -> None:
    first = stack.consumer()
    first.sign_up()
    email = first.email
    consumer = stack.consumer(email)
    page = consumer.open_portal_link("signin")
    answer = consumer.session.post(
        f"{stack.app_url}/api/portal/signin",
        allow_redirects=False,
        timeout=30,
        data={**hidden_fields(page.text), "returnUrl": "//evil.example/", "email": email, "password": "whatever it is"},
    )
    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_nobody_can_start_a_checkout_for_another_user(stack: LocalStack) -> None:
    victim, attacker = stack.consumer(), stack.consumer()
    victim.sign_up()
    attacker.sign_up()
    victims_form = hidden_fields(victim.subscribe_page("standard").text)
    attackers_form = hidden_fields(attacker.subscribe_page("standard").text)
    before = _snapshot(stack)
    attempts = [
        # The victim's offer with the attacker's own session and CSRF token.
        {**attackers_form, "offer": victims_form["offer"]},
        # The attacker's offer edited to name the victim (the signature no longer matches).
        {**attackers_form, "offer": _swap_user(attackers_form["offer"], "someone-else")},
        # No offer at all.
        {k: v for k, v in attackers_form.items() if k != "offer"},
    ]
    for data in attempts:
        answer = attacker.session.post(
            f"{stack.app_url}/api/portal/subscribe", data={**data, "name": "x"}, allow_redirects=False, timeout=30
        )
        assert answer.status_code == 401, answer.text
    assert _snapshot(stack) == before


def _swap_user(token: str, uid: str) -> str:
    payload, _, mac = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["u"] = uid
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{encoded}.{mac}"


def test_posts_without_a_valid_csrf_token_are_refused(stack: LocalStack, member: tuple[str, str]) -> None:
    consumer = stack.consumer()
    browser = consumer.session
    consumer.sign_up()
    form = hidden_fields(consumer.subscribe_page("free").text)
    other = stack.consumer()
    other_form = hidden_fields(other.subscribe_page("free").text) if other.sign_up() else {}
    before = _snapshot(stack)
    for path in ("signup", "signin", "subscribe", "unsubscribe"):
        url = f"{stack.app_url}/api/portal/{path}"
        for data in (
            {k: v for k, v in form.items() if k != "csrf_token"},
            {**form, "csrf_token": other_form["csrf_token"]},  # another session's token
            {**form, "csrf_token": form["csrf_token"] + "x"},
        ):
            answer = browser.post(
                url,
                data={**data, "name": "n", "email": "a@b.example", "password": "p" * 12},
                allow_redirects=False,
                timeout=30,
            )
            assert answer.status_code == 403, (path, answer.text)
        # Without the session cookie at all (a cross-site POST from another origin).
        assert requests.post(url, data=form, allow_redirects=False, timeout=30).status_code == 403
    assert _snapshot(stack) == before


def test_wrong_passwords_beyond_the_limit_lock_the_account(stack: LocalStack) -> None:
    first = stack.consumer()
    first.sign_up()
    consumer = stack.consumer(first.email)
    for _ in range(5):
        answer = consumer.sign_in_answer("wrong password 123")
        assert answer.status_code == 401
        assert "Location" not in answer.headers
    # The sixth try is refused even with the right password, and without checking it.
    locked = consumer.sign_in_answer(DEFAULT_PASSWORD)
    assert locked.status_code == 429
    assert "try again in 15 minute" in locked.text
    assert "Location" not in locked.headers
    # Another account is not affected.
    other = stack.consumer()
    other.sign_up()
    assert stack.consumer(other.email).sign_in_answer().status_code == 303


def test_subscriptions_mode_leaves_sign_in_to_the_portal(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELEGATION_MODE", "subscriptions")
    answer = delegation(stack, signed_query(stack.delegation_key_b64, "SignIn", returnUrl="/products"))
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{stack.apim_emulator.portal_url}/signin?returnUrl=%2Fproducts"
    refused = requests.post(f"{stack.app_url}/api/portal/signin", data={}, allow_redirects=False, timeout=30)
    assert refused.status_code == 404


def test_sessions_outlive_a_new_delegation_key_and_a_rotation_of_their_own_keys(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redeployment may give APIM a new delegation key: nobody is signed out. Sessions have their own
    keys; rotating them (new key first, old second) keeps today's sessions until the old key is dropped."""
    consumer = stack.consumer()
    consumer.sign_up()
    billing = f"{stack.app_url}/api/portal/billing"

    def signed_in() -> bool:
        answer = consumer.session.get(billing, allow_redirects=False, timeout=30)
        assert answer.status_code in (200, 401), answer.text
        return answer.status_code == 200

    assert signed_in()
    monkeypatch.setenv("APIM_DELEGATION_VALIDATION_KEY", base64.b64encode(secrets.token_bytes(64)).decode())
    assert signed_in()
    old = stack.env["PORTAL_SESSION_KEYS"]
    new = base64.b64encode(secrets.token_bytes(64)).decode()
    monkeypatch.setenv("PORTAL_SESSION_KEYS", f"{new},{old}")
    assert signed_in()
    monkeypatch.setenv("PORTAL_SESSION_KEYS", new)
    assert not signed_in()  # the old key dropped: its sessions end, as they should
    monkeypatch.setenv("PORTAL_SESSION_KEYS", "too-short")
    broken = consumer.session.get(billing, allow_redirects=False, timeout=30)
    assert broken.status_code == 503, broken.text  # named, never shown
    assert "PORTAL_SESSION_KEYS" in broken.json()["error"]["message"]
    assert "too-short" not in broken.text
