"""Records that the services, their ports and the adapters exchange, free of any SDK.

The Table Storage code that stores them is in `billing/store/` (`subscriptions.py`, `processed_events.py`);
the services and ports import them from here, so that naming a record never loads the Azure SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class SubscriptionLink:
    apim_subscription_id: str
    apim_user_id: str
    product_id: str
    subscription_name: str
    stripe_customer_id: str
    stripe_subscription_id: str
    stripe_usage_item_id: str  # the metered subscription item ("" for products without usage)
    stripe_status: str  # the Stripe status last applied (active, past_due, ...)
    apim_state: str  # the APIM state last applied (submitted, active, suspended, cancelled)
    current_period_start: int  # unix seconds, Stripe's current period of the subscription
    current_period_end: int
    stripe_state_at: int  # `created` of the newest Stripe event whose state was applied
    canceled_at: int = 0  # unix seconds when the Stripe subscription ended; 0 while it lives
    # Plan changes (billing.portal.plan_change): since when the subscription has `product_id` (0: from its
    # start), and the product before it with its own start. The usage of a period is billed per part:
    # `billing.usage.segments`.
    product_since: int = 0
    previous_product_id: str = ""
    previous_since: int = 0

    def with_changes(self, **changes: Any) -> SubscriptionLink:
        return replace(self, **changes)


class ClaimKind(StrEnum):
    CLAIMED = "claimed"  # the caller owns the event now
    DONE = "done"  # already applied
    BUSY = "busy"  # another handler works on it (or it is queued for the worker)


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    event_id: str
    etag: str = ""
    outcome: str = ""
    status: str = ""  # the row's status when not claimed
