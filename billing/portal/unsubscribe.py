"""Ending a subscription: the key stops at once; a paid one's final invoice follows after the report lag.

A paid subscription (one named after its Stripe subscription) cancelled at T, Stripe's present:
1. Stripe is told that access ended at T and that the subscription ends at its period end at the
   latest (`PaymentsPort.end_access`): no renewal can charge the consumer, and every sync keeps the
   key off;
2. the final invoice job is queued, hidden for the report lag (`FinalInvoicesPort.schedule`): it
   reports the usage up to T once APIM's data has it, then cancels in Stripe with a final invoice;
3. APIM cancels the subscription: the gateway refuses the key from now on.
Why in this order, and what the job does: `billing.usage.final_invoice`. A subscription whose first
invoice was never paid (APIM `submitted`) never had a working key: Stripe cancels it at once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from billing.portal.ports import HOLDING_STATES, ApimPort, FinalInvoicesPort, PaymentsPort

log = logging.getLogger(__name__)


class UnsubscribeError(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def is_paid_subscription(sid: str) -> bool:
    # Paid APIM subscriptions are named after their Stripe subscription (see billing/store/subscriptions.py).
    return sid.startswith("sub_")


def unsubscribe(
    sid: str, apim: ApimPort, payments: PaymentsPort, now: datetime, final_invoices: FinalInvoicesPort
) -> str:
    """Cancel `sid`; the product's display name for the confirmation. Idempotent."""
    sub = apim.get_subscription(sid)
    if sub is None:
        raise UnsubscribeError("there is no such subscription", status=404)
    if sub.state not in HOLDING_STATES:
        return sub.display_name  # already ended: nothing to do
    if is_paid_subscription(sid):
        _end_in_stripe(sid, sub.state, payments, now, final_invoices)
    apim.set_subscription_state(sid, "cancelled", "Cancelled by the consumer")
    return sub.display_name


def _end_in_stripe(
    sid: str, state: str, payments: PaymentsPort, now: datetime, final_invoices: FinalInvoicesPort
) -> None:
    period = payments.subscription_period(sid)
    if period is None:
        log.warning("cancelling %s: Stripe has no such subscription; only APIM is cancelled", sid)
        return
    if state == "submitted":
        payments.cancel_subscription(sid)  # never paid, never a working key: no usage to wait for
        return
    # Stripe's present (a test clock's time in test mode): the final invoice covers the period up to
    # it, and the usage is stamped before it.
    at = period.clock_now or int(now.timestamp())
    if payments.end_access(sid, at):
        final_invoices.schedule(sid, period.start, period.end, at)
    else:
        log.info("cancelling %s: Stripe had ended it already; only APIM is cancelled", sid)
