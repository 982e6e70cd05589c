"""The demo's scenario (the same code as `make demo`, smaller volumes) and what its report promises."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from billing.cli import main as billing_main
from demo.report import ConsumerResult, render_html, render_terminal
from demo.scenario import SMALL_PLAN, Demo, demo_models_file
from devstack.stack import LocalStack, StackOptions

pytestmark = pytest.mark.storage


@pytest.fixture(scope="module")
def demo_run() -> Iterator[tuple[Demo, list[ConsumerResult]]]:
    with (
        tempfile.TemporaryDirectory() as workdir,
        LocalStack(StackOptions(run_queue_workers=False, models_file=demo_models_file(Path(workdir)))) as stack,
    ):
        demo = Demo(stack, SMALL_PLAN, say=lambda _: None)
        yield demo, demo.run()


def test_every_consumers_invoice_equals_its_quote(demo_run: tuple[Demo, list[ConsumerResult]]) -> None:
    _, results = demo_run
    assert [r.product_id for r in results] == [
        f"{p.product_id}>{p.upgrades_to}" if p.upgrades_to else p.product_id for p in SMALL_PLAN
    ]
    for result in results:
        assert result.invoice_total == result.quote_total, render_terminal([result])
    # Amounts worked out by hand from the price list, for the calls the plan makes; every live paid
    # consumer also makes 5 calls in the last seconds of the period (billed by the closing report).
    totals = {r.product_id: r.invoice_total for r in results}
    assert totals == {
        "free": 0,
        "developer": 201,  # 1,105 calls: 1,005 beyond the 100 free at 0.2 cents
        "payg": 150,  # 1,000 calls at 0.15 cents, billed on the final invoice of the cancellation
        "standard": 8_995 + 101,  # flat fee + 1,005 calls beyond 100,000 at 0.1 cents (100.5 -> 101, half up)
        "enterprise": 74_995 * 2,  # 1,500,015 calls: the block paid in advance and one started block
        "basic": 0 + 1_495,  # a 14-day trial (USD 0 at Checkout, its calls never billed), then the first month
        # Upgraded half-way through the period: Standard's fee for the first half (8,995 - 4,498 credited, half
        # up) and its 100,500 calls beyond half of its 100,000 included (50,000) at 0.1 cent (5,050); Pro's fee
        # for the second half (22,498) and its 300,155 calls beyond half of its 500,000 included at 0.06 cent
        # (3,009.3). Each part keeps the share of its product's included calls that it keeps of its fee.
        "standard>pro": (8_995 - 4_498) + 5_050 + 22_498 + 3_009,
    }


def test_blocked_calls_are_counted_and_never_billed(demo_run: tuple[Demo, list[ConsumerResult]]) -> None:
    _, results = demo_run
    by_product = {r.product_id: r for r in results}
    free, developer = by_product["free"], by_product["developer"]
    assert (free.successful_calls, free.blocked_calls) == (100, 5)  # quota of 100 a month
    assert developer.blocked_calls == 10  # 110 calls in a burst, 100 a minute allowed
    # Billed calls are the successful ones: the developer's invoice (201 cents, above) is for 1,105 calls.
    assert developer.successful_calls == 1_105


def test_suspended_key_refused_and_reactivated_key_accepted(demo_run: tuple[Demo, list[ConsumerResult]]) -> None:
    demo, _ = demo_run
    failing = next(s for s in demo.states if s.plan.renewal_fails)
    assert failing.key_status == {"suspended": 401, "reactivated": 200}
    cancelled = next(s for s in demo.states if s.plan.cancels_mid_period)
    assert cancelled.key_status == {"cancelled": 401}


def test_the_upgrade_keeps_the_key_and_lifts_the_rate_limit_at_once(
    demo_run: tuple[Demo, list[ConsumerResult]],
) -> None:
    demo, _ = demo_run
    upgraded = next(s for s in demo.states if s.plan.upgrades_to)
    assert upgraded.changed_at == sum(upgraded.changed_period) // 2
    # 150 calls in a burst, Standard allows 100 a minute: all answered 200 once on Pro (1,200 a minute).
    assert upgraded.gateway_outcomes == {200: 150 + 5}
    assert any("same key" in note for note in upgraded.notes)


def test_the_trial_consumer_had_a_working_key_a_reminder_and_a_first_charge_at_the_end(
    demo_run: tuple[Demo, list[ConsumerResult]],
) -> None:
    demo, results = demo_run
    trial = next(s for s in demo.states if s.plan.product_id == "basic")
    assert trial.key_status == {"trial": 200}
    (mail,) = [m for m in demo.stack.mail_server.messages(to=trial.consumer.email) if "free trial" in m.subject]
    assert mail.subject.startswith("Your free trial of Basic ends on ")
    (result,) = [r for r in results if r.product_id == "basic"]
    # What the report shows: the trial's USD 0.00 invoice line and the first month's fee at its end.
    assert [line.amount for line in result.invoice_lines] == [0, 1_495]
    assert any("14-day free trial" in note for note in result.notes)
    assert "Bruno (basic trial)" in render_terminal(results)


def test_report_page_shows_every_consumer_and_the_chart(demo_run: tuple[Demo, list[ConsumerResult]]) -> None:
    _, results = demo_run
    page = render_html(results)
    assert "<svg" in page
    assert f"{len(results)} of {len(results)} consumers were invoiced by Stripe exactly" in page
    for result in results:
        assert result.consumer in page


def test_the_operators_status_after_the_run_matches_it(
    demo_run: tuple[Demo, list[ConsumerResult]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert billing_main(["status", "--json"]) == 0  # nothing needs attention after a clean run
    status = json.loads(capsys.readouterr().out)
    assert status["attention"] == []
    assert status["unreadable"] == {}
    # One paid subscription per consumer; the one who cancelled is cancelled, the one whose renewal failed paid.
    assert status["subscriptions"] == {
        "developer": {"active": 1},
        "payg": {"cancelled": 1},
        "standard": {"active": 1},
        "enterprise": {"active": 1},
        "basic": {"active": 1},
        "pro": {"active": 1},
    }
    usage = {u["product_id"]: u for u in status["usage"]}
    assert set(usage) <= {"developer", "payg", "standard", "enterprise", "pro"}
    assert all(u["pending"] == 0 for u in usage.values())  # every event Stripe accepted is recorded
    assert [q["poison"] for q in status["queues"]] == [0, 0]
    assert status["open_invoices"]["count"] == 0  # the failed renewal was paid
    assert status["drift"] == []


def test_the_demo_bills_from_the_logs_on_a_v2_tier_without_a_reports_api() -> None:
    with LocalStack(StackOptions(run_queue_workers=False, apim_tier="StandardV2")) as stack:
        apim = stack.apim_emulator.management_client()
        with pytest.raises(HttpResponseError) as refused:  # as on real StandardV2: no built-in reports
            list(
                apim.reports.list_by_subscription(
                    stack.apim_emulator.resource_group,
                    stack.apim_emulator.service_name,
                    filter="timestamp ge datetime'2026-01-01T00:00:00'",
                )
            )
        assert refused.value.status_code == 400
        results = Demo(stack, SMALL_PLAN, say=lambda _: None).run()
    assert [r.invoice_total for r in results] == [r.quote_total for r in results]
    assert sum(r.invoice_total for r in results) > 0
