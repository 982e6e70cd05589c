"""How the plan cuts a run into batches at scale: whole groups, while the links are still listed."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator, Mapping

import pytest

from billing.model_loader import load_models
from billing.records import SubscriptionLink
from billing.usage import push as push_module
from billing.usage.batches import PushBatch, PushItem, batch_message, parse_message, split
from billing.usage.plan import UsageCounts
from billing.usage.push import SLICE, UsagePush
from billing.usage.runner import run_in_process
from billing.usage.windows import Period, ReportWindow
from tests.fakes import FakeLinks
from tests.usage.fakes import FakeMeter, FakeReports, FakeWatermarks, link

MODELS = load_models()
DAY = 86_400
P0 = 1_750_000_000
P1 = P0 + 30 * DAY
LAG = 1800
QUEUE_MESSAGE_BYTES = 64 * 1024  # Azure Storage: "A queue message can be up to 64 KB in size"


def _item(n: int, group: int) -> PushItem:
    return PushItem(f"sub_{group:04d}_{n:05d}", f"cus_{n:014d}", "payg", Period(P0, P1), P0 + 1, UsageCounts(n))


def _group(item: PushItem) -> str:
    return item.subscription_id.split("_")[1]


def test_a_group_larger_than_a_batch_is_one_batch_and_smaller_groups_fill_batches_whole() -> None:
    # A million subscriptions over 1,024 groups and three products: about 326 in each group.
    items = [_item(n, 0) for n in range(326)] + [_item(n, g) for g in (1, 2, 3) for n in range(120)]
    batches = list(split(P0 + DAY, P0 + DAY, items, group_of=lambda sid, pid: _group_of(sid), batch_size=300))
    assert [len(b.items) for b in batches] == [326, 240, 120]
    groups = [{_group(i) for i in b.items} for b in batches]
    assert groups == [{"0000"}, {"0001", "0002"}, {"0003"}]  # no group in two batches


def test_a_group_larger_than_a_queue_message_is_cut_and_each_part_fits_a_message() -> None:
    items = [_item(n, 7) for n in range(1_500)]
    batches = list(split(P0 + DAY, P0 + DAY, items, group_of=lambda sid, pid: _group_of(sid), batch_size=300))
    assert len(batches) > 1
    assert sum(len(b.items) for b in batches) == 1_500
    for batch in batches:
        body = batch_message(batch)
        assert len(base64.b64encode(body)) <= QUEUE_MESSAGE_BYTES
        assert parse_message(body) == batch


def _group_of(sid: str) -> str:
    return sid.split("_")[1]


class _Listing:
    """Links as the store lists them, a group's together; notes how far the listing got. After `pause_after`
    links it waits (10 s at most) until `read` is set, as a listing slower than the report read would."""

    def __init__(
        self, links: list[SubscriptionLink], pause_after: int | None = None, read: threading.Event | None = None
    ) -> None:
        self.links, self.listed, self.pause_after, self.read = links, 0, pause_after, read
        self.finished = threading.Event()

    def __iter__(self) -> Iterator[SubscriptionLink]:
        for lk in self.links:
            if self.listed == self.pause_after and self.read is not None:
                self.read.wait(10)
            self.listed += 1
            yield lk
        self.finished.set()


class _NotedReports(FakeReports):
    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()

    def read(
        self, window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None
    ) -> Mapping[str, UsageCounts]:
        answer = super().read(window, subscription_id, product_id)
        self.done.set()
        return answer


def test_batches_go_out_while_the_links_are_listed_and_the_plan_holds_a_slice_not_the_run() -> None:
    total, group_size = 4 * SLICE, 50
    links = [link(f"sub_{n:06d}", "payg", P0, P1) for n in range(total)]
    marks, reports, meter = FakeWatermarks(group_size=group_size), _NotedReports(), FakeMeter()
    push = UsagePush(MODELS, reports, meter, marks, FakeLinks(links), lag_seconds=LAG, counts=meter)
    run_in_process(push, P0 + 1 + LAG)  # opens every window
    for n in range(total):
        reports.add(f"sub_{n:06d}", P0 + 3600, success=n % 7 + 1)

    reports.done.clear()
    listing = _Listing(links, pause_after=SLICE, read=reports.done)
    sent: list[PushBatch] = []
    held_most, listed_at_first = 0, 0

    def on_batch(batch: PushBatch) -> None:
        nonlocal held_most, listed_at_first
        listed_at_first = listed_at_first or listing.listed
        sent.append(batch)
        held_most = max(held_most, listing.listed - sum(len(b.items) for b in sent))

    plan = push.plan(P0 + DAY, links=listing, on_batch=on_batch)
    assert plan.batch_count == len(sent)
    assert plan.batches == []
    # The first batch was handed over long before the listing ended (once the report was read), and the plan
    # never held more than what was listed meanwhile and a slice, not the run's links.
    assert listed_at_first <= 2 * SLICE < total
    assert held_most <= 2 * SLICE + group_size
    planned = [i.subscription_id for b in sent for i in b.items]
    assert sorted(planned) == [lk.apim_subscription_id for lk in links]  # each link once
    groups = [{marks.group_of(i.subscription_id, i.product_id) for i in b.items} for b in sent]
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # no group in two batches
    for batch in sent:
        push.process_batch(batch)
    assert meter.total() == sum(n % 7 + 1 for n in range(total))


class _SlowReports(FakeReports):
    """A source slower than the listing: each read waits until the listing has ended (2 s at most)."""

    def __init__(self, listing: _Listing) -> None:
        super().__init__()
        self.listing = listing
        self.listed_when_read: list[int] = []

    def read(
        self, window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None
    ) -> Mapping[str, UsageCounts]:
        self.listing.finished.wait(2)  # a plan that waits for the read never finishes listing first
        self.listed_when_read.append(self.listing.listed)
        return super().read(window, subscription_id, product_id)


def test_a_source_slower_than_the_listing_makes_the_listing_wait_not_the_memory_grow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(push_module, "MAX_HELD", SLICE)  # a million links' worth, scaled down
    total = 4 * SLICE
    links = [link(f"sub_{n:06d}", "payg", P0, P1) for n in range(total)]
    marks, meter = FakeWatermarks(group_size=50), FakeMeter()
    opening = UsagePush(MODELS, FakeReports(), meter, marks, FakeLinks(links), lag_seconds=LAG, counts=meter)
    run_in_process(opening, P0 + 1 + LAG)  # opens every window: the next run reads the report
    listing = _Listing(links)
    reports = _SlowReports(listing)
    for n in range(total):
        reports.add(f"sub_{n:06d}", P0 + 3600, success=1)
    push = UsagePush(MODELS, reports, meter, marks, FakeLinks(links), lag_seconds=LAG, counts=meter)
    sent: list[PushBatch] = []
    push.plan(P0 + DAY, links=listing, on_batch=sent.append)
    # The plan stopped listing at its bound until the report came, rather than hold every link meanwhile.
    assert reports.listed_when_read == [SLICE]
    assert sorted(i.subscription_id for b in sent for i in b.items) == [lk.apim_subscription_id for lk in links]
