"""What to tell Stripe about one subscription's usage: the pure decision of the usage push.

The watermark of a subscription and period holds the cumulative billable calls already reported
and a cursor: the end of the last report window added to it (`billing.usage.windows`). A push adds
the calls of its window to the cumulative count (`window_action` says whether it may), the closing
report replaces it by the whole period's count. The meter receives only calls beyond the product's
included calls (`billing.pricing.billable_overage`), so the event value is the difference of the
overage at the new and the old cumulative count. Splitting a period's calls into any number of
pushes therefore sends exactly `billable_overage(total)`.

Pure: no SDK, no adapter, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from billing.catalog_names import meter_event_name
from billing.models import CallOutcome, Product
from billing.pricing import billable_overage
from billing.usage.windows import Period, RunWindow

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
        # One check for the usual case (made for every report row and batch item); `type() is int`
        # also refuses bools. Only a failing value is looked at one by one, to name it.
        s, b, f, o = self.success, self.blocked, self.failed, self.other
        if type(s) is int and type(b) is int and type(f) is int and type(o) is int and min(s, b, f, o) >= 0:
            return
        for name in ("success", "blocked", "failed", "other"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} calls must be a whole number >= 0, got {value!r}")

    def __add__(self, other: UsageCounts) -> UsageCounts:
        return UsageCounts(
            self.success + other.success,
            self.blocked + other.blocked,
            self.failed + other.failed,
            self.other + other.other,
        )

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


def event_identifier(subscription_id: str, period_start: int, cumulative: int, *, share: bool = False) -> str:
    """Deterministic: the same subscription, period and cumulative count give the same identifier.

    A rerun after a crash between sending and recording resends it, and Stripe drops the duplicate.
    `share`: the closing of an upgrade's old product, which sends the rest of its overage at its share of
    the included calls, possibly at the cumulative count of the last push before the change (no call since):
    "p:" keeps it from being that push's identifier, which Stripe would drop as a duplicate.
    """
    plain = f"{'p:' if share else ''}{subscription_id}:{period_start}:{cumulative}"
    if len(plain) <= MAX_IDENTIFIER_LENGTH:
        return plain
    digest = hashlib.sha256(plain.encode("utf-8")).hexdigest()
    return f"u:{digest}"


def summary_window(period_start: int, period_end: int) -> tuple[int, int]:
    """Whole minutes that hold every event of the period and none of the periods around it.

    Stripe's meter event summaries take bounds "aligned with minute boundaries", and a period starts
    and ends at any second. Events are never stamped in the period's last, partial minute
    (`event_timestamp`), so the window runs from the minute the period starts in to the one it ends
    in: the period before keeps its events before this start, the next one starts after this end.
    A period that does not reach past a minute boundary (never a real billing period) is returned as it is.
    """
    if period_end <= period_start:
        raise ValueError(f"the period must end after it starts, got [{period_start}, {period_end})")
    start, end = period_start // 60 * 60, period_end // 60 * 60
    return (start, end) if end > period_start else (period_start, period_end)


def event_timestamp(period_start: int, period_end: int, window_end: int) -> int:
    """When the event says the calls happened: the window's end, but never outside the period.

    Stripe bills an event on the invoice of the period its timestamp falls in ([start, end)), so a
    late push (or the closing report, whose window ends at the period end) stays in its period, and
    before its last partial minute (`summary_window`), so a confirmation reads it back. Never later
    than the window's end: a cancellation's final invoice closes at the cancel.
    """
    _, end = summary_window(period_start, period_end)
    return max(period_start, min(window_end, end - 1))


def plan_step(
    *,
    subscription_id: str,
    customer_id: str,
    product: Product,
    period_start: int,
    period_end: int,
    cumulative: int,
    reported: int,
    window_end: int,
    reported_product: Product | None = None,
) -> Step:
    """The event for the calls not yet reported this period, and the watermark after it.

    `cumulative`: the billable calls of the period counted so far, the new ones included.
    `reported_product`: the product the `reported` calls were billed with, when it is not `product`
    (an upgrade's old product: pushed with all its included calls, closed with their share of its part
    of the period, `billing.pricing.part_product`). The watermark stays a call count either way.
    """
    if not product.is_metered:
        return Step(None, reported, "product is not metered")
    if reported < 0:
        raise ValueError(f"the watermark must be >= 0, got {reported}")
    if cumulative < reported:
        # Reports never shrink in APIM; if one does, keep what was billed and never send a negative.
        return Step(None, reported, f"report shows {cumulative} billable calls, below the {reported} reported")
    before = product if reported_product is None else reported_product
    value = billable_overage(product, cumulative) - billable_overage(before, reported)
    if value < 0:
        # Never with fewer included calls now than then (a part's share); refuse rather than send it.
        raise ValueError(f"{subscription_id}: {cumulative} calls on {product.id} bill less than {reported} reported")
    if value == 0:
        note = "" if cumulative > reported else "no new billable calls"
        return Step(None, cumulative, note)
    event = MeterEvent(
        identifier=event_identifier(subscription_id, period_start, cumulative, share=before != product),
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
    counted_until: int  # the watermark's cursor once Stripe has the event
    closed: bool = False  # a closing report's event: once recorded, the period is settled


class WindowAction(Enum):
    COUNT = "count"  # add the window's calls to the watermark, cursor to the window's end
    ADOPT = "adopt"  # first window of the period: count nothing, cursor to the window's end
    SKIP = "skip"  # leave the watermark as it is (already counted, or the closing report's part)


def window_action(cursor: int | None, period: Period, run: RunWindow) -> WindowAction:
    """What a push with window `run` may do with a watermark whose cursor is `cursor` (None: no row).

    Counting needs the window inside the period and not before the cursor (no call twice); a gap
    between cursor and window start (a failed run) is the closing report's part.
    """
    if run.end > period.end or run.end <= period.start:
        return WindowAction.SKIP  # the window reaches beyond the period (or before it)
    if cursor is not None and (cursor >= run.end or run.start is None or cursor > run.start):
        return WindowAction.SKIP  # counted already, or the window overlaps what was counted
    if run.start is not None and run.start >= period.start:
        return WindowAction.COUNT
    return WindowAction.ADOPT if cursor is None else WindowAction.SKIP
