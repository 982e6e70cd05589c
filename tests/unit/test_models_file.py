"""Bad models files are refused with a message naming the product and the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from billing.model_loader import DEFAULT_MODELS_PATH, ModelsFileError, load_models, parse_models

GOOD: dict[str, Any] = json.loads(DEFAULT_MODELS_PATH.read_text())


def _edited(edit: Callable[[dict[str, Any]], None]) -> str:
    data = copy.deepcopy(GOOD)
    edit(data)
    return json.dumps(data)


def _product(data: dict[str, Any], product_id: str) -> dict[str, Any]:
    return next(p for p in data["products"] if p["id"] == product_id)


CASES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    (
        "missing field",
        lambda d: _product(d, "basic").pop("displayName"),
        ["product 'basic'", "displayName", "required"],
    ),
    (
        "negative price",
        lambda d: _product(d, "standard").update(flatFee="-1"),
        ["product 'standard'", "flatFee", ">= 0"],
    ),
    (
        "negative usage price",
        lambda d: _product(d, "payg")["usagePrice"].update(amount="-0.15"),
        ["product 'payg'", "usagePrice.amount", "> 0"],
    ),
    (
        "unknown pricing model",
        lambda d: _product(d, "pro").update(pricingModel="Tiered"),
        ["product 'pro'", "pricingModel", "'Tiered'", "TierWithOverage"],
    ),
    (
        "tier without quota",
        lambda d: _product(d, "basic").update(quota=None),
        ["product 'basic'", "quota", "hard quota"],
    ),
    ("duplicate ids", lambda d: _product(d, "pro").update(id="standard"), ["'standard'", "id", "more than once"]),
    (
        "unknown field",
        lambda d: _product(d, "developer").update(quotaa=5),
        ["product 'developer'", "quotaa", "not a known field"],
    ),
    (
        "blocked calls billable",
        lambda d: _product(d, "payg").update(billableOutcomes=["success", "blocked"]),
        ["product 'payg'", "billableOutcomes", "never billable"],
    ),
    (
        "usage price on a tier product",
        lambda d: _product(d, "basic").update(usagePrice={"amount": "1", "perCalls": 100}),
        ["product 'basic'", "usagePrice", "remove"],
    ),
    (
        "unit product without block size",
        lambda d: _product(d, "enterprise").pop("blockSize"),
        ["product 'enterprise'", "blockSize"],
    ),
    ("unsupported currency", lambda d: _product(d, "pro").update(currency="xyz"), ["product 'pro'", "currency", "usd"]),
    ("too many decimals", lambda d: _product(d, "basic").update(flatFee="14.951"), ["product 'basic'", "flatFee"]),
    (
        "price Stripe cannot express",
        lambda d: _product(d, "payg")["usagePrice"].update(perCalls=7),
        ["product 'payg'", "usagePrice", "perCalls"],
    ),
    ("bad id", lambda d: _product(d, "pro").update(id="Pro Plan"), ["'Pro Plan'", "id"]),
    (
        "spending limit on a product without usage",
        lambda d: _product(d, "basic").update(spendingLimit="100"),
        ["product 'basic'", "spendingLimit", "bills no usage"],
    ),
    (
        "spending limit below the flat fee",
        lambda d: _product(d, "standard").update(spendingLimit="89.95"),
        ["product 'standard'", "spendingLimit", "must be above 89.95"],
    ),
    (
        "spending limit below Stripe's minimum",
        lambda d: _product(d, "payg").update(spendingLimit="0.40"),
        ["product 'payg'", "spendingLimit", "must be above 0.50"],
    ),
    ("no products", lambda d: d.update(products=[]), ["products"]),
    (
        "trial of a free product",
        lambda d: _product(d, "free").update(trialDays=14),
        ["product 'free'", "trialDays", "remove trialDays"],
    ),
    ("trial of no days", lambda d: _product(d, "basic").update(trialDays=0), ["product 'basic'", "trialDays", "> 0"]),
    (
        "trial in a string",
        lambda d: _product(d, "basic").update(trialDays="14"),
        ["product 'basic'", "trialDays", "whole number"],
    ),
    (
        "trial in part-days",
        lambda d: _product(d, "basic").update(trialDays=14.5),
        ["product 'basic'", "trialDays", "whole number"],
    ),
    (
        "trial longer than Stripe allows",
        lambda d: _product(d, "basic").update(trialDays=731),
        ["product 'basic'", "trialDays", "<= 730"],
    ),
]


@pytest.mark.parametrize(("name", "edit", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_file_names_product_and_field(
    name: str, edit: Callable[[dict[str, Any]], None], expected: list[str]
) -> None:
    with pytest.raises(ModelsFileError) as caught:
        parse_models(_edited(edit))
    message = caught.value.report()
    for fragment in expected:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"
    assert "Traceback" not in message


def test_malformed_json_gives_line_and_column() -> None:
    with pytest.raises(ModelsFileError, match=r"malformed JSON at line 3, column \d+"):
        parse_models('{\n  "products": [\n  {"id": }\n]}')


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError, match="cannot be read"):
        load_models(tmp_path / "absent.json")


def test_eighth_product_needs_only_the_file() -> None:
    data = copy.deepcopy(GOOD)
    data["products"].append(
        {
            "id": "startup",
            "displayName": "Startup",
            "description": "$29 a month including 20,000 calls, then $0.12 per 100.",
            "apis": ["echo"],
            "pricingModel": "TierWithOverage",
            "flatFee": "29.00",
            "includedCalls": 20000,
            "usagePrice": {"amount": "0.12", "perCalls": 100},
            "rateLimit": {"callsPerMinute": 300},
        }
    )
    models = parse_models(json.dumps(data))
    startup = models.product("startup")
    assert (startup.flat_fee_minor, startup.currency, startup.quota) == (2900, "usd", None)


def test_money_from_json_numbers_is_exact() -> None:
    data = copy.deepcopy(GOOD)
    text = json.dumps(data).replace('"flatFee": "14.95"', '"flatFee": 14.95')
    assert parse_models(text).product("basic").flat_fee_minor == 1495


def test_paid_products_may_have_a_trial_and_the_shipped_file_has_none() -> None:
    """revenue-model.md bills the flat fee on the first invoice, so the shipped products have no trial;
    a provider's file may give any paid product one."""
    assert [p.id for p in load_models().products if p.trial_days is not None] == []
    data = copy.deepcopy(GOOD)
    _product(data, "developer")["trialDays"] = 14
    _product(data, "basic")["trialDays"] = 730
    models = parse_models(json.dumps(data))
    assert (models.product("developer").trial_days, models.product("basic").trial_days) == (14, 730)
