"""The APIM emulator's gateway, with the policies `catalog apply` stored, enforces quotas and rate limits.

Small limits from a test models file (`--file`), so a handful of calls reach each limit; the
emulator's clock is moved instead of waiting for windows to pass.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from azure.mgmt.apimanagement import models as m

from tests.catalog.conftest import Stack

pytestmark = pytest.mark.storage  # the local stack runs on the session's Azurite

SMALL_LIMITS = {
    "products": [
        {
            "id": "tiny-free",
            "displayName": "Tiny free",
            "description": "5 calls an hour, 3 a minute.",
            "apis": ["echo"],
            "pricingModel": "Free",
            "quota": {"calls": 5, "period": "hour"},
            "rateLimit": {"callsPerMinute": 3},
        },
        {
            "id": "tiny-tier",
            "displayName": "Tiny tier",
            "description": "4 calls a day.",
            "pricingModel": "Tier",
            "apis": ["echo"],
            "flatFee": "1.00",
            "quota": {"calls": 4, "period": "day"},
        },
        {
            "id": "tiny-metered",
            "displayName": "Tiny metered",
            "description": "2 calls a minute.",
            "apis": ["echo"],
            "pricingModel": "Metered",
            "usagePrice": {"amount": "0.10", "perCalls": 100},
            "rateLimit": {"callsPerMinute": 2},
        },
    ]
}


def _subscribe(stack: Stack, pid: str) -> str:
    rg, svc = stack.where
    stack.apim.user.create_or_update(
        rg, svc, f"user-{pid}", m.UserCreateParameters(email=f"{pid}@example.com", first_name="A", last_name="B")
    )
    stack.apim.subscription.create_or_update(
        rg,
        svc,
        f"sub-{pid}",
        m.SubscriptionCreateParameters(
            owner_id=f"/users/user-{pid}", scope=f"/products/{pid}", display_name=pid, state="active"
        ),
    )
    key = stack.apim.subscription.list_secrets(rg, svc, f"sub-{pid}").primary_key
    assert key
    return key


def _statuses(stack: Stack, key: str, calls: int) -> list[int]:
    url = f"{stack.apim_emu.gateway_url}/echo"
    return [requests.get(url, headers={"Ocp-Apim-Subscription-Key": key}, timeout=10).status_code for _ in range(calls)]


def test_applied_policies_make_the_gateway_enforce_each_products_limits(stack: Stack, tmp_path: Path) -> None:
    models_file = tmp_path / "small.json"
    models_file.write_text(json.dumps(SMALL_LIMITS), encoding="utf-8")
    result = stack.cli("catalog", "apply", "--apim-only", "--file", str(models_file))
    assert result.code == 0, result.err
    # Noon of a fixed day: the day's and the hour's quota windows are far from their ends.
    now = {"t": datetime(2026, 6, 1, 12, 0, tzinfo=UTC)}
    stack.apim_emu.set_clock(lambda: now["t"])
    keys = {pid: _subscribe(stack, pid) for pid in ("tiny-free", "tiny-tier", "tiny-metered")}

    # Rate limit only: 2 a minute, then 429 until the minute has passed.
    assert _statuses(stack, keys["tiny-metered"], 3) == [200, 200, 429]
    # Quota only: 4 a day, then 403 (over quota), whatever the pace.
    assert _statuses(stack, keys["tiny-tier"], 5) == [200, 200, 200, 200, 403]
    # Both: 3 a minute, and 5 an hour; calls refused for rate do not use up the quota.
    assert _statuses(stack, keys["tiny-free"], 4) == [200, 200, 200, 429]

    now["t"] += timedelta(seconds=61)
    assert _statuses(stack, keys["tiny-metered"], 1) == [200]  # a new minute
    assert _statuses(stack, keys["tiny-tier"], 1) == [403]  # still the same day
    assert _statuses(stack, keys["tiny-free"], 3) == [200, 200, 403]  # quota of 5 reached before the rate

    now["t"] += timedelta(seconds=3_600)
    assert _statuses(stack, keys["tiny-free"], 1) == [200]  # a new quota period
