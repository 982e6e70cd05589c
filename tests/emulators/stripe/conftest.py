"""Fixtures for the Stripe emulator's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from emulators.stripe.pytest_plugin import stripe_emulator
from emulators.stripe.server import StripeEmulator
from emulators.stripe.testing import WebhookSink

__all__ = ["stripe_emulator"]

JAN_1_2026 = 1767225600  # 2026-01-01T00:00:00Z: a fixed start makes the calendar periods known


@pytest.fixture
def client(stripe_emulator: StripeEmulator) -> Any:
    return stripe_emulator.client()


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    receiver = WebhookSink()
    yield receiver
    receiver.close()


@pytest.fixture
def meter(client: Any) -> Any:
    return client.v1.billing.meters.create(
        params={
            "display_name": "API calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


@pytest.fixture
def product(client: Any) -> Any:
    return client.v1.products.create(params={"name": "Fonts"})


def clocked_customer(client: Any, card: str = "pm_card_visa", start: int = JAN_1_2026) -> tuple[Any, Any]:
    """A test clock at `start` and a customer on it whose default card is `card`."""
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": start})
    customer = client.v1.customers.create(params={"email": "dev@example.com", "test_clock": clock.id})
    pm = client.v1.payment_methods.attach(card, params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    return clock, customer
