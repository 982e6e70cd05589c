"""The usage push: APIM report counts -> Stripe meter events, exactly once per call and period.

Two stages, one per Functions trigger:
- `plan_batches` (timer, or the CLI): list the metered links, read the reports once per distinct
  period start (paged, all subscriptions), cut the result into `PushBatch`es (one queue message each).
- `process_batch` (queue trigger, or the CLI in-process): for each subscription, compare the
  period-to-date billable calls with the watermark, write the event down as pending, send it, then
  record the new watermark (`WatermarkStore.record`: the table store notes a chunk's acceptance in
  one receipt row rather than rewriting each row). A crash after sending leaves the pending event,
  which the next run resends unchanged (same identifier: Stripe drops the duplicate) before
  planning anything new.

The service takes the ports of `billing.usage.ports`; it imports no SDK.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from billing.models import MonetizationModels, UnknownProductError
from billing.usage.batches import PushBatch, PushItem, remainder, split
from billing.usage.plan import MeterEvent, PendingEvent, Step, UsageCounts, plan_step
from billing.usage.ports import (
    LinkSource,
    MeterSink,
    SendResult,
    UsageReports,
    Watermark,
    WatermarkStore,
    WatermarkWrite,
)
from billing.usage.windows import Period, closing_window, push_window

if TYPE_CHECKING:
    from billing.store.subscriptions import SubscriptionLink

log = logging.getLogger("billing.usage")

CHUNK = 100  # subscriptions per send-and-record step (one watermark transaction)


@dataclass
class PushSummary:
    subscriptions_seen: int = 0
    events_sent: int = 0
    calls_reported: int = 0  # sum of event values (overage calls) Stripe accepted
    skipped: int = 0  # nothing new to report (or nothing billable)
    failed: int = 0
    recovered: int = 0  # pending events from an interrupted run, resent
    failures: list[str] = field(default_factory=list)  # "sid: reason"
    planned: list[MeterEvent] = field(default_factory=list)  # dry run: what would be sent

    def add(self, other: PushSummary) -> None:
        self.subscriptions_seen += other.subscriptions_seen
        self.events_sent += other.events_sent
        self.calls_reported += other.calls_reported
        self.skipped += other.skipped
        self.failed += other.failed
        self.recovered += other.recovered
        self.failures.extend(other.failures)
        self.planned.extend(other.planned)

    def line(self) -> str:
        return (
            f"subscriptions seen {self.subscriptions_seen}, events sent {self.events_sent}, "
            f"calls reported {self.calls_reported}, skipped {self.skipped}, failed {self.failed}"
            + (f", recovered {self.recovered}" if self.recovered else "")
        )


@dataclass
class UsagePush:
    """The push with its ports. `lag_seconds`: how far behind now the reports are read."""

    models: MonetizationModels
    reports: UsageReports
    meter: MeterSink
    watermarks: WatermarkStore
    links: LinkSource
    lag_seconds: int = 1800
    batch_size: int = 300
    # Test seam: called after Stripe accepted a chunk and before its watermarks are recorded.
    after_send: Callable[[SendResult], None] | None = None

    # Stage 1: plan -------------------------------------------------------------------------
    def metered_links(self) -> Iterator[SubscriptionLink]:
        """Links that can have usage to bill: metered product, not ended, a known period."""
        for link in self.links.all():
            if link.canceled_at or link.apim_state == "cancelled":
                continue
            if link.current_period_end <= link.current_period_start or not link.stripe_customer_id:
                continue
            try:
                product = self.models.product(link.product_id)
            except UnknownProductError:
                log.warning("usage push: subscription %s has unknown product %s", link.apim_subscription_id,
                            link.product_id)  # fmt: skip
                continue
            if product.is_metered:
                yield link

    def plan_batches(self, as_of: int, links: Iterable[SubscriptionLink] | None = None) -> Iterator[PushBatch]:
        """Batches for every metered link: one report read (all pages) per distinct period start."""
        groups: dict[Period, list[SubscriptionLink]] = {}
        for link in self.metered_links() if links is None else links:
            period = Period(link.current_period_start, link.current_period_end)
            groups.setdefault(period, []).append(link)
        for period in sorted(groups):
            window = push_window(period, as_of, self.lag_seconds)
            if window is None:
                continue
            counts = self.reports.read(window)
            items = [
                PushItem(link.apim_subscription_id, link.stripe_customer_id, link.product_id,
                         counts.get(link.apim_subscription_id, UsageCounts()))
                for link in groups[period]
            ]  # fmt: skip
            yield from split(period, window.end, as_of, items, self.batch_size)

    def closing_batch(self, subscription_id: str, period: Period, now: int | None = None) -> PushBatch | None:
        """The whole period of one subscription (period end or cancellation); None if not metered.

        At cancellation the period has not ended: events then carry `now` - 1 s (Stripe refuses
        timestamps more than 5 minutes ahead), still inside the period. One second before `now`
        because the cancel that follows at once (within the same second, or at the same frozen
        test-clock time) closes the final invoice at its own `now`, and meter events are billed
        on the invoice whose period holds their timestamp in [start, end): an event stamped at
        the cancel instant would fall outside the final invoice and be billed nowhere.
        """
        found = self.links.get(subscription_id)
        if found is None:
            raise LookupError(f"no subscription link for '{subscription_id}'; is the id an APIM subscription id?")
        link = found[0]
        try:
            product = self.models.product(link.product_id)
        except UnknownProductError:
            return None
        if not product.is_metered:
            return None
        window = closing_window(period)
        counts = self.reports.read(window, subscription_id).get(subscription_id, UsageCounts())
        item = PushItem(subscription_id, link.stripe_customer_id, link.product_id, counts)
        stamp_end = window.end if now is None or now >= period.end else max(period.start, now - 1)
        return PushBatch(period, stamp_end, stamp_end, (item,), closing=True)

    # Stage 2: process ----------------------------------------------------------------------
    def process_batch(
        self, batch: PushBatch, *, dry_run: bool = False, deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> tuple[PushSummary, PushBatch | None]:  # fmt: skip
        """Report the batch's usage. Returns the summary and, if `deadline` came first, the rest."""
        summary = PushSummary()
        done: list[PushItem] = []
        for start in range(0, len(batch.items), CHUNK):
            if deadline is not None and clock() >= deadline:
                return summary, remainder(batch, done)
            chunk = batch.items[start : start + CHUNK]
            summary.add(self._process_chunk(batch, chunk, dry_run))
            done.extend(chunk)
        return summary, None

    def _process_chunk(self, batch: PushBatch, chunk: tuple[PushItem, ...], dry_run: bool) -> PushSummary:
        summary = PushSummary(subscriptions_seen=len(chunk))
        period = batch.period
        marks = self.watermarks.read_range(period.start, [i.subscription_id for i in chunk])
        by_sid = {i.subscription_id: i for i in chunk}

        # 1. Recovery: pending events of an interrupted run go first, unchanged.
        pending = [m for m in marks.values() if m.pending is not None]
        if pending and not dry_run:
            marks.update(self._recover(period.start, pending, summary))
        elif pending:
            summary.planned.extend(m.pending.event for m in pending if m.pending is not None)

        # 2. Plan each subscription from its (recovered) watermark.
        steps: dict[str, Step] = {}
        for sid, item in by_sid.items():
            mark = marks[sid]
            if mark.pending is not None:
                continue  # its resend failed; counted as failed in recovery
            try:
                product = self.models.product(item.product_id)
            except UnknownProductError as exc:
                summary.failed += 1
                summary.failures.append(f"{sid}: {exc.args[0]}")
                continue
            steps[sid] = plan_step(
                subscription_id=sid, customer_id=item.customer_id, product=product, period_start=period.start,
                period_end=period.end, period_to_date=item.counts, reported=mark.reported,
                window_end=batch.window_end,
            )  # fmt: skip
        events = [s.event for s in steps.values() if s.event is not None]
        summary.skipped += sum(1 for s in steps.values() if s.event is None)
        if dry_run:
            summary.planned.extend(events)
            return summary

        # 3. Write down: pending events, and watermarks that move without an event (included calls).
        writes = [
            WatermarkWrite(marks[sid], marks[sid].reported if s.event else s.reported,
                           PendingEvent(s.event, s.reported) if s.event else None)
            for sid, s in steps.items()
            if s.event is not None or s.reported != marks[sid].reported
        ]  # fmt: skip
        if writes:
            marks.update(self.watermarks.write(period.start, writes))
        if not events:
            return summary

        # 4. Send, then record what Stripe accepted.
        result = self.meter.send(events)
        if self.after_send is not None:
            self.after_send(result)
        self._record(period.start, marks, result, summary)
        return summary

    def _recover(self, period_start: int, pending: list[Watermark], summary: PushSummary) -> dict[str, Watermark]:
        events = [m.pending.event for m in pending if m.pending is not None]
        log.info("usage push: resending %d pending events of an interrupted run", len(events))
        result = self.meter.send(events)
        marks = {m.subscription_id: m for m in pending}
        accepted = {e.identifier for e in result.accepted}
        done = [m for m in pending if m.pending is not None and m.pending.event.identifier in accepted]
        summary.recovered += len(done)
        summary.calls_reported += sum(e.value for e in result.accepted)
        for event, reason in result.failed:
            summary.failed += 1
            summary.failures.append(f"{event.subscription_id}: {reason}")
        return {**marks, **self.watermarks.record(period_start, done)} if done else marks

    def _record(self, period_start: int, marks: dict[str, Watermark], result: SendResult, summary: PushSummary) -> None:
        done = []
        for event in result.accepted:
            mark = marks[event.subscription_id]
            assert mark.pending is not None
            assert mark.pending.event.identifier == event.identifier
            done.append(mark)
        if done:
            # One note for the whole chunk where the store allows it, not one row write per subscription.
            self.watermarks.record(period_start, done)
        summary.events_sent += len(result.accepted)
        summary.calls_reported += sum(e.value for e in result.accepted)
        for event, reason in result.failed:
            # The pending event stays: the next run resends it (same identifier) before anything new.
            summary.failed += 1
            summary.failures.append(f"{event.subscription_id}: {reason}")
            log.warning("usage push: Stripe refused the event of %s: %s", event.subscription_id, reason)
