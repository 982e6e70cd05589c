"""Which billing threshold the access sync writes on a Stripe subscription (pure decisions)."""

from __future__ import annotations

import pytest

from billing.access.decisions import StripeState
from billing.access.limits import spending_limits, threshold_to_set
from billing.access.stripe_objects import SubscriptionSnapshot, subscription_snapshot
from billing.model_loader import load_models


def snapshot(status: str = "active", threshold: int | None = None, ended_at: int = 0) -> SubscriptionSnapshot:
    return SubscriptionSnapshot(
        "sub_1", "cus_1", StripeState(status, ended_at=ended_at), {}, frozenset(), "si_1", 1_000, 2_000, 0, threshold
    )


def test_the_models_file_gives_each_metered_product_its_limit_in_minor_units() -> None:
    limits = spending_limits(load_models())
    assert limits["payg"] == 50_000
    assert limits["standard"] == 100_000
    assert "basic" not in limits  # no usage, nothing to limit
    assert "free" not in limits


@pytest.mark.parametrize(
    ("snap", "expected"),
    [
        (snapshot(), 50_000),
        (snapshot(threshold=50_000), None),  # already right: nothing written, so no event loop
        (snapshot(threshold=20_000), 50_000),  # the models file changed: the subscription follows
        (snapshot("past_due"), 50_000),
        (snapshot("canceled"), None),
        (snapshot("incomplete"), None),
        (snapshot(ended_at=1_500), None),
    ],
)
def test_threshold_to_set(snap: SubscriptionSnapshot, expected: int | None) -> None:
    assert threshold_to_set(snap, "payg", {"payg": 50_000}) == expected
    assert threshold_to_set(snap, "basic", {"payg": 50_000}) is None


def test_the_snapshot_reads_the_threshold_stripe_returns() -> None:
    sub = {
        "id": "sub_1",
        "status": "active",
        "customer": "cus_1",
        "billing_thresholds": {"amount_gte": 50_000, "reset_billing_cycle_anchor": False},
        "items": {"data": []},
    }
    assert subscription_snapshot(sub).billing_threshold == 50_000
    assert subscription_snapshot({**sub, "billing_thresholds": None}).billing_threshold is None
