"""Usage push entry points: the timer fans out batches, the queue trigger processes one each.

Poison messages: the Functions host moves a message to `usage-batches-poison` after
maxDequeueCount (host.json: 5) failures; the reason is logged here before re-raising.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import azure.functions as func

from billing.adapters.storage import queue
from billing.store.tables import USAGE_BATCH_QUEUE
from billing.usage.batches import BadMessage, parse_message
from billing.usage.runner import fan_out, handle_message
from billing.usage.wiring import usage_push

bp = func.Blueprint()
log = logging.getLogger("billing.usage")


def _send(body: bytes) -> None:
    queue(USAGE_BATCH_QUEUE).send_message(body)


@bp.timer_trigger(schedule="%USAGE_PUSH_SCHEDULE%", arg_name="timer", run_on_startup=False)
def usage_push_timer(timer: func.TimerRequest) -> None:
    as_of = int(datetime.now(UTC).timestamp())
    plan = fan_out(usage_push(), _send, as_of)
    log.info("usage push: %d batches for as_of=%d%s", len(plan.batches), as_of, " (past due)" if timer.past_due else "")


@bp.queue_trigger(arg_name="msg", queue_name=USAGE_BATCH_QUEUE, connection="AzureWebJobsStorage")
def usage_push_batch(msg: func.QueueMessage) -> None:
    started = time.monotonic()
    dequeue = getattr(msg, "dequeue_count", None)
    try:
        parse_message(msg.get_body())  # a malformed message is named as such, before any setting is read
        summary = handle_message(usage_push(), msg.get_body(), _send, started=started)
    except BadMessage as exc:
        # Never succeeds: say why, then let the host retry it into the poison queue.
        log.error("usage push: message %s is not a usage batch: %s", msg.id, exc)
        raise
    except Exception as exc:
        log.error("usage push: message %s failed (dequeue %s): %s: %s", msg.id, dequeue, type(exc).__name__, exc)
        raise
    log.info("usage push: message %s: %s", msg.id, summary.line())
    if summary.failed:
        log.warning("usage push: %d refused: %s", summary.failed, "; ".join(summary.failures[:20]))
