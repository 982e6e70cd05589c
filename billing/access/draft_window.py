"""Is Stripe's draft window long enough for the closing report? Checked on every `invoice.created` (pure).

Stripe keeps an invoice of automatic collection a draft for the account's *invoice finalization
grace period* ("All invoices have a default finalization grace period of 1 hour. During the
finalization grace period, you can continue to report usage for the previous billing period.
During finalization, Stripe updates the invoice to reflect the latest quantity for its billing
period.", docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period), and the invoice
says when that ends: `automatically_finalizes_at`, "The time when this invoice is currently
scheduled to be automatically finalized" (the API's Invoice object). The grace period is a
Dashboard setting (Invoice settings, "Invoice finalization grace period", up to 72 hours); no API
reads it, so the app cannot check it at start (`/api/health` says so) and checks each invoice.

The closing report waits for APIM's usage data and is then confirmed (`billing.usage.timing`): if
that cannot finish before the draft is finalised, the period's last calls go unbilled, and the
app says so as an error naming the setting and how much longer it must be.
"""

from __future__ import annotations

import math

# docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period: "You can set a delay of up
# to 72 hours (3 days)."
MAX_GRACE_SECONDS = 72 * 3600
WHERE = (
    'Stripe Dashboard > Settings > Billing > Invoices, "Invoice finalization grace period" '
    "(Invoice finalization delay; at most 72 hours)"
)


def _minutes(seconds: int) -> int:
    return math.ceil(seconds / 60)


def draft_window_problem(
    *, invoice_id: str, subscription_id: str, created: int | None, finalizes_at: int | None, needs_seconds: int
) -> str | None:
    """What is wrong with the invoice's draft window for a closing report taking `needs_seconds`, or None.

    The window runs from the invoice's creation to `automatically_finalizes_at`, both in Stripe's time
    (a test clock's, in test mode). None too when the invoice is not scheduled to finalise
    (`automatically_finalizes_at` null: automatic advancement is off) or its creation time is unknown.
    """
    if created is None or finalizes_at is None:
        return None
    window = finalizes_at - created
    if window >= needs_seconds:
        return None
    lacking = needs_seconds - window
    what = (
        f"invoice {invoice_id or '(no id)'} of {subscription_id}: Stripe finalises it {_minutes(window)} min "
        f"after it was created (automatically_finalizes_at), but the closing report waits for APIM's usage data "
        f"and is confirmed within {_minutes(needs_seconds)} min (USAGE_REPORT_LAG_MINUTES, "
        f"USAGE_CONFIRM_DELAY_SECONDS and 4/3 of it, queue polling): the period's last calls may go "
        f"unbilled. "
    )
    if needs_seconds > MAX_GRACE_SECONDS:
        return what + (
            "No grace period is that long (Stripe allows at most 72 hours): lower "
            "USAGE_REPORT_LAG_MINUTES or USAGE_CONFIRM_DELAY_SECONDS."
        )
    return what + f"Lengthen the invoice finalization grace period by at least {_minutes(lacking)} min: {WHERE}."
