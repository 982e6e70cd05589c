"""A cancellation's final invoice: made after the report lag, so that the calls before the cancel are in it.

APIM's usage data arrives minutes late (`billing.usage.timing`), and Stripe bills an event on the
invoice whose period holds its timestamp. Cancelling in Stripe at once with a final invoice would
make that invoice before the last calls are visible. So a cancel at T (Stripe's present: the test
clock's time in test mode) is done in two parts:

At T, in the request (`billing.portal.unsubscribe`), in this order:
1. Stripe: `cancel_at_period_end=true` and metadata `apim_access_ended_at=T` on the subscription.
   Every sync of it from then on (webhook, reconcile) decides "cancelled" for APIM (the metadata),
   and Stripe will not renew it: should the period end before step 5, Stripe ends it there ("If
   you've set the subscription to cancel at the end of the period, any pending prorations are also
   left in place and collected at the end of the period", API reference, Cancel a subscription; "Any
   metered usage is charged for in a final invoice when the subscription cancels at the end of the
   billing period", Stripe's cancellation guide), whose `invoice.created` gets the usual closing report
   (and step 4 lands in that draft too: T + lag comes before the period end + the draft window).
2. The usage queue: a `final` message hidden for the report lag (a durable delayed job).
3. APIM: the subscription is cancelled, so the key stops at once (the gateway answers 401).
Stripe first: were APIM cancelled first and Stripe then unreachable, the portal would offer no
second try (nothing is held any more) and the subscription would renew. Each step is idempotent,
so the consumer's retry after a failure repeats them all.

At T + lag, here (queue-triggered; the Functions host retries a failure, then moves it to poison):
4. The closing report of the period, its event stamped T - 1: inside the period, and before any end
   the final invoice can have (it ends at step 5's time, or at the period end). It reads APIM's
   whole period; the key died right after T (step 3), so every call it counts was made by then, and
   is billed with the rest at T - 1. The watermark makes it
   exactly once, whatever else reports the same period (a period-end `invoice.created`).
5. Stripe: cancel with `invoice_now=true, prorate=false`, "a final invoice that invoices for any
   un-invoiced metered usage" (SubscriptionCancelParams.invoice_now), usage of step 4 included.
   Skipped when Stripe has ended it already (the period ended first: see 1). Never before step 4
   delivered everything: a failed or pending send raises, and the message comes back.
6. The delivery confirmation `USAGE_CONFIRM_DELAY_SECONDS` later, as after every closing report,
   inside the final invoice's draft window; a shortfall it repairs is stamped before T as well.

Between 1 and 5 there is no invoice yet that would count as owed, so the portal (subscribe) and the
first grant of a new key (`billing.access.sync`) refuse a new paid subscription while one of the
consumer's Stripe subscriptions is live with that metadata: the issue-16 rule (no new keys while
something may be unpaid), and no second live subscription of the same product, whose meter counts
per customer and would bill the new calls twice. From 5 on the final invoice is a draft with an
amount due, which counts as owed. If the job never runs (poison), Stripe still ends the subscription
at the period end with the usage on a final invoice: billed later, never twice, never a new period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from billing.usage.batches import FinalRequest, PushBatch, confirm_message
from billing.usage.push import PushSummary, UsagePush
from billing.usage.windows import Period

log = logging.getLogger("billing.usage")


class SubscriptionEnder(Protocol):
    def cancel_with_final_invoice(self, subscription_id: str) -> None:
        """Cancel now with a final invoice of the unbilled usage (no proration); nothing if it has ended."""
        ...


class UsageNotDelivered(RuntimeError):
    """Stripe refused or did not confirm some usage: what was to follow it is not done yet (retried)."""


def closing_or_none(what: str, build: Callable[[], PushBatch | None]) -> PushBatch | None:
    """`build()`'s closing batch; None (logged) when the app never recorded the subscription."""
    try:
        return build()
    except LookupError as exc:
        log.warning("%s: %s; no usage reported", what, exc)
        return None


def deliver(push: UsagePush, batch: PushBatch | None, what: str, then: str) -> PushSummary:
    """Send `batch` (None: nothing to report); UsageNotDelivered unless Stripe took all of it, so that
    what `then` names happens only after the usage it must follow."""
    if batch is None:
        return PushSummary(subscriptions_seen=1, skipped=1)
    summary, _ = push.process_batch(batch)
    if summary.failed or summary.left_pending:
        raise UsageNotDelivered(f"{what}: usage not delivered ({'; '.join(summary.failures)}); {then}")
    return summary


def run_final_invoice(
    push: UsagePush,
    request: FinalRequest,
    ender: SubscriptionEnder,
    send_later: Callable[[bytes, int], None] | None = None,
    confirm_delay: int = 0,
) -> PushSummary:
    """Steps 4 to 6 of the module's description. Idempotent: a retry reports nothing twice."""
    sid, period = request.subscription_id, request.period
    old_part = report_old_part(push, sid, period, request.cancel_at)
    if old_part.failed or old_part.left_pending:
        raise UsageNotDelivered(
            f"final invoice of {sid}: the usage before its plan change not delivered "
            f"({'; '.join(old_part.failures)}); Stripe is cancelled once it is"
        )
    # Without a link (the webhook never recorded it) nothing can be reported, but it must still end.
    batch = closing_or_none(f"final invoice of {sid}", lambda: push.closing_batch(sid, period, request.cancel_at))
    summary = deliver(push, batch, f"final invoice of {sid}", "Stripe is cancelled once it is")
    ender.cancel_with_final_invoice(sid)
    if batch is not None and send_later is not None and push.counts is not None:
        send_later(confirm_message(sid, period.start, until=request.cancel_at), confirm_delay)
    log.info(
        "final invoice of %s (access ended at %d): %s; Stripe subscription cancelled",
        sid,
        request.cancel_at,
        summary.line(),
    )
    return summary


def old_part_batch(push: UsagePush, subscription_id: str, period: Period, now: int | None = None) -> PushBatch | None:
    """The closing report of the part of `period` an upgrade left behind (the old product, from its start to
    the change), as the subscription's link names it; None when the period had no such part.

    The upgrade's own job does this after the report lag (`billing.usage.plan_change`); this is its safety
    net at the period's closing report and at a cancellation's final invoice, should that job not have run
    (lost, poisoned, or queued behind the cancel): the old metered price is then still on the subscription,
    and bills the calls on that invoice. Exactly once with the job: the same watermark, whichever runs
    second finds the part settled."""
    found = push.links.get(subscription_id)
    if found is None:
        return None
    link = found[0]
    changed = link.product_since
    if not link.previous_product_id or not period.start < changed < period.end:
        return None
    return push.closing_batch(
        subscription_id,
        period,
        now,
        until=changed,
        part=(link.previous_product_id, max(period.start, link.previous_since)),
    )


def report_old_part(push: UsagePush, subscription_id: str, period: Period, now: int | None = None) -> PushSummary:
    """`old_part_batch`, sent; an empty summary when there is none."""
    batch = old_part_batch(push, subscription_id, period, now)
    if batch is None:
        return PushSummary()
    summary, _ = push.process_batch(batch)
    return summary
