"""Stripe webhooks (issue 7): POST /api/webhooks/stripe, the event work queue, and the reconcile timer."""

from __future__ import annotations

import logging

import azure.functions as func

from billing.access.reconcile import reconcile
from billing.access.webhook import MAX_BODY_BYTES, receive, work
from billing.adapters.access_runtime import access_ports, webhook_deps
from billing.functions.http import error_response, json_response
from billing.store.tables import EVENT_WORK_QUEUE

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.route(route="webhooks/stripe", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def stripe_webhook(req: func.HttpRequest) -> func.HttpResponse:
    declared = req.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return error_response(413, "body_too_large", f"at most {MAX_BODY_BYTES} bytes are accepted")
    answer = receive(req.get_body(), req.headers.get("stripe-signature"), webhook_deps())
    return json_response(answer.body, status=answer.status, headers=answer.headers)


@bp.queue_trigger(arg_name="msg", queue_name=EVENT_WORK_QUEUE, connection="AzureWebJobsStorage")
def stripe_event_work(msg: func.QueueMessage) -> None:
    # Raising makes the host retry the message, then move it to the poison queue (host.json).
    outcome = work(msg.get_body(), webhook_deps())
    log.info("event work done: %s", outcome)


@bp.timer_trigger(schedule="%RECONCILE_SCHEDULE%", arg_name="timer", run_on_startup=False)
def reconcile_access(timer: func.TimerRequest) -> None:
    changes = reconcile(access_ports(), dry_run=False)
    log.info("reconcile: %d change(s)", len(changes.changed))
