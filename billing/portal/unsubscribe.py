"""Ending a subscription: report the usage so far, cancel Stripe with a final invoice, cancel APIM."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

from billing.portal.ports import HOLDING_STATES, ApimPort, PaymentsPort
from billing.usage.closing import report_closing_usage

log = logging.getLogger(__name__)


class ClosingReporter(Protocol):
    """`billing.usage.closing.report_closing_usage`: the period's usage so far, events stamped before `now`."""

    def __call__(self, subscription_id: str, period_start: int, period_end: int, *, now: int) -> object: ...


class UnsubscribeError(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def is_paid_subscription(sid: str) -> bool:
    # Paid APIM subscriptions are named after their Stripe subscription (see billing/store/subscriptions.py).
    return sid.startswith("sub_")


def closing_reporter() -> ClosingReporter:
    return report_closing_usage


def unsubscribe(sid: str, apim: ApimPort, payments: PaymentsPort, now: datetime,
                reporter: ClosingReporter | None) -> str:  # fmt: skip
    """Cancel `sid`; the product's display name for the confirmation. Idempotent."""
    sub = apim.get_subscription(sid)
    if sub is None:
        raise UnsubscribeError("there is no such subscription", status=404)
    if sub.state not in HOLDING_STATES:
        return sub.display_name  # already ended: nothing to do
    if is_paid_subscription(sid):
        period = payments.subscription_period(sid)
        if period is not None:
            # Stamp the usage in Stripe's present (a test clock's time in test mode): the final invoice
            # that the cancel makes covers the period up to that moment, and no further.
            stripe_now = period.clock_now or int(now.timestamp())
            _report_closing(reporter, sid, (period.start, period.end), stripe_now)
        payments.cancel_subscription(sid)
    apim.set_subscription_state(sid, "cancelled", "Cancelled by the consumer")
    return sub.display_name


def _report_closing(reporter: ClosingReporter | None, sid: str, period: tuple[int, int], now: int) -> None:
    # Before the cancel, so the final invoice (invoice_now) includes the calls of the partial period.
    start, end = period
    if reporter is None or now <= start:
        return
    try:
        reporter(sid, start, end, now=now)
    except LookupError:
        # No subscription link (the webhook never recorded it): nothing can be reported, but the
        # consumer must still be able to cancel. Other failures stop the cancel, to be retried.
        log.warning("closing usage not reported for %s: no subscription link", sid)
