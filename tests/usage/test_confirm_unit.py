"""Confirmed deliveries over fakes of the push's own ports: what Stripe lost is made up once, what is
pending is retried within minutes, and an event near the end of Stripe's de-duplication window is
settled by Stripe's count, never resent blindly.

The fake meter behaves as Stripe's v2 stream does where it matters here: it accepts events it later
drops (asynchronous validation), drops a repeated identifier only while it remembers it, and reads
back what it counted in whole minutes (the meter event summaries' bounds).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from billing.catalog_names import meter_event_name
from billing.model_loader import load_models
from billing.usage.batches import BadMessage, ConfirmRequest, batch_message, closing_message, parse_message
from billing.usage.closing import report_closing_usage
from billing.usage.confirm import parse_identifier, repair_identifier
from billing.usage.meter_errors import periods_to_confirm
from billing.usage.plan import MeterEvent
from billing.usage.ports import SendResult
from billing.usage.push import UsagePush
from billing.usage.runner import handle_message, run_in_process
from tests.fakes import FakeLinks
from tests.usage.fakes import FakeMeter, FakeReports, FakeWatermarks, link

MODELS = load_models()
DAY = 86_400
P0 = 1_750_000_000  # 40 s past a whole minute, as a real period start usually is
P1 = P0 + 30 * DAY
LAG = 1800


class Crash(Exception):
    pass


class Later:
    """The queue's delayed messages (`send_later`): what was scheduled, and after how long."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []

    def __call__(self, body: bytes, seconds: int) -> None:
        self.sent.append((body, seconds))

    def take(self) -> list[tuple[bytes, int]]:
        taken, self.sent = self.sent, []
        return taken


class CatchingUp:
    """Summaries that miss the newest events at the first read and have them at the next."""

    def __init__(self, meter: FakeMeter) -> None:
        self.meter, self.reads = meter, 0

    def counted(self, customer_id: str, event_name: str, start: int, end: int) -> int:
        self.reads += 1
        full = self.meter.counted(customer_id, event_name, start, end)
        return 0 if self.reads == 1 else full


class FrozenCounts:
    """Summaries that have not caught up yet: the same count whatever was sent since."""

    def __init__(self, value: int) -> None:
        self.value = value

    def counted(self, customer_id: str, event_name: str, start: int, end: int) -> int:
        return self.value


def _push(
    meter: FakeMeter,
    reports: FakeReports,
    marks: FakeWatermarks,
    sids: tuple[str, ...] = ("sub_a",),
    product: str = "payg",
    **changes: Any,
) -> UsagePush:
    """The push over the fakes, Stripe's summaries read from the fake meter unless `changes` say otherwise."""
    links = FakeLinks(link(sid, product, P0, P1) for sid in sids)
    push = UsagePush(MODELS, reports, meter, marks, links, lag_seconds=LAG, counts=meter)
    return dataclasses.replace(push, **changes)


def _parts() -> tuple[FakeMeter, FakeReports, FakeWatermarks]:
    return FakeMeter(), FakeReports(), FakeWatermarks()


def _closing(push: UsagePush, later: Later, at: int) -> None:
    handle_message(
        push, closing_message("sub_a", P0, P1), lambda b: None, send_later=later, confirm_delay=900, now=lambda: at
    )


def _run_scheduled(push: UsagePush, later: Later, at: int) -> list[tuple[ConfirmRequest, int]]:
    """Deliver every scheduled message once (as the queue does when it becomes visible)."""
    ran = []
    for body, delay in later.take():
        request = parse_message(body)
        assert isinstance(request, ConfirmRequest)
        handle_message(push, body, lambda b: None, send_later=later, confirm_delay=900, now=lambda: at)
        ran.append((request, delay))
    return ran


def test_calls_the_stream_accepted_and_then_dropped_are_billed_once_after_the_closing_report() -> None:
    meter, reports, marks = _parts()
    push = _push(meter, reports, marks)
    run_in_process(push, P0 + 1 + LAG)  # adopts
    meter.lose.add("cus_sub_a")  # e.g. the meter was deactivated by mistake: the stream still answers 200
    reports.add("sub_a", P0 + 100, success=1_000)
    assert run_in_process(push, P0 + DAY).calls_reported == 1_000  # the app believes Stripe has them
    meter.lose.clear()  # the operator fixed it
    reports.add("sub_a", P1 - 600, success=234)
    later = Later()
    _closing(push, later, P1)
    assert meter.total() == 234  # without a confirmation, 1,000 calls would never be billed
    ((body, delay),) = later.sent
    (ran,) = _run_scheduled(push, later, P1 + delay)
    assert (ran[0].subscription_id, ran[0].period_start) == ("sub_a", P0)
    assert meter.total() == 234  # one read of a shortfall is not enough: summaries are eventually consistent
    ((_, second),) = later.sent
    _run_scheduled(push, later, P1 + delay + second)  # the second read agrees: sent
    assert delay + second < 3600  # before Stripe finalises the invoice, an hour after the period ends
    assert meter.total() == 1_234  # payg bills every call: the period's calls, once
    repair = meter.kept[-1]
    assert (repair.identifier, repair.value) == (repair_identifier("sub_a", P0, 1_234), 1_000)
    assert P0 <= repair.timestamp < P1  # billed on this period's invoice
    # Confirming again changes nothing, and nothing more is scheduled.
    handle_message(push, body, lambda b: None, send_later=later, now=lambda: P1 + 2 * delay)
    assert (meter.total(), later.sent) == (1_234, [])
    # Summaries are read in whole minutes (P0 and P1 are 40 s past one), from P0's minute to P1's.
    assert {(start, end) for _, _, start, end in meter.summary_reads} == {(P0 - 40, P1 - 40)}


def test_a_repair_confirmed_again_before_stripe_counted_it_is_dropped_as_a_duplicate() -> None:
    meter, reports, marks = _parts()
    run_in_process(_push(meter, reports, marks), P0 + 1 + LAG)
    meter.lose.add("cus_sub_a")
    reports.add("sub_a", P0 + 100, success=500)
    run_in_process(_push(meter, reports, marks), P0 + DAY)
    meter.lose.clear()
    lagging = _push(meter, reports, marks, counts=FrozenCounts(0))  # Stripe's summaries lag behind
    body = b'{"kind":"confirm","subscription_id":"sub_a","period_start":%d,"seen":0}' % P0
    for _ in range(3):  # reads that agree on 0, before Stripe counted the repair the first one sent
        handle_message(lagging, body, lambda b: None, now=lambda: P0 + DAY + 600)
    assert meter.total() == 500


def test_stripe_counting_more_than_was_reported_is_reported_and_nothing_is_sent() -> None:
    meter, reports, marks = _parts()
    push = _push(meter, reports, marks)
    run_in_process(push, P0 + 1 + LAG)
    reports.add("sub_a", P0 + 100, success=40)
    run_in_process(push, P0 + DAY)
    stray = MeterEvent("someone-else", meter_event_name("payg"), "cus_sub_a", 7, P0 + 3_600, "sub_a")
    meter.kept.append(stray)  # sent by another tool for the same customer and meter
    requests = meter.requests
    summary = handle_message(
        push,
        b'{"kind":"confirm","subscription_id":"sub_a","period_start":%d}' % P0,
        lambda b: None,
        now=lambda: P0 + DAY,
    )
    assert summary.failed == 1
    assert "expected 40, Stripe counted 47" in summary.failures[0]
    assert meter.requests == requests


def test_an_event_left_pending_is_retried_within_minutes_not_at_the_next_daily_run() -> None:
    meter, reports, marks = _parts()
    push = _push(meter, reports, marks)
    run_in_process(push, P0 + 1 + LAG)
    reports.add("sub_a", P0 + 100, success=300)
    (batch,) = push.plan(P0 + DAY).batches
    meter.refuse.add("cus_sub_a")  # Stripe unavailable for this customer's events
    later = Later()
    summary = handle_message(push, batch_message(batch), lambda b: None, send_later=later, confirm_delay=900)
    assert summary.failed == 1
    ((body, delay),) = later.sent
    assert delay <= 15 * 60
    assert parse_message(body) == ConfirmRequest("sub_a", P0, 1)
    # Still refused at the first retry: tried again, later.
    _run_scheduled(push, later, P0 + DAY + delay)
    ((_, second),) = later.sent
    assert second > delay
    meter.refuse.clear()
    _run_scheduled(push, later, P0 + DAY + delay + second)
    assert meter.total() == 300
    assert marks.get("sub_a", P0).pending is None
    # The resent event is compared once Stripe has processed it; equal, so nothing more.
    assert len(_run_scheduled(push, later, P0 + DAY + 3_600)) == 1
    assert later.sent == []
    assert meter.total() == 300


def test_retries_stop_after_the_last_delay_and_the_daily_run_resends() -> None:
    meter, reports, marks = _parts()
    push = _push(meter, reports, marks)
    run_in_process(push, P0 + 1 + LAG)
    reports.add("sub_a", P0 + 100, success=30)
    meter.refuse.add("cus_sub_a")
    later = Later()
    (batch,) = push.plan(P0 + DAY).batches
    handle_message(push, batch_message(batch), lambda b: None, send_later=later, confirm_delay=900)
    rounds, at = 0, P0 + DAY
    while later.sent:
        rounds += 1
        at += later.sent[0][1]
        _run_scheduled(push, later, at)
        assert rounds < 20, "retries must end"
    total_delay = at - (P0 + DAY)
    assert total_delay < DAY  # all within the day, before the next daily run
    meter.refuse.clear()
    run_in_process(push, P0 + DAY + 3_600)  # within Stripe's window: resent as it is
    assert meter.total() == 30


def _crash(result: SendResult) -> None:
    raise Crash


def test_a_pending_event_stripe_has_is_not_resent_after_the_deduplication_window() -> None:
    meter, reports, marks = _parts()
    run_in_process(_push(meter, reports, marks), P0 + 1 + LAG)
    reports.add("sub_a", P0 + 100, success=700)
    with pytest.raises(Crash):  # Stripe has the event; the answer never came back
        run_in_process(_push(meter, reports, marks, after_send=_crash), P0 + DAY)
    assert meter.total() == 700
    meter.forget_identifiers()  # a day on, Stripe may no longer drop a repeated identifier
    summary = run_in_process(_push(meter, reports, marks), P0 + 2 * DAY + LAG)
    assert (summary.recovered, summary.failed) == (1, 0)
    assert meter.total() == 700  # a blind resend would have billed 1,400 calls
    assert marks.get("sub_a", P0).pending is None


def test_a_pending_event_stripe_lost_is_sent_once_after_the_deduplication_window() -> None:
    meter, reports, marks = _parts()
    run_in_process(_push(meter, reports, marks), P0 + 1 + LAG)
    reports.add("sub_a", P0 + 100, success=700)
    meter.lose.add("cus_sub_a")
    with pytest.raises(Crash):
        run_in_process(_push(meter, reports, marks, after_send=_crash), P0 + DAY)
    meter.lose.clear()
    meter.forget_identifiers()
    reports.add("sub_a", P0 + DAY + 100, success=5)
    for as_of in (P0 + 2 * DAY + LAG, P0 + 2 * DAY + LAG + 600):  # run twice: still once
        run_in_process(_push(meter, reports, marks), as_of)
    assert meter.total() == 705
    assert marks.get("sub_a", P0).reported == 705


def test_without_meter_summaries_an_old_pending_event_stays_pending_and_is_named() -> None:
    meter, reports, marks = _parts()
    run_in_process(_push(meter, reports, marks), P0 + 1 + LAG)
    reports.add("sub_a", P0 + 100, success=9)
    with pytest.raises(Crash):
        run_in_process(_push(meter, reports, marks, after_send=_crash), P0 + DAY)
    summary = run_in_process(_push(meter, reports, marks, counts=None), P0 + 3 * DAY)
    assert summary.failed == 1
    assert "too old to resend blindly" in summary.failures[0]
    assert marks.get("sub_a", P0).pending is not None
    assert meter.total() == 9


def test_identifiers_name_their_subscription_and_period() -> None:
    assert parse_identifier("sub_1:1750000000:1234") == ("sub_1", P0)
    assert parse_identifier(repair_identifier("sub_1", P0, 99)) == ("sub_1", P0)
    assert parse_identifier("a:b:c:1750000000:5") == ("a:b:c", P0)  # colons in an id are kept
    assert parse_identifier("u:" + "0" * 64) is None  # hashed: too long to carry its names
    assert parse_identifier("sub_1:x:5") is None
    assert parse_identifier(":1:2") is None


def test_an_error_report_names_the_periods_of_its_sample_errors() -> None:
    event = {
        "data": {
            "reason": {
                "error_count": 4,
                "error_types": [
                    {
                        "code": "archived_meter",
                        "error_count": 3,
                        "sample_errors": [
                            {"error_message": "No active meter", "request": {"identifier": f"sub_1:{P0}:100"}},
                            {"error_message": "No active meter", "request": {"identifier": f"sub_1:{P0}:250"}},
                            {
                                "error_message": "No active meter",
                                "request": {"identifier": repair_identifier("sub_2", P1, 5)},
                            },
                        ],
                    },
                    {
                        "code": "meter_event_customer_not_found",
                        "error_count": 1,
                        "sample_errors": [
                            {"error_message": "No such customer", "request": {"identifier": "made-elsewhere"}}
                        ],
                    },
                    {"code": "no_samples", "error_count": 0},
                ],
            }
        }
    }
    assert periods_to_confirm(event) == {("sub_1", P0), ("sub_2", P1)}
    assert periods_to_confirm({"data": {}}) == set()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"kind":"confirm","subscription_id":"s","period_start":1,"attempt":-1}', "'attempt' must be a whole number"),
        (b'{"kind":"confirm","subscription_id":"s","period_start":1,"attempt":true}', "'attempt'"),
        (b'{"kind":"confirm","subscription_id":"","period_start":1}', "'subscription_id'"),
        (b'{"kind":"confirm","subscription_id":"s"}', "'period_start'"),
    ],
)
def test_bad_confirm_messages_say_what_is_wrong(body: bytes, fragment: str) -> None:
    with pytest.raises(BadMessage, match=fragment):
        parse_message(body)


def test_a_confirmation_for_a_link_that_is_gone_is_skipped() -> None:
    meter, reports, marks = _parts()
    push = _push(meter, reports, marks)
    summary = handle_message(
        push, b'{"kind":"confirm","subscription_id":"sub_gone","period_start":1}', lambda b: None, now=lambda: P0
    )
    assert (summary.skipped, summary.failed, meter.requests) == (1, 0, 0)


def test_a_cancel_in_the_periods_first_minute_is_read_back_and_not_repaired() -> None:
    meter, reports, marks = _parts()
    push = _push(meter, reports, marks)
    reports.add("sub_a", P0 + 5, success=12)
    report_closing_usage("sub_a", P0, P1, push, now=P0 + 10)  # cancelled 10 s into the period
    (event,) = meter.kept
    assert event.timestamp < P0 + 10  # before the cancel, so on the final invoice
    handle_message(
        push,
        b'{"kind":"confirm","subscription_id":"sub_a","period_start":%d}' % P0,
        lambda b: None,
        now=lambda: P0 + 900,
    )
    assert meter.total() == 12


def test_a_shortfall_that_a_second_read_does_not_confirm_sends_nothing() -> None:
    meter, reports, marks = _parts()
    push = _push(meter, reports, marks)
    run_in_process(push, P0 + 1 + LAG)
    reports.add("sub_a", P0 + 100, success=80)
    run_in_process(push, P0 + DAY)
    slow = _push(meter, reports, marks, counts=CatchingUp(meter))  # still processing at the first read
    later = Later()
    handle_message(
        slow,
        b'{"kind":"confirm","subscription_id":"sub_a","period_start":%d}' % P0,
        lambda b: None,
        send_later=later,
        confirm_delay=900,
        now=lambda: P0 + DAY,
    )
    assert len(later.sent) == 1  # looked short: read again later
    _run_scheduled(slow, later, P0 + DAY + 300)
    assert (meter.total(), later.sent) == (80, [])
