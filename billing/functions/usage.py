"""Usage push entry points: the timer fans out batches, the queue trigger processes one each.

Poison messages: the Functions host moves a message to `usage-batches-poison` after
maxDequeueCount (host.json: 5) failures; the reason is logged here before re-raising.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import azure.functions as func

from billing import bootstrap, telemetry
from billing.access.webhook import Answer, verify
from billing.adapters.stripe_cancel import StripeSubscriptionEnder
from billing.adapters.stripe_client import webhook_secrets
from billing.adapters.stripe_signature import signature_problem
from billing.functions.http import error_response, json_response
from billing.records import ClaimKind
from billing.store.tables import USAGE_BATCH_QUEUE
from billing.usage.batches import BadMessage, confirm_message, parse_message
from billing.usage.meter_errors import NO_METER, THIN_EVENT_TYPES, error_codes, periods_to_confirm
from billing.usage.push import PushSummary
from billing.usage.runner import fan_out, handle_message
from billing.usage.wiring import confirm_delay_seconds

bp = func.Blueprint()
log = logging.getLogger("billing.usage")


# Every client and adapter comes from the composition root: built once per process, reused by each
# invocation (a queue message no longer builds its own ARM, Stripe and Storage clients).
def _send(body: bytes) -> None:
    bootstrap.services().queue(USAGE_BATCH_QUEUE).send_message(body)


def _send_later(body: bytes, seconds: int) -> None:
    bootstrap.services().queue(USAGE_BATCH_QUEUE).send_message(body, visibility_timeout=seconds)


@bp.timer_trigger(schedule="%USAGE_PUSH_SCHEDULE%", arg_name="timer", run_on_startup=False)
def usage_push_timer(timer: func.TimerRequest) -> None:
    as_of = int(datetime.now(UTC).timestamp())
    with telemetry.span("usage.fan_out", **{"usage.as_of": as_of}):
        services = bootstrap.services()  # once: fan_out sends thousands of batches
        batches = services.queue(USAGE_BATCH_QUEUE)

        def send(body: bytes) -> None:
            batches.send_message(body)

        plan = fan_out(services.usage_push(), send, as_of)
        telemetry.annotate(**{"usage.batches": plan.batch_count})
    log.info("usage push: %d batches for as_of=%d%s", plan.batch_count, as_of, " (past due)" if timer.past_due else "")


@bp.queue_trigger(arg_name="msg", queue_name=USAGE_BATCH_QUEUE, connection="AzureWebJobsStorage")
def usage_push_batch(msg: func.QueueMessage) -> None:
    started = time.monotonic()
    dequeue = getattr(msg, "dequeue_count", None)
    with telemetry.span("usage.batch", **{"usage.batch_id": str(msg.id or ""), "queue.dequeue_count": dequeue or 0}):
        summary = _batch(msg, started, dequeue)
        _record(summary)
    log.info("usage push: message %s: %s", msg.id, summary.line())
    if summary.failed:
        log.warning("usage push: %d refused: %s", summary.failed, "; ".join(summary.failures[:20]))


def _record(summary: PushSummary) -> None:
    """The batch's counts on its span and in the metrics."""
    telemetry.annotate(
        **{
            "usage.subscriptions": summary.subscriptions_seen,
            "usage.events_sent": summary.events_sent,
            "usage.calls_reported": summary.calls_reported,
            "usage.failed": summary.failed,
            "usage.left_pending": len(summary.left_pending),
        }
    )
    telemetry.CALLS_REPORTED.add(summary.calls_reported)
    telemetry.METER_EVENTS_SENT.add(summary.events_sent + summary.recovered)
    telemetry.METER_EVENTS_FAILED.add(summary.failed)
    telemetry.METER_EVENTS_PENDING.add(len(summary.left_pending))


def _batch(msg: func.QueueMessage, started: float, dequeue: int | None) -> PushSummary:
    try:
        kind = parse_message(msg.get_body())  # a malformed message is named as such, before any setting is read
        telemetry.annotate(**{"usage.message_kind": type(kind).__name__})
        services = bootstrap.services()
        summary = handle_message(
            services.usage_push(),
            msg.get_body(),
            _send,
            started=started,
            send_later=_send_later,
            confirm_delay=confirm_delay_seconds(),
            ender=(stripe_ender := StripeSubscriptionEnder(services.stripe())),
            retirer=stripe_ender,
        )
    except BadMessage as exc:
        # Never succeeds: say why, then let the host retry it into the poison queue.
        log.error("usage push: message %s is not a usage batch: %s", msg.id, exc)
        telemetry.count_poison(dequeue, USAGE_BATCH_QUEUE)
        raise
    except Exception as exc:
        log.error("usage push: message %s failed (dequeue %s): %s: %s", msg.id, dequeue, type(exc).__name__, exc)
        telemetry.count_poison(dequeue, USAGE_BATCH_QUEUE)
        raise
    return summary


@bp.route(route="webhooks/stripe-events", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def stripe_thin_events(req: func.HttpRequest) -> func.HttpResponse:
    """Stripe's event destination for thin events: meter errors reopen the periods they name."""
    with telemetry.span("stripe.event_destination"):
        return _thin_event(req)


def _thin_event(req: func.HttpRequest) -> func.HttpResponse:
    body = req.get_body() or b""
    secrets = webhook_secrets(setting="STRIPE_EVENT_DESTINATION_SECRET")
    verified = verify(
        body,
        req.headers.get("stripe-signature"),
        secrets,  # before anything is read
        signature_problem,
        "STRIPE_EVENT_DESTINATION_SECRET",
    )
    if isinstance(verified, Answer):
        return json_response(verified.body, status=verified.status, headers=verified.headers)
    event_id, event_type = str(verified.get("id") or ""), str(verified.get("type") or "")
    telemetry.annotate(**{"stripe.event_id": event_id[:100], "stripe.event_type": event_type[:100]})
    if event_type not in THIN_EVENT_TYPES or not event_id:
        return json_response({"received": True, "outcome": f"event type {event_type!r} is not handled"})
    claims = bootstrap.services().processed_events()
    claim = claims.claim(event_id, event_type)
    if claim.kind is ClaimKind.DONE:
        return json_response({"received": True, "outcome": "already handled"})
    if claim.kind is ClaimKind.BUSY:
        return error_response(409, "in_progress", "another instance handles this event; Stripe retries it")
    try:
        full = bootstrap.services().stripe().parse_event_notification_without_verification(body).fetch_event().to_dict()
        if event_type == NO_METER:
            log.error(
                "usage: Stripe found no meter for some events (%s): run `python -m billing catalog apply`",
                ", ".join(error_codes(full)),
            )
        periods = periods_to_confirm(full)
        for subscription_id, period_start in sorted(periods):
            _send(confirm_message(subscription_id, period_start))
    except Exception:
        claims.release(claim)  # Stripe retries the delivery; the confirmations are idempotent
        log.exception("usage: meter error event %s not handled", event_id)
        return error_response(502, "unavailable", "Stripe or the queue did not answer; retry later")
    outcome = f"{len(periods)} period(s) to confirm ({', '.join(error_codes(full))})"
    log.warning("usage: meter error report %s: %s", event_id, outcome)
    claims.mark_done(claim, outcome)
    return json_response({"received": True, "outcome": outcome})
