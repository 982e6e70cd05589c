"""Pure logic: Stripe state -> APIM state, event routing, and the sync service with in-memory fakes."""

from __future__ import annotations

from typing import Any

import pytest

from billing.access.deadline import Deadline, DeadlineExceeded
from billing.access.decisions import (
    AccessTarget,
    ApimState,
    ApimView,
    MetadataProblem,
    StripeState,
    UnknownStripeStatus,
    access_target,
    decide,
    plan_access,
)
from billing.access.ports import AccessPorts
from billing.access.routing import EventPlan, MalformedEvent, ReportClosingUsage, SyncSubscription, plan_event
from billing.access.sync import ConcurrentUpdates, sync_subscription
from billing.records import SubscriptionLink
from tests.access.fakes import FakeApim, FakeStripe, FakeUsage
from tests.fakes import FakeLinks

A, S, SU, C = ApimState.ACTIVE, ApimState.SUBMITTED, ApimState.SUSPENDED, ApimState.CANCELLED


# Stripe's documented statuses (docs.stripe.com/billing/subscriptions/overview#subscription-statuses)
# and what the revenue model says access must be for each.
@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (StripeState("incomplete", "open", True), S),  # first invoice not paid: no key yet
        (StripeState("incomplete", "open", False), S),
        (StripeState("active", "paid", True), A),
        (StripeState("trialing", "paid", False), A),
        (StripeState("active", "draft", False), A),  # next period's draft does not block access
        (StripeState("active", "open", False), A),  # finalised, not yet attempted
        (StripeState("active", "open", True), SU),  # attempted and still open: payment failed
        (StripeState("active", "uncollectible", True), SU),
        (StripeState("active", "void", False), A),
        (StripeState("past_due", "open", True), SU),
        (StripeState("unpaid", "open", True), SU),
        (StripeState("paused", None, False), SU),
        (StripeState("canceled", "paid", True, ended_at=1), C),
        (StripeState("incomplete_expired", "void", True), C),
        (StripeState("active", "paid", True, ended_at=1700000000), C),
        # Cancelled in the portal: Stripe keeps it until its final invoice, the key stays off meanwhile.
        (StripeState("active", "paid", True, access_ended=True), C),
        (StripeState("past_due", "open", True, access_ended=True), C),
    ],
)
def test_decide(state: StripeState, expected: ApimState) -> None:
    assert decide(state) is expected


def test_unknown_status_is_refused_not_guessed() -> None:
    with pytest.raises(UnknownStripeStatus, match="'frozen'"):
        decide(StripeState("frozen"))


META = {"apim_user_id": "ada", "apim_product_id": "standard", "apim_subscription_name": "my key"}


def test_access_target_checks_metadata_against_what_is_billed() -> None:
    assert access_target(META, frozenset({"apim-standard"})) == AccessTarget("ada", "standard", "my key")
    with pytest.raises(MetadataProblem, match="bills apim-basic"):
        access_target(META, frozenset({"apim-basic"}))
    with pytest.raises(MetadataProblem, match="lacks apim_user_id, apim_subscription_name"):
        access_target({"apim_product_id": "standard"}, frozenset({"apim-standard"}))
    with pytest.raises(MetadataProblem, match="longer than 100"):
        access_target({**META, "apim_subscription_name": "n" * 101}, frozenset({"apim-standard"}))


def test_plan_access() -> None:
    target = AccessTarget("ada", "standard", "k")
    assert plan_access(A, target, None).create
    assert not plan_access(C, target, None).changes_anything  # never create just to cancel
    assert plan_access(A, target, ApimView("suspended", "ada", "standard")).change_from == "suspended"
    assert not plan_access(A, target, ApimView("active", "ada", "standard")).changes_anything
    with pytest.raises(MetadataProblem, match="belongs to user 'eve'"):
        plan_access(A, target, ApimView("active", "eve", "standard"))


def _event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "type": event_type, "created": 100, "data": {"object": obj}}


def test_routing() -> None:
    invoice = {"object": "invoice", "parent": {"subscription_details": {"subscription": "sub_1"}}}
    assert plan_event(_event("invoice.paid", invoice)).actions == (SyncSubscription("sub_1"),)
    assert plan_event(_event("invoice.payment_failed", {"subscription": "sub_2"})).actions == (
        SyncSubscription("sub_2"),
    )
    cycle = {**invoice, "billing_reason": "subscription_cycle", "period_start": 10, "period_end": 20}
    assert plan_event(_event("invoice.created", cycle)).actions == (ReportClosingUsage("sub_1", 10, 20),)
    first = {**invoice, "billing_reason": "subscription_create", "period_start": 10, "period_end": 10}
    assert plan_event(_event("invoice.created", first)).actions == ()
    session = {"object": "checkout.session", "mode": "subscription", "subscription": "sub_3"}
    assert plan_event(_event("checkout.session.completed", session)).actions == (SyncSubscription("sub_3"),)
    assert plan_event(_event("customer.subscription.deleted", {"id": "sub_4"})).actions == (SyncSubscription("sub_4"),)
    assert "not handled" in plan_event(_event("charge.refunded", {"id": "ch_1"})).note
    with pytest.raises(MalformedEvent):
        plan_event({"id": "evt_1", "object": "event", "type": "invoice.paid"})


def test_invoice_created_carries_the_draft_window() -> None:
    invoice = {
        "object": "invoice",
        "id": "in_7",
        "parent": {"subscription_details": {"subscription": "sub_1"}},
        "billing_reason": "subscription_cycle",
        "period_start": 10,
        "period_end": 20,
        "created": 25,
        "automatically_finalizes_at": 3625,
    }
    assert plan_event(_event("invoice.created", invoice)).actions == (
        ReportClosingUsage("sub_1", 10, 20, "in_7", 25, 3625),
    )
    # Stripe's null (automatic advancement off): nothing to check.
    unscheduled = {**invoice, "automatically_finalizes_at": None}
    assert plan_event(_event("invoice.created", unscheduled)).actions == (
        ReportClosingUsage("sub_1", 10, 20, "in_7", 25, None),
    )


def test_plan_round_trips_through_the_queue_message() -> None:
    plan = EventPlan("evt_9", "invoice.created", 5, (SyncSubscription("sub_1"), ReportClosingUsage("sub_1", 1, 2)))
    assert EventPlan.from_json(plan.to_json()) == plan
    windowed = EventPlan("evt_9", "invoice.created", 5, (ReportClosingUsage("sub_1", 1, 2, "in_1", 3, 3603),))
    assert EventPlan.from_json(windowed.to_json()) == windowed
    with pytest.raises(MalformedEvent):
        EventPlan.from_json(b"{}")


def test_deadline() -> None:
    now = [0.0]
    deadline = Deadline(8.0, clock=lambda: now[0])
    assert deadline.step_timeout(5.0) == 5.0
    now[0] = 6.0
    assert deadline.step_timeout(5.0) == 2.0
    now[0] = 7.9
    with pytest.raises(DeadlineExceeded):
        deadline.step_timeout(5.0)


# ---- the sync service against in-memory fakes of the project's own ports -----------------------------
def _subscription(status: str, invoice_status: str = "paid", sub_id: str = "sub_1") -> dict[str, Any]:
    return {
        "id": sub_id,
        "status": status,
        "customer": "cus_1",
        "metadata": META,
        "ended_at": None,
        "latest_invoice": {"id": "in_1", "status": invoice_status, "attempted": True},
        "items": {
            "data": [
                {
                    "id": "si_flat",
                    "price": {"product": "apim-standard", "recurring": {"usage_type": "licensed"}},
                    "current_period_start": 1000,
                    "current_period_end": 2000,
                },
                {
                    "id": "si_usage",
                    "price": {"product": "apim-standard", "recurring": {"usage_type": "metered"}},
                    "current_period_start": 1000,
                    "current_period_end": 2000,
                },
            ]
        },
    }


def _ports(sub: dict[str, Any]) -> tuple[AccessPorts, FakeStripe, FakeApim, FakeLinks]:
    stripe, apim, links = FakeStripe(sub), FakeApim(), FakeLinks()
    return AccessPorts(stripe, apim, links, FakeUsage()), stripe, apim, links


def test_sync_creates_then_follows_stripe_and_records_the_link() -> None:
    ports, stripe, apim, links = _ports(_subscription("active"))
    result = sync_subscription("sub_1", ports, event_created=50)
    assert result.outcome == "changed"
    assert apim.writes == ["create active"]
    link = links.rows["sub_1"][0]
    assert (link.stripe_usage_item_id, link.current_period_start, link.current_period_end) == ("si_usage", 1000, 2000)
    assert (link.apim_user_id, link.product_id, link.stripe_customer_id) == ("ada", "standard", "cus_1")
    # The same state again: nothing written anywhere.
    etag = links.rows["sub_1"][1]
    assert sync_subscription("sub_1", ports, event_created=40).outcome == "unchanged"
    assert apim.writes == ["create active"]
    assert links.rows["sub_1"][1] == etag
    stripe.sub = _subscription("past_due", "open")
    sync_subscription("sub_1", ports, event_created=60)
    assert apim.writes == ["create active", "set suspended"]
    assert links.rows["sub_1"][0].stripe_state_at == 60


def test_a_lost_race_reads_stripe_again_and_the_newest_state_wins() -> None:
    ports, stripe, apim, links = _ports(_subscription("active"))
    sync_subscription("sub_1", ports, event_created=1)

    # While this handler (which read "active") is between APIM and the link, another handler
    # applies the newer "past_due" and writes the link first.
    def newer_handler() -> None:
        stripe.sub = _subscription("past_due", "open")
        sync_subscription("sub_1", ports, event_created=3)

    stripe.sub = _subscription("active", "paid")
    apim.subs["sub_1"] = ApimView("suspended", "ada", "standard")  # so this handler has work to do
    links.before_write.append(newer_handler)
    sync_subscription("sub_1", ports, event_created=2)
    assert apim.subs["sub_1"].state == "suspended"
    assert links.rows["sub_1"][0].stripe_status == "past_due"


def test_endless_races_give_up_for_a_retry() -> None:
    ports, _, apim, links = _ports(_subscription("active"))
    sync_subscription("sub_1", ports, event_created=1)
    apim.subs["sub_1"] = ApimView("suspended", "ada", "standard")

    class Racing(FakeLinks):
        def replace_if_unchanged(self, link: SubscriptionLink, etag: str) -> bool:
            return False

    racing = Racing()
    racing.rows = links.rows
    with pytest.raises(ConcurrentUpdates):
        sync_subscription("sub_1", AccessPorts(ports.stripe, apim, racing, ports.usage), event_created=2)


def test_link_for_another_user_is_a_metadata_problem_not_a_change() -> None:
    ports, stripe, apim, _ = _ports(_subscription("active"))
    sync_subscription("sub_1", ports, event_created=1)
    stripe.sub = {**_subscription("active"), "metadata": {**META, "apim_user_id": "eve"}}
    result = sync_subscription("sub_1", ports, event_created=2)
    assert result.outcome == "ignored"
    assert "user eve" in result.detail
    assert apim.writes == ["create active"]


def _next_period(sub: dict[str, Any]) -> dict[str, Any]:
    items = [{**i, "current_period_start": 2000, "current_period_end": 3000} for i in sub["items"]["data"]]
    return {**sub, "items": {"data": items}}


def test_the_quota_counter_restarts_when_stripe_starts_the_next_period_and_only_then() -> None:
    stripe, apim, links = FakeStripe(_subscription("active")), FakeApim(), FakeLinks()
    ports = AccessPorts(stripe, apim, links, FakeUsage(), quota_resets=frozenset({"standard"}))
    sync_subscription("sub_1", ports, event_created=1)
    sync_subscription("sub_1", ports, event_created=2)  # the same period again: the count goes on
    assert apim.writes == ["create active"]
    stripe.sub = _next_period(stripe.sub)
    sync_subscription("sub_1", ports, event_created=3)
    sync_subscription("sub_1", ports, event_created=4)  # a redelivered event: the link has the period now
    assert apim.writes == ["create active", "reset quota sub_1"]
    other_apim = FakeApim()
    other = AccessPorts(FakeStripe(_next_period(_subscription("active"))), other_apim, FakeLinks(), FakeUsage())
    sync_subscription("sub_1", other, event_created=5)
    assert "reset quota sub_1" not in other_apim.writes  # no quota: nothing to reset


def test_the_spending_limit_is_written_once_on_a_live_subscription() -> None:
    stripe, apim, links = FakeStripe(_subscription("active")), FakeApim(), FakeLinks()
    ports = AccessPorts(stripe, apim, links, FakeUsage(), spending_limits={"standard": 100_000})
    sync_subscription("sub_1", ports, event_created=1)
    assert stripe.thresholds == [("sub_1", 100_000)]
    stripe.sub = {**stripe.sub, "billing_thresholds": {"amount_gte": 100_000, "reset_billing_cycle_anchor": False}}
    sync_subscription("sub_1", ports, event_created=2)
    assert stripe.thresholds == [("sub_1", 100_000)]


def test_a_second_subscription_to_a_held_product_is_refused_at_its_first_grant() -> None:
    stripe, apim, links = FakeStripe(_subscription("active")), FakeApim(), FakeLinks()
    ports = AccessPorts(stripe, apim, links, FakeUsage())
    sync_subscription("sub_1", ports, event_created=1)
    stripe.sub = _subscription("active", sub_id="sub_2")  # a Checkout page kept open in another tab, paid
    result = sync_subscription("sub_2", ports, event_created=2)
    assert result.outcome == "ignored"
    assert "holds product standard already (sub_1)" in result.detail
    assert stripe.cancelled == ["sub_2"]
    assert "sub_2" not in apim.subs  # no key
    assert "sub_2" not in links.rows


def test_a_new_subscription_of_a_customer_who_owes_money_is_refused_at_its_first_grant() -> None:
    stripe, apim, links = FakeStripe(_subscription("active")), FakeApim(), FakeLinks()
    stripe.owed_by_others = 150_001
    result = sync_subscription("sub_1", AccessPorts(stripe, apim, links, FakeUsage()), event_created=1)
    assert result.outcome == "ignored"
    assert "owes 150001" in result.detail
    assert stripe.cancelled == ["sub_1"]
    assert apim.subs == {}
    # Debts do not take away access already granted (a failed renewal suspends by its own rule).
    stripe.owed_by_others, stripe.cancelled = 0, []
    sync_subscription("sub_1", AccessPorts(stripe, apim, links, FakeUsage()), event_created=2)
    stripe.owed_by_others = 10
    assert sync_subscription("sub_1", AccessPorts(stripe, apim, links, FakeUsage()), event_created=3).outcome == (
        "unchanged"
    )
    assert stripe.cancelled == []


def test_a_customer_with_a_final_invoice_to_come_gets_no_new_key() -> None:
    stripe, apim, links = FakeStripe(_subscription("active", sub_id="sub_new")), FakeApim(), FakeLinks()
    stripe.ending_others = ["sub_cancelled"]  # cancelled in the portal minutes ago, not yet invoiced
    result = sync_subscription("sub_new", AccessPorts(stripe, apim, links, FakeUsage()), event_created=1)
    assert result.outcome == "ignored"
    assert "final invoice to come for sub_cancelled" in result.detail
    assert stripe.cancelled == ["sub_new"]
    assert apim.subs == {}


def test_a_sync_after_the_portal_cancel_keeps_the_key_off() -> None:
    stripe, apim, links = FakeStripe(_subscription("active")), FakeApim(), FakeLinks()
    ports = AccessPorts(stripe, apim, links, FakeUsage())
    sync_subscription("sub_1", ports, event_created=1)
    apim.subs["sub_1"] = ApimView("cancelled", "ada", "standard")  # the portal cancelled it in APIM
    # Stripe's customer.subscription.updated for cancel_at_period_end and the metadata: still "active".
    stripe.sub = {
        **_subscription("active"),
        "cancel_at_period_end": True,
        "metadata": {**META, "apim_access_ended_at": "1500"},
    }
    result = sync_subscription("sub_1", ports, event_created=2)
    assert apim.subs["sub_1"].state == "cancelled"
    assert "set active" not in apim.writes
    assert links.rows["sub_1"][0].apim_state == "cancelled"  # the daily push leaves it to the final invoice
    assert result.outcome == "unchanged"


def test_a_draft_window_too_short_for_the_closing_report_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from billing.access.webhook import apply_plan  # noqa: PLC0415

    usage = FakeUsage(takes_seconds=53 * 60)  # the defaults: 30 + 15 + 5 minutes, and queue polling
    ports = AccessPorts(FakeStripe(_subscription("active")), FakeApim(), FakeLinks(), usage)
    short = EventPlan("evt_1", "invoice.created", 100, (ReportClosingUsage("sub_1", 10, 100, "in_5", 100, 100 + 2700),))
    with caplog.at_level("ERROR", logger="billing.access.webhook"):
        outcome = apply_plan(short, ports, Deadline.unbounded())
    assert usage.requests == [("sub_1", 10, 100)]  # the closing report is asked for all the same
    assert "draft window too short" in outcome
    (record,) = caplog.records
    # 45 minutes of draft against 53 needed: 8 minutes more, and where to set them.
    assert "in_5" in record.getMessage()
    assert "by at least 8 min" in record.getMessage()
    assert "Invoice finalization grace period" in record.getMessage()
    caplog.clear()
    for enough in (
        ReportClosingUsage("sub_1", 10, 100, "in_6", 100, 100 + 3600),
        ReportClosingUsage("sub_1", 10, 100, "in_7", 100, None),
    ):
        apply_plan(EventPlan("evt_2", "invoice.created", 100, (enough,)), ports, Deadline.unbounded())
    assert caplog.records == []
