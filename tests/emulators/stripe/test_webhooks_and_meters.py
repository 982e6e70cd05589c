"""Signed webhook deliveries with retries; meter events de-duplicated by identifier (v1 and v2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe
from stripe.params.v2.billing import MeterEventStreamCreateParamsEvent

from emulators.stripe.server import StripeEmulator
from emulators.stripe.testing import WebhookSink
from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer

SECRET = "whsec_emulator_test_secret"


def test_signature_is_accepted_by_the_sdk_and_tampering_is_refused(
    stripe_emulator: StripeEmulator, client: Any, sink: WebhookSink
) -> None:
    stripe_emulator.add_webhook_endpoint(sink.url, SECRET)
    customer = client.v1.customers.create(params={"email": "a@example.com"})
    (delivery,) = sink.wait_for(1)
    event = stripe.Webhook.construct_event(delivery.body, delivery.signature, SECRET)
    assert (event.type, event.data.object.id) == ("customer.created", customer.id)
    assert client.v1.events.retrieve(event.id).type == "customer.created"

    tampered = delivery.body.replace(customer.id.encode(), b"cus_someoneelse")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, delivery.signature, SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.body, delivery.signature, "whsec_wrong")


def test_failed_deliveries_are_retried_until_answered(
    stripe_emulator: StripeEmulator, client: Any, sink: WebhookSink
) -> None:
    sink.fail_next = 2
    stripe_emulator.add_webhook_endpoint(sink.url, SECRET, enabled_events=["customer.created"])
    client.v1.customers.create(params={"email": "a@example.com"})
    client.v1.customers.update(client.v1.customers.list().data[0].id, params={"name": "not subscribed"})
    stripe_emulator.wait_for_webhooks_idle(timeout=10)
    assert sink.types() == ["customer.created"]  # enabled_events filters customer.updated out
    attempts = [r.status for r in stripe_emulator.core.deliverer.log]
    assert attempts == [500, 500, 200]


def test_endpoint_created_through_the_api_signs_with_its_returned_secret(client: Any, sink: WebhookSink) -> None:
    endpoint = client.v1.webhook_endpoints.create(params={"url": sink.url, "enabled_events": ["*"]})
    assert endpoint.secret.startswith("whsec_")
    assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id)
    client.v1.products.create(params={"name": "no event for products"})
    client.v1.customers.create(params={"email": "b@example.com"})
    (delivery,) = sink.wait_for(1)
    assert stripe.Webhook.construct_event(delivery.body, delivery.signature, endpoint.secret).type == "customer.created"


@pytest.fixture
def metered(client: Any, meter: Any) -> tuple[Any, Any]:
    clock, customer = clocked_customer(client)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + 3600})
    return clock, customer


def _summed(client: Any, meter: Any, customer: Any) -> float:
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": customer.id, "start_time": JAN_1_2026, "end_time": JAN_1_2026 + 7200}
    )
    return float(sum(s.aggregated_value for s in summaries.data))


def test_duplicate_identifiers_count_once_v1(client: Any, meter: Any, metered: tuple[Any, Any]) -> None:
    _, customer = metered
    params = {
        "event_name": "api_calls",
        "identifier": "report-42",
        "timestamp": JAN_1_2026 + 60,
        "payload": {"stripe_customer_id": customer.id, "value": "7"},
    }
    client.v1.billing.meter_events.create(params=params)
    with pytest.raises(stripe.InvalidRequestError, match="An event already exists with identifier report-42"):
        client.v1.billing.meter_events.create(params=params)
    assert _summed(client, meter, customer) == 7


def test_duplicate_identifiers_count_once_v2_stream(
    stripe_emulator: StripeEmulator, client: Any, meter: Any, metered: tuple[Any, Any]
) -> None:
    _, customer = metered
    session = client.v2.billing.meter_event_session.create()
    streamer = stripe.StripeClient(
        session.authentication_token, base_addresses={"meter_events": stripe_emulator.base_url}
    )
    event: MeterEventStreamCreateParamsEvent = {
        "event_name": "api_calls",
        "identifier": "batch-1",
        "timestamp": "2026-01-01T00:01:00Z",
        "payload": {"stripe_customer_id": customer.id, "value": "5"},
    }
    streamer.v2.billing.meter_event_stream.create(params={"events": [event, event]})
    streamer.v2.billing.meter_event_stream.create(params={"events": [event]})
    assert _summed(client, meter, customer) == 5

    wrong = stripe.StripeClient("mes_tok_not_a_session", base_addresses={"meter_events": stripe_emulator.base_url})
    with pytest.raises(stripe.AuthenticationError):
        wrong.v2.billing.meter_event_stream.create(params={"events": [event]})


def test_timestamps_outside_stripes_window_are_refused(client: Any, meter: Any, metered: tuple[Any, Any]) -> None:
    clock, customer = metered
    now = JAN_1_2026 + 3600  # the customer's clock time, not the wall clock
    base = {"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "1"}}
    client.v1.billing.meter_events.create(params={**base, "timestamp": now + 300})
    with pytest.raises(stripe.InvalidRequestError, match="within the past 35 calendar days"):
        client.v1.billing.meter_events.create(params={**base, "timestamp": now + 301})
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": now + 36 * 86400})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meter_events.create(params={**base, "timestamp": now})
    assert info.value.param == "timestamp"


def test_meter_event_for_unknown_meter_names_the_parameter(client: Any, meter: Any) -> None:
    customer = client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meter_events.create(
            params={"event_name": "nope", "payload": {"stripe_customer_id": customer.id}}
        )
    assert info.value.param == "event_name"
    assert info.value.http_body is not None
    assert json.loads(info.value.http_body)["error"]["type"] == "invalid_request_error"
