"""Traces and metrics through OpenTelemetry: what the app did, for Application Insights.

The code calls the OpenTelemetry API only (spans around each trigger's work, counters of what moved);
with no SDK configured those calls do nothing. `billing.bootstrap.configure_telemetry()` turns export on in Azure: when
APPLICATIONINSIGHTS_CONNECTION_STRING is set, the Azure Monitor distro sends the spans, the metrics
and the `billing` loggers' records there (with the app's managed identity when the component takes
Entra ID authentication only). Locally nothing is set, so nothing leaves the machine.

What may be attached is closed: `span()` and `annotate()` accept only the attribute names in
`ATTRIBUTES` (ids and counts), so no secret, address or key can reach telemetry through them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

log = logging.getLogger(__name__)

# Attribute names a span may carry: ids and counts only (never an e-mail address, a key or a secret).
ATTRIBUTES = frozenset(
    {
        "stripe.event_id",
        "stripe.event_type",
        "stripe.outcome",
        "subscription.id",
        "usage.batch_id",
        "usage.message_kind",
        "usage.subscriptions",
        "usage.events_sent",
        "usage.calls_reported",
        "usage.failed",
        "usage.left_pending",
        "usage.batches",
        "usage.as_of",
        "queue.dequeue_count",
        "reconcile.changed",
    }
)

_tracer = trace.get_tracer("billing")
_meter = metrics.get_meter("billing")
# Counters (monotonic totals; Application Insights charts their rates and sums).
CALLS_REPORTED = _meter.create_counter(
    "billing.usage.calls_reported", unit="{call}", description="Billable overage calls Stripe accepted as meter events"
)
METER_EVENTS_SENT = _meter.create_counter(
    "billing.usage.meter_events_sent", unit="{event}", description="Meter events Stripe accepted"
)
METER_EVENTS_FAILED = _meter.create_counter(
    "billing.usage.meter_events_failed", unit="{event}", description="Meter events Stripe refused (left pending)"
)
METER_EVENTS_PENDING = _meter.create_up_down_counter(
    "billing.usage.meter_events_pending",
    unit="{event}",
    description="Meter events left pending by a run (retried in minutes), minus those settled since",
)
STRIPE_EVENTS_APPLIED = _meter.create_counter(
    "billing.stripe.events_applied", unit="{event}", description="Stripe events applied at once"
)
STRIPE_EVENTS_DEFERRED = _meter.create_counter(
    "billing.stripe.events_deferred", unit="{event}", description="Stripe events handed to the work queue"
)
POISON_MESSAGES = _meter.create_counter(
    "billing.queue.poison_messages",
    unit="{message}",
    description="Messages that failed on their last try (the host moves them to the poison queue)",
)
DRIFT_REPAIRED = _meter.create_counter(
    "billing.reconcile.drift_repaired",
    unit="{subscription}",
    description="APIM subscriptions reconcile changed to match Stripe",
)
# host.json: queues.maxDequeueCount. A failure on this try sends the message to the poison queue.
MAX_DEQUEUE_COUNT = 5


def _checked(attributes: Mapping[str, str | int]) -> dict[str, str | int]:
    unknown = set(attributes) - ATTRIBUTES
    if unknown:
        raise ValueError(
            f"telemetry attributes must be ids or counts from billing.telemetry.ATTRIBUTES; not {sorted(unknown)}"
        )
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


@contextmanager
def span(name: str, **attributes: str | int) -> Iterator[Span]:
    """A span around one piece of work; an exception marks it failed and propagates."""
    with _tracer.start_as_current_span(name, attributes=_checked(attributes), record_exception=True) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def annotate(**attributes: str | int) -> None:
    """Attributes for the current span (ids and counts only)."""
    trace.get_current_span().set_attributes(_checked(attributes))


def count_poison(dequeue_count: int | None, queue: str) -> None:
    """A message failing on its last allowed try is about to be moved to `<queue>-poison`."""
    if dequeue_count is not None and dequeue_count >= MAX_DEQUEUE_COUNT:
        POISON_MESSAGES.add(1, {"queue": queue})
