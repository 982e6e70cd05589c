"""GET /api/health?ready=1 on the local stack: every dependency answers; a slow one is named, within
the bound, with no setting's value in the answer."""

from __future__ import annotations

import pytest
import requests

from billing.functions import health
from billing.ops.readers import readiness_probes
from billing.ops.readiness import ReadinessCheck
from tests.access.conftest import Stack

pytestmark = pytest.mark.storage


def _ready(stack: Stack) -> requests.Response:
    return requests.get(f"{stack.host.base_url}/api/health", params={"ready": "1"}, timeout=30)


def test_readiness_names_each_dependency_and_a_slow_one(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "READINESS", ReadinessCheck(readiness_probes, timeout=2, cache_seconds=0))
    answer = _ready(stack)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ready"] is True
    names = ("tableStorage", "queueStorage", "stripe", "apiManagement", "usageSource")
    assert body["dependencies"] == dict.fromkeys(names, "ok")

    stack.apim_emu.faults.update({"latency_ms": 4000})
    try:
        slow = _ready(stack)
    finally:
        stack.apim_emu.faults.update({"latency_ms": 0})
    assert slow.status_code == 503
    assert slow.json()["dependencies"]["apiManagement"] == "timeout"
    assert slow.json()["dependencies"]["stripe"] == "ok"
    values = [v for k, v in stack.env.items() if len(v) > 8 and any(s in k for s in ("KEY", "SECRET", "Storage"))]
    assert values
    assert not [v for v in values if v in slow.text]

    # Without ?ready the health answer reads no dependency (it is what the platform polls).
    plain = requests.get(f"{stack.host.base_url}/api/health", timeout=30).json()
    assert "dependencies" not in plain
