"""The cancellation's final invoice job and the report lag setting, with in-memory fakes (no stack)."""

from __future__ import annotations

import pytest

from billing.model_loader import load_models
from billing.usage.batches import BadMessage, ConfirmRequest, FinalRequest, final_message, parse_message
from billing.usage.final_invoice import UsageNotDelivered
from billing.usage.push import UsagePush
from billing.usage.runner import handle_message
from billing.usage.timing import closing_takes_seconds, lag_seconds_of
from billing.usage.windows import Period
from billing.usage.wiring import lag_seconds
from tests.fakes import FakeLinks
from tests.usage.fakes import FakeMeter, FakeReports, FakeWatermarks, link

MODELS = load_models()
P0, P1 = 1_767_225_600, 1_769_904_000  # January 2026
CANCEL = P0 + 10 * 86400  # ten days in


class Ender:
    """Stripe's cancel with a final invoice: records what was cancelled, and what Stripe had by then."""

    def __init__(self, meter: FakeMeter) -> None:
        self.meter = meter
        self.cancelled: list[tuple[str, int]] = []  # (subscription, calls Stripe had when cancelled)

    def cancel_with_final_invoice(self, subscription_id: str) -> None:
        self.cancelled.append((subscription_id, self.meter.total(subscription_id)))


def _push(meter: FakeMeter, reports: FakeReports, marks: FakeWatermarks) -> UsagePush:
    links = FakeLinks([link("sub_a", "payg", P0, P1)])
    return UsagePush(MODELS, reports, meter, marks, links, lag_seconds=1800, counts=meter)


def _run(push: UsagePush, ender: Ender, later: list[tuple[bytes, int]]) -> object:
    return handle_message(
        push,
        final_message("sub_a", P0, P1, CANCEL),
        lambda body: None,
        send_later=lambda body, seconds: later.append((body, seconds)),
        confirm_delay=900,
        ender=ender,
    )


def test_the_job_reports_the_calls_up_to_the_cancel_stamped_before_it_then_cancels_stripe() -> None:
    meter, reports, marks = FakeMeter(), FakeReports(), FakeWatermarks()
    reports.add("sub_a", P0 + 3600, success=1000)
    reports.add("sub_a", CANCEL - 2, success=200)  # the last calls before the key stopped
    ender, later = Ender(meter), list[tuple[bytes, int]]()  # (message, delay) sent for later
    push = _push(meter, reports, marks)
    _run(push, ender, later)
    # Stripe had every call (PAYG bills each one) before the cancel made the final invoice.
    assert ender.cancelled == [("sub_a", 1200)]
    (event,) = meter.kept
    assert event.timestamp == CANCEL - 1  # inside the final invoice, which ends at the cancel or later
    # Then the delivery is confirmed, as after every closing report.
    assert [(parse_message(body), seconds) for body, seconds in later] == [
        (ConfirmRequest("sub_a", P0, until=CANCEL), 900)
    ]
    # The message again (a retry, or a cancel submitted twice): nothing is reported twice.
    _run(push, ender, later)
    assert meter.total("sub_a") == 1200
    assert ender.cancelled == [("sub_a", 1200), ("sub_a", 1200)]


def test_a_shortfall_found_after_the_final_invoice_is_repaired_inside_it() -> None:
    meter, reports, marks = FakeMeter(lose_customers=["cus_sub_a"]), FakeReports(), FakeWatermarks()
    reports.add("sub_a", CANCEL - 30, success=700)
    ender, later = Ender(meter), list[tuple[bytes, int]]()  # (message, delay) sent for later
    push = _push(meter, reports, marks)
    _run(push, ender, later)  # Stripe's stream answered, then dropped the event in validation
    meter.lose.clear()
    wall = CANCEL + 1800  # the confirmation runs a quarter of an hour or more after the cancel
    for _ in range(2):  # a shortfall is repaired once two reads agree
        ((body, _delay),) = later
        later.clear()
        handle_message(
            push,
            body,
            lambda b: None,
            send_later=lambda b, s: later.append((b, s)),
            confirm_delay=900,
            now=lambda: wall,
        )
    (repair,) = meter.kept
    assert repair.value == 700
    # Stamped before the cancel, as the final invoice ends there or later: not at the wall clock's now.
    assert repair.timestamp == CANCEL - 1


def test_stripe_is_not_cancelled_before_it_has_the_usage() -> None:
    meter, reports, marks = FakeMeter(refuse_customers=["cus_sub_a"]), FakeReports(), FakeWatermarks()
    reports.add("sub_a", CANCEL - 60, success=500)
    ender, later = Ender(meter), list[tuple[bytes, int]]()  # (message, delay) sent for later
    push = _push(meter, reports, marks)
    with pytest.raises(UsageNotDelivered, match="sub_a"):
        _run(push, ender, later)
    assert ender.cancelled == []  # the final invoice would have been made without the calls
    meter.refuse.clear()  # Stripe takes it at the queue's next try
    _run(push, ender, later)
    assert ender.cancelled == [("sub_a", 500)]


def test_a_subscription_the_app_never_recorded_is_still_cancelled() -> None:
    meter = FakeMeter()
    push = UsagePush(MODELS, FakeReports(), meter, FakeWatermarks(), FakeLinks(), counts=meter)
    ender: Ender = Ender(meter)
    summary = handle_message(push, final_message("sub_a", P0, P1, CANCEL), lambda body: None, ender=ender)
    assert ender.cancelled == [("sub_a", 0)]
    assert summary.skipped == 1


def test_a_final_invoice_request_needs_a_way_to_cancel_in_stripe() -> None:
    meter = FakeMeter()
    push = _push(meter, FakeReports(), FakeWatermarks())
    with pytest.raises(RuntimeError, match="cancel the Stripe subscription"):
        handle_message(push, final_message("sub_a", P0, P1, CANCEL), lambda body: None)


def test_final_messages_round_trip_and_bad_ones_say_what_is_wrong() -> None:
    assert parse_message(final_message("sub_a", P0, P1, CANCEL)) == FinalRequest("sub_a", Period(P0, P1), CANCEL)
    with pytest.raises(BadMessage, match="cancel_at"):
        parse_message(b'{"kind": "final", "subscription_id": "sub_a", "period_start": 1, "period_end": 2}')
    with pytest.raises(BadMessage, match="must end after it starts"):
        parse_message(
            b'{"kind": "final", "subscription_id": "sub_a", "period_start": 2, "period_end": 2, "cancel_at": 2}'
        )


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("30", 1800),
        ("0", 0),
        ("0.05", 3),
        ("1.5", 90),
        (".5", 30),
        ("0.0001", 1),  # 0.006 s: rounded up, never shorter than the setting says
        ("10080", 7 * 86400),  # a week: the longest a queue message can be hidden
    ],
)
def test_the_report_lag_is_decimal_minutes_parsed_exactly(raw: str, seconds: int) -> None:
    assert lag_seconds_of(raw) == seconds
    assert lag_seconds({"USAGE_REPORT_LAG_MINUTES": raw}) == seconds


@pytest.mark.parametrize("raw", ["half an hour", "-1", "1e3", "NaN", "Infinity", "1,5", "0.5.1", "+3", "10081"])
def test_bad_report_lags_are_refused_naming_the_setting(raw: str) -> None:
    with pytest.raises(ValueError, match="USAGE_REPORT_LAG_MINUTES") as raised:
        lag_seconds({"USAGE_REPORT_LAG_MINUTES": raw})
    assert raw in str(raised.value)


def test_the_closing_report_takes_the_lag_then_the_confirmation_and_its_second_read() -> None:
    # Defaults: 30 min lag, 15 min to the confirmation, 5 more to a second read of a shortfall, and each
    # of those three queue messages up to a minute late (the queue trigger's polling): 53 minutes.
    assert closing_takes_seconds(30 * 60, 15 * 60) == 53 * 60
    assert lag_seconds({}) == 30 * 60  # the default when the setting is not set
