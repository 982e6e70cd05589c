"""What the billing page shows: a link to Stripe's billing portal and each subscription's usage and quote."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from billing.models import PERIOD_SECONDS, MonetizationModels, UnknownProductError
from billing.portal.offers import money, quote_lines
from billing.portal.plan_change import Pending, PlanChangeError, PlanChangesPort, kind_of, subject, targets
from billing.portal.ports import HOLDING_STATES, ApimPort, PaymentsPort
from billing.portal.unsubscribe import is_paid_subscription
from billing.pricing import quote
from billing.usage.plan import UsageCounts
from billing.usage.ports import UsageReports
from billing.usage.windows import ReportWindow


@dataclass(frozen=True)
class SubscriptionUsage:
    sid: str
    name: str
    product_name: str
    state: str
    period_start: datetime
    period_end: datetime
    calls: int
    lines: list[tuple[str, str]]  # (description, amount)
    total: str
    # Plan changes (billing.portal.plan_change): the change planned for the period end, if any ("changes to
    # X on <date>", with an undo form), and the products the subscription can move to (a link each).
    pending: Pending | None = None
    changes: tuple[tuple[str, str, str], ...] = ()  # (product id, display name, upgrade|downgrade|to_free)
    changeable: bool = False


@dataclass(frozen=True)
class BillingOverview:
    portal_url: str | None  # None: no Stripe customer yet (only free products)
    subscriptions: list[SubscriptionUsage]


def free_period(start: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The current 30-day period counted from activation, as APIM renews a monthly quota."""
    length = timedelta(seconds=PERIOD_SECONDS["month"])
    elapsed = max(timedelta(0), now - start)
    begin = start + length * (elapsed // length)
    return begin, begin + length


def overview(
    uid: str,
    *,
    models: MonetizationModels,
    apim: ApimPort,
    payments: PaymentsPort,
    usage: UsageReports,
    now: datetime,
    return_url: str,
    plan_changes: PlanChangesPort | None = None,
) -> BillingOverview:
    """`usage`: the usage push's source (gateway logs or the Reports API), so the page counts as billing does."""
    customer = payments.find_customer(uid)
    portal_url = payments.billing_portal_url(customer, return_url) if customer else None
    rows: list[SubscriptionUsage] = []
    for sub in apim.user_subscriptions(uid):
        if sub.state not in HOLDING_STATES or sub.product_id is None:
            continue
        try:
            product = models.product(sub.product_id)
        except UnknownProductError:
            continue
        period = payments.subscription_period(sub.sid) if is_paid_subscription(sub.sid) else None
        if period is not None:
            start, end = datetime.fromtimestamp(period.start, UTC), datetime.fromtimestamp(period.end, UTC)
        else:
            start, end = free_period(sub.start or sub.created or now, now)
        # Whole seconds, the end rounded up so that calls in its last second count.
        window = ReportWindow(int(start.timestamp()), max(int(start.timestamp()) + 1, math.ceil(now.timestamp())))
        calls = usage.read(window, subscription_id=sub.sid).get(sub.sid, UsageCounts()).billable(product)
        q = quote(product, calls)
        pending: Pending | None = None
        options: tuple[tuple[str, str, str], ...] = ()
        changeable = False
        if plan_changes is not None and period is not None and sub.state == "active":
            try:
                subject_ = subject(uid, sub.sid, models=models, apim=apim, changes=plan_changes)
            except PlanChangeError:
                subject_ = None
            if subject_ is not None:
                pending, changeable = subject_.pending(models), True
                options = tuple((p.id, p.display_name, kind_of(product, p).value) for p in targets(subject_, models))
        rows.append(
            SubscriptionUsage(
                sub.sid,
                sub.display_name,
                product.display_name,
                sub.state,
                start,
                end,
                calls,
                quote_lines(product, q),
                money(product, q.total),
                pending,
                options,
                changeable,
            )
        )
    return BillingOverview(portal_url, rows)
