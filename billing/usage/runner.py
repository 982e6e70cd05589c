"""Running the push: fan-out to a queue (timer), one message (queue trigger), or all in-process (CLI)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from billing.usage.batches import (
    BadMessage,
    ClosingRequest,
    ConfirmRequest,
    FinalRequest,
    PlanChangeRequest,
    batch_message,
    confirm_message,
    parse_message,
)
from billing.usage.confirm import confirm_delivery, period_of
from billing.usage.final_invoice import SubscriptionEnder, report_old_part, run_final_invoice
from billing.usage.plan_change import UsageItemRetirer, run_plan_change
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
    log.info(
        "usage push: %d batches enqueued (as of %d; links listed at %.1fs, reports read at %.1fs, cut at %.1fs)",
        plan.batch_count,
        as_of,
        plan.phases.get("links", 0),
        plan.phases.get("reports", 0),
        plan.phases.get("batches", 0),
    )
    return plan


def retry_delays(confirm_delay: int) -> tuple[int, ...]:
    """After a send that left events pending (Stripe unavailable, throttled, an ambiguous failure)
    or a read that found a shortfall, the confirmation comes back after these delays, not at the
    next daily run: 1/3, 1, 2, 4 and 8 times the confirmation delay (5 minutes to 2 hours at 900 s)."""
    return tuple(confirm_delay * factor // 3 for factor in (1, 3, 6, 12, 24))


def handle_message(
    push: UsagePush,
    body: bytes | str,
    send: Callable[[bytes], None],
    *,
    started: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    send_later: Callable[[bytes, int], None] | None = None,
    confirm_delay: int = 0,
    now: Callable[[], float] = time.time,
    ender: SubscriptionEnder | None = None,
    retirer: UsageItemRetirer | None = None,
) -> PushSummary:
    """Process one queue message. BadMessage (never retryable) and service errors propagate.

    `send_later(body, seconds)`: enqueue a message that becomes visible after `seconds`. After a
    closing report, the confirmation of its delivery goes that way, `confirm_delay` later (Stripe's
    summaries count stream events once they are processed; the invoice finalises an hour on); so
    do retries of events left pending (`retry_delays`). `ender` cancels a Stripe subscription with its
    final invoice, for a cancellation's final invoice request (`billing.usage.final_invoice`).
    """
    message = parse_message(body)
    if isinstance(message, PlanChangeRequest):
        if retirer is None:
            raise RuntimeError("a plan change request needs a way to remove the old metered price (retirer)")
        return run_plan_change(push, message, retirer)
    if isinstance(message, FinalRequest):
        if ender is None:
            raise RuntimeError("a final invoice request needs a way to cancel the Stripe subscription (ender)")
        return run_final_invoice(push, message, ender, send_later, confirm_delay)
    if isinstance(message, ConfirmRequest):
        return _confirm(push, message, send_later, int(now()), retry_delays(confirm_delay))
    old_part = PushSummary()
    if isinstance(message, ClosingRequest):
        # An upgrade's old product first, if its own job has not reported it (billing.usage.final_invoice).
        old_part = report_old_part(push, message.subscription_id, message.period)
        batch = push.closing_batch(message.subscription_id, message.period)
        if batch is None:
            old_part.subscriptions_seen, old_part.skipped = 1, old_part.skipped + 1
            return old_part
        if send_later is not None and push.counts is not None:
            send_later(confirm_message(message.subscription_id, message.period.start), confirm_delay)
    else:
        batch = message
    deadline = (clock() if started is None else started) + SAFE_RUN_SECONDS
    summary, rest = push.process_batch(batch, deadline=deadline, clock=clock)
    summary.add(old_part)
    if rest is not None:
        log.info("usage push: near the time limit, %d subscriptions re-enqueued", len(rest.items))
        send(batch_message(rest))
    if send_later is not None and push.counts is not None:
        for subscription_id, period_start in sorted(set(summary.left_pending)):
            send_later(confirm_message(subscription_id, period_start, attempt=1), retry_delays(confirm_delay)[0])
    return summary


def _confirm(
    push: UsagePush,
    request: ConfirmRequest,
    send_later: Callable[[bytes, int], None] | None,
    now: int,
    delays: tuple[int, ...],
) -> PushSummary:
    summary = PushSummary(subscriptions_seen=1)
    if push.counts is None:
        summary.skipped = 1
        return summary
    try:
        period = period_of(push, request.subscription_id, request.period_start)
    except LookupError as exc:  # the link is gone: nothing of it can be billed any more
        log.warning("usage confirm: %s", exc)
        summary.skipped = 1
        return summary
    outcome = confirm_delivery(
        push, push.counts, request.subscription_id, period, now=now, seen=request.seen, until=request.until
    )
    log.info("usage confirm: %s", outcome.line())
    summary.calls_reported = outcome.repaired
    summary.events_sent = 1 if outcome.repaired else 0
    if outcome.counted > outcome.expected:
        summary.failed, summary.failures = 1, [outcome.line()]
    if outcome.again and send_later is not None:
        if request.attempt < len(delays):
            again = confirm_message(
                request.subscription_id, request.period_start, request.attempt + 1, outcome.short_seen, request.until
            )
            send_later(again, delays[request.attempt])
        else:
            log.error(
                "usage confirm: %s still unsettled after %d attempts; the daily run keeps trying",
                request.subscription_id,
                request.attempt,
            )
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
