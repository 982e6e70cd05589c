"""The closing report, run in-process: a subscription's usage up to the END of a period, before Stripe invoices it.

The queue paths run the same report after the report lag: on `invoice.created` (the closing
message, `billing.usage.runner`) and after a cancel (`billing.usage.final_invoice`). This in-process
form serves the catalog's price moves (`python -m billing catalog migrate-prices`), which wait the
report lag themselves and then report the calls made before the move. It reads the reports up to
the period's end (or the move) and sends what the watermark does not have.
"""

from __future__ import annotations

import time

from billing.usage.push import PushSummary, UsagePush
from billing.usage.windows import Period


def report_closing_usage(
    subscription_id: str,
    period_start: int,
    period_end: int,
    push: UsagePush,
    *,
    now: int | None = None,
    until: int | None = None,
) -> PushSummary:
    """Report the subscription's unreported usage of [period_start, period_end); idempotent.

    `now` (default: the wall clock) matters when
    the period has not ended (a price move, a cancel): the event then carries `now` - 1 s (inside the
    invoice that a change at `now` closes), not the period's end. `until`: count only the calls made
    before it (a price move: the later ones belong to the new price).
    Raises LookupError if there is no link for
    the subscription, ValueError for an empty period; Stripe refusals are in the summary's failures.
    """
    when = int(time.time()) if now is None else now
    batch = push.closing_batch(subscription_id, Period(period_start, period_end), when, until)
    if batch is None:
        return PushSummary(subscriptions_seen=1, skipped=1)
    summary, _ = push.process_batch(batch)
    return summary
