"""The pure planning of meter events: values, watermarks, identifiers, timestamps."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.model_loader import load_models
from billing.models import CallOutcome, PricingModel, Product, UsagePrice
from billing.usage.plan import (
    Step,
    UsageCounts,
    WindowAction,
    event_identifier,
    event_timestamp,
    plan_step,
    summary_window,
    window_action,
)
from billing.usage.windows import Period, ReportWindow, RunWindow, pieces, run_end, start_for, window_starts

MODELS = load_models()
PERIOD = (1_700_000_000, 1_702_592_000)  # 30 days


def _step(product: Product, counts: UsageCounts, reported: int, window_end: int = PERIOD[0] + 3600) -> Step:
    return plan_step(
        subscription_id="sub_123",
        customer_id="cus_1",
        product=product,
        period_start=PERIOD[0],
        period_end=PERIOD[1],
        cumulative=counts.billable(product),
        reported=reported,
        window_end=window_end,
    )


def _product(included: int = 0, outcomes: tuple[CallOutcome, ...] = (CallOutcome.SUCCESS,)) -> Product:
    model = PricingModel.FREEMIUM if included else PricingModel.METERED
    return Product(
        id="p",
        display_name="P",
        description="d",
        pricing_model=model,
        included_calls=included,
        usage_price=UsagePrice(amount=Decimal("0.10"), per_calls=100),
        billable_outcomes=outcomes,
        apis=("echo",),
    )


def test_first_push_beyond_included_sends_only_the_overage() -> None:
    step = _step(_product(included=100), UsageCounts(success=150), reported=0)
    assert step.event is not None
    assert step.event.value == 50
    assert step.reported == 150


def test_within_included_calls_no_event_but_watermark_advances() -> None:
    step = _step(_product(included=100), UsageCounts(success=60), reported=20)
    assert step.event is None
    assert step.reported == 60


def test_crossing_the_included_boundary_sends_the_part_beyond() -> None:
    step = _step(_product(included=100), UsageCounts(success=130), reported=90)
    assert step.event is not None
    assert step.event.value == 30


def test_blocked_and_other_calls_are_never_billed() -> None:
    step = _step(_product(), UsageCounts(success=5, blocked=1000, failed=7, other=3), reported=0)
    assert step.event is not None
    assert step.event.value == 5


def test_failed_calls_count_when_the_product_bills_them() -> None:
    product = _product(outcomes=(CallOutcome.SUCCESS, CallOutcome.FAILED))
    step = _step(product, UsageCounts(success=5, blocked=9, failed=7), reported=0)
    assert step.event is not None
    assert step.event.value == 12


def test_nothing_new_is_skipped_with_a_reason() -> None:
    step = _step(_product(), UsageCounts(success=40), reported=40)
    assert step.event is None
    assert step.reported == 40
    assert step.note


def test_a_shrinking_report_never_sends_a_negative_value() -> None:
    step = _step(_product(), UsageCounts(success=30), reported=40)
    assert step.event is None
    assert step.reported == 40


def test_flat_only_product_is_not_metered() -> None:
    step = _step(MODELS.product("basic"), UsageCounts(success=500), reported=0)
    assert step.event is None


def test_event_names_the_products_meter_and_customer() -> None:
    step = _step(MODELS.product("payg"), UsageCounts(success=10), reported=0)
    assert step.event is not None
    assert step.event.event_name == "apim_calls_payg"
    assert step.event.customer_id == "cus_1"


def test_identifier_is_deterministic_and_depends_on_the_cumulative_count() -> None:
    a = event_identifier("sub_1", 100, 5)
    assert a == event_identifier("sub_1", 100, 5)
    assert a != event_identifier("sub_1", 100, 6)
    assert a != event_identifier("sub_1", 200, 5)
    assert a != event_identifier("sub_2", 100, 5)


def test_long_identifiers_are_hashed_to_stripes_100_characters() -> None:
    long_sid = "s" * 120
    ident = event_identifier(long_sid, 1, 2)
    assert len(ident) <= 100
    assert ident == event_identifier(long_sid, 1, 2) != event_identifier(long_sid, 1, 3)


@pytest.mark.parametrize(
    ("window_end", "expected"),
    [
        (PERIOD[0] + 10, PERIOD[0] + 10),  # inside: the window's end
        # The period ends 20 s into a minute (1_702_592_000): events stay before that minute.
        (PERIOD[1], 1_702_591_979),  # closing report: the last second before the period's last minute
        (PERIOD[1] + 86_400, 1_702_591_979),  # a late push never lands in the next period
        (PERIOD[1] - 30, 1_702_591_970),  # a cancel in the minute before: its own time, not later
        (PERIOD[0] - 5, PERIOD[0]),
    ],
)
def test_timestamp_stays_inside_the_period(window_end: int, expected: int) -> None:
    assert event_timestamp(PERIOD[0], PERIOD[1], window_end) == expected


def test_summary_window_is_the_whole_minutes_the_period_touches_before_its_last() -> None:
    # 1_700_000_000 is 20 s into a minute: the window starts at that minute, ends at the last one's start.
    assert summary_window(*PERIOD) == (1_699_999_980, 1_702_591_980)
    assert summary_window(1_700_000_040, 1_700_003_640) == (1_700_000_040, 1_700_003_640)  # aligned already
    assert summary_window(1_700_000_010, 1_700_000_030) == (1_700_000_010, 1_700_000_030)  # inside one minute
    # Consecutive periods' windows never overlap.
    first, second = summary_window(100, 1_000_030), summary_window(1_000_030, 2_000_050)
    assert first[1] <= second[0]
    with pytest.raises(ValueError, match="must end after it starts"):
        summary_window(10, 10)


def test_bad_counts_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="success calls must be a whole number"):
        UsageCounts(success=-1)


METERED = [p for p in MODELS.products if p.is_metered]


@settings(max_examples=300, deadline=None)
@given(
    product=st.sampled_from(METERED),
    increments=st.lists(st.integers(min_value=0, max_value=400_000), min_size=1, max_size=12),
)
def test_any_split_of_a_periods_calls_reports_exactly_the_overage_of_the_total(
    product: Product, increments: list[int]
) -> None:
    # Independent expectation: the overage of the total is the calls beyond the included ones.
    total = sum(increments)
    expected = max(0, total - product.included_calls)
    reported, sent, seen = 0, 0, 0
    for inc in increments:
        seen += inc
        step = _step(product, UsageCounts(success=seen, blocked=inc), reported)
        if step.event is not None:
            assert step.event.value > 0
            sent += step.event.value
        assert step.reported == seen
        reported = step.reported
    assert sent == expected


@settings(max_examples=100, deadline=None)
@given(seen=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8))
def test_rereading_the_same_counts_sends_nothing_more(seen: list[int]) -> None:
    product = _product(included=50)
    reported, sent = 0, 0
    for cumulative in sorted(seen):
        for _ in range(2):  # the same report read twice (a retried message)
            step = _step(product, UsageCounts(success=cumulative), reported)
            sent += step.event.value if step.event else 0
            reported = step.reported
    assert sent == max(0, max(seen) - 50)


P = Period(*PERIOD)
H = 3600


@pytest.mark.parametrize(
    ("cursor", "run", "expected"),
    [
        (None, RunWindow(None, P.start + H), WindowAction.ADOPT),  # first run: nothing read
        (None, RunWindow(P.start - H, P.start + H), WindowAction.ADOPT),  # window starts before the period
        (None, RunWindow(P.start + H, P.start + 2 * H), WindowAction.COUNT),  # no row, window inside
        (P.start + H, RunWindow(P.start + H, P.start + 2 * H), WindowAction.COUNT),  # the next window
        (P.start + H, RunWindow(P.start + 3 * H, P.start + 4 * H), WindowAction.COUNT),  # after a gap
        (P.start + 2 * H, RunWindow(P.start + H, P.start + 3 * H), WindowAction.SKIP),  # overlaps what was counted
        (P.start + 2 * H, RunWindow(P.start + H, P.start + 2 * H), WindowAction.SKIP),  # counted already
        (P.start + H, RunWindow(None, P.start + 2 * H), WindowAction.SKIP),  # nothing read: keep the row
        (P.start + H, RunWindow(P.end - H, P.end + H), WindowAction.SKIP),  # reaches into the next period
        (None, RunWindow(P.start - 2 * H, P.start - H), WindowAction.SKIP),  # before the period
        (P.start + H, RunWindow(P.end - H, P.end), WindowAction.COUNT),  # up to the very end
    ],
)
def test_a_window_counts_only_inside_the_period_and_after_the_cursor(
    cursor: int | None, run: RunWindow, expected: WindowAction
) -> None:
    assert window_action(cursor, P, run) is expected


def test_a_run_reads_one_window_per_distinct_cursor_and_sums_the_pieces_from_each() -> None:
    end = 10_000
    assert run_end(11_800, 1800) == end
    with pytest.raises(ValueError, match="report lag"):
        run_end(11_800, -1)
    # Most subscriptions at 8,000 (the last run's end), two left behind by a failed run, one ahead.
    starts = window_starts([8_000, 8_000, 8_000, 5_000, 6_500, 12_000], end)
    assert starts == [5_000, 6_500, 8_000]
    assert pieces(starts, end) == [ReportWindow(5_000, 6_500), ReportWindow(6_500, 8_000), ReportWindow(8_000, end)]
    assert [start_for(c, starts) for c in (5_000, 6_500, 8_000)] == [5_000, 6_500, 8_000]
    # Beyond the limit, the oldest cursors start at the oldest kept one (their gap: the closing report).
    limited = window_starts([1_000, 2_000, 3_000, 4_000, 5_000], end, limit=2)
    assert limited == [4_000, 5_000]
    assert start_for(1_000, limited) == 4_000
    assert window_starts([], end) == []
