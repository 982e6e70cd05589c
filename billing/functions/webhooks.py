"""Stripe webhooks (issue 7): POST /api/webhooks/stripe, the event work queue, and the reconcile timer."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import azure.functions as func

from billing import bootstrap, telemetry
from billing.access.reconcile import reconcile
from billing.access.webhook import MAX_BODY_BYTES, receive, work
from billing.functions.http import error_response, json_response
from billing.store.tables import EVENT_WORK_QUEUE

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.route(route="webhooks/stripe", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def stripe_webhook(req: func.HttpRequest) -> func.HttpResponse:
    declared = req.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return error_response(413, "body_too_large", f"at most {MAX_BODY_BYTES} bytes are accepted")
    with telemetry.span("stripe.webhook"):
        answer = receive(req.get_body(), req.headers.get("stripe-signature"), bootstrap.services().webhook_deps())
        _count_event(answer.status, answer.body)
    return json_response(answer.body, status=answer.status, headers=answer.headers)


def _count_event(status: int, body: Mapping[str, object]) -> None:
    if status != 200 or body.get("duplicate") or not body.get("received"):
        return
    outcome = str(body.get("outcome", ""))
    telemetry.annotate(**{"stripe.outcome": outcome[:200]})
    (telemetry.STRIPE_EVENTS_DEFERRED if outcome == "queued" else telemetry.STRIPE_EVENTS_APPLIED).add(1)


@bp.queue_trigger(arg_name="msg", queue_name=EVENT_WORK_QUEUE, connection="AzureWebJobsStorage")
def stripe_event_work(msg: func.QueueMessage) -> None:
    # Raising makes the host retry the message, then move it to the poison queue (host.json).
    dequeue = getattr(msg, "dequeue_count", None)
    with telemetry.span("stripe.event_work", **{"queue.dequeue_count": dequeue or 0}):
        try:
            outcome = work(msg.get_body(), bootstrap.services().webhook_deps())
        except Exception:
            telemetry.count_poison(dequeue, EVENT_WORK_QUEUE)
            raise
        telemetry.STRIPE_EVENTS_APPLIED.add(1)
    log.info("event work done: %s", outcome)


@bp.timer_trigger(schedule="%RECONCILE_SCHEDULE%", arg_name="timer", run_on_startup=False)
def reconcile_access(timer: func.TimerRequest) -> None:
    with telemetry.span("stripe.reconcile"):
        changes = reconcile(bootstrap.services().access_ports(), dry_run=False)
        telemetry.annotate(**{"reconcile.changed": len(changes.changed)})
        telemetry.DRIFT_REPAIRED.add(len(changes.changed))
    log.info("reconcile: %d change(s)", len(changes.changed))
