"""Exactly once, whatever the order or number of deliveries; failures are completed by retries."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from azure.data.tables import TableClient
from azure.mgmt.apimanagement.models import SubscriptionUpdateParameters

from billing import bootstrap
from billing.store.tables import PROCESSED_EVENTS_TABLE
from devstack.azurite import Azurite
from tests.access.conftest import Stack, sign, unique, wait_until

pytestmark = pytest.mark.storage


def _event(sub_id: str, event_type: str = "customer.subscription.updated") -> dict[str, Any]:
    """A Stripe event as Stripe sends it (the handler re-reads the subscription, so the object is thin)."""
    return {
        "id": unique("evt"),
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": {"id": sub_id, "object": "subscription"}},
    }


def _row(stack: Stack, event_id: str) -> dict[str, Any] | None:
    table = TableClient.from_connection_string(stack.env["AzureWebJobsStorage"], PROCESSED_EVENTS_TABLE)
    found = list(table.query_entities(f"PartitionKey eq '{event_id}'"))
    return dict(found[0]) if found else None


def test_same_event_twenty_times_concurrently_changes_apim_once(stack: Stack) -> None:
    customer, _ = stack.new_customer(clock=False)
    sid = stack.checkout(customer, "basic")
    stack.settle()
    assert stack.apim_state(sid) == "active"
    # Drift APIM (as an operator might), then deliver one signed event 20 times at the same moment.
    stack.apim.subscription.update(*stack.where, sid, "*", SubscriptionUpdateParameters(state="suspended"))
    stack.apim_writes.clear()
    body = json.dumps(_event(sid)).encode()
    header = sign(body, stack.env["STRIPE_WEBHOOK_SECRET"])

    def deliver(_: int) -> requests.Response:
        return requests.post(stack.webhook_url, data=body, headers={"Stripe-Signature": header}, timeout=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(deliver, range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 409}, statuses
    applied = [a for a in answers if a.status_code == 200 and not a.json().get("duplicate")]
    assert len(applied) == 1, [a.text for a in answers]
    assert "suspended -> active" in applied[0].json()["outcome"]
    assert [method for method, _ in stack.apim_writes] == ["PATCH"]
    assert stack.apim_state(sid) == "active"
    # The same event again later: acknowledged as a duplicate, nothing written.
    again = deliver(0)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert len(stack.apim_writes) == 1


def test_events_delivered_in_reverse_order_end_in_the_right_state(stack: Stack) -> None:
    stack.pause_deliveries()
    since = int(time.time()) - 1
    customer, clock = stack.new_customer()
    sid = stack.checkout(customer, "standard")
    failing = stack.stripe.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer})
    stack.stripe.v1.subscriptions.update(sid, params={"default_payment_method": failing.id})
    period_end = stack.stripe.v1.subscriptions.retrieve(sid)["items"]["data"][0]["current_period_end"]
    assert clock is not None
    stack.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": period_end + 2 * 3600})
    assert stack.stripe.v1.subscriptions.retrieve(sid).status == "past_due"
    events = [
        e
        for e in stack.stripe_events(since)
        if e["type"].startswith(("customer.subscription", "invoice.", "checkout.session"))
    ]
    assert any(e["type"] == "invoice.paid" for e in events)  # the first invoice's payment is among them
    assert stack.apim_state(sid) is None
    for event in reversed(events):
        answer = stack.post_event(event)
        assert answer.status_code == 200, answer.text
    # The newest state wins: past_due -> suspended, although "paid"/"active" events came last.
    assert stack.apim_state(sid) == "suspended"
    assert stack.gateway_status(sid) == 401


def test_a_handler_failure_is_released_and_completed_by_stripes_retry(stack: Stack) -> None:
    stack.apim_emu.faults.update({"error_rate_500": 1.0})
    customer, _ = stack.new_customer(clock=False)
    sid = stack.checkout(customer, "basic")
    log = stack.stripe_emu.core.deliverer.log
    wait_until(lambda: any(r.status == 500 for r in log), what="a delivery answered 500")
    stack.apim_emu.faults.update({"error_rate_500": 0.0})
    stack.settle()
    assert stack.apim_state(sid) == "active"
    assert stack.gateway_status(sid) == 200
    failed = {r.event_id for r in log if r.status == 500}
    for event_id in failed:
        # Each failed event was retried by Stripe and is now done (its claim was released, not stuck).
        assert [r.status for r in log if r.event_id == event_id][-1] == 200
        row = _row(stack, event_id)
        assert row is not None
        assert row["status"] == "done"
    assert stack.stripe_emu.core.deliverer.describe()["given_up"] == []


def test_storage_down_answers_5xx_and_marks_nothing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    customer, _ = stack.new_customer(clock=False)
    sid = stack.checkout(customer, "basic")
    stack.settle()
    stack.pause_deliveries()
    stack.apim.subscription.update(*stack.where, sid, "*", SubscriptionUpdateParameters(state="suspended"))
    own = Azurite().start()  # a separate instance: stopping it must not disturb other tests
    try:
        monkeypatch.setenv("AzureWebJobsStorage", own.connection_string)
        bootstrap.forget()
        event = _event(sid)
        ports = (own.blob_port, own.queue_port, own.table_port)
        # Warm up: the app creates its tables on this instance, then the instance stops.
        warm = stack.post_event(_event(sid))
        assert warm.status_code == 200, warm.text
        stack.apim.subscription.update(*stack.where, sid, "*", SubscriptionUpdateParameters(state="suspended"))
        own.stop()
        answer = stack.post_event(event)
        assert answer.status_code in (500, 503), answer.text
        assert "error" in answer.json()
        assert stack.apim_state(sid) == "suspended"  # nothing applied without a claim
        # Storage back (same ports, empty): the redelivery is applied and marked done.
        own = Azurite(blob_port=ports[0], queue_port=ports[1], table_port=ports[2]).start()
        bootstrap.forget()
        retried = stack.post_event(event)
        assert retried.status_code == 200, retried.text
        assert stack.apim_state(sid) == "active"
    finally:
        own.stop()
