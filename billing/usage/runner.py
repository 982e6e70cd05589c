"""Running the push: fan-out to a queue (timer), one message (queue trigger), or all in-process (CLI)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from billing.usage.batches import BadMessage, ClosingRequest, batch_message, parse_message
from billing.usage.push import PushPlan, PushSummary, UsagePush

log = logging.getLogger("billing.usage")

# The Functions host stops a run at functionTimeout (host.json: 10 minutes); stop taking new work
# well before, and re-enqueue the rest: the watermarks make resuming exact.
SAFE_RUN_SECONDS = 8 * 60


def fan_out(push: UsagePush, send: Callable[[bytes], None], as_of: int) -> PushPlan:
    """Read the reports and enqueue one message per batch; returns the plan (its batches all sent).

    Each product's batches are enqueued as soon as its report is read, so queue workers start on
    them while the next product's report is read. A fan-out that fails part-way is simply run
    again: the watermarks say what is counted.
    """
    plan = push.plan(as_of, on_batch=lambda batch: send(batch_message(batch)))
    log.info("usage push: %d batches enqueued (as of %d; links listed at %.1fs, reports read at %.1fs, cut at "
             "%.1fs)", len(plan.batches), as_of, plan.phases.get("links", 0), plan.phases.get("reports", 0),
             plan.phases.get("batches", 0))  # fmt: skip
    return plan


def handle_message(
    push: UsagePush, body: bytes | str, send: Callable[[bytes], None], *,
    started: float | None = None, clock: Callable[[], float] = time.monotonic,
) -> PushSummary:  # fmt: skip
    """Process one queue message. BadMessage (never retryable) and service errors propagate."""
    message = parse_message(body)
    if isinstance(message, ClosingRequest):
        batch = push.closing_batch(message.subscription_id, message.period)
        if batch is None:
            return PushSummary(subscriptions_seen=1, skipped=1)
    else:
        batch = message
    deadline = (clock() if started is None else started) + SAFE_RUN_SECONDS
    summary, rest = push.process_batch(batch, deadline=deadline, clock=clock)
    if rest is not None:
        send(batch_message(rest))
        log.info("usage push: near the time limit, %d subscriptions re-enqueued", len(rest.items))
    return summary


def run_in_process(push: UsagePush, as_of: int, *, dry_run: bool = False) -> PushSummary:
    """Plan and process every batch here (the CLI): same code as the queue path, no queue."""
    total = PushSummary()
    plan = push.plan(as_of)
    for batch in plan.batches:
        summary, _ = push.process_batch(batch, dry_run=dry_run)
        total.add(summary)
    return total


__all__ = ["BadMessage", "fan_out", "handle_message", "run_in_process"]
