"""The usage push: APIM report counts -> Stripe meter events, exactly once per call and period.

Two stages, one per Functions trigger:
- `plan` (timer, or the CLI): read each product's report window once (paged, all subscriptions; a
  piece more per distinct cursor a failed run left behind: `billing.usage.windows`) while the metered
  links are listed, and cut them, a slice at a time with their watermarks' cursors, into `PushBatch`es
  of whole watermark groups (one queue message each), handed over as they are cut.
- `process_batch` (queue trigger, or the CLI in-process): per chunk of subscriptions, read their
  watermarks, decide per subscription (`window_action`) whether the window's calls count, write the
  events down as pending with the new watermarks, send them, then record them. A crash after
  sending leaves the pending events, which the next run resends unchanged (same identifiers:
  Stripe drops the duplicates) before planning anything new.

The service takes the ports of `billing.usage.ports`; it imports no SDK.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

from billing.models import MonetizationModels, Product, UnknownProductError
from billing.pricing import billable_overage, part_product
from billing.usage.batches import PushBatch, PushItem, remainder, split
from billing.usage.confirm import is_old, make_up
from billing.usage.plan import MeterEvent, PendingEvent, Step, UsageCounts, WindowAction, plan_step, window_action
from billing.usage.ports import (
    LinkSource,
    MeterCounts,
    MeterSink,
    SendResult,
    UsageReports,
    Watermark,
    WatermarkConflict,
    WatermarkStore,
    WatermarkWrite,
)
from billing.usage.segments import part_of
from billing.usage.windows import (
    Period,
    ReportWindow,
    RunWindow,
    closing_window,
    pieces,
    run_end,
    start_for,
    window_starts,
)

if TYPE_CHECKING:
    from billing.records import SubscriptionLink

log = logging.getLogger("billing.usage")

# Subscriptions per read-write-send-record step, in whole groups: a batch of the default size is one
# step (one watermark read, two writes, its stream requests side by side); bigger batches (the CLI's)
# take several, and the time limit is checked between them.
CHUNK = 300
CONFLICT_RETRIES = 3  # a chunk whose watermarks changed meanwhile is redone from what is stored
SLICE = 3000  # links listed between two cuts of batches: what the plan holds at once, whatever the total
# Links the plan may hold while their products' reports are still read (five fields each); past it the
# listing waits for the reads: memory stays bounded however slow the source (ARM pages a report at 25/s).
MAX_HELD = 500_000
OPEN_CURSOR_HORIZON = 35 * 86_400  # longer than any billing period (a month) and a few days' late closing


@dataclass
class PushSummary:
    subscriptions_seen: int = 0
    events_sent: int = 0
    calls_reported: int = 0  # sum of event values (overage calls) Stripe accepted
    skipped: int = 0  # nothing new to report (or nothing billable, or left to the closing report)
    failed: int = 0
    recovered: int = 0  # pending events from an interrupted run, resent
    failures: list[str] = field(default_factory=list)  # "sid: reason"
    # (subscription id, period start) of events still pending after this run: retried in minutes
    left_pending: list[tuple[str, int]] = field(default_factory=list)
    planned: list[MeterEvent] = field(default_factory=list)  # dry run: what would be sent

    def add(self, other: PushSummary) -> None:
        self.subscriptions_seen += other.subscriptions_seen
        self.events_sent += other.events_sent
        self.calls_reported += other.calls_reported
        self.skipped += other.skipped
        self.failed += other.failed
        self.recovered += other.recovered
        self.failures.extend(other.failures)
        self.left_pending.extend(other.left_pending)
        self.planned.extend(other.planned)

    def line(self) -> str:
        return (
            f"subscriptions seen {self.subscriptions_seen}, events sent {self.events_sent}, "
            f"calls reported {self.calls_reported}, skipped {self.skipped}, failed {self.failed}"
            + (f", recovered {self.recovered}" if self.recovered else "")
        )


@dataclass(frozen=True)
class PushPlan:
    window_end: int
    report_reads: int  # report windows read (each paged), for the summary
    batches: list[PushBatch]  # kept only when no `on_batch` took them (the CLI); else empty
    # Seconds from the start of planning until the first batch, the links listed, the reports read and the
    # batches cut: says whether a slow fan-out waited on Table Storage, on ARM or on itself.
    phases: dict[str, float] = field(default_factory=dict)
    batch_count: int = 0  # batches cut, whether kept or handed over


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
    counts: MeterCounts | None = None  # Stripe's meter event summaries, to confirm deliveries
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
                log.warning(
                    "usage push: subscription %s has unknown product %s", link.apim_subscription_id, link.product_id
                )
                continue
            if product.is_metered:
                yield link

    def plan(
        self,
        as_of: int,
        links: Iterable[SubscriptionLink] | None = None,
        on_batch: Callable[[PushBatch], None] | None = None,
    ) -> PushPlan:
        """The run's batches, cut while the links are listed: each product's report read once (all pages)
        per distinct cursor of its open watermarks.

        Each subscription's window starts at its cursor (the one its pending event will leave, if
        it has one), so a run never needs a cursor of its own and one that died part-way is caught
        up by the next. No cursor yet: the item only adopts the run's end (`window_action`).

        Memory stays bounded whatever the number of subscriptions: links are planned a slice at a time
        as they are listed (the store lists a group's links together), each slice's watermarks read and
        let go, its batches handed to `on_batch` (the fan-out enqueues them) at once, so workers send to
        Stripe from the first seconds while the rest is listed. A product's last group of a slice waits
        for the next slice, which may hold more of it: a batch holds whole groups. One thread reads the
        open cursors (one pass over the watermarks), then the products' reports one after another, the
        product with most open watermarks first; a product's links wait for its report, its batches
        never for another product's. Without `on_batch` the plan keeps its batches (the CLI runs them).
        """
        end = run_end(as_of, self.lag_seconds)
        started = time.monotonic()
        phases: dict[str, float] = {}
        kept: list[PushBatch] = []
        cut = 0

        def emit(batch: PushBatch) -> None:
            nonlocal cut
            cut += 1
            phases.setdefault("first batches", time.monotonic() - started)
            if on_batch is None:
                kept.append(batch)
            else:
                on_batch(batch)

        with ThreadPoolExecutor(max_workers=1) as reader:
            reads = _ProductReads(self, reader, end)
            held: dict[str, dict[str, list[_Held]]] = {}  # product -> group -> its links, as listed
            waiting, next_plan = 0, SLICE
            try:
                for link in self.metered_links() if links is None else links:
                    sid, pid = link.apim_subscription_id, link.product_id
                    held.setdefault(pid, {}).setdefault(self.watermarks.group_of(sid, pid), []).append(_held(link))
                    waiting += 1
                    if waiting >= next_plan:
                        # Past MAX_HELD the listing waits for the reports (a slow source) instead of holding more.
                        wait = waiting >= MAX_HELD
                        waiting = self._plan_held(held, reads, end, as_of, emit, final=False, wait=wait)
                        next_plan = waiting + SLICE
                phases["links"] = time.monotonic() - started
                self._plan_held(held, reads, end, as_of, emit, final=True)
            except BaseException:
                reader.shutdown(wait=False, cancel_futures=True)  # fail now, not after every queued read
                raise
            phases["reports"] = time.monotonic() - started
        phases["batches"] = time.monotonic() - started
        return PushPlan(end, reads.count, kept, phases, cut)

    def _plan_held(
        self,
        held: dict[str, dict[str, list[_Held]]],
        reads: _ProductReads,
        end: int,
        as_of: int,
        emit: Callable[[PushBatch], None],
        *,
        final: bool,
        wait: bool = False,
    ) -> int:
        """Cut the held links' batches: every group but each product's last (more of it may follow) of the
        products whose reports are read (`wait`: of every product, once its report is), or, `final`,
        everything. Returns how many links are still held."""
        for pid, groups in held.items():
            ready = list(groups) if final else list(groups)[:-1]
            if not ready or not (final or wait or reads.ready(pid)):
                continue
            starts, counts_by_start = reads.result(pid)
            own: list[_Held] = []
            for n, key in enumerate(ready):  # a slice at a time: a product may hold many while its report is read
                own.extend(groups.pop(key))
                if len(own) < SLICE and n < len(ready) - 1:
                    continue
                keys = [(lk.subscription_id, pid, lk.period_start) for lk in own]
                marks = self.watermarks.read(keys, planning=True)
                cursors = {sid: _expected_cursor(m) for sid, m in marks.items()}
                items = _items(own, pid, cursors=cursors, starts=starts, counts_by_start=counts_by_start, end=end)
                for batch in split(end, as_of, items, group_of=self.watermarks.group_of, batch_size=self.batch_size):
                    emit(batch)
                own = []
            if final:
                reads.forget(pid)  # every link of it is planned: its counts can go
        return sum(len(group) for groups in held.values() for group in groups.values())

    def _read_windows(self, windows: list[ReportWindow], product_id: str) -> dict[int, dict[str, UsageCounts]]:
        """Per window start, each subscription's calls from that start to the run's end (pieces summed)."""
        totals: dict[str, UsageCounts] = {}
        out: dict[int, dict[str, UsageCounts]] = {}
        for window in reversed(windows):  # newest first: each start adds its piece to the later ones
            read = self.reports.read(window, None, product_id)
            for sid, c in read.items():
                totals[sid] = totals[sid] + c if sid in totals else c
            out[window.start] = totals if window == windows[0] else dict(totals)  # the oldest needs no copy
        return out

    def closing_batch(
        self,
        subscription_id: str,
        period: Period,
        now: int | None = None,
        until: int | None = None,
        part: tuple[str, int] | None = None,
    ) -> PushBatch | None:
        """The whole period of one subscription (period end or cancellation); None if not metered.

        At cancellation the period has not ended: events then carry `now` - 1 s (Stripe refuses
        timestamps more than 5 minutes ahead), still inside the period. One second before `now`
        because the cancel that follows (at once for a price move; after the report lag for a
        consumer's cancel, `billing.usage.final_invoice`: possibly at the same frozen test-clock
        time) closes the final invoice at its own `now`, and meter events are billed
        on the invoice whose period holds their timestamp in [start, end): an event stamped at
        the cancel instant would fall outside the final invoice and be billed nowhere.
        `until` (a price move) reads calls only before that instant (APIM's time): the later ones are
        the next price's, reported after the move.
        `part`: (product id, start) of the product's part of the period to report (a plan change's old
        product, `billing.usage.plan_change`); by default the part the link says billed the period's end
        (`billing.usage.segments`): only the calls from that part's start count.
        """
        found = self.links.get(subscription_id)
        if found is None:
            raise LookupError(f"no subscription link for '{subscription_id}'; is the id an APIM subscription id?")
        link = found[0]
        product_id, since = part if part is not None else part_of(link, period)
        try:
            product = self.models.product(product_id)
        except UnknownProductError:
            return None
        if not product.is_metered:
            return None
        window = closing_window(period)
        start = min(max(window.start, since), window.end - 1)
        end = window.end if until is None else max(start + 1, min(until, window.end))
        counts = self.reports.read(ReportWindow(start, end), subscription_id, None).get(subscription_id, UsageCounts())
        # A part that ends before the period (an upgrade's old product) gets the share of the included calls
        # of [since, until), as of its fee; the pushes before the change billed it with all of them.
        part_end = until if part is not None and until is not None and until < period.end else None
        item = PushItem(
            subscription_id,
            link.stripe_customer_id,
            product_id,
            period,
            period.start,
            counts,
            since=since if since > period.start else 0,
            until=part_end,
        )
        stamp_end = window.end if now is None or now >= period.end else max(period.start, now - 1)
        return PushBatch(stamp_end, stamp_end, (item,), closing=True)

    # Stage 2: process ----------------------------------------------------------------------
    def process_batch(
        self,
        batch: PushBatch,
        *,
        dry_run: bool = False,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> tuple[PushSummary, PushBatch | None]:
        """Report the batch's usage. Returns the summary and, if `deadline` came first, the rest."""
        summary = PushSummary()
        done: list[PushItem] = []
        for chunk in self._chunks(batch.items):
            if deadline is not None and clock() >= deadline:
                return summary, remainder(batch, done)
            for attempt in range(CONFLICT_RETRIES):
                try:
                    summary.add(self._process_chunk(batch, chunk, dry_run))
                    break
                except WatermarkConflict:
                    if attempt == CONFLICT_RETRIES - 1:
                        raise
                    log.info("usage push: watermarks changed meanwhile; redoing %d subscriptions", len(chunk))
            done.extend(chunk)
        return summary, None

    def _chunks(self, items: tuple[PushItem, ...]) -> Iterator[tuple[PushItem, ...]]:
        """At most CHUNK items of whole groups (a bigger group is a chunk of its own)."""
        groups: list[list[PushItem]] = []
        last_key: str | None = None
        for item in items:
            key = self.watermarks.group_of(item.subscription_id, item.product_id)
            if groups and key == last_key:
                groups[-1].append(item)
            else:
                groups.append([item])
            last_key = key
        current: list[PushItem] = []
        for group in groups:
            if current and len(current) + len(group) > CHUNK:
                yield tuple(current)
                current = []
            current.extend(group)
        if current:
            yield tuple(current)

    def _process_chunk(self, batch: PushBatch, chunk: tuple[PushItem, ...], dry_run: bool) -> PushSummary:
        summary = PushSummary(subscriptions_seen=len(chunk))
        keys = [(i.subscription_id, i.product_id, i.period.start) for i in chunk]
        marks = self.watermarks.read(keys)

        # 1. Recovery: pending events of an interrupted run go first, unchanged.
        pending = [m for m in marks.values() if m.pending is not None]
        if pending and not dry_run:
            periods = {i.subscription_id: i.period for i in chunk}
            recovered = self._recover(pending, summary, batch.as_of, periods)
            # After a conflict another batch wrote these rows: every watermark read above may be stale.
            marks = self._merge(marks, recovered) if recovered is not None else self.watermarks.read(keys)
        elif pending:
            summary.planned.extend(m.pending.event for m in pending if m.pending is not None)

        # 2. Plan each subscription from its (recovered) watermark.
        steps: dict[str, tuple[Step, WatermarkWrite]] = {}
        for item in chunk:
            sid, mark = item.subscription_id, marks[item.subscription_id]
            if mark.pending is not None:
                continue  # its resend failed; counted as failed in recovery
            try:
                product = self.models.product(item.product_id)
            except UnknownProductError as exc:
                summary.failed += 1
                summary.failures.append(f"{sid}: {exc.args[0]}")
                continue
            start, end = item.period.start, item.period.end
            billed = part_product(product, start, end, item.since, item.until)
            pushed = None if item.until is None else part_product(product, start, end, item.since)
            planned = self._plan_item(batch, item, mark, billed, pushed)
            if planned is None:
                summary.skipped += 1
                continue
            steps[sid] = planned
        events = [step.event for step, _ in steps.values() if step.event is not None]
        summary.skipped += sum(1 for step, _ in steps.values() if step.event is None)
        if dry_run:
            summary.planned.extend(events)
            return summary

        # 3. Write down: pending events, and watermarks that move without an event.
        if steps:
            marks = self._merge(marks, self.watermarks.write(w for _, w in steps.values()))
        if not events:
            return summary

        # 4. Send, then record what Stripe accepted.
        result = self.meter.send(events)
        if self.after_send is not None:
            self.after_send(result)
        self._record(marks, result, summary)
        return summary

    def _plan_item(
        self, batch: PushBatch, item: PushItem, mark: Watermark, product: Product, pushed: Product | None = None
    ) -> tuple[Step, WatermarkWrite] | None:
        """The step and the watermark write for one subscription; None when nothing moves.

        `pushed`: the product the regular pushes billed the part with, when `product` is the part closed
        before the period end (an upgrade's old product, its included calls cut to the part's share): the
        closing sends the overage at the share less what the pushes sent. Once closed (the cursor at the
        period end: the pushes never get there before the change), the part was reported at the share.
        """
        period = item.period
        if batch.closing:
            cumulative, until, closed = item.counts.billable(product), period.end, True
            if mark.counted_until is not None and mark.counted_until >= period.end and cumulative <= mark.reported:
                return None  # settled already (a resent closing request)
        else:
            run = RunWindow(item.window_start, batch.window_end)
            action = window_action(mark.counted_until, period, run)
            if action is WindowAction.SKIP:
                return None
            added = item.counts.billable(product) if action is WindowAction.COUNT else 0
            cumulative, until, closed = mark.reported + added, run.end, False
        closed_before = mark.counted_until is not None and mark.counted_until >= period.end
        reported_product = pushed if pushed is not None and pushed != product and not closed_before else None
        step = plan_step(
            subscription_id=item.subscription_id,
            customer_id=item.customer_id,
            product=product,
            period_start=period.start,
            period_end=period.end,
            cumulative=cumulative,
            reported=mark.reported,
            window_end=batch.window_end,
            reported_product=reported_product,
        )
        if step.event is None:
            return step, WatermarkWrite(mark, step.reported, until, None, closed)
        pending = PendingEvent(step.event, step.reported, until, closed)
        return step, WatermarkWrite(mark, mark.reported, mark.counted_until, pending)

    def _write_recorded(self, delivered: list[Watermark]) -> dict[str, Watermark] | None:
        """Record pending events Stripe accepted; the written watermarks, or None if a group row had moved.

        A row that another batch wrote since it was read is read again and the events still pending there
        recorded: redoing the chunk would resend them all. None then tells the caller that the other
        watermarks it read of those rows are stale (what the other batch wrote is not in them)."""
        moved = False
        for attempt in range(CONFLICT_RETRIES):
            if not delivered:
                break
            try:
                written = self.watermarks.write(_recorded(m) for m in delivered)
                return None if moved else written
            except WatermarkConflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise  # the chunk is redone: its pending events are resent, and Stripe drops the duplicates
            moved = True
            fresh = self.watermarks.read([(m.subscription_id, m.product_id, m.period_start) for m in delivered])
            delivered = [now for m in delivered if _same_pending(now := fresh[m.subscription_id], m)]
        return None if moved else {}

    def _merge(self, marks: dict[str, Watermark], written: dict[str, Watermark]) -> dict[str, Watermark]:
        """`marks` after a write: the written ones replaced, the others of the same groups re-versioned."""
        versions = {self.watermarks.group_of(sid, m.product_id): m.etag for sid, m in written.items()}
        merged = {}
        for sid, mark in marks.items():
            group = self.watermarks.group_of(sid, mark.product_id)
            merged[sid] = written.get(sid) or (replace(mark, etag=versions[group]) if group in versions else mark)
        return merged

    def settle_pending(self, subscription_id: str, product_id: str, period: Period, now: int) -> PushSummary:
        """Resend (or, if old, check by count) the pending event of one subscription's period."""
        summary = PushSummary(subscriptions_seen=1)
        marks = self.watermarks.read([(subscription_id, product_id, period.start)])
        pending = [m for m in marks.values() if m.pending is not None]
        if pending:
            self._recover(pending, summary, now, {subscription_id: period})
        return summary

    def _recover(
        self, pending: list[Watermark], summary: PushSummary, now: int, periods: Mapping[str, Period]
    ) -> dict[str, Watermark] | None:
        """Pending events of an interrupted run: resent unchanged while Stripe still de-duplicates
        their identifiers; past that, settled by Stripe's count (`confirm.make_up`). The written
        watermarks, or None if their rows had moved meanwhile (`_write_recorded`)."""
        young = [m for m in pending if m.pending is not None and not is_old(m.pending, now)]
        done = self._settle_old([m for m in pending if m not in young], summary, now, periods)
        if young:
            events = [m.pending.event for m in young if m.pending is not None]
            log.info("usage push: resending %d pending events of an interrupted run", len(events))
            result = self.meter.send(events)
            accepted = {e.identifier for e in result.accepted}
            done += [m for m in young if m.pending is not None and m.pending.event.identifier in accepted]
            summary.calls_reported += sum(e.value for e in result.accepted)
            for event, reason in result.failed:
                summary.failed += 1
                summary.failures.append(f"{event.subscription_id}: {reason}")
                summary.left_pending.append((event.subscription_id, periods[event.subscription_id].start))
        summary.recovered += len(done)
        return self._write_recorded(done)

    def _settle_old(
        self, old: list[Watermark], summary: PushSummary, now: int, periods: Mapping[str, Period]
    ) -> list[Watermark]:
        """Old pending events whose delivery Stripe's count settles (sending the shortfall once)."""
        settled = []
        for mark in old:
            assert mark.pending is not None
            event = mark.pending.event
            try:
                if self.counts is None:
                    raise RuntimeError("it is too old to resend blindly, and no meter summaries are wired")
                product = self._billed_product(mark, periods[mark.subscription_id])
                outcome = make_up(
                    self.meter,
                    self.counts,
                    product,
                    subscription_id=mark.subscription_id,
                    customer_id=event.customer_id,
                    period=periods[mark.subscription_id],
                    expected=billable_overage(product, mark.pending.reported),
                    now=now,
                    agreed=True,
                )  # a day old: counted long since
            except Exception as exc:
                summary.failed += 1
                summary.failures.append(f"{mark.subscription_id}: pending event not settled: {exc}")
                summary.left_pending.append((mark.subscription_id, mark.period_start))
                continue
            log.info("usage push: old pending event of %s settled by count: %s", mark.subscription_id, outcome.line())
            summary.calls_reported += outcome.repaired
            settled.append(mark)
        return settled

    def _billed_product(self, mark: Watermark, period: Period) -> Product:
        """The product as the pending event of `mark` was computed with: after an upgrade within the period, the
        new product's part has its share of the included calls from the change, and the old product's closed
        part its share up to the change (its pushes before the change had all of them)."""
        product = self.models.product(mark.product_id)
        found = self.links.get(mark.subscription_id)
        if found is None:
            return product
        link = found[0]
        if not period.start < link.product_since < period.end:
            return product
        if mark.product_id == link.product_id:
            return part_product(product, period.start, period.end, link.product_since)
        if mark.product_id == link.previous_product_id:
            closed = mark.pending is not None and mark.pending.closed
            return part_product(
                product,
                period.start,
                period.end,
                max(period.start, link.previous_since),
                link.product_since if closed else None,
            )
        return product

    def _record(self, marks: dict[str, Watermark], result: SendResult, summary: PushSummary) -> None:
        done = []
        for event in result.accepted:
            mark = marks[event.subscription_id]
            assert mark.pending is not None
            assert mark.pending.event.identifier == event.identifier
            done.append(mark)
        self._write_recorded(done)
        summary.events_sent += len(result.accepted)
        summary.calls_reported += sum(e.value for e in result.accepted)
        for event, reason in result.failed:
            # The pending event stays: the next run resends it (same identifier) before anything new.
            summary.failed += 1
            summary.failures.append(f"{event.subscription_id}: {reason}")
            summary.left_pending.append((event.subscription_id, marks[event.subscription_id].period_start))
            log.warning("usage push: Stripe refused the event of %s: %s", event.subscription_id, reason)


class _ProductReads:
    """The run's report reads, in `reader` (one thread): the open watermarks' cursors first (one pass over
    the watermarks), then each product's windows from them, the product with most open watermarks first."""

    def __init__(self, push: UsagePush, reader: ThreadPoolExecutor, end: int) -> None:
        self._push, self._reader, self._end = push, reader, end
        self._cursors = reader.submit(push.watermarks.open_cursors, end)
        self._products: dict[str, tuple[list[int], Future[dict[int, dict[str, UsageCounts]]]]] | None = None
        self.count = 0  # report windows read (each paged), for the summary

    def _started(self) -> dict[str, tuple[list[int], Future[dict[int, dict[str, UsageCounts]]]]]:
        if self._products is None:
            self._products = {}
            for pid, cursors in self._cursors.result().items():
                # An open watermark's cursor older than a billing period belongs to a period that ended and
                # waits for its closing report: no window starts there (each would be another paged read).
                starts = window_starts((c for c in cursors if c >= self._end - OPEN_CURSOR_HORIZON), self._end)
                windows = pieces(starts, self._end) if starts else []
                self.count += len(windows)
                self._products[pid] = (starts, self._reader.submit(self._push._read_windows, windows, pid))
        return self._products

    def ready(self, product_id: str) -> bool:
        """Whether the product's report is read (or it has nothing to read): its links can be planned now."""
        if self._products is None and not self._cursors.done():
            return False
        found = self._started().get(product_id)
        return found is None or found[1].done()

    def result(self, product_id: str) -> tuple[list[int], Mapping[int, Mapping[str, UsageCounts]]]:
        """The product's window starts and, per start, each subscription's calls from it to the run's end."""
        found = self._started().get(product_id)
        return ([], {}) if found is None else (found[0], found[1].result())

    def forget(self, product_id: str) -> None:
        """Let the product's counts go (all its links are planned)."""
        self._started().pop(product_id, None)


class _Held(NamedTuple):
    """What the plan keeps of a listed link until its batch is cut: a fraction of a `SubscriptionLink`."""

    subscription_id: str
    customer_id: str
    period_start: int
    period_end: int
    since: int  # where the product's part of the period starts after a plan change; 0: at the period start


def _held(link: SubscriptionLink) -> _Held:
    start, end, since = link.current_period_start, link.current_period_end, link.product_since
    return _Held(link.apim_subscription_id, link.stripe_customer_id, start, end, since if start < since < end else 0)


def _items(
    links: list[_Held],
    product_id: str,
    *,
    cursors: Mapping[str, int | None],
    starts: list[int],
    counts_by_start: Mapping[int, Mapping[str, UsageCounts]],
    end: int,
) -> list[PushItem]:
    """One item per link not yet counted up to `end`, with its window start and calls."""
    items = []
    for link in links:
        sid = link.subscription_id
        cursor = cursors.get(sid)
        if cursor is not None and cursor >= end:
            continue  # counted up to this run's end already
        # No start (the product's cursors were read before this one was written): the window is skipped
        # (`window_action`), and the next run, whose starts have this cursor, counts it.
        start = None if cursor is None or not starts else start_for(cursor, starts)
        counts = UsageCounts() if start is None else counts_by_start[start].get(sid, UsageCounts())
        period = Period(link.period_start, link.period_end)
        items.append(PushItem(sid, link.customer_id, product_id, period, start, counts, since=link.since))
    return items


def _expected_cursor(mark: Watermark) -> int | None:
    """Where the cursor will be once a pending event (resent first) is recorded."""
    return mark.pending.counted_until if mark.pending is not None else mark.counted_until


def _same_pending(now: Watermark, then: Watermark) -> bool:
    """`now` still holds the pending event `then` held (nobody recorded or replaced it meanwhile)."""
    return (
        now.pending is not None
        and then.pending is not None
        and now.pending.event.identifier == then.pending.event.identifier
    )


def _recorded(mark: Watermark) -> WatermarkWrite:
    """Stripe has the pending event of `mark`: the watermark becomes what the event was written with."""
    assert mark.pending is not None
    return WatermarkWrite(mark, mark.pending.reported, mark.pending.counted_until, None, mark.pending.closed)
