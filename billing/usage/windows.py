"""Report windows: which slice of APIM's usage reports each push reads. Pure.

Subscriptions have their own billing anchors, so their periods start at their own second; reading
"period to date" would take one report read per distinct period start, which with anchors spread
over a month is about one read per subscription. Instead each subscription's watermark keeps a
cursor (the report window end its count has reached), and a run reads, for all subscriptions at
once, the window from the cursors to now minus the report lag, adding each subscription's calls of
that window to its count. After a normal run every cursor is the same, so the next run reads ONE
window; subscriptions a failed run left behind add one more piece, up to `MAX_WINDOW_STARTS`.

A subscription's first run in a period has no cursor yet: it only adopts the run's end as its
cursor and counts nothing (its calls before that, which no window split from the previous
period's, reach Stripe with the closing report, which reads the whole period exactly). Every
window counted lies inside its period and windows never overlap, so the closing report's total
is never below what was reported and the invoice gets every call once.
"""

from __future__ import annotations

from collections.abc import Iterable
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


MAX_WINDOW_STARTS = 4  # distinct cursors a run catches up from; older ones leave a gap to the closing report


@dataclass(frozen=True)
class RunWindow:
    """One subscription's window in a run: from its cursor (None: no cursor yet, adopt) to the end."""

    start: int | None
    end: int


def run_end(as_of: int, lag_seconds: int) -> int:
    """Where a run's windows end: `lag_seconds` before `as_of`, since APIM's reports lag."""
    if lag_seconds < 0:
        raise ValueError(f"the report lag must be >= 0 seconds, got {lag_seconds}")
    return as_of - lag_seconds


def window_starts(cursors: Iterable[int], end: int, limit: int = MAX_WINDOW_STARTS) -> list[int]:
    """The distinct starts a run reads from, oldest first: the newest `limit` cursors before `end`."""
    return sorted({c for c in cursors if c < end})[-limit:]


def pieces(starts: list[int], end: int) -> list[ReportWindow]:
    """Disjoint report windows covering [starts[0], end): one read each, summed per subscription."""
    return [ReportWindow(a, b) for a, b in zip(starts, [*starts[1:], end], strict=True)]


def start_for(cursor: int, starts: list[int]) -> int:
    """The window start of a subscription at `cursor`: its own, or the oldest kept (a gap)."""
    return max([s for s in starts if s <= cursor], default=starts[0])


def closing_window(period: Period) -> ReportWindow:
    """The whole period: the period-end (invoice.created) and cancellation reports read to its end."""
    return ReportWindow(period.start, period.end)
