"""Confirming deliveries: what the watermark says Stripe has, against what Stripe's meter counted.

Stripe's v2 meter event stream answers before it validates ("Events are processed asynchronously,
including validation"), so an event the app recorded as delivered may never be billed; Stripe
says so later in a thin event (`v1.billing.meter.error_report_triggered`). And Stripe drops a
repeated identifier only "for at least 24 hours", so an event left pending by an ambiguous failure
cannot be resent blindly a day later. So after each closing report (well before the invoice
finalises), on every meter error report, and for a pending event that old, the app reads Stripe's
meter event summaries for the customer and the period (`summary_window`: the events of the period
are all stamped inside it) and:
- sends what Stripe lacks, once: only when two reads some minutes apart agree (summaries are
  "eventually consistent": an event still being processed must not look lost), under an identifier
  derived from the expected total, so a repeated repair of the same shortfall is a duplicate Stripe drops;
- reports, without touching anything, a count above what was reported (nothing can take it back).

Pure of SDKs: it works on the usage ports.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from billing.catalog_names import meter_event_name
from billing.models import Product, UnknownProductError
from billing.pricing import billable_overage, part_product
from billing.usage.plan import MAX_IDENTIFIER_LENGTH, MeterEvent, PendingEvent, event_timestamp, summary_window
from billing.usage.ports import MeterCounts, MeterSink
from billing.usage.segments import part_of
from billing.usage.windows import Period

if TYPE_CHECKING:
    from billing.usage.push import UsagePush

log = logging.getLogger("billing.usage")

# Stripe de-duplicates an identifier "for at least 24 hours": a pending event older than this is
# checked against the meter's count before anything is sent again (an hour's margin).
DEDUP_SAFE_SECONDS = 23 * 3600


@dataclass(frozen=True)
class Confirmation:
    subscription_id: str
    expected: int  # the meter value the watermark says Stripe has for the period
    counted: int  # what Stripe's summaries say it has
    repaired: int = 0  # sent now to make up the difference
    note: str = ""
    again: bool = False  # not settled yet: confirm again later
    short_seen: int | None = None  # a shortfall was read: the count the next read must agree with

    def line(self) -> str:
        return (
            f"{self.subscription_id}: expected {self.expected}, Stripe counted {self.counted}, "
            f"repaired {self.repaired}{f' ({self.note})' if self.note else ''}"
        )


def repair_identifier(subscription_id: str, period_start: int, expected: int) -> str:
    """One identifier per subscription, period and expected total: a repair is never counted twice."""
    plain = f"r:{subscription_id}:{period_start}:{expected}"
    if len(plain) <= MAX_IDENTIFIER_LENGTH:
        return plain
    return "r:" + hashlib.sha256(plain.encode("utf-8")).hexdigest()


def parse_identifier(identifier: str) -> tuple[str, int] | None:
    """(subscription id, period start) of an identifier the push or a repair made; None if hashed."""
    parts = identifier.removeprefix("r:").removeprefix("p:").rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1])


def is_old(pending: PendingEvent, now: int) -> bool:
    """Near the end of Stripe's de-duplication window. By its timestamp: an event is never stamped
    after it was first sent (the window's end, lagging behind the run), so this errs towards old."""
    return now - pending.event.timestamp >= DEDUP_SAFE_SECONDS


def make_up(
    meter: MeterSink,
    counts: MeterCounts,
    product: Product,
    *,
    subscription_id: str,
    customer_id: str,
    period: Period,
    expected: int,
    now: int,
    seen: int | None = None,
    agreed: bool = False,
    until: int | None = None,
) -> Confirmation:
    """Compare Stripe's count of the period with `expected` and send the shortfall, once.

    A shortfall is sent when this read agrees with the one before (`seen`), or when `agreed` (the
    events are old enough to be counted); otherwise the answer asks for another read. `until`: a
    cancel's instant, before which the repair is stamped (the final invoice may end there).
    """
    event_name = meter_event_name(product.id)
    start, end = summary_window(period.start, period.end)
    counted = counts.counted(customer_id, event_name, start, end)
    if counted == expected:
        return Confirmation(subscription_id, expected, counted)
    if counted > expected:
        log.error(
            "usage confirm: Stripe counted %d for %s in the period from %d, more than the %d reported",
            counted,
            subscription_id,
            period.start,
            expected,
        )
        return Confirmation(subscription_id, expected, counted, note="Stripe counted more than was reported")
    if not agreed and seen != counted:
        return Confirmation(
            subscription_id,
            expected,
            counted,
            again=True,
            short_seen=counted,
            note=f"short by {expected - counted}; sent if the next read agrees",
        )
    event = MeterEvent(
        identifier=repair_identifier(subscription_id, period.start, expected),
        event_name=event_name,
        customer_id=customer_id,
        value=expected - counted,
        timestamp=event_timestamp(period.start, period.end, now if until is None else min(now, until - 1)),
        subscription_id=subscription_id,
    )
    result = meter.send([event])
    if result.failed:
        raise RuntimeError(f"repair of {subscription_id} refused by Stripe: {result.failed[0][1]}")
    log.warning(
        "usage confirm: %s was short by %d in the period from %d; sent once",
        subscription_id,
        expected - counted,
        period.start,
    )
    return Confirmation(subscription_id, expected, counted, repaired=expected - counted)


def period_of(push: UsagePush, subscription_id: str, period_start: int) -> Period:
    """The period that starts at `period_start`: the link's current one, or the one before it."""
    found = push.links.get(subscription_id)
    if found is None:
        raise LookupError(f"no subscription link for '{subscription_id}'")
    link = found[0]
    if link.current_period_start == period_start:
        return Period(period_start, link.current_period_end)
    if link.current_period_start > period_start:
        return Period(period_start, link.current_period_start)
    raise LookupError(f"{subscription_id} has no period starting at {period_start}")


def confirm_delivery(
    push: UsagePush,
    counts: MeterCounts,
    subscription_id: str,
    period: Period,
    *,
    now: int,
    seen: int | None = None,
    until: int | None = None,
) -> Confirmation:
    """Compare and repair one subscription's period (see the module's docstring). Idempotent.

    A pending event is settled first (resent if young, checked by count if old), and the comparison
    is left to a later confirmation: a resent event is counted by Stripe's summaries only once processed.
    """
    found = push.links.get(subscription_id)
    if found is None:
        raise LookupError(f"no subscription link for '{subscription_id}'")
    link = found[0]
    product_id, since = part_of(link, period)  # after a plan change: the product that billed the period's end
    try:
        product = part_product(push.models.product(product_id), period.start, period.end, since)
    except UnknownProductError:
        return Confirmation(subscription_id, 0, 0, note=f"unknown product {product_id}")
    if not product.is_metered:
        return Confirmation(subscription_id, 0, 0, note="not metered")
    mark = push.watermarks.read([(subscription_id, product_id, period.start)])[subscription_id]
    if mark.pending is not None:
        settled = push.settle_pending(subscription_id, product_id, period, now)
        note = (
            "pending event settled; compared at the next confirmation"
            if not settled.failed
            else f"pending event not settled: {'; '.join(settled.failures)}"
        )
        return Confirmation(subscription_id, 0, 0, repaired=settled.calls_reported, note=note, again=True)
    expected = billable_overage(product, mark.reported)
    return make_up(
        push.meter,
        counts,
        product,
        subscription_id=subscription_id,
        customer_id=link.stripe_customer_id,
        period=period,
        expected=expected,
        now=now,
        seen=seen,
        until=until,
    )
