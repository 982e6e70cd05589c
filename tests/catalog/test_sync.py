"""`python -m billing catalog plan|apply` against both emulators, through the real SDKs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.apimanagement import models as m

from billing.adapters.apim_client import apim_service
from billing.adapters.catalog_apim import ApimCatalog
from billing.adapters.catalog_stripe import StripeCatalog
from billing.adapters.storage import ensure_table
from billing.adapters.stripe_client import stripe_client
from billing.catalog.apply import ApplyFailed
from billing.catalog.plan import Action
from billing.catalog.service import CatalogSync
from billing.model_loader import load_models
from billing.policy import product_policy_xml
from billing.store.catalog_links import CatalogLinks
from billing.store.tables import CATALOG_LINKS_TABLE
from billing.usage.ratelimit import TokenBucket
from tests.catalog.conftest import Stack, models_variant


def _apim_catalog() -> ApimCatalog:
    return ApimCatalog(apim_service(), CatalogLinks(ensure_table(CATALOG_LINKS_TABLE)))


pytestmark = pytest.mark.storage  # the local stack runs on the session's Azurite

# Written by hand from shared/design/revenue-model.md (amounts in cents; usage per call).
EXPECTED_PRICES = {
    "basic-flat": ("apim-basic", "licensed", Decimal(1495), None),
    "standard-flat": ("apim-standard", "licensed", Decimal(8995), None),
    "pro-flat": ("apim-pro", "licensed", Decimal(44995), None),
    "enterprise-flat": ("apim-enterprise", "licensed", Decimal(74995), None),
    "developer-usage": ("apim-developer", "metered", Decimal("0.2"), None),  # $0.20 / 100 calls
    "payg-usage": ("apim-payg", "metered", Decimal("0.15"), None),  # $0.15 / 100 calls
    "standard-usage": ("apim-standard", "metered", Decimal("0.1"), None),  # $0.10 / 100 calls
    "pro-usage": ("apim-pro", "metered", Decimal("0.06"), None),  # $0.06 / 100 calls
    "enterprise-usage": ("apim-enterprise", "metered", Decimal(74995), 1_500_000),  # per started block
}
PAID = {"developer", "payg", "basic", "standard", "pro", "enterprise"}
METERED = {"developer", "payg", "standard", "pro", "enterprise"}
ALL_APIM = PAID | {"free"}


def _prices(stack: Stack, **filters: Any) -> list[dict[str, Any]]:
    listed = stack.stripe.v1.prices.list({"limit": 100, **filters})  # type: ignore[arg-type]
    return [p.to_dict() for p in listed.auto_paging_iter()]


def _meters(stack: Stack) -> list[dict[str, Any]]:
    return [m.to_dict() for m in stack.stripe.v1.billing.meters.list({"limit": 100}).auto_paging_iter()]


def _assert_catalog_exactly(stack: Stack) -> None:
    """Exactly the expected objects: no duplicates, nothing missing, nothing extra active."""
    products = [p.to_dict() for p in stack.stripe.v1.products.list({"limit": 100}).auto_paging_iter()]
    assert sorted(p["id"] for p in products) == sorted(f"apim-{pid}" for pid in PAID)
    assert all(p["active"] for p in products)
    assert {p["metadata"]["monetization_product_id"] for p in products} == PAID

    meters = _meters(stack)
    assert sorted(m["event_name"] for m in meters) == sorted(f"apim_calls_{pid}" for pid in METERED)
    assert all(m["status"] == "active" and m["default_aggregation"]["formula"] == "sum" for m in meters)
    meter_event = {m["id"]: m["event_name"] for m in meters}

    active = _prices(stack, active=True)
    assert sorted(p["lookup_key"] for p in active) == sorted(EXPECTED_PRICES)
    for price in active:
        product, usage_type, amount, divide_by = EXPECTED_PRICES[price["lookup_key"]]
        assert price["product"] == product
        assert price["recurring"]["interval"] == "month"
        assert price["recurring"]["usage_type"] == usage_type
        assert Decimal(str(price["unit_amount_decimal"])) == amount
        assert (price["transform_quantity"] or {}).get("divide_by") == divide_by
        if usage_type == "metered":
            pid = product.removeprefix("apim-")
            assert meter_event[price["recurring"]["meter"]] == f"apim_calls_{pid}"
            assert (price["transform_quantity"] or {}).get("round", "up") == "up"

    rg, svc = stack.where
    apim_products = {str(p.name): p for p in stack.apim.product.list_by_service(rg, svc)}
    assert set(apim_products) == ALL_APIM
    models = load_models()
    for pid, contract in apim_products.items():
        assert contract.subscription_required is True
        assert contract.approval_required is False
        assert contract.subscriptions_limit == 1
        assert contract.state == "published"
        assert contract.display_name == models.product(pid).display_name
        stored = stack.apim.product_policy.get(rg, svc, pid, "policy", format="rawxml").value
        assert stored == product_policy_xml(models.product(pid))  # stored verbatim


def test_fresh_apply_creates_exactly_the_catalog_and_a_second_apply_changes_nothing(stack: Stack) -> None:
    plan = stack.cli("catalog", "plan")
    assert plan.code == 0, plan.err
    assert "+ create  price   enterprise-usage" in plan.out
    assert _prices(stack) == []  # plan changes nothing

    first = stack.cli("catalog", "apply")
    assert first.code == 0, first.err
    assert "done + create  policy  free" in first.out
    _assert_catalog_exactly(stack)

    second = stack.cli("catalog", "apply")
    assert second.code == 0, second.err
    assert "Plan: nothing to change." in second.out
    assert "done" not in second.out
    _assert_catalog_exactly(stack)


def test_a_price_change_creates_a_new_price_moves_the_key_and_keeps_subscribers_until_migrated(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.cli("catalog", "apply").code == 0
    old = _prices(stack, lookup_keys=["standard-usage"])[0]
    flat = _prices(stack, lookup_keys=["standard-flat"])[0]
    customer = stack.stripe.v1.customers.create(
        {"payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    sub = stack.stripe.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": flat["id"]}, {"price": old["id"]}]}
    )

    changed = models_variant(
        tmp_path,
        "models.json",
        '"usagePrice": {"amount": "0.10", "perCalls": 100}',
        '"usagePrice": {"amount": "0.12", "perCalls": 100}',
    )
    plan = stack.cli("catalog", "plan", "--file", str(changed))
    assert plan.code == 0, plan.err
    assert "+ create  price   standard-usage" in plan.out
    assert f"- archive price   {old['id']}" in plan.out
    assert "Plan: 1 to create, 0 to update, 1 to archive, 0 to remove." in plan.out  # APIM unchanged: same limits

    assert stack.cli("catalog", "apply", "--file", str(changed)).code == 0
    new = _prices(stack, lookup_keys=["standard-usage"])[0]
    assert new["id"] != old["id"]
    assert Decimal(str(new["unit_amount_decimal"])) == Decimal("0.12")  # $0.12 per 100 calls
    archived = stack.stripe.v1.prices.retrieve(old["id"])
    assert archived.active is False
    assert archived.lookup_key is None
    assert "nothing to change" in stack.cli("catalog", "apply", "--file", str(changed)).out

    still = stack.stripe.v1.subscriptions.retrieve(sub.id)
    assert {item.price.id for item in still["items"].data} == {flat["id"], old["id"]}

    migrate_plan = stack.cli("catalog", "migrate-prices", "--file", str(changed))
    assert migrate_plan.code == 0, migrate_plan.err
    assert f"{old['id']} -> {new['id']}" in migrate_plan.out
    assert {item.price.id for item in stack.stripe.v1.subscriptions.retrieve(sub.id)["items"].data} == {
        flat["id"],
        old["id"],
    }

    migrated = stack.cli("catalog", "migrate-prices", "--file", str(changed), "--apply")
    assert migrated.code == 0, migrated.err
    moved = stack.stripe.v1.subscriptions.retrieve(sub.id)
    assert {item.price.id for item in moved["items"].data} == {flat["id"], new["id"]}
    assert "nothing to change" in stack.cli("catalog", "migrate-prices", "--file", str(changed)).out


def test_an_added_product_appears_in_both_and_a_removed_one_is_archived_not_deleted(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.cli("catalog", "apply").code == 0
    added = models_variant(
        tmp_path,
        "added.json",
        '  "products": [\n',
        '  "products": [\n    {"id": "scale", "displayName": "Scale", "description": "$5 a month, then $0.05 per 100.",'
        ' "apis": ["echo"], "pricingModel": "TierWithOverage", "flatFee": "5.00", "includedCalls": 1000,'
        ' "usagePrice": {"amount": "0.05", "perCalls": 100}, "rateLimit": {"callsPerMinute": 10}},\n',
    )
    result = stack.cli("catalog", "apply", "--file", str(added))
    assert result.code == 0, result.err
    assert stack.stripe.v1.products.retrieve("apim-scale").active is True
    assert sorted(p["lookup_key"] for p in _prices(stack, product="apim-scale")) == ["scale-flat", "scale-usage"]
    assert "apim_calls_scale" in {m["event_name"] for m in _meters(stack)}
    rg, svc = stack.where
    assert stack.apim.product.get(rg, svc, "scale").state == "published"
    assert 'calls="10"' in str(stack.apim.product_policy.get(rg, svc, "scale", "policy", format="rawxml").value)

    # Back to the real file: "scale" goes from Stripe (archived, meter deactivated) and APIM (unpublished).
    removed = stack.cli("catalog", "apply")
    assert removed.code == 0, removed.err
    assert stack.stripe.v1.products.retrieve("apim-scale").active is False
    assert all(not p["active"] for p in _prices(stack, product="apim-scale"))
    assert {m["event_name"]: m["status"] for m in _meters(stack)}["apim_calls_scale"] == "inactive"
    assert stack.apim.product.get(rg, svc, "scale").state == "notPublished"
    _assert_catalog_exactly_but_scale(stack)
    assert "nothing to change" in stack.cli("catalog", "apply").out


def _assert_catalog_exactly_but_scale(stack: Stack) -> None:
    active = _prices(stack, active=True)
    assert sorted(p["lookup_key"] for p in active) == sorted(EXPECTED_PRICES)


def test_a_removed_product_with_subscribers_stays_published(stack: Stack) -> None:
    assert stack.cli("catalog", "apply").code == 0
    rg, svc = stack.where
    stack.apim.product.create_or_update(rg, svc, "legacy", m.ProductContract(display_name="Legacy", state="published"))
    stack.apim.user.create_or_update(
        rg, svc, "u1", m.UserCreateParameters(email="u1@example.com", first_name="A", last_name="B")
    )
    stack.apim.subscription.create_or_update(
        rg,
        svc,
        "s1",
        m.SubscriptionCreateParameters(
            owner_id="/users/u1", scope="/products/legacy", display_name="s1", state="active"
        ),
    )
    plan = stack.cli("catalog", "plan", "--apim-only")
    # A product the catalog never made (no catalog product in Stripe) is the provider's own.
    assert "not made by this catalog, left as they are: legacy" in plan.out
    assert "Plan: nothing to change." in plan.out
    assert stack.cli("catalog", "apply", "--apim-only").code == 0
    assert stack.apim.product.get(rg, svc, "legacy").state == "published"


def test_a_failure_in_the_middle_of_apply_is_finished_by_the_next_apply_without_duplicates(stack: Stack) -> None:
    models = load_models()
    sync = CatalogSync(models, StripeCatalog(stripe_client(), TokenBucket(1000)), _apim_catalog())
    plan = sync.plan()
    done: list[Action] = []

    def break_stripe_after_meters(action: Action, _result: str) -> None:
        done.append(action)
        if action.kind == "meter" and sum(a.kind == "meter" for a in done) == 3:
            # Every Stripe request fails from here on (after the SDK's own retries).
            stack.stripe_emu.core.faults.settings.update({"error_rate_500": 1.0})

    try:
        sync.apply(plan, break_stripe_after_meters)
    except ApplyFailed as exc:
        failure = exc
    else:
        raise AssertionError("apply should have failed")
    assert failure.done == len(done) < len(plan.actions)
    assert "create stripe meter" in str(failure)
    assert "HTTP 500" in str(failure)
    stack.stripe_emu.core.faults.settings.update({"error_rate_500": 0.0})
    assert len(_meters(stack)) == 3  # half made: products and three meters, no prices
    assert _prices(stack) == []

    second = stack.cli("catalog", "apply")
    assert second.code == 0, second.err
    assert "create  meter" in second.out
    assert "create  product apim-" not in second.out
    _assert_catalog_exactly(stack)
    assert "nothing to change" in stack.cli("catalog", "apply").out


def test_a_create_retried_with_the_same_idempotency_key_is_not_doubled(stack: Stack) -> None:
    """The case a lost response leaves: the POST succeeded, the client tries it again."""
    assert stack.cli("catalog", "apply", "--stripe-only").code == 0
    catalog = StripeCatalog(stripe_client(), TokenBucket(1000))
    sync = CatalogSync(load_models(), catalog, None)
    spec = next(p for p in sync.desired.prices if p.lookup_key == "payg-usage")
    meter = next(m["id"] for m in _meters(stack) if m["event_name"] == "apim_calls_payg")
    first = catalog.create_price(spec, meter, transfer=True, idempotency_key="catalog-test-key")
    again = catalog.create_price(spec, meter, transfer=True, idempotency_key="catalog-test-key")
    assert first == again
    assert len(_prices(stack, lookup_keys=["payg-usage"])) == 1


def test_service_failures_exit_1_and_bad_input_exits_2_without_traceback(stack: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"products": [{"id": "x"}]}', encoding="utf-8")
    result = stack.cli("catalog", "plan", "--file", str(bad))
    assert result.code == 2
    assert "is not a valid monetization models file" in result.err
    assert "Traceback" not in result.err

    app_key = stack.env["STRIPE_API_KEY"]
    stack.stripe_emu.core.config.api_key = "sk_test_other"  # the app's key is now refused
    result = stack.cli("catalog", "apply", "--stripe-only")
    assert result.code == 1
    assert result.err.startswith("error: stripe: listing products:")
    assert "HTTP 401" in result.err
    assert app_key not in result.err
    assert "Traceback" not in result.err


def test_throttled_apply_backs_off_and_finishes_without_duplicates(stack: Stack) -> None:
    # APIM: ARM 429s with Retry-After; azure-core's retry policy waits and retries.
    stack.apim_emu.faults.update({"error_rate_429": 0.15, "retry_after_seconds": 1, "seed": 11})
    # Stripe: 429s, which the SDK does not retry; the app's Stripe retry policy does (same idempotency key).
    stack.stripe_emu.core.faults.settings.update({"error_rate_429": 0.2, "seed": 5})
    stack.stripe_emu.core.faults.reseed()
    sync = CatalogSync(load_models(), StripeCatalog(stripe_client(), TokenBucket(1000)), _apim_catalog())
    sync.apply(sync.plan())
    stack.apim_emu.faults.update({"error_rate_429": 0.0})
    stack.stripe_emu.core.faults.settings.update({"error_rate_429": 0.0})
    _assert_catalog_exactly(stack)
    assert "nothing to change" in stack.cli("catalog", "apply").out


def test_links_to_apis_and_groups_are_applied_repaired_and_only_the_catalogs_removed(
    stack: Stack, tmp_path: Path
) -> None:
    rg, svc = stack.where
    assert stack.cli("catalog", "apply").code == 0

    def links(pid: str) -> tuple[set[str], set[str]]:
        return (
            {str(a.name) for a in stack.apim.product_api.list_by_product(rg, svc, pid)},
            {str(g.name) for g in stack.apim.product_group.list_by_product(rg, svc, pid)},
        )

    assert links("standard") == ({"echo"}, {"administrators", "developers", "guests"})
    assert "nothing to change" in stack.cli("catalog", "plan").out
    # Drift: someone unlinked a group; and the provider linked an API of its own.
    stack.apim.api.begin_create_or_update(
        rg, svc, "weather", m.ApiCreateOrUpdateParameter(display_name="Weather", path="weather", protocols=["https"])
    ).result()
    stack.apim.product_group.delete(rg, svc, "standard", "guests")
    stack.apim.product_api.create_or_update(rg, svc, "standard", "weather")
    plan = stack.cli("catalog", "plan")
    assert "+ create  link    standard -> group guests" in plan.out
    assert "standard: api(s) weather linked by someone else, left as they are" in plan.out
    assert stack.cli("catalog", "apply").code == 0
    assert links("standard") == ({"echo", "weather"}, {"administrators", "developers", "guests"})
    # The models file sells Standard through "weather" instead of "echo": the catalog's link goes,
    # and "weather" (linked by the provider) is now the catalog's concern too, kept as it is.
    standard = '"description": "$89.95 a month including 100,000 calls, then $0.10 per 100 calls.",\n      '
    changed = models_variant(
        tmp_path, "weather.json", standard + '"apis": ["echo"],', standard + '"apis": ["weather"],'
    )
    plan = stack.cli("catalog", "plan", "--file", str(changed))
    assert "- remove  link    standard -> api echo" in plan.out
    assert stack.cli("catalog", "apply", "--file", str(changed)).code == 0
    assert links("standard")[0] == {"weather"}
    assert "nothing to change" in stack.cli("catalog", "plan", "--file", str(changed)).out
