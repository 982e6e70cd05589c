"""The pure planner: desired catalog vs. given state, no network."""

from __future__ import annotations

from decimal import Decimal

from billing.catalog.desired import PriceRole, desired_catalog
from billing.catalog.plan import (
    Change,
    CreatePrice,
    Plan,
    SetMeterActive,
    UnpublishApimProduct,
    UpdatePrice,
    UpdateStripeProduct,
    make_plan,
    normalised_xml,
)
from billing.catalog.render import render_plan
from billing.catalog.state import (
    ApimProductState,
    ApimState,
    MeterState,
    PriceState,
    StripeProductState,
    StripeState,
)
from billing.model_loader import load_models


def _in_sync_state() -> tuple[StripeState, ApimState]:
    """What Stripe and APIM hold right after a successful apply of the real models file."""
    desired = desired_catalog(load_models())
    products = {
        s.stripe_id: StripeProductState(s.stripe_id, s.name, s.description, True, s.metadata)
        for s in desired.stripe_products
    }
    meters = tuple(
        MeterState(f"mtr_{n}", s.event_name, s.display_name, True, "sum", "stripe_customer_id", "value")
        for n, s in enumerate(desired.meters)
    )
    prices = tuple(
        PriceState(f"price_{n}", s.lookup_key, True, s.metadata, s.terms) for n, s in enumerate(desired.prices)
    )
    apim = {
        s.product_id: ApimProductState(
            s.product_id, s.display_name, s.description, True, False, 1, "published", s.policy_xml
        )
        for s in desired.apim_products
    }
    return StripeState(products, meters, prices), ApimState(apim)


def test_the_desired_stripe_prices_follow_the_revenue_model() -> None:
    prices = {p.lookup_key: p for p in desired_catalog(load_models()).prices}
    # $0.15 per 100 calls is 0.15 cents a call; enterprise bills 74995 cents per started 1.5M block.
    assert prices["payg-usage"].terms.unit_amount_decimal == Decimal("0.15")
    assert prices["payg-usage"].role is PriceRole.USAGE
    assert prices["enterprise-usage"].terms.unit_amount_decimal == Decimal(74995)
    assert prices["enterprise-usage"].terms.divide_by == 1_500_000
    assert prices["basic-flat"].terms.usage_type == "licensed"
    assert "free-flat" not in prices
    assert "free-usage" not in prices
    assert "basic-usage" not in prices


def test_in_sync_state_plans_nothing() -> None:
    stripe, apim = _in_sync_state()
    plan = make_plan(desired_catalog(load_models()), stripe, apim)
    assert plan.empty
    assert "Plan: nothing to change." in render_plan(plan, ())


def test_a_changed_amount_creates_a_price_that_takes_the_key_then_archives_the_old_one() -> None:
    stripe, apim = _in_sync_state()
    old = next(p for p in stripe.prices if p.lookup_key == "payg-usage")
    terms = old.terms
    assert terms is not None
    stale = PriceState(old.id, old.lookup_key, True, old.metadata, terms.__class__(**{
        **terms.__dict__, "unit_amount_decimal": Decimal("0.2")}))  # fmt: skip
    state = StripeState(stripe.products, stripe.meters, tuple(stale if p.id == old.id else p for p in stripe.prices))
    plan = make_plan(desired_catalog(load_models()), state, apim)
    ops = [a.op for a in plan.actions]
    assert len(ops) == 2
    assert isinstance(ops[0], CreatePrice)
    assert ops[0].replaces == old.id
    assert ops[1] == UpdatePrice(old.id, active=False)  # after the create: a crash in between is finished later


def test_a_replaced_price_left_active_by_a_crash_is_archived_next_time() -> None:
    stripe, apim = _in_sync_state()
    leftover = PriceState("price_old", None, True, {"monetization_product_id": "payg"}, None)
    state = StripeState(stripe.products, stripe.meters, (*stripe.prices, leftover))
    plan = make_plan(desired_catalog(load_models()), state, apim)
    assert [a.op for a in plan.actions] == [UpdatePrice("price_old", active=False)]


def test_a_product_gone_from_the_file_is_archived_in_stripe_and_unpublished_in_apim_if_unused() -> None:
    stripe, apim = _in_sync_state()
    gone = StripeProductState("apim-old", "Old", None, True, {"monetization_product_id": "old"})
    # "kept" was sold through the catalog before and is archived in Stripe already.
    kept = StripeProductState("apim-kept", "Kept", None, False, {"monetization_product_id": "kept"})
    meter = MeterState("mtr_old", "apim_calls_old", "Old", True, "sum", "stripe_customer_id", "value")
    price = PriceState("price_old", "old-usage", True, {"monetization_product_id": "old"}, None)
    products = {**stripe.products, "apim-old": gone, "apim-kept": kept}
    state = StripeState(products, (*stripe.meters, meter), (*stripe.prices, price))
    unused = ApimProductState("old", "Old", None, True, False, 1, "published", None, subscription_count=0)
    used = ApimProductState("kept", "Kept", None, True, False, 1, "published", None, subscription_count=2)
    plan = make_plan(desired_catalog(load_models()), state, ApimState({**apim.products, "old": unused, "kept": used}))
    ops = [a.op for a in plan.actions]
    assert ops == [
        UpdatePrice("price_old", active=False),
        SetMeterActive("mtr_old", "apim_calls_old", active=False),
        UpdateStripeProduct("apim-old", active=False),
        UnpublishApimProduct("old"),
    ]
    assert all(a.change is Change.ARCHIVE for a in plan.actions)
    assert any("kept" in n and "2 subscription(s)" in n for n in plan.notices)


def test_apim_products_the_catalog_never_made_are_left_alone() -> None:
    stripe, apim = _in_sync_state()
    starter = ApimProductState("starter", "Starter", None, True, False, 1, "published", None, subscription_count=0)
    internal = ApimProductState("partners", "Partners", None, True, True, None, "published", None, subscription_count=0)
    products = {**apim.products, "starter": starter, "partners": internal}
    for stripe_state in (stripe, None):  # with --apim-only nothing can be shown to be the catalog's
        plan = make_plan(desired_catalog(load_models()), stripe_state, ApimState(products))
        assert plan.actions == ()
        assert any("partners, starter" in n and "left as they are" in n for n in plan.notices)


def test_policies_that_differ_only_in_whitespace_are_equal() -> None:
    a = "<policies><inbound><base /><quota calls='5' renewal-period='60' /></inbound></policies>"
    b = '<policies>\n  <inbound>\n    <base/>\n    <quota calls="5" renewal-period="60"/>\n  </inbound>\n</policies>'
    assert normalised_xml(a) == normalised_xml(b)
    assert normalised_xml(a) != normalised_xml(a.replace("'5'", "'6'"))


def test_a_meter_with_the_wrong_aggregation_is_a_problem_apply_refuses() -> None:
    stripe, _ = _in_sync_state()
    wrong = tuple(
        MeterState(m.id, m.event_name, m.display_name, True, "count", m.customer_key, m.value_key)
        if m.event_name == "apim_calls_payg" else m
        for m in stripe.meters
    )  # fmt: skip
    plan: Plan = make_plan(desired_catalog(load_models()), StripeState(stripe.products, wrong, stripe.prices), None)
    assert len(plan.problems) == 1
    assert "apim_calls_payg" in plan.problems[0]
