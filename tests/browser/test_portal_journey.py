"""The consumer's journey once in a real headless Chromium: sign up, confirm by mail, Free, Standard via
Checkout, billing.

Debian's /usr/bin/chromium driven by Playwright; a screenshot of every page goes to
test-artifacts/browser/ (kept after the run as evidence of what a consumer sees).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from devstack.consumer import DEFAULT_PASSWORD as PASSWORD
from devstack.stack import LocalStack

pytestmark = [pytest.mark.browser, pytest.mark.storage]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page() -> Iterator[Page]:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing: `make setup` installs it as root (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI must run the browser test, never pass by skipping it
        pytest.skip(reason)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        # A phone-sized viewport: the pages must be usable there.
        context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        context.set_default_timeout(20_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


class Shots:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.count = 0
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        ARTIFACTS.mkdir(parents=True)

    def take(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(ARTIFACTS / f"{self.count:02d}-{name}.png"), full_page=True)


def test_consumer_journey_in_chromium(stack: LocalStack, page: Page) -> None:
    shots = Shots(page)
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    page.goto(stack.apim_emulator.portal_url + "/")
    shots.take("portal")

    page.click("a.signup")
    assert page.url.startswith(f"{stack.app_url}/api/delegation?operation=SignUp")
    assert page.get_by_label("E-mail address").is_visible()
    shots.take("sign-up")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("First name").fill("Grace")
    page.get_by_label("Last name").fill("Hopper")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_selector("text=Check your e-mail")
    shots.take("check-your-email")

    # The confirmation mail, read in the local stack's mailbox as the consumer reads their mail.
    page.goto(f"{stack.mail_server.web_url}/?to={email}")
    page.wait_for_selector("text=Confirm your e-mail address")
    shots.take("mailbox")
    page.click(f'a[href^="{stack.app_url}/api/portal/signup/confirm"]')
    page.wait_for_selector("text=enter the password you chose")
    shots.take("confirm")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm and sign in").click()
    page.wait_for_selector("span.user")
    assert email in page.inner_text("span.user")
    shots.take("portal-signed-in")

    page.click('li[data-product-id="free"] a.subscribe')
    page.wait_for_selector("text=Free: no payment method needed")
    shots.take("subscribe-free")
    page.get_by_label("Subscription name").fill("browser free")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_selector("text=is active")
    shots.take("subscribed-free")

    page.goto(stack.apim_emulator.portal_url + "/")
    page.click('li[data-product-id="standard"] a.subscribe')
    page.wait_for_selector("text=USD 89.95 a month")
    shots.take("subscribe-standard")
    page.get_by_label("Subscription name").fill("browser standard")
    page.get_by_role("button", name="Continue to payment").click()
    page.wait_for_url(f"{stack.stripe_emulator.base_url}/**")
    shots.take("stripe-checkout")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiry (MM / YY)").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Name on card").fill("Grace Hopper")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(f"{stack.app_url}/api/portal/checkout/success**")
    assert "Payment received: your key will be active in a moment" in page.inner_text("main")
    shots.take("checkout-success")

    page.goto(f"{stack.app_url}/api/portal/billing")
    page.wait_for_selector("text=Payment methods and invoices")
    assert "browser free" in page.inner_text("main")
    shots.take("billing")

    # The page is readable on a phone: nothing wider than the viewport.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    # Sign out from the portal: it ends its own session, then the app's (delegation), and the
    # consumer lands on the portal's home page, signed out of both.
    page.goto(stack.apim_emulator.portal_url + "/")
    page.click("a.signout")
    page.wait_for_selector("a.signin")
    assert page.url.rstrip("/") == stack.apim_emulator.portal_url
    shots.take("signed-out")
    page.goto(f"{stack.app_url}/api/portal/billing")
    assert "Please sign in" in page.inner_text("main")
    assert len(list(ARTIFACTS.glob("*.png"))) == shots.count
