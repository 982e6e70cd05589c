"""The checked-in JSON Schema is the one generated from the models."""

import json

from billing.model_loader import SCHEMA_PATH, render_json_schema


def test_checked_in_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text() == render_json_schema(), (
        "payment/monetizationModels.schema.json is stale: run "
        "`.venv/bin/python -m billing models schema > payment/monetizationModels.schema.json`"
    )


def test_schema_forbids_unknown_fields_and_lists_pricing_models() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$defs"]["Product"]["additionalProperties"] is False
    assert set(schema["$defs"]["PricingModel"]["enum"]) == {
        "Free",
        "Freemium",
        "Metered",
        "Tier",
        "TierWithOverage",
        "Unit",
    }
