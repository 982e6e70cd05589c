"""Telemetry of the app's triggers, captured by OpenTelemetry's in-memory exporter and reader: a webhook,
an event deferred to the work queue and applied by the worker, and a usage batch each leave a span with
their ids and the counters that say what moved; and no secret or e-mail address reaches any span
attribute or log record on the way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.apimanagement.models import SubscriptionUpdateParameters
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AttributeValue

from billing.adapters.storage import queue
from billing.store.tables import EVENT_WORK_QUEUE, USAGE_BATCH_QUEUE
from billing.usage.batches import closing_message
from devhost.queues import QueuePoller
from tests.access.conftest import USER_ID, WEBHOOK_SECRET, Stack, unique

pytestmark = pytest.mark.storage

_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def _sdk() -> None:
    """The SDK with in-memory export, as configure_azure_monitor sets it up with Azure's exporters. The
    providers are process-wide and can be set once: later tests' spans go to the exporter, cleared here."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    _EXPORTER.clear()
    _READER.get_metrics_data()  # start the counters' deltas from here
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(old_level)


def _spans(name: str) -> list[Mapping[str, AttributeValue]]:
    """The attributes of each finished span of that name."""
    return [s.attributes or {} for s in _EXPORTER.get_finished_spans() if s.name == name]


def _sums() -> dict[str, int]:
    """Each counter's value (the SDK's cumulative sums) over every attribute set."""
    data = _READER.get_metrics_data()
    out: dict[str, int] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if isinstance(metric.data, Sum):  # the counters (a histogram has no single value)
                    out[metric.name] = int(sum(p.value for p in metric.data.data_points))
    return out


def test_a_webhook_a_deferred_event_and_a_usage_batch_leave_spans_and_counts(
    stack: Stack, captured: list[logging.LogRecord]
) -> None:
    before = _sums()
    customer, _ = stack.new_customer(clock=False)
    sid = stack.checkout(customer, "standard")
    stack.settle()
    webhooks = _spans("stripe.webhook")
    assert webhooks
    assert {s.get("stripe.event_type") for s in webhooks} >= {"checkout.session.completed"}
    assert all(str(s.get("stripe.event_id", "")).startswith("evt_") for s in webhooks)

    # An event the webhook cannot finish within its budget goes to the work queue; the worker applies it.
    stack.pause_deliveries()
    stack.apim.subscription.update(*stack.where, sid, "*", SubscriptionUpdateParameters(state="suspended"))
    stack.apim_emu.faults.update({"latency_ms": 7000})
    event_id = unique("evt")
    event = {
        "id": event_id,
        "object": "event",
        "created": int(time.time()),
        "type": "invoice.paid",
        "data": {
            "object": {"id": "in_x", "object": "invoice", "parent": {"subscription_details": {"subscription": sid}}}
        },
    }
    answer = stack.post_event(event)
    stack.apim_emu.faults.update({"latency_ms": 0})
    assert answer.json()["outcome"] == "queued"
    import function_app  # noqa: PLC0415 - the app, as the host loads it

    assert QueuePoller(function_app.app, {EVENT_WORK_QUEUE: queue(EVENT_WORK_QUEUE)}).poll_once() == 1
    deferred = [s for s in _spans("stripe.webhook") if s.get("stripe.event_id") == event_id]
    assert [s.get("stripe.outcome") for s in deferred] == ["queued"]
    (worked,) = [s for s in _spans("stripe.event_work") if s.get("stripe.event_id") == event_id]
    assert worked.get("stripe.event_type") == "invoice.paid"

    # A usage batch (here a closing request) leaves its message id and counts.
    link = stack.stripe.v1.subscriptions.retrieve(sid)["items"]["data"][0]
    queue(USAGE_BATCH_QUEUE).send_message(
        closing_message(sid, int(link["current_period_start"]), int(link["current_period_end"]))
    )
    assert QueuePoller(function_app.app, {USAGE_BATCH_QUEUE: queue(USAGE_BATCH_QUEUE)}).poll_once() >= 1
    (batch,) = [s for s in _spans("usage.batch") if s.get("usage.message_kind") == "ClosingRequest"]
    assert batch.get("usage.subscriptions") == 1
    assert str(batch.get("usage.batch_id"))

    after = _sums()
    assert after.get("billing.stripe.events_deferred", 0) - before.get("billing.stripe.events_deferred", 0) == 1
    assert after.get("billing.stripe.events_applied", 0) - before.get("billing.stripe.events_applied", 0) >= 2


def test_no_secret_or_address_reaches_telemetry(stack: Stack, captured: list[logging.LogRecord]) -> None:
    customer, _ = stack.new_customer(clock=False)
    stack.checkout(customer, "basic")
    stack.post_event(b'{"id": "evt_forged"}', secret="whsec_wrong")  # refused: logged, never read
    stack.settle()
    secrets = {
        value
        for name, value in stack.env.items()
        if value and len(value) > 8 and any(k in name for k in ("KEY", "SECRET", "PASSWORD"))
    }
    secrets |= {WEBHOOK_SECRET}
    addresses = {f"{USER_ID}@example.com"}
    attributes = [json.dumps(dict(s.attributes or {}), default=str) for s in _EXPORTER.get_finished_spans()]
    # What configure_azure_monitor exports: the `billing` loggers (logger_name="billing"), at every level.
    lines = [_rendered(r) for r in captured if r.name == "billing" or r.name.startswith("billing.")]
    assert attributes
    assert lines
    for text in attributes + lines:
        for secret in secrets:
            assert secret not in text, f"a secret reached telemetry: {text[:200]}"
        for address in addresses:
            assert address not in text, f"an e-mail address reached telemetry: {text[:200]}"


def test_only_ids_and_counts_may_be_attached_and_a_last_failed_try_counts_as_poison(
    captured: list[logging.LogRecord],
) -> None:
    from billing import telemetry  # noqa: PLC0415

    before = _sums().get("billing.queue.poison_messages", 0)
    telemetry.count_poison(telemetry.MAX_DEQUEUE_COUNT - 1, USAGE_BATCH_QUEUE)  # the host tries it again
    telemetry.count_poison(telemetry.MAX_DEQUEUE_COUNT, USAGE_BATCH_QUEUE)  # its last try: to the poison queue
    assert _sums().get("billing.queue.poison_messages", 0) - before == 1
    host = json.loads(Path("host.json").read_text(encoding="utf-8"))
    assert host["extensions"]["queues"]["maxDequeueCount"] == telemetry.MAX_DEQUEUE_COUNT

    with pytest.raises(ValueError, match="ids or counts"):
        telemetry.annotate(email="someone@example.com")
    with pytest.raises(ValueError, match="ids or counts"), telemetry.span("x", password="hunter2"):
        pass


def _rendered(record: logging.LogRecord) -> str:
    text: Any = record.getMessage()
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return str(text)
