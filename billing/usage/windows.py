"""Report windows: which slice of APIM's usage reports each push reads. Pure.

Each subscription has its own billing anchor, so its period starts at its own time. One report
read (paged, for all subscriptions) serves every subscription whose period starts at the same
instant: the number of report reads grows with distinct period starts (at most ~31 a day with
monthly anchors), not with subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Period:
    """A Stripe billing period: [start, end) in unix seconds."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"a billing period must end after it starts, got [{self.start}, {self.end})")


@dataclass(frozen=True)
class ReportWindow:
    """Calls with timestamp in [start, end) (unix seconds) are counted."""

    start: int
    end: int


def push_window(period: Period, as_of: int, lag_seconds: int) -> ReportWindow | None:
    """Period-to-date, up to `lag_seconds` before `as_of` (reports lag), never past the period's end.

    None when nothing of the period is old enough to be read yet.
    """
    if lag_seconds < 0:
        raise ValueError(f"the report lag must be >= 0 seconds, got {lag_seconds}")
    end = min(as_of - lag_seconds, period.end)
    if end <= period.start:
        return None
    return ReportWindow(period.start, end)


def closing_window(period: Period) -> ReportWindow:
    """The whole period: the period-end (invoice.created) and cancellation reports read to its end."""
    return ReportWindow(period.start, period.end)
