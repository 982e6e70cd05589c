"""Meter deliveries confirmed on the local stack: events the v2 stream accepted and then refused
(asynchronous validation) are reported by Stripe as a thin event to the app's event destination,
the app queues a confirmation of each period it names, and the confirmation sends the shortfall
once; every renewal invoice then equals the quote of that subscription's calls.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from billing.bootstrap import services
from billing.catalog_names import meter_event_name
from billing.pricing import quote
from billing.usage.meter_errors import THIN_EVENT_TYPES
from tests.usage.conftest import HOUR, MODELS, UsageStack

pytestmark = pytest.mark.storage


def _counted(stack: UsageStack, meter_id: str, customer: str, start: int, end: int) -> float:
    summaries = stack.stripe.v1.billing.meters.event_summaries.list(
        meter_id, params={"customer": customer, "start_time": start - start % 60, "end_time": end - end % 60}
    )
    return float(sum(s.aggregated_value for s in summaries.data))


def test_events_refused_after_the_stream_accepted_them_are_billed_once_through_the_event_destination(
    usage_stack: UsageStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = usage_stack
    app = f"{stack.local.app_url}/api/webhooks/stripe-events"
    _, secret = stack.stripe_emu.add_event_destination(app, sorted(THIN_EVENT_TYPES))
    monkeypatch.setenv("STRIPE_EVENT_DESTINATION_SECRET", secret)
    start = int(stack.now())
    clock = stack.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": start}).id
    made = [stack.subscribe_direct("payg", f"confirm-{n}", clock=clock) for n in range(3)]  # three: the stream
    subs = [sid for sid, _ in made]
    stack.apim_emu.bulk_create_subscriptions(subs, product_id="payg")
    stack.start_pushes(subs, start)
    calls = {sid: 1_000 + 7 * n for n, sid in enumerate(subs)}
    for sid, n in calls.items():
        stack.record(sid, n, at=start + HOUR)

    # The meter is deactivated by mistake while the push runs: the stream still answers 200.
    (meter,) = [m for m in stack.stripe.v1.billing.meters.list().data if m.event_name == meter_event_name("payg")]
    stack.stripe.v1.billing.meters.deactivate(meter.id)
    stack.at([clock], start + 3 * HOUR)
    summary = stack.push_all(services().new_usage_push(), subs, start + 3 * HOUR)
    assert (summary.events_sent, summary.calls_reported, summary.failed) == (3, sum(calls.values()), 0)
    period_start, period_end = stack.period_of(subs[0])
    assert _counted(stack, meter.id, made[0][1], period_start, period_end) == 0  # Stripe counted nothing
    stack.stripe.v1.billing.meters.reactivate(meter.id)  # the operator puts it right

    # Stripe reports the refused events; the app confirms each period it names.
    (report,) = stack.stripe_emu.flush_meter_error_reports()
    assert report["type"] == "v1.billing.meter.error_report_triggered"
    stack.local.settle()
    for sid, customer in made:
        assert _counted(stack, meter.id, customer, period_start, period_end) == calls[sid]

    # Each renewal invoice bills that subscription's calls, once.
    stack.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": period_end + 2 * HOUR})
    product = MODELS.product("payg")
    for sid, _ in made:
        invoices = stack.stripe.v1.invoices.list(params={"subscription": sid, "limit": 10}).data
        (renewal,) = [i for i in invoices if i.billing_reason == "subscription_cycle"]
        assert (renewal.period_start, renewal.period_end) == (period_start, period_end)
        assert renewal.total == quote(product, calls[sid]).total
    assert quote(product, 1_000).total == 150  # by hand: 1,000 calls at USD 0.15 per 100


def _post(url: str, body: bytes, signature: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return requests.post(url, data=body, headers=headers, timeout=10)


def test_the_event_destination_reads_nothing_it_cannot_verify(
    usage_stack: UsageStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = usage_stack
    monkeypatch.setenv("STRIPE_EVENT_DESTINATION_SECRET", "whsec_" + "a" * 32)
    url = f"{stack.local.app_url}/api/webhooks/stripe-events"
    body = b'{"id": "evt_forged", "object": "v2.core.event", "type": "v1.billing.meter.error_report_triggered"}'
    unsigned = _post(url, body, None)
    assert unsigned.status_code == 400
    forged = _post(url, body, "t=1,v1=" + "0" * 64)
    assert forged.status_code == 400
    assert "signature" in forged.json()["error"]["message"].lower()
    monkeypatch.setenv("STRIPE_EVENT_DESTINATION_SECRET", "")
    unset = _post(url, body, "t=1,v1=" + "0" * 64)
    assert unset.status_code == 500  # not configured: Stripe keeps the event and retries
    assert unset.json()["error"]["code"] == "not_configured"
