"""Customer portal configurations, the default configuration, and a portal page that follows them.

Sources (see the emulator's README): the Configuration object ("is_default: Whether the
configuration is the default. If true, this configuration can be managed in the Dashboard and
portal sessions will use this configuration unless it is overriden when creating the session"),
the SDK's parameter docs, and Stripe's error before the portal settings are saved ("You can't
create a portal session in test mode until you save your customer portal settings in test mode").
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
import stripe

from emulators.stripe.__main__ import parse_args
from emulators.stripe.resources.portal import NO_DEFAULT
from emulators.stripe.server import StripeEmulator
from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer

CARD = {"cardNumber": "5555555555554444", "cardExpiry": "12 / 34", "cardCvc": "123"}


def _plans(client: Any) -> tuple[Any, Any, Any]:
    product = client.v1.products.create(params={"name": "Plans"})
    basic, pro = (
        client.v1.prices.create(
            params={"product": product.id, "currency": "usd", "unit_amount": amount, "recurring": {"interval": "month"}}
        )
        for amount in (1000, 3000)
    )
    return product, basic, pro


def _subscribed(client: Any, price: Any) -> tuple[Any, Any, Any]:
    clock, customer = clocked_customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    return clock, customer, sub


def _post(portal: Any, action: str, **fields: str) -> requests.Response:
    return requests.post(f"{portal.url}/{action}", data=fields, timeout=10)


def test_sessions_need_a_default_configuration_until_the_settings_are_saved(
    stripe_emulator: StripeEmulator, client: Any
) -> None:
    customer = client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.billing_portal.sessions.create(params={"customer": customer.id})
    assert str(refused.value.user_message) == NO_DEFAULT
    assert NO_DEFAULT.startswith("You can’t create a portal session in test mode until you save your customer portal")
    made = client.v1.billing_portal.configurations.create(params={"features": {"invoice_history": {"enabled": True}}})
    assert (made.object, made.is_default, made.active) == ("billing_portal.configuration", False, True)
    with pytest.raises(stripe.InvalidRequestError):  # an API-made configuration is not the default
        client.v1.billing_portal.sessions.create(params={"customer": customer.id})
    named = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": made.id})
    assert named.configuration == made.id

    saved = stripe_emulator.save_portal_settings()
    assert saved["is_default"] is True
    session = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "expand": ["configuration"]})
    assert (session.configuration.id, session.configuration.is_default) == (saved["id"], True)
    assert [c.id for c in client.v1.billing_portal.configurations.list(params={"is_default": True}).data] == [
        saved["id"]
    ]
    assert {c.id for c in client.v1.billing_portal.configurations.list().data} == {saved["id"], made.id}


def test_configuration_fields_defaults_validation_and_updates(client: Any) -> None:
    product, basic, pro = _plans(client)
    made = client.v1.billing_portal.configurations.create(
        params={
            "business_profile": {"headline": "Fonts"},
            "default_return_url": "http://127.0.0.1:9/account",
            "features": {
                "subscription_cancel": {"enabled": True},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [{"product": product.id, "prices": [basic.id, pro.id]}],
                },
            },
        }
    )
    features = made.features
    assert (features.subscription_cancel.mode, features.subscription_cancel.proration_behavior) == (
        "at_period_end",
        "none",
    )
    assert (features.subscription_update.proration_behavior, features.subscription_update.trial_update_behavior) == (
        "none",
        "end_trial",
    )
    assert features.subscription_update.products[0].prices == [basic.id, pro.id]
    assert (features.invoice_history.enabled, features.payment_method_update.enabled) == (False, False)
    customer = client.v1.customers.create()
    session = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": made.id})
    assert session.return_url == "http://127.0.0.1:9/account"  # the configuration's default_return_url

    updated = client.v1.billing_portal.configurations.update(
        made.id,
        params={
            "features": {"subscription_cancel": {"mode": "immediately", "proration_behavior": "create_prorations"}}
        },
    )
    assert (updated.features.subscription_cancel.mode, updated.features.subscription_cancel.enabled) == (
        "immediately",
        True,
    )
    assert updated.features.subscription_update.enabled is True  # untouched by the update
    client.v1.billing_portal.configurations.update(made.id, params={"active": False})
    with pytest.raises(stripe.InvalidRequestError) as inactive:
        client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": made.id})
    assert inactive.value.param == "configuration"

    for features_, param in (
        (
            {"subscription_cancel": {"enabled": True, "proration_behavior": "always_invoice"}},
            "features[subscription_cancel][proration_behavior]",
        ),
        (
            {"subscription_cancel": {"enabled": True, "proration_behavior": "create_prorations"}},
            "features[subscription_cancel][proration_behavior]",
        ),
        (
            {"subscription_update": {"enabled": True, "products": [{"product": "prod_nope", "prices": [basic.id]}]}},
            "features[subscription_update][products][0][product]",
        ),
        ({"customer_update": {"allowed_updates": ["email"]}}, "features[customer_update][enabled]"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as bad:
            client.v1.billing_portal.configurations.create(params={"features": features_})
        assert bad.value.param == param


def test_the_page_shows_only_enabled_features(client: Any) -> None:
    _, basic, _ = _plans(client)
    _, customer, sub = _subscribed(client, basic)
    bare = client.v1.billing_portal.configurations.create(params={"features": {"invoice_history": {"enabled": False}}})
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": bare.id})
    page = requests.get(portal.url, timeout=10).text
    assert "Cancel subscription" not in page
    assert "Invoice history" not in page
    assert "Update plan" not in page
    assert "Payment method" not in page
    assert _post(portal, "cancel", subscription=sub.id).status_code == 403
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False


def test_cancellation_follows_the_configured_mode(client: Any) -> None:
    _, basic, _ = _plans(client)
    clock, customer, sub = _subscribed(client, basic)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + 31 * 86400 * 4 // 5})
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_cancel": {
                    "enabled": True,
                    "mode": "immediately",
                    "proration_behavior": "create_prorations",
                }
            }
        }
    )
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": config.id})
    assert 'aria-label="Cancel subscription Plans"' in requests.get(portal.url, timeout=10).text
    assert "cancelled" in _post(portal, "cancel", subscription=sub.id).text
    ended = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice"]})
    assert ended.status == "canceled"
    assert [line.amount for line in ended.latest_invoice.lines.data] == [-200]  # a fifth of January unused

    at_end = client.v1.billing_portal.configurations.create(
        params={"features": {"subscription_cancel": {"enabled": True, "mode": "at_period_end"}}}
    )
    _, other, sub2 = _subscribed(client, basic)
    portal2 = client.v1.billing_portal.sessions.create(params={"customer": other.id, "configuration": at_end.id})
    _post(portal2, "cancel", subscription=sub2.id)
    kept = client.v1.subscriptions.retrieve(sub2.id)
    assert (kept.status, kept.cancel_at_period_end) == ("active", True)


def test_plan_switching_needs_subscription_update_with_the_price(client: Any) -> None:
    product, basic, pro = _plans(client)
    _, customer, sub = _subscribed(client, basic)
    no_switch = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["quantity"],
                    "products": [{"product": product.id, "prices": [basic.id, pro.id]}],
                }
            }
        }
    )
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": no_switch.id})
    assert "Update plan" not in requests.get(portal.url, timeout=10).text
    assert _post(portal, "update", subscription=sub.id, price=pro.id).status_code == 403

    switch = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "proration_behavior": "always_invoice",
                    "products": [{"product": product.id, "prices": [basic.id, pro.id]}],
                }
            }
        }
    )
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": switch.id})
    page = requests.get(portal.url, timeout=10).text
    assert re.search(rf'<option value="{pro.id}">', page)
    assert f'<option value="{basic.id}">' not in page  # the current price is not offered
    assert "updated" in _post(portal, "update", subscription=sub.id, price=pro.id).text
    after = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice"]})
    assert after["items"].data[0].price.id == pro.id
    assert after.latest_invoice.billing_reason == "subscription_update"  # always_invoice, as configured


def test_payment_method_update_replaces_the_defaults(client: Any) -> None:
    _, basic, _ = _plans(client)
    _, customer, sub = _subscribed(client, basic)
    first = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": first.id})
    config = client.v1.billing_portal.configurations.create(
        params={"features": {"payment_method_update": {"enabled": True}, "invoice_history": {"enabled": True}}}
    )
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer.id, "configuration": config.id})
    page = requests.get(portal.url, timeout=10).text
    assert "Invoice history" in page
    assert "updated" in _post(portal, "payment_method", **CARD).text
    card = client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method
    assert client.v1.payment_methods.retrieve(card).card.last4 == "4444"
    assert client.v1.subscriptions.retrieve(sub.id).default_payment_method == card


def test_default_settings_from_the_control_endpoint_the_constructor_and_the_cli() -> None:
    with StripeEmulator() as emulator:
        url = f"{emulator.base_url}/_emulator/billing_portal/default_configuration"
        saved = requests.post(
            url, json={"features": {"subscription_cancel": {"enabled": True, "mode": "immediately"}}}, timeout=10
        )
        assert saved.status_code == 200
        assert (saved.json()["is_default"], saved.json()["features"]["subscription_cancel"]["mode"]) == (
            True,
            "immediately",
        )
        again = requests.post(url, json={"features": {"invoice_history": {"enabled": True}}}, timeout=10).json()
        assert again["id"] == saved.json()["id"]  # saving again updates the same default configuration
        assert requests.post(url, json={"features": {"nope": {}}}, timeout=10).status_code == 400
    with StripeEmulator(portal_settings={"features": {"invoice_history": {"enabled": True}}}) as emulator:
        client = emulator.client()
        customer = client.v1.customers.create()
        assert client.v1.billing_portal.sessions.create(params={"customer": customer.id}).configuration
    args = parse_args(["--port", "0", "--portal-cancel", "immediately"])
    assert (args.portal_cancel, args.portal_default) == ("immediately", False)
