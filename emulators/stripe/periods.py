"""Billing period arithmetic: Stripe's calendar intervals from a billing cycle anchor."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta


def add_interval(start: int, anchor: int, interval: str, count: int, steps: int = 1) -> int:
    """The period boundary `steps` intervals after `start`, keeping the anchor's day of month.

    A month anchored on the 31st ends on the last day of shorter months, and returns to the
    31st when it can, as Stripe documents for billing cycle anchors.
    """
    begin = datetime.fromtimestamp(start, UTC)
    anchor_dt = datetime.fromtimestamp(anchor, UTC)
    if interval == "day":
        return start + 86400 * count * steps
    if interval == "week":
        return start + 7 * 86400 * count * steps
    months = count * steps * (12 if interval == "year" else 1)
    total = begin.year * 12 + (begin.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    day = min(anchor_dt.day, calendar.monthrange(year, month)[1])
    moved = begin.replace(year=year, month=month, day=day)
    return int(moved.timestamp())


def months_after(start: int, months: int) -> int:
    return add_interval(start, start, "month", months)


def days(n: float) -> int:
    return int(timedelta(days=n).total_seconds())
