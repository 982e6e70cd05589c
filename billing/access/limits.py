"""What the models file asks of each live subscription beyond access: the spending limit of
metered products (a Stripe billing threshold) and quota counters that restart with each period.
Pure code.

Past a product's spending limit in a period, Stripe invoices the period's bill at once (a
monetary billing threshold with the billing cycle anchor unchanged). If the card pays, the period
goes on; if not, the invoice's failed payment suspends the key exactly as a failed renewal does,
until the consumer pays. Chosen over billing alerts (`billing.alert.triggered`), which only notify
and would leave the app to invent when the key comes back: the threshold invoice is a real debt with
Stripe's own retries, dunning and hosted payment page. Stripe does not evaluate thresholds in the
last 24 hours of a period (the period-end invoice follows then anyway), and sees usage only as fast
as the usage push reports it: the exposure is the limit plus what the rate limit allows in between.
"""

from __future__ import annotations

from collections.abc import Mapping

from billing.access.stripe_objects import SubscriptionSnapshot
from billing.catalog_names import apim_product_id
from billing.models import MonetizationModels

# Statuses in which a subscription accrues usage and should carry its threshold.
_ACCRUING = frozenset({"active", "trialing", "past_due"})


def spending_limits(models: MonetizationModels) -> dict[str, int]:
    """APIM product id -> spending limit in minor units, for the products that declare one."""
    return {
        apim_product_id(p.id): p.spending_limit_minor for p in models.products if p.spending_limit_minor is not None
    }


def quota_resets(models: MonetizationModels) -> frozenset[str]:
    """APIM product ids of the paid products with a monthly quota: their counters restart with each period
    (on the tiers that have counters; the adapter knows the tier)."""
    return frozenset(
        apim_product_id(p.id)
        for p in models.products
        if p.is_paid and p.quota is not None and p.quota.period == "month"
    )


def threshold_to_set(snapshot: SubscriptionSnapshot, product_id: str, limits: Mapping[str, int]) -> int | None:
    """The billing threshold to write on the subscription, or None when it already has the right one."""
    limit = limits.get(product_id)
    if limit is None or snapshot.state.status not in _ACCRUING or snapshot.state.ended_at:
        return None
    if snapshot.state.access_ended:
        return None  # cancelled: no more usage, and its final invoice is on its way
    return None if snapshot.billing_threshold == limit else limit
