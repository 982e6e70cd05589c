"""The closing report: a subscription's usage up to the END of a period, before Stripe invoices it.

Called by the webhook area on `invoice.created` (the period that just ended) and by the
unsubscribe flow before it cancels with `invoice_now=True` (the current period). It reads the
reports up to the period's end (not now minus the lag) and sends what the watermark does not have.
"""

from __future__ import annotations

import time

from billing.usage.push import PushSummary, UsagePush
from billing.usage.windows import Period
from billing.usage.wiring import usage_push


def report_closing_usage(
    subscription_id: str, period_start: int, period_end: int, push: UsagePush | None = None, *,
    now: int | None = None,
) -> PushSummary:
    """Report the subscription's unreported usage of [period_start, period_end); idempotent.

    `push` defaults to one built from the app settings. `now` (default: the wall clock) matters at
    cancellation, when the period has not ended: the event then carries `now` - 1 s (inside the final
    invoice that a cancel at `now` closes), not the period's end.
    Raises LookupError if there is no link for
    the subscription, ValueError for an empty period; Stripe refusals are in the summary's failures.
    """
    if push is None:
        push = usage_push()
    when = int(time.time()) if now is None else now
    batch = push.closing_batch(subscription_id, Period(period_start, period_end), when)
    if batch is None:
        return PushSummary(subscriptions_seen=1, skipped=1)
    summary, _ = push.process_batch(batch)
    return summary
