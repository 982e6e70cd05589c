"""The push service over fakes of its own ports: exactly once across reruns, crashes and refusals."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.model_loader import load_models
from billing.records import SubscriptionLink
from billing.usage.batches import BadMessage, PushBatch, batch_message, parse_message
from billing.usage.closing import report_closing_usage
from billing.usage.plan import UsageCounts
from billing.usage.ports import SendResult, Watermark
from billing.usage.push import CHUNK, UsagePush
from billing.usage.runner import handle_message, run_in_process
from billing.usage.windows import Period, ReportWindow
from tests.fakes import FakeLinks
from tests.usage.fakes import FakeMeter, FakeReports, FakeWatermarks, link

MODELS = load_models()
DAY = 86_400
P0 = 1_750_000_000
P1 = P0 + 30 * DAY
LAG = 1800


def _push(
    links: list[SubscriptionLink],
    reports: FakeReports | None = None,
    meter: FakeMeter | None = None,
    marks: FakeWatermarks | None = None,
    *,
    batch_size: int = 300,
    after_send: Callable[[SendResult], None] | None = None,
) -> UsagePush:
    meter = meter or FakeMeter()
    return UsagePush(
        MODELS,
        reports or FakeReports(),
        meter,
        marks or FakeWatermarks(),
        FakeLinks(links),
        lag_seconds=LAG,
        batch_size=batch_size,
        counts=meter,  # the fake Stripe reads back what it counted
        after_send=after_send,
    )


class Crash(Exception):
    pass


def _start(push: UsagePush) -> None:
    """The first run: its window ends a second into the period, so it only adopts (counts nothing)."""
    run_in_process(push, P0 + 1 + LAG)


def test_daily_pushes_bill_each_call_once_and_respect_included_calls() -> None:
    reports, meter = FakeReports(), FakeMeter()
    # developer: 100 included; payg: none.
    push = _push([link("sub_dev1", "developer", P0, P1), link("sub_payg2", "payg", P0, P1)], reports, meter)
    _start(push)
    for day in range(5):
        reports.add("sub_dev1", P0 + day * DAY + 60, success=70, blocked=40, failed=3)
        reports.add("sub_payg2", P0 + day * DAY + 60, success=11, blocked=5)
        run_in_process(push, P0 + (day + 1) * DAY)
    assert meter.total("sub_dev1") == 5 * 70 - 100
    assert meter.total("sub_payg2") == 5 * 11
    run_in_process(push, P0 + 6 * DAY)  # nothing new: nothing sent
    assert meter.total() == 250 + 55


def test_the_first_run_reads_nothing_and_only_adopts() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    reports.add("sub_a", P0 + 10, success=9)
    summary = run_in_process(_push([link("sub_a", "payg", P0, P1)], reports, meter, marks), P0 + DAY)
    assert reports.reads == []
    assert (summary.events_sent, meter.total()) == (0, 0)
    assert marks.get("sub_a", P0).counted_until == P0 + DAY - LAG


def test_calls_inside_the_report_lag_wait_for_the_next_push() -> None:
    reports, meter = FakeReports(), FakeMeter()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter)
    _start(push)
    reports.add("sub_a", P0 + DAY - 60, success=9)  # one minute before the push: inside the lag
    run_in_process(push, P0 + DAY)
    assert meter.total() == 0
    run_in_process(push, P0 + 2 * DAY)
    assert meter.total() == 9


def test_crash_between_send_and_record_then_rerun_counts_nothing_twice() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = [link(f"sub_{n}", "payg", P0, P1) for n in range(5)]
    _start(_push(links, reports, meter, marks))
    for n in range(5):
        reports.add(f"sub_{n}", P0 + 100, success=10 + n)

    def crash(result: SendResult) -> None:
        raise Crash

    crashing = _push(links, reports, meter, marks, after_send=crash)
    with pytest.raises(Crash):
        run_in_process(crashing, P0 + DAY)
    assert meter.total() == sum(10 + n for n in range(5))  # Stripe has them, the watermarks do not
    # More calls arrive before the rerun: the pending events go first (dropped as duplicates).
    for n in range(5):
        reports.add(f"sub_{n}", P0 + DAY + 100, success=1)
    summary = run_in_process(_push(links, reports, meter, marks), P0 + 2 * DAY)
    assert summary.recovered == 5
    assert meter.total() == sum(11 + n for n in range(5))
    for n in range(5):
        assert marks.get(f"sub_{n}", P0).reported == 11 + n
        assert marks.get(f"sub_{n}", P0).pending is None


def test_retried_message_after_crash_resends_the_same_identifiers() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = [link("sub_a", "developer", P0, P1)]
    push = _push(links, reports, meter, marks)
    _start(push)
    reports.add("sub_a", P0 + 100, success=250)
    (batch,) = push.plan(P0 + DAY).batches
    body = batch_message(batch)

    def crash(result: SendResult) -> None:
        raise Crash

    with pytest.raises(Crash):
        handle_message(_push(links, reports, meter, marks, after_send=crash), body, lambda b: None)
    first = set(meter.events)
    handle_message(push, body, lambda b: None)  # the host retries the same message
    handle_message(push, body, lambda b: None)  # ... or delivers it twice
    assert set(meter.events) == first
    assert meter.total() == 150


def test_refused_event_stays_pending_and_is_reported_as_failed() -> None:
    reports, marks = FakeReports(), FakeWatermarks()
    meter = FakeMeter(refuse_customers={"cus_gone"})
    links = [link("sub_ok1", "payg", P0, P1), link("sub_bad2", "payg", P0, P1, customer="cus_gone")]
    _start(_push(links, reports, meter, marks))
    reports.add("sub_ok1", P0 + 10, success=3)
    reports.add("sub_bad2", P0 + 10, success=4)
    summary = run_in_process(_push(links, reports, meter, marks), P0 + DAY)
    assert (summary.events_sent, summary.failed) == (1, 1)
    assert "sub_bad2" in summary.failures[0]
    assert marks.get("sub_bad2", P0).pending is not None
    meter.refuse.clear()  # the customer is fixed: the next run resends the same event
    summary = run_in_process(_push(links, reports, meter, marks), P0 + 2 * DAY)
    assert summary.recovered == 1
    assert meter.total("sub_bad2") == 4


def test_dry_run_sends_and_records_nothing() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter, marks)
    _start(push)
    writes = marks.writes
    reports.add("sub_a", P0 + 10, success=500)
    summary = run_in_process(push, P0 + DAY, dry_run=True)
    assert [e.value for e in summary.planned] == [500]
    assert meter.requests == 0
    assert marks.writes == writes


def test_one_report_read_per_run_whatever_the_period_starts() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks(group_size=50)
    # 900 subscriptions, each with its own anchor (a different second of the month).
    links = [link(f"sub_{n:04d}", "payg", P0 - n * 2_777, P1 - n * 2_777) for n in range(900)]
    push = _push(links, reports, meter, marks, batch_size=100)
    run_in_process(push, P0 + 1 + LAG)
    for n in range(900):
        reports.add(f"sub_{n:04d}", P0 + 3600, success=n + 1)
    plan = push.plan(P0 + DAY)
    assert len(reports.reads) == 1
    assert reports.reads[0] == (ReportWindow(P0 + 1, P0 + DAY - LAG), None, "payg")
    assert len(plan.batches) == 9
    # Whole groups per batch: no group is written by two batches.
    groups = [{marks.group_of(i.subscription_id, i.product_id) for i in b.items} for b in plan.batches]
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    for batch in plan.batches:
        push.process_batch(batch)
    assert meter.total() == sum(range(1, 901))


class _HeldReports(FakeReports):
    """Reports whose read of `held` product waits until `release` is set (or 10 s pass)."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held, self.release, self.waited_for_release = held, threading.Event(), False

    def read(
        self, window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None
    ) -> Mapping[str, UsageCounts]:
        if product_id == self.held:
            self.waited_for_release = self.release.wait(10)
        return super().read(window, subscription_id, product_id)


def test_each_products_batches_go_out_while_the_next_products_report_is_still_read() -> None:
    marks = FakeWatermarks(group_size=4)
    links = [link(f"sub_{n:03d}", "payg" if n < 60 else "developer", P0 - n, P1 - n) for n in range(90)]
    reports = _HeldReports(held="developer")
    for n, lk in enumerate(links):
        reports.products[lk.apim_subscription_id] = lk.product_id
        reports.add(lk.apim_subscription_id, P0 + 3600, success=200 + n)
    meter = FakeMeter()
    push = _push(links, reports, meter, marks, batch_size=25)
    run_in_process(push, P0 + 1 + LAG)  # opens every window (the developer read is not held yet)
    reports.reads.clear()

    sent: list[PushBatch] = []

    def on_batch(batch: PushBatch) -> None:
        sent.append(batch)
        if {i.product_id for i in batch.items} == {"payg"}:
            reports.release.set()  # only now may the developer report finish

    plan = push.plan(P0 + DAY, on_batch=on_batch)
    # The developer read waited for payg's batches: they went out before it, not after every read.
    assert reports.waited_for_release
    assert [r[2] for r in reports.reads] == ["payg", "developer"]  # the product with most watermarks first
    assert plan.batches == []
    assert plan.batch_count == len(sent)
    assert [{i.product_id for i in b.items} for b in sent] == [{"payg"}] * 3 + [{"developer"}] * 2
    for batch in sent:
        push.process_batch(batch)
    dev = MODELS.product("developer").included_calls
    assert meter.total() == sum(200 + n for n in range(60)) + sum(200 + n - dev for n in range(60, 90))


def test_cancelled_and_flat_only_links_are_not_pushed() -> None:
    reports = FakeReports()
    links = [
        link("sub_c", "payg", P0, P1, canceled_at=P0 + 5),
        link("sub_t", "basic", P0, P1),
        link("sub_ok", "payg", P0, P1),
    ]
    batches = _push(links, reports).plan(P0 + DAY).batches
    assert [i.subscription_id for b in batches for i in b.items] == ["sub_ok"]


def test_a_renewed_periods_first_window_is_adopted_and_the_old_periods_calls_never_count_in_it() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    P2 = P1 + 30 * DAY
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter, marks)
    _start(push)
    reports.add("sub_a", P1 - 3 * 3600, success=5)  # old period, after its last regular push
    run_in_process(push, P1 - 4 * 3600)
    report_closing_usage("sub_a", P0, P1, push, now=P1)  # invoice.created: the old period settled
    reports.add("sub_a", P1 + 3600, success=7)  # new period
    renewed = _push([link("sub_a", "payg", P1, P2)], reports, meter, marks)
    run_in_process(renewed, P1 + DAY)  # window [P1 - 4h - lag, P1 + 1d - lag): both periods' calls
    assert meter.total() == 5
    reports.add("sub_a", P1 + DAY + 60, success=2)
    run_in_process(renewed, P1 + 2 * DAY)
    assert meter.total() == 7  # only the new window; the adopted one is the closing report's
    report_closing_usage("sub_a", P1, P2, renewed, now=P2)
    assert meter.total() == 5 + 9
    assert {e.timestamp < P1 for e in meter.events.values() if e.value == 5} == {True}


def test_a_window_reaching_past_the_period_end_leaves_the_period_to_the_closing_report() -> None:
    reports, meter = FakeReports(), FakeMeter()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter)
    _start(push)
    reports.add("sub_a", P1 - 1800, success=7)  # last half hour of the period
    assert run_in_process(push, P1 + 5 * 3600).events_sent == 0  # the link still shows the old period
    report_closing_usage("sub_a", P0, P1, push, now=P1 + 6 * 3600)
    (event,) = meter.events.values()
    assert P0 <= event.timestamp < P1
    assert event.value == 7


def test_a_batch_never_processed_is_caught_up_by_the_next_run_from_its_own_cursor() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks(group_size=1)
    links = [link("sub_1", "payg", P0, P1), link("sub_2", "payg", P0, P1)]
    push = _push(links, reports, meter, marks, batch_size=1)
    _start(push)
    reports.add("sub_1", P0 + 3600, success=4)
    reports.add("sub_2", P0 + 3600, success=5)
    first = push.plan(P0 + DAY).batches
    push.process_batch(first[1])  # sub_2 done; sub_1's batch went to the poison queue
    reports.add("sub_1", P0 + DAY + 3600, success=6)
    reports.add("sub_2", P0 + DAY + 3600, success=1)
    reads = len(reports.reads)
    run_in_process(push, P0 + 2 * DAY)
    assert (meter.total("sub_1"), meter.total("sub_2")) == (10, 6)
    # Two pieces: from sub_1's cursor to sub_2's, and from there to the end; each read once.
    assert [w for w, *_ in reports.reads[reads:]] == [
        ReportWindow(P0 + DAY - LAG, P0 + 2 * DAY - LAG),
        ReportWindow(P0 + 1, P0 + DAY - LAG),
    ]


def test_a_group_changed_by_another_run_is_redone_from_what_is_stored() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks(group_size=10)
    links = [link("sub_1", "payg", P0, P1), link("sub_2", "payg", P0, P1)]
    push = _push(links, reports, meter, marks)
    _start(push)
    reports.add("sub_1", P0 + 60, success=3)
    reports.add("sub_2", P0 + 60, success=4)
    reports.add("sub_2", P1 - 60, success=1)
    # A closing report of sub_2 (same group) lands between this run's read and its first write.
    marks.before_write = lambda: report_closing_usage("sub_2", P0, P1, _push(links, reports, meter, marks), now=P1)
    summary = run_in_process(push, P0 + DAY)
    assert summary.failed == 0
    assert (meter.total("sub_1"), meter.total("sub_2")) == (3, 5)


def test_a_group_written_by_another_run_after_sending_is_recorded_without_resending() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks(group_size=10)
    links = [link("sub_1", "payg", P0, P1), link("sub_2", "payg", P0, P1)]
    _start(_push(links, reports, meter, marks))
    reports.add("sub_1", P0 + 60, success=3)
    reports.add("sub_2", P1 - 60, success=2)

    def another_run_writes_the_group(_: SendResult) -> None:
        # sub_2's closing report (same group row) lands after Stripe took sub_1's event, before it is recorded.
        report_closing_usage("sub_2", P0, P1, _push(links, reports, meter, marks), now=P1)

    sent_before = meter.requests
    summary = run_in_process(_push(links, reports, meter, marks, after_send=another_run_writes_the_group), P0 + DAY)
    assert summary.failed == 0
    assert summary.events_sent == 1
    assert meter.requests - sent_before == 2  # sub_2's closing event and sub_1's event, neither sent twice
    assert (meter.total("sub_1"), meter.total("sub_2")) == (3, 2)
    recorded = marks.get("sub_1", P0)
    assert recorded.pending is None
    assert recorded.reported == 3


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(st.tuples(st.integers(-3 * DAY, 33 * DAY), st.integers(1, 500)), max_size=25),
    runs=st.lists(st.tuples(st.integers(0, 34 * DAY), st.booleans()), max_size=12),
    product=st.sampled_from(["developer", "payg", "standard"]),
)
def test_any_runs_crashes_and_closing_bill_exactly_the_periods_overage(
    calls: list[tuple[int, int]], runs: list[tuple[int, bool]], product: str
) -> None:
    """Calls before, in and after the period; runs at any times, some crashing after sending."""
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    for offset, n in calls:
        reports.add("sub_1", P0 + offset, success=n, blocked=n)
    links = [link("sub_1", product, P0, P1)]

    def crash(result: SendResult) -> None:
        raise Crash

    for at, crashes in sorted(runs):
        push = _push(links, reports, meter, marks, after_send=crash if crashes else None)
        with contextlib.suppress(Crash):
            run_in_process(push, P0 + at)
    report_closing_usage("sub_1", P0, P1, _push(links, reports, meter, marks), now=P1)
    in_period = sum(n for offset, n in calls if 0 <= offset < P1 - P0)
    assert meter.total() == max(0, in_period - MODELS.product(product).included_calls)
    assert all(P0 <= e.timestamp < P1 for e in meter.events.values())


def test_closing_report_reads_to_the_period_end_for_one_subscription() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter, marks)
    _start(push)
    reports.add("sub_a", P0 + 10, success=5)
    run_in_process(push, P0 + DAY)
    reports.add("sub_a", P1 - 60, success=8)  # the last minute: inside any lag
    summary = report_closing_usage("sub_a", P0, P1, push)
    assert summary.calls_reported == 8
    assert reports.reads[-1][1] == "sub_a"
    assert reports.reads[-1][0].end == P1
    assert meter.total() == 13
    # The last second of the period's last whole minute (P1 is 40 s past one): Stripe's summaries
    # are read in whole minutes, so the confirmation reads this event back.
    assert max(e.timestamp for e in meter.events.values()) == P1 - 41
    assert report_closing_usage("sub_a", P0, P1, push).events_sent == 0  # idempotent


def test_closing_request_message_is_handled_like_the_function_call() -> None:
    reports, meter = FakeReports(), FakeMeter()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter)
    reports.add("sub_a", P1 - 10, success=2)
    body = b'{"kind": "closing", "subscription_id": "sub_a", "period_start": %d, "period_end": %d}' % (P0, P1)
    handle_message(push, body, lambda b: None)
    assert meter.total() == 2


def test_near_the_time_limit_the_rest_is_re_enqueued_and_finishes_exactly() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks(group_size=1)
    count = 2 * CHUNK + CHUNK // 2
    links = [link(f"sub_{n:04d}", "payg", P0, P1) for n in range(count)]
    push = _push(links, reports, meter, marks)
    _start(push)
    for n in range(count):
        reports.add(f"sub_{n:04d}", P0 + 5, success=n + 1)
    planned = push.plan(P0 + DAY).batches
    batch = PushBatch(planned[0].window_end, planned[0].as_of, tuple(i for b in planned for i in b.items))
    ticks = iter([0.0, 0.0, 10_000.0])  # the clock passes the deadline after two chunks
    sent: list[bytes] = []
    handle_message(push, batch_message(batch), sent.append, started=0.0, clock=lambda: next(ticks))
    (rest_body,) = sent
    rest = parse_message(rest_body)
    assert isinstance(rest, PushBatch)
    assert len(rest.items) == count - 2 * CHUNK
    handle_message(push, rest_body, sent.append)
    assert meter.total() == sum(range(1, count + 1))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"nope", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"kind": "x"}', "'kind'"),
        (b'{"kind": "closing", "subscription_id": "s", "period_start": 5, "period_end": 1}', "must end after"),
        (b'{"kind": "batch", "window_end": 2, "as_of": 2, "items": [[1]]}', "items[0]"),
        (
            b'{"kind": "batch", "window_end": 2, "as_of": 2, "items": [["s", "c", "p", 9, 3, 1, 1, 0, 0, 0]]}',
            "items[0]: a billing period must end after it starts",
        ),
        (
            b'{"kind": "batch", "window_end": 2, "as_of": 2, "items": [["s", "c", "p", 1, 3, -1, 1, 0, 0, 0]]}',
            "items[0]: 'window_start' must be a whole number",
        ),
    ],
)
def test_bad_messages_say_what_is_wrong(body: bytes, fragment: str) -> None:
    with pytest.raises(BadMessage, match=None) as info:
        parse_message(body)
    assert fragment in str(info.value)


def test_a_full_batch_message_fits_a_storage_queue_message() -> None:
    reports = FakeReports()
    long_links = [
        link(f"sub_{'x' * 40}{n:05d}", "enterprise", P0 - n * 997, P1 - n * 997, customer=f"cus_{'y' * 30}{n}")
        for n in range(2000)
    ]
    marks = FakeWatermarks()
    for lk in long_links:
        marks.rows[(lk.apim_subscription_id, lk.current_period_start)] = Watermark(
            lk.apim_subscription_id, lk.product_id, lk.current_period_start, 0, P0 + 1
        )
        reports.add(lk.apim_subscription_id, P0 + 1, success=10**12, blocked=10**12, failed=10**12)
    batches = _push(long_links, reports, marks=marks, batch_size=10_000).plan(P0 + DAY).batches
    for batch in batches:
        encoded = len(batch_message(batch)) * 4 / 3  # base64, as the Functions queue trigger expects
        assert encoded < 64 * 1024
        assert parse_message(batch_message(batch)) == batch
    # Cut by size, still in whole groups: no two batches write one group.
    groups = [{marks.group_of(i.subscription_id, i.product_id) for i in b.items} for b in batches]
    assert len(batches) > 1
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    assert Period(P0, P1).end == P1


def test_a_recovery_whose_row_another_batch_wrote_replans_the_rest_from_what_is_stored() -> None:
    # A has a pending event (sent, then a crash); B shares A's group. While a newer run resends A's event, a
    # batch of an older run counts B and records it: the newer run must not count B's window again.
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks(group_size=10)
    links = [link("sub_1", "payg", P0, P1), link("sub_2", "payg", P0, P1)]
    _start(_push(links, reports, meter, marks))
    for hour in range(1, 10):
        reports.add("sub_1", P0 + hour * 3600, success=10)
        reports.add("sub_2", P0 + hour * 3600, success=10)

    def crash(_: SendResult) -> None:
        raise Crash

    crashing = _push(links, reports, meter, marks, after_send=crash)
    (first,) = crashing.plan(P0 + 3 * 3600 + LAG, links=[links[0]]).batches
    with pytest.raises(Crash):
        crashing.process_batch(first)
    assert marks.get("sub_1", P0).pending is not None
    push = _push(links, reports, meter, marks)
    (older,) = push.plan(P0 + 4 * 3600 + LAG, links=[links[1]]).batches
    (newer,) = push.plan(P0 + 8 * 3600 + LAG, links=links).batches
    marks.before_write = lambda: push.process_batch(older)
    push.process_batch(newer)
    run_in_process(push, P0 + DAY)  # and the next run catches up what the newer one left
    assert (meter.total("sub_1"), meter.total("sub_2")) == (90, 90)  # 9 hours of 10 calls, each once


def test_a_cursor_written_after_the_plan_read_the_cursors_waits_for_the_next_run() -> None:
    class CursorsReadEarly(FakeWatermarks):
        """The pass over the open cursors ran before the previous run's first batch wrote its row."""

        def __init__(self) -> None:
            super().__init__()
            self.early: dict[str, dict[int, int]] | None = {}

        def open_cursors(self, before: int) -> dict[str, dict[int, int]]:
            early, self.early = self.early, None
            return early if early is not None else super().open_cursors(before)

    reports, meter, marks = FakeReports(), FakeMeter(), CursorsReadEarly()
    links = [link("sub_1", "payg", P0, P1)]
    run_in_process(_push(links, reports, meter, marks), P0 + 1 + LAG)  # adopts; its cursors were read before
    reports.add("sub_1", P0 + 3600, success=7)
    marks.early = {}
    assert run_in_process(_push(links, reports, meter, marks), P0 + DAY).failed == 0  # planned, nothing counted
    assert meter.total("sub_1") == 0
    run_in_process(_push(links, reports, meter, marks), P0 + 2 * DAY)
    assert meter.total("sub_1") == 7


def test_an_open_watermark_of_a_long_ended_period_adds_no_report_read() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = [link("sub_1", "payg", P0, P1)]
    _start(_push(links, reports, meter, marks))
    # A period that ended 40 days ago and whose closing report never came: its cursor is still open.
    old = P0 - 70 * DAY
    marks.rows[("sub_9", old)] = Watermark("sub_9", "payg", old, reported=5, counted_until=P0 - 40 * DAY)
    reports.add("sub_1", P0 + 3600, success=4)
    reports.reads.clear()
    run_in_process(_push(links, reports, meter, marks), P0 + DAY)
    assert [r[0] for r in reports.reads] == [ReportWindow(P0 + 1, P0 + DAY - LAG)]  # one window, from sub_1's cursor
    assert meter.total("sub_1") == 4
