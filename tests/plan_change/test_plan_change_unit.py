"""The plan change decisions with in-memory ports: who may change what, and which Stripe calls follow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from billing.model_loader import load_models
from billing.portal.plan_change import (
    ChangeKind,
    PlanChangeError,
    PlanItem,
    StripePlan,
    change_plan,
    kind_of,
    quote_change,
    subject,
    undo,
)
from billing.portal.ports import ApimSubscription, Debt
from billing.pricing import included_calls_for_part, is_upgrade, part_quote, prorated_fee, quote
from billing.usage.batches import PlanChangeRequest
from tests.portal.fakes import FakeApim, FakePayments

MODELS = load_models()
START, END = 1_767_225_600, 1_769_904_000  # January 2026
MID = START + 15 * 86400
SID, UID = "sub_1", "ada"


def _payments(debts: Sequence[Debt] = (), finals: Sequence[str] = ()) -> FakePayments:
    """The portal's typed payments fake, with a price for every product's lookup keys."""
    keys = [f"{product.id}-{kind}" for product in MODELS.products for kind in ("flat", "usage")]
    payments = FakePayments({key: f"price_{key}" for key in keys})
    payments.debts, payments.pending = list(debts), list(finals)
    return payments


@dataclass
class Changes:
    plan: StripePlan
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def current(self, sid: str) -> StripePlan | None:
        return self.plan if sid == self.plan.subscription_id else None

    def upgrade(self, sid: str, items: Sequence[Mapping[str, object]], metadata: Mapping[str, str], key: str) -> None:
        self.calls.append(("upgrade", (list(items), dict(metadata), key)))

    def schedule_downgrade(
        self, plan: StripePlan, items: Sequence[tuple[str, int | None]], metadata: Mapping[str, str]
    ) -> None:
        self.calls.append(("schedule", (list(items), dict(metadata))))

    def release_schedule(self, schedule_id: str) -> None:
        self.calls.append(("release", schedule_id))

    def end_at_period_end(self, sid: str, next_product: str) -> None:
        self.calls.append(("end", next_product))

    def keep_on(self, sid: str) -> None:
        self.calls.append(("keep", sid))

    def move_scope(self, sid: str, product_id: str) -> None:
        self.calls.append(("scope", product_id))

    def report_old_usage_later(self, request: PlanChangeRequest) -> None:
        self.calls.append(("later", request))


def _world(product: str = "standard", owner: str = UID, meta_user: str = UID, **plan: Any) -> tuple[FakeApim, Changes]:
    apim = FakeApim({owner: f"{owner}@example.com"})
    apim.subs[SID] = ApimSubscription(SID, owner, product, "key", "active", None, None)
    items = (
        PlanItem("si_flat", "price_flat", f"{product}-flat", False, 1),
        PlanItem("si_usage", "price_usage", f"{product}-usage", True, None),
    )
    metadata = {"apim_user_id": meta_user, "apim_product_id": product, **plan.pop("metadata", {})}
    return apim, Changes(StripePlan(SID, "active", "cus_1", metadata, items, START, END, MID, **plan))


def test_upgrades_are_to_a_higher_price_of_the_pricing_engine() -> None:
    p = MODELS.product
    assert is_upgrade(p("basic"), p("standard"))
    assert is_upgrade(p("standard"), p("pro"))
    assert not is_upgrade(p("pro"), p("standard"))
    assert is_upgrade(p("payg"), p("developer"))  # no fee either way: the price per call decides
    assert kind_of(p("pro"), p("free")) is ChangeKind.TO_FREE


def test_the_parts_of_a_period_add_up_to_the_whole_fee_and_share_the_included_calls() -> None:
    pro = MODELS.product("pro")
    assert prorated_fee(pro, START, END, START, MID) + prorated_fee(pro, START, END, MID, END) == pro.flat_fee_minor
    # 16 of 31 days left: 16/31 of 500,000 included calls, rounded down; the fee half up.
    assert included_calls_for_part(pro, START, END, MID) == 258_064  # 500,000 x 16/31 = 258,064.5
    assert prorated_fee(pro, START, END, MID, END) == 23_223  # 44,995 x 16/31 = 23,223.23
    assert part_quote(pro, 258_064 + 100, START, END, since=MID, until=END).total == 23_223 + 6  # 100 x 0.06 cents
    assert part_quote(pro, 10, START, END, since=START, until=END) == quote(pro, 10)


def test_an_upgrade_charges_now_and_leaves_the_old_metered_price_for_the_report_lag() -> None:
    apim, changes = _world()
    found = subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    done = change_plan(found, MODELS.product("pro"), now=0, nonce="n", payments=_payments(), changes=changes)
    # 44,995 x 16/31 = 23,223.23 -> 23,223 charged; 8,995 x 16/31 = 4,642.58 -> 4,643 credited.
    assert done.kind is ChangeKind.UPGRADE
    assert done.due_now == "USD 185.80"
    # The old usage's job is queued first: no crash after Stripe's update can leave it unqueued.
    later, (kind, (items, metadata, key)), scope = changes.calls
    assert kind == "upgrade"
    assert scope == ("scope", "pro")
    assert items == [{"id": "si_flat", "price": "price_pro-flat"}, {"price": "price_pro-usage"}]
    assert metadata["apim_product_id"] == "pro"
    assert metadata["apim_previous_product_id"] == "standard"
    assert metadata["apim_product_since"] == str(MID)
    assert metadata["apim_retiring_usage_item"] == "si_usage"
    assert later[1] == PlanChangeRequest(SID, "standard", later[1].period, START, MID, "si_usage")
    # The key names the part of the period it leaves, not the form: two forms cannot both upgrade.
    apim2, changes2 = _world()
    found2 = subject(UID, SID, models=MODELS, apim=apim2, changes=changes2)
    change_plan(found2, MODELS.product("enterprise"), now=0, nonce="other", payments=_payments(), changes=changes2)
    assert changes2.calls[1][1][2] == key


def test_who_may_change_and_when() -> None:
    apim, changes = _world(owner="mallory")
    with pytest.raises(PlanChangeError) as refused:
        subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    assert refused.value.status == 404
    apim, changes = _world(meta_user="mallory")
    with pytest.raises(PlanChangeError):
        subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    apim, changes = _world()
    found = subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    debt = Debt("in_1", "A-1", "usd", 500, "https://pay")
    with pytest.raises(PlanChangeError, match="unpaid invoices") as owed:
        change_plan(found, MODELS.product("pro"), now=0, nonce="n", payments=_payments(debts=[debt]), changes=changes)
    assert owed.value.status == 402
    assert changes.calls == []
    with pytest.raises(PlanChangeError, match="still being billed"):
        change_plan(
            found, MODELS.product("pro"), now=0, nonce="n", payments=_payments(finals=["sub_0"]), changes=changes
        )
    apim, changes = _world(metadata={"apim_retiring_usage_item": "si_old"})
    found = subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    with pytest.raises(PlanChangeError, match="still being completed"):
        change_plan(found, MODELS.product("pro"), now=0, nonce="n", payments=_payments(), changes=changes)


def test_a_downgrade_is_scheduled_for_the_period_end_and_undone_by_releasing_it() -> None:
    apim, changes = _world("pro")
    found = subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    debt = Debt("in_1", "A-1", "usd", 500, "https://pay")
    done = change_plan(
        found, MODELS.product("standard"), now=0, nonce="n", payments=_payments(debts=[debt]), changes=changes
    )  # a debt does not stop a cheaper plan
    assert done.kind is ChangeKind.DOWNGRADE
    assert done.effective_at == END
    assert done.monthly_difference == "USD -360.00"
    ((_kind, (items, metadata)),) = changes.calls
    assert items == [("price_standard-flat", 1), ("price_standard-usage", None)]
    assert metadata["apim_product_since"] == str(END)
    assert metadata["apim_previous_product_id"] == "pro"
    apim, changes = _world("pro", schedule_id="sub_sched_1", scheduled_product="standard", scheduled_at=END)
    found = subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    pending = found.pending(MODELS)
    assert pending is not None
    assert (pending.product_name, pending.date) == ("Standard", "2026-02-01")
    with pytest.raises(PlanChangeError, match="already planned"):
        change_plan(found, MODELS.product("enterprise"), now=0, nonce="n", payments=_payments(), changes=changes)
    assert undo(found, changes) is not None
    assert changes.calls == [("release", "sub_sched_1")]


def test_moving_to_free_ends_the_paid_subscription_at_the_period_end() -> None:
    apim, changes = _world("basic")
    found = subject(UID, SID, models=MODELS, apim=apim, changes=changes)
    done = change_plan(found, MODELS.product("free"), now=0, nonce="n", payments=_payments(), changes=changes)
    assert done.kind is ChangeKind.TO_FREE
    assert changes.calls == [("end", "free")]
    assert quote_change(found, MODELS.product("free"), 0).effective_at == END
    assert datetime.fromtimestamp(END, UTC).day == 1
