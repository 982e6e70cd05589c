"""Recorded gateway calls and bulk synthetic usage, and the report aggregation over them.

Each subscription keeps a list of (timestamp, outcome, count) events: one per gateway call, one per
bulk `record_usage`, so a million synthetic calls are one row. Reports sum the events per
subscription (or product, or user) inside the window that are old enough to be visible (report lag).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

OUTCOMES = ("success", "blocked", "failed", "other")


def classify(status: int) -> str:
    """The report class of a final status code, as documented for ReportRecordContract.

    success: <= 301, 304, 307; blocked: 401, 403, 429; failed: 400 and 500-599; other: the rest
    (so a backend 404 is "other", as in APIM).
    """
    if status <= 301 or status in (304, 307):
        return "success"
    if status in (401, 403, 429):
        return "blocked"
    if status == 400 or 500 <= status < 600:
        return "failed"
    return "other"


@dataclass
class _SubUsage:
    product_id: str | None
    user_id: str | None
    events: list[tuple[float, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Window:
    lower: float | None = None
    lower_inclusive: bool = True
    upper: float | None = None
    upper_inclusive: bool = True

    def contains(self, ts: float) -> bool:
        if self.lower is not None and (ts < self.lower or (ts == self.lower and not self.lower_inclusive)):
            return False
        return not (self.upper is not None and (ts > self.upper or (ts == self.upper and not self.upper_inclusive)))


@dataclass(frozen=True)
class Row:
    subscription_id: str
    product_id: str | None
    user_id: str | None
    counts: tuple[int, int, int, int]  # success, blocked, failed, other


class UsageStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, _SubUsage] = {}
        self._version = 0
        self._max_ts = float("-inf")
        self._cache: dict[tuple[object, ...], tuple[int, float, list[Row]]] = {}

    def record(
        self, sid: str, product_id: str | None, user_id: str | None, *, at: datetime, outcome: str, calls: int = 1
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        if calls < 0:
            raise ValueError(f"calls must be zero or more, not {calls}")
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
        ts = at.timestamp()
        with self._lock:
            usage = self._subs.get(sid)
            if usage is None:
                usage = self._subs[sid] = _SubUsage(product_id, user_id)
            usage.events.append((ts, OUTCOMES.index(outcome), calls))
            self._version += 1
            self._max_ts = max(self._max_ts, ts)
            self._cache.clear()

    def rows(
        self,
        window: Window,
        visible_until: float,
        group_by: str = "subscription",
        where: dict[str, str] | None = None,
    ) -> list[Row]:
        """Non-zero rows in the window, grouped by subscription, product or user, in first-seen order.

        `where` keeps the calls of one subscription, product and/or user ({"subscription": id, ...}).
        A report of one subscription reads only that subscription's calls; the others are cached per
        window and filter (a paged report asks for the same rows once a page).
        """
        where = where or {}
        if "subscription" in where:
            with self._lock:
                found = self._subs.get(where["subscription"])
                subs = {where["subscription"]: found} if found is not None else {}
                return self._aggregate(subs, window, visible_until, group_by, where)
        key = (window, group_by, tuple(sorted(where.items())))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                version, cached_until, rows = cached
                # Still right if nothing was recorded since and every event is visible either way.
                if version == self._version and (
                    cached_until == visible_until or self._max_ts <= min(cached_until, visible_until)
                ):
                    return rows
            rows = self._aggregate(self._subs, window, visible_until, group_by, where)
            self._cache[key] = (self._version, visible_until, rows)
            return rows

    def _aggregate(
        self, subs: dict[str, _SubUsage], window: Window, visible_until: float, group_by: str, where: dict[str, str]
    ) -> list[Row]:
        groups: dict[str, tuple[str, str | None, str | None, list[int]]] = {}
        product, user = where.get("product"), where.get("user")
        for sid, usage in subs.items():
            if (product is not None and usage.product_id != product) or (user is not None and usage.user_id != user):
                continue
            counts = [0, 0, 0, 0]
            for ts, outcome, calls in usage.events:
                if ts <= visible_until and window.contains(ts):
                    counts[outcome] += calls
            if not any(counts):
                continue
            group = {"subscription": sid, "product": usage.product_id, "user": usage.user_id}[group_by] or ""
            entry = groups.get(group)
            if entry is None:
                groups[group] = (sid, usage.product_id, usage.user_id, counts)
            else:
                entry[3][:] = [a + b for a, b in zip(entry[3], counts, strict=True)]
        return [Row(s, p, u, (c[0], c[1], c[2], c[3])) for s, p, u, c in groups.values()]
