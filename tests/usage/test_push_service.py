"""The push service over fakes of its own ports: exactly once across reruns, crashes and refusals."""

from __future__ import annotations

import pytest

from billing.model_loader import load_models
from billing.usage.batches import BadMessage, PushBatch, batch_message, parse_message
from billing.usage.closing import report_closing_usage
from billing.usage.ports import SendResult
from billing.usage.push import UsagePush
from billing.usage.runner import handle_message, run_in_process
from billing.usage.windows import Period
from tests.usage.fakes import FakeLinks, FakeMeter, FakeReports, FakeWatermarks, link

MODELS = load_models()
DAY = 86_400
P0 = 1_750_000_000
P1 = P0 + 30 * DAY
LAG = 1800


def _push(links: list, reports: FakeReports | None = None, meter: FakeMeter | None = None,  # type: ignore[type-arg]
          marks: FakeWatermarks | None = None, **kw: object) -> UsagePush:
    return UsagePush(MODELS, reports or FakeReports(), meter or FakeMeter(), marks or FakeWatermarks(),
                     FakeLinks(links), lag_seconds=LAG, **kw)  # type: ignore[arg-type]


class Crash(Exception):
    pass


def test_daily_pushes_bill_each_call_once_and_respect_included_calls() -> None:
    reports, meter = FakeReports(), FakeMeter()
    # developer: 100 included; payg: none.
    push = _push([link("sub_dev", "developer", P0, P1), link("sub_payg", "payg", P0, P1)], reports, meter)
    for day in range(5):
        reports.add("sub_dev", P0 + day * DAY + 60, success=70, blocked=40, failed=3)
        reports.add("sub_payg", P0 + day * DAY + 60, success=11, blocked=5)
        run_in_process(push, P0 + (day + 1) * DAY)
    assert meter.total("sub_dev") == 5 * 70 - 100
    assert meter.total("sub_payg") == 5 * 11
    run_in_process(push, P0 + 6 * DAY)  # nothing new: nothing sent
    assert meter.total() == 250 + 55


def test_calls_inside_the_report_lag_wait_for_the_next_push() -> None:
    reports, meter = FakeReports(), FakeMeter()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter)
    reports.add("sub_a", P0 + DAY - 60, success=9)  # one minute before the push: inside the lag
    run_in_process(push, P0 + DAY)
    assert meter.total() == 0
    run_in_process(push, P0 + 2 * DAY)
    assert meter.total() == 9


def test_crash_between_send_and_record_then_rerun_counts_nothing_twice() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = [link(f"sub_{n}", "payg", P0, P1) for n in range(5)]
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
        assert marks.get(P0, f"sub_{n}").reported == 11 + n
        assert marks.get(P0, f"sub_{n}").pending is None


def test_retried_message_after_crash_resends_the_same_identifiers() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = [link("sub_a", "developer", P0, P1)]
    reports.add("sub_a", P0 + 100, success=250)
    push = _push(links, reports, meter, marks)
    batch = next(push.plan_batches(P0 + DAY))
    body = batch_message(batch)

    def crash(result: SendResult) -> None:
        raise Crash

    with pytest.raises(Crash):
        handle_message(_push(links, reports, meter, marks, after_send=crash), body, lambda b: None)
    first = set(meter.events)
    handle_message(push, body, lambda b: None)  # the host retries the same message
    assert set(meter.events) == first
    assert meter.total() == 150


def test_refused_event_stays_pending_and_is_reported_as_failed() -> None:
    reports, marks = FakeReports(), FakeWatermarks()
    meter = FakeMeter(refuse_customers={"cus_gone"})
    links = [link("sub_ok", "payg", P0, P1), link("sub_bad", "payg", P0, P1, customer="cus_gone")]
    reports.add("sub_ok", P0 + 10, success=3)
    reports.add("sub_bad", P0 + 10, success=4)
    summary = run_in_process(_push(links, reports, meter, marks), P0 + DAY)
    assert (summary.events_sent, summary.failed) == (1, 1)
    assert "sub_bad" in summary.failures[0]
    assert marks.get(P0, "sub_bad").pending is not None
    meter.refuse.clear()  # the customer is fixed: the next run resends the same event
    summary = run_in_process(_push(links, reports, meter, marks), P0 + 2 * DAY)
    assert summary.recovered == 1
    assert meter.total("sub_bad") == 4


def test_dry_run_sends_and_records_nothing() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    reports.add("sub_a", P0 + 10, success=500)
    summary = run_in_process(_push([link("sub_a", "payg", P0, P1)], reports, meter, marks), P0 + DAY, dry_run=True)
    assert [e.value for e in summary.planned] == [500]
    assert meter.requests == 0
    assert marks.writes == 0


def test_one_report_read_per_distinct_period_start_not_per_subscription() -> None:
    reports = FakeReports()
    links = [link(f"sub_{n:04d}", "payg", P0 + (n % 3) * DAY, P1 + (n % 3) * DAY) for n in range(900)]
    batches = list(_push(links, reports, batch_size=100).plan_batches(P0 + 10 * DAY))
    assert len(reports.reads) == 3
    assert len(batches) == 9
    assert all(len({b.period}) == 1 for b in batches)


def test_cancelled_and_flat_only_links_are_not_pushed() -> None:
    reports = FakeReports()
    links = [link("sub_c", "payg", P0, P1, canceled_at=P0 + 5), link("sub_t", "basic", P0, P1),
             link("sub_ok", "payg", P0, P1)]
    batches = list(_push(links, reports).plan_batches(P0 + DAY))
    assert [i.subscription_id for b in batches for i in b.items] == ["sub_ok"]


def test_usage_in_the_last_hour_lands_in_its_period_even_when_pushed_later() -> None:
    reports, meter = FakeReports(), FakeMeter()
    reports.add("sub_a", P1 - 1800, success=7)  # last half hour of the period
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter)
    run_in_process(push, P1 + 5 * 3600)  # the link still shows the old period (webhook late)
    (event,) = meter.events.values()
    assert P0 <= event.timestamp < P1
    assert event.value == 7


def test_closing_report_reads_to_the_period_end_for_one_subscription() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter, marks)
    reports.add("sub_a", P0 + 10, success=5)
    run_in_process(push, P0 + DAY)
    reports.add("sub_a", P1 - 60, success=8)  # the last minute: inside any lag
    summary = report_closing_usage("sub_a", P0, P1, push)
    assert summary.calls_reported == 8
    assert reports.reads[-1][1] == "sub_a"
    assert reports.reads[-1][0].end == P1
    assert meter.total() == 13
    assert max(e.timestamp for e in meter.events.values()) == P1 - 1
    assert report_closing_usage("sub_a", P0, P1, push).events_sent == 0  # idempotent


def test_closing_request_message_is_handled_like_the_function_call() -> None:
    reports, meter = FakeReports(), FakeMeter()
    push = _push([link("sub_a", "payg", P0, P1)], reports, meter)
    reports.add("sub_a", P1 - 10, success=2)
    body = b'{"kind": "closing", "subscription_id": "sub_a", "period_start": %d, "period_end": %d}' % (P0, P1)
    handle_message(push, body, lambda b: None)
    assert meter.total() == 2


def test_near_the_time_limit_the_rest_is_re_enqueued_and_finishes_exactly() -> None:
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = [link(f"sub_{n:03d}", "payg", P0, P1) for n in range(250)]
    for n in range(250):
        reports.add(f"sub_{n:03d}", P0 + 5, success=n + 1)
    push = _push(links, reports, meter, marks, batch_size=250)
    (batch,) = push.plan_batches(P0 + DAY)
    ticks = iter([0.0, 0.0, 10_000.0])  # the clock passes the deadline after two chunks
    sent: list[bytes] = []
    handle_message(push, batch_message(batch), sent.append, started=0.0, clock=lambda: next(ticks))
    (rest_body,) = sent
    rest = parse_message(rest_body)
    assert isinstance(rest, PushBatch)
    assert len(rest.items) == 50
    handle_message(push, rest_body, sent.append)
    assert meter.total() == sum(range(1, 251))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b"nope", "not JSON"), (b"[]", "JSON object"), (b'{"kind": "x"}', "'kind'"),
     (b'{"kind": "closing", "subscription_id": "s", "period_start": 5, "period_end": 1}', "must end after"),
     (b'{"kind": "batch", "period_start": 1, "period_end": 2, "window_end": 2, "as_of": 2, "items": [[1]]}',
      "items[0]")],
)
def test_bad_messages_say_what_is_wrong(body: bytes, fragment: str) -> None:
    with pytest.raises(BadMessage, match=None) as info:
        parse_message(body)
    assert fragment in str(info.value)


def test_a_full_batch_message_fits_a_storage_queue_message() -> None:
    reports = FakeReports()
    long_links = [link(f"sub_{'x' * 40}{n:05d}", "enterprise", P0, P1, customer=f"cus_{'y' * 30}{n}")
                  for n in range(2000)]
    for lk in long_links:
        reports.add(lk.apim_subscription_id, P0 + 1, success=10**12, blocked=10**12, failed=10**12)
    for batch in _push(long_links, reports, batch_size=10_000).plan_batches(P0 + DAY):
        encoded = len(batch_message(batch)) * 4 / 3  # base64, as the Functions queue trigger expects
        assert encoded < 64 * 1024
        assert parse_message(batch_message(batch)) == batch
    assert Period(P0, P1).end == P1
