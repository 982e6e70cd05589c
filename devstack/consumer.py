"""A consumer of the API, driven over HTTP: the developer portal, the app's pages, Stripe Checkout.

It starts where a real consumer starts (a link on the portal page) and only follows links and
submits forms that the pages themselves offer, so the demo exercises the real delegation,
checkout and access flow. Used by `make demo` and the end-to-end tests; not deployed.

The steps come in two kinds: the journey (`sign_up`, `subscribe_and_pay`, ...) raises
JourneyError when a page does not answer as a consumer expects; the `*_answer` steps and
`open`/`submit` return the app's raw answer, for tests that check refusals.
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

import requests
from requests.adapters import HTTPAdapter

SUCCEEDING_CARD = "4242424242424242"
DEFAULT_PASSWORD = "correct horse battery staple"  # noqa: S105 - for consumers on the local emulators
TIMEOUT = 30


class JourneyError(RuntimeError):
    """A page did not answer as a consumer would expect (names the step and the answer)."""


class _FromAddress(HTTPAdapter):
    """Connections from one local address: each consumer is its own client, as on the internet."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)


def loopback_address() -> str:
    """A random address of 127.0.0.0/8 (all of it is this machine's loopback on Linux)."""
    pick = random.SystemRandom().randint
    return f"127.{pick(1, 254)}.{pick(0, 255)}.{pick(1, 254)}"


def browser_session(source_address: str | None = None) -> requests.Session:
    """A cookie-keeping HTTP client that asks for HTML, as a browser does, from its own address."""
    session = requests.Session()
    session.headers["Accept"] = "text/html,application/xhtml+xml"
    adapter = _FromAddress(source_address or loopback_address())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass(frozen=True)
class PortalSubscription:
    subscription_id: str
    name: str
    product_id: str
    state: str
    primary_key: str


@dataclass
class Consumer:
    name: str
    email: str
    password: str
    portal_url: str
    app_url: str
    mailbox_url: str = ""  # the local mailbox's web page, where this consumer reads its mail
    session: requests.Session = field(default_factory=browser_session)
    user_id: str = ""

    # ---- pages ---------------------------------------------------------------------------------
    def open(self, url: str) -> requests.Response:
        """GET a page as the browser would request it, without following redirects or judging the answer."""
        return self.session.get(url, allow_redirects=False, timeout=TIMEOUT)

    def _get(self, url: str, step: str, redirects: bool = False) -> requests.Response:
        response = self.session.get(url, allow_redirects=redirects, timeout=TIMEOUT)
        if response.status_code >= 400:
            raise JourneyError(f"{step}: GET answered {response.status_code}: {_snippet(response.text)}")
        return response

    def submit(self, page: requests.Response, data: dict[str, str], step: str = "submit the form") -> requests.Response:
        """POST the page's form (its hidden fields plus `data`) to its action; the raw answer."""
        action = re.search(r'<form[^>]*method="post"[^>]*action="([^"]+)"', page.text, re.I) or re.search(
            r'<form[^>]*action="([^"]+)"[^>]*method="post"', page.text, re.I
        )
        if action is None:
            raise JourneyError(f"{step}: the page has no form to submit")
        url = urljoin(page.url, html.unescape(action[1]))
        return self.session.post(url, data={**hidden_fields(page.text), **data}, allow_redirects=False, timeout=TIMEOUT)

    def _post_form(self, page: requests.Response, data: dict[str, str], step: str) -> requests.Response:
        response = self.submit(page, data, step)
        if response.status_code >= 400:
            raise JourneyError(f"{step}: POST answered {response.status_code}: {_snippet(response.text)}")
        return response

    def portal_home(self) -> str:
        return self._get(self.portal_url + "/", "open the developer portal").text

    def open_portal_link(self, css_class: str) -> requests.Response:
        """The page behind the portal's (first) link of that class, e.g. "signup", "signin"."""
        return self._get(portal_link(self.portal_home(), css_class), f"open the portal's {css_class} link")

    def subscribe_page(self, product_id: str) -> requests.Response:
        """The page behind the product's Subscribe link on the portal."""
        return self._get(product_subscribe_link(self.portal_home(), product_id), f"open Subscribe to {product_id}")

    # ---- journey -------------------------------------------------------------------------------
    def sign_up_answer(self, first_name: str = "Ada", last_name: str = "Lovelace") -> requests.Response:
        """Submit the sign-up form behind the portal's Sign up link; the app's raw answer."""
        page = self.open_portal_link("signup")
        return self.submit(
            page,
            {"email": self.email, "password": self.password, "first_name": first_name, "last_name": last_name},
            "sign up",
        )

    def sign_up(self, first_name: str = "Ada", last_name: str = "Lovelace") -> str:
        """Sign up through the portal's delegated Sign up link, then confirm the address with the link
        the app mailed; returns the APIM user id."""
        answer = self.sign_up_answer(first_name, last_name)
        if answer.status_code != 200 or "Check your e-mail" not in answer.text:
            raise JourneyError(
                f"sign up: expected the 'check your e-mail' page, got {answer.status_code} ({_snippet(answer.text)})"
            )
        return self.confirm_address()

    def confirm_address(self) -> str:
        """Open the newest confirmation link mailed to this consumer and enter the password."""
        answer = self.confirm_answer(self.mail_link("Confirm your e-mail address"))
        self.user_id = self.follow_sso(answer, "confirm the e-mail address")
        return self.user_id

    def confirm_answer(self, link: str, password: str | None = None) -> requests.Response:
        """Submit the confirmation page behind a mailed link; the app's raw answer."""
        page = self._get(link, "open the confirmation link")
        return self.submit(page, {"password": password or self.password}, "confirm the e-mail address")

    # ---- mail ----------------------------------------------------------------------------------
    def mails(self) -> list[dict[str, Any]]:
        """The messages in this consumer's mailbox (the local stack's mailbox page), newest first."""
        if not self.mailbox_url:
            raise JourneyError("read mail: this consumer has no mailbox (the stack starts one)")
        answer = requests.get(f"{self.mailbox_url}/messages.json", params={"to": self.email}, timeout=TIMEOUT)
        answer.raise_for_status()
        found: list[dict[str, Any]] = answer.json()["messages"]
        return found

    def mail_link(self, subject: str) -> str:
        """The app's link in the newest mail with this subject (what a person clicks)."""
        for message in self.mails():
            if message["subject"] == subject:
                for url in message["links"]:
                    if url.startswith(self.app_url):
                        return str(url)
        raise JourneyError(f"read mail: no mail '{subject}' with a link to the app reached {self.email}")

    def sign_in_answer(self, password: str | None = None) -> requests.Response:
        """Submit the sign-in form behind the portal's Sign in link; the app's raw answer."""
        page = self.open_portal_link("signin")
        return self.submit(page, {"email": self.email, "password": password or self.password}, "sign in")

    def sign_in(self) -> str:
        self.user_id = self.follow_sso(self.sign_in_answer(), "sign in")
        return self.user_id

    def follow_sso(self, answer: requests.Response, step: str = "sign in") -> str:
        """Follow the app's redirect to the portal's single sign-on; returns the signed-in user id."""
        location = answer.headers.get("Location", "")
        if answer.status_code != 303 or not location.startswith(self.portal_url + "/signin-sso?token="):
            raise JourneyError(
                f"{step}: expected a redirect to the portal's signin-sso, got {answer.status_code}"
                f" ({_snippet(answer.text)})"
            )
        landed = self._get(location, f"{step}: portal single sign-on", redirects=True)
        match = re.search(r'data-user-id="([^"]+)"', landed.text)
        if match is None:
            raise JourneyError(f"{step}: the portal did not sign the consumer in")
        return match[1]

    def subscribe(self, product_id: str, subscription_name: str) -> requests.Response:
        """Open the product's Subscribe link and submit the subscription form (no payment yet)."""
        page = self.subscribe_page(product_id)
        return self._post_form(page, {"name": subscription_name}, f"subscribe to {product_id}")

    def pay(self, checkout_url: str, card: str = SUCCEEDING_CARD) -> str:
        """Pay on the hosted Checkout page; returns the page Checkout sends the consumer back to."""
        page = self._get(checkout_url, "open Stripe Checkout")
        answer = self._post_form(
            page,
            {"cardNumber": card, "cardExpiry": "12 / 34", "cardCvc": "123", "billingName": self.name},
            "pay on Checkout",
        )
        if answer.status_code != 303:
            raise JourneyError(f"pay on Checkout: the card was not accepted ({_snippet(answer.text)})")
        return answer.headers["Location"]

    def subscribe_and_pay(self, product_id: str, subscription_name: str, card: str = SUCCEEDING_CARD) -> str:
        """Subscribe to a paid product through Checkout; returns the success page's URL."""
        answer = self.subscribe(product_id, subscription_name)
        if answer.status_code != 303:
            raise JourneyError(f"subscribe to {product_id}: expected a redirect to Checkout, got {answer.status_code}")
        success_url = self.pay(answer.headers["Location"], card)
        self._get(success_url, "return from Checkout", redirects=True)
        return success_url

    def subscriptions(self) -> list[PortalSubscription]:
        """The consumer's subscriptions as the portal shows them (state and primary key)."""
        rows = re.finditer(
            r'<tr class="subscription" data-subscription-id="([^"]+)"><td>(.*?)</td><td>(.*?)</td>'
            r'<td class="state">(.*?)</td><td><code class="primary-key">(.*?)</code>',
            self.portal_home(),
        )
        return [PortalSubscription(*(html.unescape(part) for part in row.groups())) for row in rows]

    def unsubscribe(self, subscription_id: str) -> requests.Response:
        """Cancel through the portal's delegated Unsubscribe link and the app's confirmation form."""
        link = portal_unsubscribe_link(self.portal_home(), subscription_id)
        page = self._get(link, "open the cancel page")
        return self._post_form(page, {}, "confirm cancelling")

    # ---- changing plan (billing page) ------------------------------------------------------------
    def billing_page(self) -> requests.Response:
        return self._get(self.app_url + "/api/portal/billing", "open the billing page")

    def plan_change_page(self, subscription_id: str, product_id: str) -> requests.Response:
        """The confirm step of a plan change (the price difference); the raw answer."""
        query = urlencode({"sid": subscription_id, "product": product_id})
        return self.open(f"{self.app_url}/api/portal/billing/plan?{query}")

    def change_plan(self, subscription_id: str, product_id: str) -> requests.Response:
        """Open the confirm step and confirm it; the raw answer of the confirmation."""
        page = self.plan_change_page(subscription_id, product_id)
        if page.status_code >= 400:
            return page
        return self.submit(page, {}, f"change plan to {product_id}")

    def undo_plan_change(self) -> requests.Response:
        """Press "Undo this change" on the billing page; the raw answer."""
        return self.submit(self.billing_page(), {}, "undo the planned change")


def hidden_fields(page: str) -> dict[str, str]:
    """name -> value of the hidden inputs on a page (CSRF and signed tokens)."""
    fields: dict[str, str] = {}
    for tag in re.finditer(r"<input\b[^>]*>", page, re.I):
        text = tag[0]
        if not re.search(r'type="hidden"', text, re.I):
            continue
        name = re.search(r'name="([^"]+)"', text)
        value = re.search(r'value="([^"]*)"', text)
        if name:
            fields[html.unescape(name[1])] = html.unescape(value[1]) if value else ""
    return fields


def portal_links(page: str, css_class: str) -> list[str]:
    """hrefs of the page's <a class="..."> links of that class, in page order."""
    return [html.unescape(m[1]) for m in re.finditer(rf'<a class="{re.escape(css_class)}" href="([^"]*)"', page)]


def portal_link(page: str, css_class: str) -> str:
    found = portal_links(page, css_class)
    if not found:
        raise JourneyError(f"the portal page has no '{css_class}' link")
    return found[0]


def product_subscribe_link(page: str, product_id: str) -> str:
    pattern = rf'data-product-id="{re.escape(product_id)}">.*?<a class="subscribe" href="([^"]*)"'
    match = re.search(pattern, page, re.S)
    if match is None:
        raise JourneyError(f"the portal page has no Subscribe link for '{product_id}'")
    return html.unescape(match[1])


def portal_unsubscribe_link(page: str, subscription_id: str) -> str:
    pattern = rf'data-subscription-id="{re.escape(subscription_id)}".*?<a class="unsubscribe" href="([^"]*)"'
    match = re.search(pattern, page, re.S)
    if match is None:
        raise JourneyError(f"the portal page has no Cancel link for subscription '{subscription_id}'")
    return html.unescape(match[1])


def _snippet(text: str, limit: int = 200) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()[:limit]
