"""What to tell Stripe about one subscription's usage: the pure decision of the usage push.

Each push reads the period-to-date counts of a subscription (not deltas) and compares them with
the watermark: the cumulative billable calls already reported for that period. The meter receives
only calls beyond the product's included calls (`billing.pricing.billable_overage`), so the event
value is the difference of the overage at the new and the old cumulative count. Splitting a
period's calls into any number of pushes therefore sends exactly `billable_overage(total)`.

Pure: no SDK, no adapter, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from billing.catalog_names import meter_event_name
from billing.models import CallOutcome, Product
from billing.pricing import billable_overage

# Stripe: a meter event identifier is at most 100 characters.
MAX_IDENTIFIER_LENGTH = 100


@dataclass(frozen=True)
class UsageCounts:
    """Calls of one subscription in a window, by APIM report outcome class."""

    success: int = 0
    blocked: int = 0
    failed: int = 0
    other: int = 0

    def __post_init__(self) -> None:
        for name in ("success", "blocked", "failed", "other"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} calls must be a whole number >= 0, got {value!r}")

    def billable(self, product: Product) -> int:
        """Calls of the product's billable outcomes (success by default). Blocked never counts."""
        by_outcome = {CallOutcome.SUCCESS: self.success, CallOutcome.FAILED: self.failed}
        return sum(by_outcome[outcome] for outcome in set(product.billable_outcomes))


@dataclass(frozen=True)
class MeterEvent:
    """One Stripe meter event: `value` overage calls of `customer_id` on the product's meter."""

    identifier: str
    event_name: str
    customer_id: str
    value: int
    timestamp: int  # unix seconds, inside the billing period the calls belong to
    subscription_id: str  # for logs and summaries; not sent


@dataclass(frozen=True)
class Step:
    """The outcome of planning one subscription: an event to send (or none) and the new watermark."""

    event: MeterEvent | None
    reported: int  # the cumulative billable calls to record once the event is accepted
    note: str = ""  # why nothing moved, for the summary ("" when something did)


def event_identifier(subscription_id: str, period_start: int, cumulative: int) -> str:
    """Deterministic: the same subscription, period and cumulative count give the same identifier.

    A rerun after a crash between sending and recording resends it, and Stripe drops the duplicate.
    """
    plain = f"{subscription_id}:{period_start}:{cumulative}"
    if len(plain) <= MAX_IDENTIFIER_LENGTH:
        return plain
    digest = hashlib.sha256(plain.encode("utf-8")).hexdigest()
    return f"u:{digest}"


def event_timestamp(period_start: int, period_end: int, window_end: int) -> int:
    """When the event says the calls happened: the window's end, but never outside the period.

    Stripe bills an event on the invoice of the period its timestamp falls in ([start, end)), so a
    late push (or the closing report, whose window ends at the period end) stays in its period.
    """
    if period_end <= period_start:
        raise ValueError(f"the period must end after it starts, got [{period_start}, {period_end})")
    return max(period_start, min(window_end, period_end - 1))


def plan_step(
    *,
    subscription_id: str,
    customer_id: str,
    product: Product,
    period_start: int,
    period_end: int,
    period_to_date: UsageCounts,
    reported: int,
    window_end: int,
) -> Step:
    """The event for the calls not yet reported this period, and the watermark after it."""
    if not product.is_metered:
        return Step(None, reported, "product is not metered")
    if reported < 0:
        raise ValueError(f"the watermark must be >= 0, got {reported}")
    cumulative = period_to_date.billable(product)
    if cumulative < reported:
        # Reports never shrink in APIM; if one does, keep what was billed and never send a negative.
        return Step(None, reported, f"report shows {cumulative} billable calls, below the {reported} reported")
    value = billable_overage(product, cumulative) - billable_overage(product, reported)
    if value == 0:
        note = "" if cumulative > reported else "no new billable calls"
        return Step(None, cumulative, note)
    event = MeterEvent(
        identifier=event_identifier(subscription_id, period_start, cumulative),
        event_name=meter_event_name(product.id),
        customer_id=customer_id,
        value=value,
        timestamp=event_timestamp(period_start, period_end, window_end),
        subscription_id=subscription_id,
    )
    return Step(event, cumulative)


@dataclass(frozen=True)
class PendingEvent:
    """An event written down before sending: once Stripe has it, the watermark becomes `reported`.

    A run that finds one (a crash between sending and recording) resends it unchanged, so Stripe's
    identifier de-duplication drops it if the first send had arrived.
    """

    event: MeterEvent
    reported: int
