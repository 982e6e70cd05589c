"""In-memory fakes of the usage push's OWN ports (billing.usage.ports), for service unit tests.

Each is checked against its Protocol at the end of the module, so a port that gains a method fails the
type check here rather than in a test run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from billing.records import SubscriptionLink
from billing.usage.plan import MeterEvent, UsageCounts
from billing.usage.ports import (
    MeterCounts,
    MeterSink,
    SendResult,
    UsageReports,
    Watermark,
    WatermarkConflict,
    WatermarkKey,
    WatermarkStore,
    WatermarkWrite,
)
from billing.usage.windows import ReportWindow


class FakeReports:
    """Calls as (sid, timestamp, counts); `read` sums those inside the window, like APIM."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, UsageCounts]] = []
        self.reads: list[tuple[ReportWindow, str | None, str | None]] = []  # window, subscription, product
        self.products: dict[str, str] = {}  # subscription -> product, where a test says

    def add(self, sid: str, at: int, success: int = 0, blocked: int = 0, failed: int = 0) -> None:
        self.calls.append((sid, at, UsageCounts(success=success, blocked=blocked, failed=failed)))

    def read(
        self, window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None
    ) -> Mapping[str, UsageCounts]:
        self.reads.append((window, subscription_id, product_id))
        out: dict[str, UsageCounts] = {}
        for sid, at, c in self.calls:
            known = self.products.get(sid)
            if product_id is not None and known is not None and known != product_id:
                continue  # APIM's productId filter (for subscriptions whose product the test named)
            if window.start <= at < window.end and subscription_id in (None, sid):
                p = out.get(sid, UsageCounts())
                out[sid] = UsageCounts(p.success + c.success, p.blocked + c.blocked, p.failed + c.failed)
        return out


class FakeMeter:
    """Stripe's meter as far as the push can tell: keeps events, drops duplicate identifiers, and
    reads back what it counted (its event summaries).

    `refuse_customers`: events refused at once. `lose_customers`: events accepted, then dropped by
    validation later, as the v2 stream does. `forget_identifiers()`: the de-duplication window has
    passed (a resent identifier counts again).
    """

    def __init__(self, refuse_customers: Iterable[str] = (), lose_customers: Iterable[str] = ()) -> None:
        self.events: dict[str, MeterEvent] = {}  # identifiers Stripe remembers
        self.kept: list[MeterEvent] = []  # what the meter counts
        self.requests = 0
        self.refuse = set(refuse_customers)
        self.lose = set(lose_customers)
        self.summary_reads: list[tuple[str, str, int, int]] = []

    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        result = SendResult()
        for e in events:
            self.requests += 1
            if e.customer_id in self.refuse:
                result.failed.append((e, "InvalidRequestError: No such customer"))
                continue
            result.accepted.append(e)
            if e.customer_id in self.lose or e.identifier in self.events:
                continue
            self.events[e.identifier] = e
            self.kept.append(e)
        return result

    def counted(self, customer_id: str, event_name: str, start: int, end: int) -> int:
        if start % 60 or end % 60:
            raise ValueError("summary bounds must be aligned with minute boundaries")
        self.summary_reads.append((customer_id, event_name, start, end))
        return sum(
            e.value
            for e in self.kept
            if e.customer_id == customer_id and e.event_name == event_name and start <= e.timestamp < end
        )

    def forget_identifiers(self) -> None:
        self.events.clear()

    def total(self, sid: str | None = None) -> int:
        return sum(e.value for e in self.kept if sid in (None, e.subscription_id))


class FakeWatermarks:
    """Watermarks grouped like the table store: one version (etag) per group, writes ETag-checked."""

    def __init__(self, group_size: int = 3) -> None:
        self.rows: dict[tuple[str, int], Watermark] = {}
        self.versions: dict[str, str] = {}  # group -> etag
        self._etags = itertools.count(1)
        self.writes = 0
        self.group_size = group_size
        self.before_write: Callable[[], object] | None = None  # test seam: runs once, then is cleared

    def group_of(self, subscription_id: str, product_id: str) -> str:
        digits = "".join(ch for ch in subscription_id if ch.isdigit())
        return f"{product_id}/g{int(digits) // self.group_size if digits else 0}"

    def get(self, sid: str, period_start: int) -> Watermark:
        """A stored watermark (tests know the sid; its product is the one it was stored with)."""
        found = self.rows.get((sid, period_start))
        return self.read([(sid, found.product_id if found else "payg", period_start)])[sid]

    def read(self, keys: Sequence[WatermarkKey], *, planning: bool = False) -> dict[str, Watermark]:
        out = {}
        for sid, pid, period_start in keys:
            etag = self.versions.get(self.group_of(sid, pid))
            found = self.rows.get((sid, period_start))
            out[sid] = replace(found, etag=etag) if found else Watermark(sid, pid, period_start, etag=etag)
        return out

    def open_cursors(self, before: int) -> dict[str, dict[int, int]]:
        found: dict[str, dict[int, int]] = {}
        for m in self.rows.values():
            cursor = m.pending.counted_until if m.pending else m.counted_until
            if cursor is not None and cursor < before:
                cursors = found.setdefault(m.product_id, {})
                cursors[cursor] = cursors.get(cursor, 0) + 1
        return dict(sorted(found.items(), key=lambda item: -sum(item[1].values())))

    def write(self, writes: Iterable[WatermarkWrite]) -> dict[str, Watermark]:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()
        batch = list(writes)
        for w in batch:
            if self.versions.get(self.group_of(w.previous.subscription_id, w.previous.product_id)) != w.previous.etag:
                raise WatermarkConflict("changed")
        out = {}
        for group in sorted({self.group_of(w.previous.subscription_id, w.previous.product_id) for w in batch}):
            self.versions[group] = f"e{next(self._etags)}"
        for w in batch:
            sid, pid, period_start = w.previous.subscription_id, w.previous.product_id, w.previous.period_start
            mark = Watermark(
                sid, pid, period_start, w.reported, w.counted_until, w.pending, self.versions[self.group_of(sid, pid)]
            )
            self.rows[(sid, period_start)] = mark
            out[sid] = mark
            self.writes += 1
        return out


def link(
    sid: str, product: str, start: int, end: int, customer: str | None = None, **changes: object
) -> SubscriptionLink:
    base = SubscriptionLink(
        apim_subscription_id=sid,
        apim_user_id="u1",
        product_id=product,
        subscription_name=sid,
        stripe_customer_id=customer or f"cus_{sid}",
        stripe_subscription_id=sid,
        stripe_usage_item_id="si_1",
        stripe_status="active",
        apim_state="active",
        current_period_start=start,
        current_period_end=end,
        stripe_state_at=start,
    )
    return base.with_changes(**changes) if changes else base


# mypy proves each fake has every method of its port, with the port's signatures.
_reports: UsageReports = FakeReports()
_meter: MeterSink = FakeMeter()
_counts: MeterCounts = FakeMeter()
_watermarks: WatermarkStore = FakeWatermarks()
