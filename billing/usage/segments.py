"""Which product billed which part of a billing period, after plan changes (billing.portal.plan_change).

A subscription link names its product, since when it has it (`product_since`, Stripe's time; 0: from
the start) and the product before it with that one's start. A period's usage is billed per part:
- an upgrade at T splits the period: the old product's part [its start, T) is closed by the plan
  change job (`billing.usage.plan_change`), the new product's part [T, end) by the period's closing report;
- a downgrade takes effect at a period end: the finished period is wholly the old product's, and is
  closed (after the new product's metadata reached the link) by the same closing report.
Each part's included calls are prorated as its fee is (`billing.pricing.part_product`): the new
product's from the change to the end, the old product's from its start to the change. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from billing.usage.windows import Period

if TYPE_CHECKING:
    from billing.records import SubscriptionLink


def part_of(link: SubscriptionLink, period: Period) -> tuple[str, int]:
    """(product id, start of its part) of the product that billed the end of `period`."""
    if link.product_since and link.product_since >= period.end and link.previous_product_id:
        return link.previous_product_id, max(period.start, link.previous_since)
    return link.product_id, max(period.start, min(link.product_since, period.end))
