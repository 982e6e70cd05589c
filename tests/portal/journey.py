"""Steps of a consumer's journey over HTTP, shared by the portal tests."""

from __future__ import annotations

import re
import uuid

import requests

from tests.portal.stack import PASSWORD, Stack, absolute, form_fields, links, product_link


def new_email() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}@example.com"


def portal_home(stack: Stack, browser: requests.Session) -> str:
    response = browser.get(stack.apim.portal_url + "/", timeout=10)
    assert response.status_code == 200
    return response.text


def open_link(browser: requests.Session, url: str) -> requests.Response:
    return browser.get(url, allow_redirects=False, timeout=30)


def sign_up(stack: Stack, browser: requests.Session, email: str, password: str = PASSWORD) -> str:
    """Sign up from the portal's Sign up link; returns the APIM user id the portal signed in."""
    page = open_link(browser, links(portal_home(stack, browser), "signup")[0])
    assert page.status_code == 200, page.text
    fields = form_fields(page.text)
    answer = browser.post(f"{stack.app_url}/api/portal/signup", allow_redirects=False, timeout=30, data={
        **fields, "email": email, "password": password, "first_name": "Ada", "last_name": "Lovelace"})
    assert answer.status_code == 303, answer.text
    return follow_sso(stack, browser, answer)


def sign_in(stack: Stack, browser: requests.Session, email: str, password: str = PASSWORD) -> requests.Response:
    page = open_link(browser, links(portal_home(stack, browser), "signin")[0])
    assert page.status_code == 200, page.text
    return browser.post(f"{stack.app_url}/api/portal/signin", allow_redirects=False, timeout=30,
                        data={**form_fields(page.text), "email": email, "password": password})


def follow_sso(stack: Stack, browser: requests.Session, answer: requests.Response) -> str:
    location = answer.headers["Location"]
    assert location.startswith(stack.apim.portal_url + "/signin-sso?token="), location
    landed = browser.get(location, timeout=10)
    assert landed.status_code == 200
    match = re.search(r'data-user-id="([^"]+)"', landed.text)
    assert match, "the portal did not sign the user in"
    return match[1]


def subscribe_page(stack: Stack, browser: requests.Session, product_id: str) -> requests.Response:
    return open_link(browser, product_link(portal_home(stack, browser), product_id))


def subscribe(stack: Stack, browser: requests.Session, product_id: str, name: str) -> requests.Response:
    page = subscribe_page(stack, browser, product_id)
    assert page.status_code == 200, page.text
    return browser.post(f"{stack.app_url}/api/portal/subscribe", allow_redirects=False, timeout=30,
                        data={**form_fields(page.text), "name": name})


def pay(stack: Stack, browser: requests.Session, checkout_url: str, card: str = "4242424242424242") -> str:
    """Pay on the Stripe emulator's hosted Checkout page; returns where Checkout sends the consumer."""
    page = browser.get(checkout_url, timeout=10)
    assert page.status_code == 200, page.text
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action
    paid = browser.post(absolute(checkout_url, action[1]), allow_redirects=False, timeout=30, data={
        "cardNumber": card, "cardExpiry": "12 / 34", "cardCvc": "123", "billingName": "Ada Lovelace"})
    assert paid.status_code == 303, paid.text
    return paid.headers["Location"]


def checkout_url_of(stack: Stack, answer: requests.Response) -> str:
    assert answer.status_code == 303, answer.text
    url = answer.headers["Location"]
    assert url.startswith(stack.stripe.base_url + "/"), url
    return url
