"""In-memory fakes of the usage push's OWN ports (billing.usage.ports), for service unit tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence

from billing.store.subscriptions import SubscriptionLink
from billing.usage.plan import MeterEvent, UsageCounts
from billing.usage.ports import SendResult, Watermark, WatermarkConflict, WatermarkWrite
from billing.usage.windows import ReportWindow


class FakeReports:
    """Calls as (sid, timestamp, counts); `read` sums those inside the window, like APIM."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, UsageCounts]] = []
        self.reads: list[tuple[ReportWindow, str | None]] = []

    def add(self, sid: str, at: int, success: int = 0, blocked: int = 0, failed: int = 0) -> None:
        self.calls.append((sid, at, UsageCounts(success=success, blocked=blocked, failed=failed)))

    def read(self, window: ReportWindow, subscription_id: str | None = None) -> Mapping[str, UsageCounts]:
        self.reads.append((window, subscription_id))
        out: dict[str, UsageCounts] = {}
        for sid, at, c in self.calls:
            if window.start <= at < window.end and subscription_id in (None, sid):
                p = out.get(sid, UsageCounts())
                out[sid] = UsageCounts(p.success + c.success, p.blocked + c.blocked, p.failed + c.failed)
        return out


class FakeMeter:
    """Stripe's meter as far as the push can tell: keeps events, drops duplicate identifiers."""

    def __init__(self, refuse_customers: Iterable[str] = ()) -> None:
        self.events: dict[str, MeterEvent] = {}
        self.requests = 0
        self.refuse = set(refuse_customers)

    def send(self, events: Sequence[MeterEvent]) -> SendResult:
        result = SendResult()
        for e in events:
            self.requests += 1
            if e.customer_id in self.refuse:
                result.failed.append((e, "InvalidRequestError: No such customer"))
                continue
            self.events.setdefault(e.identifier, e)
            result.accepted.append(e)
        return result

    def total(self, sid: str | None = None) -> int:
        return sum(e.value for e in self.events.values() if sid in (None, e.subscription_id))


class FakeWatermarks:
    def __init__(self) -> None:
        self.rows: dict[tuple[int, str], Watermark] = {}
        self._etags = itertools.count(1)
        self.writes = 0

    def get(self, period_start: int, sid: str) -> Watermark:
        return self.rows.get((period_start, sid), Watermark(sid, period_start))

    def read_range(self, period_start: int, sids: Sequence[str]) -> dict[str, Watermark]:
        return {sid: self.get(period_start, sid) for sid in sids}

    def write(self, period_start: int, writes: Iterable[WatermarkWrite]) -> dict[str, Watermark]:
        out = {}
        for w in writes:
            key = (period_start, w.previous.subscription_id)
            if self.get(*key).etag != w.previous.etag:
                raise WatermarkConflict("changed")
            mark = Watermark(key[1], period_start, w.reported, w.pending, f"e{next(self._etags)}")
            self.rows[key] = mark
            out[key[1]] = mark
            self.writes += 1
        return out


    def record(self, period_start: int, accepted: Sequence[Watermark]) -> dict[str, Watermark]:
        return self.write(period_start, [WatermarkWrite(m, m.pending.reported if m.pending else m.reported)
                                         for m in accepted])  # fmt: skip


class FakeLinks:
    def __init__(self, links: Iterable[SubscriptionLink] = ()) -> None:
        self.links = {link.apim_subscription_id: link for link in links}

    def get(self, apim_subscription_id: str) -> tuple[SubscriptionLink, str] | None:
        link = self.links.get(apim_subscription_id)
        return None if link is None else (link, "etag")

    def all(self) -> Iterator[SubscriptionLink]:
        return iter(list(self.links.values()))


def link(
    sid: str, product: str, start: int, end: int, customer: str | None = None, **changes: object
) -> SubscriptionLink:
    base = SubscriptionLink(
        apim_subscription_id=sid, apim_user_id="u1", product_id=product, subscription_name=sid,
        stripe_customer_id=customer or f"cus_{sid}", stripe_subscription_id=sid, stripe_usage_item_id="si_1",
        stripe_status="active", apim_state="active", current_period_start=start, current_period_end=end,
        stripe_state_at=start,
    )
    return base.with_changes(**changes) if changes else base
