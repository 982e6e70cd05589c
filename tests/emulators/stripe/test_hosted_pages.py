"""The hosted Checkout page with Stripe's test cards, and the billing portal page."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from emulators.stripe.server import StripeEmulator

CARD = {"cardExpiry": "12 / 34", "cardCvc": "123", "billingName": "Ada Dev"}


def _catalog(client: Any) -> tuple[Any, Any]:
    product = client.v1.products.create(params={"name": "Basic"})
    flat = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 1495, "recurring": {"interval": "month"}}
    )
    return product, flat


def _session(client: Any, flat: Any, **extra: Any) -> Any:
    return client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": flat.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:9/done?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://127.0.0.1:9/back",
            "metadata": {"apim_user_id": "u1"},
            "subscription_data": {"metadata": {"apim_product": "basic", "apim_user_id": "u1"}},
            **extra,
        }
    )


def test_successful_test_card_completes_checkout(stripe_emulator: StripeEmulator, client: Any) -> None:
    _, flat = _catalog(client)
    session = _session(client, flat, customer_email="ada@example.com", client_reference_id="u1")
    page = requests.get(session.url, timeout=10)
    assert page.status_code == 200
    for field in (
        'name="cardNumber"',
        'name="cardExpiry"',
        'name="cardCvc"',
        'type="submit"',
        'href="http://127.0.0.1:9/back"',
    ):
        assert field in page.text
    done = requests.post(
        session.url, data={"cardNumber": "4242 4242 4242 4242", **CARD}, timeout=10, allow_redirects=False
    )
    assert done.status_code == 303
    location = urlsplit(done.headers["Location"])
    assert parse_qs(location.query)["session_id"] == [session.id]

    completed = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription", "line_items"]})
    assert (completed.status, completed.payment_status) == ("complete", "paid")
    assert completed.line_items.data[0].amount_total == 1495
    sub = completed.subscription
    assert sub.status == "active"
    assert sub.metadata.to_dict() == {"apim_product": "basic", "apim_user_id": "u1"}
    invoice = client.v1.invoices.retrieve(completed.invoice)
    assert (invoice.status, invoice.amount_paid) == ("paid", 1495)
    customer = client.v1.customers.retrieve(completed.customer)
    assert customer.email == "ada@example.com"
    types = [e.type for e in reversed(client.v1.events.list(params={"limit": 100}).data)]
    assert (
        types.index("customer.created")
        < types.index("customer.subscription.created")
        < types.index("invoice.paid")
        < types.index("checkout.session.completed")
    )
    assert requests.get(session.url, timeout=10).status_code == 410


def test_declined_cards_rerender_the_form_without_a_subscription(client: Any) -> None:
    _, flat = _catalog(client)
    session = _session(client, flat, customer_email="ada@example.com")
    for number, message in (
        ("4000000000000002", "Your card was declined."),
        ("4000000000009995", "Your card has insufficient funds."),
    ):
        page = requests.post(session.url, data={"cardNumber": number, **CARD}, timeout=10, allow_redirects=False)
        assert page.status_code == 200
        assert message in page.text
        assert 'role="alert"' in page.text
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert client.v1.subscriptions.list(params={"status": "all"}).data == []


def test_promotion_code_discounts_the_first_invoice(client: Any) -> None:
    _, flat = _catalog(client)
    coupon = client.v1.coupons.create(params={"percent_off": "20", "duration": "once"})
    client.v1.promotion_codes.create(params={"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "SAVE20"})
    customer = client.v1.customers.create(params={"email": "b@example.com"})
    session = _session(client, flat, customer=customer.id, allow_promotion_codes=True)
    assert 'name="promotionCode"' in requests.get(session.url, timeout=10).text
    done = requests.post(
        session.url,
        data={"cardNumber": "4242424242424242", "promotionCode": "save20", **CARD},
        timeout=10,
        allow_redirects=False,
    )
    assert done.status_code == 303
    completed = client.v1.checkout.sessions.retrieve(session.id)
    invoice = client.v1.invoices.retrieve(completed.invoice)
    assert (invoice.subtotal, invoice.total, invoice.amount_paid) == (1495, 1196, 1196)  # 20% of 1495 is exactly 299


def test_portal_lists_invoices_and_cancels_at_period_end(stripe_emulator: StripeEmulator, client: Any) -> None:
    stripe_emulator.save_portal_settings()  # the Dashboard's settings: invoices, cancellation at the period end
    _, flat = _catalog(client)
    session = _session(client, flat, customer_email="c@example.com")
    requests.post(session.url, data={"cardNumber": "4242424242424242", **CARD}, timeout=10, allow_redirects=False)
    completed = client.v1.checkout.sessions.retrieve(session.id)
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": completed.customer, "return_url": "http://127.0.0.1:9/account"}
    )
    page = requests.get(portal.url, timeout=10)
    invoice = client.v1.invoices.retrieve(completed.invoice)
    assert invoice.number in page.text
    assert invoice.hosted_invoice_url in page.text
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None
    origin = f"{urlsplit(portal.url).scheme}://{urlsplit(portal.url).netloc}"
    after = requests.post(origin + action[1], data={"subscription": completed.subscription}, timeout=10)
    assert "cancelled" in after.text
    sub = client.v1.subscriptions.retrieve(completed.subscription)
    assert (sub.status, sub.cancel_at_period_end) == ("active", True)
    assert requests.get(invoice.hosted_invoice_url, timeout=10).status_code == 200


def test_checkout_on_a_test_clock_then_a_swapped_failing_card(client: Any) -> None:
    _, flat = _catalog(client)
    start = 1767225600  # 2026-01-01T00:00:00Z
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": start})
    customer = client.v1.customers.create(params={"email": "d@example.com", "test_clock": clock.id})
    session = _session(client, flat, customer=customer.id)
    requests.post(session.url, data={"cardNumber": "4242424242424242", **CARD}, timeout=10, allow_redirects=False)
    sub = client.v1.subscriptions.retrieve(client.v1.checkout.sessions.retrieve(session.id).subscription)
    assert (sub.start_date, sub.status) == (start, "active")
    # Checkout made the card the subscription's default payment method, which renewals charge first.
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": failing.id})
    period_end = sub["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": period_end + 7200})
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"


def test_checkout_sets_the_subscriptions_default_payment_method(client: Any) -> None:
    """ "When subscriptions are created in Checkout, the collected payment method is set as the
    default_payment_method on the Subscription" (not the customer's invoice settings)."""
    _, flat = _catalog(client)
    session = _session(client, flat, customer_email="e@example.com")
    requests.post(session.url, data={"cardNumber": "5555555555554444", **CARD}, timeout=10, allow_redirects=False)
    completed = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription"]})
    card = completed.subscription.default_payment_method
    assert client.v1.payment_methods.retrieve(card).card.last4 == "4444"
    customer = client.v1.customers.retrieve(completed.customer)
    assert customer.invoice_settings.default_payment_method is None
    assert [m.id for m in client.v1.customers.payment_methods.list(customer.id).data] == [card]
