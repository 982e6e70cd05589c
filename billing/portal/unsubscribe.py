"""Ending a subscription: report the usage so far, cancel Stripe with a final invoice, cancel APIM."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from billing.portal.ports import HOLDING_STATES, ApimPort, PaymentsPort

log = logging.getLogger(__name__)

ClosingReporter = Callable[[str, datetime, datetime], object]


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

    HOOK: until issue 8 provides it, cancellation sends no closing usage and the last partial
    period's calls since the previous push are not billed; this is logged at warning level.
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
            start = datetime.fromtimestamp(period[0], UTC)
            if reporter is not None:
                # Before the cancel, so the final invoice includes the calls of the partial period.
                reporter(sid, start, now)
            else:
                log.warning("closing usage not reported for %s: billing.usage.closing is not available", sid)
        payments.cancel_subscription(sid)
    apim.set_subscription_state(sid, "cancelled", "Cancelled by the consumer")
    return sub.display_name
