"""A local stack whose app sells two products with a 14-day free trial (a models file of the tests' own:
the shipped one has none), webhooks delivered to the app, queued work run by `settle()`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing import bootstrap
from billing.model_loader import DEFAULT_MODELS_PATH, load_models
from billing.models import MonetizationModels
from devstack.azurite import Azurite
from devstack.stack import LocalStack, StackOptions

TRIAL_DAYS = 14
TRIAL_PRODUCTS = ("basic", "standard")


def models_with_trials(path: Path) -> Path:
    data = json.loads(DEFAULT_MODELS_PATH.read_text(encoding="utf-8"))
    for product in data["products"]:
        if product["id"] in TRIAL_PRODUCTS:
            product["trialDays"] = TRIAL_DAYS
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return models_with_trials(tmp_path / "monetizationModels.json")


@pytest.fixture
def trial_models(models: Path) -> MonetizationModels:
    return load_models(models)


@pytest.fixture
def stack(azurite: Azurite, models: Path) -> Iterator[LocalStack]:
    options = StackOptions(
        use_func=False, azurite=azurite, apply_catalog=True, run_queue_workers=False, models_file=models
    )
    with LocalStack(options) as running:
        bootstrap.forget()
        yield running
        bootstrap.forget()
