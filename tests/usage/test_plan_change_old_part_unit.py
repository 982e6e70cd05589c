"""An upgrade's old product, over fakes of the push's ports: its part of the period keeps only the share of
its included calls that the part is of the period, as its fee does (issue 22's review: 100,000 Standard
calls in the first hour, then an upgrade, were billed nearly nothing). The pushes before the change bill
with all the included calls; the report up to the change sends the rest of the part's overage, once."""

from __future__ import annotations

import pytest

from billing.model_loader import load_models
from billing.pricing import LineKind, included_calls_for_part, part_product, part_quote
from billing.usage.batches import PlanChangeRequest, batch_message, parse_message
from billing.usage.confirm import parse_identifier
from billing.usage.final_invoice import report_old_part
from billing.usage.plan import plan_step
from billing.usage.plan_change import run_plan_change
from billing.usage.ports import SendResult
from billing.usage.push import UsagePush
from billing.usage.runner import run_in_process
from billing.usage.windows import Period
from tests.fakes import FakeLinks
from tests.usage.fakes import FakeMeter, FakeReports, FakeWatermarks, link

MODELS = load_models()
P0, P1 = 1_767_225_600, 1_769_904_000  # January 2026: 31 days, 2,678,400 s
HOUR, LAG = 3600, 1800
CHANGED = P0 + HOUR  # the upgrade to Pro, an hour into the period
SID = "sub_u1"


class Retirer:
    """Stripe's metadata naming the old metered item to retire, and its removal."""

    def __init__(self) -> None:
        self.retiring: tuple[str, int] | None = ("si_old", CHANGED)
        self.removed: list[str] = []

    def retiring_item(self, subscription_id: str) -> tuple[str, int] | None:
        return self.retiring

    def retire_usage_item(self, subscription_id: str, item_id: str) -> None:
        self.removed.append(item_id)
        self.retiring = None


def test_the_old_products_part_is_closed_with_its_share_of_the_included_calls_once() -> None:
    standard = MODELS.product("standard")
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = FakeLinks([link(SID, "standard", P0, P1)])
    push = UsagePush(MODELS, reports, meter, marks, links, lag_seconds=LAG, counts=meter)
    run_in_process(push, P0 + 1 + LAG)  # the first run opens the window
    reports.add(SID, P0 + 60, success=100_000)
    reports.add(SID, P0 + 120, success=300)
    run_in_process(push, P0 + 1800 + LAG)  # the regular push: Standard with all its 100,000 included calls
    assert meter.total(SID) == 300
    reports.add(SID, P0 + 3000, success=200)  # before the change, not pushed yet
    # The upgrade: the link names Pro from CHANGED, Standard before it (billing.portal.plan_change).
    upgraded = link(SID, "pro", P0, P1, product_since=CHANGED, previous_product_id="standard", previous_since=0)
    links.rows[SID] = (upgraded, "etag-upgraded")

    request = PlanChangeRequest(SID, "standard", Period(P0, P1), 0, CHANGED, "si_old")
    retirer = Retirer()
    summary = run_plan_change(push, request, retirer)
    # By hand: [P0, P0 + 1 h) is 3,600 / 2,678,400 of January, so Standard keeps 100,000 x 3,600 / 2,678,400
    # = 134.4 -> 134 included calls. Its 100,500 calls are 100,366 beyond them; 300 were sent before the
    # change (beyond all 100,000), so the report up to the change sends 100,366 - 300 = 100,066 more.
    assert (summary.events_sent, summary.calls_reported) == (1, 100_066)
    assert meter.total(SID) == 100_366
    assert retirer.removed == ["si_old"]
    assert meter.kept[-1].timestamp == CHANGED - 1  # inside the part, on the invoice that closes it

    # Replayed (the message again, the period's closing safety net, a retry): nothing more.
    retirer.retiring = ("si_old", CHANGED)
    again = run_plan_change(push, request, retirer)
    assert (again.events_sent, again.calls_reported) == (0, 0)
    assert report_old_part(push, SID, Period(P0, P1), P1 + LAG).events_sent == 0
    assert meter.total(SID) == 100_366
    assert len(meter.kept) == 2

    # What the meter has is the pricing engine's quote of the part: 100,366 calls at 0.1 cent = 10,036.6 ->
    # 10,037 cents; the fee 8,995 less the credit for 743 of 744 hours (8,982.9 -> 8,983) = 12 cents.
    part = part_quote(standard, 100_500, P0, P1, since=P0, until=CHANGED)
    lines = {line.kind: line for line in part.lines}
    assert (lines[LineKind.USAGE].quantity, lines[LineKind.USAGE].amount) == (100_366, 10_037)
    assert lines[LineKind.FLAT_FEE].amount == 12


def test_late_calls_of_the_old_part_after_it_closed_are_billed_at_the_share() -> None:
    """Calls of [start, change) that APIM shows only after the part was closed (the period's closing report
    then finds them): billed beyond the part's share, not measured against the full included calls again."""
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    upgraded = link(SID, "pro", P0, P1, product_since=CHANGED, previous_product_id="standard", previous_since=0)
    push = UsagePush(MODELS, reports, meter, marks, FakeLinks([upgraded]), lag_seconds=LAG, counts=meter)
    reports.add(SID, P0 + 60, success=1_000)
    assert report_old_part(push, SID, Period(P0, P1), CHANGED + LAG).calls_reported == 866  # 1,000 - 134
    reports.add(SID, P0 + 90, success=500)  # seen late
    # 1,500 - 134 = 1,366 in all: 500 more (not 1,366 - 0, as if the 866 had been sent beyond 100,000).
    assert report_old_part(push, SID, Period(P0, P1), P1 + LAG).calls_reported == 500
    assert meter.total(SID) == 1_366


def test_a_new_products_part_and_a_whole_period_are_billed_as_before() -> None:
    standard, pro = MODELS.product("standard"), MODELS.product("pro")
    # The new product's part [change, end): the share of the time left, as before the old part's rule.
    assert included_calls_for_part(pro, P0, P1, CHANGED) == included_calls_for_part(pro, P0, P1, CHANGED, P1)
    assert included_calls_for_part(pro, P0, P1, CHANGED) == 500_000 * (P1 - CHANGED) // (P1 - P0) == 499_327
    # A whole period: every included call, whether `until` is given or not.
    assert part_product(standard, P0, P1, P0) is standard
    assert part_product(standard, P0, P1, P0, P1) is standard
    assert part_product(standard, P0, P1, 0, P1 + 10) is standard
    # A part with no time: none.
    assert included_calls_for_part(standard, P0, P1, CHANGED, CHANGED) == 0


def test_plan_step_measures_what_was_reported_with_the_product_it_was_reported_with() -> None:
    standard = MODELS.product("standard")
    share = part_product(standard, P0, P1, P0, CHANGED)
    assert share.included_calls == 134
    step = plan_step(
        subscription_id=SID,
        customer_id="cus_1",
        product=share,
        period_start=P0,
        period_end=P1,
        cumulative=100_500,
        reported=100_300,
        window_end=CHANGED,
        reported_product=standard,
    )
    assert step.event is not None
    assert step.event.value == 100_366 - 300
    assert step.reported == 100_500  # the watermark stays a call count


def test_a_batch_message_keeps_the_parts_end() -> None:
    upgraded = link(SID, "pro", P0, P1, product_since=CHANGED, previous_product_id="standard", previous_since=0)
    reports = FakeReports()
    reports.add(SID, P0 + 60, success=5)
    push = UsagePush(MODELS, reports, FakeMeter(), FakeWatermarks(), FakeLinks([upgraded]), lag_seconds=LAG)
    batch = push.closing_batch(SID, Period(P0, P1), CHANGED, until=CHANGED, part=("standard", P0))
    assert batch is not None
    assert batch.items[0].until == CHANGED
    assert parse_message(batch_message(batch)) == batch
    # The new product's part ends with the period: no end of its own, as before.
    closing = push.closing_batch(SID, Period(P0, P1), P1)
    assert closing is not None
    assert (closing.items[0].product_id, closing.items[0].until) == ("pro", None)


class Crash(Exception):
    pass


def _crash(_: SendResult) -> None:
    raise Crash


def test_the_parts_closing_left_pending_and_lost_is_made_good_by_count_a_day_later_once() -> None:
    """The job sent the part's closing event, died before recording it, and Stripe lost it; the job never ran
    again. A day on (Stripe no longer drops a repeated identifier), the period's closing report finds it
    pending and settles it by Stripe's count, against the part's share of the included calls."""
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    upgraded = link(SID, "pro", P0, P1, product_since=CHANGED, previous_product_id="standard", previous_since=0)
    links = FakeLinks([upgraded])
    reports.add(SID, P0 + 60, success=100_000)
    crashing = UsagePush(MODELS, reports, meter, marks, links, lag_seconds=LAG, counts=meter, after_send=_crash)
    meter.lose.add(f"cus_{SID}")
    with pytest.raises(Crash):
        run_plan_change(crashing, PlanChangeRequest(SID, "standard", Period(P0, P1), 0, CHANGED, "si_old"), Retirer())
    meter.lose.clear()
    meter.forget_identifiers()
    assert marks.get(SID, P0).pending is not None
    push = UsagePush(MODELS, reports, meter, marks, links, lag_seconds=LAG, counts=meter)
    for now in (P1 + LAG, P1 + LAG + 600):  # twice: still once
        assert report_old_part(push, SID, Period(P0, P1), now).failed == 0
    assert meter.total(SID) == 100_000 - 134  # by hand: the first hour's 134 of 100,000 included (above)
    assert marks.get(SID, P0).pending is None


def test_an_upgrade_right_after_a_push_sends_the_parts_overage_under_an_identifier_of_its_own() -> None:
    """No call between the last push and the change: the part's closing has the push's cumulative count, and
    under the push's identifier Stripe would drop it as a duplicate (the leak again)."""
    reports, meter, marks = FakeReports(), FakeMeter(), FakeWatermarks()
    links = FakeLinks([link(SID, "standard", P0, P1)])
    push = UsagePush(MODELS, reports, meter, marks, links, lag_seconds=LAG, counts=meter)
    run_in_process(push, P0 + 1 + LAG)
    reports.add(SID, P0 + 60, success=100_300)
    run_in_process(push, P0 + 1800 + LAG)
    assert [e.identifier for e in meter.kept] == [f"{SID}:{P0}:100300"]
    links.rows[SID] = (link(SID, "pro", P0, P1, product_since=CHANGED, previous_product_id="standard"), "e2")
    retirer = Retirer()
    summary = run_plan_change(push, PlanChangeRequest(SID, "standard", Period(P0, P1), 0, CHANGED, "si_old"), retirer)
    assert summary.calls_reported == 100_300 - 134 - 300  # by hand: 100,166 beyond the hour's 134, 300 sent
    assert [e.identifier for e in meter.kept] == [f"{SID}:{P0}:100300", f"p:{SID}:{P0}:100300"]
    assert meter.total(SID) == 100_166
    assert parse_identifier(meter.kept[-1].identifier) == (SID, P0)
