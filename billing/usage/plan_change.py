"""An upgrade's old metered price: its usage up to the change is reported, then it leaves the subscription.

An upgrade at T (billing.portal.plan_change) swaps the flat fee at once (prorated, charged) and adds
the new product's metered price, but leaves the old product's metered item on the subscription:
Stripe's flexible billing mode "bills for usage based on the price at the time you report it", and
APIM's usage data of the calls just before T arrives minutes later. So a job waits the report lag,
as a cancellation's final invoice does (billing.usage.final_invoice), then:
1. reports the old product's part of the period, [its start, T), stamped T - 1, to the old meter: the
   closing report up to the change, as `catalog migrate-prices` does for a price move; the calls
   from T on belong to the new product (the APIM subscription moved to it at T). The part keeps the share
   of the old product's included calls that [its start, T) is of the period, as its fee does
   (`billing.pricing.part_product`): the pushes before T billed it with all of them, so this report
   sends the overage at the share less what they sent;
2. removes the old metered item with `proration_behavior=create_prorations`: "we create an invoice
   item that bills for previously reported metered usage when you remove a metered price" (flexible
   mode), so that usage is on the next invoice at the old price; and clears the metadata that
   marked the item as retiring (the portal refuses another change meanwhile).
Idempotent: the watermark makes the report exactly once, and an item already gone is left alone.
Never step 2 before step 1 delivered everything: a failed or pending send raises, and the message
comes back.
"""

from __future__ import annotations

import logging
from typing import Protocol

from billing.usage.batches import PlanChangeRequest
from billing.usage.final_invoice import closing_or_none, deliver
from billing.usage.push import PushSummary, UsagePush

log = logging.getLogger("billing.usage")


class UsageItemRetirer(Protocol):
    def retiring_item(self, subscription_id: str) -> tuple[str, int] | None:
        """(item id, instant of the upgrade) of the metered item an upgrade left to retire, as the Stripe
        subscription's metadata says; None when none is (no upgrade happened, or its job is done)."""
        ...

    def retire_usage_item(self, subscription_id: str, item_id: str) -> None:
        """Remove the metered item, billing its reported usage on the next invoice; nothing if it is gone."""
        ...


def run_plan_change(push: UsagePush, request: PlanChangeRequest, retirer: UsageItemRetirer) -> PushSummary:
    sid = request.subscription_id
    # The request is queued before the upgrade is asked of Stripe (billing.portal.plan_change): it is
    # this upgrade's only if Stripe's metadata names its item and instant. Otherwise the card was declined,
    # another tab's upgrade won, a double submit's replay kept the first instant, or the job ran already.
    retiring = retirer.retiring_item(sid)
    if retiring != (request.item_id, request.changed_at):
        log.info(
            "plan change of %s from %s at %d: not in effect (Stripe's metadata names %s); nothing reported",
            sid,
            request.product_id,
            request.changed_at,
            retiring,
        )
        return PushSummary(subscriptions_seen=1, skipped=1)
    what = f"plan change of {sid} from {request.product_id}"
    batch = closing_or_none(
        what,
        lambda: push.closing_batch(
            sid, request.period, request.changed_at, until=request.changed_at, part=(request.product_id, request.since)
        ),
    )
    summary = deliver(push, batch, what, "its price is removed once it is")
    retirer.retire_usage_item(sid, request.item_id)
    log.info(
        "plan change of %s from %s at %d: %s; its metered item %s removed",
        sid,
        request.product_id,
        request.changed_at,
        summary.line(),
        request.item_id,
    )
    return summary
