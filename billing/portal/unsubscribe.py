"""Ending a subscription: report the usage so far, cancel Stripe with a final invoice, cancel APIM."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime

from billing.portal.ports import HOLDING_STATES, ApimPort, PaymentsPort

log = logging.getLogger(__name__)

# report_closing_usage(subscription id, period start, period end) with unix seconds (issue 8).
ClosingReporter = Callable[[str, int, int], object]


class UnsubscribeError(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def is_paid_subscription(sid: str) -> bool:
    # Paid APIM subscriptions are named after their Stripe subscription (see billing/store/subscriptions.py).
    return sid.startswith("sub_")


def closing_reporter() -> ClosingReporter | None:
    """`billing.usage.closing.report_closing_usage` (issue 8) when it exists.

    Without it, cancellation sends no closing usage (the calls since the last push are not billed);
    this is logged at warning level.
    """
    try:
        module = importlib.import_module("billing.usage.closing")
    except ModuleNotFoundError:
        return None
    reporter = getattr(module, "report_closing_usage", None)
    return reporter if callable(reporter) else None


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
            _report_closing(reporter, sid, period[0], int(now.timestamp()))
        payments.cancel_subscription(sid)
    apim.set_subscription_state(sid, "cancelled", "Cancelled by the consumer")
    return sub.display_name


def _report_closing(reporter: ClosingReporter | None, sid: str, start: int, end: int) -> None:
    # Before the cancel, so the final invoice (invoice_now) includes the calls of the partial period.
    if reporter is None:
        log.warning("closing usage not reported for %s: billing.usage.closing is not available", sid)
        return
    if end <= start:
        return
    try:
        reporter(sid, start, end)
    except LookupError:
        # No subscription link (the webhook never recorded it): nothing can be reported, but the
        # consumer must still be able to cancel. Other failures stop the cancel, to be retried.
        log.warning("closing usage not reported for %s: no subscription link", sid)
