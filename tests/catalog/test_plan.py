"""The pure planner: desired catalog vs. given state, no network."""

from __future__ import annotations

from decimal import Decimal

from billing.catalog.desired import PriceRole, desired_catalog
from billing.catalog.plan import (
    Change,
    CreatePrice,
    Plan,
    PutPortalConfig,
    Service,
    SetApimLink,
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
    PortalConfigState,
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
            s.product_id,
            s.display_name,
            s.description,
            True,
            False,
            1,
            "published",
            s.policy_xml,
            apis=frozenset(s.apis),
            groups=frozenset({*s.groups, "administrators"}),
            catalog_apis=frozenset(s.apis),
            catalog_groups=frozenset(s.groups),
        )
        for s in desired.apim_products
    }
    portal = PortalConfigState("bpc_1", desired.portal.headline, desired.portal.features())
    return StripeState(products, meters, prices, portal), ApimState(apim, api_ids=API_IDS, group_ids=GROUP_IDS)


API_IDS = frozenset({"echo", "weather", "internal"})
GROUP_IDS = frozenset({"administrators", "developers", "guests", "partners"})


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
    stale = PriceState(
        old.id,
        old.lookup_key,
        True,
        old.metadata,
        terms.__class__(**{**terms.__dict__, "unit_amount_decimal": Decimal("0.2")}),
    )
    state = StripeState(
        stripe.products, stripe.meters, tuple(stale if p.id == old.id else p for p in stripe.prices), stripe.portal
    )
    plan = make_plan(desired_catalog(load_models()), state, apim)
    ops = [a.op for a in plan.actions]
    assert len(ops) == 2
    assert isinstance(ops[0], CreatePrice)
    assert ops[0].replaces == old.id
    assert ops[1] == UpdatePrice(old.id, active=False)  # after the create: a crash in between is finished later


def test_a_replaced_price_left_active_by_a_crash_is_archived_next_time() -> None:
    stripe, apim = _in_sync_state()
    leftover = PriceState("price_old", None, True, {"monetization_product_id": "payg"}, None)
    state = StripeState(stripe.products, stripe.meters, (*stripe.prices, leftover), stripe.portal)
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
    state = StripeState(products, (*stripe.meters, meter), (*stripe.prices, price), stripe.portal)
    unused = ApimProductState("old", "Old", None, True, False, 1, "published", None, subscription_count=0)
    used = ApimProductState("kept", "Kept", None, True, False, 1, "published", None, subscription_count=2)
    plan = make_plan(
        desired_catalog(load_models()),
        state,
        ApimState({**apim.products, "old": unused, "kept": used}, api_ids=API_IDS, group_ids=GROUP_IDS),
    )
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
        plan = make_plan(
            desired_catalog(load_models()), stripe_state, ApimState(products, api_ids=API_IDS, group_ids=GROUP_IDS)
        )
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
        if m.event_name == "apim_calls_payg"
        else m
        for m in stripe.meters
    )
    plan: Plan = make_plan(desired_catalog(load_models()), StripeState(stripe.products, wrong, stripe.prices), None)
    assert len(plan.problems) == 1
    assert "apim_calls_payg" in plan.problems[0]


# ---- what each product sells and who sees it -------------------------------------------------------
def _with_links(apim: ApimState, pid: str, **fields: frozenset[str]) -> ApimState:
    product = apim.products[pid]
    changed = ApimProductState(**{**product.__dict__, **fields})
    return ApimState({**apim.products, pid: changed}, apim.tier, apim.api_ids, apim.group_ids)


def test_a_new_product_is_linked_to_its_apis_and_made_visible_to_its_groups() -> None:
    stripe, apim = _in_sync_state()
    fresh = ApimState({k: v for k, v in apim.products.items() if k != "basic"}, api_ids=API_IDS, group_ids=GROUP_IDS)
    plan = make_plan(desired_catalog(load_models()), stripe, fresh)
    links = [a.op for a in plan.actions if isinstance(a.op, SetApimLink)]
    assert links == [
        SetApimLink("basic", "api", "echo", True),
        SetApimLink("basic", "group", "developers", True),
        SetApimLink("basic", "group", "guests", True),
    ]
    assert "+ create  link    basic -> api echo" in render_plan(plan, (Service.APIM,))


def test_a_removed_link_is_repaired_and_reapplying_changes_nothing() -> None:
    stripe, apim = _in_sync_state()
    drifted = _with_links(apim, "pro", groups=frozenset({"administrators", "guests"}))  # someone unlinked developers
    plan = make_plan(desired_catalog(load_models()), stripe, drifted)
    assert [a.op for a in plan.actions] == [SetApimLink("pro", "group", "developers", True)]
    assert plan.actions[0].details == ("missing (removed since the last apply?)",)
    assert make_plan(desired_catalog(load_models()), stripe, apim).empty


def test_links_the_catalog_made_and_the_file_dropped_are_removed_others_are_left_alone() -> None:
    stripe, apim = _in_sync_state()
    state = _with_links(
        apim,
        "standard",
        apis=frozenset({"echo", "weather", "internal"}),
        catalog_apis=frozenset({"echo", "weather"}),
        groups=frozenset({"administrators", "developers", "guests", "partners"}),
    )
    plan = make_plan(desired_catalog(load_models()), stripe, state)
    assert [a.op for a in plan.actions] == [SetApimLink("standard", "api", "weather", False)]
    assert plan.actions[0].change is Change.REMOVE
    notices = " ".join(plan.notices)
    assert "standard: api(s) internal linked by someone else, left as they are" in notices
    assert "standard: group(s) partners linked by someone else" in notices  # and "administrators" is APIM's own


def test_an_api_or_group_apim_does_not_have_is_a_problem_apply_refuses() -> None:
    stripe, apim = _in_sync_state()
    bare = ApimState(apim.products, api_ids=frozenset({"weather"}), group_ids=frozenset({"administrators"}))
    plan = make_plan(desired_catalog(load_models()), stripe, bare)
    assert any("product free names api(s) echo, which API Management does not have" in p for p in plan.problems)
    assert any("product free names group(s) developers, guests" in p for p in plan.problems)


def test_the_policy_follows_the_instances_tier() -> None:
    classic = {s.product_id: s.policy_xml for s in desired_catalog(load_models(), "Premium").apim_products}
    v2 = {s.product_id: s.policy_xml for s in desired_catalog(load_models(), "StandardV2").apim_products}
    assert "<quota-by-key" in classic["basic"]
    assert 'renewal-period="0"' in classic["basic"]  # the app resets it when Stripe starts a period
    assert 'renewal-period="2592000"' in classic["free"]  # Free has no Stripe period
    assert "<quota " in v2["basic"]
    assert "quota-by-key" not in v2["basic"]
    stripe, apim = _in_sync_state()
    moved = ApimState(apim.products, "StandardV2", API_IDS, GROUP_IDS)  # the same instance, another tier
    plan = make_plan(desired_catalog(load_models(), "StandardV2"), stripe, moved)
    assert {a.target for a in plan.actions if a.kind == "policy"} == {"free", "basic"}


def test_the_customer_portal_configuration_is_made_once_and_kept_as_the_catalog_wants_it() -> None:
    stripe, apim = _in_sync_state()
    desired = desired_catalog(load_models())
    missing = make_plan(desired, StripeState(stripe.products, stripe.meters, stripe.prices, None), apim)
    assert [a.op for a in missing.actions] == [PutPortalConfig(desired.portal, None)]
    # Someone allowed immediate cancellation in the Dashboard: the catalog puts period-end back.
    assert stripe.portal is not None
    changed = {
        **stripe.portal.features,
        "subscription_cancel": {"enabled": True, "mode": "immediately", "proration_behavior": "none"},
    }
    drifted = StripeState(
        stripe.products, stripe.meters, stripe.prices, PortalConfigState("bpc_1", stripe.portal.headline, changed)
    )
    plan = make_plan(desired, drifted, apim)
    assert [a.op for a in plan.actions] == [PutPortalConfig(desired.portal, "bpc_1")]
    assert "immediately" in plan.actions[0].details[0]
    assert desired.portal.features()["subscription_update"] == {"enabled": False}  # no plan switching there
