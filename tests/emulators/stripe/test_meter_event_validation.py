"""Meter event validation: synchronous on v1 and v2 `meter_events`, asynchronous on the v2 stream.

Sources (see the emulator's README): the API reference's "Create a billing meter event with
asynchronous validation" ("Events are processed asynchronously, including validation") and "with
synchronous validation" ("Events are validated synchronously, but are processed asynchronously");
the v2 Event object's example (`v1.billing.meter.error_report_triggered`, 10-second validation
window); the SDK's event classes; "We'll enforce uniqueness within a rolling 24 hour period".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import stripe

from emulators.stripe.server import StripeEmulator
from emulators.stripe.testing import WebhookSink
from tests.emulators.stripe.conftest import JAN_1_2026, clocked_customer

THIN = ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"]


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _streamer(emulator: StripeEmulator, client: Any) -> Any:
    session = client.v2.billing.meter_event_session.create()
    return stripe.StripeClient(session.authentication_token, base_addresses={"meter_events": emulator.base_url})


def _event(customer_id: str, ident: str, value: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "api_calls",
        "identifier": ident,
        "timestamp": _iso(JAN_1_2026 + 60),
        "payload": {"stripe_customer_id": customer_id, "value": value},
        **extra,
    }


def _summed(client: Any, meter: Any, customer: Any) -> float:
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": customer.id, "start_time": JAN_1_2026, "end_time": JAN_1_2026 + 7200}
    )
    return float(sum(s.aggregated_value for s in summaries.data))


@pytest.fixture
def on_clock(client: Any, meter: Any) -> tuple[Any, Any]:
    clock, customer = clocked_customer(client)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": JAN_1_2026 + 3600})
    return clock, customer


def test_stream_accepts_invalid_events_and_reports_them_as_thin_events(
    stripe_emulator: StripeEmulator, client: Any, meter: Any, on_clock: tuple[Any, Any], sink: WebhookSink
) -> None:
    _, customer = on_clock
    webhooks = WebhookSink()  # a v1 webhook endpoint: it must not receive thin events
    try:
        stripe_emulator.add_webhook_endpoint(webhooks.url, "whsec_v1", ["*"])
        destination = client.v2.core.event_destinations.create(
            params={
                "name": "meter errors",
                "type": "webhook_endpoint",
                "event_payload": "thin",
                "enabled_events": THIN,
                "webhook_endpoint": {"url": sink.url},
                "include": ["webhook_endpoint.signing_secret"],
            }
        )
        secret = destination.webhook_endpoint.signing_secret
        assert secret.startswith("whsec_")
        streamer = _streamer(stripe_emulator, client)
        answer = streamer.v2.billing.meter_event_stream.create(
            params={
                "events": [
                    _event(customer.id, "good-1", "5"),
                    _event("cus_nobody", "bad-customer"),
                    _event(customer.id, "bad-value", "lots"),
                    {"event_name": "api_calls", "identifier": "no-customer", "payload": {"value": "1"}},
                    _event(customer.id, "too-old", timestamp=_iso(JAN_1_2026 - 40 * 86400)),
                    _event(customer.id, "future", timestamp=_iso(JAN_1_2026 + 3600 + 301)),
                ]
            }
        )
        assert answer is None or not answer.to_dict()  # `{}`: the stream answers before validating
        assert _summed(client, meter, customer) == 5  # summaries reflect accepted events only
        assert sink.received == []  # nothing until the window's report is sent

        (sent,) = stripe_emulator.flush_meter_error_reports()
        (delivery,) = sink.wait_for(1)
        notification = client.parse_event_notification(delivery.body, delivery.signature, secret)
        assert notification.type == "v1.billing.meter.error_report_triggered"
        assert (notification.id, notification.related_object.id) == (sent["id"], meter.id)
        assert notification.related_object.url == f"/v1/billing/meters/{meter.id}"
        assert "data" not in json.loads(delivery.body)  # thin: the data is fetched
        event = notification.fetch_event()
        reason = event.data.reason
        assert reason.error_count == 5
        by_code = {t.code: t for t in reason.error_types}
        assert set(by_code) == {
            "meter_event_customer_not_found",
            "meter_event_invalid_value",
            "meter_event_no_customer_defined",
            "timestamp_too_far_in_past",
            "timestamp_in_future",
        }
        assert by_code["meter_event_customer_not_found"].sample_errors[0].request.identifier == "bad-customer"
        assert (
            by_code["meter_event_no_customer_defined"].sample_errors[0].error_message
            == "Customer mapping key stripe_customer_id not found in payload."
        )
        assert event.data.developer_message_summary == "There are 5 invalid events"
        assert event.data.validation_start <= event.data.validation_end
        assert notification.fetch_related_object().id == meter.id
        with pytest.raises(stripe.SignatureVerificationError):
            client.parse_event_notification(delivery.body, delivery.signature, "whsec_wrong")
        stripe_emulator.wait_for_webhooks_idle(timeout=10)
        assert [r.event.get("object") for r in webhooks.received] == []  # v1 endpoints get no thin events
    finally:
        webhooks.close()


def test_event_name_without_meter_and_archived_meter(
    stripe_emulator: StripeEmulator, client: Any, meter: Any, on_clock: tuple[Any, Any], sink: WebhookSink
) -> None:
    _, customer = on_clock
    _, secret = stripe_emulator.add_event_destination(sink.url, THIN)
    old = client.v1.billing.meters.create(
        params={"display_name": "Old", "event_name": "old_calls", "default_aggregation": {"formula": "sum"}}
    )
    client.v1.billing.meters.deactivate(old.id)
    streamer = _streamer(stripe_emulator, client)
    streamer.v2.billing.meter_event_stream.create(
        params={
            "events": [
                {**_event(customer.id, "typo"), "event_name": "api_cals"},
                {**_event(customer.id, "archived"), "event_name": "old_calls"},
            ]
        }
    )
    stripe_emulator.flush_meter_error_reports()
    deliveries = sink.wait_for(2)
    notes = {n.type: n for n in (client.parse_event_notification(d.body, d.signature, secret) for d in deliveries)}
    no_meter = notes["v1.billing.meter.no_meter_found"].fetch_event()
    assert [(t.code, t.sample_errors[0].request.identifier) for t in no_meter.data.reason.error_types] == [
        ("no_meter", "typo")
    ]
    archived = notes["v1.billing.meter.error_report_triggered"]
    assert archived.related_object.id == old.id
    assert archived.fetch_event().data.reason.error_types[0].code == "archived_meter"


def test_reports_are_batched_per_meter_and_sent_when_the_window_ends(
    stripe_emulator: StripeEmulator, client: Any, meter: Any, on_clock: tuple[Any, Any], sink: WebhookSink
) -> None:
    stripe_emulator.add_event_destination(sink.url, THIN)
    streamer = _streamer(stripe_emulator, client)
    for n in range(3):  # three requests inside one window: one report
        streamer.v2.billing.meter_event_stream.create(params={"events": [_event("cus_nobody", f"bad-{n}")]})
    assert stripe_emulator.core.meter_errors  # pending, not sent yet
    stripe_emulator.advance_wall_clock(stripe_emulator.config.meter_error_window_seconds)
    (delivery,) = sink.wait_for(1)
    event = client.v2.core.events.retrieve(delivery.event["id"])
    assert event.data.reason.error_count == 3
    assert [s.request.identifier for s in event.data.reason.error_types[0].sample_errors] == ["bad-0", "bad-1", "bad-2"]
    start = datetime.fromisoformat(event.data.validation_start.replace("Z", "+00:00"))
    end = datetime.fromisoformat(event.data.validation_end.replace("Z", "+00:00"))
    assert (end - start).total_seconds() == stripe_emulator.config.meter_error_window_seconds
    assert start.timestamp() % stripe_emulator.config.meter_error_window_seconds == 0
    assert stripe_emulator.core.meter_errors == {}


def test_the_window_is_a_constructor_option_and_a_control_setting() -> None:
    with StripeEmulator(meter_error_window_seconds=30) as emulator:
        assert emulator.config.meter_error_window_seconds == 30
        url = f"{emulator.base_url}/_emulator/settings"
        assert (
            requests.post(url, json={"meter_error_window_seconds": 0}, timeout=10).json()["meter_error_window_seconds"]
            == 0
        )
        assert requests.post(url, json={"meter_error_window_seconds": -1}, timeout=10).status_code == 400
        assert requests.post(f"{emulator.base_url}/_emulator/meter_errors/flush", timeout=10).json() == {"sent": []}


def test_v1_and_v2_meter_events_still_validate_synchronously(
    client: Any, meter: Any, on_clock: tuple[Any, Any]
) -> None:
    _, customer = on_clock
    with pytest.raises(stripe.InvalidRequestError) as v1:
        client.v1.billing.meter_events.create(
            params={"event_name": "api_calls", "payload": {"stripe_customer_id": "cus_nobody", "value": "1"}}
        )
    assert v1.value.param == "payload[stripe_customer_id]"
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.billing.meter_events.create(
            params={"event_name": "api_calls", "payload": {"stripe_customer_id": customer.id, "value": "lots"}}
        )
    made = client.v2.billing.meter_events.create(
        params={
            "event_name": "api_calls",
            "identifier": "v2-ok",
            "payload": {"stripe_customer_id": customer.id, "value": "2"},
        }
    )
    assert made.identifier == "v2-ok"


def test_malformed_stream_requests_are_refused_at_once(
    stripe_emulator: StripeEmulator, client: Any, meter: Any, on_clock: tuple[Any, Any]
) -> None:
    _, customer = on_clock
    streamer = _streamer(stripe_emulator, client)
    with pytest.raises(stripe.InvalidRequestError):
        streamer.v2.billing.meter_event_stream.create(
            params={"events": [_event(customer.id, "fine", "3"), {"event_name": "api_calls"}]}
        )  # no payload: not well-formed
    assert _summed(client, meter, customer) == 0  # nothing of a refused request is kept


def test_identifiers_count_again_after_24_hours(client: Any, meter: Any, on_clock: tuple[Any, Any]) -> None:
    clock, customer = on_clock
    now = JAN_1_2026 + 3600

    def report(at: int) -> None:
        client.v1.billing.meter_events.create(
            params={
                "event_name": "api_calls",
                "identifier": "daily-1",
                "timestamp": at,
                "payload": {"stripe_customer_id": customer.id, "value": "4"},
            }
        )

    report(now)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": now + 86400 - 1})
    with pytest.raises(stripe.InvalidRequestError, match="already exists with identifier daily-1"):
        report(now + 86400 - 1)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": now + 86400})
    report(now + 86400)  # 24 hours after the first: the identifier counts again
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": customer.id, "start_time": JAN_1_2026, "end_time": JAN_1_2026 + 2 * 86400}
    )
    assert sum(s.aggregated_value for s in summaries.data) == 8


def test_event_destinations_api(client: Any, sink: WebhookSink) -> None:
    made = client.v2.core.event_destinations.create(
        params={
            "name": "thin",
            "type": "webhook_endpoint",
            "event_payload": "thin",
            "enabled_events": THIN,
            "webhook_endpoint": {"url": sink.url},
            "description": "meter errors",
        }
    )
    assert (made.object, made.status, made.event_payload, made.type) == (
        "v2.core.event_destination",
        "enabled",
        "thin",
        "webhook_endpoint",
    )
    assert made.webhook_endpoint.signing_secret is None  # only with include=webhook_endpoint.signing_secret
    got = client.v2.core.event_destinations.retrieve(made.id, params={"include": ["webhook_endpoint.url"]})
    assert got.webhook_endpoint.url == sink.url
    assert client.v2.core.event_destinations.retrieve(made.id).webhook_endpoint.url is None
    assert [d.id for d in client.v2.core.event_destinations.list().data] == [made.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.core.event_destinations.create(
            params={
                "name": "x",
                "type": "webhook_endpoint",
                "event_payload": "thin",
                "enabled_events": THIN,
                "webhook_endpoint": {"url": sink.url},
                "snapshot_api_version": "2026-10-28.endive",
            }
        )


def test_snapshot_destinations_receive_v1_events(
    stripe_emulator: StripeEmulator, client: Any, sink: WebhookSink
) -> None:
    _, secret = stripe_emulator.add_event_destination(sink.url, ["customer.created"], event_payload="snapshot")
    customer = client.v1.customers.create(params={"email": "a@example.com"})
    (delivery,) = sink.wait_for(1)
    event = stripe.Webhook.construct_event(delivery.body, delivery.signature, secret)
    assert (event.type, event.data.object.id) == ("customer.created", customer.id)


def test_event_summaries_take_bounds_aligned_with_minute_boundaries(
    client: Any, meter: Any, on_clock: tuple[Any, Any]
) -> None:
    _, customer = on_clock
    for start, end in ((JAN_1_2026 + 30, JAN_1_2026 + 3600), (JAN_1_2026, JAN_1_2026 + 3601)):
        with pytest.raises(stripe.InvalidRequestError, match="aligned with minute boundaries"):
            client.v1.billing.meters.event_summaries.list(
                meter.id, params={"customer": customer.id, "start_time": start, "end_time": end}
            )
    answer = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": customer.id, "start_time": JAN_1_2026, "end_time": JAN_1_2026 + 3600}
    )
    assert [(s.start_time, s.end_time) for s in answer.data] == [(JAN_1_2026, JAN_1_2026 + 3600)]
